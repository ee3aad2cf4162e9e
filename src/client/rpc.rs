//! Connecting to principald with a profile's credentials, and every failure as one line a person can act on.

use tonic::transport::Channel;
use tonic::{Code, Status};

use super::Credentials;
use crate::proto::principal_service_client::PrincipalServiceClient;

/// A PrincipalService client over mTLS with `credentials`; a connection failure explained in one line.
pub async fn connect(server: &str, credentials: &Credentials) -> Result<PrincipalServiceClient<Channel>, String> {
    let endpoint = super::endpoint(server, credentials).map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| explain_transport(server, &e))?;
    Ok(PrincipalServiceClient::new(channel))
}

fn explain_transport(server: &str, error: &tonic::transport::Error) -> String {
    let chain = error_chain(error);
    let lower = chain.to_lowercase();
    if lower.contains("connection refused") {
        format!("cannot connect to {server}: connection refused (is principald running there?)")
    } else if lower.contains("unknownissuer") || lower.contains("unknown issuer") || lower.contains("badsignature") {
        format!("{server} presented a certificate not signed by the profile's CA: check ca_cert in the profile")
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        format!("{server}'s certificate does not cover this host name: use a name from its --server-name list")
    } else if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        format!(
            "{server} does not speak TLS: is that the health port (plain HTTP)? use principald's gRPC port (--listen, \
             default 8443)"
        )
    } else if lower.contains("dns error") || lower.contains("failed to lookup") {
        format!("cannot resolve the host in {server}")
    } else if lower.contains("timed out") || lower.contains("elapsed") {
        format!("cannot connect to {server}: timed out")
    } else {
        format!("cannot connect to {server}: {chain}")
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}

/// One line for a failed call to `server`.
pub fn explain(server: &str, status: &Status) -> String {
    let message = status.message();
    match status.code() {
        Code::Unauthenticated => format!("not authenticated: {message}"),
        Code::PermissionDenied => format!("permission denied: {message}"),
        Code::InvalidArgument => format!("invalid request: {message}"),
        Code::NotFound => message.to_owned(),
        Code::AlreadyExists => message.to_owned(),
        Code::FailedPrecondition => format!("not possible now: {message}"),
        Code::Unavailable if message.contains("error trying to connect") || message.contains("transport") => {
            format!("cannot reach {server}: {message}")
        }
        Code::Unavailable => format!("server unavailable, retry later: {message}"),
        Code::DeadlineExceeded => format!("{server} did not answer in time"),
        Code::ResourceExhausted => format!("rate limited: {message}"),
        // Under TLS 1.3 a client certificate the server rejects only shows on the first call, as a transport error
        // (or, depending on timing, as a call cancelled by the closing connection).
        Code::Unknown | Code::Internal | Code::Cancelled
            if message.contains("transport error")
                || message.contains("h2 protocol error")
                || message.contains("operation was canceled")
                || message.contains("connection reset") =>
        {
            format!(
                "{server} rejected the TLS connection: the profile's client certificate is expired, not yet valid, or from another CA"
            )
        }
        code => format!("{code:?}: {message}"),
    }
}
