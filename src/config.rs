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

    /// Where events are published.
    #[command(flatten)]
    pub nats: NatsSettings,

    /// Makes the clock settable through POST /v1/sandbox/clock.
    #[arg(long, env = "SEATLEDGER_SANDBOX_CLOCK")]
    pub sandbox_clock: bool,

    /// The bootstrap admin token; when unset on first start one is generated and printed once.
    #[arg(long, env = "SEATLEDGER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// How log lines are written.
    #[arg(long, env = "SEATLEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Hours an `Idempotency-Key`'s answer is kept; a retry after that runs as a new request.
    #[arg(
        long,
        env = "SEATLEDGER_IDEMPOTENCY_TTL_HOURS",
        default_value_t = 24,
        value_parser = clap::value_parser!(u32).range(1..=8760)
    )]
    pub idempotency_ttl_hours: u32,

    /// The most live event feeds (`/v1/events/stream`) open at once; past it, 503.
    #[arg(
        long,
        env = "SEATLEDGER_MAX_EVENT_STREAMS",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub max_event_streams: u32,

    /// The most live event feeds one token holds open at once; past it, 429.
    #[arg(
        long,
        env = "SEATLEDGER_MAX_EVENT_STREAMS_PER_TOKEN",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub max_event_streams_per_token: u32,

    /// Seconds a connection may take to send a request's headers before it is closed (a
    /// client dribbling them cannot hold a connection open).
    #[arg(
        long,
        env = "SEATLEDGER_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub header_read_timeout_seconds: u64,
}

/// Settings of the JetStream publisher.
#[derive(Debug, Clone, Args)]
pub struct NatsSettings {
    /// NATS server to publish events to (JetStream), e.g. `nats://127.0.0.1:4222`; none: no
    /// publishing (the HTTP feed still serves every event).
    #[arg(long = "nats-url", env = "NATS_URL")]
    pub url: Option<String>,

    /// The JetStream stream events go to (created, or its subjects and duplicate window
    /// updated, on start; its other settings are left as the operator set them).
    #[arg(
        long = "nats-stream",
        env = "SEATLEDGER_NATS_STREAM",
        default_value = "SEATLEDGER"
    )]
    pub stream: String,

    /// The first token of every subject: `<prefix>.<tenant_id>.<aggregate_type>.<EventType>`.
    #[arg(
        long = "nats-subject-prefix",
        env = "SEATLEDGER_NATS_SUBJECT_PREFIX",
        default_value = "seatledger"
    )]
    pub subject_prefix: String,

    /// Seconds during which JetStream drops a re-published event by its `Nats-Msg-Id`: longer
    /// than any restart of the publisher should take.
    #[arg(
        long = "nats-duplicate-window-seconds",
        env = "SEATLEDGER_NATS_DUPLICATE_WINDOW_SECONDS",
        default_value_t = 600
    )]
    pub duplicate_window_seconds: u64,
}
