//! `principalctl audit ...`: list, watch and verify the audit log. `-o json` prints one JSON object per line (JSON
//! lines, what a SIEM ingests); the table is for people.

use std::time::Duration;

use clap::Subcommand;
use principald::audit::chain::Verifier;
use principald::audit::checkpoint::{Checkpoint, Found};
use principald::audit::checkpoint_source::Location;
use principald::proto::{self as pb};
use principald::service::audit::{event_from_wire, head_from_wire};
use serde_json::{Value, json};

use crate::output::{self, Format};
use crate::rpc::Context;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List events: by default the most recent --limit of them (oldest of those first, like `journalctl -n`); with
    /// --since or --from-start, forward from there.
    List {
        /// From this time on: RFC 3339 (2026-11-23T10:00:00Z) or an age such as 1h or 7d.
        #[arg(long)]
        since: Option<String>,
        /// From the first event on.
        #[arg(long, conflicts_with = "since")]
        from_start: bool,
        /// Before this time (same forms as --since).
        #[arg(long)]
        until: Option<String>,
        /// Only changes made by this principal id.
        #[arg(long)]
        actor: Option<String>,
        /// Only events about this principal id, certificate serial or fingerprint.
        #[arg(long)]
        target: Option<String>,
        /// Only this event type, e.g. certificate.issued (an unknown type is refused with the list of known ones).
        #[arg(long = "type")]
        kind: Option<String>,
        /// At most this many events (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print events as they are written. Reconnects and resumes where it stopped if the connection drops.
    Watch {
        /// Start after this position (an event's "position"); default: from the beginning.
        #[arg(long)]
        position: Option<String>,
        /// Start with the events written from now on.
        #[arg(long, conflicts_with = "position")]
        from_now: bool,
        /// Stop once the events written so far have been printed.
        #[arg(long)]
        no_follow: bool,
    },
    /// Recompute every hash chain and report the first broken link of each (exit status 1 if any).
    Verify {
        /// Also check the store against the signed checkpoints in this directory or S3 prefix (`principald
        /// --audit-checkpoints`; S3 with the standard AWS credentials, needing s3:ListBucket and s3:GetObject): every
        /// chain they name must still exist, reach the checkpointed position and hash to the checkpointed value
        /// there. Only checkpoints signed by the profile's CA count.
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        checkpoints: Option<String>,
    },
}

pub async fn run(ctx: &Context, command: Command) -> Result<(), String> {
    match command {
        Command::List { since, from_start, until, actor, target, kind, limit } => {
            let newest_first = since.is_none() && !from_start;
            let request = pb::ListAuditEventsRequest {
                newest_first,
                since: since.as_deref().map(moment).transpose()?,
                until: until.as_deref().map(moment).transpose()?,
                actor: actor.unwrap_or_default(),
                target: target.unwrap_or_default(),
                r#type: kind.unwrap_or_default(),
                page_size: 0,
                page_token: String::new(),
            };
            list(ctx, request, limit).await
        }
        Command::Watch { position, from_now, no_follow } => {
            watch(ctx, position.unwrap_or_default(), from_now, !no_follow).await
        }
        Command::Verify { checkpoints } => {
            let location = checkpoints.map(|text| text.parse::<Location>()).transpose().map_err(|e| e.to_string())?;
            verify(ctx, location.as_ref()).await
        }
    }
}

async fn list(ctx: &Context, mut request: pb::ListAuditEventsRequest, limit: usize) -> Result<(), String> {
    let mut client = ctx.client().await?;
    let mut events = Vec::new();
    loop {
        let left = if limit == 0 { 1000 } else { (limit - events.len()).min(1000) };
        request.page_size = i32::try_from(left).unwrap_or(1000);
        let page = client.list_audit_events(request.clone()).await.map_err(|s| ctx.explain(s))?.into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() || (limit != 0 && events.len() >= limit) {
            break;
        }
        request.page_token = page.next_page_token;
    }
    // The most recent events were fetched newest first; they are shown in the order they happened.
    if request.newest_first {
        events.reverse();
    }
    match ctx.format {
        Format::Json => events.iter().for_each(|e| println!("{}", to_json(e))),
        Format::Table => output::table(&HEADER, &events.iter().map(row).collect::<Vec<_>>()),
    }
    Ok(())
}

async fn watch(ctx: &Context, mut position: String, mut from_now: bool, follow: bool) -> Result<(), String> {
    let mut failures = 0u32;
    if ctx.format == Format::Table {
        println!("{}", [HEADER.as_slice(), &["POSITION"]].concat().join("  "));
    }
    loop {
        let request = pb::WatchAuditEventsRequest { position: position.clone(), from_now, follow };
        let stream = match ctx.client().await {
            Ok(mut client) => client.watch_audit_events(request).await.map_err(|s| ctx.explain(s)),
            Err(e) => Err(e),
        };
        let mut stream = match stream {
            Ok(stream) => stream.into_inner(),
            Err(e) if follow && failures < 60 => {
                failures += 1;
                eprintln!("principalctl: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(u64::from(failures.min(10)))).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    failures = 0;
                    from_now = false;
                    position.clone_from(&event.position);
                    match ctx.format {
                        Format::Json => println!("{}", to_json(&event)),
                        Format::Table => println!("{}  {}", row(&event).join("  "), event.position),
                    }
                }
                Ok(None) if !follow => return Ok(()),
                Ok(None) => break,
                Err(status) if follow && failures < 60 => {
                    failures += 1;
                    eprintln!("principalctl: {}; resuming", ctx.explain(status));
                    tokio::time::sleep(Duration::from_secs(u64::from(failures.min(10)))).await;
                    break;
                }
                Err(status) => return Err(ctx.explain(status)),
            }
        }
    }
}

/// The checkpoints at `location` signed by the profile's CA (the last certificate of its CA file).
async fn trusted_checkpoints(ctx: &Context, location: &Location) -> Result<Vec<Checkpoint>, String> {
    let ca_path = ctx.profile.ca_cert_path();
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(|e| format!("cannot read {}: {e}", ca_path.display()))?;
    let root =
        pem::parse_many(ca_pem).ok().and_then(|mut c| c.pop()).ok_or("the profile's CA file holds no certificate")?;
    let notes = location.read_notes().await.map_err(|e| format!("--checkpoints: {e}"))?;
    let (mut trusted, mut ignored) = (Vec::new(), 0);
    for (_, text) in notes {
        match Checkpoint::open(&text, root.contents()) {
            Ok(checkpoint) => trusted.push(checkpoint),
            Err(_) => ignored += 1,
        }
    }
    if ignored > 0 {
        eprintln!("ignored {ignored} file(s) in {location} that are not checkpoints signed by this CA");
    }
    if trusted.is_empty() {
        return Err(format!("no audit checkpoint signed by this CA in {location}"));
    }
    Ok(trusted)
}

async fn verify(ctx: &Context, checkpoints: Option<&Location>) -> Result<(), String> {
    let checkpoints = match checkpoints {
        Some(location) => trusted_checkpoints(ctx, location).await?,
        None => Vec::new(),
    };
    let mut found = Found::wanting(&checkpoints);
    let mut client = ctx.client().await?;
    let heads = client.list_audit_chains(pb::ListAuditChainsRequest {}).await.map_err(|s| ctx.explain(s))?;
    let heads: Vec<_> = heads.into_inner().chains.into_iter().map(head_from_wire).collect();
    let mut verifier = Verifier::new(&heads);
    let request = pb::WatchAuditEventsRequest { position: String::new(), from_now: false, follow: false };
    let mut stream = client.watch_audit_events(request).await.map_err(|s| ctx.explain(s))?.into_inner();
    while let Some(event) = stream.message().await.map_err(|s| ctx.explain(s))? {
        verifier.push(&event_from_wire(event));
    }
    let mut report = verifier.finish();
    // A deleted head hides its chain from the read above: list every event and name chains nobody heads.
    let mut seen: Vec<(String, u64)> = Vec::new();
    let mut request = pb::ListAuditEventsRequest { page_size: 1000, ..Default::default() };
    loop {
        let page = crate::rpc::retrying(|| {
            let (mut client, request) = (client.clone(), request.clone());
            async move { client.list_audit_events(request).await }
        })
        .await
        .map_err(|s| ctx.explain(s))?
        .into_inner();
        for event in &page.events {
            found.add(&event.chain, event.seq, &event.hash);
        }
        seen.extend(page.events.into_iter().map(|e| (e.chain, e.seq)));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let headless = principald::audit::chain::headless(&heads, seen.iter().map(|(c, s)| (c.as_str(), *s)));
    report.chains += headless.len();
    report.broken.extend(headless);
    report.broken.extend(principald::audit::checkpoint::check(&checkpoints, &found));
    match ctx.format {
        Format::Json => output::print_json(&json!({
            "chains": report.chains,
            "events": report.events,
            "intact": report.broken.is_empty(),
            "broken": report.broken.iter().map(|b| json!({ "chain": b.chain, "position": b.seq, "problem": b.problem })).collect::<Vec<_>>(),
        })),
        Format::Table if report.broken.is_empty() => {
            println!("audit log intact: {} events in {} chains", report.events, report.chains)
        }
        Format::Table => {
            for broken in &report.broken {
                println!("{broken}");
            }
        }
    }
    if report.broken.is_empty() {
        Ok(())
    } else {
        Err(format!("the audit log does not verify: {} chain(s) broken", report.broken.len()))
    }
}

/// RFC 3339, or an age (`1h`: an hour ago).
fn moment(text: &str) -> Result<prost_types::Timestamp, String> {
    let t = match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let age = principald::config::parse_duration(text).map_err(|e| {
                format!("invalid time {text:?}: RFC 3339 (2026-11-23T10:00:00Z) or an age such as 1h ({e})")
            })?;
            time::OffsetDateTime::now_utc() - age
        }
    };
    Ok(prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: i32::try_from(t.nanosecond()).unwrap_or(0) })
}

fn time_of(event: &pb::AuditEvent) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.time_ms) * 1_000_000).ok();
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_default()
}

const HEADER: [&str; 7] = ["TIME", "TYPE", "ACTOR", "TARGET", "SOURCE", "OUTCOME", "DETAILS"];

fn row(event: &pb::AuditEvent) -> Vec<String> {
    let actor = event.actor.clone().unwrap_or_default();
    vec![
        time_of(event),
        event.r#type.clone(),
        format!("{} ({})", actor.principal_id, actor.principal_type),
        event.target.clone(),
        if event.source_address.is_empty() { "-".into() } else { event.source_address.clone() },
        event.outcome.clone(),
        details(&event.details_json),
    ]
}

/// The details an operator reads first (reason, count, ...) as `key=value` pairs, in one cell.
fn details(json: &str) -> String {
    const WIDTH: usize = 80;
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(json) else { return String::new() };
    let pairs: Vec<String> = map
        .iter()
        .filter(|(k, _)| k.as_str() != "note")
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    let text = pairs.join(" ");
    if text.chars().count() > WIDTH { format!("{}…", text.chars().take(WIDTH - 1).collect::<String>()) } else { text }
}

fn to_json(event: &pb::AuditEvent) -> Value {
    let actor = event.actor.clone().unwrap_or_default();
    let mut value = json!({
        "id": event.id,
        "time": time_of(event),
        "time_ms": event.time_ms,
        "type": event.r#type,
        "actor": {
            "principal_id": actor.principal_id,
            "principal_type": actor.principal_type,
            "certificate_serial": actor.certificate_serial,
            "certificate_sha256": actor.certificate_sha256,
        },
        "source_address": event.source_address,
        "replica": event.replica,
        "rpc": event.rpc,
        "target": event.target,
        "outcome": event.outcome,
        "details": serde_json::from_str::<Value>(&event.details_json).unwrap_or(Value::String(event.details_json.clone())),
        "chain": event.chain,
        "seq": event.seq,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    });
    if !event.position.is_empty() {
        value["position"] = event.position.clone().into();
    }
    value
}
