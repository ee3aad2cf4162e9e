//! `principald agent` against a real principald (either store): joining, the Workload API over its Unix socket,
//! rotation, revocation pushed to workloads, attestation refusals, outages and restarts.

mod interop;
mod node;
mod rotation;
mod workload_api;

use std::path::{Path, PathBuf};
use std::time::Duration;

use principald::agent::client::{WorkloadClient, connect};
use principald::config::AgentConfig;
use principald::proto::spiffe::{X509svidRequest, X509svidResponse};
use principald::proto::{self as pb};
use tokio::sync::oneshot;

use crate::common::TestServer;

/// A server with JWT-SVIDs on.
pub async fn server() -> TestServer {
    TestServer::start_with(&["--jwt-svids"]).await
}

/// An agent running in this process, joined as `node`.
pub struct Agent {
    pub socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<principald::error::Result<()>>>,
    _tmp: Option<tempfile::TempDir>,
}

/// A one-time enrollment token for a new node principal `id`.
pub async fn node_token(server: &TestServer, id: &str) -> String {
    let mut admin = server.admin().await;
    admin
        .create_principal(pb::CreatePrincipalRequest {
            id: id.into(),
            r#type: pb::PrincipalType::Node.into(),
            description: String::new(),
            email: None,
        })
        .await
        .unwrap();
    let created = admin
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest { principal_id: id.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    principald::client::enroll::encode(&principald::client::enroll::TokenString {
        s: server.url.clone(),
        f: created.ca_sha256_fingerprint,
        p: id.into(),
        k: created.secret,
    })
}

impl Agent {
    /// Joins `node` (a new node principal) and serves.
    pub async fn join(server: &TestServer, node: &str) -> Self {
        let token = node_token(server, node).await;
        let tmp = tempfile::tempdir().unwrap();
        let mut agent = Self::start_at(tmp.path(), Some(token), None).await;
        agent._tmp = Some(tmp);
        agent
    }

    /// Starts an agent on `dir` (data in `dir/data`, socket `dir/api.sock`).
    pub async fn start_at(dir: &Path, join_token: Option<String>, health: Option<std::net::SocketAddr>) -> Self {
        let config = AgentConfig {
            server: None,
            data_dir: dir.join("data"),
            socket: dir.join("api.sock"),
            join_token,
            health_listen: health,
            poll: Duration::from_millis(200),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let socket = config.socket.clone();
        let task = tokio::spawn(principald::agent::run(config, async move {
            let _ = stopped.await;
        }));
        for _ in 0..200 {
            if socket.exists() || task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { socket, stop: Some(stop), task: Some(task), _tmp: None }
    }

    pub async fn client(&self) -> WorkloadClient {
        connect(&self.socket).await.expect("connect to the agent's socket")
    }

    /// A FetchX509SVID stream and the serial of the first SVID it carries.
    pub async fn first_svid(&self) -> (tonic::Streaming<X509svidResponse>, String) {
        let mut stream = self.client().await.fetch_x509svid(X509svidRequest {}).await.unwrap().into_inner();
        let first = next_matching(&mut stream, |m| !m.svids.is_empty()).await.unwrap();
        let serial = serial_of(&first_der(&first.svids[0].x509_svid));
        (stream, serial)
    }

    /// Stops the agent; returns how `run` ended.
    pub async fn stop(&mut self) -> principald::error::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Creates a workload entry on `node` for this test process's uid (plus `extra` selectors).
pub async fn entry(server: &TestServer, id: &str, node: &str, ttl_seconds: u64, extra: &[&str]) -> pb::Workload {
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    let mut selectors = vec![format!("unix:uid:{uid}")];
    selectors.extend(extra.iter().map(|s| s.to_string()));
    server
        .admin()
        .await
        .create_workload(pb::CreateWorkloadRequest {
            id: id.into(),
            node: node.into(),
            selectors,
            r#type: 0,
            ttl_seconds,
            description: String::new(),
        })
        .await
        .expect("create workload")
        .into_inner()
}

/// Waits (up to a minute) for the next message of `stream` that satisfies `want`.
pub async fn next_matching<T>(
    stream: &mut tonic::Streaming<T>,
    mut want: impl FnMut(&T) -> bool,
) -> Result<T, tonic::Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("no matching message within a minute"))??
            .ok_or_else(|| tonic::Status::aborted("stream ended"))?;
        if want(&message) {
            return Ok(message);
        }
    }
}

/// The serial (lowercase hex) of a DER certificate.
pub fn serial_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    principald::model::Serial::from_bytes(cert.raw_serial()).as_str().to_owned()
}

/// The first certificate of concatenated DER certificates.
pub fn first_der(concatenated: &[u8]) -> Vec<u8> {
    let (rest, _) = x509_parser::parse_x509_certificate(concatenated).unwrap();
    concatenated[..concatenated.len() - rest.len()].to_vec()
}

/// Serials a set of DER CRLs list.
pub fn revoked_in(crls: &[Vec<u8>]) -> Vec<String> {
    crls.iter()
        .flat_map(|der| {
            let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
            crl.iter_revoked_certificates()
                .map(|r| principald::model::Serial::from_bytes(r.raw_serial()).as_str().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}
