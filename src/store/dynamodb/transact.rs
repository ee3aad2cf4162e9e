//! Running TransactWriteItems: retries of conflicts, the reasons a transaction was cancelled, and the mapping of SDK
//! failures to [`Error`].

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::TransactWriteItem;

use super::DynamoStore;
use crate::error::Error;

impl DynamoStore {
    /// Runs a transaction. Cancellations caused only by conflicting concurrent transactions (every withdrawal writes
    /// the one epoch item) are retried a few times with jittered backoff; the SDK's client request token keeps each
    /// attempt idempotent.
    pub(super) async fn transact(&self, items: Vec<TransactWriteItem>) -> std::result::Result<(), TransactionFailure> {
        let mut attempt = 0u32;
        loop {
            let failure = match self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await
            {
                Ok(_) => return Ok(()),
                Err(e) => match e.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(c)) => TransactionFailure::Cancelled(
                        c.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_owned()).collect(),
                    ),
                    _ => return Err(TransactionFailure::Error(sdk_error("TransactWriteItems", e))),
                },
            };
            attempt += 1;
            if !failure.only_conflicts() || attempt >= 5 {
                return Err(failure);
            }
            let mut jitter = [0u8; 1];
            let _ = aws_lc_rs::rand::fill(&mut jitter);
            tokio::time::sleep(Duration::from_millis(u64::from(10 * attempt) + u64::from(jitter[0] % 20))).await;
        }
    }
}

/// Why a transaction did not commit.
pub(super) enum TransactionFailure {
    /// Cancelled; one DynamoDB reason code per item (`None` for items that were fine).
    Cancelled(Vec<String>),
    Error(Error),
}

impl TransactionFailure {
    /// Cancelled only because other transactions touched the same items at the same time.
    pub(super) fn only_conflicts(&self) -> bool {
        matches!(self, Self::Cancelled(reasons)
            if reasons.iter().any(|r| r == "TransactionConflict")
                && reasons.iter().all(|r| r == "TransactionConflict" || r == "None"))
    }

    pub(super) fn failed_condition(&self, index: usize) -> bool {
        matches!(self, Self::Cancelled(reasons) if reasons.get(index).is_some_and(|r| r == "ConditionalCheckFailed"))
    }

    pub(super) fn into_error(self) -> Error {
        match self {
            Self::Error(e) => e,
            Self::Cancelled(reasons) if reasons.iter().any(|r| r == "TransactionConflict") => {
                Error::Unavailable("dynamodb transaction kept conflicting with concurrent writes".into())
            }
            Self::Cancelled(reasons)
                if reasons.iter().any(|r| r == "ThrottlingError" || r == "ProvisionedThroughputExceeded") =>
            {
                Error::Unavailable("dynamodb throttled the transaction".into())
            }
            Self::Cancelled(reasons) => Error::Internal(format!("dynamodb transaction cancelled: {reasons:?}")),
        }
    }
}

/// Maps an SDK failure: transport problems, timeouts, throttling and missing tables are `Unavailable` (the caller
/// may retry; readiness turns 503); anything else is `Internal`. Details go to the log via the status mapping.
pub fn sdk_error<E, R>(operation: &str, error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let detail = format!("dynamodb {operation}: {}", DisplayErrorContext(&error));
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Error::Unavailable(detail)
        }
        SdkError::ServiceError(service) => match service.err().code() {
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "ResourceNotFoundException"
                | "TransactionInProgressException",
            ) => Error::Unavailable(detail),
            _ => Error::Internal(detail),
        },
        _ => Error::Internal(detail),
    }
}
