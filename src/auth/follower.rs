//! Following revocations made elsewhere: [`RevocationFollower`] reads the store's revocation epoch every `poll` and
//! drops an [`Authenticator`]'s cache when it moves. Every withdrawal (revoke, suspend, delete), by any replica or any
//! process sharing the store, advances the epoch in the same atomic write, so a cached "valid" answer outlives a
//! withdrawal by at most one poll interval plus one store read. principald runs one; so must every service that embeds
//! the [`AuthLayer`](crate::auth::AuthLayer) with a cache TTL longer than that bound.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::store::Store;

/// Polls the revocation epoch for one authenticator.
pub struct RevocationFollower {
    store: Arc<dyn Store>,
    authenticator: Arc<Authenticator>,
    poll: Duration,
}

impl RevocationFollower {
    /// principald's default interval.
    pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

    pub fn new(store: Arc<dyn Store>, authenticator: Arc<Authenticator>, poll: Duration) -> Self {
        Self { store, authenticator, poll }
    }

    /// Runs until `shutdown` resolves, in a task of its own.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = self.run() => {}
            }
        })
    }

    /// Polls forever. The first read also drops the cache: a withdrawal may have landed before the epoch was known.
    pub async fn run(self) {
        let mut last = None;
        loop {
            match self.store.revocation_epoch().await {
                Ok(epoch) => {
                    if last != Some(epoch) {
                        // The epoch also moves when an intermediate is revoked: learn which before dropping the cache.
                        if let Err(error) = self.authenticator.refresh_revoked_issuers().await {
                            tracing::debug!(%error, "cannot read the revoked intermediates; will retry");
                            tokio::time::sleep(self.poll).await;
                            continue;
                        }
                        self.authenticator.forget_all();
                        tracing::debug!(epoch, "revocation epoch moved: authentication cache dropped");
                    }
                    last = Some(epoch);
                    if let Some(metrics) = self.authenticator.metrics() {
                        metrics.epoch_read();
                    }
                }
                // Cached results still expire with their TTL; readiness reports the outage.
                Err(error) => tracing::debug!(%error, "cannot read the revocation epoch"),
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}
