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
    /// Method names the API defines, leaked once at start so labels are `&'static str`, with the handles of their
    /// latency histogram and their OK counter resolved once (the per-request path then takes no family lock).
    methods: Arc<Vec<Method>>,
}

struct Method {
    name: &'static str,
    seconds: prometheus_client::metrics::histogram::Histogram,
    ok: prometheus_client::metrics::counter::Counter,
}

impl MetricsLayer {
    /// `methods`: the paths (`/service/Method`) to report by name (as `service/Method`).
    pub fn new(metrics: Arc<Metrics>, methods: &[String]) -> Self {
        let methods = methods
            .iter()
            .map(|m| {
                let name: &'static str = Box::leak(m.trim_start_matches('/').to_owned().into_boxed_str());
                Method {
                    name,
                    seconds: metrics.rpc_seconds.get_or_create(&MethodLabels { method: name }).clone(),
                    ok: metrics.rpc_requests.get_or_create(&RpcLabels { method: name, code: "OK" }).clone(),
                }
            })
            .collect();
        Self { metrics, methods: Arc::new(methods) }
    }

    /// The method's label and, for the API's own methods, the index of their resolved handles.
    fn method(&self, path: &str) -> (&'static str, Option<usize>) {
        let name = path.strip_prefix('/').unwrap_or(path);
        if let Some(index) = self.methods.iter().position(|m| m.name == name) {
            return (self.methods[index].name, Some(index));
        }
        let service = name.rsplit_once('/').map(|(s, _)| s);
        match service.and_then(|s| KNOWN_SERVICES.iter().find(|k| **k == s)) {
            Some(known) => (known, None),
            None => ("unknown", None),
        }
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
        let (method, index) = self.layer.method(request.uri().path());
        let (metrics, methods) = (self.layer.metrics.clone(), self.layer.methods.clone());
        let started = Instant::now();
        Box::pin(async move {
            let response = inner.call(request).await?;
            let mut done = Done { metrics, methods, index, method, started, recorded: false };
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
    methods: Arc<Vec<Method>>,
    index: Option<usize>,
    method: &'static str,
    started: Instant,
    recorded: bool,
}

impl Done {
    fn record(&mut self, code: &'static str) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        match self.index.map(|i| &self.methods[i]) {
            Some(m) if code == "OK" => {
                m.seconds.observe(seconds);
                m.ok.inc();
            }
            Some(m) => {
                m.seconds.observe(seconds);
                self.metrics.rpc_requests.get_or_create(&RpcLabels { method: self.method, code }).inc();
            }
            None => {
                self.metrics.rpc_requests.get_or_create(&RpcLabels { method: self.method, code }).inc();
                self.metrics.rpc_seconds.get_or_create(&MethodLabels { method: self.method }).observe(seconds);
            }
        }
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
