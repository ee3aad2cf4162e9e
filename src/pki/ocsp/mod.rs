//! OCSP (RFC 6960, profiled by RFC 5019) on the wire: parsing requests, matching their CertIDs to an issuer, and
//! encoding signed responses and bare error statuses. Knows nothing of the store or of keys: the caller looks each
//! serial up and signs the response data.

use std::time::Duration;

use aws_lc_rs::digest::{self, SHA1_FOR_LEGACY_USE_ONLY, SHA256};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::der::asn1::{BitString, OctetString};
use x509_cert::der::oid::db::{rfc5912, rfc6960};
use x509_cert::der::{DateTime, Decode, Encode};
use x509_cert::ext::AsExtension;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::name::Name;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::ext::Nonce;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, OcspResponseStatus,
    ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

use crate::error::{Error, Result};

/// RFC 8954: a nonce is 1 to 32 bytes.
const MAX_NONCE: usize = 32;

/// One issuer the responder answers for: hashes of its subject Name DER and of its public key (the BIT STRING
/// contents of its SPKI), for SHA-1 and SHA-256 CertIDs.
#[derive(Clone, Debug)]
pub struct IssuerKey {
    name_sha1: [u8; 20],
    key_sha1: [u8; 20],
    name_sha256: [u8; 32],
    key_sha256: [u8; 32],
}

impl IssuerKey {
    /// From the issuer's certificate DER.
    pub fn from_cert_der(der: &[u8]) -> Result<Self> {
        let cert = Certificate::from_der(der).map_err(|e| Error::internal("parse ocsp issuer certificate", e))?;
        let tbs = &cert.tbs_certificate;
        let name = tbs.subject.to_der().map_err(|e| Error::internal("encode ocsp issuer name", e))?;
        let key = tbs.subject_public_key_info.subject_public_key.raw_bytes();
        let (sha1, sha256) = (&SHA1_FOR_LEGACY_USE_ONLY, &SHA256);
        Ok(Self {
            name_sha1: hash(sha1, &name),
            key_sha1: hash(sha1, key),
            name_sha256: hash(sha256, &name),
            key_sha256: hash(sha256, key),
        })
    }

    /// Whether a CertID's hash algorithm, issuerNameHash and issuerKeyHash name this issuer.
    pub fn matches(&self, id: &CertRef) -> bool {
        let name: &[u8] = match id.hash {
            HashAlg::Sha1 => &self.name_sha1,
            HashAlg::Sha256 => &self.name_sha256,
        };
        id.issuer_name_hash == name && self.matches_key(id)
    }

    /// Whether a CertID's issuerKeyHash names this issuer's key. The key identifies an issuer; the name hash is
    /// taken from the asked-about certificate's issuer field by clients (openssl), so a certificate of another CA
    /// asked about under this key carries a foreign name hash: the responder answers for the key (unknown serial).
    pub fn matches_key(&self, id: &CertRef) -> bool {
        let key: &[u8] = match id.hash {
            HashAlg::Sha1 => &self.key_sha1,
            HashAlg::Sha256 => &self.key_sha256,
        };
        id.issuer_key_hash == key
    }

    /// SHA-1 of the public key: the ResponderID byKey value.
    pub fn key_sha1(&self) -> [u8; 20] {
        self.key_sha1
    }
}

fn hash<const N: usize>(algorithm: &'static digest::Algorithm, data: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    // Invariant: callers pair SHA-1 with N = 20 and SHA-256 with N = 32, so the lengths agree.
    out.copy_from_slice(digest::digest(algorithm, data).as_ref());
    out
}

/// The hash algorithm of a CertID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlg {
    Sha1,
    Sha256,
}

/// One certificate asked about, as parsed from the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRef {
    pub hash: HashAlg,
    pub issuer_name_hash: Vec<u8>,
    pub issuer_key_hash: Vec<u8>,
    /// Big-endian unsigned serial, without the 0x00 sign byte DER puts before a high bit.
    pub serial: Vec<u8>,
    /// The CertID as received, echoed back in the SingleResponse.
    id: CertId,
}

impl CertRef {
    fn from_id(id: CertId) -> Result<Self, RequestError> {
        let (hash, len) = match id.hash_algorithm.oid {
            oid if oid == rfc5912::ID_SHA_1 => (HashAlg::Sha1, 20),
            oid if oid == rfc5912::ID_SHA_256 => (HashAlg::Sha256, 32),
            oid => return Err(RequestError(format!("unsupported certid hash algorithm {oid}"))),
        };
        let (name_hash, key_hash) = (id.issuer_name_hash.as_bytes(), id.issuer_key_hash.as_bytes());
        if name_hash.len() != len || key_hash.len() != len {
            return Err(RequestError("certid hash has the wrong length".into()));
        }
        let serial = match id.serial_number.as_bytes() {
            [] => return Err(RequestError("empty serial number".into())),
            [first, ..] if first & 0x80 != 0 => return Err(RequestError("negative serial number".into())),
            [0, rest @ ..] if !rest.is_empty() => rest.to_vec(),
            all => all.to_vec(),
        };
        Ok(Self { hash, issuer_name_hash: name_hash.to_vec(), issuer_key_hash: key_hash.to_vec(), serial, id })
    }
}

/// What an OCSP request asks: the certificates in request order, and the client's nonce if it sent one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub certs: Vec<CertRef>,
    pub nonce: Option<Vec<u8>>,
}

/// Why a request was refused; answer it with `error_response(ResponseStatus::MalformedRequest)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(String);

impl RequestError {
    pub fn status(&self) -> ResponseStatus {
        ResponseStatus::MalformedRequest
    }
}

/// Parses a DER OCSPRequest naming 1 to `max_certs` certificates by SHA-1 or SHA-256 CertIDs. A requestor
/// signature is ignored (RFC 5019); a nonce must be an OCTET STRING of 1 to 32 bytes (RFC 8954).
pub fn parse_request(der: &[u8], max_certs: usize) -> Result<Query, RequestError> {
    let request = OcspRequest::from_der(der).map_err(|e| RequestError(format!("undecodable ocsp request: {e}")))?;
    let tbs = request.tbs_request;
    let count = tbs.request_list.len();
    if count == 0 || count > max_certs {
        return Err(RequestError(format!("request names {count} certificates, 1 to {max_certs} allowed")));
    }
    let certs = tbs.request_list.into_iter().map(|r| CertRef::from_id(r.req_cert)).collect::<Result<Vec<_>, _>>()?;
    let nonce = tbs.request_extensions.iter().flatten().find(|e| e.extn_id == rfc6960::ID_PKIX_OCSP_NONCE);
    let nonce = nonce
        .map(|ext| match OctetString::from_der(ext.extn_value.as_bytes()) {
            Ok(nonce) if (1..=MAX_NONCE).contains(&nonce.as_bytes().len()) => Ok(nonce.into_bytes()),
            _ => Err(RequestError(format!("nonce must be an octet string of 1 to {MAX_NONCE} bytes"))),
        })
        .transpose()?;
    Ok(Query { certs, nonce })
}

/// What the responder knows of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Good,
    /// `reason` is the RFC 5280 CRLReason code.
    Revoked {
        at: OffsetDateTime,
        reason: Option<u8>,
    },
    Unknown,
}

/// A signed successful OCSPResponse (DER) with one SingleResponse per answer in order: responderID byKey, producedAt
/// and every thisUpdate = `this_update`, nextUpdate = `next_update`, the nonce echoed when given, no certificates.
/// `sign` gets the DER of the ResponseData and returns a DER ECDSA P-256 SHA-256 signature over it.
pub fn build_response(
    issuer: &IssuerKey,
    answers: &[(&CertRef, Status)],
    nonce: Option<&[u8]>,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let (produced_at, next_update) = (generalized_time(this_update)?, generalized_time(next_update)?);
    let responses = answers
        .iter()
        .map(|(cert, status)| {
            let cert_status = match *status {
                Status::Good => CertStatus::good(),
                Status::Unknown => CertStatus::unknown(),
                Status::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
                    revocation_time: generalized_time(at)?,
                    revocation_reason: reason
                        .map(|code| CrlReason::try_from(u32::from(code)))
                        .transpose()
                        .map_err(|e| Error::internal("ocsp revocation reason", e))?,
                }),
            };
            Ok(SingleResponse {
                cert_id: cert.id.clone(),
                cert_status,
                this_update: produced_at,
                next_update: Some(next_update),
                single_extensions: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let nonce = nonce.map(|n| Nonce::new(n).and_then(|n| n.to_extension(&Name::default(), &[])));
    let response_extensions = nonce.transpose().map_err(encoding)?.map(|extension| vec![extension]);
    let tbs_response_data = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(OctetString::new(issuer.key_sha1.to_vec()).map_err(encoding)?),
        produced_at,
        responses,
        response_extensions,
    };
    let signature = sign(&tbs_response_data.to_der().map_err(encoding)?)?;
    let basic = BasicOcspResponse {
        tbs_response_data,
        signature_algorithm: AlgorithmIdentifierOwned { oid: rfc5912::ECDSA_WITH_SHA_256, parameters: None },
        signature: BitString::from_bytes(&signature).map_err(encoding)?,
        certs: None,
    };
    OcspResponse::successful(basic).and_then(|r| r.to_der()).map_err(encoding)
}

fn encoding(e: x509_cert::der::Error) -> Error {
    Error::internal("encode ocsp response", e)
}

/// Whole seconds since 1970 as GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn generalized_time(t: OffsetDateTime) -> Result<OcspGeneralizedTime> {
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| Error::Internal(format!("ocsp time {t} before 1970")))?;
    DateTime::from_unix_duration(Duration::from_secs(secs))
        .map(OcspGeneralizedTime::from)
        .map_err(|e| Error::internal("ocsp time", e))
}

/// The unsuccessful statuses a responder sends without a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseStatus {
    MalformedRequest,
    InternalError,
    TryLater,
    Unauthorized,
}

/// An unsigned OCSPResponse carrying only `status`.
pub fn error_response(status: ResponseStatus) -> Vec<u8> {
    let response_status = match status {
        ResponseStatus::MalformedRequest => OcspResponseStatus::MalformedRequest,
        ResponseStatus::InternalError => OcspResponseStatus::InternalError,
        ResponseStatus::TryLater => OcspResponseStatus::TryLater,
        ResponseStatus::Unauthorized => OcspResponseStatus::Unauthorized,
    };
    // Invariant: a SEQUENCE holding one ENUMERATED always encodes into a Vec.
    OcspResponse { response_status, response_bytes: None }.to_der().expect("encode ocsp status")
}

#[cfg(test)]
mod tests;
