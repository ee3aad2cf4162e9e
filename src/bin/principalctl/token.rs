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
pub enum Verify {
    /// Check an access token as a resource server would: its signature against the JWKS, issuer, audience, expiry,
    /// and with --cert its binding to a certificate. Needs no profile. Prints a JSON report whose `valid` is true
    /// exactly when the exit status is 0.
    Verify {
        /// The access token (a JWT), or `-` to read it from stdin.
        token: String,
        /// The JWKS: a file, or an https:// URL (e.g. https://HOST:8445/.well-known/jwks.json) trusted with --cacert
        /// (default: the profile's CA, if there is a profile).
        #[arg(long)]
        jwks: String,
        /// The CA certificate (PEM) that an https:// JWKS URL must chain to.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        /// The audience the token must be for (the resource server's own name).
        #[arg(long)]
        audience: String,
        /// The issuer the token must come from (principald's --token-issuer).
        #[arg(long)]
        issuer: String,
        /// The certificate the token must be bound to (PEM; the first certificate in the file): RFC 8705 cnf.x5t#S256.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
}

impl TokenArgs {
    /// `token verify` needs no profile: run it here if that is what was asked, else hand the arguments back.
    pub async fn verify_without_profile(self, profile: Option<&std::path::Path>) -> Result<Result<(), String>, Self> {
        match self.verify {
            Some(Verify::Verify { token, jwks, cacert, audience, issuer, cert }) => {
                let token = if token == "-" {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                        .map_err(|e| format!("cannot read the token from stdin: {e}"))
                        .map(|_| text.trim().to_owned())
                } else {
                    Ok(token)
                };
                let ca = cacert.or_else(|| principald::client::Profile::load(profile?).ok().map(|p| p.ca_cert_path()));
                let checked = match token {
                    Ok(token) => verify(&token, &jwks, ca.as_deref(), &audience, &issuer, cert.as_deref()).await,
                    Err(e) => Err(Refusal { message: e, claims: Value::Null }),
                };
                Ok(match checked {
                    Ok(report) => {
                        output::print_json(&report);
                        Ok(())
                    }
                    Err(Refusal { message, claims }) => {
                        output::print_json(&json!({ "valid": false, "error": message, "claims": claims }));
                        Err(message)
                    }
                })
            }
            None => Err(self),
        }
    }
}

pub async fn run(ctx: &Context, args: TokenArgs) -> Result<(), String> {
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

/// Why a token was refused, with its claims as far as they could be read (unverified).
struct Refusal {
    message: String,
    claims: Value,
}

/// The token's claims without checking anything: only to say what was wrong with it.
fn unverified_claims(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// What was wrong, naming the expected and the actual values.
fn explain(kind: &jsonwebtoken::errors::ErrorKind, claims: &Value, audience: &str, issuer: &str, kid: &str) -> String {
    use jsonwebtoken::errors::ErrorKind;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let when = |claim: &str| {
        claims[claim]
            .as_i64()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| "never".into())
    };
    match kind {
        ErrorKind::InvalidAudience => format!("the token is for audience {}, not {audience:?}", claims["aud"]),
        ErrorKind::InvalidIssuer => format!("the token was issued by {}, not {issuer:?}", claims["iss"]),
        ErrorKind::ExpiredSignature => format!("the token expired at {} (it is now {now} in Unix time)", when("exp")),
        ErrorKind::ImmatureSignature => format!("the token is not valid before {}", when("nbf")),
        ErrorKind::InvalidSignature => format!("the signature does not verify with key {kid:?} of the JWKS"),
        ErrorKind::InvalidAlgorithm => "the token is not signed with ES256, the only algorithm principald uses".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim:?} claim"),
        other => format!("the token is malformed: {other:?}"),
    }
}

async fn verify(
    token: &str,
    jwks: &str,
    ca: Option<&std::path::Path>,
    audience: &str,
    issuer: &str,
    cert: Option<&std::path::Path>,
) -> Result<Value, Refusal> {
    let claims = unverified_claims(token);
    let refuse = |message: String| Refusal { message, claims: claims.clone() };
    let jwks_text = if jwks.starts_with("https://") {
        let ca = ca.ok_or_else(|| refuse(format!("give --cacert CA.pem to trust {jwks} (or use a profile)")))?;
        fetch(jwks, ca).await.map_err(refuse)?
    } else if jwks.starts_with("http://") {
        return Err(refuse("the JWKS must come over https:// (or from a file)".into()));
    } else {
        std::fs::read_to_string(jwks).map_err(|e| refuse(format!("cannot read the JWKS {jwks}: {e}")))?
    };
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&jwks_text).map_err(|e| refuse(format!("{jwks} is not a JWKS: {e}")))?;
    let header =
        jsonwebtoken::decode_header(token).map_err(|_| refuse("not a JWT (header.payload.signature)".into()))?;
    let kid = header.kid.ok_or_else(|| refuse("the token names no key (kid)".into()))?;
    let jwk = set.find(&kid).ok_or_else(|| {
        let known: Vec<&str> = set.keys.iter().filter_map(|k| k.common.key_id.as_deref()).collect();
        refuse(format!("key {kid:?} is not in the JWKS (it has {known:?}): withdrawn, or another issuer's"))
    })?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| refuse(format!("unusable key {kid:?}: {e}")))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.leeway = 30;
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| refuse(explain(e.kind(), &claims, audience, issuer, &kid)))?
        .claims;
    let mut report = json!({ "valid": true, "kid": kid, "claims": claims });
    if let Some(path) = cert {
        let pem = std::fs::read_to_string(path).map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
        let der = pem::parse(&pem).map_err(|e| refuse(format!("{}: {e}", path.display())))?.into_contents();
        let thumbprint = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref());
        let bound = claims["cnf"]["x5t#S256"].as_str();
        if bound != Some(thumbprint.as_str()) {
            return Err(refuse(format!(
                "the token is bound to the certificate with SHA-256 {}, not to {} ({thumbprint})",
                bound.unwrap_or("(none)"),
                path.display()
            )));
        }
        report["bound_to_certificate"] = true.into();
    }
    Ok(report)
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
