//! A logged-in session and what it found on the token, the library it came from, and the rules that let a session
//! be thrown away and made again: which errors mean the session is gone, the process-wide turn for PKCS#11 calls
//! (waited for with a bound, so a hung call cannot stall the process's other calls forever), and the library's
//! generation (bumped when the library is started again: sessions of an older generation are forgotten, never
//! closed, since their handle numbers may now name someone else's session).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use super::objects::{
    derive_label, find_keys, find_secrets, generate, generate_secret, id_of, oldest, public_point, read_pin,
};
use crate::error::{Error, Result};
use crate::pki::signer::uri::Pkcs11Uri;

/// How long a PKCS#11 call waits for another call of this process to finish. A call that has been running longer
/// than this is taken as hung: later calls fail at once instead of queueing behind it.
const TURN_WAIT: Duration = Duration::from_secs(10);

/// A logged-in session, the key pair's private half and the derivation secret found through it.
pub(super) struct Connection {
    pub session: Session,
    pub key: ObjectHandle,
    /// The derivation secret, or the label it would have when the token has none (opened without `create`).
    pub derive: std::result::Result<ObjectHandle, String>,
    /// The uncompressed public point of `key`.
    pub point: Vec<u8>,
    /// The library generation this session belongs to.
    generation: u64,
}

/// Why a connection could not be made, and whether starting the library again might help (the token or the library
/// is gone; not a refused PIN or a missing key).
pub(super) struct OpenFailure {
    pub error: Error,
    pub reset_may_help: bool,
}

impl Connection {
    /// Finds the token by label, opens a session, logs in, finds the key (and with `create` makes it, and its
    /// derivation secret). The caller holds the process's [`Turn`] (and, creating, the host lock).
    pub fn open(module: &Path, uri: &Pkcs11Uri, name: &str, create: bool) -> std::result::Result<Self, OpenFailure> {
        let gone = |error: Error| OpenFailure { error, reset_may_help: true };
        let refused = |error: Error| OpenFailure { error, reset_may_help: false };
        let fail = |what: &str, e: cryptoki::error::Error| gone(Error::Unavailable(format!("{name}: {what}: {e}")));
        let context = context_for(module).map_err(gone)?;
        let generation = GENERATION.load(Ordering::SeqCst);
        let slot = context
            .get_slots_with_token()
            .map_err(|e| fail("list slots", e))?
            .into_iter()
            .find(|slot| context.get_token_info(*slot).is_ok_and(|t| t.label().trim_end() == uri.token))
            .ok_or_else(|| gone(Error::FailedPrecondition(format!("no PKCS#11 token labelled {:?}", uri.token))))?;
        let session = context.open_rw_session(slot).map_err(|e| fail("open session", e))?;
        let pin = AuthPin::from(read_pin(&uri.pin).map_err(refused)?);
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) if lost(&e) => return Err(fail("login", e)),
            Err(e) => return Err(refused(Error::FailedPrecondition(format!("{name}: login refused: {e}")))),
        }
        let label = uri.object.as_bytes().to_vec();
        let found = find_keys(&session, ObjectClass::PRIVATE_KEY, &label).map_err(|e| fail("find key", e))?;
        let found = match &uri.id {
            None => found,
            Some(wanted) => {
                let mut matching = Vec::new();
                for key in found {
                    if id_of(&session, key).map_err(|e| fail("read key id", e))? == *wanted {
                        matching.push(key);
                    }
                }
                matching
            }
        };
        let key = match found {
            keys if !keys.is_empty() => oldest(&session, keys).map_err(|e| fail("read key id", e))?,
            _ if create => generate(&session, &label, uri.id.clone()).map_err(|e| fail("generate key pair", e))?,
            _ => {
                return Err(refused(Error::FailedPrecondition(format!(
                    "{name}: no private key with that label (bootstrap creates it)"
                ))));
            }
        };
        let point = public_point(&session, key, &label).map_err(|e| fail("read public key", e))?.map_err(refused)?;
        let derive_label = derive_label(&uri.object);
        let secrets = find_secrets(&session, &derive_label).map_err(|e| fail("find derivation key", e))?;
        let derive = match secrets {
            keys if !keys.is_empty() => Ok(oldest(&session, keys).map_err(|e| fail("read key id", e))?),
            _ if create => {
                Ok(generate_secret(&session, &derive_label).map_err(|e| fail("generate derivation key", e))?)
            }
            _ => {
                tracing::warn!(key = %name, "no derivation key on the token: intermediates' keys cannot be re-derived");
                Err(String::from_utf8_lossy(&derive_label).into_owned())
            }
        };
        Ok(Self { session, key, derive, point, generation })
    }

    /// Whether the library was started again since this session was opened (its handle means nothing now).
    pub fn is_stale(&self) -> bool {
        self.generation != GENERATION.load(Ordering::SeqCst)
    }

    /// Lets the session go after `error` (`None`: the key is being dropped). A session the library no longer knows
    /// (its library restarted, the session or the token gone) is forgotten: closing it could close a newer session
    /// that reuses its handle number. Any other is closed.
    pub fn release(self, error: Option<&cryptoki::error::Error>) {
        let gone = self.is_stale()
            || error.is_some_and(|e| {
                matches!(
                    e,
                    cryptoki::error::Error::Pkcs11(
                        RvError::SessionHandleInvalid
                            | RvError::SessionClosed
                            | RvError::CryptokiNotInitialized
                            | RvError::DeviceRemoved
                            | RvError::TokenNotPresent,
                        _
                    )
                )
            });
        if gone {
            std::mem::forget(self.session);
        }
    }
}

/// Whether `error` means the session (or its login, the token, the library) is gone, so that logging in again may
/// succeed where retrying the call could not.
pub(super) fn lost(error: &cryptoki::error::Error) -> bool {
    matches!(
        error,
        cryptoki::error::Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::CryptokiNotInitialized
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::SlotIdInvalid
                | RvError::GeneralError,
            _
        )
    )
}

/// Incremented every time this process starts a library again, or finds one finalized or a session gone under it.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Marks every open session of this process as stale, after `error` showed the library or the token restarted.
pub(super) fn note_loss(error: &cryptoki::error::Error) {
    if matches!(
        error,
        cryptoki::error::Error::Pkcs11(
            RvError::SessionHandleInvalid | RvError::CryptokiNotInitialized | RvError::DeviceRemoved,
            _
        )
    ) {
        GENERATION.fetch_add(1, Ordering::SeqCst);
    }
}

/// One loaded library per module path for the whole process. Each use makes sure it is initialized (C_Initialize
/// answers CKR_CRYPTOKI_ALREADY_INITIALIZED when it is), so a library finalized under us is started again.
fn context_for(module: &Path) -> Result<Pkcs11> {
    let mut contexts = CONTEXTS.lock().unwrap_or_else(|p| p.into_inner());
    let context = match contexts.iter().find(|(path, _)| path == module) {
        Some((_, context)) => context.clone(),
        None => {
            let context = Pkcs11::new(module).map_err(|e| {
                Error::FailedPrecondition(format!("cannot load the PKCS#11 module {}: {e}", module.display()))
            })?;
            contexts.push((module.to_owned(), context.clone()));
            context
        }
    };
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {
            // Started (again): sessions opened before mean nothing now.
            GENERATION.fetch_add(1, Ordering::SeqCst);
        }
        Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(Error::Unavailable(format!("PKCS#11 module {}: initialize: {e}", module.display()))),
    }
    Ok(context)
}

static CONTEXTS: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

/// Finalizes `module`'s library so the next use initializes it again: some modules see a token that came back (a
/// restarted HSM, a token directory restored) only then. Every session of this process on that module becomes
/// stale; each key logs in again on its next call.
pub(super) fn restart_library(module: &Path) {
    let context = CONTEXTS.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(p, _)| p == module).cloned();
    if let Some((_, context)) = context {
        GENERATION.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = context.finalize() {
            tracing::debug!(module = %module.display(), error = %e, "PKCS#11 finalize");
        }
    }
}

/// The process's turn to call PKCS#11, held while the call runs: calls are rare (opening a key, a few signatures a
/// day, a periodic self-test) and modules differ in how much concurrency across sessions they really support.
pub(super) struct Turn(());

struct Turns {
    /// When the call holding the turn started.
    taken: Mutex<Option<Instant>>,
    free: Condvar,
}

static TURNS: Turns = Turns { taken: Mutex::new(None), free: Condvar::new() };

impl Turn {
    /// Waits up to [`TURN_WAIT`] for the turn; a call that has held it longer than that is taken as hung, and the
    /// wait ends at once with UNAVAILABLE. (A hung call cannot be cancelled: its thread stays blocked in the module.)
    pub fn take(name: &str) -> Result<Self> {
        let mut taken = TURNS.taken.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + TURN_WAIT;
        while let Some(since) = *taken {
            let now = Instant::now();
            if now >= deadline || since.elapsed() >= TURN_WAIT {
                return Err(Error::Unavailable(format!(
                    "{name}: a PKCS#11 call of this process has not returned for {} s (the token or its library hangs)",
                    since.elapsed().as_secs()
                )));
            }
            taken = TURNS.free.wait_timeout(taken, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        *taken = Some(Instant::now());
        Ok(Self(()))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *TURNS.taken.lock().unwrap_or_else(|p| p.into_inner()) = None;
        TURNS.free.notify_one();
    }
}
