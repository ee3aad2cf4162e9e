//! Assembles the server: store, CA, authenticator and registry; the gRPC listener over mTLS (PrincipalService, gRPC
//! health, reflection) fed by [`crate::tls`]; the plain-HTTP health listener; and graceful shutdown that drains
//! in-flight RPCs within a bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

use crate::audit::Recorder;
use crate::audit::refusals::Refusals;
use crate::auth::Authenticator;
use crate::config::{DEFAULT_CERT_VALIDITY, ServeConfig};
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::health::Readiness;
use crate::listener::http::HttpOptions;
use crate::listener::{self, Table};
use crate::metrics::store::MeteredStore;
use crate::metrics::{Metrics, Scrape};
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;
use crate::revocation::CrlPublisher;
use crate::server_cert::ServerCertificate;
use crate::{proto, tls};

mod checkpoints;
#[cfg(feature = "aws")]
mod checkpoints_s3;
mod grpc;
mod steps;
mod tasks;
pub use grpc::MAX_REQUEST_BYTES;
use steps::Listeners;
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

/// Starts a replica, step by step: bind every listener; open the store; bootstrap a first start; establish the CA
/// and this replica's intermediate; the server certificate and TLS; authentication; the registry; tokens, CRLs and
/// OCSP; the checkpoint writer's first checkpoint; then serve, with every background task in one set that shutdown
/// stops.
pub async fn start(config: ServeConfig) -> Result<Running> {
    let dir = DataDir::new(&config.data_dir);
    crate::files::create_private_dir(dir.root())?;
    let metrics = Metrics::new();
    let store = MeteredStore::wrap(config.store.open().await?, metrics.clone(), config.overload.store_max_in_flight);
    let listeners = Listeners::bind(&config).await?;
    let (grpc_addr, health_addr, pki_addr) = (listeners.grpc_addr, listeners.health_addr, listeners.pki_addr);
    let bootstrapped_profile = steps::first_start(&config, &dir, &store, grpc_addr).await?;

    let status_urls = config.pki.urls(pki_addr);
    let ca = crate::keeper::start(&config, &store, &dir, status_urls.clone()).await?;
    let server_cert = ServerCertificate::load(&dir, ca.clone(), &config.bootstrap.server_names)?;
    let known = Arc::new(tls::KnownIntermediates::default());
    let tls = tls::server_config_completing(ca.cert_der(), server_cert.clone(), config.allow_tls12, known.clone())?;

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
        steps::note_audit_off(&config, &store).await?;
    }
    let keeper = crate::keeper::Keeper {
        ca: ca.clone(),
        store: store.clone(),
        authenticator: authenticator.clone(),
        known,
        audit: recorder.clone(),
    };
    keeper.refresh().await?;
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

    let tokens = steps::start_tokens(&config, &store, &recorder, &metrics, listeners.oauth_addr).await?;
    let issuers = crate::revocation::Issuers::load(ca.clone(), store.clone()).await?;
    let crls = CrlPublisher::new(
        store.clone(),
        issuers.clone(),
        status_urls.crl_base.clone(),
        config.accountability.crl_validity,
    );
    crls.refresh().await?;
    let withdrawals = authenticator.clone();
    let ocsp = crate::revocation::Responder::new(
        issuers,
        store.clone(),
        config.accountability.crl_validity,
        Box::new(move || withdrawals.withdrawals_seen()),
    );
    let checkpoint_writer = steps::checkpoint_writer(&config, &store, &ca, &recorder, &metrics).await?;

    // Serving. One readiness probe answers both /readyz and gRPC health.
    let (shutdown, shutdown_rx) = watch::channel(false);
    let stopping = || wait_for(shutdown_rx.clone());
    let (readiness, probe) =
        Readiness::start(store.clone(), ca.clone(), server_cert.clone(), config.signer_check_every).await;
    let refusals = Arc::new(Refusals::default());
    let observers = tls::Observers { metrics: Some(metrics.clone()), refusals: Some(refusals.clone()) };
    let limits = config.overload.connections;
    let grpc_table = Table::new("grpc", limits.listener, metrics.listeners.clone());
    let (incoming, accept) =
        tls::incoming_observed(listeners.grpc, tls.clone(), grpc_table, limits, observers, stopping());
    let limiter = Arc::new(RateLimiter::new(&config.overload.rates, metrics.limits.clone()));
    let parts = grpc::Parts {
        authenticator: authenticator.clone(),
        refusals: refusals.clone(),
        limiter: limiter.clone(),
        metrics: metrics.clone(),
        registry: registry.clone(),
        store: store.clone(),
        crls: crls.clone(),
        tokens: tokens.clone(),
        max_connection_age: config.max_connection_age,
    };
    let (reporter, grpc) = grpc::serve(parts, incoming, stopping())?;
    let grpc = tokio::spawn(grpc);
    let meters = metrics.listeners.clone();
    let scrape = Scrape {
        metrics,
        readiness: readiness.clone(),
        ca: ca.clone(),
        server_cert: server_cert.clone(),
        crls: crls.clone(),
    };
    let http = tokio::spawn(crate::health::serve(
        listeners.health,
        readiness.clone(),
        crate::metrics::routes(Arc::new(scrape)),
        meters.clone(),
        stopping(),
    ));
    let pki = tokio::spawn(crate::listener::http::serve(
        listeners.pki,
        Table::new("pki", listener::Limits::PKI, meters.clone()),
        HttpOptions { tls: None, keep_alive: true },
        crate::revocation::http::routes(crls.clone(), ocsp),
        stopping(),
    ));
    let grpc_health = tokio::spawn(follow_readiness(readiness, reporter, shutdown_rx.clone()));
    let refused = tokio::spawn(record_refusals(
        refusals,
        store.clone(),
        recorder,
        config.accountability.audit_refusals_every,
        shutdown_rx.clone(),
    ));
    let checkpoints = checkpoint_writer
        .map(|writer| tokio::spawn(writer.run(config.accountability.audit_checkpoint_every, shutdown_rx.clone())));

    // Background work that holds nothing to flush: stopped together at shutdown.
    let mut background = JoinSet::new();
    background.spawn(probe);
    background.spawn(rotate_server_certificate(server_cert, shutdown_rx.clone()));
    background.spawn(keeper.run(shutdown_rx.clone()));
    background.spawn(
        crate::auth::RevocationFollower::new(store.clone(), authenticator.clone(), config.revocation_poll).run(),
    );
    background.spawn(finish_sweeps(registry, shutdown_rx.clone()));
    background.spawn(forget_idle_limits(limiter.clone(), shutdown_rx.clone()));
    background.spawn(crls.clone().run(shutdown_rx.clone()));
    if let Some(tokens) = &tokens {
        background.spawn(tokens.keys.clone().run(shutdown_rx.clone()));
        if let Some(listener) = listeners.oauth {
            background.spawn(crate::access_token::http::serve(
                listener,
                Table::new("oauth", listener::Limits::OAUTH, meters),
                tls,
                tokens.clone(),
                authenticator,
                Some(limiter),
                stopping(),
            ));
        }
    }

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
        background.shutdown().await;
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
    let oauth_addr = listeners.oauth_addr;
    Ok(Running { grpc_addr, health_addr, pki_addr, oauth_addr, bootstrapped_profile, shutdown, task })
}

/// Resolves once shutdown was requested.
async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
