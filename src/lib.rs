//! The seatledger service: the event store on PostgreSQL or SQLite, the write side that runs
//! commands and their process managers, the log's consumers (read models, timers, key
//! shredding) and the HTTP API.

pub mod access;
pub mod auth;
pub mod clock;
pub mod config;
mod copy_text;
pub mod demo;
pub mod events_doc;
pub mod feed;
pub mod http;
pub mod log;
pub mod read;
pub mod store;
pub mod vault;
pub mod workers;
pub mod write;

/// Every binary built on the service (the server, the tests, the benchmark's service child)
/// allocates through mimalloc: glibc's arenas kept the RSS at its high-water mark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use postgres_es::PostgresEventRepository;
use sqlite_es::SqliteEventRepository;

use crate::store::Store;
use crate::write::ledger::{self, Ledger};

/// A ledger over whichever backend the store is.
pub enum AnyLedger {
    /// Over PostgreSQL.
    Postgres(Ledger<PostgresEventRepository>),
    /// Over SQLite.
    Sqlite(Ledger<SqliteEventRepository>),
}

impl AnyLedger {
    /// Builds the ledger for `store`.
    pub fn new(store: Store, rules: aggregates::CommercialRules) -> Self {
        match &store {
            Store::Postgres(pool) => {
                let pool = pool.clone();
                Self::Postgres(Ledger::new(store, rules, move || {
                    PostgresEventRepository::new(pool.clone())
                }))
            }
            Store::Sqlite(pool) => {
                let pool = pool.clone();
                Self::Sqlite(Ledger::new(store, rules, move || {
                    SqliteEventRepository::new(pool.clone())
                }))
            }
        }
    }
}

/// Runs `$body` with `$ledger` bound to the concrete ledger, whichever backend it is.
#[macro_export]
macro_rules! with_ledger {
    ($any:expr, $ledger:ident => $body:expr) => {
        match $any {
            $crate::AnyLedger::Postgres($ledger) => $body,
            $crate::AnyLedger::Sqlite($ledger) => $body,
        }
    };
}

impl AnyLedger {
    /// Changes whenever this instance commits events.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        with_ledger!(self, ledger => ledger.commits())
    }

    /// Runs a command and its follow-ups; see [`Ledger::dispatch`].
    pub async fn dispatch(
        &self,
        command: aggregates::policy::FollowUp,
        metadata: &ledger::Metadata,
    ) -> Result<Option<ledger::Landed>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.dispatch(command, metadata).await)
    }

    /// Runs a catalog command.
    pub async fn catalog(
        &self,
        command: aggregates::catalog::CatalogCommand,
        metadata: &ledger::Metadata,
    ) -> Result<Option<ledger::Landed>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.catalog(command, metadata).await)
    }

    /// Runs a reseller command.
    pub async fn reseller(
        &self,
        reseller_id: uuid::Uuid,
        command: aggregates::party::ResellerCommand,
        metadata: &ledger::Metadata,
    ) -> Result<Option<ledger::Landed>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.reseller(reseller_id, command, metadata).await)
    }

    /// Runs a billing-profile command.
    pub async fn billing_profile(
        &self,
        billing_profile_id: uuid::Uuid,
        command: aggregates::party::BillingProfileCommand,
        metadata: &ledger::Metadata,
    ) -> Result<Option<ledger::Landed>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.billing_profile(billing_profile_id, command, metadata).await)
    }

    /// A reseller's state.
    pub async fn reseller_state(
        &self,
        reseller_id: uuid::Uuid,
    ) -> Result<std::sync::Arc<aggregates::party::Reseller>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.reseller_state(reseller_id).await)
    }

    /// A billing profile's state.
    pub async fn billing_profile_state(
        &self,
        billing_profile_id: uuid::Uuid,
    ) -> Result<std::sync::Arc<aggregates::party::BillingProfile>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.billing_profile_state(billing_profile_id).await)
    }

    /// A tenant's state.
    pub async fn tenant(
        &self,
        tenant_id: uuid::Uuid,
    ) -> Result<std::sync::Arc<aggregates::tenant::Tenant>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.tenant(tenant_id).await)
    }

    /// A tenant as this instance last knew it (immutable facts only).
    pub async fn known_tenant(
        &self,
        tenant_id: uuid::Uuid,
    ) -> Result<std::sync::Arc<aggregates::tenant::Tenant>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.known_tenant(tenant_id).await)
    }

    /// A user as this instance last knew it (immutable facts only).
    pub async fn known_user(
        &self,
        user_id: uuid::Uuid,
    ) -> Result<std::sync::Arc<aggregates::user::User>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.known_user(user_id).await)
    }

    /// A subscription's state.
    pub async fn subscription(
        &self,
        subscription_id: uuid::Uuid,
    ) -> Result<std::sync::Arc<aggregates::subscription::Subscription>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.subscription(subscription_id).await)
    }

    /// A user's state.
    pub async fn user(
        &self,
        user_id: uuid::Uuid,
    ) -> Result<std::sync::Arc<aggregates::user::User>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.user(user_id).await)
    }

    /// The current catalog.
    pub async fn current_catalog(
        &self,
    ) -> Result<std::sync::Arc<aggregates::catalog::CatalogAggregate>, ledger::LedgerError> {
        with_ledger!(self, ledger => ledger.current_catalog().await)
    }

    /// The log position a command's response reports: of its last event, or, when it decided
    /// nothing, the log's current end (what a reader must have seen to see the unchanged state).
    pub async fn position_after(
        &self,
        landed: Option<&ledger::Landed>,
    ) -> Result<i64, ledger::LedgerError> {
        match landed {
            Some(landed) => Ok(landed.position),
            None => with_ledger!(self, ledger => ledger.log_end().await),
        }
    }
}

/// Opens the store, applies migrations, seeds the default catalog, makes sure an admin token
/// exists, and returns the service's state with the generated admin token, if one was made.
pub async fn start(
    settings: &config::ServeSettings,
) -> anyhow::Result<(http::AppState, Option<String>)> {
    let store = Store::connect(&settings.store.database_url).await?;
    store.migrate().await?;
    let ledger = std::sync::Arc::new(AnyLedger::new(store.clone(), settings.store.rules()));
    let clock = std::sync::Arc::new(if settings.sandbox_clock {
        clock::Clock::sandbox()
    } else {
        clock::Clock::system()
    });
    if let Some(offset) = store.sandbox_offset().await? {
        clock.adopt(offset);
    }
    for consumer in workers::consumers() {
        store.ensure_checkpoint(consumer).await?;
    }
    let system = ledger::Metadata::from([("role".to_owned(), "system".to_owned())]);
    ledger
        .catalog(
            aggregates::catalog::CatalogCommand::SeedDefaults { at: clock.now() },
            &system,
        )
        .await?;
    let tokens = auth::Tokens::new(store.clone());
    let generated = tokens
        .bootstrap_admin(settings.admin_token.as_deref())
        .await?;
    let vault = vault::Vault::open(store.clone()).await?;
    let publisher = match &settings.nats.url {
        Some(_) => {
            store.ensure_checkpoint(feed::publisher::PUBLISHER).await?;
            Some(std::sync::Arc::new(feed::publisher::Publisher::new(
                store.clone(),
                settings.nats.clone(),
            )?))
        }
        None => None,
    };
    let workers = std::sync::Arc::new(workers::Workers::start(workers::Context {
        store: store.clone(),
        ledger: ledger.clone(),
        vault: vault.clone(),
        clock: clock.clone(),
        publisher: publisher.clone(),
    }));
    let tenancy = std::sync::Arc::new(feed::tenancy::Tenancy::new(store.clone()));
    let closing = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
    let tail = std::sync::Arc::new(feed::tail::LogTail::new(store.clone(), tenancy.clone()));
    tokio::spawn(tail.clone().run(ledger.commits(), closing.subscribe()));
    Ok((
        http::AppState {
            ledger,
            store,
            vault,
            tokens,
            clock,
            workers,
            publisher,
            tenancy,
            closing,
            tail,
            header_read_timeout: std::time::Duration::from_secs(
                settings.header_read_timeout_seconds,
            ),
            feeds: feed::tail::LiveFeeds::new(
                settings.max_event_streams,
                settings.max_event_streams_per_token,
            ),
            idempotency: std::sync::Arc::new(http::idempotency::Retention::new(
                chrono::Duration::hours(i64::from(settings.idempotency_ttl_hours)),
            )),
        },
        generated,
    ))
}
