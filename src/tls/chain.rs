//! Completing client chains: a client that presents only its leaf (as many do with the `certificate_pem` of an
//! issuance) still authenticates, because the server adds the issuing intermediates it knows (every replica's
//! unexpired, unrevoked intermediates, refreshed from the store) before webpki builds the path to the root. A client
//! that presents its intermediate is verified exactly as before. The root remains the only trust anchor, so nothing
//! that does not chain to it is accepted.

use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The intermediates a server adds to leaf-only client chains.
#[derive(Debug, Default)]
pub struct KnownIntermediates(RwLock<Arc<Vec<CertificateDer<'static>>>>);

impl KnownIntermediates {
    pub fn set(&self, intermediates: Vec<CertificateDer<'static>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(intermediates);
    }

    pub fn get(&self) -> Arc<Vec<CertificateDer<'static>>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug)]
pub(super) struct CompletingVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub known: Arc<KnownIntermediates>,
}

impl ClientCertVerifier for CompletingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return self.inner.verify_client_cert(end_entity, intermediates, now);
        }
        let known = self.known.get();
        self.inner.verify_client_cert(end_entity, &known, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
