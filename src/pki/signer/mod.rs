//! The CA's root key, wherever it lives: a PEM file, AWS KMS or a PKCS#11 token, named by a key URI.
//!
//! ```text
//! file:./data/ca.key
//! awskms:alias/principald-ca         awskms:arn:aws:kms:eu-west-1:111122223333:key/...
//! pkcs11:token=principald;object=ca-root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin
//! ```
//!
//! Every signer is ECDSA P-256 with SHA-256 and answers with a DER signature. Remote signers block: callers run them
//! on a blocking thread (`tokio::task::spawn_blocking`), never on the async runtime. The root signs rarely (the CA
//! certificate, and one issuing intermediate per replica and rotation); leaves are signed by the intermediate's
//! in-memory key, so issuance speed never depends on KMS or the HSM.
//!
//! Beside each root lives a derivation secret (KMS: an HMAC_256 key; PKCS#11: a generic secret key; file and memory
//! keys: derived from the private key), from which [`derive_p256_pkcs8`] re-derives any intermediate's key: a replica
//! can sign for an intermediate whose replica died, and no intermediate key is ever stored.

#[cfg(feature = "aws")]
mod awskms;
mod derive;
mod file;
mod pkcs11;
mod uri;

use std::fmt;
use std::sync::Arc;

#[cfg(feature = "aws")]
pub use awskms::companion_alias as kms_derive_alias;
pub use derive::derive_p256_pkcs8;
pub use uri::KeyUri;

use crate::error::{Error, Result};

/// A P-256 signing key held somewhere. Implementations never expose or log key material.
pub trait Signer: Send + Sync + fmt::Debug {
    /// The public key as a DER SubjectPublicKeyInfo.
    fn spki_der(&self) -> &[u8];
    /// The uncompressed EC point (the SubjectPublicKeyInfo's BIT STRING contents).
    fn public_point(&self) -> &[u8];
    /// ECDSA P-256 over SHA-256 of `message`; DER-encoded signature. May block on the network or a token.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
    /// The key's URI with secrets (PINs) left out, for logs and errors.
    fn describe(&self) -> String;
    /// HMAC-SHA256 of `context` under the derivation secret that lives beside this root key and never leaves it
    /// (KMS: an HMAC_256 key, GenerateMac; PKCS#11: a generic secret key, CKM_SHA256_HMAC; file and memory keys: a
    /// secret derived from the private key itself). Deterministic: the same context gives the same 32 bytes in every
    /// process that holds the same root. Blocking for remote keys. The right to call this is the right to sign as
    /// every intermediate: it is guarded like signing with the root.
    ///
    /// `context` is 1 to 4096 bytes for every signer (KMS's limit). A root opened without `create` whose secret does
    /// not exist yet answers `FailedPrecondition` saying how to create it.
    fn derive_secret(&self, context: &[u8]) -> Result<[u8; 32]>;
    /// Whether signing leaves this process (KMS, a token): such calls block for milliseconds or more.
    fn is_remote(&self) -> bool {
        true
    }
}

/// Opens the key `uri` names. With `create`, a key that does not exist yet is created (KMS: a key and the alias;
/// PKCS#11: a non-extractable key pair with that label; file: a fresh key written 0600), and so is its derivation
/// secret (KMS: an HMAC_256 key, alias [`kms_derive_alias`]; PKCS#11: a generic secret labelled `OBJECT-derive`);
/// without it, a missing key is an error but a missing derivation secret is not: the signer opens and only
/// [`Signer::derive_secret`] fails, until the secret is created and the key opened again. Blocking: call from a
/// blocking thread or before the runtime starts serving.
pub fn open(uri: &KeyUri, create: bool) -> Result<Arc<dyn Signer>> {
    Ok(match uri {
        KeyUri::File(path) => Arc::new(file::FileKey::open(path, create)?),
        #[cfg(not(feature = "aws"))]
        KeyUri::AwsKms { .. } => return Err(crate::error::without_aws("an awskms: key")),
        #[cfg(feature = "aws")]
        KeyUri::AwsKms { key_id, region, endpoint } => {
            Arc::new(awskms::KmsKey::open(key_id, region.as_deref(), endpoint.as_deref(), create)?)
        }
        KeyUri::Pkcs11(p) => Arc::new(pkcs11::Pkcs11Key::open(p, create)?),
    })
}

/// A fresh P-256 key that lives in this process only (tests and tools).
pub fn in_memory() -> Result<Arc<dyn Signer>> {
    Ok(Arc::new(file::FileKey::generate_in_memory()?))
}

/// Opens `uri` on a blocking thread, from async code.
pub async fn open_async(uri: KeyUri, create: bool) -> Result<Arc<dyn Signer>> {
    tokio::task::spawn_blocking(move || open(&uri, create)).await.map_err(|e| Error::internal("open CA key", e))?
}

/// Adapts a [`Signer`] to rcgen, so rcgen can sign certificates with it.
#[derive(Clone, Debug)]
pub struct RcgenKey(pub Arc<dyn Signer>);

impl rcgen::PublicKeyData for RcgenKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_point()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RcgenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|e| {
            tracing::error!(key = %self.0.describe(), error = %e, "CA key failed to sign");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// Checks that `signature` (DER) verifies over `message` with the signer's public key: a key that signs with another
/// key than it reports, or a token that garbles signatures, is caught before its output is trusted.
pub fn self_test(signer: &dyn Signer) -> Result<()> {
    let message = b"principald signer self-test";
    let signature = signer.sign(message)?;
    let public = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        signer.public_point(),
    );
    public.verify(message, &signature).map_err(|_| {
        Error::FailedPrecondition(format!("the CA key {} signs with another key than it reports", signer.describe()))
    })
}

/// The EC point inside a P-256 SubjectPublicKeyInfo; error if the key is not P-256.
fn point_of_spki(spki: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
        .map_err(|_| Error::FailedPrecondition("the CA key's public key cannot be parsed".into()))?;
    const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
    const P256: &str = "1.2.840.10045.3.1.7";
    let curve = info.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
    if info.algorithm.algorithm.to_id_string() != EC_PUBLIC_KEY || curve.as_deref() != Some(P256) {
        return Err(Error::FailedPrecondition("the CA key must be an ECDSA P-256 key".into()));
    }
    Ok(info.subject_public_key.data.to_vec())
}

/// A P-256 SubjectPublicKeyInfo around an uncompressed point.
fn spki_of_point(point: &[u8]) -> Vec<u8> {
    // SEQUENCE { SEQUENCE { ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) point }
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let mut out = PREFIX.to_vec();
    out.extend_from_slice(point);
    out
}

/// DER ECDSA-Sig-Value from a raw r‖s signature (PKCS#11 CKM_ECDSA answers raw).
fn der_signature(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.len() != 64 {
        return Err(Error::internal("PKCS#11 signature", format!("{} bytes, expected 64", raw.len())));
    }
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let trimmed: &[u8] = {
            let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
            &bytes[start..]
        };
        let mut out = vec![0x02];
        if trimmed[0] & 0x80 != 0 {
            out.push(trimmed.len() as u8 + 1);
            out.push(0);
        } else {
            out.push(trimmed.len() as u8);
        }
        out.extend_from_slice(trimmed);
        out
    }
    let (r, s) = (integer(&raw[..32]), integer(&raw[32..]));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_signatures_become_der_that_aws_lc_accepts() {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        for i in 0..200u32 {
            let message = i.to_be_bytes();
            let raw = key.sign(&rng, &message).unwrap();
            let der = der_signature(raw.as_ref()).unwrap();
            let public = aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                key.public_key().as_ref(),
            );
            public.verify(&message, &der).expect("DER signature verifies");
        }
    }

    use rcgen::PublicKeyData;

    #[test]
    fn spki_round_trips_through_the_point() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = key.subject_public_key_info();
        let point = point_of_spki(&spki).unwrap();
        assert_eq!(spki_of_point(&point), spki);
    }

    #[test]
    fn keys_other_than_p256_are_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(point_of_spki(&key.subject_public_key_info()).is_err());
    }

    // A test-only key (openssl genpkey), in PKCS#8 and in SEC1 ("EC PRIVATE KEY") encodings.
    const TEST_KEY_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgrUmza2xAztUuseT1
eIFIw19FbO5xzuvVmee55IA7iu2hRANCAASwEZpjjX6vg8MgVLLF/9pyM+VO1KD2
wyxzozzZ5T5zbqJTfp3y7EOV305uOgRXjK7NTCLhd2upZ9pkihXb/OkK
-----END PRIVATE KEY-----
";
    const TEST_KEY_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIK1Js2tsQM7VLrHk9XiBSMNfRWzucc7r1ZnnueSAO4rtoAoGCCqGSM49
AwEHoUQDQgAEsBGaY41+r4PDIFSyxf/acjPlTtSg9sMsc6M82eU+c26iU36d8uxD
ld9ObjoEV4yuzUwi4XdrqWfaZIoV2/zpCg==
-----END EC PRIVATE KEY-----
";

    fn file_key(pem: &str) -> (tempfile::TempDir, Arc<dyn Signer>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        std::fs::write(&path, pem).unwrap();
        let key = open(&KeyUri::File(path), false).unwrap();
        (dir, key)
    }

    /// The public point of a derived PKCS#8 key, loaded the ways callers load it.
    fn derived_point(signer: &dyn Signer, context: &[u8]) -> Vec<u8> {
        let pkcs8 = derive_p256_pkcs8(signer, context).unwrap();
        let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("rcgen loads the derived key");
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice());
        let again = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert_eq!(again.der_bytes(), key.der_bytes());
        // It signs, and its signatures verify under its public key.
        let signature = rcgen::SigningKey::sign(&key, b"m").unwrap();
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1, key.der_bytes())
            .verify(b"m", &signature)
            .expect("the derived key's signature verifies");
        key.der_bytes().to_vec()
    }

    #[test]
    fn derive_secret_is_deterministic_per_context_and_differs_across_contexts() {
        let key = in_memory().unwrap();
        assert_eq!(key.derive_secret(b"a").unwrap(), key.derive_secret(b"a").unwrap());
        assert_ne!(key.derive_secret(b"a").unwrap(), key.derive_secret(b"b").unwrap());
        let other = in_memory().unwrap();
        assert_ne!(key.derive_secret(b"a").unwrap(), other.derive_secret(b"a").unwrap(), "another root");
        assert!(key.derive_secret(b"").is_err(), "no empty context (KMS refuses one)");
        assert!(key.derive_secret(&[0; 4097]).is_err(), "no context KMS would refuse");
    }

    #[test]
    fn derived_keys_load_in_rcgen_and_are_one_per_context() {
        let key = in_memory().unwrap();
        let a = derived_point(key.as_ref(), b"principald intermediate key v1\0\x01");
        assert_eq!(a, derived_point(key.as_ref(), b"principald intermediate key v1\0\x01"), "same context, same key");
        assert_ne!(a, derived_point(key.as_ref(), b"principald intermediate key v1\0\x02"), "another context");
        assert_ne!(a, key.public_point(), "not the root's key");
        assert!(derive_p256_pkcs8(key.as_ref(), &[0; 4096]).is_err(), "no room for the counter byte");
    }

    #[test]
    fn a_file_key_reopened_or_re_encoded_derives_the_same() {
        let (_a, first) = file_key(TEST_KEY_PKCS8);
        let (_b, reopened) = file_key(TEST_KEY_PKCS8);
        let (_c, sec1) = file_key(TEST_KEY_SEC1);
        let context = b"principald intermediate key v1\0\x2a";
        let secret = first.derive_secret(context).unwrap();
        assert_eq!(reopened.derive_secret(context).unwrap(), secret);
        assert_eq!(sec1.derive_secret(context).unwrap(), secret, "the secret depends on the key, not its encoding");
        assert_eq!(derived_point(first.as_ref(), context), derived_point(reopened.as_ref(), context));
        // Stored format: every intermediate's key depends on these bytes. A change here orphans them.
        assert_eq!(crate::model::hex(&secret), "263c8f1a0c6456dd9be774d5e14f0e82b72b87e12a96a4903cea798848c61a72");
        assert_eq!(
            crate::model::hex(&derived_point(first.as_ref(), context)),
            "041eb6a3907433f2286cce324d8be77c4487353c18977845bff8de1e74490d36eada3914b0d107d6319f9b50c2d0611189d692ad0dfaae6a1f2ba062f2da480ea8"
        );
    }

    /// A root whose secret is a fixed HMAC key, and whose first answer (counter 0) is not a valid scalar.
    #[derive(Debug)]
    struct Unlucky(aws_lc_rs::hmac::Key);

    impl Signer for Unlucky {
        fn spki_der(&self) -> &[u8] {
            &[]
        }
        fn public_point(&self) -> &[u8] {
            &[]
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>> {
            Err(Error::internal("test", "does not sign"))
        }
        fn derive_secret(&self, context: &[u8]) -> Result<[u8; 32]> {
            if context.last() == Some(&0) {
                return Ok([0xff; 32]);
            }
            Ok(aws_lc_rs::hmac::sign(&self.0, context).as_ref().try_into().unwrap())
        }
        fn describe(&self) -> String {
            "unlucky".into()
        }
    }

    #[test]
    fn an_out_of_range_scalar_moves_on_to_the_next_counter() {
        let root = Unlucky(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"k"));
        let point = derived_point(&root, b"c");
        // The scalar is HMAC("c" || 0x01).
        let mut scalar = [0u8; 32];
        scalar.copy_from_slice(aws_lc_rs::hmac::sign(&root.0, b"c\x01").as_ref());
        let mut sec1 = vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
        sec1.extend(scalar);
        sec1.extend([0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]);
        use aws_lc_rs::signature::KeyPair;
        let expected = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &sec1,
        )
        .unwrap();
        assert_eq!(point, expected.public_key().as_ref());
    }
}
