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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines, for people.
    Text,
    /// One JSON object per line, for machines.
    Json,
}

/// Settings of `seatledger serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    /// The store.
    #[command(flatten)]
    pub store: StoreSettings,

    /// The address to listen on.
    #[arg(long, env = "SEATLEDGER_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// NATS server to publish events to (JetStream); none: no publishing.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,

    /// Makes the clock settable through POST /v1/sandbox/clock.
    #[arg(long, env = "SEATLEDGER_SANDBOX_CLOCK")]
    pub sandbox_clock: bool,

    /// The bootstrap admin token; when unset on first start one is generated and printed once.
    #[arg(long, env = "SEATLEDGER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// How log lines are written.
    #[arg(long, env = "SEATLEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}
