//! Bootstraps that race: two at once on one store and one key URI (KMS alias or token label), two processes creating
//! one token label, and a token key made by the operator's own tools, adopted rather than duplicated.

use std::process::Command;

use principald::proto as pb;

use crate::common::signers::{kms_key_uri, pkcs11_key_uri, pkcs11_objects_labelled, pkcs11_tool_args};
use crate::common::{self, TestServer};

/// Two bootstraps of one empty store with one key URI, at once: one key, one CA certificate, both succeed.
async fn concurrent_bootstraps_agree(uri: &str) {
    principald::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let store_config = if common::dynamo::e2e_on_dynamodb() {
        principald::store::StoreConfig::Dynamodb(common::dynamo::fresh_config().await.unwrap())
    } else {
        common::serve_config(&tmp.path().join("a"), &[]).store
    };
    let store = store_config.open().await.unwrap();
    let configs: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let mut config = common::serve_config(&tmp.path().join(name), &["--ca-key", uri]).bootstrap;
            config.admin_id = format!("admin-{name}").parse().unwrap();
            config
        })
        .collect();
    let (a, b) = tokio::join!(
        principald::bootstrap::run(&configs[0], store.clone()),
        principald::bootstrap::run(&configs[1], store.clone())
    );
    a.expect("bootstrap a");
    b.expect("bootstrap b");
    let ca_a = std::fs::read_to_string(tmp.path().join("a/ca.pem")).unwrap();
    assert_eq!(ca_a, std::fs::read_to_string(tmp.path().join("b/ca.pem")).unwrap(), "one CA certificate");
    // Idempotent: again changes nothing.
    let again = principald::bootstrap::run(&configs[0], store.clone()).await.unwrap();
    assert!(again.created.is_empty(), "{:?}", again.created);
    assert_eq!(std::fs::read_to_string(tmp.path().join("a/ca.pem")).unwrap(), ca_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bootstraps_with_one_kms_alias_agree_on_one_ca() {
    let Some(uri) = kms_key_uri() else { return };
    concurrent_bootstraps_agree(&uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bootstraps_with_one_token_label_agree_on_one_key_and_ca() {
    let Some(uri) = pkcs11_key_uri() else { return };
    concurrent_bootstraps_agree(&uri).await;
    let label = uri.split("object=").nth(1).unwrap().split('?').next().unwrap().to_owned();
    let listing = Command::new("pkcs11-tool")
        .args(pkcs11_tool_args())
        .args(["--list-objects", "--type", "privkey"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(listing.matches(&format!("label:      {label}\n")).count(), 1, "one key with the label: {listing}");
}

/// An HSM key made by the operator's own tools (opensc's pkcs11-tool) is adopted, not duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_adopts_a_key_generated_on_the_token() {
    let Some(uri) = pkcs11_key_uri() else { return };
    let label = uri.split("object=").nth(1).unwrap().split('?').next().unwrap().to_owned();
    let out = Command::new("pkcs11-tool")
        .args(pkcs11_tool_args())
        .args(["--keypairgen", "--key-type", "EC:prime256v1", "--id", "01", "--label", &label])
        .output()
        .expect("pkcs11-tool (opensc) is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = TestServer::start_with(&["--ca-key", &uri]).await;
    server.admin().await.who_am_i(pb::WhoAmIRequest {}).await.expect("admin works");
    let listing = Command::new("pkcs11-tool")
        .args(pkcs11_tool_args())
        .args(["--list-objects", "--type", "privkey"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(listing.matches(&format!("label:      {label}")).count(), 1, "one key with the label: {listing}");
    // The root certificate is for that key: the token's public key is the certificate's.
    let out = Command::new("pkcs11-tool")
        .args(pkcs11_tool_args())
        .args(["--read-object", "--type", "pubkey", "--label", &label])
        .output()
        .unwrap();
    let root = std::fs::read_to_string(server.data_dir.join("ca.pem")).unwrap();
    let der = rustls::pki_types::CertificateDer::from(pem::parse(root).unwrap().into_contents());
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(out.stdout, cert.public_key().raw, "the CA certificate holds the token's key");
}

/// Two `principald bootstrap` processes creating the same token label at once end with one key, which both use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_creating_one_token_label_end_with_one_key() {
    let Some(uri) = pkcs11_key_uri() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let spawn = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_principald"))
            .args(["bootstrap", "--data-dir"])
            .arg(tmp.path().join(name))
            .args(["--ca-key", &uri])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    for child in [a, b] {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let key_of = |name: &str| {
        let pem = std::fs::read_to_string(tmp.path().join(name).join("ca.pem")).unwrap();
        let der = pem::parse(pem).unwrap().into_contents();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        cert.public_key().raw.to_vec()
    };
    assert_eq!(key_of("a"), key_of("b"), "both CAs are for the one key left on the token");
    let label = uri.split("object=").nth(1).unwrap().split('?').next().unwrap().to_owned();
    let listing = Command::new("pkcs11-tool")
        .args(pkcs11_tool_args())
        .args(["--list-objects", "--type", "privkey"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(listing.matches(&format!("label:      {label}\n")).count(), 1, "{listing}");
    assert_eq!(pkcs11_objects_labelled("secrkey", &format!("{label}-derive")), 1, "one derivation key as well");
}
