//! The store handle: opening the database (migrations, reader pool, the writer thread) and the two ways in, a write
//! on the group-committing writer thread and a read on a pooled reader connection.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::rows::{insert_certificate_row, insert_principal};
use super::writer::{Job, Pending, connect, migrate, write_loop};
use crate::error::{Error, Result};
use crate::model::{CertificateRecord, Principal};

/// Default for the most writes committed together.
pub const DEFAULT_MAX_BATCH: usize = 256;
/// Reader connections.
const READERS: usize = 2;

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
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
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
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T>
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
