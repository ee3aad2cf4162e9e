//! Domain types: principals, certificates and the values they are made of. Parsing lives here (`FromStr`), so the
//! rest of the crate only ever handles values that are already valid.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::error::Error;

mod certificate;
pub use certificate::*;
mod enrollment;
pub(crate) use enrollment::{ENROLLMENT_REVOKED, ENROLLMENT_WITHDRAWN, enrollment_refused};
pub use enrollment::{EnrollmentToken, EnrollmentTokenState};
mod workload;
pub use workload::{MAX_SELECTORS, Process, Selector, WorkloadEntry, admits, selects_on_hash};
/// Durations as users type them (`90s`, `1h30m`, `7d`): parsing and formatting.
pub mod duration;

/// Most characters a principal id may have.
pub const MAX_PRINCIPAL_ID_LEN: usize = 64;

/// What a principal id may look like, for error messages and docs.
pub const PRINCIPAL_ID_RULE: &str = "1-64 characters: lowercase letters, digits, '.', '_' and '-', \
     starting with a letter or digit";

/// A principal's unique id: 1-64 of `[a-z0-9._-]`, starting with `[a-z0-9]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalId(String);

impl PrincipalId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PrincipalId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
        let starts_well = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if s.len() > MAX_PRINCIPAL_ID_LEN || !starts_well || !s.chars().all(valid_char) {
            let shown: String = s.chars().take(80).collect();
            return Err(Error::InvalidArgument(format!("invalid principal id {shown:?}: {PRINCIPAL_ID_RULE}")));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of a principal; it decides the principal's permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalType {
    Admin,
    Worker,
    User,
    Service,
    /// A host running `principald agent`, which obtains certificates for the workloads whose entries name it.
    Node,
}

impl PrincipalType {
    pub const ALL: [PrincipalType; 5] = [Self::Admin, Self::Worker, Self::User, Self::Service, Self::Node];

    /// The lowercase name written in certificates, URIs and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Worker => "worker",
            Self::User => "user",
            Self::Service => "service",
            Self::Node => "node",
        }
    }
}

impl FromStr for PrincipalType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            Error::InvalidArgument(format!("unknown principal type {s:?}: use admin, worker, user, service or node"))
        })
    }
}

impl fmt::Display for PrincipalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifecycle state of a principal. Only `Active` principals authenticate; `Deleted` is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalStatus {
    Active,
    Suspended,
    Deleted,
}

impl PrincipalStatus {
    pub const ALL: [PrincipalStatus; 3] = [Self::Active, Self::Suspended, Self::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }
}

impl FromStr for PrincipalStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            Error::InvalidArgument(format!("unknown principal status {s:?}: use active, suspended or deleted"))
        })
    }
}

impl fmt::Display for PrincipalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A principal as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub id: PrincipalId,
    pub kind: PrincipalType,
    pub status: PrincipalStatus,
    pub description: String,
    pub email: Option<String>,
    /// Why the principal was last suspended; `None` when active.
    pub status_reason: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The principal's certificate generation, its revocation floor: every certificate records the generation it was
    /// issued under, and one issued under a lower generation than the principal's current one is void. A
    /// key-compromise revocation, a suspension and a deletion raise it in the same atomic write, so certificates
    /// issued before that write die at once, before any sweep reaches them, and however a renewal raced it.
    pub generation: u64,
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// The current time, truncated to whole seconds (what X.509 and the store keep).
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

impl Principal {
    /// `Ok` if this principal may receive `cert`: ACTIVE, of the certificate's type, and still at the generation the
    /// certificate was signed under (nothing withdrew its certificates since it was read). Every store checks this
    /// inside the write that records the certificate.
    pub fn may_receive(&self, cert: &CertificateRecord) -> Result<(), Error> {
        let id = self.id.as_str();
        if self.status != PrincipalStatus::Active {
            return Err(Error::FailedPrecondition(format!(
                "principal {id:?} is {}: only active principals get certificates",
                self.status
            )));
        }
        if self.kind != cert.principal_type {
            return Err(Error::FailedPrecondition(format!(
                "principal {id:?} is a {}, not a {}",
                self.kind, cert.principal_type
            )));
        }
        if self.generation != cert.generation {
            return Err(Error::FailedPrecondition(format!(
                "the certificates of principal {id:?} were withdrawn during issuance; retry"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_ids_follow_the_documented_format() {
        for ok in ["a", "worker-1", "svc.jobs_2", "0abc", &"a".repeat(64)] {
            assert!(ok.parse::<PrincipalId>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "A", "a b", "a/b", "é", &"a".repeat(65)] {
            let err = bad.parse::<PrincipalId>().unwrap_err();
            assert!(err.to_string().contains("lowercase letters"), "{bad}: {err}");
        }
    }

    #[test]
    fn serials_accept_colons_and_case() {
        let s: Serial = "01:AB:cd".parse().unwrap();
        assert_eq!(s.as_str(), "01abcd");
        assert!("xyz".parse::<Serial>().is_err());
        assert!("abc".parse::<Serial>().is_err());
        assert!("".parse::<Serial>().is_err());
    }

    #[test]
    fn revocation_reasons_round_trip_their_rfc_5280_codes() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::from_code(r.code()), Some(r));
            assert_eq!(r.as_str().parse::<RevocationReason>().unwrap(), r);
        }
        assert_eq!(RevocationReason::from_code(6), None);
    }
}
