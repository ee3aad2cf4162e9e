//! Enrollment on the client's side (`principalctl enroll TOKEN --out DIR`, `principald agent --join-token`). The token (from `principalctl principal
//! enroll-token`) carries the server address, the CA's SHA-256 fingerprint, the principal id and the secret. The
//! worker has no CA certificate yet, so it pins the server by that fingerprint: the TLS handshake is accepted only if
//! the server presents a certificate with that fingerprint and its own certificate verifies against it, before the
//! secret is sent anywhere. The key is generated here and never leaves the machine.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::proto::principal_service_client::PrincipalServiceClient;
use crate::proto::{self as pb};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

use super::keys::{KeyType, PENDING_KEY, pending_key_and_csr};
use super::renewal::presented_chain;
use super::{Profile, ProfileFile, credentials};

const PREFIX: &str = "pdenroll1.";

/// What an enrollment token string carries.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenString {
    /// Server address, https://host:port.
    pub s: String,
    /// CA certificate SHA-256, hex.
    pub f: String,
    /// Principal id.
    pub p: String,
    /// Secret.
    pub k: String,
}

pub fn encode(token: &TokenString) -> String {
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(token).unwrap_or_default()))
}

pub fn decode(text: &str) -> Result<TokenString, String> {
    let bad =
        || "not an enrollment token: copy the whole string `principalctl principal enroll-token` printed".to_owned();
    let body = text.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
    let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
    let token: TokenString = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let hex64 = token.f.len() == 64 && token.f.bytes().all(|b| b.is_ascii_hexdigit());
    if !token.s.starts_with("https://") || !hex64 || token.k.is_empty() {
        return Err(bad());
    }
    Ok(token)
}

/// The token from the argument, from stdin (`-`) or from a file.
pub fn read_token(argument: Option<&str>, file: Option<&Path>) -> Result<String, String> {
    match (argument, file) {
        (_, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the enrollment token from {}: {e}", path.display())),
        (Some("-"), None) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read the enrollment token from stdin: {e}"))?;
            Ok(text)
        }
        (Some(token), None) => Ok(token.to_owned()),
        (None, None) => Err("give the enrollment token: TOKEN, - (stdin) or --token-file FILE".into()),
    }
}

/// A profile written by [`enroll`].
pub struct Enrolled {
    pub principal_id: String,
    pub serial: String,
    pub profile: Profile,
}

/// Enrolls with `token` (a string [`encode`] made): pins the server by the token's CA fingerprint, makes the key
/// here, consumes the token for a certificate and writes a ready profile to `out`. `server` replaces the token's
/// address (a machine that reaches principald by another name; the fingerprint still decides whom it trusts). Waits
/// are reported to `waiting`.
pub async fn enroll(
    token: &str,
    server: Option<&str>,
    out: &Path,
    key_type: KeyType,
    force: bool,
    waiting: impl FnMut(&tonic::Status, std::time::Duration),
) -> Result<Enrolled, String> {
    let mut token = decode(token)?;
    if let Some(server) = server {
        token.s = server.to_owned();
    }
    if !force && out.join(super::PROFILE_FILE).exists() {
        return Err(format!("{} already holds a profile: choose another --out or pass --force", out.display()));
    }
    let root = pinned_root(&token.s, &token.f).await?;
    let root_pem = crate::pki::pem::pem_of(&root);
    // From here on the server is verified against the pinned root, like any profile's CA.
    let tls =
        tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&root_pem));
    let endpoint = tonic::transport::Endpoint::from_shared(token.s.clone())
        .map_err(|e| format!("bad server address {:?}: {e}", token.s))?
        .tls_config(tls)
        .map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| format!("cannot connect to {}: {e}", token.s))?;
    // The key waits in DIR until the profile is written: a retry after a lost response asks with the same key and
    // gets the certificate the server already issued for this token.
    let created = !out.exists();
    crate::files::create_private_dir(out).map_err(|e| e.to_string())?;
    let (key, csr) = pending_key_and_csr(out, key_type)?;
    let request = pb::EnrollRequest {
        principal_id: token.p.clone(),
        secret: token.k.clone(),
        csr: csr.into_bytes(),
        validity_seconds: 0,
    };
    let client = PrincipalServiceClient::new(channel);
    let issued = super::Retry::default()
        .call(
            || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.enroll(request).await }
            },
            waiting,
        )
        .await
        .map_err(|s| {
            use tonic::Code::{FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated};
            if matches!(s.code(), Unauthenticated | InvalidArgument | FailedPrecondition | PermissionDenied) {
                // Refused for good: nothing of this attempt stays behind. (Otherwise the key waits for a retry.)
                let _ = std::fs::remove_file(out.join(PENDING_KEY));
                if created {
                    let _ = std::fs::remove_dir(out);
                }
            }
            match s.code() {
                tonic::Code::ResourceExhausted => format!("enrollment rate limited: {}", s.message()),
                _ => format!("enrollment refused: {}", s.message()),
            }
        })?
        .into_inner();
    let profile = write_profile(out, &token.s, &key, &issued, &root_pem)?;
    let _ = std::fs::remove_file(out.join(PENDING_KEY));
    let serial = issued.certificate.map(|c| c.serial).unwrap_or_default();
    Ok(Enrolled { principal_id: token.p, serial, profile })
}

/// Writes a profile for `issued` (its presented chain, `key`, the root) to `out`, switching atomically.
pub fn write_profile(
    out: &Path,
    server: &str,
    key: &rcgen::KeyPair,
    issued: &pb::IssueCertificateResponse,
    root_pem: &str,
) -> Result<Profile, String> {
    crate::files::create_private_dir(out).map_err(|e| e.to_string())?;
    let serial = issued.certificate.as_ref().map_or("", |c| c.serial.as_str());
    credentials::install(out, serial, presented_chain(issued), &key.serialize_pem(), root_pem)
        .map_err(|e| e.to_string())?;
    let file = ProfileFile {
        server: server.to_owned(),
        ca_cert: credentials::CA_FILE.into(),
        cert: credentials::CERT_FILE.into(),
        key: credentials::KEY_FILE.into(),
    };
    Profile::save(out, &file).map_err(|e| e.to_string())
}

/// Connects to `server` and returns the CA certificate whose SHA-256 is `fingerprint`, which the server presents after
/// its own chain, once the server's certificate verified against it (else the handshake fails).
async fn pinned_root(server: &str, fingerprint: &str) -> Result<Vec<u8>, String> {
    let url: tonic::codegen::http::Uri = server.parse().map_err(|e| format!("bad server address {server:?}: {e}"))?;
    let host = url.host().ok_or_else(|| format!("no host in {server:?}"))?.trim_matches(['[', ']']).to_owned();
    let port = url.port_u16().unwrap_or(443);
    let verifier = Arc::new(Pinned { fingerprint: fingerprint.to_ascii_lowercase(), found: Mutex::new(None) });
    let mut config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {server}: {e}"))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("bad host {host:?}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("{server} is not the server the token was made for: {e}"))?;
    verifier.found.lock().unwrap_or_else(|p| p.into_inner()).take().ok_or_else(|| "no pinned CA seen".to_owned())
}

/// Accepts a server whose presented chain holds the pinned CA and whose certificate verifies against it.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    found: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let root = intermediates
            .iter()
            .find(|c| crate::model::sha256_hex(c.as_ref()) == self.fingerprint)
            .ok_or_else(|| rustls::Error::General("the server's CA does not have the token's fingerprint".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone().into_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
        let webpki = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified = webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(root.as_ref().to_vec());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
    }
}
