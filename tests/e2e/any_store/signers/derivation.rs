//! The derivation secret beside each root: missing on keys made before it existed (a clear refusal saying how to make
//! it), created by bootstrap, and the same for every replica that opens the root.

use std::process::Command;

use crate::common::signers::{
    derivation_is_refused_helpfully, kms_client, kms_key_uri, open, pkcs11_key_uri, pkcs11_label,
    pkcs11_objects_labelled, pkcs11_tool_args, replicas_derive_the_same_keys,
};

/// A KMS root made before derivation existed (by hand here): replicas refuse to derive until bootstrap creates the
/// HMAC key under `alias/NAME-derive`; then every replica derives the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_replicas_derive_one_key_per_intermediate_once_bootstrap_made_the_hmac_key() {
    let Some(uri) = kms_key_uri() else { return };
    let alias = uri.strip_prefix("awskms:").unwrap().to_owned();
    let kms = kms_client().await;
    let root = kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap();
    let root_id = root.key_metadata().unwrap().key_id().to_owned();
    kms.create_alias().alias_name(&alias).target_key_id(&root_id).send().await.unwrap();

    let derive_alias = format!("{alias}-derive");
    derivation_is_refused_helpfully(&uri, &derive_alias).await;
    let missing = kms.describe_key().key_id(&derive_alias).send().await.unwrap_err();
    assert!(missing.as_service_error().is_some_and(|e| e.is_not_found_exception()), "opening did not create it");

    let bootstrapped = open(&uri, true).await;
    let made = kms.describe_key().key_id(&derive_alias).send().await.expect("bootstrap created the derivation key");
    let made = made.key_metadata().unwrap();
    assert_eq!(made.key_usage(), Some(&aws_sdk_kms::types::KeyUsageType::GenerateVerifyMac));
    assert_ne!(made.key_id(), root_id);
    replicas_derive_the_same_keys(&uri, &bootstrapped).await;

    // A root named by its key id finds its derivation key under alias/principald-derive-KEY_ID.
    let by_id = format!("awskms:{root_id}");
    derivation_is_refused_helpfully(&by_id, &format!("alias/principald-derive-{root_id}")).await;
    let bootstrapped = open(&by_id, true).await;
    replicas_derive_the_same_keys(&by_id, &bootstrapped).await;
}

/// A token key made by the operator's tools: no derivation secret until bootstrap generates `LABEL-derive`, then
/// every replica derives the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_replicas_derive_one_key_per_intermediate_once_bootstrap_made_the_secret_key() {
    let Some(uri) = pkcs11_key_uri() else { return };
    let label = pkcs11_label(&uri);
    let out = Command::new("pkcs11-tool")
        .args(pkcs11_tool_args())
        .args(["--keypairgen", "--key-type", "EC:prime256v1", "--id", "02", "--label", &label])
        .output()
        .expect("pkcs11-tool (opensc) is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let derive_label = format!("{label}-derive");
    derivation_is_refused_helpfully(&uri, &derive_label).await;
    assert_eq!(pkcs11_objects_labelled("secrkey", &derive_label), 0, "opening did not create it");

    let bootstrapped = open(&uri, true).await;
    assert_eq!(pkcs11_objects_labelled("secrkey", &derive_label), 1, "bootstrap created the derivation key");
    replicas_derive_the_same_keys(&uri, &bootstrapped).await;
    drop(bootstrapped);
    // Opening with `create` again adopts it.
    let again = open(&uri, true).await;
    assert_eq!(pkcs11_objects_labelled("secrkey", &derive_label), 1, "adopted, not duplicated");
    replicas_derive_the_same_keys(&uri, &again).await;
}

/// A fresh root from bootstrap comes with its derivation key, for KMS and for a token, even when two bootstraps race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bootstraps_make_one_derivation_key() {
    for uri in [kms_key_uri(), pkcs11_key_uri()].into_iter().flatten() {
        let (a, b) = tokio::join!(open(&uri, true), open(&uri, true));
        assert_eq!(a.public_point(), b.public_point(), "one root");
        replicas_derive_the_same_keys(&uri, &a).await;
        replicas_derive_the_same_keys(&uri, &b).await;
        if uri.starts_with("pkcs11:") {
            let label = pkcs11_label(&uri);
            assert_eq!(pkcs11_objects_labelled("secrkey", &format!("{label}-derive")), 1, "one derivation key");
        }
    }
}
