//! Principal status changes: transitions (leaving ACTIVE raises the revocation floor and the epoch in the same
//! transaction) and the soft delete with its certificate sweep.

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use time::OffsetDateTime;

use super::DynamoStore;
use super::items::{n, s};
use super::writes::{self, Sweep};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::model::{Principal, PrincipalId, PrincipalStatus, RevocationReason};
use crate::store::{Store, errors};

impl DynamoStore {
    pub(super) async fn transition(
        &self,
        id: &PrincipalId,
        from: &[PrincipalStatus],
        to: PrincipalStatus,
        reason: Option<&str>,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<Principal> {
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!(":from{i}")).collect();
        let mut update = Update::builder()
            .table_name(&self.principals)
            .key("id", s(id.as_str()))
            .condition_expression(format!("attribute_exists(id) AND #status IN ({})", placeholders.join(", ")))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":at", n(at.unix_timestamp()));
        for (placeholder, status) in placeholders.iter().zip(from) {
            update = update.expression_attribute_values(placeholder, s(status.as_str()));
        }
        // Leaving ACTIVE raises the revocation floor in the same write.
        let raise = if to == PrincipalStatus::Active {
            ""
        } else {
            update = update.expression_attribute_values(":one", n(1));
            " ADD generation :one"
        };
        update = match reason {
            Some(r) => update
                .update_expression(format!("SET #status = :to, updated_at = :at, status_reason = :reason{raise}"))
                .expression_attribute_values(":reason", s(r)),
            None => {
                update.update_expression(format!("SET #status = :to, updated_at = :at REMOVE status_reason{raise}"))
            }
        };
        let mut writes = vec![
            TransactWriteItem::builder().update(update.build().map_err(|e| Error::internal("update", e))?).build(),
        ];
        // What the raised floor voids is then revoked for relying parties (CRLs, OCSP) by a recorded sweep.
        let sweep = (to != PrincipalStatus::Active)
            .then(|| Sweep { principal: id.clone(), reason: RevocationReason::PrivilegeWithdrawn });
        if let Some(sweep) = &sweep {
            writes.push(writes::epoch_bump(&self.meta, Some(sweep))?);
        }
        if let Err(failure) = self.transact_audited(writes, audit).await {
            if !failure.failed_condition(0) {
                return Err(failure.into_error());
            }
            let current = self.get_principal(id).await?.ok_or_else(|| errors::principal_not_found(id))?;
            return Err(errors::wrong_status(&current, to));
        }
        if let Some(sweep) = &sweep {
            // The change is made; a sweep cut short here is finished by `finish_sweeps`.
            if let Err(error) = self.sweep(sweep, at).await {
                tracing::warn!(%error, principal = %id, "certificate sweep interrupted; it will be finished in the background");
            }
        }
        self.get_principal(id).await?.ok_or_else(|| errors::principal_not_found(id))
    }

    pub(super) async fn delete(
        &self,
        id: &PrincipalId,
        at: OffsetDateTime,
        audit: Option<&AuditEvent>,
    ) -> Result<(Principal, u32)> {
        // The status change and the floor withdraw access atomically (authentication and issuance both require ACTIVE
        // and a current generation); the certificates are then revoked from the index by a recorded sweep.
        let sweep = Sweep { principal: id.clone(), reason: RevocationReason::CessationOfOperation };
        let delete = Update::builder()
            .table_name(&self.principals)
            .key("id", s(id.as_str()))
            .condition_expression("attribute_exists(id) AND #status <> :deleted")
            .update_expression("SET #status = :deleted, updated_at = :at REMOVE status_reason ADD generation :one")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":deleted", s(PrincipalStatus::Deleted.as_str()))
            .expression_attribute_values(":at", n(at.unix_timestamp()))
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(|e| Error::internal("update", e))?;
        let writes =
            vec![TransactWriteItem::builder().update(delete).build(), writes::epoch_bump(&self.meta, Some(&sweep))?];
        if let Err(failure) = self.transact_audited(writes, audit).await {
            if failure.failed_condition(0) {
                let current = self.get_principal(id).await?.ok_or_else(|| errors::principal_not_found(id))?;
                if current.status == PrincipalStatus::Deleted {
                    // A repeated delete finishes the sweep an earlier one may have left unfinished.
                    self.sweep(&sweep, at).await?;
                }
                return Err(errors::wrong_status(&current, PrincipalStatus::Deleted));
            }
            return Err(failure.into_error());
        }
        let revoked = self.sweep(&sweep, at).await?;
        let principal = self.get_principal(id).await?.ok_or_else(|| errors::principal_not_found(id))?;
        Ok((principal, revoked))
    }
}
