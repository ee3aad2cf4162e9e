//! The audit log: one event for every state change, written by the store in the same atomic write as the change, and
//! chained by hash so that an edited, deleted or reordered event is found by [`chain::verify`].
//!
//! The registry describes an event ([`AuditEvent`]) before it asks the store for the change; the store assigns its
//! position (chain and sequence number), links it to the previous event of that chain, and persists change and event
//! together or neither. Chains are sharded (one per SQLite file; several per replica on DynamoDB) so no single row or
//! item serialises every write. Events never hold key material or tokens: only ids, serials and fingerprints.

pub mod chain;
pub mod checkpoint;
pub mod checkpoint_source;
pub mod refusals;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What happened. Stable strings: SIEM rules match on them.
pub mod kind {
    pub const PRINCIPAL_CREATED: &str = "principal.created";
    pub const PRINCIPAL_SUSPENDED: &str = "principal.suspended";
    pub const PRINCIPAL_ACTIVATED: &str = "principal.activated";
    pub const PRINCIPAL_DELETED: &str = "principal.deleted";
    pub const CERTIFICATE_ISSUED: &str = "certificate.issued";
    pub const CERTIFICATE_RENEWED: &str = "certificate.renewed";
    pub const CERTIFICATE_REVOKED: &str = "certificate.revoked";
    pub const CA_CLAIMED: &str = "ca.claimed";
    pub const INTERMEDIATE_CREATED: &str = "intermediate.created";
    pub const INTERMEDIATE_REVOKED: &str = "intermediate.revoked";
    pub const TOKEN_KEY_CREATED: &str = "token_key.created";
    pub const TOKEN_ISSUED: &str = "token.issued";
    pub const ENROLLMENT_TOKEN_CREATED: &str = "enrollment_token.created";
    pub const ENROLLMENT_TOKEN_CONSUMED: &str = "enrollment_token.consumed";
    pub const ENROLLMENT_TOKEN_REVOKED: &str = "enrollment_token.revoked";
    pub const WORKLOAD_CREATED: &str = "workload.created";
    pub const WORKLOAD_DELETED: &str = "workload.deleted";
    pub const REQUESTS_REFUSED: &str = "requests.refused";
    /// A replica started with the audit log off: the changes it makes from now on are not recorded.
    pub const AUDIT_DISABLED: &str = "audit.disabled";
    /// A signed checkpoint of this replica's chain heads (the note itself in the details; the files outside the store
    /// are what `audit verify --checkpoints` trusts).
    pub const AUDIT_CHECKPOINT: &str = "audit.checkpoint";

    /// Every event type, for listings that refuse a type no event can have.
    pub const ALL: &[&str] = &[
        PRINCIPAL_CREATED,
        PRINCIPAL_SUSPENDED,
        PRINCIPAL_ACTIVATED,
        PRINCIPAL_DELETED,
        CERTIFICATE_ISSUED,
        CERTIFICATE_RENEWED,
        CERTIFICATE_REVOKED,
        CA_CLAIMED,
        INTERMEDIATE_CREATED,
        INTERMEDIATE_REVOKED,
        TOKEN_KEY_CREATED,
        TOKEN_ISSUED,
        ENROLLMENT_TOKEN_CREATED,
        ENROLLMENT_TOKEN_CONSUMED,
        ENROLLMENT_TOKEN_REVOKED,
        WORKLOAD_CREATED,
        WORKLOAD_DELETED,
        REQUESTS_REFUSED,
        AUDIT_DISABLED,
        AUDIT_CHECKPOINT,
    ];
}

/// The outcome of an event: changes are recorded only when they commit; refusals are aggregated.
pub mod outcome {
    pub const OK: &str = "ok";
    pub const REFUSED: &str = "refused";
}

/// Who made a change: the authenticated principal and the certificate it called with, or a process of principald
/// itself (`principal_type` "system", e.g. bootstrap or a replica rotating its intermediate).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub principal_id: String,
    pub principal_type: String,
    pub certificate_serial: String,
    pub certificate_sha256: String,
}

/// One audit event as the registry describes it. The store adds its position and hashes ([`Recorded`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// UUIDv7: ordered by time, unique.
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub kind: String,
    pub actor: Actor,
    /// The peer's address, "" for changes principald makes itself.
    pub source_address: String,
    /// The replica that wrote the event.
    pub replica: String,
    /// The gRPC method, "" outside a request.
    pub rpc: String,
    /// What the change is about: a principal id, a certificate serial, an intermediate fingerprint, an address.
    pub target: String,
    pub outcome: String,
    /// A JSON object with the event's particulars (never key material or tokens).
    pub details: String,
}

/// An event at its place in its chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub event: AuditEvent,
    pub chain: String,
    /// 1 for a chain's first event, then consecutive.
    pub seq: u64,
    /// The previous event's hash ([`chain::GENESIS`] for the first).
    pub prev_hash: String,
    /// [`chain::hash`] of this event.
    pub hash: String,
}

/// The last event of a chain, as the store's chain-head record holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub chain: String,
    pub seq: u64,
    pub hash: String,
}

/// Which events a listing returns; empty fields match anything. Times in milliseconds, `until` exclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub kind: Option<String>,
    /// Newest first (the most recent events), instead of oldest first.
    pub newest_first: bool,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.since_ms.is_none_or(|t| e.time_ms >= t)
            && self.until_ms.is_none_or(|t| e.time_ms < t)
            && self.actor.as_ref().is_none_or(|a| *a == e.actor.principal_id)
            && self.target.as_ref().is_none_or(|t| *t == e.target)
            && self.kind.as_ref().is_none_or(|k| *k == e.kind)
    }
}

/// Where a change comes from: the caller of a request (with its address and method), or principald itself.
#[derive(Clone, Debug)]
pub struct Origin {
    pub actor: Actor,
    pub address: Option<SocketAddr>,
    pub rpc: String,
}

impl Origin {
    /// A request's authenticated caller (`auth::Caller::actor`), its address and the RPC path.
    pub fn request(actor: Actor, address: Option<SocketAddr>, rpc: &str) -> Self {
        Self { actor, address, rpc: rpc.to_owned() }
    }

    /// A new worker enrolling as `id` (not authenticated yet: it proves itself with the enrollment token).
    pub fn enrolling(id: &crate::model::PrincipalId, address: Option<SocketAddr>) -> Self {
        let actor =
            Actor { principal_id: id.as_str().to_owned(), principal_type: "enrollment".into(), ..Actor::default() };
        Self { actor, address, rpc: "/principal.v1.PrincipalService/Enroll".into() }
    }

    /// principald itself, doing `what` (e.g. "bootstrap", "intermediate-rotation").
    pub fn system(what: &str) -> Self {
        let actor = Actor { principal_id: what.to_owned(), principal_type: "system".into(), ..Actor::default() };
        Self { actor, address: None, rpc: String::new() }
    }
}

/// Builds the events of one replica; `enabled = false` (benchmarks only) builds none.
#[derive(Clone, Debug)]
pub struct Recorder {
    replica: String,
    enabled: bool,
}

impl Recorder {
    pub fn new(replica: &str, enabled: bool) -> Self {
        Self { replica: replica.to_owned(), enabled }
    }

    /// The event `kind` about `target` made by `origin`, with `details` (a JSON object).
    pub fn event(&self, origin: &Origin, kind: &str, target: &str, details: serde_json::Value) -> Option<AuditEvent> {
        let time_ms = now_ms();
        self.enabled.then(|| AuditEvent {
            id: uuid_v7_at(time_ms),
            time_ms,
            kind: kind.to_owned(),
            actor: origin.actor.clone(),
            source_address: origin.address.map(|a| a.to_string()).unwrap_or_default(),
            replica: self.replica.clone(),
            rpc: origin.rpc.clone(),
            target: target.to_owned(),
            outcome: outcome::OK.to_owned(),
            details: details.to_string(),
        })
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

pub fn now_ms() -> i64 {
    let t = OffsetDateTime::now_utc();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A UUIDv7 (RFC 9562) of now.
pub fn uuid_v7() -> String {
    uuid_v7_at(now_ms())
}

/// A UUIDv7 of millisecond `ms` (RFC 9562): 48 bits of Unix milliseconds, version, a 12-bit counter that keeps the
/// ids of this process strictly increasing (method 1 of section 6.2), variant, 62 random bits; lowercase, hyphenated.
pub fn uuid_v7_at(ms: i64) -> String {
    static LAST: std::sync::Mutex<(u64, u16)> = std::sync::Mutex::new((0, 0));
    let (ms, counter) = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let ms = u64::try_from(ms).unwrap_or(0);
        *last = if ms > last.0 {
            (ms, 0)
        } else if last.1 < 0x0fff {
            (last.0, last.1 + 1)
        } else {
            (last.0 + 1, 0)
        };
        *last
    };
    let mut bytes = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6..8].copy_from_slice(&(0x7000 | counter).to_be_bytes());
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    let hex = crate::model::hex(&bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The smallest UUIDv7 string of millisecond `ms`: events at or after `ms` sort at or after it.
pub fn uuid_v7_floor(ms: i64) -> String {
    let ms = u64::try_from(ms.max(0)).unwrap_or(0).min((1 << 48) - 1);
    let hex = format!("{ms:012x}");
    format!("{}-{}-7000-8000-000000000000", &hex[..8], &hex[8..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_is_time_ordered_and_well_formed() {
        let a = uuid_v7();
        let ids: Vec<String> = (0..10_000).map(|_| uuid_v7()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing within a process");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        let floor = uuid_v7_floor(now_ms());
        assert!(floor > a && floor <= uuid_v7(), "{floor}");
    }
}
