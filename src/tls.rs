//! mTLS for any tonic server: a rustls configuration that verifies client certificates against the CA, and an accept
//! loop that performs handshakes (each in its own task, under a timeout) and feeds finished connections to
//! `Server::serve_with_incoming*`. tonic then exposes the peer certificates to the [`AuthLayer`](crate::auth::AuthLayer)
//! through `TlsConnectInfo`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

/// Finished handshakes waiting for the gRPC server to take them.
const ACCEPT_BACKLOG: usize = 256;
/// Handshakes in progress at once; further connections wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 1024;

/// A handshaken connection, as `serve_with_incoming` wants it.
pub type Conn = std::result::Result<TlsStream<TcpStream>, std::io::Error>;

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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| Error::InvalidArgument(format!("CA certificate unusable as a trust anchor: {e}")))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::internal("client verifier", e))?;
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
    handshake_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (ReceiverStream<Conn>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {}
            _ = accept_loop(listener, acceptor, tx, handshake_timeout) => {}
        }
    });
    (ReceiverStream::new(rx), task)
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, conns: mpsc::Sender<Conn>, timeout: Duration) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                // Typically EMFILE: back off instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // serve_with_incoming ignores Server::tcp_nodelay; without it small responses wait for delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let (acceptor, conns) = (acceptor.clone(), conns.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conns.send(Ok(tls)).await;
                }
                Ok(Err(error)) => info!(%peer, %error, "TLS handshake rejected"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
