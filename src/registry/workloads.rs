//! Workload entries and what nodes obtain for them.
//!
//! Rules: an entry's principal is created with it and deleted with it (which revokes its certificates through the
//! revocation floor, so CRLs and OCSP show them at once). Only the entry's node may obtain certificates for it. A
//! suspended or deleted node's workloads lose their certificates the same way (see [`Registry::withdraw_node`]).

use std::time::Duration;

use super::{Issued, Registry};
use crate::audit::{Origin, kind};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::model::{
    Principal, PrincipalId, PrincipalStatus, PrincipalType, RevocationReason, Selector, WorkloadEntry, now,
};
use crate::pki::csr::ValidatedCsr;
use crate::pki::leaf::{self, IssuedLeaf};
use crate::store::{Page, PageRequest};

/// What an admin asks for when creating a workload entry.
#[derive(Clone, Debug)]
pub struct NewWorkload {
    pub id: PrincipalId,
    pub node: PrincipalId,
    pub kind: PrincipalType,
    pub selectors: Vec<Selector>,
    pub ttl: Duration,
    pub description: String,
}

impl Registry {
    pub async fn create_workload(&self, origin: &Origin, new: NewWorkload) -> Result<WorkloadEntry> {
        let at = now();
        let entry = WorkloadEntry::new(new.id, new.node, new.kind, new.selectors, new.ttl, at)?;
        let principal = Principal {
            id: entry.id.clone(),
            kind: entry.kind,
            status: PrincipalStatus::Active,
            description: Some(new.description)
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| format!("workload on node {}", entry.node)),
            email: None,
            status_reason: None,
            created_at: at,
            updated_at: at,
            generation: 0,
        };
        if principal.description.chars().count() > super::MAX_DESCRIPTION {
            return Err(Error::InvalidArgument(format!(
                "description is longer than {} characters",
                super::MAX_DESCRIPTION
            )));
        }
        let details = serde_json::json!({
            "node": entry.node.as_str(),
            "type": entry.kind.as_str(),
            "selectors": entry.selector_strings(),
            "ttl_seconds": entry.ttl.as_secs(),
        });
        let event = self.audit.event(origin, kind::WORKLOAD_CREATED, entry.id.as_str(), details);
        self.store.create_workload(&entry, &principal, event.as_ref()).await?;
        tracing::info!(workload = %entry.id, node = %entry.node, by = %origin.actor.principal_id, "workload created");
        Ok(entry)
    }

    pub async fn get_workload(&self, id: &PrincipalId) -> Result<WorkloadEntry> {
        self.store.get_workload(id).await?.ok_or_else(|| crate::store::errors::workload_not_found(id))
    }

    pub async fn list_workloads(&self, node: Option<&PrincipalId>, page: PageRequest) -> Result<Page<WorkloadEntry>> {
        self.store.list_workloads(node, &page).await
    }

    /// Deletes the entry's principal (revoking its certificates), then the entry. A repeated call finishes a deletion
    /// that was interrupted between the two.
    pub async fn delete_workload(
        &self,
        caller: &Caller,
        origin: &Origin,
        id: &PrincipalId,
    ) -> Result<(WorkloadEntry, u32)> {
        let entry = self.get_workload(id).await?;
        let revoked = match self.delete(caller, origin, id).await {
            Ok((_, revoked)) => revoked,
            Err(Error::FailedPrecondition(_)) | Err(Error::NotFound(_)) => 0,
            Err(e) => return Err(e),
        };
        let details = serde_json::json!({ "node": entry.node.as_str(), "revoked": revoked });
        let event = self.audit.event(origin, kind::WORKLOAD_DELETED, id.as_str(), details);
        let entry = self.store.delete_workload(id, event.as_ref()).await?;
        tracing::info!(workload = %id, node = %entry.node, revoked, by = %caller.id, "workload deleted");
        Ok((entry, revoked))
    }

    /// The entry `id` if it belongs to the calling node; the same refusal for an unknown and a foreign entry, so a
    /// node cannot learn which entries other nodes have.
    pub async fn node_workload(&self, caller: &Caller, id: &PrincipalId) -> Result<WorkloadEntry> {
        match self.store.get_workload(id).await? {
            Some(entry) if caller.kind == PrincipalType::Node && entry.node == caller.id => Ok(entry),
            _ => {
                Err(Error::PermissionDenied(format!("node {:?} has no workload {:?}", caller.id.as_str(), id.as_str())))
            }
        }
    }

    /// An X.509-SVID for a workload of the calling node, valid for the entry's TTL.
    pub async fn issue_workload(
        &self,
        caller: &Caller,
        origin: &Origin,
        id: &PrincipalId,
        csr: &[u8],
    ) -> Result<Issued> {
        let entry = self.node_workload(caller, id).await?;
        let csr = ValidatedCsr::parse(csr)?;
        let principal = self.get_principal(id).await?;
        self.check_issuing()?;
        let IssuedLeaf { record, intermediate_pem, .. } = leaf::issue_workload(
            &self.ca,
            &self.identity,
            entry.kind,
            id,
            &csr.public_key,
            entry.ttl,
            principal.generation,
        )?;
        let issued = Issued::new(record, &intermediate_pem, self.ca.cert_pem());
        let event = self.certificate_event(origin, kind::CERTIFICATE_ISSUED, &issued.record, None);
        // The store re-checks, in the same write, that the principal is still ACTIVE at this generation.
        self.store.insert_certificate(&issued.record, event.as_ref()).await?;
        tracing::debug!(workload = %id, node = %caller.id, serial = %issued.record.serial, "workload certificate issued");
        Ok(issued)
    }

    /// After a node was suspended or deleted: revokes the certificates of every workload on it (raising each
    /// principal's floor first), so they reach CRLs and OCSP. Returns how many it revoked.
    pub(super) async fn withdraw_node(&self, node: &PrincipalId) -> Result<u32> {
        let (mut revoked, mut page) = (0, PageRequest { size: 500, token: None });
        loop {
            let listed = self.store.list_workloads(Some(node), &page).await?;
            for entry in &listed.items {
                let (store, id) = (self.store.clone(), entry.id.clone());
                revoked += self
                    .withdraw(super::Withdrawn::Principal(entry.id.clone()), async move {
                        store.revoke_all_certificates(&id, RevocationReason::PrivilegeWithdrawn, now()).await
                    })
                    .await?;
            }
            match listed.next_token {
                Some(token) => page.token = Some(token),
                None => break,
            }
        }
        if revoked > 0 {
            tracing::info!(node = %node, revoked, "revoked the certificates of the node's workloads");
        }
        Ok(revoked)
    }
}
