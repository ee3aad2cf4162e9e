//! Reaching DynamoDB: the SDK client (region and credentials from the standard AWS chain, short timeouts, bounded
//! retries), and the one-line errors for a missing region or an endpoint nobody answers.

use std::time::Duration;

use aws_sdk_dynamodb::Client;

use super::{DynamoConfig, DynamoStore};
use crate::error::{Error, Result};

impl DynamoStore {
    /// A client with region and credentials from the standard AWS chain, short timeouts and bounded retries.
    pub async fn client(config: &DynamoConfig) -> Client {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(1))
            .operation_attempt_timeout(Duration::from_secs(2))
            .operation_timeout(Duration::from_secs(5))
            .build();
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(50))
            .with_max_backoff(Duration::from_secs(1));
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts).retry_config(retry);
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        Client::new(&loader.load().await)
    }

    /// [`client`](Self::client), refusing a configuration without a region (the SDK would fail every call with a
    /// dispatch error that does not say so).
    pub async fn client_checked(config: &DynamoConfig) -> Result<Client> {
        let client = Self::client(config).await;
        if client.config().region().is_none() {
            return Err(Error::InvalidArgument(
                "DynamoDB needs an AWS region: set AWS_REGION (e.g. us-east-1) or a region in the AWS profile \
                 (DynamoDB Local accepts any)"
                    .into(),
            ));
        }
        Ok(client)
    }
}

/// A store that cannot be reached at all, said in one line with what to check, instead of the SDK's error chain.
pub fn unreachable(config: &DynamoConfig, error: Error) -> Error {
    let Error::Unavailable(detail) = &error else { return error };
    let lower = detail.to_lowercase();
    let cause = if lower.contains("connection refused") {
        "connection refused"
    } else if lower.contains("dns") || lower.contains("failed to lookup") || lower.contains("name or service") {
        "the host name does not resolve"
    } else if lower.contains("timeout") || lower.contains("timed out") {
        "timed out"
    } else if lower.contains("dispatch failure") || lower.contains("io error") {
        "network error"
    } else {
        return error;
    };
    let place = config.endpoint.clone().unwrap_or_else(|| "the regional DynamoDB endpoint".into());
    Error::Unavailable(format!(
        "cannot reach DynamoDB at {place}: {cause}; check --dynamodb-endpoint (PRINCIPALD_DYNAMODB_ENDPOINT), the \
         network and the AWS credentials"
    ))
}
