//! The SPIFFE Workload API (proto/spiffe/workload/workload.proto) on the agent's socket, following the SPIFFE
//! Workload Endpoint and Workload API specifications: every call must carry the `workload.spiffe.io: true` header
//! (else INVALID_ARGUMENT); the caller is attested from the socket ([`super::attest`]); a caller that matches no entry
//! gets PERMISSION_DENIED; streams send the full current state first and again whenever it changes (rotation,
//! revocation, new entries), and end with PERMISSION_DENIED when the caller's last entry goes away.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::attest;
use super::jwt;
use super::metrics::AgentMetrics;
use super::state::{Entry, Snapshot};
use super::sync::Syncer;
use crate::model::{Process, now};
use crate::proto::spiffe::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::proto::spiffe::*;

/// How long a caller that matched no entry waits for the entries to be read again.
const RELIST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Most JWT-SVIDs cached (per entry and audience set); the oldest go first.
const MAX_CACHED_JWTS: usize = 10_000;

type Stream<T> = ReceiverStream<Result<T, Status>>;
/// (entry id, audiences) -> (token, issued at, expires at (Unix seconds), the revocation epoch it was issued under).
type JwtCache = HashMap<(String, BTreeSet<String>), (String, i64, i64, u64)>;

pub struct WorkloadApi {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// True once the agent stops.
    pub closing: watch::Receiver<bool>,
    pub sync: Arc<Syncer>,
    pub metrics: Arc<AgentMetrics>,
    jwts: Mutex<JwtCache>,
}

/// `Err(INVALID_ARGUMENT)` unless the request carries the Workload API's security header.
pub fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get("workload.spiffe.io").map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(Status::invalid_argument("security header missing from request")),
    }
}

/// The attested caller of `request` (after the header check).
pub async fn attested<T>(request: &Request<T>, snapshot: &watch::Receiver<Arc<Snapshot>>) -> Result<Process, Status> {
    check_header(request)?;
    let current = snapshot.borrow().clone();
    attest::caller(request, |uid| current.needs_sha256_for(uid)).await
}

/// A stream that sends `render(snapshot)` now and on every change of the snapshot, when it differs from what was
/// sent last; `Ok(None)` waits (nothing to send yet), `Err` is sent and ends the stream. Ends when the client goes.
pub fn follow<T, F>(
    mut snapshot: watch::Receiver<Arc<Snapshot>>,
    mut closing: watch::Receiver<bool>,
    render: F,
    sent: impl Fn(&T) + Send + 'static,
) -> Stream<T>
where
    T: PartialEq + Clone + Send + 'static,
    F: Fn(&Snapshot) -> Result<Option<T>, Status> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut last: Option<T> = None;
        loop {
            let current = snapshot.borrow_and_update().clone();
            // Entries are unknown until the first round with principald: wait rather than refuse.
            if current.loaded {
                match render(&current) {
                    Ok(Some(message)) if last.as_ref() != Some(&message) => {
                        last = Some(message.clone());
                        if !send(&tx, Ok(message), &mut closing).await {
                            return;
                        }
                        if let Some(message) = &last {
                            sent(message);
                        }
                    }
                    Ok(_) => {}
                    Err(status) => {
                        send(&tx, Err(status), &mut closing).await;
                        return;
                    }
                }
            }
            tokio::select! {
                changed = snapshot.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
                // The agent stops: end the stream (with OK) so the server can close its connections.
                _ = closing.wait_for(|c| *c) => return,
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Sends `item` unless the agent stops first (a client that stopped reading must not hold up shutdown); whether it
/// was sent.
pub async fn send<T>(
    tx: &mpsc::Sender<Result<T, Status>>,
    item: Result<T, Status>,
    closing: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        _ = closing.wait_for(|c| *c) => false,
    }
}

pub fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

impl WorkloadApi {
    pub fn new(
        snapshot: watch::Receiver<Arc<Snapshot>>,
        closing: watch::Receiver<bool>,
        sync: Arc<Syncer>,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        Self { snapshot, closing, sync, metrics, jwts: Mutex::new(HashMap::new()) }
    }

    async fn check_entitled(&self, process: &Process) -> Result<(), Status> {
        entitled(&self.snapshot, &self.sync, &self.metrics, process).await
    }
}

/// Refuses a caller that matches no entry (once the entries are known), after reading the entries once more: a
/// workload started right after its entry was created is served, not refused. (Workload API and SDS alike.)
pub async fn entitled(
    snapshot: &watch::Receiver<Arc<Snapshot>>,
    sync: &Syncer,
    metrics: &AgentMetrics,
    process: &Process,
) -> Result<(), Status> {
    let matches = |snapshot: &Snapshot| !snapshot.loaded || snapshot.matching(process).next().is_some();
    if matches(&snapshot.borrow()) {
        return Ok(());
    }
    sync.relist(RELIST_WAIT).await;
    if matches(&snapshot.borrow()) {
        return Ok(());
    }
    metrics.attestation_refusals.inc();
    Err(no_identity())
}

fn x509_response(snapshot: &Snapshot, process: &Process) -> Result<Option<X509svidResponse>, Status> {
    let entries: Vec<&Entry> = snapshot.matching(process).collect();
    if entries.is_empty() {
        return Err(no_identity());
    }
    let bundle = snapshot.bundle.roots_concatenated();
    let svids: Vec<X509svid> = snapshot
        .svids_of(&entries, now())
        .iter()
        .map(|(entry, s)| X509svid {
            spiffe_id: s.spiffe_id.clone(),
            x509_svid: s.chain_der.concat(),
            x509_svid_key: s.key_pkcs8.clone(),
            bundle: bundle.clone(),
            // The entry's id: lets a workload with several identities pick one (SPIFFE's `hint`).
            hint: (*entry).to_owned(),
        })
        .collect();
    if svids.is_empty() {
        return Ok(None);
    }
    Ok(Some(X509svidResponse { svids, crl: snapshot.bundle.crls_der.clone(), federated_bundles: HashMap::new() }))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<JwtBundlesResponse>;
    type FetchWITSVIDStream = Stream<WitsvidResponse>;
    type FetchWITBundlesStream = Stream<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let process = attested(&request, &self.snapshot).await?;
        self.check_entitled(&process).await?;
        let metrics = self.metrics.clone();
        let served = move |r: &X509svidResponse| {
            metrics.svids_served.inc_by(r.svids.len() as u64);
        };
        let render = move |snapshot: &Snapshot| x509_response(snapshot, &process);
        Ok(Response::new(follow(self.snapshot.clone(), self.closing.clone(), render, served)))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let process = attested(&request, &self.snapshot).await?;
        self.check_entitled(&process).await?;
        Ok(Response::new(follow(
            self.snapshot.clone(),
            self.closing.clone(),
            move |snapshot| {
                if snapshot.matching(&process).next().is_none() {
                    return Err(no_identity());
                }
                let bundle = &snapshot.bundle;
                Ok(Some(X509BundlesResponse {
                    crl: bundle.crls_der.clone(),
                    bundles: HashMap::from([(bundle.trust_domain_id(), bundle.roots_concatenated())]),
                }))
            },
            |_| {},
        )))
    }

    async fn fetch_jwtsvid(&self, request: Request<JwtsvidRequest>) -> Result<Response<JwtsvidResponse>, Status> {
        let process = attested(&request, &self.snapshot).await?;
        let r = request.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        self.check_entitled(&process).await?;
        let entries: Vec<Entry> = {
            let snapshot = self.snapshot.borrow();
            snapshot
                .matching(&process)
                .filter(|e| r.spiffe_id.is_empty() || e.spiffe_id == r.spiffe_id)
                .cloned()
                .collect()
        };
        if entries.is_empty() {
            self.metrics.attestation_refusals.inc();
            return Err(no_identity());
        }
        let audiences: BTreeSet<String> = r.audience.into_iter().collect();
        let mut svids = Vec::with_capacity(entries.len());
        for entry in entries {
            let token = self.jwt_for(&entry, &audiences).await?;
            svids.push(Jwtsvid { spiffe_id: entry.spiffe_id, svid: token, hint: entry.id });
        }
        self.metrics.svids_served.inc_by(svids.len() as u64);
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let process = attested(&request, &self.snapshot).await?;
        self.check_entitled(&process).await?;
        Ok(Response::new(follow(
            self.snapshot.clone(),
            self.closing.clone(),
            move |snapshot| {
                if snapshot.matching(&process).next().is_none() {
                    return Err(no_identity());
                }
                let bundle = &snapshot.bundle;
                Ok(Some(JwtBundlesResponse {
                    bundles: HashMap::from([(bundle.trust_domain_id(), jwt::jwks_or_empty(bundle))]),
                }))
            },
            |_| {},
        )))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&request)?;
        let r = request.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if r.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let bundle = self.snapshot.borrow().bundle.clone();
        let (spiffe_id, claims) = jwt::validate(&bundle, &r.svid, &r.audience)?;
        Ok(Response::new(ValidateJwtsvidResponse { spiffe_id, claims: Some(claims) }))
    }

    async fn fetch_witsvid(&self, _: Request<WitsvidRequest>) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }

    async fn fetch_wit_bundles(
        &self,
        _: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }
}

impl WorkloadApi {
    /// A cached JWT-SVID with more than half its life left and no revocation since it was issued, or a new one from
    /// principald; while principald is unreachable, a cached one that has not expired.
    async fn jwt_for(&self, entry: &Entry, audiences: &BTreeSet<String>) -> Result<String, Status> {
        let key = (entry.id.clone(), audiences.clone());
        let t = now().unix_timestamp();
        let epoch = self.snapshot.borrow().bundle.epoch;
        let cached = self.jwts.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        if let Some((token, iat, exp, issued_epoch)) = &cached
            && t < iat + (exp - iat) / 2
            && *issued_epoch == epoch
        {
            return Ok(token.clone());
        }
        let fallback = |status: Status| match &cached {
            Some((token, _, exp, issued_epoch))
                if status.code() == tonic::Code::Unavailable && t + 30 < *exp && *issued_epoch == epoch =>
            {
                Ok(token.clone())
            }
            _ => Err(status),
        };
        let mut client = match self.sync.client().await {
            Ok(client) => client,
            Err(e) => return fallback(Status::unavailable(e)),
        };
        let request = crate::proto::IssueWorkloadTokenRequest {
            workload_id: entry.id.clone(),
            audiences: audiences.iter().cloned().collect(),
        };
        let asked = tokio::time::timeout(std::time::Duration::from_secs(10), client.issue_workload_token(request));
        let issued = match asked.await {
            Ok(issued) => issued,
            Err(_) => return fallback(Status::unavailable("principald did not answer within 10s")),
        };
        let issued = match issued {
            Ok(issued) => issued,
            Err(s) => {
                return fallback(match s.code() {
                    tonic::Code::PermissionDenied | tonic::Code::NotFound => no_identity(),
                    // A suspended workload, or a principald that signs no JWT-SVIDs (--jwt-svids): say which.
                    tonic::Code::FailedPrecondition => Status::failed_precondition(s.message().to_owned()),
                    tonic::Code::InvalidArgument => Status::invalid_argument(s.message().to_owned()),
                    _ => Status::unavailable(format!("cannot obtain a JWT-SVID now: {}", s.message())),
                });
            }
        };
        let issued = issued.into_inner();
        let exp = issued.expire_time.map_or(t, |e| e.seconds);
        let mut jwts = self.jwts.lock().unwrap_or_else(|p| p.into_inner());
        if jwts.len() >= MAX_CACHED_JWTS {
            jwts.retain(|_, (_, _, exp, _)| *exp > t);
            if jwts.len() >= MAX_CACHED_JWTS {
                jwts.clear();
            }
        }
        jwts.insert(key, (issued.token.clone(), t, exp, epoch));
        Ok(issued.token)
    }
}
