//! Plain-HTTP health for load balancers, on its own port: `GET /healthz` (the process is alive) and `GET /readyz`
//! (the store answers, the CA and the server certificate are unexpired: 200, otherwise 503). The same listener
//! serves what relying parties and monitoring fetch without credentials (CRLs, metrics), routed by their modules.
//!
//! The listener is exposed to whoever reaches the port, so it defends itself: a cap on open connections (beyond it a
//! new connection is closed at once), a deadline for reading request headers (slowloris), one request per connection
//! and a hard per-connection deadline.
//!
//! Readiness is decided by one background probe ([`Readiness`], once a second, whatever the request rate): `/readyz`
//! and gRPC health both answer from its latest verdict, so polling either never queues behind store writes and never
//! becomes a (billed) store read per request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::pki::ca::CertificateAuthority;
use crate::server_cert::ServerCertificate;
use crate::store::Store;

const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the readiness probe runs, whatever the request rate.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Open connections at once on the health port.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest any connection may stay open.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// A readiness verdict: 200 with "ready", or 503 with the reason.
type Verdict = (StatusCode, &'static str);

/// The latest verdict of the readiness probe. Cheap to clone; every clone sees the same probe.
#[derive(Clone)]
pub struct Readiness {
    verdict: watch::Receiver<Verdict>,
}

impl Readiness {
    /// Runs the first check, then starts the probe that refreshes it every second until every `Readiness` is gone
    /// (or the returned task is aborted).
    pub async fn start(
        store: Arc<dyn Store>,
        ca: Arc<CertificateAuthority>,
        server_cert: Arc<ServerCertificate>,
    ) -> (Self, JoinHandle<()>) {
        let first = check(store.as_ref(), &ca, &server_cert).await;
        let (tx, verdict) = watch::channel(first);
        (Self { verdict }, tokio::spawn(probe(store, ca, server_cert, tx)))
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

/// Serves the health endpoints, and `routes` (CRLs, metrics) beside them, on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    routes: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness.verdict)
        .merge(routes);
    tokio::select! {
        _ = shutdown => {}
        _ = accept_loop(listener, app) => {}
    }
}

/// Serves `routes` alone on `listener` (the PKI listener) with the same caps and deadlines, until `shutdown`.
pub async fn serve_routes(listener: TcpListener, routes: Router, shutdown: impl Future<Output = ()> + Send + 'static) {
    tokio::select! {
        _ = shutdown => {}
        _ = accept_loop(listener, routes) => {}
    }
}

async fn accept_loop(listener: TcpListener, app: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "health accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the cap: close at once and keep accepting.
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, connection).await;
        });
    }
}

async fn ready(State(verdict): State<watch::Receiver<Verdict>>) -> Verdict {
    *verdict.borrow()
}

/// Refreshes the readiness verdict every [`PROBE_INTERVAL`] until no receiver is left; logs only changes.
async fn probe(
    store: Arc<dyn Store>,
    ca: Arc<CertificateAuthority>,
    server_cert: Arc<ServerCertificate>,
    verdict: watch::Sender<Verdict>,
) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let next = check(store.as_ref(), &ca, &server_cert).await;
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

async fn check(store: &dyn Store, ca: &CertificateAuthority, server_cert: &ServerCertificate) -> Verdict {
    let now = crate::model::now();
    if ca.not_after() <= now {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: CA certificate expired\n");
    }
    if server_cert.not_after() <= now {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: server certificate expired\n");
    }
    if ca.issuing().not_after <= now {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: issuing intermediate expired (the CA key is unreachable)\n",
        );
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
