//! The identity a client certificate carries: principal type and id in two non-critical extensions (DER
//! UTF8String; PrintableString accepted when reading), plus a SPIFFE URI SAN for tools that understand SPIFFE.

use rcgen::CustomExtension;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::{Any, FromDer, Tag};
use x509_parser::oid_registry::Oid;

use crate::model::{PrincipalId, PrincipalType};
use crate::pki::oid::IdentityOids;

/// Why a certificate does not carry a usable identity. Shown to callers, so it names no internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate has no principal {0} extension")]
    Missing(&'static str),
    #[error("certificate has more than one principal {0} extension")]
    Duplicate(&'static str),
    #[error("certificate's principal {0} extension is not a UTF8String or PrintableString")]
    Garbled(&'static str),
    #[error("certificate's principal {0} extension holds an invalid value")]
    Invalid(&'static str),
}

/// The two identity extensions for `kind` and `id`, non-critical (rustls rejects unknown critical extensions).
pub fn extensions(oids: &IdentityOids, kind: PrincipalType, id: &PrincipalId) -> [CustomExtension; 2] {
    [
        CustomExtension::from_oid_content(&oids.type_arcs(), utf8_string_der(kind.as_str())),
        CustomExtension::from_oid_content(&oids.id_arcs(), utf8_string_der(id.as_str())),
    ]
}

/// `spiffe://<trust_domain>/<type>/<id>`.
pub fn spiffe_uri(trust_domain: &str, kind: PrincipalType, id: &PrincipalId) -> String {
    format!("spiffe://{trust_domain}/{kind}/{id}")
}

/// Reads the principal type and id from a parsed certificate.
pub fn read(oids: &IdentityOids, cert: &X509Certificate<'_>) -> Result<(PrincipalType, PrincipalId), IdentityError> {
    let kind = read_string(cert, oids.type_oid(), "type")?;
    let id = read_string(cert, oids.id_oid(), "id")?;
    let kind = kind.parse::<PrincipalType>().map_err(|_| IdentityError::Invalid("type"))?;
    let id = id.parse::<PrincipalId>().map_err(|_| IdentityError::Invalid("id"))?;
    Ok((kind, id))
}

fn read_string<'a>(
    cert: &'a X509Certificate<'_>,
    oid: &Oid<'static>,
    name: &'static str,
) -> Result<&'a str, IdentityError> {
    let ext = cert
        .get_extension_unique(oid)
        .map_err(|_| IdentityError::Duplicate(name))?
        .ok_or(IdentityError::Missing(name))?;
    let (rest, any) = Any::from_der(ext.value).map_err(|_| IdentityError::Garbled(name))?;
    if !rest.is_empty() || !matches!(any.tag(), Tag::Utf8String | Tag::PrintableString) {
        return Err(IdentityError::Garbled(name));
    }
    std::str::from_utf8(any.data).map_err(|_| IdentityError::Garbled(name))
}

/// DER UTF8String: tag 0x0C, definite length, bytes.
fn utf8_string_der(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = vec![0x0c];
    // Values are principal ids and type names: at most 64 bytes, so the short length form always applies.
    debug_assert!(bytes.len() < 128);
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_string_is_der_encoded() {
        assert_eq!(utf8_string_der("ab"), vec![0x0c, 2, b'a', b'b']);
    }
}
