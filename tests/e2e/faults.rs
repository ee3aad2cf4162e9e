//! DynamoDB going away and coming back while clients call: RPCs fail fast with UNAVAILABLE (never hang, never
//! INTERNAL), /readyz turns 503, acknowledged writes survive, and service resumes without a restart. (That a refused
//! transaction writes nothing is the store conformance suite's job.)
//! Uses its own DynamoDB Local instance (file-backed, so data survives the stop) through scripts/test-services.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, dynamo, http_get, serve_config};
use principald::proto::{self as pb};
use tonic::Code;

/// A private DynamoDB Local instance that a test can stop and start on the same port.
struct LocalDynamo {
    state: tempfile::TempDir,
    port: u16,
}

impl LocalDynamo {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-services")
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(Self::script())
            .args(args)
            .arg("dynamodb")
            .env("PRINCIPALD_TEST_SERVICES_STATE", self.state.path())
            .env("PRINCIPALD_DYNAMODB_DB_PATH", self.state.path().join("db"))
            .output()
            .unwrap();
        assert!(out.status.success(), "test-services {args:?} dynamodb: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn start() -> Self {
        let mut local = Self { state: tempfile::tempdir().unwrap(), port: 0 };
        let endpoint = local.run(&["start"]);
        local.port = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        local
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&self) {
        self.run(&["stop"]);
    }

    fn restart(&self) {
        // A file-backed instance comes back on the same port.
        assert_eq!(self.run(&["start"]), self.endpoint());
    }
}

impl Drop for LocalDynamo {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .args(["stop", "dynamodb"])
            .env("PRINCIPALD_TEST_SERVICES_STATE", self.state.path())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_outage_fails_fast_and_service_resumes_without_a_restart() {
    if dynamo::endpoint().is_none() {
        return;
    }
    let local = LocalDynamo::start();
    let tmp = tempfile::tempdir().unwrap();
    let tables = dynamo::fresh_config_at(&local.endpoint()).await;
    let mut config = serve_config(&tmp.path().join("data"), &["--auth-cache-ttl", "1s"]);
    config.store = principald::store::StoreConfig::Dynamodb(tables);
    let server = TestServer::start_config(config).await;
    let mut admin = server.admin().await;
    admin
        .create_principal(pb::CreatePrincipalRequest {
            id: "before".into(),
            r#type: pb::PrincipalType::Worker.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let health = server.running.health_addr;
    assert_eq!(tokio::task::spawn_blocking(move || http_get(health, "/readyz")).await.unwrap().0, 200);

    // Clients keep calling through the outage; every answer must be OK or UNAVAILABLE and come back quickly.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, unavailable, slowest_ms) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let caller = {
        let (mut client, stop, ok, unavailable, slowest_ms) =
            (admin.clone(), stop.clone(), ok.clone(), unavailable.clone(), slowest_ms.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client.list_principals(pb::ListPrincipalsRequest::default()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(status) if status.code() == Code::Unavailable => unavailable.fetch_add(1, Ordering::Relaxed),
                    Err(status) => panic!("unexpected status during the outage: {status:?}"),
                };
                slowest_ms.fetch_max(started.elapsed().as_millis() as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    local.stop();
    let started = Instant::now();
    let status = admin
        .create_principal(pb::CreatePrincipalRequest {
            id: "during".into(),
            r#type: pb::PrincipalType::Worker.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let failed_after = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("127.0.0.1"), "no internals in the message: {status:?}");
    assert!(failed_after < Duration::from_secs(10), "failed after {failed_after:?}: must fail fast, not hang");
    let issue = admin
        .issue_certificate(pb::IssueCertificateRequest {
            principal_id: "before".into(),
            csr: common::key_and_csr().1.into_bytes(),
            validity_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(issue.code(), Code::Unavailable, "{issue:?}");
    // Readiness answers from a probe refreshed once a second: it follows the store within a few seconds.
    let (code, body) = readiness_becomes(health, 503).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("store unreachable") || body.contains("store timed out"), "{body}");

    local.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin
            .create_principal(pb::CreatePrincipalRequest {
                id: "after".into(),
                r#type: pb::PrincipalType::Worker.into(),
                ..Default::default()
            })
            .await
        {
            Ok(_) => break,
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(status) => panic!("service did not resume: {status:?}"),
        }
    }
    assert_eq!(readiness_becomes(health, 200).await.0, 200);
    stop.store(true, Ordering::Relaxed);
    caller.await.unwrap();

    let ids: Vec<String> = admin
        .list_principals(pb::ListPrincipalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .principals
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, ["admin", "after", "before"], "acknowledged writes kept, the failed one absent");
    let slowest = Duration::from_millis(slowest_ms.load(Ordering::Relaxed) as u64);
    eprintln!(
        "during the outage: {} ok, {} unavailable, slowest answer {slowest:?}, first failure after {failed_after:?}",
        ok.load(Ordering::Relaxed),
        unavailable.load(Ordering::Relaxed)
    );
    assert!(unavailable.load(Ordering::Relaxed) > 0 && ok.load(Ordering::Relaxed) > 0);
    assert!(slowest < Duration::from_secs(10), "an RPC took {slowest:?}");
}

/// Polls `/readyz` until it answers `want` or 10 s pass; returns the last answer.
async fn readiness_becomes(health: std::net::SocketAddr, want: u16) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = tokio::task::spawn_blocking(move || http_get(health, "/readyz")).await.unwrap();
        if answer.0 == want || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
