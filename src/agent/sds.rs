//! Envoy's Secret Discovery Service (v3) on the agent's socket, the way SPIRE's agent serves it, so an Envoy
//! bootstrap written for SPIRE works unchanged:
//!
//! - the caller (Envoy) is attested like any workload; it gets the secrets of the entries its process matches, and
//!   PERMISSION_DENIED when it matches none;
//! - secret names: a SPIFFE ID (or `default`, the caller's first identity) names a TLS certificate secret (chain and
//!   key, PEM); `spiffe://TRUST_DOMAIN` (or `ROOTCA`) names a validation context (the roots and every CRL, PEM), so
//!   Envoy refuses revoked peers; no names asks for all of them;
//! - StreamSecrets answers each new request, is quiet on ACKs (and logs NACKs), and pushes a new version whenever
//!   the answer changes: rotation, a revocation (new CRLs), new or removed entries. FetchSecrets answers once.
//!   DeltaSecrets is UNIMPLEMENTED (Envoy falls back to StreamSecrets).

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::attest;
use super::metrics::AgentMetrics;
use super::state::{Entry, Snapshot};
use super::sync::Syncer;
use super::workload_api::{entitled, no_identity, send};
use crate::model::{Process, hex, now};
use crate::proto::envoy_api::envoy::config::core::v3::{DataSource, data_source::Specifier};
use crate::proto::envoy_api::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use crate::proto::envoy_api::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use crate::proto::envoy_api::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;

pub const SECRET_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// The name of the caller's first TLS certificate (SPIRE's default).
pub const DEFAULT_SVID_NAME: &str = "default";
/// The name of the trust domain's validation context (SPIRE's default).
pub const DEFAULT_BUNDLE_NAME: &str = "ROOTCA";

type Stream<T> = ReceiverStream<Result<T, Status>>;

pub struct Sds {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub closing: watch::Receiver<bool>,
    pub sync: Arc<Syncer>,
    pub metrics: Arc<AgentMetrics>,
}

/// The secrets `names` asks for (all when empty), as Envoy wants them; `Ok(None)` while none is available yet.
pub fn render(
    snapshot: &Snapshot,
    process: &Process,
    names: &[String],
) -> Result<Option<(String, Vec<Secret>)>, Status> {
    let entries: Vec<&Entry> = snapshot.matching(process).collect();
    if entries.is_empty() {
        return Err(no_identity());
    }
    let t = now();
    let mut tls = BTreeMap::new();
    for (i, (_, svid)) in snapshot.svids_of(&entries, t).iter().enumerate() {
        let chain: String = svid.chain_der.iter().map(|der| crate::pki::pem::pem_of(der)).collect();
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", svid.key_pkcs8.clone()));
        let secret = |name: &str| Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(chain.as_bytes()),
                private_key: inline(key.as_bytes()),
                ..Default::default()
            })),
        };
        if i == 0 {
            tls.insert(DEFAULT_SVID_NAME.to_owned(), secret(DEFAULT_SVID_NAME));
        }
        tls.insert(svid.spiffe_id.clone(), secret(&svid.spiffe_id));
    }
    let bundle = &snapshot.bundle;
    let roots: String = bundle.roots_der.iter().map(|der| crate::pki::pem::pem_of(der)).collect();
    let crls: String = bundle.crls_der.iter().map(|der| pem::encode(&pem::Pem::new("X509 CRL", der.clone()))).collect();
    let validation = |name: &str| Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(roots.as_bytes()),
            crl: (!crls.is_empty()).then(|| inline(crls.as_bytes())).flatten(),
            ..Default::default()
        })),
    };
    let td = bundle.trust_domain_id();
    let secrets: Vec<Secret> = if names.is_empty() {
        tls.into_iter().filter(|(name, _)| name != DEFAULT_SVID_NAME).map(|(_, s)| s).chain([validation(&td)]).collect()
    } else {
        names
            .iter()
            .filter_map(|name| match name.as_str() {
                n if n == td || n == DEFAULT_BUNDLE_NAME => Some(validation(n)),
                n => tls.get(n).cloned(),
            })
            .collect()
    };
    if secrets.is_empty() || bundle.roots_der.is_empty() {
        return Ok(None);
    }
    // The version names the content: the same secrets always get the same version.
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for s in &secrets {
        digest.update(&s.encode_to_vec());
    }
    Ok(Some((hex(&digest.finish().as_ref()[..8]), secrets)))
}

fn inline(bytes: &[u8]) -> Option<DataSource> {
    Some(DataSource { specifier: Some(Specifier::InlineBytes(bytes.to_vec())), ..Default::default() })
}

fn response(version: String, secrets: &[Secret], nonce: u64) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version,
        resources: secrets
            .iter()
            .map(|s| prost_types::Any { type_url: SECRET_TYPE_URL.to_owned(), value: s.encode_to_vec() })
            .collect(),
        type_url: SECRET_TYPE_URL.to_owned(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

impl Sds {
    async fn attested<T>(&self, request: &Request<T>) -> Result<Process, Status> {
        let current = self.snapshot.borrow().clone();
        let process = attest::caller(request, |uid| current.needs_sha256_for(uid)).await?;
        entitled(&self.snapshot, &self.sync, &self.metrics, &process).await?;
        Ok(process)
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = Stream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = Stream<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("DeltaSecrets is not implemented; use StreamSecrets"))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let process = self.attested(&request).await?;
        let mut requests = request.into_inner();
        let (mut snapshot, mut closing, metrics) = (self.snapshot.clone(), self.closing.clone(), self.metrics.clone());
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            // What the client asked for last, and what it was sent last.
            let (mut names, mut asked) = (Vec::<String>::new(), false);
            let (mut sent_version, mut nonce) = (None::<String>, 0u64);
            loop {
                let current = snapshot.borrow_and_update().clone();
                if asked && current.loaded {
                    match render(&current, &process, &names) {
                        Ok(Some((version, secrets))) if sent_version.as_ref() != Some(&version) => {
                            nonce += 1;
                            let tls =
                                secrets.iter().filter(|s| matches!(s.r#type, Some(secret::Type::TlsCertificate(_))));
                            metrics.svids_served.inc_by(tls.count() as u64);
                            if !send(&tx, Ok(response(version.clone(), &secrets, nonce)), &mut closing).await {
                                return;
                            }
                            sent_version = Some(version);
                        }
                        Ok(_) => {}
                        Err(status) => {
                            send(&tx, Err(status), &mut closing).await;
                            return;
                        }
                    }
                }
                tokio::select! {
                    message = requests.message() => match message {
                        Ok(Some(r)) => {
                            if let Some(error) = &r.error_detail {
                                tracing::warn!(version = %r.version_info, message = %error.message, "Envoy rejected the secrets it was sent");
                            }
                            let mut asked_for = r.resource_names;
                            asked_for.sort();
                            asked_for.dedup();
                            if asked && asked_for == names {
                                continue; // an ACK (or a NACK): nothing new to send
                            }
                            {
                                // A new subscription: answer it even if the content did not change.
                                names = asked_for;
                                asked = true;
                                sent_version = None;
                            }
                        }
                        Ok(None) | Err(_) => return,
                    },
                    changed = snapshot.changed() => if changed.is_err() { return },
                    _ = closing.wait_for(|c| *c) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_secrets(&self, request: Request<DiscoveryRequest>) -> Result<Response<DiscoveryResponse>, Status> {
        let process = self.attested(&request).await?;
        let names = request.into_inner().resource_names;
        let mut snapshot = self.snapshot.clone();
        // Wait briefly for a first SVID (an entry just picked up is being issued).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let current = snapshot.borrow_and_update().clone();
            if current.loaded
                && let Some((version, secrets)) = render(&current, &process, &names)?
            {
                return Ok(Response::new(response(version, &secrets, 0)));
            }
            if tokio::time::timeout_at(deadline, snapshot.changed()).await.is_err() {
                return Err(Status::unavailable("no SVID for this workload yet; retry"));
            }
        }
    }
}
