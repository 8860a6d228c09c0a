//! The service's settings: one struct, from flags or the environment.

use chrono::Duration;
use clap::Args;

use aggregates::CommercialRules;

/// Settings shared by every subcommand that opens the store.
#[derive(Debug, Clone, Args)]
pub struct StoreSettings {
    /// Where events live: `postgres://…` for PostgreSQL, `sqlite:…` for an embedded file.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite:seatledger.db")]
    pub database_url: String,

    /// Hours after a purchase, renewal or addition during which seats may be removed.
    #[arg(
        long,
        env = "SEATLEDGER_CANCELLATION_WINDOW_HOURS",
        default_value_t = 168
    )]
    pub cancellation_window_hours: i64,
}

impl StoreSettings {
    /// The commercial rules with the configured numbers.
    pub fn rules(&self) -> CommercialRules {
        CommercialRules::default()
            .with_cancellation_window(Duration::hours(self.cancellation_window_hours))
    }
}
