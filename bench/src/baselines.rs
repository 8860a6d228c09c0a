//! What the hardware and the libraries can do without seatledger, measured right before the
//! scenario compared with them, at the same concurrency:
//! 1. raw PostgreSQL "load a stream + append one event" transactions through sqlx;
//! 2. a trivial aggregate through cqrs-es + postgres-es, no HTTP;
//! 3. a raw sequential read of the events table;
//! 4. raw JetStream publishing with `Nats-Msg-Id`, pipelined.
//!
//! Baselines 1 and 2 write to scratch tables in a schema `bench` of the scenario's fresh
//! database, shaped like seatledger's `events` table (same columns, defaults and indexes), so
//! that the service's log never sees their rows.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent};
use futures::TryStreamExt;
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::load::{closed_loop, OpFuture, Outcome, Worker};
use crate::progress::{Counter, Ticker};

/// An events table like `migrations/postgres/0001_event_log.sql`'s, under another name.
fn events_table_ddl(table: &str) -> String {
    let index = table.replace('.', "_");
    format!(
        "CREATE TABLE {table}
         (
             aggregate_type text                         NOT NULL,
             aggregate_id   text                         NOT NULL,
             sequence       bigint CHECK (sequence >= 0) NOT NULL,
             event_type     text                         NOT NULL,
             event_version  text                         NOT NULL,
             payload        json                         NOT NULL,
             metadata       json                         NOT NULL,
             position       bigserial                    NOT NULL UNIQUE,
             event_id       uuid                         NOT NULL DEFAULT gen_random_uuid() UNIQUE,
             recorded_at    timestamptz                  NOT NULL DEFAULT now(),
             transaction_id xid8                         NOT NULL DEFAULT pg_current_xact_id(),
             PRIMARY KEY (aggregate_type, aggregate_id, sequence)
         );
         CREATE INDEX {index}_by_transaction ON {table} (transaction_id, position);"
    )
}

async fn scratch_pool(database_url: &str, connections: usize) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(connections as u32)
        .min_connections(connections as u32)
        .acquire_timeout(Duration::from_secs(30))
        .connect(database_url)
        .await?;
    sqlx::raw_sql("CREATE SCHEMA IF NOT EXISTS bench")
        .execute(&pool)
        .await?;
    Ok(pool)
}

/// Metadata like the service records for an HTTP command.
pub fn realistic_metadata() -> Value {
    let request = uuid::Uuid::new_v4().to_string();
    json!({
        "token_id": uuid::Uuid::new_v4().to_string(),
        "role": "admin",
        "request_id": request,
        "correlation_id": request,
        "causation_id": request,
    })
}

/// A payload the size of a `LicensesAssigned`.
fn realistic_payload(user: uuid::Uuid) -> Value {
    json!({"LicensesAssigned": {
        "user_id": user,
        "added": ["O365_BUSINESS_PREMIUM"],
        "removed": [],
        "at": Utc::now(),
    }})
}

/// Appends after which a baseline client moves to a new stream: a snapshot every 100 events
/// bounds what seatledger loads per command the same way, and a stream that grew for the
/// whole window would make the baseline slower the longer it runs.
pub const STREAM_LENGTH: i64 = 100;

struct RawClient {
    pool: PgPool,
    stream: String,
    metadata: Value,
}

impl Worker for RawClient {
    fn op(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let fail = |error: sqlx::Error| format!("sql: {error}");
            let mut tx = self.pool.begin().await.map_err(fail)?;
            let rows: Vec<(String, String, i64, String, String, Value, Value)> = sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
                   FROM bench.raw_events WHERE aggregate_type = $1 AND aggregate_id = $2
                  ORDER BY sequence",
            )
            .bind("tenant")
            .bind(&self.stream)
            .fetch_all(&mut *tx)
            .await
            .map_err(fail)?;
            let next = rows.last().map_or(1, |row| row.2 + 1);
            sqlx::query(
                "INSERT INTO bench.raw_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind("tenant")
            .bind(&self.stream)
            .bind(next)
            .bind("LicensesAssigned")
            .bind("1")
            .bind(realistic_payload(uuid::Uuid::new_v4()))
            .bind(&self.metadata)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            if next >= STREAM_LENGTH {
                self.stream = uuid::Uuid::new_v4().to_string();
            }
            Ok(())
        })
    }
}

/// Baseline 1: `clients` connections, each on its own stream, each transaction `BEGIN; SELECT`
/// the stream's events`; INSERT` the next one`; COMMIT`.
pub async fn raw_load_append(
    scenario: &str,
    database_url: &str,
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Outcome> {
    let pool = scratch_pool(database_url, clients).await?;
    sqlx::raw_sql(&events_table_ddl("bench.raw_events"))
        .execute(&pool)
        .await?;
    let workers = (0..clients)
        .map(|_| RawClient {
            pool: pool.clone(),
            stream: uuid::Uuid::new_v4().to_string(),
            metadata: realistic_metadata(),
        })
        .collect();
    let (outcome, _) = closed_loop(
        scenario,
        "baseline 1: raw PostgreSQL load + append",
        workers,
        warmup,
        measure,
    )
    .await;
    pool.close().await;
    Ok(outcome)
}

/// The trivial aggregate of baseline 2.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BenchCounter {
    value: u64,
}

/// Its only event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BenchCounterEvent {
    /// The counter went up.
    Incremented {
        /// By how much.
        by: u64,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for BenchCounterEvent {
    fn event_type(&self) -> String {
        "Incremented".into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

/// The counter never refuses.
#[derive(Debug)]
pub struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("never")
    }
}

impl std::error::Error for Never {}

impl Aggregate for BenchCounter {
    const TYPE: &'static str = "bench_counter";
    type Command = ();
    type Event = BenchCounterEvent;
    type Error = Never;
    type Services = ();

    async fn handle(
        &mut self,
        _command: (),
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Never> {
        sink.write(
            BenchCounterEvent::Incremented {
                by: 1,
                at: Utc::now(),
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: BenchCounterEvent) {
        match event {
            BenchCounterEvent::Incremented { by, .. } => self.value += by,
        }
    }
}

type CounterCqrs =
    CqrsFramework<BenchCounter, PersistedEventStore<PostgresEventRepository, BenchCounter>>;

struct CounterClient {
    cqrs: std::sync::Arc<CounterCqrs>,
    id: String,
    appended: i64,
    metadata: HashMap<String, String>,
}

impl Worker for CounterClient {
    fn op(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            self.cqrs
                .execute_with_metadata(&self.id, (), self.metadata.clone())
                .await
                .map_err(|error| format!("postgres-es: {error}"))?;
            self.appended += 1;
            if self.appended >= STREAM_LENGTH {
                self.appended = 0;
                self.id = uuid::Uuid::new_v4().to_string();
            }
            Ok(())
        })
    }
}

/// Baseline 2: the counter through `CqrsFramework` over postgres-es (an event store, no
/// snapshots, no queries), `clients` clients on distinct aggregate ids.
pub async fn bare_postgres_es(
    scenario: &str,
    database_url: &str,
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Outcome> {
    let pool = scratch_pool(database_url, clients).await?;
    sqlx::raw_sql(&format!(
        "{}
         CREATE TABLE bench.snapshots
         (
             aggregate_type   text                                 NOT NULL,
             aggregate_id     text                                 NOT NULL,
             last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
             current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
             payload          json                                 NOT NULL,
             PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
         );",
        events_table_ddl("bench.events")
    ))
    .execute(&pool)
    .await?;
    let repository =
        PostgresEventRepository::new(pool.clone()).with_tables("bench.events", "bench.snapshots");
    let cqrs = std::sync::Arc::new(CqrsFramework::new(
        PersistedEventStore::new_event_store(repository),
        vec![],
        (),
    ));
    let metadata: HashMap<String, String> =
        serde_json::from_value(realistic_metadata()).expect("string metadata");
    let workers = (0..clients)
        .map(|_| CounterClient {
            cqrs: cqrs.clone(),
            id: uuid::Uuid::new_v4().to_string(),
            appended: 0,
            metadata: metadata.clone(),
        })
        .collect();
    let (outcome, _) = closed_loop(
        scenario,
        "baseline 2: bare postgres-es",
        workers,
        warmup,
        measure,
    )
    .await;
    pool.close().await;
    Ok(outcome)
}

/// Baseline 3: every row of `events` in position order in one streamed query, each row's
/// columns decoded (the columns the log reader reads). Returns rows and elapsed time.
pub async fn raw_sequential_read(scenario: &str, pool: &PgPool) -> anyhow::Result<(u64, Duration)> {
    type Row = (
        i64,
        i64,
        String,
        String,
        i64,
        String,
        String,
        String,
        DateTime<Utc>,
        String,
        String,
    );
    let counter = Counter::new();
    let shown = counter.clone();
    let _ticker = Ticker::start(scenario, "baseline 3: raw sequential read", move |_| {
        shown.line("rows")
    });
    let started = Instant::now();
    let mut rows = sqlx::query_as::<_, Row>(
        "SELECT transaction_id::text::bigint, position, aggregate_type, aggregate_id, sequence,
                event_type, event_version, event_id::text, recorded_at, payload::text,
                metadata::text
           FROM events ORDER BY position",
    )
    .fetch(pool);
    let mut count = 0u64;
    let mut bytes = 0usize;
    while let Some(row) = rows.try_next().await? {
        count += 1;
        bytes += row.9.len() + row.10.len() + row.2.len() + row.3.len();
        if count % 1024 == 0 {
            counter.add(1024);
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(bytes);
    Ok((count, elapsed))
}

/// Realistic messages: the envelopes and subjects of a spread sample of the store's events.
pub async fn sample_messages(
    store: &seatledger::store::Store,
    pool: &PgPool,
    subject_prefix: &str,
    how_many: i64,
) -> anyhow::Result<Vec<(String, bytes::Bytes)>> {
    use seatledger::log::{Checkpoint, StoredEvent};
    type Row = (
        i64,
        i64,
        String,
        String,
        i64,
        String,
        String,
        String,
        String,
        String,
        String,
    );
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(pool)
        .await?;
    let every = (total / how_many.max(1)).max(1);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, position, aggregate_type, aggregate_id, sequence,
                event_type, event_version, event_id::text,
                to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                payload::text, metadata::text
           FROM events WHERE position % $1 = 0 ORDER BY position LIMIT $2",
    )
    .bind(every)
    .bind(how_many)
    .fetch_all(pool)
    .await?;
    let tenancy = seatledger::feed::tenancy::Tenancy::new(store.clone());
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let stored = StoredEvent {
            checkpoint: Checkpoint {
                transaction_id: row.0,
                position: row.1,
            },
            aggregate_type: row.2,
            aggregate_id: row.3,
            sequence: row.4,
            event_type: row.5,
            event_version: row.6,
            event_id: row.7,
            recorded_at: row.8,
            payload: row.9,
            metadata: row.10,
        };
        let (envelope, tenant) = seatledger::feed::wrap(&tenancy, &stored)
            .await
            .map_err(|error| anyhow::anyhow!("wrapping event {}: {error}", stored.position()))?;
        let subject = seatledger::feed::envelope::subject(
            subject_prefix,
            tenant,
            &stored.aggregate_type,
            &stored.event_type,
        );
        messages.push((subject, bytes::Bytes::from(serde_json::to_vec(&envelope)?)));
    }
    anyhow::ensure!(!messages.is_empty(), "no events to sample messages from");
    Ok(messages)
}

/// What baseline 4 measured.
pub struct Published {
    /// Messages acknowledged.
    pub messages: u64,
    /// How long.
    pub elapsed: Duration,
    /// Average body size, bytes.
    pub average_bytes: usize,
}

/// Baseline 4: publishes `messages` (cycled, each with a new `Nats-Msg-Id`) to a stream of its
/// own configured like the publisher's, `batch` at a time pipelined (every message of a batch
/// sent, then every acknowledgement awaited), for at least `measure`.
pub async fn raw_publish(
    scenario: &str,
    nats: &seatledger::config::NatsSettings,
    messages: &[(String, bytes::Bytes)],
    batch: usize,
    measure: Duration,
) -> anyhow::Result<Published> {
    use async_nats::jetstream::{self, stream};
    let client = async_nats::connect(nats.url.as_deref().context("a NATS URL")?).await?;
    let context = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .ack_timeout(Duration::from_secs(5))
        .build(client);
    context
        .create_stream(stream::Config {
            name: nats.stream.clone(),
            subjects: vec![format!("{}.>", nats.subject_prefix)],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(nats.duplicate_window_seconds),
            ..Default::default()
        })
        .await?;
    let counter = Counter::new();
    let shown = counter.clone();
    let _ticker = Ticker::start(scenario, "baseline 4: raw JetStream publish", move |_| {
        shown.line("messages acknowledged")
    });
    let started = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    while started.elapsed() < measure {
        let mut pending = Vec::with_capacity(batch);
        for _ in 0..batch {
            let (subject, body) = &messages[next % messages.len()];
            next += 1;
            let publish = jetstream::message::PublishMessage::build()
                .payload(body.clone())
                .message_id(uuid::Uuid::new_v4().to_string());
            pending.push(context.send_publish(subject.clone(), publish).await?);
        }
        for ack in pending {
            ack.await?;
            sent += 1;
        }
        counter.add(batch as u64);
    }
    let elapsed = started.elapsed();
    let average_bytes = messages.iter().map(|(_, body)| body.len()).sum::<usize>() / messages.len();
    Ok(Published {
        messages: sent,
        elapsed,
        average_bytes,
    })
}
