//! Runs the README's walkthrough block as a newcomer would type it, against a real `principald serve`. `cargo`
//! lines are skipped (the test binaries are already built and put first on PATH); a line ending in
//! `# fails: MESSAGE` must fail and print MESSAGE.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PRINCIPALD: &str = env!("CARGO_BIN_EXE_principald");

fn walkthrough() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start =
        readme.find("```sh walkthrough\n").expect("README has a ```sh walkthrough block") + "```sh walkthrough\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].lines().map(str::to_owned).filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn readme_walkthrough_works_verbatim() {
    let lines = walkthrough();
    assert!(lines.len() >= 8, "walkthrough too short: {lines:?}");
    let cwd = tempfile::tempdir().unwrap();
    let mut server = Command::new(PRINCIPALD)
        .args(["serve", "--data-dir", "./data", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .args(["--pki-listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cwd.path().join("data/profiles/admin/profile.json").exists() {
        assert!(Instant::now() < deadline, "server did not bootstrap");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));

    let bin_dir = Path::new(PRINCIPALD).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut script = String::from("set -euo pipefail\n");
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("cargo ") {
            continue;
        }
        match line.split_once("# fails:") {
            Some((command, message)) => script.push_str(&format!(
                "if out=$({command} 2>&1); then echo \"line {n} should have failed: $out\"; exit 1; fi\n\
                 case \"$out\" in *{message:?}*) ;; *) echo \"line {n} failed differently: $out\"; exit 1;; esac\n",
                command = command.trim(),
                message = message.trim(),
                n = i + 1
            )),
            None => script.push_str(&format!("{line}\n")),
        }
    }
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(cwd.path())
        .env("PATH", &path)
        .env_remove("PRINCIPALCTL_PROFILE")
        .env_remove("PRINCIPALCTL_SERVER")
        .output()
        .unwrap();
    let _ = server.kill();
    let mut log = String::new();
    let _ = server.stderr.take().unwrap().read_to_string(&mut log);
    let _ = server.wait();
    assert!(
        out.status.success(),
        "walkthrough failed\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}\n--- server log\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `crl fetch` ran right after the revocation: the CRLs it wrote already list worker-1's certificate (openssl's view).
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(cwd.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let serial = openssl(&["x509", "-in", "worker-1/cert.pem", "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=").to_owned();
    let mut listed = String::new();
    for entry in std::fs::read_dir(cwd.path().join("crls")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "crl") {
            listed += &openssl(&["crl", "-inform", "DER", "-in", path.to_str().unwrap(), "-noout", "-text"]);
        }
    }
    assert!(listed.contains(&format!("Serial Number: {serial}")), "the fetched CRLs do not list {serial}:\n{listed}");
}
