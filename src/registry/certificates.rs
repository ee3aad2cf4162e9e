//! Certificate operations: issue, renew, revoke and read.
//!
//! Renewal rules: a certificate renews once, into a certificate that lives no longer than it was issued for. The
//! store records the renewal in the same atomic write that checks the parent is still unrevoked and not void, so a
//! revocation committed first always wins. A retry with the same public key (a lost response) gets the certificate
//! already issued; a renewal with another key is refused, so one stolen key cannot multiply itself.

use std::time::Duration;

use super::{Issued, MIN_VALIDITY, Registry, Withdrawn};
use crate::audit::{Origin, kind};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::model::{
    CertificateRecord, Principal, PrincipalId, PrincipalStatus, PrincipalType, Renewal, RevocationReason, Serial,
};
use crate::model::{now, sha256_hex};
use crate::pki::csr::ValidatedCsr;
use crate::pki::leaf::{self, IssuedLeaf};
use crate::pki::profile::BACKDATE;
use crate::store::{Page, PageRequest};

impl Registry {
    /// Issues a certificate for an ACTIVE principal from a CSR; only the CSR's public key is used.
    pub async fn issue(
        &self,
        origin: &Origin,
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
        self.check_live_cap(&principal).await?;
        let validity = self.validity(principal.kind, validity, None)?;
        let issued = self.sign(principal.kind, id, &csr, validity, principal.generation)?;
        // The store re-checks, in the same write, that the principal is still ACTIVE with this type and generation.
        let event = self.certificate_event(origin, kind::CERTIFICATE_ISSUED, &issued.record, None);
        self.store.insert_certificate(&issued.record, event.as_ref()).await?;
        tracing::info!(principal = %id, serial = %issued.record.serial, by = %origin.actor.principal_id, "certificate issued");
        Ok(issued)
    }

    /// Refuses a new certificate to a principal that holds its type's cap of live ones already.
    pub(super) async fn check_live_cap(&self, principal: &crate::model::Principal) -> Result<()> {
        let Some(&cap) = self.live_caps.get(&principal.kind) else { return Ok(()) };
        let now = crate::model::now();
        let (mut live, mut page) = (0u32, PageRequest { size: 500, token: None });
        loop {
            let listed = self.store.list_certificates(&principal.id, false, &page).await?;
            live += listed
                .items
                .iter()
                .filter(|c| c.revocation.is_none() && c.renewal.is_none() && c.not_after > now)
                .count() as u32;
            if live >= cap {
                return Err(Error::FailedPrecondition(format!(
                    "principal {:?} holds {live} live certificates, the most a {} may hold \
                     (--max-live-certificates): revoke one first",
                    principal.id.as_str(),
                    principal.kind
                )));
            }
            match listed.next_token {
                Some(token) => page.token = Some(token),
                None => return Ok(()),
            }
        }
    }

    /// Issues the caller a new certificate with its own id and type, replacing the one it calls with (once).
    pub async fn renew(
        &self,
        caller: &Caller,
        origin: &Origin,
        csr: &[u8],
        validity: Option<Duration>,
    ) -> Result<Issued> {
        let csr = ValidatedCsr::parse(csr)?;
        let key = sha256_hex(&csr.spki_der);
        // Both strongly consistent point reads, side by side.
        let (parent, principal, workload) = tokio::try_join!(
            self.get_certificate(&caller.serial),
            self.get_principal(&caller.id),
            self.store.get_workload(&caller.id)
        )?;
        // A workload's certificates come from its node's agent, which attests the process each time; a workload
        // renewing its own would keep the identity alive without its node.
        if workload.is_some() {
            return Err(Error::PermissionDenied(format!(
                "the certificates of workload {:?} come from its node's agent; a workload cannot renew its own",
                caller.id.as_str()
            )));
        }
        if let Some(renewal) = &parent.renewal {
            return self.renewed_already(&parent, renewal, &key, &principal).await;
        }
        let validity = self.validity(caller.kind, validity, Some(&parent))?;
        let issued = self.sign(caller.kind, &caller.id, &csr, validity, principal.generation)?;
        let event = self.certificate_event(origin, kind::CERTIFICATE_RENEWED, &issued.record, Some(&parent.serial));
        match self.store.insert_renewal(&parent.serial, &issued.record, &key, event.as_ref()).await {
            Ok(()) => {}
            // A concurrent renewal of the same certificate won: answer as if this request were its retry.
            Err(Error::AlreadyExists(message)) => {
                let parent = self.get_certificate(&caller.serial).await?;
                return match &parent.renewal {
                    Some(renewal) => self.renewed_already(&parent, renewal, &key, &principal).await,
                    None => Err(Error::AlreadyExists(message)),
                };
            }
            Err(e) => return Err(e),
        }
        tracing::info!(principal = %caller.id, serial = %issued.record.serial, previous = %caller.serial, "certificate renewed");
        Ok(issued)
    }

    /// The answer to renewing a certificate that was renewed before: the same certificate again for the same key.
    async fn renewed_already(
        &self,
        parent: &CertificateRecord,
        renewal: &Renewal,
        key: &str,
        owner: &Principal,
    ) -> Result<Issued> {
        if renewal.key_sha256 != key {
            return Err(Error::FailedPrecondition(format!(
                "certificate {} was already renewed (into {}) for another key; a certificate renews once: retry with \
                 the key of that renewal, or ask an admin for a new certificate",
                parent.serial, renewal.serial
            )));
        }
        let record = self.get_certificate(&renewal.serial).await?;
        if record.revocation.is_some() || record.is_void_for(owner) {
            return Err(Error::FailedPrecondition(format!(
                "certificate {} was renewed into {}, which has been revoked since: ask an admin for a new certificate",
                parent.serial, record.serial
            )));
        }
        let intermediate_pem = self.intermediate_pem(&record.issuer).await?;
        Ok(Issued::new(record, &intermediate_pem, self.ca.cert_pem()))
    }

    pub(super) fn certificate_event(
        &self,
        origin: &Origin,
        what: &str,
        record: &CertificateRecord,
        previous: Option<&Serial>,
    ) -> Option<crate::audit::AuditEvent> {
        let mut details = serde_json::json!({
            "principal": record.principal_id.as_str(),
            "type": record.principal_type.as_str(),
            "not_after": record.not_after.unix_timestamp(),
            "issuer": record.issuer,
        });
        if let Some(previous) = previous {
            details["previous"] = previous.as_str().into();
        }
        self.audit.event(origin, what, record.serial.as_str(), details)
    }

    pub(super) fn sign(
        &self,
        kind: PrincipalType,
        id: &PrincipalId,
        csr: &ValidatedCsr,
        validity: Duration,
        generation: u64,
    ) -> Result<Issued> {
        self.check_issuing()?;
        let IssuedLeaf { record, intermediate_pem, .. } =
            leaf::issue_client(&self.ca, &self.identity, kind, id, &csr.public_key, validity, generation)?;
        Ok(Issued::new(record, &intermediate_pem, self.ca.cert_pem()))
    }

    /// The PEM of the intermediate with fingerprint `issuer` ("" for the root).
    pub(super) async fn intermediate_pem(&self, issuer: &str) -> Result<String> {
        let current = self.ca.issuing();
        if issuer == current.fingerprint() {
            return Ok(current.intermediate_pem.clone());
        }
        if issuer.is_empty() {
            return Ok(String::new());
        }
        let intermediates = self.store.list_intermediates().await?;
        let known = intermediates.iter().find(|i| i.fingerprint == issuer);
        let known =
            known.ok_or_else(|| Error::internal("certificate chain", format!("intermediate {issuer} unknown")))?;
        Ok(crate::pki::pem::pem_of(&known.der))
    }

    /// The validity to issue: the type's maximum, or less if requested; a request outside `MIN_VALIDITY..=max` is
    /// refused. A renewal lives no longer than its parent was issued for: a longer request is cut to that (the
    /// response shows the validity granted), so renewing never extends what a certificate was given.
    pub(super) fn validity(
        &self,
        kind: PrincipalType,
        requested: Option<Duration>,
        parent: Option<&CertificateRecord>,
    ) -> Result<Duration> {
        let mut max = self.validity.get(&kind).copied().unwrap_or(self.default_validity);
        let mut requested = requested;
        if let Some(parent) = parent {
            // Issued for not_after - (not_before + BACKDATE); whole seconds, never below the minimum.
            let issued_for = (parent.not_after - parent.not_before - BACKDATE).whole_seconds();
            let issued_for = Duration::from_secs(u64::try_from(issued_for).unwrap_or(0)).max(MIN_VALIDITY);
            max = max.min(issued_for);
            requested = requested.map(|v| v.min(max));
        }
        match requested {
            None => Ok(max),
            Some(v) if v >= MIN_VALIDITY && v <= max => Ok(v),
            Some(v) => Err(Error::InvalidArgument(format!(
                "requested validity of {} is outside what this {kind} certificate allows: {} to {}; omit it for the \
                 maximum",
                crate::model::duration::format_duration(v),
                crate::model::duration::format_duration(MIN_VALIDITY),
                crate::model::duration::format_duration(max)
            ))),
        }
    }

    /// Revokes a certificate. A key compromise withdraws every certificate of the principal: the store raises the
    /// principal's revocation floor in the revoking write (so certificates issued from the stolen key, renewals
    /// included, are void at once), then sweeps them. A retry completes a sweep an earlier attempt left unfinished.
    pub async fn revoke(
        &self,
        caller: &Caller,
        origin: &Origin,
        serial: &Serial,
        reason: RevocationReason,
    ) -> Result<CertificateRecord> {
        let record = self.get_certificate(serial).await?;
        let serial = &record.serial;
        if *serial == caller.serial {
            return Err(Error::FailedPrecondition(
                "this is the certificate you are calling with; revoke it from another admin's session".into(),
            ));
        }
        let compromise = reason == RevocationReason::KeyCompromise;
        if compromise && record.principal_id == caller.id {
            return Err(Error::FailedPrecondition(
                "a key compromise revokes every certificate of the principal, including the one you are calling \
                 with; ask another admin"
                    .into(),
            ));
        }
        let details = serde_json::json!({ "principal": record.principal_id.as_str(), "reason": reason.as_str() });
        let event = self.audit.event(origin, kind::CERTIFICATE_REVOKED, serial.as_str(), details);
        let (store, target, owner) = (self.store.clone(), serial.clone(), record.principal_id.clone());
        let withdrawn =
            if compromise { Withdrawn::Principal(owner.clone()) } else { Withdrawn::Certificate(serial.clone()) };
        let record = self
            .withdraw(withdrawn, async move {
                let record = match store.revoke_certificate(&target, reason, now(), event.as_ref()).await {
                    Ok(record) => record,
                    Err(Error::FailedPrecondition(_)) if compromise => {
                        let record = store
                            .get_certificate(&target)
                            .await?
                            .ok_or_else(|| Error::NotFound(format!("certificate {target}")))?;
                        if record.revocation.map(|r| r.reason) != Some(RevocationReason::KeyCompromise) {
                            return Err(Error::FailedPrecondition(format!("certificate {target} is already revoked")));
                        }
                        record
                    }
                    Err(e) => return Err(e),
                };
                if compromise {
                    let others = store.revoke_all_certificates(&owner, reason, now()).await?;
                    tracing::info!(principal = %owner, revoked = others, "key compromise: revoked the principal's other certificates");
                }
                Ok(record)
            })
            .await?;
        tracing::info!(%serial, principal = %record.principal_id, reason = reason.as_str(), by = %caller.id, "certificate revoked");
        Ok(record)
    }

    /// The certificate with `serial`, also when it is given as openssl prints it (without DER's leading 00 byte).
    pub async fn get_certificate(&self, serial: &Serial) -> Result<CertificateRecord> {
        if let Some(record) = self.store.get_certificate(serial).await? {
            return Ok(record);
        }
        if let Some(signed) = serial.with_sign_byte()
            && let Some(record) = self.store.get_certificate(&signed).await?
        {
            return Ok(record);
        }
        Err(Error::NotFound(format!("certificate {serial}")))
    }

    /// Each record with why principald refuses it although it is unrevoked and unexpired, if it does (what `cert
    /// list` and `cert get` show as void). One principal read per distinct principal.
    pub async fn certificate_views(&self, records: Vec<CertificateRecord>) -> Result<Vec<CertificateView>> {
        let mut principals: std::collections::HashMap<PrincipalId, Option<crate::model::Principal>> =
            Default::default();
        let mut views = Vec::with_capacity(records.len());
        for record in records {
            if !principals.contains_key(&record.principal_id) {
                let principal = self.store.get_principal(&record.principal_id).await?;
                principals.insert(record.principal_id.clone(), principal);
            }
            let principal = principals[&record.principal_id].as_ref();
            let issuer_revoked = !record.issuer.is_empty() && self.authenticator.issuer_revoked(&record.issuer);
            let void = record.void_reason(principal, issuer_revoked);
            views.push(CertificateView { record, void });
        }
        Ok(views)
    }

    /// The unexpired certificates the intermediate `issuer` (64 hex digits) signed.
    pub async fn list_issued_by(
        &self,
        issuer: &str,
        include_revoked: bool,
        page: PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        let issuer = issuer.trim().to_ascii_lowercase();
        if issuer.len() != 64 || !issuer.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument(
                "invalid issuer_sha256_fingerprint: 64 hex digits (see `principalctl ca intermediates`)".into(),
            ));
        }
        self.store.list_issued_by(&issuer, include_revoked, &page).await
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

/// A certificate record with what authentication would say about it beyond the record.
#[derive(Clone, Debug)]
pub struct CertificateView {
    pub record: CertificateRecord,
    /// Why it is refused although unrevoked and unexpired (see [`CertificateRecord::void_reason`]).
    pub void: Option<&'static str>,
}
