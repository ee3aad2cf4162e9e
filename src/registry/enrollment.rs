//! One-time enrollment: an admin creates a token for a principal; a new worker generates its own key and trades the
//! token and a CSR for its first certificate, over a TLS connection without a client certificate. Only the SHA-256 of
//! the token's secret is stored; consuming it and recording the certificate are one atomic write.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

use super::{Issued, Registry};
use crate::audit::{Origin, kind};
use crate::error::{Error, Result};
use crate::model::{PrincipalId, PrincipalStatus, now, sha256_hex};
use crate::pki::csr::ValidatedCsr;
use crate::store::{ENROLLMENT_WITHDRAWN, EnrollmentToken, enrollment_refused};

/// Default and longest lifetime of an enrollment token.
pub const DEFAULT_ENROLLMENT_TTL: Duration = Duration::from_secs(3600);
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(7 * 86_400);

/// A new enrollment token: its secret (shown once, never stored) and when it expires.
#[derive(Clone, Debug)]
pub struct NewEnrollment {
    pub secret: String,
    pub expires_at: OffsetDateTime,
}

impl Registry {
    /// A one-time token with which `id` (ACTIVE) can get its first certificate within `ttl` (default one hour).
    pub async fn create_enrollment_token(
        &self,
        origin: &Origin,
        id: &PrincipalId,
        ttl: Option<Duration>,
    ) -> Result<NewEnrollment> {
        let ttl = ttl.unwrap_or(DEFAULT_ENROLLMENT_TTL);
        if !(Duration::from_secs(60)..=MAX_ENROLLMENT_TTL).contains(&ttl) {
            return Err(Error::InvalidArgument(format!(
                "ttl of {}s is outside 60..={} seconds",
                ttl.as_secs(),
                MAX_ENROLLMENT_TTL.as_secs()
            )));
        }
        let principal = self.get_principal(id).await?;
        if principal.status != PrincipalStatus::Active {
            return Err(Error::FailedPrecondition(format!("principal {:?} is {}", id.as_str(), principal.status)));
        }
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|e| Error::internal("random", e))?;
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        let at = now();
        let ttl = time::Duration::try_from(ttl).map_err(|e| Error::internal("ttl", e))?;
        let token = EnrollmentToken {
            hash: sha256_hex(secret.as_bytes()),
            principal: id.clone(),
            generation: principal.generation,
            created_at: at,
            expires_at: at + ttl,
        };
        let details =
            serde_json::json!({ "expires_at": token.expires_at.unix_timestamp(), "token": token_id(&token.hash) });
        let event = self.audit.event(origin, kind::ENROLLMENT_TOKEN_CREATED, id.as_str(), details);
        self.store.create_enrollment_token(&token, event.as_ref()).await?;
        tracing::info!(principal = %id, by = %origin.actor.principal_id, expires_at = %token.expires_at, "enrollment token created");
        Ok(NewEnrollment { secret, expires_at: token.expires_at })
    }

    /// Trades `secret` (an enrollment token of `id`) and a CSR for a certificate. Any refusal changes nothing.
    pub async fn enroll(
        &self,
        origin: &Origin,
        id: &PrincipalId,
        secret: &str,
        csr: &[u8],
        validity: Option<Duration>,
    ) -> Result<Issued> {
        if secret.is_empty() || secret.len() > 256 {
            return Err(enrollment_refused("it is unknown"));
        }
        // Refuse a bad token before anything is signed or written: a flood of guesses costs one point read each.
        let hash = sha256_hex(secret.as_bytes());
        let Some(token) = self.store.get_enrollment_token(&hash).await? else {
            return Err(enrollment_refused("it is unknown"));
        };
        let csr = ValidatedCsr::parse(csr)?;
        if let (true, Some(serial)) = (token.consumed && token.principal == *id, &token.serial) {
            // A retry after a lost response: the certificate already issued, to the same key only.
            return self.enrolled_already(id, serial, &csr).await;
        }
        token.check(id, now())?;
        // An unauthenticated caller learns nothing about principals it holds no token for.
        let principal = match self.store.get_principal(id).await? {
            Some(p) if p.status == PrincipalStatus::Active => p,
            _ => return Err(enrollment_refused("it is unknown, or its principal is not active")),
        };
        if token.generation != principal.generation {
            return Err(enrollment_refused(ENROLLMENT_WITHDRAWN));
        }
        self.check_live_cap(&principal).await?;
        let validity = self.validity(principal.kind, validity, None)?;
        let issued = self.sign(principal.kind, id, &csr, validity, principal.generation)?;
        let details = serde_json::json!({
            "principal": id.as_str(),
            "type": principal.kind.as_str(),
            "not_after": issued.record.not_after.unix_timestamp(),
            "issuer": issued.record.issuer,
            "token": token_id(&hash),
        });
        let event = self.audit.event(origin, kind::ENROLLMENT_TOKEN_CONSUMED, issued.record.serial.as_str(), details);
        self.store.enroll(&hash, &issued.record, now(), event.as_ref()).await?;
        tracing::info!(principal = %id, serial = %issued.record.serial, "certificate issued by enrollment");
        Ok(issued)
    }
}

impl Registry {
    /// The answer to an Enroll retried after its response was lost: the certificate the token paid for, if the CSR
    /// carries the same public key and the certificate still counts; otherwise the token is simply used.
    async fn enrolled_already(
        &self,
        id: &PrincipalId,
        serial: &crate::model::Serial,
        csr: &ValidatedCsr,
    ) -> Result<Issued> {
        let used = || enrollment_refused("it was used already");
        let Some(record) = self.store.get_certificate(serial).await? else { return Err(used()) };
        let principal = self.store.get_principal(id).await?.ok_or_else(used)?;
        let same_key = x509_parser::parse_x509_certificate(&record.der)
            .is_ok_and(|(_, cert)| cert.tbs_certificate.subject_pki.raw == csr.spki_der.as_slice());
        let live = record.revocation.is_none()
            && principal.status == PrincipalStatus::Active
            && !record.is_void_for(&principal)
            && record.not_after > now();
        if !(same_key && live) {
            return Err(used());
        }
        let intermediate_pem = self.intermediate_pem(&record.issuer).await?;
        Ok(Issued::new(record, &intermediate_pem, self.ca.cert_pem()))
    }
}

/// A short, stable name for an enrollment token in audit events and listings: the first 12 hex digits of the hash
/// of its secret (the secret itself is never recorded).
pub fn token_id(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
