//! The resource-server side of certificate-bound tokens (RFC 8705): a bearer token presented over mTLS is accepted
//! only if principald signed it (a key from the store's JWKS), it is for this service (`aud`), from the configured
//! issuer, within its validity (30 s leeway), and its `cnf.x5t#S256` is the thumbprint of the certificate the
//! connection presented. The certificate itself is authenticated as always, so revoking it or suspending its principal
//! kills its tokens within the same bound. Verified tokens are cached by their text until they expire.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use quick_cache::sync::Cache;

use crate::error::{Error, Refusal, Result};
use crate::model::{TokenKeyRecord, now};
use crate::store::Store;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on exp and nbf.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Most verified tokens remembered.
const CACHE_ENTRIES: usize = 100_000;
/// Unknown key ids re-read the store at most this often.
const KEY_REFRESH: Duration = Duration::from_secs(1);
/// Known keys are re-read at least this often, so a key withdrawn (by revoking its replica's intermediate) or expired
/// stops verifying here, cached verdicts included, within this bound.
const KEYS_MAX_AGE: Duration = Duration::from_secs(30);

/// What a verified token grants.
#[derive(Clone, Debug)]
struct Verified {
    /// The bound certificate's SHA-256 (decoded from cnf.x5t#S256).
    thumbprint: Vec<u8>,
    exp: i64,
    scopes: Arc<BTreeSet<String>>,
}

/// When the keys were last read from the store, and the keys by id.
type KeySet = (Option<Instant>, HashMap<String, Arc<DecodingKey>>);

/// Verifies bearer tokens for one audience.
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    store: Arc<dyn Store>,
    keys: Mutex<KeySet>,
    verified: Cache<String, Verified>,
}

impl TokenVerifier {
    /// Tokens from `issuer` (principald's `--token-issuer`) for `audience`, with keys read from `store` (the one
    /// principald uses; its replicas announce their token keys there).
    pub fn new(issuer: &str, audience: &str, store: Arc<dyn Store>) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audience: audience.to_owned(),
            store,
            keys: Mutex::new((None, HashMap::new())),
            verified: Cache::new(CACHE_ENTRIES),
        }
    }

    /// The scopes `token` grants to the holder of the certificate whose SHA-256 is `presented`. `Unauthenticated`
    /// with the reason otherwise.
    pub async fn verify(&self, token: &str, presented: &[u8; 32]) -> Result<Arc<BTreeSet<String>>> {
        let now = crate::model::now().unix_timestamp();
        let stale = self.keys.lock().unwrap_or_else(|p| p.into_inner()).0.is_none_or(|r| r.elapsed() >= KEYS_MAX_AGE);
        if stale {
            self.reload().await?;
        }
        if let Some(v) = self.verified.get(token) {
            return check_cached(&v, presented, now);
        }
        let refuse = |why: &str| Error::Refused(Refusal::Token(why.to_owned()));
        if token.len() > 8 * 1024 {
            return Err(refuse("too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| refuse("not a JWT"))?;
        if header.alg != Algorithm::ES256 {
            return Err(refuse("not signed with ES256"));
        }
        let kid = header.kid.ok_or_else(|| refuse("no key id"))?;
        let key = self.key(&kid).await?.ok_or_else(|| refuse("signed by a key principald does not publish"))?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| refuse(&format!("{:?}", e.kind()).to_lowercase()))?
            .claims;
        let verified = Verified {
            thumbprint: URL_SAFE_NO_PAD.decode(&claims.cnf.x5t_s256).map_err(|_| refuse("malformed cnf"))?,
            exp: claims.exp,
            scopes: Arc::new(claims.scope.split_whitespace().map(str::to_owned).collect()),
        };
        self.verified.insert(token.to_owned(), verified.clone());
        check_cached(&verified, presented, now)
    }

    /// The decoding key for `kid`, re-reading the store (at most once a second) when it is unknown.
    async fn key(&self, kid: &str) -> Result<Option<Arc<DecodingKey>>> {
        let refresh = {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(key) = keys.1.get(kid) {
                return Ok(Some(key.clone()));
            }
            keys.0.is_none_or(|read| read.elapsed() >= KEY_REFRESH)
        };
        if !refresh {
            return Ok(None);
        }
        self.reload().await?;
        Ok(self.keys.lock().unwrap_or_else(|p| p.into_inner()).1.get(kid).cloned())
    }

    /// Re-reads the published keys. The read time is set first, so concurrent callers do not all read; when a key
    /// disappeared, cached verdicts are dropped (some may rest on it).
    async fn reload(&self) -> Result<()> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(Instant::now());
        let mut fresh = HashMap::new();
        for record in live_token_keys(self.store.as_ref()).await? {
            let Ok(jwk) = serde_json::from_str::<jsonwebtoken::jwk::Jwk>(&record.public_jwk) else { continue };
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                fresh.insert(record.kid, Arc::new(key));
            }
        }
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.1.keys().any(|kid| !fresh.contains_key(kid)) {
            self.verified.clear();
        }
        keys.1 = fresh;
        Ok(())
    }
}

fn check_cached(v: &Verified, presented: &[u8; 32], now: i64) -> Result<Arc<BTreeSet<String>>> {
    if now > v.exp + LEEWAY.as_secs() as i64 {
        return Err(Error::Refused(Refusal::Token("expired".into())));
    }
    if v.thumbprint.as_slice() != presented.as_slice() {
        return Err(Error::Refused(Refusal::Token("it is bound to another certificate than this connection's".into())));
    }
    Ok(v.scopes.clone())
}

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub client_id: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub scope: String,
    pub cnf: Confirmation,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// Every announced key that may still have live tokens and was not withdrawn by the revocation of its replica's
/// intermediate: what the JWKS publishes and verifiers accept.
pub async fn live_token_keys(store: &dyn Store) -> Result<Vec<TokenKeyRecord>> {
    let (keys, intermediates) = tokio::try_join!(store.list_token_keys(now()), store.list_intermediates())?;
    Ok(keys.into_iter().filter(|k| !k.withdrawn_by(&intermediates)).collect())
}
