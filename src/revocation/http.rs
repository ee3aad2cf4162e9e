//! The PKI listener's routes (public, plain HTTP, cacheable): `GET /crl/P.crl` (the root's CRLs),
//! `GET /crl/ISSUER/P.crl` (an intermediate's), `POST /ocsp` and `GET /ocsp/BASE64` (RFC 5019).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use time::OffsetDateTime;

use super::ocsp::Responder;
use super::publisher::CrlPublisher;
use crate::model::now;
use crate::pki::crl;

/// Largest OCSP request accepted (RFC 5019 requests are about 100 bytes; 16 certificates stay far below this).
const MAX_OCSP_REQUEST: usize = 8 * 1024;
/// How long HTTP caches may keep an OCSP answer or a CRL: short, so a cache never hides a revocation for long.
const OCSP_MAX_AGE: i64 = 60;
const CRL_MAX_AGE: i64 = 300;

#[derive(Clone)]
struct Published {
    crls: Arc<CrlPublisher>,
    ocsp: Arc<Responder>,
}

pub fn routes(crls: Arc<CrlPublisher>, ocsp: Arc<Responder>) -> Router {
    Router::new()
        .route("/crl/{file}", axum::routing::get(root_crl))
        .route("/crl/{issuer}/{file}", axum::routing::get(intermediate_crl))
        .route("/ocsp", axum::routing::post(ocsp_post))
        .route("/ocsp/{*request}", axum::routing::get(ocsp_get))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_OCSP_REQUEST))
        .with_state(Published { crls, ocsp })
}

async fn root_crl(State(p): State<Published>, Path(file): Path<String>) -> Response {
    serve_crl(&p, "", &file)
}

async fn intermediate_crl(State(p): State<Published>, Path((issuer, file)): Path<(String, String)>) -> Response {
    // The root's segment is empty: `/crl//0.crl` is not a root CRL.
    if issuer.is_empty() {
        return not_found();
    }
    serve_crl(&p, &issuer, &file)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such CRL: the URL is in the certificate's CRL distribution point\n").into_response()
}

fn serve_crl(p: &Published, issuer: &str, file: &str) -> Response {
    let found = file
        .strip_suffix(".crl")
        .and_then(crl::parse_partition)
        .and_then(|partition| p.crls.get_for(issuer, partition));
    let Some(found) = found else { return not_found() };
    let max_age = (found.crl.next_update - now()).whole_seconds().clamp(0, CRL_MAX_AGE);
    let headers = [
        (header::CONTENT_TYPE, "application/pkix-crl".to_owned()),
        (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
        (header::LAST_MODIFIED, http_date(found.crl.this_update)),
        (header::EXPIRES, http_date(found.crl.next_update)),
        (header::ETAG, format!("\"{:x}\"", found.crl.number)),
    ];
    (StatusCode::OK, headers, found.crl.der.clone()).into_response()
}

async fn ocsp_post(State(p): State<Published>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.is_empty() && !content_type.starts_with("application/ocsp-request") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected Content-Type: application/ocsp-request\n")
            .into_response();
    }
    answer(&p, &body).await
}

async fn ocsp_get(State(p): State<Published>, Path(request): Path<String>) -> Response {
    // Path already undid the URL encoding; accept standard and URL-safe base64, padded or not.
    let trimmed = request.trim_end_matches('=');
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed));
    match decoded {
        Ok(der) if der.len() <= MAX_OCSP_REQUEST => answer(&p, &der).await,
        _ => ocsp_response(crate::pki::ocsp::error_response(crate::pki::ocsp::ResponseStatus::MalformedRequest), None),
    }
}

async fn answer(p: &Published, der: &[u8]) -> Response {
    let answer = p.ocsp.respond(der).await;
    ocsp_response(answer.der, answer.cacheable)
}

fn ocsp_response(der: Vec<u8>, cacheable: Option<(OffsetDateTime, OffsetDateTime)>) -> Response {
    let mut headers = vec![(header::CONTENT_TYPE, "application/ocsp-response".to_owned())];
    match cacheable {
        Some((this_update, next_update)) => {
            let max_age = (next_update - now()).whole_seconds().clamp(0, OCSP_MAX_AGE);
            let etag = crate::model::sha256_hex(&der);
            headers.push((header::CACHE_CONTROL, format!("public, max-age={max_age}, no-transform, must-revalidate")));
            headers.push((header::LAST_MODIFIED, http_date(this_update)));
            headers.push((header::EXPIRES, http_date(next_update)));
            headers.push((header::ETAG, format!("\"{}\"", &etag[..32])));
        }
        None => headers.push((header::CACHE_CONTROL, "no-store".to_owned())),
    }
    let mut response = (StatusCode::OK, der).into_response();
    for (name, value) in headers {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// RFC 9110 IMF-fixdate.
fn http_date(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}
