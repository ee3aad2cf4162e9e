//! The agent's metrics, served at `/metrics` on its optional health listener, and its readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::state::Snapshot;

pub struct AgentMetrics {
    registry: Registry,
    /// SVIDs sent to workloads (each X.509-SVID in each stream message, each JWT-SVID).
    pub svids_served: Counter,
    /// X.509-SVIDs obtained from principald (first ones and replacements).
    pub rotations: Counter,
    /// Rounds with principald that failed.
    pub sync_failures: Counter,
    /// Calls refused because the caller matched no entry.
    pub attestation_refusals: Counter,
    pub entries: Gauge,
    connected: Gauge,
    oldest_expiry: Gauge<f64, std::sync::atomic::AtomicU64>,
    node_expiry: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Unix time the node certificate expires (0: unknown).
    node_not_after: AtomicI64,
}

impl AgentMetrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("principald_agent");
        let m = Self {
            svids_served: Counter::default(),
            rotations: Counter::default(),
            sync_failures: Counter::default(),
            attestation_refusals: Counter::default(),
            entries: Gauge::default(),
            connected: Gauge::default(),
            oldest_expiry: Gauge::default(),
            node_expiry: Gauge::default(),
            node_not_after: AtomicI64::new(0),
            registry: Registry::default(),
        };
        registry.register("svids_served", "SVIDs sent to workloads", m.svids_served.clone());
        registry.register("rotations", "X.509-SVIDs obtained from principald", m.rotations.clone());
        registry.register("sync_failures", "Rounds with principald that failed", m.sync_failures.clone());
        registry.register(
            "attestation_refusals",
            "Workload API and SDS calls from processes that match no entry",
            m.attestation_refusals.clone(),
        );
        registry.register("entries", "Workload entries of this node", m.entries.clone());
        registry.register("connected", "1 while the last round with principald succeeded", m.connected.clone());
        registry.register(
            "oldest_svid_expiry_seconds",
            "Seconds until the soonest-expiring X.509-SVID served expires",
            m.oldest_expiry.clone(),
        );
        registry.register(
            "node_certificate_expiry_seconds",
            "Seconds until the node's certificate expires",
            m.node_expiry.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    pub fn connected(&self) -> bool {
        self.connected.get() == 1
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    pub fn set_node_not_after(&self, unix: i64) {
        self.node_not_after.store(unix, Ordering::Relaxed);
    }

    /// Seconds until the node's certificate expires (negative once it has).
    pub fn node_seconds_left(&self) -> Option<i64> {
        match self.node_not_after.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t - crate::model::now().unix_timestamp()),
        }
    }

    /// The metrics as Prometheus text, with the gauges read from `snapshot` now.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let now = crate::model::now();
        let oldest = snapshot.svids.values().map(|s| (s.not_after - now).as_seconds_f64()).reduce(f64::min);
        self.oldest_expiry.set(oldest.unwrap_or(f64::INFINITY));
        self.node_expiry.set(self.node_seconds_left().map_or(f64::INFINITY, |s| s as f64));
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::warn!("cannot encode metrics");
        }
        text
    }
}
