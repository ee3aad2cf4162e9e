//! The named steps of a start that are more than a line: binding the listeners, the first start's bootstrap, the
//! audit log's note that it is off, the checkpoint writer's first checkpoint, the token issuer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use super::checkpoints::CheckpointWriter;
use crate::access_token::keys::TokenKeys;
use crate::access_token::{TokenIssuer, TokenPolicy};
use crate::audit::Recorder;
use crate::config::ServeConfig;
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pki::ca::CertificateAuthority;
use crate::store::Store;

/// Every listener, bound before anything else happens (a port in use stops the start at once).
pub(super) struct Listeners {
    pub grpc: TcpListener,
    pub health: TcpListener,
    pub pki: TcpListener,
    pub oauth: Option<TcpListener>,
    pub grpc_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub pki_addr: SocketAddr,
    pub oauth_addr: Option<SocketAddr>,
}

impl Listeners {
    pub async fn bind(config: &ServeConfig) -> Result<Self> {
        let grpc = bind(config.listen, "--listen").await?;
        let health = bind(config.health_listen, "--health-listen").await?;
        let pki = bind(config.pki.listen, "--pki-listen").await?;
        let oauth = match config.tokens.oauth_listen {
            Some(addr) => Some(bind(addr, "--oauth-listen").await?),
            None => None,
        };
        let addr = |l: &TcpListener| l.local_addr().map_err(|e| Error::internal("local addr", e));
        Ok(Self {
            grpc_addr: addr(&grpc)?,
            health_addr: addr(&health)?,
            pki_addr: addr(&pki)?,
            oauth_addr: oauth.as_ref().map(addr).transpose()?,
            grpc,
            health,
            pki,
            oauth,
        })
    }
}

/// The kernel's queue of connections not yet accepted. A burst larger than it costs clients a SYN retransmit (1 s,
/// then 3 s...), so it is sized for floods (Linux caps it at net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr, flag: &str) -> Result<TcpListener> {
    let refused = |e: std::io::Error| Error::InvalidArgument(format!("cannot listen on {addr} ({flag}): {e}"));
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(refused)?;
    socket.set_reuseaddr(true).map_err(refused)?;
    socket.bind(addr).map_err(refused)?;
    socket.listen(LISTEN_BACKLOG).map_err(refused)
}

/// Bootstraps on a first start: when the store has no admin yet and this data dir no CA certificate. Returns the
/// admin profile it wrote. A replica joining a bootstrapped store adopts the CA from it (key in KMS or an HSM), or
/// needs the CA files (file key).
pub(super) async fn first_start(
    config: &ServeConfig,
    dir: &DataDir,
    store: &Arc<dyn Store>,
    grpc_addr: SocketAddr,
) -> Result<Option<PathBuf>> {
    let file_key = match &config.bootstrap.ca_key {
        crate::pki::signer::KeyUri::File(path) => Some(path.clone()),
        _ => None,
    };
    if !dir.ca_cert().exists() && file_key.as_ref().is_some_and(|k| *k == dir.ca_key() && k.exists()) {
        return Err(Error::FailedPrecondition(format!(
            "{} holds only half of the CA (ca.key without ca.pem): restore ca.pem; refusing to create a new CA",
            dir.root().display()
        )));
    }
    if dir.ca_cert().exists() {
        if file_key.as_ref().is_some_and(|k| !k.exists()) {
            return Err(Error::FailedPrecondition(format!(
                "{} holds only half of the CA (ca.pem without its key {}): restore the key; refusing to create a \
                 new CA",
                dir.root().display(),
                config.bootstrap.ca_key
            )));
        }
        return Ok(None);
    }
    if store.get_principal(&config.bootstrap.admin_id).await?.is_some() {
        if file_key.is_some() {
            // The store was bootstrapped (by this or another replica) but this data dir lacks the CA: creating a new
            // CA would split the deployment.
            return Err(Error::FailedPrecondition(format!(
                "no CA in {} but the store already holds admin {:?}: copy ca.pem and ca.key from the replica that \
                 bootstrapped it (or from your secret store), or keep the CA key in KMS or an HSM (--ca-key)",
                dir.root().display(),
                config.bootstrap.admin_id.as_str()
            )));
        }
        return Ok(None);
    }
    let mut bootstrap = config.bootstrap.clone();
    if config.listen.port() == 0 {
        // The profile must name the port actually bound.
        if let Some(base) = bootstrap.profile_server.strip_suffix(":0") {
            bootstrap.profile_server = format!("{base}:{}", grpc_addr.port());
        }
    }
    let outcome = crate::bootstrap::run(&bootstrap, store.clone()).await?;
    for step in &outcome.created {
        info!(created = %step, "bootstrap");
    }
    Ok(Some(outcome.admin_profile))
}

/// Writes "the audit log is off" into the log itself before this replica changes anything unrecorded.
pub(super) async fn note_audit_off(config: &ServeConfig, store: &Arc<dyn Store>) -> Result<()> {
    let origin = crate::audit::Origin::system("serve");
    let details = serde_json::json!({ "replica": config.replica_id, "flag": "--audit off" });
    let event = Recorder::new(&config.replica_id, true).event(
        &origin,
        crate::audit::kind::AUDIT_DISABLED,
        &config.replica_id,
        details,
    );
    store.append_audit(&event.into_iter().collect::<Vec<_>>()).await?;
    tracing::warn!("the audit log is off (--audit off): changes are not recorded");
    Ok(())
}

/// The checkpoint writer, when checkpoints are asked for, with its first checkpoint written: a sink that cannot be
/// written (a missing bucket, no s3:PutObject, no network path to S3) stops the start here rather than leaving the
/// log unguarded until someone looks.
pub(super) async fn checkpoint_writer(
    config: &ServeConfig,
    store: &Arc<dyn Store>,
    ca: &Arc<CertificateAuthority>,
    recorder: &Recorder,
    metrics: &Metrics,
) -> Result<Option<CheckpointWriter>> {
    let Some(location) = config.accountability.audit_checkpoints.as_ref().filter(|_| config.accountability.audit)
    else {
        return Ok(None);
    };
    let mut writer = CheckpointWriter::new(
        store.clone(),
        ca.clone(),
        recorder.clone(),
        &config.replica_id,
        &config.store,
        location,
        &metrics.checkpoints,
    )
    .await?;
    writer.write_once().await.map_err(|e| {
        Error::FailedPrecondition(format!("--audit-checkpoints {location}: the first checkpoint failed: {e}"))
    })?;
    Ok(Some(writer))
}

/// The replica's token signing key (announced in the store) and the issuer that signs with it.
pub(super) async fn start_tokens(
    config: &ServeConfig,
    store: &Arc<dyn Store>,
    recorder: &Recorder,
    metrics: &Arc<Metrics>,
    oauth_addr: Option<SocketAddr>,
) -> Result<Option<Arc<TokenIssuer>>> {
    let t = &config.tokens;
    if t.audiences.is_empty() && !t.jwt_svids {
        return Ok(None);
    }
    // Keys stay published as long as the longest token they sign lives: access tokens or JWT-SVIDs.
    let longest = t.lifetime.max(crate::access_token::JWT_SVID_LIFETIME);
    let keys = TokenKeys::start(store.clone(), recorder.clone(), &config.replica_id, t.key_rotation, longest).await?;
    let issuer = t.issuer.clone().unwrap_or_else(|| match oauth_addr {
        Some(addr) => format!("https://localhost:{}", addr.port()),
        None => format!("spiffe://{}", config.identity.trust_domain),
    });
    let policy = TokenPolicy {
        issuer,
        audiences: t.audiences.clone(),
        lifetime: t.lifetime,
        trust_domain: config.identity.trust_domain.clone(),
    };
    let audit = config.accountability.audit_tokens.then(|| (recorder.clone(), store.clone()));
    Ok(Some(Arc::new(TokenIssuer { policy, keys, metrics: Some(metrics.clone()), audit })))
}
