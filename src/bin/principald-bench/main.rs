//! principald-bench: measures principald against what the machine allows, every figure next to a baseline measured
//! in the same run. Starts its own servers (principald and a bare tonic mTLS server) on loopback.
//!
//! ```sh
//! cargo build --release && target/release/principald-bench            # embedded store
//! target/release/principald-bench --store dynamodb --dynamodb-endpoint http://127.0.0.1:8000
//! ```

mod agent;
mod compare;
mod crl;
mod issuance;
mod load;
mod ocsp;
mod overload;
mod procs;
mod report;
mod revocation;
mod sizes;
mod stores;
mod tokens;

use sizes::{optimizations, scale, scale_targets};

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
    /// Only these figure groups (a, b, c, d, opt, e, k, l, m, o, t, v, w); all when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also measure issuance with the root key in AWS KMS (this URI, e.g. awskms:alias/bench; AWS_ENDPOINT_URL_KMS
    /// points at moto) and/or on a PKCS#11 token (pkcs11: URI), against a key file in the same run (group k).
    #[arg(long = "rooted", value_name = "KEY_URI")]
    rooted: Vec<String>,
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
    let store_args = stores::args(&cli).await;
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
            issuance::issuance(&mut rows, &server.url(), &admin, &workers, &data, cli.duration).await;
        }
        if wanted("d") {
            revocation::revocation_same_replica(&mut rows, &server.url(), &admin).await;
            if cli.store == StoreKind::Dynamodb {
                let second = procs::principald(&data, &store_args);
                revocation::revocation_cross_replica(&mut rows, &server.url(), &second.url(), &admin).await;
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
    if !cli.rooted.is_empty() && wanted("k") {
        eprintln!("== issuance with the root key outside the process");
        let variants = compare::rooted(&cli.rooted);
        let stores = stores::fresh(&cli, variants.len()).await;
        compare::compare(&mut rows, "k", tmp.path(), &variants, stores, cli.duration).await;
    }
    if cli.store == StoreKind::Sqlite && wanted("m") {
        eprintln!("== CRLs at 100,000 revoked certificates");
        crl::crls(&mut rows, tmp.path(), 100_000, &cli.rooted).await;
    }
    if wanted("o") {
        eprintln!("== OCSP and revocation seen by relying parties");
        let data = tmp.path().join("ocsp-data");
        let store = stores::args(&cli).await;
        procs::bootstrap(&data, &store);
        ocsp::ocsp(&mut rows, &data, &store, cli.duration).await;
    }
    if wanted("t") {
        eprintln!("== tokens and enrollment");
        let store = stores::args(&cli).await;
        tokens::tokens(&mut rows, tmp.path(), store, cli.duration).await;
    }
    if wanted("l") {
        eprintln!("== issuance with and without the audit log");
        let variants = compare::audit();
        let stores = stores::fresh(&cli, variants.len()).await;
        compare::compare(&mut rows, "l", tmp.path(), &variants, stores, cli.duration).await;
    }
    if wanted("v") {
        eprintln!("== limits and overload");
        let store = stores::args(&cli).await;
        overload::overload(&mut rows, tmp.path(), store, cli.duration).await;
    }
    if wanted("w") {
        eprintln!("== the workload agent: 1,000 entries");
        let store = stores::args(&cli).await;
        agent::agent(&mut rows, tmp.path(), store).await;
    }
    report::print(&rows);
    let json = report::to_json(&rows, machine());
    std::fs::write(&cli.out, serde_json::to_string_pretty(&json).unwrap()).expect("write results");
    eprintln!("results written to {}", cli.out.display());
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
