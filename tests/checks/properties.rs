//! Property tests over the parsers an attacker feeds directly: CSR intake, identity extraction and page tokens. The
//! same functions are cargo-fuzz targets (fuzz/, see the README); these run in every test run.

use principald::auth::peer::PeerIdentity;
use principald::error::Error;
use principald::pki::csr::ValidatedCsr;
use principald::pki::oid::IdentityOids;
use principald::store::page_token::{Backend, decode, encode};
use proptest::prelude::*;

fn valid_csr_der() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::default().serialize_request(&key).unwrap().der().to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_a_csr_or_an_invalid_argument(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(matches!(ValidatedCsr::parse(&data), Ok(_) | Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn a_mutated_csr_is_refused_or_still_valid(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut der = valid_csr_der();
        for (at, byte) in flips {
            let len = der.len();
            der[at % len] ^= byte | 1;
        }
        prop_assert!(matches!(ValidatedCsr::parse(&der), Ok(_) | Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn any_bytes_are_an_identity_or_unauthenticated(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let parsed = PeerIdentity::from_der(&IdentityOids::default(), &data);
        prop_assert!(matches!(parsed, Ok(_) | Err(Error::Refused(_))));
    }

    #[test]
    fn any_string_is_a_position_or_an_invalid_argument(token in ".{0,200}") {
        for backend in [Backend::Sqlite, Backend::Dynamodb] {
            prop_assert!(matches!(decode(backend, "principals||", &token), Ok(_) | Err(Error::InvalidArgument(_))));
        }
    }

    #[test]
    fn tokens_round_trip_only_for_their_own_listing(position in "[a-z0-9.#_-]{0,80}") {
        let token = encode(Backend::Sqlite, "principals|worker|", &position);
        prop_assert_eq!(decode(Backend::Sqlite, "principals|worker|", &token).unwrap(), position);
        prop_assert!(decode(Backend::Sqlite, "principals||", &token).is_err());
        prop_assert!(decode(Backend::Dynamodb, "principals|worker|", &token).is_err());
    }
}
