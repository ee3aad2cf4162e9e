//! The holes an attacker tries first, each shown closed over real mTLS: renewal racing a key-compromise revocation,
//! renewal fan-out and escalation, forged page tokens, a second CA on one store. Runs on SQLite, and on DynamoDB Local
//! when `scripts/test` reruns it with `PRINCIPALD_TEST_STORE=dynamodb`.

use crate::common;

use common::{TestServer, key_and_csr};
use principald::client::Credentials;
use principald::proto as pb;
use tonic::Code;

fn renew_request(csr: &str, validity_seconds: u64) -> pb::RenewCertificateRequest {
    pb::RenewCertificateRequest { csr: csr.as_bytes().to_vec(), validity_seconds }
}

fn credentials(issued: pb::IssueCertificateResponse, key_pem: String) -> Credentials {
    Credentials { ca_pem: issued.ca_chain_pem, cert_pem: issued.certificate_pem, key_pem }
}

async fn serial_of(server: &TestServer, creds: &Credentials) -> String {
    server.client(creds).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().certificate_serial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_racing_a_key_compromise_never_leave_a_descendant_that_authenticates() {
    let server = TestServer::start().await;
    for round in 0..6 {
        let id = format!("w{round}");
        let stolen = server.enroll(&id, pb::PrincipalType::Worker).await;
        let serial = serial_of(&server, &stolen).await;
        let mut thieves = Vec::new();
        for _ in 0..3 {
            let mut client = server.client(&stolen).await;
            thieves.push(tokio::spawn(async move {
                let (key, csr) = key_and_csr();
                let issued = client.renew_certificate(renew_request(&csr, 0)).await.ok()?.into_inner();
                Some(credentials(issued, key.serialize_pem()))
            }));
        }
        let mut admin = server.admin().await;
        let reason = pb::RevocationReason::KeyCompromise.into();
        admin.revoke_certificate(pb::RevokeCertificateRequest { serial, reason }).await.unwrap();
        let mut descendants = vec![stolen];
        for thief in thieves {
            descendants.extend(thief.await.unwrap());
        }
        assert!(descendants.len() <= 2, "round {round}: a certificate renews at most once");
        for creds in &descendants {
            let status = server.client(creds).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "round {round}: {status:?}");
        }
    }
}

#[tokio::test]
async fn a_certificate_renews_once_and_a_retry_with_the_same_key_gets_the_same_certificate() {
    let server = TestServer::start().await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;
    let mut client = server.client(&worker).await;
    let (key, csr) = key_and_csr();
    let first = client.renew_certificate(renew_request(&csr, 0)).await.unwrap().into_inner();
    // The response was lost; the client retries with the same key (principalctl keeps it pending).
    let retry = client.renew_certificate(renew_request(&csr, 0)).await.unwrap().into_inner();
    assert_eq!(retry.certificate_pem, first.certificate_pem, "the retry returns the certificate already issued");
    let (_, other) = key_and_csr();
    let status = client.renew_certificate(renew_request(&other, 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("already renewed"), "{status:?}");
    let renewed = credentials(first, key.serialize_pem());
    server.client(&renewed).await.who_am_i(pb::WhoAmIRequest {}).await.expect("the renewal authenticates");
    // The renewed certificate renews in its turn.
    let (_, next) = key_and_csr();
    server.client(&renewed).await.renew_certificate(renew_request(&next, 0)).await.unwrap();
}

#[tokio::test]
async fn a_renewal_lives_no_longer_than_its_parent_was_issued_for() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    admin
        .create_principal(pb::CreatePrincipalRequest {
            id: "w1".into(),
            r#type: pb::PrincipalType::Worker.into(),
            description: String::new(),
            email: None,
        })
        .await
        .unwrap();
    let (key, csr) = key_and_csr();
    let day = 86_400;
    let issued = admin
        .issue_certificate(pb::IssueCertificateRequest {
            principal_id: "w1".into(),
            csr: csr.into_bytes(),
            validity_seconds: day,
        })
        .await
        .unwrap()
        .into_inner();
    let mut worker = server.client(&credentials(issued, key.serialize_pem())).await;
    // Asking for 30 days gets at most the parent's day (not_before is backdated by 60 s).
    let (_, csr) = key_and_csr();
    let renewed =
        worker.renew_certificate(renew_request(&csr, 30 * day)).await.unwrap().into_inner().certificate.unwrap();
    let lifetime = renewed.not_after.unwrap().seconds - renewed.not_before.unwrap().seconds;
    assert!(lifetime <= day as i64 + 60, "renewed for {lifetime}s from a 1-day certificate");
}

#[tokio::test]
async fn forged_and_foreign_page_tokens_are_invalid_arguments() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    for i in 0..3 {
        server.enroll(&format!("w{i}"), pb::PrincipalType::Worker).await;
    }
    let list = |token: &str| pb::ListPrincipalsRequest { page_size: 1, page_token: token.into(), ..Default::default() };
    let token = admin.list_principals(list("")).await.unwrap().into_inner().next_page_token;
    assert!(!token.is_empty());
    let mut tampered = token.clone().into_bytes();
    tampered[4] = if tampered[4] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in ["w1", "not a token", "djE6dzE", &token[..token.len() - 3], &tampered, &"A".repeat(2000)] {
        let status = admin.list_principals(list(bad)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
    }
    let certs = pb::ListCertificatesRequest {
        principal_id: "w1".into(),
        page_size: 1,
        page_token: token.clone(),
        include_revoked: true,
        ..Default::default()
    };
    let status = admin.list_certificates(certs).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "a principal listing's token is no certificate token: {status:?}");
    admin.list_principals(list(&token)).await.expect("the genuine token still works");
}

#[tokio::test]
async fn a_second_ca_cannot_bootstrap_or_serve_a_store_that_has_one() {
    let server = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::serve_config(&tmp.path().join("other"), &["--admin-id", "other-admin"]);
    config.store = server.config().store.clone();
    config.bootstrap.store = config.store.clone();
    let error = principald::server::start(config.clone()).await.err().expect("refused");
    assert!(error.to_string().contains("another CA"), "{error}");
    assert!(!config.data_dir.join("ca.key").exists(), "the losing CA is removed");
    // The original server is untouched.
    server.admin().await.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
}

#[tokio::test]
async fn a_repeated_delete_is_refused_and_every_certificate_of_the_deleted_principal_stays_refused() {
    let server = TestServer::start().await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;
    let extra = server.issue("w1").await;
    let mut admin = server.admin().await;
    let deleted = admin.delete_principal(pb::DeletePrincipalRequest { id: "w1".into() }).await.unwrap().into_inner();
    assert_eq!(deleted.revoked_certificates, 2);
    let again = admin.delete_principal(pb::DeletePrincipalRequest { id: "w1".into() }).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    for creds in [&worker, &extra] {
        // Refusals are remembered briefly; ask twice to hit that path too.
        for _ in 0..2 {
            let status = server.client(creds).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_bootstrapping_one_empty_store_at_once_end_with_one_ca() {
    principald::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let first = common::serve_config(&tmp.path().join("a"), &[]);
    let store = if common::dynamo::e2e_on_dynamodb() {
        let endpoint = common::dynamo::endpoint().expect("DynamoDB Local");
        principald::store::StoreConfig::Dynamodb(common::dynamo::fresh_config_at(&endpoint).await)
    } else {
        first.store.clone()
    };
    let configs: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let mut config = common::serve_config(&tmp.path().join(name), &[]);
            config.store = store.clone();
            config.bootstrap.store = store.clone();
            config
        })
        .collect();
    let (a, b) =
        tokio::join!(principald::server::start(configs[0].clone()), principald::server::start(configs[1].clone()));
    let (winner, loser) = match (a, b) {
        (Ok(running), Err(error)) => ((running, &configs[0]), (error, &configs[1])),
        (Err(error), Ok(running)) => ((running, &configs[1]), (error, &configs[0])),
        (Ok(_), Ok(_)) => panic!("both replicas bootstrapped a CA"),
        (Err(a), Err(b)) => panic!("neither replica started: {a}; {b}"),
    };
    assert!(!loser.1.data_dir.join("ca.key").exists(), "the loser keeps no CA: {}", loser.0);
    let ca = principald::bootstrap::load_ca(&principald::datadir::DataDir::new(&winner.1.data_dir)).unwrap();
    let probe = principald::model::CaClaim { fingerprint: "probe".into(), certificate_pem: String::new() };
    let recorded = store.open().await.unwrap().claim_ca(&probe, false, None).await.unwrap();
    assert_eq!(recorded.fingerprint, principald::model::sha256_hex(ca.cert_der()), "the store records the winner's CA");
    assert_eq!(recorded.certificate_pem, ca.cert_pem(), "with its certificate");
    winner.0.shutdown().await;
}
