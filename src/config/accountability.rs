//! The audit log's and the CRLs' settings.

use std::time::Duration;

use clap::Args;

use crate::error::Error;
use crate::model::duration::{nonzero, parse_duration_flag};

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
    /// Time from a CRL's or OCSP answer's thisUpdate to its nextUpdate; CRLs are re-signed on every revocation and at
    /// half of it, OCSP answers re-made on every revocation.
    #[arg(long, env = "PRINCIPALD_CRL_VALIDITY", default_value = "1h")]
    pub crl_validity: String,
    /// Where signed checkpoints of this replica's audit chain heads are written outside the store: a directory, or
    /// `s3://BUCKET/PREFIX` (a bucket with Object Lock; needs s3:PutObject only), one file or object per checkpoint
    /// (`TIME_MS-REPLICA.note`, never overwritten). The first is written before serving, so a directory or bucket that
    /// cannot be written stops the start. Read by `principalctl audit verify --checkpoints DIR|s3://BUCKET/PREFIX`.
    #[arg(long, env = "PRINCIPALD_AUDIT_CHECKPOINTS", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub audit_checkpoints: Option<String>,
    /// How often a checkpoint is written when the chains moved (and once more at graceful shutdown).
    #[arg(long, env = "PRINCIPALD_AUDIT_CHECKPOINT_EVERY", default_value = "1m")]
    pub audit_checkpoint_every: String,
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
    pub crl_validity: Duration,
    /// Where signed checkpoints of the chain heads go, and how often.
    pub audit_checkpoints: Option<crate::audit::checkpoint_source::Location>,
    pub audit_checkpoint_every: Duration,
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
            crl_validity,
            audit_checkpoints: self
                .audit_checkpoints
                .as_deref()
                .map(|text| text.parse().map_err(|e| Error::InvalidArgument(format!("--audit-checkpoints: {e}"))))
                .transpose()?,
            audit_checkpoint_every: nonzero(
                parse_duration_flag("--audit-checkpoint-every", &self.audit_checkpoint_every)?,
                "--audit-checkpoint-every",
            )?,
        })
    }
}
