//! DynamoDB Local for tests. `scripts/test` starts one instance and exports its endpoint as
//! `PRINCIPALD_TEST_DYNAMODB_ENDPOINT`; each test then works in its own table prefix. Without an endpoint the
//! DynamoDB tests skip, except under `CI=true`, where a missing endpoint fails them.

use principald::store::StoreConfig;
use principald::store::dynamodb::DynamoConfig;

pub const ENDPOINT_VAR: &str = "PRINCIPALD_TEST_DYNAMODB_ENDPOINT";

/// The shared DynamoDB Local endpoint, or `None` (with a note) when tests should skip.
pub fn endpoint() -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI=true but {ENDPOINT_VAR} is not set: run the tests with scripts/test, which starts DynamoDB Local"
            )
        }
        _ => {
            eprintln!("skipping: {ENDPOINT_VAR} is not set (scripts/test starts DynamoDB Local and sets it)");
            None
        }
    }
}

/// A table prefix no other test uses.
pub fn unique_prefix() -> String {
    let mut bytes = [0u8; 6];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    format!("t{}-", principald::model::hex(&bytes))
}

/// Fresh, migrated tables on `endpoint`.
pub async fn fresh_config_at(endpoint: &str) -> DynamoConfig {
    let config =
        DynamoConfig { table_prefix: unique_prefix(), endpoint: Some(endpoint.to_owned()), replica: "test".into() };
    StoreConfig::Dynamodb(config.clone()).migrate().await.expect("migrate DynamoDB Local");
    config
}

/// Fresh, migrated tables on the shared instance, or `None` when DynamoDB tests skip.
pub async fn fresh_config() -> Option<DynamoConfig> {
    Some(fresh_config_at(&endpoint()?).await)
}

/// Whether end-to-end tests should run on DynamoDB (`PRINCIPALD_TEST_STORE=dynamodb`, set by scripts/test).
pub fn e2e_on_dynamodb() -> bool {
    std::env::var("PRINCIPALD_TEST_STORE").is_ok_and(|v| v == "dynamodb")
}
