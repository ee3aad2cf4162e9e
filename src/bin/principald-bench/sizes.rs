//! Groups opt, e and the scale figures: the optimizations measured one by one, and authentication and listing at
//! growing numbers of principals (a store filled in bulk first).

use crate::*;

/// What group commit and the authentication cache buy, measured in this run.
pub async fn optimizations(rows: &mut Vec<Row>, root: &Path, duration: Duration) {
    let data = root.join("opt");
    procs::bootstrap(&data, &[]);
    let admin = admin_credentials(&data);
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new((0..256).map(|_| csr().1).collect());
    let mut rates = Vec::new();
    for batch in ["1", "256"] {
        let server = procs::principald(&data, &["--sqlite-max-batch".into(), batch.into()]);
        if batch == "1" {
            enroll(&server.url(), &admin, "opt-worker", 8).await;
        }
        rates.push(issuance::issue_stats(&server.url(), &admin, &csrs, "opt-worker", 8, duration).await.rate());
    }
    rows.push(
        Row::new("opt", "IssueCertificate with SQLite group commit", rates[1], "cert/s")
            .baseline("one commit (fsync) per write", rates[0]),
    );
    let worker = {
        let server = procs::principald(&data, &[]);
        enroll(&server.url(), &admin, "opt-cache", 1).await.remove(0)
    };
    let mut rates = Vec::new();
    for ttl in ["0s", "10s"] {
        let server = procs::principald(&data, &["--auth-cache-ttl".into(), ttl.into()]);
        rates.push(whoami_stats(&server.url(), &worker, STREAMS, duration).await.rate());
    }
    rows.push(
        Row::new("opt", format!("WhoAmI, {STREAMS} streams, with the authentication cache"), rates[1], "req/s")
            .baseline("cache disabled (store read per request)", rates[0]),
    );
}

/// (e) authentication that misses the cache, and issuance, with `n` principals stored; server RSS.
pub async fn scale(rows: &mut Vec<Row>, root: &Path, n: u64, duration: Duration) {
    let data = root.join(format!("scale-{n}"));
    procs::bootstrap(&data, &[]);
    let started = Instant::now();
    fill(&data, n).await;
    eprintln!("   stored {n} principals and certificates in {:.1} s", started.elapsed().as_secs_f64());
    let admin = admin_credentials(&data);
    let server = procs::principald(&data, &["--auth-cache-ttl".into(), "0s".into()]);
    let workers = enroll(&server.url(), &admin, "scale-worker", 8).await;
    let auth = whoami_stats(&server.url(), &workers[0], STREAMS, duration).await;
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new((0..256).map(|_| csr().1).collect());
    let issue = issuance::issue_stats(&server.url(), &admin, &csrs, "scale-worker", 8, duration).await;
    let rss = server.rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0);
    rows.push(
        Row::new("e", format!("cache-miss WhoAmI, {n} principals"), auth.rate(), "req/s")
            .note(format!("p50 {:.2} ms", auth.percentile_ms(50.0))),
    );
    rows.push(Row::new("e", format!("IssueCertificate, {n} principals"), issue.rate(), "cert/s"));
    rows.push(Row::new("e", format!("server RSS, {n} principals"), rss, "MiB").note(format!("pid {}", server.pid())));
}

/// Adds the flatness and memory targets, comparing the largest scale with the smallest.
pub fn scale_targets(rows: &mut Vec<Row>, sizes: &[u64]) {
    let (Some(small), Some(large)) = (sizes.iter().min(), sizes.iter().max()) else { return };
    if small == large {
        return;
    }
    let find = |rows: &[Row], prefix: &str, n: u64| {
        rows.iter().find(|r| r.id == "e" && r.name == format!("{prefix}, {n} principals")).map(|r| r.value)
    };
    for prefix in ["cache-miss WhoAmI", "IssueCertificate"] {
        if let (Some(a), Some(b)) = (find(rows, prefix, *small), find(rows, prefix, *large)) {
            let row = Row::new("e", format!("{prefix}: {large} vs {small} principals"), b, "/s")
                .baseline(format!("{small} principals"), a);
            let ratio = row.ratio().unwrap_or(0.0);
            rows.push(row.target("within 20% (ratio 0.8..1.2)", (0.8..=1.2).contains(&ratio)));
        }
    }
    if let Some(rss) = find(rows, "server RSS", *large) {
        rows.push(
            Row::new("e", format!("server RSS at {large} principals"), rss, "MiB").target("<= 100 MiB", rss <= 100.0),
        );
    }
}

/// Stores `n` filler principals, each with one certificate record, directly in the data dir's SQLite file.
async fn fill(data: &Path, n: u64) {
    use principald::model::{CertificateRecord, Principal, PrincipalStatus, PrincipalType};
    let store =
        principald::store::sqlite::SqliteStore::open(&principald::datadir::DataDir::new(data).database()).unwrap();
    let now = principald::model::now();
    let der = vec![0x30; 600];
    let mut i = 0;
    while i < n {
        let end = (i + 50_000).min(n);
        let mut principals = Vec::new();
        let mut certs = Vec::new();
        for k in i..end {
            let id: principald::model::PrincipalId = format!("filler-{k:08}").parse().unwrap();
            let kind = [PrincipalType::Worker, PrincipalType::Service, PrincipalType::User][(k % 3) as usize];
            certs.push(CertificateRecord {
                serial: principald::model::Serial::from_bytes(&(k + 1).to_be_bytes()),
                principal_id: id.clone(),
                principal_type: kind,
                not_before: now,
                not_after: now + time::Duration::days(30),
                sha256_fingerprint: format!("{k:064x}"),
                der: der.clone(),
                revocation: None,
                generation: 0,
                renewal: None,
                issuer: String::new(),
            });
            principals.push(Principal {
                id,
                kind,
                status: PrincipalStatus::Active,
                description: String::new(),
                email: None,
                status_reason: None,
                created_at: now,
                updated_at: now,
                generation: 0,
            });
        }
        store.import(principals, certs).await.unwrap();
        i = end;
    }
}
