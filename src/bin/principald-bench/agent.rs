//! (w) The workload agent: `principald agent` as its own process beside principald, with 1,000 workload entries.
//! X.509-SVID fetch latency from the socket, how fast the agent obtains SVIDs for 1,000 entries (rotations per
//! second), its resident memory, and how long a revocation takes to reach an open Workload API stream.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use principald::proto::spiffe::X509svidRequest;
use principald::proto::{self as pb};

use crate::procs::{self, rss_of};
use crate::report::Row;
use crate::{Client, connect};

const ENTRIES: usize = 1000;
/// A gid no process of this benchmark has: entries that select it exist (the agent keeps their SVIDs) but match no
/// caller, as on a node where most entries are other workloads'.
const OTHER_GID: u32 = 4_000_000;

struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn uid() -> u32 {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
}

async fn metric(health: std::net::SocketAddr, name: &str) -> f64 {
    let body = reqwest_free_get(health, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn reqwest_free_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return String::new() };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body).await;
    body
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

pub async fn agent(rows: &mut Vec<Row>, dir: &Path, store: Vec<String>) {
    let data = dir.join("agent-server");
    procs::bootstrap(&data, &store);
    let mut args = store.clone();
    args.push("--jwt-svids".into());
    let server = procs::principald(&data, &args);
    let admin = principald::client::Profile::load(&data.join("profiles/admin")).unwrap().credentials().unwrap();
    let mut client = connect(&server.url(), &admin).await;
    let token = node_token(&mut client, &server.url()).await;
    let token_file = dir.join("node.token");
    std::fs::write(&token_file, token).unwrap();
    let socket = dir.join("agent/api.sock");
    let health = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let child = Command::new(crate::procs::sibling("principald"))
        .args(["agent", "--log-level", "warn", "--data-dir"])
        .arg(dir.join("agent/data"))
        .arg("--socket")
        .arg(&socket)
        .arg("--join-token-file")
        .arg(&token_file)
        .args(["--health-listen", &health.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn principald agent");
    let agent = AgentProcess(child);
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1,000 entries: one this benchmark matches, the others another gid's.
    let started = Instant::now();
    for i in 0..ENTRIES {
        let mut selectors = vec![format!("unix:uid:{}", uid())];
        if i > 0 {
            selectors.push(format!("unix:gid:{OTHER_GID}"));
        }
        client
            .create_workload(pb::CreateWorkloadRequest {
                id: format!("bench-w{i:04}"),
                node: "bench-node".into(),
                selectors,
                ttl_seconds: 3600,
                ..Default::default()
            })
            .await
            .expect("create workload");
    }
    let created = started.elapsed();
    let issuing = Instant::now();
    loop {
        if metric(health, "principald_agent_rotations_total").await >= ENTRIES as f64 {
            break;
        }
        assert!(issuing.elapsed() < Duration::from_secs(600), "the agent did not obtain {ENTRIES} SVIDs in 10 min");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // From the last entry's creation: the agent had most entries (and issued most SVIDs) before that already.
    let issue_seconds = issuing.elapsed().as_secs_f64() + created.as_secs_f64();
    let rate = ENTRIES as f64 / issue_seconds;
    rows.push(Row::new("w", format!("agent: SVIDs obtained for {ENTRIES} new entries"), rate, "SVIDs/s").note(
        format!(
            "{ENTRIES} entries created in {:.1} s and their SVIDs issued within {issue_seconds:.1} s of the first",
            created.as_secs_f64()
        ),
    ));
    let rss = rss_of(agent.0.id()).unwrap_or(0) as f64 / 1_048_576.0;
    rows.push(
        Row::new("w", format!("agent RSS with {ENTRIES} entries and SVIDs"), rss, "MiB")
            .target("<= 30 MiB", rss <= 30.0),
    );

    // Fetch latency: a new connection and FetchX509SVID's first message, attestation included.
    let mut samples = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let mut workload = principald::agent::client::connect(&socket).await.expect("connect");
        let mut stream = workload.fetch_x509svid(X509svidRequest {}).await.expect("fetch").into_inner();
        let first = stream.message().await.expect("message").expect("a message");
        assert_eq!(first.svids.len(), 1);
        samples.push(t.elapsed());
    }
    let (p50, p99) = (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99));
    rows.push(Row::new("w", "X.509-SVID fetch (connect + first message), p50", p50, "ms"));
    rows.push(Row::new("w", "X.509-SVID fetch (connect + first message), p99", p99, "ms"));

    // Revocation to push: revoke the SVID a stream holds, until a message's CRLs list it.
    let mut workload = principald::agent::client::connect(&socket).await.unwrap();
    let mut stream = workload.fetch_x509svid(X509svidRequest {}).await.unwrap().into_inner();
    let mut current = stream.message().await.unwrap().unwrap();
    let mut samples = Vec::new();
    for _ in 0..20 {
        let serial = serial(&current.svids[0].x509_svid);
        let t = Instant::now();
        client
            .revoke_certificate(pb::RevokeCertificateRequest { serial: serial.clone(), reason: 1 })
            .await
            .expect("revoke");
        loop {
            let message = stream.message().await.unwrap().expect("stream open");
            let listed = revoked(&message.crl).contains(&serial);
            let replaced = message.svids.first().is_some_and(|s| self::serial(&s.x509_svid) != serial);
            if listed && replaced {
                samples.push(t.elapsed());
                current = message;
                break;
            }
        }
    }
    let (p50, p99) = (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99));
    rows.push(Row::new("w", "revocation to push (CRL on the stream and SVID replaced), p50", p50, "ms"));
    rows.push(
        Row::new("w", "revocation to push (CRL on the stream and SVID replaced), p99", p99, "ms")
            .target("<= 2,000 ms (SPIRE: none; AWS Private CA: ~30 min)", p99 <= 2000.0),
    );
    drop(agent);
    drop(server);
}

async fn node_token(client: &mut Client, url: &str) -> String {
    client
        .create_principal(pb::CreatePrincipalRequest {
            id: "bench-node".into(),
            r#type: pb::PrincipalType::Node.into(),
            ..Default::default()
        })
        .await
        .expect("create node");
    let created = client
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            principal_id: "bench-node".into(),
            ..Default::default()
        })
        .await
        .expect("token")
        .into_inner();
    principald::client::enroll::encode(&principald::client::enroll::TokenString {
        s: url.to_owned(),
        f: created.ca_sha256_fingerprint,
        p: "bench-node".into(),
        k: created.secret,
    })
}

fn serial(chain: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(chain).unwrap();
    principald::model::Serial::from_bytes(cert.raw_serial()).as_str().to_owned()
}

fn revoked(crls: &[Vec<u8>]) -> Vec<String> {
    crls.iter()
        .flat_map(|der| {
            let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
            crl.iter_revoked_certificates()
                .map(|r| principald::model::Serial::from_bytes(r.raw_serial()).as_str().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}
