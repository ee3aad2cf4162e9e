//! The binaries end to end: principalctl against a running server, principald's bootstrap, configuration errors,
//! health endpoints, restart durability and graceful shutdown on SIGTERM.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{TestServer, http_get};
use principald::proto::{self as pb};
use rustls::pki_types::pem::PemObject;

const PRINCIPALCTL: &str = env!("CARGO_BIN_EXE_principalctl");
const PRINCIPALD: &str = env!("CARGO_BIN_EXE_principald");

fn admin_profile(server: &TestServer) -> std::path::PathBuf {
    server.data_dir.join("profiles").join("admin")
}

use common::principalctl as ctl;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(out.status.success(), "principalctl failed: {}{}", stdout(out), stderr(out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principalctl_walkthrough_create_issue_whoami_revoke() {
    let server = TestServer::start().await;
    let admin = admin_profile(&server);
    let work = tempfile::tempdir().unwrap();
    let worker_dir = work.path().join("worker-1");
    let worker = worker_dir.to_str().unwrap();

    let out = ctl(&admin, &["whoami"]).await;
    assert_ok(&out);
    assert!(stdout(&out).contains("admin"), "{}", stdout(&out));

    assert_ok(
        &ctl(&admin, &["principal", "create", "worker-1", "--type", "worker", "--description", "build runner"]).await,
    );
    let out = ctl(&admin, &["cert", "issue", "worker-1", "--out", worker]).await;
    assert_ok(&out);
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(worker_dir.join("key.pem")).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600, "private key is 0600");
    common::openssl_verify_client(&server.ca_pem(), &std::fs::read_to_string(worker_dir.join("cert.pem")).unwrap());

    let out = ctl(&worker_dir, &["whoami", "--output", "json"]).await;
    assert_ok(&out);
    let me: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((me["principal_id"].as_str(), me["principal_type"].as_str()), (Some("worker-1"), Some("worker")));

    let out = ctl(&admin, &["principal", "list", "--type", "worker", "-o", "json"]).await;
    assert_ok(&out);
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let out = ctl(&worker_dir, &["principal", "list"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("permission denied"), "{}", stderr(&out));

    let cert_file = worker_dir.join("cert.pem");
    assert_ok(
        &ctl(&admin, &["cert", "revoke", "--cert-file", cert_file.to_str().unwrap(), "--reason", "key-compromise"])
            .await,
    );
    let out = ctl(&worker_dir, &["whoami"]).await;
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim(), "principalctl: not authenticated: client certificate has been revoked");

    let out = ctl(&admin, &["cert", "list", "worker-1", "--include-revoked"]).await;
    assert_ok(&out);
    assert!(stdout(&out).contains("revoked"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principalctl_renews_in_place_and_only_when_due() {
    let server = TestServer::start().await;
    let admin = admin_profile(&server);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("w1");
    assert_ok(&ctl(&admin, &["principal", "create", "w1", "--type", "worker"]).await);
    assert_ok(&ctl(&admin, &["cert", "issue", "w1", "--out", dir.to_str().unwrap()]).await);
    let before = std::fs::read_to_string(dir.join("profile.json")).unwrap();

    let out = ctl(&dir, &["cert", "renew", "--if-expires-within", "1d"]).await;
    assert_ok(&out);
    assert!(stdout(&out).contains("not renewing"), "{}", stdout(&out));
    assert_eq!(std::fs::read_to_string(dir.join("profile.json")).unwrap(), before);

    let (old_cert, old_key) =
        (std::fs::read(dir.join("cert.pem")).unwrap(), std::fs::read(dir.join("key.pem")).unwrap());
    // The hook runs after the files are in place, with their paths in its environment.
    let hook = r#"openssl x509 -noout -serial -in "$PRINCIPALCTL_CERT" > "$PRINCIPALCTL_PROFILE_DIR/hook.out" && echo "$PRINCIPALCTL_SERIAL" >> "$PRINCIPALCTL_PROFILE_DIR/hook.out""#;
    let out = ctl(&dir, &["cert", "renew", "--if-expires-within", "60d", "--exec", hook]).await;
    assert_ok(&out);
    assert!(stdout(&out).contains("renewed"), "{}", stdout(&out));
    // Same names, new contents: software pointed at cert.pem and key.pem keeps working.
    let profile = principald::client::Profile::load(&dir).unwrap();
    assert_eq!((profile.file.cert.as_str(), profile.file.key.as_str()), ("cert.pem", "key.pem"));
    assert_eq!(std::fs::read_to_string(dir.join("profile.json")).unwrap(), before, "profile.json unchanged");
    assert_ne!(std::fs::read(dir.join("cert.pem")).unwrap(), old_cert);
    assert_ne!(std::fs::read(dir.join("key.pem")).unwrap(), old_key);
    let pubkey = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    };
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in", cert.to_str().unwrap()]),
        pubkey(&["pkey", "-pubout", "-in", key.to_str().unwrap()]),
        "the key matches the certificate (openssl)"
    );
    let hook_out = std::fs::read_to_string(dir.join("hook.out")).unwrap();
    let serial = hook_out.lines().nth(1).unwrap();
    assert!(
        hook_out.lines().next().unwrap().eq_ignore_ascii_case(&format!("serial={}", serial.trim_start_matches("00")))
    );
    // A failing hook: the renewal stands, the command says so and exits 1.
    let out = ctl(&dir, &["cert", "renew", "--exec", "exit 3"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("renewed, but the --exec hook failed"), "{}", stderr(&out));
    let profile = principald::client::Profile::load(&dir).unwrap();
    let me =
        server.client(&profile.credentials().unwrap()).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!(me.principal_id, "w1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principalctl_recovers_a_renewal_whose_response_was_lost() {
    let server = TestServer::start().await;
    let admin = admin_profile(&server);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("w1");
    assert_ok(&ctl(&admin, &["principal", "create", "w1", "--type", "worker"]).await);
    assert_ok(&ctl(&admin, &["cert", "issue", "w1", "--out", dir.to_str().unwrap()]).await);
    // An earlier `cert renew` wrote its pending key and reached the server, but the response never came back.
    let (pending, csr) = common::key_and_csr();
    std::fs::write(dir.join("pending-key.pem"), pending.serialize_pem()).unwrap();
    let credentials = principald::client::Profile::load(&dir).unwrap().credentials().unwrap();
    let lost = server
        .client(&credentials)
        .await
        .renew_certificate(pb::RenewCertificateRequest { csr: csr.into_bytes(), validity_seconds: 0 })
        .await
        .unwrap()
        .into_inner();

    let out = ctl(&dir, &["cert", "renew"]).await;
    assert_ok(&out);
    let profile = principald::client::Profile::load(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(profile.cert_path()).unwrap(), lost.certificate_pem, "the same certificate");
    assert_eq!(std::fs::read_to_string(profile.key_path()).unwrap(), pending.serialize_pem(), "with the pending key");
    assert!(!dir.join("pending-key.pem").exists(), "the pending key is gone once the renewal landed");
    server.client(&profile.credentials().unwrap()).await.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principalctl_watch_renews_at_two_thirds_of_the_lifetime() {
    let server = TestServer::start().await;
    let admin = admin_profile(&server);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("w1");
    assert_ok(&ctl(&admin, &["principal", "create", "w1", "--type", "worker"]).await);
    // 60 s plus the 60 s backdate: renewal is due about 20 s from now.
    assert_ok(&ctl(&admin, &["cert", "issue", "w1", "--out", dir.to_str().unwrap(), "--validity", "60s"]).await);
    let first = std::fs::read(dir.join("cert.pem")).unwrap();
    let mut watch = Command::new(PRINCIPALCTL)
        .arg("--profile")
        .arg(&dir)
        .args(["cert", "renew", "--watch", "--validity", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut renewed = false;
    for _ in 0..90 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if std::fs::read(dir.join("cert.pem")).unwrap() != first {
            renewed = true;
            break;
        }
    }
    let _ = watch.kill();
    let output = watch.wait_with_output().unwrap();
    assert!(renewed, "no renewal within 90 s: {}", stderr(&output));
    let profile = principald::client::Profile::load(&dir).unwrap();
    server
        .client(&profile.credentials().unwrap())
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("renewed certificate works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principalctl_explains_connection_failures_in_one_line() {
    let server = TestServer::start().await;
    let admin = admin_profile(&server);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = ctl(&admin, &["--server", &format!("https://127.0.0.1:{port}"), "whoami"]).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("connection refused"), "{}", stderr(&refused));
    assert_eq!(stderr(&refused).trim().lines().count(), 1);

    let plaintext = ctl(&admin, &["--server", &format!("http://127.0.0.1:{port}"), "whoami"]).await;
    assert!(stderr(&plaintext).contains("must start with https://"), "{}", stderr(&plaintext));

    let missing = Command::new(PRINCIPALCTL).arg("whoami").env_remove("PRINCIPALCTL_PROFILE").output().unwrap();
    assert!(stderr(&missing).contains("no profile"), "{}", stderr(&missing));

    // The health port (plain HTTP) given as the server.
    let health = ctl(&admin, &["--server", &format!("https://{}", server.running.health_addr), "whoami"]).await;
    assert!(stderr(&health).contains("does not speak TLS"), "{}", stderr(&health));
    assert_eq!(stderr(&health).trim().lines().count(), 1, "{}", stderr(&health));

    // A key that does not match the certificate: said before any connection.
    let work = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["profile.json", "ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.join(file), std::fs::read(admin.join(file)).unwrap()).unwrap();
        }
        dir
    };
    let mismatched = copy("mismatched");
    std::fs::write(mismatched.join("key.pem"), rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let out = ctl(&mismatched, &["whoami"]).await;
    assert!(stderr(&out).contains("the key does not match the certificate"), "{}", stderr(&out));

    // A certificate from another CA: always the same one-line explanation (the rejection races the first call).
    let other = principald::pki::ca::CertificateAuthority::generate("other CA", time::Duration::days(30)).unwrap();
    let foreign_creds = common::mint_with(&other, &rcgen::CertificateParams::new(Vec::<String>::new()).unwrap());
    let foreign = copy("foreign");
    std::fs::write(foreign.join("cert.pem"), &foreign_creds.cert_pem).unwrap();
    std::fs::write(foreign.join("key.pem"), &foreign_creds.key_pem).unwrap();
    for _ in 0..10 {
        let out = ctl(&foreign, &["whoami"]).await;
        assert!(stderr(&out).contains("rejected the TLS connection"), "{}", stderr(&out));
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    }
}

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

/// principalctl's usage errors are one line with exit status 1, like every other failure; help still exits 0.
#[test]
fn principalctl_usage_errors_are_one_line_and_exit_1() {
    for (args, needle) in [
        (&["--bogus"][..], "unexpected argument '--bogus'"),
        (&["cert", "list"][..], "required arguments were not provided"),
        (&["cert", "renew", "--if-expires-within", "soon"][..], "invalid value 'soon'"),
        (&["nonsense"][..], "unrecognized subcommand 'nonsense'"),
    ] {
        let out = Command::new(PRINCIPALCTL).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).trim_end().lines().count(), 1, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("principalctl: ") && stderr(&out).contains(needle), "{}", stderr(&out));
    }
    let help = Command::new(PRINCIPALCTL).args(["cert", "--help"]).output().unwrap();
    assert!(help.status.success() && stdout(&help).contains("renew"), "{}", stdout(&help));
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

/// A renewal check on a certificate principald refuses (its principal suspended) says so and fails, instead of "not
/// renewing" until the certificate expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_notices_a_dead_certificate() {
    let server = TestServer::start().await;
    let admin = admin_profile(&server);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("w1");
    assert_ok(&ctl(&admin, &["principal", "create", "w1", "--type", "worker"]).await);
    assert_ok(&ctl(&admin, &["cert", "issue", "w1", "--out", dir.to_str().unwrap()]).await);
    assert_ok(&ctl(&dir, &["cert", "renew", "--if-expires-within", "1d"]).await);
    assert_ok(&ctl(&admin, &["principal", "suspend", "w1", "--reason", "lost laptop"]).await);
    let out = ctl(&dir, &["cert", "renew", "--if-expires-within", "1d"]).await;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("no longer authenticates"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("not renewing"), "{}", stdout(&out));
}

/// `cert list` and `cert get` show what principald does with a certificate after a suspension, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_list_and_get_tell_why_a_certificate_is_dead() {
    let server = TestServer::start().await;
    let admin = admin_profile(&server);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("w1");
    assert_ok(&ctl(&admin, &["principal", "create", "w1", "--type", "worker"]).await);
    assert_ok(&ctl(&admin, &["cert", "issue", "w1", "--out", dir.to_str().unwrap()]).await);
    let listed = |out: Output| serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap();
    let before = listed(ctl(&admin, &["cert", "list", "w1", "-o", "json"]).await);
    assert_eq!(before[0]["status"], "valid", "{before:?}");
    let serial = before[0]["serial"].as_str().unwrap().to_owned();

    assert_ok(&ctl(&admin, &["principal", "suspend", "w1", "--reason", "lost laptop"]).await);
    assert_ok(&ctl(&admin, &["principal", "activate", "w1"]).await);
    let out = ctl(&admin, &["cert", "list", "w1", "--include-revoked"]).await;
    assert!(stdout(&out).contains("revoked (privilege-withdrawn)"), "{}", stdout(&out));
    let out = ctl(&admin, &["cert", "get", &serial, "-o", "json"]).await;
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(got["status"] == "revoked" || got["status"] == "void", "never valid: {got}");
    // And indeed refused.
    let out = ctl(&dir, &["whoami"]).await;
    assert!(!out.status.success(), "{}", stdout(&out));
}
