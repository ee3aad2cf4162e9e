//! CSR intake: any bytes, PEM or DER, must parse to a validated CSR or a clear InvalidArgument, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use principald::error::Error;
use principald::pki::csr::ValidatedCsr;

fuzz_target!(|data: &[u8]| {
    match ValidatedCsr::parse(data) {
        Ok(_) | Err(Error::InvalidArgument(_)) => {}
        Err(other) => panic!("CSR intake returned {other:?}"),
    }
});
