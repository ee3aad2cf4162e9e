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
use tracing::{info, warn};

use crate::audit::Recorder;
use crate::audit::refusals::Refusals;
use crate::auth::{AuthLayer, Authenticator, MethodPolicy};
use crate::config::{DEFAULT_CERT_VALIDITY, ServeConfig};
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::health::Readiness;
use crate::listener::http::HttpOptions;
use crate::listener::{self, Table};
use crate::metrics::grpc::MetricsLayer;
use crate::metrics::store::MeteredStore;
use crate::metrics::{Metrics, Scrape};
use crate::proto::principal_service_server::PrincipalServiceServer;
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;
use crate::revocation::CrlPublisher;
use crate::server_cert::ServerCertificate;
use crate::service::PrincipalApi;
use crate::service::audit_reader::AuditReader;
use crate::token::keys::TokenKeys;
use crate::token::{TokenIssuer, TokenPolicy};
use crate::{bootstrap, proto, tls};

mod checkpoints;
#[cfg(feature = "aws")]
mod checkpoints_s3;
mod tasks;
use tasks::{finish_sweeps, follow_readiness, forget_idle_limits, record_refusals, rotate_server_certificate};

/// The service name gRPC health reports besides "" (the whole server).
const PRINCIPAL_SERVICE: &str = proto::principal_service_server::SERVICE_NAME;

/// A started server. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// The public PKI listener (CRLs, OCSP).
    pub pki_addr: SocketAddr,
    /// The OAuth HTTPS listener, when `--oauth-listen` is set.
    pub oauth_addr: Option<SocketAddr>,
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
    let metrics = Metrics::new();
    let store = MeteredStore::wrap(config.store.open().await?, metrics.clone(), config.overload.store_max_in_flight);
    let grpc_listener = bind(config.listen, "--listen").await?;
    let health_listener = bind(config.health_listen, "--health-listen").await?;
    let pki_listener = bind(config.pki.listen, "--pki-listen").await?;
    let oauth_listener = match config.tokens.oauth_listen {
        Some(addr) => Some(bind(addr, "--oauth-listen").await?),
        None => None,
    };
    let oauth_addr = oauth_listener.as_ref().and_then(|l| l.local_addr().ok());
    let grpc_addr = grpc_listener.local_addr().map_err(|e| Error::internal("local addr", e))?;
    let health_addr = health_listener.local_addr().map_err(|e| Error::internal("local addr", e))?;
    let pki_addr = pki_listener.local_addr().map_err(|e| Error::internal("local addr", e))?;
    let bootstrapped_profile = first_start(&config, &dir, &store, grpc_addr).await?;
    let status_urls = config.pki.urls(pki_addr);
    let ca = crate::issuing::start(&config, &store, &dir, status_urls.clone()).await?;
    let server_cert = ServerCertificate::load(&dir, ca.clone(), &config.bootstrap.server_names)?;
    let known = Arc::new(tls::KnownIntermediates::default());
    let tls = tls::server_config_completing(ca.cert_der(), server_cert.clone(), config.allow_tls12, known.clone())?;
    let oauth_tls = tls.clone();

    let authenticator = Arc::new(
        Authenticator::new(
            store.clone(),
            config.identity.oids.clone(),
            config.permissions.clone(),
            config.auth_cache_ttl,
        )
        .with_metrics(metrics.clone()),
    );
    // Certificates of revoked intermediates are refused from the first request on.
    authenticator.refresh_revoked_issuers().await?;
    let recorder = Recorder::new(&config.replica_id, config.accountability.audit);
    if !config.accountability.audit {
        // The log says so itself before this replica writes anything unrecorded.
        let origin = crate::audit::Origin::system("serve");
        let details = serde_json::json!({ "replica": config.replica_id, "flag": "--audit off" });
        let event = Recorder::new(&config.replica_id, true).event(
            &origin,
            crate::audit::kind::AUDIT_DISABLED,
            &config.replica_id,
            details,
        );
        store.append_audit(&event.into_iter().collect::<Vec<_>>()).await?;
        tracing::warn!("the audit log is off (--audit off): changes are not recorded");
    }
    let keeper = crate::issuing::Keeper {
        ca: ca.clone(),
        store: store.clone(),
        authenticator: authenticator.clone(),
        known,
        audit: recorder.clone(),
    };
    keeper.refresh().await?;
    let follower = crate::auth::RevocationFollower::new(store.clone(), authenticator.clone(), config.revocation_poll);
    let registry = Arc::new(
        Registry::new(
            store.clone(),
            ca.clone(),
            config.identity.clone(),
            config.cert_validity.clone(),
            DEFAULT_CERT_VALIDITY,
            authenticator.clone(),
            recorder.clone(),
        )
        .with_live_certificate_caps(config.overload.live_certificate_caps.clone()),
    );
    let refusals = Arc::new(Refusals::default());
    let tokens = start_tokens(&config, &store, &recorder, &metrics, oauth_addr).await?;
    let issuers = crate::revocation::Issuers::load(ca.clone(), store.clone()).await?;
    let crls = CrlPublisher::new(
        store.clone(),
        issuers.clone(),
        status_urls.crl_base.clone(),
        config.accountability.crl_validity,
    );
    crls.refresh().await?;
    let checkpoint_writer = match &config.accountability.audit_checkpoints {
        Some(location) if config.accountability.audit => {
            let mut writer = checkpoints::CheckpointWriter::new(
                store.clone(),
                ca.clone(),
                recorder.clone(),
                &config.replica_id,
                &config.store,
                location,
                &metrics.checkpoints,
            )
            .await?;
            // The first checkpoint before serving: a sink that cannot be written (a missing bucket, no s3:PutObject,
            // no network path to S3) stops the start here rather than leaving the log unguarded until someone looks.
            writer.write_once().await.map_err(|e| {
                Error::FailedPrecondition(format!("--audit-checkpoints {location}: the first checkpoint failed: {e}"))
            })?;
            Some(writer)
        }
        _ => None,
    };
    let withdrawals = authenticator.clone();
    let ocsp = crate::revocation::Responder::new(
        issuers,
        store.clone(),
        config.accountability.crl_validity,
        Box::new(move || withdrawals.withdrawals_seen()),
    );

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // One readiness probe answers both /readyz and gRPC health.
    let (readiness, probe) =
        Readiness::start(store.clone(), ca.clone(), server_cert.clone(), config.signer_check_every).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::internal("reflection", e))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::internal("reflection", e))?;

    let observers = tls::Observers { metrics: Some(metrics.clone()), refusals: Some(refusals.clone()) };
    let limits = config.overload.connections;
    let grpc_table = Table::new("grpc", limits.listener, metrics.listeners.clone());
    let (incoming, accept) =
        tls::incoming_observed(grpc_listener, tls, grpc_table, limits, observers, wait_for(shutdown_rx.clone()));
    let limiter = Arc::new(RateLimiter::new(&config.overload.rates, metrics.limits.clone()));
    let policy = MethodPolicy::principald();
    let rpc_metrics = MetricsLayer::new(metrics.clone(), &policy.method_paths());
    let grpc = tonic::transport::Server::builder()
        // Bounds on what one client can hold open; RPCs that outlive the timeout are cancelled, never left hanging.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(config.max_connection_age)
        .max_connection_age_grace(RPC_TIMEOUT)
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
        .timeout(RPC_TIMEOUT)
        .layer(rpc_metrics)
        .layer(crate::limits::OversizeLayer::new(MAX_REQUEST_BYTES))
        .layer(
            AuthLayer::new(authenticator.clone(), policy)
                .counting_refusals(refusals.clone())
                .with_rate_limits(limiter.clone()),
        )
        .add_service(
            PrincipalServiceServer::new(
                PrincipalApi::new(registry.clone(), AuditReader::new(store.clone()), crls.clone())
                    .with_tokens(tokens.clone()),
            )
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(health_service.max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(reflection_v1.max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(reflection_v1alpha.max_decoding_message_size(MAX_REQUEST_BYTES))
        .serve_with_incoming_shutdown(incoming, wait_for(shutdown_rx.clone()));
    let grpc = tokio::spawn(grpc);
    let oauth_authenticator = authenticator;
    let meters = metrics.listeners.clone();
    let scrape = Scrape {
        metrics,
        readiness: readiness.clone(),
        ca: ca.clone(),
        server_cert: server_cert.clone(),
        crls: crls.clone(),
    };
    let http = tokio::spawn(crate::health::serve(
        health_listener,
        readiness.clone(),
        crate::metrics::routes(Arc::new(scrape)),
        meters.clone(),
        wait_for(shutdown_rx.clone()),
    ));
    let pki = tokio::spawn(crate::listener::http::serve(
        pki_listener,
        Table::new("pki", listener::Limits::PKI, meters.clone()),
        HttpOptions { tls: None, keep_alive: true },
        crate::revocation::http::routes(crls.clone(), ocsp),
        wait_for(shutdown_rx.clone()),
    ));
    let crl_task = tokio::spawn(crls.clone().run(shutdown_rx.clone()));
    let token_keys = tokens.as_ref().map(|t| tokio::spawn(t.keys.clone().run(shutdown_rx.clone())));
    let oauth = match (oauth_listener, &tokens) {
        (Some(listener), Some(tokens)) => Some(tokio::spawn(crate::token::http::serve(
            listener,
            Table::new("oauth", listener::Limits::OAUTH, meters),
            oauth_tls,
            tokens.clone(),
            oauth_authenticator,
            Some(limiter.clone()),
            wait_for(shutdown_rx.clone()),
        ))),
        _ => None,
    };
    let rotation = tokio::spawn(rotate_server_certificate(server_cert, shutdown_rx.clone()));
    let intermediates = tokio::spawn(keeper.run(shutdown_rx.clone()));
    let grpc_health = tokio::spawn(follow_readiness(readiness, reporter, shutdown_rx.clone()));
    let epoch = follower.spawn(wait_for(shutdown_rx.clone()));
    let sweeps = tokio::spawn(finish_sweeps(registry, shutdown_rx.clone()));
    let forget = tokio::spawn(forget_idle_limits(limiter, shutdown_rx.clone()));
    let checkpoints = checkpoint_writer
        .map(|writer| tokio::spawn(writer.run(config.accountability.audit_checkpoint_every, shutdown_rx.clone())));
    let refused = tokio::spawn(record_refusals(
        refusals,
        store.clone(),
        recorder,
        config.accountability.audit_refusals_every,
        shutdown_rx.clone(),
    ));

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
        let _ = tokio::time::timeout(Duration::from_secs(1), grpc_health).await;
        probe.abort();
        rotation.abort();
        intermediates.abort();
        epoch.abort();
        sweeps.abort();
        forget.abort();
        crl_task.abort();
        for task in token_keys.iter().chain(&oauth) {
            task.abort();
        }
        // The last refusals counted go to the audit log before the process ends, then the last checkpoint.
        let _ = tokio::time::timeout(Duration::from_secs(2), refused).await;
        if let Some(task) = checkpoints
            && let Ok(mut writer) = task.await
            && let Err(error) = tokio::time::timeout(Duration::from_secs(20), writer.write_once())
                .await
                .unwrap_or_else(|_| Err(Error::Unavailable("timed out".into())))
        {
            warn!(%error, "cannot write the last audit checkpoint");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), pki).await;
    });
    info!(grpc = %grpc_addr, health = %health_addr, pki = %pki_addr, data_dir = %dir.root().display(), "principald serving");
    Ok(Running { grpc_addr, health_addr, pki_addr, oauth_addr, bootstrapped_profile, shutdown, task })
}

/// Bootstraps on a first start: when the store has no admin yet and this data dir no CA certificate. Returns the
/// admin profile it wrote. A replica joining a bootstrapped store adopts the CA from it (key in KMS or an HSM), or
/// needs the CA files (file key).
async fn first_start(
    config: &ServeConfig,
    dir: &DataDir,
    store: &Arc<dyn crate::store::Store>,
    grpc_addr: SocketAddr,
) -> Result<Option<PathBuf>> {
    let file_key = match &config.bootstrap.ca_key {
        crate::pki::signer::KeyUri::File(path) => Some(path.clone()),
        _ => None,
    };
    if !dir.ca_cert().exists() && file_key.as_ref().is_some_and(|k| *k == dir.ca_key() && k.exists()) {
        return Err(Error::FailedPrecondition(format!(
            "{} holds only half of the CA (ca.key without ca.pem): restore ca.pem; refusing to create a new CA",
            dir.root().display()
        )));
    }
    if dir.ca_cert().exists() {
        if file_key.as_ref().is_some_and(|k| !k.exists()) {
            return Err(Error::FailedPrecondition(format!(
                "{} holds only half of the CA (ca.pem without its key {}): restore the key; refusing to create a \
                 new CA",
                dir.root().display(),
                config.bootstrap.ca_key
            )));
        }
        return Ok(None);
    }
    if store.get_principal(&config.bootstrap.admin_id).await?.is_some() {
        if file_key.is_some() {
            // The store was bootstrapped (by this or another replica) but this data dir lacks the CA: creating a new
            // CA would split the deployment.
            return Err(Error::FailedPrecondition(format!(
                "no CA in {} but the store already holds admin {:?}: copy ca.pem and ca.key from the replica that \
                 bootstrapped it (or from your secret store), or keep the CA key in KMS or an HSM (--ca-key)",
                dir.root().display(),
                config.bootstrap.admin_id.as_str()
            )));
        }
        return Ok(None);
    }
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
    Ok(Some(outcome.admin_profile))
}

/// The kernel's queue of connections not yet accepted. A burst larger than it costs clients a SYN retransmit (1 s,
/// then 3 s...), so it is sized for floods (Linux caps it at net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr, flag: &str) -> Result<TcpListener> {
    let refused = |e: std::io::Error| Error::InvalidArgument(format!("cannot listen on {addr} ({flag}): {e}"));
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(refused)?;
    socket.set_reuseaddr(true).map_err(refused)?;
    socket.bind(addr).map_err(refused)?;
    socket.listen(LISTEN_BACKLOG).map_err(refused)
}

/// Resolves once shutdown was requested.
async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Concurrent RPCs (streams, health Watch included) per HTTP/2 connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Largest request message accepted: our largest real one is a CSR of at most `pki::csr::MAX_CSR_BYTES` (16 KiB)
/// plus a few fields; tonic's default would be 4 MiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest HTTP/2 header list accepted from a client.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Longest an RPC may run.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// The replica's token signing key (announced in the store) and the issuer that signs with it.
async fn start_tokens(
    config: &ServeConfig,
    store: &Arc<dyn crate::store::Store>,
    recorder: &Recorder,
    metrics: &Arc<Metrics>,
    oauth_addr: Option<SocketAddr>,
) -> Result<Option<Arc<TokenIssuer>>> {
    let t = &config.tokens;
    if t.audiences.is_empty() {
        return Ok(None);
    }
    let keys =
        TokenKeys::start(store.clone(), recorder.clone(), &config.replica_id, t.key_rotation, t.lifetime).await?;
    let issuer = t.issuer.clone().unwrap_or_else(|| match oauth_addr {
        Some(addr) => format!("https://localhost:{}", addr.port()),
        None => format!("spiffe://{}", config.identity.trust_domain),
    });
    let policy = TokenPolicy {
        issuer,
        audiences: t.audiences.clone(),
        lifetime: t.lifetime,
        trust_domain: config.identity.trust_domain.clone(),
    };
    let audit = config.accountability.audit_tokens.then(|| (recorder.clone(), store.clone()));
    Ok(Some(Arc::new(TokenIssuer { policy, keys, metrics: Some(metrics.clone()), audit })))
}
