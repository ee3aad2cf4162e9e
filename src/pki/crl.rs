//! What a CRL contains: partitions, distribution points, and the signed list of one partition.
//!
//! Certificates are spread over [`PARTITIONS`] partitions by the last hex digit of their serial (random, so the
//! partitions are even). Each certificate the root signs names its partition's CRL in a CRL distribution point
//! (`BASE/crl/P.crl`), and that partition's CRL carries the same URI as its issuing distribution point, so a relying
//! party (openssl, webpki) checks a certificate against exactly the partition that covers it.

use rcgen::{
    CertificateRevocationListParams, CrlDistributionPoint, CrlIssuingDistributionPoint, KeyIdMethod, RevokedCertParams,
    SerialNumber,
};
use time::OffsetDateTime;

use crate::model::{RevocationReason, Serial};

/// Number of CRL partitions; a partition is named by one lowercase hex digit.
pub const PARTITIONS: u8 = 16;

/// The partition of a serial given as bytes (rcgen) ...
pub fn partition_of_bytes(serial: &[u8]) -> u8 {
    serial.last().map_or(0, |b| b & 0x0f)
}

/// ... or as the store's hex text.
pub fn partition_of(serial: &Serial) -> u8 {
    serial.as_str().chars().last().and_then(|c| c.to_digit(16)).map_or(0, |d| d as u8)
}

/// `"0"`..`"f"`.
pub fn partition_name(partition: u8) -> String {
    format!("{:x}", partition & 0x0f)
}

/// The partition a name such as `"a"` stands for; `None` for anything else.
pub fn parse_partition(name: &str) -> Option<u8> {
    match name.as_bytes() {
        [c] if c.is_ascii_digit() || (b'a'..=b'f').contains(c) => u8::from_str_radix(name, 16).ok(),
        _ => None,
    }
}

/// Where partition `partition`'s CRL is published under `base` (e.g. `http://ca.example.com:8080`).
pub fn url(base: &str, partition: u8) -> String {
    format!("{}/crl/{}.crl", base.trim_end_matches('/'), partition_name(partition))
}

/// The distribution point a certificate with `serial` carries.
pub fn distribution_point(base: &str, serial: &SerialNumber) -> CrlDistributionPoint {
    CrlDistributionPoint { uris: vec![url(base, partition_of_bytes(serial.as_ref()))] }
}

/// A revoked, unexpired certificate as a CRL lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    pub serial: Serial,
    pub revoked_at: OffsetDateTime,
    pub reason: RevocationReason,
    pub not_after: OffsetDateTime,
    /// Hex SHA-256 of the issuing intermediate; "" when the root signed it.
    pub issuer: String,
}

/// The unsigned CRL of one partition.
pub fn params(
    base: &str,
    partition: u8,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    entries: &[RevokedEntry],
) -> CertificateRevocationListParams {
    let revoked_certs = entries
        .iter()
        .map(|e| RevokedCertParams {
            serial_number: SerialNumber::from_slice(&e.serial.to_bytes()),
            revocation_time: e.revoked_at,
            reason_code: reason(e.reason),
            invalidity_date: None,
        })
        .collect();
    CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: Some(CrlIssuingDistributionPoint {
            distribution_point: CrlDistributionPoint { uris: vec![url(base, partition)] },
            scope: None,
        }),
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    }
}

fn reason(r: RevocationReason) -> Option<rcgen::RevocationReason> {
    use rcgen::RevocationReason as R;
    Some(match r {
        RevocationReason::Unspecified => return None,
        RevocationReason::KeyCompromise => R::KeyCompromise,
        RevocationReason::CaCompromise => R::CaCompromise,
        RevocationReason::AffiliationChanged => R::AffiliationChanged,
        RevocationReason::Superseded => R::Superseded,
        RevocationReason::CessationOfOperation => R::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => R::AaCompromise,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_the_last_hex_digit() {
        for (serial, p) in [("0a", 10), ("07f3", 3), ("00ff", 15), ("10", 0)] {
            assert_eq!(partition_of(&serial.parse().unwrap()), p, "{serial}");
        }
        assert_eq!(partition_of_bytes(&[0x12, 0x3c]), 12);
        for p in 0..PARTITIONS {
            assert_eq!(parse_partition(&partition_name(p)), Some(p));
        }
        for bad in ["", "g", "10", "A", "../x", "1.crl"] {
            assert_eq!(parse_partition(bad), None, "{bad}");
        }
        assert_eq!(url("http://h:1/", 11), "http://h:1/crl/b.crl");
    }
}
