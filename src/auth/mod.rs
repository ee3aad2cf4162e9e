//! Who is calling and what they may do, decided in one place.
//!
//! [`peer`] reads the identity from the client certificate; [`authenticate`] checks it against the store (through a
//! cache); [`authorize`] holds the two permission tables; [`layer`] wires both into any tonic server as a tower layer
//! and gives handlers the [`Caller`].

pub mod authenticate;
pub mod authorize;
pub mod bearer;
pub mod follower;
pub mod layer;
pub mod peer;

use std::collections::BTreeSet;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::model::{PrincipalId, PrincipalType, Serial};

pub use authenticate::Authenticator;
pub use authorize::{MethodPolicy, PermissionTable, Requirement};
pub use follower::RevocationFollower;
pub use layer::AuthLayer;

/// An authenticated caller: an ACTIVE principal presenting a registered, unrevoked, unexpired certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub id: PrincipalId,
    pub kind: PrincipalType,
    pub serial: Serial,
    pub not_after: OffsetDateTime,
    /// Everything the caller's type is granted.
    pub permissions: Arc<BTreeSet<String>>,
    /// SHA-256 of the certificate it presented (computed once, when the certificate was checked against the store).
    pub certificate_sha256: [u8; 32],
}

impl Caller {
    /// Who the audit log names for this caller's changes: id, type and the certificate it presented (serial and
    /// SHA-256, taken when it was authenticated).
    pub fn actor(&self) -> crate::audit::Actor {
        crate::audit::Actor {
            principal_id: self.id.as_str().to_owned(),
            principal_type: self.kind.as_str().to_owned(),
            certificate_serial: self.serial.as_str().to_owned(),
            certificate_sha256: crate::model::hex(&self.certificate_sha256),
        }
    }

    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.contains(permission)
    }
}
