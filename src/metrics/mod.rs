//! Prometheus metrics: one [`Metrics`] created at start and handed to each layer that counts something (RPCs, the auth
//! layer and its cache, the store, the TLS accept loop, the revocation follower), served as text on the health
//! listener at `/metrics`.
//!
//! Labels are bounded sets (method names from the API, status codes, fixed reasons and operation names); principal
//! ids, serials and addresses never become labels.

pub mod grpc;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds: 0.5 ms to 10 s.
const SECONDS_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: &'static str,
}

type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The checkpoint writer's counters (`principald_audit_checkpoints{outcome}`).
#[derive(Clone, Debug, Default)]
pub struct CheckpointMeters {
    pub written: Counter,
    pub failed: Counter,
}

/// Every metric principald exports.
pub struct Metrics {
    registry: Registry,
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_seconds: Family<MethodLabels, Histogram>,
    pub auth_outcomes: Family<OutcomeLabels, Counter>,
    pub auth_cache: Family<OutcomeLabels, Counter>,
    pub store_seconds: Family<OperationLabels, Histogram>,
    pub store_errors: Family<OperationLabels, Counter>,
    pub certificates: Family<EventLabels, Counter>,
    pub tokens_issued: Counter,
    /// Connections of every listener (open, accepted, shed, refused).
    pub listeners: crate::listener::Meters,
    /// Requests refused by rate limits.
    pub limits: crate::ratelimit::LimitMeters,
    /// Store operations refused because too many were in flight.
    pub store_shed: Counter,
    pub handshake_failures: Family<ReasonLabels, Counter>,
    /// Audit checkpoints written outside the store, and writes that failed.
    pub checkpoints: CheckpointMeters,
    ready: Gauge,
    signer_ready: Gauge,
    epoch_age: Seconds,
    expiry: Family<CertificateLabels, Seconds>,
    /// Seconds until the soonest nextUpdate of the CRLs this replica serves.
    crl_next_update: Seconds,
    /// Unix milliseconds of the last successful revocation-epoch read (0: none yet).
    epoch_read_at: AtomicI64,
    /// Handles of the series every request touches, resolved once (a family lookup takes a lock and a hash).
    auth_ok: Counter,
    cache_hit: Counter,
    cache_miss: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("principald");
        let histogram = || Histogram::new(SECONDS_BUCKETS);
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_seconds = Family::<MethodLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let auth_outcomes = Family::<OutcomeLabels, Counter>::default();
        let auth_cache = Family::<OutcomeLabels, Counter>::default();
        let store_seconds = Family::<OperationLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let store_errors = Family::<OperationLabels, Counter>::default();
        let certificates = Family::<EventLabels, Counter>::default();
        let tokens_issued = Counter::default();
        let listeners = crate::listener::Meters::default();
        let limits = crate::ratelimit::LimitMeters::default();
        let store_shed = Counter::default();
        let handshake_failures = Family::<ReasonLabels, Counter>::default();
        let checkpoint_outcomes = Family::<OutcomeLabels, Counter>::default();
        // One statement each: a family's guard held while taking another would deadlock.
        let written = checkpoint_outcomes.get_or_create(&OutcomeLabels { outcome: "written" }).clone();
        let failed = checkpoint_outcomes.get_or_create(&OutcomeLabels { outcome: "failed" }).clone();
        let checkpoints = CheckpointMeters { written, failed };
        let ready = Gauge::default();
        let signer_ready = Gauge::default();
        let epoch_age = Seconds::default();
        let expiry = Family::<CertificateLabels, Seconds>::default();
        let crl_next_update = Seconds::default();
        registry.register("rpc_requests", "gRPC requests by method and status code", rpc_requests.clone());
        registry.register("rpc_duration_seconds", "gRPC request latency by method", rpc_seconds.clone());
        registry.register("auth_requests", "authentication outcomes by reason", auth_outcomes.clone());
        registry.register("auth_cache", "authentication cache hits, misses and evictions", auth_cache.clone());
        registry.register("store_operation_duration_seconds", "store call latency by operation", store_seconds.clone());
        registry.register("store_operation_errors", "store calls that failed, by operation", store_errors.clone());
        registry.register("certificates", "certificates issued, renewed and revoked", certificates.clone());
        registry.register(
            "tokens_issued",
            "access tokens issued (IssueToken and the token endpoint)",
            tokens_issued.clone(),
        );
        listeners.register(&mut registry);
        limits.register(&mut registry);
        registry.register(
            "store_operations_shed",
            "store operations refused at once (UNAVAILABLE) because --store-max-in-flight were in flight",
            store_shed.clone(),
        );
        registry.register("tls_handshake_failures", "failed TLS handshakes by reason", handshake_failures.clone());
        registry.register(
            "audit_checkpoints",
            "signed audit checkpoints written outside the store (--audit-checkpoints), and writes that failed",
            checkpoint_outcomes,
        );
        registry.register(
            "ready",
            "1 when the readiness probe passes (store reachable, certificates unexpired), 0 when /readyz answers 503",
            ready.clone(),
        );
        registry.register(
            "signer_ready",
            "1 when the CA root key and the issuing intermediate passed their last self-test (--signer-check-every)",
            signer_ready.clone(),
        );
        registry.register(
            "revocation_epoch_age_seconds",
            "seconds since this replica last read the revocation epoch (how stale its view of revocations may be)",
            epoch_age.clone(),
        );
        registry.register(
            "certificate_expiry_seconds",
            "seconds until the CA, the issuing intermediate and the server certificate expire",
            expiry.clone(),
        );
        registry.register(
            "crl_next_update_seconds",
            "seconds until the soonest nextUpdate of the CRLs this replica serves (negative: a relying party refuses it)",
            crl_next_update.clone(),
        );
        // Series that alerts and rate() expect to exist before the first event: created at zero.
        for outcome in ["hit", "miss", "eviction"] {
            drop(auth_cache.get_or_create(&OutcomeLabels { outcome }));
        }
        for outcome in ["ok", "permission_denied", "store_unavailable"] {
            drop(auth_outcomes.get_or_create(&OutcomeLabels { outcome }));
        }
        for event in ["issued", "renewed", "revoked"] {
            drop(certificates.get_or_create(&EventLabels { event }));
        }
        for reason in ["bad_certificate", "protocol", "closed", "timeout"] {
            drop(handshake_failures.get_or_create(&ReasonLabels { reason }));
        }
        for operation in ["ping", "revocation_epoch", "get_principal", "get_certificate", "insert_certificate"] {
            drop(store_errors.get_or_create(&OperationLabels { operation }));
        }
        let auth_ok = auth_outcomes.get_or_create(&OutcomeLabels { outcome: "ok" }).clone();
        let cache_hit = auth_cache.get_or_create(&OutcomeLabels { outcome: "hit" }).clone();
        let cache_miss = auth_cache.get_or_create(&OutcomeLabels { outcome: "miss" }).clone();
        Arc::new(Self {
            auth_ok,
            cache_hit,
            cache_miss,
            registry,
            rpc_requests,
            rpc_seconds,
            auth_outcomes,
            auth_cache,
            store_seconds,
            store_errors,
            certificates,
            tokens_issued,
            listeners,
            limits,
            store_shed,
            handshake_failures,
            checkpoints,
            ready,
            signer_ready,
            epoch_age,
            expiry,
            crl_next_update,
            epoch_read_at: AtomicI64::new(0),
        })
    }

    /// The follower read the revocation epoch just now.
    pub fn epoch_read(&self) {
        self.epoch_read_at.store(crate::audit::now_ms(), Ordering::Relaxed);
    }

    pub fn auth(&self, outcome: &'static str) {
        match outcome {
            "ok" => drop(self.auth_ok.inc()),
            _ => drop(self.auth_outcomes.get_or_create(&OutcomeLabels { outcome }).inc()),
        }
    }

    pub fn cache(&self, outcome: &'static str) {
        match outcome {
            "hit" => drop(self.cache_hit.inc()),
            "miss" => drop(self.cache_miss.inc()),
            _ => drop(self.auth_cache.get_or_create(&OutcomeLabels { outcome }).inc()),
        }
    }

    pub fn certificate(&self, event: &'static str, n: u64) {
        self.certificates.get_or_create(&EventLabels { event }).inc_by(n);
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The exposition text, with the gauges that are read at scrape time set first: readiness and `expiries`
    /// (certificate, seconds left).
    pub fn render(
        &self,
        (ready, signer_ready): (bool, bool),
        expiries: &[(&'static str, f64)],
        crl_next_update: Option<f64>,
    ) -> String {
        self.crl_next_update.set(crl_next_update.unwrap_or(f64::INFINITY));
        self.ready.set(i64::from(ready));
        self.signer_ready.set(i64::from(signer_ready));
        let read_at = self.epoch_read_at.load(Ordering::Relaxed);
        let age = if read_at == 0 { f64::INFINITY } else { (crate::audit::now_ms() - read_at) as f64 / 1000.0 };
        self.epoch_age.set(age);
        for (certificate, seconds) in expiries {
            self.expiry.get_or_create(&CertificateLabels { certificate }).set(*seconds);
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::warn!("cannot encode metrics");
        }
        text
    }
}

/// What `/metrics` needs besides the counters: the certificates whose expiry it reports.
pub struct Scrape {
    pub metrics: Arc<Metrics>,
    pub readiness: crate::health::Readiness,
    pub ca: Arc<crate::pki::ca::CertificateAuthority>,
    pub server_cert: Arc<crate::server_cert::ServerCertificate>,
    pub crls: Arc<crate::revocation::CrlPublisher>,
}

/// `GET /metrics` for the health listener (Prometheus text format 0.0.4 / OpenMetrics text).
pub fn routes(scrape: Arc<Scrape>) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(serve)).with_state(scrape)
}

async fn serve(axum::extract::State(scrape): axum::extract::State<Arc<Scrape>>) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let now = crate::model::now();
    let left = |t: time::OffsetDateTime| (t - now).as_seconds_f64();
    let expiries = [
        ("ca", left(scrape.ca.not_after())),
        ("issuing", left(scrape.ca.issuing().not_after)),
        ("server", left(scrape.server_cert.not_after())),
    ];
    let crl = scrape.crls.all().iter().map(|c| left(c.crl.next_update)).reduce(f64::min);
    let body = scrape.metrics.render((scrape.readiness.is_ready(), scrape.readiness.signer_ready()), &expiries, crl);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
