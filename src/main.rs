//! The `seatledger` command. The HTTP service (`serve`, `migrate`, `demo`) arrives with the
//! service crate; today the command shows the domain's default catalog.

use clap::{Parser, Subcommand};

/// seatledger: event-sourced books for Microsoft 365 licences.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints the default offer catalog (the offers of the partner guides) as JSON.
    Offers,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
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
