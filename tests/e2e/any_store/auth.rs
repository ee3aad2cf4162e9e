//! Authentication over real mTLS on loopback: every way a caller can fail to prove who it is, and the status it gets.

use crate::common;

use common::TestServer;
use principald::client::Credentials;
use principald::model::{PrincipalId, PrincipalType};
use principald::pki::identity;
use principald::pki::oid::IdentityOids;
use principald::pki::profile;
use principald::proto::{self as pb};
use rcgen::{CertificateParams, CustomExtension};
use tonic::Code;

async fn whoami(server: &TestServer, credentials: &Credentials) -> Result<pb::WhoAmIResponse, tonic::Status> {
    let channel = principald::client::endpoint(&server.url, credentials).unwrap().connect().await;
    match channel {
        Ok(channel) => pb::principal_service_client::PrincipalServiceClient::new(channel)
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .map(|r| r.into_inner()),
        // Under TLS 1.2 a rejected certificate can fail the connect itself.
        Err(e) => Err(tonic::Status::unavailable(format!("connect failed: {e}"))),
    }
}

/// A rejected TLS handshake: the request never reaches the service, so there is no gRPC status from the server.
fn assert_rejected_by_tls(result: Result<pb::WhoAmIResponse, tonic::Status>) {
    let status = result.expect_err("the server must refuse this certificate");
    assert!(
        matches!(status.code(), Code::Unknown | Code::Unavailable) && !status.message().is_empty(),
        "expected a transport failure, got {status:?}"
    );
}

fn assert_unauthenticated(result: Result<pb::WhoAmIResponse, tonic::Status>, needle: &str) {
    let status = result.expect_err("must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains(needle), "message {:?} should mention {needle:?}", status.message());
}

fn client_params(
    kind: PrincipalType,
    id: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> CertificateParams {
    let id: PrincipalId = id.parse().unwrap();
    profile::client_certificate(&IdentityOids::default(), "principald.local", kind, &id, not_before, not_after).unwrap()
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

#[tokio::test]
async fn registered_certificate_of_an_active_principal_authenticates() {
    let server = TestServer::start().await;
    let worker = server.enroll("worker-1", pb::PrincipalType::Worker).await;
    let me = whoami(&server, &worker).await.unwrap();
    assert_eq!((me.principal_id.as_str(), me.principal_type), ("worker-1", pb::PrincipalType::Worker as i32));
    assert_eq!(me.permissions, ["certificate.renew-self", "token.issue"]);
}

#[tokio::test]
async fn connection_without_a_client_certificate_reaches_only_health_and_reflection() {
    let server = TestServer::start().await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(server.ca_pem()));
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let result = pb::principal_service_client::PrincipalServiceClient::new(channel.clone())
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(|r| r.into_inner());
    assert_unauthenticated(result, "no client certificate");
    // What needs no identity is reachable: gRPC health, for load balancers that speak TLS but hold no certificate.
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health needs no client certificate")
        .into_inner();
    assert_eq!(health.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

#[tokio::test]
async fn certificate_from_another_ca_is_rejected_by_tls() {
    let server = TestServer::start().await;
    let other_ca = principald::pki::ca::CertificateAuthority::generate("other CA", time::Duration::days(30)).unwrap();
    let params = client_params(
        PrincipalType::Admin,
        "admin",
        now() - time::Duration::minutes(1),
        now() + time::Duration::days(1),
    );
    let mut foreign = common::mint_with(&other_ca, &params);
    foreign.ca_pem = server.ca_pem();
    assert_rejected_by_tls(whoami(&server, &foreign).await);
}

#[tokio::test]
async fn expired_certificate_is_rejected_by_tls() {
    let server = TestServer::start().await;
    let params =
        client_params(PrincipalType::Admin, "admin", now() - time::Duration::days(2), now() - time::Duration::days(1));
    assert_rejected_by_tls(whoami(&server, &server.mint(&params)).await);
}

#[tokio::test]
async fn not_yet_valid_certificate_is_rejected_by_tls() {
    let server = TestServer::start().await;
    let params =
        client_params(PrincipalType::Admin, "admin", now() + time::Duration::days(1), now() + time::Duration::days(2));
    assert_rejected_by_tls(whoami(&server, &server.mint(&params)).await);
}

#[tokio::test]
async fn certificate_expiring_on_an_open_connection_stops_authenticating() {
    let server = TestServer::start().await;
    server.enroll("w1", pb::PrincipalType::Worker).await;
    // The API's shortest validity is a minute; to keep the test short, record an 8-second certificate directly in
    // the store (a second client of the server's store).
    let store = server.store().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let identity =
        principald::pki::IdentityConfig { trust_domain: "principald.local".into(), oids: IdentityOids::default() };
    let id: PrincipalId = "w1".parse().unwrap();
    let leaf = principald::pki::leaf::issue_client(
        &server.ca,
        &identity,
        PrincipalType::Worker,
        &id,
        &key,
        std::time::Duration::from_secs(8),
        0,
    )
    .unwrap();
    store.insert_certificate(&leaf.record, None).await.unwrap();
    let creds = Credentials { ca_pem: server.ca_pem(), cert_pem: leaf.pem, key_pem: key.serialize_pem() };
    let mut client = server.client(&creds).await;
    client.who_am_i(pb::WhoAmIRequest {}).await.expect("valid at first");
    let wait = leaf.record.not_after.unix_timestamp() - now().unix_timestamp() + 2;
    tokio::time::sleep(std::time::Duration::from_secs(wait.max(0) as u64)).await;
    let status = client.who_am_i(pb::WhoAmIRequest {}).await.expect_err("expired on the same connection");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{status:?}");
}

#[tokio::test]
async fn certificate_without_identity_extensions_is_unauthenticated() {
    let server = TestServer::start().await;
    let mut params = client_params(
        PrincipalType::Admin,
        "admin",
        now() - time::Duration::minutes(1),
        now() + time::Duration::days(1),
    );
    params.custom_extensions.clear();
    assert_unauthenticated(whoami(&server, &server.mint(&params)).await, "no principal type extension");
    let mut params = client_params(
        PrincipalType::Admin,
        "admin",
        now() - time::Duration::minutes(1),
        now() + time::Duration::days(1),
    );
    params.custom_extensions.truncate(1);
    assert_unauthenticated(whoami(&server, &server.mint(&params)).await, "no principal id extension");
}

#[tokio::test]
async fn certificate_with_garbled_identity_extensions_is_unauthenticated() {
    let server = TestServer::start().await;
    let oids = IdentityOids::default();
    let cases: [(Vec<u8>, &str); 3] = [
        (vec![0x02, 0x01, 0x05], "not a UTF8String"), // an INTEGER
        (vec![0x0c, 0x05, b'a'], "not a UTF8String"), // truncated
        (vec![0x0c, 0x05, b'r', b'o', b'b', b'o', b't'], "invalid value"), // unknown type name
    ];
    for (value, needle) in cases {
        let mut params = client_params(
            PrincipalType::Admin,
            "admin",
            now() - time::Duration::minutes(1),
            now() + time::Duration::days(1),
        );
        params.custom_extensions[0] = CustomExtension::from_oid_content(&oids.type_arcs(), value);
        assert_unauthenticated(whoami(&server, &server.mint(&params)).await, needle);
    }
}

#[tokio::test]
async fn printable_string_identity_is_accepted_when_reading() {
    let server = TestServer::start().await;
    // Same identity as the bootstrap admin, but PrintableString-encoded and unregistered: identity parses, then the
    // serial check refuses it. The message proves the extension was read.
    let oids = IdentityOids::default();
    let mut params = client_params(
        PrincipalType::Admin,
        "admin",
        now() - time::Duration::minutes(1),
        now() + time::Duration::days(1),
    );
    params.custom_extensions = vec![
        CustomExtension::from_oid_content(&oids.type_arcs(), [&[0x13, 5][..], b"admin"].concat()),
        CustomExtension::from_oid_content(&oids.id_arcs(), [&[0x13, 5][..], b"admin"].concat()),
    ];
    assert_unauthenticated(whoami(&server, &server.mint(&params)).await, "not registered");
}

#[tokio::test]
async fn certificate_of_an_unknown_principal_is_unauthenticated() {
    let server = TestServer::start().await;
    let params = client_params(
        PrincipalType::Worker,
        "ghost",
        now() - time::Duration::minutes(1),
        now() + time::Duration::days(1),
    );
    assert_unauthenticated(whoami(&server, &server.mint(&params)).await, "does not exist");
}

#[tokio::test]
async fn certificate_claiming_another_type_is_unauthenticated() {
    let server = TestServer::start().await;
    server.enroll("w1", pb::PrincipalType::Worker).await;
    let params =
        client_params(PrincipalType::Admin, "w1", now() - time::Duration::minutes(1), now() + time::Duration::days(1));
    assert_unauthenticated(whoami(&server, &server.mint(&params)).await, "is a worker");
}

#[tokio::test]
async fn unregistered_serial_is_unauthenticated() {
    let server = TestServer::start().await;
    server.enroll("w1", pb::PrincipalType::Worker).await;
    let params =
        client_params(PrincipalType::Worker, "w1", now() - time::Duration::minutes(1), now() + time::Duration::days(1));
    assert_unauthenticated(whoami(&server, &server.mint(&params)).await, "not registered");
}

#[tokio::test]
async fn suspension_takes_effect_on_the_next_request_and_voids_the_certificates_it_found() {
    let server = TestServer::start().await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;
    let mut client = server.client(&worker).await;
    client.who_am_i(pb::WhoAmIRequest {}).await.expect("active and cached");
    let mut admin = server.admin().await;
    admin.suspend_principal(pb::SuspendPrincipalRequest { id: "w1".into(), reason: "audit".into() }).await.unwrap();
    let status = client.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("suspended"), "{status:?}");
    admin.activate_principal(pb::ActivatePrincipalRequest { id: "w1".into() }).await.unwrap();
    // Suspension raised the revocation floor: certificates from before it stay dead, new ones work.
    let status = client.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("withdrawn"), "{status:?}");
    let fresh = server.issue("w1").await;
    server.client(&fresh).await.who_am_i(pb::WhoAmIRequest {}).await.expect("a certificate issued after activation");
}

#[tokio::test]
async fn deleted_principal_is_unauthenticated() {
    let server = TestServer::start().await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;
    let mut client = server.client(&worker).await;
    client.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let deleted = server
        .admin()
        .await
        .delete_principal(pb::DeletePrincipalRequest { id: "w1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.revoked_certificates, 1);
    let status = client.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("deleted"), "{status:?}");
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request() {
    let server = TestServer::start().await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;
    let mut client = server.client(&worker).await;
    let me = client.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    server
        .admin()
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: me.certificate_serial,
            reason: pb::RevocationReason::KeyCompromise.into(),
        })
        .await
        .unwrap();
    let status = client.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"), "{status:?}");
}

#[tokio::test]
async fn spiffe_uri_and_identity_extensions_are_in_issued_certificates() {
    let server = TestServer::start().await;
    let creds = server.enroll("svc.jobs", pb::PrincipalType::Service).await;
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(creds.cert_pem.as_bytes())
        .map(|d: rustls::pki_types::CertificateDer| d.to_vec())
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let (kind, id) = identity::read(&IdentityOids::default(), &cert).unwrap();
    assert_eq!((kind, id.as_str()), (PrincipalType::Service, "svc.jobs"));
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(format!("{:?}", san.value.general_names).contains("spiffe://principald.local/service/svc.jobs"));
    assert!(!cert.is_ca());
    // 16 random bytes, DER-encoded as a positive INTEGER: a 0x00 sign byte may lead, leading zero bytes may drop.
    let serial_len = cert.raw_serial().len();
    assert!((14..=17).contains(&serial_len), "serial of {serial_len} bytes");
}
