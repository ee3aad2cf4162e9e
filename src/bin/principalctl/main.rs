//! principalctl: the command line for principald. Operators manage principals and certificates; every principal can
//! check who it is and renew its own certificate (once, from cron, or continuously with `--watch`).

mod audit;
mod ca;
mod cert;
mod crl;
mod output;
mod principal;
mod renew;
mod rpc;
mod token;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Format;

#[derive(Parser, Debug)]
#[command(name = "principalctl", version, about = "Manage principald principals and certificates")]
struct Cli {
    /// Profile directory (or its profile.json): server address, CA certificate, client certificate and key.
    #[arg(long, env = "PRINCIPALCTL_PROFILE", global = true)]
    profile: Option<PathBuf>,
    /// Override the profile's server address (https://host:port).
    #[arg(long, env = "PRINCIPALCTL_SERVER", global = true)]
    server: Option<String>,
    /// Output format: tables for people, JSON for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show who the server thinks you are and what you may do.
    Whoami,
    /// Create, inspect, suspend, activate and delete principals.
    #[command(subcommand)]
    Principal(principal::Command),
    /// Issue, renew, inspect and revoke certificates.
    #[command(subcommand)]
    Cert(cert::Command),
    /// Inspect and revoke the replica intermediates that sign certificates.
    #[command(subcommand)]
    Ca(ca::Command),
    /// Get this machine's first certificate with a one-time enrollment token (no profile needed): generates the key
    /// here, pins the server by the CA fingerprint in the token, writes a ready profile to --out.
    Enroll {
        /// The string `principalctl principal enroll-token` printed, or `-` to read it from stdin (keeps the secret
        /// off the command line, where `ps` shows it).
        #[arg(required_unless_present = "token_file", conflicts_with = "token_file")]
        token: Option<String>,
        /// Read the token from this file instead.
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = principald::client::keys::KeyType::P256)]
        key_type: principald::client::keys::KeyType,
        /// Overwrite a profile already in --out.
        #[arg(long)]
        force: bool,
    },
    /// Get an access token bound to this profile's certificate (prints it), or `token verify` one.
    Token(token::TokenArgs),
    /// Fetch the CA's certificate revocation lists.
    #[command(subcommand)]
    Crl(crl::Command),
    /// List, watch and verify the audit log.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Workload entries: which processes on which node (`principald agent`) receive certificates for which principal.
    #[command(subcommand)]
    Workload(workload::Command),
}

fn main() -> ExitCode {
    principald::install_crypto_provider();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line and exit 1, like every other failure.
            eprintln!("principalctl: {} (see principalctl --help)", principald::config::usage_line(&e));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("principalctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("principalctl: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Command::Enroll { token, token_file, out, key_type, force } = &cli.command {
        use principald::client::enroll;
        let token = enroll::read_token(token.as_deref(), token_file.as_deref())?;
        let waiting = |status: &tonic::Status, wait: std::time::Duration| rpc::announce_wait(status, wait);
        let enrolled = enroll::enroll(&token, None, out, *key_type, *force, waiting).await?;
        println!(
            "enrolled {} (certificate {}); profile written to {}",
            enrolled.principal_id,
            enrolled.serial,
            out.display()
        );
        return Ok(());
    }
    let command = match cli.command {
        Command::Token(args) => match args.verify_without_profile(cli.profile.as_deref()).await {
            Ok(verified) => return verified,
            Err(args) => Command::Token(args),
        },
        other => other,
    };
    let ctx = rpc::Context::load(cli.profile.as_deref(), cli.server.as_deref(), cli.output)?;
    match command {
        Command::Whoami => {
            let me =
                ctx.client().await?.who_am_i(principald::proto::WhoAmIRequest {}).await.map_err(|s| ctx.explain(s))?;
            output::whoami(ctx.format, &me.into_inner());
            Ok(())
        }
        Command::Principal(command) => principal::run(&ctx, command).await,
        Command::Cert(command) => cert::run(&ctx, command).await,
        Command::Ca(command) => ca::run(&ctx, command).await,
        Command::Audit(command) => audit::run(&ctx, command).await,
        Command::Crl(command) => crl::run(&ctx, command).await,
        Command::Token(args) => token::run(&ctx, args).await,
        Command::Workload(command) => workload::run(&ctx, command).await,
        Command::Enroll { .. } => unreachable!("handled before loading a profile"),
    }
}
