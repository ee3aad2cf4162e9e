//! Answers an oversized request message with RESOURCE_EXHAUSTED, the code gRPC specifies for it. tonic enforces each
//! service's `max_decoding_message_size` but reports the breach as OUT_OF_RANGE with its own wording; this layer
//! rewrites exactly that answer (a trailers-only response) and passes everything else through untouched.

use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::codegen::http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

/// `grpc-message` is percent-encoded on the wire (spaces included); decoding is enough for the prefix comparison.
fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// What tonic's decoder says when a message exceeds the limit.
const TONIC_TOO_LARGE: &[u8] = b"Error, decoded message length too large";
const OUT_OF_RANGE: &[u8] = b"11";
const RESOURCE_EXHAUSTED: &str = "8";

/// See the module docs; `limit` only words the message.
#[derive(Clone, Copy, Debug)]
pub struct OversizeLayer {
    limit: usize,
}

impl OversizeLayer {
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner, limit: self.limit }
    }
}

/// The service [`OversizeLayer`] wraps.
#[derive(Clone, Debug)]
pub struct Oversize<S> {
    inner: S,
    limit: usize,
}

impl<S, B> Service<Request<B>> for Oversize<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        let limit = self.limit;
        Box::pin(async move {
            let mut response = future.await?;
            let headers = response.headers_mut();
            let too_large = headers.get("grpc-status").is_some_and(|s| s.as_bytes() == OUT_OF_RANGE)
                && headers
                    .get("grpc-message")
                    .is_some_and(|m| percent_decoded(m.as_bytes()).starts_with(TONIC_TOO_LARGE));
            if too_large {
                headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
                let message = format!("request message too large: at most {limit} bytes are accepted");
                if let Ok(value) = HeaderValue::from_str(&message) {
                    headers.insert("grpc-message", value);
                }
            }
            Ok(response)
        })
    }
}
