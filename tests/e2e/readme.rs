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

/// The rows of the README table whose header row starts with `header`: (first cell, second cell).
fn table_after(header: &str) -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find(header).unwrap_or_else(|| panic!("README has a table headed {header:?}"));
    readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].to_owned(), cells[1].to_owned())
        })
        .collect()
}

/// Backquoted words of a cell.
fn quoted(cell: &str) -> std::collections::BTreeSet<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn the_readme_permission_tables_are_the_codes() {
    use principald::auth::{MethodPolicy, PermissionTable, Requirement};
    use principald::model::PrincipalType;
    let builtin = PermissionTable::builtin();
    let mut typed = std::collections::BTreeSet::new();
    for (types, permissions) in table_after("| type | permissions |") {
        for kind in types.split(", ") {
            let kind: PrincipalType = kind.parse().unwrap_or_else(|_| panic!("README names no type {kind:?}"));
            let code: std::collections::BTreeSet<String> = builtin.for_type(kind).iter().cloned().collect();
            assert_eq!(quoted(&permissions), code, "README permissions of {kind:?}");
            typed.insert(kind);
        }
    }
    assert_eq!(typed.len(), PrincipalType::ALL.len(), "every type has a row");

    let policy = MethodPolicy::principald();
    let service = "/principal.v1.PrincipalService/";
    let mut documented = std::collections::BTreeSet::new();
    for (methods, requires) in table_after("| RPC | requires |") {
        for method in methods.split(", ") {
            if method.contains('.') || method == "reflection" {
                continue; // other services: checked below
            }
            let path = format!("{service}{method}");
            let expected = match policy.requirement(&path) {
                Some(Requirement::Permission(p)) => format!("`{p}`"),
                Some(Requirement::Authenticated) => "any authenticated principal".into(),
                Some(Requirement::Anonymous) => "anyone".into(),
                None => panic!("README lists {method}, which the code denies"),
            };
            assert!(requires.starts_with(&expected), "{method}: README says {requires:?}, the code {expected:?}");
            documented.insert(path);
        }
    }
    let code: std::collections::BTreeSet<String> =
        policy.method_paths().into_iter().filter(|p| p.starts_with(service)).collect();
    assert_eq!(documented, code, "every RPC of the code's table is in the README's, and only those");
    for anonymous in ["/grpc.health.v1.Health/Check", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"] {
        assert_eq!(policy.requirement(anonymous), Some(&Requirement::Anonymous));
    }
}

#[test]
fn the_readme_lists_every_audit_event_type() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("Event types (`--type` refuses any other").expect("README lists the event types");
    let paragraph = &readme[start..start + readme[start..].find("\n\n").unwrap()];
    let listed: std::collections::BTreeSet<String> =
        quoted(paragraph).into_iter().filter(|w| w.contains('.')).collect();
    let code: std::collections::BTreeSet<String> = principald::audit::kind::ALL.iter().map(|k| k.to_string()).collect();
    assert_eq!(listed, code);
}
