//! Floods and stalls against the listeners, from this process over loopback: idle TCP sockets, half-finished TLS
//! handshakes, slowloris on the health port and idle certificate-less connections must not lock real clients out.
//! Every loop here is bounded in count and time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::TestServer;
use principald::proto as pb;

/// Whether a blocking read ended by its own timeout, i.e. the peer neither sent nor closed.
fn is_timeout(read: &std::io::Result<usize>) -> bool {
    read.as_ref().is_err_and(|e| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// A TLS 1.3 ClientHello's first bytes: a record header promising more than is ever sent.
const PARTIAL_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_and_stalled_handshakes_do_not_lock_out_a_real_client() {
    raise_fd_limit();
    let server = TestServer::start().await;
    let addr = server.running.grpc_addr;
    let flood = tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        for _ in 0..1000 {
            held.push(TcpStream::connect(addr).expect("connect"));
        }
        for _ in 0..100 {
            let mut stream = TcpStream::connect(addr).expect("connect");
            let _ = stream.write_all(PARTIAL_CLIENT_HELLO);
            held.push(stream);
        }
        held
    })
    .await
    .unwrap();
    let started = Instant::now();
    let mut client = server.admin().await;
    let me = client.who_am_i(pb::WhoAmIRequest {}).await.expect("a real client gets through the flood");
    assert_eq!(me.into_inner().principal_id, "admin");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    // The stalled handshakes are closed by the server at the handshake deadline (5 s by default).
    let mut stalled = flood.into_iter().last().unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    let read = stalled.read(&mut buf);
    assert!(!is_timeout(&read), "a stalled handshake was left open: {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once() {
    raise_fd_limit();
    // A long handshake deadline keeps the held connections in their slots for the whole test.
    let server = TestServer::start_with(&["--max-connections", "20", "--handshake-timeout", "60s"]).await;
    let addr = server.running.grpc_addr;
    let held: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut extra = TcpStream::connect(addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 1];
    let read = extra.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_client_certificate_is_closed_when_idle() {
    let server = TestServer::start_with(&["--unauthenticated-idle", "1s"]).await;
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server.ca.cert_der().clone()).unwrap();
        roots
    };
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.running.grpc_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS without a client certificate is allowed");
    let started = Instant::now();
    let mut buf = vec![0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        use tokio::io::AsyncReadExt;
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept an idle certificate-less connection open");
    assert!(started.elapsed() >= Duration::from_millis(500), "closed too early: {:?}", started.elapsed());
}

fn health_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_health_port_is_cut_off_and_probes_get_through() {
    raise_fd_limit();
    let server = TestServer::start().await;
    let addr = server.running.health_addr;
    let result = tokio::task::spawn_blocking(move || {
        // More slow clients than the cap, each sending half a request line and then nothing.
        let mut slow: Vec<TcpStream> = (0..300).filter_map(|_| TcpStream::connect(addr).ok()).collect();
        for stream in &mut slow {
            let _ = stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut answered = None;
        while Instant::now() < deadline {
            if let Some(code) = health_get(addr, "/readyz") {
                answered = Some(code);
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The slow ones were closed by the header deadline.
        let first = &mut slow[0];
        first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        let closed = !is_timeout(&first.read(&mut buf));
        (answered, closed)
    })
    .await
    .unwrap();
    assert_eq!(result.0, Some(200), "a probe got through the slowloris within the header deadline");
    assert!(result.1, "a slow client was left open past the header deadline");
}
