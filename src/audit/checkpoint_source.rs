//! Where signed audit checkpoints live outside the store, and reading them back: a directory of files, or an S3 prefix
//! (a bucket with Object Lock in production). `principald --audit-checkpoints` writes to a [`Location`]
//! (`server::checkpoints`); `principalctl audit verify --checkpoints` reads every note of one with
//! [`Location::read_notes`] (ListObjectsV2 and GetObject with the operator's AWS credentials for S3), and verifies them
//! the same way whatever the source.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Checkpoint files end with this (see [`super::checkpoint::file_name`]); other files or objects are not read.
pub const SUFFIX: &str = ".note";

/// A directory, or `s3://BUCKET/PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    /// Objects named `PREFIX/TIME_MS-REPLICA.note` (no `/` added to an empty prefix).
    S3 {
        bucket: String,
        prefix: String,
    },
}

impl FromStr for Location {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let Some(rest) = text.strip_prefix("s3://") else {
            if text.is_empty() {
                return Err(Error::InvalidArgument("an empty checkpoint directory".into()));
            }
            return Ok(Self::Dir(PathBuf::from(text)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "{text}: not s3://BUCKET/PREFIX with a valid bucket name (3 to 63 of a-z, 0-9, '-', '.')"
            )));
        }
        Ok(Self::S3 { bucket: bucket.to_owned(), prefix: prefix.trim_end_matches('/').to_owned() })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "{}", dir.display()),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// The object key of checkpoint `name` under `prefix`.
pub fn object_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_owned() } else { format!("{prefix}/{name}") }
}

#[cfg(feature = "aws")]
/// An S3 client configuration from the standard AWS chain (env, profile, instance or task role). An endpoint
/// override (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`: a local S3 such as moto, MinIO) gets path-style addressing,
/// which those serve and virtual-hosted names on 127.0.0.1 cannot reach.
pub fn s3_config(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::config::Builder {
    let overridden =
        ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"].iter().any(|var| std::env::var(var).is_ok_and(|v| !v.is_empty()))
            || sdk.endpoint_url().is_some();
    aws_sdk_s3::config::Builder::from(sdk).force_path_style(overridden)
}

#[cfg(feature = "aws")]
/// What S3 answered, briefly: its error code and message (`NoSuchBucket: The specified bucket does not exist`,
/// `AccessDenied: ...`), or for a request that got no answer (no route, a timeout) the SDK's account of why.
pub fn s3_error<E>(error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    match (error.code(), error.raw_response()) {
        (Some(code), _) => format!("{code}: {}", error.message().unwrap_or("(no message)")),
        (None, Some(raw)) => format!("HTTP {} without an error code", raw.status().as_u16()),
        (None, None) => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

impl Location {
    /// Every checkpoint note there: (name, text), names ending in [`SUFFIX`]. An unreadable directory, bucket or
    /// object is an error naming it.
    pub async fn read_notes(&self) -> Result<Vec<(String, String)>> {
        match self {
            Self::Dir(dir) => {
                let cannot = |e: std::io::Error| Error::Unavailable(format!("cannot read {}: {e}", dir.display()));
                let mut notes = Vec::new();
                for entry in std::fs::read_dir(dir).map_err(cannot)?.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.ends_with(SUFFIX) {
                        // A file that is not UTF-8 is kept as text that does not verify (counted as not a checkpoint).
                        let bytes = std::fs::read(entry.path()).map_err(cannot)?;
                        notes.push((name, String::from_utf8_lossy(&bytes).into_owned()));
                    }
                }
                Ok(notes)
            }
            #[cfg(feature = "aws")]
            Self::S3 { bucket, prefix } => read_s3(bucket, prefix).await,
            #[cfg(not(feature = "aws"))]
            Self::S3 { .. } => Err(crate::error::without_aws("an s3:// checkpoint location")),
        }
    }
}

#[cfg(feature = "aws")]
/// ListObjectsV2 (every page) and GetObject for each note under `prefix`.
async fn read_s3(bucket: &str, prefix: &str) -> Result<Vec<(String, String)>> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let client = aws_sdk_s3::Client::from_conf(s3_config(&sdk).build());
    let location = format!("s3://{bucket}/{prefix}");
    let failed = |what: &str, e: String| Error::Unavailable(format!("cannot {what} {location}: {e}"));
    let list_prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    let mut pages = client.list_objects_v2().bucket(bucket).prefix(&list_prefix).into_paginator().send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| failed("list", s3_error(&e)))?;
        for object in page.contents() {
            // Only the prefix's own notes, not those of a deeper "folder".
            if let Some(key) = object.key()
                && let Some(name) = key.strip_prefix(&list_prefix)
                && !name.contains('/')
                && name.ends_with(SUFFIX)
            {
                keys.push((name.to_owned(), key.to_owned()));
            }
        }
    }
    let mut notes = Vec::with_capacity(keys.len());
    for (name, key) in keys {
        let object =
            client.get_object().bucket(bucket).key(&key).send().await.map_err(|e| failed("read", s3_error(&e)))?;
        let body = object.body.collect().await.map_err(|e| failed("read", e.to_string()))?.into_bytes();
        notes.push((name, String::from_utf8_lossy(&body).into_owned()));
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let s3 = |bucket: &str, prefix: &str| Location::S3 { bucket: bucket.into(), prefix: prefix.into() };
        assert_eq!("s3://audit-bkt/replica-a".parse::<Location>().unwrap(), s3("audit-bkt", "replica-a"));
        assert_eq!("s3://audit-bkt/a/b/".parse::<Location>().unwrap(), s3("audit-bkt", "a/b"));
        assert_eq!("s3://audit-bkt".parse::<Location>().unwrap(), s3("audit-bkt", ""));
        assert_eq!("/var/x".parse::<Location>().unwrap(), Location::Dir("/var/x".into()));
        for bad in ["s3://", "s3://A_B/x", "s3://ab/x", ""] {
            assert!(bad.parse::<Location>().is_err(), "{bad}");
        }
        assert_eq!(object_key("", "1-r.note"), "1-r.note");
        assert_eq!(object_key("p/q", "1-r.note"), "p/q/1-r.note");
        assert_eq!(s3("b-1", "p").to_string(), "s3://b-1/p");
    }
}
