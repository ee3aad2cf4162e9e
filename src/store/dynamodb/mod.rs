//! The production store: DynamoDB tables `<prefix>principals`, `<prefix>certificates` and `<prefix>meta`.
//!
//! - Keys spread: principals by id, certificates by serial; listings use GSIs whose partition keys are the
//!   principal's type plus one of 8 hash shards (`by_type_shard`) and the owning principal (`by_principal`).
//! - The principals table also holds items that are not principals, keyed `<kind>#...` (principal ids cannot contain
//!   `#`) and without `type_shard`, so they never list as principals: enrollment tokens `enroll#HASH` (sparse index
//!   `by_token_principal`), stored CRLs `crl#PLACE`, and workload entries `workload#ID` (sparse indexes
//!   `by_workload_node` for one node's entries and `by_workload_shard` for all of them; see `workloads`).
//! - The authentication path (`get_principal`, `get_certificate`, `revocation_epoch`) uses strongly consistent
//!   GetItem on primary keys only; GSIs (eventually consistent) serve listings only.
//! - Creation is a conditional put; state changes are conditional on the current state; issuing checks the principal
//!   and records the certificate in one TransactWriteItems; every withdrawal bumps the revocation epoch in the same
//!   transaction.
//! - Expired certificates carry a TTL attribute and are filtered on read, since TTL deletion can lag.
//! - Every call has timeouts and bounded retries; outages surface as `Error::Unavailable`, never as a hang.

mod audit;
mod ca;
mod config;
mod connect;
mod crls;
mod enrollment;
mod issuance;
mod issuer_sweep;
pub mod items;
mod listing;
mod principals;
pub mod schema;
mod sweep;
mod transact;
mod workloads;
pub mod writes;

pub use config::DynamoConfig;
pub use connect::unreachable;
use transact::TransactionFailure;
pub use transact::sdk_error;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditFilter, ChainHead, Recorded};
use crate::error::{Error, Result};
use crate::model::{CaClaim, EnrollmentToken, EnrollmentTokenState, WorkloadEntry};
use crate::model::{
    CertificateRecord, IntermediateRecord, Principal, PrincipalId, PrincipalStatus, RevocationReason, Serial,
    TokenKeyRecord,
};
use crate::pki::crl::RevokedEntry;
use crate::store::{Page, PageRequest, PrincipalFilter, Store, errors};
use items::{Item, s};
use writes::{EPOCH_KEY, Sweep};
/// Items per TransactWriteItems call (DynamoDB's limit is 100).
const MAX_TRANSACTION_ITEMS: usize = 100;

/// DynamoDB-backed [`Store`].
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    principals: String,
    certificates: String,
    meta: String,
    audit: String,
    chains: std::sync::Arc<audit::Chains>,
}

impl DynamoStore {
    /// Connects and checks that every table and index exists (naming what is missing otherwise).
    pub async fn connect(config: &DynamoConfig) -> Result<Self> {
        let client = Self::client_checked(config).await?;
        schema::check(&client, &config.table_prefix).await.map_err(|e| unreachable(config, e))?;
        Ok(Self::with_client(client, &config.table_prefix, &config.replica))
    }

    /// A store over `client` without checking the schema.
    pub fn with_client(client: Client, prefix: &str, replica: &str) -> Self {
        Self {
            client,
            principals: format!("{prefix}principals"),
            certificates: format!("{prefix}certificates"),
            meta: format!("{prefix}meta"),
            audit: format!("{prefix}audit"),
            chains: std::sync::Arc::new(audit::Chains::new(replica)),
        }
    }

    async fn get_item(&self, table: &str, key: &str, value: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(key, s(value))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(out.item)
    }

    fn epoch_bump(&self) -> Result<TransactWriteItem> {
        writes::epoch_bump(&self.meta, None)
    }

    /// The put that creates `principal`, refused (failed condition) if its id exists in any status.
    fn principal_put(&self, principal: &Principal) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.principals)
            .set_item(Some(items::principal_item(principal)))
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(|e| Error::internal("put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

/// The refusal of a [`DynamoStore::principal_put`] whose id exists.
fn principal_exists(principal: &Principal) -> Error {
    Error::AlreadyExists(format!("principal {:?}", principal.id.as_str()))
}

#[async_trait]
impl Store for DynamoStore {
    async fn create_principal(&self, principal: &Principal, audit: Option<&AuditEvent>) -> Result<()> {
        match self.transact_audited(vec![self.principal_put(principal)?], audit).await {
            Ok(()) => Ok(()),
            Err(failure) if failure.failed_condition(0) => Err(principal_exists(principal)),
            Err(failure) => Err(failure.into_error()),
        }
    }

    async fn get_principal(&self, id: &PrincipalId) -> Result<Option<Principal>> {
        self.get_item(&self.principals, "id", id.as_str()).await?.as_ref().map(items::principal_from).transpose()
    }

    async fn list_principals(&self, filter: &PrincipalFilter, page: &PageRequest) -> Result<Page<Principal>> {
        self.principals_page(filter, page).await
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
        self.transition(id, from, to, reason, at, audit).await
    }

    async fn delete_principal(
        &self,
        id: &PrincipalId,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<(Principal, u32)> {
        self.delete(id, at, audit).await
    }

    async fn revoke_all_certificates(
        &self,
        principal: &PrincipalId,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<u32> {
        let sweep = Sweep { principal: principal.clone(), reason };
        let writes =
            vec![writes::raise_generation(&self.principals, principal)?, writes::epoch_bump(&self.meta, Some(&sweep))?];
        match self.transact(writes).await {
            Ok(()) => self.sweep(&sweep, at).await,
            // An unknown principal has no certificates; still advance the epoch, as callers rely on it.
            Err(failure) if failure.failed_condition(0) => {
                self.transact(vec![self.epoch_bump()?]).await.map_err(TransactionFailure::into_error)?;
                Ok(0)
            }
            Err(failure) => Err(failure.into_error()),
        }
    }

    async fn insert_certificate(&self, cert: &CertificateRecord, audit: Option<&AuditEvent>) -> Result<()> {
        let check =
            writes::principal_issuable(&self.principals, &cert.principal_id, cert.principal_type, cert.generation)?;
        let writes = vec![check, self.put_certificate(cert)?];
        match self.transact_audited(writes, audit).await {
            Ok(()) => Ok(()),
            Err(failure) if failure.failed_condition(0) => Err(self.why_not_issuable(cert).await),
            Err(failure) if failure.failed_condition(1) => {
                Err(Error::AlreadyExists(format!("certificate {}", cert.serial)))
            }
            Err(failure) => Err(failure.into_error()),
        }
    }

    async fn insert_renewal(
        &self,
        parent: &Serial,
        cert: &CertificateRecord,
        key_sha256: &str,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        let (owner, generation) = (&cert.principal_id, cert.generation);
        let writes = vec![
            writes::principal_issuable(&self.principals, owner, cert.principal_type, generation)?,
            writes::mark_renewed(&self.certificates, parent, owner, generation, &cert.serial, key_sha256)?,
            self.put_certificate(cert)?,
        ];
        match self.transact_audited(writes, audit).await {
            Ok(()) => Ok(()),
            Err(failure) if failure.failed_condition(0) => Err(self.why_not_issuable(cert).await),
            Err(failure) if failure.failed_condition(1) => {
                let previous = self
                    .get_certificate(parent)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("certificate {parent}")))?;
                let principal = self.get_principal(owner).await?.ok_or_else(|| errors::principal_not_found(owner))?;
                previous.renewable_by(&principal)?;
                principal.may_receive(cert)?;
                Err(Error::Unavailable("certificate changed during renewal; retry".into()))
            }
            Err(failure) if failure.failed_condition(2) => {
                Err(Error::AlreadyExists(format!("certificate {}", cert.serial)))
            }
            Err(failure) => Err(failure.into_error()),
        }
    }

    async fn get_certificate(&self, serial: &Serial) -> Result<Option<CertificateRecord>> {
        let item = self.get_item(&self.certificates, "serial", serial.as_str()).await?;
        item.filter(|i| !items::past_ttl(i, crate::model::now())).as_ref().map(items::certificate_from).transpose()
    }

    async fn list_certificates(
        &self,
        principal: &PrincipalId,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        self.certificates_page(principal, include_revoked, page).await
    }

    async fn list_issued_by(
        &self,
        issuer: &str,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        self.issued_by_page(issuer, include_revoked, page).await
    }

    async fn revoke_certificate(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<CertificateRecord> {
        let mut writes = Vec::with_capacity(3);
        if reason == RevocationReason::KeyCompromise {
            // The owner's floor rises in the same write, and the sweep that follows is recorded as pending.
            let current =
                self.get_certificate(serial).await?.ok_or_else(|| Error::NotFound(format!("certificate {serial}")))?;
            let owner = &current.principal_id;
            let sweep = Sweep { principal: owner.clone(), reason };
            writes.push(writes::revoke(&self.certificates, serial, Some(owner), reason, at)?);
            writes.push(writes::raise_generation(&self.principals, owner)?);
            writes.push(writes::epoch_bump(&self.meta, Some(&sweep))?);
        } else {
            writes.push(writes::revoke(&self.certificates, serial, None, reason, at)?);
            writes.push(self.epoch_bump()?);
        }
        if let Err(failure) = self.transact_audited(writes, audit).await {
            if !failure.failed_condition(0) {
                return Err(failure.into_error());
            }
            return match self.get_certificate(serial).await? {
                None => Err(Error::NotFound(format!("certificate {serial}"))),
                Some(_) => Err(Error::FailedPrecondition(format!("certificate {serial} is already revoked"))),
            };
        }
        self.get_certificate(serial).await?.ok_or_else(|| Error::NotFound(format!("certificate {serial}")))
    }

    async fn claim_ca(&self, claim: &CaClaim, replace: bool, audit: Option<&AuditEvent>) -> Result<CaClaim> {
        self.claim(claim, replace, audit).await
    }

    async fn record_intermediate(&self, intermediate: &IntermediateRecord, audit: Option<&AuditEvent>) -> Result<()> {
        self.record(intermediate, audit).await
    }

    async fn list_intermediates(&self) -> Result<Vec<IntermediateRecord>> {
        self.intermediates().await
    }

    async fn revoked_intermediates(&self) -> Result<std::collections::BTreeSet<String>> {
        self.revoked().await
    }

    async fn forget_expired(&self, expired_before: OffsetDateTime) -> Result<u32> {
        self.forget(expired_before).await
    }

    async fn revoke_intermediate(
        &self,
        fingerprint: &str,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<IntermediateRecord> {
        self.revoke(fingerprint, at, audit).await
    }

    async fn revoked_certificates(&self, partition: u8, at: OffsetDateTime) -> Result<Vec<RevokedEntry>> {
        self.revoked_in_partition(partition, at).await
    }

    async fn next_crl_number(&self) -> Result<u64> {
        self.crl_number().await
    }

    async fn stored_crl(&self, place: &str) -> Result<Option<crate::pki::crl::StoredCrl>> {
        self.crl(place).await
    }

    async fn store_crl(&self, crl: &crate::pki::crl::StoredCrl) -> Result<bool> {
        self.put_crl(crl).await
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        self.append_events(events).await
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<Recorded>> {
        self.list_events(filter, page).await
    }

    async fn audit_heads(&self) -> Result<Vec<ChainHead>> {
        self.heads().await
    }

    async fn audit_chain(&self, chain: &str, after: u64, limit: u32) -> Result<Vec<Recorded>> {
        self.chain_after(chain, after, limit).await
    }

    async fn record_token_key(&self, key: &TokenKeyRecord, audit: Option<&AuditEvent>) -> Result<()> {
        self.record_token_key(key, audit).await
    }

    async fn list_token_keys(&self, at: OffsetDateTime) -> Result<Vec<TokenKeyRecord>> {
        self.token_keys(at).await
    }

    async fn create_enrollment_token(&self, token: &EnrollmentToken, audit: Option<&AuditEvent>) -> Result<()> {
        self.put_enrollment_token(token, audit).await
    }

    async fn get_enrollment_token(&self, hash: &str) -> Result<Option<EnrollmentTokenState>> {
        self.read_enrollment_token(hash).await
    }

    async fn list_enrollment_tokens(&self, principal: &PrincipalId) -> Result<Vec<EnrollmentTokenState>> {
        self.query_enrollment_tokens(principal).await
    }

    async fn revoke_enrollment_token(&self, hash: &str, at: OffsetDateTime, audit: Option<&AuditEvent>) -> Result<()> {
        self.revoke_token(hash, at, audit).await
    }

    async fn enroll(
        &self,
        hash: &str,
        cert: &CertificateRecord,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        self.consume_and_insert(hash, cert, at, audit).await
    }

    async fn create_workload(
        &self,
        entry: &WorkloadEntry,
        principal: &Principal,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        self.put_workload(entry, principal, audit).await
    }

    async fn get_workload(&self, id: &PrincipalId) -> Result<Option<WorkloadEntry>> {
        self.read_workload(id).await
    }

    async fn list_workloads(&self, node: Option<&PrincipalId>, page: &PageRequest) -> Result<Page<WorkloadEntry>> {
        self.query_workloads(node, page).await
    }

    async fn delete_workload(&self, id: &PrincipalId, audit: Option<&AuditEvent>) -> Result<WorkloadEntry> {
        self.remove_workload(id, audit).await
    }

    async fn finish_sweeps(&self) -> Result<u32> {
        let item = self.get_item(&self.meta, "key", EPOCH_KEY).await?;
        let mut revoked = 0u32;
        if let Some(AttributeValue::Ss(issuers)) = item.as_ref().and_then(|i| i.get(issuer_sweep::ISSUER_SWEEPS)) {
            for fingerprint in issuers {
                revoked += self.sweep_issuer(fingerprint, crate::model::now()).await?;
            }
        }
        let pending = match item.as_ref().and_then(|i| i.get("sweeps")) {
            Some(AttributeValue::Ss(sweeps)) => sweeps.clone(),
            _ => return Ok(revoked),
        };
        for text in pending {
            match Sweep::decode(&text) {
                Some(sweep) => revoked += self.sweep(&sweep, crate::model::now()).await?,
                None => tracing::warn!(sweep = %text.escape_debug(), "ignoring an unreadable pending sweep"),
            }
        }
        Ok(revoked)
    }

    async fn revocation_epoch(&self) -> Result<u64> {
        let item = self.get_item(&self.meta, "key", EPOCH_KEY).await?;
        Ok(item.map(|i| items::get_n(&i, "epoch")).transpose()?.map_or(0, |e| e.max(0) as u64))
    }

    async fn ping(&self) -> Result<()> {
        self.revocation_epoch().await.map(drop)
    }
}
