//! Publishing CRLs: one CRL per partition and issuer (the root, and every derivable replica intermediate, each
//! signing its own), signed once per change by whichever replica gets there first and stored, so every replica serves
//! the same one from memory on the PKI listener (`/crl/P.crl` for the root, `/crl/ISSUER/P.crl` for an
//! intermediate) and through the GetCrl RPC (the root's).
//!
//! A CRL lists its issuer's revoked, unexpired certificates, including those voided by a principal's revocation
//! floor (the stores mark them revoked: suspension, deletion, key compromise) and, for the root, the revoked replica
//! intermediates. It is re-signed when its content changes (checked whenever the revocation epoch moves, at most once
//! a second) and at half its validity, so it never expires while a replica runs; one CRL failing to sign does not
//! stop the others. Its CRL number comes from the store's counter (taken before the entries are read), so it grows
//! with every re-signing whichever replica signs, and never goes backwards behind a load balancer.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use super::issuers::{Issuer, Issuers};
use crate::error::{Error, Result};
use crate::model::{RevocationReason, Serial, now, sha256_hex};
use crate::pki::crl::{self, PARTITIONS, RevokedEntry, StoredCrl};
use crate::store::Store;

/// How often the epoch is checked for new revocations.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the issuers are re-read when nothing else happens.
const ISSUERS_EVERY: Duration = Duration::from_secs(60);

/// One signed CRL as this replica serves it.
#[derive(Debug)]
pub struct PublishedCrl {
    /// The CRL as the store keeps it: place, number, digest of what it lists, dates, DER.
    pub crl: StoredCrl,
    pub partition: u8,
    /// Where relying parties fetch it (its issuing distribution point).
    pub url: String,
    /// How many certificates it lists.
    pub entries: usize,
}

impl PublishedCrl {
    fn new(crl: StoredCrl, base: &str, entries: usize) -> Self {
        let (partition, url) = (crl::partition_of_place(&crl.place), crl::url_of_place(base, &crl.place));
        Self { crl, partition, url, entries }
    }
}

/// A CRL's place (see [`crl::place`]): `P` for the root's partition, `ISSUER/P` for an intermediate's.
type Place = String;

/// CRL numbers are `NUMBER_BASE | the store's counter`: above every number of the clock-based scheme before it
/// (`epoch * 2^32 + seconds`), so numbers keep growing across the upgrade.
const NUMBER_BASE: u64 = 1 << 62;

/// The CRLs of this replica.
pub struct CrlPublisher {
    store: Arc<dyn Store>,
    issuers: Arc<Issuers>,
    base: String,
    validity: time::Duration,
    published: RwLock<HashMap<Place, Arc<PublishedCrl>>>,
    /// The revocation epoch read before the last successful refresh: every withdrawal up to it is in the CRLs.
    published_epoch: std::sync::atomic::AtomicU64,
    /// One refresh at a time (the background loop, and callers that need the CRLs current now).
    refreshing: tokio::sync::Mutex<()>,
}

impl CrlPublisher {
    /// CRLs named under `base` (`BASE/crl/...`), valid `validity` from signing.
    pub fn new(store: Arc<dyn Store>, issuers: Arc<Issuers>, base: String, validity: Duration) -> Arc<Self> {
        let validity = time::Duration::try_from(validity).unwrap_or(time::Duration::HOUR);
        Arc::new(Self {
            store,
            issuers,
            base,
            validity,
            published: Default::default(),
            published_epoch: Default::default(),
            refreshing: Default::default(),
        })
    }

    /// Makes the CRLs include every withdrawal committed before the call (read-your-writes for whoever just revoked
    /// a certificate): reads the revocation epoch and, if the CRLs are older, refreshes them now. One store read when
    /// they are current; concurrent callers share one refresh.
    pub async fn up_to_date(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let epoch = self.store.revocation_epoch().await?;
        if self.published_epoch.load(Ordering::Acquire) >= epoch && self.get(0).is_some() {
            return Ok(());
        }
        let _turn = self.refreshing.lock().await;
        if self.published_epoch.load(Ordering::Acquire) >= epoch && self.get(0).is_some() {
            return Ok(());
        }
        self.refresh_places(false).await?;
        self.published_epoch.fetch_max(epoch, Ordering::AcqRel);
        Ok(())
    }

    /// The root's current CRL of `partition`.
    pub fn get(&self, partition: u8) -> Option<Arc<PublishedCrl>> {
        self.get_for("", partition)
    }

    /// The current CRL of `partition` of the issuer whose URL segment is `issuer` ("" = the root).
    pub fn get_for(&self, issuer: &str, partition: u8) -> Option<Arc<PublishedCrl>> {
        let place = match issuer {
            "" => crl::partition_name(partition),
            segment => format!("{segment}/{}", crl::partition_name(partition)),
        };
        self.get_place(&place)
    }

    /// Every CRL currently published (for metrics: the soonest next update).
    pub fn all(&self) -> Vec<Arc<PublishedCrl>> {
        self.published.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Brings every CRL up to date: a place whose content changed, or which is past half its validity, gets the
    /// newest CRL stored for it when that one is current (another replica signed it), else one signed here with the
    /// next number of the store's counter and stored for the others. With `reconcile`, places that look current
    /// also adopt a newer stored CRL (so every replica converges on the same one). Returns how many this replica
    /// signed; a CRL that cannot be signed keeps its previous version and does not stop the others (the first such
    /// error is returned after all were tried).
    pub async fn refresh(&self) -> Result<usize> {
        self.refresh_places(false).await
    }

    async fn refresh_places(&self, reconcile: bool) -> Result<usize> {
        self.issuers.refresh().await?;
        let snapshot = self.issuers.snapshot();
        let mut signed = 0;
        let mut first_error = None;
        let mut live: Vec<Place> = Vec::new();
        for partition in 0..PARTITIONS {
            let mut number = None;
            // Read twice when something must be signed: the number is taken before the read its CRL lists, so a
            // higher number always lists at least as much (a replica with an older read cannot outbid a newer one).
            for _ in 0..2 {
                let at = now();
                let mut by_issuer = self.revoked_by_issuer(partition, &snapshot, at).await?;
                let mut stale = Vec::new();
                for issuer in &snapshot.issuers {
                    let mut entries = by_issuer.remove(&issuer.fingerprint).unwrap_or_default();
                    entries.sort_by(|a, b| a.serial.cmp(&b.serial));
                    let place = crl::place(&issuer.fingerprint, partition);
                    if !live.contains(&place) {
                        live.push(place.clone());
                    }
                    let digest = digest(&entries);
                    let current = self.get_place(&place);
                    if current.as_ref().is_some_and(|c| self.current(&c.crl, &digest, at)) {
                        if reconcile && number.is_none() {
                            self.adopt_newer(&place, current.as_ref(), at).await;
                        }
                        continue;
                    }
                    stale.push((issuer.clone(), place, entries, digest));
                }
                if stale.is_empty() {
                    break;
                }
                let Some(number) = number else {
                    number = Some(NUMBER_BASE | self.store.next_crl_number().await?);
                    continue;
                };
                for (issuer, place, entries, digest) in stale {
                    match self.publish(issuer, &place, partition, number, at, entries, digest).await {
                        Ok(ours) => signed += usize::from(ours),
                        Err(error) => {
                            tracing::warn!(%error, place, "cannot sign a CRL; its previous one stays");
                            first_error.get_or_insert(error);
                        }
                    }
                }
                break;
            }
        }
        // Issuers that expired are no longer published.
        self.published.write().unwrap_or_else(|p| p.into_inner()).retain(|place, _| live.contains(place));
        match first_error {
            Some(error) => Err(error),
            None => Ok(signed),
        }
    }

    /// The partition's revoked certificates by issuer fingerprint, the root's with its revoked intermediates.
    async fn revoked_by_issuer(
        &self,
        partition: u8,
        snapshot: &super::issuers::Snapshot,
        at: OffsetDateTime,
    ) -> Result<HashMap<String, Vec<RevokedEntry>>> {
        let mut by_issuer: HashMap<String, Vec<RevokedEntry>> = HashMap::new();
        for entry in self.store.revoked_certificates(partition, at).await? {
            by_issuer.entry(entry.issuer.clone()).or_default().push(entry);
        }
        by_issuer.entry(String::new()).or_default().extend(
            revoked_intermediates(&snapshot.intermediates, at)
                .into_iter()
                .filter(|e| crl::partition_of(&e.serial) == partition),
        );
        Ok(by_issuer)
    }

    /// Whether `crl` lists exactly `digest` and is not due for re-signing at `at`.
    fn current(&self, crl: &StoredCrl, digest: &str, at: OffsetDateTime) -> bool {
        crl.digest == digest && at < crl.this_update + self.validity / 2 && at < crl.next_update
    }

    fn get_place(&self, place: &str) -> Option<Arc<PublishedCrl>> {
        self.published.read().unwrap_or_else(|p| p.into_inner()).get(place).cloned()
    }

    fn install(&self, crl: PublishedCrl) {
        self.published.write().unwrap_or_else(|p| p.into_inner()).insert(crl.crl.place.clone(), Arc::new(crl));
    }

    /// Serves the stored CRL of `place` when it is newer than `current` and unexpired.
    async fn adopt_newer(&self, place: &str, current: Option<&Arc<PublishedCrl>>, at: OffsetDateTime) {
        match self.store.stored_crl(place).await {
            Ok(Some(stored)) if current.is_none_or(|c| stored.number > c.crl.number) && at < stored.next_update => {
                self.install(self.published_of(stored));
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, place, "cannot read the stored CRL; keeping this one"),
        }
    }

    /// Makes `place` current: adopts the stored CRL if it lists the same and is current (or is newer than `number`),
    /// else signs one with `number` and stores it unless a newer one was stored meanwhile (then serves that). Returns
    /// whether it signed.
    #[allow(clippy::too_many_arguments)]
    async fn publish(
        &self,
        issuer: Arc<Issuer>,
        place: &str,
        partition: u8,
        number: u64,
        at: OffsetDateTime,
        entries: Vec<RevokedEntry>,
        digest: String,
    ) -> Result<bool> {
        if let Some(stored) = self.store.stored_crl(place).await?
            && (self.current(&stored, &digest, at) || stored.number > number)
        {
            self.install(self.published_of(stored));
            return Ok(false);
        }
        let count = entries.len();
        let crl = self.sign(issuer, place, partition, number, at, &entries, digest).await?;
        // A CRL too large for the store (DynamoDB: 400 KB per item) is still served by this replica.
        let stored = self.store.store_crl(&crl).await.unwrap_or_else(|error| {
            tracing::warn!(%error, place, "cannot store a CRL; serving it from this replica only");
            true
        });
        if !stored && let Ok(Some(newer)) = self.store.stored_crl(place).await {
            self.install(self.published_of(newer));
        } else {
            self.install(PublishedCrl::new(crl, &self.base, count));
        }
        Ok(true)
    }

    /// A CRL another replica signed, as this one serves it.
    fn published_of(&self, stored: StoredCrl) -> PublishedCrl {
        let entries =
            x509_parser::parse_x509_crl(&stored.der).map_or(0, |(_, c)| c.iter_revoked_certificates().count());
        PublishedCrl::new(stored, &self.base, entries)
    }

    #[allow(clippy::too_many_arguments)]
    async fn sign(
        &self,
        issuer: Arc<Issuer>,
        place: &str,
        partition: u8,
        number: u64,
        at: OffsetDateTime,
        entries: &[RevokedEntry],
        digest: String,
    ) -> Result<StoredCrl> {
        let this_update = at;
        let next_update = (at + self.validity).min(issuer.not_after);
        let params = crl::params(&self.base, &issuer.fingerprint, partition, number, this_update, next_update, entries);
        let der = tokio::task::spawn_blocking(move || issuer.sign_crl(&params))
            .await
            .map_err(|e| Error::internal("sign CRL", e))??;
        Ok(StoredCrl { place: place.to_owned(), number, digest, this_update, next_update, der })
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
            let due =
                self.get(0).is_none() || self.all().iter().any(|c| now() >= c.crl.this_update + self.validity / 2);
            // Other replicas' new intermediates get their CRLs within a minute (and at once on a revocation).
            let stale = refreshed.elapsed() >= ISSUERS_EVERY;
            if seen_epoch == Some(epoch) && !due && !stale {
                continue;
            }
            refreshed = std::time::Instant::now();
            let turn = self.refreshing.lock().await;
            let outcome = self.refresh_places(stale).await;
            drop(turn);
            match outcome {
                Ok(signed) => {
                    seen_epoch = Some(epoch);
                    self.published_epoch.fetch_max(epoch, std::sync::atomic::Ordering::AcqRel);
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
