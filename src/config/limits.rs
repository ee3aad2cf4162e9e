//! Limits and overload: the gRPC listener's caps and deadlines, rate limits, and the store's in-flight bound.

use std::collections::HashMap;

use clap::Args;

use crate::error::Error;
use crate::model::PrincipalType;
use crate::model::duration::{nonzero, parse_duration_flag};
use crate::ratelimit::RateLimits;
use crate::tls::ConnectionLimits;

#[derive(Args, Debug, Clone)]
pub struct OverloadArgs {
    /// Time allowed for a TLS handshake (1s while the gRPC listener is at least half full).
    #[arg(long, env = "PRINCIPALD_HANDSHAKE_TIMEOUT", default_value = "5s")]
    pub handshake_timeout: String,
    /// Most TLS handshakes in progress at once on the gRPC port; beyond it the oldest handshake is shed.
    #[arg(long, env = "PRINCIPALD_MAX_HANDSHAKES", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_handshakes: u32,
    /// Most open connections on the gRPC port; beyond it the connection idle the longest is shed.
    #[arg(long, env = "PRINCIPALD_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most connections without a client certificate (Enroll, health, reflection) on the gRPC port; beyond it the
    /// idlest of them is shed. Default: a tenth of --max-connections.
    #[arg(long, env = "PRINCIPALD_MAX_ANONYMOUS_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_anonymous_connections: Option<u32>,
    /// A connection without a client certificate is closed after this long without traffic.
    #[arg(long, env = "PRINCIPALD_UNAUTHENTICATED_IDLE", default_value = "10s")]
    pub unauthenticated_idle: String,
    /// A rate limit, `[TYPE.]OPERATION=COUNT/UNIT[:BURST]` or `[TYPE.]OPERATION=off`; repeatable or comma-separated.
    /// OPERATION: issue (IssueCertificate, RenewCertificate), token (IssueToken, token endpoint), enrollment_token,
    /// audit_read (per principal), enroll (per source address). See README "Limits and overload" for defaults.
    #[arg(long = "rate-limit", env = "PRINCIPALD_RATE_LIMITS", value_delimiter = ',')]
    pub rate_limits: Vec<String>,
    /// Most live certificates (unexpired, unrevoked, not renewed) one principal of a type may hold, `TYPE=N`;
    /// repeatable or comma-separated. IssueCertificate and Enroll are refused at the cap. Default: no cap.
    #[arg(long = "max-live-certificates", env = "PRINCIPALD_MAX_LIVE_CERTIFICATES", value_delimiter = ',')]
    pub max_live_certificates: Vec<String>,
    /// Store operations in flight at once on this replica; beyond it requests fail at once with UNAVAILABLE instead
    /// of queueing behind a slow store.
    #[arg(long, env = "PRINCIPALD_STORE_MAX_IN_FLIGHT", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub store_max_in_flight: u32,
}

/// Validated limits.
#[derive(Clone, Debug)]
pub struct OverloadConfig {
    pub connections: ConnectionLimits,
    pub rates: RateLimits,
    pub live_certificate_caps: HashMap<PrincipalType, u32>,
    pub store_max_in_flight: usize,
}

impl OverloadArgs {
    pub fn validate(&self) -> Result<OverloadConfig, Error> {
        let mut connections = ConnectionLimits::default();
        let listener = &mut connections.listener;
        listener.first_phase =
            nonzero(parse_duration_flag("--handshake-timeout", &self.handshake_timeout)?, "--handshake-timeout")?;
        listener.first_phase_under_pressure = listener.first_phase.min(listener.first_phase_under_pressure);
        listener.max_handshakes = self.max_handshakes as usize;
        listener.max_connections = self.max_connections as usize;
        listener.max_anonymous =
            self.max_anonymous_connections.map_or((listener.max_connections / 10).max(1), |n| n as usize);
        connections.unauthenticated_idle = nonzero(
            parse_duration_flag("--unauthenticated-idle", &self.unauthenticated_idle)?,
            "--unauthenticated-idle",
        )?;
        let mut rates = RateLimits::default();
        for setting in self.rate_limits.iter().filter(|s| !s.trim().is_empty()) {
            rates.apply(setting)?;
        }
        let mut live_certificate_caps = HashMap::new();
        for setting in self.max_live_certificates.iter().filter(|s| !s.trim().is_empty()) {
            let invalid = || {
                Error::InvalidArgument(format!(
                    "invalid --max-live-certificates {setting:?}: use TYPE=N with TYPE admin, worker, user or service \
                     and N at least 1"
                ))
            };
            let (kind, n) = setting.split_once('=').ok_or_else(invalid)?;
            let kind: PrincipalType = kind.trim().parse().map_err(|_| invalid())?;
            let n: u32 = n.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(invalid)?;
            live_certificate_caps.insert(kind, n);
        }
        Ok(OverloadConfig {
            connections,
            rates,
            live_certificate_caps,
            store_max_in_flight: self.store_max_in_flight as usize,
        })
    }
}
