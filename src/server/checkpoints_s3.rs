//! The S3 sink of audit checkpoints (`--audit-checkpoints s3://BUCKET/PREFIX`): each checkpoint a new object, written
//! once. Every S3 call the server makes is in this file, and it is PutObject only (tests/checks/terraform.rs derives the task
//! role's S3 permissions from it): the bucket's default Object Lock retention (COMPLIANCE mode, set by Terraform)
//! keeps each object for its retention period, and `If-None-Match: *` refuses to replace an object that exists, so
//! not even a new version hides a checkpoint under its name. Object Lock requires an integrity checksum on every
//! write: each carries the SDK's SHA-256 checksum, which S3 checks before storing the object.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;

use crate::audit::checkpoint_source::{object_key, s3_config, s3_error};
use crate::error::{Error, Result};

pub(super) struct S3Sink {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Sink {
    /// A client from the standard AWS chain (the task role in ECS); a write is attempted up to 3 times with
    /// exponential backoff within 15 s (the writer then tries again later).
    pub async fn new(bucket: &str, prefix: &str) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(15))
            .build();
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(500))
            .with_max_backoff(Duration::from_secs(4));
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .retry_config(retry)
            .load()
            .await;
        let client = Client::from_conf(s3_config(&sdk).build());
        Self { client, bucket: bucket.to_owned(), prefix: prefix.to_owned() }
    }

    /// `s3://BUCKET/KEY` of checkpoint `name`.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, object_key(&self.prefix, name))
    }

    /// Writes checkpoint `name` as a new object; an object already there under that name is an error, not replaced.
    pub async fn put(&self, name: &str, note: &str) -> Result<()> {
        let written = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(object_key(&self.prefix, name))
            .content_type("text/plain; charset=utf-8")
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(note.as_bytes().to_vec()))
            .send()
            .await;
        written.map(drop).map_err(|e| {
            Error::Unavailable(format!(
                "cannot write audit checkpoint {} (principald needs s3:PutObject there): {}",
                self.url(name),
                s3_error(&e)
            ))
        })
    }
}
