//! The SPIFFE Workload API as the agent serves it: X.509-SVIDs checked by openssl, rotation and revocation pushed on
//! the stream, JWT-SVIDs, and the refusals the specification asks for.

use principald::proto::spiffe::{JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest};
use principald::proto::{self as pb};
use tonic::Code;

use super::{Agent, entry, first_der, next_matching, revoked_in, serial_of, server};
use crate::common::openssl_verify;

fn pem(der: &[u8], label: &str) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

#[tokio::test]
async fn a_workload_gets_an_svid_openssl_verifies_and_its_rotation_is_pushed() {
    let server = server().await;
    let _agent = Agent::join(&server, "node-a").await;
    let agent = &_agent;
    entry(&server, "web", "node-a", 30, &[]).await;
    let mut stream = agent.client().await.fetch_x509svid(X509svidRequest {}).await.unwrap().into_inner();
    let first = next_matching(&mut stream, |m| !m.svids.is_empty()).await.unwrap();
    let svid = &first.svids[0];
    assert_eq!(svid.spiffe_id, "spiffe://principald.local/service/web");
    let leaf = first_der(&svid.x509_svid);
    let untrusted = pem(&svid.x509_svid[leaf.len()..], "CERTIFICATE");
    let roots = pem(&svid.bundle, "CERTIFICATE");
    let untrusted = (!svid.x509_svid[leaf.len()..].is_empty()).then_some(untrusted.as_str());
    let (ok, text) = openssl_verify(&roots, untrusted, &pem(&leaf, "CERTIFICATE"));
    assert!(ok, "openssl verify: {text}");
    // The key in the message is the certificate's key.
    let key = rcgen::KeyPair::try_from(svid.x509_svid_key.as_slice()).expect("PKCS#8 key");
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    assert_eq!(rcgen::PublicKeyData::subject_public_key_info(&key), cert.public_key().raw);
    // SPIFFE X.509-SVID profile: CA:FALSE, one URI SAN, digitalSignature.
    assert!(cert.basic_constraints().unwrap().is_some_and(|bc| !bc.value.ca));
    // Half of 30 s later the agent replaces it and the stream carries the new one (not before: rotation follows the
    // lifetime as served, not the backdated notBefore).
    let first_serial = serial_of(&leaf);
    let received = std::time::Instant::now();
    let next =
        next_matching(&mut stream, |m| m.svids.iter().any(|s| serial_of(&first_der(&s.x509_svid)) != first_serial))
            .await
            .unwrap();
    assert!(received.elapsed() >= std::time::Duration::from_secs(10), "rotated after {:?}", received.elapsed());
    let rotated = first_der(&next.svids[0].x509_svid);
    let (ok, text) = openssl_verify(&roots, untrusted, &pem(&rotated, "CERTIFICATE"));
    assert!(ok, "openssl verify of the rotated SVID: {text}");
}

#[tokio::test]
async fn a_revoked_svid_is_replaced_and_its_serial_pushed_in_the_crls() {
    let server = server().await;
    let agent = Agent::join(&server, "node-r").await;
    entry(&server, "api", "node-r", 3600, &[]).await;
    let (mut stream, serial) = agent.first_svid().await;
    server
        .admin()
        .await
        .revoke_certificate(pb::RevokeCertificateRequest { serial: serial.clone(), reason: 1 })
        .await
        .unwrap();
    let pushed = next_matching(&mut stream, |m| revoked_in(&m.crl).contains(&serial)).await.unwrap();
    let replacement = pushed.svids.first().map(|s| serial_of(&first_der(&s.x509_svid)));
    let replaced = match replacement {
        Some(new) if new != serial => pushed,
        _ => next_matching(&mut stream, |m| m.svids.iter().any(|s| serial_of(&first_der(&s.x509_svid)) != serial))
            .await
            .unwrap(),
    };
    assert!(
        replaced.svids.iter().all(|s| serial_of(&first_der(&s.x509_svid)) != serial),
        "the revoked SVID is never served again"
    );
}

#[tokio::test]
async fn deleting_the_entry_revokes_its_certificates_and_ends_the_stream() {
    let server = server().await;
    let agent = Agent::join(&server, "node-d").await;
    entry(&server, "gone", "node-d", 3600, &[]).await;
    let (mut stream, serial) = agent.first_svid().await;
    let deleted = server
        .admin()
        .await
        .delete_workload(pb::DeleteWorkloadRequest { id: "gone".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.revoked_certificates >= 1);
    let certificate =
        server.admin().await.get_certificate(pb::GetCertificateRequest { serial }).await.unwrap().into_inner();
    assert_eq!(certificate.status, pb::CertificateStatus::Revoked as i32);
    let ended = next_matching(&mut stream, |_| false).await.unwrap_err();
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
}

#[tokio::test]
async fn suspending_the_node_revokes_the_certificates_of_its_workloads() {
    let server = server().await;
    let agent = Agent::join(&server, "node-s").await;
    entry(&server, "svc", "node-s", 3600, &[]).await;
    let (mut stream, serial) = agent.first_svid().await;
    server
        .admin()
        .await
        .suspend_principal(pb::SuspendPrincipalRequest { id: "node-s".into(), reason: "lost".into() })
        .await
        .unwrap();
    let certificate =
        server.admin().await.get_certificate(pb::GetCertificateRequest { serial: serial.clone() }).await.unwrap();
    assert_eq!(certificate.into_inner().status, pb::CertificateStatus::Revoked as i32);
    // principald now refuses the node; the agent serves nothing more and ends the stream.
    let ended = next_matching(&mut stream, |_| false).await.unwrap_err();
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
}

#[tokio::test]
async fn callers_matching_no_entry_are_refused_and_the_header_is_required() {
    let server = server().await;
    let agent = Agent::join(&server, "node-p").await;
    server
        .admin()
        .await
        .create_workload(pb::CreateWorkloadRequest {
            id: "other-user".into(),
            node: "node-p".into(),
            selectors: vec!["unix:uid:4242".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let refused = agent.client().await.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = agent
        .client()
        .await
        .fetch_jwtsvid(JwtsvidRequest { audience: vec!["a".into()], spiffe_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let channel = principald::agent::client::channel(&agent.socket).await.unwrap();
    let mut bare = principald::proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel);
    let refused = bare.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

#[tokio::test]
async fn jwt_svids_validate_for_their_audience_only() {
    let server = server().await;
    let agent = Agent::join(&server, "node-j").await;
    entry(&server, "jobs", "node-j", 3600, &[]).await;
    let mut client = agent.client().await;
    let mut svid = None;
    for _ in 0..100 {
        match client.fetch_jwtsvid(JwtsvidRequest { audience: vec!["aud-1".into()], spiffe_id: String::new() }).await {
            Ok(r) => {
                svid = Some(r.into_inner().svids.remove(0));
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    let svid = svid.expect("a JWT-SVID");
    assert_eq!(svid.spiffe_id, "spiffe://principald.local/service/jobs");
    let valid = client
        .validate_jwtsvid(ValidateJwtsvidRequest { audience: "aud-1".into(), svid: svid.svid.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(valid.spiffe_id, svid.spiffe_id);
    let wrong = client
        .validate_jwtsvid(ValidateJwtsvidRequest { audience: "aud-2".into(), svid: svid.svid.clone() })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    let no_audience =
        client.fetch_jwtsvid(JwtsvidRequest { audience: vec![], spiffe_id: String::new() }).await.unwrap_err();
    assert_eq!(no_audience.code(), Code::InvalidArgument);
    let mut bundles = client.fetch_jwt_bundles(JwtBundlesRequest {}).await.unwrap().into_inner();
    let bundle = bundles.message().await.unwrap().unwrap();
    let jwks: serde_json::Value = serde_json::from_slice(&bundle.bundles["spiffe://principald.local"]).expect("JWKS");
    let kid = jsonwebtoken::decode_header(&svid.svid).unwrap().kid.unwrap();
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid.as_str()));
    // A JWT-SVID is no access token: resource servers that take bound tokens refuse it (it has no cnf).
    assert!(jsonwebtoken::decode_header(&svid.svid).unwrap().typ.as_deref() == Some("JWT"));
}

#[tokio::test]
async fn an_svid_cannot_renew_itself_and_an_access_token_is_no_jwt_svid() {
    let server = crate::common::TestServer::start_with(&["--token-audience", "https://aud.example"]).await;
    let agent = Agent::join(&server, "node-x").await;
    entry(&server, "holder", "node-x", 3600, &[]).await;
    let mut stream = agent.client().await.fetch_x509svid(X509svidRequest {}).await.unwrap().into_inner();
    let svid = next_matching(&mut stream, |m| !m.svids.is_empty()).await.unwrap().svids.remove(0);
    // Whoever holds a workload's key cannot keep its identity alive without the node: no self-renewal.
    let leaf = first_der(&svid.x509_svid);
    let creds = principald::client::Credentials {
        ca_pem: pem(&svid.bundle, "CERTIFICATE"),
        cert_pem: format!("{}{}", pem(&leaf, "CERTIFICATE"), pem(&svid.x509_svid[leaf.len()..], "CERTIFICATE")),
        key_pem: pem(&svid.x509_svid_key, "PRIVATE KEY"),
    };
    let (_, csr) = crate::common::key_and_csr();
    let mut as_workload = server.client(&creds).await;
    let refused = as_workload
        .renew_certificate(pb::RenewCertificateRequest { csr: csr.into_bytes(), validity_seconds: 0 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // An access token (same signing keys, typ at+jwt, cnf) does not pass as a JWT-SVID.
    let token = server
        .admin()
        .await
        .issue_token(pb::IssueTokenRequest { audience: "https://aud.example".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let refused = agent
        .client()
        .await
        .validate_jwtsvid(ValidateJwtsvidRequest { audience: "https://aud.example".into(), svid: token })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}
