//! PrincipalService over real mTLS: every RPC's happy path, the permission matrix, input validation and hostile CSRs.

use crate::common;

use common::{Client, TestServer, key_and_csr, openssl_verify_client};
use principald::proto::{self as pb};
use tonic::Code;

mod permissions;
mod revocations;

fn create(id: &str, kind: pb::PrincipalType) -> pb::CreatePrincipalRequest {
    pb::CreatePrincipalRequest { id: id.into(), r#type: kind.into(), description: format!("{id} test"), email: None }
}

async fn issue(admin: &mut Client, id: &str, csr: Vec<u8>) -> Result<pb::IssueCertificateResponse, tonic::Status> {
    admin
        .issue_certificate(pb::IssueCertificateRequest { principal_id: id.into(), csr, validity_seconds: 0 })
        .await
        .map(|r| r.into_inner())
}

async fn certificate_count(admin: &mut Client, id: &str) -> usize {
    let request = pb::ListCertificatesRequest {
        principal_id: id.into(),
        include_revoked: true,
        page_size: 1000,
        ..Default::default()
    };
    admin.list_certificates(request).await.unwrap().into_inner().certificates.len()
}

#[tokio::test]
async fn principal_lifecycle_happy_path() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut request = create("worker-1", pb::PrincipalType::Worker);
    request.email = Some("ops@example.org".into());
    let created = admin.create_principal(request.clone()).await.unwrap().into_inner();
    assert_eq!((created.id.as_str(), created.status), ("worker-1", pb::PrincipalStatus::Active as i32));
    assert_eq!(created.email.as_deref(), Some("ops@example.org"));
    assert_eq!(admin.create_principal(request).await.unwrap_err().code(), Code::AlreadyExists);

    let got = admin.get_principal(pb::GetPrincipalRequest { id: "worker-1".into() }).await.unwrap().into_inner();
    assert_eq!(got, created);

    let suspended = admin
        .suspend_principal(pb::SuspendPrincipalRequest { id: "worker-1".into(), reason: "audit".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((suspended.status, suspended.status_reason.as_str()), (pb::PrincipalStatus::Suspended as i32, "audit"));
    let again = admin
        .suspend_principal(pb::SuspendPrincipalRequest { id: "worker-1".into(), reason: String::new() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let activated =
        admin.activate_principal(pb::ActivatePrincipalRequest { id: "worker-1".into() }).await.unwrap().into_inner();
    assert_eq!(activated.status, pb::PrincipalStatus::Active as i32);

    let deleted =
        admin.delete_principal(pb::DeletePrincipalRequest { id: "worker-1".into() }).await.unwrap().into_inner();
    assert_eq!(deleted.principal.unwrap().status, pb::PrincipalStatus::Deleted as i32);
    let gone = admin.activate_principal(pb::ActivatePrincipalRequest { id: "worker-1".into() }).await.unwrap_err();
    assert_eq!(gone.code(), Code::FailedPrecondition);
    let reuse = admin.create_principal(create("worker-1", pb::PrincipalType::Worker)).await.unwrap_err();
    assert_eq!(reuse.code(), Code::AlreadyExists, "ids of deleted principals are never reused");
}

#[tokio::test]
async fn list_principals_filters_and_pages() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    for i in 0..7 {
        admin.create_principal(create(&format!("w{i}"), pb::PrincipalType::Worker)).await.unwrap();
    }
    admin.create_principal(create("svc", pb::PrincipalType::Service)).await.unwrap();
    admin.suspend_principal(pb::SuspendPrincipalRequest { id: "w3".into(), reason: String::new() }).await.unwrap();

    let (mut ids, mut token) = (Vec::new(), String::new());
    loop {
        let request = pb::ListPrincipalsRequest {
            r#type: pb::PrincipalType::Worker.into(),
            status: 0,
            page_size: 3,
            page_token: token,
        };
        let page = admin.list_principals(request).await.unwrap().into_inner();
        assert!(page.principals.len() <= 3);
        ids.extend(page.principals.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ids, ["w0", "w1", "w2", "w3", "w4", "w5", "w6"]);

    let suspended = admin
        .list_principals(pb::ListPrincipalsRequest {
            status: pb::PrincipalStatus::Suspended.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(suspended.principals.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["w3"]);
    let all = admin.list_principals(pb::ListPrincipalsRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.principals.len(), 9, "7 workers, 1 service and the bootstrap admin");
    let bad =
        admin.list_principals(pb::ListPrincipalsRequest { page_size: -1, ..Default::default() }).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn certificate_lifecycle_happy_path() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    admin.create_principal(create("w1", pb::PrincipalType::Worker)).await.unwrap();
    let (_key, csr) = key_and_csr();
    let issued = issue(&mut admin, "w1", csr.into_bytes()).await.unwrap();
    let cert = issued.certificate.clone().unwrap();
    assert_eq!((cert.principal_id.as_str(), cert.status), ("w1", pb::CertificateStatus::Valid as i32));
    let lifetime = cert.not_after.unwrap().seconds - cert.not_before.unwrap().seconds;
    assert_eq!(lifetime, 30 * 86400 + 60, "30 days by default, plus the one-minute backdate");
    openssl_verify_client(&issued.ca_chain_pem, &issued.certificate_pem);

    let got =
        admin.get_certificate(pb::GetCertificateRequest { serial: cert.serial.clone() }).await.unwrap().into_inner();
    assert_eq!(got.certificate_pem, issued.certificate_pem);
    assert_eq!(got.sha256_fingerprint.len(), 64);

    let (_key, csr) = key_and_csr();
    let second = issue(&mut admin, "w1", csr.into_bytes()).await.unwrap().certificate.unwrap();
    let revoked = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: cert.serial.clone(),
            reason: pb::RevocationReason::Superseded.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (revoked.status, revoked.revocation_reason),
        (pb::CertificateStatus::Revoked as i32, pb::RevocationReason::Superseded as i32)
    );
    let twice = admin
        .revoke_certificate(pb::RevokeCertificateRequest { serial: cert.serial.clone(), reason: 0 })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);

    let unrevoked = admin
        .list_certificates(pb::ListCertificatesRequest {
            principal_id: "w1".into(),
            include_revoked: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unrevoked.certificates.iter().map(|c| c.serial.as_str()).collect::<Vec<_>>(), [second.serial.as_str()]);
    assert_eq!(certificate_count(&mut admin, "w1").await, 2);
}

#[tokio::test]
async fn requested_validity_may_shorten_but_never_lengthen() {
    let server = TestServer::start_with(&["--cert-validity", "worker=2h"]).await;
    let mut admin = server.admin().await;
    admin.create_principal(create("w1", pb::PrincipalType::Worker)).await.unwrap();
    let request = |validity_seconds| pb::IssueCertificateRequest {
        principal_id: "w1".into(),
        csr: key_and_csr().1.into_bytes(),
        validity_seconds,
    };
    let short = admin.issue_certificate(request(600)).await.unwrap().into_inner().certificate.unwrap();
    assert_eq!(short.not_after.unwrap().seconds - short.not_before.unwrap().seconds, 600 + 60);
    let default = admin.issue_certificate(request(0)).await.unwrap().into_inner().certificate.unwrap();
    assert_eq!(default.not_after.unwrap().seconds - default.not_before.unwrap().seconds, 7200 + 60);
    for too_much in [7201, 10, u64::MAX] {
        let status = admin.issue_certificate(request(too_much)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{too_much}: {status:?}");
    }
}

#[tokio::test]
async fn renew_issues_the_callers_own_identity_only() {
    let server = TestServer::start().await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;
    let mut client = server.client(&worker).await;
    let (key, csr) = key_and_csr();
    let renewed = client
        .renew_certificate(pb::RenewCertificateRequest { csr: csr.into_bytes(), validity_seconds: 0 })
        .await
        .unwrap()
        .into_inner();
    let cert = renewed.certificate.unwrap();
    assert_eq!((cert.principal_id.as_str(), cert.principal_type), ("w1", pb::PrincipalType::Worker as i32));
    openssl_verify_client(&renewed.ca_chain_pem, &renewed.certificate_pem);
    // The renewed certificate works on its own.
    let renewed_creds = principald::client::Credentials {
        ca_pem: renewed.ca_chain_pem,
        cert_pem: renewed.certificate_pem,
        key_pem: key.serialize_pem(),
    };
    let me = server.client(&renewed_creds).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!((me.principal_id.as_str(), me.certificate_serial), ("w1", cert.serial));
    // A worker cannot issue for someone else.
    let denied = client
        .issue_certificate(pb::IssueCertificateRequest {
            principal_id: "admin".into(),
            csr: key_and_csr().1.into_bytes(),
            validity_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn hostile_csrs_are_invalid_and_store_nothing() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    admin.create_principal(create("w1", pb::PrincipalType::Worker)).await.unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    let mut ca_request = rcgen::CertificateParams::default();
    ca_request.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_true = ca_request.serialize_request(&key).unwrap().pem().unwrap();
    let sans = rcgen::CertificateParams::new(vec!["admin.example.org".to_string(), "10.0.0.1".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let mut bad_signature = rcgen::CertificateParams::default().serialize_request(&key).unwrap().der().to_vec();
    let last = bad_signature.len() - 3;
    bad_signature[last] ^= 0xff;
    let rsa_1024 = openssl_csr(&["-newkey", "rsa:1024"]);
    let one_mib = vec![b'A'; 1 << 20];

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("CA:TRUE requested", ca_true.into_bytes(), "CA:TRUE"),
        ("extra SANs", sans.into_bytes(), "subjectAltName"),
        ("bad signature", bad_signature, "signature"),
        ("RSA 1024", rsa_1024, "1024 bits"),
        ("garbage", b"\x00\x01garbage".to_vec(), "PKCS#10"),
        ("empty", Vec::new(), "empty"),
        ("20 KiB", vec![0x30; 20 * 1024], "at most"),
        ("SHA-1 signature", openssl_csr(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-sha1"]), "SHA-1"),
    ];
    // Larger than any real request: refused by the message size limit before it is decoded.
    let status = issue(&mut admin, "w1", one_mib).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "1 MiB: {status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    for (name, csr, needle) in cases {
        let status = issue(&mut admin, "w1", csr).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(status.message().contains(needle), "{name}: {:?} should mention {needle:?}", status.message());
    }
    assert_eq!(certificate_count(&mut admin, "w1").await, 0, "no hostile CSR left a record");
}

#[tokio::test]
async fn rsa_2048_p384_and_ed25519_keys_are_accepted_and_verify_with_openssl() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    admin.create_principal(create("w1", pb::PrincipalType::Worker)).await.unwrap();
    let mut csrs = vec![openssl_csr(&["-newkey", "rsa:2048"])];
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        csrs.push(rcgen::CertificateParams::default().serialize_request(&key).unwrap().der().to_vec());
    }
    for csr in csrs {
        let issued = issue(&mut admin, "w1", csr).await.unwrap();
        openssl_verify_client(&issued.ca_chain_pem, &issued.certificate_pem);
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let bad_id = admin.create_principal(create("Bad Id!", pb::PrincipalType::Worker)).await.unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert!(bad_id.message().contains("lowercase letters"), "{bad_id:?}");
    let no_type = admin.create_principal(create("ok", pb::PrincipalType::Unspecified)).await.unwrap_err();
    assert_eq!(no_type.code(), Code::InvalidArgument);
    let bad_email = admin
        .create_principal(pb::CreatePrincipalRequest {
            email: Some("not-an-email".into()),
            ..create("ok", pb::PrincipalType::User)
        })
        .await
        .unwrap_err();
    assert_eq!(bad_email.code(), Code::InvalidArgument);
    let unknown = admin.get_principal(pb::GetPrincipalRequest { id: "nobody".into() }).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (Code::NotFound, "principal \"nobody\" not found"));
    let unknown_cert = admin.get_certificate(pb::GetCertificateRequest { serial: "abcd".into() }).await.unwrap_err();
    assert_eq!(unknown_cert.code(), Code::NotFound);
    let bad_serial = admin.get_certificate(pb::GetCertificateRequest { serial: "xyz".into() }).await.unwrap_err();
    assert_eq!(bad_serial.code(), Code::InvalidArgument);
    let hold =
        admin.revoke_certificate(pb::RevokeCertificateRequest { serial: "abcd".into(), reason: 6 }).await.unwrap_err();
    assert_eq!(hold.code(), Code::InvalidArgument, "certificateHold is not offered");
    let issue_unknown = issue(&mut admin, "nobody", key_and_csr().1.into_bytes()).await.unwrap_err();
    assert_eq!(issue_unknown.code(), Code::NotFound);
    let list_unknown = admin
        .list_certificates(pb::ListCertificatesRequest { principal_id: "nobody".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(list_unknown.code(), Code::NotFound);
    let bad_token = admin
        .list_certificates(pb::ListCertificatesRequest {
            principal_id: "admin".into(),
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    let self_suspend = admin
        .suspend_principal(pb::SuspendPrincipalRequest { id: "admin".into(), reason: String::new() })
        .await
        .unwrap_err();
    assert_eq!(self_suspend.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn suspended_principal_gets_no_certificates() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    admin.create_principal(create("w1", pb::PrincipalType::Worker)).await.unwrap();
    admin.suspend_principal(pb::SuspendPrincipalRequest { id: "w1".into(), reason: String::new() }).await.unwrap();
    let status = issue(&mut admin, "w1", key_and_csr().1.into_bytes()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(certificate_count(&mut admin, "w1").await, 0);
}

fn openssl_csr(key_args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/CN=test", "-outform", "DER", "-keyout"])
        .arg(dir.path().join("key.pem"))
        .args(key_args)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
