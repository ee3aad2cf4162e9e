//! The CA key in real services: moto's KMS and a SoftHSM2 token, both started by `scripts/test-services` through
//! `scripts/test`, which exports their addresses. Without them these tests skip, except under `CI=true`, where they fail.

fn required(var: &str, what: &str) -> Option<String> {
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

/// A fresh `pkcs11:` URI for the test token (the object does not exist yet), or `None` to skip.
pub fn pkcs11_key_uri() -> Option<String> {
    let conf = required("PRINCIPALD_TEST_SOFTHSM_CONF", "a SoftHSM2 token")?;
    let pin = std::path::Path::new(&conf).with_file_name("pin");
    Some(format!("pkcs11:token=principald-test;object={}?pin-source=file:{}", unique("root"), pin.display()))
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
