//! Writes signed checkpoints of this replica's audit chain heads (see [`crate::audit::checkpoint`]) outside the store
//! (a directory, or an S3 prefix through [`super::checkpoints_s3`]), and a copy into the log itself, whenever the
//! chains moved: once before serving (so a sink that cannot be written stops the start), every
//! `--audit-checkpoint-every` and once more at graceful shutdown. Signed by the CA root (through its signer: a file
//! key, KMS or an HSM), the one key every replica has that the store does not hold, and that every verifier can check
//! with the CA certificate alone.
//!
//! A write that fails is logged and counted (`principald_audit_checkpoints{outcome="failed"}`) and tried again with
//! backoff (5 s, doubling, at most the interval); nothing is lost meanwhile, since the next checkpoint covers the heads
//! as they are then, and the copy in the log is written only after the sink took the checkpoint.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

#[cfg(feature = "aws")]
use super::checkpoints_s3::S3Sink;
use super::wait_for;
use crate::audit::checkpoint::{self, Checkpoint};
use crate::audit::checkpoint_source::Location;
use crate::audit::{ChainHead, Origin, Recorder, kind};
use crate::error::{Error, Result};
use crate::pki::ca::CertificateAuthority;
use crate::store::Store;

pub(super) struct CheckpointWriter {
    pub store: Arc<dyn Store>,
    pub ca: Arc<CertificateAuthority>,
    pub recorder: Recorder,
    pub replica: String,
    /// This process's chains: the SQLite chain, or the DynamoDB chains named `REPLICA/k`.
    pub chains: String,
    sink: Sink,
    /// Checkpoints written, and writes that failed.
    written: Counter,
    failed: Counter,
    /// The heads as they were right after the last checkpoint (its own copy included).
    last: Option<Vec<ChainHead>>,
    /// The time in the last checkpoint's name.
    last_ms: i64,
}

impl CheckpointWriter {
    pub async fn new(
        store: Arc<dyn Store>,
        ca: Arc<CertificateAuthority>,
        recorder: Recorder,
        replica: &str,
        store_config: &crate::store::StoreConfig,
        location: &Location,
        meters: &crate::metrics::CheckpointMeters,
    ) -> Result<Self> {
        let sink = match location {
            Location::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::InvalidArgument(format!("cannot create --audit-checkpoints {}: {e}", dir.display()))
                })?;
                Sink::Dir(dir.clone())
            }
            #[cfg(feature = "aws")]
            Location::S3 { bucket, prefix } => Sink::S3(S3Sink::new(bucket, prefix).await),
            #[cfg(not(feature = "aws"))]
            Location::S3 { .. } => return Err(crate::error::without_aws("--audit-checkpoints s3://")),
        };
        let chains = match store_config {
            crate::store::StoreConfig::Dynamodb(dynamo) => format!("{}/", dynamo.replica),
            crate::store::StoreConfig::Sqlite { .. } => crate::store::sqlite::CHAIN.to_owned(),
        };
        let (written, failed) = (meters.written.clone(), meters.failed.clone());
        Ok(Self {
            store,
            ca,
            recorder,
            replica: replica.to_owned(),
            chains,
            sink,
            written,
            failed,
            last: None,
            last_ms: 0,
        })
    }

    /// The chains this replica writes: its own on DynamoDB (`REPLICA/k`), the one chain of SQLite.
    async fn own_heads(&self) -> Result<Vec<ChainHead>> {
        let heads = self.store.audit_heads().await?;
        Ok(heads.into_iter().filter(|h| h.chain == self.chains || h.chain.starts_with(&self.chains)).collect())
    }

    /// Writes a checkpoint if the chains moved since the last one.
    pub async fn write_once(&mut self) -> Result<()> {
        let heads = self.own_heads().await?;
        if heads.is_empty() || self.last.as_ref() == Some(&heads) {
            return Ok(());
        }
        // Milliseconds, and never the same as the last: a name is written once (a start and a prompt stop included).
        let time_ms = crate::audit::now_ms().max(self.last_ms + 1);
        self.last_ms = time_ms;
        let checkpoint = Checkpoint {
            ca: crate::model::sha256_hex(self.ca.cert_der()),
            replica: self.replica.clone(),
            time: time_ms / 1000,
            heads,
        };
        let signer = self.ca.root().signer().clone();
        let name = checkpoint::file_name(&checkpoint, time_ms);
        let note = tokio::task::spawn_blocking(move || checkpoint.sign(signer.spki_der(), |m| signer.sign(m)))
            .await
            .map_err(|e| Error::internal("checkpoint", e))??;
        let place = match self.sink.put(&name, &note).await {
            Ok(place) => place,
            Err(e) => {
                self.failed.inc();
                return Err(e);
            }
        };
        self.written.inc();
        let details = serde_json::json!({ "file": name, "note": note });
        let origin = Origin::system("audit-checkpoint");
        let copy = self.recorder.event(&origin, kind::AUDIT_CHECKPOINT, &self.replica, details);
        self.store.append_audit(&copy.into_iter().collect::<Vec<_>>()).await?;
        self.last = Some(self.own_heads().await?);
        tracing::debug!(checkpoint = %place, "audit checkpoint written");
        Ok(())
    }

    /// Writes checkpoints every `every` until shutdown; returns itself for the last one after the server drained.
    /// After a failed write the next try comes sooner: 5 s, then twice as long each time, at most `every`.
    pub async fn run(mut self, every: Duration, shutdown: watch::Receiver<bool>) -> Self {
        const FIRST_RETRY: Duration = Duration::from_secs(5);
        let mut wait = every;
        loop {
            tokio::select! {
                _ = wait_for(shutdown.clone()) => return self,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = match self.write_once().await {
                Ok(()) => every,
                Err(error) => {
                    let retry = if wait >= every { FIRST_RETRY } else { wait * 2 }.min(every);
                    tracing::warn!(%error, retry_in_seconds = retry.as_secs(), "cannot write an audit checkpoint");
                    retry
                }
            };
        }
    }
}

/// Where checkpoints go: a directory (each a new file, fsynced) or an S3 prefix (each a new object).
enum Sink {
    Dir(PathBuf),
    #[cfg(feature = "aws")]
    S3(S3Sink),
}

impl Sink {
    /// Writes the note under `name` (never replacing one); where it went.
    async fn put(&self, name: &str, note: &str) -> Result<String> {
        match self {
            Self::Dir(dir) => {
                let path = dir.join(name);
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .and_then(|mut file| file.write_all(note.as_bytes()).and_then(|()| file.sync_all()));
                written.map_err(|e| {
                    Error::Unavailable(format!("cannot write audit checkpoint {}: {e}", path.display()))
                })?;
                Ok(path.display().to_string())
            }
            #[cfg(feature = "aws")]
            Self::S3(s3) => s3.put(name, note).await.map(|()| s3.url(name)),
        }
    }
}
