//! mTLS for any tonic server: a rustls configuration that verifies client certificates against the CA, and the
//! incoming stream of handshaken connections for `Server::serve_with_incoming*`. Connections are accepted by the one
//! accept machinery ([`crate::listener`]: caps that shed the idlest instead of blocking accept); each handshake runs
//! in its own task under a deadline. tonic then exposes the peer certificates to the
//! [`AuthLayer`](crate::auth::AuthLayer) through `TlsConnectInfo`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tracing::debug;

pub mod chain;
pub use chain::KnownIntermediates;

use crate::audit::refusals::Refusals;
use crate::error::{Error, Result};
use crate::listener::{self, Phase, Table, Tracked};
use crate::metrics::Metrics;

/// Finished handshakes waiting for the gRPC server to take them.
const ACCEPT_BACKLOG: usize = 256;

/// A handshaken connection, as `serve_with_incoming` wants it.
pub type Conn = std::result::Result<Connection, std::io::Error>;

/// What the gRPC listener lets clients hold: the listener's caps and deadlines (see [`crate::listener`]), and how
/// long a connection without a client certificate may stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub listener: listener::Limits,
    /// A connection without a client certificate is closed after this long without receiving anything...
    pub unauthenticated_idle: Duration,
    /// ... and after this long in any case.
    pub unauthenticated_lifetime: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            listener: listener::Limits {
                max_connections: 10_000,
                max_handshakes: 2048,
                max_anonymous: 1000,
                first_phase: Duration::from_secs(5),
                first_phase_under_pressure: Duration::from_secs(1),
                lifetime: Duration::MAX,
            },
            unauthenticated_idle: Duration::from_secs(10),
            unauthenticated_lifetime: Duration::from_secs(300),
        }
    }
}

/// Server TLS: TLS 1.3 (and 1.2 if `allow_tls12`), ALPN h2, client certificates verified against `ca`, the server's
/// own certificate from `server_cert` (consulted on every handshake, so it can be replaced while running).
///
/// A presented certificate must chain to the CA or the handshake fails. A connection without one is let through TLS
/// so that the auth layer can answer UNAUTHENTICATED with a message instead of an opaque transport error; the layer
/// denies every request that lacks a certificate.
pub fn server_config(
    ca: &CertificateDer<'static>,
    server_cert: Arc<dyn ResolvesServerCert>,
    allow_tls12: bool,
) -> Result<rustls::ServerConfig> {
    server_config_completing(ca, server_cert, allow_tls12, Arc::default())
}

/// Like [`server_config`], adding `known` intermediates to client chains that hold only a leaf (see [`chain`]).
pub fn server_config_completing(
    ca: &CertificateDer<'static>,
    server_cert: Arc<dyn ResolvesServerCert>,
    allow_tls12: bool,
    known: Arc<KnownIntermediates>,
) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| Error::InvalidArgument(format!("CA certificate unusable as a trust anchor: {e}")))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::internal("client verifier", e))?;
    let verifier = Arc::new(chain::CompletingVerifier { inner: verifier, known });
    let versions: &[&rustls::SupportedProtocolVersion] =
        if allow_tls12 { &[&rustls::version::TLS13, &rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| Error::internal("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(server_cert);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tls)
}

/// Accepts on `listener` until `shutdown` resolves; returns the stream of handshaken connections and the loop's task.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (ReceiverStream<Conn>, JoinHandle<()>) {
    let table = Table::new("grpc", limits.listener, listener::Meters::default());
    incoming_observed(listener, config, table, limits, Observers::default(), shutdown)
}

/// Who hears about failed handshakes: metrics and the audit log's refusal counts (per source address).
#[derive(Clone, Default)]
pub struct Observers {
    pub metrics: Option<Arc<Metrics>>,
    pub refusals: Option<Arc<Refusals>>,
}

impl Observers {
    fn failed(&self, peer: SocketAddr, reason: &'static str, detail: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.handshake_failed(reason);
        }
        if let Some(refusals) = &self.refusals {
            refusals.record(Some(peer.ip()), reason, reason, detail);
        }
    }
}

/// [`incoming`] on a connection `table` of the caller's (whose meters it counts into), telling `observers` about
/// failed handshakes.
pub fn incoming_observed(
    tcp: TcpListener,
    config: rustls::ServerConfig,
    table: Arc<Table>,
    limits: ConnectionLimits,
    observers: Observers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (ReceiverStream<Conn>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let handle = move |stream: Tracked, peer: SocketAddr| {
        let (acceptor, tx, observers) = (acceptor.clone(), tx.clone(), observers.clone());
        tokio::spawn(handshake(stream, peer, acceptor, tx, limits, observers));
    };
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {}
            _ = listener::accept(tcp, table, Phase::Handshake, handle) => {}
        }
    });
    (ReceiverStream::new(rx), task)
}

async fn handshake(
    stream: Tracked,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<Conn>,
    limits: ConnectionLimits,
    observers: Observers,
) {
    let slot = stream.slot().handle();
    let deadline = limits.listener.first_phase_deadline(slot.table());
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let anonymous = tls.get_ref().1.peer_certificates().is_none_or(|c| c.is_empty());
            slot.enter(if anonymous { Phase::Waiting } else { Phase::Active }, anonymous);
            let _ = conns.send(Ok(Connection::new(tls, anonymous, &limits))).await;
        }
        Ok(Err(_)) if slot.is_shed() => debug!(%peer, "handshake shed"),
        Ok(Err(error)) => {
            observers.failed(peer, handshake_failure(&error), &error.to_string());
            debug!(%peer, %error, "TLS handshake rejected");
        }
        Err(_) => {
            observers.failed(peer, "timeout", "TLS handshake timed out");
            debug!(%peer, "TLS handshake timed out");
        }
    }
}

/// An established connection: the TLS stream, the slot it holds under the connection cap, and for a connection
/// without a client certificate the deadlines that close it when idle or old (it can only reach services that need
/// no identity, so it has no reason to linger).
pub struct Connection {
    stream: TlsStream<Tracked>,
    deadlines: Option<Deadlines>,
}

/// Why a handshake failed, as a bounded label: the client's certificate was refused, or anything else in TLS.
fn handshake_failure(error: &std::io::Error) -> &'static str {
    let text = error.to_string().to_ascii_lowercase();
    if text.contains("certificate") || text.contains("cert") {
        "bad_certificate"
    } else if text.contains("eof") || text.contains("reset") || text.contains("broken pipe") {
        "closed"
    } else {
        "protocol"
    }
}

struct Deadlines {
    idle_after: Duration,
    idle: Pin<Box<Sleep>>,
    end: Pin<Box<Sleep>>,
}

impl Connection {
    fn new(stream: TlsStream<Tracked>, anonymous: bool, limits: &ConnectionLimits) -> Self {
        let deadlines = anonymous.then(|| Deadlines {
            idle_after: limits.unauthenticated_idle,
            idle: Box::pin(tokio::time::sleep(limits.unauthenticated_idle)),
            end: Box::pin(tokio::time::sleep(limits.unauthenticated_lifetime)),
        });
        Self { stream, deadlines }
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let Some(deadlines) = &mut this.deadlines else { return polled };
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let next = tokio::time::Instant::now() + deadlines.idle_after;
            deadlines.idle.as_mut().reset(next);
        }
        if deadlines.end.as_mut().poll(cx).is_ready() || deadlines.idle.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection without a client certificate was idle or too old",
            )));
        }
        polled
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Connection {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
