//! A Workload API client over the agent's Unix socket, with the security header every call must carry. For Rust
//! workloads that link principald, the benchmark and the tests (other languages use their SPIFFE library).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;

/// Adds `workload.spiffe.io: true`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecurityHeader;

impl Interceptor for SecurityHeader {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("workload.spiffe.io", tonic::metadata::MetadataValue::from_static("true"));
        Ok(request)
    }
}

pub type WorkloadClient = SpiffeWorkloadApiClient<InterceptedService<Channel, SecurityHeader>>;

/// Connects to the Workload API at `socket`.
pub async fn connect(socket: &Path) -> Result<WorkloadClient, tonic::transport::Error> {
    Ok(SpiffeWorkloadApiClient::with_interceptor(channel(socket).await?, SecurityHeader))
}

/// A channel to the agent's socket (for other services on it, or calls without the header).
pub async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    // The URI is a placeholder: the connector dials the socket.
    Endpoint::from_static("http://localhost").connect_with_connector(Dialer(socket.to_path_buf())).await
}

#[derive(Clone)]
struct Dialer(PathBuf);

impl tower::Service<Uri> for Dialer {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) })
    }
}
