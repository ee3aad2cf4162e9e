//! (m) Building the CRLs at scale: 100,000 revoked, unexpired certificates in the embedded store, every partition
//! read and signed by the root (what a replica does at start and when a revocation lands), in this process.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use principald::store::Store;

use crate::report::Row;

pub async fn crls(rows: &mut Vec<Row>, root: &Path, revoked: u64, rooted: &[String]) {
    let store = revoked_store(&root.join("crl-bench.db"), revoked).await;
    let key = principald::pki::signer::in_memory().unwrap();
    let root_ca = principald::pki::ca::Root::create(key, "bench CA", time::Duration::days(365), false).unwrap();
    let base = "http://ca.example.test:8080";
    let root_ca = root_ca.publishing_status_at(Some(principald::pki::crl::StatusUrls::under(base)));
    let ca = Arc::new(principald::pki::ca::CertificateAuthority::direct(root_ca));
    let issuers = principald::revocation::Issuers::load(ca, store.clone()).await.unwrap();
    let publisher =
        principald::revocation::CrlPublisher::new(store.clone(), issuers, base.into(), Duration::from_secs(3600));
    let rss_before = rss_kib();
    let started = Instant::now();
    let signed = publisher.refresh().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let rss_after = rss_kib();
    let (bytes, entries) = (0..principald::pki::crl::PARTITIONS)
        .filter_map(|p| publisher.get(p))
        .fold((0usize, 0usize), |(b, e), c| (b + c.crl.der.len(), e + c.entries));
    assert_eq!((signed, entries as u64), (16, revoked));
    rows.push(
        Row::new("m", format!("build + sign all 16 CRL partitions, {revoked} revoked certificates"), seconds, "s")
            .target("< 5 s", seconds < 5.0)
            .note(format!(
                "{:.1} MiB of DER in all, largest partition {} KiB; process RSS {} -> {} MiB",
                bytes as f64 / 1_048_576.0,
                (0..16).filter_map(|p| publisher.get(p)).map(|c| c.crl.der.len()).max().unwrap_or(0) / 1024,
                rss_before / 1024,
                rss_after / 1024
            )),
    );
    rows.push(Row::new("m", "memory held by the published CRLs", bytes as f64 / 1_048_576.0, "MiB"));

    // The same CRLs re-signed by each root outside the process (a KMS root signs each partition, ~300 KiB, as a
    // DIGEST): what a revocation costs such a root, against the in-memory key above.
    for uri in rooted.iter().filter(|u| u.starts_with("awskms:") || u.starts_with("pkcs11:")) {
        let key =
            principald::pki::signer::open_async(uri.parse().expect("key URI"), true).await.expect("open root key");
        let ca = tokio::task::spawn_blocking(move || {
            let root = principald::pki::ca::Root::create(key, "bench CA", time::Duration::days(365), false).unwrap();
            principald::pki::ca::CertificateAuthority::direct(
                root.publishing_status_at(Some(principald::pki::crl::StatusUrls::under(base))),
            )
        })
        .await
        .unwrap();
        // A store of its own: CRLs stored by the in-memory CA above would be adopted, not re-signed.
        let store = revoked_store(&root.join(format!("crl-bench-{}.db", rows.len())), revoked).await;
        let issuers = principald::revocation::Issuers::load(Arc::new(ca), store.clone()).await.unwrap();
        let remote =
            principald::revocation::CrlPublisher::new(store.clone(), issuers, base.into(), Duration::from_secs(3600));
        let started = Instant::now();
        let signed = remote.refresh().await.unwrap();
        let remote_seconds = started.elapsed().as_secs_f64();
        assert_eq!(signed, 16);
        let kind = uri.split(':').next().unwrap_or("remote");
        rows.push(
            Row::new(
                "m",
                format!("build + sign all 16 CRL partitions, {revoked} revoked, root key in {kind}"),
                remote_seconds,
                "s",
            )
            .baseline("same, key in memory", seconds)
            .target("< 10 s", remote_seconds < 10.0)
            .note("one remote signature per partition (KMS: MessageType DIGEST, the CRL hashed locally)"),
        );
    }
}

/// A fresh embedded store holding `revoked` revoked, unexpired certificates of one principal.
async fn revoked_store(path: &Path, revoked: u64) -> Arc<dyn Store> {
    let store = principald::store::sqlite::SqliteStore::open(path).unwrap();
    let (owner, certificates) = principald::store::conformance::revoked_fixture(revoked, None);
    store.import(vec![owner], certificates).await.unwrap();
    Arc::new(store)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
