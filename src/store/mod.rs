//! Persistence of principals and certificates behind one async trait, with one backend per module.
//!
//! Every backend must pass the suite in [`conformance`]. Above this module nothing knows which backend runs.
//! The store knows nothing of TLS or gRPC: it stores and returns domain values.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditFilter, ChainHead, Recorded};
use crate::error::Result;
use crate::model::{
    CaClaim, CertificateRecord, EnrollmentToken, EnrollmentTokenState, IntermediateRecord, Principal, PrincipalId,
    PrincipalStatus, PrincipalType, RevocationReason, Serial, TokenKeyRecord, WorkloadEntry,
};
use crate::pki::crl::{RevokedEntry, StoredCrl};

mod config;
pub mod conformance;
#[cfg(feature = "aws")]
pub mod dynamodb;
/// Without the `aws` feature: the DynamoDB settings only (they parse; opening them is refused).
#[cfg(not(feature = "aws"))]
#[path = "dynamodb/config.rs"]
pub mod dynamodb;
pub mod page_token;
pub mod sqlite;
pub use config::StoreConfig;

/// Which principals `list_principals` returns; `None` matches any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrincipalFilter {
    pub kind: Option<PrincipalType>,
    pub status: Option<PrincipalStatus>,
}

/// One page of a listing: at most `size` items after the position `token` marks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// At least 1.
    pub size: u32,
    /// `None` for the first page; otherwise a `next_token` this backend returned for the same listing.
    pub token: Option<String>,
}

/// A page of results and where the next one starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `None` when there is nothing after this page. Opaque to callers.
    pub next_token: Option<String>,
}

/// The store contract. All methods are safe to call concurrently.
///
/// Audit: every method that takes `audit: Option<&AuditEvent>` appends that event to the audit log in the same
/// atomic write as its change, or writes neither; a call that changes nothing (an error, an idempotent repeat)
/// records nothing. The store places the event in one of its chains ([`crate::audit::chain`]). A method that returns `Ok` after a write has made
/// that write durable: a crash right after cannot lose it. A method that returns `Err` has changed nothing.
///
/// Errors: `NotFound` and `FailedPrecondition` describe the data; `Unavailable` means the backend could not be
/// reached or was too slow (retrying may work); `InvalidArgument` is returned only for a page token this backend did
/// not produce.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates `principal`. `AlreadyExists` if its id exists in any status (ids of deleted principals are never
    /// reused, so old certificates can never match a new principal).
    async fn create_principal(&self, principal: &Principal, audit: Option<&AuditEvent>) -> Result<()>;

    /// The principal with this id in any status, `Ok(None)` if there is none. Strongly consistent: it sees every
    /// write acknowledged before the call.
    async fn get_principal(&self, id: &PrincipalId) -> Result<Option<Principal>>;

    /// Principals matching `filter`, ordered by id ascending, one page at a time.
    async fn list_principals(&self, filter: &PrincipalFilter, page: &PageRequest) -> Result<Page<Principal>>;

    /// Sets the principal's status to `to` (with `reason`, `updated_at = at`) if its current status is one of `from`,
    /// and returns the updated principal. A transition to a status other than ACTIVE also raises the principal's
    /// generation (its revocation floor) in the same write. `NotFound` if there is no such principal;
    /// `FailedPrecondition` naming the current status if it is not in `from`.
    async fn transition_principal(
        &self,
        id: &PrincipalId,
        from: &[PrincipalStatus],
        to: PrincipalStatus,
        reason: Option<&str>,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<Principal>;

    /// Sets the principal DELETED (from ACTIVE or SUSPENDED) and raises its generation in one atomic write, which
    /// withdraws all its access at once, and revokes each of its unrevoked certificates with reason
    /// cessationOfOperation at `at` (SQLite: in the same write; DynamoDB: right after, from its index, as a sweep that
    /// [`finish_sweeps`](Self::finish_sweeps) or a repeated call completes if it is interrupted). Returns the principal
    /// and how many certificates it revoked. `NotFound` if there is no such principal; `FailedPrecondition` if it is
    /// already deleted (after finishing any sweep of it that was interrupted).
    async fn delete_principal(
        &self,
        id: &PrincipalId,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<(Principal, u32)>;

    /// Records an issued certificate, in the same atomic write that checks its principal exists, is ACTIVE, has
    /// `cert.principal_type` and is still at `cert.generation`. `NotFound` if the principal does not exist;
    /// `FailedPrecondition` if it is not active, has another type or its generation moved; `AlreadyExists` if the
    /// serial is taken.
    async fn insert_certificate(&self, cert: &CertificateRecord, audit: Option<&AuditEvent>) -> Result<()>;

    /// Records `cert` as the one renewal of `parent`, for the public key whose SPKI hashes to `key_sha256`: in one
    /// atomic write that checks everything [`insert_certificate`](Self::insert_certificate) checks, and that the
    /// parent exists, belongs to the same principal, is unrevoked, is not void (its generation is the principal's) and
    /// has not been renewed; it marks the parent renewed. So a revocation committed first always wins, and a
    /// certificate renews at most once. `NotFound` if the parent is unknown; `FailedPrecondition` if it is revoked,
    /// void or another principal's; `AlreadyExists` if it was renewed already (read it to see by what).
    async fn insert_renewal(
        &self,
        parent: &Serial,
        cert: &CertificateRecord,
        key_sha256: &str,
        audit: Option<&AuditEvent>,
    ) -> Result<()>;

    /// Revokes every unrevoked certificate of the principal at `at` for `reason` (earlier revocations keep their time
    /// and reason), raises the principal's generation first and advances the revocation epoch. Returns how many it
    /// revoked; 0 for an unknown principal. Idempotent: a repeated call finishes what an interrupted one started.
    async fn revoke_all_certificates(
        &self,
        principal: &PrincipalId,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<u32>;

    /// The certificate with this serial, revoked or expired included; `Ok(None)` if unknown. Strongly consistent.
    async fn get_certificate(&self, serial: &Serial) -> Result<Option<CertificateRecord>>;

    /// The principal's certificates, newest (latest not_before) first; revoked ones only if `include_revoked`.
    /// Empty, not an error, for an unknown principal.
    async fn list_certificates(
        &self,
        principal: &PrincipalId,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>>;

    /// The unexpired certificates the intermediate with this fingerprint signed (revoked ones only if
    /// `include_revoked`), one page at a time: newest first on SQLite, in storage order on DynamoDB, which has no
    /// index by issuer and scans (an incident tool, not a routine read).
    async fn list_issued_by(
        &self,
        issuer: &str,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>>;

    /// Revokes the certificate at `at` for `reason` and returns it. `NotFound` if unknown; `FailedPrecondition` if it
    /// is already revoked (the first revocation's time and reason are kept). With reason keyCompromise the same write
    /// also raises the owner's generation, so every certificate issued to it so far is void at once (whoever holds the
    /// key may have renewed with it); the caller then sweeps them with
    /// [`revoke_all_certificates`](Self::revoke_all_certificates) (SQLite revokes them in the same write already).
    async fn revoke_certificate(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<CertificateRecord>;

    /// The CA this store belongs to, recording `claim` first if none is recorded yet. Exactly one CA is ever
    /// recorded, however many processes call this at once; a caller whose fingerprint differs from the answer must not
    /// serve this store. With `replace` (`bootstrap --force`, which replaces the CA on purpose) `claim` is recorded
    /// whatever was there. Stores claimed before the certificate was kept answer with an empty `certificate_pem`.
    async fn claim_ca(&self, claim: &CaClaim, replace: bool, audit: Option<&AuditEvent>) -> Result<CaClaim>;

    /// Records a replica's issuing intermediate (before it signs anything). Recording the same one again is a no-op.
    async fn record_intermediate(&self, intermediate: &IntermediateRecord, audit: Option<&AuditEvent>) -> Result<()>;

    /// Every recorded intermediate, revoked ones included, in no particular order. Small: a few per replica and day,
    /// and the server forgets none (auditors need them for as long as the certificates they signed are kept).
    async fn list_intermediates(&self) -> Result<Vec<IntermediateRecord>>;

    /// Fingerprints of the revoked intermediates: one strongly consistent read of a small record (replicas read it
    /// whenever the revocation epoch moves).
    async fn revoked_intermediates(&self) -> Result<std::collections::BTreeSet<String>>;

    /// Deletes what nothing can depend on any more: the records of intermediates that expired before `expired_before`
    /// (every certificate they signed has expired and is gone from the store by then), their place in the set of
    /// revoked intermediates, and token keys whose last token expired before it. Returns how many records went.
    /// Keeps what every replica reads (intermediates, revoked set, token keys) small. Audit chain heads are never
    /// deleted: `audit verify` relies on them.
    async fn forget_expired(&self, expired_before: OffsetDateTime) -> Result<u32>;

    /// Revokes an intermediate (every certificate it signed is void from then on) and raises the revocation epoch in
    /// the same write. `NotFound` if unknown, `FailedPrecondition` if already revoked.
    async fn revoke_intermediate(
        &self,
        fingerprint: &str,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<IntermediateRecord>;

    /// Announces a replica's token signing key (before it signs anything). Recording the same key again is a no-op
    /// (and records no event).
    async fn record_token_key(&self, key: &TokenKeyRecord, audit: Option<&AuditEvent>) -> Result<()>;

    /// Every announced token key that has not expired at `at`, in no particular order.
    async fn list_token_keys(&self, at: OffsetDateTime) -> Result<Vec<TokenKeyRecord>>;

    /// Records a one-time enrollment token for a principal, by the SHA-256 (hex) of its secret; the secret itself is
    /// never stored.
    async fn create_enrollment_token(&self, token: &EnrollmentToken, audit: Option<&AuditEvent>) -> Result<()>;

    /// The enrollment token whose secret hashes to `hash` (consumed or not), `None` if unknown. A cheap read that lets
    /// the registry refuse a bad token before it signs anything.
    async fn get_enrollment_token(&self, hash: &str) -> Result<Option<EnrollmentTokenState>>;

    /// Every enrollment token of `principal` (pending, used, expired or revoked), newest first. Tokens are kept until
    /// their principal is deleted for good; they expire within days, so the list stays short.
    async fn list_enrollment_tokens(&self, principal: &PrincipalId) -> Result<Vec<EnrollmentTokenState>>;

    /// Revokes the unused enrollment token whose secret hashes to `hash`, so it can never be consumed, in one write
    /// with `audit`. `NotFound` for an unknown token, `FailedPrecondition` for a used or already revoked one: a
    /// concurrent Enroll and revocation end with exactly one of them done.
    async fn revoke_enrollment_token(&self, hash: &str, at: OffsetDateTime, audit: Option<&AuditEvent>) -> Result<()>;

    /// Consumes the enrollment token whose secret hashes to `hash` and records `cert` for its principal, in one atomic
    /// write that checks everything [`insert_certificate`](Self::insert_certificate) checks and that the token exists,
    /// belongs to `cert.principal_id`, is unexpired at `at` and unused: of concurrent uses exactly one wins.
    /// `Unauthenticated` naming why for an unknown, expired, used or other principal's token.
    async fn enroll(
        &self,
        hash: &str,
        cert: &CertificateRecord,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<()>;

    /// Creates a workload entry and its principal in one atomic write that checks the entry's node is an ACTIVE
    /// principal of type node. `AlreadyExists` if the principal's id exists in any status; `NotFound` for an unknown
    /// node; `FailedPrecondition` for a node that is not an active node.
    async fn create_workload(
        &self,
        entry: &WorkloadEntry,
        principal: &Principal,
        audit: Option<&AuditEvent>,
    ) -> Result<()>;

    /// The workload entry with this id, `None` if there is none. Strongly consistent.
    async fn get_workload(&self, id: &PrincipalId) -> Result<Option<WorkloadEntry>>;

    /// The entries of `node` (every entry when `None`), ordered by id ascending, one page at a time. DynamoDB reads
    /// an index that may lag a write by a moment: what must not lag (a deleted entry's certificates) is withdrawn
    /// through its principal, whose reads are strongly consistent.
    async fn list_workloads(&self, node: Option<&PrincipalId>, page: &PageRequest) -> Result<Page<WorkloadEntry>>;

    /// Removes a workload entry (not its principal: the registry deletes that first, which revokes its
    /// certificates) and returns it. `NotFound` if there is none.
    async fn delete_workload(&self, id: &PrincipalId, audit: Option<&AuditEvent>) -> Result<WorkloadEntry>;

    /// Finishes every certificate sweep that an interrupted deletion or key-compromise revocation left behind; returns
    /// how many certificates it revoked. Servers call it in the background; backends whose sweeps are atomic return 0.
    async fn finish_sweeps(&self) -> Result<u32>;

    /// A counter that every committed withdrawal of access (`revoke_certificate`, `transition_principal` to a status
    /// other than ACTIVE, `delete_principal`, `revoke_all_certificates`) increases, by any process using this store, in the same atomic write.
    /// Strongly consistent. Replicas poll it to know when to drop cached authentication results.
    async fn revocation_epoch(&self) -> Result<u64>;

    /// The revoked certificates of CRL partition `partition` (see [`crate::pki::crl`]) that have not expired at
    /// `at`, ordered by serial. Read from an index of revoked certificates: the cost follows the revoked, not all.
    async fn revoked_certificates(&self, partition: u8, at: OffsetDateTime) -> Result<Vec<RevokedEntry>>;

    /// The next CRL number: greater than every number this store handed out before, to any process. Strongly
    /// consistent.
    async fn next_crl_number(&self) -> Result<u64>;

    /// The stored CRL of `place` (see [`crate::pki::crl::place`]), if any. Strongly consistent.
    async fn stored_crl(&self, place: &str) -> Result<Option<StoredCrl>>;

    /// Stores `crl` as its place's CRL unless one with the same or a higher number is stored already (conditionally,
    /// so concurrent writers never replace a newer CRL with an older one). Returns whether it was stored.
    async fn store_crl(&self, crl: &StoredCrl) -> Result<bool>;

    /// Appends events that record no change of the store (aggregated refusals), each in its chain.
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()>;

    /// Events matching `filter`, ordered by id (time) ascending, one page at a time.
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<Recorded>>;

    /// Every chain's head (last position and hash). Strongly consistent.
    async fn audit_heads(&self) -> Result<Vec<ChainHead>>;

    /// Up to `limit` events of `chain` after position `after`, in position order. Strongly consistent: every event
    /// up to a head read before the call is returned.
    async fn audit_chain(&self, chain: &str, after: u64, limit: u32) -> Result<Vec<Recorded>>;

    /// `Ok` if the backend answers a trivial read now. Used by readiness checks.
    async fn ping(&self) -> Result<()>;
}

/// How long records of expired certificates (and of the intermediates that signed them) are kept.
pub const EXPIRED_RETENTION: time::Duration = time::Duration::days(30);

/// Errors every backend reports the same way, so callers see the same messages whatever the store.
pub(crate) mod errors;
