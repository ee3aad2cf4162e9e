//! Issuing a client certificate for a principal: sign with the CA's profile and describe the result as the record the
//! store keeps.

use rcgen::PublicKeyData;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::Error;
use crate::model::{CertificateRecord, PrincipalId, PrincipalType, Serial, hex};
use crate::pki::IdentityConfig;
use crate::pki::ca::CertificateAuthority;
use crate::pki::profile;

/// A freshly signed client certificate, not yet stored.
#[derive(Clone, Debug)]
pub struct IssuedLeaf {
    pub record: CertificateRecord,
    pub pem: String,
    /// The intermediate that signed it, PEM ("" when the root did).
    pub intermediate_pem: String,
}

/// Signs a client certificate for `kind`/`id` and `public_key`, valid from now (less the backdate) for `validity`,
/// but never beyond its issuer's expiry.
pub fn issue_client(
    ca: &CertificateAuthority,
    identity: &IdentityConfig,
    kind: PrincipalType,
    id: &PrincipalId,
    public_key: &impl PublicKeyData,
    validity: std::time::Duration,
    generation: u64,
) -> Result<IssuedLeaf, Error> {
    issue(ca, identity, kind, id, public_key, validity, generation, profile::client_certificate)
}

/// Issues a workload's X.509-SVID: the client certificate profile, plus serverAuth (workloads serve each other) and
/// an explicit `CA:FALSE`, which the SPIFFE X.509-SVID profile requires of a leaf.
pub fn issue_workload(
    ca: &CertificateAuthority,
    identity: &IdentityConfig,
    kind: PrincipalType,
    id: &PrincipalId,
    public_key: &impl PublicKeyData,
    validity: std::time::Duration,
    generation: u64,
) -> Result<IssuedLeaf, Error> {
    issue(ca, identity, kind, id, public_key, validity, generation, profile::workload_certificate)
}

type Profile = fn(
    &crate::pki::oid::IdentityOids,
    &str,
    PrincipalType,
    &PrincipalId,
    time::OffsetDateTime,
    time::OffsetDateTime,
) -> Result<rcgen::CertificateParams, Error>;

#[allow(clippy::too_many_arguments)]
fn issue(
    ca: &CertificateAuthority,
    identity: &IdentityConfig,
    kind: PrincipalType,
    id: &PrincipalId,
    public_key: &impl PublicKeyData,
    validity: std::time::Duration,
    generation: u64,
    profile: Profile,
) -> Result<IssuedLeaf, Error> {
    let now = crate::model::now();
    let validity = time::Duration::try_from(validity).map_err(|e| Error::internal("validity", e))?;
    let not_after = (now + validity).min(ca.issuing().not_after);
    if not_after <= now {
        return Err(Error::FailedPrecondition("the CA certificate has expired: re-bootstrap the CA".into()));
    }
    let params = profile(&identity.oids, &identity.trust_domain, kind, id, now - profile::BACKDATE, not_after)?;
    // The CA adds the CRL distribution point and OCSP pointer of the key that signs it.
    let (cert, issuing) = ca.sign(&params, public_key)?;
    let der = cert.der().to_vec();
    // Read back what was written, so the stored serial and dates are exactly what TLS peers will present.
    let (_, parsed) = X509Certificate::from_der(&der).map_err(|e| Error::internal("parse issued certificate", e))?;
    let record = CertificateRecord {
        serial: Serial::from_bytes(parsed.raw_serial()),
        principal_id: id.clone(),
        principal_type: kind,
        not_before: parsed.validity().not_before.to_datetime(),
        not_after: parsed.validity().not_after.to_datetime(),
        sha256_fingerprint: hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref()),
        der,
        revocation: None,
        generation,
        renewal: None,
        issuer: issuing.fingerprint().to_owned(),
    };
    Ok(IssuedLeaf { record, pem: cert.pem(), intermediate_pem: issuing.intermediate_pem.clone() })
}
