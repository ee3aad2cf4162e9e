//! A tower layer counting every gRPC request by method and status code and timing it, for any tonic server. The
//! status is read where gRPC puts it: the response headers for trailers-only answers (every refusal), else the
//! trailers at the end of the body; a body dropped before its end (client gone, deadline) counts as CANCELLED.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tower::{Layer, Service};

use super::{MethodLabels, Metrics, RpcLabels};

/// Methods reported by name; any other path is "unknown" (so a client cannot create label values).
const KNOWN_SERVICES: [&str; 4] = [
    "principal.v1.PrincipalService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
    /// Method names the API defines, leaked once at start so labels are `&'static str`.
    methods: Arc<Vec<&'static str>>,
}

impl MetricsLayer {
    /// `methods`: the paths (`/service/Method`) to report by name (as `service/Method`).
    pub fn new(metrics: Arc<Metrics>, methods: &[String]) -> Self {
        let methods =
            methods.iter().map(|m| &*Box::leak(m.trim_start_matches('/').to_owned().into_boxed_str())).collect();
        Self { metrics, methods: Arc::new(methods) }
    }

    fn method(&self, path: &str) -> &'static str {
        let name = path.strip_prefix('/').unwrap_or(path);
        self.methods.iter().find(|m| **m == name).copied().unwrap_or_else(|| {
            let service = path.strip_prefix('/').and_then(|p| p.rsplit_once('/')).map(|(s, _)| s);
            match service.and_then(|s| KNOWN_SERVICES.iter().find(|k| **k == s)) {
                Some(known) => known,
                None => "unknown",
            }
        })
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S, B> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = self.layer.method(request.uri().path());
        let metrics = self.layer.metrics.clone();
        let started = Instant::now();
        Box::pin(async move {
            let response = inner.call(request).await?;
            let mut done = Done { metrics, method, started, recorded: false };
            if let Some(code) = grpc_code(response.headers()) {
                done.record(code);
                return Ok(response);
            }
            Ok(response.map(|body| Body::new(Counted { inner: body, done })))
        })
    }
}

/// Records the request once: when its status is known, or as CANCELLED if the body is dropped first.
struct Done {
    metrics: Arc<Metrics>,
    method: &'static str,
    started: Instant,
    recorded: bool,
}

impl Done {
    fn record(&mut self, code: &'static str) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        self.metrics.rpc_requests.get_or_create(&RpcLabels { method: self.method, code }).inc();
        self.metrics
            .rpc_seconds
            .get_or_create(&MethodLabels { method: self.method })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.record("CANCELLED");
    }
}

struct Counted {
    inner: Body,
    done: Done,
}

impl HttpBody for Counted {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    self.done.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.done.record("INTERNAL"),
            Poll::Ready(None) => self.done.record("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The `grpc-status` of a header map, as the code's name.
fn grpc_code(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(match tonic::Code::from_i32(value) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    })
}
