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

use crate::store::Store;
pub use crate::write::ledger::Ledger;

/// Opens the store, applies migrations, seeds the default catalog, makes sure an admin token
/// exists, and returns the service's state with the generated admin token, if one was made.
pub async fn start(
    settings: &config::ServeSettings,
) -> anyhow::Result<(http::AppState, Option<String>)> {
    let store = Store::connect(&settings.store.database_url).await?;
    store.migrate().await?;
    let ledger = std::sync::Arc::new(Ledger::new(store.clone(), settings.store.rules()));
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
    let system = write::Metadata::from([("role".to_owned(), "system".to_owned())]);
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
