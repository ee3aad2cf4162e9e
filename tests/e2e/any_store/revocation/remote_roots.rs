//! Replicas and remote roots: a dead replica's leaves revoked by another, CRLs signed in KMS, one stored CRL for all replicas, the OCSP signing budget.

use super::*;

/// The store flags for a multi-process test: a shared SQLite data dir, or fresh DynamoDB Local tables with
/// PRINCIPALD_TEST_STORE=dynamodb.
async fn shared_store_args(data: &str) -> Vec<String> {
    let mut args = vec!["--data-dir".to_owned(), data.to_owned()];
    if common::dynamo::e2e_on_dynamodb() {
        let config = common::dynamo::fresh_config().await.expect("DynamoDB Local");
        args.extend(["--store", "dynamodb", "--dynamodb-table-prefix"].map(String::from));
        args.push(config.table_prefix.clone());
        args.push("--dynamodb-endpoint".into());
        args.push(config.endpoint.clone().unwrap());
    }
    args
}

/// With the root in KMS or an HSM, leaves are signed by the issuing replica's intermediate. Kill that replica with
/// SIGKILL, revoke the leaf through another one: within 2 s the other replica's CRL (at the path the leaf names) and
/// OCSP answer, both signed by the dead replica's intermediate (its key re-derived), say revoked.
async fn a_dead_replicas_leaf_is_revoked_by_another_replica(uri: &str) {
    principald::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = shared_store_args(data.to_str().unwrap()).await;
    let args = |replica: &str| {
        let mut args = store.clone();
        // One public URL for both, as behind a load balancer; the test reaches each replica's PKI port directly.
        args.extend(["--ca-key", uri, "--replica-id", replica, "--revocation-poll", "200ms"].map(String::from));
        args.extend(["--pki-url", "http://pki.principald.test"].map(String::from));
        args
    };
    let (args_a, args_b) = (args("replica-a"), args("replica-b"));
    let mut a = common::ServerProcess::spawn(&args_a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let b = common::ServerProcess::spawn(&args_b.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let admin = principald::client::Profile::load(&data.join("profiles/admin")).unwrap().credentials().unwrap();
    let connect = |url: String| {
        let admin = admin.clone();
        async move {
            let channel = principald::client::endpoint(&url, &admin).unwrap().connect().await.unwrap();
            principald::proto::principal_service_client::PrincipalServiceClient::new(channel)
        }
    };
    let mut admin_a = connect(a.url()).await;
    admin_a
        .create_principal(pb::CreatePrincipalRequest {
            id: "rp-w".into(),
            r#type: pb::PrincipalType::Worker.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (key, csr) = common::key_and_csr();
    let issued = admin_a
        .issue_certificate(pb::IssueCertificateRequest {
            principal_id: "rp-w".into(),
            csr: csr.into_bytes(),
            validity_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let creds = Credentials {
        ca_pem: issued.ca_chain_pem.clone(),
        cert_pem: issued.certificate_chain_pem,
        key_pem: key.serialize_pem(),
    };
    let (leaf, intermediate) = split_chain(&creds.cert_pem);
    assert!(!intermediate.is_empty(), "a replica intermediate signed the leaf");
    let (crl_url, ocsp_url) = pointers(&leaf);
    let crl_path = crl_url[crl_url.find("/crl/").unwrap()..].to_owned();
    assert!(crl_path.matches('/').count() == 3, "the intermediate's own CRL: {crl_url}");
    assert!(ocsp_url.ends_with("/ocsp"), "{ocsp_url}");
    let ca_pem = std::fs::read_to_string(data.join("ca.pem")).unwrap();
    let b_ocsp = format!("http://{}/ocsp", b.pki);
    let (status, text) = openssl_ocsp(&b_ocsp, &intermediate, &leaf, &ca_pem);
    assert_eq!(status, "good", "the other replica answers for the leaf: {text}");
    assert!(text.contains("Response verify OK"), "{text}");

    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    let mut admin_b = connect(b.url()).await;
    let der = pem::parse(&leaf).unwrap().into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let serial = principald::model::Serial::from_bytes(cert.raw_serial()).as_str().to_owned();
    admin_b
        .revoke_certificate(pb::RevokeCertificateRequest { serial, reason: pb::RevocationReason::KeyCompromise.into() })
        .await
        .unwrap();
    let revoked_at = Instant::now();
    eventually(Duration::from_secs(2), || {
        let (status, text) = openssl_ocsp(&b_ocsp, &intermediate, &leaf, &ca_pem);
        (status == "revoked" && text.contains("Reason: keyCompromise") && text.contains("Response verify OK"), text)
    })
    .await;
    let (_i, untrusted) = temp_file("intermediate.pem", &intermediate);
    let (_c, ca) = temp_file("ca.pem", &ca_pem);
    let (_l, leaf_file) = temp_file("leaf.pem", &leaf);
    let pki = b.pki;
    let remaining = Duration::from_secs(2).saturating_sub(revoked_at.elapsed()).max(Duration::from_millis(200));
    eventually(remaining, || {
        let (code, der) = get_bytes(pki, &crl_path);
        if code != 200 {
            return (false, format!("GET {crl_path}: {code}"));
        }
        let (_d, crl) = temp_file("crl.pem", &pem::encode(&pem::Pem::new("X509 CRL", der)));
        let out = std::process::Command::new("openssl")
            .args(["verify", "-crl_check", "-CAfile"])
            .arg(&ca)
            .arg("-untrusted")
            .arg(&untrusted)
            .arg("-CRLfile")
            .arg(&crl)
            .arg(&leaf_file)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (!out.status.success() && text.contains("certificate revoked"), text)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_root_a_dead_replicas_leaf_is_revoked_by_another_replica() {
    let Some(uri) = common::signers::kms_key_uri() else { return };
    a_dead_replicas_leaf_is_revoked_by_another_replica(&uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_root_a_dead_replicas_leaf_is_revoked_by_another_replica() {
    let Some(uri) = common::signers::pkcs11_key_uri() else { return };
    a_dead_replicas_leaf_is_revoked_by_another_replica(&uri).await;
}

/// A CRL far beyond KMS's 4096-byte RAW limit (5,000 entries in one partition, about 240 KiB) is signed by a root
/// in KMS: hashed locally and signed as a DIGEST (the emulator honours DIGEST as KMS does and refuses RAW over 4096
/// bytes, see scripts/kms-emulator.py); openssl verifies the signature with the root's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_root_signs_a_crl_of_five_thousand_entries() {
    let Some(uri) = common::signers::kms_key_uri() else { return };
    principald::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let store = principald::store::sqlite::SqliteStore::open(&tmp.path().join("crl.db")).unwrap();
    // All in partition 0.
    let (owner, certificates) = principald::store::conformance::revoked_fixture(5000, Some(0));
    store.import(vec![owner], certificates).await.unwrap();
    let store: std::sync::Arc<dyn principald::store::Store> = std::sync::Arc::new(store);
    let key = principald::pki::signer::open_async(uri.parse().unwrap(), true).await.unwrap();
    let base = "http://pki.principald.test";
    let ca = tokio::task::spawn_blocking(move || {
        let root = principald::pki::ca::Root::create(key, "kms crl test", time::Duration::days(30), false).unwrap();
        principald::pki::ca::CertificateAuthority::direct(
            root.publishing_status_at(Some(principald::pki::crl::StatusUrls::under(base))),
        )
    })
    .await
    .unwrap();
    let ca = std::sync::Arc::new(ca);
    let ca_pem = ca.cert_pem().to_owned();
    let issuers = principald::revocation::Issuers::load(ca, store.clone()).await.unwrap();
    let crls = principald::revocation::CrlPublisher::new(store, issuers, base.into(), Duration::from_secs(3600));
    assert_eq!(crls.refresh().await.unwrap(), 16, "every partition signed, none stopped by another");
    let crl = crls.get(0).unwrap();
    assert_eq!(crl.entries, 5000);
    assert!(crl.crl.der.len() > 50 * 4096, "far past the RAW limit: {} bytes", crl.crl.der.len());
    let (_c, ca_file) = temp_file("ca.pem", &ca_pem);
    let (_d, crl_file) = temp_file("crl.pem", &pem::encode(&pem::Pem::new("X509 CRL", crl.crl.der.clone())));
    let out = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-CAfile"])
        .arg(&ca_file)
        .arg("-in")
        .arg(&crl_file)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("verify OK"), "{text}");
}

/// Two replicas on one store serve the same CRL for a place (one signs and stores it, the other adopts it), its
/// number taken from the store's counter: after a revocation both serve one CRL, with a higher number than before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_one_stored_crl_whose_number_only_grows() {
    let a = TestServer::start().await;
    let mut config = a.config().clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.health_listen = "127.0.0.1:0".parse().unwrap();
    config.pki.listen = "127.0.0.1:0".parse().unwrap();
    let b = TestServer::start_config(config).await;
    let worker = a.enroll("rp-crl", pb::PrincipalType::Worker).await;
    let (leaf, _) = split_chain(&worker.cert_pem);
    let (crl_url, _) = pointers(&leaf);
    let path = crl_url[crl_url.find("/crl/").unwrap()..].to_owned();
    let number = |der: &[u8]| {
        let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
        crl.crl_number().unwrap().to_owned()
    };
    let before = number(&get_bytes(a.running.pki_addr, &path).1);
    let der = pem::parse(&leaf).unwrap().into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let serial = principald::model::Serial::from_bytes(cert.raw_serial()).as_str().to_owned();
    let revoke = pb::RevokeCertificateRequest { serial, reason: pb::RevocationReason::Superseded.into() };
    a.admin().await.revoke_certificate(revoke).await.unwrap();
    let lists = |der: &[u8]| {
        let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
        crl.iter_revoked_certificates().any(|r| r.raw_serial() == cert.raw_serial())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (from_a, from_b) = (get_bytes(a.running.pki_addr, &path).1, get_bytes(b.running.pki_addr, &path).1);
        if lists(&from_a) && lists(&from_b) && from_a == from_b {
            assert!(number(&from_a) > before, "the CRL number grows");
            break;
        }
        assert!(Instant::now() < deadline, "the replicas never served one CRL listing the revocation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `--intermediates never` with the root in KMS: leaves are signed by the KMS root, which also signs their CRLs and
/// OCSP answers (cached per epoch, so KMS signs once per certificate and change); openssl hears good, then revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_root_signing_leaves_itself_answers_ocsp_and_crls_for_them() {
    let Some(uri) = common::signers::kms_key_uri() else { return };
    let server = TestServer::start_with(&["--ca-key", &uri, "--intermediates", "never"]).await;
    let worker = server.enroll("rp-direct", pb::PrincipalType::Worker).await;
    let (leaf, intermediate) = split_chain(&worker.cert_pem);
    assert!(intermediate.is_empty(), "the root signed the leaf");
    let (crl_url, _) = pointers(&leaf);
    assert!(crl_url.matches('/').count() == 4, "a root partition: {crl_url}");
    let (status, text) = ocsp_of(&server, &worker);
    assert_eq!(status, "good", "{text}");
    assert!(text.contains("Response verify OK"), "{text}");
    let der = pem::parse(&leaf).unwrap().into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let serial = principald::model::Serial::from_bytes(cert.raw_serial()).as_str().to_owned();
    let revoke = pb::RevokeCertificateRequest { serial, reason: pb::RevocationReason::KeyCompromise.into() };
    server.admin().await.revoke_certificate(revoke).await.unwrap();
    let (status, text) = ocsp_of(&server, &worker);
    assert_eq!(status, "revoked", "{text}");
    assert!(text.contains("Response verify OK"), "{text}");
    eventually(Duration::from_secs(10), || {
        let (ok, text) = openssl_verify_with_its_crl(&server, &worker);
        (!ok && text.contains("certificate revoked"), text)
    })
    .await;
}

/// A flood of OCSP requests for serials nobody issued, under a KMS root that signs its own leaves: beyond the
/// responder's budget for the remote root (10 signatures a second, 50 in a burst) the answers are TryLater, not
/// signatures, so anonymous relying parties cannot spend the KMS quota; once the flood stops, a real certificate's
/// status is signed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ocsp_flood_cannot_spend_a_remote_roots_signing_budget() {
    let Some(uri) = common::signers::kms_key_uri() else { return };
    let server = TestServer::start_with(&["--ca-key", &uri, "--intermediates", "never"]).await;
    let creds = server.enroll("ocsp-flooded", pb::PrincipalType::Worker).await;
    let (leaf, _) = split_chain(&creds.cert_pem);
    let (_, url) = pointers(&leaf);
    let (_d, ca) = temp_file("ca.pem", &server.ca_pem());
    let ask = move |serial: String| {
        let out = std::process::Command::new("openssl")
            .args(["ocsp", "-no_nonce", "-noverify", "-url", &url, "-issuer"])
            .arg(&ca)
            .args(["-serial", &serial])
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let ask = std::sync::Arc::new(ask);
    let workers: Vec<_> = (0..20u32)
        .map(|w| {
            let ask = ask.clone();
            std::thread::spawn(move || (0..10u32).map(|i| ask(format!("0x7{w:03x}{i:04x}5eed"))).collect::<Vec<_>>())
        })
        .collect();
    let answers: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let later = answers.iter().filter(|a| a.to_lowercase().contains("trylater")).count();
    let signed = answers.iter().filter(|a| a.contains(": unknown")).count();
    assert!(later > 0, "200 requests for new serials all signed by KMS: {:?}", &answers[..3]);
    assert_eq!(later + signed, answers.len(), "each answer is signed (unknown) or TryLater: {answers:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, text) = ocsp_of(&server, &creds);
    assert_eq!(status, "good", "{text}");
}
