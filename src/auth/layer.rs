//! A tower layer that authenticates and authorizes every gRPC request of any tonic server, and the extractor
//! handlers use to get the [`Caller`]. Requests reach the wrapped service only when both checks pass.
//!
//! ```ignore
//! let auth = AuthLayer::new(authenticator, MethodPolicy::new().allow_method("my.v1.Jobs", "Submit", Requirement::Permission("jobs.submit".into())));
//! Server::builder().layer(auth).add_service(JobsServer::new(jobs)).serve_with_incoming(tls_incoming).await?;
//! // in a handler:
//! let caller = Caller::from_request(&request)?;
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::CertificateDer;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::codegen::http::{Request, Response};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::audit::refusals::Refusals;
use crate::auth::bearer::TokenVerifier;
use crate::auth::{Authenticator, Caller, MethodPolicy, Requirement};
use crate::error::{Error, Refusal};
use crate::ratelimit::{Operation, RateLimiter};
use crate::ratelog::{RateLimitedLog, sanitize};

/// Authenticates with an [`Authenticator`] and authorizes with a [`MethodPolicy`].
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    policy: Arc<MethodPolicy>,
    refusals: Arc<RateLimitedLog>,
    audit: Option<Arc<Refusals>>,
    tokens: Option<Arc<BearerTokens>>,
    limiter: Option<Arc<RateLimiter>>,
}

/// How a resource server treats bearer tokens.
struct BearerTokens {
    verifier: Arc<TokenVerifier>,
    /// Refuse requests without one (else certificate-only requests pass as before).
    required: bool,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>, policy: MethodPolicy) -> Self {
        Self {
            authenticator,
            policy: Arc::new(policy),
            refusals: Arc::new(RateLimitedLog::default()),
            audit: None,
            tokens: None,
            limiter: None,
        }
    }

    /// Also enforces `limiter`'s rate limits: per principal after authentication, per source address for Enroll (a
    /// refused enrollment costs its source more). Over a limit: RESOURCE_EXHAUSTED with a retry hint.
    pub fn with_rate_limits(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Also accepts certificate-bound bearer tokens (`authorization: Bearer ...`) verified by `verifier`: a request
    /// carrying one is allowed only what the token's scopes and the certificate's type both grant. With `required`,
    /// requests without a token are refused.
    pub fn with_bearer_tokens(mut self, verifier: Arc<TokenVerifier>, required: bool) -> Self {
        self.tokens = Some(Arc::new(BearerTokens { verifier, required }));
        self
    }

    /// Also counts refused requests per source address and reason in `refusals` (for the audit log).
    pub fn counting_refusals(mut self, refusals: Arc<Refusals>) -> Self {
        self.audit = Some(refusals);
        self
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
            audit: self.audit.clone(),
            tokens: self.tokens.clone(),
            limiter: self.limiter.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around each tonic service.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
    policy: Arc<MethodPolicy>,
    refusals: Arc<RateLimitedLog>,
    audit: Option<Arc<Refusals>>,
    tokens: Option<Arc<BearerTokens>>,
    limiter: Option<Arc<RateLimiter>>,
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
        let (authenticator, policy, refusals, audit, tokens) = (
            self.authenticator.clone(),
            self.policy.clone(),
            self.refusals.clone(),
            self.audit.clone(),
            self.tokens.clone(),
        );
        let limits = self.limiter.clone().and_then(|l| Operation::of_path(request.uri().path()).map(|op| (l, op)));
        let bearer = tokens.as_ref().and_then(|_| bearer_token(&request));
        let leaf = leaf_certificate(&request);
        let peer = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr());
        let path = request.uri().path().to_owned();
        Box::pin(async move {
            // Looked up once per request. What needs no identity is served without authenticating (and without a
            // Caller).
            let requirement = policy.requirement(&path);
            let refuse = |error: Error, reason: &'static str| {
                let cause = match &error {
                    Error::Refused(refusal) => refusal.label(),
                    _ => reason,
                };
                if let Some(audit) = &audit {
                    audit.record(peer.map(|a| a.ip()), reason, cause, &error.to_string());
                }
                if let Some(refused) = refusals.tick() {
                    tracing::info!(
                        refused,
                        sample_reason = cause,
                        sample_path = %sanitize(&path, 120),
                        sample_error = %sanitize(&error.to_string(), 120),
                        "requests refused"
                    );
                }
                Status::from(error).into_http()
            };
            if requirement == Some(&Requirement::Anonymous) {
                let Some((limiter, Operation::Enroll)) = limits else { return inner.call(request).await };
                // Without a source address (not TCP) there is nothing to key on: a deployment detail, not a client's.
                let Some(source) = peer.map(|a| a.ip()) else { return inner.call(request).await };
                if let Err(limited) = limiter.check_enroll(source) {
                    tarpit().await;
                    return Ok(refuse(limited.into(), "rate_limited"));
                }
                let response = inner.call(request).await?;
                if let Some(message) = refused_enrollment(&response) {
                    limiter.enroll_refused(source);
                    let _ = refuse(Error::Unauthenticated(format!("enrollment refused: {message}")), "enroll_refused");
                }
                return Ok(response);
            }
            let checked = check(&authenticator, requirement, leaf, &path, tokens.as_deref(), bearer).await;
            if let Some(metrics) = authenticator.metrics() {
                metrics.auth(outcome(&checked));
            }
            match checked {
                Ok(caller) => {
                    if let Some((limiter, operation)) = limits
                        && let Err(limited) = limiter.check(caller.kind, &caller.id, operation)
                    {
                        tarpit().await;
                        return Ok(refuse(limited.into(), "rate_limited"));
                    }
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(error) => {
                    let reason = match &error {
                        Error::Refused(_) | Error::Unauthenticated(_) => "unauthenticated",
                        Error::PermissionDenied(_) => "permission_denied",
                        _ => return Ok(Status::from(error).into_http()),
                    };
                    Ok(refuse(error, reason))
                }
            }
        })
    }
}

/// How long a rate-limited request is held before its refusal is sent. A client that ignores the retry hint and
/// asks again at once then costs a timer per request, not a CPU-bound loop that slows everyone else.
const TARPIT: std::time::Duration = std::time::Duration::from_millis(250);

async fn tarpit() {
    tokio::time::sleep(TARPIT).await;
}

/// The message of an Enroll answer that refused the attempt (a wrong, spent or expired token, a bad CSR); `None`
/// for success and for failures that are the server's (UNAVAILABLE, INTERNAL, RESOURCE_EXHAUSTED).
fn refused_enrollment(response: &Response<Body>) -> Option<String> {
    let code = response.headers().get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    let code = tonic::Code::from_i32(code);
    if matches!(
        code,
        tonic::Code::Ok | tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::ResourceExhausted
    ) {
        return None;
    }
    let message = response.headers().get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or_default();
    Some(format!("{code:?}: {message}"))
}

/// An authentication outcome as a bounded label: the refusal's own ([`Refusal::label`]).
fn outcome<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::Refused(refusal)) => refusal.label(),
        Err(Error::PermissionDenied(_)) => "permission_denied",
        Err(Error::Unavailable(_)) => "store_unavailable",
        Err(_) => "error",
    }
}

/// The peer's certificate chain, as the TLS connection recorded it.
fn leaf_certificate<B>(request: &Request<B>) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.peer_certs())
}

async fn check(
    authenticator: &Authenticator,
    requirement: Option<&Requirement>,
    chain: Option<Arc<Vec<CertificateDer<'static>>>>,
    path: &str,
    tokens: Option<&BearerTokens>,
    bearer: Option<String>,
) -> Result<Arc<Caller>, Error> {
    let no_cert = || Error::Refused(Refusal::NoCertificate);
    let chain = chain.ok_or_else(no_cert)?;
    let leaf = chain.first().ok_or_else(no_cert)?;
    let mut caller = authenticator.authenticate(leaf).await?;
    if let Some(tokens) = tokens {
        match bearer {
            Some(token) => {
                let scopes = tokens.verifier.verify(&token, &caller.certificate_sha256).await?;
                let granted = caller.permissions.intersection(&scopes).cloned().collect();
                caller = Arc::new(Caller { permissions: Arc::new(granted), ..(*caller).clone() });
            }
            None if tokens.required => {
                return Err(Error::Refused(Refusal::TokenRequired));
            }
            None => {}
        }
    }
    MethodPolicy::allows(requirement, &caller, path)?;
    Ok(caller)
}

/// The token of an `authorization: Bearer ...` header.
fn bearer_token<B>(request: &Request<B>) -> Option<String> {
    let value = request.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
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
