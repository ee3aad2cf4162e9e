//! Workload entry rows: created with their principal, read, listed by node, deleted.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{corrupt, insert_principal, paginate, select_principal, sql_err, timestamp};
use crate::error::{Error, Result};
use crate::model::{Principal, PrincipalId, WorkloadEntry};
use crate::store::page_token::{self, Backend};
use crate::store::{Page, PageRequest, errors};

const COLUMNS: &str = "id, node, type, selectors, ttl_seconds, created_at";

pub(super) fn insert(conn: &Connection, entry: &WorkloadEntry, principal: &Principal) -> Result<()> {
    errors::check_node(select_principal(conn, &entry.node)?, &entry.node)?;
    insert_principal(conn, principal)?;
    conn.execute(
        "INSERT INTO workloads (id, node, type, selectors, ttl_seconds, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            entry.id.as_str(),
            entry.node.as_str(),
            entry.kind.as_str(),
            serde_json::to_string(&entry.selector_strings()).map_err(|e| Error::internal("selectors", e))?,
            i64::try_from(entry.ttl.as_secs()).unwrap_or(i64::MAX),
            entry.created_at.unix_timestamp(),
        ],
    )
    .map_err(sql_err)?;
    Ok(())
}

pub(super) fn select(conn: &Connection, id: &PrincipalId) -> Result<Option<WorkloadEntry>> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM workloads WHERE id = ?1"), [id.as_str()], |r| Ok(from_row(r)))
        .optional()
        .map_err(sql_err)?
        .transpose()
}

pub(super) fn delete(conn: &Connection, id: &PrincipalId) -> Result<WorkloadEntry> {
    let entry = select(conn, id)?.ok_or_else(|| errors::workload_not_found(id))?;
    conn.execute("DELETE FROM workloads WHERE id = ?1", [id.as_str()]).map_err(sql_err)?;
    Ok(entry)
}

pub(super) fn list(conn: &Connection, node: Option<&PrincipalId>, page: &PageRequest) -> Result<Page<WorkloadEntry>> {
    let listing = format!("workloads|{}", node.map_or("", PrincipalId::as_str));
    let after = match &page.token {
        None => String::new(),
        Some(token) => {
            let id: PrincipalId = page_token::decode(Backend::Sqlite, &listing, token)?
                .parse()
                .map_err(|_| page_token::invalid("it is malformed"))?;
            id.as_str().to_owned()
        }
    };
    let size = page.size.max(1);
    let sql =
        format!("SELECT {COLUMNS} FROM workloads WHERE (?1 IS NULL OR node = ?1) AND id > ?2 ORDER BY id LIMIT ?3");
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(params![node.map(PrincipalId::as_str), after, size + 1], |r| Ok(from_row(r)))
        .map_err(sql_err)?;
    let items = rows.collect::<rusqlite::Result<Result<Vec<_>>>>().map_err(sql_err)??;
    Ok(paginate(items, size, |w| page_token::encode(Backend::Sqlite, &listing, w.id.as_str())))
}

fn from_row(r: &Row<'_>) -> Result<WorkloadEntry> {
    let text = |i: usize| r.get::<_, String>(i).map_err(sql_err);
    let selectors: Vec<String> = serde_json::from_str(&text(3)?).map_err(corrupt)?;
    let ttl: i64 = r.get(4).map_err(sql_err)?;
    Ok(WorkloadEntry {
        id: text(0)?.parse().map_err(corrupt)?,
        node: text(1)?.parse().map_err(corrupt)?,
        kind: text(2)?.parse().map_err(corrupt)?,
        selectors: selectors.iter().map(|s| s.parse()).collect::<Result<_>>().map_err(corrupt)?,
        ttl: std::time::Duration::from_secs(u64::try_from(ttl).map_err(corrupt)?),
        created_at: timestamp(r.get(5).map_err(sql_err)?)?,
    })
}
