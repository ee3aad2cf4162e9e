//! Refused requests, counted per source address and reason and written as one audit event per pair and interval, so
//! a flood of bad requests costs a bounded number of writes (at most [`MAX_KEYS`] + 1 per interval).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use super::{AuditEvent, Origin, Recorder, kind, outcome};

/// Most distinct (address, reason) pairs kept per interval; the rest are counted under address "*".
pub const MAX_KEYS: usize = 256;

#[derive(Default)]
struct Tally {
    count: u64,
    /// Counts per cause within the reason (an authentication refusal's `error::Refusal::label`, e.g. "revoked").
    causes: std::collections::BTreeMap<&'static str, u64>,
    /// One refusal's message, escaped and shortened: what an operator needs to recognise the cause.
    sample: String,
}

/// Counts refusals until [`drain`](Self::drain) turns them into events.
#[derive(Default)]
pub struct Refusals {
    counts: Mutex<HashMap<(String, &'static str), Tally>>,
}

impl Refusals {
    /// Counts one refused request from `address` for `reason` (a fixed string such as "unauthenticated") and its
    /// `cause` within it (a bounded label: the refusal's, or the reason again when there is no finer one).
    pub fn record(&self, address: Option<IpAddr>, reason: &'static str, cause: &'static str, message: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (address.map_or_else(|| "-".to_owned(), |a| a.to_string()), reason);
        if !counts.contains_key(&key) && counts.len() >= MAX_KEYS {
            key.0 = "*".into();
        }
        let tally = counts.entry(key).or_default();
        tally.count += 1;
        *tally.causes.entry(cause).or_default() += 1;
        if tally.sample.is_empty() {
            tally.sample = crate::ratelog::sanitize(message, 200);
        }
    }

    /// One `requests.refused` event per (address, reason) counted since the last call, and resets the counts.
    pub fn drain(&self, recorder: &Recorder, interval_seconds: u64) -> Vec<AuditEvent> {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        let origin = Origin::system("auth-layer");
        let mut events: Vec<AuditEvent> = counts
            .into_iter()
            .filter_map(|((address, reason), tally)| {
                let details = serde_json::json!({
                    "reason": reason,
                    "count": tally.count,
                    "causes": tally.causes,
                    "interval_seconds": interval_seconds,
                    "sample": tally.sample,
                });
                let mut event = recorder.event(&origin, kind::REQUESTS_REFUSED, &address, details)?;
                event.outcome = outcome::REFUSED.into();
                event.source_address = address;
                Some(event)
            })
            .collect();
        events.sort_by(|a, b| a.target.cmp(&b.target));
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_becomes_a_bounded_number_of_events() {
        let refusals = Refusals::default();
        for i in 0..10_000u32 {
            let address = IpAddr::from(i.to_be_bytes());
            refusals.record(Some(address), "unauthenticated", "no_certificate", "no client certificate");
            refusals.record(Some(address), "unauthenticated", "no_certificate", "no client certificate");
        }
        let events = refusals.drain(&Recorder::new("r", true), 60);
        assert_eq!(events.len(), MAX_KEYS + 1);
        let total: u64 = events
            .iter()
            .map(|e| serde_json::from_str::<serde_json::Value>(&e.details).unwrap()["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 20_000);
        assert!(refusals.drain(&Recorder::new("r", true), 60).is_empty());
    }
}
