//! The CA's own records in the meta table: the claim (item `ca`: fingerprint and certificate) and one item per replica
//! intermediate (`intermediate#<fingerprint>`).

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use time::OffsetDateTime;

use super::items::{Item, get_n, get_s, n, opt_s, s, time_from};
use super::writes::{CA_KEY, EPOCH_KEY};
use super::{DynamoStore, sdk_error};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::model::CaClaim;
use crate::model::{IntermediateRecord, TokenKeyRecord};

const INTERMEDIATE_PREFIX: &str = "intermediate#";
const TOKEN_KEY_PREFIX: &str = "token_key#";

impl DynamoStore {
    pub(super) async fn claim(&self, claim: &CaClaim, replace: bool, audit: Option<&AuditEvent>) -> Result<CaClaim> {
        let mut put = Put::builder()
            .table_name(&self.meta)
            .item("key", s(CA_KEY))
            .item("fingerprint", s(&claim.fingerprint))
            .item("certificate", s(&claim.certificate_pem));
        if !replace {
            put = put.condition_expression("attribute_not_exists(#key)").expression_attribute_names("#key", "key");
        }
        let put = put.build().map_err(|e| Error::internal("ca put", e))?;
        match self.transact_audited(vec![TransactWriteItem::builder().put(put).build()], audit).await {
            Ok(()) => return Ok(claim.clone()),
            Err(failure) if failure.failed_condition(0) => {}
            Err(failure) => return Err(failure.into_error()),
        }
        let item = self
            .get_item(&self.meta, "key", CA_KEY)
            .await?
            .ok_or_else(|| Error::Unavailable("the CA record vanished while reading it; retry".into()))?;
        Ok(CaClaim {
            fingerprint: get_s(&item, "fingerprint")?.to_owned(),
            certificate_pem: opt_s(&item, "certificate").unwrap_or_default().to_owned(),
        })
    }

    /// Records `r` (once: a repeat changes nothing and records no event).
    pub(super) async fn record(&self, r: &IntermediateRecord, audit: Option<&AuditEvent>) -> Result<()> {
        let put = Put::builder()
            .table_name(&self.meta)
            .item("key", s(&format!("{INTERMEDIATE_PREFIX}{}", r.fingerprint)))
            .item("fingerprint", s(&r.fingerprint))
            .item("replica", s(&r.replica))
            .item("not_before", n(r.not_before.unix_timestamp()))
            .item("not_after", n(r.not_after.unix_timestamp()))
            .item("der", AttributeValue::B(Blob::new(r.der.clone())))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", "key")
            .build()
            .map_err(|e| Error::internal("intermediate put", e))?;
        match self.transact_audited(vec![TransactWriteItem::builder().put(put).build()], audit).await {
            Err(failure) if !failure.failed_condition(0) => Err(failure.into_error()),
            _ => Ok(()),
        }
    }

    /// The intermediates, from a strongly consistent Scan of the (small) meta table.
    pub(super) async fn intermediates(&self) -> Result<Vec<IntermediateRecord>> {
        self.scan_meta(INTERMEDIATE_PREFIX).await?.iter().map(intermediate_from).collect()
    }

    /// Every meta item whose key starts with `prefix` (strongly consistent Scan; the meta table stays small).
    pub(super) async fn scan_meta(&self, prefix: &str) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.meta)
                .consistent_read(true)
                .filter_expression("begins_with(#key, :prefix)")
                .expression_attribute_names("#key", "key")
                .expression_attribute_values(":prefix", s(prefix))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Scan", e))?;
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }

    pub(super) async fn revoked(&self) -> Result<std::collections::BTreeSet<String>> {
        let item = self.get_item(&self.meta, "key", EPOCH_KEY).await?;
        Ok(match item.as_ref().and_then(|i| i.get("revoked_intermediates")) {
            Some(AttributeValue::Ss(set)) => set.iter().cloned().collect(),
            _ => Default::default(),
        })
    }

    /// Conditional deletes (a record is removed only if it is still expired), so replicas racing here are harmless.
    /// A forgotten revoked intermediate leaves the revoked set on the epoch item after its record is gone (the set
    /// never names an intermediate whose certificates could still be presented).
    pub(super) async fn forget(&self, expired_before: OffsetDateTime) -> Result<u32> {
        let cutoff = expired_before.unix_timestamp();
        let mut deleted = 0;
        let mut forgotten_revoked = Vec::new();
        for record in self.intermediates().await? {
            if record.not_after >= expired_before {
                continue;
            }
            let key = format!("{INTERMEDIATE_PREFIX}{}", record.fingerprint);
            if self.delete_expired(&key, "not_after", cutoff).await? {
                deleted += 1;
            }
            if record.revoked_at.is_some() {
                forgotten_revoked.push(record.fingerprint);
            }
        }
        // Also those whose record an earlier run removed before it could update the set.
        let known: std::collections::BTreeSet<String> =
            self.intermediates().await?.into_iter().map(|r| r.fingerprint).collect();
        forgotten_revoked.extend(self.revoked().await?.into_iter().filter(|f| !known.contains(f)));
        forgotten_revoked.sort();
        forgotten_revoked.dedup();
        if !forgotten_revoked.is_empty() {
            self.client
                .update_item()
                .table_name(&self.meta)
                .key("key", s(EPOCH_KEY))
                .update_expression("DELETE revoked_intermediates :gone")
                .expression_attribute_values(":gone", AttributeValue::Ss(forgotten_revoked))
                .send()
                .await
                .map_err(|e| sdk_error("UpdateItem", e))?;
        }
        for item in self.scan_meta(TOKEN_KEY_PREFIX).await? {
            if get_n(&item, "expires_at")? < cutoff
                && self
                    .delete_expired(&format!("{TOKEN_KEY_PREFIX}{}", get_s(&item, "kid")?), "expires_at", cutoff)
                    .await?
            {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes the meta item `key` if its `attribute` is still below `cutoff`; whether it did.
    async fn delete_expired(&self, key: &str, attribute: &str, cutoff: i64) -> Result<bool> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.meta)
            .key("key", s(key))
            .condition_expression("#expiry < :cutoff")
            .expression_attribute_names("#expiry", attribute)
            .expression_attribute_values(":cutoff", n(cutoff))
            .send()
            .await;
        match delete {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(sdk_error("DeleteItem", e)),
        }
    }

    pub(super) async fn revoke(
        &self,
        fingerprint: &str,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<IntermediateRecord> {
        let key = format!("{INTERMEDIATE_PREFIX}{fingerprint}");
        let update = Update::builder()
            .table_name(&self.meta)
            .key("key", s(&key))
            .update_expression("SET revoked_at = :at")
            .condition_expression("attribute_exists(#key) AND attribute_not_exists(revoked_at)")
            .expression_attribute_names("#key", "key")
            .expression_attribute_values(":at", n(at.unix_timestamp()))
            .build()
            .map_err(|e| Error::internal("intermediate update", e))?;
        // The epoch item also lists revoked intermediates, so replicas learn them from one GetItem, not a Scan.
        let epoch = Update::builder()
            .table_name(&self.meta)
            .key("key", s(EPOCH_KEY))
            .update_expression(format!(
                "ADD epoch :one, revoked_intermediates :fingerprint, {} :fingerprint",
                super::issuer_sweep::ISSUER_SWEEPS
            ))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":fingerprint", AttributeValue::Ss(vec![fingerprint.to_owned()]))
            .build()
            .map_err(|e| Error::internal("epoch update", e))?;
        let writes = vec![
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder().update(epoch).build(),
        ];
        let refused = match self.transact_audited(writes, audit).await {
            Ok(()) => false,
            Err(failure) if failure.failed_condition(0) => true,
            Err(failure) => return Err(failure.into_error()),
        };
        let item = self
            .get_item(&self.meta, "key", &key)
            .await?
            .ok_or_else(|| Error::NotFound(format!("intermediate {fingerprint}")))?;
        if refused {
            return Err(Error::FailedPrecondition(format!("intermediate {fingerprint} is already revoked")));
        }
        // What it signed, for the CRLs; an interrupted sweep is finished by `finish_sweeps`.
        if let Err(error) = self.sweep_issuer(fingerprint, at).await {
            tracing::warn!(%error, "sweep of a revoked intermediate's certificates interrupted; finished in the background");
        }
        intermediate_from(&item)
    }
}

impl DynamoStore {
    /// Announces a token key (once: a repeat changes nothing and records no event).
    pub(super) async fn record_token_key(&self, k: &TokenKeyRecord, audit: Option<&AuditEvent>) -> Result<()> {
        let put = Put::builder()
            .table_name(&self.meta)
            .item("key", s(&format!("{TOKEN_KEY_PREFIX}{}", k.kid)))
            .item("kid", s(&k.kid))
            .item("replica", s(&k.replica))
            .item("public_jwk", s(&k.public_jwk))
            .item("created_at", n(k.created_at.unix_timestamp()))
            .item("expires_at", n(k.expires_at.unix_timestamp()))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", "key")
            .build()
            .map_err(|e| Error::internal("token key put", e))?;
        match self.transact_audited(vec![TransactWriteItem::builder().put(put).build()], audit).await {
            Err(failure) if !failure.failed_condition(0) => Err(failure.into_error()),
            _ => Ok(()),
        }
    }

    /// The unexpired token keys, from a strongly consistent Scan of the (small) meta table.
    pub(super) async fn token_keys(&self, at: OffsetDateTime) -> Result<Vec<TokenKeyRecord>> {
        let mut keys = Vec::new();
        for item in self.scan_meta(TOKEN_KEY_PREFIX).await? {
            let key = TokenKeyRecord {
                kid: get_s(&item, "kid")?.to_owned(),
                replica: get_s(&item, "replica")?.to_owned(),
                public_jwk: get_s(&item, "public_jwk")?.to_owned(),
                created_at: time_from(get_n(&item, "created_at")?)?,
                expires_at: time_from(get_n(&item, "expires_at")?)?,
            };
            if key.expires_at > at {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}

fn intermediate_from(item: &Item) -> Result<IntermediateRecord> {
    let der = match item.get("der") {
        Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
        _ => return Err(Error::internal("corrupt item in dynamodb store", "intermediate without der")),
    };
    Ok(IntermediateRecord {
        fingerprint: get_s(item, "fingerprint")?.to_owned(),
        replica: get_s(item, "replica")?.to_owned(),
        not_before: time_from(get_n(item, "not_before")?)?,
        not_after: time_from(get_n(item, "not_after")?)?,
        der,
        revoked_at: item.get("revoked_at").map(|_| get_n(item, "revoked_at").and_then(time_from)).transpose()?,
    })
}
