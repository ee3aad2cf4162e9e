//! Which backend to use and how to reach it: opening a store and migrating its schema.

use super::{Store, dynamodb, sqlite};
use crate::error::Result;

/// Which backend to use and how to reach it.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// One SQLite file (the embedded default); at most `max_batch` writes share a commit.
    Sqlite { path: std::path::PathBuf, max_batch: usize },
    /// DynamoDB tables (production; several replicas may share them).
    Dynamodb(dynamodb::DynamoConfig),
}

impl StoreConfig {
    /// The embedded store of a data directory.
    pub fn sqlite_in(data_dir: &std::path::Path) -> Self {
        Self::Sqlite { path: crate::datadir::DataDir::new(data_dir).database(), max_batch: sqlite::DEFAULT_MAX_BATCH }
    }

    /// Opens the store. SQLite applies pending migrations; DynamoDB checks that every table and index exists and
    /// names what is missing.
    pub async fn open(&self) -> Result<std::sync::Arc<dyn Store>> {
        match self {
            Self::Sqlite { path, max_batch } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::files::create_private_dir(dir)?;
                }
                Ok(std::sync::Arc::new(sqlite::SqliteStore::open_with(path, *max_batch)?))
            }
            #[cfg(feature = "aws")]
            Self::Dynamodb(config) => Ok(std::sync::Arc::new(dynamodb::DynamoStore::connect(config).await?)),
            #[cfg(not(feature = "aws"))]
            Self::Dynamodb(_) => Err(crate::error::without_aws("--store dynamodb")),
        }
    }

    /// Creates or upgrades the schema; returns what changed, one line each.
    pub async fn migrate(&self) -> Result<Vec<String>> {
        match self {
            Self::Sqlite { .. } => {
                self.open().await?;
                Ok(Vec::new())
            }
            #[cfg(not(feature = "aws"))]
            Self::Dynamodb(_) => Err(crate::error::without_aws("--store dynamodb")),
            #[cfg(feature = "aws")]
            Self::Dynamodb(config) => {
                let client = dynamodb::DynamoStore::client_checked(config).await?;
                let migrated = dynamodb::schema::migrate(&client, &config.table_prefix).await;
                migrated.map_err(|e| dynamodb::unreachable(config, e))
            }
        }
    }
}
