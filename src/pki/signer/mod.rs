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

mod awskms;
mod file;
mod pkcs11;
mod uri;

use std::fmt;
use std::sync::Arc;

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
    /// Whether signing leaves this process (KMS, a token): such calls block for milliseconds or more.
    fn is_remote(&self) -> bool {
        true
    }
}

/// Opens the key `uri` names. With `create`, a key that does not exist yet is created (KMS: a key and the alias;
/// PKCS#11: a non-extractable key pair with that label; file: a fresh key written 0600); without it, a missing key is
/// an error. Blocking: call from a blocking thread or before the runtime starts serving.
pub fn open(uri: &KeyUri, create: bool) -> Result<Arc<dyn Signer>> {
    Ok(match uri {
        KeyUri::File(path) => Arc::new(file::FileKey::open(path, create)?),
        KeyUri::AwsKms { key_id, region, endpoint } => {
            Arc::new(awskms::KmsKey::open(key_id, region.as_deref(), endpoint.as_deref(), create)?)
        }
        KeyUri::Pkcs11(p) => Arc::new(pkcs11::TokenKey::open(p, create)?),
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
}
