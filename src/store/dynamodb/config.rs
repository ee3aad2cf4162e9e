//! How to reach the DynamoDB tables. Built with or without the `aws` feature: configuration parses either way, and
//! only opening the store needs the SDK.

/// Connection settings for [`DynamoStore::connect`].
#[derive(Clone, Debug, Default)]
pub struct DynamoConfig {
    /// Prepended to every table name, e.g. `principald-`.
    pub table_prefix: String,
    /// Endpoint override (DynamoDB Local, VPC endpoints); the standard AWS endpoint when `None`.
    pub endpoint: Option<String>,
    /// Names this process's audit chains (`<replica>/<k>`); servers use their replica id.
    pub replica: String,
}
