//! (t) Tokens and enrollment: IssueToken against WhoAmI on the same server and connection shape, a resource server's
//! request with a verified bound token against the same request with the certificate alone, and enrollments per
//! second (anonymous connection, token consumed with the certificate in one write).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use principald::client::Credentials;
use principald::proto as pb;

use crate::report::Row;
use crate::{STREAMS, connect, csr, load, procs};

const AUDIENCE: &str = "https://bench.example";

mod echo {
    tonic::include_proto!("example.v1");
}

pub async fn tokens(rows: &mut Vec<Row>, tmp: &Path, store_args: Vec<String>, duration: Duration) {
    let data = tmp.join("tokens");
    procs::bootstrap(&data, &store_args);
    let mut args = store_args.clone();
    args.extend(["--token-audience".into(), AUDIENCE.into(), "--auth-cache-ttl".into(), "10s".into()]);
    let server = procs::principald(&data, &args);
    let admin = crate::admin_credentials(&data);
    let url = server.url();
    let worker = crate::enroll(&url, &admin, "token-worker", 1).await.remove(0);

    // IssueToken vs WhoAmI, alternating slices on one connection each.
    let (mut issue, mut whoami) = (load::Stats::default(), load::Stats::default());
    let slice = duration / 4;
    for _ in 0..4 {
        whoami.merge(crate::whoami_stats(&url, &worker, STREAMS, slice).await);
        let client = connect(&url, &worker).await;
        issue.merge(
            load::run(STREAMS, slice, move |_, _| {
                let mut c = client.clone();
                async move {
                    let request = pb::IssueTokenRequest { audience: AUDIENCE.into(), ..Default::default() };
                    c.issue_token(request).await.is_ok()
                }
            })
            .await,
        );
    }
    rows.push(
        Row::new("t", format!("IssueToken over mTLS, {STREAMS} streams"), issue.rate(), "token/s")
            .baseline("WhoAmI, same server and shape (same run)", whoami.rate())
            .min_ratio(0.5)
            .note(format!(
                "p50/p99 {:.2}/{:.2} ms, {} errors",
                issue.percentile_ms(50.0),
                issue.percentile_ms(99.0),
                issue.errors
            )),
    );

    // A resource server on the same store: a request with a verified bound token vs the certificate alone.
    let token = connect(&url, &worker)
        .await
        .issue_token(pb::IssueTokenRequest { audience: AUDIENCE.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let echo_url = resource_server(&data, &store_args).await;
    let (mut with_token, mut cert_only) = (load::Stats::default(), load::Stats::default());
    for _ in 0..4 {
        cert_only.merge(echo_stats(&echo_url, &worker, None, slice).await);
        with_token.merge(echo_stats(&echo_url, &worker, Some(token.clone()), slice).await);
    }
    rows.push(
        Row::new(
            "t",
            format!("resource server request with a verified bound token, {STREAMS} streams"),
            with_token.rate(),
            "req/s",
        )
        .baseline("same request, certificate only (same run)", cert_only.rate())
        .min_ratio(0.8)
        .note(format!("{} errors", with_token.errors)),
    );

    // Enrollment: tokens made beforehand, then enrolled concurrently over anonymous connections.
    let enrolled = enrollments(&url, &admin, &data, duration).await;
    rows.push(Row::new(
        "t",
        "Enroll end to end (token + CSR -> certificate), 8 streams, 2000 enrollments",
        enrolled,
        "enroll/s",
    ));
}

async fn echo_stats(url: &str, creds: &Credentials, token: Option<String>, duration: Duration) -> load::Stats {
    let channel = principald::client::endpoint(url, creds).unwrap().connect().await.unwrap();
    let client = echo::echo_client::EchoClient::new(channel);
    load::run(STREAMS, duration, move |_, _| {
        let (mut c, token) = (client.clone(), token.clone());
        async move {
            let mut request = tonic::Request::new(echo::EchoRequest { message: "x".into() });
            if let Some(token) = token {
                request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            }
            c.echo(request).await.is_ok()
        }
    })
    .await
}

/// The example resource server in this process, on the bench server's store and certificates.
async fn resource_server(data: &Path, store_args: &[String]) -> String {
    use principald::auth::Requirement;
    struct Echo;
    #[tonic::async_trait]
    impl echo::echo_server::Echo for Echo {
        async fn echo(
            &self,
            request: tonic::Request<echo::EchoRequest>,
        ) -> Result<tonic::Response<echo::EchoResponse>, tonic::Status> {
            let message = request.into_inner().message;
            Ok(tonic::Response::new(echo::EchoResponse { message, caller: String::new() }))
        }
    }
    let store = match store_args.iter().position(|a| a == "--dynamodb-endpoint") {
        Some(_) => crate::stores::open_dynamodb(store_args).await,
        None => principald::store::StoreConfig::sqlite_in(data).open().await.unwrap(),
    };
    let issuer = "spiffe://principald.local";
    let bound = principald::resource_server::ResourceServer::new(data, store)
        .allow_method("example.v1.Echo", "Echo", Requirement::Authenticated)
        .bearer_tokens(issuer, AUDIENCE, false)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}", bound.local_addr().port());
    tokio::spawn(
        bound.serve(tonic::service::Routes::new(echo::echo_server::EchoServer::new(Echo)), std::future::pending()),
    );
    url
}

/// Enrollments per second: `ENROLLMENTS` principals and tokens made first (not timed), then all enrolled by 8
/// concurrent anonymous clients; the rate is enrollments over the time they took.
async fn enrollments(url: &str, admin: &Credentials, data: &Path, _duration: Duration) -> f64 {
    const ENROLLMENTS: usize = 2000;
    let client = connect(url, admin).await;
    let mut makers = tokio::task::JoinSet::new();
    for stream in 0..8 {
        let mut client = client.clone();
        makers.spawn(async move {
            let mut made = Vec::new();
            for i in (stream..ENROLLMENTS).step_by(8) {
                let id = format!("enrollee-{i:05}");
                let kind = pb::PrincipalType::Worker.into();
                let request = pb::CreatePrincipalRequest { id: id.clone(), r#type: kind, ..Default::default() };
                client.create_principal(request).await.unwrap();
                let request = pb::CreateEnrollmentTokenRequest { principal_id: id.clone(), ..Default::default() };
                made.push((id, client.create_enrollment_token(request).await.unwrap().into_inner().secret));
            }
            made
        });
    }
    let mut tokens = Vec::with_capacity(ENROLLMENTS);
    while let Some(made) = makers.join_next().await {
        tokens.extend(made.unwrap());
    }
    let ca_pem = std::fs::read_to_string(principald::datadir::DataDir::new(data).ca_cert()).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem))
        .domain_name("localhost");
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().tls_config(tls).unwrap();
    let anonymous = pb::principal_service_client::PrincipalServiceClient::new(endpoint.connect().await.unwrap());
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new((0..64).map(|_| csr().1).collect());
    let queue = Arc::new(std::sync::Mutex::new(tokens));
    let started = std::time::Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (mut c, queue, csrs) = (anonymous.clone(), queue.clone(), csrs.clone());
        workers.spawn(async move {
            let mut ok = 0usize;
            loop {
                let Some((id, secret)) = queue.lock().unwrap().pop() else { return ok };
                let csr = csrs[ok % csrs.len()].clone();
                let request = pb::EnrollRequest { principal_id: id, secret, csr, validity_seconds: 0 };
                match c.enroll(request).await {
                    Ok(_) => ok += 1,
                    Err(status) => eprintln!("   enroll failed: {status}"),
                }
            }
        });
    }
    let mut ok = 0;
    while let Some(done) = workers.join_next().await {
        ok += done.unwrap();
    }
    ok as f64 / started.elapsed().as_secs_f64()
}
