//! Operators' view of the replica intermediates: listing them, and revoking a compromised replica's one.

use crate::audit::{Origin, kind};
use crate::error::{Error, Result};
use crate::model::{IntermediateRecord, now};
use crate::registry::Registry;

impl Registry {
    /// Every replica's intermediate, newest first; expired ones only with `include_expired`.
    pub async fn list_intermediates(&self, include_expired: bool) -> Result<Vec<IntermediateRecord>> {
        let at = now();
        let mut all = self.store.list_intermediates().await?;
        all.retain(|i| include_expired || i.not_after > at);
        all.sort_by(|a, b| b.not_before.cmp(&a.not_before).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
        Ok(all)
    }

    /// Revokes the intermediate with this fingerprint (64 hex digits): the certificates it signed stop
    /// authenticating (here at once, on other replicas with the revocation epoch), and the replica holding it signs
    /// no further certificate with it and switches to a new intermediate.
    pub async fn revoke_intermediate(&self, origin: &Origin, fingerprint: &str) -> Result<IntermediateRecord> {
        let fingerprint = fingerprint.trim().to_ascii_lowercase();
        if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument(
                "invalid sha256_fingerprint: 64 hex digits (see ListIntermediates)".into(),
            ));
        }
        let event = self.audit.event(origin, kind::INTERMEDIATE_REVOKED, &fingerprint, serde_json::json!({}));
        let store = self.store.clone();
        let authenticator = self.authenticator.clone();
        let ca = self.ca.clone();
        // Like every withdrawal: runs to the end in its own task, so a cancelled request cannot skip the refresh.
        tokio::spawn(async move {
            let result = store.revoke_intermediate(&fingerprint, now(), event.as_ref()).await;
            let refreshed = authenticator.refresh_revoked_issuers().await;
            authenticator.forget_all();
            if ca.issuing().fingerprint() == fingerprint {
                ca.request_rotation();
            }
            let record = result?;
            refreshed?;
            tracing::warn!(fingerprint = %record.fingerprint, replica = %record.replica, "intermediate revoked");
            Ok(record)
        })
        .await
        .map_err(|e| Error::internal("revocation task", e))?
    }

    /// Refuses to sign with an intermediate known to be revoked (its replacement is on its way).
    pub(super) fn check_issuing(&self) -> Result<()> {
        let issuing = self.ca.issuing();
        if !issuing.fingerprint().is_empty() && self.authenticator.issuer_revoked(issuing.fingerprint()) {
            self.ca.request_rotation();
            return Err(Error::Unavailable("this replica's issuing intermediate was revoked; replacing it".into()));
        }
        Ok(())
    }
}
