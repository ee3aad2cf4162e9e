//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so a commit is on disk before the
//! method returns.
//!
//! Writes go to one writer thread that **group-commits**: it takes every write waiting in its queue (up to
//! `max_batch`), runs each inside its own savepoint of one transaction (a failing write rolls back only itself), commits
//! once (one fsync for the whole batch) and only then answers each caller. Durable throughput is therefore not bounded
//! by the disk's fsync rate. Reads run on a small pool of reader connections, which WAL lets proceed alongside the
//! writer and which see every write acknowledged before they start.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::model::{
    CertificateRecord, Principal, PrincipalId, PrincipalStatus, PrincipalType, Renewal, Revocation, RevocationReason,
    Serial,
};
use crate::store::page_token::{self, Backend};
use crate::store::{Page, PageRequest, PrincipalFilter, Store, errors};

/// Schema migrations in order; `PRAGMA user_version` records how many are applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_revocation_epoch.sql"),
    include_str!("../../migrations/sqlite/0003_generations.sql"),
];

const PRINCIPAL_COLUMNS: &str =
    "id, type, status, description, email, status_reason, created_at, updated_at, generation";
const CERTIFICATE_COLUMNS: &str = "serial, principal_id, principal_type, not_before, not_after, sha256_fingerprint, der, revoked_at, revocation_reason, generation, renewed_by, renewal_key";

/// Default for the most writes committed together.
pub const DEFAULT_MAX_BATCH: usize = 256;
/// Reader connections.
const READERS: usize = 2;
/// Largest part of the database file read through a memory map.
const MMAP_SIZE: i64 = 1 << 30;

/// One queued write: `run` executes it inside its savepoint and says whether to keep its changes; `deliver` answers
/// the caller once the commit outcome of its batch is known (or without running, if the batch could not start).
trait WriteJob: Send {
    fn run(&mut self, conn: &Connection) -> bool;
    fn deliver(self: Box<Self>, commit: Result<()>);
}

struct Pending<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> WriteJob for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = self.work.take().map_or_else(|| Err(Error::Internal("write ran twice".into())), |work| work(conn));
        let keep = result.is_ok();
        self.result = Some(result);
        keep
    }

    fn deliver(self: Box<Self>, commit: Result<()>) {
        let answer = match (self.result, commit) {
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Err(e)), _) | (Some(Ok(_)), Err(e)) | (None, Err(e)) => Err(e),
            (None, Ok(())) => Err(Error::Internal("write was never run".into())),
        };
        let _ = self.reply.send(answer);
    }
}

type Job = Box<dyn WriteJob>;

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::UnboundedSender<Job>,
    readers: Arc<[Mutex<Connection>]>,
    next_reader: Arc<AtomicUsize>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, applies pending migrations and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, DEFAULT_MAX_BATCH)
    }

    /// Like [`open`](Self::open), committing at most `max_batch` writes together (1: one commit per write).
    pub fn open_with(path: &Path, max_batch: usize) -> Result<Self> {
        let writer = connect(path)?;
        migrate(&writer)?;
        let readers: Vec<Mutex<Connection>> =
            (0..READERS).map(|_| connect(path).map(Mutex::new)).collect::<Result<_>>()?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(writer, rx, max_batch.max(1)))
            .map_err(|e| Error::internal("start sqlite writer", e))?;
        Ok(Self { writer: tx, readers: readers.into(), next_reader: Arc::new(AtomicUsize::new(0)) })
    }

    /// Runs `f` on the writer thread inside its own savepoint; resolves after the batch holding it committed.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(Pending { work: Some(f), result: None, reply });
        self.writer.send(job).map_err(|_| Error::Unavailable("sqlite writer stopped".into()))?;
        answer.await.map_err(|_| Error::Unavailable("sqlite writer stopped".into()))?
    }

    /// Runs `f` with a reader connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable: it holds no open transaction.
            let conn = readers[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| Error::internal("sqlite task", e))?
    }

    /// Loads many principals and certificates in one transaction, skipping none: for bulk imports and benchmark
    /// fixtures. Fails (and writes nothing) if any row conflicts.
    pub async fn import(&self, principals: Vec<Principal>, certificates: Vec<CertificateRecord>) -> Result<()> {
        self.write(move |conn| {
            for p in &principals {
                insert_principal(conn, p)?;
            }
            for c in &certificates {
                insert_certificate_row(conn, c)?;
            }
            Ok(())
        })
        .await
    }
}

fn connect(path: &Path) -> Result<Connection> {
    // Create the file 0600 before SQLite does (it would use the umask); SQLite gives its -wal and -shm files the
    // database file's permissions.
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::Unavailable(format!("create {}: {e}", path.display())))?;
    }
    let conn = Connection::open(path).map_err(|e| Error::Unavailable(format!("open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql_err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(sql_err)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(sql_err)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(sql_err)?;
    // Read pages through a memory map instead of a read() per page: with a million principals a lookup touches
    // several B-tree pages, and the system calls dominated the cost of an authentication that misses the cache.
    // Only pages actually touched become resident.
    conn.pragma_update(None, "mmap_size", MMAP_SIZE).map_err(sql_err)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql_err)?;
    if applied > MIGRATIONS.len() {
        return Err(Error::Internal(format!(
            "database schema version {applied} is newer than this binary knows ({}): upgrade principald",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_err)?;
        let applied = conn
            .execute_batch(sql)
            .and_then(|()| conn.pragma_update(None, "user_version", index + 1))
            .and_then(|()| conn.execute_batch("COMMIT"));
        if let Err(e) = applied {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(sql_err(e));
        }
    }
    Ok(())
}

/// The writer thread: one transaction per batch of queued writes, one savepoint per write, one commit per batch.
fn write_loop(conn: Connection, mut jobs: mpsc::UnboundedReceiver<Job>, max_batch: usize) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let message = format!("sqlite begin: {e}");
            for job in batch {
                job.deliver(Err(Error::Unavailable(message.clone())));
            }
            continue;
        }
        // If SQLite abandons the transaction (I/O error, disk full), stop: the writes that ran are gone with it, and
        // the remaining ones must not run outside a transaction. Every caller of the batch then gets the error.
        let mut broken = None;
        for job in &mut batch {
            if let Err(message) = run_in_savepoint(&conn, job.as_mut()) {
                broken = Some(message);
                break;
            }
        }
        let outcome = match broken {
            Some(message) => Err(message),
            None => conn.execute_batch("COMMIT").map_err(|e| format!("sqlite commit: {e}")),
        };
        if outcome.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in batch {
            job.deliver(outcome.clone().map_err(Error::Unavailable));
        }
    }
}

/// Runs `job` between SAVEPOINT and RELEASE, rolling back to the savepoint if it failed (or panicked), so a failing
/// write leaves no trace and does not disturb the others of its batch. `Err` if the batch's transaction is no longer
/// usable.
fn run_in_savepoint(conn: &Connection, job: &mut dyn WriteJob) -> std::result::Result<(), String> {
    conn.execute_batch("SAVEPOINT write").map_err(|e| format!("sqlite savepoint: {e}"))?;
    let keep = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn))).unwrap_or(false);
    if conn.is_autocommit() {
        return Err("sqlite abandoned the transaction".into());
    }
    let end = if keep { "RELEASE write" } else { "ROLLBACK TO write; RELEASE write" };
    conn.execute_batch(end).map_err(|e| format!("sqlite release: {e}"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_principal(&self, principal: &Principal) -> Result<()> {
        let p = principal.clone();
        self.write(move |conn| insert_principal(conn, &p)).await
    }

    async fn get_principal(&self, id: &PrincipalId) -> Result<Option<Principal>> {
        let id = id.clone();
        self.read(move |conn| select_principal(conn, &id)).await
    }

    async fn list_principals(&self, filter: &PrincipalFilter, page: &PageRequest) -> Result<Page<Principal>> {
        let filter = filter.clone();
        let listing = principal_listing(&filter);
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
        self.read(move |conn| {
            let sql = format!(
                "SELECT {PRINCIPAL_COLUMNS} FROM principals
                 WHERE (?1 IS NULL OR type = ?1) AND (?2 IS NULL OR status = ?2) AND id > ?3
                 ORDER BY id LIMIT ?4"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
            let rows = stmt
                .query_map(
                    params![
                        filter.kind.map(PrincipalType::as_str),
                        filter.status.map(PrincipalStatus::as_str),
                        after,
                        size + 1
                    ],
                    principal_from_row,
                )
                .map_err(sql_err)?;
            let items = rows.collect::<rusqlite::Result<Result<Vec<_>>>>().map_err(sql_err)??;
            Ok(paginate(items, size, |p| page_token::encode(Backend::Sqlite, &listing, p.id.as_str())))
        })
        .await
    }

    async fn transition_principal(
        &self,
        id: &PrincipalId,
        from: &[PrincipalStatus],
        to: PrincipalStatus,
        reason: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Principal> {
        let (id, from, reason) = (id.clone(), from.to_vec(), reason.map(str::to_owned));
        self.write(move |conn| {
            let current = select_principal(conn, &id)?.ok_or_else(|| errors::principal_not_found(&id))?;
            if !from.contains(&current.status) {
                return Err(errors::wrong_status(&current, to));
            }
            conn.execute(
                "UPDATE principals SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE id = ?1",
                params![id.as_str(), to.as_str(), reason, at.unix_timestamp()],
            )
            .map_err(sql_err)?;
            if to != PrincipalStatus::Active {
                raise_generation(conn, &id)?;
                bump_epoch(conn)?;
            }
            let updated = select_principal(conn, &id)?.ok_or_else(|| errors::principal_not_found(&id))?;
            Ok(updated)
        })
        .await
    }

    async fn delete_principal(&self, id: &PrincipalId, at: OffsetDateTime) -> Result<(Principal, u32)> {
        let id = id.clone();
        self.write(move |conn| {
            let current = select_principal(conn, &id)?.ok_or_else(|| errors::principal_not_found(&id))?;
            if current.status == PrincipalStatus::Deleted {
                return Err(errors::wrong_status(&current, PrincipalStatus::Deleted));
            }
            let at = at.unix_timestamp();
            conn.execute(
                "UPDATE principals SET status = 'deleted', status_reason = NULL, updated_at = ?2 WHERE id = ?1",
                params![id.as_str(), at],
            )
            .map_err(sql_err)?;
            let revoked = revoke_all(conn, &id, RevocationReason::CessationOfOperation, at)?;
            let updated = select_principal(conn, &id)?.ok_or_else(|| errors::principal_not_found(&id))?;
            Ok((updated, revoked))
        })
        .await
    }

    async fn insert_certificate(&self, cert: &CertificateRecord) -> Result<()> {
        let c = cert.clone();
        self.write(move |conn| {
            let principal =
                select_principal(conn, &c.principal_id)?.ok_or_else(|| errors::principal_not_found(&c.principal_id))?;
            errors::check_issuable(&principal, c.principal_type)?;
            errors::check_generation(&principal, c.generation)?;
            insert_certificate_row(conn, &c)
        })
        .await
    }

    async fn insert_renewal(&self, parent: &Serial, cert: &CertificateRecord, key_sha256: &str) -> Result<()> {
        let (parent, c, key) = (parent.clone(), cert.clone(), key_sha256.to_owned());
        self.write(move |conn| {
            let principal =
                select_principal(conn, &c.principal_id)?.ok_or_else(|| errors::principal_not_found(&c.principal_id))?;
            errors::check_issuable(&principal, c.principal_type)?;
            errors::check_generation(&principal, c.generation)?;
            let previous =
                select_certificate(conn, &parent)?.ok_or_else(|| Error::NotFound(format!("certificate {parent}")))?;
            errors::check_renewable(&previous, &principal)?;
            insert_certificate_row(conn, &c)?;
            conn.execute(
                "UPDATE certificates SET renewed_by = ?2, renewal_key = ?3 WHERE serial = ?1",
                params![parent.as_str(), c.serial.as_str(), key],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn revoke_all_certificates(
        &self,
        principal: &PrincipalId,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<u32> {
        let principal = principal.clone();
        self.write(move |conn| revoke_all(conn, &principal, reason, at.unix_timestamp())).await
    }

    async fn get_certificate(&self, serial: &Serial) -> Result<Option<CertificateRecord>> {
        let serial = serial.clone();
        self.read(move |conn| select_certificate(conn, &serial)).await
    }

    async fn list_certificates(
        &self,
        principal: &PrincipalId,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<CertificateRecord>> {
        let principal = principal.clone();
        let listing = format!("certificates|{principal}|{include_revoked}");
        let cursor = match &page.token {
            None => (i64::MAX, String::new()),
            Some(token) => parse_certificate_cursor(&page_token::decode(Backend::Sqlite, &listing, token)?)?,
        };
        let size = page.size.max(1);
        self.read(move |conn| {
            let sql = format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM certificates
                 WHERE principal_id = ?1 AND (?2 OR revoked_at IS NULL)
                   AND (not_before < ?3 OR (not_before = ?3 AND (?4 = '' OR serial < ?4)))
                 ORDER BY not_before DESC, serial DESC LIMIT ?5"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
            let rows = stmt
                .query_map(
                    params![principal.as_str(), include_revoked, cursor.0, cursor.1, size + 1],
                    certificate_from_row,
                )
                .map_err(sql_err)?;
            let items = rows.collect::<rusqlite::Result<Result<Vec<_>>>>().map_err(sql_err)??;
            Ok(paginate(items, size, |c| {
                page_token::encode(
                    Backend::Sqlite,
                    &listing,
                    &format!("{}.{}", c.not_before.unix_timestamp(), c.serial),
                )
            }))
        })
        .await
    }

    async fn revoke_certificate(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        at: OffsetDateTime,
    ) -> Result<CertificateRecord> {
        let serial = serial.clone();
        self.write(move |conn| {
            let current =
                select_certificate(conn, &serial)?.ok_or_else(|| Error::NotFound(format!("certificate {serial}")))?;
            if current.revocation.is_some() {
                return Err(Error::FailedPrecondition(format!("certificate {serial} is already revoked")));
            }
            conn.execute(
                "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3 WHERE serial = ?1",
                params![serial.as_str(), at.unix_timestamp(), reason.code()],
            )
            .map_err(sql_err)?;
            bump_epoch(conn)?;
            if reason == RevocationReason::KeyCompromise {
                // Raises the floor and revokes the rest in this same write: nothing is left for a sweep.
                revoke_all(conn, &current.principal_id, reason, at.unix_timestamp())?;
            }
            let updated =
                select_certificate(conn, &serial)?.ok_or_else(|| Error::NotFound(format!("certificate {serial}")))?;
            Ok(updated)
        })
        .await
    }

    async fn revocation_epoch(&self) -> Result<u64> {
        self.read(|conn| {
            let value: i64 = conn
                .query_row("SELECT value FROM meta WHERE key = 'revocation_epoch'", [], |r| r.get(0))
                .map_err(sql_err)?;
            u64::try_from(value).map_err(corrupt)
        })
        .await
    }

    async fn claim_ca(&self, fingerprint: &str, replace: bool) -> Result<String> {
        let fingerprint = fingerprint.to_owned();
        self.write(move |conn| {
            let on_conflict = if replace { "UPDATE SET value = excluded.value" } else { "NOTHING" };
            conn.execute(
                &format!(
                    "INSERT INTO settings (key, value) VALUES ('ca_fingerprint', ?1) ON CONFLICT (key) DO {on_conflict}"
                ),
                [&fingerprint],
            )
            .map_err(sql_err)?;
            conn.query_row("SELECT value FROM settings WHERE key = 'ca_fingerprint'", [], |r| r.get(0)).map_err(sql_err)
        })
        .await
    }

    /// Every sweep commits in the write that starts it: there is never anything left to finish.
    async fn finish_sweeps(&self) -> Result<u32> {
        Ok(0)
    }

    /// Goes through the writer, so a stuck or stopped writer makes the store unready.
    async fn ping(&self) -> Result<()> {
        self.write(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_err)).await
    }
}

fn insert_principal(conn: &Connection, p: &Principal) -> Result<()> {
    let inserted = conn
        .execute(
            "INSERT INTO principals (id, type, status, description, email, status_reason, created_at, updated_at,
                                     generation)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
            params![
                p.id.as_str(),
                p.kind.as_str(),
                p.status.as_str(),
                p.description,
                p.email,
                p.status_reason,
                p.created_at.unix_timestamp(),
                p.updated_at.unix_timestamp(),
                generation(p.generation)?
            ],
        )
        .map_err(sql_err)?;
    if inserted == 0 {
        return Err(Error::AlreadyExists(format!("principal {:?}", p.id.as_str())));
    }
    Ok(())
}

fn insert_certificate_row(conn: &Connection, c: &CertificateRecord) -> Result<()> {
    let sql = format!(
        "INSERT INTO certificates ({CERTIFICATE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (serial) DO NOTHING"
    );
    let cert_generation = generation(c.generation)?;
    let inserted = conn
        .prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                c.serial.as_str(),
                c.principal_id.as_str(),
                c.principal_type.as_str(),
                c.not_before.unix_timestamp(),
                c.not_after.unix_timestamp(),
                c.sha256_fingerprint,
                c.der,
                c.revocation.map(|r| r.at.unix_timestamp()),
                c.revocation.map(|r| r.reason.code()),
                cert_generation,
                c.renewal.as_ref().map(|r| r.serial.as_str()),
                c.renewal.as_ref().map(|r| r.key_sha256.as_str()),
            ])
        })
        .map_err(sql_err)?;
    if inserted == 0 {
        return Err(Error::AlreadyExists(format!("certificate {}", c.serial)));
    }
    Ok(())
}

/// Raises the principal's generation (voiding its certificates), then revokes every unrevoked one.
fn revoke_all(conn: &Connection, principal: &PrincipalId, reason: RevocationReason, at: i64) -> Result<u32> {
    raise_generation(conn, principal)?;
    let revoked = conn
        .execute(
            "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
             WHERE principal_id = ?1 AND revoked_at IS NULL",
            params![principal.as_str(), at, reason.code()],
        )
        .map_err(sql_err)?;
    bump_epoch(conn)?;
    Ok(u32::try_from(revoked).unwrap_or(u32::MAX))
}

fn raise_generation(conn: &Connection, principal: &PrincipalId) -> Result<()> {
    conn.execute("UPDATE principals SET generation = generation + 1 WHERE id = ?1", [principal.as_str()])
        .map_err(sql_err)?;
    Ok(())
}

fn generation(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::InvalidArgument(format!("generation {value} is out of range")))
}

fn principal_listing(filter: &PrincipalFilter) -> String {
    format!(
        "principals|{}|{}",
        filter.kind.map_or("", PrincipalType::as_str),
        filter.status.map_or("", PrincipalStatus::as_str)
    )
}

fn bump_epoch(conn: &Connection) -> Result<()> {
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'revocation_epoch'", []).map_err(sql_err)?;
    Ok(())
}

fn select_principal(conn: &Connection, id: &PrincipalId) -> Result<Option<Principal>> {
    let sql = format!("SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    stmt.query_row([id.as_str()], principal_from_row).optional().map_err(sql_err)?.transpose()
}

fn select_certificate(conn: &Connection, serial: &Serial) -> Result<Option<CertificateRecord>> {
    let sql = format!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    stmt.query_row([serial.as_str()], certificate_from_row).optional().map_err(sql_err)?.transpose()
}

/// Row -> principal. The outer `rusqlite::Result` is a read failure, the inner one corrupt data.
fn principal_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Principal>> {
    let (id, kind, status): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
    let (description, email, status_reason): (String, Option<String>, Option<String>) =
        (row.get(3)?, row.get(4)?, row.get(5)?);
    let (created_at, updated_at, generation): (i64, i64, i64) = (row.get(6)?, row.get(7)?, row.get(8)?);
    Ok((|| {
        Ok(Principal {
            id: id.parse().map_err(corrupt)?,
            kind: kind.parse().map_err(corrupt)?,
            status: status.parse().map_err(corrupt)?,
            description,
            email,
            status_reason,
            created_at: timestamp(created_at)?,
            updated_at: timestamp(updated_at)?,
            generation: u64::try_from(generation).map_err(corrupt)?,
        })
    })())
}

fn certificate_from_row(row: &Row<'_>) -> rusqlite::Result<Result<CertificateRecord>> {
    let (serial, principal_id, principal_type): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
    let (not_before, not_after): (i64, i64) = (row.get(3)?, row.get(4)?);
    let (sha256_fingerprint, der): (String, Vec<u8>) = (row.get(5)?, row.get(6)?);
    let (revoked_at, reason): (Option<i64>, Option<u8>) = (row.get(7)?, row.get(8)?);
    let (generation, renewed_by, renewal_key): (i64, Option<String>, Option<String>) =
        (row.get(9)?, row.get(10)?, row.get(11)?);
    Ok((|| {
        let revocation = match (revoked_at, reason) {
            (Some(at), Some(code)) => Some(Revocation {
                at: timestamp(at)?,
                reason: RevocationReason::from_code(code)
                    .ok_or_else(|| corrupt(format!("revocation reason {code}")))?,
            }),
            _ => None,
        };
        Ok(CertificateRecord {
            serial: serial.parse().map_err(corrupt)?,
            principal_id: principal_id.parse().map_err(corrupt)?,
            principal_type: principal_type.parse().map_err(corrupt)?,
            not_before: timestamp(not_before)?,
            not_after: timestamp(not_after)?,
            sha256_fingerprint,
            der,
            revocation,
            generation: u64::try_from(generation).map_err(corrupt)?,
            renewal: match (renewed_by, renewal_key) {
                (Some(serial), Some(key_sha256)) => {
                    Some(Renewal { serial: serial.parse().map_err(corrupt)?, key_sha256 })
                }
                _ => None,
            },
        })
    })())
}

fn paginate<T>(mut items: Vec<T>, size: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
    let size = size as usize;
    let next_token = if items.len() > size {
        items.truncate(size);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next_token }
}

fn parse_certificate_cursor(token: &str) -> Result<(i64, String)> {
    let bad = || page_token::invalid("it is malformed");
    let (nb, serial) = token.split_once('.').ok_or_else(bad)?;
    let serial: Serial = serial.parse().map_err(|_| bad())?;
    Ok((nb.parse().map_err(|_| bad())?, serial.as_str().to_owned()))
}

fn timestamp(secs: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(corrupt)
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::internal("corrupt row in sqlite store", e)
}

fn sql_err(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen) => {
            Error::Unavailable(format!("sqlite: {e}"))
        }
        _ => Error::internal("sqlite", e),
    }
}
