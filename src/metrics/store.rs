//! A [`Store`] decorator that times every call by operation, counts failures, and counts the certificates issued,
//! renewed and revoked (where they commit).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use super::{Metrics, OperationLabels};
use crate::audit::{AuditEvent, AuditFilter, ChainHead, Recorded};
use crate::error::{Error, Result};
use crate::model::{CaClaim, EnrollmentToken, EnrollmentTokenState, WorkloadEntry};
use crate::model::{
    CertificateRecord, IntermediateRecord, Principal, PrincipalId, PrincipalStatus, RevocationReason, Serial,
    TokenKeyRecord,
};
use crate::pki::crl::RevokedEntry;
use crate::store::{Page, PageRequest, PrincipalFilter, Store};

pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// Store operations in flight; none waits for a permit.
    in_flight: Semaphore,
    max_in_flight: usize,
}

impl MeteredStore {
    /// Meters `inner` and bounds its operations in flight to `max_in_flight`: beyond it an operation fails at once
    /// (UNAVAILABLE to the caller) instead of queueing behind a slow store, so a retry storm cannot grow memory and
    /// latency without bound. The readiness probe's `ping` is exempt.
    pub fn wrap(inner: Arc<dyn Store>, metrics: Arc<Metrics>, max_in_flight: usize) -> Arc<dyn Store> {
        Arc::new(Self { inner, metrics, in_flight: Semaphore::new(max_in_flight), max_in_flight })
    }

    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let _permit = match operation {
            "ping" => None,
            _ => match self.in_flight.try_acquire() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    self.metrics.store_shed.inc();
                    return Err(Error::Unavailable(format!(
                        "store overloaded: {} operations in flight (--store-max-in-flight)",
                        self.max_in_flight
                    )));
                }
            },
        };
        let started = Instant::now();
        let result = call.await;
        let labels = OperationLabels { operation };
        self.metrics.store_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.store_errors.get_or_create(&labels).inc();
        }
        result
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn create_principal(&self, principal: &Principal, audit: Option<&AuditEvent>) -> Result<()> {
        self.timed("create_principal", self.inner.create_principal(principal, audit)).await
    }
    async fn get_principal(&self, id: &PrincipalId) -> Result<Option<Principal>> {
        self.timed("get_principal", self.inner.get_principal(id)).await
    }
    async fn list_principals(&self, filter: &PrincipalFilter, page: &PageRequest) -> Result<Page<Principal>> {
        self.timed("list_principals", self.inner.list_principals(filter, page)).await
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
        self.timed("transition_principal", self.inner.transition_principal(id, from, to, reason, at, audit)).await
    }
    async fn delete_principal(
        &self,
        id: &PrincipalId,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<(Principal, u32)> {
        let result = self.timed("delete_principal", self.inner.delete_principal(id, at, audit)).await;
        if let Ok((_, revoked)) = &result {
            self.metrics.certificate("revoked", u64::from(*revoked));
        }
        result
    }
    async fn insert_certificate(&self, cert: &CertificateRecord, audit: Option<&AuditEvent>) -> Result<()> {
        let result = self.timed("insert_certificate", self.inner.insert_certificate(cert, audit)).await;
        if result.is_ok() {
            self.metrics.certificate("issued", 1);
        }
        result
    }
    async fn insert_renewal(
        &self,
        parent: &Serial,
        cert: &CertificateRecord,
        key_sha256: &str,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        let result = self.timed("insert_renewal", self.inner.insert_renewal(parent, cert, key_sha256, audit)).await;
        if result.is_ok() {
            self.metrics.certificate("renewed", 1);
        }
        result
    }
    async fn revoke_all_certificates(
        &self,
        principal: &PrincipalId,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<u32> {
        let result =
            self.timed("revoke_all_certificates", self.inner.revoke_all_certificates(principal, reason, at)).await;
        if let Ok(revoked) = &result {
            self.metrics.certificate("revoked", u64::from(*revoked));
        }
        result
    }
    async fn get_certificate(&self, serial: &Serial) -> Result<Option<CertificateRecord>> {
        self.timed("get_certificate", self.inner.get_certificate(serial)).await
    }
    async fn list_certificates(
        &self,
        principal: &PrincipalId,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        self.timed("list_certificates", self.inner.list_certificates(principal, include_revoked, page)).await
    }
    async fn revoke_certificate(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<CertificateRecord> {
        let result = self.timed("revoke_certificate", self.inner.revoke_certificate(serial, reason, at, audit)).await;
        if result.is_ok() {
            self.metrics.certificate("revoked", 1);
        }
        result
    }
    async fn claim_ca(&self, claim: &CaClaim, replace: bool, audit: Option<&AuditEvent>) -> Result<CaClaim> {
        self.timed("claim_ca", self.inner.claim_ca(claim, replace, audit)).await
    }
    async fn record_intermediate(&self, intermediate: &IntermediateRecord, audit: Option<&AuditEvent>) -> Result<()> {
        self.timed("record_intermediate", self.inner.record_intermediate(intermediate, audit)).await
    }
    async fn list_intermediates(&self) -> Result<Vec<IntermediateRecord>> {
        self.timed("list_intermediates", self.inner.list_intermediates()).await
    }
    async fn revoked_intermediates(&self) -> Result<std::collections::BTreeSet<String>> {
        self.timed("revoked_intermediates", self.inner.revoked_intermediates()).await
    }
    async fn forget_expired(&self, expired_before: OffsetDateTime) -> Result<u32> {
        self.timed("forget_expired", self.inner.forget_expired(expired_before)).await
    }
    async fn revoke_intermediate(
        &self,
        fingerprint: &str,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<IntermediateRecord> {
        self.timed("revoke_intermediate", self.inner.revoke_intermediate(fingerprint, at, audit)).await
    }
    async fn record_token_key(&self, key: &TokenKeyRecord, audit: Option<&AuditEvent>) -> Result<()> {
        self.timed("record_token_key", self.inner.record_token_key(key, audit)).await
    }
    async fn list_token_keys(&self, at: OffsetDateTime) -> Result<Vec<TokenKeyRecord>> {
        self.timed("list_token_keys", self.inner.list_token_keys(at)).await
    }
    async fn list_issued_by(
        &self,
        issuer: &str,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        self.timed("list_issued_by", self.inner.list_issued_by(issuer, include_revoked, page)).await
    }
    async fn create_enrollment_token(&self, token: &EnrollmentToken, audit: Option<&AuditEvent>) -> Result<()> {
        self.timed("create_enrollment_token", self.inner.create_enrollment_token(token, audit)).await
    }
    async fn create_workload(
        &self,
        entry: &WorkloadEntry,
        principal: &Principal,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        self.timed("create_workload", self.inner.create_workload(entry, principal, audit)).await
    }
    async fn get_workload(&self, id: &PrincipalId) -> Result<Option<WorkloadEntry>> {
        self.timed("get_workload", self.inner.get_workload(id)).await
    }
    async fn list_workloads(&self, node: Option<&PrincipalId>, page: &PageRequest) -> Result<Page<WorkloadEntry>> {
        self.timed("list_workloads", self.inner.list_workloads(node, page)).await
    }
    async fn delete_workload(&self, id: &PrincipalId, audit: Option<&AuditEvent>) -> Result<WorkloadEntry> {
        self.timed("delete_workload", self.inner.delete_workload(id, audit)).await
    }
    async fn get_enrollment_token(&self, hash: &str) -> Result<Option<EnrollmentTokenState>> {
        self.timed("get_enrollment_token", self.inner.get_enrollment_token(hash)).await
    }
    async fn list_enrollment_tokens(&self, principal: &PrincipalId) -> Result<Vec<EnrollmentTokenState>> {
        self.timed("list_enrollment_tokens", self.inner.list_enrollment_tokens(principal)).await
    }
    async fn revoke_enrollment_token(&self, hash: &str, at: OffsetDateTime, audit: Option<&AuditEvent>) -> Result<()> {
        self.timed("revoke_enrollment_token", self.inner.revoke_enrollment_token(hash, at, audit)).await
    }
    async fn enroll(
        &self,
        hash: &str,
        cert: &CertificateRecord,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        let result = self.timed("enroll", self.inner.enroll(hash, cert, at, audit)).await;
        if result.is_ok() {
            self.metrics.certificate("issued", 1);
        }
        result
    }
    async fn finish_sweeps(&self) -> Result<u32> {
        let result = self.timed("finish_sweeps", self.inner.finish_sweeps()).await;
        if let Ok(revoked) = &result {
            self.metrics.certificate("revoked", u64::from(*revoked));
        }
        result
    }
    async fn revocation_epoch(&self) -> Result<u64> {
        self.timed("revocation_epoch", self.inner.revocation_epoch()).await
    }
    async fn revoked_certificates(&self, partition: u8, at: OffsetDateTime) -> Result<Vec<RevokedEntry>> {
        self.timed("revoked_certificates", self.inner.revoked_certificates(partition, at)).await
    }
    async fn next_crl_number(&self) -> Result<u64> {
        self.timed("next_crl_number", self.inner.next_crl_number()).await
    }
    async fn stored_crl(&self, place: &str) -> Result<Option<crate::pki::crl::StoredCrl>> {
        self.timed("stored_crl", self.inner.stored_crl(place)).await
    }
    async fn store_crl(&self, crl: &crate::pki::crl::StoredCrl) -> Result<bool> {
        self.timed("store_crl", self.inner.store_crl(crl)).await
    }
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        self.timed("append_audit", self.inner.append_audit(events)).await
    }
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<Recorded>> {
        self.timed("list_audit", self.inner.list_audit(filter, page)).await
    }
    async fn audit_heads(&self) -> Result<Vec<ChainHead>> {
        self.timed("audit_heads", self.inner.audit_heads()).await
    }
    async fn audit_chain(&self, chain: &str, after: u64, limit: u32) -> Result<Vec<Recorded>> {
        self.timed("audit_chain", self.inner.audit_chain(chain, after, limit)).await
    }
    async fn ping(&self) -> Result<()> {
        self.timed("ping", self.inner.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[tokio::test]
    async fn beyond_the_bound_an_operation_fails_at_once_instead_of_queueing() {
        let dir = tempfile::tempdir().unwrap();
        let inner = StoreConfig::sqlite_in(dir.path()).open().await.unwrap();
        let metrics = Metrics::new();
        let store = MeteredStore { inner, metrics: metrics.clone(), in_flight: Semaphore::new(1), max_in_flight: 1 };
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let slow = store.timed("get_principal", async {
            let _ = held.await;
            Ok(())
        });
        let second = async {
            tokio::task::yield_now().await;
            let refused = store.timed("get_principal", async { Ok(()) }).await;
            assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
            // The readiness probe is never refused.
            store.timed("ping", async { Ok(()) }).await.unwrap();
            let _ = release.send(());
        };
        let (slow, ()) = tokio::join!(slow, second);
        slow.unwrap();
        assert_eq!(metrics.store_shed.get(), 1);
        // Once the slow one finished, the next gets through.
        store.timed("get_principal", async { Ok(()) }).await.unwrap();
    }
}
