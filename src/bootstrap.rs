//! First start: the CA, the server certificate, the first admin principal, its certificate and its principalctl
//! profile. Each step is skipped when its result already exists, so re-running changes nothing and an interrupted
//! run resumes where it stopped; `force` replaces the CA and everything it signed.

use std::sync::Arc;

use rcgen::KeyPair;

use crate::audit::{AuditEvent, Origin, Recorder, kind};
use crate::client::{Profile, ProfileFile};
use crate::config::BootstrapConfig;
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::files;
use crate::model::CaClaim;
use crate::model::{Principal, PrincipalStatus, PrincipalType, now, sha256_hex};
use crate::pki::ca::{CertificateAuthority, Root};
use crate::pki::leaf;
use crate::pki::signer::{self, KeyUri};
use crate::store::Store;

/// The CA lives ten years.
pub const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// The bootstrap admin's certificate lives one year (renew it with `principalctl cert renew`).
pub const ADMIN_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// What a bootstrap run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Human-readable steps taken; empty when everything existed already.
    pub created: Vec<String>,
    /// Directory of the admin's principalctl profile.
    pub admin_profile: std::path::PathBuf,
}

/// Runs the bootstrap steps that are missing (all of them with `config.force`).
pub async fn run(config: &BootstrapConfig, store: Arc<dyn Store>) -> Result<Outcome> {
    let dir = DataDir::new(&config.data_dir);
    files::create_private_dir(dir.root())?;
    let mut created = Vec::new();

    let (root, made) =
        establish_root(&dir, &config.ca_key, store.as_ref(), config.force, true, config.intermediates).await?;
    if made {
        created.push(format!("CA certificate {} (key {})", dir.ca_cert().display(), config.ca_key));
    }
    // Bootstrap signs with the root itself: its certificates (server, first admin) do not depend on any replica.
    let ca = CertificateAuthority::direct(root);

    if config.force || !dir.server_cert().exists() || !dir.server_key().exists() {
        crate::server_cert::issue_files(&dir, &ca, &config.server_names)?;
        created.push(format!(
            "server certificate {} for {}",
            dir.server_cert().display(),
            config.server_names.join(", ")
        ));
    }

    let admin = &config.admin_id;
    match store.get_principal(admin).await? {
        None => {
            let at = now();
            let details = serde_json::json!({ "type": PrincipalType::Admin.as_str() });
            let event = bootstrap_event(kind::PRINCIPAL_CREATED, admin.as_str(), details);
            store
                .create_principal(
                    &Principal {
                        id: admin.clone(),
                        kind: PrincipalType::Admin,
                        status: PrincipalStatus::Active,
                        description: "first admin, created by bootstrap".into(),
                        email: None,
                        status_reason: None,
                        created_at: at,
                        updated_at: at,
                        generation: 0,
                    },
                    event.as_ref(),
                )
                .await?;
            created.push(format!("admin principal {admin}"));
        }
        Some(p) if p.kind == PrincipalType::Admin && p.status == PrincipalStatus::Active => {}
        Some(p) => {
            return Err(Error::FailedPrecondition(format!(
                "principal {admin:?} exists as a {} {} principal; choose another --admin-id",
                p.status, p.kind
            )));
        }
    }

    let profile_dir = dir.profile(admin);
    if config.force || Profile::load(&profile_dir).is_err() {
        files::create_private_dir(&profile_dir)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::internal("generate admin key", e))?;
        let generation = store.get_principal(admin).await?.map_or(0, |p| p.generation);
        let issued =
            leaf::issue_client(&ca, &config.identity, PrincipalType::Admin, admin, &key, ADMIN_VALIDITY, generation)?;
        let details = serde_json::json!({
            "principal": admin.as_str(),
            "type": PrincipalType::Admin.as_str(),
            "not_after": issued.record.not_after.unix_timestamp(),
            "issuer": issued.record.issuer,
        });
        let event = bootstrap_event(kind::CERTIFICATE_ISSUED, issued.record.serial.as_str(), details);
        store.insert_certificate(&issued.record, event.as_ref()).await?;
        files::write_private(&profile_dir.join("key.pem"), key.serialize_pem().as_bytes())?;
        files::write_public(&profile_dir.join("cert.pem"), issued.pem.as_bytes())?;
        files::write_public(&profile_dir.join("ca.pem"), ca.cert_pem().as_bytes())?;
        let file = ProfileFile {
            server: config.profile_server.clone(),
            ca_cert: "ca.pem".into(),
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        };
        Profile::save(&profile_dir, &file)?;
        created.push(format!("admin profile {}", profile_dir.display()));
    }
    Ok(Outcome { created, admin_profile: profile_dir })
}

/// The CA root for this store and key, establishing it if needed; `true` if this call created the certificate.
///
/// Opens the key (with `create_key`, creating it when it does not exist yet; `force` with a file key makes a new one). With a CA
/// certificate in the data dir, that certificate is claimed; without one, a new self-signed root is the candidate.
/// Of several processes claiming one store at once exactly one certificate wins; a loser whose key is the winner's
/// (the same KMS key or HSM object, bootstrapped from two places) adopts the winner's certificate, any other loser
/// is refused and removes what it created. Blocking key operations run off the async runtime.
pub async fn establish_root(
    dir: &DataDir,
    key: &KeyUri,
    store: &dyn Store,
    force: bool,
    create_key: bool,
    intermediates: bool,
) -> Result<(Root, bool)> {
    let file_key = match key {
        KeyUri::File(path) => Some(path.clone()),
        _ => None,
    };
    if force && let Some(path) = &file_key {
        let _ = std::fs::remove_file(path);
    }
    let key_existed = file_key.as_ref().is_none_or(|p| p.exists());
    let cleanup = |wrote_cert: bool| {
        if let (Some(path), false) = (&file_key, key_existed) {
            let _ = std::fs::remove_file(path);
        }
        if wrote_cert {
            let _ = std::fs::remove_file(dir.ca_cert());
        }
    };
    let signer = signer::open_async(key.clone(), create_key).await?;
    let local = if force { None } else { std::fs::read_to_string(dir.ca_cert()).ok() };
    let (candidate, made) = match local {
        Some(pem) => (Root::load(&pem, signer.clone())?, false),
        None => {
            let signer = signer.clone();
            let root =
                tokio::task::spawn_blocking(move || Root::create(signer, "principald CA", CA_VALIDITY, intermediates))
                    .await
                    .map_err(|e| Error::internal("create CA", e))?;
            (root?, true)
        }
    };
    let claim = CaClaim { fingerprint: sha256_hex(candidate.cert_der()), certificate_pem: candidate.cert_pem().into() };
    let details = serde_json::json!({ "key": key.to_string(), "replace": force });
    let event = bootstrap_event(kind::CA_CLAIMED, &claim.fingerprint, details);
    let recorded = match store.claim_ca(&claim, force, event.as_ref()).await {
        Ok(recorded) => recorded,
        Err(e) => {
            cleanup(false);
            return Err(e);
        }
    };
    let root = if recorded.fingerprint == claim.fingerprint {
        candidate
    } else {
        match Root::load(&recorded.certificate_pem, signer) {
            // Same key, another certificate: the store's one is the CA; use it.
            Ok(theirs) => theirs,
            Err(_) => {
                cleanup(false);
                return Err(Error::FailedPrecondition(format!(
                    "the store belongs to another CA (SHA-256 {}) than the one in {} with key {key} ({}): point \
                     --store at the right one, use that CA's key (and ca.pem), or bootstrap with --force to replace \
                     the store's CA",
                    recorded.fingerprint,
                    dir.root().display(),
                    claim.fingerprint
                )));
            }
        }
    };
    let write = std::fs::read_to_string(dir.ca_cert()).ok().as_deref() != Some(root.cert_pem());
    if write && let Err(e) = files::write_public(&dir.ca_cert(), root.cert_pem().as_bytes()) {
        cleanup(true);
        return Err(e);
    }
    Ok((root, made && recorded.fingerprint == claim.fingerprint))
}

/// Loads the CA from the data directory's files (ca.pem and the file key ca.key), signing with the root directly:
/// for tools and tests that sign outside a running server.
pub fn load_ca(dir: &DataDir) -> Result<CertificateAuthority> {
    let pem = std::fs::read_to_string(dir.ca_cert())
        .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", dir.ca_cert().display())))?;
    let signer = signer::open(&KeyUri::File(dir.ca_key()), false)?;
    Ok(CertificateAuthority::direct(Root::load(&pem, signer)?))
}

/// An event of bootstrap (or of a replica establishing the root), made by principald itself.
fn bootstrap_event(what: &str, target: &str, details: serde_json::Value) -> Option<AuditEvent> {
    Recorder::new("bootstrap", true).event(&Origin::system("bootstrap"), what, target, details)
}
