//! A root key on a PKCS#11 token (an HSM, or SoftHSM2 in tests). The private key is created non-extractable and
//! never leaves the token: principald hashes locally and asks the token for a raw ECDSA signature (CKM_ECDSA), which
//! it encodes as DER. The token is found by label (slot numbers move); one logged-in session, used by one signing
//! thread at a time (a PKCS#11 session is not thread-safe).
//!
//! Beside the key pair lives its derivation secret: a generic secret key (32 bytes, sign-only, sensitive,
//! non-extractable) labelled `OBJECT-derive`; `derive_secret` is a CKM_SHA256_HMAC signature with it.
//!
//! The session outlives nothing it depends on: when a call finds it gone (the token or HSM restarted, the library
//! was finalized, the login dropped: [`session::lost`]), the key lets it go, finds the token by label again, logs in,
//! finds its key again (it must be the same public key) and retries the call once. Logging in again is tried at most
//! once a second per key: while the token is away, calls fail at once with UNAVAILABLE and the reason of the last
//! attempt. When the token cannot be found or reached, the library is finalized and initialized again before the
//! second try (some modules see a restarted token only then).

mod objects;
mod session;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use session::{Connection, Turn};

use super::Signer;
use super::uri::Pkcs11Uri;
use crate::error::{Error, Result};

/// Where Debian's softhsm2 package puts its module, used when neither the URI nor `PRINCIPALD_PKCS11_MODULE` names one.
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// At most one attempt to log in again per key in this interval: a missing HSM costs one attempt a second, not a
/// loop, and calls in between fail at once.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

pub struct Pkcs11Key {
    module: PathBuf,
    uri: Pkcs11Uri,
    name: String,
    spki: Vec<u8>,
    point: Vec<u8>,
    state: Mutex<State>,
}

struct State {
    /// `None` after the session was found gone and logging in again failed (or while dropping).
    connection: Option<Connection>,
    /// When the last attempt to log in again started.
    last_attempt: Option<Instant>,
    /// Why it failed, for the errors answered until the next attempt.
    last_failure: Option<String>,
}

impl Pkcs11Key {
    pub fn open(uri: &Pkcs11Uri, create: bool) -> Result<Self> {
        let name = format!("pkcs11:token={};object={}", uri.token, uri.object);
        let module = uri
            .module_path
            .clone()
            .or_else(|| std::env::var_os("PRINCIPALD_PKCS11_MODULE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE));
        let _turn = Turn::take(&name)?;
        // Looking for the key and creating it must be one step for every process of this host, or two bootstraps
        // starting together could each create a key with the label.
        let _creating = if create { Some(objects::host_lock(&module, uri)?) } else { None };
        let connection = Connection::open(&module, uri, &name, create).map_err(|failure| failure.error)?;
        let spki = super::spki_of_point(&connection.point);
        super::point_of_spki(&spki)?;
        let point = connection.point.clone();
        let state = State { connection: Some(connection), last_attempt: None, last_failure: None };
        Ok(Self { module, uri: uri.clone(), name, spki, point, state: Mutex::new(state) })
    }

    /// Runs `call` on the session in the process's turn. When the session turns out gone, logs in again (see the
    /// module's documentation) and runs it once more.
    fn call<T>(&self, what: &str, call: impl Fn(&Connection) -> cryptoki::error::Result<T>) -> Result<T> {
        let _turn = Turn::take(&self.name)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.connection.as_ref().is_some_and(Connection::is_stale) {
            state.connection.take().expect("checked").release(None);
        }
        let mut fresh = false;
        if state.connection.is_none() {
            self.reconnect(&mut state)?;
            fresh = true;
        }
        loop {
            let error = match call(state.connection.as_ref().expect("connected above")) {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !session::lost(&error) {
                return Err(Error::Unavailable(format!("{}: {what}: {error}", self.name)));
            }
            session::note_loss(&error);
            state.connection.take().expect("connected above").release(Some(&error));
            if fresh {
                return Err(Error::Unavailable(format!("{}: {what} right after logging in again: {error}", self.name)));
            }
            tracing::warn!(key = %self.name, %error, "the PKCS#11 session is gone (token or library restarted?): logging in again");
            self.reconnect(&mut state)?;
            fresh = true;
        }
    }

    /// Opens a new session and finds the key again, unless the last attempt was less than [`RECONNECT_INTERVAL`]
    /// ago (then fails at once with that attempt's reason).
    fn reconnect(&self, state: &mut State) -> Result<()> {
        if let Some(at) = state.last_attempt
            && at.elapsed() < RECONNECT_INTERVAL
        {
            return Err(Error::Unavailable(format!(
                "{}: the token is unavailable ({}); next attempt in {} ms",
                self.name,
                state.last_failure.as_deref().unwrap_or("the session was lost"),
                (RECONNECT_INTERVAL - at.elapsed()).as_millis()
            )));
        }
        state.last_attempt = Some(Instant::now());
        let opened = match Connection::open(&self.module, &self.uri, &self.name, false) {
            Err(failure) if failure.reset_may_help => {
                tracing::info!(key = %self.name, error = %failure.error, "starting the PKCS#11 library again");
                session::restart_library(&self.module);
                Connection::open(&self.module, &self.uri, &self.name, false)
            }
            other => other,
        };
        let connection = opened.map_err(|failure| failure.error).and_then(|connection| {
            if connection.point == self.point {
                return Ok(connection);
            }
            connection.release(None);
            Err(Error::FailedPrecondition(format!(
                "{}: the token's key with that label is no longer the CA key (another public key)",
                self.name
            )))
        });
        match connection {
            Ok(connection) => {
                tracing::info!(key = %self.name, "logged in to the PKCS#11 token again");
                state.connection = Some(connection);
                state.last_failure = None;
                Ok(())
            }
            Err(error) => {
                let reason = error.to_string();
                state.last_failure = Some(reason.clone());
                Err(Error::Unavailable(format!("{}: cannot log in to the token again: {reason}", self.name)))
            }
        }
    }
}

impl Signer for Pkcs11Key {
    fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn public_point(&self) -> &[u8] {
        &self.point
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let raw = self.call("sign", |c| c.session.sign(&Mechanism::Ecdsa, c.key, digest.as_ref()))?;
        super::der_signature(&raw)
    }

    fn derive_secret(&self, context: &[u8]) -> Result<[u8; 32]> {
        super::derive::check_context(context)?;
        let mac = self.call("HMAC", |c| match &c.derive {
            Ok(handle) => c.session.sign(&Mechanism::Sha256Hmac, *handle, context).map(Ok),
            Err(label) => Ok(Err(label.clone())),
        })?;
        let mut mac = mac.map_err(|label| {
            Error::FailedPrecondition(format!(
                "the CA key {} has no derivation key: the token holds no secret key labelled {label:?}; run \
                 `principald bootstrap` with the same key URI (it creates it), then restart principald",
                self.name
            ))
        })?;
        let secret = <[u8; 32]>::try_from(mac.as_slice())
            .map_err(|_| Error::internal("PKCS#11 HMAC", format!("{} bytes, expected 32", mac.len())));
        super::derive::wipe(&mut mac);
        secret
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

impl Drop for Pkcs11Key {
    fn drop(&mut self) {
        let connection = self.state.get_mut().unwrap_or_else(|p| p.into_inner()).connection.take();
        let Some(connection) = connection else { return };
        match Turn::take(&self.name) {
            Ok(_turn) => connection.release(None),
            // A hung call holds the turn: closing the session now could race it. Leave it to the process's exit.
            Err(_) => std::mem::forget(connection),
        }
    }
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Key").field("key", &self.name).finish_non_exhaustive()
    }
}
