//! The store conformance suite against DynamoDB Local, and the DynamoDB schema tooling (migrate, schema check).

use crate::common;

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

/// Edits, deletions and reorderings made directly in the audit table are found by verification, at their position.
#[tokio::test]
async fn audit_tampering_in_the_table_is_found_at_its_position() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use principald::store::conformance::{first_break, five_chained_events};
    let Some(endpoint) = dynamo::endpoint() else { return };
    #[derive(Clone, Copy, Debug)]
    enum Tamper {
        Edit,
        Delete,
        Swap,
        DropNewest,
    }
    for (tamper, position) in [(Tamper::Edit, 2), (Tamper::Delete, 3), (Tamper::Swap, 2), (Tamper::DropNewest, 5)] {
        let config = dynamo::fresh_config_at(&endpoint).await;
        let store = DynamoStore::connect(&config).await.unwrap();
        let chain = five_chained_events(&store).await;
        let client = DynamoStore::client(&config).await;
        let table = format!("{}audit", config.table_prefix);
        let key = |seq: u64| {
            std::collections::HashMap::from([
                ("chain".to_owned(), AttributeValue::S(chain.clone())),
                ("seq".to_owned(), AttributeValue::N(seq.to_string())),
            ])
        };
        let get = |seq: u64| {
            let (client, table, key) = (client.clone(), table.clone(), key(seq));
            async move { client.get_item().table_name(table).set_key(Some(key)).send().await.unwrap().item.unwrap() }
        };
        match tamper {
            Tamper::Edit => {
                let mut item = get(2).await;
                item.insert("target".into(), AttributeValue::S("someone-else".into()));
                client.put_item().table_name(&table).set_item(Some(item)).send().await.unwrap();
            }
            Tamper::Delete | Tamper::DropNewest => {
                let seq = if matches!(tamper, Tamper::Delete) { 3 } else { 5 };
                client.delete_item().table_name(&table).set_key(Some(key(seq))).send().await.unwrap();
            }
            Tamper::Swap => {
                let (mut two, mut three) = (get(2).await, get(3).await);
                two.insert("seq".into(), AttributeValue::N("3".into()));
                three.insert("seq".into(), AttributeValue::N("2".into()));
                for item in [two, three] {
                    client.put_item().table_name(&table).set_item(Some(item)).send().await.unwrap();
                }
            }
        }
        assert_eq!(first_break(&store).await, Some(position), "{tamper:?}");
    }
}
