//! `principald bootstrap`: the identity settings every command shares, and the bootstrap flags validated.

use clap::Args;

use super::{CaArgs, DataDirArgs, StoreArgs, server_names};
use crate::error::Error;
use crate::model::PrincipalId;
use crate::pki::IdentityConfig;
use crate::pki::oid::DEFAULT_IDENTITY_ARC;
use crate::store::StoreConfig;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct IdentityArgs {
    /// Trust domain in the SPIFFE URI SAN of client certificates (spiffe://TRUST_DOMAIN/TYPE/ID).
    #[arg(long, env = "PRINCIPALD_TRUST_DOMAIN", default_value = "principald.local")]
    pub trust_domain: String,
    /// OID arc of the identity extensions: ARC.1 holds the principal type, ARC.2 the principal id.
    #[arg(long, env = "PRINCIPALD_OID_ARC", default_value = DEFAULT_IDENTITY_ARC)]
    pub oid_arc: String,
}

#[derive(Args, Debug, Clone)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub ca: CaArgs,
    /// Extra DNS names for the server certificate (localhost and 127.0.0.1 are always included).
    #[arg(long = "server-name", env = "PRINCIPALD_SERVER_NAMES", value_delimiter = ',')]
    pub server_names: Vec<String>,
    /// Id of the first admin principal.
    #[arg(long, env = "PRINCIPALD_ADMIN_ID", default_value = "admin")]
    pub admin_id: String,
    /// Server address written into the admin's principalctl profile.
    #[arg(long, env = "PRINCIPALD_PROFILE_SERVER", default_value = "https://localhost:8443")]
    pub profile_server: String,
    /// Replace an existing CA, server certificate and admin credentials. Certificates of the old CA stop working.
    #[arg(long)]
    pub force: bool,
}

/// Validated bootstrap settings.
#[derive(Clone, Debug)]
pub struct BootstrapConfig {
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub identity: IdentityConfig,
    /// Server certificate names: the configured ones plus localhost and 127.0.0.1.
    pub server_names: Vec<String>,
    pub admin_id: PrincipalId,
    pub profile_server: String,
    pub force: bool,
    /// Where the CA's root key lives.
    pub ca_key: crate::pki::signer::KeyUri,
    /// Leaves are signed through replica intermediates (the root then gets path length 1).
    pub intermediates: bool,
}

impl IdentityArgs {
    pub fn validate(&self) -> Result<IdentityConfig, Error> {
        let td = &self.trust_domain;
        let valid = !td.is_empty()
            && td.len() <= 255
            && td.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "invalid --trust-domain {td:?}: use lowercase letters, digits, '.', '-' and '_' (e.g. example.org)"
            )));
        }
        Ok(IdentityConfig { trust_domain: td.clone(), oids: self.oid_arc.parse()? })
    }
}

impl BootstrapArgs {
    pub fn validate(&self) -> Result<BootstrapConfig, Error> {
        if !self.profile_server.starts_with("https://") {
            return Err(Error::InvalidArgument(format!(
                "invalid --profile-server {:?}: it must start with https://",
                self.profile_server
            )));
        }
        Ok(BootstrapConfig {
            data_dir: self.data.data_dir.clone(),
            store: self.store.validate(&self.data.data_dir)?,
            identity: self.identity.validate()?,
            server_names: server_names(&self.server_names)?,
            admin_id: self.admin_id.parse()?,
            profile_server: self.profile_server.clone(),
            force: self.force,
            ca_key: self.ca.validate(&self.data.data_dir)?,
            intermediates: self.ca.use_intermediates(&self.ca.validate(&self.data.data_dir)?),
        })
    }
}
