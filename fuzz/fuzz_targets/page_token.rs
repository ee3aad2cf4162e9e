//! Page tokens: any string decodes to a position or InvalidArgument; what encode makes decodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use principald::error::Error;
use principald::store::page_token::{Backend, MAX_POSITION_LEN, decode, encode};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for backend in [Backend::Sqlite, Backend::Dynamodb] {
        match decode(backend, "principals||", &text) {
            Ok(_) | Err(Error::InvalidArgument(_)) => {}
            Err(other) => panic!("token decoding returned {other:?}"),
        }
        // Every position within the documented bound round-trips.
        if text.len() <= MAX_POSITION_LEN {
            let token = encode(backend, "certificates|w1|true", &text);
            assert_eq!(decode(backend, "certificates|w1|true", &token).unwrap(), text);
        }
    }
});
