//! The gRPC listener's server: PrincipalService, gRPC health and reflection behind the metrics, oversize and auth
//! layers, with the bounds one client may hold open.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tonic_health::server::HealthReporter;

use crate::access_token::TokenIssuer;
use crate::audit::refusals::Refusals;
use crate::auth::{AuthLayer, Authenticator, MethodPolicy};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::metrics::grpc::MetricsLayer;
use crate::proto;
use crate::proto::principal_service_server::PrincipalServiceServer;
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;
use crate::revocation::CrlPublisher;
use crate::service::PrincipalApi;
use crate::service::audit_reader::AuditReader;
use crate::store::Store;

/// Concurrent RPCs (streams, health Watch included) per HTTP/2 connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Largest request message accepted: our largest real one is a CSR of at most `pki::csr::MAX_CSR_BYTES` (16 KiB)
/// plus a few fields; tonic's default would be 4 MiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest HTTP/2 header list accepted from a client.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Longest an RPC may run.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// What the gRPC server serves and checks with.
pub(super) struct Parts {
    pub authenticator: Arc<Authenticator>,
    pub refusals: Arc<Refusals>,
    pub limiter: Arc<RateLimiter>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub crls: Arc<CrlPublisher>,
    pub tokens: Option<Arc<TokenIssuer>>,
    pub max_connection_age: Duration,
}

/// The server over `incoming` until `shutdown`, and the reporter of its gRPC health.
pub(super) fn serve(
    parts: Parts,
    incoming: ReceiverStream<crate::tls::Conn>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(HealthReporter, impl Future<Output = std::result::Result<(), tonic::transport::Error>>)> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::internal("reflection", e))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::internal("reflection", e))?;
    let policy = MethodPolicy::principald();
    let rpc_metrics = MetricsLayer::new(parts.metrics, &policy.method_paths());
    let api = PrincipalApi::new(parts.registry, AuditReader::new(parts.store), parts.crls).with_tokens(parts.tokens);
    let server = tonic::transport::Server::builder()
        // Bounds on what one client can hold open; RPCs that outlive the timeout are cancelled, never left hanging.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(parts.max_connection_age)
        .max_connection_age_grace(RPC_TIMEOUT)
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
        .timeout(RPC_TIMEOUT)
        .layer(rpc_metrics)
        .layer(crate::oversize::OversizeLayer::new(MAX_REQUEST_BYTES))
        .layer(
            AuthLayer::new(parts.authenticator, policy)
                .counting_refusals(parts.refusals)
                .with_rate_limits(parts.limiter),
        )
        .add_service(PrincipalServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(health_service.max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(reflection_v1.max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(reflection_v1alpha.max_decoding_message_size(MAX_REQUEST_BYTES))
        .serve_with_incoming_shutdown(incoming, shutdown);
    Ok((reporter, server))
}
