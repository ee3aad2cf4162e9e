//! The servers under test, each its own process: `principald serve` (the sibling binary) and the bare baseline (this
//! binary in `bare-server` mode: same TLS configuration and accept loop, no authentication, no store).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use principald::datadir::DataDir;
use principald::proto::principal_service_server::{PrincipalService, PrincipalServiceServer};
use principald::proto::{self as pb};
use principald::server_cert::ServerCertificate;
use tonic::{Request, Response, Status};

/// A server process; killed on drop.
pub struct ServerProcess {
    child: Child,
    pub grpc: SocketAddr,
    /// principald's public PKI listener (CRLs, OCSP); `None` for the bare server.
    pub pki: Option<SocketAddr>,
    /// principald's health listener; `None` for the bare server.
    pub health: Option<SocketAddr>,
}

impl ServerProcess {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc.port())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process, from /proc, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.child.id())
    }
}

/// Resident memory of process `pid`, from /proc, in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sibling(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    me.parent().expect("exe dir").join(name)
}

/// `principald bootstrap` into `data_dir` with `store_args`.
pub fn bootstrap(data_dir: &Path, store_args: &[String]) {
    let out = Command::new(sibling("principald"))
        .args(["bootstrap", "--data-dir"])
        .arg(data_dir)
        .args(store_args)
        .output()
        .expect("run principald bootstrap (build it with: cargo build --release)");
    assert!(out.status.success(), "bootstrap failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Rate limits off, unless a figure sets its own: the throughput figures measure the server, not its limits (group v
/// measures what the limits cost).
const NO_RATE_LIMITS: &str = "issue=off,token=off,enrollment_token=off,audit_read=off,enroll=off";

/// Starts `principald serve` on ephemeral loopback ports and waits until it logs that it serves.
pub fn principald(data_dir: &Path, args: &[String]) -> ServerProcess {
    let mut command = Command::new(sibling("principald"));
    command
        .args(["serve", "--log-format", "json", "--log-level", "warn,principald::server=info"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
            "--pki-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(args);
    if !args.iter().any(|a| a == "--rate-limit") {
        command.args(["--rate-limit", NO_RATE_LIMITS]);
    }
    spawn(command, |line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v["fields"]["message"] != "principald serving" {
            return None;
        }
        let addr = |k: &str| v["fields"][k].as_str().and_then(|a| a.parse().ok());
        Some((addr("grpc")?, addr("pki"), addr("health")))
    })
}

/// Starts the bare baseline server on the data dir's TLS material.
pub fn bare(data_dir: &Path) -> ServerProcess {
    let mut command = Command::new(std::env::current_exe().expect("current exe"));
    command.args(["bare-server", "--data-dir"]).arg(data_dir);
    spawn(command, |line| Some((line.strip_prefix("listening ")?.trim().parse().ok()?, None, None)))
}

type Addresses = (SocketAddr, Option<SocketAddr>, Option<SocketAddr>);

fn spawn(mut command: Command, ready: impl Fn(&str) -> Option<Addresses>) -> ServerProcess {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn server");
    let (tx, rx) = std::sync::mpsc::channel();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                if let Some((grpc, pki, health)) = ready(&line) {
                    // Keep draining both pipes (the threads above) so the server never blocks on logging.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return ServerProcess { child, grpc, pki, health };
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not start: {seen}");
            }
        }
    }
}

/// PrincipalService answering WhoAmI with a fixed response of the same shape, without authentication or store.
struct BareApi {
    response: pb::WhoAmIResponse,
}

#[tonic::async_trait]
impl PrincipalService for BareApi {
    async fn who_am_i(&self, _: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        Ok(Response::new(self.response.clone()))
    }
    async fn create_principal(
        &self,
        _: Request<pb::CreatePrincipalRequest>,
    ) -> Result<Response<pb::Principal>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_principal(&self, _: Request<pb::GetPrincipalRequest>) -> Result<Response<pb::Principal>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_principals(
        &self,
        _: Request<pb::ListPrincipalsRequest>,
    ) -> Result<Response<pb::ListPrincipalsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn suspend_principal(
        &self,
        _: Request<pb::SuspendPrincipalRequest>,
    ) -> Result<Response<pb::Principal>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn activate_principal(
        &self,
        _: Request<pb::ActivatePrincipalRequest>,
    ) -> Result<Response<pb::Principal>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn delete_principal(
        &self,
        _: Request<pb::DeletePrincipalRequest>,
    ) -> Result<Response<pb::DeletePrincipalResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn issue_certificate(
        &self,
        _: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn renew_certificate(
        &self,
        _: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn revoke_certificate(
        &self,
        _: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_certificate(
        &self,
        _: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_certificates(
        &self,
        _: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_audit_events(
        &self,
        _: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    type WatchAuditEventsStream = tokio_stream::Empty<Result<pb::AuditEvent, Status>>;
    async fn watch_audit_events(
        &self,
        _: Request<pb::WatchAuditEventsRequest>,
    ) -> Result<Response<Self::WatchAuditEventsStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn issue_token(&self, _: Request<pb::IssueTokenRequest>) -> Result<Response<pb::IssueTokenResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn create_enrollment_token(
        &self,
        _: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<pb::EnrollmentToken>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_enrollment_tokens(
        &self,
        _: Request<pb::ListEnrollmentTokensRequest>,
    ) -> Result<Response<pb::ListEnrollmentTokensResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn revoke_enrollment_token(
        &self,
        _: Request<pb::RevokeEnrollmentTokenRequest>,
    ) -> Result<Response<pb::EnrollmentTokenInfo>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn enroll(&self, _: Request<pb::EnrollRequest>) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_crl(&self, _: Request<pb::GetCrlRequest>) -> Result<Response<pb::Crl>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_audit_chains(
        &self,
        _: Request<pb::ListAuditChainsRequest>,
    ) -> Result<Response<pb::ListAuditChainsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_intermediates(
        &self,
        _: Request<pb::ListIntermediatesRequest>,
    ) -> Result<Response<pb::ListIntermediatesResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn revoke_intermediate(
        &self,
        _: Request<pb::RevokeIntermediateRequest>,
    ) -> Result<Response<pb::Intermediate>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn create_workload(&self, _: Request<pb::CreateWorkloadRequest>) -> Result<Response<pb::Workload>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_workload(&self, _: Request<pb::GetWorkloadRequest>) -> Result<Response<pb::Workload>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_workloads(
        &self,
        _: Request<pb::ListWorkloadsRequest>,
    ) -> Result<Response<pb::ListWorkloadsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn delete_workload(
        &self,
        _: Request<pb::DeleteWorkloadRequest>,
    ) -> Result<Response<pb::DeleteWorkloadResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_node_workloads(
        &self,
        _: Request<pb::ListNodeWorkloadsRequest>,
    ) -> Result<Response<pb::ListWorkloadsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn issue_workload_certificate(
        &self,
        _: Request<pb::IssueWorkloadCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn issue_workload_token(
        &self,
        _: Request<pb::IssueWorkloadTokenRequest>,
    ) -> Result<Response<pb::IssueWorkloadTokenResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_trust_bundle(
        &self,
        _: Request<pb::GetTrustBundleRequest>,
    ) -> Result<Response<pb::TrustBundle>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

/// `bare-server` mode: serve the baseline until killed.
pub async fn run_bare(data_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let dir = DataDir::new(data_dir);
    let ca = Arc::new(principald::bootstrap::load_ca(&dir)?);
    let tls = principald::tls::server_config(ca.cert_der(), ServerCertificate::load(&dir, ca.clone(), &[])?, false)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let (incoming, _accept) = principald::tls::incoming(listener, tls, Default::default(), std::future::pending());
    let response = pb::WhoAmIResponse {
        principal_id: "bench-worker-000".into(),
        principal_type: pb::PrincipalType::Worker.into(),
        certificate_serial: "00".repeat(17),
        certificate_not_after: Some(prost_types::Timestamp { seconds: 1_900_000_000, nanos: 0 }),
        permissions: vec!["certificate.renew-self".into()],
    };
    let api = Arc::new(BareApi { response });
    tonic::transport::Server::builder()
        .add_service(PrincipalServiceServer::from_arc(api))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
