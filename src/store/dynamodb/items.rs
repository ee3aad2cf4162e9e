//! Item shapes: domain values <-> DynamoDB attribute maps, and the opaque page tokens.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::{CertificateRecord, Principal, PrincipalId, Renewal, Revocation, RevocationReason};

pub type Item = HashMap<String, AttributeValue>;

/// Principals are spread over this many index partitions per type, so no single index key takes every write.
pub const TYPE_SHARDS: u64 = 8;

/// Certificate items live [`EXPIRED_RETENTION`] after they expire, then DynamoDB's TTL deletes them (which can lag by
/// up to 48 hours, so reads treat items past `expires_at` as gone).
pub use crate::store::EXPIRED_RETENTION;

/// The index partition of a principal: `<type>#<shard>`, shard from a stable hash of the id.
pub fn type_shard(kind: &str, id: &PrincipalId) -> String {
    format!("{kind}#{}", fnv1a(id.as_str().as_bytes()) % TYPE_SHARDS)
}

/// Sort key of a certificate within its principal: zero-padded not_before, then the serial (newest first when
/// read backwards; the serial breaks ties).
pub fn issued_key(cert: &CertificateRecord) -> String {
    format!("{:012}#{}", cert.not_before.unix_timestamp().max(0), cert.serial)
}

pub fn principal_item(p: &Principal) -> Item {
    let mut item = Item::new();
    item.insert("id".into(), s(p.id.as_str()));
    item.insert("type".into(), s(p.kind.as_str()));
    item.insert("status".into(), s(p.status.as_str()));
    item.insert("description".into(), s(&p.description));
    if let Some(email) = &p.email {
        item.insert("email".into(), s(email));
    }
    if let Some(reason) = &p.status_reason {
        item.insert("status_reason".into(), s(reason));
    }
    item.insert("created_at".into(), n(p.created_at.unix_timestamp()));
    item.insert("updated_at".into(), n(p.updated_at.unix_timestamp()));
    item.insert("type_shard".into(), s(&type_shard(p.kind.as_str(), &p.id)));
    item.insert("generation".into(), n_u64(p.generation));
    item
}

pub fn principal_from(item: &Item) -> Result<Principal> {
    Ok(Principal {
        id: get_s(item, "id")?.parse().map_err(corrupt)?,
        kind: get_s(item, "type")?.parse().map_err(corrupt)?,
        status: get_s(item, "status")?.parse().map_err(corrupt)?,
        description: get_s(item, "description")?.to_owned(),
        email: opt_s(item, "email").map(str::to_owned),
        status_reason: opt_s(item, "status_reason").map(str::to_owned),
        created_at: time_from(get_n(item, "created_at")?)?,
        updated_at: time_from(get_n(item, "updated_at")?)?,
        generation: opt_generation(item)?,
    })
}

pub fn certificate_item(c: &CertificateRecord) -> Item {
    let mut item = Item::new();
    item.insert("serial".into(), s(c.serial.as_str()));
    item.insert("principal_id".into(), s(c.principal_id.as_str()));
    item.insert("principal_type".into(), s(c.principal_type.as_str()));
    item.insert("issued_key".into(), s(&issued_key(c)));
    item.insert("not_before".into(), n(c.not_before.unix_timestamp()));
    item.insert("not_after".into(), n(c.not_after.unix_timestamp()));
    item.insert("expires_at".into(), n((c.not_after + EXPIRED_RETENTION).unix_timestamp()));
    item.insert("sha256".into(), s(&c.sha256_fingerprint));
    item.insert("der".into(), AttributeValue::B(Blob::new(c.der.clone())));
    if let Some(r) = c.revocation {
        item.insert("revoked_at".into(), n(r.at.unix_timestamp()));
        item.insert("revocation_reason".into(), n(i64::from(r.reason.code())));
        let partition = crate::pki::crl::partition_of(&c.serial);
        item.insert("revoked_partition".into(), s(&crate::pki::crl::partition_name(partition)));
    }
    item.insert("generation".into(), n_u64(c.generation));
    if let Some(r) = &c.renewal {
        item.insert("renewed_by".into(), s(r.serial.as_str()));
        item.insert("renewal_key".into(), s(&r.key_sha256));
    }
    if !c.issuer.is_empty() {
        item.insert("issuer".into(), s(&c.issuer));
    }
    item
}

pub fn certificate_from(item: &Item) -> Result<CertificateRecord> {
    let revocation = match (item.get("revoked_at"), item.get("revocation_reason")) {
        (Some(_), Some(_)) => {
            let code = get_n(item, "revocation_reason")?;
            let reason = u8::try_from(code)
                .ok()
                .and_then(RevocationReason::from_code)
                .ok_or_else(|| corrupt(format!("revocation reason {code}")))?;
            Some(Revocation { at: time_from(get_n(item, "revoked_at")?)?, reason })
        }
        _ => None,
    };
    let der = match item.get("der") {
        Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
        _ => return Err(corrupt("certificate item without der")),
    };
    Ok(CertificateRecord {
        serial: get_s(item, "serial")?.parse().map_err(corrupt)?,
        principal_id: get_s(item, "principal_id")?.parse().map_err(corrupt)?,
        principal_type: get_s(item, "principal_type")?.parse().map_err(corrupt)?,
        not_before: time_from(get_n(item, "not_before")?)?,
        not_after: time_from(get_n(item, "not_after")?)?,
        sha256_fingerprint: get_s(item, "sha256")?.to_owned(),
        der,
        revocation,
        generation: opt_generation(item)?,
        renewal: match (opt_s(item, "renewed_by"), opt_s(item, "renewal_key")) {
            (Some(serial), Some(key)) => {
                Some(Renewal { serial: serial.parse().map_err(corrupt)?, key_sha256: key.to_owned() })
            }
            _ => None,
        },
        issuer: opt_s(item, "issuer").unwrap_or_default().to_owned(),
    })
}

/// Whether a certificate item is past its TTL: DynamoDB may not have deleted it yet, but it is gone for readers.
pub fn past_ttl(item: &Item, now: OffsetDateTime) -> bool {
    get_n(item, "expires_at").is_ok_and(|at| at < now.unix_timestamp())
}

pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn n_u64(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The `generation` attribute; items written before it existed are at generation 0.
fn opt_generation(item: &Item) -> Result<u64> {
    match item.get("generation") {
        None => Ok(0),
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| corrupt("attribute generation is not an integer")),
        Some(_) => Err(corrupt("attribute generation is not a number")),
    }
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    opt_s(item, name).ok_or_else(|| corrupt(format!("missing string attribute {name}")))
}

pub(super) fn opt_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

pub fn get_n(item: &Item, name: &str) -> Result<i64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| corrupt(format!("attribute {name} is not an integer"))),
        _ => Err(corrupt(format!("missing number attribute {name}"))),
    }
}

pub(super) fn time_from(secs: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(corrupt)
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::internal("corrupt item in dynamodb store", e)
}

/// 64-bit FNV-1a: stable across processes and versions (unlike std's SipHash keys).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A revoked certificate as the `by_revocation` index projects it.
pub fn revoked_entry_from(item: &Item) -> Result<crate::pki::crl::RevokedEntry> {
    let code = get_n(item, "revocation_reason")?;
    Ok(crate::pki::crl::RevokedEntry {
        serial: get_s(item, "serial")?.parse().map_err(corrupt)?,
        revoked_at: time_from(get_n(item, "revoked_at")?)?,
        reason: u8::try_from(code)
            .ok()
            .and_then(RevocationReason::from_code)
            .ok_or_else(|| corrupt(format!("revocation reason {code}")))?,
        not_after: time_from(get_n(item, "not_after")?)?,
        issuer: opt_s(item, "issuer").unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PrincipalType;
    use crate::store::conformance;

    #[test]
    fn items_round_trip() {
        let p = conformance::principal("w1", PrincipalType::Worker);
        assert_eq!(principal_from(&principal_item(&p)).unwrap(), p);
        let mut c = conformance::certificate("0a", &p, p.created_at);
        assert_eq!(certificate_from(&certificate_item(&c)).unwrap(), c);
        c.revocation = Some(Revocation { at: p.created_at, reason: RevocationReason::Superseded });
        c.generation = 3;
        c.renewal = Some(Renewal { serial: "0b".parse().unwrap(), key_sha256: "ab".repeat(32) });
        assert_eq!(certificate_from(&certificate_item(&c)).unwrap(), c);
    }

    #[test]
    fn shards_spread_and_are_stable() {
        let id: PrincipalId = "worker-1".parse().unwrap();
        assert_eq!(type_shard("worker", &id), type_shard("worker", &id));
        let shards: std::collections::HashSet<String> =
            (0..200).map(|i| type_shard("worker", &format!("w{i}").parse().unwrap())).collect();
        assert_eq!(shards.len() as u64, TYPE_SHARDS);
    }
}
