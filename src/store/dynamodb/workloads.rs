//! Workload entries in DynamoDB: an item of the principals table keyed `workload#<id>` (principal ids cannot contain
//! `#`, and the item has no principal listing attributes, so it never appears as a principal; the entry's principal
//! is the ordinary item keyed `<id>`). The item's attributes: `workload_node` (the entry's node), `type`, `selectors`
//! (a list of strings, in order), `ttl_seconds`, `created_at`, and `workload_shard`.
//!
//! Two sparse indexes, which only entry items carry the keys of, list them in id order (both sort on `id`, and
//! `workload#<a>` < `workload#<b>` exactly when `a` < `b`):
//! - `by_workload_node` (partition `workload_node`): one node's entries, what agents and node withdrawals read;
//! - `by_workload_shard` (partition `workload#<shard>`, [`TYPE_SHARDS`] of them, shard from a stable hash of the id):
//!   every entry, merged from the shards in id order the way principals are listed. Not a Scan: a Scan would read
//!   every principal of the table for each page, in no useful order.
//!
//! Creating an entry is one transaction: a check that the node is an ACTIVE principal of type node, the put of the
//! entry's principal (the one [`Store::create_principal`] makes), the put of the entry, and the audit event. Deleting
//! is a conditional delete with its audit event. Reads of one entry are strongly consistent; listings read the
//! (eventually consistent) indexes.

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};

use super::items::{Item, TYPE_SHARDS, get_n, get_s, n, s, time_from, type_shard};
use super::{DynamoStore, principal_exists, sdk_error, writes};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::model::{Principal, PrincipalId, PrincipalType, WorkloadEntry};
use crate::store::page_token::{self, Backend};
use crate::store::{Page, PageRequest, Store, errors};

const PREFIX: &str = "workload#";

fn key(id: &PrincipalId) -> String {
    format!("{PREFIX}{id}")
}

impl DynamoStore {
    pub(super) async fn put_workload(
        &self,
        entry: &WorkloadEntry,
        principal: &Principal,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        if entry.id == entry.node {
            // One transaction cannot check and write the same item; the answer is known without writing.
            errors::check_node(self.get_principal(&entry.node).await?, &entry.node)?;
            return Err(principal_exists(principal));
        }
        let put = Put::builder()
            .table_name(&self.principals)
            .set_item(Some(entry_item(entry)))
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(|e| Error::internal("workload put", e))?;
        let writes = vec![
            writes::principal_active(&self.principals, &entry.node, PrincipalType::Node)?,
            self.principal_put(principal)?,
            TransactWriteItem::builder().put(put).build(),
        ];
        match self.transact_audited(writes, audit).await {
            Ok(()) => Ok(()),
            // The node first, as SQLite checks it first.
            Err(failure) if failure.failed_condition(0) => {
                errors::check_node(self.get_principal(&entry.node).await?, &entry.node)?;
                Err(Error::Unavailable(format!(
                    "node {:?} changed during the workload's creation; retry",
                    entry.node.as_str()
                )))
            }
            Err(failure) if failure.failed_condition(1) => Err(principal_exists(principal)),
            Err(failure) if failure.failed_condition(2) => {
                Err(Error::AlreadyExists(format!("workload {:?}", entry.id.as_str())))
            }
            Err(failure) => Err(failure.into_error()),
        }
    }

    pub(super) async fn read_workload(&self, id: &PrincipalId) -> Result<Option<WorkloadEntry>> {
        self.get_item(&self.principals, "id", &key(id)).await?.as_ref().map(entry_from).transpose()
    }

    /// One node's entries from `by_workload_node`, or every entry merged from the shards of `by_workload_shard`; in
    /// id order, resumed after the id in the page token.
    pub(super) async fn query_workloads(
        &self,
        node: Option<&PrincipalId>,
        page: &PageRequest,
    ) -> Result<Page<WorkloadEntry>> {
        let listing = format!("workloads|{}", node.map_or("", PrincipalId::as_str));
        let after = match page.token.as_deref() {
            None => None,
            Some(token) => {
                let id: PrincipalId = page_token::decode(Backend::Dynamodb, &listing, token)?
                    .parse()
                    .map_err(|_| page_token::invalid("it is malformed"))?;
                Some(key(&id))
            }
        };
        let want = page.size.max(1) as usize;
        let partitions: Vec<(&'static str, &'static str, String)> = match node {
            Some(node) => vec![("by_workload_node", "workload_node", node.as_str().to_owned())],
            None => (0..TYPE_SHARDS)
                .map(|shard| ("by_workload_shard", "workload_shard", format!("{PREFIX}{shard}")))
                .collect(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (index, attribute, value) in partitions {
            let (this, after) = (self.clone(), after.clone());
            tasks.spawn(async move { this.query_workload_partition(index, attribute, value, after, want).await });
        }
        super::listing::merge_by_id(tasks, want, &listing, |w: &WorkloadEntry| w.id.as_str()).await
    }

    /// Up to `want` entries of one index partition after `after` (an item id), and whether there are more.
    async fn query_workload_partition(
        &self,
        index: &str,
        attribute: &str,
        value: String,
        after: Option<String>,
        want: usize,
    ) -> Result<(Vec<WorkloadEntry>, bool)> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.principals)
                .index_name(index)
                .expression_attribute_names("#p", attribute)
                .expression_attribute_values(":p", s(&value))
                .limit(i32::try_from(want + 1).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            q = match &after {
                Some(after) => q
                    .key_condition_expression("#p = :p AND id > :after")
                    .expression_attribute_values(":after", s(after)),
                None => q.key_condition_expression("#p = :p"),
            };
            let out = q.send().await.map_err(|e| sdk_error("Query", e))?;
            for item in out.items() {
                found.push(entry_from(item)?);
            }
            if found.len() > want {
                found.truncate(want);
                return Ok((found, true));
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok((found, false)),
            }
        }
    }

    pub(super) async fn remove_workload(&self, id: &PrincipalId, audit: Option<&AuditEvent>) -> Result<WorkloadEntry> {
        let entry = self.read_workload(id).await?.ok_or_else(|| errors::workload_not_found(id))?;
        // Entries never change: the one read is the one deleted, unless it is gone (or was replaced) meanwhile.
        let delete = Delete::builder()
            .table_name(&self.principals)
            .key("id", s(&key(id)))
            .condition_expression("attribute_exists(id) AND created_at = :created")
            .expression_attribute_values(":created", n(entry.created_at.unix_timestamp()))
            .build()
            .map_err(|e| Error::internal("workload delete", e))?;
        match self.transact_audited(vec![TransactWriteItem::builder().delete(delete).build()], audit).await {
            Ok(()) => Ok(entry),
            Err(failure) if failure.failed_condition(0) => match self.read_workload(id).await? {
                None => Err(errors::workload_not_found(id)),
                Some(_) => {
                    Err(Error::Unavailable(format!("workload {:?} changed during its deletion; retry", id.as_str())))
                }
            },
            Err(failure) => Err(failure.into_error()),
        }
    }
}

fn entry_item(e: &WorkloadEntry) -> Item {
    let mut item = Item::new();
    item.insert("id".into(), s(&key(&e.id)));
    item.insert("workload_node".into(), s(e.node.as_str()));
    item.insert("workload_shard".into(), s(&type_shard("workload", &e.id)));
    item.insert("type".into(), s(e.kind.as_str()));
    item.insert("selectors".into(), AttributeValue::L(e.selector_strings().iter().map(|v| s(v)).collect()));
    item.insert("ttl_seconds".into(), n(i64::try_from(e.ttl.as_secs()).unwrap_or(i64::MAX)));
    item.insert("created_at".into(), n(e.created_at.unix_timestamp()));
    item
}

fn entry_from(item: &Item) -> Result<WorkloadEntry> {
    let corrupt = |e: Error| Error::internal("corrupt workload item", e);
    let id = get_s(item, "id")?;
    let selectors = match item.get("selectors") {
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| match v {
                AttributeValue::S(text) => text.parse().map_err(corrupt),
                _ => Err(Error::Internal("corrupt workload item: a selector is not a string".into())),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(Error::Internal("corrupt workload item: no selector list".into())),
    };
    let ttl = get_n(item, "ttl_seconds")?;
    Ok(WorkloadEntry {
        id: id.strip_prefix(PREFIX).unwrap_or(id).parse().map_err(corrupt)?,
        node: get_s(item, "workload_node")?.parse().map_err(corrupt)?,
        kind: get_s(item, "type")?.parse().map_err(corrupt)?,
        selectors,
        ttl: std::time::Duration::from_secs(
            u64::try_from(ttl).map_err(|_| Error::Internal("corrupt workload item: negative ttl_seconds".into()))?,
        ),
        created_at: time_from(get_n(item, "created_at")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Selector;

    #[test]
    fn entries_round_trip_and_stay_out_of_the_principal_listings() {
        let entry = WorkloadEntry::new(
            "api".parse().unwrap(),
            "host-1".parse().unwrap(),
            PrincipalType::Service,
            vec![Selector::Uid(1000), Selector::Path("/usr/bin/api".into()), Selector::Gid(10)],
            WorkloadEntry::DEFAULT_TTL,
            time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        )
        .unwrap();
        let item = entry_item(&entry);
        assert_eq!(entry_from(&item).unwrap(), entry);
        assert_eq!(get_s(&item, "id").unwrap(), "workload#api");
        assert!(get_s(&item, "workload_shard").unwrap().starts_with(PREFIX));
        for principal_key in ["type_shard", "token_principal", "status"] {
            assert!(!item.contains_key(principal_key), "{principal_key}");
        }
    }
}
