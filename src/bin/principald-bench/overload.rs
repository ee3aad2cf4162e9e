//! (v) Limits and overload: what the rate limiter costs on the hot path (limits on, never reached, against off),
//! a quiet principal's WhoAmI p99 beside a noisy principal and an Enroll guesser, probes of the health, OAuth and
//! gRPC listeners under a flood of slowloris and idle sockets, and 2,000 clients reconnecting at once to a restarted
//! server (all served, how long, the server's RSS).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use principald::client::Credentials;
use principald::proto as pb;

use crate::compare::Variant;
use crate::report::Row;
use crate::{STREAMS, connect, procs};

const AUDIENCE: &str = "https://bench.example";
/// Limits that are checked on every call and never reached.
const UNREACHED: &str = "issue=1000000/s:1000000,token=1000000/s:1000000,audit_read=1000000/s:1000000";

pub async fn overload(rows: &mut Vec<Row>, tmp: &Path, store_args: Vec<String>, duration: Duration) {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    limiter_cost(rows, tmp, &store_args, duration).await;
    noisy_neighbour(rows, tmp, &store_args, duration).await;
    floods(rows, tmp, &store_args).await;
    reconnect_storm(rows, tmp, &store_args).await;
}

/// IssueCertificate and WhoAmI with limits on (checked, never reached) against off, in alternating slices.
async fn limiter_cost(rows: &mut Vec<Row>, tmp: &Path, store_args: &[String], duration: Duration) {
    let variants = [
        Variant {
            label: "rate limits off".into(),
            both: Vec::new(),
            serve: vec!["--rate-limit".into(), "issue=off,token=off,audit_read=off".into()],
        },
        Variant {
            label: "rate limits on".into(),
            both: Vec::new(),
            serve: vec!["--rate-limit".into(), UNREACHED.into()],
        },
    ];
    let stores = vec![store_args.to_vec(), store_args.to_vec()];
    crate::compare::compare_with(rows, "v", tmp, &variants, stores, duration, 0.97).await;

    let mut servers = Vec::new();
    for variant in &variants {
        let data = tmp.join(format!("v-whoami-{}", servers.len()));
        procs::bootstrap(&data, store_args);
        let args: Vec<String> = store_args.iter().chain(&variant.serve).cloned().collect();
        let server = procs::principald(&data, &args);
        let worker = crate::enroll(&server.url(), &crate::admin_credentials(&data), "v-worker", 1).await.remove(0);
        servers.push((server, worker));
    }
    let (off, on) = crate::alternating(8, duration, |limits_on, slice| {
        let (server, worker) = &servers[usize::from(limits_on)];
        let (url, worker) = (server.url(), worker.clone());
        async move { crate::whoami_stats(&url, &worker, STREAMS, slice).await }
    })
    .await;
    rows.push(
        Row::new("v", format!("WhoAmI, {STREAMS} streams, rate limits on"), on.rate(), "req/s")
            .baseline("same, rate limits off (same run)", off.rate())
            .min_ratio(0.97),
    );
}

/// A quiet worker's sequential WhoAmI p99, calm and then beside a principal hammering IssueToken from 96 streams and
/// an anonymous client guessing enrollment tokens; default limits.
async fn noisy_neighbour(rows: &mut Vec<Row>, tmp: &Path, store_args: &[String], duration: Duration) {
    let data = tmp.join("v-noisy");
    procs::bootstrap(&data, store_args);
    let mut args = store_args.to_vec();
    args.extend(["--token-audience".into(), AUDIENCE.into(), "--rate-limit".into(), "admin.issue=off".into()]);
    let server = procs::principald(&data, &args);
    let admin = crate::admin_credentials(&data);
    let url = server.url();
    let mut principals = crate::enroll(&url, &admin, "v-noisy", 2).await;
    let (noisy, quiet) = (principals.remove(0), principals.remove(0));
    let calm = crate::whoami_stats(&url, &quiet, 1, duration / 2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut noise = tokio::task::JoinSet::new();
    let client = connect(&url, &noisy).await;
    for _ in 0..96 {
        let (mut client, stop) = (client.clone(), stop.clone());
        noise.spawn(async move {
            let (mut served, mut limited) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let request = pb::IssueTokenRequest { audience: AUDIENCE.into(), ..Default::default() };
                match client.issue_token(request).await {
                    Ok(_) => served += 1,
                    Err(_) => limited += 1,
                }
            }
            (served, limited)
        });
    }
    let guesser = anonymous(&url, &data).await;
    {
        let (mut guesser, stop) = (guesser, stop.clone());
        noise.spawn(async move {
            let (_key, csr) = crate::csr();
            let mut refused = 0;
            while !stop.load(Ordering::Relaxed) {
                let request = pb::EnrollRequest {
                    principal_id: "v-noisy-000".into(),
                    secret: "guess".into(),
                    csr: csr.clone(),
                    validity_seconds: 0,
                };
                refused += u64::from(guesser.enroll(request).await.is_err());
            }
            (0, refused)
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let beside = crate::whoami_stats(&url, &quiet, 1, duration / 2).await;
    stop.store(true, Ordering::Relaxed);
    let (mut served, mut refused) = (0, 0);
    while let Some(Ok((s, r))) = noise.join_next().await {
        served += s;
        refused += r;
    }
    let (p99_calm, p99_noisy) = (calm.percentile_ms(99.0), beside.percentile_ms(99.0));
    rows.push(
        Row::new("v", "quiet WhoAmI p99 beside a noisy principal and an Enroll guesser", p99_noisy, "ms")
            .note(format!(
                "calm p99 {p99_calm:.2} ms; ratio {:.2} (goal <= 1.5); noisy served {served}, refused {refused}; quiet \
                 errors {}",
                p99_noisy / p99_calm.max(0.001),
                beside.errors
            ))
            .target("p99 within 1.5x of calm", p99_noisy <= 1.5 * p99_calm),
    );
}

async fn anonymous(url: &str, data: &Path) -> crate::Client {
    let ca = std::fs::read_to_string(data.join("ca.pem")).expect("ca.pem");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    pb::principal_service_client::PrincipalServiceClient::new(channel)
}

/// A TLS 1.3 ClientHello's first bytes: a record header promising more than is ever sent.
const PARTIAL_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

fn flood(addr: SocketAddr, slow: usize, half: &'static [u8], idle: usize) -> Vec<TcpStream> {
    (0..slow + idle)
        .filter_map(|i| {
            let mut stream = TcpStream::connect(addr).ok()?;
            if i < slow {
                let _ = stream.write_all(half);
            }
            Some(stream)
        })
        .collect()
}

fn health_probe(addr: SocketAddr) -> Option<u16> {
    use std::io::Read;
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET /readyz HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

async fn https_probe(addr: SocketAddr, ca: rustls::pki_types::CertificateDer<'static>) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).ok()?;
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost").ok()?, tcp).await.ok()?;
    tls.write_all(b"GET /jwks.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.ok()?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).split_whitespace().nth(1)?.parse().ok()
}

/// Worst and median of `probes` (each `Some(latency)` when answered with 200).
fn summary(probes: &[Option<Duration>]) -> (f64, f64, usize) {
    let mut ms: Vec<f64> = probes.iter().flatten().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let failed = probes.len() - ms.len();
    (ms.last().copied().unwrap_or(f64::INFINITY), ms.get(ms.len() / 2).copied().unwrap_or(f64::INFINITY), failed)
}

fn flood_row(name: &str, probes: &[Option<Duration>]) -> Row {
    let (worst, median, failed) = summary(probes);
    Row::new("v", name.to_owned(), worst, "ms")
        .note(format!("worst of {} probes; median {median:.1} ms; {failed} failed", probes.len()))
        .target("every probe answered within 1 s", failed == 0 && worst < 1000.0)
}

/// 600 slowloris and 1,000 idle sockets on the health, OAuth and gRPC listeners; 20 probes each.
async fn floods(rows: &mut Vec<Row>, tmp: &Path, store_args: &[String]) {
    let data = tmp.join("v-flood");
    procs::bootstrap(&data, store_args);
    let oauth = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let mut args = store_args.to_vec();
    args.extend(["--token-audience".into(), AUDIENCE.into(), "--oauth-listen".into(), oauth.to_string()]);
    let server = procs::principald(&data, &args);
    let health = server.health.expect("health address");

    let held = tokio::task::spawn_blocking(move || flood(health, 600, b"GET /readyz HTTP/1.1\r\nHost: x\r\n", 1000));
    let held = held.await.expect("flood");
    let probes = tokio::task::spawn_blocking(move || {
        (0..20)
            .map(|_| {
                let started = Instant::now();
                (health_probe(health) == Some(200)).then(|| started.elapsed())
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("probes");
    rows.push(flood_row("/readyz under 600 slowloris + 1,000 idle sockets", &probes));
    drop(held);

    let ca_pem = std::fs::read_to_string(data.join("ca.pem")).expect("ca.pem");
    let ca = rustls::pki_types::CertificateDer::from(pem::parse(ca_pem).expect("ca pem").into_contents());
    let held = tokio::task::spawn_blocking(move || flood(oauth, 600, PARTIAL_CLIENT_HELLO, 1000)).await.expect("flood");
    let mut probes = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        probes.push((https_probe(oauth, ca.clone()).await == Some(200)).then(|| started.elapsed()));
    }
    rows.push(flood_row("OAuth /jwks.json under 600 stalled handshakes + 1,000 idle sockets", &probes));
    drop(held);

    let grpc = server.grpc;
    let admin = crate::admin_credentials(&data);
    let held = tokio::task::spawn_blocking(move || flood(grpc, 600, PARTIAL_CLIENT_HELLO, 1000)).await.expect("flood");
    let mut probes = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let mut client = connect(&server.url(), &admin).await;
        probes.push(client.who_am_i(pb::WhoAmIRequest {}).await.ok().map(|_| started.elapsed()));
    }
    rows.push(flood_row("gRPC connect + WhoAmI under 600 stalled handshakes + 1,000 idle sockets", &probes));
    drop(held);
}

/// Clients reconnecting at once after a restart.
const STORM: usize = 2000;
/// Distinct certificates among them (the rest share, as replicas of a service do).
const STORM_CERTIFICATES: usize = 500;

/// 2,000 clients connect at once to a freshly restarted server (empty caches) and call WhoAmI, retrying with the
/// server's hints; how long until all are served, and the server's peak RSS.
async fn reconnect_storm(rows: &mut Vec<Row>, tmp: &Path, store_args: &[String]) {
    let data = tmp.join("v-storm");
    procs::bootstrap(&data, store_args);
    let workers: Vec<Credentials> = {
        let server = procs::principald(&data, store_args);
        crate::enroll(&server.url(), &crate::admin_credentials(&data), "v-storm", STORM_CERTIFICATES).await
    };
    let server = procs::principald(&data, store_args);
    let idle_rss = server.rss_bytes().unwrap_or(0);
    let url = server.url();
    let started = Instant::now();
    let mut storm = tokio::task::JoinSet::new();
    for i in 0..STORM {
        let (url, creds) = (url.clone(), workers[i % workers.len()].clone());
        storm.spawn(async move {
            let retry = principald::client::Retry { attempts: 20, ..Default::default() };
            retry
                .call(
                    || {
                        let (url, creds) = (url.clone(), creds.clone());
                        async move {
                            let endpoint = principald::client::endpoint(&url, &creds).map_err(tonic::Status::from)?;
                            let channel =
                                endpoint.connect().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                            let mut client = pb::principal_service_client::PrincipalServiceClient::new(channel);
                            client.who_am_i(pb::WhoAmIRequest {}).await.map(|_| ())
                        }
                    },
                    |_, _| {},
                )
                .await
                .is_ok()
        });
    }
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(std::sync::atomic::AtomicU64::new(idle_rss)));
    let pid = server.pid();
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = procs::rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut served = 0;
    while let Some(result) = storm.join_next().await {
        served += usize::from(result.unwrap_or(false));
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let peak_mib = peak.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
    rows.push(
        Row::new("v", format!("{STORM} clients reconnecting at once: all served in"), took.as_secs_f64(), "s")
            .note(format!(
                "{served}/{STORM} served; {STORM_CERTIFICATES} distinct certificates; server RSS {:.0} MiB idle, {peak_mib:.0} MiB peak",
                idle_rss as f64 / (1024.0 * 1024.0)
            ))
            .target("all served within 30 s, peak RSS under 512 MiB", served == STORM && took.as_secs() < 30 && peak_mib < 512.0),
    );
}
