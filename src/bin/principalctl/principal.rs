//! `principalctl principal ...`

use clap::{Args, Subcommand, ValueEnum};
use principald::proto::{self as pb};

use crate::output;
use crate::rpc::Context;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Type {
    Admin,
    Worker,
    User,
    Service,
    Node,
}

impl Type {
    pub fn wire(self) -> pb::PrincipalType {
        match self {
            Type::Admin => pb::PrincipalType::Admin,
            Type::Worker => pb::PrincipalType::Worker,
            Type::User => pb::PrincipalType::User,
            Type::Service => pb::PrincipalType::Service,
            Type::Node => pb::PrincipalType::Node,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Status {
    Active,
    Suspended,
    Deleted,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EnrollToken {
    /// The principal the token enrolls.
    #[arg(required = true)]
    id: Option<String>,
    /// How long it may be used (at most 7d).
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// The longest validity of the certificate it pays for (and of that certificate's renewals); default: the
    /// type's maximum.
    #[arg(long)]
    max_validity: Option<String>,
    #[command(subcommand)]
    action: Option<EnrollTokenAction>,
}

#[derive(Subcommand, Debug)]
pub enum EnrollTokenAction {
    /// Revoke an unused enrollment token so it can never enroll (`enroll-tokens ID` lists the ids).
    Revoke {
        /// The principal.
        id: String,
        /// The token's id as listed (12 hex digits).
        token_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a one-time enrollment token for a principal (a new worker runs `principalctl enroll - --out DIR` with
    /// it on stdin), or revoke one: `enroll-token revoke ID TOKEN_ID`.
    EnrollToken(EnrollToken),
    /// List a principal's enrollment tokens (never their secrets): id, status, expiry, the certificate a used one
    /// paid for.
    EnrollTokens { id: String },
    /// Create an active principal.
    Create {
        /// 1-64 of lowercase letters, digits, '.', '_', '-'; starts with a letter or digit.
        id: String,
        #[arg(long = "type", short = 't', value_enum)]
        kind: Type,
        #[arg(long, short = 'd', default_value = "")]
        description: String,
        #[arg(long)]
        email: Option<String>,
    },
    /// Show one principal.
    Get { id: String },
    /// List principals (every page).
    List {
        #[arg(long = "type", short = 't', value_enum)]
        kind: Option<Type>,
        #[arg(long, value_enum)]
        status: Option<Status>,
    },
    /// Suspend a principal: its certificates stop working until it is activated.
    Suspend {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Activate a suspended principal.
    Activate { id: String },
    /// Delete a principal for good and revoke all its certificates.
    Delete { id: String },
}

pub async fn run(ctx: &Context, command: Command) -> Result<(), String> {
    let mut client = ctx.client().await?;
    let explain = |s| ctx.explain(s);
    match command {
        Command::EnrollToken(EnrollToken { action: Some(EnrollTokenAction::Revoke { id, token_id }), .. }) => {
            let request = pb::RevokeEnrollmentTokenRequest { principal_id: id, token_id };
            let revoked = client.revoke_enrollment_token(request).await.map_err(explain)?.into_inner();
            output::enrollment_tokens(ctx.format, &[revoked]);
        }
        Command::EnrollTokens { id } => {
            let request = pb::ListEnrollmentTokensRequest { principal_id: id };
            let list = client.list_enrollment_tokens(request).await.map_err(explain)?.into_inner();
            output::enrollment_tokens(ctx.format, &list.tokens);
        }
        Command::EnrollToken(EnrollToken { id, ttl, max_validity, action: None }) => {
            let ttl = principald::config::parse_duration(&ttl).map_err(|e| format!("invalid --ttl: {e}"))?;
            let max_validity = max_validity
                .map(|v| principald::config::parse_duration(&v).map_err(|e| format!("invalid --max-validity: {e}")))
                .transpose()?;
            let request = pb::CreateEnrollmentTokenRequest {
                principal_id: id.unwrap_or_default(),
                ttl_seconds: ttl.as_secs(),
                max_validity_seconds: max_validity.map_or(0, |v| v.as_secs()),
            };
            let created = client.create_enrollment_token(request).await.map_err(explain)?.into_inner();
            let token = principald::client::enroll::encode(&principald::client::enroll::TokenString {
                s: ctx.server.clone(),
                f: created.ca_sha256_fingerprint,
                p: created.principal_id.clone(),
                k: created.secret,
            });
            match ctx.format {
                output::Format::Json => output::print_json(&serde_json::json!({
                    "principal_id": created.principal_id,
                    "id": created.id,
                    "token": token,
                    "expires_at": output::time(&created.expires_at),
                    "max_validity_seconds": created.max_validity_seconds,
                })),
                output::Format::Table => println!("{token}"),
            }
        }
        Command::Create { id, kind, description, email } => {
            let request = pb::CreatePrincipalRequest { id, r#type: kind.wire().into(), description, email };
            let p = client.create_principal(request).await.map_err(explain)?.into_inner();
            output::principal(ctx.format, &p);
        }
        Command::Get { id } => {
            let p = client.get_principal(pb::GetPrincipalRequest { id }).await.map_err(explain)?.into_inner();
            output::principal(ctx.format, &p);
        }
        Command::List { kind, status } => {
            let status = status.map(|s| match s {
                Status::Active => pb::PrincipalStatus::Active,
                Status::Suspended => pb::PrincipalStatus::Suspended,
                Status::Deleted => pb::PrincipalStatus::Deleted,
            });
            let (mut all, mut page_token) = (Vec::new(), String::new());
            loop {
                let request = pb::ListPrincipalsRequest {
                    r#type: kind.map_or(0, |k| k.wire().into()),
                    status: status.map_or(0, Into::into),
                    page_size: 500,
                    page_token,
                };
                let page = client.list_principals(request).await.map_err(explain)?.into_inner();
                all.extend(page.principals);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            output::principals(ctx.format, &all);
        }
        Command::Suspend { id, reason } => {
            let p = client
                .suspend_principal(pb::SuspendPrincipalRequest { id, reason })
                .await
                .map_err(explain)?
                .into_inner();
            output::principal(ctx.format, &p);
        }
        Command::Activate { id } => {
            let p = client.activate_principal(pb::ActivatePrincipalRequest { id }).await.map_err(explain)?.into_inner();
            output::principal(ctx.format, &p);
        }
        Command::Delete { id } => {
            let r = client.delete_principal(pb::DeletePrincipalRequest { id }).await.map_err(explain)?.into_inner();
            match ctx.format {
                output::Format::Json => output::print_json(&serde_json::json!({
                    "principal": r.principal.as_ref().map(output::principal_json),
                    "revoked_certificates": r.revoked_certificates,
                })),
                output::Format::Table => {
                    if let Some(p) = &r.principal {
                        output::principal(ctx.format, p);
                    }
                    println!("revoked {} certificate(s)", r.revoked_certificates);
                }
            }
        }
    }
    Ok(())
}
