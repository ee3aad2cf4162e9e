//! Logging for events a client can cause at will (refused requests, connections refused at a cap, failed accepts):
//! a counter, and at most one line per interval carrying how many happened since the last one. Strings a client
//! controls go through [`sanitize`] first.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts events and says when a line is due.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    since_line: AtomicU64,
    total: AtomicU64,
    last_line: Mutex<Option<Instant>>,
}

impl RateLimitedLog {
    /// At most one line per this interval.
    pub const INTERVAL: Duration = Duration::from_secs(10);

    /// Counts one event. Once per interval, returns how many events there were since the last line (this one
    /// included): the caller logs them then. Never blocks.
    pub fn tick(&self) -> Option<u64> {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.since_line.fetch_add(1, Ordering::Relaxed);
        let Ok(mut last) = self.last_line.try_lock() else { return None };
        if last.is_some_and(|at| at.elapsed() < Self::INTERVAL) {
            return None;
        }
        *last = Some(Instant::now());
        Some(self.since_line.swap(0, Ordering::Relaxed))
    }

    /// Events counted since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// `text` with control and non-ASCII characters escaped, cut to `max` characters.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out: String = text.chars().flat_map(char::escape_default).take(max).collect();
    if text.chars().flat_map(char::escape_default).nth(max).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_strings_are_escaped_and_truncated() {
        assert_eq!(sanitize("/a/b", 10), "/a/b");
        assert_eq!(sanitize("x\n\u{1b}[31m", 40), "x\\n\\u{1b}[31m");
        assert_eq!(sanitize(&"a".repeat(500), 8), "aaaaaaaa...");
    }

    #[test]
    fn a_flood_gives_one_line_with_its_count() {
        let log = RateLimitedLog::default();
        assert_eq!(log.tick(), Some(1), "the first event is logged");
        let lines: Vec<u64> = (0..1000).filter_map(|_| log.tick()).collect();
        assert!(lines.is_empty(), "no line within the interval: {lines:?}");
        assert_eq!(log.total(), 1001);
        *log.last_line.lock().unwrap() = Some(Instant::now() - RateLimitedLog::INTERVAL);
        assert_eq!(log.tick(), Some(1001), "the next line carries everything since the last one");
    }
}
