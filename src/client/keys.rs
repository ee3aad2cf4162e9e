//! Client keys: generating one with its CSR (only the CSR leaves the machine), the pending key that makes a renewal
//! resumable, and reading a certificate's validity.

use std::path::Path;

use clap::ValueEnum;
use rcgen::{CertificateParams, KeyPair};
use time::OffsetDateTime;

use crate::files;

/// The algorithm of a new client key.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum KeyType {
    #[default]
    P256,
    P384,
    Ed25519,
}

pub fn key_and_csr(key_type: KeyType) -> Result<(KeyPair, String), String> {
    let alg = match key_type {
        KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyType::Ed25519 => &rcgen::PKCS_ED25519,
    };
    let key = KeyPair::generate_for(alg).map_err(|e| format!("cannot generate a key: {e}"))?;
    let csr = csr_for(&key)?;
    Ok((key, csr))
}

/// The key of a renewal in progress: kept until the renewal succeeds, so a retry after a lost response asks with the
/// same key and gets the certificate the server already issued (a certificate renews once, for one key).
pub const PENDING_KEY: &str = "pending-key.pem";

pub fn pending_key_and_csr(dir: &Path, key_type: KeyType) -> Result<(KeyPair, String), String> {
    let path = dir.join(PENDING_KEY);
    match std::fs::read_to_string(&path) {
        Ok(pem) => {
            let key = KeyPair::from_pem(&pem).map_err(|e| {
                format!("cannot read the pending renewal key {}: {e}; remove it to start over", path.display())
            })?;
            let csr = csr_for(&key)?;
            Ok((key, csr))
        }
        Err(_) => {
            let (key, csr) = key_and_csr(key_type)?;
            files::write_private(&path, key.serialize_pem().as_bytes()).map_err(|e| e.to_string())?;
            Ok((key, csr))
        }
    }
}

fn csr_for(key: &KeyPair) -> Result<String, String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serialize_request(key).and_then(|r| r.pem()).map_err(|e| format!("cannot build the CSR: {e}"))
}

pub fn read_certificate(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(&pem)
        .map(|der| der.to_vec())
        .map_err(|_| format!("{} holds no PEM certificate", path.display()))
}

pub fn validity_of(path: &Path) -> Result<(OffsetDateTime, OffsetDateTime), String> {
    let der = read_certificate(path)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| format!("{} is not a valid certificate", path.display()))?;
    Ok((cert.validity().not_before.to_datetime(), cert.validity().not_after.to_datetime()))
}
