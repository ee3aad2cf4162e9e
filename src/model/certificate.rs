//! Certificates as the store keeps them: serials, revocations, the records of leaves, intermediates and token keys,
//! and what a certificate's status is.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use super::{Principal, PrincipalId, PrincipalStatus, PrincipalType, hex};
use crate::error::Error;

/// A certificate serial number: the big-endian bytes of the DER INTEGER, shown as lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(String);

impl Serial {
    /// Serial from the raw DER INTEGER content bytes of a certificate.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(hex(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same number as DER writes it when its top bit is set (a leading 00 byte keeps it positive): what
    /// principald stores for a serial openssl prints without that byte (`C499B0...` for `00c499b0...`).
    pub fn with_sign_byte(&self) -> Option<Serial> {
        self.0.starts_with(['8', '9', 'a', 'b', 'c', 'd', 'e', 'f']).then(|| Serial(format!("00{}", self.0)))
    }

    /// The big-endian bytes (always whole: serials hold an even number of hex digits).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0
            .as_bytes()
            .chunks(2)
            .filter_map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
            .collect()
    }
}

impl FromStr for Serial {
    type Err = Error;

    /// Accepts hex with or without ':' separators, any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        let cleaned: String = s.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
        let ok = !cleaned.is_empty()
            && cleaned.len() <= 42
            && cleaned.len().is_multiple_of(2)
            && cleaned.chars().all(|c| c.is_ascii_hexdigit());
        if !ok {
            let shown: String = s.chars().take(50).collect();
            return Err(Error::InvalidArgument(format!(
                "invalid certificate serial {shown:?}: expected hex digits (at most 20 bytes), e.g. from `principalctl cert list`"
            )));
        }
        Ok(Self(cleaned))
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 5280 CRLReason values that principald accepts. Revocation is final, so certificateHold is not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    pub(crate) const ALL: [RevocationReason; 8] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::CaCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::PrivilegeWithdrawn,
        Self::AaCompromise,
    ];

    /// The RFC 5280 CRLReason code.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key-compromise",
            Self::CaCompromise => "ca-compromise",
            Self::AffiliationChanged => "affiliation-changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation-of-operation",
            Self::PrivilegeWithdrawn => "privilege-withdrawn",
            Self::AaCompromise => "aa-compromise",
        }
    }
}

impl FromStr for RevocationReason {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
            Error::InvalidArgument(format!("unknown revocation reason {s:?}: use one of {}", names.join(", ")))
        })
    }
}

/// When and why a certificate was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub at: OffsetDateTime,
    pub reason: RevocationReason,
}

/// A certificate the CA issued, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRecord {
    pub serial: Serial,
    pub principal_id: PrincipalId,
    pub principal_type: PrincipalType,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Lowercase hex SHA-256 of `der`.
    pub sha256_fingerprint: String,
    pub der: Vec<u8>,
    pub revocation: Option<Revocation>,
    /// The principal's generation when this certificate was issued (see [`Principal::generation`]).
    pub generation: u64,
    /// Set once this certificate has been renewed: a certificate renews exactly once.
    pub renewal: Option<Renewal>,
    /// Hex SHA-256 of the intermediate that signed it ([`IntermediateRecord::fingerprint`]); empty when the root
    /// signed it directly. Revoking that intermediate voids the certificate.
    pub issuer: String,
}

/// A replica's token signing key, announced in the store before it signs a token, so every replica's JWKS publishes
/// it for as long as tokens it signed may live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenKeyRecord {
    /// JWK key id: base64url of the first 12 bytes of SHA-256 over the public key (SPKI DER).
    pub kid: String,
    pub replica: String,
    /// The public key as a JWK (JSON object text): kty, crv, x, y, kid, use, alg.
    pub public_jwk: String,
    pub created_at: OffsetDateTime,
    /// After this no token it signed is valid any more: it leaves the JWKS.
    pub expires_at: OffsetDateTime,
}

impl TokenKeyRecord {
    /// Whether revoking an intermediate withdrew this key: its replica had an intermediate revoked after the key was
    /// made (`revoke-intermediate` says the replica is compromised, and so is every key it held). Keys made after
    /// the revocation (the replica's next key, or a rebuilt replica under the same name) stay.
    pub fn withdrawn_by(&self, intermediates: &[IntermediateRecord]) -> bool {
        intermediates.iter().any(|i| i.replica == self.replica && i.revoked_at.is_some_and(|r| self.created_at <= r))
    }
}

/// A replica's issuing intermediate, recorded before it signs anything, so an auditor can see which replica issued
/// what and an operator can revoke a compromised replica's intermediate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntermediateRecord {
    /// Lowercase hex SHA-256 of `der`.
    pub fingerprint: String,
    /// The replica that holds (held) its key.
    pub replica: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub der: Vec<u8>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// The one renewal a certificate had: which certificate replaced it, for which public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    pub serial: Serial,
    /// Lowercase hex SHA-256 of the new certificate's SubjectPublicKeyInfo (DER).
    pub key_sha256: String,
}

/// A certificate's state at a point in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateStatus {
    Valid,
    Revoked,
    Expired,
    /// Unrevoked and unexpired, but refused: see [`CertificateRecord::void_reason`].
    Void,
}

impl CertificateRecord {
    /// Whether `principal`'s revocation floor has passed this certificate by.
    pub fn is_void_for(&self, principal: &Principal) -> bool {
        self.generation < principal.generation
    }

    /// Why principald refuses this certificate although it is neither revoked nor expired, if it does: what
    /// authentication checks besides the record itself (`principal` as stored now, `None` if gone; whether its issuing
    /// intermediate was revoked).
    pub fn void_reason(&self, principal: Option<&Principal>, issuer_revoked: bool) -> Option<&'static str> {
        match principal {
            None => Some("its principal was deleted"),
            Some(p) if p.status == PrincipalStatus::Deleted => Some("its principal was deleted"),
            Some(p) if p.status == PrincipalStatus::Suspended => Some("its principal is suspended"),
            Some(p) if self.is_void_for(p) => {
                Some("withdrawn: its principal was suspended or had a key compromised after it was issued")
            }
            _ if issuer_revoked => Some("its issuing intermediate was revoked"),
            _ => None,
        }
    }

    pub fn status_at(&self, now: OffsetDateTime) -> CertificateStatus {
        if self.revocation.is_some() {
            CertificateStatus::Revoked
        } else if now > self.not_after {
            CertificateStatus::Expired
        } else {
            CertificateStatus::Valid
        }
    }
}

/// The CA a store belongs to: the hex SHA-256 of its certificate's DER, and the certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaClaim {
    pub fingerprint: String,
    pub certificate_pem: String,
}

impl CertificateRecord {
    /// `Ok` if this certificate may be renewed into one for `owner`: same principal, unrevoked, not void, not renewed
    /// before. Every store checks this inside the write that records the renewal.
    pub fn renewable_by(&self, owner: &Principal) -> Result<(), Error> {
        if self.principal_id != owner.id {
            return Err(Error::FailedPrecondition(format!("certificate {} belongs to another principal", self.serial)));
        }
        if self.revocation.is_some() {
            return Err(Error::FailedPrecondition(format!("certificate {} has been revoked", self.serial)));
        }
        if self.is_void_for(owner) {
            return Err(Error::FailedPrecondition(format!(
                "certificate {} was withdrawn with its principal's other certificates",
                self.serial
            )));
        }
        if self.renewal.is_some() {
            return Err(Error::AlreadyExists(format!("certificate {} was already renewed", self.serial)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::now;

    #[test]
    fn a_certificate_is_void_when_authentication_would_refuse_it_beyond_its_record() {
        let at = now();
        let mut p = Principal {
            id: "w".parse().unwrap(),
            kind: PrincipalType::Worker,
            status: PrincipalStatus::Active,
            description: String::new(),
            email: None,
            status_reason: None,
            created_at: at,
            updated_at: at,
            generation: 1,
        };
        let c = CertificateRecord {
            serial: "0a".parse().unwrap(),
            principal_id: p.id.clone(),
            principal_type: p.kind,
            not_before: at,
            not_after: at + time::Duration::days(1),
            sha256_fingerprint: String::new(),
            der: Vec::new(),
            revocation: None,
            generation: 1,
            renewal: None,
            issuer: "ab".into(),
        };
        assert_eq!(c.void_reason(Some(&p), false), None);
        assert!(c.void_reason(Some(&p), true).unwrap().contains("intermediate"));
        assert!(c.void_reason(None, false).unwrap().contains("deleted"));
        p.generation = 2;
        assert!(c.void_reason(Some(&p), false).unwrap().contains("withdrawn"));
        p.status = PrincipalStatus::Suspended;
        assert!(c.void_reason(Some(&p), false).unwrap().contains("suspended"));
    }
}
