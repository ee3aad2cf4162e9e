//! The X.509 side: the CA, what it writes into certificates, validated CSRs and the identity extensions.

pub mod ca;
pub mod crl;
pub mod csr;
pub mod identity;
pub mod intermediate;
pub mod leaf;
pub mod ocsp;
pub mod oid;
pub mod pem;
pub mod profile;
pub mod signer;

use oid::IdentityOids;

/// How identities are written into client certificates. Must stay the same for the life of a CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Trust domain of the SPIFFE URI SAN.
    pub trust_domain: String,
    pub oids: IdentityOids,
}
