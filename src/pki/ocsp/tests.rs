//! Unit tests of the OCSP messages: requests parsed, responses built and read back.

use std::path::Path;
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SerialNumber, SigningKey};
use time::macros::datetime;

use super::*;

const SERIAL: [u8; 4] = [0x80, 0x01, 0x02, 0x03];

/// A P-256 CA and a leaf it signed, as ca.pem and leaf.pem in a temporary directory.
fn pki() -> (tempfile::TempDir, KeyPair, IssuerKey) {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(vec![]).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "ocsp test ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::new(vec!["leaf.test".into()]).unwrap();
    leaf.serial_number = Some(SerialNumber::from_slice(&SERIAL));
    let leaf_cert = leaf.signed_by(&leaf_key, &Issuer::new(ca, &ca_key)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("leaf.pem"), leaf_cert.pem()).unwrap();
    let issuer = IssuerKey::from_cert_der(ca_cert.der()).unwrap();
    (dir, ca_key, issuer)
}

/// Runs `openssl ocsp ARGS` in `dir`: whether it succeeded, and what it printed.
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").arg("ocsp").args(args).current_dir(dir).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Asks openssl for a request, answers it with `status` and returns what openssl says of the response. openssl
/// ignores `-reqin` when given `-cert`, so the nonce check and the status summary take two runs.
fn round_trip(sha256: bool, nonce: bool, status: Status) -> String {
    let (dir, ca_key, issuer) = pki();
    let (digest, nonce_flag) = (if sha256 { "-sha256" } else { "-sha1" }, if nonce { "-nonce" } else { "-no_nonce" });
    let args = ["-issuer", "ca.pem", digest, "-cert", "leaf.pem", nonce_flag, "-reqout", "req.der"];
    assert!(openssl(dir.path(), &args).0);
    let query = parse_request(&std::fs::read(dir.path().join("req.der")).unwrap(), 4).unwrap();
    assert_eq!(query.nonce.as_ref().map(Vec::len), nonce.then_some(16));
    let [cert] = &query.certs[..] else { panic!("one certid expected") };
    let hash = if sha256 { HashAlg::Sha256 } else { HashAlg::Sha1 };
    assert_eq!((cert.hash, cert.serial.as_slice()), (hash, &SERIAL[..]), "no sign byte");
    assert!(issuer.matches(cert));
    let respond = |nonce: Option<&[u8]>| {
        let (now, next) = (datetime!(2030-01-02 03:04:05.678 UTC), datetime!(2030-01-03 03:04:05 UTC));
        let sign = |tbs: &[u8]| ca_key.sign(tbs).map_err(|e| Error::internal("sign", e));
        let der = build_response(&issuer, &[(cert, status)], nonce, now, next, sign).unwrap();
        std::fs::write(dir.path().join("resp.der"), der).unwrap();
    };
    let verify = ["-respin", "resp.der", "-issuer", "ca.pem", "-CAfile", "ca.pem", "-validity_period", "999999999"];
    if nonce {
        respond(Some(b"another nonce"));
        let (ok, text) = openssl(dir.path(), &[&verify[..], &["-reqin", "req.der"]].concat());
        assert!(!ok && text.contains("Nonce Verify error"), "{text}");
    }
    respond(query.nonce.as_deref());
    let (ok, text) = openssl(dir.path(), &[&verify[..], &["-reqin", "req.der"]].concat());
    assert!(ok && text.contains("Response verify OK") && !text.contains("WARNING"), "{text}");
    let (ok, text) =
        openssl(dir.path(), &[&verify[..], &[digest, "-cert", "leaf.pem", "-no_nonce", "-resp_text"]].concat());
    assert!(ok && text.contains("Response verify OK") && !text.contains("WARNING"), "{text}");
    assert!(text.contains("Produced At: Jan  2 03:04:05 2030 GMT"), "{text}");
    assert!(text.contains("Next Update: Jan  3 03:04:05 2030 GMT"), "{text}");
    assert_eq!(text.contains("OCSP Nonce"), nonce, "{text}");
    text
}

#[test]
fn openssl_verifies_each_status_for_sha1_and_sha256_certids() {
    let revoked = |reason| Status::Revoked { at: datetime!(2029-12-31 23:59:59 UTC), reason };
    let cases = [
        (false, true, Status::Good, "good"),
        (true, false, revoked(Some(1)), "revoked"),
        (true, true, revoked(None), "revoked"),
        (false, false, Status::Unknown, "unknown"),
    ];
    for (sha256, nonce, status, word) in cases {
        let text = round_trip(sha256, nonce, status);
        assert!(text.contains(&format!("leaf.pem: {word}")), "{text}");
        assert_eq!(text.contains("Revocation Time: Dec 31 23:59:59 2029 GMT"), word == "revoked", "{text}");
        let key_compromise = matches!(status, Status::Revoked { reason: Some(1), .. });
        assert_eq!(text.matches("Reason:").count(), text.matches("Reason: keyCompromise").count(), "{text}");
        assert_eq!(text.contains("Reason: keyCompromise"), key_compromise, "{text}");
    }
}

#[test]
fn refuses_bad_requests() {
    let ((dir, _, issuer), (_, _, other)) = (pki(), pki());
    let args = ["-issuer", "ca.pem", "-cert", "leaf.pem", "-cert", "leaf.pem", "-reqout", "req.der"];
    assert!(openssl(dir.path(), &args).0);
    let der = std::fs::read(dir.path().join("req.der")).unwrap();
    let good = parse_request(&der, 2).unwrap();
    assert!(good.certs.iter().all(|c| issuer.matches(c) && !other.matches(c)));
    let err = parse_request(&der, 1).unwrap_err();
    assert_eq!(err.to_string(), "request names 2 certificates, 1 to 1 allowed");
    assert_eq!(err.status(), ResponseStatus::MalformedRequest);
    assert!(parse_request(b"\x30\x03garbage", 2).is_err());
    assert!(parse_request(&[der.as_slice(), b"\0"].concat(), 2).is_err(), "trailing data");

    // openssl's request carries one extension, the nonce.
    let edited = |edit: &dyn Fn(&mut OcspRequest)| {
        let mut request = OcspRequest::from_der(&der).unwrap();
        edit(&mut request);
        parse_request(&request.to_der().unwrap(), 2).map(|q| q.nonce)
    };
    let nonce = |value: Vec<u8>| {
        edited(&|r| {
            r.tbs_request.request_extensions.as_mut().unwrap()[0].extn_value = OctetString::new(value.clone()).unwrap()
        })
    };
    let wrapped = |n: &[u8]| OctetString::new(n).unwrap().to_der().unwrap();
    assert!(edited(&|r| r.tbs_request.request_list.clear()).is_err(), "zero certs");
    assert!(edited(&|r| r.tbs_request.request_list[1].req_cert.hash_algorithm.oid = rfc5912::ID_SHA_384).is_err());
    assert_eq!(nonce(wrapped(&[7; 32])), Ok(Some(vec![7; 32])));
    assert!(nonce(wrapped(&[7; 33])).is_err(), "33-byte nonce");
    assert!(nonce(wrapped(&[])).is_err(), "empty nonce");
    assert!(nonce(vec![7; 16]).is_err(), "nonce not wrapped in an octet string");
}

#[test]
fn openssl_reads_error_statuses() {
    let dir = tempfile::tempdir().unwrap();
    for (status, name) in [
        (ResponseStatus::MalformedRequest, "malformedrequest (1)"),
        (ResponseStatus::InternalError, "internalerror (2)"),
        (ResponseStatus::TryLater, "trylater (3)"),
        (ResponseStatus::Unauthorized, "unauthorized (6)"),
    ] {
        std::fs::write(dir.path().join("x.der"), error_response(status)).unwrap();
        let (_, text) = openssl(dir.path(), &["-respin", "x.der", "-resp_text", "-noverify"]);
        assert!(text.contains(&format!("Responder Error: {name}")), "{text}");
    }
}
