//! The gRPC surface: thin handlers ([`principal`]) that parse the request, call the [`Registry`](crate::registry)
//! and convert the answer ([`convert`]). Errors become statuses through the one mapping in [`crate::error`].

pub mod audit;
pub mod audit_reader;
pub mod convert;
pub mod principal;
mod workload;

pub use principal::PrincipalApi;
