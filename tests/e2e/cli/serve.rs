//! principald as a process: bootstrap, configuration errors, health, restarts, SIGTERM, its own server certificate.

use super::*;

#[test]
fn bootstrap_is_idempotent_and_force_replaces_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let run = |extra: &[&str]| {
        let out = Command::new(PRINCIPALD).args(["bootstrap", "--data-dir"]).arg(&dir).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let first = run(&["--server-name", "ca.example.org"]);
    assert!(first.contains("created CA certificate"), "{first}");
    let files = [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "profiles/admin/profile.json",
        "profiles/admin/key.pem",
        "profiles/admin/cert.pem",
    ];
    let snapshot = || files.map(|f| std::fs::read(dir.join(f)).unwrap());
    let before = snapshot();
    for private in ["ca.key", "server.key", "profiles/admin/key.pem"] {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join(private)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{private}");
    }
    let second = run(&[]);
    assert!(second.contains("already bootstrapped; nothing changed"), "{second}");
    assert_eq!(snapshot(), before, "re-running changes nothing");

    let server_pem = std::fs::read_to_string(dir.join("server.pem")).unwrap();
    let (_tmp, path) = common::temp_file("server.pem", &server_pem);
    let text =
        Command::new("openssl").args(["x509", "-noout", "-ext", "subjectAltName", "-in"]).arg(&path).output().unwrap();
    let text = stdout(&text);
    assert!(
        text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1") && text.contains("DNS:ca.example.org"),
        "{text}"
    );
    let (_tmp2, ca_path) = common::temp_file("ca.pem", &std::fs::read_to_string(dir.join("ca.pem")).unwrap());
    let ca_text =
        stdout(&Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&ca_path).output().unwrap());
    assert!(ca_text.contains("CA:TRUE, pathlen:0") && ca_text.contains("prime256v1"), "{ca_text}");

    let forced = run(&["--force"]);
    assert!(forced.contains("created CA certificate"), "{forced}");
    assert_ne!(std::fs::read(dir.join("ca.pem")).unwrap(), before[0]);
}

#[test]
fn bad_configuration_exits_64_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--cert-validity", "robot=1d"], "unknown principal type"),
        (&["--auth-cache-ttl", "soon"], "--auth-cache-ttl"),
        (&["--trust-domain", "Bad Domain"], "--trust-domain"),
        (&["--oid-arc", "1.x"], "invalid OID arc"),
        (&["--listen", "nowhere"], "invalid value 'nowhere'"),
    ];
    for (args, needle) in cases {
        let out = Command::new(PRINCIPALD)
            .args(["serve", "--data-dir"])
            .arg(tmp.path().join("data"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).trim_end().lines().count(), 1, "one line: {}", stderr(&out));
    }
    assert!(!tmp.path().join("data").exists(), "nothing was created before validation");
}

/// DynamoDB without a region, or at an endpoint nobody answers: one line that says so, not the SDK's error chain.
#[test]
fn dynamodb_misconfiguration_is_explained_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let mut command = Command::new(PRINCIPALD);
        command.args(["serve", "--store", "dynamodb", "--data-dir"]).arg(tmp.path().join("data")).args(extra);
        for name in ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"] {
            command.env_remove(name);
        }
        command.env("AWS_EC2_METADATA_DISABLED", "true").envs(env.iter().copied());
        command.output().unwrap()
    };
    let out = run(&[("AWS_CONFIG_FILE", "/nonexistent")], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("DynamoDB needs an AWS region: set AWS_REGION"), "{}", stderr(&out));
    assert!(!stderr(&out).contains('\u{1b}'), "no color escape codes in logs written to a pipe: {}", stderr(&out));
    let credentials = [("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y")];
    let out = run(&credentials, &["--dynamodb-endpoint", "http://127.0.0.1:1"]);
    assert!(!out.status.success());
    let last = stderr(&out).trim_end().lines().last().unwrap_or_default().to_owned();
    assert!(last.contains("cannot reach DynamoDB at http://127.0.0.1:1: connection refused"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("DispatchFailure"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_listener_and_grpc_health_report_serving() {
    let server = TestServer::start().await;
    let addr = server.running.health_addr;
    let (code, body) = tokio::task::spawn_blocking(move || http_get(addr, "/healthz")).await.unwrap();
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, body) = tokio::task::spawn_blocking(move || http_get(addr, "/readyz")).await.unwrap();
    assert_eq!((code, body.trim()), (200, "ready"));
    let (code, _) = tokio::task::spawn_blocking(move || http_get(addr, "/nothing")).await.unwrap();
    assert_eq!(code, 404);

    let channel = principald::client::endpoint(&server.url, &server.admin).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "principal.v1.PrincipalService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart() {
    let server = TestServer::start().await;
    let worker = server.enroll("w1", pb::PrincipalType::Worker).await;
    server
        .admin()
        .await
        .suspend_principal(pb::SuspendPrincipalRequest { id: "w1".into(), reason: "kept".into() })
        .await
        .unwrap();
    let server = server.restart().await;
    let mut admin = server.admin().await;
    let p = admin.get_principal(pb::GetPrincipalRequest { id: "w1".into() }).await.unwrap().into_inner();
    assert_eq!((p.status, p.status_reason.as_str()), (pb::PrincipalStatus::Suspended as i32, "kept"));
    admin.activate_principal(pb::ActivatePrincipalRequest { id: "w1".into() }).await.unwrap();
    let fresh = server.issue("w1").await;
    let me = server.client(&fresh).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!(me.principal_id, "w1", "the principal's state survived the restart");
    // The suspension before the restart voided the certificate issued before it.
    assert!(server.client(&worker).await.who_am_i(pb::WhoAmIRequest {}).await.is_err());
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(PRINCIPALD)
        .args([
            "serve",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
            "--pki-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let mut log = String::new();
    let mut buf = [0u8; 4096];
    let health = loop {
        let n = stderr_pipe.read(&mut buf).unwrap();
        assert!(n > 0, "server exited early: {log}");
        log.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(line) = log.lines().find(|l| l.contains("principald serving")) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            break v["fields"]["health"].as_str().unwrap().parse::<std::net::SocketAddr>().unwrap();
        }
    };
    assert_eq!(http_get(health, "/readyz").0, 200);
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    stderr_pipe.read_to_string(&mut log).unwrap();
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(log.contains("draining in-flight requests") && log.contains("gRPC server stopped"), "{log}");
    assert!(!log.contains("BEGIN"), "no key material in logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_replace_a_missing_ca_of_a_bootstrapped_store() {
    let server = TestServer::start().await;
    let config = server.config().clone();
    let data = server.data_dir.clone();
    server.running.shutdown().await;
    let mut config = config;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.health_listen = "127.0.0.1:0".parse().unwrap();
    config.pki.listen = "127.0.0.1:0".parse().unwrap();

    std::fs::remove_file(data.join("ca.key")).unwrap();
    let error = principald::server::start(config.clone()).await.err().expect("half a CA must be refused");
    assert!(error.to_string().contains("only half of the CA"), "{error}");

    std::fs::remove_file(data.join("ca.pem")).unwrap();
    let error = principald::server::start(config).await.err().expect("a new CA for an existing store must be refused");
    assert!(error.to_string().contains("already holds admin"), "{error}");
    assert!(!data.join("ca.pem").exists(), "no new CA was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_renews_a_due_or_broken_server_certificate_keeping_its_names() {
    let server = TestServer::start().await;
    let data = server.data_dir.clone();
    let dir = principald::datadir::DataDir::new(&data);
    let mut config = server.config().clone();
    let admin = server.admin.clone();
    server.running.shutdown().await;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.health_listen = "127.0.0.1:0".parse().unwrap();
    config.pki.listen = "127.0.0.1:0".parse().unwrap();

    // A server certificate in the last third of its life, with an extra name.
    let ca = principald::bootstrap::load_ca(&dir).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "ca.example.org".to_string()];
    let params = principald::pki::profile::server_certificate(
        &names,
        now - time::Duration::days(300),
        now + time::Duration::days(10),
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.server_key(), key.serialize_pem()).unwrap();
    std::fs::write(dir.server_cert(), ca.sign(&params, &key).unwrap().0.pem()).unwrap();
    let old = std::fs::read(dir.server_cert()).unwrap();

    let running = principald::server::start(config.clone()).await.unwrap();
    assert_ne!(std::fs::read(dir.server_cert()).unwrap(), old, "due certificate replaced");
    assert_renewed_and_serving(&dir, &running, &admin, now).await;
    running.shutdown().await;

    // A key that does not match its certificate (a crash between the two writes) is repaired the same way.
    std::fs::write(dir.server_key(), rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let before = std::fs::read(dir.server_cert()).unwrap();
    let running = principald::server::start(config).await.unwrap();
    assert_ne!(std::fs::read(dir.server_cert()).unwrap(), before, "mismatched pair re-issued");
    assert_renewed_and_serving(&dir, &running, &admin, now).await;
    running.shutdown().await;
}

/// The data dir's server certificate runs for about a year from `since`, kept the extra name, and is what the
/// server presents: an admin call over TLS succeeds.
async fn assert_renewed_and_serving(
    dir: &principald::datadir::DataDir,
    running: &principald::server::Running,
    admin: &principald::client::Credentials,
    since: time::OffsetDateTime,
) {
    let pem = std::fs::read(dir.server_cert()).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let expiry = cert.validity().not_after.to_datetime();
    let san = format!("{:?}", cert.subject_alternative_name().unwrap().unwrap().value.general_names);
    assert!(expiry > since + time::Duration::days(300), "renewed for a year: {expiry}");
    assert!(san.contains("ca.example.org"), "names kept: {san}");
    let url = format!("https://127.0.0.1:{}", running.grpc_addr.port());
    let channel = principald::client::endpoint(&url, admin).unwrap().connect().await.unwrap();
    let mut client = pb::principal_service_client::PrincipalServiceClient::new(channel);
    client.who_am_i(pb::WhoAmIRequest {}).await.expect("TLS with the new server certificate");
}
