//! The SQLite writer: connections, migrations, and the thread that group-commits queued writes (one transaction per
//! batch, one savepoint per write, one commit per batch).

use std::path::Path;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::rows::sql_err;
use crate::error::{Error, Result};

/// Schema migrations in order; `PRAGMA user_version` records how many are applied.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../migrations/sqlite/0002_revocation_epoch.sql"),
    include_str!("../../../migrations/sqlite/0003_generations.sql"),
    include_str!("../../../migrations/sqlite/0004_intermediates.sql"),
    include_str!("../../../migrations/sqlite/0005_audit.sql"),
    include_str!("../../../migrations/sqlite/0006_crl.sql"),
    include_str!("../../../migrations/sqlite/0007_token_keys.sql"),
    include_str!("../../../migrations/sqlite/0008_enrollment.sql"),
    include_str!("../../../migrations/sqlite/0009_stored_crls.sql"),
    include_str!("../../../migrations/sqlite/0010_enrollment_generation.sql"),
    include_str!("../../../migrations/sqlite/0011_enrollment_revocation.sql"),
    include_str!("../../../migrations/sqlite/0012_certificates_by_issuer.sql"),
    include_str!("../../../migrations/sqlite/0013_workloads.sql"),
];

/// Largest part of the database file read through a memory map.
const MMAP_SIZE: i64 = 1 << 30;

/// One queued write: `run` executes it inside its savepoint and says whether to keep its changes; `deliver` answers
/// the caller once the commit outcome of its batch is known (or without running, if the batch could not start).
pub(super) trait WriteJob: Send {
    fn run(&mut self, conn: &Connection) -> bool;
    fn deliver(self: Box<Self>, commit: Result<()>);
}

pub(super) struct Pending<T, F> {
    pub(super) work: Option<F>,
    pub(super) result: Option<Result<T>>,
    pub(super) reply: oneshot::Sender<Result<T>>,
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

pub(super) type Job = Box<dyn WriteJob>;

pub(super) fn connect(path: &Path) -> Result<Connection> {
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

pub(super) fn migrate(conn: &Connection) -> Result<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql_err)?;
    if applied > MIGRATIONS.len() {
        return Err(Error::Internal(format!(
            "database schema version {applied} is newer than this binary knows ({}): upgrade principald",
            MIGRATIONS.len()
        )));
    }
    // Foreign keys are off while migrations run (a migration may rebuild a table others refer to, the way SQLite's
    // documentation describes) and checked before each one commits.
    conn.pragma_update(None, "foreign_keys", "OFF").map_err(sql_err)?;
    let migrated = apply(conn, applied);
    conn.pragma_update(None, "foreign_keys", "ON").map_err(sql_err)?;
    migrated
}

fn apply(conn: &Connection, applied: usize) -> Result<()> {
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_err)?;
        let applied = conn.execute_batch(sql).and_then(|()| {
            let dangling: i64 = conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
            if dangling > 0 {
                let message = format!("migration {} leaves {dangling} dangling references", index + 1);
                return Err(rusqlite::Error::InvalidParameterName(message));
            }
            conn.pragma_update(None, "user_version", index + 1)?;
            conn.execute_batch("COMMIT")
        });
        if let Err(e) = applied {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(sql_err(e));
        }
    }
    Ok(())
}

/// The writer thread: one transaction per batch of queued writes, one savepoint per write, one commit per batch.
pub(super) fn write_loop(conn: Connection, mut jobs: mpsc::UnboundedReceiver<Job>, max_batch: usize) {
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
pub(super) fn run_in_savepoint(conn: &Connection, job: &mut dyn WriteJob) -> std::result::Result<(), String> {
    conn.execute_batch("SAVEPOINT write").map_err(|e| format!("sqlite savepoint: {e}"))?;
    let keep = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn))).unwrap_or(false);
    if conn.is_autocommit() {
        return Err("sqlite abandoned the transaction".into());
    }
    let end = if keep { "RELEASE write" } else { "ROLLBACK TO write; RELEASE write" };
    conn.execute_batch(end).map_err(|e| format!("sqlite release: {e}"))
}
