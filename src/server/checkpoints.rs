//! Writes signed checkpoints of this replica's audit chain heads (see [`crate::audit::checkpoint`]) to a directory
//! outside the store, and a copy into the log itself, whenever the chains moved: every `--audit-checkpoint-every` and
//! once more at graceful shutdown. Signed by the CA root (through its signer: a file key, KMS or an HSM), the one key
//! every replica has that the store does not hold, and that every verifier can check with the CA certificate alone.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::wait_for;
use crate::audit::checkpoint::{self, Checkpoint};
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
    pub dir: PathBuf,
    /// The heads as they were right after the last checkpoint (its own copy included).
    last: Option<Vec<ChainHead>>,
}

impl CheckpointWriter {
    pub fn new(
        store: Arc<dyn Store>,
        ca: Arc<CertificateAuthority>,
        recorder: Recorder,
        replica: &str,
        store_config: &crate::store::StoreConfig,
        dir: PathBuf,
    ) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::InvalidArgument(format!("cannot create --audit-checkpoints {}: {e}", dir.display())))?;
        let chains = match store_config {
            crate::store::StoreConfig::Dynamodb(dynamo) => format!("{}/", dynamo.replica),
            crate::store::StoreConfig::Sqlite { .. } => crate::store::sqlite::CHAIN.to_owned(),
        };
        Ok(Self { store, ca, recorder, replica: replica.to_owned(), chains, dir, last: None })
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
        let time_ms = crate::model::now().unix_timestamp_nanos() as i64 / 1_000_000;
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
        let path = self.dir.join(&name);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut file| file.write_all(note.as_bytes()).and_then(|()| file.sync_all()));
        written.map_err(|e| Error::Unavailable(format!("cannot write audit checkpoint {}: {e}", path.display())))?;
        let details = serde_json::json!({ "file": name, "note": note });
        let origin = Origin::system("audit-checkpoint");
        let copy = self.recorder.event(&origin, kind::AUDIT_CHECKPOINT, &self.replica, details);
        self.store.append_audit(&copy.into_iter().collect::<Vec<_>>()).await?;
        self.last = Some(self.own_heads().await?);
        tracing::debug!(file = %path.display(), "audit checkpoint written");
        Ok(())
    }

    /// Writes checkpoints every `every` until shutdown; returns itself for the last one after the server drained.
    pub async fn run(mut self, every: Duration, shutdown: watch::Receiver<bool>) -> Self {
        loop {
            tokio::select! {
                _ = wait_for(shutdown.clone()) => return self,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(error) = self.write_once().await {
                tracing::warn!(%error, "cannot write an audit checkpoint; will retry");
            }
        }
    }
}
