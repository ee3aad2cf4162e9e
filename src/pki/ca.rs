//! The certificate authority: its certificate and signing key, loaded once and used to sign every certificate.

use std::fmt;

use rcgen::{CertificateParams, Issuer, KeyPair, PublicKeyData};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

use crate::error::Error;
use crate::pki::profile;

/// A loaded CA. The signing key never leaves this type; `Debug` does not print it.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    not_after: OffsetDateTime,
}

impl CertificateAuthority {
    /// A new self-signed CA with an ECDSA P-256 key (path length 0: it signs leaves only).
    pub fn generate(common_name: &str, validity: time::Duration) -> Result<Self, Error> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| Error::internal("generate CA key", e))?;
        let params = profile::ca_certificate(common_name, validity);
        let cert = params.self_signed(&key).map_err(|e| Error::internal("self-sign CA", e))?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its PEM certificate and PEM PKCS#8 key, checking that they belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| Error::InvalidArgument("CA certificate file holds no PEM certificate".into()))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|_| Error::InvalidArgument("CA key file holds no usable PEM private key".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|_| Error::InvalidArgument("CA certificate cannot be parsed".into()))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(Error::InvalidArgument("CA key does not match the CA certificate".into()));
        }
        if !parsed.is_ca() {
            return Err(Error::InvalidArgument("CA certificate lacks basicConstraints CA:TRUE".into()));
        }
        let not_after = parsed.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| Error::internal("load CA issuer", e))?;
        Ok(Self { issuer, cert_der: cert_der.into_owned(), cert_pem: cert_pem.to_owned(), not_after })
    }

    /// Signs `params` for `public_key`. The caller decides every field through `params`.
    pub fn sign(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<rcgen::Certificate, Error> {
        params.signed_by(public_key, &self.issuer).map_err(|e| Error::internal("sign certificate", e))
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The CA key as PEM PKCS#8, for writing it to a 0600 file at bootstrap.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority").field("not_after", &self.not_after).field("key", &"...").finish()
    }
}
