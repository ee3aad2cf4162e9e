//! principald-bench: measures principald against what the machine allows, every figure next to a baseline measured
//! in the same run. Starts its own servers (principald and a bare tonic mTLS server) on loopback.
//!
//! ```sh
//! cargo build --release && target/release/principald-bench            # embedded store
//! target/release/principald-bench --store dynamodb --dynamodb-endpoint http://127.0.0.1:8000
//! ```

mod load;
mod procs;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use principald::client::{self, Credentials, Profile};
use principald::proto::principal_service_client::PrincipalServiceClient;
use principald::proto::{self as pb};
use tonic::transport::Channel;

use crate::report::Row;

type Client = PrincipalServiceClient<Channel>;

#[derive(Parser, Debug)]
#[command(name = "principald-bench", about = "Benchmark principald against same-run baselines")]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Store behind the principald under test.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// DynamoDB endpoint (DynamoDB Local) for --store dynamodb; AWS credentials and region from the environment.
    #[arg(long, env = "PRINCIPALD_DYNAMODB_ENDPOINT")]
    dynamodb_endpoint: Option<String>,
    /// Measuring time of each figure.
    #[arg(long, default_value = "5s", value_parser = principald::config::parse_duration)]
    duration: Duration,
    /// Principal counts for the scale figures (embedded store); empty to skip them.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
    scale: Vec<u64>,
    /// Only these figure groups (a, b, c, d, opt, e); all when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Internal: run the bare baseline server on a data dir's TLS material.
    BareServer {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Sqlite,
    Dynamodb,
}

const WORKERS: usize = 64;
const STREAMS: usize = 32;

#[tokio::main]
async fn main() {
    principald::install_crypto_provider();
    let cli = Cli::parse();
    if let Some(Mode::BareServer { data_dir }) = &cli.mode {
        if let Err(e) = procs::run_bare(data_dir).await {
            eprintln!("bare server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    let store_args = store_args(&cli).await;
    let data = tmp.path().join("main");
    procs::bootstrap(&data, &store_args);
    let admin = admin_credentials(&data);

    let wanted = |group: &str| cli.only.is_empty() || cli.only.iter().any(|g| g == group);
    eprintln!("== unary, connection, issuance and revocation figures");
    {
        let server = procs::principald(&data, &store_args);
        let bare = procs::bare(&data);
        eprintln!("   principald pid {}, bare pid {}", server.pid(), bare.pid());
        let workers = enroll(&server.url(), &admin, "bench-worker", WORKERS).await;
        if wanted("a") {
            unary(&mut rows, &server.url(), &bare.url(), &workers[0], cli.duration).await;
        }
        if wanted("b") {
            new_connections(&mut rows, &server.url(), &bare.url(), &workers[0], cli.duration).await;
        }
        if wanted("c") {
            issuance(&mut rows, &server.url(), &admin, &workers, &data, cli.duration).await;
        }
        if wanted("d") {
            revocation_same_replica(&mut rows, &server.url(), &admin).await;
            if cli.store == StoreKind::Dynamodb {
                let second = procs::principald(&data, &store_args);
                revocation_cross_replica(&mut rows, &server.url(), &second.url(), &admin).await;
            }
        }
    }
    if cli.store == StoreKind::Sqlite {
        if wanted("opt") {
            eprintln!("== optimizations, before and after");
            optimizations(&mut rows, tmp.path(), cli.duration).await;
        }
        if wanted("e") {
            for &n in &cli.scale {
                eprintln!("== scale: {n} principals");
                scale(&mut rows, tmp.path(), n, cli.duration).await;
            }
            scale_targets(&mut rows, &cli.scale);
        }
    }
    report::print(&rows);
    let json = report::to_json(&rows, machine());
    std::fs::write(&cli.out, serde_json::to_string_pretty(&json).unwrap()).expect("write results");
    eprintln!("results written to {}", cli.out.display());
}

async fn store_args(cli: &Cli) -> Vec<String> {
    if cli.store == StoreKind::Sqlite {
        return Vec::new();
    }
    let endpoint = cli.dynamodb_endpoint.clone().expect("--store dynamodb needs --dynamodb-endpoint (DynamoDB Local)");
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    let prefix = format!("bench{}-", principald::model::hex(&bytes));
    let config = principald::store::StoreConfig::Dynamodb(principald::store::dynamodb::DynamoConfig {
        table_prefix: prefix.clone(),
        endpoint: Some(endpoint.clone()),
    });
    config.migrate().await.expect("migrate DynamoDB");
    vec![
        "--store".into(),
        "dynamodb".into(),
        "--dynamodb-endpoint".into(),
        endpoint,
        "--dynamodb-table-prefix".into(),
        prefix,
    ]
}

fn admin_credentials(data: &Path) -> Credentials {
    Profile::load(&data.join("profiles/admin")).and_then(|p| p.credentials()).expect("admin profile")
}

async fn connect(url: &str, creds: &Credentials) -> Client {
    PrincipalServiceClient::new(client::endpoint(url, creds).unwrap().connect().await.expect("connect"))
}

fn csr() -> (rcgen::KeyPair, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let der = params.serialize_request(&key).unwrap().der().to_vec();
    (key, der)
}

/// Creates `count` workers and issues each a certificate through the API.
async fn enroll(url: &str, admin: &Credentials, prefix: &str, count: usize) -> Vec<Credentials> {
    let mut client = connect(url, admin).await;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("{prefix}-{i:03}");
        let request = pb::CreatePrincipalRequest {
            id: id.clone(),
            r#type: pb::PrincipalType::Worker.into(),
            ..Default::default()
        };
        client.create_principal(request).await.expect("create worker");
        let (key, csr) = csr();
        let issued = client
            .issue_certificate(pb::IssueCertificateRequest { principal_id: id, csr, validity_seconds: 0 })
            .await
            .expect("issue")
            .into_inner();
        out.push(Credentials {
            ca_pem: issued.ca_chain_pem,
            cert_pem: issued.certificate_pem,
            key_pem: key.serialize_pem(),
        });
    }
    out
}

async fn whoami_stats(url: &str, creds: &Credentials, streams: usize, duration: Duration) -> load::Stats {
    let client = connect(url, creds).await;
    load::run(streams, duration, move |_, _| {
        let mut c = client.clone();
        async move { c.who_am_i(pb::WhoAmIRequest {}).await.is_ok() }
    })
    .await
}

/// Measures `ours` and `base` in alternating slices (base, ours, base, ours, ...) and pools each side's results, so a
/// noisy neighbour drifting during the run affects both sides alike.
async fn alternating<F, Fut>(slices: usize, duration: Duration, run: F) -> (load::Stats, load::Stats)
where
    F: Fn(bool, Duration) -> Fut,
    Fut: std::future::Future<Output = load::Stats>,
{
    let slice = duration / slices as u32;
    let (mut base, mut ours) = (load::Stats::default(), load::Stats::default());
    for _ in 0..slices {
        base.merge(run(false, slice).await);
        ours.merge(run(true, slice).await);
    }
    (base, ours)
}

/// (a) authenticated WhoAmI over one reused connection vs the bare server.
async fn unary(rows: &mut Vec<Row>, url: &str, bare: &str, worker: &Credentials, duration: Duration) {
    for streams in [1, STREAMS] {
        let (ours_client, base_client) = (connect(url, worker).await, connect(bare, worker).await);
        let (base, ours) = alternating(4, duration * 2, |is_ours, slice| {
            let client = if is_ours { ours_client.clone() } else { base_client.clone() };
            load::run(streams, slice, move |_, _| {
                let mut c = client.clone();
                async move { c.who_am_i(pb::WhoAmIRequest {}).await.is_ok() }
            })
        })
        .await;
        let mut row = Row::new("a", format!("WhoAmI, 1 connection, {streams} streams"), ours.rate(), "req/s")
            .baseline("bare tonic mTLS", base.rate())
            .note(format!(
                "p50/p99 {:.2}/{:.2} ms vs bare {:.2}/{:.2} ms, {} errors",
                ours.percentile_ms(50.0),
                ours.percentile_ms(99.0),
                base.percentile_ms(50.0),
                base.percentile_ms(99.0),
                ours.errors
            ));
        if streams == STREAMS {
            row = row.min_ratio(0.9);
        }
        rows.push(row);
    }
}

/// (b) a new mTLS connection plus its first authenticated call, 4 clients in parallel.
async fn new_connections(rows: &mut Vec<Row>, url: &str, bare: &str, worker: &Credentials, duration: Duration) {
    let (ours_endpoint, base_endpoint) =
        (client::endpoint(url, worker).unwrap(), client::endpoint(bare, worker).unwrap());
    let (base, ours) = alternating(4, duration * 2, |is_ours, slice| {
        let endpoint = if is_ours { ours_endpoint.clone() } else { base_endpoint.clone() };
        load::run(4, slice, move |_, _| {
            let endpoint = endpoint.clone();
            async move {
                match endpoint.connect().await {
                    Ok(channel) => PrincipalServiceClient::new(channel).who_am_i(pb::WhoAmIRequest {}).await.is_ok(),
                    Err(_) => false,
                }
            }
        })
    })
    .await;
    rows.push(
        Row::new("b", "new mTLS connection + first WhoAmI, 4 clients", ours.rate(), "conn/s")
            .baseline("bare tonic mTLS", base.rate())
            .min_ratio(0.8)
            .note(format!("p50 {:.2} ms vs bare {:.2} ms", ours.percentile_ms(50.0), base.percentile_ms(50.0))),
    );
}

/// (c) IssueCertificate and RenewCertificate with prepared CSRs vs CSR verification + signing alone, in process.
async fn issuance(
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

async fn issue_stats(
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

/// A worker with a fresh certificate and a warm connection, for the revocation figures.
async fn fresh_worker(url: &str, admin: &mut Client, id: &str) -> (Credentials, String) {
    let _ = admin
        .create_principal(pb::CreatePrincipalRequest {
            id: id.into(),
            r#type: pb::PrincipalType::Worker.into(),
            ..Default::default()
        })
        .await;
    let (key, csr) = csr();
    let issued = admin
        .issue_certificate(pb::IssueCertificateRequest { principal_id: id.into(), csr, validity_seconds: 0 })
        .await
        .unwrap()
        .into_inner();
    let serial = issued.certificate.unwrap().serial;
    let _ = url;
    (
        Credentials { ca_pem: issued.ca_chain_pem, cert_pem: issued.certificate_pem, key_pem: key.serialize_pem() },
        serial,
    )
}

async fn time_to_rejection(victim: &mut Client, since: Instant) -> Duration {
    loop {
        if victim.who_am_i(pb::WhoAmIRequest {}).await.is_err() {
            return since.elapsed();
        }
        if since.elapsed() > Duration::from_secs(30) {
            return since.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn summarize(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(samples[samples.len() / 2]), ms(*samples.last().unwrap()))
}

/// (d) from RevokeCertificate returning until the revoked certificate is rejected, same replica.
async fn revocation_same_replica(rows: &mut Vec<Row>, url: &str, admin: &Credentials) {
    let mut admin = connect(url, admin).await;
    let mut samples = Vec::new();
    for i in 0..20 {
        let (creds, serial) = fresh_worker(url, &mut admin, &format!("revoke-{i:02}")).await;
        let mut victim = connect(url, &creds).await;
        victim.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
        admin.revoke_certificate(pb::RevokeCertificateRequest { serial, reason: 1 }).await.unwrap();
        let since = Instant::now();
        samples.push(time_to_rejection(&mut victim, since).await);
    }
    let rejected_first = samples.iter().all(|d| *d < Duration::from_millis(50));
    let (p50, max) = summarize(samples);
    rows.push(
        Row::new("d", "revocation -> rejection, same replica (20 runs)", p50, "ms")
            .target("immediate: the next request", rejected_first)
            .note(format!("median; max {max:.2} ms; that is one WhoAmI round trip")),
    );
}

/// (d) the same across two replicas on one DynamoDB.
async fn revocation_cross_replica(rows: &mut Vec<Row>, a: &str, b: &str, admin: &Credentials) {
    let mut admin = connect(a, admin).await;
    let mut samples = Vec::new();
    for i in 0..10 {
        let (creds, serial) = fresh_worker(a, &mut admin, &format!("cross-{i:02}")).await;
        let mut victim = connect(b, &creds).await;
        victim.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
        admin.revoke_certificate(pb::RevokeCertificateRequest { serial, reason: 1 }).await.unwrap();
        samples.push(time_to_rejection(&mut victim, Instant::now()).await);
    }
    let (p50, max) = summarize(samples);
    rows.push(
        Row::new("d", "revocation -> rejection, other replica (10 runs)", p50, "ms")
            .target("<= 2000 ms", max <= 2000.0)
            .note(format!("median; max {max:.0} ms; bound: --revocation-poll 1 s + one GetItem")),
    );
}

/// What group commit and the authentication cache buy, measured in this run.
async fn optimizations(rows: &mut Vec<Row>, root: &Path, duration: Duration) {
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
        rates.push(issue_stats(&server.url(), &admin, &csrs, "opt-worker", 8, duration).await.rate());
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
async fn scale(rows: &mut Vec<Row>, root: &Path, n: u64, duration: Duration) {
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
    let issue = issue_stats(&server.url(), &admin, &csrs, "scale-worker", 8, duration).await;
    let rss = server.rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0);
    rows.push(
        Row::new("e", format!("cache-miss WhoAmI, {n} principals"), auth.rate(), "req/s")
            .note(format!("p50 {:.2} ms", auth.percentile_ms(50.0))),
    );
    rows.push(Row::new("e", format!("IssueCertificate, {n} principals"), issue.rate(), "cert/s"));
    rows.push(Row::new("e", format!("server RSS, {n} principals"), rss, "MiB").note(format!("pid {}", server.pid())));
}

/// Adds the flatness and memory targets, comparing the largest scale with the smallest.
fn scale_targets(rows: &mut Vec<Row>, sizes: &[u64]) {
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

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory": mem,
        "date": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    })
}
