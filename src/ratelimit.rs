//! Rate limits on what costs the server real work: per principal and per principal type for issuing and renewing
//! certificates, access tokens, enrollment tokens and audit reads; per source address for Enroll (the one call
//! without a client certificate), where a refused attempt costs more than an accepted one. GCRA limiters from
//! `governor`; a refusal carries how long to wait.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::error::Error;
use crate::model::{PrincipalId, PrincipalType};

/// What a limit applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// IssueCertificate and RenewCertificate.
    Issue,
    /// IssueToken and the OAuth token endpoint.
    Token,
    /// CreateEnrollmentToken.
    EnrollmentToken,
    /// ListAuditEvents, WatchAuditEvents, ListAuditChains.
    AuditRead,
    /// Enroll, per source address.
    Enroll,
}

impl Operation {
    pub const ALL: [Operation; 5] = [Self::Issue, Self::Token, Self::EnrollmentToken, Self::AuditRead, Self::Enroll];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Token => "token",
            Self::EnrollmentToken => "enrollment_token",
            Self::AuditRead => "audit_read",
            Self::Enroll => "enroll",
        }
    }

    /// The operation a gRPC method of principal.v1 counts against, if any.
    pub fn of_path(path: &str) -> Option<Self> {
        let method = path.strip_prefix("/principal.v1.PrincipalService/")?;
        Some(match method {
            "IssueCertificate" | "RenewCertificate" => Self::Issue,
            "IssueToken" => Self::Token,
            "CreateEnrollmentToken" => Self::EnrollmentToken,
            "ListAuditEvents" | "WatchAuditEvents" | "ListAuditChains" => Self::AuditRead,
            "Enroll" => Self::Enroll,
            _ => return None,
        })
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sustained rate and a burst: `count` per `per`, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
}

impl Rate {
    pub const fn new(count: u32, per: Duration, burst: u32) -> Self {
        Self { count, per, burst }
    }

    fn quota(self) -> Quota {
        let period = (self.per / self.count.max(1)).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}:{}", self.count, self.burst)
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `COUNT/UNIT[:BURST]` with UNIT `s`, `m` or `h`; the burst defaults to COUNT.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("invalid rate {s:?}: use COUNT/UNIT[:BURST] with UNIT s, m or h, e.g. 10/s:100");
        let (rate, burst) = s.split_once(':').map_or((s, None), |(r, b)| (r, Some(b)));
        let (count, unit) = rate.split_once('/').ok_or_else(usage)?;
        let count: u32 = count.trim().parse().map_err(|_| usage())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(usage()),
        };
        let burst = match burst {
            Some(b) => b.trim().parse().map_err(|_| usage())?,
            None => count,
        };
        if count == 0 || burst == 0 {
            return Err(format!("invalid rate {s:?}: count and burst must be at least 1 (use \"off\" for no limit)"));
        }
        Ok(Self { count, per, burst })
    }
}

/// Which limit applies to whom: per (type, operation), `None` meaning unlimited; Enroll per source address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub per_type: HashMap<(PrincipalType, Operation), Option<Rate>>,
    pub enroll: Option<Rate>,
    /// How many times slower refused Enroll attempts are allowed than attempts (rate and burst divided by it).
    pub enroll_failure_cost: u32,
}

const SECOND: Duration = Duration::from_secs(1);

impl Default for RateLimits {
    /// Generous enough that no honest fleet meets them: a principal renews a handful of times a day and asks for a
    /// token per audience every few minutes; an admin may provision thousands of machines in a go.
    fn default() -> Self {
        let mut per_type = HashMap::new();
        for kind in PrincipalType::ALL {
            let admin = kind == PrincipalType::Admin;
            let rate = |op| match (op, admin) {
                (Operation::Issue, true) => Rate::new(500, SECOND, 5000),
                (Operation::Issue, false) => Rate::new(5, SECOND, 50),
                (Operation::Token, _) => Rate::new(20, SECOND, 200),
                (Operation::EnrollmentToken, _) => Rate::new(50, SECOND, 1000),
                (Operation::AuditRead, _) => Rate::new(50, SECOND, 500),
                (Operation::Enroll, _) => unreachable!("Enroll is limited per source address"),
            };
            for op in Operation::ALL.into_iter().filter(|op| *op != Operation::Enroll) {
                per_type.insert((kind, op), Some(rate(op)));
            }
        }
        Self { per_type, enroll: Some(Rate::new(10, SECOND, 100)), enroll_failure_cost: 10 }
    }
}

impl RateLimits {
    /// Applies one `[TYPE.]OPERATION=RATE|off` setting (`--rate-limit`); without TYPE it applies to every type.
    pub fn apply(&mut self, setting: &str) -> Result<(), Error> {
        let invalid = |why: String| Error::InvalidArgument(format!("invalid --rate-limit {setting:?}: {why}"));
        let (target, value) = setting
            .split_once('=')
            .ok_or_else(|| invalid("use [TYPE.]OPERATION=COUNT/UNIT[:BURST] or [TYPE.]OPERATION=off".into()))?;
        let rate = match value.trim() {
            "off" => None,
            v => Some(v.parse::<Rate>().map_err(invalid)?),
        };
        let (kind, op) = target.trim().rsplit_once('.').map_or((None, target.trim()), |(t, o)| (Some(t), o));
        let op = Operation::ALL.into_iter().find(|o| o.as_str() == op).ok_or_else(|| {
            invalid(format!("unknown operation {op:?}: use issue, token, enrollment_token, audit_read or enroll"))
        })?;
        let kinds: Vec<PrincipalType> = match kind {
            Some(t) => vec![t.parse().map_err(|e: Error| invalid(e.to_string()))?],
            None => PrincipalType::ALL.to_vec(),
        };
        if op == Operation::Enroll {
            if kind.is_some() {
                return Err(invalid("enroll is limited per source address, not per type".into()));
            }
            self.enroll = rate;
            return Ok(());
        }
        for kind in kinds {
            self.per_type.insert((kind, op), rate);
        }
        Ok(())
    }
}

/// A refused request: try again after `retry_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub operation: Operation,
    pub retry_after: Duration,
}

impl From<Limited> for Error {
    fn from(limited: Limited) -> Self {
        Error::RateLimited {
            message: format!("rate limit for {} reached", limited.operation),
            retry_after: limited.retry_after,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitedLabels {
    pub operation: &'static str,
    /// The principal type, or "source" for limits per source address.
    pub limit: &'static str,
}

/// Requests refused by a rate limit; registered by `metrics`.
#[derive(Clone, Default)]
pub struct LimitMeters {
    limited: Family<LimitedLabels, Counter>,
}

impl LimitMeters {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "requests_rate_limited",
            "requests refused with RESOURCE_EXHAUSTED (gRPC) or 429 (token endpoint) by a rate limit, by operation and \
             limit (principal type, or source for Enroll)",
            self.limited.clone(),
        );
        for operation in Operation::ALL {
            let limit = if operation == Operation::Enroll { "source" } else { "worker" };
            drop(self.limited.get_or_create(&LimitedLabels { operation: operation.as_str(), limit }));
        }
    }

    fn limited(&self, operation: Operation, limit: &'static str) {
        self.limited.get_or_create(&LimitedLabels { operation: operation.as_str(), limit }).inc();
    }
}

/// The limiters of one replica (limits are per replica: N replicas admit N times as much).
pub struct RateLimiter {
    per_type: HashMap<(PrincipalType, Operation), DefaultKeyedRateLimiter<PrincipalId>>,
    enroll: Option<EnrollLimits>,
    clock: DefaultClock,
    meters: LimitMeters,
}

/// Enroll per source: attempts at the configured rate, refused attempts at a rate `enroll_failure_cost` times lower.
/// A source that used up its refusals is blocked until its next one is due (GCRA cannot run into debt, so the block
/// is what makes a refusal cost more than an attempt once the bucket is empty).
struct EnrollLimits {
    attempts: DefaultKeyedRateLimiter<IpAddr>,
    refusals: DefaultKeyedRateLimiter<IpAddr>,
    blocked: std::sync::Mutex<HashMap<IpAddr, std::time::Instant>>,
}

/// The key of a source address: IPv6 by its /64 (what one host or site is given), IPv4 whole.
fn source_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

impl RateLimiter {
    pub fn new(limits: &RateLimits, meters: LimitMeters) -> Self {
        let per_type = limits
            .per_type
            .iter()
            .filter_map(|(key, rate)| rate.map(|r| (*key, DefaultKeyedRateLimiter::keyed(r.quota()))))
            .collect();
        let enroll = limits.enroll.map(|rate| {
            let cost = limits.enroll_failure_cost.max(1);
            let refusals = Rate { count: rate.count, per: rate.per * cost, burst: (rate.burst / cost).max(1) };
            EnrollLimits {
                attempts: DefaultKeyedRateLimiter::keyed(rate.quota()),
                refusals: DefaultKeyedRateLimiter::keyed(refusals.quota()),
                blocked: std::sync::Mutex::default(),
            }
        });
        Self { per_type, enroll, clock: DefaultClock::default(), meters }
    }

    /// Counts one `operation` by principal `id` of type `kind`.
    pub fn check(&self, kind: PrincipalType, id: &PrincipalId, operation: Operation) -> Result<(), Limited> {
        let Some(limiter) = self.per_type.get(&(kind, operation)) else { return Ok(()) };
        limiter.check_key(id).map_err(|not_until| {
            self.meters.limited(operation, kind.as_str());
            Limited { operation, retry_after: not_until.wait_time_from(self.clock.now()) }
        })
    }

    /// Counts one Enroll attempt from `source`.
    pub fn check_enroll(&self, source: IpAddr) -> Result<(), Limited> {
        let Some(enroll) = &self.enroll else { return Ok(()) };
        let key = source_key(source);
        let limited = |retry_after| {
            self.meters.limited(Operation::Enroll, "source");
            Limited { operation: Operation::Enroll, retry_after }
        };
        let now = std::time::Instant::now();
        let blocked = enroll.blocked.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied();
        if let Some(until) = blocked.filter(|until| *until > now) {
            return Err(limited(until - now));
        }
        enroll.attempts.check_key(&key).map_err(|not_until| limited(not_until.wait_time_from(self.clock.now())))
    }

    /// Charges `source` for a refused Enroll (a wrong, spent or expired token): once its refusals are used up, it
    /// is blocked until the next one is due.
    pub fn enroll_refused(&self, source: IpAddr) {
        let Some(enroll) = &self.enroll else { return };
        let key = source_key(source);
        if let Err(not_until) = enroll.refusals.check_key(&key) {
            let until = std::time::Instant::now() + not_until.wait_time_from(self.clock.now());
            enroll.blocked.lock().unwrap_or_else(|p| p.into_inner()).insert(key, until);
        }
    }

    /// Forgets keys whose buckets are full again, so memory follows the active principals and sources.
    pub fn forget_idle(&self) {
        for limiter in self.per_type.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(enroll) = &self.enroll {
            for limiter in [&enroll.attempts, &enroll.refusals] {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
            let now = std::time::Instant::now();
            enroll.blocked.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, until| *until > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_apply() {
        let mut limits = RateLimits::default();
        limits.apply("worker.token=2/m:5").unwrap();
        assert_eq!(
            limits.per_type[&(PrincipalType::Worker, Operation::Token)],
            Some(Rate::new(2, Duration::from_secs(60), 5))
        );
        limits.apply("issue=off").unwrap();
        assert!(PrincipalType::ALL.iter().all(|t| limits.per_type[&(*t, Operation::Issue)].is_none()));
        limits.apply("enroll=1/s").unwrap();
        assert_eq!(limits.enroll, Some(Rate::new(1, SECOND, 1)));
        for bad in ["token", "token=0/s", "token=5/d", "robot.token=1/s", "bogus=1/s", "worker.enroll=1/s", "x=1/s:0"] {
            assert!(limits.apply(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_principal_beyond_its_burst_is_told_when_to_retry_and_others_are_not_affected() {
        let mut limits = RateLimits::default();
        limits.apply("worker.token=1/h:3").unwrap();
        let limiter = RateLimiter::new(&limits, LimitMeters::default());
        let (noisy, quiet) = ("noisy".parse::<PrincipalId>().unwrap(), "quiet".parse::<PrincipalId>().unwrap());
        for _ in 0..3 {
            limiter.check(PrincipalType::Worker, &noisy, Operation::Token).unwrap();
        }
        let limited = limiter.check(PrincipalType::Worker, &noisy, Operation::Token).unwrap_err();
        assert!(limited.retry_after > Duration::from_secs(1000), "{limited:?}");
        limiter.check(PrincipalType::Worker, &quiet, Operation::Token).unwrap();
        limiter.check(PrincipalType::Service, &noisy, Operation::Issue).unwrap();
    }

    #[test]
    fn refused_enrollments_cost_more() {
        let mut limits = RateLimits::default();
        limits.apply("enroll=100/h:20").unwrap();
        let limiter = RateLimiter::new(&limits, LimitMeters::default());
        let source: IpAddr = "192.0.2.1".parse().unwrap();
        // Refusals: 10/h, burst 2. Two refused attempts pass, the third refusal blocks the source.
        for _ in 0..3 {
            limiter.check_enroll(source).unwrap();
            limiter.enroll_refused(source);
        }
        let limited = limiter.check_enroll(source).unwrap_err();
        assert!(limited.retry_after > Duration::from_secs(300), "{limited:?}");
        limiter.check_enroll("192.0.2.2".parse().unwrap()).unwrap();
        // A whole IPv6 /64 is one source.
        let (a, b): (IpAddr, IpAddr) = ("2001:db8::1".parse().unwrap(), "2001:db8::ffff:2".parse().unwrap());
        for _ in 0..3 {
            limiter.check_enroll(a).unwrap();
            limiter.enroll_refused(a);
        }
        assert!(limiter.check_enroll(b).is_err());
    }
}
