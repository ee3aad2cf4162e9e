//! PrincipalService handlers. Each one: caller from the auth layer -> parse the request -> one registry call ->
//! convert. Authorization already happened in the layer, from the method table.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::access_token::TokenIssuer;
use crate::auth::Caller;
use crate::error::Error;
use crate::proto::principal_service_server::PrincipalService;
use crate::proto::{self as pb};
use crate::registry::{self, Issued, NewPrincipal, Registry};
use crate::revocation::CrlPublisher;
use crate::service::audit::{self, acting, origin};
use crate::service::audit_reader::{AuditReader, Position};
use crate::service::convert::*;
use crate::store::PrincipalFilter;

/// The PrincipalService implementation.
#[derive(Clone)]
pub struct PrincipalApi {
    pub(super) registry: Arc<Registry>,
    audit: AuditReader,
    pub(super) crls: Arc<CrlPublisher>,
    pub(super) tokens: Option<Arc<TokenIssuer>>,
}

impl PrincipalApi {
    pub fn new(registry: Arc<Registry>, audit: AuditReader, crls: Arc<CrlPublisher>) -> Self {
        Self { registry, audit, crls, tokens: None }
    }

    pub(super) fn trust_domain(&self) -> String {
        self.registry.trust_domain().to_owned()
    }

    /// Also serves IssueToken with `tokens` (when tokens are configured).
    pub fn with_tokens(mut self, tokens: Option<Arc<TokenIssuer>>) -> Self {
        self.tokens = tokens;
        self
    }
}

pub(super) type Reply<T> = Result<Response<T>, Status>;

pub(super) fn issued_to_wire(issued: Issued) -> pb::IssueCertificateResponse {
    pb::IssueCertificateResponse {
        certificate_pem: issued.certificate_pem,
        ca_chain_pem: issued.ca_chain_pem,
        certificate_chain_pem: issued.certificate_chain_pem,
        certificate: Some(certificate_to_wire(issued.record)),
    }
}

#[tonic::async_trait]
impl PrincipalService for PrincipalApi {
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIResponse> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(pb::WhoAmIResponse {
            principal_id: caller.id.as_str().to_owned(),
            principal_type: principal_type_to_wire(caller.kind).into(),
            certificate_serial: caller.serial.as_str().to_owned(),
            certificate_not_after: Some(timestamp(caller.not_after)),
            permissions: caller.permissions.iter().cloned().collect(),
        }))
    }

    async fn create_principal(&self, request: Request<pb::CreatePrincipalRequest>) -> Reply<pb::Principal> {
        let origin = origin(&request, "CreatePrincipal")?;
        let r = request.into_inner();
        let new = NewPrincipal {
            id: principal_id(&r.id)?,
            kind: principal_type(r.r#type)?,
            description: r.description,
            email: r.email,
        };
        Ok(Response::new(principal_to_wire(self.registry.create_principal(&origin, new).await?)))
    }

    async fn get_principal(&self, request: Request<pb::GetPrincipalRequest>) -> Reply<pb::Principal> {
        let id = principal_id(&request.get_ref().id)?;
        Ok(Response::new(principal_to_wire(self.registry.get_principal(&id).await?)))
    }

    async fn list_principals(&self, request: Request<pb::ListPrincipalsRequest>) -> Reply<pb::ListPrincipalsResponse> {
        let r = request.into_inner();
        let filter =
            PrincipalFilter { kind: optional_principal_type(r.r#type)?, status: optional_principal_status(r.status)? };
        let page = self.registry.list_principals(&filter, registry::page_request(r.page_size, &r.page_token)?).await?;
        Ok(Response::new(pb::ListPrincipalsResponse {
            principals: page.items.into_iter().map(principal_to_wire).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn suspend_principal(&self, request: Request<pb::SuspendPrincipalRequest>) -> Reply<pb::Principal> {
        let (caller, origin) = acting(&request, "SuspendPrincipal")?;
        let r = request.into_inner();
        let principal = self.registry.suspend(&caller, &origin, &principal_id(&r.id)?, &r.reason).await?;
        Ok(Response::new(principal_to_wire(principal)))
    }

    async fn activate_principal(&self, request: Request<pb::ActivatePrincipalRequest>) -> Reply<pb::Principal> {
        let (caller, origin) = acting(&request, "ActivatePrincipal")?;
        let principal = self.registry.activate(&caller, &origin, &principal_id(&request.get_ref().id)?).await?;
        Ok(Response::new(principal_to_wire(principal)))
    }

    async fn delete_principal(
        &self,
        request: Request<pb::DeletePrincipalRequest>,
    ) -> Reply<pb::DeletePrincipalResponse> {
        let (caller, origin) = acting(&request, "DeletePrincipal")?;
        let (principal, revoked) =
            self.registry.delete(&caller, &origin, &principal_id(&request.get_ref().id)?).await?;
        Ok(Response::new(pb::DeletePrincipalResponse {
            principal: Some(principal_to_wire(principal)),
            revoked_certificates: revoked,
        }))
    }

    async fn issue_certificate(
        &self,
        request: Request<pb::IssueCertificateRequest>,
    ) -> Reply<pb::IssueCertificateResponse> {
        let origin = origin(&request, "IssueCertificate")?;
        let r = request.into_inner();
        let issued =
            self.registry.issue(&origin, &principal_id(&r.principal_id)?, &r.csr, validity(r.validity_seconds)).await?;
        Ok(Response::new(issued_to_wire(issued)))
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Reply<pb::IssueCertificateResponse> {
        let (caller, origin) = acting(&request, "RenewCertificate")?;
        let r = request.into_inner();
        let issued = self.registry.renew(&caller, &origin, &r.csr, validity(r.validity_seconds)).await?;
        Ok(Response::new(issued_to_wire(issued)))
    }

    async fn revoke_certificate(&self, request: Request<pb::RevokeCertificateRequest>) -> Reply<pb::Certificate> {
        let (caller, origin) = acting(&request, "RevokeCertificate")?;
        let r = request.into_inner();
        let record = self.registry.revoke(&caller, &origin, &serial(&r.serial)?, revocation_reason(r.reason)?).await?;
        Ok(Response::new(certificate_to_wire(record)))
    }

    async fn get_certificate(&self, request: Request<pb::GetCertificateRequest>) -> Reply<pb::Certificate> {
        let record = self.registry.get_certificate(&serial(&request.get_ref().serial)?).await?;
        let view = self.registry.certificate_views(vec![record]).await?.pop().expect("one in, one out");
        Ok(Response::new(certificate_view_to_wire(view)))
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Reply<pb::ListCertificatesResponse> {
        let r = request.into_inner();
        let page = registry::page_request(r.page_size, &r.page_token)?;
        let page = match (r.principal_id.is_empty(), r.issuer_sha256_fingerprint.is_empty()) {
            (true, false) => {
                self.registry.list_issued_by(&r.issuer_sha256_fingerprint, r.include_revoked, page).await?
            }
            (_, true) => {
                self.registry.list_certificates(&principal_id(&r.principal_id)?, r.include_revoked, page).await?
            }
            (false, false) => {
                return Err(
                    Error::InvalidArgument("give principal_id or issuer_sha256_fingerprint, not both".into()).into()
                );
            }
        };
        let views = self.registry.certificate_views(page.items).await?;
        Ok(Response::new(pb::ListCertificatesResponse {
            certificates: views.into_iter().map(certificate_view_to_wire).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn list_intermediates(
        &self,
        request: Request<pb::ListIntermediatesRequest>,
    ) -> Reply<pb::ListIntermediatesResponse> {
        let all = self.registry.list_intermediates(request.into_inner().include_expired).await?;
        Ok(Response::new(pb::ListIntermediatesResponse {
            intermediates: all.into_iter().map(intermediate_to_wire).collect(),
        }))
    }

    async fn revoke_intermediate(&self, request: Request<pb::RevokeIntermediateRequest>) -> Reply<pb::Intermediate> {
        let origin = origin(&request, "RevokeIntermediate")?;
        let revoked = self.registry.revoke_intermediate(&origin, &request.into_inner().sha256_fingerprint).await?;
        Ok(Response::new(intermediate_to_wire(revoked)))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Reply<pb::ListAuditEventsResponse> {
        let r = request.into_inner();
        let filter = audit::filter_from_wire(&r)?;
        let page = self.audit.list(&filter, &registry::page_request(r.page_size, &r.page_token)?).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.items.into_iter().map(|e| audit::event_to_wire(e, String::new())).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    type WatchAuditEventsStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::AuditEvent, Status>> + Send + 'static>>;

    async fn watch_audit_events(
        &self,
        request: Request<pb::WatchAuditEventsRequest>,
    ) -> Reply<Self::WatchAuditEventsStream> {
        let r = request.into_inner();
        let from = match (r.position.is_empty(), r.from_now) {
            (true, true) => Position::at(&self.audit.heads().await?),
            _ => Position::decode(&r.position)?,
        };
        let events = tokio_stream::wrappers::ReceiverStream::new(self.audit.watch(from, r.follow));
        let events = tokio_stream::StreamExt::map(events, |item| match item {
            Ok((event, position)) => Ok(audit::event_to_wire(event, position)),
            Err(error) => Err(Status::from(error)),
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn get_crl(&self, request: Request<pb::GetCrlRequest>) -> Reply<pb::Crl> {
        let name = &request.get_ref().partition;
        let partition = crate::pki::crl::parse_partition(name).ok_or_else(|| {
            Error::InvalidArgument(
                "invalid partition: one lowercase hex digit, 0 to f (see the certificate's CRL distribution point)"
                    .into(),
            )
        })?;
        // A revocation committed before this call is in the answer (the walkthrough revokes, then fetches).
        if let Err(error) = self.crls.up_to_date().await {
            tracing::warn!(%error, "GetCrl: cannot bring the CRLs up to date; serving the published ones");
        }
        let crl = self.crls.get(partition);
        let crl = crl.ok_or_else(|| Error::Unavailable("CRLs are not published yet".into()))?;
        Ok(Response::new(pb::Crl {
            partition: crate::pki::crl::partition_name(partition),
            der: crl.crl.der.clone(),
            number: crl.crl.number,
            this_update: Some(timestamp(crl.crl.this_update)),
            next_update: Some(timestamp(crl.crl.next_update)),
            url: crl.url.clone(),
            entries: u32::try_from(crl.entries).unwrap_or(u32::MAX),
        }))
    }

    async fn issue_token(&self, request: Request<pb::IssueTokenRequest>) -> Reply<pb::IssueTokenResponse> {
        let caller = Caller::from_request(&request)?;
        let tokens = self.tokens.as_ref().ok_or_else(|| {
            Error::FailedPrecondition("this server issues no tokens: no --token-audience is configured".into())
        })?;
        let r = request.into_inner();
        let lifetime = validity(r.lifetime_seconds);
        let issued = tokens.issue(&caller, &r.audience, &r.scopes, lifetime).await?;
        Ok(Response::new(pb::IssueTokenResponse {
            access_token: issued.access_token,
            token_type: "Bearer".into(),
            expires_in: issued.expires_in,
            scope: issued.scope,
        }))
    }

    async fn create_enrollment_token(
        &self,
        request: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Reply<pb::EnrollmentToken> {
        let origin = origin(&request, "CreateEnrollmentToken")?;
        let r = request.into_inner();
        let id = principal_id(&r.principal_id)?;
        let (ttl, max_validity) = (validity(r.ttl_seconds), validity(r.max_validity_seconds));
        let created = self.registry.create_enrollment_token(&origin, &id, ttl, max_validity).await?;
        Ok(Response::new(pb::EnrollmentToken {
            principal_id: id.as_str().to_owned(),
            secret: created.secret,
            ca_sha256_fingerprint: self.registry.ca_fingerprint(),
            expires_at: Some(timestamp(created.expires_at)),
            id: created.id,
            max_validity_seconds: max_validity.map_or(0, |v| v.as_secs()),
        }))
    }

    async fn list_enrollment_tokens(
        &self,
        request: Request<pb::ListEnrollmentTokensRequest>,
    ) -> Reply<pb::ListEnrollmentTokensResponse> {
        let id = principal_id(&request.into_inner().principal_id)?;
        let tokens = self.registry.list_enrollment_tokens(&id).await?;
        Ok(Response::new(pb::ListEnrollmentTokensResponse {
            tokens: tokens.into_iter().map(enrollment_token_to_wire).collect(),
        }))
    }

    async fn revoke_enrollment_token(
        &self,
        request: Request<pb::RevokeEnrollmentTokenRequest>,
    ) -> Reply<pb::EnrollmentTokenInfo> {
        let origin = origin(&request, "RevokeEnrollmentToken")?;
        let r = request.into_inner();
        let id = principal_id(&r.principal_id)?;
        let revoked = self.registry.revoke_enrollment_token(&origin, &id, &r.token_id).await?;
        Ok(Response::new(enrollment_token_to_wire(revoked)))
    }

    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Reply<pb::IssueCertificateResponse> {
        let address = audit::peer_address(&request);
        let r = request.into_inner();
        let id = principal_id(&r.principal_id)?;
        let origin = crate::audit::Origin::enrolling(&id, address);
        let issued = self.registry.enroll(&origin, &id, &r.secret, &r.csr, validity(r.validity_seconds)).await?;
        Ok(Response::new(issued_to_wire(issued)))
    }

    async fn list_audit_chains(
        &self,
        _request: Request<pb::ListAuditChainsRequest>,
    ) -> Reply<pb::ListAuditChainsResponse> {
        let heads = self.audit.heads().await?;
        Ok(Response::new(pb::ListAuditChainsResponse { chains: heads.into_iter().map(audit::head_to_wire).collect() }))
    }

    async fn create_workload(&self, request: Request<pb::CreateWorkloadRequest>) -> Reply<pb::Workload> {
        self.create_workload_rpc(request).await
    }

    async fn get_workload(&self, request: Request<pb::GetWorkloadRequest>) -> Reply<pb::Workload> {
        self.get_workload_rpc(request).await
    }

    async fn list_workloads(&self, request: Request<pb::ListWorkloadsRequest>) -> Reply<pb::ListWorkloadsResponse> {
        self.list_workloads_rpc(request).await
    }

    async fn delete_workload(&self, request: Request<pb::DeleteWorkloadRequest>) -> Reply<pb::DeleteWorkloadResponse> {
        self.delete_workload_rpc(request).await
    }

    async fn list_node_workloads(
        &self,
        request: Request<pb::ListNodeWorkloadsRequest>,
    ) -> Reply<pb::ListWorkloadsResponse> {
        self.list_node_workloads_rpc(request).await
    }

    async fn issue_workload_certificate(
        &self,
        request: Request<pb::IssueWorkloadCertificateRequest>,
    ) -> Reply<pb::IssueCertificateResponse> {
        self.issue_workload_certificate_rpc(request).await
    }

    async fn issue_workload_token(
        &self,
        request: Request<pb::IssueWorkloadTokenRequest>,
    ) -> Reply<pb::IssueWorkloadTokenResponse> {
        self.issue_workload_token_rpc(request).await
    }

    async fn get_trust_bundle(&self, request: Request<pb::GetTrustBundleRequest>) -> Reply<pb::TrustBundle> {
        self.get_trust_bundle_rpc(request).await
    }
}
