//! The auth layer protecting a service that is not principald's (the Echo service of the example), with its own
//! method table and permission: the reuse the layer is built for.

use crate::common;

use std::time::Duration;

use common::TestServer;
use principald::auth::{Caller, Requirement};
use principald::model::PrincipalType;
use principald::proto::{self as pb};
use principald::resource_server::ResourceServer;
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};

mod echo {
    tonic::include_proto!("example.v1");
}

struct EchoService;

#[tonic::async_trait]
impl echo::echo_server::Echo for EchoService {
    async fn echo(&self, request: Request<echo::EchoRequest>) -> Result<Response<echo::EchoResponse>, Status> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(echo::EchoResponse {
            message: request.into_inner().message,
            caller: format!("{} {}", caller.kind, caller.id),
        }))
    }
}

async fn start_echo(server: &TestServer) -> String {
    // A long cache TTL on purpose: only the revocation follower can make a withdrawal arrive quickly.
    let bound = ResourceServer::new(&server.data_dir, server.store().await)
        .grant(PrincipalType::Service, "echo.call")
        .allow_method("example.v1.Echo", "Echo", Requirement::Permission("echo.call".into()))
        .cache_ttl(Duration::from_secs(300))
        .follow_revocations(Some(Duration::from_millis(200)))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}", bound.local_addr().port());
    tokio::spawn(bound.serve(Routes::new(echo::echo_server::EchoServer::new(EchoService)), std::future::pending()));
    url
}

async fn call(url: &str, credentials: &principald::client::Credentials) -> Result<echo::EchoResponse, Status> {
    let channel = principald::client::endpoint(url, credentials).unwrap().connect().await.unwrap();
    echo::echo_client::EchoClient::new(channel)
        .echo(echo::EchoRequest { message: "hi".into() })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn another_service_authenticates_and_authorizes_with_its_own_table() {
    let server = TestServer::start().await;
    let url = start_echo(&server).await;
    let service = server.enroll("jobs", pb::PrincipalType::Service).await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;

    let reply = call(&url, &service).await.unwrap();
    assert_eq!((reply.message.as_str(), reply.caller.as_str()), ("hi", "service jobs"));

    let denied = call(&url, &worker).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("echo.call"), "{denied:?}");
    let admin_denied = call(&url, &server.admin).await.unwrap_err();
    assert_eq!(admin_denied.code(), Code::PermissionDenied, "only the table decides, not the type's name");

    // A certificate revoked through principald before its first use is refused by the other service too: it reads
    // the same store.
    let other = server.issue("jobs").await;
    let serial = {
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(other.cert_pem.as_bytes())
            .map(|d: rustls::pki_types::CertificateDer| d.to_vec())
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        principald::model::Serial::from_bytes(cert.raw_serial()).to_string()
    };
    server.admin().await.revoke_certificate(pb::RevokeCertificateRequest { serial, reason: 0 }).await.unwrap();
    let revoked = call(&url, &other).await.unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_embedding_service_refuses_a_certificate_revoked_after_it_was_cached_within_the_poll_bound() {
    let server = TestServer::start().await;
    let url = start_echo(&server).await;
    let service = server.enroll("jobs", pb::PrincipalType::Service).await;
    call(&url, &service).await.expect("valid, and now cached for 300 s");
    let serial = server.client(&service).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    let revoked_at = std::time::Instant::now();
    server
        .admin()
        .await
        .revoke_certificate(pb::RevokeCertificateRequest { serial: serial.certificate_serial, reason: 0 })
        .await
        .unwrap();
    loop {
        match call(&url, &service).await {
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                break;
            }
            Ok(_) => {
                assert!(revoked_at.elapsed() < Duration::from_secs(10), "still accepted after the poll bound");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Beside a deployment whose root is in KMS (no CA key in the data directory, leaves signed by the replica's
/// intermediate), the builder serves the certificate principald left and accepts a client that presents its leaf
/// alone: it completes the chain with the intermediates the store knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_server_beside_a_kms_root_accepts_a_leaf_without_its_intermediate() {
    let Some(uri) = common::signers::kms_key_uri() else { return };
    let server = TestServer::start_with(&["--ca-key", &uri, "--replica-id", "replica-a"]).await;
    assert!(!server.data_dir.join("ca.key").exists(), "the root key is in KMS");
    let url = start_echo(&server).await;
    let chained = server.enroll("jobs", pb::PrincipalType::Service).await;
    let leaf = chained.cert_pem.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap().to_owned();
    assert_ne!(leaf, chained.cert_pem, "the profile carries the leaf and its intermediate");
    let leaf_only = principald::client::Credentials { cert_pem: leaf, ..chained.clone() };
    assert_eq!(call(&url, &chained).await.unwrap().caller, "service jobs");
    assert_eq!(call(&url, &leaf_only).await.unwrap().caller, "service jobs");
}
