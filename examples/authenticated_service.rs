//! Protecting your own tonic service with principald's authentication: callers present principald-issued client
//! certificates; the same `AuthLayer` checks them against principald's store and a permission table you define.
//!
//! Run against a data dir that `principald bootstrap` created (the example reuses its CA and server certificate and
//! opens its SQLite store):
//!
//! ```sh
//! cargo run --example authenticated_service -- ./data 127.0.0.1:9443
//! ```
//!
//! Admins may call Echo out of the box below; give other types the "echo.call" permission with
//! `{"grants": {"service": ["echo.call"]}}` in a permissions file to let them in.
//!
//! As an OAuth resource server (RFC 8705), it also requires a certificate-bound token from principald for its
//! audience, sent as `authorization: Bearer ...` over the same mTLS connection:
//!
//! ```sh
//! cargo run --example authenticated_service -- ./data 127.0.0.1:9443 https://echo.example https://localhost:8444
//! ```
//!
//! (audience, then principald's `--token-issuer`). A token presented over a connection with another certificate, or
//! after its certificate was revoked, is refused.

use principald::auth::{Caller, Requirement};
use principald::model::PrincipalType;
use principald::resource_server::ResourceServer;
use tonic::{Request, Response, Status};

mod echo {
    tonic::include_proto!("example.v1");
}

use echo::echo_server::{Echo, EchoServer};
use echo::{EchoRequest, EchoResponse};

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        // The extractor: who the layer authenticated for this request.
        let caller = Caller::from_request(&request)?;
        let message = request.into_inner().message;
        Ok(Response::new(EchoResponse { message, caller: format!("{} {}", caller.kind, caller.id) }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    principald::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().unwrap_or_else(|| "./data".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9443".into());
    let audience = args.next();
    let issuer = args.next().unwrap_or_else(|| "https://localhost:8444".into());

    // Identity and permissions: principald's store, CA and OIDs, plus a permission only this service checks.
    // Revocations, suspensions and deletions made through principald (any replica) reach this service within a
    // second: the builder follows the store's revocation epoch and drops cached verdicts when it moves.
    let mut server = ResourceServer::open(std::path::Path::new(&data_dir))
        .await?
        .grant(PrincipalType::Admin, "echo.call")
        .allow_method("example.v1.Echo", "Echo", Requirement::Permission("echo.call".into()));
    if let Some(audience) = &audience {
        // Tokens signed by any principald replica verify: their keys are announced in the shared store.
        server = server.bearer_tokens(&issuer, audience, true);
    }
    let server = server.bind(listen.parse()?).await?;
    println!("echo service on {}; call it with a principald admin certificate", server.local_addr());
    server.serve(tonic::service::Routes::new(EchoServer::new(EchoService)), std::future::pending()).await?;
    Ok(())
}
