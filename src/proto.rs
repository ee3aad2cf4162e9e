//! Generated gRPC code: principald's API, the SPIFFE Workload API and Envoy's SDS (compiled by build.rs).
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
