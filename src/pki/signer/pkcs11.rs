//! A root key on a PKCS#11 token (an HSM, or SoftHSM2 in tests). The private key is created non-extractable and
//! never leaves the token: principald hashes locally and asks the token for a raw ECDSA signature (CKM_ECDSA), which
//! it encodes as DER. The token is found by label (slot numbers move); one logged-in session, used by one signing
//! thread at a time (a PKCS#11 session is not thread-safe).
//!
//! Beside the key pair lives its derivation secret: a generic secret key (32 bytes, sign-only, sensitive,
//! non-extractable) labelled `OBJECT-derive`; `derive_secret` is a CKM_SHA256_HMAC signature with it.

use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use super::Signer;
use super::uri::{PinSource, Pkcs11Uri};
use crate::error::{Error, Result};

/// Where Debian's softhsm2 package puts its module, used when neither the URI nor `PRINCIPALD_PKCS11_MODULE` names one.
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// How long a new key's creator waits for a concurrent creator's key before choosing between them.
const GENERATION_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);
/// DER OBJECT IDENTIFIER prime256v1, the CKA_EC_PARAMS of a P-256 key.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

pub struct TokenKey {
    /// `None` only while dropping (the session closes under the process-wide lock).
    session: Mutex<Option<Session>>,
    key: ObjectHandle,
    /// The derivation secret, or the label it would have when the token has none (opened without `create`).
    derive: std::result::Result<ObjectHandle, String>,
    _context: Pkcs11,
    name: String,
    spki: Vec<u8>,
    point: Vec<u8>,
}

impl TokenKey {
    pub fn open(uri: &Pkcs11Uri, create: bool) -> Result<Self> {
        let name = format!("pkcs11:token={};object={}", uri.token, uri.object);
        let fail = |what: &str, e: cryptoki::error::Error| Error::Unavailable(format!("{name}: {what}: {e}"));
        let module = uri
            .module_path
            .clone()
            .or_else(|| std::env::var_os("PRINCIPALD_PKCS11_MODULE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE));
        let _one_at_a_time = TOKEN_CALLS.lock().unwrap_or_else(|p| p.into_inner());
        // Looking for the key and creating it must be one step for every process of this host, or two bootstraps
        // starting together could each create a key with the label.
        let _creating = if create { Some(host_lock(&module, uri)?) } else { None };
        let context = context_for(&module)?;
        let slot = context
            .get_slots_with_token()
            .map_err(|e| fail("list slots", e))?
            .into_iter()
            .find(|slot| context.get_token_info(*slot).is_ok_and(|t| t.label().trim_end() == uri.token))
            .ok_or_else(|| Error::FailedPrecondition(format!("no PKCS#11 token labelled {:?}", uri.token)))?;
        let session = context.open_rw_session(slot).map_err(|e| fail("open session", e))?;
        let pin = AuthPin::from(read_pin(&uri.pin)?);
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(Error::FailedPrecondition(format!("{name}: login refused: {e}"))),
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
                return Err(Error::FailedPrecondition(format!(
                    "{name}: no private key with that label (bootstrap creates it)"
                )));
            }
        };
        let point = public_point(&session, key, &label).map_err(|e| fail("read public key", e))??;
        let spki = super::spki_of_point(&point);
        super::point_of_spki(&spki)?;
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
        Ok(Self { session: Mutex::new(Some(session)), key, derive, _context: context, name, spki, point })
    }
}

/// PKCS#11 calls of this process, one at a time: they are rare (opening a key, a few signatures a day), and modules
/// differ in how much concurrency across sessions they really support.
static TOKEN_CALLS: Mutex<()> = Mutex::new(());

/// One loaded, initialized library per module path for the whole process (C_Initialize once; never finalized, so
/// keys opened earlier stay usable).
fn context_for(module: &std::path::Path) -> Result<Pkcs11> {
    static CONTEXTS: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let mut contexts = CONTEXTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, context)) = contexts.iter().find(|(path, _)| path == module) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(module)
        .map_err(|e| Error::FailedPrecondition(format!("cannot load the PKCS#11 module {}: {e}", module.display())))?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(Error::Unavailable(format!("PKCS#11 module {}: initialize: {e}", module.display()))),
    }
    contexts.push((module.to_owned(), context.clone()));
    Ok(context)
}

/// An exclusive lock, for this host, on creating `uri`'s key (released when the file is dropped).
fn host_lock(module: &std::path::Path, uri: &Pkcs11Uri) -> Result<std::fs::File> {
    let tag = crate::model::sha256_hex(format!("{}\n{}\n{}", module.display(), uri.token, uri.object).as_bytes());
    let path = std::env::temp_dir().join(format!("principald-pkcs11-{}.lock", &tag[..16]));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    file.lock().map_err(|e| Error::Unavailable(format!("cannot lock {}: {e}", path.display())))?;
    Ok(file)
}

fn read_pin(source: &PinSource) -> Result<String> {
    let pin = match source {
        PinSource::Value(v) => v.clone(),
        PinSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                Error::FailedPrecondition(format!("cannot read the PKCS#11 PIN file {}: {e}", path.display()))
            })?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        PinSource::Env => std::env::var("PRINCIPALD_PKCS11_PIN").map_err(|_| {
            Error::FailedPrecondition("no PKCS#11 PIN: add pin-source=file:PATH or set PRINCIPALD_PKCS11_PIN".into())
        })?,
    };
    Ok(pin)
}

fn find_keys(session: &Session, class: ObjectClass, label: &[u8]) -> cryptoki::error::Result<Vec<ObjectHandle>> {
    session.find_objects(&[Attribute::Class(class), Attribute::KeyType(KeyType::EC), Attribute::Label(label.to_vec())])
}

fn id_of(session: &Session, key: ObjectHandle) -> cryptoki::error::Result<Vec<u8>> {
    Ok(session
        .get_attributes(key, &[AttributeType::Id])?
        .into_iter()
        .find_map(|a| if let Attribute::Id(id) = a { Some(id) } else { None })
        .unwrap_or_default())
}

/// Of several keys with one label (two bootstraps generated at once), every process picks the same one: the lowest id.
fn oldest(session: &Session, keys: Vec<ObjectHandle>) -> cryptoki::error::Result<ObjectHandle> {
    let mut with_ids = Vec::with_capacity(keys.len());
    for key in keys {
        with_ids.push((id_of(session, key)?, key));
    }
    with_ids.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(with_ids[0].1)
}

/// `found` and `ours`: a search right after creating an object can miss it (SoftHSM2 re-reading its files while
/// another process writes), and the choice must include the key just made.
fn with(mut found: Vec<ObjectHandle>, ours: ObjectHandle) -> Vec<ObjectHandle> {
    if !found.contains(&ours) {
        found.push(ours);
    }
    found
}

/// Generates a token key pair (private part sensitive and non-extractable) with `label` and a random id. If another
/// process generated one with the same label meanwhile, the one with the lowest id is kept and ours is destroyed.
fn generate(session: &Session, label: &[u8], id: Option<Vec<u8>>) -> cryptoki::error::Result<ObjectHandle> {
    let id = id.unwrap_or_else(|| {
        let mut id = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut id).expect("operating system random number generator failed");
        id
    });
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::Label(label.to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.to_vec()),
        Attribute::Id(id.clone()),
    ];
    let (public_handle, private_handle) = session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)?;
    // Processes of this host create one at a time (`host_lock`); one on another host (a network HSM) may be generating
    // too: give its key time to appear, then every process keeps the same one (the lowest id). Only a key's creator
    // destroys it.
    std::thread::sleep(GENERATION_SETTLE);
    let keep = oldest(session, with(find_keys(session, ObjectClass::PRIVATE_KEY, label)?, private_handle))?;
    if keep != private_handle {
        session.destroy_object(private_handle)?;
        session.destroy_object(public_handle)?;
    } else {
        tracing::info!(label = %String::from_utf8_lossy(label), "created the CA root key on the PKCS#11 token");
    }
    Ok(keep)
}

/// The label of the derivation secret of the key labelled `object`.
fn derive_label(object: &str) -> Vec<u8> {
    format!("{object}-derive").into_bytes()
}

fn find_secrets(session: &Session, label: &[u8]) -> cryptoki::error::Result<Vec<ObjectHandle>> {
    session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Label(label.to_vec()),
    ])
}

/// Generates the derivation secret: 32 random bytes made on the token, usable only to sign (HMAC), never readable
/// or wrappable, not usable to derive other keys. Same race rule as [`generate`]: the lowest id is kept.
fn generate_secret(session: &Session, label: &[u8]) -> cryptoki::error::Result<ObjectHandle> {
    let mut id = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut id).expect("operating system random number generator failed");
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        // With CKA_DERIVE, C_DeriveKey could turn it into an extractable key.
        Attribute::Derive(false),
        Attribute::Label(label.to_vec()),
        Attribute::Id(id),
    ];
    let created = session.generate_key(&Mechanism::GenericSecretKeyGen, &template)?;
    std::thread::sleep(GENERATION_SETTLE);
    let keep = oldest(session, with(find_secrets(session, label)?, created))?;
    if keep != created {
        session.destroy_object(created)?;
    } else {
        tracing::info!(label = %String::from_utf8_lossy(label), "created the derivation key on the PKCS#11 token");
    }
    Ok(keep)
}

/// The uncompressed point of the public key that belongs to `private` (same label and id). CKA_EC_POINT holds it
/// wrapped in a DER OCTET STRING.
fn public_point(session: &Session, private: ObjectHandle, label: &[u8]) -> cryptoki::error::Result<Result<Vec<u8>>> {
    let id = id_of(session, private)?;
    let mut template = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Label(label.to_vec()),
    ];
    if !id.is_empty() {
        template.push(Attribute::Id(id));
    }
    let Some(public) = session.find_objects(&template)?.into_iter().next() else {
        return Ok(Err(Error::FailedPrecondition("the PKCS#11 key has no public key object beside it".into())));
    };
    let point = session
        .get_attributes(public, &[AttributeType::EcPoint])?
        .into_iter()
        .find_map(|a| if let Attribute::EcPoint(p) = a { Some(p) } else { None })
        .unwrap_or_default();
    Ok(unwrap_octet_string(&point)
        .ok_or_else(|| Error::FailedPrecondition("the PKCS#11 public key is not an uncompressed P-256 point".into())))
}

/// The contents of a DER OCTET STRING holding a 65-byte uncompressed point, or the point itself if not wrapped.
fn unwrap_octet_string(der: &[u8]) -> Option<Vec<u8>> {
    match der {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 && rest[0] == 0x04 => Some(rest.to_vec()),
        [0x04, rest @ ..] if rest.len() == 64 => Some(der.to_vec()),
        _ => None,
    }
}

impl Signer for TokenKey {
    fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn public_point(&self) -> &[u8] {
        &self.point
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let raw = {
            let _one_at_a_time = TOKEN_CALLS.lock().unwrap_or_else(|p| p.into_inner());
            let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let session = session.as_ref().ok_or_else(|| Error::internal("PKCS#11", "session closed"))?;
            session
                .sign(&Mechanism::Ecdsa, self.key, digest.as_ref())
                .map_err(|e| Error::Unavailable(format!("{}: sign: {e}", self.name)))?
        };
        super::der_signature(&raw)
    }

    fn derive_secret(&self, context: &[u8]) -> Result<[u8; 32]> {
        super::derive::check_context(context)?;
        let derive = match &self.derive {
            Ok(handle) => *handle,
            Err(label) => {
                return Err(Error::FailedPrecondition(format!(
                    "the CA key {} has no derivation key: the token holds no secret key labelled {label:?}; run \
                     `principald bootstrap` with the same key URI (it creates it), then restart principald",
                    self.name
                )));
            }
        };
        let mut mac = {
            let _one_at_a_time = TOKEN_CALLS.lock().unwrap_or_else(|p| p.into_inner());
            let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let session = session.as_ref().ok_or_else(|| Error::internal("PKCS#11", "session closed"))?;
            session
                .sign(&Mechanism::Sha256Hmac, derive, context)
                .map_err(|e| Error::Unavailable(format!("{}: HMAC: {e}", self.name)))?
        };
        let secret = <[u8; 32]>::try_from(mac.as_slice())
            .map_err(|_| Error::internal("PKCS#11 HMAC", format!("{} bytes, expected 32", mac.len())));
        super::derive::wipe(&mut mac);
        secret
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

impl Drop for TokenKey {
    fn drop(&mut self) {
        let _one_at_a_time = TOKEN_CALLS.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.session.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("key", &self.name).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ec_point_is_unwrapped_from_its_octet_string() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend(&point);
        assert_eq!(super::unwrap_octet_string(&wrapped), Some(point.clone()));
        assert_eq!(super::unwrap_octet_string(&point), Some(point));
        assert_eq!(super::unwrap_octet_string(&[0x04, 0x01, 0x00]), None);
    }
}
