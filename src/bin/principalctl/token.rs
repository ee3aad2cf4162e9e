//! `principalctl token ...`: get an access token bound to the profile's certificate, or check one (for debugging):
//! its signature against the JWKS, its claims, and its binding to a certificate.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Subcommand};
use principald::proto::{self as pb};
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::output::{self, Format};
use crate::rpc::{self, Context};

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    verify: Option<Verify>,
    /// The audience the token is for (one of the server's --token-audience).
    #[arg(long)]
    audience: Option<String>,
    /// A permission to carry (repeatable); all of the profile's type's when none is given.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Shorter than the server's maximum, e.g. 5m.
    #[arg(long)]
    lifetime: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Verify {
    /// Decode a token and check it: signature against the JWKS (from --jwks, an HTTPS URL trusted with the profile's
    /// CA, or a file), issuer, audience, expiry, and with --cert its binding to that certificate.
    Verify {
        token: String,
        #[arg(long)]
        jwks: String,
        #[arg(long)]
        audience: String,
        #[arg(long)]
        issuer: String,
        /// The certificate the token must be bound to (PEM; the first certificate in the file).
        #[arg(long)]
        cert: Option<PathBuf>,
    },
}

pub async fn run(ctx: &Context, args: TokenArgs) -> Result<(), String> {
    if let Some(Verify::Verify { token, jwks, audience, issuer, cert }) = args.verify {
        return verify(ctx, &token, &jwks, &audience, &issuer, cert.as_deref()).await;
    }
    let audience = args.audience.ok_or("give --audience (one of the server's --token-audience)")?;
    let lifetime = match args.lifetime {
        Some(l) => principald::config::parse_duration(&l).map_err(|e| format!("invalid --lifetime: {e}"))?.as_secs(),
        None => 0,
    };
    let request = pb::IssueTokenRequest { audience, scopes: args.scopes, lifetime_seconds: lifetime };
    let client = ctx.client().await?;
    let issued = rpc::retrying(|| {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.issue_token(request).await }
    })
    .await
    .map_err(|s| ctx.explain(s))?
    .into_inner();
    match ctx.format {
        Format::Json => output::print_json(&json!({
            "access_token": issued.access_token,
            "token_type": issued.token_type,
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        })),
        Format::Table => println!("{}", issued.access_token),
    }
    Ok(())
}

async fn verify(
    ctx: &Context,
    token: &str,
    jwks: &str,
    audience: &str,
    issuer: &str,
    cert: Option<&std::path::Path>,
) -> Result<(), String> {
    let jwks_text = if jwks.starts_with("https://") {
        fetch(jwks, &ctx.profile.ca_cert_path()).await?
    } else {
        std::fs::read_to_string(jwks).map_err(|e| format!("cannot read {jwks}: {e}"))?
    };
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks_text).map_err(|e| format!("not a JWKS: {e}"))?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
    let kid = header.kid.ok_or("the token names no key (kid)")?;
    let jwk = set.find(&kid).ok_or_else(|| format!("key {kid} is not in the JWKS"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.leeway = 30;
    let claims =
        jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| format!("token refused: {e}"))?.claims;
    let mut report = json!({ "valid": true, "kid": kid, "claims": claims });
    if let Some(path) = cert {
        let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let der = pem::parse(&pem).map_err(|e| format!("{}: {e}", path.display()))?.into_contents();
        let thumbprint = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref());
        let bound = claims["cnf"]["x5t#S256"].as_str() == Some(thumbprint.as_str());
        report["bound_to_certificate"] = bound.into();
        if !bound {
            output::print_json(&report);
            return Err(format!("the token is bound to another certificate than {}", path.display()));
        }
    }
    output::print_json(&report);
    Ok(())
}

/// GET `url` over HTTPS trusting only the CA in `ca` (HTTP/1.1, `Connection: close`); the body.
async fn fetch(url: &str, ca: &std::path::Path) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: tonic::codegen::http::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let host = uri.host().ok_or("no host in the JWKS URL")?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {url} failed: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP response from {url}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{url} answered {}", head.lines().next().unwrap_or_default()));
    }
    Ok(body.to_owned())
}
