//! The server's background tasks: each runs until shutdown is signalled.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::warn;

use super::{PRINCIPAL_SERVICE, wait_for};
use crate::audit::Recorder;
use crate::audit::refusals::Refusals;
use crate::health::Readiness;
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;
use crate::server_cert::ServerCertificate;

/// How often pending certificate sweeps are looked for.
const SWEEP_CHECK: Duration = Duration::from_secs(30);

/// How often the server certificate is checked for renewal.
const SERVER_CERT_CHECK: Duration = Duration::from_secs(6 * 3600);

/// Re-issues the server certificate from the CA when a third of its lifetime remains; new handshakes use it at once.
pub(super) async fn rotate_server_certificate(cert: Arc<ServerCertificate>, shutdown: watch::Receiver<bool>) {
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

/// Finishes certificate sweeps that an interrupted deletion or key-compromise revocation left behind (by any replica).
pub(super) async fn finish_sweeps(registry: Arc<Registry>, shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(error) = registry.finish_sweeps().await {
            tracing::debug!(%error, "cannot finish pending sweeps; will retry");
        }
        tokio::select! {
            _ = wait_for(shutdown.clone()) => return,
            _ = tokio::time::sleep(SWEEP_CHECK) => {}
        }
    }
}

/// Refusal events kept for the next attempt when the store would not take them (an outage of the store is when
/// floods matter most); beyond this the oldest are dropped, and the log says how many.
const MAX_PENDING_REFUSALS: usize = 4096;

/// Writes the refused requests counted by the auth layer to the audit log, one event per source address and reason
/// and interval (and once more at shutdown). Events the store refused are written with the next interval's.
pub(super) async fn record_refusals(
    refusals: Arc<Refusals>,
    store: Arc<dyn crate::store::Store>,
    recorder: Recorder,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let mut pending = Vec::new();
    loop {
        let stopping = tokio::select! {
            _ = wait_for(shutdown.clone()) => true,
            _ = tokio::time::sleep(every) => false,
        };
        pending.extend(refusals.drain(&recorder, every.as_secs()));
        if pending.len() > MAX_PENDING_REFUSALS {
            let dropped = pending.len() - MAX_PENDING_REFUSALS;
            pending.drain(..dropped);
            warn!(dropped, "refused-request events dropped: the audit log has not taken them for too long");
        }
        // One event per write, so a failure part-way keeps exactly the events not written (no duplicates on retry).
        let mut written = 0;
        for event in &pending {
            if let Err(error) = store.append_audit(std::slice::from_ref(event)).await {
                warn!(%error, events = pending.len() - written, "cannot record refused requests in the audit log; will retry");
                break;
            }
            written += 1;
        }
        pending.drain(..written);
        if stopping {
            return;
        }
    }
}

/// Mirrors the readiness verdict into gRPC health, so gRPC-aware balancers see what `/readyz` says.
pub(super) async fn follow_readiness(
    mut readiness: Readiness,
    reporter: HealthReporter,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        let status = if readiness.is_ready() { ServingStatus::Serving } else { ServingStatus::NotServing };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(PRINCIPAL_SERVICE, status).await;
        tokio::select! {
            _ = wait_for(shutdown.clone()) => break,
            changed = readiness.changed() => if !changed { break },
        }
    }
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_service_status(PRINCIPAL_SERVICE, ServingStatus::NotServing).await;
}

/// How often rate-limit state of principals and sources that went quiet is dropped.
const FORGET_IDLE_LIMITS: Duration = Duration::from_secs(60);

/// Drops the rate-limit state of keys whose buckets are full again, so memory follows the active callers.
pub(super) async fn forget_idle_limits(limiter: Arc<RateLimiter>, shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = wait_for(shutdown.clone()) => return,
            _ = tokio::time::sleep(FORGET_IDLE_LIMITS) => limiter.forget_idle(),
        }
    }
}
