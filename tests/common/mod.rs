//! Test support: a real principald on loopback (ephemeral ports, a fresh data dir), clients with credentials minted
//! at test time, and helpers to craft certificates the server must reject.
#![allow(dead_code)]

pub mod counting;
pub mod dynamo;
pub mod s3;
pub mod signers;
pub mod tamper;
pub mod terraform;

use std::path::{Path, PathBuf};

use clap::Parser;
use principald::client::{self, Credentials};
use principald::config::{Cli, Command, ServeConfig};
use principald::datadir::DataDir;
use principald::pki::ca::CertificateAuthority;
use principald::proto::principal_service_client::PrincipalServiceClient;
use principald::proto::{self as pb};
use principald::server::{self, Running};
use rcgen::{CertificateParams, KeyPair};
use tonic::transport::Channel;

pub type Client = PrincipalServiceClient<Channel>;

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    pub running: Running,
    pub url: String,
    pub data_dir: PathBuf,
    pub ca: CertificateAuthority,
    pub admin: Credentials,
    config: ServeConfig,
    _tmp: Option<tempfile::TempDir>,
}

/// `principald serve` configuration from flags, as the binary would parse them.
pub fn serve_config(data_dir: &Path, extra: &[&str]) -> ServeConfig {
    let dir = data_dir.to_str().unwrap();
    let mut args =
        vec!["principald", "serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"];
    args.extend_from_slice(&["--pki-listen", "127.0.0.1:0"]);
    args.extend_from_slice(extra);
    match Cli::try_parse_from(args).expect("valid flags").command {
        Command::Serve(serve) => serve.validate().expect("valid config"),
        other => panic!("unexpected command {other:?}"),
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts on a fresh temporary data dir (bootstrapped by serve) with extra serve flags. With
    /// `PRINCIPALD_TEST_STORE=dynamodb` the store is fresh DynamoDB Local tables instead of SQLite.
    pub async fn start_with(extra: &[&str]) -> Self {
        principald::install_crypto_provider();
        let tmp = tempfile::tempdir().unwrap();
        let mut config = serve_config(&tmp.path().join("data"), extra);
        if dynamo::e2e_on_dynamodb() {
            let endpoint = dynamo::endpoint().expect("PRINCIPALD_TEST_STORE=dynamodb needs DynamoDB Local");
            config.store = principald::store::StoreConfig::Dynamodb(dynamo::fresh_config_at(&endpoint).await);
        }
        let mut server = Self::start_config(config).await;
        server._tmp = Some(tmp);
        server
    }

    pub async fn start_config(config: ServeConfig) -> Self {
        principald::install_crypto_provider();
        let running = server::start(config.clone()).await.expect("server starts");
        let dir = DataDir::new(&config.data_dir);
        let ca = load_ca(&config).await;
        let profile = client::Profile::load(&dir.profile(&config.bootstrap.admin_id)).unwrap();
        let url = format!("https://127.0.0.1:{}", running.grpc_addr.port());
        Self {
            running,
            url,
            data_dir: config.data_dir.clone(),
            ca,
            admin: profile.credentials().unwrap(),
            config,
            _tmp: None,
        }
    }

    /// Stops the server and starts a new one on the same data dir (new ports).
    pub async fn restart(self) -> Self {
        self.stop().await.start().await
    }

    /// Stops the server gracefully, keeping its data dir and configuration for [`Stopped::start`].
    pub async fn stop(mut self) -> Stopped {
        let tmp = self._tmp.take();
        self.running.shutdown().await;
        Stopped { config: self.config, tmp }
    }
}

/// A server stopped by [`TestServer::stop`]: its store can be changed behind its back before it starts again.
pub struct Stopped {
    pub config: ServeConfig,
    tmp: Option<tempfile::TempDir>,
}

impl Stopped {
    /// Starts a new server on the same data dir and store (new ports).
    pub async fn start(self) -> TestServer {
        let mut config = self.config;
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.health_listen = "127.0.0.1:0".parse().unwrap();
        config.pki.listen = "127.0.0.1:0".parse().unwrap();
        let mut server = TestServer::start_config(config).await;
        server._tmp = self.tmp;
        server
    }
}

impl TestServer {
    /// The server's store, opened separately (a second client of the same database or tables).
    pub async fn store(&self) -> std::sync::Arc<dyn principald::store::Store> {
        self.config.store.open().await.unwrap()
    }

    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    pub async fn client(&self, credentials: &Credentials) -> Client {
        let channel = client::endpoint(&self.url, credentials).unwrap().connect().await.expect("TLS connection");
        PrincipalServiceClient::new(channel)
    }

    pub async fn admin(&self) -> Client {
        self.client(&self.admin).await
    }

    /// A client without a certificate (the server verified against the CA), as a machine enrolling.
    pub async fn anonymous(&self) -> Client {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(self.ca_pem()))
            .domain_name("localhost");
        let endpoint = tonic::transport::Endpoint::from_shared(self.url.clone()).unwrap().tls_config(tls).unwrap();
        PrincipalServiceClient::new(endpoint.connect().await.expect("TLS connection"))
    }

    /// Creates a principal through the API and returns credentials issued to it through the API.
    pub async fn enroll(&self, id: &str, kind: pb::PrincipalType) -> Credentials {
        let mut admin = self.admin().await;
        admin
            .create_principal(pb::CreatePrincipalRequest {
                id: id.into(),
                r#type: kind.into(),
                description: String::new(),
                email: None,
            })
            .await
            .expect("create principal");
        self.issue(id).await
    }

    /// Issues a fresh certificate (new P-256 key) to an existing principal through the API.
    pub async fn issue(&self, id: &str) -> Credentials {
        let (key, csr) = key_and_csr();
        let issued = self
            .admin()
            .await
            .issue_certificate(pb::IssueCertificateRequest {
                principal_id: id.into(),
                csr: csr.into_bytes(),
                validity_seconds: 0,
            })
            .await
            .expect("issue certificate")
            .into_inner();
        Credentials {
            ca_pem: issued.ca_chain_pem,
            cert_pem: issued.certificate_chain_pem,
            key_pem: key.serialize_pem(),
        }
    }

    /// Signs `params` with the server's CA directly: a certificate the CA vouches for but the store never recorded.
    pub fn mint(&self, params: &CertificateParams) -> Credentials {
        mint_with(&self.ca, params)
    }

    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem().to_owned()
    }
}

/// The CA of a data dir whose key lives wherever `config` says (file, KMS, token), signing with the root directly.
pub async fn load_ca(config: &ServeConfig) -> CertificateAuthority {
    let pem = std::fs::read_to_string(DataDir::new(&config.data_dir).ca_cert()).unwrap();
    let key = config.bootstrap.ca_key.clone();
    let signer =
        tokio::task::spawn_blocking(move || principald::pki::signer::open(&key, false)).await.unwrap().unwrap();
    CertificateAuthority::direct(principald::pki::ca::Root::load(&pem, signer).unwrap())
}

pub fn mint_with(ca: &CertificateAuthority, params: &CertificateParams) -> Credentials {
    let key = KeyPair::generate().unwrap();
    let (cert, _) = ca.sign(params, &key).unwrap();
    Credentials { ca_pem: ca.cert_pem().to_owned(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

/// A fresh P-256 key and a CSR for it that asks for nothing.
pub fn key_and_csr() -> (KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

/// Writes `contents` to a new file in a temporary directory that lives as long as the returned guard.
pub fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// Runs principalctl (the binary of this build) with `profile` on a blocking thread, so a server on the test's
/// runtime keeps running; the environment's principalctl settings are cleared.
pub async fn principalctl(profile: &Path, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_principalctl"));
    command
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env_remove("PRINCIPALCTL_PROFILE")
        .env_remove("PRINCIPALCTL_SERVER");
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

/// `openssl verify` of `cert_pem` against `ca_pem` for TLS client use; panics with openssl's output on failure.
pub fn openssl_verify_client(ca_pem: &str, cert_pem: &str) {
    let (ok, text) = openssl_verify(ca_pem, None, cert_pem);
    assert!(ok, "openssl verify failed: {text}");
}

/// `openssl verify -x509_strict -purpose sslclient` of the leaf `cert_pem` against the trusted `ca_pem`, with
/// `untrusted` intermediates; (accepted, openssl's output).
pub fn openssl_verify(ca_pem: &str, untrusted: Option<&str>, cert_pem: &str) -> (bool, String) {
    let (_d1, ca) = temp_file("ca.pem", ca_pem);
    let (_d2, cert) = temp_file("cert.pem", cert_pem);
    let mut command = std::process::Command::new("openssl");
    command.args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"]).arg(&ca);
    let _d3 = untrusted.map(|pem| {
        let (dir, path) = temp_file("untrusted.pem", pem);
        command.arg("-untrusted").arg(&path);
        dir
    });
    let out = command.arg(&cert).output().expect("openssl is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains(": OK"), text)
}

/// A `principald serve` process started by a test, with the addresses it logged.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub grpc: std::net::SocketAddr,
    pub health: std::net::SocketAddr,
    /// The public PKI listener (CRLs, OCSP).
    pub pki: std::net::SocketAddr,
}

impl ServerProcess {
    /// Starts `principald serve` on ephemeral ports with JSON logs and waits until it serves.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_principald"));
        command
            .args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
            .args(["--pki-listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let status = child.wait();
                panic!("principald exited before serving ({status:?}): {seen}")
            };
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("principald serving") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let addr = |k: &str| v["fields"][k].as_str().unwrap().parse().unwrap();
                let (grpc, health, pki) = (addr("grpc"), addr("health"), addr("pki"));
                // PRINCIPALD_TEST_CHILD_LOG=1 shows the server's log in the test's output (with --no-capture).
                let show = std::env::var_os("PRINCIPALD_TEST_CHILD_LOG").is_some();
                if show {
                    eprint!("principald: {seen}");
                }
                // Keep draining the log so the process never blocks on a full pipe.
                std::thread::spawn(move || {
                    for line in lines.map_while(Result::ok).filter(|_| show) {
                        eprintln!("principald: {line}");
                    }
                });
                return Self { child, grpc, health, pki };
            }
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc.port())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on a plain-HTTP address: (status code, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}
