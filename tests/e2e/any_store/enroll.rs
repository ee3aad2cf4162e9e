//! One-time enrollment end to end with principalctl: an admin makes a token, a new worker enrolls with it (its key made
//! locally, the server pinned by the CA fingerprint in the token) and then works with the profile; reused, forged,
//! other-principal and wrongly pinned tokens fail and change nothing. On SQLite, and on DynamoDB Local with
//! PRINCIPALD_TEST_STORE=dynamodb.

use crate::common;

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
    let mut anonymous = server.anonymous().await;
    let status = anonymous.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = anonymous
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            principal_id: "admin".into(),
            ..Default::default()
        })
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

async fn new_token(server: &TestServer, id: &str) -> String {
    let mut admin = server.admin().await;
    admin
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest { principal_id: id.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_before_a_suspension_is_dead_after_reactivation() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let request = pb::CreatePrincipalRequest {
        id: "lost-box".into(),
        r#type: pb::PrincipalType::Worker.into(),
        ..Default::default()
    };
    admin.create_principal(request).await.unwrap();
    let leaked = new_token(&server, "lost-box").await;
    admin
        .suspend_principal(pb::SuspendPrincipalRequest { id: "lost-box".into(), reason: "leak".into() })
        .await
        .unwrap();
    admin.activate_principal(pb::ActivatePrincipalRequest { id: "lost-box".into() }).await.unwrap();
    let (_key, csr) = common::key_and_csr();
    let request = pb::EnrollRequest {
        principal_id: "lost-box".into(),
        secret: leaked,
        csr: csr.into_bytes(),
        validity_seconds: 0,
    };
    let status = server.anonymous().await.enroll(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("made before its principal was suspended"), "{}", status.message());
    // A token made now works.
    let fresh = new_token(&server, "lost-box").await;
    let (_key, csr) = common::key_and_csr();
    let request = pb::EnrollRequest {
        principal_id: "lost-box".into(),
        secret: fresh,
        csr: csr.into_bytes(),
        validity_seconds: 0,
    };
    server.anonymous().await.enroll(request).await.expect("a token made after the reactivation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_enroll_response_is_recovered_with_the_same_key_only() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let request = pb::CreatePrincipalRequest {
        id: "flaky-net".into(),
        r#type: pb::PrincipalType::Worker.into(),
        ..Default::default()
    };
    admin.create_principal(request).await.unwrap();
    let secret = new_token(&server, "flaky-net").await;
    let (_key, csr) = common::key_and_csr();
    let request = pb::EnrollRequest {
        principal_id: "flaky-net".into(),
        secret: secret.clone(),
        csr: csr.clone().into_bytes(),
        validity_seconds: 0,
    };
    let mut client = server.anonymous().await;
    let first = client.enroll(request.clone()).await.unwrap().into_inner();
    // The response was "lost": the same request again gets the same certificate, and nothing new is issued.
    let again = client.enroll(request).await.expect("a same-key retry").into_inner();
    assert_eq!(first.certificate.as_ref().unwrap().serial, again.certificate.as_ref().unwrap().serial);
    assert_eq!(first.certificate_pem, again.certificate_pem);
    // Another key with the same token: used.
    let (_other, csr) = common::key_and_csr();
    let request =
        pb::EnrollRequest { principal_id: "flaky-net".into(), secret, csr: csr.into_bytes(), validity_seconds: 0 };
    let status = client.enroll(request).await.unwrap_err();
    assert!(status.message().contains("used already"), "{}", status.message());
    let listed = admin
        .list_certificates(pb::ListCertificatesRequest { principal_id: "flaky-net".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.certificates.len(), 1);
    // Both audit events name the token by the same short id, never by its secret.
    let events = admin.list_audit_events(pb::ListAuditEventsRequest::default()).await.unwrap().into_inner().events;
    let ids: Vec<String> = events
        .iter()
        .filter(|e| e.r#type.starts_with("enrollment_token."))
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.details_json).unwrap()["token"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids[0] == ids[1] && ids[0].len() == 12, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principalctl_enroll_reads_the_token_from_stdin_or_a_file() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let admin_profile = server.data_dir.join("profiles").join("admin");
    let work = tempfile::tempdir().unwrap();
    for (id, how) in [("via-stdin", "stdin"), ("via-file", "file")] {
        let request = pb::CreatePrincipalRequest {
            id: id.into(),
            r#type: pb::PrincipalType::Worker.into(),
            ..Default::default()
        };
        admin.create_principal(request).await.unwrap();
        let made = principalctl(&admin_profile, &["principal", "enroll-token", id]).await;
        let token = String::from_utf8(made.stdout).unwrap();
        let out = work.path().join(id);
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_principalctl"));
        command.arg("enroll").env_remove("PRINCIPALCTL_PROFILE");
        if how == "stdin" {
            command.arg("-").stdin(std::process::Stdio::piped());
        } else {
            let file = work.path().join(format!("{id}.token"));
            std::fs::write(&file, &token).unwrap();
            command.arg("--token-file").arg(file);
        }
        command.arg("--out").arg(&out).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let output = tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().unwrap();
            if let Some(mut stdin) = child.stdin.take() {
                std::io::Write::write_all(&mut stdin, token.as_bytes()).unwrap();
            }
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        assert!(output.status.success(), "{how}: {}", text(&output));
        assert!(out.join("profile.json").exists() && !out.join("pending-key.pem").exists(), "{how}");
    }
}

/// An admin lists a principal's tokens, revokes one (which then never enrolls) and caps another's certificate
/// validity; the list tells what each token did; a worker may not list them; the audit log names the revoked token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_revoked_and_capped_with_principalctl() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let request = pb::CreatePrincipalRequest {
        id: "listed-box".into(),
        r#type: pb::PrincipalType::Worker.into(),
        ..Default::default()
    };
    admin.create_principal(request).await.unwrap();
    let admin_profile = server.data_dir.join("profiles").join("admin");
    let make = |extra: &'static [&'static str]| {
        let profile = admin_profile.clone();
        async move {
            let mut args = vec!["principal", "enroll-token", "listed-box", "-o", "json"];
            args.extend_from_slice(extra);
            let made = principalctl(&profile, &args).await;
            assert!(made.status.success(), "{}", text(&made));
            serde_json::from_slice::<serde_json::Value>(&made.stdout).unwrap()
        }
    };
    let doomed = make(&[]).await;
    let capped = make(&["--max-validity", "2h"]).await;
    assert_eq!(capped["max_validity_seconds"], 7200);
    let (doomed_id, capped_id) = (doomed["id"].as_str().unwrap(), capped["id"].as_str().unwrap());
    assert_eq!(doomed_id.len(), 12);

    let list = |profile: std::path::PathBuf| async move {
        let out = principalctl(&profile, &["principal", "enroll-tokens", "listed-box", "-o", "json"]).await;
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    };
    let listed = list(admin_profile.clone()).await;
    let status_of = |listed: &[serde_json::Value], id: &str| {
        listed.iter().find(|t| t["id"] == id).map(|t| t["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(status_of(&listed, doomed_id).as_deref(), Some("pending"), "{listed:?}");
    assert_eq!(status_of(&listed, capped_id).as_deref(), Some("pending"), "{listed:?}");
    assert!(
        !String::from_utf8_lossy(&serde_json::to_vec(&listed).unwrap()).contains(doomed["token"].as_str().unwrap())
    );

    let out = principalctl(&admin_profile, &["principal", "enroll-token", "revoke", "listed-box", doomed_id]).await;
    assert!(out.status.success(), "{}", text(&out));
    let work = tempfile::tempdir().unwrap();
    let out = enroll_cmd(doomed["token"].as_str().unwrap(), &work.path().join("doomed")).await;
    assert!(!out.status.success() && text(&out).contains("revoked"), "{}", text(&out));
    assert!(!work.path().join("doomed").join("profile.json").exists());

    let out = enroll_cmd(capped["token"].as_str().unwrap(), &work.path().join("capped")).await;
    assert!(out.status.success(), "{}", text(&out));
    // The certificate lives at most the cap (openssl's view): expires within 2h + a minute, not within 1h.
    let cert = work.path().join("capped").join("cert.pem");
    let checkend = |secs: &str| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-checkend", secs, "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        out.status.success()
    };
    assert!(checkend("3600") && !checkend("7260"), "the enrolled certificate is capped at 2h");

    let listed = list(admin_profile.clone()).await;
    assert_eq!(status_of(&listed, doomed_id).as_deref(), Some("revoked"));
    assert_eq!(status_of(&listed, capped_id).as_deref(), Some("used"));
    let used = listed.iter().find(|t| t["id"] == capped_id).unwrap();
    assert!(!used["serial"].as_str().unwrap().is_empty(), "a used token names its certificate: {used:?}");
    // A used token cannot be revoked (its certificate can): a clear error, exit 1.
    let out = principalctl(&admin_profile, &["principal", "enroll-token", "revoke", "listed-box", capped_id]).await;
    assert!(!out.status.success() && text(&out).contains("used already"), "{}", text(&out));
    let out =
        principalctl(&admin_profile, &["principal", "enroll-token", "revoke", "listed-box", "0123456789ab"]).await;
    assert!(!out.status.success() && text(&out).contains("not found"), "{}", text(&out));

    // The enrolled worker may not see or revoke tokens.
    let worker = work.path().join("capped");
    let out = principalctl(&worker, &["principal", "enroll-tokens", "listed-box"]).await;
    assert!(!out.status.success() && text(&out).to_lowercase().contains("permission"), "{}", text(&out));

    let events = admin
        .list_audit_events(pb::ListAuditEventsRequest {
            r#type: "enrollment_token.revoked".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].details_json.contains(doomed_id), "{}", events[0].details_json);
}
