//! One-time enrollment tokens in DynamoDB: an item of the principals table keyed `enroll#<hash>` (principal ids cannot
//! contain `#`, and the item has no listing attributes, so it never appears as a principal). Consuming it is the first
//! item of the transaction that records the certificate it pays for.

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use time::OffsetDateTime;

use super::items::{get_n, get_s, n, s};
use super::{DynamoStore, writes};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::model::CertificateRecord;
use crate::store::{EnrollmentToken, EnrollmentTokenState, enrollment_refused, errors};

fn key(hash: &str) -> String {
    format!("enroll#{hash}")
}

impl DynamoStore {
    pub(super) async fn put_enrollment_token(&self, t: &EnrollmentToken, audit: Option<&AuditEvent>) -> Result<()> {
        let check = writes::principal_exists(&self.principals, &t.principal)?;
        let put = Put::builder()
            .table_name(&self.principals)
            .item("id", s(&key(&t.hash)))
            .item("principal_id", s(t.principal.as_str()))
            .item("generation", n(t.generation as i64))
            .item("created_at", n(t.created_at.unix_timestamp()))
            .item("expires_at", n(t.expires_at.unix_timestamp()))
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(|e| Error::internal("enrollment put", e))?;
        match self.transact_audited(vec![check, TransactWriteItem::builder().put(put).build()], audit).await {
            Ok(()) => Ok(()),
            Err(failure) if failure.failed_condition(0) => Err(errors::principal_not_found(&t.principal)),
            Err(failure) => Err(failure.into_error()),
        }
    }

    pub(super) async fn read_enrollment_token(&self, hash: &str) -> Result<Option<EnrollmentTokenState>> {
        let Some(item) = self.get_item(&self.principals, "id", &key(hash)).await? else { return Ok(None) };
        let corrupt = |e: Error| Error::internal("corrupt enrollment token item", e);
        Ok(Some(EnrollmentTokenState {
            principal: get_s(&item, "principal_id")?.parse().map_err(corrupt)?,
            // Tokens made before tokens carried a generation: 0.
            generation: get_n(&item, "generation").unwrap_or(0) as u64,
            expires_at: super::items::time_from(get_n(&item, "expires_at")?)?,
            consumed: item.contains_key("consumed_at"),
            serial: item.get("serial").and_then(|v| v.as_s().ok()).map(|s| s.parse()).transpose().map_err(corrupt)?,
        }))
    }

    pub(super) async fn consume_and_insert(
        &self,
        hash: &str,
        cert: &CertificateRecord,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        let consume = Update::builder()
            .table_name(&self.principals)
            .key("id", s(&key(hash)))
            .condition_expression(
                "attribute_exists(id) AND principal_id = :principal AND attribute_not_exists(consumed_at) \
                 AND expires_at > :now AND (attribute_not_exists(generation) OR generation = :generation)",
            )
            .update_expression("SET consumed_at = :now, serial = :serial")
            .expression_attribute_values(":principal", s(cert.principal_id.as_str()))
            .expression_attribute_values(":now", n(at.unix_timestamp()))
            .expression_attribute_values(":serial", s(cert.serial.as_str()))
            .expression_attribute_values(":generation", n(cert.generation as i64))
            .build()
            .map_err(|e| Error::internal("enrollment update", e))?;
        let check =
            writes::principal_issuable(&self.principals, &cert.principal_id, cert.principal_type, cert.generation)?;
        let writes = vec![TransactWriteItem::builder().update(consume).build(), check, self.put_certificate(cert)?];
        match self.transact_audited(writes, audit).await {
            Ok(()) => Ok(()),
            Err(failure) if failure.failed_condition(0) => Err(self.why_refused(hash, cert, at).await),
            Err(failure) if failure.failed_condition(1) => Err(self.why_not_issuable(cert).await),
            Err(failure) if failure.failed_condition(2) => {
                Err(Error::AlreadyExists(format!("certificate {}", cert.serial)))
            }
            Err(failure) => Err(failure.into_error()),
        }
    }

    async fn why_refused(&self, hash: &str, cert: &CertificateRecord, at: OffsetDateTime) -> Error {
        let item = match self.get_item(&self.principals, "id", &key(hash)).await {
            Ok(Some(item)) => item,
            Ok(None) => return enrollment_refused("it is unknown"),
            Err(e) => return e,
        };
        if get_s(&item, "principal_id").ok() != Some(cert.principal_id.as_str()) {
            enrollment_refused("it was made for another principal")
        } else if item.contains_key("consumed_at") {
            enrollment_refused("it was used already")
        } else if get_n(&item, "expires_at").is_ok_and(|e| e <= at.unix_timestamp()) {
            enrollment_refused("it has expired")
        } else if get_n(&item, "generation").is_ok_and(|g| g != cert.generation as i64) {
            enrollment_refused(crate::store::ENROLLMENT_WITHDRAWN)
        } else {
            Error::Unavailable("enrollment token changed during enrollment; retry".into())
        }
    }
}
