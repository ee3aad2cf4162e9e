//! Authentication: a verified leaf certificate -> an ACTIVE principal, through a cache of recent results.
//!
//! Cache correctness: every change that can withdraw access (revoke, suspend, delete) is written to the store first
//! and then calls `forget_*`, which bumps a generation counter. A lookup notes the generation before it reads the
//! store and only caches its result if the generation is unchanged, so a read that raced a revocation is never
//! cached. On this server a withdrawal therefore takes effect on the next request. Another replica sharing the store
//! learns of it through the store's revocation epoch (polled by the server, which then calls `forget_all`), or at the
//! latest when its own cache entry expires after `ttl`.
//!
//! The cache is bounded (quick_cache: CLOCK-Pro eviction, so a flood of distinct certificates evicts cold entries
//! instead of wiping hot ones) and also remembers refusals for a few seconds, so a revoked, suspended or deleted
//! principal hammering the server costs no store read per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use quick_cache::UnitWeighter;
use quick_cache::sync::Cache;

use crate::auth::peer::PeerIdentity;
use crate::auth::{Caller, PermissionTable};
use crate::error::{Error, Refusal, Result};
use crate::metrics::Metrics;
use crate::model::{PrincipalId, PrincipalStatus, Serial};
use crate::pki::oid::IdentityOids;
use crate::store::Store;

/// Most entries kept; beyond it the coldest are evicted.
const MAX_CACHE_ENTRIES: usize = 100_000;
/// How long a refusal is remembered (never longer than the cache TTL).
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Checks callers against the store. Cheap to share behind an `Arc`.
pub struct Authenticator {
    store: Arc<dyn Store>,
    oids: IdentityOids,
    permissions: PermissionTable,
    cache: AuthCache,
    /// Fingerprints of revoked issuing intermediates: certificates they signed are refused.
    revoked_issuers: std::sync::RwLock<Arc<std::collections::HashSet<String>>>,
    /// Where cache hits, misses and evictions (and, through the layer, outcomes) are counted, once set.
    metrics: Arc<OnceLock<Arc<Metrics>>>,
}

impl Authenticator {
    /// `ttl` bounds how long another replica's change can go unnoticed here; zero disables caching.
    pub fn new(store: Arc<dyn Store>, oids: IdentityOids, permissions: PermissionTable, ttl: Duration) -> Self {
        let metrics = Arc::new(OnceLock::new());
        let cache = AuthCache::new(ttl, CountEvictions(metrics.clone()));
        Self { store, oids, permissions, cache, revoked_issuers: Default::default(), metrics }
    }

    /// Counts cache hits, misses and evictions, and authentication outcomes, in `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        let _ = self.metrics.set(metrics);
        self
    }

    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.get()
    }

    /// Authenticates the holder of `leaf_der`, a client certificate that TLS has already verified against the CA.
    /// Every failure is `Unauthenticated` with a reason the caller can act on, except store outages (`Unavailable`).
    pub async fn authenticate(&self, leaf_der: &[u8]) -> Result<Arc<Caller>> {
        let now = crate::model::now();
        // Keyed by the certificate's bytes, so a cache hit needs no X.509 parsing (the largest cost of this path).
        let cached = self.cache.get(leaf_der);
        if let Some(metrics) = self.metrics.get() {
            metrics.cache(if cached.is_some() { "hit" } else { "miss" });
        }
        match cached {
            Some(Cached::Allowed { caller, not_before, not_after }) => {
                crate::auth::peer::check_validity(not_before, not_after, now)?;
                return Ok(caller);
            }
            Some(Cached::Refused(refusal)) => return Err(Error::Refused(refusal)),
            None => {}
        }
        let peer = PeerIdentity::from_der(&self.oids, leaf_der)?;
        peer.check_validity(now)?;
        let generation = self.cache.generation();
        match self.check_store(&peer, leaf_der).await {
            Ok(caller) => {
                let caller = Arc::new(caller);
                let allowed =
                    Cached::Allowed { caller: caller.clone(), not_before: peer.not_before, not_after: peer.not_after };
                self.cache.insert(generation, leaf_der, allowed);
                Ok(caller)
            }
            // Only verdicts about the certificate are remembered; outages are not.
            Err(Error::Refused(refusal)) => {
                self.cache.insert(generation, leaf_der, Cached::Refused(refusal.clone()));
                Err(Error::Refused(refusal))
            }
            Err(error) => Err(error),
        }
    }

    async fn check_store(&self, peer: &PeerIdentity, leaf_der: &[u8]) -> Result<Caller> {
        let (cert, principal) =
            tokio::try_join!(self.store.get_certificate(&peer.serial), self.store.get_principal(&peer.id))?;
        let principal = principal.ok_or_else(|| refused(Refusal::UnknownPrincipal(peer.id.as_str().to_owned())))?;
        match principal.status {
            PrincipalStatus::Active => {}
            PrincipalStatus::Suspended => {
                return Err(refused(Refusal::Suspended(peer.id.as_str().to_owned())));
            }
            PrincipalStatus::Deleted => {
                return Err(refused(Refusal::Deleted(peer.id.as_str().to_owned())));
            }
        }
        if principal.kind != peer.kind {
            return Err(refused(Refusal::WrongType {
                id: peer.id.as_str().to_owned(),
                presented: peer.kind.to_string(),
                actual: principal.kind.to_string(),
            }));
        }
        let cert = cert.ok_or_else(|| refused(Refusal::Unregistered))?;
        let issuer_revoked = !cert.issuer.is_empty() && self.issuer_revoked(&cert.issuer);
        if let Some(revocation) = &cert.revocation {
            // Withdrawals are recorded as revocations too (for CRLs and OCSP); say which kind it was.
            return Err(refused(match revocation.reason {
                crate::model::RevocationReason::PrivilegeWithdrawn if cert.is_void_for(&principal) => {
                    Refusal::Withdrawn
                }
                crate::model::RevocationReason::CaCompromise if issuer_revoked => Refusal::IssuerRevoked,
                _ => Refusal::Revoked,
            }));
        }
        if cert.is_void_for(&principal) {
            return Err(refused(Refusal::Withdrawn));
        }
        if issuer_revoked {
            return Err(refused(Refusal::IssuerRevoked));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf_der);
        let fingerprint = crate::model::hex(digest.as_ref());
        if cert.principal_id != peer.id || cert.principal_type != peer.kind || cert.sha256_fingerprint != fingerprint {
            return Err(refused(Refusal::RegistrationMismatch));
        }
        Ok(Caller {
            id: peer.id.clone(),
            kind: peer.kind,
            serial: peer.serial.clone(),
            not_after: peer.not_after,
            permissions: self.permissions.for_type(peer.kind),
            certificate_sha256: digest.as_ref().try_into().unwrap_or([0; 32]),
        })
    }

    /// Re-reads which issuing intermediates are revoked. Call before dropping the cache after an intermediate was
    /// revoked ([`RevocationFollower`](crate::auth::RevocationFollower) does, whenever the epoch moves).
    pub async fn refresh_revoked_issuers(&self) -> Result<()> {
        let revoked = self.store.revoked_intermediates().await?.into_iter().collect();
        *self.revoked_issuers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(revoked);
        Ok(())
    }

    /// Whether the intermediate with this fingerprint is known to be revoked.
    pub fn issuer_revoked(&self, fingerprint: &str) -> bool {
        self.revoked_issuers.read().unwrap_or_else(|p| p.into_inner()).contains(fingerprint)
    }

    /// Call after a certificate was revoked in the store.
    pub fn forget_certificate(&self, serial: &Serial) {
        self.cache.forget(|s, _| s == serial);
    }

    /// Call after a principal was suspended or deleted in the store.
    pub fn forget_principal(&self, id: &PrincipalId) {
        self.cache.forget(|_, caller| caller.id == *id);
    }

    /// Drops every cached result, e.g. when another replica signals a change.
    pub fn forget_all(&self) {
        self.cache.forget(|_, _| true);
    }

    /// A number that moves whenever cached results are forgotten (a withdrawal through this replica, or another
    /// replica's seen through the epoch): other caches of revocation status follow it.
    pub fn withdrawals_seen(&self) -> u64 {
        self.cache.generation()
    }
}

fn refused(refusal: Refusal) -> Error {
    Error::Refused(refusal)
}

/// What the cache remembers about a certificate.
#[derive(Clone)]
enum Cached {
    /// Authenticated; the certificate's validity is re-checked on every hit.
    Allowed { caller: Arc<Caller>, not_before: time::OffsetDateTime, not_after: time::OffsetDateTime },
    /// Refused as unauthenticated, for this reason.
    Refused(Refusal),
}

#[derive(Clone)]
struct CacheEntry {
    value: Cached,
    expires: Instant,
}

type EntryCache = Cache<Box<[u8]>, CacheEntry, UnitWeighter, BuildSignatureHasher, CountEvictions>;

/// Counts evictions (the cache is full) once metrics are set.
#[derive(Clone)]
struct CountEvictions(Arc<OnceLock<Arc<Metrics>>>);

impl quick_cache::Lifecycle<Box<[u8]>, CacheEntry> for CountEvictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _: &mut (), _: Box<[u8]>, _: CacheEntry) {
        if let Some(metrics) = self.0.get() {
            metrics.cache("eviction");
        }
    }
}

/// Certificate (DER) -> verdict, bounded, with TTLs and a generation counter (see the module docs).
struct AuthCache {
    ttl: Duration,
    generation: AtomicU64,
    entries: EntryCache,
    /// Held while forgetting and while inserting, so no insert lands between a forget's bump and its sweep.
    forget_lock: Mutex<()>,
}

/// Hashes a DER certificate by its last 32 bytes: they are the CA's signature, unpredictable for every certificate, so
/// they spread keys as well as hashing all ~700 bytes would, at a fraction of the cost on the hot path. Lookups still
/// compare the whole certificate. (Choosing colliding tails would take the CA's signing key.)
#[derive(Clone, Copy, Default)]
struct BuildSignatureHasher;

impl std::hash::BuildHasher for BuildSignatureHasher {
    type Hasher = SignatureHasher;

    fn build_hasher(&self) -> SignatureHasher {
        SignatureHasher(0xcbf2_9ce4_8422_2325)
    }
}

struct SignatureHasher(u64);

impl std::hash::Hasher for SignatureHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = &bytes[bytes.len().saturating_sub(32)..];
        for b in tail {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl AuthCache {
    fn new(ttl: Duration, lifecycle: CountEvictions) -> Self {
        let entries =
            Cache::with(MAX_CACHE_ENTRIES, MAX_CACHE_ENTRIES as u64, UnitWeighter, BuildSignatureHasher, lifecycle);
        Self { ttl, generation: AtomicU64::new(0), entries, forget_lock: Mutex::new(()) }
    }

    fn get(&self, leaf_der: &[u8]) -> Option<Cached> {
        let entry = self.entries.get(leaf_der)?;
        (Instant::now() < entry.expires).then_some(entry.value)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn insert(&self, generation: u64, leaf_der: &[u8], value: Cached) {
        let ttl = match value {
            Cached::Allowed { .. } => self.ttl,
            Cached::Refused(_) => self.ttl.min(NEGATIVE_TTL),
        };
        if ttl.is_zero() {
            return;
        }
        let _guard = self.forget_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock: `forget` bumps the generation while holding it, so no stale insert slips in.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        self.entries.insert(leaf_der.into(), CacheEntry { value, expires: Instant::now() + ttl });
    }

    /// Drops the allowed entries `matches` selects, and every refusal (a refusal may name the changed principal).
    fn forget(&self, matches: impl Fn(&Serial, &Caller) -> bool) {
        let _guard = self.forget_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.retain(|_, e| match &e.value {
            Cached::Allowed { caller, .. } => !matches(&caller.serial, caller.as_ref()),
            Cached::Refused(_) => false,
        });
    }
}
