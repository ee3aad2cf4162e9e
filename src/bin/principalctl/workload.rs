//! `principalctl workload ...`: the entries that tell `principald agent` which local processes receive certificates
//! for which principal.

use clap::{Subcommand, ValueEnum};
use principald::proto::{self as pb};
use serde_json::{Value, json};

use crate::output::{self, Format};
use crate::rpc::Context;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    Service,
    Worker,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an entry and its principal: processes on NODE matching every selector receive certificates for ID.
    Create {
        /// The workload's principal id (created with the entry).
        id: String,
        /// The node (a principal of type node running `principald agent`) that serves it.
        #[arg(long)]
        node: String,
        /// unix:uid:N (required), unix:gid:N, unix:path:/ABSOLUTE/PATH, unix:sha256:HEX; repeatable, all must match.
        #[arg(long = "selector", short = 's', required = true)]
        selectors: Vec<String>,
        #[arg(long = "type", short = 't', value_enum, default_value_t = Kind::Service)]
        kind: Kind,
        /// Lifetime of its X.509-SVIDs (30s to 24h).
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(long, short = 'd', default_value = "")]
        description: String,
    },
    /// List entries (every page), of one node with --node.
    List {
        #[arg(long)]
        node: Option<String>,
    },
    /// Show one entry.
    Get { id: String },
    /// Delete an entry and its principal, revoking its certificates.
    Delete { id: String },
}

pub async fn run(ctx: &Context, command: Command) -> Result<(), String> {
    let mut client = ctx.client().await?;
    let explain = |s| ctx.explain(s);
    match command {
        Command::Create { id, node, selectors, kind, ttl, description } => {
            let ttl = principald::config::parse_duration(&ttl).map_err(|e| format!("invalid --ttl: {e}"))?;
            let kind = match kind {
                Kind::Service => pb::PrincipalType::Service,
                Kind::Worker => pb::PrincipalType::Worker,
            };
            let request = pb::CreateWorkloadRequest {
                id,
                node,
                selectors,
                r#type: kind.into(),
                ttl_seconds: ttl.as_secs(),
                description,
            };
            let w = client.create_workload(request).await.map_err(explain)?.into_inner();
            print(ctx.format, &[w]);
        }
        Command::List { node } => {
            let (mut all, mut page_token) = (Vec::new(), String::new());
            loop {
                let request =
                    pb::ListWorkloadsRequest { node: node.clone().unwrap_or_default(), page_size: 500, page_token };
                let page = client.list_workloads(request).await.map_err(explain)?.into_inner();
                all.extend(page.workloads);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            print(ctx.format, &all);
        }
        Command::Get { id } => {
            let w = client.get_workload(pb::GetWorkloadRequest { id }).await.map_err(explain)?.into_inner();
            print(ctx.format, &[w]);
        }
        Command::Delete { id } => {
            let r = client.delete_workload(pb::DeleteWorkloadRequest { id }).await.map_err(explain)?.into_inner();
            match ctx.format {
                Format::Json => output::print_json(&json!({
                    "workload": r.workload.as_ref().map(workload_json),
                    "revoked_certificates": r.revoked_certificates,
                })),
                Format::Table => {
                    print(ctx.format, r.workload.as_slice());
                    println!("revoked {} certificate(s)", r.revoked_certificates);
                }
            }
        }
    }
    Ok(())
}

fn workload_json(w: &pb::Workload) -> Value {
    json!({
        "id": w.id,
        "node": w.node,
        "type": output::principal_type(w.r#type),
        "selectors": w.selectors,
        "ttl_seconds": w.ttl_seconds,
        "spiffe_id": w.spiffe_id,
        "created_at": output::time(&w.create_time),
    })
}

fn print(format: Format, list: &[pb::Workload]) {
    match format {
        Format::Json => list.iter().for_each(|w| output::print_json(&workload_json(w))),
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|w| {
                    vec![
                        w.id.clone(),
                        w.node.clone(),
                        output::principal_type(w.r#type).to_owned(),
                        principald::model::duration::format_duration(std::time::Duration::from_secs(w.ttl_seconds)),
                        w.selectors.join(" "),
                        w.spiffe_id.clone(),
                    ]
                })
                .collect();
            output::table(&["ID", "NODE", "TYPE", "TTL", "SELECTORS", "SPIFFE ID"], &rows);
        }
    }
}
