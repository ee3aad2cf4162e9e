//! moto's S3 for the checkpoint sink: scripts/test starts moto's server (the `kms` service of scripts/test-services;
//! moto serves every AWS API on one endpoint) and points the SDK at it with AWS_ENDPOINT_URL_S3. Without it the S3
//! tests skip, except under `CI=true`, where they fail.

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{
    DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule,
};

/// The S3 endpoint, or `None` to skip.
pub fn endpoint() -> Option<String> {
    super::signers::required("AWS_ENDPOINT_URL_S3", "moto, which serves S3 on the KMS emulator's endpoint")
}

/// A client as principald and principalctl make one (path-style addressing for the local endpoint).
pub async fn client() -> Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    Client::from_conf(principald::audit::checkpoint_source::s3_config(&sdk).build())
}

/// A bucket name no test used yet.
pub fn unique_bucket() -> String {
    let mut bytes = [0u8; 6];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    format!("principald-test-{}", principald::model::hex(&bytes))
}

/// A fresh bucket as Terraform makes it: Object Lock on, default retention one day in COMPLIANCE mode.
pub async fn fresh_bucket() -> String {
    let client = client().await;
    let bucket = unique_bucket();
    client.create_bucket().bucket(&bucket).object_lock_enabled_for_bucket(true).send().await.unwrap();
    let retention = DefaultRetention::builder().mode(ObjectLockRetentionMode::Compliance).days(1).build();
    let lock = ObjectLockConfiguration::builder()
        .object_lock_enabled(ObjectLockEnabled::Enabled)
        .rule(ObjectLockRule::builder().default_retention(retention).build())
        .build();
    client.put_object_lock_configuration().bucket(&bucket).object_lock_configuration(lock).send().await.unwrap();
    bucket
}
