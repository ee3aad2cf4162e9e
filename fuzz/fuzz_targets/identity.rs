//! Identity extraction from a (TLS-verified) leaf certificate: any bytes give an identity or a refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use principald::auth::peer::PeerIdentity;
use principald::error::Error;
use principald::pki::oid::IdentityOids;

fuzz_target!(|data: &[u8]| {
    match PeerIdentity::from_der(&IdentityOids::default(), data) {
        Ok(_) | Err(Error::Refused(_)) => {}
        Err(other) => panic!("identity parsing returned {other:?}"),
    }
});
