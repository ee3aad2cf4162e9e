//! Rate limits end to end: per principal and per type from configuration, per source address for Enroll (refused
//! attempts cost more), the retry hint on gRPC (grpc-retry-pushback-ms, RetryInfo) and on the token endpoint (429 +
//! Retry-After), principalctl waiting it out, refusals in the audit log and the metrics, and a noisy principal next
//! to a quiet one.

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, principalctl};
use principald::proto::{self as pb};
use serde_json::Value;
use tonic::Code;

const AUDIENCE: &str = "https://jobs.example.test";

fn token_request() -> pb::IssueTokenRequest {
    pb::IssueTokenRequest { audience: AUDIENCE.into(), ..Default::default() }
}

fn enroll_request(id: &str, secret: &str) -> pb::EnrollRequest {
    let (_key, csr) = common::key_and_csr();
    pb::EnrollRequest { principal_id: id.into(), secret: secret.into(), csr: csr.into_bytes(), validity_seconds: 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_apply_per_principal_and_per_type_and_carry_a_retry_hint() {
    let server = TestServer::start_with(&["--token-audience", AUDIENCE, "--rate-limit", "worker.token=1/h:2"]).await;
    let (w1, w2) = (
        server.enroll("limited-1", pb::PrincipalType::Worker).await,
        server.enroll("limited-2", pb::PrincipalType::Worker).await,
    );
    let service = server.enroll("unlimited", pb::PrincipalType::Service).await;
    let mut first = server.client(&w1).await;
    for _ in 0..2 {
        first.issue_token(token_request()).await.expect("within the burst");
    }
    let status = first.issue_token(token_request()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("rate limit for token"), "{}", status.message());
    let pushback: u64 = status.metadata().get("grpc-retry-pushback-ms").unwrap().to_str().unwrap().parse().unwrap();
    assert!((3_500_000..=3_600_000).contains(&pushback), "an hour until the next token: {pushback}");
    assert!(!status.details().is_empty(), "a google.rpc.RetryInfo detail");
    assert_eq!(principald::error::retry_pushback(&status), Some(Duration::from_millis(pushback)));
    // What is not limited still works for the same principal; another worker has its own bucket; other types keep
    // the default.
    first.who_am_i(pb::WhoAmIRequest {}).await.expect("WhoAmI is not limited");
    let mut second = server.client(&w2).await;
    second.issue_token(token_request()).await.expect("another worker's own bucket");
    let mut other_type = server.client(&service).await;
    for _ in 0..5 {
        other_type.issue_token(token_request()).await.expect("the service type keeps the default limit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_enrollment_tokens_runs_out_of_attempts_and_is_audited() {
    let server = TestServer::start_with(&["--rate-limit", "enroll=1/h:20", "--audit-refusals-every", "1s"]).await;
    let mut admin = server.admin().await;
    let request = pb::CreatePrincipalRequest {
        id: "machine".into(),
        r#type: pb::PrincipalType::Worker.into(),
        ..Default::default()
    };
    admin.create_principal(request).await.unwrap();
    let made = admin
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            principal_id: "machine".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut client = server.anonymous().await;
    // Refused attempts are allowed at a tenth of the rate (here a burst of 2): the third wrong guess blocks...
    for guess in ["wrong-1", "wrong-2", "wrong-3"] {
        let status = client.enroll(enroll_request("machine", guess)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // ... so even the right token must wait, and nothing was consumed.
    let status = client.enroll(enroll_request("machine", &made.secret)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(principald::error::retry_pushback(&status).is_some());

    // The refusals reach the audit log per source and reason, and the metrics.
    let mut reasons = Vec::new();
    for _ in 0..50 {
        let events = admin
            .list_audit_events(pb::ListAuditEventsRequest { r#type: "requests.refused".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .events;
        reasons = events
            .iter()
            .map(|e| serde_json::from_str::<Value>(&e.details_json).unwrap())
            .map(|d| (d["reason"].as_str().unwrap_or_default().to_owned(), d["count"].as_u64().unwrap_or(0)))
            .collect();
        if reasons.iter().any(|(r, _)| r == "rate_limited") && reasons.iter().any(|(r, _)| r == "enroll_refused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reasons.contains(&("enroll_refused".into(), 3)), "{reasons:?}");
    assert!(reasons.contains(&("rate_limited".into(), 1)), "{reasons:?}");
    let (code, metrics) = common::http_get(server.running.health_addr, "/metrics");
    assert_eq!(code, 200);
    let limited = "principald_requests_rate_limited_total{operation=\"enroll\",limit=\"source\"} 1";
    assert!(metrics.lines().any(|l| l == limited), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_answers_429_with_retry_after() {
    let server = TestServer::start_with(&[
        "--token-audience",
        AUDIENCE,
        "--oauth-listen",
        "127.0.0.1:0",
        "--rate-limit",
        "service.token=1/h:1",
    ])
    .await;
    let client = server.enroll("oauth-client", pb::PrincipalType::Service).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca, cert, key) =
        (write("ca.pem", &server.ca_pem()), write("cert.pem", &client.cert_pem), write("key.pem", &client.key_pem));
    let url = format!("https://localhost:{}/oauth2/token", server.running.oauth_addr.unwrap().port());
    let post = move || {
        let (ca, cert, key, url) = (ca.clone(), cert.clone(), key.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            let out = Command::new("curl")
                .args(["-sS", "-i", "--cacert", &ca, "--cert", &cert, "--key", &key])
                .args(["-d", &format!("grant_type=client_credentials&audience={AUDIENCE}"), &url])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let first = post().await.unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let second = post().await.unwrap();
    assert!(second.starts_with("HTTP/1.1 429"), "{second}");
    let retry_after: u64 = second
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after:").map(|v| v.trim().parse().unwrap()))
        .expect("a Retry-After header");
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    assert!(second.contains("\"error\":\"temporarily_unavailable\""), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principalctl_waits_out_the_servers_retry_hint() {
    let server = TestServer::start_with(&["--token-audience", AUDIENCE, "--rate-limit", "admin.token=1/s:1"]).await;
    let profile = server.data_dir.join("profiles").join("admin");
    let first = principalctl(&profile, &["token", "--audience", AUDIENCE]).await;
    assert!(first.status.success(), "{first:?}");
    let started = Instant::now();
    let second = principalctl(&profile, &["token", "--audience", AUDIENCE]).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{second:?}");
    assert!(stderr.contains("rate limited by the server; retrying in"), "{stderr}");
    assert!(String::from_utf8_lossy(&second.stdout).trim().split('.').count() == 3, "a JWT");
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited: {:?}", started.elapsed());
}

/// p99 of `samples`.
fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

async fn who_am_i_latencies(
    client: &mut pb::principal_service_client::PrincipalServiceClient<tonic::transport::Channel>,
    n: usize,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        client.who_am_i(pb::WhoAmIRequest {}).await.expect("the quiet principal is always served");
        out.push(started.elapsed());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_principal_and_an_enroll_flood_leave_a_quiet_principal_alone() {
    let server = TestServer::start_with(&["--token-audience", AUDIENCE]).await;
    let noisy = server.enroll("noisy", pb::PrincipalType::Service).await;
    let quiet = server.enroll("quiet", pb::PrincipalType::Worker).await;
    let mut quiet = server.client(&quiet).await;
    who_am_i_latencies(&mut quiet, 50).await;
    let mut calm = who_am_i_latencies(&mut quiet, 300).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (served, limited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let noisy = server.client(&noisy).await;
    let started = Instant::now();
    let mut hammers = Vec::new();
    for _ in 0..96 {
        let (mut client, stop, served, limited) = (noisy.clone(), stop.clone(), served.clone(), limited.clone());
        hammers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.issue_token(token_request()).await {
                    Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                    Err(s) if s.code() == Code::ResourceExhausted => limited.fetch_add(1, Ordering::Relaxed),
                    Err(s) => panic!("{s:?}"),
                };
            }
        }));
    }
    let mut guesser = server.anonymous().await;
    let guessing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                outcomes.push(guesser.enroll(enroll_request("quiet", "guess")).await.unwrap_err().code());
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut noisy_run = who_am_i_latencies(&mut quiet, 300).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for hammer in hammers {
        hammer.await.unwrap();
    }
    let outcomes = guessing.await.unwrap();

    // The noisy principal got its burst and rate (defaults: 200, then 20/s), the rest was refused.
    let (served, limited) = (served.load(Ordering::Relaxed), limited.load(Ordering::Relaxed));
    assert!(served <= 200 + 20 * (elapsed.as_secs() + 2), "served {served} in {elapsed:?}");
    assert!(limited > 0, "nothing was refused");
    // The guesser: refused attempts at a tenth of the attempt rate (defaults: 10 at once, then 1/s); beyond that
    // only RESOURCE_EXHAUSTED.
    let wrong = outcomes.iter().filter(|c| **c == Code::Unauthenticated).count() as u64;
    assert!((10..=12 + elapsed.as_secs()).contains(&wrong), "{wrong} wrong guesses in {elapsed:?}");
    assert!(outcomes.contains(&Code::ResourceExhausted), "{outcomes:?}");
    // The quiet principal was served every time (who_am_i_latencies fails otherwise). Its p99 beside the noise
    // against its calm p99 is a speed figure: principald-bench group v measures it with the server in its own
    // process (goal 1.5x); here, on a test machine running other tests at once, it is only reported.
    let (calm, noisy) = (p99(&mut calm), p99(&mut noisy_run));
    eprintln!("quiet WhoAmI p99: calm {calm:?}, beside the noise {noisy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_may_cap_live_certificates_per_principal() {
    let server = TestServer::start_with(&["--max-live-certificates", "worker=2"]).await;
    let first = server.enroll("capped", pb::PrincipalType::Worker).await;
    server.issue("capped").await;
    let (_key, csr) = common::key_and_csr();
    let request =
        pb::IssueCertificateRequest { principal_id: "capped".into(), csr: csr.into_bytes(), validity_seconds: 0 };
    let mut admin = server.admin().await;
    let status = admin.issue_certificate(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("holds 2 live certificates"), "{}", status.message());
    // Renewal replaces a certificate, so it is allowed at the cap; revoking one makes room.
    let (_key, csr) = common::key_and_csr();
    let renewal = pb::RenewCertificateRequest { csr: csr.into_bytes(), validity_seconds: 0 };
    let renewed = server.client(&first).await.renew_certificate(renewal).await.expect("renewal at the cap");
    let serial = renewed.into_inner().certificate.unwrap().serial;
    admin.revoke_certificate(pb::RevokeCertificateRequest { serial, reason: 0 }).await.unwrap();
    admin.issue_certificate(request).await.expect("room again");
    // Other types are not capped.
    server.enroll("uncapped", pb::PrincipalType::Service).await;
    for _ in 0..3 {
        server.issue("uncapped").await;
    }
}
