//! (k) Issuance with the root key outside the process: the same durable IssueCertificate load against a principald
//! whose root is a key file (it signs leaves itself) and against principalds whose root is in KMS (moto) or on a
//! PKCS#11 token (SoftHSM2), which sign leaves with a replica intermediate held in memory. The servers are measured in
//! alternating slices, so a machine that slows down mid-run weighs on all of them alike.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use principald::proto as pb;

use crate::report::Row;
use crate::{STREAMS, admin_credentials, connect, csr, issuance, procs};

/// Alternating slices per server.
const SLICES: u32 = 4;
const PRINCIPALS: usize = 8;

pub async fn rooted(
    rows: &mut Vec<Row>,
    tmp: &Path,
    roots: &[(String, String)],
    stores: Vec<Vec<String>>,
    duration: Duration,
) {
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new((0..256).map(|_| csr().1).collect());
    let mut servers = Vec::new();
    let all =
        std::iter::once(("key file".to_owned(), None)).chain(roots.iter().map(|(l, u)| (l.clone(), Some(u.clone()))));
    for ((label, uri), store_args) in all.zip(stores) {
        let data = tmp.join(format!("rooted-{}", servers.len()));
        let mut args = store_args;
        if let Some(uri) = &uri {
            args.extend(["--ca-key".to_owned(), uri.clone()]);
        }
        procs::bootstrap(&data, &args);
        let server = procs::principald(&data, &args);
        let admin = admin_credentials(&data);
        let mut client = connect(&server.url(), &admin).await;
        for i in 0..PRINCIPALS {
            let request = pb::CreatePrincipalRequest {
                id: format!("rooted-worker-{i:03}"),
                r#type: pb::PrincipalType::Worker.into(),
                ..Default::default()
            };
            client.create_principal(request).await.expect("create worker");
        }
        eprintln!("   {label}: pid {}", server.pid());
        servers.push((label, server, admin, (0u64, 0u64, 0f64)));
    }
    let slice = duration / SLICES;
    for _ in 0..SLICES {
        for (_, server, admin, totals) in servers.iter_mut() {
            let stats = issuance::issue_stats(&server.url(), admin, &csrs, "rooted-worker", PRINCIPALS, slice).await;
            totals.0 += stats.ok;
            totals.1 += stats.errors;
            totals.2 += stats.seconds;
        }
    }
    let rate = |t: &(u64, u64, f64)| if t.2 > 0.0 { t.0 as f64 / t.2 } else { 0.0 };
    let file_rate = rate(&servers[0].3);
    rows.push(
        Row::new("k", format!("IssueCertificate, {STREAMS} streams, durable, root key in a file"), file_rate, "cert/s")
            .note(format!("{} errors; alternating {SLICES} slices with the rows below", servers[0].3.1)),
    );
    for (label, _, _, totals) in servers.iter().skip(1) {
        let value = rate(totals);
        rows.push(
            Row::new(
                "k",
                format!("IssueCertificate, {STREAMS} streams, durable, root in {label}, replica intermediate"),
                value,
                "cert/s",
            )
            .baseline("same, root key in a file (same run)", file_rate)
            .target("within 10% of the key-file figure", value >= 0.9 * file_rate)
            .note(format!("{} errors", totals.1)),
        );
    }
}
