//! The store conformance suite against DynamoDB Local, and the DynamoDB schema tooling (migrate, schema check).

mod common;

use common::dynamo;
use principald::store::StoreConfig;
use principald::store::dynamodb::{DynamoConfig, DynamoStore};

principald::store_conformance_tests!(match dynamo::fresh_config().await {
    Some(config) => std::sync::Arc::new(DynamoStore::connect(&config).await.unwrap()),
    None => return,
});

#[tokio::test]
async fn migrate_creates_tables_indexes_and_ttl_once() {
    let Some(endpoint) = dynamo::endpoint() else { return };
    let config = StoreConfig::Dynamodb(DynamoConfig {
        table_prefix: dynamo::unique_prefix(),
        endpoint: Some(endpoint),
        replica: "test".into(),
    });
    let first = config.migrate().await.unwrap();
    assert!(first.iter().any(|c| c.contains("created table") && c.ends_with("principals")), "{first:?}");
    assert!(first.iter().any(|c| c.contains("certificates")), "{first:?}");
    assert!(first.iter().any(|c| c.contains("enabled TTL") && c.contains("expires_at")), "{first:?}");
    let second = config.migrate().await.unwrap();
    assert!(second.is_empty(), "re-running migrate is a no-op: {second:?}");
    config.open().await.unwrap().ping().await.unwrap();
}

#[tokio::test]
async fn serve_refuses_missing_tables_and_names_them() {
    let Some(endpoint) = dynamo::endpoint() else { return };
    let config =
        DynamoConfig { table_prefix: dynamo::unique_prefix(), endpoint: Some(endpoint), replica: "test".into() };
    let error = DynamoStore::connect(&config).await.err().expect("no tables yet");
    let message = error.to_string();
    for table in ["principals", "certificates", "meta"] {
        assert!(message.contains(&format!("{}{table}", config.table_prefix)), "{message}");
    }
    assert!(message.contains("principald migrate"), "{message}");
}
