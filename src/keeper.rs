//! A serving replica's issuing side: at start it establishes the root (from the data dir, or adopted from the store
//! when the key lives in KMS or an HSM), has the root sign an in-memory intermediate for this replica and records it
//! in the store before it signs anything; then [`Keeper`] replaces the intermediate at 2/3 of its signing window, or
//! at once when an operator revokes it, and keeps the list of every replica's live intermediates that TLS uses to
//! complete leaf-only client chains.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

use crate::audit::{AuditEvent, Origin, Recorder, kind};
use crate::auth::Authenticator;
use crate::config::{DEFAULT_CERT_VALIDITY, ServeConfig};
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::model::IntermediateRecord;
use crate::model::now;
use crate::pki::ca::CertificateAuthority;
use crate::pki::intermediate::IntermediatePolicy;
use crate::store::Store;
use crate::tls::KnownIntermediates;

/// How often the keeper checks whether its intermediate is due or revoked (in memory: the revoked set is kept current
/// by the revocation follower).
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How often the list of every replica's intermediates is re-read (a Scan of the small meta table on DynamoDB), and
/// long-expired records are pruned.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Intermediate records are kept as long as the certificates they signed: this long after they expire.
const RETENTION: time::Duration = crate::store::EXPIRED_RETENTION;

/// The replica's CA, with a first intermediate recorded in the store; what it signs names `status` (CRLs, OCSP).
pub async fn start(
    config: &ServeConfig,
    store: &Arc<dyn Store>,
    dir: &DataDir,
    status: crate::pki::crl::StatusUrls,
) -> Result<Arc<CertificateAuthority>> {
    let (root, _) = crate::bootstrap::establish_root(
        dir,
        &config.bootstrap.ca_key,
        store.as_ref(),
        false,
        false,
        config.intermediates,
    )
    .await?;
    let root = root.publishing_status_at(Some(status));
    // The key must sign with the key its certificate names, before anything it signs is trusted (a wrong key ARN or
    // token object, a token that garbles signatures).
    let signer = root.signer().clone();
    tokio::task::spawn_blocking(move || crate::pki::signer::self_test(signer.as_ref()))
        .await
        .map_err(|e| Error::internal("signer self-test", e))??;
    let longest_leaf = config.cert_validity.values().copied().chain([DEFAULT_CERT_VALIDITY]).max().unwrap_or_default();
    let policy = IntermediatePolicy {
        lifetime: time::Duration::try_from(config.intermediate_lifetime).map_err(|e| Error::internal("lifetime", e))?,
        longest_leaf: time::Duration::try_from(longest_leaf).map_err(|e| Error::internal("validity", e))?,
    };
    if !config.intermediates {
        return Ok(Arc::new(CertificateAuthority::direct(root)));
    }
    let replica = config.replica_id.clone();
    let ca = tokio::task::spawn_blocking(move || CertificateAuthority::with_intermediate(root, &replica, policy))
        .await
        .map_err(|e| Error::internal("sign intermediate", e))??;
    if let Some(record) = &ca.issuing().record {
        let recorder = Recorder::new(&config.replica_id, config.accountability.audit);
        store.record_intermediate(record, intermediate_event(&recorder, record).as_ref()).await?;
    }
    Ok(Arc::new(ca))
}

/// Rotates this replica's intermediate and refreshes the intermediates TLS knows.
pub struct Keeper {
    pub ca: Arc<CertificateAuthority>,
    pub store: Arc<dyn Store>,
    pub authenticator: Arc<Authenticator>,
    pub known: Arc<KnownIntermediates>,
    pub audit: Recorder,
}

/// Every unrevoked, unexpired intermediate the store records (any replica's): what completes a leaf-only client
/// chain, here and in a resource server.
pub async fn live_intermediates(store: &dyn crate::store::Store) -> Result<Vec<CertificateDer<'static>>> {
    let at = now();
    let live = store.list_intermediates().await?.into_iter().filter(|i| i.revoked_at.is_none() && i.not_after > at);
    Ok(live.map(|i| CertificateDer::from(i.der)).collect())
}

impl Keeper {
    /// Keeps the intermediate fresh until `shutdown` (call [`refresh`](Self::refresh) once before serving), and prunes
    /// expired intermediates and token keys. A CA whose root signs leaves itself only prunes.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let keeps_intermediate = self.ca.issuing().record.is_some();
        // The server refreshed once before serving; the first prune comes with the next refresh.
        let mut refreshed = std::time::Instant::now();
        loop {
            if refreshed.elapsed() >= REFRESH_EVERY {
                if keeps_intermediate {
                    match self.refresh().await {
                        Ok(()) => refreshed = std::time::Instant::now(),
                        Err(error) => tracing::warn!(%error, "cannot refresh the issuing intermediates; will retry"),
                    }
                } else {
                    refreshed = std::time::Instant::now();
                }
                match self.store.forget_expired(now() - RETENTION).await {
                    Ok(0) => {}
                    Ok(pruned) => {
                        tracing::info!(pruned, "forgot intermediates and token keys expired past retention")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot prune expired intermediates and token keys; will retry")
                    }
                }
            }
            if keeps_intermediate && let Err(error) = self.rotate_if_due().await {
                tracing::warn!(%error, "cannot replace the issuing intermediate; the current one stays in use");
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = self.ca.rotation_requested() => {}
            }
        }
    }

    /// Every replica's unexpired, unrevoked intermediate, for completing leaf-only client chains.
    pub async fn refresh(&self) -> Result<()> {
        let mut ders = live_intermediates(self.store.as_ref()).await?;
        if let Some(own) = &self.ca.issuing().record
            && !ders.iter().any(|d| d.as_ref() == own.der.as_slice())
        {
            ders.push(CertificateDer::from(own.der.clone()));
        }
        self.known.set(ders);
        Ok(())
    }

    /// Replaces the intermediate when due or revoked: the root signs a new one (off the runtime), the store records
    /// it, then it is installed.
    pub async fn rotate_if_due(&self) -> Result<bool> {
        if !self.ca.rotation_due(now(), |fp| self.authenticator.issuer_revoked(fp)) {
            return Ok(false);
        }
        let ca = self.ca.clone();
        let next = tokio::task::spawn_blocking(move || ca.next_intermediate())
            .await
            .map_err(|e| Error::internal("sign intermediate", e))??;
        if let Some(record) = &next.record {
            self.store.record_intermediate(record, intermediate_event(&self.audit, record).as_ref()).await?;
        }
        // The server certificate is the root's, not the intermediate's: it stays.
        self.ca.install(next);
        self.refresh().await?;
        Ok(true)
    }
}

/// The audit event of a replica starting to sign with `record`.
fn intermediate_event(recorder: &Recorder, record: &IntermediateRecord) -> Option<AuditEvent> {
    let details = serde_json::json!({
        "replica": record.replica,
        "not_before": record.not_before.unix_timestamp(),
        "not_after": record.not_after.unix_timestamp(),
    });
    recorder.event(&Origin::system("intermediate-rotation"), kind::INTERMEDIATE_CREATED, &record.fingerprint, details)
}
