//! The audit log in SQLite: events appended inside the write that makes their change (same savepoint, same commit),
//! one chain per database (the writer thread serialises every write anyway, so one head row costs no concurrency).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{corrupt, sql_err};
use crate::audit::{Actor, AuditEvent, AuditFilter, ChainHead, Recorded, chain};
use crate::error::Result;
use crate::store::page_token::{self, Backend};
use crate::store::{Page, PageRequest};

/// The one chain of an SQLite store.
pub const CHAIN: &str = "sqlite";

/// Appends `event` (if any) to the chain, in the caller's transaction.
pub(super) fn append(conn: &Connection, event: Option<&AuditEvent>) -> Result<()> {
    let Some(event) = event else { return Ok(()) };
    let head = conn
        .query_row("SELECT chain, seq, hash FROM audit_chains WHERE chain = ?1", [CHAIN], head_from_row)
        .optional()
        .map_err(sql_err)?
        .transpose()?;
    let r = chain::seal(event.clone(), CHAIN, head.as_ref());
    let e = &r.event;
    conn.prepare_cached(
        "INSERT INTO audit_events (id, chain, seq, time_ms, kind, actor_id, actor_type, actor_serial, actor_sha256,
            source_address, replica, rpc, target, outcome, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            e.id,
            r.chain,
            r.seq as i64,
            e.time_ms,
            e.kind,
            e.actor.principal_id,
            e.actor.principal_type,
            e.actor.certificate_serial,
            e.actor.certificate_sha256,
            e.source_address,
            e.replica,
            e.rpc,
            e.target,
            e.outcome,
            e.details,
            r.prev_hash,
            r.hash
        ])
    })
    .map_err(sql_err)?;
    conn.prepare_cached(
        "INSERT INTO audit_chains (chain, seq, hash) VALUES (?1, ?2, ?3)
         ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .and_then(|mut stmt| stmt.execute(params![r.chain, r.seq as i64, r.hash]))
    .map_err(sql_err)?;
    Ok(())
}

const COLUMNS: &str = "id, chain, seq, time_ms, kind, actor_id, actor_type, actor_serial, actor_sha256, \
     source_address, replica, rpc, target, outcome, details, prev_hash, hash";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<Recorded>> {
    let seq: i64 = row.get(2)?;
    let event = AuditEvent {
        id: row.get(0)?,
        time_ms: row.get(3)?,
        kind: row.get(4)?,
        actor: Actor {
            principal_id: row.get(5)?,
            principal_type: row.get(6)?,
            certificate_serial: row.get(7)?,
            certificate_sha256: row.get(8)?,
        },
        source_address: row.get(9)?,
        replica: row.get(10)?,
        rpc: row.get(11)?,
        target: row.get(12)?,
        outcome: row.get(13)?,
        details: row.get(14)?,
    };
    let (chain, prev_hash, hash) = (row.get(1)?, row.get(15)?, row.get(16)?);
    Ok(u64::try_from(seq).map_err(corrupt).map(|seq| Recorded { event, chain, seq, prev_hash, hash }))
}

fn head_from_row(row: &Row<'_>) -> rusqlite::Result<Result<ChainHead>> {
    let (chain, seq, hash): (String, i64, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
    Ok(u64::try_from(seq).map_err(corrupt).map(|seq| ChainHead { chain, seq, hash }))
}

pub(super) fn heads(conn: &Connection) -> Result<Vec<ChainHead>> {
    let mut stmt = conn.prepare_cached("SELECT chain, seq, hash FROM audit_chains ORDER BY chain").map_err(sql_err)?;
    let rows = stmt.query_map([], head_from_row).map_err(sql_err)?;
    rows.map(|r| r.map_err(sql_err)?).collect()
}

pub(super) fn chain_after(conn: &Connection, chain: &str, after: u64, limit: u32) -> Result<Vec<Recorded>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE chain = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        ))
        .map_err(sql_err)?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![chain, after, limit], from_row).map_err(sql_err)?;
    rows.map(|r| r.map_err(sql_err)?).collect()
}

pub(super) fn list(conn: &Connection, filter: &AuditFilter, page: &PageRequest) -> Result<Page<Recorded>> {
    let listing = page_token::audit_listing(filter);
    let after = match &page.token {
        None => String::new(),
        Some(token) => page_token::decode(Backend::Sqlite, &listing, token)?,
    };
    let since = filter.since_ms.map(crate::audit::uuid_v7_floor).unwrap_or_default();
    let until = filter.until_ms.map(crate::audit::uuid_v7_floor);
    let size = page.size.max(1);
    // Oldest first: after the cursor; newest first: before it (an empty cursor bounds nothing).
    let (position, order) = if filter.newest_first { ("(?1 = '' OR id < ?1)", "DESC") } else { ("id > ?1", "ASC") };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit_events
             WHERE {position} AND id >= ?2 AND (?3 IS NULL OR id < ?3) AND (?4 IS NULL OR actor_id = ?4)
               AND (?5 IS NULL OR target = ?5) AND (?6 IS NULL OR kind = ?6)
             ORDER BY id {order} LIMIT ?7"
        ))
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(params![after, since, until, filter.actor, filter.target, filter.kind, size + 1], from_row)
        .map_err(sql_err)?;
    let mut items = rows.map(|r| r.map_err(sql_err)?).collect::<Result<Vec<_>>>()?;
    let next_token = if items.len() > size as usize {
        items.truncate(size as usize);
        items.last().map(|r| page_token::encode(Backend::Sqlite, &listing, &r.event.id))
    } else {
        None
    };
    Ok(Page { items, next_token })
}
