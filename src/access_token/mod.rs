//! Certificate-bound access tokens (RFC 8705): a JWT signed with ES256 by this replica's token key ([`keys`]), for an
//! audience from the configured allow list, carrying the caller's permissions (or fewer) as `scope` and the SHA-256
//! thumbprint of the certificate it called with as `cnf.x5t#S256`, so the token is worthless without that
//! certificate's key. Served by the IssueToken RPC and the HTTPS token endpoint ([`http`]).

pub mod http;
pub mod keys;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::pki::identity;
use keys::TokenKeys;

/// Lifetime of a JWT-SVID (SPIRE's default as well): short, since a JWT-SVID is a bearer token.
pub const JWT_SVID_LIFETIME: Duration = Duration::from_secs(300);
/// Most audiences one JWT-SVID may name.
const MAX_AUDIENCES: usize = 10;

/// The claims of a JWT-SVID (SPIFFE JWT-SVID profile: `sub`, `aud`, `exp` required).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct JwtSvidClaims {
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub jti: String,
}

/// Shortest lifetime a request may ask for.
pub const MIN_LIFETIME: Duration = Duration::from_secs(60);

/// What tokens look like here.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// `iss`: the HTTPS base URL where discovery and the JWKS are served.
    pub issuer: String,
    /// Audiences a token may be asked for.
    pub audiences: BTreeSet<String>,
    /// Default and longest lifetime.
    pub lifetime: Duration,
    pub trust_domain: String,
}

pub use crate::auth::bearer::{Claims, Confirmation};

/// An issued token, OAuth-shaped.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
    pub claims: Claims,
}

/// Issues tokens under a [`TokenPolicy`] with this replica's keys.
pub struct TokenIssuer {
    pub policy: TokenPolicy,
    pub keys: Arc<TokenKeys>,
    /// Counts issued tokens.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Records each issued token in the audit log (a durable write per token: off unless asked for).
    pub audit: Option<(crate::audit::Recorder, Arc<dyn crate::store::Store>)>,
}

impl TokenIssuer {
    /// A token bound to the certificate `caller` presented (its hash, taken when it was authenticated) for `audience`, with `scopes` (all of the caller's
    /// permissions when empty) and at most `lifetime` (the policy's when `None`), never past the certificate's expiry.
    pub async fn issue(
        &self,
        caller: &Arc<Caller>,
        audience: &str,
        scopes: &[String],
        lifetime: Option<Duration>,
    ) -> Result<IssuedToken> {
        if !self.policy.audiences.contains(audience) {
            return Err(if self.policy.audiences.is_empty() {
                Error::FailedPrecondition("this server issues no tokens: no --token-audience is configured".into())
            } else {
                Error::InvalidArgument(format!(
                    "audience {:?} is not one this server issues tokens for: {}",
                    crate::ratelog::sanitize(audience, 100),
                    self.policy.audiences.iter().cloned().collect::<Vec<_>>().join(", ")
                ))
            });
        }
        let scope = self.scope(caller, scopes)?;
        let max = self.policy.lifetime;
        let lifetime = match lifetime {
            None => max,
            Some(l) if (MIN_LIFETIME..=max).contains(&l) => l,
            Some(l) => {
                let f = crate::model::duration::format_duration;
                return Err(Error::InvalidArgument(format!(
                    "requested lifetime of {} is outside {} to {}; omit it for the maximum",
                    f(l),
                    f(MIN_LIFETIME),
                    f(max)
                )));
            }
        };
        let now = crate::model::now().unix_timestamp();
        let exp = (now + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)).min(caller.not_after.unix_timestamp());
        if exp <= now {
            return Err(Error::FailedPrecondition("your certificate has expired: renew it first".into()));
        }
        let claims = Claims {
            iss: self.policy.issuer.clone(),
            sub: identity::spiffe_uri(&self.policy.trust_domain, caller.kind, &caller.id),
            client_id: caller.id.as_str().to_owned(),
            aud: audience.to_owned(),
            iat: now,
            nbf: now,
            exp,
            jti: crate::audit::uuid_v7(),
            scope: scope.clone(),
            // RFC 8705: base64url (no padding) of SHA-256 over the certificate's DER.
            cnf: Confirmation { x5t_s256: URL_SAFE_NO_PAD.encode(caller.certificate_sha256) },
        };
        if let Some((recorder, store)) = &self.audit {
            let origin = crate::audit::Origin::request(caller.actor(), None, "");
            let details = serde_json::json!({ "aud": audience, "scope": scope, "exp": exp, "jti": claims.jti });
            if let Some(event) = recorder.event(&origin, crate::audit::kind::TOKEN_ISSUED, caller.id.as_str(), details)
            {
                store.append_audit(&[event]).await?;
            }
        }
        let access_token = self.keys.sign(&claims)?;
        if let Some(metrics) = &self.metrics {
            metrics.tokens_issued.inc();
        }
        Ok(IssuedToken { access_token, expires_in: u64::try_from(exp - now).unwrap_or(0), scope, claims })
    }

    /// A JWT-SVID for `spiffe_id` naming `audiences` (1-10, each 1-256 printable characters), valid for
    /// [`JWT_SVID_LIFETIME`] or until `not_after`, whichever is first. Unlike access tokens it is not bound to a
    /// certificate (the SPIFFE profile has no binding), so it lives minutes, and resource servers that take access
    /// tokens refuse it (no `cnf`).
    pub fn issue_jwt_svid(
        &self,
        spiffe_id: &str,
        audiences: &[String],
        not_after: Option<time::OffsetDateTime>,
    ) -> Result<(String, JwtSvidClaims)> {
        if audiences.is_empty() || audiences.len() > MAX_AUDIENCES {
            return Err(Error::InvalidArgument(format!("a JWT-SVID names 1 to {MAX_AUDIENCES} audiences")));
        }
        for audience in audiences {
            if audience.is_empty() || audience.len() > 256 || audience.chars().any(char::is_control) {
                return Err(Error::InvalidArgument(format!(
                    "invalid audience {:?}: 1 to 256 printable characters",
                    crate::ratelog::sanitize(audience, 100)
                )));
            }
        }
        let now = crate::model::now().unix_timestamp();
        let mut exp = now + JWT_SVID_LIFETIME.as_secs() as i64;
        if let Some(not_after) = not_after {
            exp = exp.min(not_after.unix_timestamp());
        }
        let mut aud = audiences.to_vec();
        aud.sort();
        aud.dedup();
        let claims = JwtSvidClaims {
            sub: spiffe_id.to_owned(),
            aud,
            exp,
            iat: now,
            iss: self.policy.issuer.clone(),
            jti: crate::audit::uuid_v7(),
        };
        let token = self.keys.sign_jwt_svid(&claims)?;
        if let Some(metrics) = &self.metrics {
            metrics.tokens_issued.inc();
        }
        Ok((token, claims))
    }

    /// The requested scopes, each one the caller's type holds (space-separated, sorted, deduplicated).
    fn scope(&self, caller: &Caller, scopes: &[String]) -> Result<String> {
        if scopes.is_empty() {
            return Ok(caller.permissions.iter().cloned().collect::<Vec<_>>().join(" "));
        }
        let mut granted = BTreeSet::new();
        for scope in scopes.iter().flat_map(|s| s.split_whitespace()) {
            if !caller.has_permission(scope) {
                return Err(Error::PermissionDenied(format!(
                    "scope {:?} is not a permission of {} principals",
                    crate::ratelog::sanitize(scope, 100),
                    caller.kind
                )));
            }
            granted.insert(scope.to_owned());
        }
        if granted.is_empty() {
            return Err(Error::InvalidArgument("scope is empty".into()));
        }
        Ok(granted.into_iter().collect::<Vec<_>>().join(" "))
    }
}
