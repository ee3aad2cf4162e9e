//! Where the CA's root key lives and how replicas sign with it.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::error::Error;
use crate::pki::signer::KeyUri;

/// The default signing window of a replica's in-memory issuing intermediate.
pub const DEFAULT_INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Args, Debug, Clone)]
pub struct CaArgs {
    /// The CA's root key: file:PATH (default DATA_DIR/ca.key), awskms:alias/NAME or awskms:ARN,
    /// pkcs11:token=LABEL;object=LABEL?pin-source=file:PATH (RFC 7512).
    #[arg(long, env = "PRINCIPALD_CA_KEY")]
    pub ca_key: Option<String>,
    /// AWS KMS endpoint override for an awskms: key (a local KMS, a VPC endpoint); AWS_ENDPOINT_URL_KMS works too.
    #[arg(long, env = "PRINCIPALD_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// Sign leaves through a per-replica in-memory intermediate (auto: when the CA key is in KMS or an HSM). A root
    /// bootstrapped without them has path length 0 and always signs leaves itself.
    #[arg(long, env = "PRINCIPALD_INTERMEDIATES", value_enum, default_value_t = IntermediateMode::Auto)]
    pub intermediates: IntermediateMode,
}

impl CaArgs {
    pub fn validate(&self, data_dir: &std::path::Path) -> Result<KeyUri, Error> {
        let mut uri = match &self.ca_key {
            Some(uri) => uri.parse()?,
            None => KeyUri::File(crate::datadir::DataDir::new(data_dir).ca_key()),
        };
        if let (KeyUri::AwsKms { endpoint: endpoint @ None, .. }, Some(flag)) = (&mut uri, &self.kms_endpoint) {
            if !flag.starts_with("http://") && !flag.starts_with("https://") {
                return Err(Error::InvalidArgument(format!("invalid --kms-endpoint {flag:?}: an http(s) URL")));
            }
            *endpoint = Some(flag.clone());
        }
        Ok(uri)
    }
}

/// Whether leaves are signed by a per-replica in-memory intermediate or by the root key itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IntermediateMode {
    /// Intermediates when the root key is in KMS or an HSM (signing speed and availability must not depend on it);
    /// the root signs directly when it is a local file.
    Auto,
    Always,
    Never,
}

#[derive(Args, Debug, Clone)]
pub struct ReplicaArgs {
    /// This replica's name in the intermediates it signs with (default: the host name).
    #[arg(long, env = "PRINCIPALD_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// How long one in-memory issuing intermediate signs before the root replaces it (at 2/3 of this).
    #[arg(long, env = "PRINCIPALD_INTERMEDIATE_LIFETIME", default_value = "24h")]
    pub intermediate_lifetime: String,
    /// How often the root key (KMS, HSM) and the current intermediate sign a test message for readiness; /readyz
    /// answers 503 while the last test failed.
    #[arg(long, env = "PRINCIPALD_SIGNER_CHECK_EVERY", default_value = "30s")]
    pub signer_check_every: String,
}

impl CaArgs {
    pub fn use_intermediates(&self, key: &KeyUri) -> bool {
        match self.intermediates {
            IntermediateMode::Auto => !matches!(key, KeyUri::File(_)),
            IntermediateMode::Always => true,
            IntermediateMode::Never => false,
        }
    }
}

impl ReplicaArgs {
    pub fn replica_id(&self) -> Result<String, Error> {
        let id = match &self.replica_id {
            Some(id) => id.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "replica".into()),
        };
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(Error::InvalidArgument(format!(
                "invalid --replica-id {id:?}: 1-64 characters from A-Z a-z 0-9 - _ ."
            )));
        }
        Ok(id)
    }

    pub fn intermediate_lifetime(&self) -> Result<Duration, Error> {
        let lifetime =
            crate::model::duration::parse_duration_flag("--intermediate-lifetime", &self.intermediate_lifetime)?;
        if lifetime < Duration::from_secs(600) || lifetime > Duration::from_secs(90 * 24 * 3600) {
            return Err(Error::InvalidArgument("--intermediate-lifetime must be between 10m and 90d".into()));
        }
        Ok(lifetime)
    }

    pub fn signer_check_every(&self) -> Result<Duration, Error> {
        let every = crate::model::duration::parse_duration_flag("--signer-check-every", &self.signer_check_every)?;
        if every < Duration::from_secs(1) || every > Duration::from_secs(3600) {
            return Err(Error::InvalidArgument("--signer-check-every must be between 1s and 1h".into()));
        }
        Ok(every)
    }
}
