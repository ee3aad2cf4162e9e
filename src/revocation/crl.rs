//! Publishing CRLs: each replica builds and signs one CRL per partition and issuer (the root, and every derivable
//! replica intermediate, each signing its own), keeps them in memory and serves them on the PKI listener
//! (`/crl/P.crl` for the root, `/crl/ISSUER/P.crl` for an intermediate) and through the GetCrl RPC (the root's).
//!
//! A CRL lists its issuer's revoked, unexpired certificates, including those voided by a principal's revocation
//! floor (the stores mark them revoked: suspension, deletion, key compromise) and, for the root, the revoked replica
//! intermediates. It is re-signed when its content changes (checked whenever the revocation epoch moves, at most once
//! a second) and at half its validity, so it never expires while a replica runs; one CRL failing to sign does not
//! stop the others. Its CRL number is `epoch * 2^32 + signing time in seconds`: it grows with every revocation and
//! with every re-signing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use super::issuers::{Issuer, Issuers};
use crate::error::{Error, Result};
use crate::model::{RevocationReason, Serial, now, sha256_hex};
use crate::pki::crl::{self, PARTITIONS, RevokedEntry};
use crate::store::Store;

/// How often the epoch is checked for new revocations.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the issuers are re-read when nothing else happens.
const ISSUERS_EVERY: Duration = Duration::from_secs(60);

/// One signed CRL.
#[derive(Debug)]
pub struct PublishedCrl {
    pub partition: u8,
    pub der: Vec<u8>,
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub url: String,
    /// How many certificates it lists.
    pub entries: usize,
    /// SHA-256 over what it lists: decides whether a new epoch changed this partition.
    digest: String,
}

/// A CRL's place: the issuer's URL segment ("" for the root) and the partition.
type Place = (String, u8);

/// The CRLs of this replica.
pub struct CrlPublisher {
    store: Arc<dyn Store>,
    issuers: Arc<Issuers>,
    base: String,
    validity: time::Duration,
    published: RwLock<HashMap<Place, Arc<PublishedCrl>>>,
}

impl CrlPublisher {
    /// `None` when the CA does not publish revocation status (it has no status URLs).
    pub fn new(
        store: Arc<dyn Store>,
        issuers: Arc<Issuers>,
        base: Option<String>,
        validity: Duration,
    ) -> Option<Arc<Self>> {
        let base = base?;
        let validity = time::Duration::try_from(validity).unwrap_or(time::Duration::HOUR);
        Some(Arc::new(Self { store, issuers, base, validity, published: Default::default() }))
    }

    /// The root's current CRL of `partition`.
    pub fn get(&self, partition: u8) -> Option<Arc<PublishedCrl>> {
        self.get_for("", partition)
    }

    /// The current CRL of `partition` of the issuer whose URL segment is `issuer` ("" = the root).
    pub fn get_for(&self, issuer: &str, partition: u8) -> Option<Arc<PublishedCrl>> {
        self.published.read().unwrap_or_else(|p| p.into_inner()).get(&(issuer.to_owned(), partition)).cloned()
    }

    /// Every CRL currently published (for metrics: the soonest next update).
    pub fn all(&self) -> Vec<Arc<PublishedCrl>> {
        self.published.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Re-signs every CRL whose content changed since it was signed, or which is past half its validity (all of them
    /// the first time). Returns how many it signed; a CRL that cannot be signed keeps its previous version and does not
    /// stop the others (the first such error is returned after all were tried).
    pub async fn refresh(&self) -> Result<usize> {
        self.issuers.refresh().await?;
        let snapshot = self.issuers.snapshot();
        let epoch = self.store.revocation_epoch().await?;
        let at = now();
        let intermediates = revoked_intermediates(&snapshot.intermediates, at);
        let mut signed = 0;
        let mut first_error = None;
        let mut live: Vec<Place> = Vec::new();
        for partition in 0..PARTITIONS {
            let mut by_issuer: HashMap<String, Vec<RevokedEntry>> = HashMap::new();
            for entry in self.store.revoked_certificates(partition, at).await? {
                by_issuer.entry(entry.issuer.clone()).or_default().push(entry);
            }
            by_issuer
                .entry(String::new())
                .or_default()
                .extend(intermediates.iter().filter(|e| crl::partition_of(&e.serial) == partition).cloned());
            for issuer in &snapshot.issuers {
                let mut entries = by_issuer.remove(&issuer.fingerprint).unwrap_or_default();
                entries.sort_by(|a, b| a.serial.cmp(&b.serial));
                let place = (crl::issuer_segment(&issuer.fingerprint).to_owned(), partition);
                live.push(place.clone());
                let digest = digest(&entries);
                let current = self.published.read().unwrap_or_else(|p| p.into_inner()).get(&place).cloned();
                let fresh = current.as_ref().is_some_and(|c| {
                    c.digest == digest && at < c.this_update + self.validity / 2 && at < c.next_update
                });
                if fresh {
                    continue;
                }
                match self.sign(issuer.clone(), partition, epoch, at, entries, digest).await {
                    Ok(crl) => {
                        self.published.write().unwrap_or_else(|p| p.into_inner()).insert(place, Arc::new(crl));
                        signed += 1;
                    }
                    Err(error) => {
                        tracing::warn!(%error, issuer = %place.0, partition, "cannot sign a CRL; its previous one stays");
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        // Issuers that expired are no longer published.
        self.published.write().unwrap_or_else(|p| p.into_inner()).retain(|place, _| live.contains(place));
        match first_error {
            Some(error) => Err(error),
            None => Ok(signed),
        }
    }

    async fn sign(
        &self,
        issuer: Arc<Issuer>,
        partition: u8,
        epoch: u64,
        at: OffsetDateTime,
        entries: Vec<RevokedEntry>,
        digest: String,
    ) -> Result<PublishedCrl> {
        let this_update = at;
        let next_update = (at + self.validity).min(issuer.not_after);
        let number = (epoch << 32) | (u64::try_from(at.unix_timestamp()).unwrap_or(0) & 0xffff_ffff);
        let params =
            crl::params(&self.base, &issuer.fingerprint, partition, number, this_update, next_update, &entries);
        let url = crl::url(&self.base, &issuer.fingerprint, partition);
        let der = tokio::task::spawn_blocking(move || issuer.sign_crl(&params))
            .await
            .map_err(|e| Error::internal("sign CRL", e))??;
        Ok(PublishedCrl { partition, der, number, this_update, next_update, url, entries: entries.len(), digest })
    }

    /// Keeps the CRLs current until `shutdown`: re-checks when the revocation epoch moves and when one is half-way to
    /// its next update.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut seen_epoch = None;
        let mut refreshed = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let epoch = match self.store.revocation_epoch().await {
                Ok(epoch) => epoch,
                Err(error) => {
                    tracing::debug!(%error, "CRLs: cannot read the revocation epoch; will retry");
                    continue;
                }
            };
            let due = self.get(0).is_none() || self.all().iter().any(|c| now() >= c.this_update + self.validity / 2);
            // Other replicas' new intermediates get their CRLs within a minute (and at once on a revocation).
            let stale = refreshed.elapsed() >= ISSUERS_EVERY;
            if seen_epoch == Some(epoch) && !due && !stale {
                continue;
            }
            refreshed = std::time::Instant::now();
            match self.refresh().await {
                Ok(signed) => {
                    seen_epoch = Some(epoch);
                    if signed > 0 {
                        tracing::debug!(signed, epoch, "CRLs re-signed");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot re-sign the CRLs; the current ones stay published"),
            }
        }
    }
}

/// Revoked replica intermediates as entries of the root's CRLs.
fn revoked_intermediates(
    intermediates: &HashMap<Serial, crate::model::IntermediateRecord>,
    at: OffsetDateTime,
) -> Vec<RevokedEntry> {
    intermediates
        .iter()
        .filter_map(|(serial, record)| {
            let revoked_at = record.revoked_at.filter(|_| record.not_after > at)?;
            Some(RevokedEntry {
                serial: serial.clone(),
                revoked_at,
                reason: RevocationReason::CaCompromise,
                not_after: record.not_after,
                issuer: String::new(),
            })
        })
        .collect()
}

fn digest(entries: &[RevokedEntry]) -> String {
    let mut text = String::with_capacity(entries.len() * 48);
    for e in entries {
        text.push_str(&format!("{}|{}|{};", e.serial, e.revoked_at.unix_timestamp(), e.reason.code()));
    }
    sha256_hex(text.as_bytes())
}
