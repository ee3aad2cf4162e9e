//! The transaction items the DynamoDB store composes its atomic writes from: epoch bumps (with the pending-sweep
//! record), revocations, generation raises and the principal checks every issuance (and workload creation) makes.

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, TransactWriteItem, Update};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::{PrincipalId, PrincipalStatus, PrincipalType, RevocationReason, Serial};
use crate::store::dynamodb::items::{n, n_u64, s};

/// Key of the revocation epoch item in the meta table; it also holds the pending sweeps.
pub const EPOCH_KEY: &str = "revocation_epoch";
/// Key of the item recording the CA this store belongs to.
pub const CA_KEY: &str = "ca";

/// A sweep waiting to run: revoke every certificate of `principal` for `reason`. Recorded on the epoch item in the
/// write that starts it and removed when it has finished, so an interrupted sweep is found and finished later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sweep {
    pub principal: PrincipalId,
    pub reason: RevocationReason,
}

impl Sweep {
    pub fn encode(&self) -> String {
        format!("{}#{}", self.principal, self.reason.code())
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (id, code) = text.rsplit_once('#')?;
        Some(Self { principal: id.parse().ok()?, reason: RevocationReason::from_code(code.parse().ok()?)? })
    }
}

fn built<T, E: std::fmt::Display>(what: &str, result: std::result::Result<T, E>) -> Result<T> {
    result.map_err(|e| Error::internal(what, e))
}

/// Advances the revocation epoch, and records `sweep` as pending if given.
pub fn epoch_bump(meta: &str, sweep: Option<&Sweep>) -> Result<TransactWriteItem> {
    let mut update =
        Update::builder().table_name(meta).key("key", s(EPOCH_KEY)).expression_attribute_values(":one", n(1));
    update = match sweep {
        Some(sweep) => update
            .update_expression("ADD epoch :one, sweeps :sweep")
            .expression_attribute_values(":sweep", AttributeValue::Ss(vec![sweep.encode()])),
        None => update.update_expression("ADD epoch :one"),
    };
    Ok(TransactWriteItem::builder().update(built("epoch update", update.build())?).build())
}

/// Removes a finished sweep from the pending set.
pub fn sweep_done(meta: &str, sweep: &Sweep) -> Result<Update> {
    built(
        "sweep update",
        Update::builder()
            .table_name(meta)
            .key("key", s(EPOCH_KEY))
            .update_expression("DELETE sweeps :sweep")
            .expression_attribute_values(":sweep", AttributeValue::Ss(vec![sweep.encode()]))
            .build(),
    )
}

/// Raises the principal's generation (its revocation floor), if the principal exists.
pub fn raise_generation(principals: &str, id: &PrincipalId) -> Result<TransactWriteItem> {
    let update = Update::builder()
        .table_name(principals)
        .key("id", s(id.as_str()))
        .condition_expression("attribute_exists(id)")
        .update_expression("ADD generation :one")
        .expression_attribute_values(":one", n(1));
    Ok(TransactWriteItem::builder().update(built("generation update", update.build())?).build())
}

/// A condition that the item's `generation` is `generation` (items without the attribute are at 0).
fn generation_is(generation: u64) -> &'static str {
    if generation == 0 { "(attribute_not_exists(generation) OR generation = :gen)" } else { "generation = :gen" }
}

/// Checks the principal exists, is ACTIVE, has `kind` and is still at `generation`.
pub fn principal_issuable(
    principals: &str,
    id: &PrincipalId,
    kind: PrincipalType,
    generation: u64,
) -> Result<TransactWriteItem> {
    let check = ConditionCheck::builder()
        .table_name(principals)
        .key("id", s(id.as_str()))
        .condition_expression(format!(
            "attribute_exists(id) AND #status = :active AND #type = :type AND {}",
            generation_is(generation)
        ))
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#type", "type")
        .expression_attribute_values(":active", s(PrincipalStatus::Active.as_str()))
        .expression_attribute_values(":type", s(kind.as_str()))
        .expression_attribute_values(":gen", n_u64(generation));
    Ok(TransactWriteItem::builder().condition_check(built("condition check", check.build())?).build())
}

/// Checks the principal exists, is ACTIVE and has `kind` (whatever its generation).
pub fn principal_active(principals: &str, id: &PrincipalId, kind: PrincipalType) -> Result<TransactWriteItem> {
    let check = ConditionCheck::builder()
        .table_name(principals)
        .key("id", s(id.as_str()))
        .condition_expression("attribute_exists(id) AND #status = :active AND #type = :type")
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#type", "type")
        .expression_attribute_values(":active", s(PrincipalStatus::Active.as_str()))
        .expression_attribute_values(":type", s(kind.as_str()));
    Ok(TransactWriteItem::builder().condition_check(built("condition check", check.build())?).build())
}

/// Checks the principal exists (in any status).
pub fn principal_exists(principals: &str, id: &PrincipalId) -> Result<TransactWriteItem> {
    let check = ConditionCheck::builder()
        .table_name(principals)
        .key("id", s(id.as_str()))
        .condition_expression("attribute_exists(id)");
    Ok(TransactWriteItem::builder().condition_check(built("condition check", check.build())?).build())
}

/// Marks `parent` renewed by `child` for `key_sha256`, if it belongs to `owner`, is unrevoked, is at `generation` (not
/// void) and was not renewed before.
pub fn mark_renewed(
    certificates: &str,
    parent: &Serial,
    owner: &PrincipalId,
    generation: u64,
    child: &Serial,
    key_sha256: &str,
) -> Result<TransactWriteItem> {
    let update = Update::builder()
        .table_name(certificates)
        .key("serial", s(parent.as_str()))
        .condition_expression(format!(
            "attribute_exists(serial) AND principal_id = :owner AND attribute_not_exists(revoked_at) \
             AND attribute_not_exists(renewed_by) AND {}",
            generation_is(generation)
        ))
        .update_expression("SET renewed_by = :child, renewal_key = :key")
        .expression_attribute_values(":owner", s(owner.as_str()))
        .expression_attribute_values(":gen", n_u64(generation))
        .expression_attribute_values(":child", s(child.as_str()))
        .expression_attribute_values(":key", s(key_sha256));
    Ok(TransactWriteItem::builder().update(built("renewal update", update.build())?).build())
}

/// Revokes `serial` if it exists and is unrevoked (and, with `owner`, belongs to that principal).
pub fn revoke(
    certificates: &str,
    serial: &Serial,
    owner: Option<&PrincipalId>,
    reason: RevocationReason,
    at: OffsetDateTime,
) -> Result<TransactWriteItem> {
    let mut update = Update::builder()
        .table_name(certificates)
        .key("serial", s(serial.as_str()))
        .update_expression("SET revoked_at = :at, revocation_reason = :reason, revoked_partition = :partition")
        .expression_attribute_values(":at", n(at.unix_timestamp()))
        .expression_attribute_values(":reason", n(i64::from(reason.code())))
        .expression_attribute_values(
            ":partition",
            s(&crate::pki::crl::partition_name(crate::pki::crl::partition_of(serial))),
        );
    // Unrevoked, or only withdrawn with its principal's other certificates: an explicit revocation (a key compromise
    // found later) replaces a withdrawal.
    let unrevoked = "attribute_exists(serial) AND (attribute_not_exists(revoked_at) OR revocation_reason = :withdrawn)";
    update =
        update.expression_attribute_values(":withdrawn", n(i64::from(RevocationReason::PrivilegeWithdrawn.code())));
    update = match owner {
        Some(owner) => update
            .condition_expression(format!("{unrevoked} AND principal_id = :owner"))
            .expression_attribute_values(":owner", s(owner.as_str())),
        None => update.condition_expression(unrevoked),
    };
    Ok(TransactWriteItem::builder().update(built("revoke update", update.build())?).build())
}

/// Revokes `serial` unless it is revoked already, in which case the first revocation's time and reason stay: never
/// fails a transaction over a certificate revoked concurrently.
pub fn revoke_if_unrevoked(
    certificates: &str,
    serial: &Serial,
    reason: RevocationReason,
    at: OffsetDateTime,
) -> Result<TransactWriteItem> {
    let update = Update::builder()
        .table_name(certificates)
        .key("serial", s(serial.as_str()))
        .condition_expression("attribute_exists(serial)")
        .update_expression(
            "SET revoked_at = if_not_exists(revoked_at, :at), revocation_reason = if_not_exists(revocation_reason, :reason), \
             revoked_partition = :partition",
        )
        .expression_attribute_values(":at", n(at.unix_timestamp()))
        .expression_attribute_values(":reason", n(i64::from(reason.code())))
        .expression_attribute_values(":partition", s(&crate::pki::crl::partition_name(crate::pki::crl::partition_of(serial))));
    Ok(TransactWriteItem::builder().update(built("revoke update", update.build())?).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_round_trip() {
        let sweep = Sweep { principal: "w-1.a".parse().unwrap(), reason: RevocationReason::KeyCompromise };
        assert_eq!(Sweep::decode(&sweep.encode()), Some(sweep));
        assert_eq!(Sweep::decode("nohash"), None);
        assert_eq!(Sweep::decode("w1#77"), None);
    }
}
