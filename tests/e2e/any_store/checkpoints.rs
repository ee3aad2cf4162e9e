//! Signed audit checkpoints outside the store: principald writes them (`--audit-checkpoints DIR|s3://BUCKET/PREFIX`),
//! and `principalctl audit verify --checkpoints` finds what whoever writes the store did behind principald's back
//! afterwards: a deleted head, a deleted chain, a wiped log, a truncated chain, a suffix rewritten with recomputed
//! hashes and head. Every case with a directory; with moto's S3 (an Object Lock bucket) the untouched log, a truncated
//! and a rewritten chain, and a missing bucket. On SQLite, and on DynamoDB Local with PRINCIPALD_TEST_STORE=dynamodb.

use crate::common;

use common::tamper::{Tamper, tamper};
use common::{TestServer, principalctl, s3};
use principald::audit::checkpoint::Checkpoint;
use principald::audit::checkpoint_source::Location;
use principald::proto::{self as pb};

/// The checkpoints at `location`, opened with the server's CA, oldest first (by name: the time comes first).
async fn checkpoints(location: &Location, ca_der: &[u8]) -> Vec<Checkpoint> {
    let mut notes = location.read_notes().await.unwrap();
    notes.sort();
    notes.iter().map(|(_, text)| Checkpoint::open(text, ca_der).expect("a valid checkpoint")).collect()
}

/// Runs a server with checkpoints at `location`, makes a few changes, stops it (the last checkpoint is written),
/// changes the store behind its back, starts it again and verifies against the checkpoints: (exit status 0, what
/// verify printed).
async fn verify_after(how: Tamper, location: &str) -> (bool, String) {
    let flags = ["--audit-checkpoints", location, "--audit-checkpoint-every", "1h"];
    let server = TestServer::start_with(&flags).await;
    for id in ["c1", "c2"] {
        server.enroll(id, pb::PrincipalType::Worker).await;
    }
    let ca_der = server.ca.cert_der().to_vec();
    let mut stopped = server.stop().await;
    let written = checkpoints(&location.parse().unwrap(), &ca_der).await;
    assert_eq!(written.len(), 2, "one checkpoint written before serving, one at shutdown: {written:?}");
    let head = written[1].heads.iter().max_by_key(|h| h.seq).unwrap().clone();
    assert!(head.seq >= 5 && head.seq > written[0].heads.iter().map(|h| h.seq).max().unwrap(), "{written:?}");
    tamper(&stopped.config, &head.chain, head.seq, how).await;
    // Started again without checkpoints, so the log is as the tampering left it: a replica writing checkpoints would
    // append one's copy at once and fill the truncated positions (still found, as rewritten).
    stopped.config.accountability.audit_checkpoints = None;
    let server = stopped.start().await;
    let profile = server.data_dir.join("profiles").join("admin");
    let args = ["--server", &server.url, "audit", "verify", "--checkpoints", location];
    let verified = principalctl(&profile, &args).await;
    let text = format!("{}{}", String::from_utf8_lossy(&verified.stdout), String::from_utf8_lossy(&verified.stderr));
    (verified.status.success(), text)
}

/// [`verify_after`] with a fresh directory.
async fn verify_dir_after(how: Tamper) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    verify_after(how, dir.path().to_str().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_log_verifies_against_its_checkpoints() {
    let (ok, text) = verify_dir_after(Tamper::None).await;
    assert!(ok && text.contains("audit log intact"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_head_is_found() {
    let (ok, text) = verify_dir_after(Tamper::DeleteHead).await;
    assert!(!ok && text.contains("no head record"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_chain_is_found() {
    let (ok, text) = verify_dir_after(Tamper::DeleteChain).await;
    assert!(!ok && text.contains("the chain is gone"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_log_is_found() {
    let (ok, text) = verify_dir_after(Tamper::Wipe).await;
    assert!(!ok && text.contains("the chain is gone"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_chain_is_found() {
    let (ok, text) = verify_dir_after(Tamper::Truncate).await;
    assert!(!ok && text.contains("events were deleted"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suffix_rewritten_with_recomputed_hashes_and_head_is_found() {
    let (ok, text) = verify_dir_after(Tamper::Rewrite).await;
    assert!(!ok && text.contains("rewritten"), "{text}");
}

/// [`verify_after`] with checkpoints under a prefix of a fresh Object Lock bucket in moto's S3; `None` to skip.
async fn verify_s3_after(how: Tamper) -> Option<(bool, String)> {
    s3::endpoint()?;
    let bucket = s3::fresh_bucket().await;
    let location = format!("s3://{bucket}/audit/replica-a");
    let verified = verify_after(how, &location).await;
    // Each checkpoint is an object carrying the SHA-256 checksum S3 checked on the write.
    let client = s3::client().await;
    let listed = client.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        keys.len() >= 2 && keys.iter().all(|k| k.starts_with("audit/replica-a/") && k.ends_with(".note")),
        "{keys:?}"
    );
    let head = client
        .head_object()
        .bucket(&bucket)
        .key(keys[0])
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert!(head.checksum_sha256().is_some(), "{head:?}");
    Some(verified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_log_verifies_against_its_checkpoints_in_s3() {
    let Some((ok, text)) = verify_s3_after(Tamper::None).await else { return };
    assert!(ok && text.contains("audit log intact"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_chain_is_found_by_checkpoints_in_s3() {
    let Some((ok, text)) = verify_s3_after(Tamper::Truncate).await else { return };
    assert!(!ok && text.contains("events were deleted"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_chain_is_found_by_checkpoints_in_s3() {
    let Some((ok, text)) = verify_s3_after(Tamper::Rewrite).await else { return };
    assert!(!ok && text.contains("rewritten"), "{text}");
}

/// A bucket that does not exist (or denies the calls): principald does not start, and verify says which bucket and
/// what S3 answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_stops_the_start_and_fails_verify() {
    if s3::endpoint().is_none() {
        return;
    }
    let location = format!("s3://{}/audit", s3::unique_bucket());
    principald::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let config = common::serve_config(&tmp.path().join("data"), &["--audit-checkpoints", &location]);
    let error = principald::server::start(config).await.err().expect("no start without a checkpoint sink").to_string();
    assert!(
        error.contains(&location) && error.contains("first checkpoint") && error.contains("NoSuchBucket"),
        "{error}"
    );

    let server = TestServer::start().await;
    let profile = server.data_dir.join("profiles").join("admin");
    let args = ["--server", &server.url, "audit", "verify", "--checkpoints", &location];
    let verified = principalctl(&profile, &args).await;
    let text = String::from_utf8_lossy(&verified.stderr);
    assert!(!verified.status.success() && text.contains(&location) && text.contains("NoSuchBucket"), "{text}");
}

/// The `principald_audit_checkpoints_total` samples of a running server: (written, failed).
async fn checkpoint_counts(server: &TestServer) -> (u64, u64) {
    let addr = server.running.health_addr;
    let (_, body) = tokio::task::spawn_blocking(move || common::http_get(addr, "/metrics")).await.unwrap();
    let count = |outcome: &str| {
        let prefix = format!("principald_audit_checkpoints_total{{outcome=\"{outcome}\"}} ");
        body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    (count("written"), count("failed"))
}

/// A bucket that goes away while the server runs: the write fails, is counted and tried again, and once the bucket is
/// back the checkpoint it missed is written (the heads as they are then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_to_s3_is_counted_and_written_later() {
    if s3::endpoint().is_none() {
        return;
    }
    // Without Object Lock, so the test can take the bucket away.
    let (client, bucket) = (s3::client().await, s3::unique_bucket());
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    let location = format!("s3://{bucket}/audit");
    let server = TestServer::start_with(&["--audit-checkpoints", &location, "--audit-checkpoint-every", "1s"]).await;
    assert_eq!(checkpoint_counts(&server).await, (1, 0), "the first, before serving");
    let ca_der = server.ca.cert_der().to_vec();
    let before = checkpoints(&location.parse().unwrap(), &ca_der).await;
    for object in client.list_objects_v2().bucket(&bucket).send().await.unwrap().contents() {
        client.delete_object().bucket(&bucket).key(object.key().unwrap()).send().await.unwrap();
    }
    client.delete_bucket().bucket(&bucket).send().await.unwrap();
    server.enroll("c1", pb::PrincipalType::Worker).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while checkpoint_counts(&server).await.1 < 2 {
        assert!(std::time::Instant::now() < deadline, "{:?}", checkpoint_counts(&server).await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    while checkpoint_counts(&server).await.0 < 2 {
        assert!(std::time::Instant::now() < deadline, "{:?}", checkpoint_counts(&server).await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let written = checkpoints(&location.parse().unwrap(), &ca_der).await;
    let profile = server.data_dir.join("profiles").join("admin");
    let args = ["--server", &server.url, "audit", "verify", "--checkpoints", &location];
    let verified = principalctl(&profile, &args).await;
    let text = format!("{}{}", String::from_utf8_lossy(&verified.stdout), String::from_utf8_lossy(&verified.stderr));
    assert!(verified.status.success() && text.contains("audit log intact"), "{text}");
    // The first checkpoint written after the outage covers the enrolment made during it.
    let top = |c: &Checkpoint| c.heads.iter().map(|h| h.seq).max().unwrap();
    assert!(top(&written[0]) > top(&before[0]) + 1, "{before:?} {written:?}");
}
