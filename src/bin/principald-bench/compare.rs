//! Same-run comparisons of durable IssueCertificate at 32 streams between principald configurations, measured in
//! alternating slices so a machine that slows down mid-run weighs on all of them alike:
//! (k) the root key in a file (it signs leaves itself) against roots in KMS (moto) or on a PKCS#11 token (SoftHSM2),
//! which sign through a replica intermediate held in memory; (l) the audit log on against off.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use principald::proto as pb;

use crate::report::Row;
use crate::{STREAMS, admin_credentials, connect, csr, issuance, procs};

/// Alternating slices per server.
const SLICES: u32 = 4;
const PRINCIPALS: usize = 8;

/// One configuration: a label, flags for bootstrap and serve, flags for serve only.
pub struct Variant {
    pub label: String,
    pub both: Vec<String>,
    pub serve: Vec<String>,
}

/// (k) Root key outside the process.
pub fn rooted(roots: &[String]) -> Vec<Variant> {
    let file = Variant { label: "root key in a file".into(), both: Vec::new(), serve: Vec::new() };
    let remote = roots.iter().map(|uri| {
        let place = if uri.starts_with("awskms:") { "AWS KMS" } else { "a PKCS#11 token" };
        Variant {
            label: format!("root in {place}, replica intermediate"),
            both: vec!["--ca-key".into(), uri.clone()],
            serve: Vec::new(),
        }
    });
    std::iter::once(file).chain(remote).collect()
}

/// (l) The audit log written with every change, against the same server with it off.
pub fn audit() -> Vec<Variant> {
    vec![
        Variant { label: "audit log off".into(), both: Vec::new(), serve: vec!["--audit".into(), "off".into()] },
        Variant { label: "audit log on".into(), both: Vec::new(), serve: Vec::new() },
    ]
}

/// Measures every variant (each on its own store from `stores`) and reports each against the first (goal: within
/// 10%).
pub async fn compare(
    rows: &mut Vec<Row>,
    group: &'static str,
    tmp: &Path,
    variants: &[Variant],
    stores: Vec<Vec<String>>,
    duration: Duration,
) {
    compare_with(rows, group, tmp, variants, stores, duration, 0.9).await;
}

/// [`compare`] with the goal that each variant reaches `min_ratio` of the first.
pub async fn compare_with(
    rows: &mut Vec<Row>,
    group: &'static str,
    tmp: &Path,
    variants: &[Variant],
    stores: Vec<Vec<String>>,
    duration: Duration,
    min_ratio: f64,
) {
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new((0..256).map(|_| csr().1).collect());
    let mut servers = Vec::new();
    for (variant, store_args) in variants.iter().zip(stores) {
        let data = tmp.join(format!("{group}-{}", servers.len()));
        let both: Vec<String> = store_args.into_iter().chain(variant.both.iter().cloned()).collect();
        procs::bootstrap(&data, &both);
        let serve: Vec<String> = both.iter().chain(&variant.serve).cloned().collect();
        let server = procs::principald(&data, &serve);
        let admin = admin_credentials(&data);
        let mut client = connect(&server.url(), &admin).await;
        for i in 0..PRINCIPALS {
            let request = pb::CreatePrincipalRequest {
                id: format!("{group}-worker-{i:03}"),
                r#type: pb::PrincipalType::Worker.into(),
                ..Default::default()
            };
            client.create_principal(request).await.expect("create worker");
        }
        eprintln!("   {}: pid {}", variant.label, server.pid());
        servers.push((server, admin, (0u64, 0u64, 0f64)));
    }
    let slice = duration / SLICES;
    let prefix = format!("{group}-worker");
    for _ in 0..SLICES {
        for (server, admin, totals) in servers.iter_mut() {
            let stats = issuance::issue_stats(&server.url(), admin, &csrs, &prefix, PRINCIPALS, slice).await;
            totals.0 += stats.ok;
            totals.1 += stats.errors;
            totals.2 += stats.seconds;
        }
    }
    let rate = |t: &(u64, u64, f64)| if t.2 > 0.0 { t.0 as f64 / t.2 } else { 0.0 };
    let name = |label: &str| format!("IssueCertificate, {STREAMS} streams, durable, {label}");
    let first = rate(&servers[0].2);
    rows.push(
        Row::new(group, name(&variants[0].label), first, "cert/s")
            .note(format!("{} errors; alternating {SLICES} slices with the rows below", servers[0].2.1)),
    );
    for (variant, (_, _, totals)) in variants.iter().zip(&servers).skip(1) {
        let value = rate(totals);
        rows.push(
            Row::new(group, name(&variant.label), value, "cert/s")
                .baseline(format!("same, {} (same run)", variants[0].label), first)
                .target(format!("at least {min_ratio} of the {} figure", variants[0].label), value >= min_ratio * first)
                .note(format!("{} errors", totals.1)),
        );
    }
}
