//! Assembles the server: store, CA, authenticator and registry; the gRPC listener over mTLS (PrincipalService, gRPC
//! health, reflection) fed by [`crate::tls`]; the plain-HTTP health listener; and graceful shutdown that drains
//! in-flight RPCs within a bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::auth::{AuthLayer, Authenticator, MethodPolicy};
use crate::config::{DEFAULT_CERT_VALIDITY, ServeConfig};
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::proto::principal_service_server::PrincipalServiceServer;
use crate::registry::Registry;
use crate::server_cert::ServerCertificate;
use crate::service::PrincipalApi;
use crate::store::Store;
use crate::{bootstrap, proto, tls};

/// How often the store's reachability is reflected into gRPC health.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a readiness probe waits for the store.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A started server. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// Set when this start bootstrapped an empty data dir.
    pub bootstrapped_profile: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight RPCs finish within the configured grace, and returns when done.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Bootstraps an empty data dir, binds both listeners and starts serving.
pub async fn start(config: ServeConfig) -> Result<Running> {
    let dir = DataDir::new(&config.data_dir);
    crate::files::create_private_dir(dir.root())?;
    let store = config.store.open().await?;
    let grpc_listener = bind(config.listen, "--listen").await?;
    let health_listener = bind(config.health_listen, "--health-listen").await?;
    let grpc_addr = grpc_listener.local_addr().map_err(|e| Error::internal("local addr", e))?;
    let health_addr = health_listener.local_addr().map_err(|e| Error::internal("local addr", e))?;
    let bootstrapped_profile = if dir.has_ca() {
        None
    } else if dir.ca_cert().exists() || dir.ca_key().exists() {
        return Err(Error::FailedPrecondition(format!(
            "{} holds only half of the CA (ca.pem / ca.key): restore the missing file; refusing to create a new CA",
            dir.root().display()
        )));
    } else if store.get_principal(&config.bootstrap.admin_id).await?.is_some() {
        // The store was bootstrapped (by this or another replica) but this data dir lacks the CA: creating a new CA
        // would split the deployment.
        return Err(Error::FailedPrecondition(format!(
            "no CA in {} but the store already holds admin {:?}: copy ca.pem, ca.key, server.pem and server.key from \
             the replica that bootstrapped it (or from your secret store)",
            dir.root().display(),
            config.bootstrap.admin_id.as_str()
        )));
    } else {
        let mut bootstrap = config.bootstrap.clone();
        if config.listen.port() == 0 {
            // The profile must name the port actually bound.
            if let Some(base) = bootstrap.profile_server.strip_suffix(":0") {
                bootstrap.profile_server = format!("{base}:{}", grpc_addr.port());
            }
        }
        let outcome = bootstrap::run(&bootstrap, store.clone()).await?;
        for step in &outcome.created {
            info!(created = %step, "bootstrap");
        }
        Some(outcome.admin_profile)
    };
    let ca = Arc::new(bootstrap::load_ca(&dir)?);
    let server_cert = ServerCertificate::load(&dir, ca.clone(), &config.bootstrap.server_names)?;
    let tls = tls::server_config(ca.cert_der(), server_cert.clone(), config.allow_tls12)?;

    let authenticator = Arc::new(Authenticator::new(
        store.clone(),
        config.identity.oids.clone(),
        config.permissions.clone(),
        config.auth_cache_ttl,
    ));
    let authenticator_for_epoch = authenticator.clone();
    let registry = Arc::new(Registry::new(
        store.clone(),
        ca.clone(),
        config.identity.clone(),
        config.cert_validity.clone(),
        DEFAULT_CERT_VALIDITY,
        authenticator.clone(),
    ));

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_serving::<PrincipalServiceServer<PrincipalApi>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::internal("reflection", e))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::internal("reflection", e))?;

    let (incoming, accept) = tls::incoming(grpc_listener, tls, config.handshake_timeout, wait_for(shutdown_rx.clone()));
    let grpc = tonic::transport::Server::builder()
        // Bounds on what one client can hold open; RPCs that outlive the timeout are cancelled, never left hanging.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .timeout(RPC_TIMEOUT)
        .layer(AuthLayer::new(authenticator, MethodPolicy::principald()))
        .add_service(PrincipalServiceServer::new(PrincipalApi::new(registry)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, wait_for(shutdown_rx.clone()));
    let grpc = tokio::spawn(grpc);
    let http = tokio::spawn(crate::health::serve(
        health_listener,
        store.clone(),
        ca.clone(),
        server_cert.clone(),
        wait_for(shutdown_rx.clone()),
    ));
    let rotation = tokio::spawn(rotate_server_certificate(server_cert, shutdown_rx.clone()));
    let probe = tokio::spawn(probe_store(store.clone(), reporter, shutdown_rx.clone()));
    let epoch =
        tokio::spawn(follow_revocations(store, authenticator_for_epoch, config.revocation_poll, shutdown_rx.clone()));

    let grace = config.shutdown_grace;
    let task = tokio::spawn(async move {
        wait_for(shutdown_rx).await;
        info!(grace_seconds = grace.as_secs_f64(), "shutting down: draining in-flight requests");
        let _ = accept.await;
        let abort = grpc.abort_handle();
        match tokio::time::timeout(grace, grpc).await {
            Ok(Ok(Ok(()))) => info!("gRPC server stopped"),
            Ok(Ok(Err(e))) => warn!(error = %e, "gRPC server stopped with an error"),
            Ok(Err(e)) => warn!(error = %e, "gRPC server task failed"),
            Err(_) => {
                warn!("shutdown grace elapsed; abandoning unfinished requests");
                abort.abort();
            }
        }
        probe.abort();
        rotation.abort();
        epoch.abort();
        let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
    });
    info!(grpc = %grpc_addr, health = %health_addr, data_dir = %dir.root().display(), "principald serving");
    Ok(Running { grpc_addr, health_addr, bootstrapped_profile, shutdown, task })
}

async fn bind(addr: SocketAddr, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| Error::InvalidArgument(format!("cannot listen on {addr} ({flag}): {e}")))
}

/// Resolves once shutdown was requested.
async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Concurrent RPCs per HTTP/2 connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Longest an RPC may run.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the server certificate is checked for renewal.
const SERVER_CERT_CHECK: Duration = Duration::from_secs(6 * 3600);

/// Re-issues the server certificate from the CA when a third of its lifetime remains; new handshakes use it at once.
async fn rotate_server_certificate(cert: Arc<ServerCertificate>, shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = wait_for(shutdown.clone()) => return,
            _ = tokio::time::sleep(SERVER_CERT_CHECK) => {}
        }
        let cert = cert.clone();
        match tokio::task::spawn_blocking(move || cert.renew_if_due()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => warn!(%error, "cannot renew the server certificate; will retry"),
            Err(error) => warn!(%error, "server certificate renewal task failed"),
        }
    }
}

/// Drops every cached authentication result when the store's revocation epoch moves: how a revocation or suspension
/// made through another replica reaches this one within `poll` (plus one store read).
async fn follow_revocations(
    store: Arc<dyn Store>,
    authenticator: Arc<Authenticator>,
    poll: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        match store.revocation_epoch().await {
            Ok(epoch) => {
                // The first read also drops the cache: a withdrawal may have landed before we knew the epoch.
                if last != Some(epoch) {
                    authenticator.forget_all();
                    tracing::debug!(epoch, "revocation epoch moved: authentication cache dropped");
                }
                last = Some(epoch);
            }
            // Cached results still expire with their TTL; readiness reports the outage.
            Err(error) => tracing::debug!(%error, "cannot read the revocation epoch"),
        }
        tokio::select! {
            _ = wait_for(shutdown.clone()) => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Mirrors store reachability into gRPC health, so gRPC-aware balancers see it too.
async fn probe_store(store: Arc<dyn Store>, reporter: HealthReporter, shutdown: watch::Receiver<bool>) {
    let mut last = None;
    loop {
        let ok = matches!(tokio::time::timeout(STORE_PROBE_TIMEOUT, store.ping()).await, Ok(Ok(())));
        let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
        if last != Some(ok) {
            reporter.set_service_status("", status).await;
            if ok {
                reporter.set_serving::<PrincipalServiceServer<PrincipalApi>>().await;
            } else {
                warn!("store unreachable: reporting NOT_SERVING");
                reporter.set_not_serving::<PrincipalServiceServer<PrincipalApi>>().await;
            }
            last = Some(ok);
        }
        tokio::select! {
            _ = wait_for(shutdown.clone()) => {
                reporter.set_service_status("", ServingStatus::NotServing).await;
                reporter.set_not_serving::<PrincipalServiceServer<PrincipalApi>>().await;
                return;
            }
            _ = tokio::time::sleep(HEALTH_PROBE_INTERVAL) => {}
        }
    }
}
