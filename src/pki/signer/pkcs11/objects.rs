//! The objects on the token: finding the key pair and its derivation secret by label (and id), creating them
//! (bootstrap), reading the public point; the PIN and the host lock that makes creating one step per host.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::error::{Error, Result};
use crate::pki::signer::uri::{PinSource, Pkcs11Uri};

/// How long a new key's creator waits for a concurrent creator's key before choosing between them.
const GENERATION_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);
/// DER OBJECT IDENTIFIER prime256v1, the CKA_EC_PARAMS of a P-256 key.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// An exclusive lock, for this host, on creating `uri`'s key (released when the file is dropped).
pub(super) fn host_lock(module: &std::path::Path, uri: &Pkcs11Uri) -> Result<std::fs::File> {
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

pub(super) fn read_pin(source: &PinSource) -> Result<String> {
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

pub(super) fn find_keys(
    session: &Session,
    class: ObjectClass,
    label: &[u8],
) -> cryptoki::error::Result<Vec<ObjectHandle>> {
    session.find_objects(&[Attribute::Class(class), Attribute::KeyType(KeyType::EC), Attribute::Label(label.to_vec())])
}

pub(super) fn id_of(session: &Session, key: ObjectHandle) -> cryptoki::error::Result<Vec<u8>> {
    Ok(session
        .get_attributes(key, &[AttributeType::Id])?
        .into_iter()
        .find_map(|a| if let Attribute::Id(id) = a { Some(id) } else { None })
        .unwrap_or_default())
}

/// Of several keys with one label (two bootstraps generated at once), every process picks the same one: the lowest id.
pub(super) fn oldest(session: &Session, keys: Vec<ObjectHandle>) -> cryptoki::error::Result<ObjectHandle> {
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
pub(super) fn generate(session: &Session, label: &[u8], id: Option<Vec<u8>>) -> cryptoki::error::Result<ObjectHandle> {
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
pub(super) fn derive_label(object: &str) -> Vec<u8> {
    format!("{object}-derive").into_bytes()
}

pub(super) fn find_secrets(session: &Session, label: &[u8]) -> cryptoki::error::Result<Vec<ObjectHandle>> {
    session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Label(label.to_vec()),
    ])
}

/// Generates the derivation secret: 32 random bytes made on the token, usable only to sign (HMAC), never readable
/// or wrappable, not usable to derive other keys. Same race rule as [`generate`]: the lowest id is kept.
pub(super) fn generate_secret(session: &Session, label: &[u8]) -> cryptoki::error::Result<ObjectHandle> {
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
pub(super) fn public_point(
    session: &Session,
    private: ObjectHandle,
    label: &[u8],
) -> cryptoki::error::Result<Result<Vec<u8>>> {
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
