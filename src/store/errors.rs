//! Errors every backend reports the same way, so callers see the same messages whatever the store.

use crate::error::Error;
use crate::model::{Principal, PrincipalId, PrincipalStatus};

pub fn enrollment_token_not_found() -> Error {
    Error::NotFound("enrollment token not found; `principalctl principal enroll-tokens ID` lists them".into())
}

pub fn principal_not_found(id: &PrincipalId) -> Error {
    Error::NotFound(format!("principal {:?}", id.as_str()))
}

pub fn wrong_status(current: &Principal, to: PrincipalStatus) -> Error {
    Error::FailedPrecondition(format!(
        "principal {:?} is {}; it cannot become {}",
        current.id.as_str(),
        current.status,
        to
    ))
}
