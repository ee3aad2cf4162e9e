//! The agent's one conversation with principald: every `poll` it asks whether the revocation epoch moved (one cheap
//! call); when it did, it takes the new CRLs and re-reads its entries; every few seconds it re-reads its entries
//! anyway; it replaces each SVID at half its life, and at once when the CRLs list it. Whatever changed is published
//! as a new [`Snapshot`]. While principald is unreachable the last snapshot stays published (its SVIDs are served
//! until they expire) and calls are retried with jittered exponential backoff.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::metrics::AgentMetrics;
use super::state::{Bundle, Entry, Snapshot, Svid};
use crate::client::Profile;
use crate::client::keys::{KeyType, key_and_csr};
use crate::model::{Serial, now};
use crate::proto::principal_service_client::PrincipalServiceClient;
use crate::proto::{self as pb};

/// How often entries are re-read when nothing was revoked (new entries appear within this).
const LIST_EVERY: Duration = Duration::from_secs(5);
/// How often the whole bundle is read even when nothing was revoked (token keys rotate, CRLs are re-signed).
const BUNDLE_EVERY: Duration = Duration::from_secs(30);
/// Longest wait between attempts while principald is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Shortest time between two reads of the entries that callers asked for.
const LIST_MIN_GAP: Duration = Duration::from_millis(500);
/// Longest a round with principald may take: a server that accepts but never answers counts as unreachable.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);
/// SVIDs issued at once.
const PARALLEL_ISSUES: usize = 16;

type Client = PrincipalServiceClient<Channel>;

pub struct Syncer {
    pub dir: PathBuf,
    pub poll: Duration,
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    pub metrics: Arc<AgentMetrics>,
    /// The client and the certificate it was built with (rebuilt when the node's certificate is renewed).
    client: Mutex<Option<(Vec<u8>, Client)>>,
    /// Asks for a round that re-reads the entries now (a caller matched none: its entry may be new).
    kick: tokio::sync::Notify,
    /// How many times the entries were read: a kicked caller waits for the next one.
    listed: watch::Sender<u64>,
}

/// What one round learned.
struct Round {
    known_epoch: u64,
    bundle_at: Option<Instant>,
    listed_at: Option<Instant>,
    /// A caller asked for the entries to be read now (kept until they are).
    kicked: bool,
    /// Entries principald refused an SVID for, and when to ask again (sooner if entries or revocations change).
    refused: std::collections::HashMap<String, Instant>,
}

/// How long an entry principald refused waits before it is asked for again.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

impl Syncer {
    pub fn new(
        dir: PathBuf,
        poll: Duration,
        snapshot: watch::Sender<Arc<Snapshot>>,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        Self {
            dir,
            poll,
            snapshot,
            metrics,
            client: Mutex::new(None),
            kick: Default::default(),
            listed: watch::channel(0).0,
        }
    }

    /// Re-reads the entries now and waits (at most `wait`) until that is done: for a caller that matched no entry,
    /// whose entry may have been created since the last read. Concurrent callers share one read; reads happen at most
    /// once per [`LIST_MIN_GAP`].
    pub async fn relist(&self, wait: Duration) {
        let mut listed = self.listed.subscribe();
        let seen = *listed.borrow_and_update();
        self.kick.notify_one();
        let _ = tokio::time::timeout(wait, listed.wait_for(|n| *n > seen)).await;
    }

    /// A client presenting the node's current certificate.
    pub async fn client(&self) -> Result<Client, String> {
        let profile = Profile::load(&self.dir).map_err(|e| e.to_string())?;
        let cert = std::fs::read(profile.cert_path()).map_err(|e| format!("cannot read the node certificate: {e}"))?;
        if let Some((held, client)) = self.client.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && *held == cert
        {
            return Ok(client.clone());
        }
        let credentials = profile.credentials().map_err(|e| e.to_string())?;
        let client = crate::client::rpc::connect(&profile.file.server, &credentials).await?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some((cert, client.clone()));
        Ok(client)
    }

    /// Runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut round =
            Round { known_epoch: 0, bundle_at: None, listed_at: None, kicked: false, refused: Default::default() };
        let mut backoff = self.poll;
        loop {
            let result = tokio::time::timeout(ROUND_TIMEOUT, self.round(&mut round))
                .await
                .unwrap_or_else(|_| Err(format!("principald did not answer within {}s", ROUND_TIMEOUT.as_secs())));
            match result {
                Ok(()) => {
                    if !self.metrics.connected() {
                        tracing::info!("principald reachable; serving fresh SVIDs");
                    }
                    self.metrics.set_connected(true);
                    backoff = self.poll;
                    tokio::select! {
                        () = tokio::time::sleep(self.poll) => {}
                        () = self.kick.notified() => round.kicked = true,
                    }
                }
                Err(error) => {
                    self.metrics.sync_failures.inc();
                    self.metrics.set_connected(false);
                    self.expire();
                    let wait = backoff + crate::client::jitter(backoff);
                    tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "cannot sync with principald; serving cached SVIDs until they expire");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// principald refuses this node (suspended, deleted, its certificate revoked): its workloads' certificates were
    /// revoked with it, so nothing more is served; open streams end with PERMISSION_DENIED.
    fn cut_off(&self, status: &tonic::Status) {
        let current = self.snapshot.borrow().clone();
        if !current.entries.is_empty() || !current.svids.is_empty() {
            tracing::error!(
                reason = status.message(),
                "principald refuses this node: no SVIDs are served until it is let in again"
            );
            let mut next = Snapshot::clone(&current);
            next.entries.clear();
            next.svids.clear();
            self.snapshot.send_replace(Arc::new(next));
        }
    }

    /// Drops expired SVIDs from the published snapshot (while principald is unreachable nothing else would).
    fn expire(&self) {
        let current = self.snapshot.borrow().clone();
        let t = now();
        if current.svids.values().any(|s| s.not_after <= t) {
            let mut next = Snapshot::clone(&current);
            next.svids.retain(|_, s| s.not_after > t);
            self.snapshot.send_replace(Arc::new(next));
        }
    }

    async fn round(&self, round: &mut Round) -> Result<(), String> {
        let started = Instant::now();
        let mut client = self.client().await?;

        if round.bundle_at.is_none_or(|t| t.elapsed() >= BUNDLE_EVERY) {
            round.known_epoch = 0;
        }
        let request = pb::GetTrustBundleRequest { known_epoch: round.known_epoch };
        let bundle = match client.get_trust_bundle(request).await {
            Ok(bundle) => bundle.into_inner(),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                self.cut_off(&status);
                return Err(explain(&status));
            }
            Err(status) => return Err(explain(&status)),
        };
        let epoch_moved = !bundle.unchanged;
        if epoch_moved {
            // Published before anything else can fail: a revoked SVID is never served again, whatever follows.
            let (parsed, revoked) = parse_bundle(&bundle)?;
            let current = self.snapshot.borrow().clone();
            if *current.bundle != parsed || *current.revoked != revoked {
                let mut next = Snapshot::clone(&current);
                next.bundle = Arc::new(parsed);
                next.svids.retain(|_, s| !revoked.contains(&s.serial));
                next.revoked = Arc::new(revoked);
                self.snapshot.send_replace(Arc::new(next));
            }
            round.known_epoch = bundle.revocation_epoch;
            round.bundle_at = Some(Instant::now());
            round.refused.clear();
        }
        let current = self.snapshot.borrow().clone();
        let mut next = Snapshot::clone(&current);
        let mut changed = false;

        let kicked = round.kicked && round.listed_at.is_none_or(|t| t.elapsed() >= LIST_MIN_GAP);
        if epoch_moved || kicked || round.listed_at.is_none_or(|t| t.elapsed() >= LIST_EVERY) {
            let entries = list_entries(&mut client).await?;
            round.listed_at = Some(Instant::now());
            round.kicked = false;
            if entries != next.entries {
                next.svids.retain(|id, svid| entries.get(id).is_some_and(|e| e.spiffe_id == svid.spiffe_id));
                next.entries = entries;
                round.refused.clear();
                changed = true;
            }
            if !next.loaded {
                next.loaded = true;
                changed = true;
            }
        }

        let t = now();
        let due: Vec<Entry> = next
            .entries
            .values()
            .filter(|e| round.refused.get(&e.id).is_none_or(|until| *until <= Instant::now()))
            .filter(|e| match next.svids.get(&e.id) {
                None => true,
                Some(s) => t >= s.rotate_at() || next.revoked.contains(&s.serial),
            })
            .cloned()
            .collect();
        // Revoked and expired SVIDs are never served, replaced or not.
        let before = next.svids.len();
        next.svids.retain(|_, s| s.not_after > t && !next.revoked.contains(&s.serial));
        changed |= next.svids.len() != before;

        let mut failure = None;
        let mut tasks = JoinSet::new();
        let mut pending = due.into_iter();
        loop {
            while tasks.len() < PARALLEL_ISSUES {
                let Some(entry) = pending.next() else { break };
                let client = client.clone();
                tasks.spawn(async move { (entry.id.clone(), issue(client, &entry).await) });
            }
            let Some(joined) = tasks.join_next().await else { break };
            let Ok((id, result)) = joined else { continue };
            match result {
                Ok(svid) => {
                    self.metrics.rotations.inc();
                    next.svids.insert(id, Arc::new(svid));
                    changed = true;
                }
                Err(status) if refused_for_good(&status) => {
                    tracing::warn!(workload = %id, reason = status.message(), retry_in_s = REFUSED_RETRY.as_secs(), "principald refused an SVID for this entry");
                    changed |= next.svids.remove(&id).is_some();
                    round.refused.insert(id, Instant::now() + REFUSED_RETRY);
                }
                Err(status) => failure = Some(explain(&status)),
            }
        }
        if changed {
            self.metrics.entries.set(next.entries.len() as i64);
            self.snapshot.send_replace(Arc::new(next));
        }
        if round.listed_at.is_some_and(|t| t >= started) {
            self.listed.send_modify(|n| *n += 1);
        }
        failure.map_or(Ok(()), Err)
    }
}

fn refused_for_good(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(status.code(), PermissionDenied | NotFound | FailedPrecondition | InvalidArgument)
}

fn explain(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

async fn list_entries(client: &mut Client) -> Result<BTreeMap<String, Entry>, String> {
    let (mut entries, mut page_token) = (BTreeMap::new(), String::new());
    loop {
        let request = pb::ListNodeWorkloadsRequest { page_size: 1000, page_token };
        let page = client.list_node_workloads(request).await.map_err(|s| explain(&s))?.into_inner();
        for w in page.workloads {
            // An entry with a selector this agent cannot read is skipped, never served with fewer conditions.
            let selectors: Result<Vec<_>, _> = w.selectors.iter().map(|s| s.parse()).collect();
            let Ok(selectors) = selectors else {
                tracing::warn!(workload = %w.id, selectors = ?w.selectors, "skipping an entry with a selector this agent does not know");
                continue;
            };
            let entry = Entry { id: w.id.clone(), spiffe_id: w.spiffe_id, selectors, ttl_seconds: w.ttl_seconds };
            entries.insert(w.id, entry);
        }
        if page.next_page_token.is_empty() {
            return Ok(entries);
        }
        page_token = page.next_page_token;
    }
}

/// A new key (in memory only) and an SVID for it.
async fn issue(mut client: Client, entry: &Entry) -> Result<Svid, tonic::Status> {
    let (key, csr) = key_and_csr(KeyType::P256).map_err(tonic::Status::internal)?;
    let request = pb::IssueWorkloadCertificateRequest { workload_id: entry.id.clone(), csr_pem: csr };
    let issued = client.issue_workload_certificate(request).await?.into_inner();
    let chain_der: Vec<Vec<u8>> = pem::parse_many(issued.certificate_chain_pem.as_bytes())
        .map_err(|e| tonic::Status::internal(format!("unreadable certificate chain: {e}")))?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    let leaf = chain_der.first().ok_or_else(|| tonic::Status::internal("empty certificate chain"))?;
    let (_, cert) =
        X509Certificate::from_der(leaf).map_err(|e| tonic::Status::internal(format!("unreadable certificate: {e}")))?;
    Ok(Svid {
        spiffe_id: entry.spiffe_id.clone(),
        serial: Serial::from_bytes(cert.raw_serial()).as_str().to_owned(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        key_pkcs8: key.serialize_der(),
        chain_der,
        received_at: now(),
    })
}

fn parse_bundle(bundle: &pb::TrustBundle) -> Result<(Bundle, HashSet<String>), String> {
    let roots_der = pem::parse_many(bundle.roots_pem.as_bytes())
        .map_err(|e| format!("unreadable roots in the trust bundle: {e}"))?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    let mut revoked = HashSet::new();
    for der in &bundle.crls {
        let (_, crl) =
            x509_parser::parse_x509_crl(der).map_err(|e| format!("unreadable CRL in the trust bundle: {e}"))?;
        for entry in crl.iter_revoked_certificates() {
            revoked.insert(Serial::from_bytes(entry.raw_serial()).as_str().to_owned());
        }
    }
    let parsed = Bundle {
        trust_domain: bundle.trust_domain.clone(),
        roots_der,
        crls_der: bundle.crls.clone(),
        jwks: bundle.jwks_json.clone().into_bytes(),
        epoch: bundle.revocation_epoch,
    };
    Ok((parsed, revoked))
}
