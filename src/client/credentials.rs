//! A profile's credentials on disk, at stable paths that change in place. Software pointed at `cert.pem` and
//! `key.pem` (nginx, Envoy, curl) keeps working across renewals, and never reads a key that does not match the
//! certificate beside it:
//!
//! ```text
//! DIR/cert.pem -> live/cert.pem         the certificate chain TLS presents (leaf first)
//! DIR/key.pem  -> live/key.pem          its private key (0600)
//! DIR/live     -> versions/SERIAL       switched atomically (one rename) after the new pair is complete on disk
//! DIR/versions/SERIAL/{cert,key}.pem    the current pair and the previous one; older pairs are removed
//! DIR/ca.pem                            the trust anchor, replaced atomically
//! ```
//!
//! A crash at any point leaves the old pair or the new one live, never a mix.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::files;

/// The stable names (relative to the profile directory).
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
pub const CA_FILE: &str = "ca.pem";
const LIVE: &str = "live";
const VERSIONS: &str = "versions";
/// Pairs kept besides the live one, for readers that opened the previous pair a moment before the switch.
const KEEP_PREVIOUS: usize = 1;

/// Installs a new certificate chain and key (and the CA) in `dir` under the stable names, then removes pairs older
/// than the previous one. `version` names the pair (the certificate's serial).
pub fn install(dir: &Path, version: &str, chain_pem: &str, key_pem: &str, ca_pem: &str) -> Result<(), Error> {
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::InvalidArgument(format!("cannot name credentials {version:?}")));
    }
    files::create_private_dir(&dir.join(VERSIONS).join(version))?;
    let pair = Path::new(VERSIONS).join(version);
    files::write_private(&dir.join(&pair).join(KEY_FILE), key_pem.as_bytes())?;
    files::write_public(&dir.join(&pair).join(CERT_FILE), chain_pem.as_bytes())?;
    files::write_public(&dir.join(CA_FILE), ca_pem.as_bytes())?;
    files::replace_symlink(&dir.join(LIVE), &pair)?;
    // Once per profile (new, or written before the stable layout): the stable names become links into `live`.
    for name in [CERT_FILE, KEY_FILE] {
        let target = Path::new(LIVE).join(name);
        if std::fs::read_link(dir.join(name)).ok().as_deref() != Some(target.as_path()) {
            files::replace_symlink(&dir.join(name), &target)?;
        }
    }
    prune(dir, version);
    Ok(())
}

/// Removes every pair but the live one and the newest `KEEP_PREVIOUS` others (by modification time). Best effort.
fn prune(dir: &Path, live: &str) {
    let Ok(entries) = std::fs::read_dir(dir.join(VERSIONS)) else { return };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != live)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    others.sort_by_key(|o| std::cmp::Reverse(o.0));
    for (_, old) in others.into_iter().skip(KEEP_PREVIOUS) {
        let _ = std::fs::remove_dir_all(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stable_names_follow_each_install_and_old_pairs_go() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A profile from before the stable layout: regular files under the stable names.
        std::fs::write(d.join(CERT_FILE), "old cert").unwrap();
        std::fs::write(d.join(KEY_FILE), "old key").unwrap();
        for (n, serial) in ["01", "02", "03"].iter().enumerate() {
            install(d, serial, &format!("cert {n}"), &format!("key {n}"), "ca").unwrap();
            assert_eq!(std::fs::read_to_string(d.join(CERT_FILE)).unwrap(), format!("cert {n}"));
            assert_eq!(std::fs::read_to_string(d.join(KEY_FILE)).unwrap(), format!("key {n}"));
            let mode = std::fs::metadata(d.join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut kept: Vec<String> = std::fs::read_dir(d.join(VERSIONS))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        kept.sort();
        assert_eq!(kept, ["02", "03"], "the live pair and the previous one");
        assert!(install(d, "../x", "c", "k", "ca").is_err());
        let names: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 5, "cert.pem key.pem ca.pem live versions, no temporary files: {names:?}");
    }
}
