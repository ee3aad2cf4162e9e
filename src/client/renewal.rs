//! Renewing a profile's certificate in place, as `principalctl cert renew` does and as an embedding service can:
//! once ([`renew_once`]), or forever at two thirds of each certificate's lifetime ([`watch`]). A new key is kept as
//! the pending key until the new certificate is installed (see [`keys::PENDING_KEY`]), so a renewal whose response
//! was lost resumes with the same key; the files switch atomically (see [`credentials`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;
use tonic::{Code, Status};

use super::keys::{self, KeyType};
use super::{Profile, ProfileFile, credentials, rpc};
use crate::proto::{self as pb};

/// What a renewal reports while it works: principalctl prints these lines, a service may log them.
pub trait Events: Send + Sync {
    /// A call is retried after `wait` because the server said so (rate limit) or was unavailable.
    fn retrying(&self, status: &Status, wait: Duration);
    /// Something the operator should read (a renewal that failed and is retried, the next renewal time).
    fn notice(&self, message: &str);
    /// A certificate was renewed and installed.
    fn renewed(&self, renewed: &Renewed);
}

/// [`Events`] into the `tracing` log.
pub struct LogEvents;

impl Events for LogEvents {
    fn retrying(&self, status: &Status, wait: Duration) {
        tracing::info!(code = ?status.code(), wait_seconds = wait.as_secs_f64(), "renewal call retried");
    }
    fn notice(&self, message: &str) {
        tracing::info!("{message}");
    }
    fn renewed(&self, renewed: &Renewed) {
        tracing::info!(serial = %renewed.certificate.serial, profile = %renewed.profile_dir.display(), "renewed");
    }
}

/// A renewal that failed; `permanent` failures (revoked, suspended, expired) are not worth retrying.
#[derive(Debug)]
pub struct RenewError {
    pub message: String,
    pub permanent: bool,
}

/// A renewed certificate, installed in `profile_dir`.
pub struct Renewed {
    pub certificate: pb::Certificate,
    pub profile_dir: PathBuf,
}

/// Renews the profile in `dir` once: new key (kept as pending until success) and CSR, RenewCertificate with the
/// current credentials, then new files and an atomic switch of profile.json to them. A crash at any point leaves a
/// working profile, and the next attempt resumes with the same key.
pub async fn renew_once(
    dir: &Path,
    server: &str,
    validity: Option<Duration>,
    key_type: KeyType,
    events: &dyn Events,
) -> Result<Renewed, RenewError> {
    let permanent = |message: String| RenewError { message, permanent: true };
    let profile = Profile::load(dir).map_err(|e| permanent(e.to_string()))?;
    let credentials = profile.credentials().map_err(|e| permanent(e.to_string()))?;
    let (key, csr) = keys::pending_key_and_csr(dir, key_type).map_err(permanent)?;
    let client =
        rpc::connect(server, &credentials).await.map_err(|message| RenewError { message, permanent: false })?;
    let request =
        pb::RenewCertificateRequest { csr: csr.into_bytes(), validity_seconds: validity.map_or(0, |v| v.as_secs()) };
    let issued = super::Retry::default()
        .call(
            || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.renew_certificate(request).await }
            },
            |status: &Status, wait| events.retrying(status, wait),
        )
        .await
        .map_err(|status| RenewError {
            permanent: matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument | Code::FailedPrecondition
            ),
            message: rpc::explain(server, &status),
        })?;
    let issued = issued.into_inner();
    let certificate = issued.certificate.clone().unwrap_or_default();
    let io = |e: crate::error::Error| RenewError { message: e.to_string(), permanent: true };
    let chain = presented_chain(&issued);
    credentials::install(dir, &certificate.serial, chain, &key.serialize_pem(), root_of(&issued.ca_chain_pem))
        .map_err(io)?;
    let stable = ProfileFile {
        cert: credentials::CERT_FILE.into(),
        key: credentials::KEY_FILE.into(),
        ca_cert: credentials::CA_FILE.into(),
        ..profile.file.clone()
    };
    if stable != profile.file {
        Profile::save(dir, &stable).map_err(io)?;
        // Files of the layout before stable names (`cert-SERIAL.pem`) are no longer referenced.
        for old in [profile.cert_path(), profile.key_path()] {
            if !old.ends_with(credentials::CERT_FILE) && !old.ends_with(credentials::KEY_FILE) {
                let _ = std::fs::remove_file(old);
            }
        }
    }
    let _ = std::fs::remove_file(dir.join(keys::PENDING_KEY));
    Ok(Renewed { certificate, profile_dir: dir.to_path_buf() })
}

/// What a profile presents in TLS: the leaf and its intermediate (servers before intermediates send the leaf only).
pub fn presented_chain(issued: &pb::IssueCertificateResponse) -> &str {
    if issued.certificate_chain_pem.is_empty() { &issued.certificate_pem } else { &issued.certificate_chain_pem }
}

/// `t` as RFC 3339, for messages.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The last certificate of a PEM chain: its root.
pub fn root_of(chain: &str) -> &str {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    chain.rfind(BEGIN).map_or(chain, |at| &chain[at..])
}

/// How often [`watch`] checks, while waiting, that its certificate still authenticates.
const ALIVE_CHECK: Duration = Duration::from_secs(3600);

/// `Err` when the server refuses the profile's certificate for good (revoked, suspended, deleted, void): such a
/// certificate can never be renewed, and waiting for its renewal time would hide it until expiry. A server that
/// cannot be reached is not a verdict (`Ok`, with a notice).
pub async fn still_authenticates(dir: &Path, server: &str, events: &dyn Events) -> Result<(), String> {
    let profile = Profile::load(dir).map_err(|e| e.to_string())?;
    let credentials = profile.credentials().map_err(|e| e.to_string())?;
    let checked = match rpc::connect(server, &credentials).await {
        Ok(mut client) => client.who_am_i(pb::WhoAmIRequest {}).await.map(|_| ()),
        Err(message) => {
            events.notice(&format!("cannot check the certificate with the server: {message}"));
            return Ok(());
        }
    };
    match checked {
        Ok(()) => Ok(()),
        Err(status) if matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied) => Err(format!(
            "the certificate in {} no longer authenticates ({}): it cannot be renewed; ask an admin for a new \
             certificate or an enrollment token",
            dir.display(),
            status.message()
        )),
        Err(status) => {
            events.notice(&format!("cannot check the certificate with the server: {}", rpc::explain(server, &status)));
            Ok(())
        }
    }
}

/// Renews forever at about two thirds of each certificate's lifetime; transient failures are retried with
/// exponential backoff (1 s doubling to 5 min) until the certificate expires. Returns only on a permanent failure.
pub async fn watch(
    dir: &Path,
    server: &str,
    validity: Option<Duration>,
    key_type: KeyType,
    events: &dyn Events,
) -> Result<(), String> {
    const MAX_BACKOFF: Duration = Duration::from_secs(300);
    loop {
        let profile = Profile::load(dir).map_err(|e| e.to_string())?;
        let (not_before, not_after) = keys::validity_of(&profile.cert_path())?;
        let renew_at: OffsetDateTime = not_before + (not_after - not_before) * 2 / 3;
        let wait: time::Duration = renew_at - OffsetDateTime::now_utc();
        if wait.is_positive() {
            still_authenticates(dir, server, events).await?;
            events.notice(&format!(
                "certificate valid until {}; renewing at {}",
                rfc3339(not_after),
                rfc3339(renew_at)
            ));
            // Wake at least hourly to notice a certificate revoked (or its principal suspended) in the meantime.
            tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO).min(ALIVE_CHECK)).await;
            continue;
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            match renew_once(dir, server, validity, key_type, events).await {
                Ok(renewed) => {
                    events.renewed(&renewed);
                    break;
                }
                Err(e) if e.permanent => return Err(e.message),
                Err(e) => {
                    let left = not_after - OffsetDateTime::now_utc();
                    if !left.is_positive() {
                        return Err(format!("certificate expired before renewal succeeded: {}", e.message));
                    }
                    let delay = backoff.min(left.try_into().unwrap_or(backoff));
                    events.notice(&format!("renewal failed ({}); retrying in {}s", e.message, delay.as_secs()));
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
