//! Plain-HTTP health for load balancers, on its own port: `GET /healthz` (the process is alive) and `GET /readyz`
//! (the store answers, the CA and the server certificate are unexpired: 200, otherwise 503).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::pki::ca::CertificateAuthority;
use crate::server_cert::ServerCertificate;
use crate::store::Store;

const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Probes {
    store: Arc<dyn Store>,
    ca: Arc<CertificateAuthority>,
    server_cert: Arc<ServerCertificate>,
}

/// Serves the health endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    ca: Arc<CertificateAuthority>,
    server_cert: Arc<ServerCertificate>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Probes { store, ca, server_cert });
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::warn!(%error, "health listener stopped");
    }
}

async fn ready(State(probes): State<Probes>) -> (StatusCode, &'static str) {
    let now = crate::model::now();
    if probes.ca.not_after() <= now {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: CA certificate expired\n");
    }
    if probes.server_cert.not_after() <= now {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: server certificate expired\n");
    }
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, probes.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: store unreachable\n")
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: store timed out\n"),
    }
}
