//! What the agent serves: its node's workload entries with their current X.509-SVIDs, and the trust bundle. The sync
//! loop ([`super::sync`]) builds a new [`Snapshot`] whenever something changes and publishes it on a watch channel;
//! every open Workload API or SDS stream wakes on it and sends the full new state.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use time::OffsetDateTime;

use crate::model::{Process, Selector, selects_on_hash};

/// A workload entry as the agent knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub spiffe_id: String,
    pub selectors: Vec<Selector>,
    pub ttl_seconds: u64,
}

impl Entry {
    pub fn admits(&self, process: &Process) -> bool {
        crate::model::admits(&self.selectors, process)
    }
}

/// An X.509-SVID: its key lives in this process's memory only.
pub struct Svid {
    pub spiffe_id: String,
    /// Leaf first, then its intermediate (what the workload presents).
    pub chain_der: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// Lowercase hex, as CRLs and the store name it.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// When the agent received it (principald backdates `not_before` for clock skew, so its lifetime as served
    /// starts here).
    pub received_at: OffsetDateTime,
}

impl Svid {
    /// Half its lifetime as served: when the agent replaces it.
    pub fn rotate_at(&self) -> OffsetDateTime {
        self.received_at + (self.not_after - self.received_at) / 2
    }
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid").field("spiffe_id", &self.spiffe_id).field("serial", &self.serial).finish_non_exhaustive()
    }
}

/// The trust bundle: roots, CRLs and token keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle {
    pub trust_domain: String,
    pub roots_der: Vec<Vec<u8>>,
    pub crls_der: Vec<Vec<u8>>,
    /// JWKS JSON; empty when the server signs no JWT-SVIDs.
    pub jwks: Vec<u8>,
    pub epoch: u64,
}

impl Bundle {
    /// `spiffe://TRUST_DOMAIN`, the key of the Workload API's bundle maps.
    pub fn trust_domain_id(&self) -> String {
        format!("spiffe://{}", self.trust_domain)
    }

    /// The roots concatenated (the Workload API's `bundle` field).
    pub fn roots_concatenated(&self) -> Vec<u8> {
        self.roots_der.concat()
    }
}

/// One consistent view of everything the agent serves (cheap to clone: the SVIDs and the bundle are shared).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Entries by id.
    pub entries: BTreeMap<String, Entry>,
    /// Current SVIDs by entry id; an entry may have none yet (or none any more, while principald is unreachable and
    /// its last one expired).
    pub svids: BTreeMap<String, Arc<Svid>>,
    pub bundle: Arc<Bundle>,
    /// Serials the CRLs list (a revoked SVID is dropped at once, and replaced).
    pub revoked: Arc<HashSet<String>>,
    /// True once entries and bundle were read from principald at least once.
    pub loaded: bool,
}

impl Snapshot {
    /// The entries `process` matches, in id order.
    pub fn matching<'a>(&'a self, process: &'a Process) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.values().filter(move |e| e.admits(process))
    }

    /// Whether attesting a caller of `uid` needs its executable hashed: an entry for that uid selects on the hash.
    pub fn needs_sha256_for(&self, uid: u32) -> bool {
        self.entries.values().any(|e| selects_on_hash(&e.selectors) && e.selectors.contains(&Selector::Uid(uid)))
    }

    /// The unexpired, unrevoked SVIDs of `entries` with their entry ids, in the entries' order.
    pub fn svids_of<'a>(&'a self, entries: &[&'a Entry], now: OffsetDateTime) -> Vec<(&'a str, Arc<Svid>)> {
        entries
            .iter()
            .filter_map(|e| Some((e.id.as_str(), self.svids.get(&e.id)?.clone())))
            .filter(|(_, s)| s.not_after > now && !self.revoked.contains(&s.serial))
            .collect()
    }
}
