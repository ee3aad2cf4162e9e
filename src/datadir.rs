//! The data directory's layout: which file holds what.
//!
//! ```text
//! DIR/ca.pem  ca.key (0600)            the CA (ca.key only for a file key; KMS and HSM keys stay where they are)
//! DIR/server.pem  server.key (0600)    the gRPC listener's certificate
//! DIR/principald.db                    the SQLite store
//! DIR/profiles/ADMIN/                  principalctl profile of the first admin (profile.json, ca.pem, cert.pem, key.pem)
//! ```

use std::path::{Path, PathBuf};

use crate::model::PrincipalId;

#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("principald.db")
    }

    pub fn profile(&self, admin: &PrincipalId) -> PathBuf {
        self.root.join("profiles").join(admin.as_str())
    }
}
