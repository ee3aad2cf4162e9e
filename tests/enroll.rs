//! One-time enrollment end to end with principalctl: an admin makes a token, a new worker enrolls with it (its key made
//! locally, the server pinned by the CA fingerprint in the token) and then works with the profile; reused, forged,
//! other-principal and wrongly pinned tokens fail and change nothing. On SQLite, and on DynamoDB Local with
//! PRINCIPALD_TEST_STORE=dynamodb.

mod common;

use common::{TestServer, principalctl};
use principald::proto::{self as pb};

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn enroll_cmd(token: &str, out: &std::path::Path) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_principalctl"));
    command.args(["enroll", token, "--out"]).arg(out).env_remove("PRINCIPALCTL_PROFILE");
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

/// Re-encodes a token string with `change` applied to its JSON.
fn tampered(token: &str, change: impl FnOnce(&mut serde_json::Value)) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = token.strip_prefix("pdenroll1.").unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    change(&mut json);
    format!("pdenroll1.{}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_enrolls_once_with_a_token_and_bad_tokens_change_nothing() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    for id in ["new-worker", "someone-else"] {
        let request = pb::CreatePrincipalRequest {
            id: id.into(),
            r#type: pb::PrincipalType::Worker.into(),
            ..Default::default()
        };
        admin.create_principal(request).await.unwrap();
    }
    let admin_profile = server.data_dir.join("profiles").join("admin");
    let made = principalctl(&admin_profile, &["principal", "enroll-token", "new-worker", "--ttl", "10m"]).await;
    assert!(made.status.success(), "{}", text(&made));
    let token = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("pdenroll1."), "{token}");
    let work = tempfile::tempdir().unwrap();

    // Pinned to another CA: refused during the handshake, before the secret is sent (the token still works after).
    let wrong_pin = tampered(&token, |j| j["f"] = "ab".repeat(32).into());
    let out = enroll_cmd(&wrong_pin, &work.path().join("a")).await;
    assert!(!out.status.success() && text(&out).contains("not the server the token was made for"), "{}", text(&out));
    // Forged secret, another principal's name: refused, nothing written.
    let forged = tampered(&token, |j| j["k"] = "AAAA".into());
    let out = enroll_cmd(&forged, &work.path().join("b")).await;
    assert!(!out.status.success() && text(&out).contains("unknown"), "{}", text(&out));
    let other = tampered(&token, |j| j["p"] = "someone-else".into());
    let out = enroll_cmd(&other, &work.path().join("c")).await;
    assert!(!out.status.success() && text(&out).contains("another principal"), "{}", text(&out));
    assert!(!work.path().join("b").exists() && !work.path().join("c").exists());
    let out = enroll_cmd("garbage", &work.path().join("d")).await;
    assert!(!out.status.success() && text(&out).contains("not an enrollment token"), "{}", text(&out));

    // The real thing, then the profile works.
    let profile = work.path().join("worker");
    let out = enroll_cmd(&token, &profile).await;
    assert!(out.status.success(), "{}", text(&out));
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(profile.join("key.pem")).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600);
    let me = principalctl(&profile, &["whoami", "-o", "json"]).await;
    let me: serde_json::Value = serde_json::from_slice(&me.stdout).unwrap();
    assert_eq!((me["principal_id"].as_str(), me["principal_type"].as_str()), (Some("new-worker"), Some("worker")));

    // Used once: a second use fails.
    let out = enroll_cmd(&token, &work.path().join("again")).await;
    assert!(!out.status.success() && text(&out).contains("used already"), "{}", text(&out));

    // Both sides are in the audit log.
    let kinds: Vec<String> = admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.r#type)
        .collect();
    assert!(kinds.iter().any(|k| k == "enrollment_token.created"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "enrollment_token.consumed").count(), 1, "{kinds:?}");
}

#[tokio::test]
async fn enroll_is_the_only_rpc_a_connection_without_a_certificate_may_call() {
    let server = TestServer::start().await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(server.ca_pem()))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut anonymous = pb::principal_service_client::PrincipalServiceClient::new(channel);
    let status = anonymous.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = anonymous
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest { principal_id: "admin".into(), ttl_seconds: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let (_key, csr) = common::key_and_csr();
    let request = pb::EnrollRequest {
        principal_id: "admin".into(),
        secret: "nope".into(),
        csr: csr.into_bytes(),
        validity_seconds: 0,
    };
    let status = anonymous.enroll(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("enrollment token refused"), "{}", status.message());
}
