//! Workload entries in DynamoDB. (Being written.)

use super::DynamoStore;
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::model::{Principal, PrincipalId, WorkloadEntry};
use crate::store::{Page, PageRequest};

impl DynamoStore {
    pub(super) async fn put_workload(
        &self,
        _entry: &WorkloadEntry,
        _principal: &Principal,
        _audit: Option<&AuditEvent>,
    ) -> Result<()> {
        Err(Error::Unavailable("workload entries are not in the DynamoDB store yet".into()))
    }

    pub(super) async fn read_workload(&self, _id: &PrincipalId) -> Result<Option<WorkloadEntry>> {
        Err(Error::Unavailable("workload entries are not in the DynamoDB store yet".into()))
    }

    pub(super) async fn query_workloads(
        &self,
        _node: Option<&PrincipalId>,
        _page: &PageRequest,
    ) -> Result<Page<WorkloadEntry>> {
        Err(Error::Unavailable("workload entries are not in the DynamoDB store yet".into()))
    }

    pub(super) async fn remove_workload(
        &self,
        _id: &PrincipalId,
        _audit: Option<&AuditEvent>,
    ) -> Result<WorkloadEntry> {
        Err(Error::Unavailable("workload entries are not in the DynamoDB store yet".into()))
    }
}
