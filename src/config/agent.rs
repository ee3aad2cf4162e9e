//! `principald agent` settings: where principald is, where the agent keeps its node profile, the Workload API socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::Error;

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// principald's gRPC address, https://HOST:PORT: when joining, instead of the address in the join token (the CA
    /// fingerprint in the token still decides whom the agent trusts); afterwards it must match the profile's.
    #[arg(long, env = "PRINCIPALD_AGENT_SERVER")]
    pub server: Option<String>,
    /// Where the node's profile (certificate, key, CA) lives; created 0700 when joining.
    #[arg(long, env = "PRINCIPALD_AGENT_DATA_DIR", default_value = "./agent")]
    pub data_dir: PathBuf,
    /// The Workload API (and Envoy SDS) socket workloads connect to.
    #[arg(long, env = "PRINCIPALD_AGENT_SOCKET", default_value = "/tmp/principald-agent/public/api.sock")]
    pub socket: PathBuf,
    /// A one-time enrollment token for a principal of type node (`principalctl principal enroll-token NODE`). Only
    /// needed for the first start: afterwards the agent starts from --data-dir.
    #[arg(long, env = "PRINCIPALD_AGENT_JOIN_TOKEN", conflicts_with = "join_token_file", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Read the join token from this file instead (keeps it out of `ps` and the environment).
    #[arg(long, env = "PRINCIPALD_AGENT_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Address of a plain-HTTP listener for /healthz, /readyz and /metrics (none by default).
    #[arg(long, env = "PRINCIPALD_AGENT_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// How often the agent asks principald whether anything was revoked (one cheap call; CRLs only when it was).
    #[arg(long, env = "PRINCIPALD_AGENT_POLL", default_value = "500ms")]
    pub poll: String,
}

/// Validated agent settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub server: Option<String>,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub join_token: Option<String>,
    pub health_listen: Option<SocketAddr>,
    pub poll: Duration,
}

impl AgentArgs {
    pub fn validate(&self) -> Result<AgentConfig, Error> {
        let poll = crate::model::duration::parse_duration_flag("--poll", &self.poll)?;
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&poll) {
            return Err(Error::InvalidArgument("--poll must be 100ms to 1m".into()));
        }
        if let Some(server) = &self.server
            && !server.starts_with("https://")
        {
            return Err(Error::InvalidArgument(format!("--server {server:?} must be https://HOST:PORT")));
        }
        let join_token = match &self.join_token_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                Error::InvalidArgument(format!("cannot read --join-token-file {}: {e}", path.display()))
            })?),
            None => self.join_token.clone(),
        };
        let join_token = join_token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        Ok(AgentConfig {
            server: self.server.clone(),
            data_dir: self.data_dir.clone(),
            socket: self.socket.clone(),
            join_token,
            health_listen: self.health_listen,
            poll,
        })
    }
}
