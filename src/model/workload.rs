//! Workload entries: which local processes on which node receive certificates (SVIDs) for which principal.
//!
//! An entry names a principal (its id is the principal's id), the node whose agent may obtain certificates for it,
//! and selectors that a calling process must all match. Selectors follow SPIRE's `unix` workload attestor:
//! `unix:uid:N`, `unix:gid:N`, `unix:path:/abs/path` and `unix:sha256:HEX` (of the executable).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use time::OffsetDateTime;

use super::{PrincipalId, PrincipalType};
use crate::error::Error;

/// Most selectors an entry may have.
pub const MAX_SELECTORS: usize = 16;
/// Longest executable path a selector may name.
const MAX_PATH: usize = 1024;

/// One condition on the calling process.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    Uid(u32),
    Gid(u32),
    /// The executable's absolute path, as /proc/PID/exe shows it.
    Path(String),
    /// Lowercase hex SHA-256 of the executable.
    Sha256(String),
}

impl FromStr for Selector {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let shown: String = s.chars().take(80).collect();
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "invalid selector {shown:?}: {why} (use unix:uid:N, unix:gid:N, unix:path:/ABSOLUTE/PATH or \
                 unix:sha256:HEX)"
            ))
        };
        let Some(rest) = s.strip_prefix("unix:") else { return Err(bad("only unix selectors are known")) };
        let (kind, value) = rest.split_once(':').ok_or_else(|| bad("no value"))?;
        let number = |v: &str| v.parse::<u32>().map_err(|_| bad("not a number"));
        match kind {
            "uid" => Ok(Self::Uid(number(value)?)),
            "gid" => Ok(Self::Gid(number(value)?)),
            "path" => {
                let plain = value.starts_with('/')
                    && value.len() <= MAX_PATH
                    && !value.chars().any(char::is_control)
                    && !value.split('/').any(|part| part == "." || part == "..");
                if plain { Ok(Self::Path(value.to_owned())) } else { Err(bad("not a plain absolute path")) }
            }
            "sha256" => {
                let hex = value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit());
                if hex { Ok(Self::Sha256(value.to_ascii_lowercase())) } else { Err(bad("not 64 hex digits")) }
            }
            _ => Err(bad("unknown kind")),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uid(n) => write!(f, "unix:uid:{n}"),
            Self::Gid(n) => write!(f, "unix:gid:{n}"),
            Self::Path(p) => write!(f, "unix:path:{p}"),
            Self::Sha256(h) => write!(f, "unix:sha256:{h}"),
        }
    }
}

/// What the agent learned about a calling process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// The executable, when it could be read (another user's process may hide it).
    pub path: Option<String>,
    /// SHA-256 of the executable, when it was asked for and could be read.
    pub sha256: Option<String>,
}

impl Selector {
    pub fn matches(&self, process: &Process) -> bool {
        match self {
            Self::Uid(uid) => process.uid == *uid,
            Self::Gid(gid) => process.gid == *gid,
            Self::Path(path) => process.path.as_deref() == Some(path.as_str()),
            Self::Sha256(hash) => process.sha256.as_deref() == Some(hash.as_str()),
        }
    }
}

/// Whether `selectors` admit `process`: there is at least one, and every one matches.
pub fn admits(selectors: &[Selector], process: &Process) -> bool {
    !selectors.is_empty() && selectors.iter().all(|s| s.matches(process))
}

/// Whether `selectors` select on the executable's hash (reading it is the expensive part of attestation).
pub fn selects_on_hash(selectors: &[Selector]) -> bool {
    selectors.iter().any(|s| matches!(s, Selector::Sha256(_)))
}

/// A workload entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadEntry {
    /// Also the id of the principal the entry's certificates are for.
    pub id: PrincipalId,
    /// The node (a principal of type `node`) whose agent may obtain certificates for this entry.
    pub node: PrincipalId,
    /// The type of the entry's principal: `service` or `worker`.
    pub kind: PrincipalType,
    /// Sorted, deduplicated, at least one and at most [`MAX_SELECTORS`].
    pub selectors: Vec<Selector>,
    /// Lifetime of the X.509-SVIDs issued for it.
    pub ttl: Duration,
    pub created_at: OffsetDateTime,
}

impl WorkloadEntry {
    /// Shortest and longest SVID lifetime an entry may ask for.
    pub const TTL_RANGE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(24 * 3600));
    /// The lifetime of an entry's SVIDs when none is given.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

    /// A checked entry: principal type `service` or `worker` (a node never obtains admin or node certificates),
    /// 1-16 selectors including a `uid` (so that no entry matches every local user), TTL within [`Self::TTL_RANGE`].
    pub fn new(
        id: PrincipalId,
        node: PrincipalId,
        kind: PrincipalType,
        mut selectors: Vec<Selector>,
        ttl: Duration,
        created_at: OffsetDateTime,
    ) -> Result<Self, Error> {
        if !matches!(kind, PrincipalType::Service | PrincipalType::Worker) {
            return Err(Error::InvalidArgument(format!(
                "a workload's principal is a service or a worker, not a {kind}"
            )));
        }
        if id == node {
            return Err(Error::InvalidArgument("a workload cannot be its own node".into()));
        }
        selectors.sort();
        selectors.dedup();
        if selectors.is_empty() || selectors.len() > MAX_SELECTORS {
            return Err(Error::InvalidArgument(format!("a workload has 1 to {MAX_SELECTORS} selectors")));
        }
        if !selectors.iter().any(|s| matches!(s, Selector::Uid(_))) {
            return Err(Error::InvalidArgument(
                "a workload needs a unix:uid selector, so that it never matches every local user".into(),
            ));
        }
        let (min, max) = Self::TTL_RANGE;
        if ttl < min || ttl > max {
            let f = super::duration::format_duration;
            return Err(Error::InvalidArgument(format!("ttl must be {} to {}", f(min), f(max))));
        }
        Ok(Self { id, node, kind, selectors, ttl, created_at })
    }

    /// The selectors as stored: one string each, in order.
    pub fn selector_strings(&self) -> Vec<String> {
        self.selectors.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_round_trip_and_refuse_what_they_cannot_mean() {
        for ok in ["unix:uid:0", "unix:gid:1000", "unix:path:/usr/bin/env", &format!("unix:sha256:{}", "a".repeat(64))]
        {
            assert_eq!(ok.parse::<Selector>().unwrap().to_string(), ok);
        }
        for bad in
            ["uid:1", "unix:uid:-1", "unix:uid:", "unix:path:rel", "unix:path:/a/../b", "unix:sha256:ab", "k8s:ns:x"]
        {
            assert!(bad.parse::<Selector>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_entry_admits_only_a_process_matching_every_selector() {
        let id = |s: &str| s.parse::<PrincipalId>().unwrap();
        let selectors = vec![Selector::Uid(10), Selector::Path("/bin/x".into())];
        let entry = WorkloadEntry::new(
            id("w"),
            id("n"),
            PrincipalType::Service,
            selectors,
            WorkloadEntry::DEFAULT_TTL,
            crate::model::now(),
        )
        .unwrap();
        let mut p = Process { pid: 1, uid: 10, gid: 5, path: Some("/bin/x".into()), sha256: None };
        assert!(admits(&entry.selectors, &p));
        p.path = None;
        assert!(!admits(&entry.selectors, &p));
        assert!(!admits(&[], &p), "no selectors admit no one");
        let no_uid = WorkloadEntry::new(
            id("w"),
            id("n"),
            PrincipalType::Service,
            vec![Selector::Gid(1)],
            WorkloadEntry::DEFAULT_TTL,
            crate::model::now(),
        );
        assert!(no_uid.is_err());
        let admin = WorkloadEntry::new(
            id("w"),
            id("n"),
            PrincipalType::Admin,
            vec![Selector::Uid(1)],
            WorkloadEntry::DEFAULT_TTL,
            crate::model::now(),
        );
        assert!(admin.is_err());
    }
}
