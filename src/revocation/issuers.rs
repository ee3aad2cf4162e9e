//! The issuers principald publishes revocation status for: the root, and every unexpired replica intermediate whose
//! key any replica can re-derive from the root's secret (see `pki::intermediate::rederive_key`). Each signs its
//! own CRLs and OCSP answers, so a relying party never meets an indirect CRL or a delegated responder, and an
//! intermediate's status stays current after the replica that created it is gone.
//!
//! Keys are re-derived once per intermediate (one KMS GenerateMac or HSM HMAC call) and kept in memory only.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::{IntermediateRecord, Serial, now, sha256_hex};
use crate::pki::ca::CertificateAuthority;
use crate::pki::intermediate;
use crate::pki::ocsp::IssuerKey;
use crate::store::Store;

/// How long before an intermediate whose key could not be derived is tried again.
const RETRY_DERIVATION: Duration = Duration::from_secs(60);

/// One issuer with its signing key.
pub struct Issuer {
    /// Hex SHA-256 of its certificate; "" for the root (as certificate records name their issuer).
    pub fingerprint: String,
    pub cert_der: Vec<u8>,
    /// What OCSP requests name it by.
    pub ocsp: IssuerKey,
    pub not_after: OffsetDateTime,
    /// When an operator revoked it (intermediates only).
    pub revoked_at: Option<OffsetDateTime>,
    key: Key,
}

enum Key {
    /// The root's key, wherever it lives (may be remote).
    Root(Arc<CertificateAuthority>),
    /// A re-derived intermediate key, in memory.
    Derived(Arc<rcgen::Issuer<'static, KeyPair>>),
}

impl Issuer {
    /// Whether signing leaves this process (a root in KMS or on a token): such answers are pre-signed and cached.
    pub fn remote(&self) -> bool {
        match &self.key {
            Key::Root(ca) => ca.root().signer().is_remote(),
            Key::Derived(_) => false,
        }
    }

    /// ECDSA P-256 / SHA-256 signature (DER) over `message`. Blocking when [`remote`](Self::remote).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        match &self.key {
            Key::Root(ca) => ca.root().signer().sign(message),
            Key::Derived(issuer) => {
                rcgen::SigningKey::sign(issuer.key(), message).map_err(|e| Error::internal("sign with intermediate", e))
            }
        }
    }

    /// The CRL `params`, signed by this issuer; DER. Blocking when [`remote`](Self::remote).
    pub fn sign_crl(&self, params: &rcgen::CertificateRevocationListParams) -> Result<Vec<u8>> {
        match &self.key {
            Key::Root(ca) => ca.sign_crl(params),
            Key::Derived(issuer) => {
                Ok(params.signed_by(issuer).map_err(|e| Error::internal("sign CRL", e))?.der().to_vec())
            }
        }
    }

    pub fn is_root(&self) -> bool {
        self.fingerprint.is_empty()
    }
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("fingerprint", &self.fingerprint).field("not_after", &self.not_after).finish()
    }
}

/// The current issuers and the root's view of every intermediate (for OCSP answers about intermediates).
pub struct Issuers {
    ca: Arc<CertificateAuthority>,
    store: Arc<dyn Store>,
    current: RwLock<Arc<Snapshot>>,
}

#[derive(Clone, Default)]
pub struct Snapshot {
    pub issuers: Vec<Arc<Issuer>>,
    /// Every recorded intermediate by serial: the root answers for them.
    pub intermediates: HashMap<Serial, IntermediateRecord>,
    /// Derived keys by fingerprint; for intermediates whose key could not be derived, when that was last tried.
    keys: HashMap<String, Result<Arc<rcgen::Issuer<'static, KeyPair>>, Instant>>,
}

impl Issuers {
    /// The root's issuer and every derivable intermediate in the store.
    pub async fn load(ca: Arc<CertificateAuthority>, store: Arc<dyn Store>) -> Result<Arc<Self>> {
        let issuers = Arc::new(Self { ca, store, current: RwLock::new(Arc::default()) });
        issuers.refresh().await?;
        Ok(issuers)
    }

    /// The current issuers (a cheap shared copy: answers read it on every request).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the intermediates (new ones, revocations, expiries); derives keys only for intermediates not seen yet.
    pub async fn refresh(&self) -> Result<()> {
        let records = self.store.list_intermediates().await?;
        let mut keys = self.snapshot().keys.clone();
        // New intermediates, and those whose key could not be derived a while ago (the secret was unreachable).
        let retry = |fp: &str| match keys.get(fp) {
            None => true,
            Some(Ok(_)) => false,
            Some(Err(at)) => at.elapsed() >= RETRY_DERIVATION,
        };
        let unseen: Vec<&IntermediateRecord> =
            records.iter().filter(|r| retry(&r.fingerprint) && r.not_after > now()).collect();
        for record in unseen {
            let (ca, der) = (self.ca.clone(), record.der.clone());
            let key = tokio::task::spawn_blocking(move || {
                let Some(key) = intermediate::rederive_key(ca.root().signer().as_ref(), &der) else {
                    tracing::warn!(
                        "cannot re-derive an intermediate's key (made before keys were derivable, or the derivation \
                         secret is unreachable): its certificates get no CRL here; will retry"
                    );
                    return None;
                };
                rcgen::Issuer::from_ca_cert_der(&der.into(), key).ok()
            })
            .await
            .map_err(|e| Error::internal("derive intermediate key", e))?;
            keys.insert(record.fingerprint.clone(), key.map(Arc::new).ok_or_else(Instant::now));
        }
        let root_der = self.ca.cert_der().to_vec();
        let mut issuers = vec![Arc::new(Issuer {
            fingerprint: String::new(),
            ocsp: IssuerKey::from_cert_der(&root_der)?,
            cert_der: root_der,
            not_after: self.ca.not_after(),
            revoked_at: None,
            key: Key::Root(self.ca.clone()),
        })];
        let at = now();
        for record in records.iter().filter(|r| r.not_after > at) {
            let Some(Ok(key)) = keys.get(&record.fingerprint) else { continue };
            let Ok(ocsp) = IssuerKey::from_cert_der(&record.der) else { continue };
            issuers.push(Arc::new(Issuer {
                fingerprint: record.fingerprint.clone(),
                cert_der: record.der.clone(),
                ocsp,
                not_after: record.not_after,
                revoked_at: record.revoked_at,
                key: Key::Derived(key.clone()),
            }));
        }
        keys.retain(|fp, _| records.iter().any(|r| &r.fingerprint == fp && r.not_after > at));
        let intermediates = records
            .into_iter()
            .filter_map(|r| {
                let (_, cert) = x509_parser::parse_x509_certificate(&r.der).ok()?;
                Some((Serial::from_bytes(cert.raw_serial()), r))
            })
            .collect();
        debug_assert!(issuers.iter().all(|i| i.is_root() || i.fingerprint == sha256_hex(&i.cert_der)));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Snapshot { issuers, intermediates, keys });
        Ok(())
    }
}
