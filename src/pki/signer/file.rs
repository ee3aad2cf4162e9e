//! A root key in a PEM PKCS#8 file (0600): the embedded single-node default; also the in-memory key of tests and
//! tools. Its derivation secret is derived from the private key itself (`derive::file_secret`), so whoever holds the
//! file can re-derive every intermediate's key, exactly as whoever holds it can sign as the root.

use std::path::Path;

use rcgen::{KeyPair, PublicKeyData};

use super::Signer;
use crate::error::{Error, Result};

pub struct FileKey {
    key: KeyPair,
    /// HMAC key of `derive_secret`, made once from `key` (aws-lc keeps it; no other copy is kept here).
    derive: aws_lc_rs::hmac::Key,
    point: Vec<u8>,
    spki: Vec<u8>,
    path: String,
}

impl FileKey {
    /// Loads the key at `path`; with `create`, a missing file gets a fresh P-256 key (written 0600 before use).
    pub fn open(path: &Path, create: bool) -> Result<Self> {
        let key = match std::fs::read_to_string(path) {
            Ok(pem) => KeyPair::from_pem(&pem)
                .map_err(|_| Error::InvalidArgument(format!("{} holds no usable PEM private key", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| Error::internal("generate CA key", e))?;
                crate::files::write_private(path, key.serialize_pem().as_bytes())?;
                key
            }
            Err(e) => return Err(Error::InvalidArgument(format!("cannot read CA key {}: {e}", path.display()))),
        };
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(Error::InvalidArgument(format!("{} is not an ECDSA P-256 key", path.display())));
        }
        Self::from_key(key, format!("file:{}", path.display()))
    }
}

impl FileKey {
    pub fn generate_in_memory() -> Result<Self> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| Error::internal("generate CA key", e))?;
        Self::from_key(key, "memory".into())
    }

    fn from_key(key: KeyPair, path: String) -> Result<Self> {
        let derive = super::derive::file_secret(&key)?;
        Ok(Self { point: key.der_bytes().to_vec(), spki: key.subject_public_key_info(), key, derive, path })
    }
}

impl Signer for FileKey {
    fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn public_point(&self) -> &[u8] {
        &self.point
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        rcgen::SigningKey::sign(&self.key, message).map_err(|e| Error::internal("sign with CA key", e))
    }

    fn derive_secret(&self, context: &[u8]) -> Result<[u8; 32]> {
        super::derive::local_hmac(&self.derive, context)
    }

    fn describe(&self) -> String {
        self.path.clone()
    }

    fn is_remote(&self) -> bool {
        false
    }
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKey").field("path", &self.path).finish_non_exhaustive()
    }
}
