//! The OCSP responder (RFC 6960, RFC 5019 profile): answers good, revoked (time and reason) or unknown for each
//! certificate a request names, signed by that certificate's own issuer.
//!
//! A status is read from the store (the certificate's record, its principal's revocation floor and its issuer), so a
//! suspension or an intermediate's revocation is "revoked" here before any sweep has marked the records. Answers are
//! cached per issuer and serial until the revocation epoch moves (read at most once per [`EPOCH_EVERY`]); a request
//! without a nonce gets a cached signed response (what RFC 5019 caches expect), one with a nonce a freshly signed one
//! echoing it, except from a remote root (KMS, HSM), which answers from its cache without the nonce.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::issuers::{Issuer, Issuers};
use crate::error::{Error, Result};
use crate::model::{PrincipalStatus, RevocationReason, Serial, now};
use crate::pki::ocsp::{self, CertRef, ResponseStatus, Status};
use crate::store::Store;

/// How stale the revocation epoch this responder acts on may be.
const EPOCH_EVERY: Duration = Duration::from_millis(500);
/// How many certificates one request may ask about (RFC 5019 clients ask about one).
pub const MAX_CERTS: usize = 16;
/// Bound on cached answers; the cache is emptied when it is full (and on every epoch change).
const MAX_CACHED: usize = 100_000;
/// Signatures a remote root (KMS, HSM) makes for OCSP per second, and in a burst: requests that miss the cache (new
/// serials, several certificates, an emptied cache) beyond it get TryLater, so anonymous relying parties cannot spend
/// the root's signing quota that CRLs and intermediates need.
const REMOTE_SIGNATURES_PER_SECOND: u32 = 10;
const REMOTE_SIGNATURES_BURST: u32 = 50;

/// A DER OCSP response and how long caches may keep it.
pub struct Answer {
    pub der: Vec<u8>,
    /// Set for successful responses without a nonce: their thisUpdate and nextUpdate.
    pub cacheable: Option<(OffsetDateTime, OffsetDateTime)>,
}

/// A number that moves when this process learns of a withdrawal (the authentication cache's generation).
pub type LocalChanges = Box<dyn Fn() -> u64 + Send + Sync>;

pub struct Responder {
    issuers: Arc<Issuers>,
    store: Arc<dyn Store>,
    validity: time::Duration,
    local_changes: LocalChanges,
    state: Mutex<State>,
    remote_signatures: governor::DefaultDirectRateLimiter,
}

/// A signed response with its thisUpdate and nextUpdate.
type Signed = (Vec<u8>, OffsetDateTime, OffsetDateTime);

#[derive(Default)]
struct State {
    epoch: u64,
    checked: Option<Instant>,
    local_changes: u64,
    issuers_refreshed: Option<Instant>,
    /// Statuses by issuer fingerprint and serial, for this epoch (requests with a nonce need only a signature).
    statuses: HashMap<(String, Serial), Status>,
    /// Signed single-certificate responses without a nonce, by the request's CertID (hash algorithm, name and key
    /// hashes, serial: the response echoes it, so a SHA-256 request never gets a SHA-1 answer).
    signed: HashMap<Vec<u8>, Arc<Signed>>,
}

impl Responder {
    /// Answers stay valid for `validity` (nextUpdate), and are replaced as soon as the epoch moves. `local_changes`
    /// moves when this process withdraws access itself: the epoch is then re-read at once, so a revocation made
    /// through this replica is in its very next answer.
    pub fn new(
        issuers: Arc<Issuers>,
        store: Arc<dyn Store>,
        validity: Duration,
        local_changes: LocalChanges,
    ) -> Arc<Self> {
        let validity = time::Duration::try_from(validity).unwrap_or(time::Duration::HOUR);
        let per_second = std::num::NonZeroU32::new(REMOTE_SIGNATURES_PER_SECOND).unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(REMOTE_SIGNATURES_BURST).unwrap_or(per_second);
        let remote_signatures =
            governor::RateLimiter::direct(governor::Quota::per_second(per_second).allow_burst(burst));
        Arc::new(Self { issuers, store, validity, local_changes, state: Mutex::default(), remote_signatures })
    }

    /// The response to the DER OCSP request `der`. Never fails: errors become OCSP error statuses.
    pub async fn respond(&self, der: &[u8]) -> Answer {
        let unsigned = |status| Answer { der: ocsp::error_response(status), cacheable: None };
        let Ok(query) = ocsp::parse_request(der, MAX_CERTS) else {
            return unsigned(ResponseStatus::MalformedRequest);
        };
        if let Err(error) = self.follow_epoch().await {
            tracing::debug!(%error, "OCSP: cannot read the revocation epoch");
            return unsigned(ResponseStatus::TryLater);
        }
        let Some(issuer) = self.issuer_of(&query.certs).await else {
            return unsigned(ResponseStatus::Unauthorized);
        };
        match self.answer(&issuer, &query.certs, query.nonce.as_deref()).await {
            Ok(answer) => answer,
            Err(Error::Unavailable(_)) => unsigned(ResponseStatus::TryLater),
            Err(error) => {
                tracing::warn!(%error, "OCSP: cannot answer");
                unsigned(ResponseStatus::InternalError)
            }
        }
    }

    /// Reads the epoch (at most every [`EPOCH_EVERY`], and at once after a local withdrawal) and forgets every
    /// answer when it moved.
    async fn follow_epoch(&self) -> Result<()> {
        let local = (self.local_changes)();
        let due = {
            let state = self.lock();
            state.local_changes != local || state.checked.is_none_or(|t| t.elapsed() >= EPOCH_EVERY)
        };
        if !due {
            return Ok(());
        }
        let epoch = self.store.revocation_epoch().await?;
        let mut state = self.lock();
        if state.epoch != epoch || state.checked.is_none() {
            state.signed.clear();
            state.statuses.clear();
        }
        state.epoch = epoch;
        state.local_changes = local;
        state.checked = Some(Instant::now());
        Ok(())
    }

    /// The one issuer every certificate of the request names; re-reads the issuers (at most once a second) when a
    /// request names one not known yet (a new intermediate of another replica).
    async fn issuer_of(&self, certs: &[CertRef]) -> Option<Arc<Issuer>> {
        for attempt in 0..2 {
            let found = self.issuers.snapshot().issuers.iter().find(|i| i.ocsp.matches_key(&certs[0])).cloned();
            if let Some(issuer) = found {
                return certs.iter().all(|c| issuer.ocsp.matches_key(c)).then_some(issuer);
            }
            let may_refresh = attempt == 0 && {
                let mut state = self.lock();
                let due = state.issuers_refreshed.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if due {
                    state.issuers_refreshed = Some(Instant::now());
                }
                due
            };
            if !may_refresh || self.issuers.refresh().await.is_err() {
                return None;
            }
        }
        None
    }

    async fn answer(&self, issuer: &Arc<Issuer>, certs: &[CertRef], nonce: Option<&[u8]>) -> Result<Answer> {
        let nonce = nonce.filter(|_| !issuer.remote());
        if let ([cert], None) = (certs, nonce) {
            let key = cache_key(cert);
            if let Some(hit) = self.lock().signed.get(&key).cloned() {
                return Ok(Answer { der: hit.0.clone(), cacheable: Some((hit.1, hit.2)) });
            }
            let epoch = self.lock().epoch;
            let (der, this_update, next_update) = self.sign(issuer, certs, None).await?;
            let mut state = self.lock();
            if state.epoch == epoch {
                if state.signed.len() >= MAX_CACHED {
                    state.signed.clear();
                }
                state.signed.insert(key, Arc::new((der.clone(), this_update, next_update)));
            }
            return Ok(Answer { der, cacheable: Some((this_update, next_update)) });
        }
        let (der, this_update, next_update) = self.sign(issuer, certs, nonce).await?;
        Ok(Answer { der, cacheable: nonce.is_none().then_some((this_update, next_update)) })
    }

    async fn sign(
        &self,
        issuer: &Arc<Issuer>,
        certs: &[CertRef],
        nonce: Option<&[u8]>,
    ) -> Result<(Vec<u8>, OffsetDateTime, OffsetDateTime)> {
        let mut statuses = Vec::with_capacity(certs.len());
        for cert in certs {
            // Asked about under this issuer's key but another issuer's name: not one of this issuer's certificates.
            let status = match issuer.ocsp.matches(cert) {
                true => self.cached_status(issuer, &serial_of(cert)).await?,
                false => Status::Unknown,
            };
            statuses.push(status);
        }
        let this_update = now();
        let next_update = (this_update + self.validity).min(issuer.not_after);
        let remote = issuer.remote();
        if remote && self.remote_signatures.check().is_err() {
            return Err(Error::Unavailable("OCSP: the root's signing budget for this second is spent".into()));
        }
        let (issuer, certs, nonce) = (issuer.clone(), certs.to_vec(), nonce.map(<[u8]>::to_vec));
        let build = move || {
            let answers: Vec<(&CertRef, Status)> = certs.iter().zip(statuses).collect();
            ocsp::build_response(&issuer.ocsp, &answers, nonce.as_deref(), this_update, next_update, |tbs| {
                issuer.sign(tbs)
            })
        };
        // An in-memory key signs in microseconds, here; a remote root blocks, on a blocking thread.
        let der = if remote {
            tokio::task::spawn_blocking(build).await.map_err(|e| Error::internal("sign OCSP response", e))??
        } else {
            build()?
        };
        Ok((der, this_update, next_update))
    }

    /// [`status`](Self::status), remembered until the epoch moves.
    async fn cached_status(&self, issuer: &Issuer, serial: &Serial) -> Result<Status> {
        let key = (issuer.fingerprint.clone(), serial.clone());
        if let Some(status) = self.lock().statuses.get(&key) {
            return Ok(*status);
        }
        let epoch = self.lock().epoch;
        let status = self.status(issuer, serial).await?;
        let mut state = self.lock();
        if state.epoch == epoch {
            if state.statuses.len() >= MAX_CACHED {
                state.statuses.clear();
            }
            state.statuses.insert(key, status);
        }
        Ok(status)
    }

    /// What relying parties should believe about the certificate `serial` of `issuer`.
    async fn status(&self, issuer: &Issuer, serial: &Serial) -> Result<Status> {
        if issuer.is_root()
            && let Some(intermediate) = self.issuers.snapshot().intermediates.get(serial)
        {
            return Ok(match intermediate.revoked_at {
                Some(at) => revoked(at, RevocationReason::CaCompromise),
                None => Status::Good,
            });
        }
        let Some(cert) = self.store.get_certificate(serial).await? else { return Ok(Status::Unknown) };
        if cert.issuer != issuer.fingerprint {
            return Ok(Status::Unknown);
        }
        if let Some(revocation) = &cert.revocation {
            return Ok(revoked(revocation.at, revocation.reason));
        }
        if let Some(at) = issuer.revoked_at {
            return Ok(revoked(at, RevocationReason::CaCompromise));
        }
        // Void by the principal's floor, before a sweep marked it: deleted, suspended or a key compromise.
        Ok(match self.store.get_principal(&cert.principal_id).await? {
            None => revoked(cert.not_before, RevocationReason::CessationOfOperation),
            Some(p) if p.generation > cert.generation || p.status != PrincipalStatus::Active => {
                let reason = match p.status {
                    PrincipalStatus::Deleted => RevocationReason::CessationOfOperation,
                    _ => RevocationReason::PrivilegeWithdrawn,
                };
                revoked(p.updated_at, reason)
            }
            Some(_) => Status::Good,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn revoked(at: OffsetDateTime, reason: RevocationReason) -> Status {
    let reason = (reason != RevocationReason::Unspecified).then(|| reason.code());
    Status::Revoked { at, reason }
}

/// The cache key of a CertID: everything the response echoes.
fn cache_key(cert: &CertRef) -> Vec<u8> {
    let mut key = vec![u8::from(cert.hash == crate::pki::ocsp::HashAlg::Sha256)];
    for part in [&cert.issuer_name_hash, &cert.issuer_key_hash, &cert.serial] {
        key.push(u8::try_from(part.len()).unwrap_or(u8::MAX));
        key.extend_from_slice(part);
    }
    key
}

/// The serial as the store keys it: the DER INTEGER's content bytes (a leading zero when the top bit is set).
fn serial_of(cert: &CertRef) -> Serial {
    let mut bytes = cert.serial.clone();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    Serial::from_bytes(&bytes)
}
