//! The store each benchmarked server runs on: the embedded one in its data dir, or fresh DynamoDB Local tables.

use crate::{Cli, StoreKind};

/// One fresh store per server (fresh tables on DynamoDB; SQLite stores live in each server's data dir).
pub async fn fresh(cli: &Cli, n: usize) -> Vec<Vec<String>> {
    let mut stores = Vec::new();
    for _ in 0..n {
        stores.push(args(cli).await);
    }
    stores
}

pub async fn args(cli: &Cli) -> Vec<String> {
    if cli.store == StoreKind::Sqlite {
        return Vec::new();
    }
    let endpoint = cli.dynamodb_endpoint.clone().expect("--store dynamodb needs --dynamodb-endpoint (DynamoDB Local)");
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    let prefix = format!("bench{}-", principald::model::hex(&bytes));
    let config = principald::store::StoreConfig::Dynamodb(principald::store::dynamodb::DynamoConfig {
        table_prefix: prefix.clone(),
        endpoint: Some(endpoint.clone()),
        replica: "bench".into(),
    });
    config.migrate().await.expect("migrate DynamoDB");
    vec![
        "--store".into(),
        "dynamodb".into(),
        "--dynamodb-endpoint".into(),
        endpoint,
        "--dynamodb-table-prefix".into(),
        prefix,
    ]
}

/// Opens the DynamoDB store that `args` (from [`args`]) point a server at, for an in-process client of the same tables.
pub async fn open_dynamodb(args: &[String]) -> std::sync::Arc<dyn principald::store::Store> {
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let config = principald::store::dynamodb::DynamoConfig {
        table_prefix: value("--dynamodb-table-prefix").unwrap_or_default(),
        endpoint: value("--dynamodb-endpoint"),
        replica: "bench-resource-server".into(),
    };
    principald::store::StoreConfig::Dynamodb(config).open().await.expect("open DynamoDB")
}
