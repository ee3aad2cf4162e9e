//! The audit side of the gRPC surface: where a request comes from ([`origin`]), the audit listing and watch
//! conversions, and the reverse conversion `principalctl audit verify` uses to recompute hashes.

use std::sync::Arc;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Status};

use crate::audit::{Actor, AuditEvent, AuditFilter, ChainHead, Origin, Recorded};
use crate::auth::Caller;
use crate::error::Error;
use crate::proto;

/// Where `request` comes from: its authenticated caller with the certificate it presented, its address, the method.
pub fn origin<T>(request: &Request<T>, method: &str) -> Result<Origin, Status> {
    acting(request, method).map(|(_, origin)| origin)
}

/// The authenticated caller of `request` (for the registry's rules) and its [`origin`].
pub fn acting<T>(request: &Request<T>, method: &str) -> Result<(Arc<Caller>, Origin), Status> {
    let caller: Arc<Caller> = Caller::from_request(request)?;
    let origin =
        Origin::request(caller.actor(), peer_address(request), &format!("/principal.v1.PrincipalService/{method}"));
    Ok((caller, origin))
}

/// The peer's address as the TLS connection recorded it.
pub fn peer_address<T>(request: &Request<T>) -> Option<std::net::SocketAddr> {
    let info = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
    info.and_then(|i| i.get_ref().remote_addr()).or_else(|| request.remote_addr())
}

pub fn filter_from_wire(r: &proto::ListAuditEventsRequest) -> Result<AuditFilter, Error> {
    let ms = |t: &Option<prost_types::Timestamp>| -> Result<Option<i64>, Error> {
        t.as_ref()
            .map(|t| {
                t.seconds
                    .checked_mul(1000)
                    .map(|ms| ms + i64::from(t.nanos / 1_000_000))
                    .ok_or_else(|| Error::InvalidArgument("time out of range".into()))
            })
            .transpose()
    };
    let text = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    if [&r.actor, &r.target, &r.r#type].iter().any(|s| s.len() > 256) {
        return Err(Error::InvalidArgument("actor, target and type are at most 256 characters".into()));
    }
    if !r.r#type.is_empty() && !crate::audit::kind::ALL.contains(&r.r#type.as_str()) {
        return Err(Error::InvalidArgument(format!(
            "unknown event type {:?}; known types: {}",
            crate::ratelog::sanitize(&r.r#type, 64),
            crate::audit::kind::ALL.join(", ")
        )));
    }
    Ok(AuditFilter {
        since_ms: ms(&r.since)?,
        until_ms: ms(&r.until)?,
        actor: text(&r.actor),
        target: text(&r.target),
        kind: text(&r.r#type),
        newest_first: r.newest_first,
    })
}

pub fn event_to_wire(r: Recorded, position: String) -> proto::AuditEvent {
    let e = r.event;
    proto::AuditEvent {
        id: e.id,
        time_ms: e.time_ms,
        r#type: e.kind,
        actor: Some(proto::AuditActor {
            principal_id: e.actor.principal_id,
            principal_type: e.actor.principal_type,
            certificate_serial: e.actor.certificate_serial,
            certificate_sha256: e.actor.certificate_sha256,
        }),
        source_address: e.source_address,
        replica: e.replica,
        rpc: e.rpc,
        target: e.target,
        outcome: e.outcome,
        details_json: e.details,
        chain: r.chain,
        seq: r.seq,
        prev_hash: r.prev_hash,
        hash: r.hash,
        position,
    }
}

/// The event as it was hashed (what verification recomputes).
pub fn event_from_wire(e: proto::AuditEvent) -> Recorded {
    let actor = e.actor.unwrap_or_default();
    Recorded {
        event: AuditEvent {
            id: e.id,
            time_ms: e.time_ms,
            kind: e.r#type,
            actor: Actor {
                principal_id: actor.principal_id,
                principal_type: actor.principal_type,
                certificate_serial: actor.certificate_serial,
                certificate_sha256: actor.certificate_sha256,
            },
            source_address: e.source_address,
            replica: e.replica,
            rpc: e.rpc,
            target: e.target,
            outcome: e.outcome,
            details: e.details_json,
        },
        chain: e.chain,
        seq: e.seq,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

pub fn head_to_wire(h: ChainHead) -> proto::AuditChain {
    proto::AuditChain { chain: h.chain, seq: h.seq, hash: h.hash }
}

pub fn head_from_wire(h: proto::AuditChain) -> ChainHead {
    ChainHead { chain: h.chain, seq: h.seq, hash: h.hash }
}
