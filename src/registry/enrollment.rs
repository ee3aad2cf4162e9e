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
use crate::model::{ENROLLMENT_WITHDRAWN, EnrollmentToken, EnrollmentTokenState, enrollment_refused};
use crate::model::{PrincipalId, PrincipalStatus, now, sha256_hex};
use crate::pki::csr::ValidatedCsr;

/// Default and longest lifetime of an enrollment token.
pub const DEFAULT_ENROLLMENT_TTL: Duration = Duration::from_secs(3600);
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(7 * 86_400);

/// A new enrollment token: its secret (shown once, never stored) and when it expires.
#[derive(Clone, Debug)]
pub struct NewEnrollment {
    /// Its short id (see [`token_id`]).
    pub id: String,
    pub secret: String,
    pub expires_at: OffsetDateTime,
}

impl Registry {
    /// A one-time token with which `id` (ACTIVE) can get its first certificate within `ttl` (default one hour), valid
    /// for at most `max_validity` (default: the type's maximum; renewals keep the cap).
    pub async fn create_enrollment_token(
        &self,
        origin: &Origin,
        id: &PrincipalId,
        ttl: Option<Duration>,
        max_validity: Option<Duration>,
    ) -> Result<NewEnrollment> {
        let ttl = ttl.unwrap_or(DEFAULT_ENROLLMENT_TTL);
        if !(Duration::from_secs(60)..=MAX_ENROLLMENT_TTL).contains(&ttl) {
            let f = crate::model::duration::format_duration;
            return Err(Error::InvalidArgument(format!(
                "ttl of {} is outside 1m to {}",
                f(ttl),
                f(MAX_ENROLLMENT_TTL)
            )));
        }
        let principal = self.get_principal(id).await?;
        if principal.status != PrincipalStatus::Active {
            return Err(Error::FailedPrecondition(format!("principal {:?} is {}", id.as_str(), principal.status)));
        }
        // The cap must be a validity this type may have.
        let max_validity = max_validity.map(|v| self.validity(principal.kind, Some(v), None)).transpose()?;
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
            max_validity: max_validity.map(|v| v.as_secs()),
        };
        let mut details =
            serde_json::json!({ "expires_at": token.expires_at.unix_timestamp(), "token": token_id(&token.hash) });
        if let Some(max) = token.max_validity {
            details["max_validity"] = max.into();
        }
        let event = self.audit.event(origin, kind::ENROLLMENT_TOKEN_CREATED, id.as_str(), details);
        self.store.create_enrollment_token(&token, event.as_ref()).await?;
        tracing::info!(principal = %id, by = %origin.actor.principal_id, token = token_id(&token.hash), expires_at = %token.expires_at, "enrollment token created");
        Ok(NewEnrollment { id: token_id(&token.hash).to_owned(), secret, expires_at: token.expires_at })
    }

    /// Every enrollment token of `id`, newest first, each with what it can still do.
    pub async fn list_enrollment_tokens(&self, id: &PrincipalId) -> Result<Vec<TokenView>> {
        let principal = self.get_principal(id).await?;
        let at = now();
        let tokens = self.store.list_enrollment_tokens(id).await?;
        Ok(tokens.into_iter().map(|state| TokenView::of(state, &principal, at)).collect())
    }

    /// Revokes `id`'s unused enrollment token named `token` (its id as listed, or a longer prefix of its hash).
    pub async fn revoke_enrollment_token(&self, origin: &Origin, id: &PrincipalId, token: &str) -> Result<TokenView> {
        let wanted = token.trim().to_ascii_lowercase();
        if wanted.len() < TOKEN_ID_LEN || wanted.len() > 64 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument(format!(
                "enrollment token id {token:?} is not {TOKEN_ID_LEN} to 64 hex digits as `principalctl principal                  enroll-tokens ID` lists them"
            )));
        }
        let principal = self.get_principal(id).await?;
        let tokens = self.store.list_enrollment_tokens(id).await?;
        let mut matching = tokens.into_iter().filter(|t| t.hash.starts_with(&wanted));
        let (Some(mut found), None) = (matching.next(), matching.next()) else {
            return Err(crate::store::errors::enrollment_token_not_found());
        };
        let details = serde_json::json!({ "principal": id.as_str(), "token": token_id(&found.hash) });
        let event = self.audit.event(origin, kind::ENROLLMENT_TOKEN_REVOKED, id.as_str(), details);
        let at = now();
        self.store.revoke_enrollment_token(&found.hash, at, event.as_ref()).await?;
        tracing::info!(principal = %id, by = %origin.actor.principal_id, token = token_id(&found.hash), "enrollment token revoked");
        found.revoked = true;
        Ok(TokenView::of(found, &principal, at))
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
        // The token's cap, if any, bounds what the enrolling machine asks for (and, through it, every renewal).
        let validity = match (validity, token.max_validity.map(Duration::from_secs)) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (asked, cap) => asked.or(cap),
        };
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

/// How many hex digits of the secret's hash name a token.
const TOKEN_ID_LEN: usize = 12;

/// A short, stable name for an enrollment token in audit events and listings: the first 12 hex digits of the hash
/// of its secret (the secret itself is never recorded).
pub fn token_id(hash: &str) -> &str {
    &hash[..hash.len().min(TOKEN_ID_LEN)]
}

/// What an enrollment token can still do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    /// Unused, unexpired, and its principal is active at the generation it was made for: it would enroll now.
    Pending,
    Used,
    Expired,
    Revoked,
    /// Its principal was suspended, deleted or had a key compromised after it was made.
    Withdrawn,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Pending => "pending",
            TokenStatus::Used => "used",
            TokenStatus::Expired => "expired",
            TokenStatus::Revoked => "revoked",
            TokenStatus::Withdrawn => "withdrawn",
        }
    }
}

/// An enrollment token as listed: never its secret.
#[derive(Clone, Debug)]
pub struct TokenView {
    pub id: String,
    pub state: EnrollmentTokenState,
    pub status: TokenStatus,
}

impl TokenView {
    fn of(state: EnrollmentTokenState, principal: &crate::model::Principal, at: OffsetDateTime) -> Self {
        let status = if state.consumed {
            TokenStatus::Used
        } else if state.revoked {
            TokenStatus::Revoked
        } else if state.generation != principal.generation || principal.status != PrincipalStatus::Active {
            TokenStatus::Withdrawn
        } else if state.expires_at <= at {
            TokenStatus::Expired
        } else {
            TokenStatus::Pending
        };
        Self { id: token_id(&state.hash).to_owned(), state, status }
    }
}
