//! principald: `serve`, `bootstrap`, `migrate` or `agent`. Parses configuration, sets up logging, and calls the library.

use std::process::ExitCode;

use clap::Parser;
use principald::config::{Cli, Command, EXIT_CONFIG, LogArgs, LogFormat};
use principald::error::Error;
use principald::{bootstrap, server};

fn main() -> ExitCode {
    principald::install_crypto_provider();
    // Connection caps, not the default soft limit of 1024 descriptors, should decide how many clients fit.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!(
                "principald: configuration error: {} (see principald --help)",
                principald::config::usage_line(&e)
            );
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if let Err(message) = init_logging(&cli.log) {
        eprintln!("principald: {message}");
        return ExitCode::from(EXIT_CONFIG as u8);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("principald: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("principald: configuration error: {message}");
            ExitCode::from(EXIT_CONFIG as u8)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("principald: {message}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// Bad flags or environment: exit 64 before any port is bound.
    Config(String),
    Runtime(String),
}

/// Failures after configuration was validated (files, ports, the store) exit 1, not 64.
fn runtime_failure(e: Error) -> Failure {
    Failure::Runtime(e.to_string())
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve(args) => {
            let config = args.validate().map_err(|e| Failure::Config(e.to_string()))?;
            let running = server::start(config).await.map_err(runtime_failure)?;
            if let Some(profile) = &running.bootstrapped_profile {
                println!("principald bootstrapped an empty data dir. Admin profile: {}", profile.display());
                println!("Try: principalctl --profile {} whoami", profile.display());
            }
            shutdown_signal().await;
            running.shutdown().await;
            Ok(())
        }
        Command::Bootstrap(args) => {
            let config = args.validate().map_err(|e| Failure::Config(e.to_string()))?;
            let store = config.store.open().await.map_err(runtime_failure)?;
            let outcome = bootstrap::run(&config, store).await.map_err(runtime_failure)?;
            if outcome.created.is_empty() {
                println!("already bootstrapped; nothing changed (use --force to replace the CA and admin credentials)");
            }
            for step in &outcome.created {
                println!("created {step}");
            }
            println!("admin profile: {}", outcome.admin_profile.display());
            Ok(())
        }
        Command::Agent(args) => {
            let config = args.validate().map_err(|e| Failure::Config(e.to_string()))?;
            principald::agent::run(config, shutdown_signal()).await.map_err(runtime_failure)
        }
        Command::Migrate(args) => {
            let store = args.store.validate(&args.data.data_dir).map_err(|e| Failure::Config(e.to_string()))?;
            let changes = store.migrate().await.map_err(runtime_failure)?;
            for change in &changes {
                println!("{change}");
            }
            println!("store schema is up to date");
            Ok(())
        }
    }
}

fn init_logging(log: &LogArgs) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.log_level)
        .map_err(|e| format!("configuration error: invalid --log-level {:?}: {e}", log.log_level))?;
    // Colors only for a person at a terminal, and never with NO_COLOR set (no-color.org): logs shipped from a pipe
    // or a file carry no escape codes.
    let colors = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colors);
    match log.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}
