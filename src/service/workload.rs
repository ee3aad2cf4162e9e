//! Workload handlers (entries for admins; SVIDs and the trust bundle for nodes). Called from the
//! [`PrincipalService`](crate::proto::principal_service_server::PrincipalService) impl in [`super::principal`].

use std::time::Duration;

use tonic::{Request, Response};

use super::audit::acting;
use super::convert::*;
use super::principal::{PrincipalApi, Reply, issued_to_wire};
use crate::auth::Caller;
use crate::error::Error;
use crate::model::{PrincipalStatus, PrincipalType, WorkloadEntry};
use crate::pki::identity;
use crate::proto::{self as pb};
use crate::registry::{self, NewWorkload};
use crate::store::Page;

impl PrincipalApi {
    fn workload_to_wire(&self, w: WorkloadEntry) -> pb::Workload {
        pb::Workload {
            spiffe_id: identity::spiffe_uri(&self.trust_domain(), w.kind, &w.id),
            selectors: w.selector_strings(),
            id: w.id.as_str().to_owned(),
            node: w.node.as_str().to_owned(),
            r#type: principal_type_to_wire(w.kind).into(),
            ttl_seconds: w.ttl.as_secs(),
            create_time: Some(timestamp(w.created_at)),
        }
    }

    fn page_to_wire(&self, page: Page<WorkloadEntry>) -> pb::ListWorkloadsResponse {
        pb::ListWorkloadsResponse {
            workloads: page.items.into_iter().map(|w| self.workload_to_wire(w)).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }
    }

    pub(super) async fn create_workload_rpc(&self, request: Request<pb::CreateWorkloadRequest>) -> Reply<pb::Workload> {
        let (_, origin) = acting(&request, "CreateWorkload")?;
        let r = request.into_inner();
        let kind = optional_principal_type(r.r#type)?.unwrap_or(PrincipalType::Service);
        let ttl = match r.ttl_seconds {
            0 => WorkloadEntry::DEFAULT_TTL,
            s => Duration::from_secs(s),
        };
        if r.selectors.len() > crate::model::MAX_SELECTORS {
            return Err(Error::InvalidArgument(format!(
                "a workload has at most {} selectors",
                crate::model::MAX_SELECTORS
            ))
            .into());
        }
        let new = NewWorkload {
            id: principal_id(&r.id)?,
            node: principal_id(&r.node)?,
            kind,
            selectors: r.selectors.iter().map(|s| s.parse()).collect::<Result<_, Error>>()?,
            ttl,
            description: r.description,
        };
        let entry = self.registry.create_workload(&origin, new).await?;
        Ok(Response::new(self.workload_to_wire(entry)))
    }

    pub(super) async fn get_workload_rpc(&self, request: Request<pb::GetWorkloadRequest>) -> Reply<pb::Workload> {
        let entry = self.registry.get_workload(&principal_id(&request.get_ref().id)?).await?;
        Ok(Response::new(self.workload_to_wire(entry)))
    }

    pub(super) async fn list_workloads_rpc(
        &self,
        request: Request<pb::ListWorkloadsRequest>,
    ) -> Reply<pb::ListWorkloadsResponse> {
        let r = request.into_inner();
        let node = Some(&r.node).filter(|n| !n.is_empty()).map(|n| principal_id(n)).transpose()?;
        let page =
            self.registry.list_workloads(node.as_ref(), registry::page_request(r.page_size, &r.page_token)?).await?;
        Ok(Response::new(self.page_to_wire(page)))
    }

    pub(super) async fn delete_workload_rpc(
        &self,
        request: Request<pb::DeleteWorkloadRequest>,
    ) -> Reply<pb::DeleteWorkloadResponse> {
        let (caller, origin) = acting(&request, "DeleteWorkload")?;
        let id = principal_id(&request.get_ref().id)?;
        let (entry, revoked) = self.registry.delete_workload(&caller, &origin, &id).await?;
        Ok(Response::new(pb::DeleteWorkloadResponse {
            workload: Some(self.workload_to_wire(entry)),
            revoked_certificates: revoked,
        }))
    }

    pub(super) async fn list_node_workloads_rpc(
        &self,
        request: Request<pb::ListNodeWorkloadsRequest>,
    ) -> Reply<pb::ListWorkloadsResponse> {
        let caller = Caller::from_request(&request)?;
        let r = request.into_inner();
        let page = registry::page_request(r.page_size, &r.page_token)?;
        let page = self.registry.list_workloads(Some(&caller.id), page).await?;
        Ok(Response::new(self.page_to_wire(page)))
    }

    pub(super) async fn issue_workload_certificate_rpc(
        &self,
        request: Request<pb::IssueWorkloadCertificateRequest>,
    ) -> Reply<pb::IssueCertificateResponse> {
        let (caller, origin) = acting(&request, "IssueWorkloadCertificate")?;
        let r = request.into_inner();
        let issued = self
            .registry
            .issue_workload(&caller, &origin, &principal_id(&r.workload_id)?, r.csr_pem.as_bytes())
            .await?;
        Ok(Response::new(issued_to_wire(issued)))
    }

    pub(super) async fn issue_workload_token_rpc(
        &self,
        request: Request<pb::IssueWorkloadTokenRequest>,
    ) -> Reply<pb::IssueWorkloadTokenResponse> {
        let caller = Caller::from_request(&request)?;
        let r = request.into_inner();
        let tokens = self.tokens.as_ref().ok_or_else(|| {
            Error::FailedPrecondition("this server issues no JWT-SVIDs: start it with --jwt-svids".into())
        })?;
        let id = principal_id(&r.workload_id)?;
        let entry = self.registry.node_workload(&caller, &id).await?;
        let principal = self.registry.get_principal(&id).await?;
        if principal.status != PrincipalStatus::Active {
            return Err(Error::FailedPrecondition(format!("workload {:?} is {}", id.as_str(), principal.status)).into());
        }
        let spiffe_id = identity::spiffe_uri(&self.trust_domain(), entry.kind, &entry.id);
        let (token, claims) = tokens.issue_jwt_svid(&spiffe_id, &r.audiences, None)?;
        Ok(Response::new(pb::IssueWorkloadTokenResponse {
            token,
            expire_time: Some(prost_types::Timestamp { seconds: claims.exp, nanos: 0 }),
        }))
    }

    pub(super) async fn get_trust_bundle_rpc(
        &self,
        request: Request<pb::GetTrustBundleRequest>,
    ) -> Reply<pb::TrustBundle> {
        let known = request.get_ref().known_epoch;
        let epoch = self.registry.revocation_epoch().await?;
        let mut bundle =
            pb::TrustBundle { trust_domain: self.trust_domain(), revocation_epoch: epoch, ..Default::default() };
        if known != 0 && known == epoch {
            bundle.unchanged = true;
            return Ok(Response::new(bundle));
        }
        // Revocations committed before the epoch was read are in these CRLs.
        self.crls.up_to_date().await?;
        let mut crls = self.crls.all();
        crls.sort_by(|a, b| a.url.cmp(&b.url));
        bundle.crls = crls.iter().map(|c| c.crl.der.clone()).collect();
        bundle.roots_pem = self.registry.root_pem().to_owned();
        if let Some(tokens) = &self.tokens {
            bundle.jwks_json = tokens.keys.jwks().await?.to_string();
        }
        Ok(Response::new(bundle))
    }
}
