//! `principalctl ca ...`: the replica intermediates that sign certificates.

use clap::Subcommand;
use principald::proto::{self as pb};
use serde_json::{Value, json};

use crate::output::{self, Format, time};
use crate::rpc::Context;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List every replica's issuing intermediate (newest first).
    Intermediates {
        /// Include expired intermediates.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a (compromised) replica's intermediate: the certificates it signed stop working at once, and the replica
    /// switches to a new intermediate.
    RevokeIntermediate {
        /// SHA-256 fingerprint (64 hex digits) from `principalctl ca intermediates`.
        fingerprint: String,
    },
}

pub async fn run(ctx: &Context, command: Command) -> Result<(), String> {
    let mut client = ctx.client().await?;
    match command {
        Command::Intermediates { all } => {
            let request = pb::ListIntermediatesRequest { include_expired: all };
            let list = client.list_intermediates(request).await.map_err(|s| ctx.explain(s))?.into_inner();
            match ctx.format {
                Format::Json => output::print_json(&Value::Array(list.intermediates.iter().map(to_json).collect())),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list
                        .intermediates
                        .iter()
                        .map(|i| {
                            let status = if i.revoke_time.is_some() { "revoked" } else { "valid" };
                            let n = (i.sha256_fingerprint.clone(), i.replica.clone(), status.into());
                            vec![n.0, n.1, n.2, time(&i.not_before), time(&i.not_after)]
                        })
                        .collect();
                    output::table(&["SHA256", "REPLICA", "STATUS", "NOT BEFORE", "NOT AFTER"], &rows);
                }
            }
        }
        Command::RevokeIntermediate { fingerprint } => {
            let request = pb::RevokeIntermediateRequest { sha256_fingerprint: fingerprint };
            let revoked = client.revoke_intermediate(request).await.map_err(|s| ctx.explain(s))?.into_inner();
            match ctx.format {
                Format::Json => output::print_json(&to_json(&revoked)),
                Format::Table => println!(
                    "revoked intermediate {} of replica {}; certificates it signed no longer authenticate",
                    revoked.sha256_fingerprint, revoked.replica
                ),
            }
        }
    }
    Ok(())
}

fn to_json(i: &pb::Intermediate) -> Value {
    json!({
        "sha256_fingerprint": i.sha256_fingerprint,
        "replica": i.replica,
        "not_before": time(&i.not_before),
        "not_after": time(&i.not_after),
        "revoke_time": i.revoke_time.as_ref().map(|_| time(&i.revoke_time)),
        "certificate_pem": i.certificate_pem,
    })
}
