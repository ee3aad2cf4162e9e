//! Workload attestation on Linux: who is calling, from the Unix socket's peer credentials (SO_PEERCRED, taken by the
//! kernel when the caller connected, so they cannot be forged) and /proc.
//!
//! The uid and gid come from the socket. The executable's path and hash come from /proc/PID, and a pid can be reused
//! once its process exits: the caller may connect, exit, and leave its pid to another program. So the process's start
//! time is read before and after /proc/PID/exe is read, and must be older than the connection: a process that started
//! after the connection was accepted (a reused pid) or that changed while it was read is refused.
//!
//! Limit (as for every attestor that reads /proc): a process of the entry's uid can connect, keep the socket in a child
//! and exec the selected binary, which keeps its pid and start time; path and hash selectors therefore separate
//! programs of different uids reliably, programs of one uid only against mistakes, not against that uid.

use std::io::Read;

use crate::error::{Error, Result};
use crate::model::{Process, hex};

/// Clock ticks per second of /proc's times (`USER_HZ`, 100 on every Linux architecture's ABI).
const USER_HZ: f64 = 100.0;

/// A connection accepted on the agent's socket, with the moment it was accepted: a caller's process must be older
/// than its connection (a younger one holds a reused pid).
pub struct Accepted {
    stream: tokio::net::UnixStream,
    at: Option<u64>,
}

impl Accepted {
    pub fn new(stream: tokio::net::UnixStream) -> Self {
        Self { stream, at: uptime_ticks() }
    }
}

/// What tonic hands each request of an [`Accepted`] connection.
#[derive(Clone, Debug)]
pub struct AcceptedInfo {
    pub uds: tonic::transport::server::UdsConnectInfo,
    /// [`uptime_ticks`] when the connection was accepted.
    pub accepted_at: Option<u64>,
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = AcceptedInfo;

    fn connect_info(&self) -> AcceptedInfo {
        AcceptedInfo { uds: self.stream.connect_info(), accepted_at: self.at }
    }
}

impl tokio::io::AsyncRead for Accepted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Accepted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The process that sent `request` over the agent's socket; its executable is hashed only when `hash(uid)` says an
/// entry for that uid selects on the hash (reading a large binary costs, and a caller no such entry names must not
/// be able to make the agent read files for it).
pub async fn caller<T>(
    request: &tonic::Request<T>,
    hash: impl FnOnce(u32) -> bool,
) -> std::result::Result<Process, tonic::Status> {
    let info = request.extensions().get::<AcceptedInfo>();
    let cred = info
        .and_then(|i| i.uds.peer_cred)
        .ok_or_else(|| tonic::Status::permission_denied("the caller's credentials are unknown"))?;
    let accepted_at = info.and_then(|i| i.accepted_at);
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    let hash = hash(uid);
    tokio::task::spawn_blocking(move || process(uid, gid, pid, accepted_at, hash))
        .await
        .map_err(|_| tonic::Status::internal("attestation failed"))?
        .map_err(|e| tonic::Status::permission_denied(e.to_string()))
}

/// The system's uptime in clock ticks now: taken when a connection is accepted, to compare start times against.
pub fn uptime_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((seconds * USER_HZ) as u64)
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot.
fn start_ticks(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces; fields after it are plain.
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// What the caller with these credentials is, read now. `connected_at` is [`uptime_ticks`] when its connection was
/// accepted;
/// `hash` asks for the executable's SHA-256 (only when an entry selects on it: reading a large binary costs).
pub fn process(uid: u32, gid: u32, pid: Option<i32>, connected_at: Option<u64>, hash: bool) -> Result<Process> {
    let mut process = Process { pid: pid.unwrap_or(0), uid, gid, path: None, sha256: None };
    let Some(pid) = pid.filter(|p| *p > 0) else { return Ok(process) };
    let gone = || Error::PermissionDenied("the calling process could not be attested (it exited?)".into());
    let started = start_ticks(pid).ok_or_else(gone)?;
    if let Some(now) = connected_at
        && started > now + 1
    {
        return Err(Error::PermissionDenied("the calling process's pid was reused".into()));
    }
    let exe = format!("/proc/{pid}/exe");
    process.path = std::fs::read_link(&exe).ok().map(|p| p.to_string_lossy().into_owned());
    if hash && process.path.is_some() {
        process.sha256 = sha256_file(&exe);
    }
    // The pid still names the process that was read (not one that replaced it in between).
    if start_ticks(pid) != Some(started) {
        return Err(gone());
    }
    Ok(process)
}

fn sha256_file(path: &str) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => context.update(&buffer[..n]),
            Err(_) => return None,
        }
    }
    Some(hex(context.finish().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_attested_with_its_executable_and_hash() {
        let me = std::process::id() as i32;
        let now = uptime_ticks();
        let p = process(1, 2, Some(me), now, true).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(p.path.as_deref(), Some(exe.to_string_lossy().as_ref()));
        let bytes = std::fs::read(&exe).unwrap();
        assert_eq!(p.sha256.unwrap(), crate::model::sha256_hex(&bytes));
        assert_eq!((p.uid, p.gid), (1, 2));
    }

    #[test]
    fn a_process_younger_than_the_connection_is_refused() {
        let me = std::process::id() as i32;
        assert!(process(0, 0, Some(me), Some(0), false).is_err());
        assert!(process(0, 0, Some(i32::MAX), None, false).is_err());
    }
}
