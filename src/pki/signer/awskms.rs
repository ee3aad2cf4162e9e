//! A root key in AWS KMS (ECC_NIST_P256, SIGN_VERIFY). The key never leaves KMS; principald asks it for the public
//! key once and for a signature per CA certificate or intermediate (MessageType RAW, ECDSA_SHA_256: KMS hashes).
//!
//! Credentials, region and endpoint come from the standard AWS environment (task role, `AWS_REGION`,
//! `AWS_ENDPOINT_URL_KMS` for tests against a local KMS). Calls run on a small runtime of their own, so they block
//! only the thread that asked: callers are on a blocking thread already.

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, MessageType, SigningAlgorithmSpec};

use super::Signer;
use crate::error::{Error, Result};

/// KMS signs at most this many bytes of RAW message; a certificate's to-be-signed part is far smaller.
const MAX_RAW_MESSAGE: usize = 4096;

/// KMS calls run here: one small runtime for the process, never dropped (a runtime cannot be dropped from async code,
/// where a key may well be dropped).
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("kms")
        .enable_all()
        .build()
        .map_err(|e| Error::internal("KMS runtime", e))?;
    Ok(RUNTIME.get_or_init(|| built))
}

pub struct KmsKey {
    runtime: &'static tokio::runtime::Runtime,
    client: Client,
    key_id: String,
    arn: String,
    spki: Vec<u8>,
    point: Vec<u8>,
}

impl KmsKey {
    /// Adopts `key_id`, or with `create` and an `alias/NAME` that does not exist yet, creates a key and the alias. Two
    /// bootstraps racing on one alias end with one key: the loser of CreateAlias schedules its own key for deletion.
    pub fn open(key_id: &str, region: Option<&str>, endpoint: Option<&str>, create: bool) -> Result<Self> {
        off_runtime(|| Self::open_here(key_id, region, endpoint, create))
    }

    fn open_here(key_id: &str, region: Option<&str>, endpoint: Option<&str>, create: bool) -> Result<Self> {
        let runtime = runtime()?;
        let client = runtime.block_on(async {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(region) = region {
                loader = loader.region(aws_config::Region::new(region.to_owned()));
            }
            if let Some(endpoint) = endpoint {
                loader = loader.endpoint_url(endpoint);
            }
            Client::new(&loader.load().await)
        });
        let arn = runtime.block_on(resolve(&client, key_id, create))?;
        let public = runtime
            .block_on(client.get_public_key().key_id(&arn).send())
            .map_err(|e| unavailable(key_id, "GetPublicKey", e))?;
        let spki = public
            .public_key()
            .ok_or_else(|| Error::internal("KMS GetPublicKey", "no public key in the answer"))?
            .as_ref()
            .to_vec();
        let point = super::point_of_spki(&spki)?;
        Ok(Self { runtime, client, key_id: key_id.to_owned(), arn, spki, point })
    }
}

async fn resolve(client: &Client, key_id: &str, create: bool) -> Result<String> {
    match describe(client, key_id).await {
        Ok(Some(arn)) => return Ok(arn),
        Ok(None) if create && key_id.starts_with("alias/") => {}
        Ok(None) => {
            return Err(Error::FailedPrecondition(format!(
                "KMS key {key_id} does not exist (bootstrap creates keys named alias/NAME)"
            )));
        }
        Err(e) => return Err(e),
    }
    let created = client
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .description("principald CA root key")
        .send()
        .await
        .map_err(|e| unavailable(key_id, "CreateKey", e))?;
    let new_arn = created
        .key_metadata()
        .map(|m| m.arn().unwrap_or(m.key_id()).to_owned())
        .ok_or_else(|| Error::internal("KMS CreateKey", "no key metadata in the answer"))?;
    match client.create_alias().alias_name(key_id).target_key_id(&new_arn).send().await {
        Ok(_) => {
            tracing::info!(alias = key_id, key = %new_arn, "created the CA root key in KMS");
            Ok(new_arn)
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => {
            // Another bootstrap created the alias first: use its key, retire ours.
            let _ = client.schedule_key_deletion().key_id(&new_arn).pending_window_in_days(7).send().await;
            describe(client, key_id)
                .await?
                .ok_or_else(|| Error::Unavailable(format!("KMS alias {key_id} vanished while creating it")))
        }
        Err(e) => Err(unavailable(key_id, "CreateAlias", e)),
    }
}

/// The key's ARN if it exists, is enabled and signs; `None` if KMS does not know it.
async fn describe(client: &Client, key_id: &str) -> Result<Option<String>> {
    let answer = match client.describe_key().key_id(key_id).send().await {
        Ok(answer) => answer,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => return Ok(None),
        Err(e) => return Err(unavailable(key_id, "DescribeKey", e)),
    };
    let meta = answer.key_metadata().ok_or_else(|| Error::internal("KMS DescribeKey", "no key metadata"))?;
    if meta.key_usage() != Some(&KeyUsageType::SignVerify) {
        return Err(Error::FailedPrecondition(format!("KMS key {key_id} is not a SIGN_VERIFY key")));
    }
    if meta.key_state().is_some_and(|s| *s != KeyState::Enabled) || !meta.enabled() {
        return Err(Error::FailedPrecondition(format!("KMS key {key_id} is not enabled")));
    }
    Ok(Some(meta.arn().unwrap_or(meta.key_id()).to_owned()))
}

fn unavailable(key_id: &str, call: &str, e: impl std::error::Error) -> Error {
    Error::Unavailable(format!("KMS {call} on {key_id}: {}", aws_sdk_kms::error::DisplayErrorContext(e)))
}

/// Runs `f` (which blocks on this key's own runtime) on a thread of its own when the caller is inside an async
/// runtime, where blocking on another runtime is not allowed. Root signatures are rare (a few per day), so a thread
/// per call costs nothing that matters.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| scope.spawn(f).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

impl Signer for KmsKey {
    fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn public_point(&self) -> &[u8] {
        &self.point
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        if message.len() > MAX_RAW_MESSAGE {
            return Err(Error::internal("KMS Sign", format!("message of {} bytes exceeds 4096", message.len())));
        }
        let request = self
            .client
            .sign()
            .key_id(&self.arn)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send();
        let answer = off_runtime(|| self.runtime.block_on(request).map_err(|e| unavailable(&self.key_id, "Sign", e)))?;
        answer
            .signature()
            .map(|s| s.as_ref().to_vec())
            .ok_or_else(|| Error::internal("KMS Sign", "no signature in the answer"))
    }

    fn describe(&self) -> String {
        format!("awskms:{}", self.key_id)
    }
}

impl std::fmt::Debug for KmsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKey").field("key", &self.arn).finish_non_exhaustive()
    }
}
