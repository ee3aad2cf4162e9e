//! The crate's one error type. Each variant is a kind of outcome a caller can act on; `From<Error> for Status` below maps
//! each to exactly one gRPC code. Messages of `Unavailable` and `Internal` are logged, never sent to callers.

/// What went wrong, grouped by what the caller can do about it.
mod refusal;
pub use refusal::Refusal;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request itself is wrong; the message says what is allowed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named thing does not exist, e.g. `principal "w1"`.
    #[error("{0} not found")]
    NotFound(String),
    /// The named thing exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The thing exists but is in the wrong state for this request, e.g. a suspended principal.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Authentication refused, for the typed reason (`Unauthenticated` to callers).
    #[error("{0}")]
    Refused(Refusal),
    /// The caller's certificate does not identify an active principal; the message says why.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but lacks a permission.
    #[error("{0}")]
    PermissionDenied(String),
    /// A dependency (the store, or the CA key in KMS or an HSM) cannot be reached or is overloaded, or this replica
    /// is replacing its issuing intermediate; retrying later may work. Internal detail, not for callers.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupt data. Internal detail, not for callers.
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller (or its source address) exceeded a rate limit; it may try again after `retry_after`.
    #[error("{message}; retry in {:.1}s", retry_after.as_secs_f64())]
    RateLimited { message: String, retry_after: std::time::Duration },
}

/// The refusal for a backend this build left out (the `aws` feature: DynamoDB, AWS KMS, S3).
#[cfg(not(feature = "aws"))]
pub(crate) fn without_aws(what: &str) -> Error {
    Error::FailedPrecondition(format!("{what} needs principald built with the `aws` feature (the default)"))
}

impl Error {
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        Self::Internal(format!("{context}: {err}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one mapping from domain errors to gRPC statuses. Internal details are logged here and replaced by a generic
/// message, so callers never see paths, SQL or backend errors.
impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        use tonic::Status;
        match error {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::AlreadyExists(_) => Status::already_exists(error.to_string()),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Refused(r) => Status::unauthenticated(r.to_string()),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::Unavailable(detail) => {
                tracing::warn!(error = %detail, "unavailable");
                Status::unavailable("the server cannot reach its store or CA key right now; retry later")
            }
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Status::internal("internal server error; see the server log")
            }
            Error::RateLimited { retry_after, .. } => rate_limited(&error.to_string(), retry_after),
        }
    }
}

/// RESOURCE_EXHAUSTED with the retry hint twice: gRPC's `grpc-retry-pushback-ms` (which gRPC clients with a retry
/// policy obey) and a `google.rpc.RetryInfo` detail (what `retry_delay`-aware clients read).
fn rate_limited(message: &str, retry_after: std::time::Duration) -> tonic::Status {
    use prost::Message;

    #[derive(Clone, PartialEq, prost::Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<prost_types::Duration>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<prost_types::Any>,
    }
    let millis = retry_after.as_millis().clamp(1, u128::from(u32::MAX));
    let delay =
        prost_types::Duration { seconds: retry_after.as_secs() as i64, nanos: retry_after.subsec_nanos() as i32 };
    let details = RpcStatus {
        code: tonic::Code::ResourceExhausted as i32,
        message: message.to_owned(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: RetryInfo { retry_delay: Some(delay) }.encode_to_vec(),
        }],
    };
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Ok(value) = millis.to_string().parse() {
        metadata.insert(PUSHBACK_HEADER, value);
    }
    tonic::Status::with_details_and_metadata(
        tonic::Code::ResourceExhausted,
        message,
        details.encode_to_vec().into(),
        metadata,
    )
}

/// The trailer in which gRPC servers tell clients how long to wait before retrying (gRFC A6).
pub const PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// The retry hint of a RESOURCE_EXHAUSTED status from principald, if it carries one.
pub fn retry_pushback(status: &tonic::Status) -> Option<std::time::Duration> {
    let millis: u64 = status.metadata().get(PUSHBACK_HEADER)?.to_str().ok()?.parse().ok()?;
    Some(std::time::Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_never_reach_the_caller() {
        let status = tonic::Status::from(Error::Internal("open /secret/path: SQL syntax".into()));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("secret"));
        let status = tonic::Status::from(Error::Unavailable("db at 10.0.0.1 refused".into()));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("10.0.0.1"));
    }

    #[test]
    fn a_rate_limit_carries_its_retry_hint() {
        let retry_after = std::time::Duration::from_millis(1500);
        let status =
            tonic::Status::from(Error::RateLimited { message: "rate limit for token reached".into(), retry_after });
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(retry_pushback(&status), Some(retry_after));
        assert!(status.message().contains("retry in 1.5s"), "{}", status.message());
        assert!(!status.details().is_empty());
    }

    #[test]
    fn each_kind_maps_to_its_code() {
        use tonic::Code;
        let cases = [
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (Error::NotFound("principal \"x\"".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (Error::FailedPrecondition("x".into()), Code::FailedPrecondition),
            (Error::Unauthenticated("x".into()), Code::Unauthenticated),
            (Error::PermissionDenied("x".into()), Code::PermissionDenied),
        ];
        for (error, code) in cases {
            assert_eq!(tonic::Status::from(error).code(), code);
        }
    }
}
