//! Connecting with the profile's credentials, and turning every failure into one line a person can act on.

use std::path::Path;

use principald::client::{self, Credentials, Profile};
use principald::proto::principal_service_client::PrincipalServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::output::Format;

/// What every command needs: the profile, its credentials and the output format.
pub struct Context {
    pub profile: Profile,
    pub server: String,
    pub format: Format,
}

impl Context {
    pub fn load(profile: Option<&Path>, server: Option<&str>, format: Format) -> Result<Self, String> {
        let path = profile.ok_or(
            "no profile: pass --profile DIR or set PRINCIPALCTL_PROFILE (bootstrap writes one to DATA_DIR/profiles/admin)",
        )?;
        let profile = Profile::load(path).map_err(|e| e.to_string())?;
        let server = server.map(str::to_owned).unwrap_or_else(|| profile.file.server.clone());
        Ok(Self { profile, server, format })
    }

    pub fn credentials(&self) -> Result<Credentials, String> {
        self.profile.credentials().map_err(|e| e.to_string())
    }

    /// A client connected with the profile's current credentials.
    pub async fn client(&self) -> Result<PrincipalServiceClient<Channel>, String> {
        connect(&self.server, &self.credentials()?).await
    }

    /// One line for a failed call.
    pub fn explain(&self, status: Status) -> String {
        explain(&self.server, &status)
    }
}

/// Calls `call`, waiting out what the server says is temporary: a rate limit (its retry hint, with jitter) or
/// UNAVAILABLE (backoff with jitter). Each wait is announced on stderr.
pub async fn retrying<T, F, Fut>(call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    client::Retry::default().call(call, announce_wait).await
}

/// Tells the user on stderr that a call waits `wait` before it is retried.
pub fn announce_wait(status: &Status, wait: std::time::Duration) {
    let why = match status.code() {
        Code::ResourceExhausted => "rate limited by the server",
        _ => "server unavailable",
    };
    eprintln!("{why}; retrying in {:.1}s", wait.as_secs_f64());
}

pub use principald::client::rpc::{connect, explain};
