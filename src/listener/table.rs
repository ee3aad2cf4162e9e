//! The connection table of one listener: who holds a slot, in which phase, and when each last sent anything. When a
//! cap is reached the table sheds the connection that has gone longest without sending (in the least advanced phase)
//! to admit the newcomer, so a flood of idle or half-sent connections ages out instead of locking out a real client.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use atomic_waker::AtomicWaker;
use tokio::sync::Notify;

use super::Limits;
use super::meters::Meters;

/// How far a connection has come; lower phases are shed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// TCP accepted, TLS handshake in progress.
    Handshake = 0,
    /// Established without a client certificate (gRPC), or waiting for a request (HTTP).
    Waiting = 1,
    /// Established with a client certificate (gRPC), or serving a request (HTTP).
    Active = 2,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Handshake,
            1 => Self::Waiting,
            _ => Self::Active,
        }
    }
}

/// One connection's row, shared by the table and the connection's stream.
pub(super) struct Entry {
    /// Position in `Inner::entries` (moves when another row is removed).
    index: AtomicUsize,
    /// Milliseconds since the table's start when the peer last sent a byte (or connected).
    last_read: AtomicU64,
    phase: AtomicU8,
    /// Counted under the certificate-less cap.
    anonymous: AtomicBool,
    shed: AtomicBool,
    /// Woken when the connection is shed, so its reader fails at once.
    waker: AtomicWaker,
}

impl Entry {
    pub(super) fn is_shed(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    pub(super) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
struct Inner {
    entries: Vec<Arc<Entry>>,
    /// Rows not shed, in total and per phase, and the certificate-less ones.
    live: usize,
    handshaking: usize,
    anonymous: usize,
}

/// The connections of one listener.
pub struct Table {
    name: &'static str,
    limits: Limits,
    started: Instant,
    inner: Mutex<Inner>,
    meters: Meters,
    /// Woken when a row is removed: the accept loop waits on it while shed rows have not closed yet.
    room: Notify,
}

/// Which cap a shed or refusal is attributed to.
#[derive(Clone, Copy)]
enum Cap {
    Connections,
    Handshakes,
    Anonymous,
}

impl Cap {
    fn label(self) -> &'static str {
        match self {
            Cap::Connections => "connection_cap",
            Cap::Handshakes => "handshake_cap",
            Cap::Anonymous => "anonymous_cap",
        }
    }
}

/// Why a newcomer could not be admitted (every slot is held by connections that may not be shed for it).
#[derive(Debug)]
pub struct Full(pub &'static str);

impl Table {
    pub fn new(name: &'static str, limits: Limits, meters: Meters) -> Arc<Self> {
        Arc::new(Self { name, limits, started: Instant::now(), inner: Mutex::default(), meters, room: Notify::new() })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether a newcomer can be admitted without refusing it: shed rows that have not closed yet keep the table
    /// from holding more than twice its cap.
    fn has_room(&self) -> bool {
        self.lock().entries.len() < self.limits.max_connections.saturating_mul(2)
    }

    /// Waits until [`admit`](Self::admit) will not refuse for want of room: shed connections close within moments
    /// (their tasks only have to run), and meanwhile newcomers wait in the kernel's accept queue instead of being
    /// refused, so a load balancer's probe arriving right after a flood is answered, not reset.
    pub async fn wait_for_room(&self) {
        while !self.has_room() {
            let notified = self.room.notified();
            if self.has_room() {
                return;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(10), notified).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the listener is at least half full: deadlines for incomplete phases shorten.
    pub fn under_pressure(&self) -> bool {
        self.lock().live * 2 >= self.limits.max_connections
    }

    /// Admits a new connection in `first` phase, shedding the idlest connection(s) when a cap is reached. Fails only
    /// when shed connections have not closed yet and the table holds twice its cap.
    pub fn admit(self: &Arc<Self>, first: Phase) -> Result<Slot, Full> {
        let now = self.now_ms();
        let mut inner = self.lock();
        if inner.entries.len() >= self.limits.max_connections.saturating_mul(2) {
            self.meters.refused(self.name, Cap::Connections.label());
            return Err(Full(Cap::Connections.label()));
        }
        if inner.live >= self.limits.max_connections {
            self.shed_one(&mut inner, Cap::Connections, |_| true);
        }
        if first == Phase::Handshake && inner.handshaking >= self.limits.max_handshakes {
            self.shed_one(&mut inner, Cap::Handshakes, |e| e.phase() == Phase::Handshake);
        }
        let entry = Arc::new(Entry {
            index: AtomicUsize::new(inner.entries.len()),
            last_read: AtomicU64::new(now),
            phase: AtomicU8::new(first as u8),
            anonymous: AtomicBool::new(false),
            shed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        inner.entries.push(entry.clone());
        inner.live += 1;
        if first == Phase::Handshake {
            inner.handshaking += 1;
        }
        drop(inner);
        self.meters.opened(self.name);
        Ok(Slot(Handle { table: self.clone(), entry }))
    }

    /// Marks the live row that matches `eligible` and has gone longest without sending (lowest phase first) as shed,
    /// wakes its reader, and stops counting it. Returns whether one was found.
    fn shed_one(&self, inner: &mut Inner, cap: Cap, eligible: impl Fn(&Entry) -> bool) -> bool {
        let victim = inner
            .entries
            .iter()
            .filter(|e| !e.is_shed() && eligible(e))
            .min_by_key(|e| (e.phase(), e.last_read.load(Ordering::Relaxed)))
            .cloned();
        let Some(victim) = victim else { return false };
        victim.shed.store(true, Ordering::Release);
        inner.live -= 1;
        if victim.phase() == Phase::Handshake {
            inner.handshaking -= 1;
        }
        if victim.anonymous.load(Ordering::Relaxed) {
            inner.anonymous -= 1;
        }
        victim.waker.wake();
        self.meters.shed(self.name, cap.label());
        true
    }

    fn remove(&self, entry: &Entry) {
        let mut inner = self.lock();
        let index = entry.index.load(Ordering::Relaxed);
        let removed = inner.entries.swap_remove(index);
        debug_assert!(std::ptr::eq(removed.as_ref(), entry));
        if let Some(moved) = inner.entries.get(index) {
            moved.index.store(index, Ordering::Relaxed);
        }
        if !entry.is_shed() {
            inner.live -= 1;
            if entry.phase() == Phase::Handshake {
                inner.handshaking -= 1;
            }
            if entry.anonymous.load(Ordering::Relaxed) {
                inner.anonymous -= 1;
            }
        }
        drop(inner);
        self.room.notify_waiters();
    }

    /// Open connections (not shed) and certificate-less ones, for tests and metrics.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.live, inner.anonymous)
    }
}

/// A connection's hold on its table row; dropping it frees the slot.
pub struct Slot(Handle);

/// A reference to a connection's row that does not hold the slot: what code beside the connection (an HTTP
/// service marking requests) uses.
#[derive(Clone)]
pub struct Handle {
    table: Arc<Table>,
    entry: Arc<Entry>,
}

impl std::ops::Deref for Slot {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.0
    }
}

impl Slot {
    pub fn handle(&self) -> Handle {
        self.0.clone()
    }
}

impl Handle {
    pub(super) fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }

    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Whether the table shed this connection to admit another.
    pub fn is_shed(&self) -> bool {
        self.entry.is_shed()
    }

    /// Records that the peer sent something now.
    pub(super) fn touch(&self) {
        self.entry.last_read.store(self.table.now_ms(), Ordering::Relaxed);
    }

    /// Moves the connection to `phase`; a connection without a client certificate is counted under the
    /// certificate-less cap, shedding the idlest of them when it is reached.
    pub fn enter(&self, phase: Phase, anonymous: bool) {
        let mut inner = self.table.lock();
        if self.entry.is_shed() {
            return;
        }
        let before = self.entry.phase();
        if before == Phase::Handshake && phase != Phase::Handshake {
            inner.handshaking -= 1;
        }
        self.entry.phase.store(phase as u8, Ordering::Relaxed);
        if anonymous && !self.entry.anonymous.swap(true, Ordering::Relaxed) {
            if inner.anonymous >= self.table.limits.max_anonymous {
                let me = Arc::as_ptr(&self.entry);
                self.table.shed_one(&mut inner, Cap::Anonymous, |e| {
                    e.anonymous.load(Ordering::Relaxed) && !std::ptr::eq(e, me)
                });
            }
            inner.anonymous += 1;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.table.remove(&self.0.entry);
        self.0.table.meters.closed(self.0.table.name);
    }
}
