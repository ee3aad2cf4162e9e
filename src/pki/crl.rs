//! What a CRL contains: partitions, distribution points, the signed list of one partition, and the OCSP pointer.
//!
//! Each issuer (the root, and every replica intermediate whose key can be re-derived) has its own CRLs, signed by
//! itself: relying parties (webpki, openssl) accept no indirect CRLs. An issuer's certificates are spread over
//! [`PARTITIONS`] partitions by the last hex digit of their serial (random, so the partitions are even). Each
//! certificate names its partition's CRL in a CRL distribution point (`BASE/crl/P.crl` for the root,
//! `BASE/crl/ISSUER/P.crl` for an intermediate, ISSUER being the first 16 hex digits of its SHA-256), and that CRL
//! carries the same URI as its issuing distribution point, so a relying party checks a certificate against exactly
//! the partition that covers it. Certificates also name the OCSP responder (authority information access).

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

/// The path segment naming the issuer with SHA-256 fingerprint `issuer` ("" for the root) in CRL URLs.
pub fn issuer_segment(issuer: &str) -> &str {
    issuer.get(..16).unwrap_or(issuer)
}

/// Where partition `partition` of `issuer`'s CRLs ("" = the root) is published under `base` (e.g.
/// `http://ca.example.com`).
pub fn url(base: &str, issuer: &str, partition: u8) -> String {
    url_of_place(base, &place(issuer, partition))
}

/// Where the CRL of `place` (see [`place`]) is published under `base`.
pub fn url_of_place(base: &str, place: &str) -> String {
    format!("{}/crl/{place}.crl", base.trim_end_matches('/'))
}

/// The partition a place names (its last hex digit).
pub fn partition_of_place(place: &str) -> u8 {
    place.rsplit('/').next().and_then(parse_partition).unwrap_or(0)
}

/// The distribution point a certificate with `serial` signed by `issuer` ("" = the root) carries.
pub fn distribution_point(base: &str, issuer: &str, serial: &SerialNumber) -> CrlDistributionPoint {
    CrlDistributionPoint { uris: vec![url(base, issuer, partition_of_bytes(serial.as_ref()))] }
}

/// The authority information access extension (RFC 5280 4.2.2.1) naming the OCSP responder at `ocsp_url`.
pub fn authority_info_access(ocsp_url: &str) -> rcgen::CustomExtension {
    use der::Encode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    const ID_PE_AUTHORITY_INFO_ACCESS: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 1, 1];
    // A URL that is not IA5 (ASCII) cannot be configured: config checks it is an http URL.
    let location = der::asn1::Ia5String::new(ocsp_url).map(GeneralName::UniformResourceIdentifier);
    let content = location
        .map(|access_location| {
            AuthorityInfoAccessSyntax(vec![AccessDescription {
                access_method: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1"), // id-ad-ocsp
                access_location,
            }])
        })
        .and_then(|aia| aia.to_der())
        .unwrap_or_default();
    rcgen::CustomExtension::from_oid_content(&ID_PE_AUTHORITY_INFO_ACCESS, content)
}

/// Where relying parties fetch revocation status: CRLs under `crl_base` (`BASE/crl/...`) and the OCSP responder at
/// `ocsp`, both written into every certificate whose issuer can keep them current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusUrls {
    pub crl_base: String,
    pub ocsp: String,
}

impl StatusUrls {
    /// Both under one base URL (the PKI listener): `BASE/crl/...` and `BASE/ocsp`.
    pub fn under(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self { crl_base: base.to_owned(), ocsp: format!("{base}/ocsp") }
    }
}

/// A signed CRL as the store keeps it, so that every replica serves the newest one of each place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCrl {
    /// `P` for a root partition, `ISSUER/P` for an intermediate's ([`place`]).
    pub place: String,
    pub number: u64,
    /// Hex SHA-256 over what it lists (serial, time, reason of each entry).
    pub digest: String,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub der: Vec<u8>,
}

/// The store's name of partition `partition` of `issuer`'s CRLs ("" = the root): its path under `/crl/`.
pub fn place(issuer: &str, partition: u8) -> String {
    match issuer_segment(issuer) {
        "" => partition_name(partition),
        segment => format!("{segment}/{}", partition_name(partition)),
    }
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

/// The unsigned CRL of one partition of `issuer` ("" = the root).
pub fn params(
    base: &str,
    issuer: &str,
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
            distribution_point: CrlDistributionPoint { uris: vec![url(base, issuer, partition)] },
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
        assert_eq!(url("http://h:1/", "", 11), "http://h:1/crl/b.crl");
        assert_eq!(url("http://h:1", &"ab".repeat(32), 0), "http://h:1/crl/abababababababab/0.crl");
        assert_eq!((partition_of_place("b"), partition_of_place("abababababababab/c")), (11, 12));
    }
}
