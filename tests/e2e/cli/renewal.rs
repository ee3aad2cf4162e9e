//! principalctl cert renew: in place, only when due, a lost response recovered, --watch, a dead certificate noticed.

use super::*;

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
