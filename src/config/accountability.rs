//! The audit log's and the CRLs' settings.

use std::time::Duration;

use clap::Args;

use super::duration::{nonzero, parse_duration_flag};
use crate::error::Error;

#[derive(Args, Debug, Clone)]
pub struct AccountabilityArgs {
    /// Record every change in the audit log, in the same atomic write as the change. `off` exists only to measure
    /// what auditing costs (BENCHMARKS.md); a server running with it off logs a warning at start.
    #[arg(long, env = "PRINCIPALD_AUDIT", default_value = "on", value_parser = ["on", "off"])]
    pub audit: String,
    /// How often refused requests are written to the audit log, one event per source address and reason.
    #[arg(long, env = "PRINCIPALD_AUDIT_REFUSALS_EVERY", default_value = "60s")]
    pub audit_refusals_every: String,
    /// Also record every issued access token in the audit log (one durable write per token, so off by default).
    #[arg(long, env = "PRINCIPALD_AUDIT_TOKENS")]
    pub audit_tokens: bool,
    /// Base URL of the CRLs (`BASE/crl/P.crl`), written into every certificate the root signs; default: the health
    /// listener's address (`http://HOST:PORT`). Must reach this server's health port (or a copy of its CRLs).
    #[arg(long, env = "PRINCIPALD_CRL_URL")]
    pub crl_url: Option<String>,
    /// Time from a CRL's thisUpdate to its nextUpdate; CRLs are re-signed on every revocation and at half of it.
    #[arg(long, env = "PRINCIPALD_CRL_VALIDITY", default_value = "1h")]
    pub crl_validity: String,
}

/// Validated audit and CRL settings.
#[derive(Clone, Debug)]
pub struct AccountabilityConfig {
    /// Whether changes are recorded in the audit log.
    pub audit: bool,
    /// How often aggregated refusals are written to the audit log.
    pub audit_refusals_every: Duration,
    /// Whether issued access tokens are audit events.
    pub audit_tokens: bool,
    /// Base URL of the CRLs; `None`: derived from the bound health address.
    pub crl_url: Option<String>,
    pub crl_validity: Duration,
}

impl AccountabilityArgs {
    pub fn validate(&self) -> Result<AccountabilityConfig, Error> {
        let crl_validity = parse_duration_flag("--crl-validity", &self.crl_validity)?;
        if crl_validity < Duration::from_secs(60) {
            return Err(Error::InvalidArgument("--crl-validity must be at least 60s".into()));
        }
        Ok(AccountabilityConfig {
            audit: self.audit == "on",
            audit_refusals_every: nonzero(
                parse_duration_flag("--audit-refusals-every", &self.audit_refusals_every)?,
                "--audit-refusals-every",
            )?,
            audit_tokens: self.audit_tokens,
            crl_url: self.crl_url.as_deref().map(crl_url).transpose()?,
            crl_validity,
        })
    }
}

/// A CRL base URL: http(s)://host[:port][/path], without query or fragment (it is written into certificates).
fn crl_url(url: &str) -> Result<String, Error> {
    let valid = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 200
        && url.is_ascii()
        && !url.contains(['?', '#', ' '])
        && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "invalid --crl-url {url:?}: expected http://host[:port][/path], e.g. http://ca.example.com:8080"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crl_urls_are_checked() {
        assert_eq!(crl_url("http://ca.example.com:8080/").unwrap(), "http://ca.example.com:8080");
        for bad in ["ca.example.com", "ftp://x", "http://", "http:///x", "http://x/?a", "http://x/é"] {
            assert!(crl_url(bad).is_err(), "{bad}");
        }
    }
}
