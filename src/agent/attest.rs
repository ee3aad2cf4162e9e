//! Workload attestation on Linux: who is calling, from the Unix socket's peer credentials (SO_PEERCRED, taken by the
//! kernel when the caller connected, so they cannot be forged) and /proc.
//!
//! The uid and gid come from the socket. The executable's path and hash come from /proc/PID, and a pid can be reused
//! once its process exits: the caller may connect, exit, and leave its pid to another program. So the process's start
//! time is read before and after /proc/PID/exe is read, and must be older than the connection: a process that started
//! after the connection was made (a reused pid) or that changed while it was read is refused.

use std::io::Read;

use crate::error::{Error, Result};
use crate::model::{Process, hex};

/// Clock ticks per second of /proc's times (`USER_HZ`, 100 on every Linux architecture's ABI).
const USER_HZ: f64 = 100.0;

/// The process that sent `request` over the agent's Unix socket (`hash`: with its executable's SHA-256).
pub async fn caller<T>(request: &tonic::Request<T>, hash: bool) -> std::result::Result<Process, tonic::Status> {
    let arrived = uptime_ticks();
    let info = request.extensions().get::<tonic::transport::server::UdsConnectInfo>();
    let cred = info
        .and_then(|i| i.peer_cred)
        .ok_or_else(|| tonic::Status::permission_denied("the caller's credentials are unknown"))?;
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    tokio::task::spawn_blocking(move || process(uid, gid, pid, arrived, hash))
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

/// What the caller with these credentials is, read now. `connected_at` is [`uptime_ticks`] when its request arrived;
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
