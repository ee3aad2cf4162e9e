//! The tables, defined once in migrations/dynamodb/*.json (the shape `aws dynamodb create-table` takes, table names
//! without the prefix), applied by `principald migrate` and checked by `principald serve`.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The numbered table definitions, in order.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_principals.json", include_str!("../../../migrations/dynamodb/0001_principals.json")),
    ("0002_certificates.json", include_str!("../../../migrations/dynamodb/0002_certificates.json")),
    ("0003_meta.json", include_str!("../../../migrations/dynamodb/0003_meta.json")),
    ("0004_audit.json", include_str!("../../../migrations/dynamodb/0004_audit.json")),
];

/// How long `migrate` waits for a table or index to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableDefinition {
    pub table_name: String,
    #[serde(default)]
    pub billing_mode: Option<String>,
    pub attribute_definitions: Vec<AttributeDef>,
    pub key_schema: Vec<KeyDef>,
    #[serde(default)]
    pub global_secondary_indexes: Vec<IndexDef>,
    #[serde(default)]
    pub time_to_live_specification: Option<TtlDef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDef {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyDef {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexDef {
    pub index_name: String,
    pub key_schema: Vec<KeyDef>,
    pub projection: ProjectionDef,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectionDef {
    pub projection_type: String,
    #[serde(default)]
    pub non_key_attributes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TtlDef {
    pub attribute_name: String,
    pub enabled: bool,
}

/// Every table definition, parsed.
pub fn definitions() -> Result<Vec<TableDefinition>> {
    MIGRATIONS
        .iter()
        .map(|(name, json)| serde_json::from_str(json).map_err(|e| Error::internal(&format!("migration {name}"), e)))
        .collect()
}

/// Creates what is missing (tables, indexes, TTL) and waits until it is ACTIVE. A no-op when everything exists.
/// Returns what it did, one line per change.
pub async fn migrate(client: &Client, prefix: &str) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for def in definitions()? {
        let table = format!("{prefix}{}", def.table_name);
        let existing = describe(client, &table).await?;
        match existing {
            None => {
                create_table(client, &table, &def).await?;
                done.push(format!("created table {table}"));
            }
            Some(indexes) => {
                for index in def.global_secondary_indexes.iter().filter(|i| !indexes.contains(&i.index_name)) {
                    // DynamoDB builds one new index of a table at a time: wait for the previous one.
                    wait_active(client, &table).await?;
                    add_index(client, &table, &def, index).await?;
                    done.push(format!("created index {table}.{}", index.index_name));
                }
            }
        }
        wait_active(client, &table).await?;
        if let Some(ttl) = def.time_to_live_specification.as_ref().filter(|t| t.enabled)
            && ensure_ttl(client, &table, &ttl.attribute_name).await?
        {
            done.push(format!("enabled TTL on {table}.{}", ttl.attribute_name));
        }
    }
    Ok(done)
}

/// Names every missing table or index, so `serve` can refuse to start with a message that says what to run.
pub async fn check(client: &Client, prefix: &str) -> Result<()> {
    let mut missing = Vec::new();
    for def in definitions()? {
        let table = format!("{prefix}{}", def.table_name);
        match describe(client, &table).await? {
            None => missing.push(format!("table {table}")),
            Some(indexes) => missing.extend(
                def.global_secondary_indexes
                    .iter()
                    .filter(|i| !indexes.contains(&i.index_name))
                    .map(|i| format!("index {table}.{}", i.index_name)),
            ),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "DynamoDB schema incomplete: missing {}; run `principald migrate --store dynamodb` with the same table prefix",
        missing.join(", ")
    )))
}

/// The table's index names, or `None` if the table does not exist.
async fn describe(client: &Client, table: &str) -> Result<Option<Vec<String>>> {
    match client.describe_table().table_name(table).send().await {
        Ok(out) => {
            let indexes = out
                .table()
                .map(|t| {
                    t.global_secondary_indexes().iter().filter_map(|i| i.index_name().map(str::to_owned)).collect()
                })
                .unwrap_or_default();
            Ok(Some(indexes))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
        Err(e) => Err(super::sdk_error("DescribeTable", e)),
    }
}

async fn create_table(client: &Client, table: &str, def: &TableDefinition) -> Result<()> {
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::from(def.billing_mode.as_deref().unwrap_or("PAY_PER_REQUEST")))
        .set_attribute_definitions(Some(attributes(def)?))
        .set_key_schema(Some(keys(&def.key_schema)?));
    for index in &def.global_secondary_indexes {
        request = request.global_secondary_indexes(index_of(index)?);
    }
    request.send().await.map_err(|e| super::sdk_error("CreateTable", e))?;
    Ok(())
}

async fn add_index(client: &Client, table: &str, def: &TableDefinition, index: &IndexDef) -> Result<()> {
    let create = aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
        .index_name(&index.index_name)
        .set_key_schema(Some(keys(&index.key_schema)?))
        .projection(projection(&index.projection))
        .build()
        .map_err(|e| Error::internal("index definition", e))?;
    client
        .update_table()
        .table_name(table)
        .set_attribute_definitions(Some(attributes(def)?))
        .global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(create).build())
        .send()
        .await
        .map_err(|e| super::sdk_error("UpdateTable", e))?;
    Ok(())
}

async fn wait_active(client: &Client, table: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let out =
            client.describe_table().table_name(table).send().await.map_err(|e| super::sdk_error("DescribeTable", e))?;
        let t = out.table();
        let table_active = t.and_then(|t| t.table_status()) == Some(&TableStatus::Active);
        let indexes_active = t
            .map(|t| t.global_secondary_indexes().iter().all(|i| i.index_status() == Some(&IndexStatus::Active)))
            .unwrap_or(false);
        if table_active && indexes_active {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Unavailable(format!("table {table} did not become ACTIVE within {ACTIVE_TIMEOUT:?}")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Enables TTL on `attribute`; `true` if it changed anything.
async fn ensure_ttl(client: &Client, table: &str, attribute: &str) -> Result<bool> {
    let out = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| super::sdk_error("DescribeTimeToLive", e))?;
    let status = out.time_to_live_description().and_then(|d| d.time_to_live_status());
    if matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)) {
        return Ok(false);
    }
    let spec = TimeToLiveSpecification::builder()
        .attribute_name(attribute)
        .enabled(true)
        .build()
        .map_err(|e| Error::internal("TTL specification", e))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| super::sdk_error("UpdateTimeToLive", e))?;
    Ok(true)
}

fn attributes(def: &TableDefinition) -> Result<Vec<AttributeDefinition>> {
    def.attribute_definitions
        .iter()
        .map(|a| {
            AttributeDefinition::builder()
                .attribute_name(&a.attribute_name)
                .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                .build()
                .map_err(|e| Error::internal("attribute definition", e))
        })
        .collect()
}

fn keys(defs: &[KeyDef]) -> Result<Vec<KeySchemaElement>> {
    defs.iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(&k.attribute_name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .map_err(|e| Error::internal("key schema", e))
        })
        .collect()
}

fn projection(p: &ProjectionDef) -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::from(p.projection_type.as_str()))
        .set_non_key_attributes((!p.non_key_attributes.is_empty()).then(|| p.non_key_attributes.clone()))
        .build()
}

fn index_of(index: &IndexDef) -> Result<GlobalSecondaryIndex> {
    GlobalSecondaryIndex::builder()
        .index_name(&index.index_name)
        .set_key_schema(Some(keys(&index.key_schema)?))
        .projection(projection(&index.projection))
        .build()
        .map_err(|e| Error::internal("index definition", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_parse_and_keep_items_small() {
        let defs = definitions().unwrap();
        let names: Vec<&str> = defs.iter().map(|d| d.table_name.as_str()).collect();
        assert_eq!(names, ["principals", "certificates", "meta", "audit"]);
        for def in &defs {
            for key in def.key_schema.iter().chain(def.global_secondary_indexes.iter().flat_map(|i| &i.key_schema)) {
                assert!(
                    def.attribute_definitions.iter().any(|a| a.attribute_name == key.attribute_name),
                    "{}: key {} lacks an attribute definition",
                    def.table_name,
                    key.attribute_name
                );
            }
        }
    }
}
