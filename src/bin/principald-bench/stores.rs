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
