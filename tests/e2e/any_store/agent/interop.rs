//! Clients someone else wrote: py-spiffe (the `spiffe` package on PyPI, over grpcio) fetches X.509- and JWT-SVIDs and
//! checks them against the bundles, and a process of another uid gets nothing. The Python environment comes from
//! `PRINCIPALD_TEST_PYTHON` (scripts/test makes it); without it the tests skip, except under CI=true.

use std::path::PathBuf;

use super::{Agent, entry, server};

/// The Python interpreter that has py-spiffe, if any.
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("PRINCIPALD_TEST_PYTHON").map(PathBuf::from);
    if python.is_none() && std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true needs PRINCIPALD_TEST_PYTHON (a Python with the `spiffe` package; scripts/test makes one)");
    }
    python
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pyspiffe_check.py")
}

fn run(python: &PathBuf, socket: &std::path::Path, args: &[&str], as_user: Option<u32>) -> std::process::Output {
    // Another user may not reach this checkout: it runs a copy beside the socket.
    let script = match as_user {
        Some(_) => {
            let copy = socket.with_file_name("pyspiffe_check.py");
            std::fs::copy(script(), &copy).unwrap();
            copy
        }
        None => script(),
    };
    let mut command = match as_user {
        Some(uid) => {
            let mut c = std::process::Command::new("setpriv");
            c.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "--"]).arg(python);
            c
        }
        None => std::process::Command::new(python),
    };
    command
        .arg(script)
        .args(args)
        .env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{}", socket.display()))
        .output()
        .expect("run python")
}

#[tokio::test]
async fn py_spiffe_fetches_and_validates_x509_and_jwt_svids() {
    let Some(python) = python() else { return };
    let server = server().await;
    let agent = Agent::join(&server, "node-py").await;
    entry(&server, "py-web", "node-py", 3600, &[]).await;
    let socket = agent.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut last = None;
        // The agent picks the new entry up within seconds.
        for _ in 0..30 {
            let out = run(&python, &socket, &["spiffe://principald.local/service/py-web"], None);
            if out.status.success() {
                return out;
            }
            last = Some(out);
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        last.unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "py-spiffe: {text}");
    assert!(text.contains("ALL CHECKS PASSED"), "{text}");
}

#[tokio::test]
async fn a_process_of_another_uid_gets_nothing() {
    let Some(python) = python() else { return };
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap() == 0;
    if !root {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI runs as root to switch uids");
        return;
    }
    let server = server().await;
    let agent = Agent::join(&server, "node-uid").await;
    entry(&server, "root-only", "node-uid", 3600, &[]).await;
    // The socket's directory must let the other user reach the socket.
    let dir = agent.socket.parent().unwrap().to_path_buf();
    for d in dir.ancestors().take_while(|d| d.starts_with(std::env::temp_dir())) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
    }
    let socket = agent.socket.clone();
    let out =
        tokio::task::spawn_blocking(move || run(&python, &socket, &["--expect-denied"], Some(65534))).await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("DENIED AS EXPECTED"), "{text}");
}

#[tokio::test]
async fn an_envoy_sds_client_gets_the_secret_then_its_revocation_in_the_validation_context() {
    use std::io::BufRead;
    let Some(python) = python() else { return };
    let server = server().await;
    let agent = Agent::join(&server, "node-sds").await;
    entry(&server, "envoy-web", "node-sds", 3600, &[]).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sds_check.py");
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .arg(format!("unix://{}", agent.socket.display()))
        .arg("spiffe://principald.local/service/envoy-web")
        .arg("spiffe://principald.local")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait = std::time::Duration::from_secs(60);
    let first = tokio::time::timeout(wait, lines.recv()).await.expect("a secret").expect("a line");
    let serial = first.strip_prefix("SECRET ").unwrap_or_else(|| panic!("{first}")).to_owned();
    let padded = if serial.len() % 2 == 1 { format!("0{serial}") } else { serial.clone() };
    server
        .admin()
        .await
        .revoke_certificate(principald::proto::RevokeCertificateRequest { serial: padded, reason: 1 })
        .await
        .unwrap();
    let revoked_at = std::time::Instant::now();
    let seen = tokio::time::timeout(wait, lines.recv()).await.expect("the revocation").expect("a line");
    assert_eq!(seen, format!("CRL_HAS {serial}"));
    eprintln!("revocation reached the SDS client in {:?}", revoked_at.elapsed());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success());
}
