//! The gRPC listener's own certificate, kept fresh without a restart: loaded at start, re-issued from the CA when a
//! third of its lifetime remains (or when its files are missing, unreadable or do not match each other), and handed to
//! rustls through a resolver that always serves the current one.

use std::fmt;
use std::sync::{Arc, RwLock};

use rcgen::KeyPair;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::files;
use crate::model::now;
use crate::pki::ca::CertificateAuthority;
use crate::pki::profile;

/// A server certificate lives one year.
pub const SERVER_VALIDITY: time::Duration = time::Duration::days(365);
/// Validity of the server certificate of a replica whose leaves are signed by replica intermediates.
pub const SERVER_VALIDITY_WITH_INTERMEDIATES: time::Duration = time::Duration::days(30);

/// The current server certificate and how to replace it.
pub struct ServerCertificate {
    dir: DataDir,
    ca: Arc<CertificateAuthority>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    /// What TLS presents: the chain with the root appended, so a client that pins the CA by its fingerprint (an
    /// enrolling worker, which has no CA certificate yet) can verify the server during the handshake.
    served: Arc<CertifiedKey>,
    names: Vec<String>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl ServerCertificate {
    /// Loads the certificate from the data dir, re-issuing it first if it is due or unusable. `fallback_names` are used
    /// only when the current certificate cannot be read at all.
    pub fn load(dir: &DataDir, ca: Arc<CertificateAuthority>, fallback_names: &[String]) -> Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // A file left by an earlier version may chain through an intermediate: the root signs server certificates now.
        let current = match read(dir, &provider).and_then(|c| issued_by(&c, &ca).map(|()| c)) {
            Ok(current) if current.key.cert.len() == 1 && !due(current.not_before, current.not_after, now()) => current,
            Ok(current) => issue(dir, &ca, &provider, &current.names)?,
            Err(_) => {
                let names = read_names(dir).unwrap_or_else(|| fallback_names.to_vec());
                issue(dir, &ca, &provider, &names)?
            }
        };
        let current = with_root(current, &ca);
        Ok(Arc::new(Self { dir: dir.clone(), ca, provider, current: RwLock::new(current) }))
    }

    /// The data directory's certificate as it is, for a process that cannot re-issue it (no CA key beside it: the
    /// root is in KMS or an HSM, or belongs to principald alone). principald renews the files; a restart picks the new
    /// ones up. An expired certificate is refused with what to do.
    pub fn load_as_is(dir: &DataDir) -> Result<Arc<rustls::sign::SingleCertAndKey>> {
        let current = read(dir, &rustls::crypto::aws_lc_rs::default_provider())?;
        if current.not_after <= now() {
            return Err(Error::FailedPrecondition(format!(
                "the server certificate in {} has expired: start principald on this data directory (it renews it)",
                dir.root().display()
            )));
        }
        Ok(Arc::new(rustls::sign::SingleCertAndKey::from(current.key)))
    }

    /// Re-issues the certificate (same names) if a third or less of its lifetime remains; `true` if it did.
    pub fn renew_if_due(&self) -> Result<bool> {
        let (names, not_before, not_after) = {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            (current.names.clone(), current.not_before, current.not_after)
        };
        if !due(not_before, not_after, now()) {
            return Ok(false);
        }
        let fresh = with_root(issue(&self.dir, &self.ca, &self.provider, &names)?, &self.ca);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(true)
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.current.read().unwrap_or_else(|p| p.into_inner()).not_after
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).served.clone())
    }
}

impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificate").field("not_after", &self.not_after()).field("key", &"...").finish()
    }
}

/// Renew when at most a third of the lifetime is left.
fn due(not_before: OffsetDateTime, not_after: OffsetDateTime, now: OffsetDateTime) -> bool {
    now >= not_before + (not_after - not_before) * 2 / 3
}

fn read(dir: &DataDir, provider: &CryptoProvider) -> Result<Current> {
    let unusable = |what: String| Error::InvalidArgument(format!("server certificate unusable: {what}"));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.server_cert())
        .and_then(|certs| certs.collect())
        .map_err(|e| unusable(e.to_string()))?;
    let leaf = chain.first().ok_or_else(|| unusable("no certificate".into()))?;
    let (not_before, not_after, names) = describe(leaf).ok_or_else(|| unusable("cannot parse".into()))?;
    let key = PrivateKeyDer::from_pem_file(dir.server_key()).map_err(|e| unusable(e.to_string()))?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| unusable(e.to_string()))?;
    let key = Arc::new(key);
    Ok(Current { served: key.clone(), key, names, not_before, not_after })
}

/// `current` presenting its chain and the root after it.
fn with_root(mut current: Current, ca: &CertificateAuthority) -> Current {
    let mut chain = current.key.cert.clone();
    chain.push(ca.cert_der().clone());
    current.served = Arc::new(CertifiedKey::new(chain, current.key.key.clone()));
    current
}

/// `Ok` if the certificate chains to `ca`'s root, directly or through the intermediate beside it in the file (it may
/// not, after the CA files were replaced).
fn issued_by(current: &Current, ca: &CertificateAuthority) -> Result<()> {
    let not_ours = || Error::InvalidArgument("server certificate was not issued by this CA".into());
    fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>> {
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c)
            .map_err(|_| Error::InvalidArgument("server certificate was not issued by this CA".into()))
    }
    let (_, root) = x509_parser::parse_x509_certificate(ca.cert_der()).map_err(|_| not_ours())?;
    let chain = &current.key.cert;
    let leaf = parse(chain.first().ok_or_else(not_ours)?)?;
    match chain.get(1) {
        None => leaf.verify_signature(Some(root.public_key())).map_err(|_| not_ours()),
        Some(intermediate) => {
            let intermediate = parse(intermediate)?;
            intermediate.verify_signature(Some(root.public_key())).map_err(|_| not_ours())?;
            leaf.verify_signature(Some(intermediate.public_key())).map_err(|_| not_ours())
        }
    }
}

fn read_names(dir: &DataDir) -> Option<Vec<String>> {
    let leaf = CertificateDer::from_pem_file(dir.server_cert()).ok()?;
    describe(&leaf).map(|(_, _, names)| names).filter(|n| !n.is_empty())
}

/// Validity and subject alternative names (DNS names and IP addresses) of a certificate.
fn describe(der: &[u8]) -> Option<(OffsetDateTime, OffsetDateTime, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => names.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                    16 => names.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some((cert.validity().not_before.to_datetime(), cert.validity().not_after.to_datetime(), names))
}

/// Issues a new server key and certificate for `names`, signed by `ca`'s root (intermediates carry the clientAuth
/// EKU only, so they cannot sign a server certificate), and writes both to the data dir (key 0600). Key first: a crash
/// between the two writes leaves a mismatched pair, which the next start detects and repairs by issuing again with the
/// names read from the certificate file. Returns the certificate, its key, its validity and `None` (no intermediate).
#[allow(clippy::type_complexity)]
pub fn issue_files(
    dir: &DataDir,
    ca: &CertificateAuthority,
    names: &[String],
) -> Result<(rcgen::Certificate, KeyPair, OffsetDateTime, OffsetDateTime, Option<Vec<u8>>)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| Error::internal("server key", e))?;
    let at = now();
    // With replica intermediates (a root in KMS or an HSM) a server key lives as long as a month, not a year: it cannot
    // be withdrawn with its replica's intermediate any more.
    let validity = if ca.issuing().record.is_some() { SERVER_VALIDITY_WITH_INTERMEDIATES } else { SERVER_VALIDITY };
    let not_after = (at + validity).min(ca.not_after());
    let params = profile::server_certificate(names, at - profile::BACKDATE, not_after)?;
    let cert = ca.sign_with_root(&params, &key)?;
    files::write_private(&dir.server_key(), key.serialize_pem().as_bytes())?;
    files::write_public(&dir.server_cert(), cert.pem().as_bytes())?;
    tracing::info!(names = %names.join(","), %not_after, "server certificate issued");
    Ok((cert, key, params.not_before, not_after, None))
}

/// Issues and writes a new certificate (see [`issue_files`]) and returns it ready for rustls.
fn issue(dir: &DataDir, ca: &CertificateAuthority, provider: &CryptoProvider, names: &[String]) -> Result<Current> {
    let (cert, key, not_before, not_after, intermediate) = issue_files(dir, ca, names)?;
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| Error::internal("server key", e))?;
    let mut chain = vec![cert.der().clone()];
    chain.extend(intermediate.map(CertificateDer::from));
    let certified =
        CertifiedKey::from_der(chain, der, provider).map_err(|e| Error::internal("server certificate", e))?;
    let key = Arc::new(certified);
    Ok(Current { served: key.clone(), key, names: names.to_vec(), not_before, not_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_in_the_last_third_of_the_lifetime() {
        let start = OffsetDateTime::UNIX_EPOCH;
        let end = start + time::Duration::days(300);
        assert!(!due(start, end, start + time::Duration::days(199)));
        assert!(due(start, end, start + time::Duration::days(200)));
        assert!(due(start, end, end + time::Duration::days(1)));
    }
}

#[cfg(test)]
mod eku {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    use crate::pki::ca::{CertificateAuthority, Root};
    use crate::pki::intermediate::IntermediatePolicy;
    use crate::pki::profile;

    fn verify_as_server(root: &CertificateDer<'static>, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A stolen intermediate key cannot mint a server certificate a TLS client accepts; the root's server
    /// certificate verifies.
    #[test]
    fn intermediates_are_for_client_certificates_only() {
        let root =
            Root::create(crate::pki::signer::in_memory().unwrap(), "eku test", time::Duration::days(30), true).unwrap();
        let policy = IntermediatePolicy { lifetime: time::Duration::hours(24), longest_leaf: time::Duration::days(1) };
        let ca = CertificateAuthority::with_intermediate(root, "r1", policy).unwrap();
        let intermediate = CertificateDer::from(ca.issuing().record.as_ref().unwrap().der.clone());
        let (_, parsed) = x509_parser::parse_x509_certificate(&intermediate).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && !eku.any, "{eku:?}");

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let now = crate::model::now();
        let params = profile::server_certificate(&["localhost".into()], now, now + time::Duration::hours(1)).unwrap();
        let (forged, _) = ca.sign(&params, &key).unwrap();
        let refused = verify_as_server(ca.cert_der(), &[forged.der().clone(), intermediate]);
        assert!(refused.is_err(), "a server certificate below an intermediate was accepted");

        let genuine = ca.sign_with_root(&params, &key).unwrap();
        verify_as_server(ca.cert_der(), &[genuine.der().clone()]).expect("the root's server certificate");
    }
}

#[cfg(test)]
mod window {
    use crate::pki::ca::{CertificateAuthority, Root};
    use crate::pki::intermediate::IntermediatePolicy;
    use crate::pki::profile;

    /// An intermediate that could not be replaced stops signing at the end of its window.
    #[test]
    fn an_intermediate_signs_nothing_past_its_window() {
        let root =
            Root::create(crate::pki::signer::in_memory().unwrap(), "window", time::Duration::days(1), true).unwrap();
        let policy =
            IntermediatePolicy { lifetime: time::Duration::seconds(1), longest_leaf: time::Duration::hours(1) };
        let ca = CertificateAuthority::with_intermediate(root, "r1", policy).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let now = crate::model::now();
        let params = profile::server_certificate(&["x".into()], now, now + time::Duration::minutes(5)).unwrap();
        ca.sign(&params, &key).expect("within the window");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let refused = ca.sign(&params, &key).err().expect("past the window");
        assert!(matches!(refused, crate::error::Error::Unavailable(_)), "{refused:?}");
    }
}
