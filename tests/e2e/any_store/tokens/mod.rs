//! Certificate-bound access tokens end to end: IssueToken over mTLS and the HTTPS token endpoint, checked by PyJWT
//! against the JWKS fetched over HTTPS and by openssl for the cnf thumbprint; the policy's refusals; discovery. On
//! SQLite, and on DynamoDB Local with PRINCIPALD_TEST_STORE=dynamodb.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{TestServer, temp_file};
use principald::client::Credentials;
use principald::proto::{self as pb};
use serde_json::Value;
use tonic::Code;

mod lifecycle;

const AUDIENCE: &str = "https://jobs.example.test";

async fn server() -> TestServer {
    TestServer::start_with(&[
        "--token-audience",
        AUDIENCE,
        "--token-audience",
        "other",
        "--oauth-listen",
        "127.0.0.1:0",
    ])
    .await
}

fn oauth_url(server: &TestServer) -> String {
    format!("https://localhost:{}", server.running.oauth_addr.expect("oauth listener").port())
}

/// openssl's view of the RFC 8705 thumbprint of the credentials' leaf certificate.
fn openssl_thumbprint(creds: &Credentials) -> String {
    let leaf = pem::parse_many(&creds.cert_pem).unwrap().remove(0);
    let (_d, file) = temp_file("leaf.pem", &pem::encode(&leaf));
    let script = format!(
        "openssl x509 -in {} -outform DER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\\n'",
        file.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

async fn issue(
    server: &TestServer,
    creds: &Credentials,
    request: pb::IssueTokenRequest,
) -> Result<pb::IssueTokenResponse, tonic::Status> {
    server.client(creds).await.issue_token(request).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_tokens_verify_with_pyjwt_and_are_bound_to_the_callers_certificate() {
    let server = server().await;
    let worker = server.enroll("token-worker", pb::PrincipalType::Worker).await;
    let request = pb::IssueTokenRequest { audience: AUDIENCE.into(), ..Default::default() };
    let issued = issue(&server, &worker, request).await.unwrap();
    assert_eq!(issued.token_type, "Bearer");
    assert!((840..=900).contains(&issued.expires_in), "{}", issued.expires_in);
    assert_eq!(issued.scope, "certificate.renew-self token.issue");

    let token = issued.access_token.clone();
    let claims = tokio::task::spawn_blocking({
        let (server_ca, url, token) = (server.ca_pem(), oauth_url(&server), token.clone());
        move || verify_blocking(&server_ca, &url, &token, AUDIENCE)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("PyJWT refused the token: {e}"));
    assert_eq!(claims["sub"], "spiffe://principald.local/worker/token-worker");
    assert_eq!(claims["client_id"], "token-worker");
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["scope"], issued.scope);
    assert_eq!(claims["cnf"]["x5t#S256"], openssl_thumbprint(&worker), "cnf is the presented certificate's thumbprint");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() == 36));

    // PyJWT refuses it for another audience, and a token whose payload was changed.
    let wrong = tokio::task::spawn_blocking({
        let (server_ca, url, token) = (server.ca_pem(), oauth_url(&server), token.clone());
        move || verify_blocking(&server_ca, &url, &token, "other")
    });
    assert!(wrong.await.unwrap().is_err());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].replacen('e', "f", 1);
    let forged = parts.join(".");
    let forged = tokio::task::spawn_blocking({
        let (server_ca, url) = (server.ca_pem(), oauth_url(&server));
        move || verify_blocking(&server_ca, &url, &forged, AUDIENCE)
    });
    assert!(forged.await.unwrap().is_err());
}

fn verify_blocking(ca_pem: &str, url: &str, token: &str, audience: &str) -> Result<Value, String> {
    let (_d, ca) = temp_file("ca.pem", ca_pem);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pyjwt-verify");
    let out = Command::new(script)
        .args([token, &format!("{url}/jwks.json"), ca.to_str().unwrap(), audience, url])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn the_policy_refuses_what_the_caller_may_not_have() {
    let server = server().await;
    let worker = server.enroll("narrow", pb::PrincipalType::Worker).await;
    let ask = |audience: &str, scopes: &[&str], lifetime: u64| pb::IssueTokenRequest {
        audience: audience.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        lifetime_seconds: lifetime,
    };
    let narrowed = issue(&server, &worker, ask(AUDIENCE, &["token.issue"], 120)).await.unwrap();
    assert_eq!((narrowed.scope.as_str(), narrowed.expires_in), ("token.issue", 120));
    let code = |r: Result<pb::IssueTokenResponse, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(issue(&server, &worker, ask(AUDIENCE, &["principal.write"], 0)).await), Code::PermissionDenied);
    assert_eq!(code(issue(&server, &worker, ask("https://evil.example", &[], 0)).await), Code::InvalidArgument);
    assert_eq!(code(issue(&server, &worker, ask(AUDIENCE, &[], 901)).await), Code::InvalidArgument);
    assert_eq!(code(issue(&server, &worker, ask(AUDIENCE, &[], 59)).await), Code::InvalidArgument);

    // Without audiences configured, no tokens at all.
    let plain = TestServer::start().await;
    let status = plain.admin().await.issue_token(ask(AUDIENCE, &[], 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_token_endpoint_and_discovery_work_for_oauth_clients() {
    let server = server().await;
    let worker = server.enroll("oauth-client", pb::PrincipalType::Service).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca, cert, key) =
        (write("ca.pem", &server.ca_pem()), write("cert.pem", &worker.cert_pem), write("key.pem", &worker.key_pem));
    let url = oauth_url(&server);
    let curl = move |args: Vec<String>| {
        let out = Command::new("curl").args(["-sS", "--cacert", &ca]).args(&args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let run = |args: Vec<String>| {
        let curl = curl.clone();
        tokio::task::spawn_blocking(move || curl(args))
    };

    let (ok, body) = run(vec![format!("{url}/.well-known/openid-configuration")]).await.unwrap();
    assert!(ok, "{body}");
    let metadata: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metadata["issuer"], url);
    assert_eq!(metadata["jwks_uri"], format!("{url}/jwks.json"));
    assert_eq!(metadata["tls_client_certificate_bound_access_tokens"], true);
    let (_, body) = run(vec![format!("{url}/.well-known/oauth-authorization-server")]).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["token_endpoint"], format!("{url}/oauth2/token"));
    let (_, body) = run(vec![format!("{url}/jwks.json")]).await.unwrap();
    let jwks: Value = serde_json::from_str(&body).unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty() && k.iter().all(|k| k["kty"] == "EC" && k["kid"].is_string()))
    );

    let form = |extra: &str| {
        vec![
            "--cert".into(),
            cert.clone(),
            "--key".into(),
            key.clone(),
            "-d".into(),
            format!("grant_type=client_credentials&audience={AUDIENCE}{extra}"),
            format!("{url}/oauth2/token"),
        ]
    };
    let (ok, body) = run(form("&scope=token.issue")).await.unwrap();
    assert!(ok, "{body}");
    let response: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((response["token_type"].as_str(), response["scope"].as_str()), (Some("Bearer"), Some("token.issue")));
    let token = response["access_token"].as_str().unwrap().to_owned();
    let claims = tokio::task::spawn_blocking({
        let (server_ca, url) = (server.ca_pem(), url.clone());
        move || verify_blocking(&server_ca, &url, &token, AUDIENCE)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(claims["cnf"]["x5t#S256"], openssl_thumbprint(&worker));

    let (_, body) = run(form("&scope=principal.write")).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "invalid_scope");
    // No client certificate: invalid_client.
    let anonymous =
        vec!["-d".into(), format!("grant_type=client_credentials&audience={AUDIENCE}"), format!("{url}/oauth2/token")];
    let (_, body) = run(anonymous).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "invalid_client");
    let (_, body) =
        run(form("").into_iter().map(|a| a.replace("client_credentials", "password")).collect()).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "unsupported_grant_type");
}

mod echo {
    tonic::include_proto!("example.v1");
}

/// The example resource server (examples/authenticated_service.rs) in process, on the test server's store, requiring
/// bound tokens for `audience` from `issuer`; its address.
async fn resource_server(server: &TestServer, issuer: &str, audience: &str) -> String {
    use principald::auth::Requirement;
    use principald::model::PrincipalType;
    struct Echo;
    #[tonic::async_trait]
    impl echo::echo_server::Echo for Echo {
        async fn echo(
            &self,
            request: tonic::Request<echo::EchoRequest>,
        ) -> Result<tonic::Response<echo::EchoResponse>, tonic::Status> {
            let caller = principald::auth::Caller::from_request(&request)?;
            let message = request.into_inner().message;
            Ok(tonic::Response::new(echo::EchoResponse { message, caller: caller.id.as_str().to_owned() }))
        }
    }
    // No cache: a revocation is seen on the next request (the follower would also bring it within a poll).
    let bound = principald::resource_server::ResourceServer::new(&server.data_dir, server.store().await)
        .grant(PrincipalType::Worker, "echo.call")
        .allow_method("example.v1.Echo", "Echo", Requirement::Permission("echo.call".into()))
        .cache_ttl(Duration::ZERO)
        .bearer_tokens(issuer, audience, true)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}", bound.local_addr().port());
    tokio::spawn(
        bound.serve(tonic::service::Routes::new(echo::echo_server::EchoServer::new(Echo)), std::future::pending()),
    );
    url
}

async fn call_echo(url: &str, creds: &Credentials, token: Option<&str>) -> Result<String, tonic::Status> {
    let channel = principald::client::endpoint(url, creds).unwrap().connect().await.unwrap();
    let mut client = echo::echo_client::EchoClient::new(channel);
    let mut request = tonic::Request::new(echo::EchoRequest { message: "hi".into() });
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    client.echo(request).await.map(|r| r.into_inner().caller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_server_accepts_bound_tokens_only_with_their_certificate_and_until_it_is_revoked() {
    let permissions = r#"{"grants": {"worker": ["echo.call"]}}"#;
    let (_p, permissions_file) = temp_file("permissions.json", permissions);
    let server = TestServer::start_with(&[
        "--token-audience",
        "https://echo.example.test",
        "--permissions-file",
        permissions_file.to_str().unwrap(),
    ])
    .await;
    let alice = server.enroll("alice", pb::PrincipalType::Worker).await;
    let bob = server.enroll("bob", pb::PrincipalType::Worker).await;
    let ask = |scopes: &[&str]| pb::IssueTokenRequest {
        audience: "https://echo.example.test".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        lifetime_seconds: 0,
    };
    let token = issue(&server, &alice, ask(&["echo.call"])).await.unwrap().access_token;
    let narrow = issue(&server, &alice, ask(&["token.issue"])).await.unwrap().access_token;
    let url = resource_server(&server, "spiffe://principald.local", "https://echo.example.test").await;

    assert_eq!(call_echo(&url, &alice, Some(&token)).await.unwrap(), "alice");
    let stolen = call_echo(&url, &bob, Some(&token)).await.unwrap_err();
    assert_eq!(stolen.code(), Code::Unauthenticated);
    assert!(stolen.message().contains("another certificate"), "{}", stolen.message());
    assert_eq!(call_echo(&url, &alice, None).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(call_echo(&url, &alice, Some(&narrow)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(call_echo(&url, &alice, Some("not.a.token")).await.unwrap_err().code(), Code::Unauthenticated);
    // A token for another audience is refused.
    let other = resource_server(&server, "spiffe://principald.local", "https://other.example.test").await;
    assert_eq!(call_echo(&other, &alice, Some(&token)).await.unwrap_err().code(), Code::Unauthenticated);

    // Revoking the certificate kills its tokens.
    let serial = {
        let der = pem::parse_many(&alice.cert_pem).unwrap().remove(0).into_contents();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        principald::model::Serial::from_bytes(cert.raw_serial()).as_str().to_owned()
    };
    server.admin().await.revoke_certificate(pb::RevokeCertificateRequest { serial, reason: 4 }).await.unwrap();
    assert_eq!(call_echo(&url, &alice, Some(&token)).await.unwrap_err().code(), Code::Unauthenticated);
}
