//! `principalctl cert renew`: a new key and certificate for this profile, installed under the profile's stable file
//! names (see `principald::client::credentials`), once, when due (`--if-expires-within`) or forever (`--watch`), with
//! an optional hook run after each renewal (`--exec`, like certbot's deploy hooks).

use std::path::{Path, PathBuf};
use std::time::Duration;

use principald::client::{Profile, ProfileFile, credentials};
use principald::proto::{self as pb};
use time::OffsetDateTime;
use tonic::Code;

use crate::cert::{KeyType, PENDING_KEY, pending_key_and_csr, presented_chain, rfc3339, root_of, validity_of};
use crate::output::{self, Format};
use crate::rpc;

/// Runs `command` with `sh -c` after a renewal, with the new files in its environment. `Err` if it cannot start or
/// exits non-zero.
pub fn run_hook(command: &str, renewed: &Renewed) -> Result<(), String> {
    let dir = std::fs::canonicalize(&renewed.profile_dir).unwrap_or_else(|_| renewed.profile_dir.clone());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("PRINCIPALCTL_PROFILE_DIR", &dir)
        .env("PRINCIPALCTL_CERT", dir.join(credentials::CERT_FILE))
        .env("PRINCIPALCTL_KEY", dir.join(credentials::KEY_FILE))
        .env("PRINCIPALCTL_CA", dir.join(credentials::CA_FILE))
        .env("PRINCIPALCTL_SERIAL", &renewed.certificate.serial)
        .status()
        .map_err(|e| format!("renewed, but the --exec hook could not start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("renewed, but the --exec hook failed ({status}): {command}")) }
}

/// A renewal that failed; `permanent` failures (revoked, suspended, expired) are not worth retrying.
pub struct RenewError {
    pub message: String,
    pub permanent: bool,
}

pub struct Renewed {
    pub certificate: pb::Certificate,
    pub profile_dir: PathBuf,
}

/// Renews the profile in `dir` once: new key (kept as pending until success, see [`PENDING_KEY`]) and CSR,
/// RenewCertificate with the current credentials, then new files and an atomic switch of profile.json to them. A crash
/// at any point leaves a working profile, and the next attempt resumes with the same key.
pub async fn renew_once(
    dir: &Path,
    server: &str,
    validity: Option<Duration>,
    key_type: KeyType,
) -> Result<Renewed, RenewError> {
    let permanent = |message: String| RenewError { message, permanent: true };
    let profile = Profile::load(dir).map_err(|e| permanent(e.to_string()))?;
    let credentials = profile.credentials().map_err(|e| permanent(e.to_string()))?;
    let (key, csr) = pending_key_and_csr(dir, key_type).map_err(permanent)?;
    let client =
        rpc::connect(server, &credentials).await.map_err(|message| RenewError { message, permanent: false })?;
    let request =
        pb::RenewCertificateRequest { csr: csr.into_bytes(), validity_seconds: validity.map_or(0, |v| v.as_secs()) };
    let issued = rpc::retrying(|| {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.renew_certificate(request).await }
    })
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
    let io = |e: principald::error::Error| RenewError { message: e.to_string(), permanent: true };
    let (chain, ca) = (presented_chain(&issued), root_of(&issued.ca_chain_pem));
    credentials::install(dir, &certificate.serial, chain, &key.serialize_pem(), ca).map_err(io)?;
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
    let _ = std::fs::remove_file(dir.join(PENDING_KEY));
    Ok(Renewed { certificate, profile_dir: dir.to_path_buf() })
}

pub fn print_renewed(format: Format, renewed: &Renewed) {
    match format {
        Format::Json => output::print_json(&output::certificate_json(&renewed.certificate)),
        Format::Table => println!(
            "renewed: serial {} valid until {} (profile {})",
            renewed.certificate.serial,
            output::time(&renewed.certificate.not_after),
            renewed.profile_dir.display()
        ),
    }
}

/// How often `renew --watch` checks, while waiting, that its certificate still authenticates.
const ALIVE_CHECK: Duration = Duration::from_secs(3600);

/// `Err` when the server refuses the profile's certificate for good (revoked, suspended, deleted, void): such a
/// certificate can never be renewed, and saying "not renewing" would hide it until expiry. A server that cannot be
/// reached is not a verdict (`Ok`, with a warning).
pub async fn still_authenticates(dir: &Path, server: &str) -> Result<(), String> {
    let profile = Profile::load(dir).map_err(|e| e.to_string())?;
    let credentials = profile.credentials().map_err(|e| e.to_string())?;
    let checked = match rpc::connect(server, &credentials).await {
        Ok(mut client) => client.who_am_i(pb::WhoAmIRequest {}).await.map(|_| ()),
        Err(message) => {
            eprintln!("principalctl: cannot check the certificate with the server: {message}");
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
            eprintln!("principalctl: cannot check the certificate with the server: {}", rpc::explain(server, &status));
            Ok(())
        }
    }
}

/// Renews forever at about two thirds of each certificate's lifetime; transient failures are retried with
/// exponential backoff (1 s doubling to 5 min) until the certificate expires. A failing hook is logged, not fatal:
/// the new certificate is in place either way.
pub async fn watch_loop(
    dir: &Path,
    server: &str,
    validity: Option<Duration>,
    key_type: KeyType,
    hook: Option<&str>,
) -> Result<(), String> {
    const MAX_BACKOFF: Duration = Duration::from_secs(300);
    loop {
        let profile = Profile::load(dir).map_err(|e| e.to_string())?;
        let (not_before, not_after) = validity_of(&profile.cert_path())?;
        let renew_at: OffsetDateTime = not_before + (not_after - not_before) * 2 / 3;
        let wait: time::Duration = renew_at - OffsetDateTime::now_utc();
        if wait.is_positive() {
            still_authenticates(dir, server).await?;
            eprintln!(
                "principalctl: certificate valid until {}; renewing at {}",
                rfc3339(not_after),
                rfc3339(renew_at)
            );
            // Wake at least hourly to notice a certificate revoked (or its principal suspended) in the meantime.
            tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO).min(ALIVE_CHECK)).await;
            continue;
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            match renew_once(dir, server, validity, key_type).await {
                Ok(renewed) => {
                    print_renewed(Format::Table, &renewed);
                    if let Some(Err(e)) = hook.map(|command| run_hook(command, &renewed)) {
                        eprintln!("principalctl: {e}");
                    }
                    break;
                }
                Err(e) if e.permanent => return Err(e.message),
                Err(e) => {
                    let left = not_after - OffsetDateTime::now_utc();
                    if !left.is_positive() {
                        return Err(format!("certificate expired before renewal succeeded: {}", e.message));
                    }
                    let delay = backoff.min(left.try_into().unwrap_or(backoff));
                    eprintln!("principalctl: renewal failed ({}); retrying in {}s", e.message, delay.as_secs());
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
