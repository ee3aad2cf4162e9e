//! Tokens over time: audit events, principalctl getting and verifying one, token keys withdrawn with their intermediate.

use super::*;

#[tokio::test]
async fn token_issuance_is_an_audit_event_only_when_asked_and_always_counted() {
    let quiet = server().await;
    let worker = quiet.enroll("counted", pb::PrincipalType::Worker).await;
    let ask = || pb::IssueTokenRequest { audience: AUDIENCE.into(), ..Default::default() };
    issue(&quiet, &worker, ask()).await.unwrap();
    assert!(token_events(&quiet).await.is_empty(), "off by default");
    let addr = quiet.running.health_addr;
    let (_, metrics) = tokio::task::spawn_blocking(move || common::http_get(addr, "/metrics")).await.unwrap();
    assert!(metrics.lines().any(|l| l == "principald_tokens_issued_total 1"), "{metrics}");

    let audited = TestServer::start_with(&["--token-audience", AUDIENCE, "--audit-tokens"]).await;
    let worker = audited.enroll("audited", pb::PrincipalType::Worker).await;
    issue(&audited, &worker, ask()).await.unwrap();
    let recorded = token_events(&audited).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].actor.as_ref().unwrap().principal_id, "audited");
    assert!(!recorded[0].details_json.contains("eyJ"), "never the token itself: {}", recorded[0].details_json);
}

async fn token_events(server: &TestServer) -> Vec<pb::AuditEvent> {
    let request = pb::ListAuditEventsRequest { r#type: "token.issued".into(), ..Default::default() };
    server.admin().await.list_audit_events(request).await.unwrap().into_inner().events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principalctl_gets_and_verifies_a_bound_token() {
    let server = server().await;
    let profile = server.data_dir.join("profiles").join("admin");
    let got = common::principalctl(&profile, &["token", "--audience", AUDIENCE, "--scope", "audit.read"]).await;
    assert!(got.status.success(), "{got:?}");
    let token = String::from_utf8(got.stdout).unwrap().trim().to_owned();
    let url = oauth_url(&server);
    let jwks = format!("{url}/jwks.json");
    let cert = profile.join("cert.pem");
    let cert = cert.to_str().unwrap();
    let args = ["token", "verify", &token, "--jwks", &jwks, "--audience", AUDIENCE, "--issuer", &url, "--cert", cert];
    let checked = common::principalctl(&profile, &args).await;
    assert!(checked.status.success(), "{checked:?}");
    let report: Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!((report["valid"].as_bool(), report["bound_to_certificate"].as_bool()), (Some(true), Some(true)));
    assert_eq!(report["claims"]["scope"], "audit.read");
    // Another certificate: not bound to it.
    let other = server.enroll("someone", pb::PrincipalType::Worker).await;
    let (_d, other_cert) = temp_file("other.pem", &other.cert_pem);
    let mut args = args.to_vec();
    let other_cert = other_cert.to_str().unwrap().to_owned();
    *args.last_mut().unwrap() = &other_cert;
    let refused = common::principalctl(&profile, &args).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is bound to the certificate with SHA-256"),
        "{refused:?}"
    );
    let report: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(report["valid"], false, "valid is false whenever the exit status is not 0: {report}");

    // A resource server's operator has no profile: the JWKS over HTTPS trusted with --cacert, or from a file.
    let ca = server.data_dir.join("ca.pem");
    let no_profile = |args: Vec<String>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_principalctl"));
        command.args(&args).env_remove("PRINCIPALCTL_PROFILE");
        async move { tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap() }
    };
    let base = |jwks: &str, audience: &str| -> Vec<String> {
        ["token", "verify", &token, "--jwks", jwks, "--audience", audience, "--issuer", &url].map(String::from).to_vec()
    };
    let mut args = base(&jwks, AUDIENCE);
    args.extend(["--cacert".into(), ca.to_str().unwrap().into()]);
    let checked = no_profile(args).await;
    assert!(checked.status.success(), "{checked:?}");
    let mut args = base(&jwks, AUDIENCE);
    args.extend(["--cacert".into(), cert.into()]);
    let untrusted = no_profile(args).await;
    assert!(!untrusted.status.success(), "the JWKS server is not trusted by a leaf certificate");
    let saved = no_profile(vec!["token".into(), "verify".into(), "--help".into()]).await;
    assert!(String::from_utf8_lossy(&saved.stdout).contains("--cacert"), "flags are documented");
    let (_j, jwks_file) = temp_file("jwks.json", &String::from_utf8(http_jwks(&jwks, &ca).await).unwrap());
    let wrong = no_profile(base(jwks_file.to_str().unwrap(), "someone-else")).await;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("someone-else") && stderr.contains(AUDIENCE), "names expected and actual: {stderr}");
    let report: Value = serde_json::from_slice(&wrong.stdout).unwrap();
    assert_eq!(report["valid"], false);
}

/// The JWKS document at `url`, fetched with curl trusting `ca` only.
async fn http_jwks(url: &str, ca: &std::path::Path) -> Vec<u8> {
    let out = std::process::Command::new("curl").args(["-sf", "--cacert"]).arg(ca).arg(url).output().unwrap();
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Revoking a replica's intermediate says the replica is compromised: the token keys it held leave the published
/// set, and verifiers refuse tokens they signed (also ones verified before, within the verifier's key refresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_intermediate_withdraws_its_replicas_token_keys() {
    let server = TestServer::start_with(&["--token-audience", AUDIENCE, "--intermediates", "always"]).await;
    let worker = server.enroll("withdrawn-keys", pb::PrincipalType::Worker).await;
    let request = pb::IssueTokenRequest { audience: AUDIENCE.into(), ..Default::default() };
    let token = issue(&server, &worker, request).await.unwrap().access_token;
    let store = server.store().await;
    let issuer = format!("spiffe://{}", server.config().identity.trust_domain);
    let presented: [u8; 32] = {
        let leaf = pem::parse_many(&worker.cert_pem).unwrap().remove(0);
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.contents()).as_ref().try_into().unwrap()
    };
    let before = principald::auth::bearer::TokenVerifier::new(&issuer, AUDIENCE, store.clone());
    before.verify(&token, &presented).await.expect("a token from a live replica verifies");
    let live = principald::auth::bearer::live_token_keys(store.as_ref()).await.unwrap();
    assert_eq!(live.len(), 1, "{live:?}");

    let mut admin = server.admin().await;
    let listed = admin.list_intermediates(pb::ListIntermediatesRequest::default()).await.unwrap().into_inner();
    let fingerprint = listed.intermediates[0].sha256_fingerprint.clone();
    admin.revoke_intermediate(pb::RevokeIntermediateRequest { sha256_fingerprint: fingerprint }).await.unwrap();

    let live = principald::auth::bearer::live_token_keys(store.as_ref()).await.unwrap();
    assert!(live.is_empty(), "the compromised replica's key left the published set: {live:?}");
    let after = principald::auth::bearer::TokenVerifier::new(&issuer, AUDIENCE, store.clone());
    let refused = after.verify(&token, &presented).await.unwrap_err();
    assert!(refused.to_string().contains("does not publish"), "{refused}");
}
