//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so a commit is on disk before the
//! method returns.
//!
//! Writes go to one writer thread that **group-commits**: it takes every write waiting in its queue (up to
//! `max_batch`), runs each inside its own savepoint of one transaction (a failing write rolls back only itself), commits
//! once (one fsync for the whole batch) and only then answers each caller. Durable throughput is therefore not bounded
//! by the disk's fsync rate. Reads run on a small pool of reader connections, which WAL lets proceed alongside the
//! writer and which see every write acknowledged before they start.

mod audit;
/// The name of the embedded store's one audit chain.
pub use audit::CHAIN;
mod ca;
mod enrollment;
mod handle;
pub use handle::{DEFAULT_MAX_BATCH, SqliteStore};
mod listing;
mod rows;
mod workloads;
mod writer;

use async_trait::async_trait;
use rusqlite::params;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditFilter, ChainHead, Recorded};
use crate::error::{Error, Result};
use crate::model::{CaClaim, EnrollmentToken, EnrollmentTokenState, WorkloadEntry};
use crate::model::{
    CertificateRecord, IntermediateRecord, Principal, PrincipalId, PrincipalStatus, RevocationReason, Serial,
    TokenKeyRecord,
};
use crate::pki::crl::{RevokedEntry, StoredCrl};
use crate::store::{Page, PageRequest, PrincipalFilter, Store, errors};
use rows::*;

#[async_trait]
impl Store for SqliteStore {
    async fn create_principal(&self, principal: &Principal, audit: Option<&AuditEvent>) -> Result<()> {
        let (p, event) = (principal.clone(), audit.cloned());
        self.write(move |conn| {
            insert_principal(conn, &p)?;
            audit::append(conn, event.as_ref())
        })
        .await
    }

    async fn get_principal(&self, id: &PrincipalId) -> Result<Option<Principal>> {
        let id = id.clone();
        self.read(move |conn| select_principal(conn, &id)).await
    }

    async fn list_principals(&self, filter: &PrincipalFilter, page: &PageRequest) -> Result<Page<Principal>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |conn| listing::principals(conn, &filter, &page)).await
    }

    async fn transition_principal(
        &self,
        id: &PrincipalId,
        from: &[PrincipalStatus],
        to: PrincipalStatus,
        reason: Option<&str>,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<Principal> {
        let (id, from, reason, event) = (id.clone(), from.to_vec(), reason.map(str::to_owned), audit.cloned());
        self.write(move |conn| {
            let current = select_principal(conn, &id)?.ok_or_else(|| errors::principal_not_found(&id))?;
            if !from.contains(&current.status) {
                return Err(errors::wrong_status(&current, to));
            }
            conn.execute(
                "UPDATE principals SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE id = ?1",
                params![id.as_str(), to.as_str(), reason, at.unix_timestamp()],
            )
            .map_err(sql_err)?;
            if to != PrincipalStatus::Active {
                // The floor rises, and what it voids is revoked for relying parties (CRLs, OCSP) in this same write.
                raise_generation(conn, &id)?;
                revoke_below_floor(conn, &id, RevocationReason::PrivilegeWithdrawn, at.unix_timestamp())?;
                bump_epoch(conn)?;
            }
            audit::append(conn, event.as_ref())?;
            let updated = select_principal(conn, &id)?.ok_or_else(|| errors::principal_not_found(&id))?;
            Ok(updated)
        })
        .await
    }

    async fn delete_principal(
        &self,
        id: &PrincipalId,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<(Principal, u32)> {
        let (id, event) = (id.clone(), audit.cloned());
        self.write(move |conn| {
            let current = select_principal(conn, &id)?.ok_or_else(|| errors::principal_not_found(&id))?;
            if current.status == PrincipalStatus::Deleted {
                return Err(errors::wrong_status(&current, PrincipalStatus::Deleted));
            }
            let at = at.unix_timestamp();
            conn.execute(
                "UPDATE principals SET status = 'deleted', status_reason = NULL, updated_at = ?2 WHERE id = ?1",
                params![id.as_str(), at],
            )
            .map_err(sql_err)?;
            let revoked = revoke_all(conn, &id, RevocationReason::CessationOfOperation, at)?;
            audit::append(conn, event.as_ref())?;
            let updated = select_principal(conn, &id)?.ok_or_else(|| errors::principal_not_found(&id))?;
            Ok((updated, revoked))
        })
        .await
    }

    async fn insert_certificate(&self, cert: &CertificateRecord, audit: Option<&AuditEvent>) -> Result<()> {
        let (c, event) = (cert.clone(), audit.cloned());
        self.write(move |conn| {
            issuable_principal(conn, &c)?;
            insert_certificate_row(conn, &c)?;
            audit::append(conn, event.as_ref())
        })
        .await
    }

    async fn insert_renewal(
        &self,
        parent: &Serial,
        cert: &CertificateRecord,
        key_sha256: &str,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        let (parent, c, key, event) = (parent.clone(), cert.clone(), key_sha256.to_owned(), audit.cloned());
        self.write(move |conn| {
            let principal = issuable_principal(conn, &c)?;
            let previous =
                select_certificate(conn, &parent)?.ok_or_else(|| Error::NotFound(format!("certificate {parent}")))?;
            previous.renewable_by(&principal)?;
            insert_certificate_row(conn, &c)?;
            conn.execute(
                "UPDATE certificates SET renewed_by = ?2, renewal_key = ?3 WHERE serial = ?1",
                params![parent.as_str(), c.serial.as_str(), key],
            )
            .map_err(sql_err)?;
            audit::append(conn, event.as_ref())
        })
        .await
    }

    async fn revoke_all_certificates(
        &self,
        principal: &PrincipalId,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<u32> {
        let principal = principal.clone();
        self.write(move |conn| revoke_all(conn, &principal, reason, at.unix_timestamp())).await
    }

    async fn get_certificate(&self, serial: &Serial) -> Result<Option<CertificateRecord>> {
        let serial = serial.clone();
        self.read(move |conn| select_certificate(conn, &serial)).await
    }

    async fn list_certificates(
        &self,
        principal: &PrincipalId,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        let (principal, page) = (principal.clone(), page.clone());
        self.read(move |conn| listing::certificates(conn, &principal, include_revoked, &page)).await
    }

    async fn list_issued_by(
        &self,
        issuer: &str,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        let (issuer, page) = (issuer.to_owned(), page.clone());
        self.read(move |conn| listing::issued_by(conn, &issuer, include_revoked, &page)).await
    }

    async fn revoke_certificate(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<CertificateRecord> {
        let (serial, event) = (serial.clone(), audit.cloned());
        self.write(move |conn| {
            let current =
                select_certificate(conn, &serial)?.ok_or_else(|| Error::NotFound(format!("certificate {serial}")))?;
            // An explicit revocation (a key compromise found later) replaces a withdrawal with the principal's others.
            if current.revocation.is_some_and(|r| r.reason != RevocationReason::PrivilegeWithdrawn) {
                return Err(Error::FailedPrecondition(format!("certificate {serial} is already revoked")));
            }
            conn.execute(
                "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3 WHERE serial = ?1",
                params![serial.as_str(), at.unix_timestamp(), reason.code()],
            )
            .map_err(sql_err)?;
            bump_epoch(conn)?;
            if reason == RevocationReason::KeyCompromise {
                // Raises the floor and revokes the rest in this same write: nothing is left for a sweep.
                revoke_all(conn, &current.principal_id, reason, at.unix_timestamp())?;
            }
            audit::append(conn, event.as_ref())?;
            let updated =
                select_certificate(conn, &serial)?.ok_or_else(|| Error::NotFound(format!("certificate {serial}")))?;
            Ok(updated)
        })
        .await
    }

    async fn revocation_epoch(&self) -> Result<u64> {
        self.read(|conn| {
            let value: i64 = conn
                .query_row("SELECT value FROM meta WHERE key = 'revocation_epoch'", [], |r| r.get(0))
                .map_err(sql_err)?;
            u64::try_from(value).map_err(corrupt)
        })
        .await
    }

    async fn claim_ca(&self, claim: &CaClaim, replace: bool, audit: Option<&AuditEvent>) -> Result<CaClaim> {
        let (claim, event) = (claim.clone(), audit.cloned());
        self.write(move |conn| {
            let (recorded, claimed) = ca::claim(conn, &claim, replace)?;
            audit::append(conn, event.as_ref().filter(|_| claimed))?;
            Ok(recorded)
        })
        .await
    }

    async fn record_intermediate(&self, intermediate: &IntermediateRecord, audit: Option<&AuditEvent>) -> Result<()> {
        let (intermediate, event) = (intermediate.clone(), audit.cloned());
        self.write(move |conn| {
            let recorded = ca::record(conn, &intermediate)?;
            audit::append(conn, event.as_ref().filter(|_| recorded))
        })
        .await
    }

    async fn list_intermediates(&self) -> Result<Vec<IntermediateRecord>> {
        self.read(ca::list).await
    }

    async fn revoked_intermediates(&self) -> Result<std::collections::BTreeSet<String>> {
        self.read(ca::revoked).await
    }

    async fn forget_expired(&self, expired_before: OffsetDateTime) -> Result<u32> {
        self.write(move |conn| ca::forget(conn, expired_before)).await
    }

    async fn revoke_intermediate(
        &self,
        fingerprint: &str,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<IntermediateRecord> {
        let (fingerprint, event) = (fingerprint.to_owned(), audit.cloned());
        self.write(move |conn| {
            let revoked = ca::revoke(conn, &fingerprint, at)?;
            audit::append(conn, event.as_ref())?;
            Ok(revoked)
        })
        .await
    }

    async fn revoked_certificates(&self, partition: u8, at: OffsetDateTime) -> Result<Vec<RevokedEntry>> {
        self.read(move |conn| revoked_in_partition(conn, partition, at)).await
    }

    async fn next_crl_number(&self) -> Result<u64> {
        self.write(|conn| {
            let value: i64 = conn
                .query_row("UPDATE meta SET value = value + 1 WHERE key = 'crl_number' RETURNING value", [], |r| {
                    r.get(0)
                })
                .map_err(sql_err)?;
            u64::try_from(value).map_err(corrupt)
        })
        .await
    }

    async fn stored_crl(&self, place: &str) -> Result<Option<StoredCrl>> {
        let place = place.to_owned();
        self.read(move |conn| ca::stored_crl(conn, &place)).await
    }

    async fn store_crl(&self, crl: &StoredCrl) -> Result<bool> {
        let crl = crl.clone();
        self.write(move |conn| ca::store_crl(conn, &crl)).await
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        let events = events.to_vec();
        self.write(move |conn| events.iter().try_for_each(|e| audit::append(conn, Some(e)))).await
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<Recorded>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |conn| audit::list(conn, &filter, &page)).await
    }

    async fn audit_heads(&self) -> Result<Vec<ChainHead>> {
        self.read(audit::heads).await
    }

    async fn audit_chain(&self, chain: &str, after: u64, limit: u32) -> Result<Vec<Recorded>> {
        let chain = chain.to_owned();
        self.read(move |conn| audit::chain_after(conn, &chain, after, limit)).await
    }

    async fn record_token_key(&self, key: &TokenKeyRecord, audit: Option<&AuditEvent>) -> Result<()> {
        let (key, event) = (key.clone(), audit.cloned());
        self.write(move |conn| {
            let recorded = ca::record_token_key(conn, &key)?;
            audit::append(conn, event.as_ref().filter(|_| recorded))
        })
        .await
    }

    async fn list_token_keys(&self, at: OffsetDateTime) -> Result<Vec<TokenKeyRecord>> {
        self.read(move |conn| ca::token_keys(conn, at)).await
    }

    async fn create_enrollment_token(&self, token: &EnrollmentToken, audit: Option<&AuditEvent>) -> Result<()> {
        let (token, event) = (token.clone(), audit.cloned());
        self.write(move |conn| {
            enrollment::insert(conn, &token)?;
            audit::append(conn, event.as_ref())
        })
        .await
    }

    async fn get_enrollment_token(&self, hash: &str) -> Result<Option<EnrollmentTokenState>> {
        let hash = hash.to_owned();
        self.read(move |conn| enrollment::select(conn, &hash)).await
    }

    async fn list_enrollment_tokens(&self, principal: &PrincipalId) -> Result<Vec<EnrollmentTokenState>> {
        let principal = principal.clone();
        self.read(move |conn| enrollment::list(conn, &principal)).await
    }

    async fn revoke_enrollment_token(&self, hash: &str, at: OffsetDateTime, audit: Option<&AuditEvent>) -> Result<()> {
        let (hash, event) = (hash.to_owned(), audit.cloned());
        self.write(move |conn| {
            enrollment::revoke(conn, &hash, at)?;
            audit::append(conn, event.as_ref())
        })
        .await
    }

    async fn enroll(
        &self,
        hash: &str,
        cert: &CertificateRecord,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        let (hash, c, event) = (hash.to_owned(), cert.clone(), audit.cloned());
        self.write(move |conn| {
            enrollment::consume(conn, &hash, &c, at)?;
            issuable_principal(conn, &c)?;
            insert_certificate_row(conn, &c)?;
            audit::append(conn, event.as_ref())
        })
        .await
    }

    /// Every sweep commits in the write that starts it: there is never anything left to finish.
    async fn create_workload(
        &self,
        entry: &WorkloadEntry,
        principal: &Principal,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        let (entry, principal, event) = (entry.clone(), principal.clone(), audit.cloned());
        self.write(move |conn| {
            workloads::insert(conn, &entry, &principal)?;
            audit::append(conn, event.as_ref())
        })
        .await
    }

    async fn get_workload(&self, id: &PrincipalId) -> Result<Option<WorkloadEntry>> {
        let id = id.clone();
        self.read(move |conn| workloads::select(conn, &id)).await
    }

    async fn list_workloads(&self, node: Option<&PrincipalId>, page: &PageRequest) -> Result<Page<WorkloadEntry>> {
        let (node, page) = (node.cloned(), page.clone());
        self.read(move |conn| workloads::list(conn, node.as_ref(), &page)).await
    }

    async fn delete_workload(&self, id: &PrincipalId, audit: Option<&AuditEvent>) -> Result<WorkloadEntry> {
        let (id, event) = (id.clone(), audit.cloned());
        self.write(move |conn| {
            let entry = workloads::delete(conn, &id)?;
            audit::append(conn, event.as_ref())?;
            Ok(entry)
        })
        .await
    }

    async fn finish_sweeps(&self) -> Result<u32> {
        Ok(0)
    }

    /// Goes through the writer, so a stuck or stopped writer makes the store unready.
    async fn ping(&self) -> Result<()> {
        self.write(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_err)).await
    }
}
