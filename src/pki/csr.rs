//! Certificate signing requests, validated. A CSR proves possession of a private key; principald takes the public
//! key from it and nothing else. Requests that ask for anything (extensions, CA rights, names) are refused rather than
//! silently trimmed, so a client never receives a certificate different from what it believes it asked for.

use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::error::Error;

/// Largest CSR accepted, PEM or DER. An RSA-4096 CSR in PEM is under 2 KiB.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus accepted, in bits (bounds verification cost).
pub const MAX_RSA_BITS: usize = 8192;

/// The kind of key a CSR carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa { bits: usize },
}

/// A CSR whose signature verified and whose key is acceptable. Holds only the public key.
#[derive(Clone, Debug)]
pub struct ValidatedCsr {
    pub key_kind: KeyKind,
    pub public_key: rcgen::SubjectPublicKeyInfo,
    /// DER SubjectPublicKeyInfo, for fingerprints and comparisons.
    pub spki_der: Vec<u8>,
}

impl ValidatedCsr {
    /// Parses a CSR in PEM or DER, verifies its signature and applies the key policy.
    pub fn parse(input: &[u8]) -> Result<Self, Error> {
        if input.is_empty() {
            return Err(invalid("CSR is empty: send a PKCS#10 request in PEM or DER"));
        }
        if input.len() > MAX_CSR_BYTES {
            return Err(invalid(&format!("CSR is {} bytes; at most {MAX_CSR_BYTES} are accepted", input.len())));
        }
        let der = decode(input)?;
        let (rest, csr) =
            X509CertificationRequest::from_der(&der).map_err(|_| invalid("CSR is not a valid PKCS#10 request"))?;
        if !rest.is_empty() {
            return Err(invalid("CSR has trailing bytes after the request"));
        }
        reject_requested_extensions(&csr)?;
        let info = &csr.certification_request_info;
        let key_kind = key_kind(&info.subject_pki)?;
        check_signature_algorithm(&csr.signature_algorithm.algorithm.to_id_string())?;
        csr.verify_signature().map_err(|_| invalid("CSR signature does not verify with its own public key"))?;
        let spki_der = info.subject_pki.raw.to_vec();
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&spki_der)
            .map_err(|_| invalid("CSR public key algorithm is not supported: use ECDSA P-256/P-384, Ed25519 or RSA"))?;
        Ok(Self { key_kind, public_key, spki_der })
    }
}

fn decode(input: &[u8]) -> Result<Vec<u8>, Error> {
    let looks_pem = input.iter().take_while(|b| b.is_ascii_whitespace()).count() < input.len()
        && input.trim_ascii_start().starts_with(b"-----BEGIN");
    if !looks_pem {
        return Ok(input.to_vec());
    }
    CertificateSigningRequestDer::from_pem_slice(input)
        .map(|der| der.as_ref().to_vec())
        .map_err(|_| invalid("CSR PEM has no valid \"CERTIFICATE REQUEST\" block"))
}

fn reject_requested_extensions(csr: &X509CertificationRequest<'_>) -> Result<(), Error> {
    let Some(extensions) = csr.requested_extensions() else { return Ok(()) };
    let names: Vec<String> = extensions.map(extension_name).collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(invalid(&format!(
        "CSR requests extensions ({}); principald sets every certificate field itself: send a CSR without extensions",
        names.join(", ")
    )))
}

fn extension_name(ext: &x509_parser::extensions::ParsedExtension<'_>) -> String {
    use x509_parser::extensions::ParsedExtension as P;
    match ext {
        P::BasicConstraints(bc) if bc.ca => "basicConstraints CA:TRUE".into(),
        P::BasicConstraints(_) => "basicConstraints".into(),
        P::SubjectAlternativeName(_) => "subjectAltName".into(),
        P::KeyUsage(_) => "keyUsage".into(),
        P::ExtendedKeyUsage(_) => "extendedKeyUsage".into(),
        P::NameConstraints(_) => "nameConstraints".into(),
        _ => "unsupported extension".into(),
    }
}

fn key_kind(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyKind, Error> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_SIG_ED25519 {
        return Ok(KeyKind::Ed25519);
    }
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyKind::EcdsaP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyKind::EcdsaP384),
            _ => Err(invalid("CSR uses an unsupported elliptic curve: use P-256 or P-384")),
        };
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
            _ => return Err(invalid("CSR RSA public key is malformed")),
        };
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(invalid(&format!(
                "CSR RSA key is {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted (ECDSA P-256 is preferred)"
            )));
        }
        return Ok(KeyKind::Rsa { bits });
    }
    Err(invalid("CSR key type is not supported: use ECDSA P-256/P-384, Ed25519 or RSA (2048 bits or more)"))
}

/// Signature algorithms a CSR may be signed with, by OID: SHA-2 with RSA (PKCS#1 v1.5), ECDSA with SHA-2, Ed25519.
const ACCEPTED_SIGNATURES: &[&str] = &[
    "1.2.840.113549.1.1.11", // sha256WithRSAEncryption
    "1.2.840.113549.1.1.12", // sha384WithRSAEncryption
    "1.2.840.113549.1.1.13", // sha512WithRSAEncryption
    "1.2.840.10045.4.3.2",   // ecdsa-with-SHA256
    "1.2.840.10045.4.3.3",   // ecdsa-with-SHA384
    "1.2.840.10045.4.3.4",   // ecdsa-with-SHA512
    "1.3.101.112",           // Ed25519
];

/// Refuses weak or unknown CSR signature algorithms, naming the reason (RFC 6151, RFC 9155: MD5 and SHA-1 are broken
/// for signatures).
fn check_signature_algorithm(oid: &str) -> Result<(), Error> {
    if ACCEPTED_SIGNATURES.contains(&oid) {
        return Ok(());
    }
    let weak = match oid {
        "1.2.840.113549.1.1.4" => Some("MD5 with RSA"),
        "1.2.840.113549.1.1.2" => Some("MD2 with RSA"),
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => Some("SHA-1 with RSA"),
        "1.2.840.10045.4.1" => Some("ECDSA with SHA-1"),
        "1.2.840.10040.4.3" => Some("DSA with SHA-1"),
        _ => None,
    };
    Err(match weak {
        Some(name) => invalid(&format!(
            "CSR is signed with {name}, which is too weak: sign it with SHA-256 or stronger (ECDSA P-256 preferred)"
        )),
        None => invalid(&format!(
            "CSR signature algorithm {oid} is not supported: use ECDSA with SHA-256/384, Ed25519 or RSA with SHA-256 \
             or stronger"
        )),
    })
}

fn invalid(message: &str) -> Error {
    Error::InvalidArgument(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn csr_pem(params: &CertificateParams, key: &KeyPair) -> String {
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn plain_p256_csr_is_accepted_in_pem_and_der() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let req = CertificateParams::default().serialize_request(&key).unwrap();
        assert_eq!(ValidatedCsr::parse(req.pem().unwrap().as_bytes()).unwrap().key_kind, KeyKind::EcdsaP256);
        assert_eq!(ValidatedCsr::parse(req.der()).unwrap().key_kind, KeyKind::EcdsaP256);
    }

    #[test]
    fn p384_and_ed25519_keys_are_accepted() {
        for (alg, kind) in
            [(&rcgen::PKCS_ECDSA_P384_SHA384, KeyKind::EcdsaP384), (&rcgen::PKCS_ED25519, KeyKind::Ed25519)]
        {
            let key = KeyPair::generate_for(alg).unwrap();
            let pem = csr_pem(&CertificateParams::default(), &key);
            assert_eq!(ValidatedCsr::parse(pem.as_bytes()).unwrap().key_kind, kind);
        }
    }

    #[test]
    fn csr_asking_for_ca_rights_is_refused() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let err = ValidatedCsr::parse(csr_pem(&params, &key).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("CA:TRUE"), "{err}");
    }

    #[test]
    fn csr_asking_for_names_is_refused() {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        let err = ValidatedCsr::parse(csr_pem(&params, &key).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("subjectAltName"), "{err}");
    }

    #[test]
    fn garbage_empty_and_oversized_input_is_refused() {
        assert!(ValidatedCsr::parse(b"").is_err());
        assert!(ValidatedCsr::parse(b"not a csr").is_err());
        assert!(
            ValidatedCsr::parse(b"-----BEGIN CERTIFICATE REQUEST-----\n!!\n-----END CERTIFICATE REQUEST-----\n")
                .is_err()
        );
        let err = ValidatedCsr::parse(&vec![0x30; MAX_CSR_BYTES + 1]).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn weak_and_unknown_signature_algorithms_are_refused_by_name() {
        for (oid, named) in [
            ("1.2.840.113549.1.1.4", "MD5"),
            ("1.2.840.113549.1.1.5", "SHA-1"),
            ("1.2.840.10045.4.1", "SHA-1"),
            ("1.2.3.4", "not supported"),
        ] {
            let err = check_signature_algorithm(oid).unwrap_err();
            assert!(err.to_string().contains(named), "{oid}: {err}");
        }
        for oid in ACCEPTED_SIGNATURES {
            check_signature_algorithm(oid).unwrap();
        }
    }

    #[test]
    fn csr_with_a_tampered_signature_is_refused() {
        let key = KeyPair::generate().unwrap();
        let mut der = CertificateParams::default().serialize_request(&key).unwrap().der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let err = ValidatedCsr::parse(&der).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
    }
}
