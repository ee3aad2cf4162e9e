//! The client side shared by principalctl, the tests and the benchmark: profiles (where the server is and which
//! credentials to present) and mTLS channels built from them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::Error;
use crate::files;

pub mod credentials;
pub mod enroll;
pub mod keys;
pub mod renewal;
pub mod rpc;

/// File name of a profile inside its directory.
pub const PROFILE_FILE: &str = "profile.json";

/// A principalctl profile as stored in `profile.json`. Paths are relative to the profile's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// `https://host:port` of principald.
    pub server: String,
    /// The CA certificate that signed the server certificate (PEM).
    pub ca_cert: String,
    /// This principal's certificate (PEM).
    pub cert: String,
    /// This principal's private key (PEM, mode 0600).
    pub key: String,
}

/// A loaded profile: the file plus where it lives.
#[derive(Clone, Debug)]
pub struct Profile {
    pub dir: PathBuf,
    pub file: ProfileFile,
}

impl Profile {
    /// Loads a profile from a directory holding `profile.json`, or from the JSON file itself.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let (dir, file_path) = if path.is_dir() {
            (path.to_path_buf(), path.join(PROFILE_FILE))
        } else {
            (path.parent().unwrap_or(Path::new(".")).to_path_buf(), path.to_path_buf())
        };
        let text = std::fs::read_to_string(&file_path)
            .map_err(|e| Error::InvalidArgument(format!("cannot read profile {}: {e}", file_path.display())))?;
        let file: ProfileFile = serde_json::from_str(&text)
            .map_err(|e| Error::InvalidArgument(format!("profile {} is malformed: {e}", file_path.display())))?;
        Ok(Self { dir, file })
    }

    /// Writes `file` as `dir/profile.json`, atomically: a reader sees the old profile or the new one.
    pub fn save(dir: &Path, file: &ProfileFile) -> Result<Self, Error> {
        let json = serde_json::to_string_pretty(file).map_err(|e| Error::internal("encode profile", e))?;
        files::write_public(&dir.join(PROFILE_FILE), format!("{json}\n").as_bytes())?;
        Ok(Self { dir: dir.to_path_buf(), file: file.clone() })
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join(&self.file.ca_cert)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(&self.file.cert)
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(&self.file.key)
    }

    /// Reads the CA certificate, the client certificate and the key.
    pub fn credentials(&self) -> Result<Credentials, Error> {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", p.display())))
        };
        Ok(Credentials {
            ca_pem: read(self.ca_cert_path())?,
            cert_pem: read(self.cert_path())?,
            key_pem: read(self.key_path())?,
        })
    }
}

/// PEM material for an mTLS connection. `Debug` hides the key.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("key_pem", &"...").finish_non_exhaustive()
    }
}

impl Credentials {
    /// `Ok` if the key is the private half of the first certificate's public key: a mismatch would otherwise show
    /// only as an opaque TLS failure.
    pub fn check(&self) -> Result<(), Error> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let leaf = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|_| Error::InvalidArgument("the certificate file holds no PEM certificate".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
            .map_err(|_| Error::InvalidArgument("the certificate file holds no valid certificate".into()))?;
        let key = rcgen::KeyPair::from_pem(&self.key_pem)
            .map_err(|_| Error::InvalidArgument("the key file holds no usable private key (PEM, PKCS#8)".into()))?;
        if rcgen::PublicKeyData::subject_public_key_info(&key) != cert.tbs_certificate.subject_pki.raw {
            return Err(Error::InvalidArgument(
                "the key does not match the certificate: the profile's key.pem and cert.pem are from different \
                 issuances; run `principalctl cert renew` (or issue a new profile)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// An endpoint for `server` (must be `https://`) that presents `credentials` and trusts only their CA.
pub fn endpoint(server: &str, credentials: &Credentials) -> Result<Endpoint, Error> {
    if !server.starts_with("https://") {
        // tonic silently speaks plaintext to http:// URIs even with a TLS config.
        return Err(Error::InvalidArgument(format!("server address {server:?} must start with https://")));
    }
    credentials.check()?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&credentials.ca_pem))
        .identity(Identity::from_pem(&credentials.cert_pem, &credentials.key_pem));
    Endpoint::from_shared(server.to_owned())
        .map_err(|e| Error::InvalidArgument(format!("invalid server address {server:?}: {e}")))?
        .tls_config(tls)
        .map_err(|e| Error::InvalidArgument(format!("invalid TLS material: {e}")))
        .map(|e| e.tcp_nodelay(true).connect_timeout(std::time::Duration::from_secs(10)))
}

/// How a client retries a call the server could not serve right now.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Calls in all, the first included.
    pub attempts: u32,
    /// First wait after UNAVAILABLE; doubles per attempt.
    pub backoff: std::time::Duration,
    /// Longest single wait, whatever the server's hint.
    pub max_wait: std::time::Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { attempts: 6, backoff: std::time::Duration::from_secs(1), max_wait: std::time::Duration::from_secs(300) }
    }
}

impl Retry {
    /// Calls `call` until it succeeds, fails for good, or the attempts are spent. RESOURCE_EXHAUSTED with the
    /// server's retry hint (`grpc-retry-pushback-ms`) waits that long plus up to a fifth more; UNAVAILABLE waits
    /// `backoff` doubling per attempt, with full jitter. Every other outcome is returned at once. `waiting` hears
    /// each wait before it starts (to tell the user).
    pub async fn call<T, F, Fut>(
        &self,
        mut call: F,
        mut waiting: impl FnMut(&tonic::Status, std::time::Duration),
    ) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut attempt = 1;
        loop {
            let status = match call().await {
                Ok(value) => return Ok(value),
                Err(status) => status,
            };
            let wait = match (status.code(), crate::error::retry_pushback(&status)) {
                (tonic::Code::ResourceExhausted, Some(hint)) => hint + jitter(hint / 5),
                (tonic::Code::Unavailable, _) => jitter(self.backoff.saturating_mul(1 << (attempt - 1).min(16))),
                _ => return Err(status),
            };
            if attempt >= self.attempts {
                return Err(status);
            }
            let wait = wait.min(self.max_wait);
            waiting(&status, wait);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// A uniformly random duration up to `max`.
pub fn jitter(max: std::time::Duration) -> std::time::Duration {
    let mut bytes = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    max.mul_f64(f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX))
}
