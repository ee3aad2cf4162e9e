//! Listings: principals by the sharded type index (merged in id order) and certificates by principal, newest first,
//! with checked page tokens. Listings read eventually consistent indexes; the authentication path never does.

use super::items::{self, Item, n, s};
use super::{DynamoStore, sdk_error};
use crate::error::{Error, Result};
use crate::model::{CertificateRecord, Principal, PrincipalId, PrincipalStatus, PrincipalType, Serial};
use crate::store::page_token::{self, Backend};
use crate::store::{Page, PageRequest, PrincipalFilter};

impl DynamoStore {
    pub(super) async fn principals_page(
        &self,
        filter: &PrincipalFilter,
        page: &PageRequest,
    ) -> Result<Page<Principal>> {
        let listing = format!(
            "principals|{}|{}",
            filter.kind.map_or("", PrincipalType::as_str),
            filter.status.map_or("", PrincipalStatus::as_str)
        );
        let after = match page.token.as_deref() {
            None => String::new(),
            Some(token) => {
                let id: PrincipalId = page_token::decode(Backend::Dynamodb, &listing, token)?
                    .parse()
                    .map_err(|_| page_token::invalid("it is malformed"))?;
                id.as_str().to_owned()
            }
        };
        let want = page.size.max(1) as usize;
        let kinds: Vec<PrincipalType> = filter.kind.map_or_else(|| PrincipalType::ALL.to_vec(), |k| vec![k]);
        let mut tasks = tokio::task::JoinSet::new();
        for kind in kinds {
            for shard in 0..items::TYPE_SHARDS {
                let (this, after) = (self.clone(), after.clone());
                let partition = format!("{kind}#{shard}");
                let status = filter.status;
                tasks.spawn(async move { this.query_principals(partition, after, status, want).await });
            }
        }
        merge_by_id(tasks, want, &listing, |p: &Principal| p.id.as_str()).await
    }

    async fn query_principals(
        &self,
        partition: String,
        after: String,
        status: Option<PrincipalStatus>,
        want: usize,
    ) -> Result<(Vec<Principal>, bool)> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.principals)
                .index_name("by_type_shard")
                .expression_attribute_values(":p", s(&partition))
                .limit(i32::try_from(want + 1).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            // Key values cannot be empty strings: the first page has no lower bound.
            q = if after.is_empty() {
                q.key_condition_expression("type_shard = :p")
            } else {
                q.key_condition_expression("type_shard = :p AND id > :after")
                    .expression_attribute_values(":after", s(&after))
            };
            if let Some(status) = status {
                q = q
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", s(status.as_str()));
            }
            let out = q.send().await.map_err(|e| sdk_error("Query", e))?;
            for item in out.items() {
                found.push(items::principal_from(item)?);
            }
            if found.len() > want {
                found.truncate(want);
                return Ok((found, true));
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok((found, false)),
            }
        }
    }

    pub(super) async fn certificates_page(
        &self,
        principal: &PrincipalId,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        let listing = format!("certificates|{principal}|{include_revoked}");
        let before = match page.token.as_deref() {
            None => None,
            Some(token) => {
                let key = page_token::decode(Backend::Dynamodb, &listing, token)?;
                // Positions are `<12 digits>#<serial>`: refuse anything else before it reaches a query.
                let valid = key.split_once('#').is_some_and(|(nb, serial)| {
                    nb.len() == 12 && nb.bytes().all(|b| b.is_ascii_digit()) && serial.parse::<Serial>().is_ok()
                });
                if !valid {
                    return Err(page_token::invalid("it is malformed"));
                }
                Some(key)
            }
        };
        let want = page.size.max(1) as usize;
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        let now = crate::model::now();
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.certificates)
                .index_name("by_principal")
                .scan_index_forward(false)
                .expression_attribute_values(":p", s(principal.as_str()))
                .expression_attribute_values(":now", n(now.unix_timestamp()))
                .limit(i32::try_from(want + 1).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            q = match &before {
                Some(key) => q
                    .key_condition_expression("principal_id = :p AND issued_key < :before")
                    .expression_attribute_values(":before", s(key)),
                None => q.key_condition_expression("principal_id = :p"),
            };
            q = q.filter_expression(if include_revoked {
                "expires_at >= :now"
            } else {
                "expires_at >= :now AND attribute_not_exists(revoked_at)"
            });
            let out = q.send().await.map_err(|e| sdk_error("Query", e))?;
            for item in out.items() {
                found.push(items::certificate_from(item)?);
            }
            if found.len() > want {
                found.truncate(want);
                let next_token =
                    found.last().map(|c| page_token::encode(Backend::Dynamodb, &listing, &items::issued_key(c)));
                return Ok(Page { items: found, next_token });
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(Page { items: found, next_token: None }),
            }
        }
    }
}

impl DynamoStore {
    /// What one intermediate signed: a filtered, consistent Scan of the certificates table (no index by issuer),
    /// resumed after the last serial returned.
    pub(super) async fn issued_by_page(
        &self,
        issuer: &str,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        let listing = format!("certificates|issuer={issuer}|{include_revoked}");
        let mut start: Option<Item> = match &page.token {
            None => None,
            Some(token) => {
                let serial: crate::model::Serial = page_token::decode(Backend::Dynamodb, &listing, token)?
                    .parse()
                    .map_err(|_| page_token::invalid("it is malformed"))?;
                Some([("serial".to_owned(), s(serial.as_str()))].into())
            }
        };
        let want = page.size.max(1) as usize;
        let now = crate::model::now();
        let mut found = Vec::new();
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.certificates)
                .filter_expression(if include_revoked {
                    "issuer = :issuer AND expires_at >= :now"
                } else {
                    "issuer = :issuer AND expires_at >= :now AND attribute_not_exists(revoked_at)"
                })
                .expression_attribute_values(":issuer", s(issuer))
                .expression_attribute_values(":now", n(now.unix_timestamp()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Scan", e))?;
            for item in out.items() {
                found.push(items::certificate_from(item)?);
            }
            if found.len() > want {
                found.truncate(want);
                let next_token =
                    found.last().map(|c| page_token::encode(Backend::Dynamodb, &listing, c.serial.as_str()));
                return Ok(Page { items: found, next_token });
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(Page { items: found, next_token: None }),
            }
        }
    }

    /// One CRL partition from the sparse `by_revocation` index (only revoked certificates carry its key).
    pub(super) async fn revoked_in_partition(
        &self,
        partition: u8,
        at: time::OffsetDateTime,
    ) -> Result<Vec<crate::pki::crl::RevokedEntry>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.certificates)
                .index_name("by_revocation")
                .key_condition_expression("revoked_partition = :partition")
                .filter_expression("not_after > :at")
                .expression_attribute_values(":partition", items::s(&crate::pki::crl::partition_name(partition)))
                .expression_attribute_values(":at", items::n(at.unix_timestamp()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items() {
                out.push(items::revoked_entry_from(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }
}

/// One page of a listing queried in parallel partitions (index shards): each task returns up to `want` items in id
/// order and whether its partition has more; the page is the first `want` of their merge by id.
pub(super) async fn merge_by_id<T: Send + 'static>(
    mut tasks: tokio::task::JoinSet<Result<(Vec<T>, bool)>>,
    want: usize,
    listing: &str,
    id: impl Fn(&T) -> &str,
) -> Result<Page<T>> {
    let (mut all, mut more) = (Vec::new(), false);
    while let Some(joined) = tasks.join_next().await {
        let (found, has_more) = joined.map_err(|e| Error::internal("query task", e))??;
        all.extend(found);
        more |= has_more;
    }
    all.sort_by(|a, b| id(a).cmp(id(b)));
    if all.len() > want {
        all.truncate(want);
        more = true;
    }
    let next_token =
        if more { all.last().map(|item| page_token::encode(Backend::Dynamodb, listing, id(item))) } else { None };
    Ok(Page { items: all, next_token })
}
