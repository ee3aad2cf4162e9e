//! `principalctl cert ...`: issue (key generated here, only a CSR leaves the machine), renew in place, inspect, revoke.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use principald::client::keys::{KeyType, key_and_csr, validity_of};
use principald::client::renewal::{self, rfc3339, root_of};
use principald::config::parse_duration;
use principald::model::RevocationReason;
use principald::proto::{self as pb};
use rcgen::KeyPair;
use time::OffsetDateTime;

use crate::output::{self, Format};
use crate::renew;
use crate::rpc::Context;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Issue a certificate for a principal: generates its key here and writes a ready-to-use profile to --out.
    Issue {
        principal: String,
        /// Directory for the new profile (key.pem 0600, cert.pem, ca.pem, profile.json).
        #[arg(long)]
        out: PathBuf,
        /// Shorter validity than the server's maximum for the type, e.g. 7d.
        #[arg(long, value_parser = validity)]
        validity: Option<Duration>,
        #[arg(long, value_enum, default_value_t)]
        key_type: KeyType,
        /// Overwrite a profile already in --out.
        #[arg(long)]
        force: bool,
    },
    /// Renew this profile's own certificate in place, with a new key.
    Renew {
        /// Only renew if the certificate expires within this long (for cron), e.g. 10d.
        #[arg(long, value_parser = duration)]
        if_expires_within: Option<Duration>,
        /// Keep running: renew at about two thirds of each certificate's lifetime, retrying with backoff.
        #[arg(long)]
        watch: bool,
        /// Shorter validity than the server's maximum for the type, e.g. 7d.
        #[arg(long, value_parser = validity)]
        validity: Option<Duration>,
        #[arg(long, value_enum, default_value_t)]
        key_type: KeyType,
        /// Run this shell command after each renewal (reload nginx, Envoy, ...). It gets PRINCIPALCTL_CERT,
        /// PRINCIPALCTL_KEY, PRINCIPALCTL_CA, PRINCIPALCTL_SERIAL and PRINCIPALCTL_PROFILE_DIR; the renewed files are
        /// already in place under their usual names.
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
    },
    /// Show one certificate.
    Get { serial: String },
    /// List a principal's certificates, newest first; or with --issuer, what one intermediate signed.
    List {
        #[arg(required_unless_present = "issuer", conflicts_with = "issuer")]
        principal: Option<String>,
        /// The SHA-256 of an intermediate (`ca intermediates`): list the unexpired certificates it signed.
        #[arg(long, value_name = "SHA256")]
        issuer: Option<String>,
        /// Include revoked certificates.
        #[arg(long)]
        include_revoked: bool,
    },
    /// Revoke a certificate, given by serial or by its PEM file.
    Revoke {
        #[arg(required_unless_present = "cert_file", conflicts_with = "cert_file")]
        serial: Option<String>,
        /// Read the serial from this certificate file instead.
        #[arg(long)]
        cert_file: Option<PathBuf>,
        #[arg(long, value_parser = reason, default_value = "unspecified")]
        reason: RevocationReason,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// A certificate validity: whole seconds, at least a minute (the server's minimum).
fn validity(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(60) || d.subsec_nanos() != 0 {
        return Err(format!("{s:?} is not a usable validity: use whole seconds, at least 60s (e.g. 12h, 7d)"));
    }
    Ok(d)
}

fn reason(s: &str) -> Result<RevocationReason, String> {
    s.parse().map_err(|e: principald::error::Error| e.to_string())
}

pub async fn run(ctx: &Context, command: Command) -> Result<(), String> {
    match command {
        Command::Issue { principal, out, validity, key_type, force } => {
            issue(ctx, principal, &out, validity, key_type, force).await
        }
        Command::Renew { if_expires_within, watch, validity, key_type, exec } => {
            let events = renew::Cli { hook: exec.as_deref() };
            if watch {
                return renewal::watch(&ctx.profile.dir, &ctx.server, validity, key_type, &events).await;
            }
            if let Some(within) = if_expires_within {
                let (_, not_after) = validity_of(&ctx.profile.cert_path())?;
                let left = not_after - OffsetDateTime::now_utc();
                if left > time::Duration::try_from(within).unwrap_or(time::Duration::MAX) {
                    renewal::still_authenticates(&ctx.profile.dir, &ctx.server, &events).await?;
                    println!("certificate valid until {}; not renewing", rfc3339(not_after));
                    return Ok(());
                }
            }
            let renewed = renewal::renew_once(&ctx.profile.dir, &ctx.server, validity, key_type, &events)
                .await
                .map_err(|e| e.message)?;
            renew::print_renewed(ctx.format, &renewed);
            exec.map_or(Ok(()), |command| renew::run_hook(&command, &renewed))
        }
        Command::Get { serial } => {
            let c = ctx
                .client()
                .await?
                .get_certificate(pb::GetCertificateRequest { serial })
                .await
                .map_err(|s| ctx.explain(s))?;
            output::certificate(ctx.format, &c.into_inner());
            Ok(())
        }
        Command::List { principal, issuer, include_revoked } => {
            let mut client = ctx.client().await?;
            let (mut all, mut page_token) = (Vec::new(), String::new());
            loop {
                let request = pb::ListCertificatesRequest {
                    principal_id: principal.clone().unwrap_or_default(),
                    include_revoked,
                    page_size: 500,
                    page_token,
                    issuer_sha256_fingerprint: issuer.clone().unwrap_or_default(),
                };
                let page = client.list_certificates(request).await.map_err(|s| ctx.explain(s))?.into_inner();
                all.extend(page.certificates);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            output::certificates(ctx.format, &all);
            Ok(())
        }
        Command::Revoke { serial, cert_file, reason } => {
            let serial = match (serial, cert_file) {
                (Some(s), _) => s,
                (None, Some(path)) => serial_of(&path)?,
                (None, None) => return Err("give a serial or --cert-file".into()),
            };
            let request = pb::RevokeCertificateRequest { serial, reason: i32::from(reason.code()) };
            let c = ctx.client().await?.revoke_certificate(request).await.map_err(|s| ctx.explain(s))?;
            output::certificate(ctx.format, &c.into_inner());
            Ok(())
        }
    }
}

async fn issue(
    ctx: &Context,
    principal: String,
    out: &Path,
    validity: Option<Duration>,
    key_type: KeyType,
    force: bool,
) -> Result<(), String> {
    if !force && out.join(principald::client::PROFILE_FILE).exists() {
        return Err(format!("{} already holds a profile: choose another --out or pass --force", out.display()));
    }
    let (key, csr) = key_and_csr(key_type)?;
    let request = pb::IssueCertificateRequest {
        principal_id: principal,
        csr: csr.into_bytes(),
        validity_seconds: validity.map_or(0, |v| v.as_secs()),
    };
    let issued = ctx.client().await?.issue_certificate(request).await.map_err(|s| ctx.explain(s))?.into_inner();
    write_profile(out, &ctx.server, &key, &issued, root_of(&issued.ca_chain_pem))?;
    let cert = issued.certificate.unwrap_or_default();
    match ctx.format {
        Format::Json => {
            let mut value = output::certificate_json(&cert);
            value["profile"] = serde_json::Value::from(out.display().to_string());
            output::print_json(&value);
        }
        Format::Table => {
            output::certificate(ctx.format, &cert);
            println!("profile written to {} (use: principalctl --profile {} whoami)", out.display(), out.display());
        }
    }
    Ok(())
}

/// Writes a ready-to-use profile to `out`: key.pem (0600), cert.pem (what TLS presents), ca.pem (`root_pem`, the only
/// trust anchor) under their stable names (see `principald::client::credentials`), and profile.json naming `server`.
pub fn write_profile(
    out: &Path,
    server: &str,
    key: &KeyPair,
    issued: &pb::IssueCertificateResponse,
    root_pem: &str,
) -> Result<(), String> {
    principald::client::enroll::write_profile(out, server, key, issued, root_pem).map(|_| ())
}

fn serial_of(path: &Path) -> Result<String, String> {
    let der = principald::client::keys::read_certificate(path)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| format!("{} is not a valid certificate", path.display()))?;
    Ok(principald::model::Serial::from_bytes(cert.raw_serial()).to_string())
}
