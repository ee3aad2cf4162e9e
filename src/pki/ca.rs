//! The certificate authority: a root (its certificate and a [`Signer`] wherever the key lives) and the issuing key
//! that signs leaves.
//!
//! A serving replica signs leaves with an *issuing intermediate* (see [`crate::pki::intermediate`]) whose key is in
//! memory only: the root signs one at start and again every [`IntermediatePolicy::lifetime`] × 2/3, so KMS or the
//! HSM is asked a few times a day and issuance never waits on it. Tools and tests that load the CA from files
//! sign directly with the root ([`CertificateAuthority::direct`]), as do roots made before intermediates existed (path
//! length 0).

use std::fmt;
use std::sync::{Arc, RwLock};

use rcgen::{CertificateParams, Issuer, KeyPair, PublicKeyData, SigningKey};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use crate::error::Error;
use crate::model::IntermediateRecord;
use crate::pki::crl::StatusUrls;
use crate::pki::intermediate::{self, IntermediatePolicy};
use crate::pki::pem::pem_of;
use crate::pki::profile;
use crate::pki::signer::{RcgenKey, Signer};

/// The root: its certificate and its key.
pub struct Root {
    signer: Arc<dyn Signer>,
    issuer: Issuer<'static, RcgenKey>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    not_after: OffsetDateTime,
    /// Path length allows an intermediate below it (roots made before intermediates have path length 0).
    signs_intermediates: bool,
    /// Where relying parties learn revocations (CRLs and OCSP); what it signs names them when set.
    status: Option<StatusUrls>,
}

impl Root {
    /// A new self-signed root for `signer`'s key; with `intermediates` it may sign intermediates (path length 1),
    /// else only leaves (0). Blocking (the signer may be remote).
    pub fn create(
        signer: Arc<dyn Signer>,
        common_name: &str,
        validity: Duration,
        intermediates: bool,
    ) -> Result<Self, Error> {
        let params = profile::ca_certificate(common_name, validity, u8::from(intermediates));
        let cert = params.self_signed(&RcgenKey(signer.clone())).map_err(|e| Error::internal("self-sign CA", e))?;
        Self::load(&cert.pem(), signer)
    }

    /// The root whose certificate is `cert_pem`, checking that `signer` holds its key.
    pub fn load(cert_pem: &str, signer: Arc<dyn Signer>) -> Result<Self, Error> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| Error::InvalidArgument("CA certificate file holds no PEM certificate".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|_| Error::InvalidArgument("CA certificate cannot be parsed".into()))?;
        if parsed.public_key().raw != signer.spki_der() {
            return Err(Error::InvalidArgument(format!(
                "the CA key {} does not match the CA certificate",
                signer.describe()
            )));
        }
        let constraints = parsed.basic_constraints().ok().flatten().map(|b| b.value.clone());
        let Some(constraints) = constraints.filter(|c| c.ca) else {
            return Err(Error::InvalidArgument("CA certificate lacks basicConstraints CA:TRUE".into()));
        };
        let not_after = parsed.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&cert_der, RcgenKey(signer.clone()))
            .map_err(|e| Error::internal("load CA issuer", e))?;
        Ok(Self {
            signer,
            issuer,
            cert_pem: pem_of(&cert_der),
            cert_der: cert_der.into_owned(),
            not_after,
            signs_intermediates: constraints.path_len_constraint.is_none_or(|n| n >= 1),
            status: None,
        })
    }

    /// The root, naming `urls` (CRLs and OCSP) in what it and its intermediates sign from now on.
    pub fn publishing_status_at(mut self, urls: Option<StatusUrls>) -> Self {
        self.status = urls;
        self
    }

    /// What signing an intermediate needs of the root.
    fn signing(&self) -> intermediate::SigningRoot<'_> {
        intermediate::SigningRoot {
            signer: self.signer.as_ref(),
            issuer: &self.issuer,
            not_after: self.not_after,
            status: self.status.as_ref(),
        }
    }

    /// The root's key (for the CRLs and OCSP answers it signs, and to derive its intermediates' keys).
    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

/// The key that signs leaves now: a replica intermediate, or the root itself.
pub struct Issuing {
    issuer: Issuer<'static, IssuingKey>,
    /// The intermediate as recorded in the store; `None` when the root signs leaves directly.
    pub record: Option<IntermediateRecord>,
    /// PEM of the intermediate ("" when the root signs): what a TLS peer presents after its leaf, and what comes
    /// before the root in an issuer chain.
    pub intermediate_pem: String,
    /// No leaf signed by this key may end later than this.
    pub not_after: OffsetDateTime,
    /// When a replacement is due (never for the root).
    pub rotate_at: Option<OffsetDateTime>,
    /// The end of an intermediate's signing window: past it, it signs nothing even if no replacement could be made
    /// (signing answers UNAVAILABLE and readiness 503 until one is). Never for the root.
    pub signs_until: Option<OffsetDateTime>,
    /// Signing blocks on KMS or a token (the root signs leaves itself and is remote).
    pub remote: bool,
    /// Any replica can re-derive this key (see [`crate::pki::intermediate`]), so its CRLs and OCSP answers outlive
    /// this replica: what it signs names them. True for the root.
    pub derivable: bool,
}

impl From<intermediate::Signed> for Issuing {
    fn from(signed: intermediate::Signed) -> Self {
        Self {
            issuer: Issuer::new(signed.params, IssuingKey::Memory(signed.key)),
            intermediate_pem: pem_of(&signed.der),
            not_after: signed.record.not_after,
            record: Some(signed.record),
            rotate_at: Some(signed.rotate_at),
            signs_until: Some(signed.signs_until),
            remote: false,
            derivable: signed.derivable,
        }
    }
}

impl Issuing {
    /// Hex SHA-256 of the intermediate ("" when the root signs): what each certificate record names as its issuer.
    pub fn fingerprint(&self) -> &str {
        self.record.as_ref().map_or("", |r| r.fingerprint.as_str())
    }

    /// Signs a test message with an intermediate's key and checks the signature against its public key. Nothing to
    /// do when the root signs leaves (its own self-test covers it).
    pub fn self_test(&self) -> Result<(), Error> {
        if self.record.is_none() {
            return Ok(());
        }
        let message = b"principald issuing key self-test";
        let key = self.issuer.key();
        let signature = key.sign(message).map_err(|e| Error::internal("issuing key self-test", e))?;
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1, key.der_bytes())
            .verify(message, &signature)
            .map_err(|_| Error::internal("issuing key self-test", "its signature does not verify"))
    }
}

enum IssuingKey {
    Memory(KeyPair),
    Root(RcgenKey),
}

impl PublicKeyData for IssuingKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            Self::Memory(k) => k.der_bytes(),
            Self::Root(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for IssuingKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            Self::Memory(k) => k.sign(msg),
            Self::Root(k) => k.sign(msg),
        }
    }
}

/// A loaded CA: the root and the current issuing key. The keys never leave this type; `Debug` does not print them.
pub struct CertificateAuthority {
    root: Root,
    replica: String,
    policy: Option<IntermediatePolicy>,
    issuing: RwLock<Arc<Issuing>>,
    rotate: tokio::sync::Notify,
}

impl CertificateAuthority {
    /// A CA whose root signs leaves itself (tools, tests, and roots with path length 0).
    pub fn direct(root: Root) -> Self {
        let issuing = Arc::new(Issuing {
            issuer: Issuer::from_ca_cert_der(&root.cert_der, IssuingKey::Root(RcgenKey(root.signer.clone())))
                .expect("the root certificate parsed once already"),
            record: None,
            intermediate_pem: String::new(),
            not_after: root.not_after,
            rotate_at: None,
            signs_until: None,
            remote: root.signer.is_remote(),
            derivable: true,
        });
        Self { root, replica: String::new(), policy: None, issuing: RwLock::new(issuing), rotate: Default::default() }
    }

    /// A serving replica's CA: the root signs a first intermediate for `replica` now. Blocking (the root may be
    /// remote). Falls back to [`direct`](Self::direct) for a root whose path length forbids intermediates.
    pub fn with_intermediate(root: Root, replica: &str, policy: IntermediatePolicy) -> Result<Self, Error> {
        if !root.signs_intermediates {
            tracing::warn!("the CA certificate has path length 0: leaves are signed by the root key directly");
            return Ok(Self::direct(root));
        }
        let first = Issuing::from(intermediate::sign(&root.signing(), replica, policy)?);
        Ok(Self {
            root,
            replica: replica.to_owned(),
            policy: Some(policy),
            issuing: RwLock::new(Arc::new(first)),
            rotate: Default::default(),
        })
    }

    /// A new self-signed CA with a fresh in-memory P-256 key (tests and tools).
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self, Error> {
        Ok(Self::direct(Root::create(crate::pki::signer::in_memory()?, common_name, validity, false)?))
    }

    /// The key signing leaves now.
    pub fn issuing(&self) -> Arc<Issuing> {
        self.issuing.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Signs `params` for `public_key` with the current issuing key; returns the certificate and that key's description.
    /// When that key is remote (a root in KMS or on a token signing leaves itself) and the caller is on a
    /// multi-threaded runtime, the runtime is told this thread blocks, so other tasks move elsewhere meanwhile.
    pub fn sign(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<(rcgen::Certificate, Arc<Issuing>), Error> {
        let issuing = self.issuing();
        if issuing.signs_until.is_some_and(|until| crate::model::now() >= until) {
            return Err(Error::Unavailable(
                "this replica's issuing intermediate reached the end of its signing window and no replacement could \
                 be signed yet (is the CA key reachable?)"
                    .into(),
            ));
        }
        let mut params = params.clone();
        if let (Some(urls), Some(serial)) = (&self.root.status, &params.serial_number)
            && issuing.derivable
        {
            params.crl_distribution_points =
                vec![crate::pki::crl::distribution_point(&urls.crl_base, issuing.fingerprint(), serial)];
            params.custom_extensions.push(crate::pki::crl::authority_info_access(&urls.ocsp));
        }
        let sign = || params.signed_by(public_key, &issuing.issuer).map_err(|e| Error::internal("sign certificate", e));
        let on_workers = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let cert = if issuing.remote && on_workers { tokio::task::block_in_place(sign)? } else { sign()? };
        Ok((cert, issuing))
    }

    /// Signs `params` for `public_key` with the root key itself (the server certificate: intermediates may only sign
    /// client certificates). Blocking when the root is in KMS or on a token.
    pub fn sign_with_root(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<rcgen::Certificate, Error> {
        let sign = || {
            params.signed_by(public_key, &self.root.issuer).map_err(|e| {
                Error::Unavailable(format!("the CA key {} could not sign: {e}", self.root.signer.describe()))
            })
        };
        let on_workers = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if self.root.signer.is_remote() && on_workers { tokio::task::block_in_place(sign) } else { sign() }
    }

    /// Where revocation status is published, if it is.
    pub fn status_urls(&self) -> Option<&StatusUrls> {
        self.root.status.as_ref()
    }

    /// The root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Signs a CRL with the root key; DER. Blocking when the root is in KMS or on a token.
    pub fn sign_crl(&self, params: &rcgen::CertificateRevocationListParams) -> Result<Vec<u8>, Error> {
        let crl = params.signed_by(&self.root.issuer).map_err(|e| {
            Error::Unavailable(format!("the CA key {} could not sign a CRL: {e}", self.root.signer.describe()))
        })?;
        Ok(crl.der().to_vec())
    }

    /// Whether the current intermediate should be replaced (due, or `revoked` names it).
    pub fn rotation_due(&self, at: OffsetDateTime, revoked: impl Fn(&str) -> bool) -> bool {
        let issuing = self.issuing();
        issuing.rotate_at.is_some_and(|due| at >= due)
            || (!issuing.fingerprint().is_empty() && revoked(issuing.fingerprint()))
    }

    /// Signs a replacement intermediate with the root (blocking) without installing it: record it in the store first,
    /// then [`install`](Self::install) it.
    pub fn next_intermediate(&self) -> Result<Issuing, Error> {
        let policy = self.policy.ok_or_else(|| Error::internal("rotate", "this CA signs with its root directly"))?;
        Ok(Issuing::from(intermediate::sign(&self.root.signing(), &self.replica, policy)?))
    }

    /// Asks the keeper to check for a rotation now (an intermediate was revoked).
    pub fn request_rotation(&self) {
        self.rotate.notify_one();
    }

    /// Resolves when [`request_rotation`](Self::request_rotation) was called.
    pub async fn rotation_requested(&self) {
        self.rotate.notified().await;
    }

    pub fn install(&self, next: Issuing) {
        *self.issuing.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    }

    /// The root certificate: what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.root.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.root.cert_der
    }

    /// When the root expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.root.not_after
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("root", &self.root.signer)
            .field("not_after", &self.root.not_after)
            .field("issuing", &self.issuing().fingerprint().to_owned())
            .finish()
    }
}
