//! The domain: what can be done to principals and certificates, and the rules for it. Handlers call these methods
//! after authorization; every change that can withdraw access also drops the matching authentication cache entries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Authenticator, Caller};
use crate::error::{Error, Result};
use crate::model::{
    CertificateRecord, Principal, PrincipalId, PrincipalStatus, PrincipalType, RevocationReason, Serial, now,
};
use crate::pki::IdentityConfig;
use crate::pki::ca::CertificateAuthority;
use crate::pki::csr::ValidatedCsr;
use crate::pki::leaf::{self, IssuedLeaf};
use crate::store::{Page, PageRequest, PrincipalFilter, Store};

/// Shortest validity a request may ask for.
pub const MIN_VALIDITY: Duration = Duration::from_secs(60);
/// Page size when a request gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size; larger requests are served this many.
pub const MAX_PAGE_SIZE: u32 = 1000;
const MAX_DESCRIPTION: usize = 1024;
const MAX_EMAIL: usize = 254;

/// What a caller asks for when creating a principal.
#[derive(Clone, Debug)]
pub struct NewPrincipal {
    pub id: PrincipalId,
    pub kind: PrincipalType,
    pub description: String,
    pub email: Option<String>,
}

/// A certificate just issued, with the PEM the client needs.
#[derive(Clone, Debug)]
pub struct Issued {
    pub record: CertificateRecord,
    pub certificate_pem: String,
    pub ca_chain_pem: String,
}

/// The principal and certificate registry.
pub struct Registry {
    store: Arc<dyn Store>,
    ca: Arc<CertificateAuthority>,
    identity: IdentityConfig,
    validity: HashMap<PrincipalType, Duration>,
    default_validity: Duration,
    authenticator: Arc<Authenticator>,
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        ca: Arc<CertificateAuthority>,
        identity: IdentityConfig,
        validity: HashMap<PrincipalType, Duration>,
        default_validity: Duration,
        authenticator: Arc<Authenticator>,
    ) -> Self {
        Self { store, ca, identity, validity, default_validity, authenticator }
    }

    pub async fn create_principal(&self, new: NewPrincipal) -> Result<Principal> {
        if new.description.chars().count() > MAX_DESCRIPTION {
            return Err(Error::InvalidArgument(format!("description is longer than {MAX_DESCRIPTION} characters")));
        }
        if let Some(email) = &new.email {
            let plausible = email.len() <= MAX_EMAIL
                && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
                && !email.chars().any(|c| c.is_whitespace() || c.is_control());
            if !plausible {
                return Err(Error::InvalidArgument(format!("invalid email {email:?}: expected name@domain.tld")));
            }
        }
        let at = now();
        let principal = Principal {
            id: new.id,
            kind: new.kind,
            status: PrincipalStatus::Active,
            description: new.description,
            email: new.email,
            status_reason: None,
            created_at: at,
            updated_at: at,
        };
        self.store.create_principal(&principal).await?;
        tracing::info!(principal = %principal.id, kind = %principal.kind, "principal created");
        Ok(principal)
    }

    pub async fn get_principal(&self, id: &PrincipalId) -> Result<Principal> {
        self.store.get_principal(id).await?.ok_or_else(|| not_found(id))
    }

    pub async fn list_principals(&self, filter: &PrincipalFilter, page: PageRequest) -> Result<Page<Principal>> {
        self.store.list_principals(filter, &page).await
    }

    /// ACTIVE -> SUSPENDED. Callers cannot suspend themselves (that would lock out the last admin by accident).
    pub async fn suspend(&self, caller: &Caller, id: &PrincipalId, reason: &str) -> Result<Principal> {
        refuse_self(caller, id, "suspend")?;
        if reason.chars().count() > MAX_DESCRIPTION {
            return Err(Error::InvalidArgument(format!("reason is longer than {MAX_DESCRIPTION} characters")));
        }
        let reason = Some(reason).filter(|r| !r.is_empty());
        let result = self
            .store
            .transition_principal(id, &[PrincipalStatus::Active], PrincipalStatus::Suspended, reason, now())
            .await;
        // Even on an error: the write may have committed before the error (a timeout on the reply); forgetting is safe.
        self.authenticator.forget_principal(id);
        let principal = result?;
        tracing::info!(principal = %id, by = %caller.id, "principal suspended");
        Ok(principal)
    }

    /// SUSPENDED -> ACTIVE.
    pub async fn activate(&self, caller: &Caller, id: &PrincipalId) -> Result<Principal> {
        let principal = self
            .store
            .transition_principal(id, &[PrincipalStatus::Suspended], PrincipalStatus::Active, None, now())
            .await?;
        tracing::info!(principal = %id, by = %caller.id, "principal activated");
        Ok(principal)
    }

    /// Soft delete: DELETED, and every certificate revoked in the same write.
    pub async fn delete(&self, caller: &Caller, id: &PrincipalId) -> Result<(Principal, u32)> {
        refuse_self(caller, id, "delete")?;
        let result = self.store.delete_principal(id, now()).await;
        self.authenticator.forget_principal(id);
        let (principal, revoked) = result?;
        tracing::info!(principal = %id, by = %caller.id, revoked, "principal deleted");
        Ok((principal, revoked))
    }

    /// Issues a certificate for an ACTIVE principal from a CSR; only the CSR's public key is used.
    pub async fn issue(
        &self,
        caller: &Caller,
        id: &PrincipalId,
        csr: &[u8],
        validity: Option<Duration>,
    ) -> Result<Issued> {
        let csr = ValidatedCsr::parse(csr)?;
        let principal = self.get_principal(id).await?;
        if principal.status != PrincipalStatus::Active {
            return Err(Error::FailedPrecondition(format!(
                "principal {:?} is {}: activate it before issuing certificates",
                id.as_str(),
                principal.status
            )));
        }
        let issued = self.sign_and_record(principal.kind, id, &csr, validity).await?;
        tracing::info!(principal = %id, serial = %issued.record.serial, by = %caller.id, "certificate issued");
        Ok(issued)
    }

    /// Issues the caller a new certificate with its own id and type.
    pub async fn renew(&self, caller: &Caller, csr: &[u8], validity: Option<Duration>) -> Result<Issued> {
        let csr = ValidatedCsr::parse(csr)?;
        let issued = self.sign_and_record(caller.kind, &caller.id, &csr, validity).await?;
        tracing::info!(principal = %caller.id, serial = %issued.record.serial, previous = %caller.serial, "certificate renewed");
        Ok(issued)
    }

    async fn sign_and_record(
        &self,
        kind: PrincipalType,
        id: &PrincipalId,
        csr: &ValidatedCsr,
        validity: Option<Duration>,
    ) -> Result<Issued> {
        let validity = self.validity(kind, validity)?;
        let IssuedLeaf { record, pem } =
            leaf::issue_client(&self.ca, &self.identity, kind, id, &csr.public_key, validity)?;
        // The store re-checks, in the same write, that the principal is still ACTIVE with this type.
        self.store.insert_certificate(&record).await?;
        Ok(Issued { record, certificate_pem: pem, ca_chain_pem: self.ca.cert_pem().to_owned() })
    }

    fn validity(&self, kind: PrincipalType, requested: Option<Duration>) -> Result<Duration> {
        let max = self.validity.get(&kind).copied().unwrap_or(self.default_validity);
        match requested {
            None => Ok(max),
            Some(v) if v >= MIN_VALIDITY && v <= max => Ok(v),
            Some(v) => Err(Error::InvalidArgument(format!(
                "requested validity of {}s is outside what {kind} certificates allow: {} to {} seconds; omit it for the maximum",
                v.as_secs(),
                MIN_VALIDITY.as_secs(),
                max.as_secs()
            ))),
        }
    }

    /// Revokes a certificate. For key compromise, every other unrevoked certificate of the principal is revoked too:
    /// whoever holds the stolen key may already have renewed with it, and renewals carry the same identity.
    pub async fn revoke(
        &self,
        caller: &Caller,
        serial: &Serial,
        reason: RevocationReason,
    ) -> Result<CertificateRecord> {
        if *serial == caller.serial {
            return Err(Error::FailedPrecondition(
                "this is the certificate you are calling with; revoke it from another admin's session".into(),
            ));
        }
        if reason == RevocationReason::KeyCompromise {
            let record = self.get_certificate(serial).await?;
            if record.principal_id == caller.id {
                return Err(Error::FailedPrecondition(
                    "a key compromise revokes every certificate of the principal, including the one you are calling \
                     with; ask another admin"
                        .into(),
                ));
            }
        }
        let result = self.store.revoke_certificate(serial, reason, now()).await;
        self.authenticator.forget_certificate(serial);
        let record = match result {
            Ok(record) => {
                tracing::info!(%serial, principal = %record.principal_id, reason = reason.as_str(), by = %caller.id, "certificate revoked");
                record
            }
            // Retrying a key-compromise revocation completes the sweep below if an earlier attempt stopped after the
            // first write.
            Err(Error::FailedPrecondition(_)) if reason == RevocationReason::KeyCompromise => {
                let record = self.get_certificate(serial).await?;
                if record.revocation.map(|r| r.reason) != Some(RevocationReason::KeyCompromise) {
                    return Err(Error::FailedPrecondition(format!("certificate {serial} is already revoked")));
                }
                record
            }
            Err(e) => return Err(e),
        };
        if reason == RevocationReason::KeyCompromise {
            let result = self.store.revoke_all_certificates(&record.principal_id, reason, now()).await;
            self.authenticator.forget_principal(&record.principal_id);
            let others = result?;
            tracing::info!(principal = %record.principal_id, revoked = others, "key compromise: revoked the principal's other certificates");
        }
        Ok(record)
    }

    pub async fn get_certificate(&self, serial: &Serial) -> Result<CertificateRecord> {
        self.store.get_certificate(serial).await?.ok_or_else(|| Error::NotFound(format!("certificate {serial}")))
    }

    /// A principal's certificates; `NotFound` if the principal does not exist.
    pub async fn list_certificates(
        &self,
        id: &PrincipalId,
        include_revoked: bool,
        page: PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        if page.token.is_none() {
            self.get_principal(id).await?;
        }
        self.store.list_certificates(id, include_revoked, &page).await
    }
}

/// A page request from the wire's size and token: 0 means the default, larger than the maximum is clamped.
pub fn page_request(size: i32, token: &str) -> Result<PageRequest> {
    let size = match size {
        s if s < 0 => return Err(Error::InvalidArgument("page_size must not be negative".into())),
        0 => DEFAULT_PAGE_SIZE,
        s => (s as u32).min(MAX_PAGE_SIZE),
    };
    if token.len() > 1024 {
        return Err(Error::InvalidArgument(
            "invalid page_token: pass the next_page_token of the previous response".into(),
        ));
    }
    Ok(PageRequest { size, token: Some(token.to_owned()).filter(|t| !t.is_empty()) })
}

fn refuse_self(caller: &Caller, id: &PrincipalId, verb: &str) -> Result<()> {
    if caller.id == *id {
        return Err(Error::FailedPrecondition(format!("you cannot {verb} your own principal; ask another admin")));
    }
    Ok(())
}

fn not_found(id: &PrincipalId) -> Error {
    Error::NotFound(format!("principal {:?}", id.as_str()))
}
