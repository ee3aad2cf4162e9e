//! A tower layer that authenticates and authorizes every gRPC request of any tonic server, and the extractor
//! handlers use to get the [`Caller`]. Requests reach the wrapped service only when both checks pass.
//!
//! ```ignore
//! let auth = AuthLayer::new(authenticator, MethodPolicy::new().allow_method("my.v1.Jobs", "Submit", Requirement::Permission("jobs.submit".into())));
//! Server::builder().layer(auth).add_service(JobsServer::new(jobs)).serve_with_incoming(tls_incoming).await?;
//! // in a handler:
//! let caller = Caller::from_request(&request)?;
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::codegen::http::{Request, Response};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::auth::{Authenticator, Caller, MethodPolicy, Requirement};
use crate::error::Error;

/// Authenticates with an [`Authenticator`] and authorizes with a [`MethodPolicy`].
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    policy: Arc<MethodPolicy>,
    refusals: Arc<RefusalLog>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>, policy: MethodPolicy) -> Self {
        Self { authenticator, policy: Arc::new(policy), refusals: Arc::new(RefusalLog::default()) }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
            policy: self.policy.clone(),
            refusals: self.refusals.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around each tonic service.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
    policy: Arc<MethodPolicy>,
    refusals: Arc<RefusalLog>,
}

impl<S, B> Service<Request<B>> for AuthService<S>
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is ready only if polled; use the instance `poll_ready` prepared and leave the clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (authenticator, policy, refusals) =
            (self.authenticator.clone(), self.policy.clone(), self.refusals.clone());
        let leaf = leaf_certificate(&request);
        let path = request.uri().path().to_owned();
        Box::pin(async move {
            // What needs no identity is served without authenticating (and without a Caller).
            if policy.requirement(&path) == Some(&Requirement::Anonymous) {
                return inner.call(request).await;
            }
            match check(&authenticator, &policy, leaf, &path).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(error) => {
                    refusals.note(&path, &error);
                    Ok(Status::from(error).into_http())
                }
            }
        })
    }
}

/// The peer's certificate chain, as the TLS connection recorded it.
fn leaf_certificate<B>(request: &Request<B>) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.peer_certs())
}

async fn check(
    authenticator: &Authenticator,
    policy: &MethodPolicy,
    chain: Option<Arc<Vec<CertificateDer<'static>>>>,
    path: &str,
) -> Result<Arc<Caller>, Error> {
    let no_cert = || Error::Unauthenticated("no client certificate: connect with mTLS".into());
    let chain = chain.ok_or_else(no_cert)?;
    let leaf = chain.first().ok_or_else(no_cert)?;
    let caller = authenticator.authenticate(leaf).await?;
    policy.authorize(&caller, path)?;
    Ok(caller)
}

impl Caller {
    /// The caller the [`AuthLayer`] authenticated for this request. `Unauthenticated` if the service runs without
    /// the layer (a wiring bug, never a client's fault, but failing closed is the safe answer).
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<Arc<Caller>, Status> {
        request
            .extensions()
            .get::<Arc<Caller>>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("request was not authenticated"))
    }
}

/// Refused requests, logged cheaply: a counter, and at most one line per interval carrying the count and the latest
/// refusal as a sample. The path and message are attacker-influenced, so they are escaped and truncated; they never
/// contain key material.
#[derive(Default)]
pub struct RefusalLog {
    count: AtomicU64,
    last_line: Mutex<Option<Instant>>,
}

impl RefusalLog {
    /// At most one log line per this interval.
    pub const INTERVAL: Duration = Duration::from_secs(10);
    const SAMPLE_CHARS: usize = 120;

    /// Counts one refusal, and logs if the interval has passed.
    pub fn note(&self, path: &str, error: &Error) {
        let total = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last_line.try_lock() else { return };
        if last.is_some_and(|at| at.elapsed() < Self::INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        tracing::info!(
            refused_total = total,
            sample_path = %sanitize(path, Self::SAMPLE_CHARS),
            sample_error = %sanitize(&error.to_string(), Self::SAMPLE_CHARS),
            "requests refused"
        );
    }

    /// Refusals counted since start.
    pub fn total(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// `text` with control and non-ASCII characters escaped, cut to `max` characters.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out: String = text.chars().flat_map(char::escape_default).take(max).collect();
    if text.chars().flat_map(char::escape_default).nth(max).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_strings_are_escaped_and_truncated() {
        assert_eq!(sanitize("/a/b", 10), "/a/b");
        assert_eq!(sanitize("x\n\u{1b}[31m", 40), "x\\n\\u{1b}[31m");
        assert_eq!(sanitize(&"a".repeat(500), 8), "aaaaaaaa...");
    }

    #[test]
    fn refusals_are_counted_even_when_not_logged() {
        let log = RefusalLog::default();
        for _ in 0..1000 {
            log.note("/x", &Error::Unauthenticated("no".into()));
        }
        assert_eq!(log.total(), 1000);
    }
}
