//! Plain-HTTP health for load balancers, on its own port: `GET /healthz` (the process is alive) and `GET /readyz`
//! (the store answers, the CA and the server certificate are unexpired, the CA's keys passed their last self-test:
//! 200, otherwise 503). The same listener
//! serves what relying parties and monitoring fetch without credentials (CRLs, metrics), routed by their modules.
//!
//! The listener is exposed to whoever reaches the port, so it defends itself with the one accept machinery
//! ([`crate::listener`], limits [`Limits::HEALTH`]): a cap on open connections beyond which the connection idle the
//! longest is shed (so a probe always gets a slot, whatever a slowloris holds), a deadline for request headers that
//! shortens under pressure, one request per connection and a hard per-connection deadline.
//!
//! Readiness is decided by one background probe ([`Readiness`], once a second, whatever the request rate): `/readyz`
//! and gRPC health both answer from its latest verdict, so polling either never queues behind store writes and never
//! becomes a (billed) store read per request. The CA's keys are self-tested by a slower task of their own
//! ([`signer`]), whose last result the probe reads.

mod signer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::listener::http::HttpOptions;
use crate::listener::{Limits, Meters, Table};
use crate::pki::ca::CertificateAuthority;
use crate::server_cert::ServerCertificate;
use crate::store::Store;
pub use signer::SignerCheck;

const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the readiness probe runs, whatever the request rate.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A readiness verdict: 200 with "ready", or 503 with the reason.
type Verdict = (StatusCode, &'static str);

/// The latest verdict of the readiness probe. Cheap to clone; every clone sees the same probe.
#[derive(Clone)]
pub struct Readiness {
    verdict: watch::Receiver<Verdict>,
    signer: SignerCheck,
}

impl Readiness {
    /// Runs the first check; the returned future is the probe that refreshes it every second, with the self-test of the CA's
    /// keys every `signer_check_every`, until every `Readiness` is gone: spawn it (and abort it to stop early).
    pub async fn start(
        store: Arc<dyn Store>,
        ca: Arc<CertificateAuthority>,
        server_cert: Arc<ServerCertificate>,
        signer_check_every: Duration,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (signer, self_tests) = SignerCheck::start(ca.clone(), signer_check_every);
        let first = check(store.as_ref(), &ca, &server_cert, &signer).await;
        let (tx, verdict) = watch::channel(first);
        let probe = probe(store, ca, server_cert, signer.clone(), tx);
        let task = async move {
            tokio::join!(probe, self_tests);
        };
        (Self { verdict, signer }, task)
    }

    /// Whether the CA's keys passed their last self-test, and it is recent (`principald_signer_ready`).
    pub fn signer_ready(&self) -> bool {
        self.signer.failure().is_none()
    }

    /// Whether the latest verdict is "ready".
    pub fn is_ready(&self) -> bool {
        self.verdict.borrow().0 == StatusCode::OK
    }

    /// Waits until the verdict changes from ready to not ready or back; `false` once the probe has stopped.
    pub async fn changed(&mut self) -> bool {
        let was = self.is_ready();
        loop {
            if self.verdict.changed().await.is_err() {
                return false;
            }
            if self.is_ready() != was {
                return true;
            }
        }
    }
}

/// Serves the health endpoints, and `routes` (metrics) beside them, on `listener` until `shutdown` resolves,
/// counting connections into `meters`.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    routes: Router,
    meters: Meters,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness.verdict)
        .merge(routes);
    let table = Table::new("health", Limits::HEALTH, meters);
    let options = HttpOptions { tls: None, keep_alive: false };
    crate::listener::http::serve(listener, table, options, app, shutdown).await;
}

async fn ready(State(verdict): State<watch::Receiver<Verdict>>) -> Verdict {
    *verdict.borrow()
}

/// Refreshes the readiness verdict every [`PROBE_INTERVAL`] until no receiver is left; logs only changes.
async fn probe(
    store: Arc<dyn Store>,
    ca: Arc<CertificateAuthority>,
    server_cert: Arc<ServerCertificate>,
    signer: SignerCheck,
    verdict: watch::Sender<Verdict>,
) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let next = check(store.as_ref(), &ca, &server_cert, &signer).await;
        let previous = *verdict.borrow();
        if next != previous {
            match next.0 {
                StatusCode::OK => tracing::info!("ready again"),
                _ => tracing::warn!(reason = next.1.trim_end(), "not ready"),
            }
        }
        if verdict.send(next).is_err() {
            return;
        }
    }
}

async fn check(
    store: &dyn Store,
    ca: &CertificateAuthority,
    server_cert: &ServerCertificate,
    signer: &SignerCheck,
) -> Verdict {
    let now = crate::model::now();
    if ca.not_after() <= now {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: CA certificate expired\n");
    }
    if server_cert.not_after() <= now {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: server certificate expired\n");
    }
    let issuing = ca.issuing();
    if issuing.signs_until.unwrap_or(issuing.not_after) <= now {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the issuing intermediate reached the end of its signing window and could not be replaced (the CA key is unreachable)\n",
        );
    }
    if let Some(reason) = signer.failure() {
        return (StatusCode::SERVICE_UNAVAILABLE, reason);
    }
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n"),
        Ok(Err(error)) => {
            tracing::debug!(%error, "readiness: store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: store unreachable\n")
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: store timed out\n"),
    }
}
