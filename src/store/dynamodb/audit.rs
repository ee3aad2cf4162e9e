//! The audit log in DynamoDB: table `<prefix>audit` (key: chain + seq; GSI `by_time`: one of 8 shards + event id)
//! and one head item per chain in the meta table (`audit#<chain>`).
//!
//! Each process appends to chains of its own, `<replica>/<k>` for k in 0..[`CHAINS`], and keeps their heads in
//! memory. An event joins its change's TransactWriteItems as two more items: the head update (conditional on the head
//! this process knows) and the event put. A chain is used by one write at a time (a mutex per chain, held across its
//! transaction), so a chain head takes one write per transaction latency, far below an item's ~1,000 writes/s, and
//! [`CHAINS`] chains let that many writes of one process proceed at once. If another process appended to the same
//! chain (two processes with one replica name), the head condition fails, the head is re-read and the write retried.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use tokio::sync::{Mutex, MutexGuard};

use super::items::{Item, get_n, get_s, n, n_u64, s};
use super::transact::TransactionFailure;
use super::{DynamoStore, sdk_error};
use crate::audit::{Actor, AuditEvent, AuditFilter, ChainHead, Recorded, chain};
use crate::error::{Error, Result};
use crate::store::page_token::{self, Backend};
use crate::store::{Page, PageRequest};

/// Chains per process.
pub const CHAINS: usize = 64;
/// Shards of the `by_time` index (its partition key), so no index partition takes every event.
pub const TIME_SHARDS: u32 = 8;
const HEAD_PREFIX: &str = "audit#";
/// Attempts when another process keeps appending to the same chain.
const HEAD_ATTEMPTS: u32 = 5;

/// This process's chains and the heads it knows (`None`: read it before the next append).
pub struct Chains {
    names: Vec<String>,
    heads: Vec<Mutex<Option<ChainHead>>>,
    /// Chains whose events run past their head (the head was deleted or rolled back behind principald's back): this
    /// process no longer appends to them, so the evidence stays as found for `audit verify`.
    broken: Vec<std::sync::atomic::AtomicBool>,
    next: AtomicUsize,
}

impl Chains {
    pub fn new(replica: &str) -> Self {
        let replica = if replica.is_empty() { "principald" } else { replica };
        Self {
            names: (0..CHAINS).map(|k| format!("{replica}/{k}")).collect(),
            heads: (0..CHAINS).map(|_| Mutex::new(None)).collect(),
            broken: (0..CHAINS).map(|_| std::sync::atomic::AtomicBool::new(false)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The first free chain (so a lightly loaded process appends to few chains), else the next in turn once free.
    async fn acquire(&self) -> (usize, MutexGuard<'_, Option<ChainHead>>) {
        let usable = |index: usize| !self.broken[index].load(Ordering::Relaxed);
        for (index, head) in self.heads.iter().enumerate().filter(|(i, _)| usable(*i)) {
            if let Ok(guard) = head.try_lock() {
                return (index, guard);
            }
        }
        let index =
            (0..CHAINS).map(|_| self.next.fetch_add(1, Ordering::Relaxed) % CHAINS).find(|i| usable(*i)).unwrap_or(0);
        (index, self.heads[index].lock().await)
    }

    fn set_broken(&self, index: usize) {
        self.broken[index].store(true, Ordering::Relaxed);
    }
}

impl DynamoStore {
    /// Runs `items` as one transaction, with `event` appended to one of this process's chains in it. Item indexes of
    /// a failure are those of `items`.
    pub(super) async fn transact_audited(
        &self,
        items: Vec<TransactWriteItem>,
        event: Option<&AuditEvent>,
    ) -> std::result::Result<(), TransactionFailure> {
        let Some(event) = event else { return self.transact(items).await };
        let (mut index, mut head) = self.chains.acquire().await;
        let mut name = &self.chains.names[index];
        let head_index = items.len();
        for _ in 0..HEAD_ATTEMPTS {
            if head.is_none() {
                *head = Some(self.read_head(name).await.map_err(TransactionFailure::Error)?);
            }
            let known = head.clone().filter(|h| h.seq > 0);
            let sealed = chain::seal(event.clone(), name, known.as_ref());
            let mut all = items.clone();
            all.push(self.head_update(&sealed).map_err(TransactionFailure::Error)?);
            all.push(self.event_put(&sealed).map_err(TransactionFailure::Error)?);
            match self.transact(all).await {
                Ok(()) => {
                    *head = Some(ChainHead { chain: name.clone(), seq: sealed.seq, hash: sealed.hash });
                    return Ok(());
                }
                // The head matched but an event is already at the next position: the chain runs past its head (its
                // head was deleted or rolled back in the table). Leave it as found and append elsewhere.
                Err(failure) if !failure.failed_condition(head_index) && failure.failed_condition(head_index + 1) => {
                    tracing::error!(chain = %name, "audit chain has events beyond its head (tampered with?): no longer appending to it; run principalctl audit verify");
                    self.chains.set_broken(index);
                    drop(head);
                    (index, head) = self.chains.acquire().await;
                    name = &self.chains.names[index];
                }
                // Another process appended to this chain: learn its head and try again.
                Err(failure) if failure.failed_condition(head_index) || failure.failed_condition(head_index + 1) => {
                    *head = None;
                }
                Err(failure @ TransactionFailure::Cancelled(_)) => return Err(failure),
                // The outcome is unknown (the transaction may have committed): re-read the head before the next use.
                Err(failure) => {
                    *head = None;
                    return Err(failure);
                }
            }
        }
        Err(TransactionFailure::Error(Error::Unavailable("audit chain kept changing under this replica; retry".into())))
    }

    async fn read_head(&self, chain: &str) -> Result<ChainHead> {
        let item = self.get_item(&self.meta, "key", &format!("{HEAD_PREFIX}{chain}")).await?;
        match item {
            None => Ok(ChainHead { chain: chain.to_owned(), seq: 0, hash: chain::GENESIS.into() }),
            Some(item) => head_from(&item),
        }
    }

    fn head_update(&self, r: &Recorded) -> Result<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&self.meta)
            .key("key", s(&format!("{HEAD_PREFIX}{}", r.chain)))
            .update_expression("SET chain = :chain, seq = :seq, #hash = :hash")
            .expression_attribute_names("#hash", "hash")
            .expression_attribute_values(":chain", s(&r.chain))
            .expression_attribute_values(":seq", n_u64(r.seq))
            .expression_attribute_values(":hash", s(&r.hash));
        update = if r.seq == 1 {
            update.condition_expression("attribute_not_exists(seq)")
        } else {
            update.condition_expression("seq = :prev").expression_attribute_values(":prev", n_u64(r.seq - 1))
        };
        let update = update.build().map_err(|e| Error::internal("audit head update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn event_put(&self, r: &Recorded) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.audit)
            .set_item(Some(event_item(r)))
            .condition_expression("attribute_not_exists(seq)")
            .build()
            .map_err(|e| Error::internal("audit put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    pub(super) async fn append_events(&self, events: &[AuditEvent]) -> Result<()> {
        for event in events {
            self.transact_audited(Vec::new(), Some(event)).await.map_err(TransactionFailure::into_error)?;
        }
        Ok(())
    }

    pub(super) async fn heads(&self) -> Result<Vec<ChainHead>> {
        let mut heads = self.scan_meta(HEAD_PREFIX).await?.iter().map(head_from).collect::<Result<Vec<_>>>()?;
        heads.sort_by(|a, b| a.chain.cmp(&b.chain));
        Ok(heads)
    }

    pub(super) async fn chain_after(&self, chain: &str, after: u64, limit: u32) -> Result<Vec<Recorded>> {
        let mut out = Vec::new();
        let mut start = None;
        while out.len() < limit as usize {
            let page = self
                .client
                .query()
                .table_name(&self.audit)
                .consistent_read(true)
                .key_condition_expression("chain = :chain AND seq > :after")
                .expression_attribute_values(":chain", s(chain))
                .expression_attribute_values(":after", n_u64(after))
                .limit(i32::try_from(limit as usize - out.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items() {
                out.push(recorded_from(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Queries every time shard from the page's position and merges them by id.
    pub(super) async fn list_events(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<Recorded>> {
        let listing = crate::store::page_token::audit_listing(filter);
        let after = match &page.token {
            Some(token) => Some(page_token::decode(Backend::Dynamodb, &listing, token)?),
            None => None,
        };
        let size = page.size.max(1) as usize;
        let mut tasks = tokio::task::JoinSet::new();
        for shard in 0..TIME_SHARDS {
            let (this, filter, after) = (self.clone(), filter.clone(), after.clone());
            tasks.spawn(async move { this.shard_events(shard, &filter, after.as_deref(), size + 1).await });
        }
        let mut items = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            items.extend(joined.map_err(|e| Error::internal("query task", e))??);
        }
        items.sort_by(|a, b| a.event.id.cmp(&b.event.id));
        if filter.newest_first {
            items.reverse();
        }
        let next_token = if items.len() > size {
            items.truncate(size);
            items.last().map(|r| page_token::encode(Backend::Dynamodb, &listing, &r.event.id))
        } else {
            None
        };
        Ok(Page { items, next_token })
    }

    async fn shard_events(
        &self,
        shard: u32,
        filter: &AuditFilter,
        after: Option<&str>,
        want: usize,
    ) -> Result<Vec<Recorded>> {
        // The key range [low, high]; `after` is the page cursor: exclusive on its side of the range.
        let since = filter.since_ms.map_or_else(|| "0".to_owned(), crate::audit::uuid_v7_floor);
        let until = filter.until_ms.map_or_else(|| "~".to_owned(), crate::audit::uuid_v7_floor);
        let (low, high) = match after {
            Some(after) if filter.newest_first => (since, after.min(until.as_str()).to_owned()),
            Some(after) => (format!("{after}\u{0}").max(since), until.clone()),
            None => (since, until.clone()),
        };
        if low > high {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut start = None;
        while out.len() < want {
            let page = self
                .client
                .query()
                .table_name(&self.audit)
                .index_name("by_time")
                .key_condition_expression("#shard = :shard AND id BETWEEN :low AND :high")
                .expression_attribute_names("#shard", "shard")
                .expression_attribute_values(":shard", s(&shard.to_string()))
                .expression_attribute_values(":low", s(&low))
                .expression_attribute_values(":high", s(&high))
                .limit(i32::try_from(want.max(25)).unwrap_or(i32::MAX))
                .scan_index_forward(!filter.newest_first)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items() {
                let r = recorded_from(item)?;
                // Both bounds are inclusive in the key condition: the exclusive ones are checked here.
                let below_until = filter.until_ms.is_none_or(|_| r.event.id < until);
                let past_cursor =
                    after.is_none_or(|a| if filter.newest_first { r.event.id.as_str() < a } else { true });
                if filter.matches(&r.event) && below_until && past_cursor {
                    out.push(r);
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(out)
    }
}

fn event_item(r: &Recorded) -> Item {
    let e = &r.event;
    // The id's last hex digit is random: it spreads events evenly over the shards.
    let shard = u32::from_str_radix(&e.id[e.id.len().saturating_sub(1)..], 16).unwrap_or(0) % TIME_SHARDS;
    Item::from([
        ("chain".to_owned(), s(&r.chain)),
        ("seq".to_owned(), n_u64(r.seq)),
        ("shard".to_owned(), s(&shard.to_string())),
        ("id".to_owned(), s(&e.id)),
        ("time_ms".to_owned(), n(e.time_ms)),
        ("kind".to_owned(), s(&e.kind)),
        ("actor_id".to_owned(), s(&e.actor.principal_id)),
        ("actor_type".to_owned(), s(&e.actor.principal_type)),
        ("actor_serial".to_owned(), s(&e.actor.certificate_serial)),
        ("actor_sha256".to_owned(), s(&e.actor.certificate_sha256)),
        ("source_address".to_owned(), s(&e.source_address)),
        ("replica".to_owned(), s(&e.replica)),
        ("rpc".to_owned(), s(&e.rpc)),
        ("target".to_owned(), s(&e.target)),
        ("outcome".to_owned(), s(&e.outcome)),
        ("details".to_owned(), s(&e.details)),
        ("prev_hash".to_owned(), s(&r.prev_hash)),
        ("hash".to_owned(), s(&r.hash)),
    ])
}

fn recorded_from(item: &Item) -> Result<Recorded> {
    let text = |name: &str| get_s(item, name).map(str::to_owned);
    let seq = u64::try_from(get_n(item, "seq")?).map_err(|e| Error::internal("corrupt audit item", e))?;
    Ok(Recorded {
        event: AuditEvent {
            id: text("id")?,
            time_ms: get_n(item, "time_ms")?,
            kind: text("kind")?,
            actor: Actor {
                principal_id: text("actor_id")?,
                principal_type: text("actor_type")?,
                certificate_serial: text("actor_serial")?,
                certificate_sha256: text("actor_sha256")?,
            },
            source_address: text("source_address")?,
            replica: text("replica")?,
            rpc: text("rpc")?,
            target: text("target")?,
            outcome: text("outcome")?,
            details: text("details")?,
        },
        chain: text("chain")?,
        seq,
        prev_hash: text("prev_hash")?,
        hash: text("hash")?,
    })
}

fn head_from(item: &Item) -> Result<ChainHead> {
    let seq = u64::try_from(get_n(item, "seq")?).map_err(|e| Error::internal("corrupt audit head", e))?;
    Ok(ChainHead { chain: get_s(item, "chain")?.to_owned(), seq, hash: get_s(item, "hash")?.to_owned() })
}
