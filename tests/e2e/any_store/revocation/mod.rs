//! Revocation as relying parties see it: every certificate names its CRL and the OCSP responder on the public PKI
//! listener; `openssl verify -crl_check` with the CRL fetched from the certificate's own distribution point, and
//! `openssl ocsp` against the URL in its authority information access, say good, then revoked after a revocation
//! and after a suspension of its principal (a void by the revocation floor), and unknown for a serial principald
//! never issued. On SQLite, and on DynamoDB Local with PRINCIPALD_TEST_STORE=dynamodb.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestServer, http_get, temp_file};
use principald::client::Credentials;
use principald::proto::{self as pb};

mod remote_roots;

/// The leaf's CRL distribution point and OCSP URL, as openssl reads them.
fn pointers(cert_pem: &str) -> (String, String) {
    let (_d, leaf) = temp_file("leaf.pem", cert_pem);
    let ocsp = std::process::Command::new("openssl").args(["x509", "-noout", "-ocsp_uri", "-in"]).arg(&leaf).output();
    let ocsp = String::from_utf8_lossy(&ocsp.unwrap().stdout).trim().to_owned();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "crlDistributionPoints", "-in"])
        .arg(&leaf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let crl = text.lines().find_map(|l| l.trim().strip_prefix("URI:")).expect("a CRL distribution point").to_owned();
    (crl, ocsp)
}

/// The first certificate of a PEM chain, and the rest (the intermediate, when there is one).
fn split_chain(chain_pem: &str) -> (String, String) {
    let certs = pem::parse_many(chain_pem).unwrap();
    let rest: Vec<String> = certs[1..].iter().map(pem::encode).collect();
    (pem::encode(&certs[0]), rest.concat())
}

/// `openssl ocsp` for `cert_pem` issued by `issuer_pem`, trusting `ca_pem`: its status line (`good`, `revoked`,
/// `unknown`) and the whole output.
fn openssl_ocsp(url: &str, issuer_pem: &str, cert_pem: &str, ca_pem: &str) -> (String, String) {
    let (_a, issuer) = temp_file("issuer.pem", issuer_pem);
    let (_b, cert) = temp_file("cert.pem", cert_pem);
    let (_c, ca) = temp_file("ca.pem", ca_pem);
    let out = std::process::Command::new("openssl")
        .args(["ocsp", "-url", url, "-issuer"])
        .arg(&issuer)
        .arg("-cert")
        .arg(&cert)
        .arg("-CAfile")
        .arg(&ca)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let status = text
        .lines()
        .find_map(|l| l.split_once(": ").filter(|(k, _)| k.ends_with("cert.pem")).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_default();
    (status, text)
}

/// `openssl verify -crl_check` of the leaf with the CRL fetched over HTTP from its own distribution point.
fn openssl_verify_with_its_crl(server: &TestServer, creds: &Credentials) -> (bool, String) {
    let (leaf, intermediate) = split_chain(&creds.cert_pem);
    let (crl_url, _) = pointers(&leaf);
    let path = crl_url.split_once("://").and_then(|(_, rest)| rest.split_once('/')).map(|(_, p)| format!("/{p}"));
    let (code, der) = get_bytes(server.running.pki_addr, &path.unwrap());
    assert_eq!(code, 200, "the CRL at {crl_url} is served");
    let crl = pem::encode(&pem::Pem::new("X509 CRL", der));
    let (_a, crl_file) = temp_file("crl.pem", &crl);
    let (_b, ca) = temp_file("ca.pem", &server.ca_pem());
    let (_c, leaf_file) = temp_file("leaf.pem", &leaf);
    let mut command = std::process::Command::new("openssl");
    command.args(["verify", "-crl_check", "-CAfile"]).arg(&ca).arg("-CRLfile").arg(&crl_file);
    let _i;
    if !intermediate.is_empty() {
        let (dir, file) = temp_file("untrusted.pem", &intermediate);
        _i = dir;
        command.arg("-untrusted").arg(file);
    }
    let out = command.arg(&leaf_file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains(": OK"), text)
}

fn get_bytes(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let code = String::from_utf8_lossy(&response[..split]).split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, response[split + 4..].to_vec())
}

/// Retries `check` until it holds or `within` has passed (a revocation reaches CRLs on the next epoch check).
async fn eventually(within: Duration, mut check: impl FnMut() -> (bool, String)) {
    let deadline = Instant::now() + within;
    loop {
        let (ok, text) = check();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What openssl says about `creds` over OCSP: its status line and output.
fn ocsp_of(server: &TestServer, creds: &Credentials) -> (String, String) {
    let (leaf, intermediate) = split_chain(&creds.cert_pem);
    let (_, ocsp_url) = pointers(&leaf);
    let issuer = if intermediate.is_empty() { server.ca_pem() } else { intermediate };
    openssl_ocsp(&ocsp_url, &issuer, &leaf, &server.ca_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_suspended_certificates_are_revoked_for_openssl_over_crl_and_ocsp() {
    let server = TestServer::start().await;
    let revoked = server.enroll("rp-revoked", pb::PrincipalType::Worker).await;
    let suspended = server.enroll("rp-suspended", pb::PrincipalType::Worker).await;
    let kept = server.enroll("rp-kept", pb::PrincipalType::Worker).await;
    for creds in [&revoked, &suspended, &kept] {
        let (leaf, _) = split_chain(&creds.cert_pem);
        let (crl, ocsp) = pointers(&leaf);
        let pki = format!("http://{}", server.running.pki_addr);
        assert!(crl.starts_with(&format!("{pki}/crl/")) && ocsp == format!("{pki}/ocsp"), "{crl} {ocsp}");
        let (status, text) = ocsp_of(&server, creds);
        assert_eq!(status, "good", "{text}");
        assert!(text.contains("Response verify OK"), "{text}");
        let (ok, text) = openssl_verify_with_its_crl(&server, creds);
        assert!(ok, "{text}");
    }

    let mut admin = server.admin().await;
    let (leaf, _) = split_chain(&revoked.cert_pem);
    let der = pem::parse(&leaf).unwrap().into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let serial = principald::model::Serial::from_bytes(cert.raw_serial()).as_str().to_owned();
    admin
        .revoke_certificate(pb::RevokeCertificateRequest { serial, reason: pb::RevocationReason::Superseded.into() })
        .await
        .expect("revoke");
    admin
        .suspend_principal(pb::SuspendPrincipalRequest { id: "rp-suspended".into(), reason: "lost laptop".into() })
        .await
        .expect("suspend");

    // openssl names reasons up to removeFromCRL (8); privilegeWithdrawn (9) prints as "(UNKNOWN)" there, and by
    // name in the CRL's text.
    for (creds, reason) in [(&revoked, "superseded"), (&suspended, "(UNKNOWN)")] {
        let (status, text) = ocsp_of(&server, creds);
        assert_eq!(status, "revoked", "OCSP says revoked at once: {text}");
        assert!(text.contains(&format!("Reason: {reason}")), "{text}");
        eventually(Duration::from_secs(10), || {
            let (ok, text) = openssl_verify_with_its_crl(&server, creds);
            (!ok && text.contains("certificate revoked"), text)
        })
        .await;
    }
    let (leaf, _) = split_chain(&suspended.cert_pem);
    let (crl_url, _) = pointers(&leaf);
    let (_, der) = get_bytes(server.running.pki_addr, &crl_url[crl_url.find("/crl/").unwrap()..]);
    let crl = pem::encode(&pem::Pem::new("X509 CRL", der));
    let (_d, file) = temp_file("crl.pem", &crl);
    let out =
        std::process::Command::new("openssl").args(["crl", "-noout", "-text", "-in"]).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Privilege Withdrawn"), "the suspension's reason is on the CRL: {text}");
    let (status, text) = ocsp_of(&server, &kept);
    assert_eq!(status, "good", "{text}");
    assert!(openssl_verify_with_its_crl(&server, &kept).0);

    // Python's `cryptography` (another OCSP implementation) agrees, with SHA-1 and SHA-256 CertIDs.
    for (creds, status, reason) in [
        (&kept, "GOOD", serde_json::Value::Null),
        (&revoked, "REVOKED", "superseded".into()),
        (&suspended, "REVOKED", "privilege_withdrawn".into()),
    ] {
        for hash in ["sha1", "sha256"] {
            let answer = python_ocsp(&server, creds, hash);
            assert_eq!(answer["certificate_status"], status, "{answer}");
            assert_eq!(answer["revocation_reason"], reason, "{answer}");
            assert_eq!(answer["signature_verified"], true, "{answer}");
        }
    }
}

/// What `scripts/ocsp-query` (Python `cryptography`) hears from the certificate's OCSP URL.
fn python_ocsp(server: &TestServer, creds: &Credentials, hash: &str) -> serde_json::Value {
    let (leaf, intermediate) = split_chain(&creds.cert_pem);
    let (_, url) = pointers(&leaf);
    let issuer = if intermediate.is_empty() { server.ca_pem() } else { intermediate };
    let (_a, leaf_file) = temp_file("leaf.pem", &leaf);
    let (_b, issuer_file) = temp_file("issuer.pem", &issuer);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ocsp-query");
    let out =
        std::process::Command::new(script).arg(&leaf_file).arg(&issuer_file).arg(&url).arg(hash).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_principald_never_issued_is_unknown_and_garbage_is_malformed() {
    let server = TestServer::start().await;
    let worker = server.enroll("rp-worker", pb::PrincipalType::Worker).await;
    let (leaf, intermediate) = split_chain(&worker.cert_pem);
    let (_, ocsp_url) = pointers(&leaf);
    // A certificate of another CA, asked about as if this CA had issued it: its serial is unknown here.
    let other = principald::pki::ca::CertificateAuthority::generate("other", time::Duration::days(1)).unwrap();
    let foreign = common::mint_with(&other, &rcgen::CertificateParams::new(vec!["x".into()]).unwrap());
    let issuer = if intermediate.is_empty() { server.ca_pem() } else { intermediate };
    let (status, text) = openssl_ocsp(&ocsp_url, &issuer, &foreign.cert_pem, &server.ca_pem());
    assert_eq!(status, "unknown", "{text}");
    // Asked about under the other CA's name: this responder is not authoritative.
    let (_, text) = openssl_ocsp(&ocsp_url, other.cert_pem(), &foreign.cert_pem, &server.ca_pem());
    assert!(text.contains("unauthorized"), "{text}");
    let (code, body) = http_get(server.running.pki_addr, "/ocsp/AAAA");
    assert_eq!(code, 200, "{body}");
    // The health listener no longer serves CRLs, and the PKI listener serves no metrics.
    assert_eq!(http_get(server.running.health_addr, "/crl/0.crl").0, 404);
    assert_eq!(http_get(server.running.pki_addr, "/metrics").0, 404);
}
