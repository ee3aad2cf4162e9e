//! The agent's optional plain-HTTP listener: `/healthz` (the process runs), `/readyz` (it can serve: entries and
//! bundle read from principald at least once, and the node certificate unexpired; the body says what it knows) and
//! `/metrics`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use super::metrics::AgentMetrics;
use super::state::Snapshot;

#[derive(Clone)]
pub struct HealthState {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub metrics: Arc<AgentMetrics>,
    pub dir: PathBuf,
}

pub fn routes(state: HealthState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn refresh_node_expiry(state: &HealthState) {
    let not_after = crate::client::Profile::load(&state.dir)
        .ok()
        .and_then(|p| crate::client::keys::validity_of(&p.cert_path()).ok())
        .map_or(0, |(_, not_after)| not_after.unix_timestamp());
    state.metrics.set_node_not_after(not_after);
}

async fn ready(State(state): State<HealthState>) -> impl IntoResponse {
    refresh_node_expiry(&state);
    let snapshot = state.snapshot.borrow().clone();
    let node_left = state.metrics.node_seconds_left();
    let connected = state.metrics.connected();
    let ready = snapshot.loaded && node_left.is_some_and(|s| s > 0);
    let body = serde_json::json!({
        "ready": ready,
        "connected": connected,
        "entries": snapshot.entries.len(),
        "svids": snapshot.svids.len(),
        "node_certificate_seconds_left": node_left,
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body))
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    refresh_node_expiry(&state);
    let snapshot = state.snapshot.borrow().clone();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&snapshot))
}
