//! The CA key in real services: moto's KMS and a SoftHSM2 token, both started by `scripts/test-services` through
//! `scripts/test`, which exports their addresses. Without them these tests skip, except under `CI=true`, where they fail.
//! Also the checks of a root's derivation secret that the KMS and the token tests share.

use std::sync::Arc;

use principald::pki::signer::Signer;

pub fn required(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but {var} is not set: run the tests with scripts/test, which starts {what}")
        }
        _ => {
            eprintln!("skipping: {var} is not set (scripts/test starts {what} and sets it)");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 6];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    format!("{prefix}-{}", principald::model::hex(&bytes))
}

/// A fresh `awskms:alias/...` URI (the key does not exist yet: bootstrap creates it), or `None` to skip.
pub fn kms_key_uri() -> Option<String> {
    required("PRINCIPALD_TEST_KMS_ENDPOINT", "moto's KMS")?;
    assert!(std::env::var("AWS_ENDPOINT_URL_KMS").is_ok(), "AWS_ENDPOINT_URL_KMS must point the SDK at moto");
    Some(format!("awskms:alias/{}", unique("principald-test")))
}

/// A fresh `pkcs11:` URI for the test token (the object does not exist yet), or `None` to skip. The test then has
/// the token to itself (see [`hold_the_token`]).
pub fn pkcs11_key_uri() -> Option<String> {
    let conf = required("PRINCIPALD_TEST_SOFTHSM_CONF", "a SoftHSM2 token")?;
    hold_the_token(&conf);
    let pin = std::path::Path::new(&conf).with_file_name("pin");
    Some(format!("pkcs11:token=principald-test;object={}?pin-source=file:{}", unique("root"), pin.display()))
}

/// Keeps other test processes off the SoftHSM2 token until this one exits (nextest runs each test in a process of
/// its own; the processes a test spawns share its turn). SoftHSM2's file token is not safe for a process that loads
/// it while another writes it: such a process loses the token for its lifetime (C_GetTokenInfo answers
/// CKR_GENERAL_ERROR, "no PKCS#11 token labelled"; SoftHSMv2 issue 757), which made these tests fail about once in
/// 30 runs. Held once per process, so tests sharing a process (`cargo test`) do not wait for each other.
fn hold_the_token(conf: &str) {
    static HELD: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    HELD.get_or_init(|| {
        let path = std::path::Path::new(conf).with_file_name("tests.lock");
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).unwrap();
        file.lock().unwrap();
        file
    });
}

/// The SoftHSM2 module and the user PIN, for driving the token with opensc's pkcs11-tool.
pub fn pkcs11_tool_args() -> Vec<String> {
    let conf = std::env::var("PRINCIPALD_TEST_SOFTHSM_CONF").unwrap();
    let pin = std::fs::read_to_string(std::path::Path::new(&conf).with_file_name("pin")).unwrap();
    let module = std::env::var("PRINCIPALD_PKCS11_MODULE").unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into());
    vec![
        "--module".into(),
        module,
        "--token-label".into(),
        "principald-test".into(),
        "--login".into(),
        "--pin".into(),
        pin,
    ]
}

/// The label of `uri`'s key object (`object=`).
pub fn pkcs11_label(uri: &str) -> String {
    uri.split("object=").nth(1).unwrap().split(['?', ';']).next().unwrap().to_owned()
}

/// Lines of `pkcs11-tool --list-objects --type TYPE` naming exactly `label`.
pub fn pkcs11_objects_labelled(kind: &str, label: &str) -> usize {
    let listing = std::process::Command::new("pkcs11-tool")
        .args(pkcs11_tool_args())
        .args(["--list-objects", "--type", kind])
        .output();
    let listing = listing.expect("pkcs11-tool (opensc) is installed");
    String::from_utf8_lossy(&listing.stdout).matches(&format!("label:      {label}\n")).count()
}

/// A client of moto's KMS, as the operator's own tools would use it.
pub async fn kms_client() -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await)
}

/// A derived intermediate key of `signer` for `context`: its public point (the PKCS#8 is loaded by rcgen as the CA
/// loads it, and is compared by its public half only). Off the async workers: remote keys block.
pub async fn derived_public_key(
    signer: &std::sync::Arc<dyn principald::pki::signer::Signer>,
    context: &[u8],
) -> Vec<u8> {
    let (signer, context) = (signer.clone(), context.to_vec());
    tokio::task::spawn_blocking(move || {
        let pkcs8 = principald::pki::signer::derive_p256_pkcs8(signer.as_ref(), &context).expect("derive the key");
        let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("rcgen loads the derived key");
        rcgen::PublicKeyData::der_bytes(&key).to_vec()
    })
    .await
    .unwrap()
}

pub const CONTEXT_A: &[u8] = b"principald intermediate key v1\0\x01\x02";
pub const CONTEXT_B: &[u8] = b"principald intermediate key v1\0\x01\x03";

pub async fn open(uri: &str, create: bool) -> Arc<dyn Signer> {
    principald::pki::signer::open_async(uri.parse().unwrap(), create).await.expect("open the CA key")
}

/// Opened without `create`, a root whose derivation key is missing still opens (it signs), and derivation is refused
/// with a message that says how to make the key.
pub async fn derivation_is_refused_helpfully(uri: &str, names: &str) {
    let signer = open(uri, false).await;
    principald::pki::signer::self_test(signer.as_ref()).expect("the root still signs");
    let refused = tokio::task::spawn_blocking(move || signer.derive_secret(CONTEXT_A)).await.unwrap().unwrap_err();
    let message = refused.to_string();
    assert!(matches!(refused, principald::error::Error::FailedPrecondition(_)), "{refused:?}");
    assert!(message.contains("principald bootstrap") && message.contains(names), "{message}");
}

/// Replicas that open one root independently derive the same intermediate keys; other contexts give other keys.
pub async fn replicas_derive_the_same_keys(uri: &str, bootstrapped: &Arc<dyn Signer>) {
    let (a, b) = (open(uri, false).await, open(uri, false).await);
    let key = derived_public_key(&a, CONTEXT_A).await;
    assert_eq!(derived_public_key(&b, CONTEXT_A).await, key, "two replicas, one intermediate key");
    assert_eq!(derived_public_key(bootstrapped, CONTEXT_A).await, key, "the bootstrapping process agrees");
    assert_ne!(derived_public_key(&b, CONTEXT_B).await, key, "another intermediate, another key");
    assert_ne!(key, a.public_point(), "not the root's key");
}
