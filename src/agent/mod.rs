//! `principald agent`: a node agent that delivers certificates to local workloads by push.
//!
//! The path: the agent joins once with an enrollment token for a principal of type `node` ([`crate::client::enroll`];
//! key made here, profile in the data dir) and renews that certificate from then on
//! ([`crate::client::renewal::watch`]). Its sync loop ([`sync`]) keeps a [`state::Snapshot`] of the node's workload
//! entries, one in-memory key and X.509-SVID per entry (rotated at half life, replaced at once when the CRLs list it),
//! and the trust bundle (roots, CRLs, token keys). Workloads connect to a Unix socket; each call is attested from the
//! socket's peer credentials and /proc ([`attest`]) and answered from the snapshot by the SPIFFE Workload API
//! ([`workload_api`]) and Envoy's SDS ([`sds`]); streams push every change. An optional HTTP listener serves health and metrics ([`http`]).

pub mod attest;
pub mod client;
mod http;
pub mod jwt;
pub mod metrics;
pub mod sds;
pub mod state;
pub mod sync;
pub mod workload_api;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;

use crate::client::keys::KeyType;
use crate::client::{PROFILE_FILE, Profile};
use crate::config::AgentConfig;
use crate::error::{Error, Result};
use crate::proto::envoy_api::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use crate::proto::spiffe::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use metrics::AgentMetrics;
use state::Snapshot;
use sync::Syncer;

/// Runs the agent until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let profile = join_or_load(&config).await?;
    let server = profile.file.server.clone();
    tracing::info!(%server, data_dir = %config.data_dir.display(), "node profile loaded");

    let metrics = AgentMetrics::new();
    let (snapshot_tx, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    let sync = Arc::new(Syncer::new(config.data_dir.clone(), config.poll, snapshot_tx, metrics.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(sync.clone().run());
    let (dir, renew_server) = (config.data_dir.clone(), server.clone());
    tasks.spawn(async move {
        // Returns only when renewal failed for good (the node was suspended, deleted or its certificate revoked).
        if let Err(error) =
            crate::client::renewal::watch(&dir, &renew_server, None, KeyType::P256, &crate::client::renewal::LogEvents)
                .await
        {
            tracing::error!(%error, "the node certificate can no longer be renewed; serving cached SVIDs until they expire");
        }
    });
    if let Some(addr) = config.health_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot listen on --health-listen {addr}: {e}")))?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "agent health and metrics listening");
        let routes = http::routes(http::HealthState {
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
            dir: config.data_dir.clone(),
        });
        tasks.spawn(async move {
            if let Err(error) = axum::serve(listener, routes).await {
                tracing::error!(%error, "agent health listener stopped");
            }
        });
    }

    let listener = bind_socket(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), "Workload API listening");
    let (closing_tx, closing) = watch::channel(false);
    let api = workload_api::WorkloadApi::new(snapshot.clone(), closing.clone(), sync.clone(), metrics.clone());
    let stopping = async move {
        shutdown.await;
        tracing::info!("agent stopping: ending open streams");
        let _ = closing_tx.send(true);
    };
    let sds = sds::Sds { snapshot: snapshot.clone(), closing, sync: sync.clone(), metrics: metrics.clone() };
    let served = tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(api))
        .add_service(SecretDiscoveryServiceServer::new(sds))
        .serve_with_incoming_shutdown(incoming(listener), stopping)
        .await;
    tasks.shutdown().await;
    let _ = std::fs::remove_file(&config.socket);
    served.map_err(|e| Error::Unavailable(format!("Workload API server failed: {e}")))
}

/// The socket's connections, each with the moment it was accepted (see [`attest::Accepted`]).
fn incoming(listener: UnixListener) -> impl tokio_stream::Stream<Item = std::io::Result<attest::Accepted>> {
    use tokio_stream::StreamExt;
    UnixListenerStream::new(listener).map(|accepted| accepted.map(attest::Accepted::new))
}

/// The node's profile: loaded from the data dir, or made by joining with the token (first start).
async fn join_or_load(config: &AgentConfig) -> Result<Profile> {
    let dir = &config.data_dir;
    if dir.join(PROFILE_FILE).exists() {
        if config.join_token.is_some() {
            tracing::info!("already joined: starting from the data dir and ignoring the join token");
        }
        let profile = Profile::load(dir)?;
        if let Some(server) = &config.server
            && *server != profile.file.server
        {
            return Err(Error::InvalidArgument(format!(
                "--server {server} differs from the server this node joined ({}); use a new --data-dir to join another",
                profile.file.server
            )));
        }
        return Ok(profile);
    }
    let token = config.join_token.as_deref().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{} holds no node profile: give --join-token or --join-token-file (`principalctl principal enroll-token NODE`)",
            dir.display()
        ))
    })?;
    let waiting = |status: &tonic::Status, wait: std::time::Duration| {
        tracing::info!(code = ?status.code(), wait_seconds = wait.as_secs_f64(), "join retried");
    };
    let enrolled = crate::client::enroll::enroll(token, config.server.as_deref(), dir, KeyType::P256, false, waiting)
        .await
        .map_err(|e| Error::Unauthenticated(format!("cannot join: {e}")))?;
    check_is_node(&enrolled.profile).await?;
    tracing::info!(node = %enrolled.principal_id, serial = %enrolled.serial, "joined");
    Ok(enrolled.profile)
}

/// Refuses to run as anything but a node (a join token made for another type would otherwise fail later, obscurely).
async fn check_is_node(profile: &Profile) -> Result<()> {
    let credentials = profile.credentials()?;
    let mut client =
        crate::client::rpc::connect(&profile.file.server, &credentials).await.map_err(Error::Unavailable)?;
    let me = client
        .who_am_i(crate::proto::WhoAmIRequest {})
        .await
        .map_err(|s| Error::Unavailable(s.message().to_owned()))?
        .into_inner();
    if me.principal_type != crate::proto::PrincipalType::Node as i32 {
        return Err(Error::FailedPrecondition(format!(
            "principal {:?} is not a node: join with a token made for a principal of type node",
            me.principal_id
        )));
    }
    Ok(())
}

/// Refuses a socket directory someone else could swap the socket in: it must belong to this process's user or root,
/// and be writable by no one else unless it is sticky like /tmp (there no one else can remove or rename the socket).
fn check_socket_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).map_err(|e| Error::internal("/proc/self", e))?;
    let meta = std::fs::metadata(dir).map_err(|e| Error::InvalidArgument(format!("{}: {e}", dir.display())))?;
    let shared = meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0;
    if (meta.uid() != me && meta.uid() != 0) || shared {
        return Err(Error::InvalidArgument(format!(
            "--socket's directory {} must belong to this user (or root) and be writable by no one else, or be \
             sticky like /tmp (owner uid {}, mode {:o})",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Binds the workload socket: its directory is created if missing; a stale socket from a previous run is replaced
/// (never another kind of file); the socket is world-connectable, since attestation, not file modes, decides who gets
/// what.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::InvalidArgument(format!("cannot create {}: {e}", parent.display())))?;
        check_socket_dir(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => {
            return Err(Error::InvalidArgument(format!("--socket {} exists and is not a socket", path.display())));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| Error::InvalidArgument(format!("cannot listen on --socket {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| Error::internal("socket permissions", e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_socket_directory_must_be_private_or_sticky() {
        let dir = tempfile::tempdir().unwrap();
        check_socket_dir(dir.path()).expect("a private directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_socket_dir(dir.path()).is_err(), "a world-writable directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_socket_dir(dir.path()).expect("a sticky one, like /tmp");
    }
}
