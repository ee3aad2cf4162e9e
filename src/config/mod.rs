//! Typed configuration. Every setting is a flag with a `PRINCIPALD_*` environment variable; values are parsed and
//! checked once at startup into [`ServeConfig`] / [`BootstrapConfig`], and any problem exits with code 64 before a
//! port is bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::PermissionTable;
use crate::error::Error;
use crate::model::PrincipalType;
use crate::pki::IdentityConfig;
use crate::store::StoreConfig;

mod accountability;
mod agent;
mod bootstrap;
mod ca;
mod limits;
mod pki;
mod store;
mod tokens;
pub use crate::model::duration::{format_duration, parse_duration};
use crate::model::duration::{nonzero, parse_duration_flag};
pub use accountability::{AccountabilityArgs, AccountabilityConfig};
pub use agent::{AgentArgs, AgentConfig};
pub use bootstrap::{BootstrapArgs, BootstrapConfig, IdentityArgs};
pub use ca::{CaArgs, DEFAULT_INTERMEDIATE_LIFETIME, IntermediateMode, ReplicaArgs};
pub use limits::{OverloadArgs, OverloadConfig};
pub use pki::{PkiArgs, PkiConfig, http_base};
pub use store::{StoreArgs, StoreKind};
pub use tokens::{TokenArgs, TokenConfig};

/// Exit code for bad configuration (EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// A command-line usage error as one line (clap's block without the usage and help hints, tips kept): what both
/// binaries print instead of clap's multi-line block.
pub fn usage_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.strip_prefix("error: ").unwrap_or(line).to_owned());
        }
    }
    parts.join(" ")
}

/// Default validity of client certificates, for every type without its own setting.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Parser, Debug)]
#[command(name = "principald", version, about = "Private CA and principal server; callers authenticate with mTLS")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the gRPC API over mTLS and health on plain HTTP (bootstraps an empty data dir first).
    Serve(Box<ServeArgs>),
    /// Create the CA, the server certificate and the first admin with its principalctl profile.
    Bootstrap(BootstrapArgs),
    /// Create or upgrade the store schema (SQLite file or DynamoDB tables, indexes and TTL), then exit.
    Migrate(MigrateArgs),
    /// Run a node agent: join once with an enrollment token, then serve certificates (SVIDs) to the local workloads
    /// whose entries name this node, over the SPIFFE Workload API and Envoy SDS on a Unix socket.
    Agent(AgentArgs),
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log filter, e.g. "info" or "principald=debug,info".
    #[arg(long, env = "PRINCIPALD_LOG", default_value = "info", global = true)]
    pub log_level: String,
    /// Log output format.
    #[arg(long, env = "PRINCIPALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct DataDirArgs {
    /// Directory holding the CA, the server certificate, the SQLite store and the admin profile.
    #[arg(long, env = "PRINCIPALD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub ca: CaArgs,
    #[command(flatten)]
    pub replica: ReplicaArgs,
    #[command(flatten)]
    pub accountability: AccountabilityArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub pki: PkiArgs,
    #[command(flatten)]
    pub overload: OverloadArgs,
    /// Address of the gRPC mTLS listener.
    #[arg(long, env = "PRINCIPALD_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP health listener (/healthz, /readyz).
    #[arg(long, env = "PRINCIPALD_HEALTH_LISTEN", default_value = "127.0.0.1:8080")]
    pub health_listen: SocketAddr,
    /// Also accept TLS 1.2 (TLS 1.3 only otherwise).
    #[arg(long, env = "PRINCIPALD_ALLOW_TLS12")]
    pub allow_tls12: bool,
    /// Validity of issued client certificates per type, e.g. "worker=7d"; repeatable or comma-separated. Types not
    /// named get 30d. Requests may ask for less, never more.
    #[arg(long = "cert-validity", env = "PRINCIPALD_CERT_VALIDITY", value_delimiter = ',')]
    pub cert_validity: Vec<String>,
    /// JSON file adding permissions to principal types: {"grants": {"service": ["jobs.submit"]}}.
    #[arg(long, env = "PRINCIPALD_PERMISSIONS_FILE")]
    pub permissions_file: Option<PathBuf>,
    /// How long an authentication result is reused. Bounds how late another replica sees a revocation.
    #[arg(long, env = "PRINCIPALD_AUTH_CACHE_TTL", default_value = "10s")]
    pub auth_cache_ttl: String,
    /// How often the store's revocation epoch is read; when it moves, cached authentication results are dropped.
    /// Bounds how late this replica sees another replica's revocation or suspension.
    #[arg(long, env = "PRINCIPALD_REVOCATION_POLL", default_value = "1s")]
    pub revocation_poll: String,
    /// How long in-flight RPCs may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "PRINCIPALD_SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: String,
    /// Connections are asked to close (HTTP/2 GOAWAY) after this long, so clients spread over replicas again.
    #[arg(long, env = "PRINCIPALD_MAX_CONNECTION_AGE", default_value = "1h")]
    pub max_connection_age: String,
    /// Used only when serve bootstraps an empty data dir.
    #[arg(long = "server-name", env = "PRINCIPALD_SERVER_NAMES", value_delimiter = ',')]
    pub server_names: Vec<String>,
    /// Used only when serve bootstraps an empty data dir.
    #[arg(long, env = "PRINCIPALD_ADMIN_ID", default_value = "admin")]
    pub admin_id: String,
}

/// Validated serve settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub identity: IdentityConfig,
    pub listen: SocketAddr,
    pub health_listen: SocketAddr,
    pub allow_tls12: bool,
    pub cert_validity: HashMap<PrincipalType, Duration>,
    pub permissions: PermissionTable,
    pub auth_cache_ttl: Duration,
    pub revocation_poll: Duration,
    pub shutdown_grace: Duration,
    /// Caps and deadlines of the gRPC listener, rate limits, the store's in-flight bound.
    pub overload: OverloadConfig,
    pub max_connection_age: Duration,
    /// How `serve` bootstraps an empty data dir.
    pub bootstrap: BootstrapConfig,
    /// This replica's name in its intermediates.
    pub replica_id: String,
    /// Signing window of one issuing intermediate.
    pub intermediate_lifetime: Duration,
    /// How often the CA's keys are self-tested for readiness.
    pub signer_check_every: Duration,
    /// Whether leaves are signed through a per-replica intermediate (else by the root key).
    pub intermediates: bool,
    /// Audit log and CRLs.
    pub accountability: AccountabilityConfig,
    /// Access tokens and the OAuth listener.
    pub tokens: TokenConfig,
    /// The public PKI listener (CRLs, OCSP) and the URLs certificates name.
    pub pki: PkiConfig,
}

impl ServeArgs {
    pub fn validate(&self) -> Result<ServeConfig, Error> {
        let identity = self.identity.validate()?;
        let permissions = match &self.permissions_file {
            Some(path) => PermissionTable::builtin_extended_by(path)?,
            None => PermissionTable::builtin(),
        };
        let mut store = self.store.validate(&self.data.data_dir)?;
        let replica_id = self.replica.replica_id()?;
        if let StoreConfig::Dynamodb(dynamo) = &mut store {
            dynamo.replica.clone_from(&replica_id);
        }
        // The bootstrapped admin profile points at the listen address; a specific IP must then be in the certificate.
        let mut names = self.server_names.clone();
        let profile_host = match self.listen.ip() {
            ip if ip.is_unspecified() || ip.is_loopback() => "localhost".to_owned(),
            ip => {
                names.push(ip.to_string());
                if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() }
            }
        };
        let bootstrap = BootstrapConfig {
            data_dir: self.data.data_dir.clone(),
            store: store.clone(),
            identity: identity.clone(),
            server_names: server_names(&names)?,
            admin_id: self.admin_id.parse()?,
            profile_server: format!("https://{profile_host}:{}", self.listen.port()),
            force: false,
            ca_key: self.ca.validate(&self.data.data_dir)?,
            intermediates: self.ca.use_intermediates(&self.ca.validate(&self.data.data_dir)?),
        };
        let ports =
            [("--listen", self.listen), ("--health-listen", self.health_listen), ("--pki-listen", self.pki.pki_listen)];
        for (i, (a, x)) in ports.iter().enumerate() {
            if let Some((b, _)) = ports[i + 1..].iter().find(|(_, y)| x == y && x.port() != 0) {
                return Err(Error::InvalidArgument(format!("{a} and {b} must differ")));
            }
        }
        Ok(ServeConfig {
            replica_id,
            accountability: self.accountability.validate()?,
            tokens: self.tokens.validate()?,
            pki: self.pki.validate(self.listen)?,
            intermediate_lifetime: self.replica.intermediate_lifetime()?,
            signer_check_every: self.replica.signer_check_every()?,
            intermediates: bootstrap.intermediates,
            data_dir: self.data.data_dir.clone(),
            store,
            identity,
            listen: self.listen,
            health_listen: self.health_listen,
            allow_tls12: self.allow_tls12,
            cert_validity: cert_validity(&self.cert_validity)?,
            permissions,
            auth_cache_ttl: parse_duration_flag("--auth-cache-ttl", &self.auth_cache_ttl)?,
            revocation_poll: nonzero(
                parse_duration_flag("--revocation-poll", &self.revocation_poll)?,
                "--revocation-poll",
            )?,
            shutdown_grace: parse_duration_flag("--shutdown-grace", &self.shutdown_grace)?,
            overload: self.overload.validate()?,
            max_connection_age: nonzero(
                parse_duration_flag("--max-connection-age", &self.max_connection_age)?,
                "--max-connection-age",
            )?,
            bootstrap,
        })
    }
}

pub(crate) fn server_names(extra: &[String]) -> Result<Vec<String>, Error> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for name in extra.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let valid =
            name.len() <= 253 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | ':'));
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "invalid --server-name {name:?}: use a DNS name or IP address"
            )));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn cert_validity(entries: &[String]) -> Result<HashMap<PrincipalType, Duration>, Error> {
    let mut map = HashMap::new();
    for entry in entries.iter().filter(|e| !e.trim().is_empty()) {
        let (kind, value) = entry.split_once('=').ok_or_else(|| {
            Error::InvalidArgument(format!(
                "invalid --cert-validity {entry:?}: expected TYPE=DURATION such as worker=7d"
            ))
        })?;
        let kind: PrincipalType = kind.trim().parse()?;
        let validity = nonzero(parse_duration_flag("--cert-validity", value.trim())?, "--cert-validity")?;
        if validity < Duration::from_secs(300) || validity > Duration::from_secs(825 * 24 * 3600) {
            return Err(Error::InvalidArgument(format!("invalid --cert-validity {entry:?}: use between 5m and 825d")));
        }
        map.insert(kind, validity);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_validity_entries_are_checked() {
        let map = cert_validity(&["worker=7d".into(), "admin=12h".into()]).unwrap();
        assert_eq!(map[&PrincipalType::Worker], Duration::from_secs(7 * 86400));
        for bad in ["worker", "robot=1d", "worker=1s", "worker=1000d"] {
            assert!(cert_validity(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_names_always_include_loopback() {
        assert_eq!(
            server_names(&["ca.example.org".into(), "localhost".into()]).unwrap(),
            ["localhost", "127.0.0.1", "ca.example.org"]
        );
        assert!(server_names(&["bad name".into()]).is_err());
    }
}
