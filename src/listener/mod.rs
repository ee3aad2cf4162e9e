//! One accept machinery for every port principald opens (gRPC, health, PKI, OAuth): accept never blocks, every
//! connection holds a row in its listener's [`Table`], and when a cap is reached the connection that has gone longest
//! without sending anything (handshakes and idle connections before busy ones) is shed to admit the newcomer. A flood
//! of idle, half-open or half-sent connections therefore ages out instead of locking real clients out, and the load
//! balancer's health check always finds a slot. Deadlines for the first phase (the TLS handshake, or an HTTP
//! request's headers) shorten while a listener is at least half full.
//!
//! [`accept`] hands each admitted connection to a handler: `tls::incoming` (the gRPC port) does its handshake and
//! feeds tonic; [`http::serve`] runs HTTP/1.1 (plain or over TLS) for the health, PKI and OAuth listeners.

pub mod http;
pub mod io;
pub mod meters;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::{Connected, TcpConnectInfo};

pub use io::Tracked;
pub use meters::Meters;
pub use table::{Phase, Slot, Table};

use crate::ratelog::RateLimitedLog;

/// What one listener lets clients hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at once; beyond it the idlest is shed.
    pub max_connections: usize,
    /// TLS handshakes in progress at once; beyond it the oldest handshake is shed.
    pub max_handshakes: usize,
    /// Established connections without a client certificate at once (a small share of `max_connections`); beyond
    /// it the idlest of them is shed.
    pub max_anonymous: usize,
    /// Time a client has for its first phase: the TLS handshake, and an HTTP request's headers.
    pub first_phase: Duration,
    /// The same while the listener is at least half full.
    pub first_phase_under_pressure: Duration,
    /// Longest an HTTP connection may stay open (the gRPC port relies on HTTP/2 max connection age instead).
    pub lifetime: Duration,
}

impl Limits {
    /// The health listener: the load balancer and Prometheus, one request per connection.
    pub const HEALTH: Limits = Limits {
        max_connections: 256,
        max_handshakes: 256,
        max_anonymous: 256,
        first_phase: Duration::from_secs(5),
        first_phase_under_pressure: Duration::from_secs(1),
        lifetime: Duration::from_secs(10),
    };
    /// The PKI listener: relying parties fetching CRLs and asking OCSP, short requests from many clients.
    pub const PKI: Limits = Limits {
        max_connections: 1024,
        max_handshakes: 1024,
        max_anonymous: 1024,
        first_phase: Duration::from_secs(5),
        first_phase_under_pressure: Duration::from_secs(1),
        lifetime: Duration::from_secs(30),
    };
    /// The OAuth listener: token requests over mTLS and anonymous discovery, keep-alive allowed.
    pub const OAUTH: Limits = Limits {
        max_connections: 1024,
        max_handshakes: 256,
        max_anonymous: 256,
        first_phase: Duration::from_secs(5),
        first_phase_under_pressure: Duration::from_secs(1),
        lifetime: Duration::from_secs(30),
    };

    /// The deadline for a new connection's first phase, given how full `table` is.
    pub fn first_phase_deadline(&self, table: &Table) -> Duration {
        if table.under_pressure() { self.first_phase_under_pressure } else { self.first_phase }
    }
}

/// Accepts on `listener` forever (the caller selects it against shutdown): each connection is admitted into `table`
/// in phase `first` (shedding the idlest when full) and given to `handle` with its peer address.
pub async fn accept(
    listener: TcpListener,
    table: Arc<Table>,
    first: Phase,
    mut handle: impl FnMut(Tracked, SocketAddr),
) {
    let (failed, refused) = (RateLimitedLog::default(), RateLimitedLog::default());
    loop {
        table.wait_for_room().await;
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                // Typically EMFILE: back off instead of spinning, and say so once per interval.
                if let Some(failures) = failed.tick() {
                    tracing::warn!(listener = table.name(), %error, failures, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match table.admit(first) {
            Ok(slot) => slot,
            Err(table::Full(reason)) => {
                if let Some(refused) = refused.tick() {
                    tracing::warn!(listener = table.name(), reason, refused, "connections refused");
                }
                continue;
            }
        };
        // Small responses must not wait for delayed ACKs.
        let _ = tcp.set_nodelay(true);
        handle(Tracked::new(tcp, slot), peer);
    }
}

impl Connected for Tracked {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}
