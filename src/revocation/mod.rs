//! Revocation status for relying parties outside principald (openssl, webpki/rustls, Envoy, nginx, Go and Java
//! services): per-issuer CRLs and an OCSP responder, served on the public PKI listener.
//!
//! `issuers` holds the keys that sign them (the root, and re-derived replica intermediates), `crl` the published
//! CRLs, `ocsp` the responder, `http` the listener's routes. Authentication inside principald does not depend on
//! any of it: it reads the store and stays the first revocation check.

pub mod http;
pub mod issuers;
pub mod ocsp;
pub mod publisher;

pub use issuers::Issuers;
pub use ocsp::Responder;
pub use publisher::{CrlPublisher, PublishedCrl};
