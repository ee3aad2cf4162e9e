//! One-time enrollment tokens as the store keeps and reads them back, the rule for using one, and the words every
//! backend refuses them with.

use time::OffsetDateTime;

use super::{PrincipalId, Serial};
use crate::error::Result;

/// A one-time enrollment token as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub principal: PrincipalId,
    /// The principal's generation when the token was made: a raise (suspension, deletion, key compromise) kills it.
    pub generation: u64,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// The longest validity (seconds) of the certificate it pays for (and so of that certificate's renewals), if
    /// its maker capped it below the type's maximum.
    pub max_validity: Option<u64>,
}

/// An enrollment token as read back: whose it is, until when, and whether it was used or revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentTokenState {
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub principal: PrincipalId,
    pub generation: u64,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub max_validity: Option<u64>,
    pub consumed: bool,
    /// The certificate it paid for, once consumed.
    pub serial: Option<Serial>,
    pub revoked: bool,
}

impl EnrollmentTokenState {
    /// `Ok` if the token may enroll `principal` at `at` (the consuming write checks the same again).
    pub fn check(&self, principal: &PrincipalId, at: OffsetDateTime) -> Result<()> {
        if self.principal != *principal {
            Err(enrollment_refused("it was made for another principal"))
        } else if self.consumed {
            Err(enrollment_refused("it was used already"))
        } else if self.revoked {
            Err(enrollment_refused(ENROLLMENT_REVOKED))
        } else if self.expires_at <= at {
            Err(enrollment_refused("it has expired"))
        } else {
            Ok(())
        }
    }
}

/// The refusal of a token made before its principal's certificates were last withdrawn.
pub(crate) const ENROLLMENT_WITHDRAWN: &str =
    "it was made before its principal was suspended, deleted or had a key compromised";

/// The refusal of a token an operator revoked.
pub(crate) const ENROLLMENT_REVOKED: &str = "it was revoked";

/// Why an enrollment token was refused, the same words for every backend.
pub(crate) fn enrollment_refused(why: &str) -> crate::error::Error {
    crate::error::Error::Unauthenticated(format!("enrollment token refused: {why}"))
}
