//! Intermediate keys re-derivable from the root's derivation secret, so any replica can sign an intermediate's CRLs
//! and OCSP answers after the replica that created it is gone, although the key is never stored.
//!
//! The scalar is `HMAC(context || counter)` under the secret beside the root key ([`super::Signer::derive_secret`]),
//! for counter = 0, 1, .. (one byte) until it is a valid P-256 scalar (in [1, n-1]; the first one is, except with
//! probability about 2^-32). This is a stored format: changing anything here (the counter's encoding, the order of
//! the checks) changes every intermediate's key. Version the context instead.

use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

use super::Signer;
use crate::error::{Error, Result};

/// The most context bytes a signer takes: KMS GenerateMac's message limit, applied to every signer so that a context
/// valid with a file key stays valid after the root moves to KMS or a token.
pub(super) const MAX_CONTEXT: usize = 4096;

/// Label of the file and memory keys' derivation secret (SHA-256 of it and the private scalar).
const FILE_SECRET_LABEL: &[u8] = b"principald derivation secret v1";

/// The P-256 group order n, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// Refuses contexts some signer could not take (empty, or longer than KMS accepts).
pub(super) fn check_context(context: &[u8]) -> Result<()> {
    if context.is_empty() || context.len() > MAX_CONTEXT {
        return Err(Error::internal("derive secret", format!("context of {} bytes (1 to 4096)", context.len())));
    }
    Ok(())
}

/// The HMAC key of a file or memory root: SHA-256(label || the 32-byte big-endian private scalar). The scalar, not
/// the file's PKCS#8 bytes, so the same key re-encoded (SEC1, PKCS#8 with or without its public key) derives the same.
pub(super) fn file_secret(key: &rcgen::KeyPair) -> Result<aws_lc_rs::hmac::Key> {
    let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, key.serialized_der())
        .map_err(|e| Error::internal("read CA key for derivation", e))?;
    // Zeroized when dropped (aws-lc-rs buffer).
    let scalar = pair.private_key().as_be_bytes().map_err(|e| Error::internal("read CA key for derivation", e))?;
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    hash.update(FILE_SECRET_LABEL);
    hash.update(scalar.as_ref());
    Ok(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, hash.finish().as_ref()))
}

/// HMAC-SHA256 of `context` under a local secret key, as the file and memory signers answer.
pub(super) fn local_hmac(key: &aws_lc_rs::hmac::Key, context: &[u8]) -> Result<[u8; 32]> {
    check_context(context)?;
    let tag = aws_lc_rs::hmac::sign(key, context);
    tag.as_ref().try_into().map_err(|_| Error::internal("derive secret", "HMAC-SHA256 is not 32 bytes"))
}

/// The P-256 private key of the intermediate whose context is `context` (principald uses
/// `b"principald intermediate key v1\0" || serial bytes`), as PKCS#8 v1 DER that rcgen's `KeyPair::try_from` and
/// `KeyPair::from_pkcs8_der_and_sign_algo` load. The same root and context give the same key in every process.
///
/// SECRET: the returned bytes are the intermediate's private key. Never log them, never store them; drop (and
/// preferably overwrite) them once loaded. One `derive_secret` call (a KMS or token call for remote roots: blocking).
pub fn derive_p256_pkcs8(signer: &dyn Signer, context: &[u8]) -> Result<Vec<u8>> {
    if context.len() >= MAX_CONTEXT {
        return Err(Error::internal("derive key", format!("context of {} bytes (at most 4095)", context.len())));
    }
    let mut input = Vec::with_capacity(context.len() + 1);
    input.extend_from_slice(context);
    input.push(0);
    for counter in 0..=u8::MAX {
        *input.last_mut().expect("the counter byte") = counter;
        let mut scalar = signer.derive_secret(&input)?;
        if !valid_scalar(&scalar) {
            wipe(&mut scalar);
            continue;
        }
        let mut der = ec_private_key(&scalar);
        wipe(&mut scalar);
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, &der);
        wipe(&mut der);
        let pkcs8 = pair
            .map_err(|e| Error::internal("derive key", e))?
            .to_pkcs8v1()
            .map_err(|e| Error::internal("derive key", e))?;
        // `pkcs8` (an aws-lc-rs Document) is zeroized when dropped; the copy is the caller's to guard.
        return Ok(pkcs8.as_ref().to_vec());
    }
    // 256 HMAC outputs all >= n or zero: the derivation secret is broken, not unlucky.
    Err(Error::internal("derive key", "no valid P-256 scalar in 256 tries"))
}

/// Whether `scalar` (big-endian) is in [1, n-1].
fn valid_scalar(scalar: &[u8; 32]) -> bool {
    scalar.iter().any(|&b| b != 0) && scalar[..] < P256_ORDER[..]
}

/// RFC 5915 ECPrivateKey { version 1, privateKey, parameters prime256v1 } without the optional public key, which
/// aws-lc computes when it parses this.
fn ec_private_key(scalar: &[u8; 32]) -> Vec<u8> {
    const HEAD: [u8; 7] = [0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
    const CURVE: [u8; 12] = [0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let mut der = Vec::with_capacity(HEAD.len() + 32 + CURVE.len());
    der.extend_from_slice(&HEAD);
    der.extend_from_slice(scalar);
    der.extend_from_slice(&CURVE);
    der
}

/// Overwrites key material before its memory is freed or reused. `black_box` makes the compiler assume the zeros
/// are read, so it cannot drop the writes as dead stores (the crate allows no `unsafe`, hence no volatile writes).
pub(super) fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(&*bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_outside_one_to_n_minus_one_are_refused() {
        assert!(!valid_scalar(&[0; 32]));
        assert!(!valid_scalar(&P256_ORDER));
        assert!(!valid_scalar(&[0xff; 32]));
        let mut below = P256_ORDER;
        below[31] -= 1;
        assert!(valid_scalar(&below));
        let mut one = [0; 32];
        one[31] = 1;
        assert!(valid_scalar(&one));
    }

    #[test]
    fn the_ec_private_key_encoding_is_what_aws_lc_parses() {
        let mut scalar = [0u8; 32];
        scalar[31] = 7;
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, &ec_private_key(&scalar))
            .expect("parses");
        assert_eq!(pair.private_key().as_be_bytes().unwrap().as_ref(), &scalar[..]);
    }

    #[test]
    fn contexts_every_signer_takes() {
        assert!(check_context(b"").is_err());
        assert!(check_context(&[1; MAX_CONTEXT]).is_ok());
        assert!(check_context(&[1; MAX_CONTEXT + 1]).is_err());
    }
}
