//! The OAuth side over HTTPS, on its own port (`--oauth-listen`): RFC 8414 metadata and OIDC discovery, the JWKS, and
//! the token endpoint (client_credentials with mTLS client authentication, RFC 8705 section 2). Discovery and the JWKS
//! need no client certificate, so any OIDC library or a cloud's workload-identity federation can trust tokens from
//! the issuer URL alone; the token endpoint authenticates the presented certificate exactly like the gRPC API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Form, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::TokenIssuer;
use crate::auth::Authenticator;
use crate::auth::authorize::permission;
use crate::error::Error;
use crate::listener::Table;
use crate::listener::http::{HttpOptions, PeerCertificate};
use crate::ratelimit::{Operation, RateLimiter};

#[derive(Clone)]
struct App {
    issuer: Arc<TokenIssuer>,
    authenticator: Arc<Authenticator>,
    limiter: Option<Arc<RateLimiter>>,
}

/// Serves the OAuth endpoints on `listener` with TLS `config` (client certificates optional) and the limits of
/// `table` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    table: Arc<Table>,
    mut config: rustls::ServerConfig,
    issuer: Arc<TokenIssuer>,
    authenticator: Arc<Authenticator>,
    limiter: Option<Arc<RateLimiter>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let app = Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/jwks.json", get(jwks))
        .route("/oauth2/token", post(token))
        .with_state(App { issuer, authenticator, limiter });
    let options = HttpOptions { tls: Some(TlsAcceptor::from(Arc::new(config))), keep_alive: true };
    crate::listener::http::serve(listener, table, options, app, shutdown).await;
}

async fn metadata(State(app): State<App>) -> Response {
    let issuer = &app.issuer.policy.issuer;
    let body = json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "jwks_uri": format!("{issuer}/jwks.json"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["tls_client_auth"],
        "tls_client_certificate_bound_access_tokens": true,
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "scopes_supported": permission::ALL,
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(body)).into_response()
}

async fn jwks(State(app): State<App>) -> Response {
    match app.issuer.keys.jwks().await {
        Ok(jwks) => {
            ([(header::CACHE_CONTROL, "public, max-age=60")], axum::Json(jwks.as_ref().clone())).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the token keys");
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "retry later")
        }
    }
}

/// `POST /oauth2/token`, form-encoded: `grant_type=client_credentials`, `audience` (or RFC 8707 `resource`),
/// optional `scope` (space-separated) and `lifetime` (seconds). The client authenticates with its certificate.
async fn token(
    State(app): State<App>,
    Extension(PeerCertificate(peer)): Extension<PeerCertificate>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(certificate) = peer else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "connect with your client certificate (mTLS)");
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only client_credentials is supported");
    }
    let caller = match app.authenticator.authenticate(certificate.as_ref()).await {
        Ok(caller) => caller,
        Err(Error::Unauthenticated(message) | Error::PermissionDenied(message)) => {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &message);
        }
        Err(error) => return failed(error),
    };
    if !caller.has_permission(permission::TOKEN_ISSUE) {
        let message = format!("{} principals may not get tokens (permission {})", caller.kind, permission::TOKEN_ISSUE);
        return oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", &message);
    }
    if let Some(limiter) = &app.limiter
        && let Err(limited) = limiter.check(caller.kind, &caller.id, Operation::Token)
    {
        return too_many_requests(limited.retry_after);
    }
    let audience = form.get("audience").or_else(|| form.get("resource")).cloned().unwrap_or_default();
    let scopes: Vec<String> = form.get("scope").map(|s| vec![s.clone()]).unwrap_or_default();
    let lifetime = match form.get("lifetime").map(|l| l.parse::<u64>()) {
        None => None,
        Some(Ok(seconds)) => Some(Duration::from_secs(seconds)),
        Some(Err(_)) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "lifetime is whole seconds"),
    };
    match app.issuer.issue(&caller, &audience, &scopes, lifetime).await {
        Ok(issued) => {
            let body = json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            });
            ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
        Err(Error::PermissionDenied(message)) => oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &message),
        Err(Error::InvalidArgument(message) | Error::FailedPrecondition(message)) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &message)
        }
        Err(error) => failed(error),
    }
}

/// The answer to a failure that is the server's, never the client's: like the gRPC mapping (`error.rs`), the detail
/// (store or KMS errors, ARNs, paths) goes to the log and the client gets a generic message.
fn failed(error: Error) -> Response {
    match error {
        Error::Unavailable(detail) => {
            tracing::warn!(error = %detail, "token endpoint: unavailable");
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "retry later")
        }
        Error::RateLimited { retry_after, .. } => too_many_requests(retry_after),
        error => {
            tracing::error!(%error, "token endpoint failed");
            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal server error; see the server log")
        }
    }
}

/// 429 with `Retry-After` (whole seconds, rounded up) for a caller over its token rate limit.
fn too_many_requests(retry_after: Duration) -> Response {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut response = oauth_error(
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        &format!("rate limit for tokens reached; retry in {seconds}s"),
    );
    if let Ok(value) = seconds.to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// An RFC 6749 section 5.2 error response.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn server_failures_never_reach_the_client() {
        let leaky = "AccessDeniedException: arn:aws:iam::123456789012:role/task on table principald-meta";
        for (error, code) in [
            (Error::Internal(leaky.into()), StatusCode::INTERNAL_SERVER_ERROR),
            (Error::Unavailable(leaky.into()), StatusCode::SERVICE_UNAVAILABLE),
            (Error::NotFound(leaky.into()), StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let response = failed(error);
            assert_eq!(response.status(), code);
            let text = body(response).await;
            assert!(!text.contains("arn:") && !text.contains("AccessDenied"), "{text}");
        }
    }
}
