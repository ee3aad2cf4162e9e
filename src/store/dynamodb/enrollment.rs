//! One-time enrollment tokens in DynamoDB: an item of the principals table keyed `enroll#<hash>` (principal ids cannot
//! contain `#`, and the item has no principal listing attributes, so it never appears as a principal). Its
//! `token_principal` puts it in the sparse index `by_token_principal` that lists one principal's tokens. Consuming it
//! is the first item of the transaction that records the certificate it pays for; revoking it is a conditional update.

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use time::OffsetDateTime;

use super::items::{get_n, get_s, n, s};
use super::{DynamoStore, sdk_error, writes};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::model::{CertificateRecord, PrincipalId};
use crate::model::{ENROLLMENT_REVOKED, EnrollmentToken, EnrollmentTokenState, enrollment_refused};
use crate::store::errors;

type Item = std::collections::HashMap<String, AttributeValue>;

fn key(hash: &str) -> String {
    format!("enroll#{hash}")
}

impl DynamoStore {
    pub(super) async fn put_enrollment_token(&self, t: &EnrollmentToken, audit: Option<&AuditEvent>) -> Result<()> {
        let check = writes::principal_exists(&self.principals, &t.principal)?;
        let mut put = Put::builder()
            .table_name(&self.principals)
            .item("id", s(&key(&t.hash)))
            .item("principal_id", s(t.principal.as_str()))
            .item("token_principal", s(t.principal.as_str()))
            .item("generation", n(t.generation as i64))
            .item("created_at", n(t.created_at.unix_timestamp()))
            .item("expires_at", n(t.expires_at.unix_timestamp()))
            .condition_expression("attribute_not_exists(id)");
        if let Some(max) = t.max_validity {
            put = put.item("max_validity", n(max as i64));
        }
        let put = put.build().map_err(|e| Error::internal("enrollment put", e))?;
        match self.transact_audited(vec![check, TransactWriteItem::builder().put(put).build()], audit).await {
            Ok(()) => Ok(()),
            Err(failure) if failure.failed_condition(0) => Err(errors::principal_not_found(&t.principal)),
            Err(failure) => Err(failure.into_error()),
        }
    }

    pub(super) async fn read_enrollment_token(&self, hash: &str) -> Result<Option<EnrollmentTokenState>> {
        let Some(item) = self.get_item(&self.principals, "id", &key(hash)).await? else { return Ok(None) };
        token_from(&item).map(Some)
    }

    /// One principal's tokens from the sparse index, newest first. Tokens made before the index existed carry no
    /// `token_principal` and are not listed (they expire within seven days of their making).
    pub(super) async fn query_enrollment_tokens(&self, principal: &PrincipalId) -> Result<Vec<EnrollmentTokenState>> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.principals)
                .index_name("by_token_principal")
                .key_condition_expression("token_principal = :p")
                .expression_attribute_values(":p", s(principal.as_str()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in out.items() {
                found.push(token_from(item)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.hash.cmp(&b.hash)));
        Ok(found)
    }

    pub(super) async fn revoke_token(&self, hash: &str, at: OffsetDateTime, audit: Option<&AuditEvent>) -> Result<()> {
        let revoke = Update::builder()
            .table_name(&self.principals)
            .key("id", s(&key(hash)))
            .condition_expression(
                "attribute_exists(id) AND attribute_not_exists(consumed_at) AND attribute_not_exists(revoked_at)",
            )
            .update_expression("SET revoked_at = :now")
            .expression_attribute_values(":now", n(at.unix_timestamp()))
            .build()
            .map_err(|e| Error::internal("enrollment revoke", e))?;
        match self.transact_audited(vec![TransactWriteItem::builder().update(revoke).build()], audit).await {
            Ok(()) => Ok(()),
            Err(failure) if failure.failed_condition(0) => Err(match self.read_enrollment_token(hash).await {
                Ok(None) => errors::enrollment_token_not_found(),
                Ok(Some(t)) if t.consumed => Error::FailedPrecondition("enrollment token was used already".into()),
                Ok(Some(_)) => Error::FailedPrecondition(format!("enrollment token refused: {ENROLLMENT_REVOKED}")),
                Err(e) => e,
            }),
            Err(failure) => Err(failure.into_error()),
        }
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
                 AND attribute_not_exists(revoked_at) AND expires_at > :now \
                 AND (attribute_not_exists(generation) OR generation = :generation)",
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
        } else if item.contains_key("revoked_at") {
            enrollment_refused(ENROLLMENT_REVOKED)
        } else if get_n(&item, "expires_at").is_ok_and(|e| e <= at.unix_timestamp()) {
            enrollment_refused("it has expired")
        } else if get_n(&item, "generation").is_ok_and(|g| g != cert.generation as i64) {
            enrollment_refused(crate::model::ENROLLMENT_WITHDRAWN)
        } else {
            Error::Unavailable("enrollment token changed during enrollment; retry".into())
        }
    }
}

fn token_from(item: &Item) -> Result<EnrollmentTokenState> {
    let corrupt = |e: Error| Error::internal("corrupt enrollment token item", e);
    let id = get_s(item, "id")?;
    Ok(EnrollmentTokenState {
        hash: id.strip_prefix("enroll#").unwrap_or(id).to_owned(),
        principal: get_s(item, "principal_id")?.parse().map_err(corrupt)?,
        // Tokens made before tokens carried a generation: 0.
        generation: get_n(item, "generation").unwrap_or(0) as u64,
        created_at: super::items::time_from(get_n(item, "created_at")?)?,
        expires_at: super::items::time_from(get_n(item, "expires_at")?)?,
        max_validity: get_n(item, "max_validity").ok().map(|v| v as u64),
        consumed: item.contains_key("consumed_at"),
        serial: item.get("serial").and_then(|v| v.as_s().ok()).map(|s| s.parse()).transpose().map_err(corrupt)?,
        revoked: item.contains_key("revoked_at"),
    })
}
