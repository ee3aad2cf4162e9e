//! A [`Store`] wrapper that counts reads and can slow down withdrawals, for tests that must see how often the store is
//! read or what happens to a request cancelled while its write is in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use principald::audit::{AuditEvent, AuditFilter, ChainHead, Recorded};
use principald::error::Result;
use principald::model::{CaClaim, EnrollmentToken, EnrollmentTokenState, WorkloadEntry};
use principald::model::{
    CertificateRecord, IntermediateRecord, Principal, PrincipalId, PrincipalStatus, RevocationReason, Serial,
    TokenKeyRecord,
};
use principald::store::{Page, PageRequest, PrincipalFilter, Store};
use time::OffsetDateTime;

pub struct CountingStore {
    inner: Arc<dyn Store>,
    /// get_principal + get_certificate calls.
    pub reads: AtomicU64,
    pub pings: AtomicU64,
    /// Added before every status transition commits.
    pub transition_delay: Duration,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner, reads: AtomicU64::new(0), pings: AtomicU64::new(0), transition_delay: Duration::ZERO }
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    pub fn pings(&self) -> u64 {
        self.pings.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn create_principal(&self, principal: &Principal, audit: Option<&AuditEvent>) -> Result<()> {
        self.inner.create_principal(principal, audit).await
    }
    async fn get_principal(&self, id: &PrincipalId) -> Result<Option<Principal>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_principal(id).await
    }
    async fn list_principals(&self, filter: &PrincipalFilter, page: &PageRequest) -> Result<Page<Principal>> {
        self.inner.list_principals(filter, page).await
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
        tokio::time::sleep(self.transition_delay).await;
        self.inner.transition_principal(id, from, to, reason, at, audit).await
    }
    async fn delete_principal(
        &self,
        id: &PrincipalId,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<(Principal, u32)> {
        self.inner.delete_principal(id, at, audit).await
    }
    async fn insert_certificate(&self, cert: &CertificateRecord, audit: Option<&AuditEvent>) -> Result<()> {
        self.inner.insert_certificate(cert, audit).await
    }
    async fn insert_renewal(
        &self,
        parent: &Serial,
        cert: &CertificateRecord,
        key_sha256: &str,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        self.inner.insert_renewal(parent, cert, key_sha256, audit).await
    }
    async fn revoke_all_certificates(
        &self,
        principal: &PrincipalId,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<u32> {
        self.inner.revoke_all_certificates(principal, reason, at).await
    }
    async fn get_certificate(&self, serial: &Serial) -> Result<Option<CertificateRecord>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_certificate(serial).await
    }
    async fn list_certificates(
        &self,
        principal: &PrincipalId,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        self.inner.list_certificates(principal, include_revoked, page).await
    }
    async fn revoke_certificate(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<CertificateRecord> {
        self.inner.revoke_certificate(serial, reason, at, audit).await
    }
    async fn claim_ca(&self, claim: &CaClaim, replace: bool, audit: Option<&AuditEvent>) -> Result<CaClaim> {
        self.inner.claim_ca(claim, replace, audit).await
    }
    async fn record_intermediate(&self, intermediate: &IntermediateRecord, audit: Option<&AuditEvent>) -> Result<()> {
        self.inner.record_intermediate(intermediate, audit).await
    }
    async fn list_intermediates(&self) -> Result<Vec<IntermediateRecord>> {
        self.inner.list_intermediates().await
    }
    async fn revoked_intermediates(&self) -> Result<std::collections::BTreeSet<String>> {
        self.inner.revoked_intermediates().await
    }
    async fn forget_expired(&self, expired_before: OffsetDateTime) -> Result<u32> {
        self.inner.forget_expired(expired_before).await
    }
    async fn revoke_intermediate(
        &self,
        fingerprint: &str,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<IntermediateRecord> {
        self.inner.revoke_intermediate(fingerprint, at, audit).await
    }
    async fn revoked_certificates(
        &self,
        partition: u8,
        at: OffsetDateTime,
    ) -> Result<Vec<principald::pki::crl::RevokedEntry>> {
        self.inner.revoked_certificates(partition, at).await
    }
    async fn next_crl_number(&self) -> Result<u64> {
        self.inner.next_crl_number().await
    }
    async fn stored_crl(&self, place: &str) -> Result<Option<principald::pki::crl::StoredCrl>> {
        self.inner.stored_crl(place).await
    }
    async fn store_crl(&self, crl: &principald::pki::crl::StoredCrl) -> Result<bool> {
        self.inner.store_crl(crl).await
    }
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        self.inner.append_audit(events).await
    }
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<Recorded>> {
        self.inner.list_audit(filter, page).await
    }
    async fn audit_heads(&self) -> Result<Vec<ChainHead>> {
        self.inner.audit_heads().await
    }
    async fn audit_chain(&self, chain: &str, after: u64, limit: u32) -> Result<Vec<Recorded>> {
        self.inner.audit_chain(chain, after, limit).await
    }
    async fn record_token_key(&self, key: &TokenKeyRecord, audit: Option<&AuditEvent>) -> Result<()> {
        self.inner.record_token_key(key, audit).await
    }
    async fn list_token_keys(&self, at: OffsetDateTime) -> Result<Vec<TokenKeyRecord>> {
        self.inner.list_token_keys(at).await
    }
    async fn list_issued_by(
        &self,
        issuer: &str,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        self.inner.list_issued_by(issuer, include_revoked, page).await
    }
    async fn create_enrollment_token(&self, token: &EnrollmentToken, audit: Option<&AuditEvent>) -> Result<()> {
        self.inner.create_enrollment_token(token, audit).await
    }
    async fn create_workload(
        &self,
        entry: &WorkloadEntry,
        principal: &Principal,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        self.inner.create_workload(entry, principal, audit).await
    }
    async fn get_workload(&self, id: &PrincipalId) -> Result<Option<WorkloadEntry>> {
        self.inner.get_workload(id).await
    }
    async fn list_workloads(&self, node: Option<&PrincipalId>, page: &PageRequest) -> Result<Page<WorkloadEntry>> {
        self.inner.list_workloads(node, page).await
    }
    async fn delete_workload(&self, id: &PrincipalId, audit: Option<&AuditEvent>) -> Result<WorkloadEntry> {
        self.inner.delete_workload(id, audit).await
    }
    async fn get_enrollment_token(&self, hash: &str) -> Result<Option<EnrollmentTokenState>> {
        self.inner.get_enrollment_token(hash).await
    }
    async fn list_enrollment_tokens(&self, principal: &PrincipalId) -> Result<Vec<EnrollmentTokenState>> {
        self.inner.list_enrollment_tokens(principal).await
    }
    async fn revoke_enrollment_token(&self, hash: &str, at: OffsetDateTime, audit: Option<&AuditEvent>) -> Result<()> {
        self.inner.revoke_enrollment_token(hash, at, audit).await
    }
    async fn enroll(
        &self,
        hash: &str,
        cert: &CertificateRecord,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        self.inner.enroll(hash, cert, at, audit).await
    }
    async fn finish_sweeps(&self) -> Result<u32> {
        self.inner.finish_sweeps().await
    }
    async fn revocation_epoch(&self) -> Result<u64> {
        self.inner.revocation_epoch().await
    }
    async fn ping(&self) -> Result<()> {
        self.pings.fetch_add(1, Ordering::SeqCst);
        self.inner.ping().await
    }
}
