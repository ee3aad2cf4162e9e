//! Which store to use and how to reach it.

use clap::{Args, ValueEnum};

use crate::error::Error;
use crate::store::StoreConfig;
use crate::store::dynamodb::DynamoConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// One SQLite file in the data dir.
    Sqlite,
    /// DynamoDB tables; region and credentials from the standard AWS chain (AWS_REGION, AWS_PROFILE, IAM role, ...).
    Dynamodb,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Where principals and certificates live.
    #[arg(long, env = "PRINCIPALD_STORE", value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// Prefix of the DynamoDB table names (tables: PREFIXprincipals, PREFIXcertificates, PREFIXmeta, PREFIXaudit).
    #[arg(long, env = "PRINCIPALD_DYNAMODB_TABLE_PREFIX", default_value = "principald-")]
    pub dynamodb_table_prefix: String,
    /// DynamoDB endpoint override, e.g. http://127.0.0.1:8000 for DynamoDB Local.
    #[arg(long, env = "PRINCIPALD_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,
    /// Most SQLite writes that share one commit (group commit); 1 commits every write alone.
    #[arg(long, env = "PRINCIPALD_SQLITE_MAX_BATCH", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub sqlite_max_batch: u16,
}

impl StoreArgs {
    pub fn validate(&self, data_dir: &std::path::Path) -> Result<StoreConfig, Error> {
        match self.store {
            StoreKind::Sqlite => Ok(StoreConfig::Sqlite {
                path: crate::datadir::DataDir::new(data_dir).database(),
                max_batch: usize::from(self.sqlite_max_batch),
            }),
            StoreKind::Dynamodb => {
                let prefix = &self.dynamodb_table_prefix;
                let valid = prefix.len() <= 200
                    && prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                if !valid {
                    return Err(Error::InvalidArgument(format!(
                        "invalid --dynamodb-table-prefix {prefix:?}: use letters, digits, '_', '-' and '.'"
                    )));
                }
                if let Some(endpoint) = &self.dynamodb_endpoint
                    && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                {
                    return Err(Error::InvalidArgument(format!(
                        "invalid --dynamodb-endpoint {endpoint:?}: expected http://host:port or https://host"
                    )));
                }
                Ok(StoreConfig::Dynamodb(DynamoConfig {
                    table_prefix: prefix.clone(),
                    endpoint: self.dynamodb_endpoint.clone(),
                    replica: String::new(),
                }))
            }
        }
    }
}
