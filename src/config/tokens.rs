//! Access-token settings: the OAuth HTTPS listener, the issuer URL, audiences, lifetimes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::error::Error;
use crate::model::duration::parse_duration_flag;

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// Address of an HTTPS listener for OAuth clients: discovery, JWKS and the token endpoint (none by default).
    #[arg(long, env = "PRINCIPALD_OAUTH_LISTEN")]
    pub oauth_listen: Option<SocketAddr>,
    /// The tokens' `iss` and the base URL of discovery and the JWKS; default https://localhost:PORT of
    /// --oauth-listen, or spiffe://TRUST_DOMAIN without it.
    #[arg(long, env = "PRINCIPALD_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,
    /// An audience tokens may be asked for; repeatable or comma-separated. Tokens are off until one is given.
    #[arg(long = "token-audience", env = "PRINCIPALD_TOKEN_AUDIENCES", value_delimiter = ',')]
    pub token_audiences: Vec<String>,
    /// Default and longest token lifetime (never past the caller's certificate).
    #[arg(long, env = "PRINCIPALD_TOKEN_LIFETIME", default_value = "15m")]
    pub token_lifetime: String,
    /// How long one token signing key signs before the replica replaces it.
    #[arg(long, env = "PRINCIPALD_TOKEN_KEY_ROTATION", default_value = "24h")]
    pub token_key_rotation: String,
    /// Sign JWT-SVIDs for the workloads of `principald agent` nodes (starts the token keys even without
    /// --token-audience; a JWT-SVID names the audiences its workload asks for). Off by default.
    #[arg(long, env = "PRINCIPALD_JWT_SVIDS", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub jwt_svids: bool,
}

#[derive(Clone, Debug)]
pub struct TokenConfig {
    pub oauth_listen: Option<SocketAddr>,
    pub issuer: Option<String>,
    pub audiences: BTreeSet<String>,
    pub lifetime: Duration,
    pub key_rotation: Duration,
    /// Token keys run for JWT-SVIDs too.
    pub jwt_svids: bool,
}

impl TokenArgs {
    pub fn validate(&self) -> Result<TokenConfig, Error> {
        let lifetime = parse_duration_flag("--token-lifetime", &self.token_lifetime)?;
        if !(Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&lifetime) {
            return Err(Error::InvalidArgument("--token-lifetime must be between 1m and 24h".into()));
        }
        let key_rotation = parse_duration_flag("--token-key-rotation", &self.token_key_rotation)?;
        if key_rotation < Duration::from_secs(60) {
            return Err(Error::InvalidArgument("--token-key-rotation must be at least 1m".into()));
        }
        let issuer = match &self.token_issuer {
            Some(url) if !url.starts_with("https://") || url.contains(['?', '#', ' ']) || url.len() > 200 => {
                return Err(Error::InvalidArgument(format!(
                    "invalid --token-issuer {url:?}: an https:// URL without query or fragment"
                )));
            }
            other => other.as_deref().map(|u| u.trim_end_matches('/').to_owned()),
        };
        let mut audiences = BTreeSet::new();
        for audience in self.token_audiences.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            if audience.len() > 200 || audience.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::InvalidArgument(format!("invalid --token-audience {audience:?}")));
            }
            audiences.insert(audience.to_owned());
        }
        if self.oauth_listen.is_some() && audiences.is_empty() {
            return Err(Error::InvalidArgument("--oauth-listen needs at least one --token-audience".into()));
        }
        Ok(TokenConfig {
            oauth_listen: self.oauth_listen,
            issuer,
            audiences,
            lifetime,
            key_rotation,
            jwt_svids: self.jwt_svids,
        })
    }
}
