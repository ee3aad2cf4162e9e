//! The domain: what can be done to principals and certificates, and the rules for it. Handlers call these methods
//! after authorization; every change that can withdraw access also drops the matching authentication cache entries.
//!
//! Withdrawals (suspend, delete, revoke) run their store write and the cache invalidation in a task of their own
//! ([`Registry::withdraw`]): a request cancelled mid-way (client gone, deadline) still finishes the write it started
//! and never skips the invalidation that must follow it. Certificate operations live in [`certificates`].

mod certificates;
mod enrollment;
mod intermediates;
mod workloads;

pub use certificates::CertificateView;
pub use enrollment::{NewEnrollment, TokenStatus, TokenView};
pub use workloads::NewWorkload;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Origin, Recorder, kind};
use crate::auth::{Authenticator, Caller};
use crate::error::{Error, Result};
use crate::model::{CertificateRecord, Principal, PrincipalId, PrincipalStatus, PrincipalType, Serial, now};
use crate::pki::IdentityConfig;
use crate::pki::ca::CertificateAuthority;
use crate::store::{Page, PageRequest, PrincipalFilter, Store};

/// Shortest validity a request may ask for.
pub const MIN_VALIDITY: Duration = Duration::from_secs(60);
/// Page size when a request gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size; larger requests are served this many.
pub const MAX_PAGE_SIZE: u32 = 1000;
pub(crate) const MAX_DESCRIPTION: usize = 1024;
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
    /// The leaf alone.
    pub certificate_pem: String,
    /// Its issuers, issuer first, root last.
    pub ca_chain_pem: String,
    /// The leaf and its intermediate: what a TLS client presents (clients trust the root only).
    pub certificate_chain_pem: String,
}

impl Issued {
    /// `intermediate_pem` is the intermediate that signed `record` ("" when the root did); `root_pem` the root.
    pub fn new(record: CertificateRecord, intermediate_pem: &str, root_pem: &str) -> Self {
        let certificate_pem = crate::pki::pem::pem_of(&record.der);
        Self {
            certificate_chain_pem: format!("{certificate_pem}{intermediate_pem}"),
            ca_chain_pem: format!("{intermediate_pem}{root_pem}"),
            certificate_pem,
            record,
        }
    }
}

/// The principal and certificate registry.
pub struct Registry {
    store: Arc<dyn Store>,
    ca: Arc<CertificateAuthority>,
    identity: IdentityConfig,
    validity: HashMap<PrincipalType, Duration>,
    default_validity: Duration,
    authenticator: Arc<Authenticator>,
    audit: Recorder,
    /// Most live certificates a principal of a type may hold (none: no cap).
    live_caps: HashMap<PrincipalType, u32>,
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        ca: Arc<CertificateAuthority>,
        identity: IdentityConfig,
        validity: HashMap<PrincipalType, Duration>,
        default_validity: Duration,
        authenticator: Arc<Authenticator>,
        audit: Recorder,
    ) -> Self {
        Self { store, ca, identity, validity, default_validity, authenticator, audit, live_caps: HashMap::new() }
    }

    /// Caps how many live certificates (unexpired, unrevoked, not yet renewed) a principal of each type may hold:
    /// IssueCertificate and Enroll are refused at the cap (renewal replaces a certificate, so it is never refused).
    /// A soft cap: concurrent issuances to one principal may each see one below it.
    pub fn with_live_certificate_caps(mut self, caps: HashMap<PrincipalType, u32>) -> Self {
        self.live_caps = caps;
        self
    }

    pub async fn create_principal(&self, origin: &Origin, new: NewPrincipal) -> Result<Principal> {
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
            generation: 0,
        };
        let details = serde_json::json!({ "type": principal.kind.as_str() });
        let event = self.audit.event(origin, kind::PRINCIPAL_CREATED, principal.id.as_str(), details);
        self.store.create_principal(&principal, event.as_ref()).await?;
        tracing::info!(principal = %principal.id, kind = %principal.kind, by = %origin.actor.principal_id, "principal created");
        Ok(principal)
    }

    /// Hex SHA-256 of the CA certificate (what enrolling clients pin).
    /// The trust domain of the SPIFFE IDs this registry's certificates carry.
    pub fn trust_domain(&self) -> &str {
        &self.identity.trust_domain
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The store's revocation epoch (see [`Store::revocation_epoch`]).
    pub async fn revocation_epoch(&self) -> Result<u64> {
        self.store.revocation_epoch().await
    }

    pub fn ca_fingerprint(&self) -> String {
        crate::model::sha256_hex(self.ca.cert_der())
    }

    pub async fn get_principal(&self, id: &PrincipalId) -> Result<Principal> {
        self.store.get_principal(id).await?.ok_or_else(|| not_found(id))
    }

    pub async fn list_principals(&self, filter: &PrincipalFilter, page: PageRequest) -> Result<Page<Principal>> {
        self.store.list_principals(filter, &page).await
    }

    /// ACTIVE -> SUSPENDED. Callers cannot suspend themselves (that would lock out the last admin by accident).
    pub async fn suspend(&self, caller: &Caller, origin: &Origin, id: &PrincipalId, reason: &str) -> Result<Principal> {
        refuse_self(caller, id, "suspend")?;
        if reason.chars().count() > MAX_DESCRIPTION {
            return Err(Error::InvalidArgument(format!("reason is longer than {MAX_DESCRIPTION} characters")));
        }
        let reason = Some(reason).filter(|r| !r.is_empty()).map(str::to_owned);
        let details = serde_json::json!({ "reason": reason });
        let event = self.audit.event(origin, kind::PRINCIPAL_SUSPENDED, id.as_str(), details);
        let (store, target) = (self.store.clone(), id.clone());
        let principal = self
            .withdraw(Withdrawn::Principal(id.clone()), async move {
                let (from, to) = ([PrincipalStatus::Active], PrincipalStatus::Suspended);
                store.transition_principal(&target, &from, to, reason.as_deref(), now(), event.as_ref()).await
            })
            .await?;
        tracing::info!(principal = %id, by = %caller.id, "principal suspended");
        self.after_node_withdrawn(&principal).await?;
        Ok(principal)
    }

    /// SUSPENDED -> ACTIVE.
    pub async fn activate(&self, caller: &Caller, origin: &Origin, id: &PrincipalId) -> Result<Principal> {
        let event = self.audit.event(origin, kind::PRINCIPAL_ACTIVATED, id.as_str(), serde_json::json!({}));
        let (from, to) = ([PrincipalStatus::Suspended], PrincipalStatus::Active);
        let principal = self.store.transition_principal(id, &from, to, None, now(), event.as_ref()).await?;
        // Remembered refusals ("suspended") must not outlive the suspension.
        self.authenticator.forget_principal(id);
        tracing::info!(principal = %id, by = %caller.id, "principal activated");
        Ok(principal)
    }

    /// Soft delete: DELETED and the revocation floor raised in one write, then every certificate revoked (a sweep
    /// that a repeated delete or [`finish_sweeps`](Self::finish_sweeps) completes if it is interrupted).
    pub async fn delete(&self, caller: &Caller, origin: &Origin, id: &PrincipalId) -> Result<(Principal, u32)> {
        refuse_self(caller, id, "delete")?;
        let event = self.audit.event(origin, kind::PRINCIPAL_DELETED, id.as_str(), serde_json::json!({}));
        let (store, target) = (self.store.clone(), id.clone());
        let (principal, revoked) = self
            .withdraw(Withdrawn::Principal(id.clone()), async move {
                store.delete_principal(&target, now(), event.as_ref()).await
            })
            .await?;
        tracing::info!(principal = %id, by = %caller.id, revoked, "principal deleted");
        self.after_node_withdrawn(&principal).await?;
        Ok((principal, revoked))
    }

    /// A suspended or deleted node takes its workloads' certificates with it. The node itself is withdrawn already
    /// (it can obtain nothing more); if this second step fails, the caller hears so and a repeated suspension or
    /// deletion of the node is refused, so the error says how to finish it.
    async fn after_node_withdrawn(&self, principal: &Principal) -> Result<()> {
        if principal.kind != PrincipalType::Node {
            return Ok(());
        }
        self.withdraw_node(&principal.id).await.map(|_| ()).map_err(|e| {
            tracing::error!(node = %principal.id, error = %e, "could not revoke the certificates of the node's workloads");
            Error::Unavailable(format!(
                "node {:?} is {}, but revoking its workloads' certificates failed ({e}); revoke them with \
                 `principalctl cert revoke` or delete the workloads",
                principal.id.as_str(),
                principal.status
            ))
        })
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

impl Registry {
    /// Runs `write` (a store change that withdraws access) to completion in its own task, then drops the cache
    /// entries of `withdrawn`, whatever the outcome: an error may hide a committed write (a lost reply), and
    /// forgetting is always safe. Cancelling the caller cancels neither.
    async fn withdraw<T: Send + 'static>(
        &self,
        withdrawn: Withdrawn,
        write: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let authenticator = self.authenticator.clone();
        tokio::spawn(async move {
            let result = write.await;
            match &withdrawn {
                Withdrawn::Principal(id) => authenticator.forget_principal(id),
                Withdrawn::Certificate(serial) => authenticator.forget_certificate(serial),
            }
            result
        })
        .await
        .map_err(|e| Error::internal("withdrawal task", e))?
    }

    /// Finishes sweeps an interrupted deletion or key-compromise revocation left behind (see
    /// [`Store::finish_sweeps`]). The server calls it at start and then periodically.
    pub async fn finish_sweeps(&self) -> Result<u32> {
        let revoked = self.store.finish_sweeps().await?;
        if revoked > 0 {
            self.authenticator.forget_all();
            tracing::info!(revoked, "finished an interrupted certificate sweep");
        }
        Ok(revoked)
    }
}

/// Whose cached authentication results a withdrawal invalidates.
enum Withdrawn {
    Principal(PrincipalId),
    Certificate(Serial),
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
