//! Errors every backend reports the same way, so callers see the same messages whatever the store.

use crate::error::Error;
use crate::model::{Principal, PrincipalId, PrincipalStatus, PrincipalType};

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

/// `Ok` if `node` is an active principal of type node (what every store checks when an entry is created).
pub fn check_node(node: Option<Principal>, id: &PrincipalId) -> Result<(), Error> {
    let node = node.ok_or_else(|| principal_not_found(id))?;
    if node.kind != PrincipalType::Node {
        return Err(Error::FailedPrecondition(format!("principal {:?} is a {}, not a node", id.as_str(), node.kind)));
    }
    if node.status != PrincipalStatus::Active {
        return Err(Error::FailedPrecondition(format!("node {:?} is {}", id.as_str(), node.status)));
    }
    Ok(())
}

pub fn workload_not_found(id: &PrincipalId) -> Error {
    Error::NotFound(format!("workload {:?}", id.as_str()))
}
