//! The binaries end to end: principalctl against a running server, principald's bootstrap, configuration errors,
//! health endpoints, restart durability and graceful shutdown on SIGTERM.

use crate::common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{TestServer, http_get};
use principald::proto::{self as pb};
use rustls::pki_types::pem::PemObject;

mod renewal;
mod serve;

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
