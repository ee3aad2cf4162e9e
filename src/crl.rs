//! Publishing CRLs: each replica builds, signs (with the root key) and keeps in memory one CRL per partition, serves
//! them over plain HTTP on the health listener (`/crl/P.crl`) and through the GetCrl RPC.
//!
//! A partition's CRL lists its revoked, unexpired certificates signed by the root, and the revoked replica
//! intermediates. It is re-signed when its content changes (checked whenever the revocation epoch moves, at most once
//! a second) and at half its validity, so it never expires while a replica runs. Its CRL number is
//! `epoch * 2^32 + signing time in seconds`: it grows with every revocation and with every re-signing.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::model::{RevocationReason, Serial, now, sha256_hex};
use crate::pki::ca::CertificateAuthority;
use crate::pki::crl::{self, PARTITIONS, RevokedEntry};
use crate::store::Store;

/// How often the epoch is checked for new revocations.
const CHECK_EVERY: Duration = Duration::from_secs(1);

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

/// The CRLs of this replica.
pub struct CrlPublisher {
    store: Arc<dyn Store>,
    ca: Arc<CertificateAuthority>,
    base: String,
    validity: time::Duration,
    published: RwLock<Vec<Option<Arc<PublishedCrl>>>>,
}

impl CrlPublisher {
    /// `None` when the CA does not publish CRLs (it has no CRL base URL).
    pub fn new(store: Arc<dyn Store>, ca: Arc<CertificateAuthority>, validity: Duration) -> Option<Arc<Self>> {
        let base = ca.crl_base()?.to_owned();
        let validity = time::Duration::try_from(validity).unwrap_or(time::Duration::HOUR);
        let published = RwLock::new(vec![None; usize::from(PARTITIONS)]);
        Some(Arc::new(Self { store, ca, base, validity, published }))
    }

    /// The current CRL of `partition`.
    pub fn get(&self, partition: u8) -> Option<Arc<PublishedCrl>> {
        self.published.read().unwrap_or_else(|p| p.into_inner()).get(usize::from(partition)).cloned().flatten()
    }

    /// Re-signs every partition whose content changed since it was signed, or which is past half its validity (all of
    /// them the first time). Returns how many it signed.
    pub async fn refresh(&self) -> Result<usize> {
        let epoch = self.store.revocation_epoch().await?;
        let at = now();
        let intermediates = self.revoked_intermediates().await?;
        let mut signed = 0;
        for partition in 0..PARTITIONS {
            let mut entries: Vec<RevokedEntry> = self
                .store
                .revoked_certificates(partition, at)
                .await?
                .into_iter()
                .filter(|e| e.issuer.is_empty())
                .collect();
            entries.extend(intermediates.iter().filter(|e| crl::partition_of(&e.serial) == partition).cloned());
            entries.sort_by(|a, b| a.serial.cmp(&b.serial));
            let digest = digest(&entries);
            let current = self.get(partition);
            let fresh = current
                .as_ref()
                .is_some_and(|c| c.digest == digest && at < c.this_update + self.validity / 2 && at < c.next_update);
            if fresh {
                continue;
            }
            let crl = self.sign(partition, epoch, at, entries, digest).await?;
            self.published.write().unwrap_or_else(|p| p.into_inner())[usize::from(partition)] = Some(Arc::new(crl));
            signed += 1;
        }
        Ok(signed)
    }

    async fn sign(
        &self,
        partition: u8,
        epoch: u64,
        at: OffsetDateTime,
        entries: Vec<RevokedEntry>,
        digest: String,
    ) -> Result<PublishedCrl> {
        let this_update = at;
        let next_update = at + self.validity;
        let number = (epoch << 32) | (u64::try_from(at.unix_timestamp()).unwrap_or(0) & 0xffff_ffff);
        let params = crl::params(&self.base, partition, number, this_update, next_update, &entries);
        let ca = self.ca.clone();
        let der = tokio::task::spawn_blocking(move || ca.sign_crl(&params))
            .await
            .map_err(|e| Error::internal("sign CRL", e))??;
        Ok(PublishedCrl {
            partition,
            der,
            number,
            this_update,
            next_update,
            url: crl::url(&self.base, partition),
            entries: entries.len(),
            digest,
        })
    }

    /// Revoked replica intermediates as CRL entries (the root signed them).
    async fn revoked_intermediates(&self) -> Result<Vec<RevokedEntry>> {
        let mut out = Vec::new();
        for record in self.store.list_intermediates().await? {
            let Some(revoked_at) = record.revoked_at.filter(|_| record.not_after > now()) else { continue };
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(&record.der) else { continue };
            out.push(RevokedEntry {
                serial: Serial::from_bytes(cert.raw_serial()),
                revoked_at,
                reason: RevocationReason::CaCompromise,
                not_after: record.not_after,
                issuer: String::new(),
            });
        }
        Ok(out)
    }

    /// Keeps the CRLs current until `shutdown`: re-checks when the revocation epoch moves and when one is half-way to
    /// its next update.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut seen_epoch = None;
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
            let due = (0..PARTITIONS).any(|p| self.get(p).is_none_or(|c| now() >= c.this_update + self.validity / 2));
            if seen_epoch == Some(epoch) && !due {
                continue;
            }
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

/// `GET /crl/P.crl` for the health listener: the DER CRL, cacheable until shortly before its next update.
pub fn routes(publisher: Option<Arc<CrlPublisher>>) -> axum::Router {
    axum::Router::new().route("/crl/{file}", axum::routing::get(serve_crl)).with_state(publisher)
}

async fn serve_crl(
    axum::extract::State(publisher): axum::extract::State<Option<Arc<CrlPublisher>>>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let crl = file
        .strip_suffix(".crl")
        .and_then(crl::parse_partition)
        .and_then(|p| publisher.as_ref().and_then(|publisher| publisher.get(p)));
    let Some(crl) = crl else {
        return (StatusCode::NOT_FOUND, "no such CRL: /crl/0.crl .. /crl/f.crl\n").into_response();
    };
    // Caches may keep it a few minutes, never past its next update.
    let max_age = (crl.next_update - now()).whole_seconds().clamp(0, 300);
    let headers = [
        (header::CONTENT_TYPE, "application/pkix-crl".to_owned()),
        (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
        (header::LAST_MODIFIED, http_date(crl.this_update)),
        (header::EXPIRES, http_date(crl.next_update)),
        (header::ETAG, format!("\"{:x}\"", crl.number)),
    ];
    (StatusCode::OK, headers, crl.der.clone()).into_response()
}

/// RFC 9110 IMF-fixdate.
fn http_date(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

fn digest(entries: &[RevokedEntry]) -> String {
    let mut text = String::with_capacity(entries.len() * 48);
    for e in entries {
        text.push_str(&format!("{}|{}|{};", e.serial, e.revoked_at.unix_timestamp(), e.reason.code()));
    }
    sha256_hex(text.as_bytes())
}
