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
