//! Floods and stalls against the listeners, from this process over loopback: idle TCP sockets, half-finished TLS
//! handshakes, slowloris on the health port, floods of the OAuth listener and idle certificate-less connections must
//! not lock real clients out: at a cap the idlest connection is shed for the newcomer.
//! Every loop here is bounded in count and time.

use crate::common;

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

/// Whether the server closed `stream` within `within` (EOF or reset), rather than leaving it open.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_idlest_connection_is_shed_for_a_real_client() {
    raise_fd_limit();
    // A long handshake deadline: only shedding can free a slot during the test.
    let server = TestServer::start_with(&["--max-connections", "20", "--handshake-timeout", "60s"]).await;
    let addr = server.running.grpc_addr;
    let mut held: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut client = server.admin().await;
    let me = client.who_am_i(pb::WhoAmIRequest {}).await.expect("the newcomer is admitted");
    assert_eq!(me.into_inner().principal_id, "admin");
    // The oldest idle socket made room; the newest idle ones are still open.
    let oldest = tokio::task::spawn_blocking(move || {
        let first = closed_by_server(&mut held[0], Duration::from_secs(5));
        let last = closed_by_server(&mut held[19], Duration::from_millis(300));
        (first, last)
    })
    .await
    .unwrap();
    assert_eq!(oldest, (true, false), "(oldest closed, newest closed)");
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

/// Opens `slow` connections that send half a request (or half a ClientHello) and `idle` ones that send nothing.
fn flood(addr: SocketAddr, slow: usize, half: &'static [u8], idle: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(slow + idle);
    for i in 0..slow + idle {
        let Ok(mut stream) = TcpStream::connect(addr) else { continue };
        if i < slow {
            let _ = stream.write_all(half);
        }
        held.push(stream);
    }
    held
}

/// The load balancer's view: a probe needs its answer within a couple of seconds however many sockets the flood
/// holds (the goal, 1 s, is measured by `principald-bench`'s group `v`; this bound leaves room for a loaded machine).
const PROBE_BOUND: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_get_through_600_slowloris_and_1000_idle_sockets() {
    raise_fd_limit();
    let server = TestServer::start().await;
    let addr = server.running.health_addr;
    let result = tokio::task::spawn_blocking(move || {
        let mut held = flood(addr, 600, b"GET /readyz HTTP/1.1\r\nHost: x\r\n", 1000);
        let mut probes = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            let code = health_get(addr, "/readyz");
            probes.push((code, started.elapsed()));
        }
        // Every flood socket was shed or cut off by the (shortened) header deadline.
        let cut = closed_by_server(&mut held[0], Duration::from_secs(10));
        (probes, cut)
    })
    .await
    .unwrap();
    for (code, took) in &result.0 {
        assert_eq!(*code, Some(200), "probes: {:?}", result.0);
        assert!(*took < PROBE_BOUND, "probes: {:?}", result.0);
    }
    assert!(result.1, "a slowloris socket was left open");
}

/// GET over TLS (no client certificate) to the OAuth listener; the status code.
async fn https_get(addr: SocketAddr, ca: &rustls::pki_types::CertificateDer<'static>, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).ok()?;
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let mut tls = connector.connect(name, tcp).await.ok()?;
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_gets_through_a_flood_of_the_oauth_listener() {
    raise_fd_limit();
    let server =
        TestServer::start_with(&["--token-audience", "https://jobs.example.test", "--oauth-listen", "127.0.0.1:0"])
            .await;
    let addr = server.running.oauth_addr.unwrap();
    let held = tokio::task::spawn_blocking(move || flood(addr, 600, PARTIAL_CLIENT_HELLO, 1000)).await.unwrap();
    for _ in 0..5 {
        let started = Instant::now();
        let code = tokio::time::timeout(PROBE_BOUND, https_get(addr, server.ca.cert_der(), "/jwks.json")).await;
        assert_eq!(code, Ok(Some(200)), "after {:?}", started.elapsed());
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_gets_through_a_flood_larger_than_the_grpc_cap() {
    raise_fd_limit();
    let server = TestServer::start_with(&["--max-connections", "300", "--max-handshakes", "100"]).await;
    let addr = server.running.grpc_addr;
    let held = tokio::task::spawn_blocking(move || flood(addr, 600, PARTIAL_CLIENT_HELLO, 1000)).await.unwrap();
    for _ in 0..3 {
        let call = async { server.admin().await.who_am_i(pb::WhoAmIRequest {}).await };
        let me = tokio::time::timeout(PROBE_BOUND, call).await.expect("in time").expect("served");
        assert_eq!(me.into_inner().principal_id, "admin");
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_certificate_have_their_own_small_cap() {
    let server = TestServer::start_with(&["--max-anonymous-connections", "3"]).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.ca.cert_der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut anonymous = Vec::new();
    for _ in 0..6 {
        let tcp = tokio::net::TcpStream::connect(server.running.grpc_addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        anonymous.push(connector.connect(name, tcp).await.expect("TLS without a client certificate"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The three oldest were shed at once (long before the 10 s idle deadline); the three newest stay.
    let mut closed = Vec::new();
    for tls in &mut anonymous {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1024];
        let read = async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        closed.push(tokio::time::timeout(Duration::from_millis(1500), read).await.is_ok());
    }
    assert_eq!(closed, [true, true, true, false, false, false]);
    // Certificate holders do not count against that cap.
    let me = server.admin().await.who_am_i(pb::WhoAmIRequest {}).await.expect("an authenticated client is served");
    assert_eq!(me.into_inner().principal_id, "admin");
}
