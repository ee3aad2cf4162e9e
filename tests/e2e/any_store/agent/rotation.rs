//! The Rust `spiffe` crate's X509Source and `spiffe-rustls` (clients someone else wrote): two workloads call each
//! other over mTLS with SVIDs of 30 s lifetime through at least 10 rotations of each, and no call fails.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use spiffe::{X509Source, X509Svid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Agent, entry, server};

/// Picks the SVID whose hint (the entry id, set by the agent) is this one.
struct ByHint(&'static str);

impl spiffe::x509_source::SvidPicker for ByHint {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        svids.iter().position(|s| s.hint() == Some(self.0))
    }
}

async fn source(socket: &std::path::Path, hint: &'static str) -> X509Source {
    X509Source::builder()
        .endpoint(format!("unix://{}", socket.display()))
        .picker(ByHint(hint))
        .build()
        .await
        .expect("an X509Source on the agent's socket")
}

fn serial_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    principald::model::Serial::from_bytes(cert.raw_serial()).as_str().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_rustls_workloads_call_each_other_through_ten_rotations_without_a_failure() {
    let server = server().await;
    let agent = Agent::join(&server, "node-mtls").await;
    entry(&server, "backend", "node-mtls", 30, &[]).await;
    entry(&server, "frontend", "node-mtls", 30, &[]).await;
    let td = "spiffe://principald.local";
    let (backend, frontend) = (format!("{td}/service/backend"), format!("{td}/service/frontend"));
    let server_config = spiffe_rustls::mtls_server(source(&agent.socket, "backend").await)
        .authorize(spiffe_rustls::authorizer::exact([frontend.as_str()]).unwrap())
        .trust_domain_policy(spiffe_rustls::LocalOnly("principald.local".try_into().unwrap()))
        .build()
        .expect("server config");
    let client_config = spiffe_rustls::mtls_client(source(&agent.socket, "frontend").await)
        .authorize(spiffe_rustls::authorizer::exact([backend.as_str()]).unwrap())
        .trust_domain_policy(spiffe_rustls::LocalOnly("principald.local".try_into().unwrap()))
        .build()
        .expect("client config");

    // The backend: answers each connection's line with the client's certificate serial.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first().map(|c| serial_of(c)));
                let mut line = [0u8; 4];
                if tls.read_exact(&mut line).await.is_ok() {
                    let _ = tls.write_all(format!("{}\n", peer.unwrap_or_default()).as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });

    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = rustls::pki_types::ServerName::try_from("backend.local").unwrap();
    let (mut server_serials, mut client_serials) = (BTreeSet::new(), BTreeSet::new());
    let mut calls = 0u32;
    // 10 rotations of each side: 11 distinct certificates seen (about 165 s at 30 s SVIDs rotated at half life).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(400);
    while server_serials.len() < 11 || client_serials.len() < 11 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} and {} certificates after {calls} calls",
            server_serials.len(),
            client_serials.len()
        );
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = connector
            .connect(name.clone(), tcp)
            .await
            .unwrap_or_else(|e| panic!("call {calls} failed its handshake: {e}"));
        let presented = tls.get_ref().1.peer_certificates().and_then(|c| c.first().map(|c| serial_of(c))).unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.unwrap_or_else(|e| panic!("call {calls} failed: {e}"));
        let seen_by_server = answer.trim().to_owned();
        assert!(!seen_by_server.is_empty(), "call {calls}: the backend saw no client certificate");
        server_serials.insert(presented);
        client_serials.insert(seen_by_server);
        calls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "{calls} calls, {} backend and {} frontend certificates, none failed",
        server_serials.len(),
        client_serials.len()
    );
}
