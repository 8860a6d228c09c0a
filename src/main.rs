//! The `seatledger` command.

use clap::{Parser, Subcommand};
use seatledger::config::StoreSettings;
use seatledger::store::Store;

/// seatledger: event-sourced books for Microsoft 365 licences.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Applies the store's schema migrations (PostgreSQL or SQLite, by DATABASE_URL).
    Migrate {
        #[command(flatten)]
        store: StoreSettings,
    },
    /// Prints the default offer catalog (the offers of the partner guides) as JSON.
    Offers,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
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
