//! A gRPC service of your own behind principald's authentication: the recipe every resource server follows (the CA and
//! server certificate of a principald data directory, rustls with client certificates required and leaf-only chains
//! completed with the store's intermediates, the accept loop with its connection limits, the [`AuthLayer`] with a
//! permission table and method policy, optional bearer tokens, and a [`RevocationFollower`] so revocations arrive
//! within a poll), in one builder. It runs beside a file-key deployment or one whose root is in KMS or an HSM.
//!
//! ```no_run
//! # async fn run(routes: tonic::service::Routes) -> principald::error::Result<()> {
//! use principald::auth::Requirement;
//! use principald::model::PrincipalType;
//! use principald::resource_server::ResourceServer;
//!
//! let server = ResourceServer::open("./data".as_ref())
//!     .await?
//!     .grant(PrincipalType::Admin, "echo.call")
//!     .allow_method("example.v1.Echo", "Echo", Requirement::Permission("echo.call".into()))
//!     .bind("127.0.0.1:9443".parse().unwrap())
//!     .await?;
//! server.serve(routes, std::future::pending()).await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;

use crate::auth::bearer::TokenVerifier;
use crate::auth::{AuthLayer, Authenticator, MethodPolicy, PermissionTable, Requirement, RevocationFollower};
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::model::PrincipalType;
use crate::pki::oid::IdentityOids;
use crate::server_cert::ServerCertificate;
use crate::store::{Store, StoreConfig};
use crate::tls::KnownIntermediates;

/// How long an authentication verdict is cached when nothing else is said (the follower drops it on a revocation).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);

/// Bearer tokens the service accepts besides the client certificate.
struct Bearer {
    issuer: String,
    audience: String,
    required: bool,
}

/// Builds a resource server; [`bind`](Self::bind) it, then [`serve`](Bound::serve) your routes.
pub struct ResourceServer {
    data_dir: PathBuf,
    store: Arc<dyn Store>,
    oids: IdentityOids,
    permissions: PermissionTable,
    policy: MethodPolicy,
    cache_ttl: Duration,
    follow_every: Option<Duration>,
    bearer: Option<Bearer>,
}

impl ResourceServer {
    /// A resource server for the principals in `store`, with the CA certificate and key and the server certificate
    /// of principald's data directory `data_dir` (the server certificate is re-issued there when due). Built-in
    /// permissions, no method allowed yet, verdicts cached [`DEFAULT_CACHE_TTL`], revocations followed every second.
    pub fn new(data_dir: &Path, store: Arc<dyn Store>) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            store,
            oids: IdentityOids::default(),
            permissions: PermissionTable::builtin(),
            policy: MethodPolicy::new(),
            cache_ttl: DEFAULT_CACHE_TTL,
            follow_every: Some(RevocationFollower::DEFAULT_POLL),
            bearer: None,
        }
    }

    /// [`new`](Self::new) with the embedded SQLite store of `data_dir`.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        let store = StoreConfig::sqlite_in(data_dir).open().await?;
        Ok(Self::new(data_dir, store))
    }

    /// The identity extensions' OIDs, when principald runs with `--oid-arc`.
    pub fn identity_oids(mut self, oids: IdentityOids) -> Self {
        self.oids = oids;
        self
    }

    /// Replaces the permission table (the built-in one by default).
    pub fn permissions(mut self, permissions: PermissionTable) -> Self {
        self.permissions = permissions;
        self
    }

    /// Grants `permission` to every principal of type `kind`.
    pub fn grant(mut self, kind: PrincipalType, permission: &str) -> Self {
        self.permissions.grant(kind, permission);
        self
    }

    /// Replaces the method policy; methods it does not name are refused.
    pub fn policy(mut self, policy: MethodPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Lets callers meeting `requirement` call `service`/`method`.
    pub fn allow_method(mut self, service: &str, method: &str, requirement: Requirement) -> Self {
        self.policy = self.policy.allow_method(service, method, requirement);
        self
    }

    /// How long an authentication verdict is reused; zero reads the store on every request.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How often the store's revocation epoch is polled (`None`: not followed; only the cache TTL bounds how long a
    /// revoked certificate keeps working).
    pub fn follow_revocations(mut self, every: Option<Duration>) -> Self {
        self.follow_every = every;
        self
    }

    /// Accepts access tokens principald issued for `audience` (`iss` = `issuer`), bound to the caller's certificate;
    /// with `required`, a request without one is refused. The token's scopes narrow the caller's permissions.
    pub fn bearer_tokens(mut self, issuer: &str, audience: &str, required: bool) -> Self {
        self.bearer = Some(Bearer { issuer: issuer.to_owned(), audience: audience.to_owned(), required });
        self
    }

    /// Loads the certificates and the live intermediates, and binds `addr`. With the CA's file key in the data
    /// directory the server certificate is re-issued when due, as principald does; without it (a root in KMS or an
    /// HSM) the certificate is served as principald left it.
    pub async fn bind(self, addr: SocketAddr) -> Result<Bound> {
        let dir = DataDir::new(&self.data_dir);
        let ca_pem = std::fs::read(dir.ca_cert())
            .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", dir.ca_cert().display())))?;
        let ca_der = CertificateDer::from_pem_slice(&ca_pem)
            .map_err(|_| Error::InvalidArgument(format!("{} holds no certificate", dir.ca_cert().display())))?;
        let server_cert: Arc<dyn ResolvesServerCert> = if dir.ca_key().exists() {
            ServerCertificate::load(&dir, Arc::new(crate::bootstrap::load_ca(&dir)?), &[])?
        } else {
            ServerCertificate::load_as_is(&dir)?
        };
        // Clients may present their leaf alone: the chain is completed with the intermediates the store knows.
        let known = Arc::new(KnownIntermediates::default());
        refresh_known(self.store.as_ref(), &known).await?;
        let tls = crate::tls::server_config_completing(&ca_der, server_cert, false, known.clone())?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::InvalidArgument(format!("cannot listen on {addr}: {e}")))?;
        let local_addr = listener.local_addr().map_err(|e| Error::internal("local addr", e))?;
        let authenticator =
            Arc::new(Authenticator::new(self.store.clone(), self.oids, self.permissions, self.cache_ttl));
        // Certificates of revoked intermediates are refused from the first request on.
        authenticator.refresh_revoked_issuers().await?;
        let follower =
            self.follow_every.map(|every| RevocationFollower::new(self.store.clone(), authenticator.clone(), every));
        let mut layer = AuthLayer::new(authenticator.clone(), self.policy);
        if let Some(bearer) = self.bearer {
            let verifier = Arc::new(TokenVerifier::new(&bearer.issuer, &bearer.audience, self.store.clone()));
            layer = layer.with_bearer_tokens(verifier, bearer.required);
        }
        Ok(Bound { listener, local_addr, tls, layer, follower, authenticator, known, store: self.store })
    }
}

/// How often the intermediates that complete leaf-only client chains are re-read (a new replica's intermediate is
/// known within this).
const KNOWN_REFRESH: Duration = Duration::from_secs(60);

async fn refresh_known(store: &dyn Store, known: &KnownIntermediates) -> Result<()> {
    known.set(crate::keeper::live_intermediates(store).await?);
    Ok(())
}

/// A bound resource server, not serving yet.
pub struct Bound {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: rustls::ServerConfig,
    layer: AuthLayer,
    follower: Option<RevocationFollower>,
    authenticator: Arc<Authenticator>,
    known: Arc<KnownIntermediates>,
    store: Arc<dyn Store>,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The authenticator every request goes through (to share its cache with another layer, or drop it).
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.authenticator
    }

    /// Serves `routes` over mTLS until `shutdown` completes, then lets in-flight requests finish.
    pub async fn serve(
        self,
        routes: tonic::service::Routes,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stopping = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let follower = self.follower.map(|f| f.spawn(stopping()));
        let (store, known, stop_refresh) = (self.store, self.known, stopping());
        let refresh = tokio::spawn(async move {
            let every = async {
                loop {
                    tokio::time::sleep(KNOWN_REFRESH).await;
                    if let Err(error) = refresh_known(store.as_ref(), &known).await {
                        tracing::warn!(%error, "cannot re-read the intermediates; keeping the known ones");
                    }
                }
            };
            tokio::select! {
                () = stop_refresh => {}
                () = every => {}
            }
        });
        let (incoming, accept) = crate::tls::incoming(self.listener, self.tls, Default::default(), stopping());
        let served = tonic::transport::Server::builder()
            .layer(self.layer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await;
        let _ = accept.await;
        let _ = refresh.await;
        if let Some(follower) = follower {
            let _ = follower.await;
        }
        served.map_err(|e| Error::Unavailable(format!("resource server stopped: {e}")))
    }
}
