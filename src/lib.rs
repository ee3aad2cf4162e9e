//! principald: a private certificate authority and the source of truth for principals (admin, worker, user,
//! service). Callers authenticate with their mTLS client certificate alone; the certificate carries the principal's
//! type and id in two extensions, the type maps to permissions, and principals and certificates live in a [`store`].
//!
//! Request path: TLS ([`server`]) -> [`auth`] (identity, store check through a cache, permission tables) -> thin
//! handlers ([`service`]) -> the domain ([`registry`]) -> [`pki`] and [`store`]. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod access_token;
pub mod agent;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod client;
pub mod config;
pub mod datadir;
pub mod error;
pub mod files;
pub mod health;
pub mod keeper;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod oversize;
pub mod pki;
pub mod ratelimit;
pub mod ratelog;
pub mod registry;
pub mod resource_server;
pub mod revocation;
pub mod server;
pub mod server_cert;
pub mod service;
pub mod store;
pub mod tls;

/// Generated protobuf and gRPC code: `principal.v1`, the SPIFFE Workload API, Envoy SDS.
pub mod proto;

/// Installs aws-lc-rs as the process-wide rustls crypto provider. Call first thing in `main` and in tests: with more
/// than one provider compiled in, rustls cannot pick one by itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
