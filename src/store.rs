//! The event store's database: PostgreSQL in production, an embedded SQLite file by default.
//! Which one is chosen by the database URL; the schema comes from `migrations/<backend>/`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use thiserror::Error;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Why the store could not be opened or migrated.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The URL is neither `postgres://…` nor `sqlite:…`.
    #[error("unsupported database URL '{0}': use postgres://… or sqlite:…")]
    UnsupportedUrl(String),
    /// The database did not answer or refused the connection.
    #[error("cannot connect to {backend} at {url}: {source}")]
    Connect {
        /// Which backend.
        backend: &'static str,
        /// The URL, without its password.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Applying the schema failed.
    #[error("migrating the {backend} schema failed: {source}")]
    Migrate {
        /// Which backend.
        backend: &'static str,
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
}

/// Runs `$body` with `$pool` bound to the backend's pool; for SQL both backends share.
#[macro_export]
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Postgres($pool) => $body,
            $crate::store::Store::Sqlite($pool) => $body,
        }
    };
}

/// The log's end on SQLite: `position > 0` lets SQLite use the (partial) position index
/// instead of scanning the log.
pub const SQLITE_LOG_END: &str = "SELECT COALESCE(MAX(position), 0) FROM events WHERE position > 0";

/// Whether a store error says the database could not be reached or is not taking work now
/// (rather than that a statement was wrong): the same request may succeed once it is back,
/// so callers answer 503 with `Retry-After`, not 500.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            // PostgreSQL: connection exceptions (08…), shutdowns and restarts (57P…), too
            // many connections (53300); SQLite: busy or locked past the busy timeout.
            code.starts_with("08")
                || code.starts_with("57P")
                || code == "53300"
                || matches!(code.as_ref(), "5" | "6" | "261" | "262" | "517")
        }),
        _ => false,
    }
}

/// [`is_unreachable`] for an error that may hide a `sqlx::Error` inside (cqrs-es boxes them).
pub fn is_unreachable_dyn(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(sqlx) = error.downcast_ref::<sqlx::Error>() {
            return is_unreachable(sqlx);
        }
        current = error.source();
    }
    false
}

/// An open connection pool to one of the supported backends.
#[derive(Debug, Clone)]
pub enum Store {
    /// PostgreSQL.
    Postgres(PgPool),
    /// An embedded SQLite file.
    Sqlite(SqlitePool),
}

/// Hides the password of a URL, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Store {
    /// Opens a pool for `url`; an SQLite file is created when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options =
                PgConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
                    backend: "PostgreSQL",
                    url: redact(url),
                    source,
                })?;
            // sqlx prepares every statement once per connection; PostgreSQL then plans it
            // either for each run's values (custom) or once for any values (generic), and on
            // its own keeps planning the log reader's statement on every run (its custom plans
            // look cheaper): 0.5 ms of planning per read of the log, more than the read, and
            // the consumers read the log hundreds of times a second. The service's statements
            // are written so that their generic plan is a good plan whatever the values (the
            // log's range queries walk the (transaction, position) index; tests look at both
            // plans), so every connection uses the generic one.
            let pool = PgPoolOptions::new()
                .max_connections(16)
                // While PostgreSQL is down every request waits this long for a connection
                // before answering 503: long enough to ride out a busy moment (a request
                // holds a connection for milliseconds), short enough that clients hear of an
                // outage quickly.
                .acquire_timeout(Duration::from_secs(3))
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        sqlx::Executor::execute(
                            connection,
                            "SET plan_cache_mode = force_generic_plan",
                        )
                        .await
                        .map(drop)
                    })
                })
                .connect_with(options)
                .await
                .map_err(|source| StoreError::Connect {
                    backend: "PostgreSQL",
                    url: redact(url),
                    source,
                })?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let connect_error = |source| StoreError::Connect {
                backend: "SQLite",
                url: url.to_owned(),
                source,
            };
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_error)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            // One writer at a time is SQLite's model; a single connection also keeps the global
            // order equal to the commit order.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .map_err(connect_error)?;
            Ok(Self::Sqlite(pool))
        } else {
            Err(StoreError::UnsupportedUrl(redact(url)))
        }
    }

    /// Refreshes the planner's statistics of `table` (one of the service's own tables).
    pub async fn analyze(&self, table: &'static str) -> Result<(), sqlx::Error> {
        crate::on_pool!(self, pool => {
            sqlx::query(&format!("ANALYZE {table}")).execute(pool).await.map(drop)
        })
    }

    /// Applies every pending migration of the backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(pool) => {
                POSTGRES_MIGRATIONS
                    .run(pool)
                    .await
                    .map_err(|source| StoreError::Migrate {
                        backend: "PostgreSQL",
                        source,
                    })
            }
            Self::Sqlite(pool) => {
                SQLITE_MIGRATIONS
                    .run(pool)
                    .await
                    .map_err(|source| StoreError::Migrate {
                        backend: "SQLite",
                        source,
                    })
            }
        }
    }

    /// The backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "PostgreSQL",
            Self::Sqlite(_) => "SQLite",
        }
    }
}

impl Store {
    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Self::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
    }

    /// The position of the newest event (0 when the log is empty).
    pub async fn log_end(&self) -> Result<i64, sqlx::Error> {
        match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar("SELECT COALESCE(MAX(position), 0)::bigint FROM events")
                    .fetch_one(pool)
                    .await
            }
            Self::Sqlite(pool) => sqlx::query_scalar(SQLITE_LOG_END).fetch_one(pool).await,
        }
    }
}

/// One event of a stream as auditors read it.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct RecordedEvent {
    /// Its place in the global log.
    pub position: i64,
    /// Its place in its stream.
    pub sequence: i64,
    /// Its id.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// Its schema version.
    pub event_version: String,
    /// When it was recorded.
    pub recorded_at: String,
    /// What happened.
    pub payload: serde_json::Value,
    /// Who did it and why.
    pub metadata: serde_json::Value,
}

impl Store {
    /// Up to `limit` events of one aggregate after sequence `after`, in order, as (sequence,
    /// payload JSON).
    pub async fn stream_page(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, sqlx::Error> {
        // The payload is `json` on PostgreSQL, text on SQLite.
        let sql = match self {
            Self::Postgres(_) => {
                "SELECT sequence, payload::text FROM events
                  WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
                  ORDER BY sequence LIMIT $4"
            }
            Self::Sqlite(_) => {
                "SELECT sequence, payload FROM events
                  WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
                  ORDER BY sequence LIMIT $4"
            }
        };
        crate::on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
    }

    /// One aggregate's events in order.
    pub async fn history(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        type Row = (i64, i64, String, String, String, String, String, String);
        let rows: Vec<Row> = match self {
            Self::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT position, sequence, event_id::text, event_type, event_version,
                            to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                            payload::text, metadata::text
                       FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
                )
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_all(pool)
                .await?
            }
            Self::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT position, sequence, event_id, event_type, event_version, recorded_at,
                            payload, metadata
                       FROM events WHERE aggregate_type = ? AND aggregate_id = ? ORDER BY sequence",
                )
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(
                |(
                    position,
                    sequence,
                    event_id,
                    event_type,
                    event_version,
                    recorded_at,
                    payload,
                    metadata,
                )| {
                    RecordedEvent {
                        position,
                        sequence,
                        event_id,
                        event_type,
                        event_version,
                        recorded_at,
                        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                        metadata: serde_json::from_str(&metadata)
                            .unwrap_or(serde_json::Value::Null),
                    }
                },
            )
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/ledger"),
            "postgres://app:***@db:5432/ledger"
        );
        assert_eq!(
            redact("postgres://app@db/ledger"),
            "postgres://app@db/ledger"
        );
        assert_eq!(redact("sqlite:seatledger.db"), "sqlite:seatledger.db");
    }
}

/// Which plan of a parameterised statement a test looks at: the one PostgreSQL makes for the
/// parameters' values, or the generic one a prepared statement may switch to after five runs.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// Planned for the values.
    Custom,
    /// Planned for any values.
    Generic,
}

impl Store {
    /// `EXPLAIN (ANALYZE, COSTS OFF)` of `sql` run with `arguments` (SQL literals, one per
    /// parameter) under the plan of `kind`, one line per row; empty on SQLite. For tests of
    /// plans: the statement is prepared on a connection of its own, closed afterwards.
    #[doc(hidden)]
    pub async fn explain(
        &self,
        sql: &str,
        arguments: &[String],
        kind: PlanKind,
    ) -> Result<Vec<String>, sqlx::Error> {
        let Self::Postgres(pool) = self else {
            return Ok(Vec::new());
        };
        let mut connection = pool.acquire().await?.detach();
        let mode = match kind {
            PlanKind::Custom => "force_custom_plan",
            PlanKind::Generic => "force_generic_plan",
        };
        sqlx::query(&format!("SET plan_cache_mode = {mode}"))
            .execute(&mut connection)
            .await?;
        sqlx::query(&format!("PREPARE probe AS {sql}"))
            .execute(&mut connection)
            .await?;
        sqlx::query_scalar(&format!(
            "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE probe({})",
            arguments.join(", ")
        ))
        .fetch_all(&mut connection)
        .await
    }
}

/// `text` as an SQL string literal.
#[doc(hidden)]
pub fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
