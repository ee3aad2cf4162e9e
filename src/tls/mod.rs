//! mTLS for any tonic server: a rustls configuration that verifies client certificates against the CA, and an accept
//! loop that performs handshakes (each in its own task, under a timeout, within caps on handshakes and connections
//! that never block accepting) and feeds finished connections to `Server::serve_with_incoming*`. tonic then exposes
//! the peer certificates to the [`AuthLayer`](crate::auth::AuthLayer) through `TlsConnectInfo`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tracing::{debug, warn};

pub mod chain;
pub use chain::KnownIntermediates;

use crate::audit::refusals::Refusals;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::ratelog::RateLimitedLog;

/// Finished handshakes waiting for the gRPC server to take them.
const ACCEPT_BACKLOG: usize = 256;

/// A handshaken connection, as `serve_with_incoming` wants it.
pub type Conn = std::result::Result<Connection, std::io::Error>;

/// What one listener lets clients hold. Beyond a cap, a new connection is closed at once: accept never stops, so a
/// flood cannot push real clients into the kernel's queue behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
    /// Open connections (handshaking or established) at once.
    pub max_connections: usize,
    /// A connection without a client certificate is closed after this long without receiving anything...
    pub unauthenticated_idle: Duration,
    /// ... and after this long in any case.
    pub unauthenticated_lifetime: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 2048,
            max_connections: 10_000,
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
    incoming_observed(listener, config, limits, Observers::default(), shutdown)
}

/// Who hears about connections: metrics (open connections, failed handshakes) and the audit log's refusal counts
/// (failed and refused handshakes, per source address).
#[derive(Clone, Default)]
pub struct Observers {
    pub metrics: Option<Arc<Metrics>>,
    pub refusals: Option<Arc<Refusals>>,
}

impl Observers {
    fn failed(&self, peer: Option<std::net::SocketAddr>, reason: &'static str, detail: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.handshake_failed(reason);
        }
        if let Some(refusals) = &self.refusals {
            refusals.record(peer.map(|p| p.ip()), reason, detail);
        }
    }
}

/// [`incoming`], telling `observers` about connections.
pub fn incoming_observed(
    listener: TcpListener,
    config: rustls::ServerConfig,
    limits: ConnectionLimits,
    observers: Observers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (ReceiverStream<Conn>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {}
            _ = accept_loop(listener, acceptor, tx, limits, observers) => {}
        }
    });
    (ReceiverStream::new(rx), task)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<Conn>,
    limits: ConnectionLimits,
    observers: Observers,
) {
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (refused, failed) = (RateLimitedLog::default(), RateLimitedLog::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                // Typically EMFILE: back off instead of spinning, and say so once per interval.
                if let Some(failures) = failed.tick() {
                    warn!(%error, failures, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over a cap: close at once (by dropping the socket) and keep accepting.
        let Ok(connection) = connections.clone().try_acquire_owned() else {
            observers.failed(Some(peer), "connection_cap", "over the open-connection cap");
            if let Some(refused) = refused.tick() {
                warn!(limit = "open connections", value = limits.max_connections, refused, "connections refused");
            }
            continue;
        };
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            observers.failed(Some(peer), "handshake_cap", "over the handshakes-in-progress cap");
            if let Some(refused) = refused.tick() {
                warn!(limit = "handshakes in progress", value = limits.max_handshakes, refused, "connections refused");
            }
            continue;
        };
        // serve_with_incoming ignores Server::tcp_nodelay; without it small responses wait for delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let (acceptor, conns, observers) = (acceptor.clone(), conns.clone(), observers.clone());
        tokio::spawn(async move {
            let result = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await;
            drop(handshake);
            match result {
                Ok(Ok(tls)) => {
                    let open = observers.metrics.map(OpenConnection::new);
                    let _ = conns.send(Ok(Connection::new(tls, connection, open, &limits))).await;
                }
                Ok(Err(error)) => {
                    observers.failed(Some(peer), handshake_failure(&error), &error.to_string());
                    debug!(%peer, %error, "TLS handshake rejected");
                }
                Err(_) => {
                    observers.failed(Some(peer), "timeout", "TLS handshake timed out");
                    debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// An established connection: the TLS stream, the slot it holds under the connection cap, and for a connection
/// without a client certificate the deadlines that close it when idle or old (it can only reach services that need
/// no identity, so it has no reason to linger).
pub struct Connection {
    stream: TlsStream<TcpStream>,
    _slot: OwnedSemaphorePermit,
    _open: Option<OpenConnection>,
    deadlines: Option<Deadlines>,
}

/// Counts a connection in `connections_open` for as long as it lives.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.connections_open.inc();
        Self(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
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
    fn new(
        stream: TlsStream<TcpStream>,
        slot: OwnedSemaphorePermit,
        open: Option<OpenConnection>,
        limits: &ConnectionLimits,
    ) -> Self {
        let anonymous = stream.get_ref().1.peer_certificates().is_none_or(|c| c.is_empty());
        let deadlines = anonymous.then(|| Deadlines {
            idle_after: limits.unauthenticated_idle,
            idle: Box::pin(tokio::time::sleep(limits.unauthenticated_idle)),
            end: Box::pin(tokio::time::sleep(limits.unauthenticated_lifetime)),
        });
        Self { stream, _slot: slot, _open: open, deadlines }
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
