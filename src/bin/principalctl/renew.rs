//! `principalctl cert renew`'s face: the renewal itself is `principald::client::renewal` (once, when due, or
//! forever with `--watch`); here are its lines on the terminal and the hook run after each renewal (`--exec`, like
//! certbot's deploy hooks).

use std::time::Duration;

use principald::client::credentials;
use principald::client::renewal::{Events, Renewed};

use crate::output::{self, Format};

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

/// principalctl's renewal events: lines on stderr (the renewed certificate on stdout), the deploy hook after each
/// renewal (a failing hook is reported, not fatal: the new certificate is in place either way).
pub struct Cli<'a> {
    pub hook: Option<&'a str>,
}

impl Events for Cli<'_> {
    fn retrying(&self, status: &tonic::Status, wait: Duration) {
        let why = match status.code() {
            tonic::Code::ResourceExhausted => "rate limited by the server",
            _ => "server unavailable",
        };
        eprintln!("{why}; retrying in {:.1}s", wait.as_secs_f64());
    }

    fn notice(&self, message: &str) {
        eprintln!("principalctl: {message}");
    }

    fn renewed(&self, renewed: &Renewed) {
        print_renewed(Format::Table, renewed);
        if let Some(Err(e)) = self.hook.map(|command| run_hook(command, renewed)) {
            eprintln!("principalctl: {e}");
        }
    }
}
