//! The CA root key outside the process: in AWS KMS (moto's server) and on a PKCS#11 token (SoftHSM2). Each test
//! bootstraps and serves with the key there, issues over mTLS, and checks with openssl that the leaf chains through
//! the replica's in-memory intermediate to the root. With `PRINCIPALD_TEST_STORE=dynamodb` the store is DynamoDB Local.
//! In `signers/`: bootstraps that race (`bootstraps.rs`); the derivation secret beside each root, created by
//! bootstrap, the same for every replica, and a clear refusal when it is missing (`derivation.rs`); a token that
//! restarts or disappears under a running key, and readiness following it (`liveness.rs`).

mod bootstraps;
use crate::common;
mod derivation;
mod liveness;

use std::process::Command;

use common::signers::{kms_key_uri, pkcs11_key_uri};
use common::{TestServer, openssl_verify};
use principald::client::Credentials;
use principald::proto as pb;
use tonic::Code;

/// Splits PEM text into its certificates (each with its END line).
fn pems(text: &str) -> Vec<String> {
    text.split_inclusive("-----END CERTIFICATE-----\n").filter(|p| p.contains("BEGIN")).map(str::to_owned).collect()
}

fn openssl_text(pem: &str) -> String {
    let (_d, path) = common::temp_file("c.pem", pem);
    let out = Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn issue(server: &TestServer, id: &str) -> (pb::IssueCertificateResponse, String) {
    let (key, csr) = common::key_and_csr();
    let issued = server
        .admin()
        .await
        .issue_certificate(pb::IssueCertificateRequest {
            principal_id: id.into(),
            csr: csr.into_bytes(),
            validity_seconds: 0,
        })
        .await
        .expect("issue over mTLS")
        .into_inner();
    (issued, key.serialize_pem())
}

async fn who_am_i(server: &TestServer, credentials: &Credentials) -> Result<pb::WhoAmIResponse, tonic::Status> {
    server.client(credentials).await.who_am_i(pb::WhoAmIRequest {}).await.map(|r| r.into_inner())
}

/// Bootstrap and serve with `uri`, issue over mTLS, verify the chain with openssl, authenticate with it (and with the
/// leaf alone), find the intermediate recorded, revoke it, and see the replica move to a new one.
async fn end_to_end(uri: &str) {
    let server = TestServer::start_with(&["--ca-key", uri, "--replica-id", "replica-a"]).await;
    assert!(!server.data_dir.join("ca.key").exists(), "the root key never touches the data dir");
    let root = std::fs::read_to_string(server.data_dir.join("ca.pem")).unwrap();
    assert!(openssl_text(&root).contains("CA:TRUE, pathlen:1"), "a root that signs intermediates");

    server
        .admin()
        .await
        .create_principal(pb::CreatePrincipalRequest {
            id: "w1".into(),
            r#type: pb::PrincipalType::Worker.into(),
            description: String::new(),
            email: None,
        })
        .await
        .unwrap();
    let (issued, key_pem) = issue(&server, "w1").await;
    let chain = pems(&issued.ca_chain_pem);
    assert_eq!(chain.len(), 2, "issuer chain: intermediate, then root");
    assert_eq!(chain[1], root, "the chain ends at the root clients trust");
    let intermediate = &chain[0];
    let text = openssl_text(intermediate);
    assert!(text.contains("CA:TRUE, pathlen:0") && text.contains("replica-a"), "{text}");
    assert_eq!(issued.certificate_chain_pem, format!("{}{intermediate}", issued.certificate_pem));

    let (ok, out) = openssl_verify(&root, Some(intermediate), &issued.certificate_pem);
    assert!(ok, "leaf -> replica intermediate -> root: {out}");
    let (ok, out) = openssl_verify(&root, None, &issued.certificate_pem);
    assert!(!ok, "the root did not sign the leaf itself: {out}");

    // Authenticates with the chain, and with the leaf alone (the server completes the chain).
    let chained =
        Credentials { ca_pem: root.clone(), cert_pem: issued.certificate_chain_pem.clone(), key_pem: key_pem.clone() };
    let leaf_only = Credentials { ca_pem: root.clone(), cert_pem: issued.certificate_pem.clone(), key_pem };
    assert_eq!(who_am_i(&server, &chained).await.unwrap().principal_id, "w1");
    assert_eq!(who_am_i(&server, &leaf_only).await.unwrap().principal_id, "w1");

    // The chain is on record: which replica's intermediate signed what.
    let mut admin = server.admin().await;
    let listed = admin.list_intermediates(pb::ListIntermediatesRequest::default()).await.unwrap().into_inner();
    let certificate = issued.certificate.clone().unwrap();
    let recorded = listed.intermediates.iter().find(|i| i.sha256_fingerprint == certificate.issuer_sha256_fingerprint);
    let recorded = recorded.expect("the issuing intermediate is recorded");
    assert_eq!(recorded.replica, "replica-a");
    assert_eq!(recorded.certificate_pem, *intermediate);

    // A compromised replica's intermediate is revoked: what it signed stops working, the replica moves on.
    let revoked = admin
        .revoke_intermediate(pb::RevokeIntermediateRequest { sha256_fingerprint: recorded.sha256_fingerprint.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    let refused = who_am_i(&server, &chained).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let again = admin
        .revoke_intermediate(pb::RevokeIntermediateRequest { sha256_fingerprint: recorded.sha256_fingerprint.clone() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let fresh = loop {
        match server
            .admin()
            .await
            .issue_certificate(pb::IssueCertificateRequest {
                principal_id: "w1".into(),
                csr: common::key_and_csr().1.into_bytes(),
                validity_seconds: 0,
            })
            .await
        {
            Ok(issued) => break issued.into_inner(),
            Err(status) if status.code() == Code::Unavailable && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(status) => panic!("no issuance after the intermediate was revoked: {status:?}"),
        }
    };
    let new_issuer = fresh.certificate.unwrap().issuer_sha256_fingerprint;
    assert_ne!(new_issuer, recorded.sha256_fingerprint, "a new intermediate signs");
    let new_chain = pems(&fresh.ca_chain_pem);
    let (ok, out) = openssl_verify(&root, Some(&new_chain[0]), &fresh.certificate_pem);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_rooted_issuance_chains_through_the_replica_intermediate() {
    let Some(uri) = kms_key_uri() else { return };
    end_to_end(&uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_rooted_issuance_chains_through_the_replica_intermediate() {
    let Some(uri) = pkcs11_key_uri() else { return };
    end_to_end(&uri).await;
}

/// A second replica with the same key and store but an empty data dir adopts the CA from the store, signs its own
/// intermediate, and certificates it issues authenticate at the first replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_the_kms_key_joins_from_the_store_alone() {
    let Some(uri) = kms_key_uri() else { return };
    let a = TestServer::start_with(&["--ca-key", &uri, "--replica-id", "replica-a"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::serve_config(&tmp.path().join("b"), &["--ca-key", &uri, "--replica-id", "replica-b"]);
    config.store = a.config().store.clone();
    config.bootstrap.store = a.config().store.clone();
    let running = principald::server::start(config.clone()).await.expect("replica b starts from the store");
    assert!(running.bootstrapped_profile.is_none(), "no second bootstrap");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("b/ca.pem")).unwrap(),
        std::fs::read_to_string(a.data_dir.join("ca.pem")).unwrap(),
        "one CA"
    );
    // Replica b issues (admin credentials from a work at b: same root).
    let b_url = format!("https://127.0.0.1:{}", running.grpc_addr.port());
    let channel = principald::client::endpoint(&b_url, &a.admin).unwrap().connect().await.unwrap();
    let mut b_admin = pb::principal_service_client::PrincipalServiceClient::new(channel);
    b_admin
        .create_principal(pb::CreatePrincipalRequest {
            id: "w2".into(),
            r#type: pb::PrincipalType::Worker.into(),
            description: String::new(),
            email: None,
        })
        .await
        .unwrap();
    let (key, csr) = common::key_and_csr();
    let issued = b_admin
        .issue_certificate(pb::IssueCertificateRequest {
            principal_id: "w2".into(),
            csr: csr.into_bytes(),
            validity_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(openssl_text(&pems(&issued.ca_chain_pem)[0]).contains("replica-b"));
    let credentials =
        Credentials { ca_pem: a.ca_pem(), cert_pem: issued.certificate_chain_pem, key_pem: key.serialize_pem() };
    assert_eq!(who_am_i(&a, &credentials).await.unwrap().principal_id, "w2", "b's certificate works at a");
    running.shutdown().await;
}

async fn principalctl(profile: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = common::principalctl(profile, args).await;
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The operator's and the worker's commands with an HSM-rooted CA: a profile presents leaf + intermediate and trusts
/// the root only; renewal keeps that shape; `ca intermediates` / `ca revoke-intermediate` work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principalctl_profiles_carry_the_chain_and_trust_the_root_only() {
    let Some(uri) = pkcs11_key_uri() else { return };
    let server = TestServer::start_with(&["--ca-key", &uri, "--replica-id", "replica-a"]).await;
    let admin = server.data_dir.join("profiles/admin");
    let work = tempfile::tempdir().unwrap();
    let worker = work.path().join("w1");
    let root = std::fs::read_to_string(server.data_dir.join("ca.pem")).unwrap();
    assert!(principalctl(&admin, &["principal", "create", "w1", "--type", "worker"]).await.0);
    let (ok, out) = principalctl(&admin, &["cert", "issue", "w1", "--out", worker.to_str().unwrap()]).await;
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(worker.join("ca.pem")).unwrap(), root, "the profile trusts the root only");
    for step in ["issued", "renewed"] {
        let profile: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(worker.join("profile.json")).unwrap()).unwrap();
        let chain = std::fs::read_to_string(worker.join(profile["cert"].as_str().unwrap())).unwrap();
        let certs = pems(&chain);
        assert_eq!(certs.len(), 2, "{step}: the profile presents leaf + intermediate");
        let (ok, out) = openssl_verify(&root, Some(&certs[1]), &certs[0]);
        assert!(ok, "{step}: {out}");
        let (ok, out) = principalctl(&worker, &["whoami"]).await;
        assert!(ok && out.contains("w1"), "{step}: {out}");
        if step == "issued" {
            let (ok, out) = principalctl(&worker, &["cert", "renew"]).await;
            assert!(ok, "{out}");
        }
    }
    let (ok, out) = principalctl(&admin, &["-o", "json", "ca", "intermediates"]).await;
    assert!(ok, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fingerprint = listed[0]["sha256_fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["replica"], "replica-a");
    // What the intermediate signed: the worker's live certificate (the renewal; the first one was superseded).
    let (ok, out) = principalctl(&admin, &["-o", "json", "cert", "list", "--issuer", &fingerprint]).await;
    assert!(ok, "{out}");
    let signed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(signed.iter().any(|c| c["principal_id"] == "w1"), "{out}");
    assert!(signed.iter().all(|c| c["issuer_sha256_fingerprint"] == fingerprint.as_str()), "{out}");
    let (ok, out) = principalctl(&admin, &["ca", "revoke-intermediate", &fingerprint]).await;
    assert!(ok && out.contains("revoked intermediate"), "{out}");
    let (ok, out) = principalctl(&worker, &["whoami"]).await;
    assert!(!ok, "a certificate of the revoked intermediate is refused: {out}");
    // And principalctl says so: revoked (cACompromise) once swept, void until then; never valid.
    let (ok, out) = principalctl(&admin, &["-o", "json", "cert", "list", "w1", "--include-revoked"]).await;
    assert!(ok, "{out}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(listed.iter().all(|c| c["status"] != "valid"), "{out}");
    let (ok, out) = principalctl(&admin, &["ca", "revoke-intermediate", "not-a-fingerprint"]).await;
    assert!(!ok && out.contains("64 hex digits"), "{out}");
}

/// `--intermediates never`: the KMS root signs every leaf itself (each issuance is a KMS call, off the async workers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_root_can_sign_leaves_itself_when_asked() {
    let Some(uri) = kms_key_uri() else { return };
    let server = TestServer::start_with(&["--ca-key", &uri, "--intermediates", "never"]).await;
    let root = std::fs::read_to_string(server.data_dir.join("ca.pem")).unwrap();
    assert!(openssl_text(&root).contains("CA:TRUE, pathlen:0"), "a root that signs leaves only");
    let credentials = server.enroll("w1", pb::PrincipalType::Worker).await;
    assert_eq!(pems(&credentials.ca_pem), std::slice::from_ref(&root), "no intermediate");
    let (ok, out) = openssl_verify(&root, None, &credentials.cert_pem);
    assert!(ok, "{out}");
    assert_eq!(who_am_i(&server, &credentials).await.unwrap().principal_id, "w1");
}

/// The binary, as an operator runs it: `principald bootstrap --ca-key awskms:... --kms-endpoint URL`, twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principald_bootstrap_with_a_kms_key_from_the_command_line() {
    let Some(uri) = kms_key_uri() else { return };
    let endpoint = std::env::var("PRINCIPALD_TEST_KMS_ENDPOINT").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = |data: std::path::PathBuf, uri: String, endpoint: String| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_principald"));
        command
            .args(["bootstrap", "--data-dir"])
            .arg(data)
            .args(["--ca-key", &uri, "--kms-endpoint", &endpoint])
            .env_remove("AWS_ENDPOINT_URL_KMS")
            .env_remove("AWS_ENDPOINT_URL");
        command.output().unwrap()
    };
    let (d, u, e) = (data.clone(), uri.clone(), endpoint.clone());
    let first = tokio::task::spawn_blocking(move || run(d, u, e)).await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&first.stdout), String::from_utf8_lossy(&first.stderr));
    assert!(first.status.success() && text.contains("CA certificate"), "{text}");
    assert!(data.join("ca.pem").exists() && !data.join("ca.key").exists(), "the key stays in KMS");
    assert!(!text.contains("BEGIN"), "no key material in the output: {text}");
    let (d, u, e) = (data.clone(), uri.clone(), endpoint.clone());
    let second = tokio::task::spawn_blocking(move || run(d, u, e)).await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&second.stdout), String::from_utf8_lossy(&second.stderr));
    assert!(second.status.success() && text.contains("nothing changed"), "{text}");
    let bad = tokio::task::spawn_blocking(move || run(data, "awskms:".into(), endpoint)).await.unwrap();
    assert_eq!(bad.status.code(), Some(64), "a malformed key URI is a configuration error");
}

/// Keys principald cannot use are refused with a message that says why, and never echo a PIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_keys_are_refused_clearly() {
    use principald::pki::signer::{self, KeyUri};
    let open = |uri: String| async move {
        let uri: KeyUri = uri.parse().unwrap();
        signer::open_async(uri, false).await.map(|_| ()).unwrap_err().to_string()
    };
    if let Some(uri) = pkcs11_key_uri() {
        let missing = open(uri.clone()).await;
        assert!(missing.contains("no private key with that label"), "{missing}");
        let other_token = open(uri.replace("token=principald-test", "token=no-such-token")).await;
        assert!(other_token.contains("no PKCS#11 token labelled"), "{other_token}");
        let wrong_pin = uri.split('?').next().unwrap().to_owned() + "?pin-value=99999999";
        let refused = open(wrong_pin).await;
        assert!(refused.contains("login refused") && !refused.contains("99999999"), "{refused}");
    }
    if let Some(uri) = kms_key_uri() {
        let missing = open(uri).await;
        assert!(missing.contains("does not exist"), "{missing}");
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        let kms = aws_sdk_kms::Client::new(&config);
        for (spec, usage, expected) in [
            (
                aws_sdk_kms::types::KeySpec::SymmetricDefault,
                aws_sdk_kms::types::KeyUsageType::EncryptDecrypt,
                "SIGN_VERIFY",
            ),
            (aws_sdk_kms::types::KeySpec::Rsa2048, aws_sdk_kms::types::KeyUsageType::SignVerify, "P-256"),
        ] {
            let key = kms.create_key().key_spec(spec).key_usage(usage).send().await.unwrap();
            let id = key.key_metadata().unwrap().key_id().to_owned();
            let refused = open(format!("awskms:{id}")).await;
            assert!(refused.contains(expected), "{refused}");
        }
    }
}
