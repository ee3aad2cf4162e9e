//! Revoking what a revoked intermediate signed, for the CRLs: DynamoDB has no index by issuer, so the certificates
//! are found by a filtered Scan (revoking an intermediate is an incident, not a routine call). The sweep is recorded on
//! the epoch item (`issuer_sweeps`) in the write that revokes the intermediate and removed when done, so an
//! interrupted one is finished by `finish_sweeps`. Authentication and OCSP refuse those certificates from the first
//! write on (the revoked intermediate is on the epoch item); the sweep only brings the CRLs level.

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use time::OffsetDateTime;

use super::items::s;
use super::transact::{TransactionFailure, sdk_error};
use super::writes::{self, EPOCH_KEY};
use super::{DynamoStore, MAX_TRANSACTION_ITEMS};
use crate::error::{Error, Result};
use crate::model::{RevocationReason, Serial};

/// Attribute of the epoch item listing the intermediates whose certificates are still to be marked revoked.
pub const ISSUER_SWEEPS: &str = "issuer_sweeps";

impl DynamoStore {
    /// Marks every unrevoked certificate signed by the intermediate `fingerprint` revoked (cACompromise), then removes
    /// the sweep from the pending set. Returns how many it marked.
    pub(super) async fn sweep_issuer(&self, fingerprint: &str, at: OffsetDateTime) -> Result<u32> {
        let mut serials = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.certificates)
                .filter_expression("issuer = :issuer AND attribute_not_exists(revoked_at)")
                .expression_attribute_values(":issuer", s(fingerprint))
                .projection_expression("serial")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Scan", e))?;
            for item in page.items() {
                if let Some(AttributeValue::S(serial)) = item.get("serial") {
                    serials.push(serial.parse::<Serial>()?);
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        for chunk in serials.chunks(MAX_TRANSACTION_ITEMS - 1) {
            let mut writes = vec![self.epoch_bump()?];
            for serial in chunk {
                writes.push(writes::revoke_if_unrevoked(
                    &self.certificates,
                    serial,
                    RevocationReason::CaCompromise,
                    at,
                )?);
            }
            self.transact(writes).await.map_err(TransactionFailure::into_error)?;
        }
        let done = Update::builder()
            .table_name(&self.meta)
            .key("key", s(EPOCH_KEY))
            .update_expression(format!("DELETE {ISSUER_SWEEPS} :fingerprint"))
            .expression_attribute_values(":fingerprint", AttributeValue::Ss(vec![fingerprint.to_owned()]))
            .build()
            .map_err(|e| Error::internal("issuer sweep update", e))?;
        self.transact(vec![TransactWriteItem::builder().update(done).build()])
            .await
            .map_err(TransactionFailure::into_error)?;
        Ok(u32::try_from(serials.len()).unwrap_or(u32::MAX))
    }
}
