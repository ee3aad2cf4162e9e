//! Token signing keys: each replica signs with a P-256 key of its own that never leaves its memory, announced in the
//! store (public half, as a JWK) before it signs anything and replaced every `rotation`. The JWKS every replica
//! publishes is every announced key that may still have live tokens, so a token verifies wherever it is checked.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::audit::{Origin, Recorder, kind};
use crate::error::{Error, Result};
use crate::model::{TokenKeyRecord, now};
use crate::store::Store;

/// How long the JWKS read from the store is reused.
const JWKS_REFRESH: Duration = Duration::from_secs(30);
/// How often the keeper checks whether the key is due.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// The key a replica signs with now, parsed once (ES256 signing is on the path of every token).
struct ActiveKey {
    pair: EcdsaKeyPair,
    /// base64url of the JWS header `{"alg":"ES256","typ":"at+jwt","kid":...}`.
    header: String,
    /// The same with `typ` JWT, for JWT-SVIDs (the SPIFFE JWT-SVID profile allows only JWT or JOSE).
    svid_header: String,
    created_at: OffsetDateTime,
    rotate_at: OffsetDateTime,
}

/// This replica's signing key and the published key set.
pub struct TokenKeys {
    store: Arc<dyn Store>,
    audit: Recorder,
    replica: String,
    /// How long one key signs.
    rotation: time::Duration,
    /// The longest a token may live: a key stays published this long after it stops signing.
    max_token: time::Duration,
    active: RwLock<Arc<ActiveKey>>,
    jwks: Mutex<Option<(Instant, Arc<serde_json::Value>)>>,
}

impl TokenKeys {
    /// Generates and announces the first key.
    pub async fn start(
        store: Arc<dyn Store>,
        audit: Recorder,
        replica: &str,
        rotation: Duration,
        max_token: Duration,
    ) -> Result<Arc<Self>> {
        let rotation = time::Duration::try_from(rotation).map_err(|e| Error::internal("rotation", e))?;
        let max_token = time::Duration::try_from(max_token).map_err(|e| Error::internal("token lifetime", e))?;
        let first = announce(&store, &audit, replica, rotation, max_token).await?;
        Ok(Arc::new(Self {
            store,
            audit,
            replica: replica.to_owned(),
            rotation,
            max_token,
            active: RwLock::new(Arc::new(first)),
            jwks: Mutex::new(None),
        }))
    }

    /// Signs `claims` as a JWT (JWS compact serialisation, ES256 with the fixed-size r||s signature RFC 7518 asks
    /// for, `typ` at+jwt, `kid` of the active key).
    pub fn sign(&self, claims: &impl serde::Serialize) -> Result<String> {
        self.sign_with(claims, |key| &key.header)
    }

    /// Signs a JWT-SVID's claims: as [`sign`](Self::sign), with `typ` JWT.
    pub fn sign_jwt_svid(&self, claims: &impl serde::Serialize) -> Result<String> {
        self.sign_with(claims, |key| &key.svid_header)
    }

    fn sign_with(&self, claims: &impl serde::Serialize, header: fn(&ActiveKey) -> &String) -> Result<String> {
        let key = self.active.read().unwrap_or_else(|p| p.into_inner()).clone();
        // A key stays published until `rotate_at + max_token` (+ a minute): past its rotation time it would sign tokens
        // that outlive its presence in the JWKS. No replacement could be announced (the store is unreachable).
        if now() > key.rotate_at + time::Duration::MINUTE.min(self.rotation) {
            return Err(Error::Unavailable(
                "the token signing key is past its rotation and no new one could be announced".into(),
            ));
        }
        let payload = serde_json::to_vec(claims).map_err(|e| Error::internal("encode claims", e))?;
        let header = header(&key);
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = key
            .pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), token.as_bytes())
            .map_err(|e| Error::internal("sign token", e))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// The JWKS: every unexpired announced key of every replica (read from the store at most every 30 s).
    pub async fn jwks(&self) -> Result<Arc<serde_json::Value>> {
        if let Some((read, jwks)) = self.jwks.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && read.elapsed() < JWKS_REFRESH
        {
            return Ok(jwks.clone());
        }
        let mut keys = Vec::new();
        for record in crate::auth::bearer::live_token_keys(self.store.as_ref()).await? {
            match serde_json::from_str::<serde_json::Value>(&record.public_jwk) {
                Ok(jwk) => keys.push(jwk),
                Err(error) => tracing::warn!(kid = %record.kid, %error, "ignoring an unreadable token key"),
            }
        }
        keys.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        let jwks = Arc::new(serde_json::json!({ "keys": keys }));
        *self.jwks.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), jwks.clone()));
        Ok(jwks)
    }

    /// Replaces the key when its signing window is over, or when `check_withdrawn` finds it withdrawn by the
    /// revocation of this replica's intermediate (the new one is announced first).
    pub async fn rotate_if_due(&self, check_withdrawn: bool) -> Result<bool> {
        let active = self.active.read().unwrap_or_else(|p| p.into_inner()).clone();
        let withdrawn = check_withdrawn && {
            let record = TokenKeyRecord {
                kid: String::new(),
                replica: self.replica.clone(),
                public_jwk: String::new(),
                created_at: active.created_at,
                expires_at: active.rotate_at,
            };
            record.withdrawn_by(&self.store.list_intermediates().await?)
        };
        if active.rotate_at > now() && !withdrawn {
            return Ok(false);
        }
        if withdrawn {
            tracing::warn!("this replica's intermediate was revoked: replacing its token signing key");
        }
        let next = announce(&self.store, &self.audit, &self.replica, self.rotation, self.max_token).await?;
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        *self.jwks.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(true)
    }

    /// Keeps the key fresh until `shutdown`; once a minute it also checks that no intermediate revocation withdrew it.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        for round in 1u64.. {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            if let Err(error) = self.rotate_if_due(round % 6 == 0).await {
                tracing::warn!(%error, "cannot replace the token signing key; the current one stays in use");
            }
        }
    }
}

/// A new key, recorded in the store (with its audit event) before it is used.
async fn announce(
    store: &Arc<dyn Store>,
    audit: &Recorder,
    replica: &str,
    rotation: time::Duration,
    max_token: time::Duration,
) -> Result<ActiveKey> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|e| Error::internal("generate token key", e))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|e| Error::internal("load token key", e))?;
    let point = pair.public_key().as_ref();
    let (x, y) = (&point[1..33], &point[33..65]);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, point);
    let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
    let jwk = serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
        "kid": kid,
        "use": "sig",
        "alg": "ES256",
    });
    let created_at = now();
    let rotate_at = created_at + rotation;
    let record = TokenKeyRecord {
        kid: kid.clone(),
        replica: replica.to_owned(),
        public_jwk: jwk.to_string(),
        created_at,
        expires_at: rotate_at + max_token + time::Duration::MINUTE,
    };
    let details = serde_json::json!({ "replica": replica, "expires_at": record.expires_at.unix_timestamp() });
    let event = audit.event(&Origin::system("token-key-rotation"), kind::TOKEN_KEY_CREATED, &kid, details);
    store.record_token_key(&record, event.as_ref()).await?;
    tracing::info!(kid = %kid, %rotate_at, "token signing key announced");
    let header =
        |typ: &str| URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": "ES256", "typ": typ, "kid": kid }).to_string());
    Ok(ActiveKey { pair, header: header("at+jwt"), svid_header: header("JWT"), created_at, rotate_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_past_its_rotation_signs_nothing_when_no_replacement_came() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::StoreConfig::sqlite_in(dir.path()).open().await.unwrap();
        let keys =
            TokenKeys::start(store, Recorder::new("r1", true), "r1", Duration::from_secs(1), Duration::from_secs(60))
                .await
                .unwrap();
        keys.sign(&serde_json::json!({ "sub": "x" })).expect("a fresh key signs");
        // No keeper runs: the key is not replaced.
        tokio::time::sleep(Duration::from_millis(3200)).await; // rotation 1 s + grace 1 s, in whole seconds
        let refused = keys.sign(&serde_json::json!({ "sub": "x" })).unwrap_err();
        assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");
    }
}
