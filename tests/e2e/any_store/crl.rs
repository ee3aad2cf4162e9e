//! CRLs end to end: certificates name their partition's CRL; openssl (-crl_check) and a plain rustls server
//! (WebPkiClientVerifier with principald's CRLs) accept valid certificates and refuse revoked ones, partition by
//! partition; the HTTP endpoint, the RPC and principalctl serve the same CRLs. On SQLite, and on DynamoDB Local with
//! PRINCIPALD_TEST_STORE=dynamodb.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, principalctl, temp_file};
use principald::client::Credentials;
use principald::pki::crl::{PARTITIONS, partition_name, partition_of};
use principald::proto::{self as pb};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// GET over plain HTTP (a blocking client, off the runtime): status, headers (lowercase names), body bytes.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || get_blocking(addr, &path)).await.unwrap()
}

fn get_blocking(addr: std::net::SocketAddr, path: &str) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let mut lines = head.lines();
    let code = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (code, headers, response[split + 4..].to_vec())
}

fn crl_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("X509 CRL", der.to_vec()))
}

fn leaf_der(creds: &Credentials) -> Vec<u8> {
    pem::parse_many(&creds.cert_pem).unwrap()[0].contents().to_vec()
}

fn serial_of(creds: &Credentials) -> String {
    let der = leaf_der(creds);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    principald::model::Serial::from_bytes(cert.raw_serial()).as_str().to_owned()
}

/// Certificates of one principal until every partition has one to keep and one to revoke.
async fn certificates_in_every_partition(server: &TestServer) -> BTreeMap<u8, (Credentials, Credentials)> {
    server.enroll("crl-worker", pb::PrincipalType::Worker).await;
    let mut slots: BTreeMap<u8, Vec<Credentials>> = BTreeMap::new();
    while slots.len() < usize::from(PARTITIONS) || slots.values().any(|v| v.len() < 2) {
        let creds = server.issue("crl-worker").await;
        let partition = partition_of(&serial_of(&creds).parse().unwrap());
        let slot = slots.entry(partition).or_default();
        if slot.len() < 2 {
            slot.push(creds);
        }
    }
    slots.into_iter().map(|(p, mut v)| (p, (v.remove(0), v.remove(0)))).collect()
}

async fn fetch_all(server: &TestServer) -> BTreeMap<u8, pb::Crl> {
    let mut admin = server.admin().await;
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let crl = admin.get_crl(pb::GetCrlRequest { partition: partition_name(p) }).await.unwrap().into_inner();
        out.insert(p, crl);
    }
    out
}

#[tokio::test]
async fn openssl_and_rustls_accept_valid_and_refuse_revoked_certificates_in_every_partition() {
    let server = TestServer::start().await;
    let certs = certificates_in_every_partition(&server).await;
    let before = fetch_all(&server).await;
    let mut admin = server.admin().await;
    for (_, revoked) in certs.values() {
        let request = pb::RevokeCertificateRequest { serial: serial_of(revoked), reason: 4 };
        admin.revoke_certificate(request).await.unwrap();
    }
    // The publisher re-signs within a second or two of the revocations.
    let mut crls = fetch_all(&server).await;
    for _ in 0..100 {
        if crls.values().all(|c| c.entries == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        crls = fetch_all(&server).await;
    }
    let health = server.running.pki_addr;
    for (p, crl) in &crls {
        assert_eq!(crl.entries, 1, "partition {p}");
        assert!(crl.number > before[p].number, "the CRL number grows: {} -> {}", before[p].number, crl.number);
        assert_eq!(crl.url, format!("http://{health}/crl/{}.crl", partition_name(*p)));
        let (code, headers, der) = get(health, &format!("/crl/{}.crl", partition_name(*p))).await;
        assert_eq!((code, der.as_slice()), (200, crl.der.as_slice()), "HTTP serves the same CRL");
        assert_eq!(headers["content-type"], "application/pkix-crl");
        assert!(headers["cache-control"].starts_with("public, max-age="), "{headers:?}");
        assert!(headers.contains_key("expires") && headers.contains_key("last-modified"), "{headers:?}");
    }

    // openssl: each partition's CRL decides for the certificates of that partition.
    let ca_pem = server.ca_pem();
    for (p, (valid, revoked)) in &certs {
        let (_d, crl_file) = temp_file("crl.pem", &crl_pem(&crls[p].der));
        for (creds, expect_ok) in [(valid, true), (revoked, false)] {
            let (_c, ca) = temp_file("ca.pem", &ca_pem);
            let (_l, leaf) = temp_file("leaf.pem", &creds.cert_pem);
            let out = std::process::Command::new("openssl")
                .args(["verify", "-crl_check", "-purpose", "sslclient", "-CAfile"])
                .arg(&ca)
                .arg("-CRLfile")
                .arg(&crl_file)
                .arg(&leaf)
                .output()
                .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.status.success(), expect_ok, "partition {p}: {text}");
            if !expect_ok {
                assert!(text.contains("certificate revoked"), "{text}");
            }
        }
    }
    let listed = openssl_crl_text(&crls[&0].der);
    assert!(listed.contains("Issuing Distribution Point") && listed.contains("/crl/0.crl"), "{listed}");

    // A plain rustls server configured with principald's CRLs.
    let all: Vec<CertificateRevocationListDer<'static>> =
        crls.values().map(|c| CertificateRevocationListDer::from(c.der.clone())).collect();
    let addr = rustls_server(&ca_pem, all).await;
    for (p, (valid, revoked)) in &certs {
        assert!(rustls_handshake(addr, valid).await.is_ok(), "partition {p}: a valid certificate connects");
        let refused = rustls_handshake(addr, revoked).await.expect_err("revoked");
        assert!(refused.to_lowercase().contains("revoked"), "partition {p}: {refused}");
    }
}

fn openssl_crl_text(der: &[u8]) -> String {
    let (_d, file) = temp_file("crl.pem", &crl_pem(der));
    let out =
        std::process::Command::new("openssl").args(["crl", "-noout", "-text", "-in"]).arg(&file).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TLS server that requires client certificates from `ca_pem`, checked against `crls`; it answers each connection
/// with one byte after the handshake.
async fn rustls_server(ca_pem: &str, crls: Vec<CertificateRevocationListDer<'static>>) -> std::net::SocketAddr {
    principald::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pem::parse(ca_pem).unwrap().into_contents())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).with_crls(crls).build().unwrap();
    let server_ca = principald::pki::ca::CertificateAuthority::generate("rp test", time::Duration::days(1)).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let (cert, _) = server_ca.sign(&params, &key).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::try_from(key.serialize_der()).unwrap())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    use tokio::io::AsyncWriteExt;
                    let _ = tls.write_all(b"!").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Connects with `creds` as client; `Ok` once the server has accepted the certificate (its byte arrived).
async fn rustls_handshake(addr: std::net::SocketAddr, creds: &Credentials) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let chain: Vec<CertificateDer<'static>> = pem::parse_many(&creds.cert_pem)
        .unwrap()
        .into_iter()
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    let key = PrivateKeyDer::try_from(pem::parse(&creds.key_pem).unwrap().into_contents()).unwrap();
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    // TLS 1.3: the server's verdict on the client certificate arrives after the client's handshake completes.
    match tls.read_exact(&mut byte).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// The test's client does not check the relying party's server certificate: only the client side is under test.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn bad_partitions_are_refused_and_principalctl_fetches_every_crl() {
    let server = TestServer::start().await;
    let health = server.running.pki_addr;
    for bad in ["/crl/g.crl", "/crl/10.crl", "/crl/a", "/crl/..%2Fca.key", "/crl/A.crl"] {
        assert_eq!(get(health, bad).await.0, 404, "{bad}");
    }
    let mut admin = server.admin().await;
    let status = admin.get_crl(pb::GetCrlRequest { partition: "z".into() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let out = tempfile::tempdir().unwrap();
    let profile = server.data_dir.join("profiles").join("admin");
    let fetched = principalctl(&profile, &["crl", "fetch", "--out", out.path().to_str().unwrap()]).await;
    assert!(fetched.status.success(), "{fetched:?}");
    for p in 0..PARTITIONS {
        let der = std::fs::read(out.path().join(format!("{}.crl", partition_name(p)))).unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        assert_eq!(crl.iter_revoked_certificates().count(), 0);
        assert!(crl.next_update().is_some());
    }
    let bundle = std::fs::read_to_string(out.path().join("crls.pem")).unwrap();
    assert_eq!(bundle.matches("BEGIN X509 CRL").count(), usize::from(PARTITIONS));
    let one = principalctl(&profile, &["crl", "fetch", "3", "-o", "json", "--out", out.path().to_str().unwrap()]).await;
    let listed: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(listed[0]["partition"], "3");
    assert_eq!(listed[0]["url"], format!("http://{health}/crl/3.crl"));
}

#[tokio::test]
async fn crls_expire_an_hour_after_signing_by_default_and_certificates_name_their_partition() {
    let server = TestServer::start().await;
    let creds = server.enroll("dp", pb::PrincipalType::Service).await;
    let der = leaf_der(&creds);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let serial = principald::model::Serial::from_bytes(cert.raw_serial());
    let expected = format!("http://{}/crl/{}.crl", server.running.pki_addr, partition_name(partition_of(&serial)));
    let points = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::CRLDistributionPoints(points) => Some(format!("{points:?}")),
            _ => None,
        })
        .expect("a CRL distribution point");
    assert!(points.contains(&expected), "{points}");
    let crl = fetch_all(&server).await.remove(&0).unwrap();
    let validity = crl.next_update.unwrap().seconds - crl.this_update.unwrap().seconds;
    assert_eq!(validity, 3600);
}

/// A suspended principal's certificate is refused by a plain rustls server configured with principald's CRLs (the
/// suspension's void reaches the CRLs), while another principal's certificate still connects.
#[tokio::test]
async fn rustls_with_the_crls_refuses_a_suspended_principals_certificate() {
    let server = TestServer::start().await;
    let suspended = server.enroll("crl-suspended", pb::PrincipalType::Worker).await;
    let kept = server.enroll("crl-kept", pb::PrincipalType::Worker).await;
    let before = fetch_all(&server).await;
    server
        .admin()
        .await
        .suspend_principal(pb::SuspendPrincipalRequest { id: "crl-suspended".into(), reason: "lost".into() })
        .await
        .unwrap();
    let partition = partition_of(&serial_of(&suspended).parse().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let crls = loop {
        let crls = fetch_all(&server).await;
        if crls[&partition].entries == before[&partition].entries + 1 {
            break crls;
        }
        assert!(std::time::Instant::now() < deadline, "the suspension never reached the CRL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all = crls.values().map(|c| CertificateRevocationListDer::from(c.der.clone())).collect();
    let addr = rustls_server(&server.ca_pem(), all).await;
    let refused = rustls_handshake(addr, &suspended).await.expect_err("suspended");
    assert!(refused.to_lowercase().contains("revoked"), "{refused}");
    assert!(rustls_handshake(addr, &kept).await.is_ok(), "another principal's certificate connects");
}

/// Read-your-writes: GetCrl right after a revocation (and a suspension) answers with a CRL that lists it, without
/// waiting for the background refresh.
#[tokio::test]
async fn get_crl_right_after_a_revocation_lists_it() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    for round in 0..3 {
        let id = format!("ryw-{round}");
        let creds = server.enroll(&id, pb::PrincipalType::Worker).await;
        let serial = serial_of(&creds);
        let partition = partition_name(partition_of(&serial.parse().unwrap()));
        let before = admin.get_crl(pb::GetCrlRequest { partition: partition.clone() }).await.unwrap().into_inner();
        if round == 2 {
            admin.suspend_principal(pb::SuspendPrincipalRequest { id, reason: "lost".into() }).await.unwrap();
        } else {
            let request = pb::RevokeCertificateRequest { serial: serial.clone(), ..Default::default() };
            admin.revoke_certificate(request).await.unwrap();
        }
        let after = admin.get_crl(pb::GetCrlRequest { partition }).await.unwrap().into_inner();
        assert_eq!(after.entries, before.entries + 1, "round {round}: the revocation is in the next GetCrl");
        assert!(after.number > before.number);
        let text = openssl_crl_text(&after.der);
        let der = leaf_der(&creds);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let openssl_serial = cert.raw_serial().iter().map(|b| format!("{b:02X}")).collect::<String>();
        assert!(text.contains(openssl_serial.trim_start_matches("00")), "round {round}: {text}");
    }
}
