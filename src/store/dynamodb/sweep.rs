//! Sweeps: revoking every certificate of a principal from the eventually consistent index, recorded as pending on the
//! epoch item until done, so an interrupted sweep is finished by a repeated call or a background pass.

use aws_sdk_dynamodb::types::TransactWriteItem;
use time::OffsetDateTime;

use super::transact::TransactionFailure;
use super::writes::{self, Sweep};
use super::{DynamoStore, MAX_TRANSACTION_ITEMS};
use crate::error::Result;
use crate::store::{PageRequest, Store};

impl DynamoStore {
    /// Revokes every unrevoked certificate of the sweep's principal, then removes the sweep from the pending set.
    /// The index is eventually consistent: sweep until it shows nothing unrevoked (a certificate recorded a moment ago
    /// may appear late), at most a few rounds. Those it misses are void already (the floor rose first).
    ///
    /// Only certificates below the principal's current generation are revoked: those are void whatever happens next,
    /// so a sweep finished late (after a reactivation and new certificates) never touches a live one.
    pub(super) async fn sweep(&self, sweep: &Sweep, at: OffsetDateTime) -> Result<u32> {
        let mut revoked = 0u32;
        for _ in 0..3 {
            // A principal that no longer exists has nothing left to sweep.
            let floor = self.get_principal(&sweep.principal).await?.map_or(0, |p| p.generation);
            let mut serials = Vec::new();
            let mut token = None;
            loop {
                let page = self.list_certificates(&sweep.principal, false, &PageRequest { size: 1000, token }).await?;
                serials.extend(page.items.into_iter().filter(|c| c.generation < floor).map(|c| c.serial));
                token = page.next_token;
                if token.is_none() {
                    break;
                }
            }
            if serials.is_empty() {
                break;
            }
            for chunk in serials.chunks(MAX_TRANSACTION_ITEMS - 1) {
                let mut writes = vec![self.epoch_bump()?];
                for serial in chunk {
                    writes.push(writes::revoke_if_unrevoked(&self.certificates, serial, sweep.reason, at)?);
                }
                self.transact(writes).await.map_err(TransactionFailure::into_error)?;
                revoked += u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            }
        }
        let done = writes::sweep_done(&self.meta, sweep)?;
        self.transact(vec![TransactWriteItem::builder().update(done).build()])
            .await
            .map_err(TransactionFailure::into_error)?;
        Ok(revoked)
    }
}
