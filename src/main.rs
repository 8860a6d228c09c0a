//! The `seatledger` command.

use clap::{Parser, Subcommand};
use seatledger::config::{LogFormat, ServeSettings, StoreSettings};
use seatledger::store::Store;
use tracing_subscriber::EnvFilter;

/// seatledger: event-sourced books for Microsoft 365 licences.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP service (migrates the store first).
    Serve(ServeSettings),
    /// Applies the store's schema migrations (PostgreSQL or SQLite, by DATABASE_URL).
    Migrate {
        #[command(flatten)]
        store: StoreSettings,
    },
    /// Prints the default offer catalog (the offers of the partner guides) as JSON.
    Offers,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(settings) => {
            init_logging(settings.log_format);
            let (state, generated) = seatledger::start(&settings).await?;
            if let Some(token) = generated {
                // Shown once on the terminal, never logged: only its hash is stored.
                println!("No admin token was configured; generated one (shown only now):\n\n    {token}\n\nSet SEATLEDGER_ADMIN_TOKEN to choose your own.");
            }
            let listener = tokio::net::TcpListener::bind(&settings.bind).await?;
            seatledger::http::serve(listener, state, shutdown_signal()).await?;
        }
        Command::Migrate { store } => {
            let opened = Store::connect(&store.database_url).await?;
            opened.migrate().await?;
            println!(
                "{} schema is up to date at {}",
                opened.backend(),
                seatledger::store::redact(&store.database_url)
            );
        }
        Command::Offers => {
            let offers: Vec<_> = aggregates::catalog::default_catalog()
                .offers()
                .cloned()
                .collect();
            println!("{}", serde_json::to_string_pretty(&offers)?);
        }
    }
    Ok(())
}
