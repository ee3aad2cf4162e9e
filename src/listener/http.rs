//! HTTP/1.1 on a listener of its own (health, PKI, OAuth), plain or over TLS, with the listener's caps: the first
//! phase (handshake, then request headers) under a deadline that shortens under pressure, a lifetime per connection,
//! and the connection marked busy while a request is served so that idle ones are shed first.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::{Phase, Table, Tracked, accept};

/// The client certificate of the connection a request came on (TLS listeners; `None` without one).
#[derive(Clone)]
pub struct PeerCertificate(pub Option<CertificateDer<'static>>);

/// How a listener speaks HTTP.
#[derive(Clone)]
pub struct HttpOptions {
    /// TLS with this acceptor (ALPN http/1.1), else plain HTTP.
    pub tls: Option<TlsAcceptor>,
    /// Serve more than one request per connection.
    pub keep_alive: bool,
}

/// Serves `app` on `listener` with `table`'s limits until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    table: Arc<Table>,
    options: HttpOptions,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let first = if options.tls.is_some() { Phase::Handshake } else { Phase::Waiting };
    let handle = move |stream: Tracked, _peer| {
        let (app, options) = (app.clone(), options.clone());
        tokio::spawn(connection(stream, app, options));
    };
    tokio::select! {
        _ = shutdown => {}
        _ = accept(listener, table, first, handle) => {}
    }
}

async fn connection(stream: Tracked, app: Router, options: HttpOptions) {
    let handle = stream.slot().handle();
    let limits = *handle.table().limits();
    let deadline = limits.first_phase_deadline(handle.table());
    let ends = tokio::time::Instant::now() + limits.lifetime;
    let keep_alive = options.keep_alive;
    match options.tls {
        Some(acceptor) => {
            let Ok(Ok(tls)) = tokio::time::timeout(deadline.min(limits.lifetime), acceptor.accept(stream)).await else {
                return;
            };
            handle.enter(Phase::Waiting, false);
            let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
            let app = app.layer(axum::Extension(PeerCertificate(peer)));
            let _ = tokio::time::timeout_at(ends, http1(tls, app, handle, deadline, keep_alive)).await;
        }
        None => {
            let _ = tokio::time::timeout_at(ends, http1(stream, app, handle, deadline, keep_alive)).await;
        }
    }
}

/// One HTTP/1.1 connection; the row is `Active` while a request is served and `Waiting` between requests.
async fn http1<S>(stream: S, app: Router, handle: super::table::Handle, headers: std::time::Duration, keep_alive: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let (app, handle) = (app.clone(), handle.clone());
        async move {
            handle.enter(Phase::Active, false);
            let response = app.oneshot(request.map(axum::body::Body::new)).await;
            handle.enter(Phase::Waiting, false);
            response
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(headers)
        .keep_alive(keep_alive)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
