//! First start: the CA, the server certificate, the first admin principal, its certificate and its principalctl
//! profile. Each step is skipped when its result already exists, so re-running changes nothing and an interrupted
//! run resumes where it stopped; `force` replaces the CA and everything it signed.

use std::sync::Arc;

use rcgen::KeyPair;

use crate::client::{Profile, ProfileFile};
use crate::config::BootstrapConfig;
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::files;
use crate::model::{Principal, PrincipalStatus, PrincipalType, now};
use crate::pki::ca::CertificateAuthority;
use crate::pki::leaf;
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

    let generated = !dir.has_ca() || config.force;
    let ca = if generated {
        let ca = CertificateAuthority::generate("principald CA", CA_VALIDITY)?;
        files::write_private(&dir.ca_key(), ca.key_pem().as_bytes())?;
        files::write_public(&dir.ca_cert(), ca.cert_pem().as_bytes())?;
        created.push(format!("CA certificate {}", dir.ca_cert().display()));
        ca
    } else {
        load_ca(&dir)?
    };
    // One CA per store, recorded before anything else touches the store: of two bootstraps racing on one empty store,
    // exactly one CA wins; the loser removes the CA it just made and says which one to copy.
    if let Err(error) = claim_store(store.as_ref(), &ca, &dir, config.force).await {
        if generated {
            let _ = std::fs::remove_file(dir.ca_key());
            let _ = std::fs::remove_file(dir.ca_cert());
        }
        return Err(error);
    }

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
            store
                .create_principal(&Principal {
                    id: admin.clone(),
                    kind: PrincipalType::Admin,
                    status: PrincipalStatus::Active,
                    description: "first admin, created by bootstrap".into(),
                    email: None,
                    status_reason: None,
                    created_at: at,
                    updated_at: at,
                    generation: 0,
                })
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
        store.insert_certificate(&issued.record).await?;
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

/// Records `ca` as the CA of `store` (whatever was recorded, with `replace`), or refuses a store that belongs to
/// another CA: two CAs on one store would each accept certificates the other's registry never vetted.
pub async fn claim_store(store: &dyn Store, ca: &CertificateAuthority, dir: &DataDir, replace: bool) -> Result<()> {
    let mine = crate::model::sha256_hex(ca.cert_der());
    let recorded = store.claim_ca(&mine, replace).await?;
    if recorded != mine {
        return Err(Error::FailedPrecondition(format!(
            "the store belongs to another CA (SHA-256 {recorded}) than the one in {} ({mine}): copy ca.pem, ca.key, \
             server.pem and server.key from a replica that serves this store, point --store at the right one, or \
             bootstrap with --force to replace the store's CA",
            dir.root().display()
        )));
    }
    Ok(())
}

/// Loads the CA from the data directory.
pub fn load_ca(dir: &DataDir) -> Result<CertificateAuthority> {
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p).map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", p.display())))
    };
    CertificateAuthority::from_pem(&read(dir.ca_cert())?, &read(dir.ca_key())?)
}
