//! Hash chains over audit events, and their verification.
//!
//! `hash = hex(SHA-256(prev_hash || "\n" || canonical))`, where `canonical` is the compact JSON array
//! `[chain, seq, id, time_ms, kind, actor.principal_id, actor.principal_type, actor.certificate_serial,
//! actor.certificate_sha256, source_address, replica, rpc, target, outcome, details]` (strings as JSON strings,
//! numbers as JSON numbers, no spaces). The chain and the position are hashed too, so an event moved to another place
//! no longer matches. A chain's head record holds its last position and hash: deleting the newest events is caught
//! there.

use std::collections::BTreeMap;

use super::{AuditEvent, ChainHead, Recorded};

/// The `prev_hash` of a chain's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of `event` at position `seq` of `chain`, after `prev_hash`.
pub fn hash(chain: &str, seq: u64, prev_hash: &str, event: &AuditEvent) -> String {
    let canonical = serde_json::json!([
        chain,
        seq,
        event.id,
        event.time_ms,
        event.kind,
        event.actor.principal_id,
        event.actor.principal_type,
        event.actor.certificate_serial,
        event.actor.certificate_sha256,
        event.source_address,
        event.replica,
        event.rpc,
        event.target,
        event.outcome,
        event.details,
    ]);
    let mut input = Vec::with_capacity(512);
    input.extend_from_slice(prev_hash.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(canonical.to_string().as_bytes());
    crate::model::sha256_hex(&input)
}

/// `event` placed after `head` (`None`: the chain's first event).
pub fn seal(event: AuditEvent, chain: &str, head: Option<&ChainHead>) -> Recorded {
    let (seq, prev_hash) = head.map_or((1, GENESIS.to_owned()), |h| (h.seq + 1, h.hash.clone()));
    let hash = hash(chain, seq, &prev_hash, &event);
    Recorded { event, chain: chain.to_owned(), seq, prev_hash, hash }
}

/// The first place where a chain does not hold together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub chain: String,
    /// The position where the problem shows (the expected position for a missing event).
    pub seq: u64,
    pub problem: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chain {:?} breaks at position {}: {}", self.chain, self.seq, self.problem)
    }
}

/// What a verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub chains: usize,
    pub events: u64,
    /// Every broken chain's first break, by chain name.
    pub broken: Vec<Broken>,
}

/// Checks chains event by event: consecutive positions from 1, each `prev_hash` the previous event's hash, each hash
/// recomputed from the event's content, and each chain's last event equal to its head. Feed each chain's events in
/// position order (chains may interleave); memory stays one entry per chain whatever the log's size.
pub struct Verifier {
    heads: BTreeMap<String, ChainHead>,
    chains: BTreeMap<String, Progress>,
    events: u64,
}

#[derive(Default)]
struct Progress {
    last: u64,
    hash: String,
    broken: Option<Broken>,
}

impl Verifier {
    /// `heads`: every chain's head record, read before the events (events written later are ignored).
    pub fn new(heads: &[ChainHead]) -> Self {
        let heads = heads.iter().map(|h| (h.chain.clone(), h.clone())).collect();
        Self { heads, chains: BTreeMap::new(), events: 0 }
    }

    pub fn push(&mut self, e: &Recorded) {
        if self.heads.get(&e.chain).is_some_and(|h| e.seq > h.seq) {
            return; // written after the heads were read: not part of this verification
        }
        self.events += 1;
        let progress = self
            .chains
            .entry(e.chain.clone())
            .or_insert_with(|| Progress { hash: GENESIS.into(), ..Progress::default() });
        if progress.broken.is_some() {
            return;
        }
        let broken = |seq: u64, problem: String| Some(Broken { chain: e.chain.clone(), seq, problem });
        let expected = progress.last + 1;
        progress.broken = if e.seq != expected {
            broken(expected, format!("event {expected} is missing (next found: {})", e.seq))
        } else if e.prev_hash != progress.hash {
            broken(e.seq, "its previous-hash link does not match the event before it".into())
        } else if hash(&e.chain, e.seq, &e.prev_hash, &e.event) != e.hash {
            broken(e.seq, format!("event {} was altered (its content does not match its hash)", e.event.id))
        } else {
            None
        };
        progress.last = e.seq;
        progress.hash = e.hash.clone();
    }

    pub fn finish(mut self) -> Report {
        for chain in self.heads.keys() {
            self.chains
                .entry(chain.clone())
                .or_insert_with(|| Progress { hash: GENESIS.into(), ..Progress::default() });
        }
        let mut report = Report { chains: self.chains.len(), events: self.events, broken: Vec::new() };
        for (chain, progress) in self.chains {
            if let Some(broken) = progress.broken {
                report.broken.push(broken);
                continue;
            }
            let broken = |seq: u64, problem: String| Broken { chain: chain.clone(), seq, problem };
            let last = progress.last;
            match self.heads.get(&chain) {
                None => report.broken.push(broken(last, "the chain has no head record".into())),
                Some(h) if h.seq > last => {
                    report.broken.push(broken(last + 1, format!("events {}..={} are missing", last + 1, h.seq)))
                }
                Some(h) if h.hash != progress.hash => {
                    report.broken.push(broken(last, "the last event does not match the chain head".into()))
                }
                Some(_) => {}
            }
        }
        report
    }
}

/// Chains that hold events but have no head record (the head was deleted, which also hides the chain from a
/// head-driven read): `seen` is every (chain, position) found by a listing of all events, in any order.
pub fn headless<'a>(heads: &[ChainHead], seen: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<Broken> {
    let mut found: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (chain, seq) in seen {
        if heads.iter().all(|h| h.chain != chain) {
            let entry = found.entry(chain).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(seq);
        }
    }
    found
        .into_iter()
        .map(|(chain, (count, last))| Broken {
            chain: chain.to_owned(),
            seq: last,
            problem: format!("{count} events (up to position {last}) but no head record: the chain's head was deleted"),
        })
        .collect()
}

/// [`Verifier`] over events in any order.
pub fn verify(heads: &[ChainHead], events: impl IntoIterator<Item = Recorded>) -> Report {
    let mut events: Vec<Recorded> = events.into_iter().collect();
    events.sort_by(|a, b| a.chain.cmp(&b.chain).then(a.seq.cmp(&b.seq)));
    let mut verifier = Verifier::new(heads);
    for e in &events {
        verifier.push(e);
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditEvent};

    fn event(n: u32) -> AuditEvent {
        AuditEvent {
            id: format!("id-{n}"),
            time_ms: 1_000 + i64::from(n),
            kind: "principal.created".into(),
            actor: Actor { principal_id: "admin".into(), principal_type: "admin".into(), ..Actor::default() },
            source_address: "127.0.0.1:5".into(),
            replica: "r".into(),
            rpc: "/x".into(),
            target: format!("w-{n}"),
            outcome: "ok".into(),
            details: "{}".into(),
        }
    }

    fn chain_of(n: u32) -> (Vec<Recorded>, ChainHead) {
        let mut head: Option<ChainHead> = None;
        let mut out = Vec::new();
        for i in 1..=n {
            let r = seal(event(i), "c", head.as_ref());
            head = Some(ChainHead { chain: "c".into(), seq: r.seq, hash: r.hash.clone() });
            out.push(r);
        }
        (out, head.unwrap())
    }

    #[test]
    fn intact_chains_verify() {
        let (events, head) = chain_of(5);
        let report = verify(&[head], events);
        assert_eq!((report.chains, report.events, report.broken), (1, 5, vec![]));
    }

    #[test]
    fn edits_deletions_reorders_and_truncations_are_found_at_their_position() {
        let (events, head) = chain_of(5);
        let first_break = |events: Vec<Recorded>| verify(std::slice::from_ref(&head), events).broken[0].seq;

        let mut edited = events.clone();
        edited[2].event.target = "someone-else".into();
        assert_eq!(first_break(edited), 3);

        let mut deleted = events.clone();
        deleted.remove(1);
        assert_eq!(first_break(deleted), 2);

        let mut swapped = events.clone();
        let (a, b) = (swapped[1].event.clone(), swapped[3].event.clone());
        swapped[1].event = b;
        swapped[3].event = a;
        assert_eq!(first_break(swapped), 2);

        let mut truncated = events.clone();
        truncated.pop();
        assert_eq!(first_break(truncated), 5);

        let mut renumbered = events;
        renumbered[4].seq = 7;
        assert_eq!(first_break(renumbered), 5);
    }
}
