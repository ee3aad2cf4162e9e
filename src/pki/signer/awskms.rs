//! A root key in AWS KMS (ECC_NIST_P256, SIGN_VERIFY). The key never leaves KMS; principald asks it for the public
//! key once and for a signature per CA certificate, intermediate or CRL (ECDSA_SHA_256; MessageType RAW up to 4096
//! bytes, KMS hashes; larger messages are hashed here and sent as DIGEST).
//!
//! Beside the root lives its derivation key (HMAC_256, GENERATE_VERIFY_MAC), named by an alias derived from the
//! root's ([`companion_alias`]): GenerateMac with it is `Signer::derive_secret`. Like the root, it never leaves KMS.
//!
//! Credentials, region and endpoint come from the standard AWS environment (task role, `AWS_REGION`,
//! `AWS_ENDPOINT_URL_KMS` for tests against a local KMS). Calls run on a small runtime of their own, so they block
//! only the thread that asked: callers are on a blocking thread already.

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    KeyMetadata, KeySpec, KeyState, KeyUsageType, MacAlgorithmSpec, MessageType, SigningAlgorithmSpec,
};

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
    /// The derivation key beside the root, resolved once at open.
    derive: Companion,
}

/// The root's derivation key (HMAC_256, GENERATE_VERIFY_MAC) as found at open.
enum Companion {
    /// Its key ARN.
    Ready(String),
    /// KMS does not know the alias. `creatable`: `principald bootstrap` with the root's URI would create it.
    Missing { alias: String, creatable: bool },
    /// Opening without `create` met another error (access denied, wrong key type, KMS unreachable): the root still
    /// signs, derivation answers this error.
    Unusable(Error),
}

/// How long one KMS call made while resolving keys or deriving may take before it counts as unavailable.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl KmsKey {
    /// Adopts `key_id`, or with `create` and an `alias/NAME` that does not exist yet, creates a key and the alias. Two
    /// bootstraps racing on one alias end with one key: the loser of CreateAlias schedules its own key for deletion.
    /// The derivation key ([`companion_alias`]) is adopted when it exists and, with `create`, created when missing
    /// (the same race rule); without `create` a missing or unusable one does not stop the root from opening.
    pub fn open(key_id: &str, region: Option<&str>, endpoint: Option<&str>, create: bool) -> Result<Self> {
        off_runtime(|| Self::open_here(key_id, region, endpoint, create))
    }

    fn open_here(key_id: &str, region: Option<&str>, endpoint: Option<&str>, create: bool) -> Result<Self> {
        let runtime = runtime()?;
        let client = runtime.block_on(async {
            // Every call (Sign and GetPublicKey included) is bounded: a KMS that stops answering makes signing
            // unavailable within CALL_TIMEOUT instead of holding a blocking thread for good.
            let timeouts = aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(2))
                .operation_attempt_timeout(std::time::Duration::from_secs(4))
                .operation_timeout(CALL_TIMEOUT)
                .build();
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
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
        let alias = companion_alias(key_id, &arn);
        let derive = match runtime.block_on(companion(&client, &alias, create)) {
            Ok(found) => found,
            // Bootstrap is where the derivation key gets set up: it must not end without one.
            Err(e) if create => return Err(e),
            Err(e) => {
                tracing::warn!(key = key_id, alias, error = %e, "the KMS derivation key cannot be used");
                Companion::Unusable(e)
            }
        };
        if let Companion::Missing { .. } = derive {
            tracing::warn!(key = key_id, alias, "no KMS derivation key: intermediates' keys cannot be re-derived");
        }
        Ok(Self { runtime, client, key_id: key_id.to_owned(), arn, spki, point, derive })
    }
}

/// The alias of a root's derivation key. `alias/NAME` -> `alias/NAME-derive`; an alias ARN -> the same ARN with
/// `-derive` appended (its account and region); a key id or key ARN -> `alias/principald-derive-ID`, with the root's
/// key id taken from `root_arn` (the ARN KMS resolved it to), in the caller's account and region. terraform/kms.tf
/// names its `ca_derive` key by the first rule.
pub fn companion_alias(key_id: &str, root_arn: &str) -> String {
    let named_by_alias = key_id.starts_with("alias/")
        || (key_id.starts_with("arn:") && key_id.split(':').nth(5).is_some_and(|r| r.starts_with("alias/")));
    if named_by_alias {
        return format!("{key_id}-derive");
    }
    let id = root_arn.rsplit('/').next().unwrap_or(root_arn);
    format!("alias/principald-derive-{id}")
}

async fn companion(client: &Client, alias: &str, create: bool) -> Result<Companion> {
    // CreateAlias takes a name in the caller's account: an alias ARN's derivation key is made by Terraform or by hand.
    let creatable = alias.starts_with("alias/");
    match describe(client, alias, KeyUsageType::GenerateVerifyMac).await? {
        Some(meta) => {
            // moto leaves KeySpec out; KMS always sets it.
            if meta.key_spec().is_some_and(|s| *s != KeySpec::Hmac256) {
                return Err(Error::FailedPrecondition(format!("KMS key {alias} is not an HMAC_256 key")));
            }
            Ok(Companion::Ready(arn_of(&meta)))
        }
        None if create && creatable => {
            let description = "principald CA derivation secret (intermediates' keys)";
            Ok(Companion::Ready(
                create_aliased(client, alias, KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac, description).await?,
            ))
        }
        None => Ok(Companion::Missing { alias: alias.to_owned(), creatable }),
    }
}

async fn resolve(client: &Client, key_id: &str, create: bool) -> Result<String> {
    match describe(client, key_id, KeyUsageType::SignVerify).await {
        Ok(Some(meta)) => return Ok(arn_of(&meta)),
        Ok(None) if create && key_id.starts_with("alias/") => {}
        Ok(None) => {
            return Err(Error::FailedPrecondition(format!(
                "KMS key {key_id} does not exist (bootstrap creates keys named alias/NAME)"
            )));
        }
        Err(e) => return Err(e),
    }
    create_aliased(client, key_id, KeySpec::EccNistP256, KeyUsageType::SignVerify, "principald CA root key").await
}

/// Creates a key and names it `alias`. Of several processes doing this at once, the one whose CreateAlias succeeds
/// wins; the others schedule their own key for deletion and use the winner's.
async fn create_aliased(
    client: &Client,
    alias: &str,
    spec: KeySpec,
    usage: KeyUsageType,
    description: &str,
) -> Result<String> {
    let created = within(
        "CreateKey",
        alias,
        client.create_key().key_spec(spec).key_usage(usage.clone()).description(description).send(),
    )
    .await?
    .map_err(|e| unavailable(alias, "CreateKey", e))?;
    let new_arn = created
        .key_metadata()
        .map(arn_of)
        .ok_or_else(|| Error::internal("KMS CreateKey", "no key metadata in the answer"))?;
    match within("CreateAlias", alias, client.create_alias().alias_name(alias).target_key_id(&new_arn).send()).await? {
        Ok(_) => {
            tracing::info!(alias, key = %new_arn, "created the {description} in KMS");
            Ok(new_arn)
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => {
            // Another bootstrap created the alias first: use its key, retire ours.
            let retire = client.schedule_key_deletion().key_id(&new_arn).pending_window_in_days(7).send();
            let _ = within("ScheduleKeyDeletion", alias, retire).await;
            describe(client, alias, usage)
                .await?
                .map(|meta| arn_of(&meta))
                .ok_or_else(|| Error::Unavailable(format!("KMS alias {alias} vanished while creating it")))
        }
        Err(e) => Err(unavailable(alias, "CreateAlias", e)),
    }
}

/// The key's metadata if it exists, is enabled and has `usage`; `None` if KMS does not know it.
async fn describe(client: &Client, key_id: &str, usage: KeyUsageType) -> Result<Option<KeyMetadata>> {
    let answer = match within("DescribeKey", key_id, client.describe_key().key_id(key_id).send()).await? {
        Ok(answer) => answer,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => return Ok(None),
        Err(e) => return Err(unavailable(key_id, "DescribeKey", e)),
    };
    let meta = answer.key_metadata().ok_or_else(|| Error::internal("KMS DescribeKey", "no key metadata"))?;
    if meta.key_usage() != Some(&usage) {
        return Err(Error::FailedPrecondition(format!("KMS key {key_id} is not a {} key", usage.as_str())));
    }
    if meta.key_state().is_some_and(|s| *s != KeyState::Enabled) || !meta.enabled() {
        return Err(Error::FailedPrecondition(format!("KMS key {key_id} is not enabled")));
    }
    Ok(Some(meta.clone()))
}

fn arn_of(meta: &KeyMetadata) -> String {
    meta.arn().unwrap_or(meta.key_id()).to_owned()
}

/// `call` with [`CALL_TIMEOUT`]: a KMS that does not answer is unavailable, not a thread blocked for good. Must run
/// inside the KMS runtime (the timer is that runtime's).
async fn within<T>(call: &str, key_id: &str, request: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, request)
        .await
        .map_err(|_| Error::Unavailable(format!("KMS {call} on {key_id}: no answer in {} s", CALL_TIMEOUT.as_secs())))
}

fn unavailable(key_id: &str, call: &str, e: impl std::error::Error) -> Error {
    Error::Unavailable(format!("KMS {call} on {key_id}: {}", aws_sdk_kms::error::DisplayErrorContext(e)))
}

/// The same error again (an [`Error`] is not `Clone`): a derivation key found unusable at open answers every call.
fn again(e: &Error) -> Error {
    match e {
        Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        other => Error::Internal(other.to_string()),
    }
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
        // KMS takes at most 4096 bytes of RAW message; anything larger (a CRL of a few hundred entries) is hashed here
        // and sent as a DIGEST, which KMS signs exactly as it would have signed the message's hash.
        let (message, message_type) = if message.len() > MAX_RAW_MESSAGE {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
            (digest.as_ref().to_vec(), MessageType::Digest)
        } else {
            (message.to_vec(), MessageType::Raw)
        };
        let request = self
            .client
            .sign()
            .key_id(&self.arn)
            .message(Blob::new(message))
            .message_type(message_type)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send();
        let answer = off_runtime(|| self.runtime.block_on(request).map_err(|e| unavailable(&self.key_id, "Sign", e)))?;
        answer
            .signature()
            .map(|s| s.as_ref().to_vec())
            .ok_or_else(|| Error::internal("KMS Sign", "no signature in the answer"))
    }

    fn derive_secret(&self, context: &[u8]) -> Result<[u8; 32]> {
        super::derive::check_context(context)?;
        let arn = match &self.derive {
            Companion::Ready(arn) => arn,
            Companion::Missing { alias, creatable } => {
                let how = if *creatable {
                    "create it by running `principald bootstrap` with the same key URI, or with terraform \
                     (aws_kms_key.ca_derive)"
                } else {
                    "create it with terraform (aws_kms_key.ca_derive), or with `aws kms create-key --key-spec \
                     HMAC_256 --key-usage GENERATE_VERIFY_MAC` and `aws kms create-alias`"
                };
                return Err(Error::FailedPrecondition(format!(
                    "the CA key awskms:{} has no derivation key: the KMS alias {alias} (an HMAC_256 key) does not \
                     exist; {how}, then restart principald",
                    self.key_id
                )));
            }
            Companion::Unusable(e) => return Err(again(e)),
        };
        let request = self
            .client
            .generate_mac()
            .key_id(arn)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(context))
            .send();
        let answer = off_runtime(|| {
            self.runtime
                .block_on(within("GenerateMac", &self.key_id, request))?
                .map_err(|e| unavailable(&self.key_id, "GenerateMac", e))
        })?;
        answer
            .mac()
            .and_then(|mac| <[u8; 32]>::try_from(mac.as_ref()).ok())
            .ok_or_else(|| Error::internal("KMS GenerateMac", "no 32-byte MAC in the answer"))
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

#[cfg(test)]
mod tests {
    use super::companion_alias;

    #[test]
    fn the_derivation_key_alias_follows_the_roots_name() {
        let root = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(companion_alias("alias/principald-ca", root), "alias/principald-ca-derive");
        assert_eq!(
            companion_alias("arn:aws:kms:eu-west-1:111122223333:alias/principald-ca", root),
            "arn:aws:kms:eu-west-1:111122223333:alias/principald-ca-derive"
        );
        let by_id = "alias/principald-derive-1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(companion_alias(root, root), by_id);
        assert_eq!(companion_alias("1234abcd-12ab-34cd-56ef-1234567890ab", root), by_id);
        assert_eq!(
            companion_alias("1234abcd-12ab-34cd-56ef-1234567890ab", "1234abcd-12ab-34cd-56ef-1234567890ab"),
            by_id
        );
    }
}
