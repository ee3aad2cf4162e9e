//! Replica intermediates: the policy for their lifetime, how one is signed by the root, and how its key is derived.
//!
//! An intermediate's P-256 key is derived from the root's derivation secret (`Signer::derive_secret`: a KMS HMAC key,
//! a PKCS#11 secret key, or the root key file) and the intermediate's serial, so any replica holding the root can
//! re-derive it in memory to sign that intermediate's CRLs and OCSP answers after the replica that made it is gone.
//! Its certificate outlives its signing window by the longest leaf it may sign, so no leaf is ever cut short and no
//! leaf outlives its issuer.

use rcgen::{CertificateParams, Issuer, KeyPair, PublicKeyData};
use time::{Duration, OffsetDateTime};

use crate::error::Error;
use crate::model::{IntermediateRecord, now, sha256_hex};
use crate::pki::crl::StatusUrls;
use crate::pki::profile;
use crate::pki::signer::{RcgenKey, Signer, derive_p256_pkcs8};

/// How long one replica intermediate signs, and the longest leaf it may sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntermediatePolicy {
    /// Signing window of one intermediate key (default 24 h); it is replaced after 2/3 of it.
    pub lifetime: Duration,
    /// The longest validity any leaf may get; the intermediate's certificate outlives its window by this much.
    pub longest_leaf: Duration,
}

/// What an intermediate's key is derived from: its serial, which is chosen before the key and is in its certificate,
/// as an unsigned big-endian number without leading zero bytes (DER adds one when the top bit is set; rcgen's serial
/// bytes do not have it).
fn intermediate_key_context(serial: &[u8]) -> Vec<u8> {
    let start = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    let mut context = b"principald intermediate key v1\0".to_vec();
    context.extend_from_slice(&serial[start..]);
    context
}

/// The key of the intermediate with certificate `der`, re-derived from the root's derivation secret; `None` when
/// that intermediate's key was not derived (made before keys were derivable) or the secret is unreachable. Blocking.
pub fn rederive_key(root: &dyn Signer, der: &[u8]) -> Option<KeyPair> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let key = derived_key(root, cert.raw_serial())
        .map_err(|error| tracing::warn!(%error, "cannot derive an intermediate key"))
        .ok()?;
    (key.subject_public_key_info() == cert.public_key().raw).then_some(key)
}

/// The key derived for the intermediate with `serial`. Blocking (the root's secret may be remote).
fn derived_key(root: &dyn Signer, serial: &[u8]) -> Result<KeyPair, Error> {
    let pkcs8 = derive_p256_pkcs8(root, &intermediate_key_context(serial))?;
    KeyPair::try_from(pkcs8.as_slice()).map_err(|e| Error::internal("load derived key", e))
}

/// The root as an intermediate's signer needs it.
pub struct SigningRoot<'a> {
    pub signer: &'a dyn Signer,
    pub issuer: &'a Issuer<'static, RcgenKey>,
    pub not_after: OffsetDateTime,
    /// What the intermediate names for its own revocation status (the root's CRL and OCSP).
    pub status: Option<&'a StatusUrls>,
}

/// A freshly signed intermediate: its key, the parameters it was signed with (rcgen signs leaves from them), its
/// record for the store, and when to replace it.
pub struct Signed {
    pub key: KeyPair,
    pub params: CertificateParams,
    pub der: Vec<u8>,
    pub record: IntermediateRecord,
    pub rotate_at: OffsetDateTime,
    /// The end of its signing window: it signs nothing after this, replaced or not.
    pub signs_until: OffsetDateTime,
    /// Its key was derived, so any replica can re-derive it ([`rederive_key`]).
    pub derivable: bool,
}

/// A new key (derived from the root's secret when it can be, else random and in memory only) and its intermediate
/// certificate, signed by the root. Blocking (the root may be remote).
pub fn sign(root: &SigningRoot<'_>, replica: &str, policy: IntermediatePolicy) -> Result<Signed, Error> {
    let at = now();
    let not_after = (at + policy.lifetime + policy.longest_leaf + profile::BACKDATE).min(root.not_after);
    let mut params = profile::intermediate_certificate(replica, at - profile::BACKDATE, not_after);
    let serial = params.serial_number.clone().ok_or_else(|| Error::internal("intermediate", "no serial"))?;
    let (key, derivable) = match derived_key(root.signer, serial.as_ref()) {
        Ok(key) => (key, true),
        Err(error) => {
            tracing::warn!(%error, "the intermediate key cannot be derived from the root's secret: its certificates \
                get no CRL or OCSP URL (run `principald bootstrap` with the same --ca-key to create the secret)");
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| Error::internal("generate intermediate key", e))?;
            (key, false)
        }
    };
    if let Some(urls) = root.status {
        params.crl_distribution_points = vec![crate::pki::crl::distribution_point(&urls.crl_base, "", &serial)];
        params.custom_extensions.push(crate::pki::crl::authority_info_access(&urls.ocsp));
    }
    let cert = params.signed_by(&key, root.issuer).map_err(|e| {
        Error::Unavailable(format!("the CA key {} could not sign an intermediate: {e}", root.signer.describe()))
    })?;
    let der = cert.der().to_vec();
    let record = IntermediateRecord {
        fingerprint: sha256_hex(&der),
        replica: replica.to_owned(),
        not_before: params.not_before,
        not_after,
        der: der.clone(),
        revoked_at: None,
    };
    let rotate_at = at + policy.lifetime * 2 / 3;
    let signs_until = at + policy.lifetime;
    tracing::info!(replica, fingerprint = %record.fingerprint, %not_after, %rotate_at, "issuing intermediate signed");
    Ok(Signed { key, params, der, record, rotate_at, signs_until, derivable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::ca::{CertificateAuthority, Root};

    fn replica_ca(lifetime: Duration, longest_leaf: Duration) -> CertificateAuthority {
        let root =
            Root::create(crate::pki::signer::in_memory().unwrap(), "test root", Duration::days(3650), true).unwrap();
        CertificateAuthority::with_intermediate(root, "r1", IntermediatePolicy { lifetime, longest_leaf }).unwrap()
    }

    #[test]
    fn any_holder_of_the_root_re_derives_every_intermediate_key_whatever_its_serial() {
        let ca = replica_ca(Duration::hours(24), Duration::days(30));
        let mut top_bit = [false, false];
        // Serials with and without the top bit set (DER then adds a leading zero byte) must both re-derive.
        for _ in 0..24 {
            let next = ca.next_intermediate().unwrap();
            assert!(next.derivable);
            let der = next.record.as_ref().unwrap().der.clone();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            top_bit[usize::from(cert.raw_serial()[0] == 0)] = true;
            let key = rederive_key(ca.root().signer().as_ref(), &der).expect("re-derived");
            assert_eq!(key.subject_public_key_info(), cert.public_key().raw);
        }
        assert_eq!(top_bit, [true, true], "both kinds of serial were tried");
        let other = replica_ca(Duration::hours(24), Duration::days(30));
        let der = ca.issuing().record.clone().unwrap().der;
        assert!(rederive_key(other.root().signer().as_ref(), &der).is_none(), "another root derives other keys");
    }

    #[test]
    fn an_intermediate_outlives_every_leaf_it_signs_and_is_replaced_at_two_thirds() {
        let before = now();
        let ca = replica_ca(Duration::hours(24), Duration::days(30));
        let issuing = ca.issuing();
        let record = issuing.record.clone().unwrap();
        // A leaf signed at the very end of the window still ends before its issuer.
        assert!(issuing.not_after >= before + Duration::hours(24) + Duration::days(30));
        assert_eq!(record.not_after, issuing.not_after);
        let due = issuing.rotate_at.unwrap();
        assert!(due >= before + Duration::hours(16) && due <= now() + Duration::hours(16));
        assert!(!ca.rotation_due(due - Duration::seconds(1), |_| false));
        assert!(ca.rotation_due(due, |_| false));
        assert!(ca.rotation_due(now(), |fp| fp == record.fingerprint), "a revoked intermediate is replaced at once");
        let next = ca.next_intermediate().unwrap();
        assert_ne!(next.fingerprint(), record.fingerprint);
        ca.install(next);
        assert_ne!(ca.issuing().fingerprint(), record.fingerprint);
    }

    #[test]
    fn an_intermediate_never_outlives_its_root_and_roots_without_path_length_sign_directly() {
        let root = Root::create(crate::pki::signer::in_memory().unwrap(), "short", Duration::days(2), true).unwrap();
        let policy = IntermediatePolicy { lifetime: Duration::hours(24), longest_leaf: Duration::days(30) };
        let ca = CertificateAuthority::with_intermediate(root, "r1", policy).unwrap();
        assert!(ca.issuing().not_after <= ca.not_after());
        let leaf_only =
            Root::create(crate::pki::signer::in_memory().unwrap(), "old", Duration::days(2), false).unwrap();
        let ca = CertificateAuthority::with_intermediate(leaf_only, "r1", policy).unwrap();
        assert!(ca.issuing().record.is_none(), "path length 0: the root signs leaves");
    }
}
