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

/// Generated protobuf and gRPC code for `principal.v1`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("principal.v1");

    /// Encoded descriptors of the API, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("principal_descriptor");

    /// The SPIFFE Workload API (proto/spiffe/workload/workload.proto; the file has no package).
    pub mod spiffe {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/_.rs"));
    }

    /// Envoy's Secret Discovery Service and the types it carries (proto/envoy-api). The module tree mirrors the
    /// packages, since prost refers across packages with `super::` paths; annotation-only packages are left out.
    #[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    pub mod envoy_api {
        macro_rules! package {
            ($file:literal) => {
                include!(concat!(env!("OUT_DIR"), "/", $file));
            };
        }
        pub mod envoy {
            pub mod config {
                pub mod core {
                    pub mod v3 {
                        package!("envoy.config.core.v3.rs");
                    }
                }
            }
            pub mod extensions {
                pub mod transport_sockets {
                    pub mod tls {
                        pub mod v3 {
                            package!("envoy.extensions.transport_sockets.tls.v3.rs");
                        }
                    }
                }
            }
            pub mod service {
                pub mod discovery {
                    pub mod v3 {
                        package!("envoy.service.discovery.v3.rs");
                    }
                }
                pub mod secret {
                    pub mod v3 {
                        package!("envoy.service.secret.v3.rs");
                    }
                }
            }
            pub mod r#type {
                pub mod v3 {
                    package!("envoy.r#type.v3.rs");
                }
                pub mod matcher {
                    pub mod v3 {
                        package!("envoy.r#type.matcher.v3.rs");
                    }
                }
            }
        }
        pub mod google {
            pub mod rpc {
                package!("google.rpc.rs");
            }
        }
        pub mod xds {
            pub mod core {
                pub mod v3 {
                    package!("xds.core.v3.rs");
                }
            }
        }
    }
}

/// Installs aws-lc-rs as the process-wide rustls crypto provider. Call first thing in `main` and in tests: with more
/// than one provider compiled in, rustls cannot pick one by itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
