//! (o) Revocation for relying parties: OCSP responses per second from principald's PKI listener against `openssl ocsp
//! -index ... -port` (the anchor) in the same run, and the time from RevokeCertificate returning on one replica until
//! a third party sees the revocation in the other replica's OCSP answers and CRL.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use der::Decode;
use principald::client::Credentials;
use principald::proto as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procs;
use crate::report::Row;
use crate::{admin_credentials, connect, csr};

/// Connections in flight at once, for both responders.
const CONCURRENCY: usize = 8;
const REVOCATIONS: usize = 20;

pub async fn ocsp(rows: &mut Vec<Row>, data: &Path, store_args: &[String], duration: Duration) {
    let a = procs::principald(data, store_args);
    let b = procs::principald(data, store_args);
    let admin = admin_credentials(data);
    let mut client = connect(&a.url(), &admin).await;
    let _ = client
        .create_principal(pb::CreatePrincipalRequest {
            id: "ocsp-bench".into(),
            r#type: pb::PrincipalType::Worker.into(),
            ..Default::default()
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, serial) = issue(&mut client).await;
    let cert_file = dir.path().join("cert.pem");
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    let ca = data.join("ca.pem");
    let request = openssl_request(&ca, &cert_file, false);
    let with_nonce = openssl_request(&ca, &cert_file, true);
    let anchor = OpensslResponder::start(dir.path(), data, &cert.cert_pem);
    let pki = a.pki.expect("principald logs its PKI address");
    for (addr, path) in [(pki, "/ocsp"), (anchor.addr, "/")] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            if let Some(answer) = post(addr, path, &request).await {
                break answer;
            }
            assert!(Instant::now() < deadline, "no answer from {addr}{path}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status_of(&answer), "good", "{addr}");
    }
    let ours = rate(pki, "/ocsp", &request, duration).await;
    let theirs = rate(anchor.addr, "/", &request, duration).await;
    rows.push(
        Row::new(
            "o",
            "OCSP responses/s, one certificate, no nonce (cached answer), 8 connections in flight",
            ours,
            "resp/s",
        )
        .baseline("openssl ocsp -index -port (same request)", theirs)
        .min_ratio(10.0)
        .note(format!("serial {serial}; one request per connection, as RFC 5019 clients do")),
    );
    let ours = rate(pki, "/ocsp", &with_nonce, duration).await;
    let theirs = rate(anchor.addr, "/", &with_nonce, duration).await;
    rows.push(
        Row::new("o", "OCSP responses/s with a nonce (signed live, P-256), 8 connections in flight", ours, "resp/s")
            .baseline("openssl ocsp -index -port (same request)", theirs)
            .min_ratio(10.0),
    );
    drop(anchor);
    visibility(rows, &mut client, dir.path(), &ca, b.pki.expect("PKI address")).await;
}

/// Revocation through replica A, then polling replica B's OCSP answer and CRL until each says revoked.
async fn visibility(rows: &mut Vec<Row>, client: &mut crate::Client, dir: &Path, ca: &Path, pki: SocketAddr) {
    let (mut ocsp, mut crl) = (Vec::new(), Vec::new());
    for i in 0..REVOCATIONS {
        let (cert, serial) = issue(client).await;
        let cert_file = dir.join(format!("victim-{i}.pem"));
        std::fs::write(&cert_file, &cert.cert_pem).unwrap();
        let request = openssl_request(ca, &cert_file, false);
        let crl_path = format!("/crl/{}.crl", &serial[serial.len() - 1..]);
        let revoke =
            pb::RevokeCertificateRequest { serial: serial.clone(), reason: pb::RevocationReason::Superseded.into() };
        client.revoke_certificate(revoke).await.unwrap();
        let since = Instant::now();
        let (mut seen_ocsp, mut seen_crl) = (None, None);
        while (seen_ocsp.is_none() || seen_crl.is_none()) && since.elapsed() < Duration::from_secs(30) {
            if seen_ocsp.is_none() && post(pki, "/ocsp", &request).await.is_some_and(|r| status_of(&r) == "revoked") {
                seen_ocsp = Some(since.elapsed());
            }
            if seen_crl.is_none() && crl_lists(pki, &crl_path, &serial).await {
                seen_crl = Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ocsp.push(seen_ocsp.unwrap_or(Duration::from_secs(30)));
        crl.push(seen_crl.unwrap_or(Duration::from_secs(30)));
    }
    for (what, samples) in [("OCSP", ocsp), ("CRL", crl)] {
        let (p50, p99) = percentiles(samples);
        rows.push(
            Row::new(
                "o",
                format!("revocation returned on replica A -> {what} of replica B says revoked, p50"),
                p50,
                "ms",
            )
            .target("<= 2000 ms", p50 <= 2000.0),
        );
        rows.push(
            Row::new(
                "o",
                format!("revocation returned on replica A -> {what} of replica B says revoked, p99"),
                p99,
                "ms",
            )
            .target("<= 2000 ms", p99 <= 2000.0)
            .note(format!("{REVOCATIONS} revocations, polled every 10 ms")),
        );
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
    (ms(samples[samples.len() / 2]), ms(p99))
}

async fn issue(client: &mut crate::Client) -> (Credentials, String) {
    let (key, csr) = csr();
    let issued = client
        .issue_certificate(pb::IssueCertificateRequest { principal_id: "ocsp-bench".into(), csr, validity_seconds: 0 })
        .await
        .unwrap()
        .into_inner();
    let serial = issued.certificate.unwrap().serial;
    (
        Credentials { ca_pem: issued.ca_chain_pem, cert_pem: issued.certificate_pem, key_pem: key.serialize_pem() },
        serial,
    )
}

/// The DER OCSP request openssl makes for `cert` (SHA-1 CertID), with or without a nonce.
fn openssl_request(ca: &Path, cert: &Path, nonce: bool) -> Vec<u8> {
    let out = cert.with_extension(if nonce { "nonce.req" } else { "req" });
    let status = Command::new("openssl")
        .args(["ocsp", "-issuer"])
        .arg(ca)
        .arg("-cert")
        .arg(cert)
        .arg(if nonce { "-nonce" } else { "-no_nonce" })
        .arg("-reqout")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("openssl ocsp");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

/// `openssl ocsp` as a responder for the bench certificate, signing with the CA key itself (as principald does).
struct OpensslResponder {
    child: Child,
    addr: SocketAddr,
}

impl OpensslResponder {
    fn start(dir: &Path, data: &Path, cert_pem: &str) -> Self {
        let der = pem::parse(cert_pem).unwrap().into_contents();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let expiry = cert.validity().not_after.to_datetime();
        let format = time::macros::format_description!("[year repr:last_two][month][day][hour][minute][second]Z");
        let serial = principald::model::hex(cert.raw_serial()).to_uppercase();
        let line = format!("V\t{}\t\t{serial}\tunknown\t/CN=ocsp-bench\n", expiry.format(&format).unwrap());
        let index = dir.join("index.txt");
        std::fs::write(&index, line).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("openssl")
            .args(["ocsp", "-index"])
            .arg(&index)
            .args(["-port", &port.to_string(), "-rsigner"])
            .arg(data.join("ca.pem"))
            .arg("-rkey")
            .arg(data.join("ca.key"))
            .arg("-CA")
            .arg(data.join("ca.pem"))
            .args(["-ignore_err", "-nmin", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl ocsp responder");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // No probe connection: openssl's responder serves one connection at a time and waits on an empty one.
        Self { child, addr }
    }
}

impl Drop for OpensslResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Successful answers per second from `addr` for `body`, over new connections, [`CONCURRENCY`] at a time.
async fn rate(addr: SocketAddr, path: &'static str, body: &[u8], duration: Duration) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let body: Arc<[u8]> = body.into();
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (count, body) = (count.clone(), body.clone());
            tokio::spawn(async move {
                while started.elapsed() < duration {
                    if post(addr, path, &body).await.is_some() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// `POST path` with an OCSP request; the response body when the status is 200.
async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(&[head.as_bytes(), body].concat()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.ok()?.ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let ok = response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200");
    (ok && response.len() > split + 4).then(|| response[split + 4..].to_vec())
}

/// "good", "revoked", "unknown" or why not.
fn status_of(der: &[u8]) -> String {
    let Ok(response) = x509_ocsp::OcspResponse::from_der(der) else { return "undecodable".into() };
    let Some(bytes) = response.response_bytes else { return format!("{:?}", response.response_status) };
    let Ok(basic) = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes()) else { return "bad".into() };
    match basic.tbs_response_data.responses.first().map(|r| &r.cert_status) {
        Some(x509_ocsp::CertStatus::Good(_)) => "good".into(),
        Some(x509_ocsp::CertStatus::Revoked(_)) => "revoked".into(),
        Some(x509_ocsp::CertStatus::Unknown(_)) => "unknown".into(),
        None => "empty".into(),
    }
}

/// Whether the CRL at `path` lists `serial` (hex, as principald prints it).
async fn crl_lists(addr: SocketAddr, path: &str, serial: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return false };
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).await.is_err() {
        return false;
    }
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let Ok((_, crl)) = x509_parser::parse_x509_crl(&response[split + 4..]) else { return false };
    crl.iter_revoked_certificates().any(|r| principald::model::hex(r.raw_serial()) == serial)
}
