//! The listeners: gRPC over mTLS (PrincipalService, gRPC health, reflection) with our own TLS accept loop, and plain
//! HTTP health for load balancers. Graceful shutdown drains in-flight RPCs within a bound.
//!
//! TLS is terminated here, not by tonic, so the rustls configuration (protocol versions, verifier, crypto provider)
//! and the handshake timeout are ours; tonic still sees the peer certificates through `TlsConnectInfo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{debug, info, warn};

use crate::auth::{AuthLayer, Authenticator, MethodPolicy};
use crate::config::{DEFAULT_CERT_VALIDITY, ServeConfig};
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::pki::ca::CertificateAuthority;
use crate::proto::principal_service_server::PrincipalServiceServer;
use crate::registry::Registry;
use crate::service::PrincipalApi;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::{bootstrap, proto};

/// How often the store's reachability is reflected into gRPC health.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a readiness probe waits for the store.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pending handshaken connections not yet taken by the gRPC server.
const ACCEPT_BACKLOG: usize = 256;

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

/// Opens the store of a data directory (creating both if needed) and applies migrations.
pub fn open_store(data_dir: &std::path::Path) -> Result<Arc<dyn Store>> {
    let dir = DataDir::new(data_dir);
    crate::files::create_private_dir(dir.root())?;
    Ok(Arc::new(SqliteStore::open(&dir.database())?))
}

/// Bootstraps an empty data dir, binds both listeners and starts serving.
pub async fn start(config: ServeConfig) -> Result<Running> {
    let dir = DataDir::new(&config.data_dir);
    let store = open_store(&config.data_dir)?;
    let grpc_listener = bind(config.listen, "--listen").await?;
    let health_listener = bind(config.health_listen, "--health-listen").await?;
    let grpc_addr = grpc_listener.local_addr().map_err(|e| Error::internal("local addr", e))?;
    let health_addr = health_listener.local_addr().map_err(|e| Error::internal("local addr", e))?;
    let bootstrapped_profile = if dir.has_ca() {
        None
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
    let tls = tls_config(&config, &dir, &ca)?;

    let authenticator = Arc::new(Authenticator::new(
        store.clone(),
        config.identity.oids.clone(),
        config.permissions.clone(),
        config.auth_cache_ttl,
    ));
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

    let (conn_tx, conn_rx) = mpsc::channel(ACCEPT_BACKLOG);
    let accept = tokio::spawn(accept_loop(
        grpc_listener,
        TlsAcceptor::from(Arc::new(tls)),
        conn_tx,
        config.handshake_timeout,
        shutdown_rx.clone(),
    ));
    let grpc = tonic::transport::Server::builder()
        .layer(AuthLayer::new(authenticator, MethodPolicy::principald()))
        .add_service(PrincipalServiceServer::new(PrincipalApi::new(registry)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), wait_for(shutdown_rx.clone()));
    let grpc = tokio::spawn(grpc);
    let http =
        tokio::spawn(crate::health::serve(health_listener, store.clone(), ca.clone(), wait_for(shutdown_rx.clone())));
    let probe = tokio::spawn(probe_store(store, reporter, shutdown_rx.clone()));

    let grace = config.shutdown_grace;
    let task = tokio::spawn(async move {
        wait_for(shutdown_rx).await;
        info!(grace_seconds = grace.as_secs_f64(), "shutting down: draining in-flight requests");
        let _ = accept.await;
        match tokio::time::timeout(grace, grpc).await {
            Ok(Ok(Ok(()))) => info!("gRPC server stopped"),
            Ok(Ok(Err(e))) => warn!(error = %e, "gRPC server stopped with an error"),
            Ok(Err(e)) => warn!(error = %e, "gRPC server task failed"),
            Err(_) => warn!("shutdown grace elapsed; abandoning unfinished requests"),
        }
        probe.abort();
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

fn tls_config(config: &ServeConfig, dir: &DataDir, ca: &CertificateAuthority) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .map_err(|e| Error::InvalidArgument(format!("CA certificate unusable as a trust anchor: {e}")))?;
    // A presented certificate must chain to the CA or the handshake fails. A connection without one is let through
    // TLS so that the auth layer can answer UNAUTHENTICATED with a message instead of an opaque transport error; the
    // layer denies every request that lacks a certificate.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::internal("client verifier", e))?;
    let chain = CertificateDer::pem_file_iter(dir.server_cert())
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", dir.server_cert().display())))?;
    let key = PrivateKeyDer::from_pem_file(dir.server_key())
        .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", dir.server_key().display())))?;
    let versions: &[&rustls::SupportedProtocolVersion] = if config.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| Error::internal("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| Error::InvalidArgument(format!("server certificate and key do not form a usable pair: {e}")))?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tls)
}

type Conn = std::result::Result<TlsStream<TcpStream>, std::io::Error>;

/// Accepts TCP connections and hands each to its own task for the TLS handshake, so a slow client never holds up
/// the others; finished handshakes go to the gRPC server.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<Conn>,
    timeout: Duration,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = wait_for(shutdown.clone()) => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, conns) = (acceptor.clone(), conns.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conns.send(Ok(tls)).await;
                }
                Ok(Err(error)) => info!(%peer, %error, "TLS handshake rejected"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
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
