//! What the CA writes into each kind of certificate. Every field is decided here; nothing comes from a CSR.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::error::Error;
use crate::model::{PrincipalId, PrincipalType};
use crate::pki::identity;
use crate::pki::oid::IdentityOids;

/// Certificates start this long before they are issued, to tolerate clock skew between hosts.
pub const BACKDATE: Duration = Duration::seconds(60);

/// The CA's own (root) certificate: path length 1 when it signs replica intermediates (which sign leaves), 0 when it
/// signs leaves itself; key usage keyCertSign and cRLSign, and digitalSignature because the root itself signs OCSP
/// responses about the certificates it issued (RFC 6960 section 4.2.2.2: the issuer may sign them) and the audit
/// checkpoints; no other signatures are made with it.
pub fn ca_certificate(common_name: &str, validity: Duration, path_len: u8) -> CertificateParams {
    let now = crate::model::now();
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params
}

/// A replica's issuing intermediate: path length 0 (leaves only), extended key usage clientAuth only (what its leaves
/// are for: a stolen intermediate key cannot mint a server certificate that a verifier checking EKU accepts), named for
/// the replica and its serial so every intermediate has a distinct subject.
pub fn intermediate_certificate(
    replica: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let serial = random_serial();
    let tag: String = serial.as_ref().iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!("principald issuing CA {replica} {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(serial);
    params
}

/// A TLS server certificate for the given DNS names and IP addresses.
pub fn server_certificate(
    names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|e| Error::InvalidArgument(format!("invalid server name in {names:?}: {e}")))?;
    params.distinguished_name = name(names.first().map(String::as_str).unwrap_or("principald"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// A principal's client certificate: CN = id, SPIFFE URI SAN, identity extensions, clientAuth only.
pub fn client_certificate(
    oids: &IdentityOids,
    trust_domain: &str,
    kind: PrincipalType,
    id: &PrincipalId,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(id.as_str());
    let uri = identity::spiffe_uri(trust_domain, kind, id);
    let uri = uri.try_into().map_err(|e| Error::internal("SPIFFE URI is not IA5", e))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.custom_extensions = identity::extensions(oids, kind, id).into();
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// A workload's X.509-SVID: [`client_certificate`] that may also serve TLS, with an explicit `CA:FALSE`.
pub fn workload_certificate(
    oids: &IdentityOids,
    trust_domain: &str,
    kind: PrincipalType,
    id: &PrincipalId,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, Error> {
    let mut params = client_certificate(oids, trust_domain, kind, id, not_before, not_after)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// 128 random bits from the operating system's CSPRNG (via aws-lc).
pub fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // aws-lc's RNG only fails if the OS entropy source is gone; a CA must not continue without it.
    aws_lc_rs::rand::fill(&mut bytes).expect("operating system random number generator failed");
    SerialNumber::from_slice(&bytes)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}
