//! (c) Issuance figures: IssueCertificate at 32 streams, chained RenewCertificate, and the in-process baseline (CSR
//! verification + signing alone).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use principald::client::Credentials;
use principald::proto as pb;

use crate::report::Row;
use crate::{STREAMS, connect, csr, load};

/// (c) IssueCertificate and RenewCertificate with prepared CSRs vs CSR verification + signing alone, in process.
pub async fn issuance(
    rows: &mut Vec<Row>,
    url: &str,
    admin: &Credentials,
    workers: &[Credentials],
    data: &Path,
    duration: Duration,
) {
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new((0..256).map(|_| csr().1).collect());
    let baseline = sign_baseline(data, &csrs, duration);
    let stats = issue_stats(url, admin, &csrs, "bench-worker", workers.len(), duration).await;
    rows.push(issuance_row(format!("IssueCertificate, {STREAMS} streams, durable"), &stats, baseline));
    // A certificate renews once, so each worker renews a chain: renew, reconnect with the new certificate (a new mTLS
    // handshake, as a real worker would), renew that one, and so on.
    let mut chains = Vec::new();
    for w in workers.iter().take(STREAMS) {
        chains.push(tokio::sync::Mutex::new((connect(url, w).await, w.clone())));
    }
    let chains = Arc::new(chains);
    let url = url.to_owned();
    let stats = load::run(STREAMS, duration, move |stream, _| {
        let (chains, url) = (chains.clone(), url.clone());
        async move {
            let mut chain = chains[stream].lock().await;
            let (key, csr) = csr();
            let Ok(issued) = chain.0.renew_certificate(pb::RenewCertificateRequest { csr, validity_seconds: 0 }).await
            else {
                return false;
            };
            let issued = issued.into_inner();
            let creds = Credentials {
                ca_pem: issued.ca_chain_pem,
                cert_pem: issued.certificate_pem,
                key_pem: key.serialize_pem(),
            };
            *chain = (connect(&url, &creds).await, creds);
            true
        }
    })
    .await;
    // No throughput target: each renewal here also pays a new mTLS handshake and a client key generation, which is
    // what a worker does once per certificate lifetime, not thousands of times a second.
    rows.push(
        Row::new(
            "c",
            format!("RenewCertificate chained (renew, then reconnect with the new certificate), {STREAMS} workers"),
            stats.rate(),
            "cert/s",
        )
        .baseline("CSR verify + sign in process, 2 threads", baseline)
        .note(format!(
            "p50/p99 {:.2}/{:.2} ms, {} errors",
            stats.percentile_ms(50.0),
            stats.percentile_ms(99.0),
            stats.errors
        )),
    );
}

fn issuance_row(name: String, stats: &load::Stats, baseline: f64) -> Row {
    Row::new("c", name, stats.rate(), "cert/s")
        .baseline("CSR verify + sign in process, 2 threads", baseline)
        .target(">= 5000 cert/s", stats.rate() >= 5000.0)
        .note(format!(
            "p50/p99 {:.2}/{:.2} ms, {} errors",
            stats.percentile_ms(50.0),
            stats.percentile_ms(99.0),
            stats.errors
        ))
}

pub async fn issue_stats(
    url: &str,
    admin: &Credentials,
    csrs: &Arc<Vec<Vec<u8>>>,
    prefix: &str,
    principals: usize,
    duration: Duration,
) -> load::Stats {
    let client = connect(url, admin).await;
    let csrs = csrs.clone();
    let prefix = prefix.to_owned();
    load::run(STREAMS, duration, move |stream, n| {
        let mut c = client.clone();
        let csr = csrs[(n as usize * STREAMS + stream) % csrs.len()].clone();
        let principal_id = format!("{prefix}-{:03}", (n as usize + stream) % principals);
        async move {
            c.issue_certificate(pb::IssueCertificateRequest { principal_id, csr, validity_seconds: 0 }).await.is_ok()
        }
    })
    .await
}

fn sign_baseline(data: &Path, csrs: &Arc<Vec<Vec<u8>>>, duration: Duration) -> f64 {
    let ca = Arc::new(principald::bootstrap::load_ca(&principald::datadir::DataDir::new(data)).unwrap());
    let identity =
        principald::pki::IdentityConfig { trust_domain: "principald.local".into(), oids: Default::default() };
    let id: principald::model::PrincipalId = "bench-worker-000".parse().unwrap();
    let csrs = csrs.clone();
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    load::run_threads(2, duration, move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let csr = principald::pki::csr::ValidatedCsr::parse(&csrs[n % csrs.len()]).unwrap();
        let leaf = principald::pki::leaf::issue_client(
            &ca,
            &identity,
            principald::model::PrincipalType::Worker,
            &id,
            &csr.public_key,
            Duration::from_secs(86400),
            0,
        )
        .unwrap();
        std::hint::black_box(leaf);
    })
}
