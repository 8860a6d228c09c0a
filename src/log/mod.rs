//! The global log as its consumers read it: in an order that never skips an event, each
//! consumer from its own checkpoint.
//!
//! On PostgreSQL a `bigserial` position is taken when a transaction inserts, not when it
//! commits, so a reader that follows `position > last` skips an event whose transaction commits
//! after a later position's. Every event therefore records its writing transaction
//! (`pg_current_xact_id()`), and the log is read in (transaction id, position) order, only
//! below the oldest transaction still running (`pg_current_snapshot()`'s in-progress list, less
//! other databases' transactions): every transaction below that horizon has ended, so nothing
//! can ever appear before what has been read. Within one aggregate the order
//! is the stream's order (a transaction that appends to a stream takes its id after the previous
//! append committed). On SQLite the single writer makes the position order the commit order.
//!
//! Each consumer holds its checkpoint under a lease ([`lease`]) and fails with a
//! [`ConsumerError`].

use crate::store::{sql_literal, PlanKind, Store};

pub mod lease;

/// Why a consumer could not take a batch in.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The store failed.
    #[error("store failure: {0}")]
    Store(#[from] sqlx::Error),
    /// An event or a row could not be read.
    #[error(transparent)]
    Projection(#[from] projections::ProjectionError),
    /// Someone else moved the checkpoint: another instance holds this consumer.
    #[error("another instance moved the checkpoint of '{0}'")]
    Overtaken(String),
    /// A test stopped the batch before its commit.
    #[error("stopped before commit: {0}")]
    Interrupted(String),
    /// What a consumer does for an event (a follow-up command, a key to shred, a timer's
    /// action) failed; the batch is retried.
    #[error("{0}")]
    Failed(String),
}

/// Where a consumer is in the log: the last event it has taken in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    /// The writing transaction (always 0 on SQLite).
    pub transaction_id: i64,
    /// The global position.
    pub position: i64,
}

impl Checkpoint {
    /// The checkpoint after everything: reading up to it reads the whole log.
    pub const END: Checkpoint = Checkpoint {
        transaction_id: i64::MAX,
        position: i64::MAX,
    };
}

/// One event as the log holds it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its place in the reading order.
    pub checkpoint: Checkpoint,
    /// Its aggregate's type.
    pub aggregate_type: String,
    /// Its aggregate's id.
    pub aggregate_id: String,
    /// Its place in the stream.
    pub sequence: i64,
    /// Its type.
    pub event_type: String,
    /// Its schema version.
    pub event_version: String,
    /// Its id.
    pub event_id: String,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
    /// The event, as JSON.
    pub payload: String,
    /// Who and why, as JSON.
    pub metadata: String,
}

impl StoredEvent {
    /// The global position.
    pub fn position(&self) -> i64 {
        self.checkpoint.position
    }

    /// Decodes the payload into the domain's types.
    pub fn decode(&self) -> Result<projections::LoggedEvent, projections::ProjectionError> {
        projections::LoggedEvent::decode(
            self.checkpoint.position,
            &self.aggregate_type,
            &self.aggregate_id,
            self.sequence,
            &self.payload,
        )
    }
}

type EventRow = (
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

fn stored(
    (
        transaction_id,
        position,
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        event_version,
        event_id,
        recorded_at,
        payload,
        metadata,
    ): EventRow,
) -> StoredEvent {
    StoredEvent {
        checkpoint: Checkpoint {
            transaction_id,
            position,
        },
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        event_version,
        event_id,
        recorded_at,
        payload,
        metadata,
    }
}

impl Store {
    /// Up to `limit` events after `after` and not after `until`, in reading order; only events
    /// that can no longer be preceded by a late commit.
    pub async fn read_log(
        &self,
        after: Checkpoint,
        until: Checkpoint,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let rows: Vec<EventRow> = match self {
            Self::Postgres(pool) => {
                sqlx::query_as(&read_log_sql())
                    .bind(after.transaction_id)
                    .bind(after.position)
                    .bind(until.transaction_id)
                    .bind(until.position)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
            Self::Sqlite(pool) => {
                sqlx::query_as(&sqlite_read_log_sql_of(
                    "0, position, aggregate_type, aggregate_id, sequence, event_type,
                     event_version, event_id, recorded_at, payload, metadata",
                ))
                .bind(after.position)
                .bind(until.position)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(stored).collect())
    }

    /// The greatest position P such that every event at or below P that is committed now lies
    /// at or before `checkpoint` in reading order: how far a consumer at `checkpoint` has read,
    /// in the positions clients are given.
    pub async fn position_reached(&self, checkpoint: Checkpoint) -> Result<i64, sqlx::Error> {
        match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar(&position_reached_statement())
                    .bind(checkpoint.transaction_id)
                    .bind(checkpoint.position)
                    .fetch_one(pool)
                    .await
            }
            Self::Sqlite(_) => Ok(checkpoint.position),
        }
    }

    /// The reading-order place and id of the event at `position`, if there is one.
    pub async fn event_at(
        &self,
        position: i64,
    ) -> Result<Option<(Checkpoint, String)>, sqlx::Error> {
        let row: Option<(i64, String)> = match self {
            Self::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT transaction_id::text::bigint, event_id::text FROM events WHERE position = $1",
                )
                .bind(position)
                .fetch_optional(pool)
                .await?
            }
            Self::Sqlite(pool) => {
                sqlx::query_as(SQLITE_EVENT_AT)
                    .bind(position)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(row.map(|(transaction_id, id)| {
            (
                Checkpoint {
                    transaction_id,
                    position,
                },
                id,
            )
        }))
    }

    /// Creates `consumer`'s checkpoint at the start of the log if it has none.
    pub async fn ensure_checkpoint(&self, consumer: &str) -> Result<(), sqlx::Error> {
        crate::on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO consumer_checkpoints (consumer, transaction_id, position)
                 VALUES ($1, 0, 0) ON CONFLICT (consumer) DO NOTHING",
            )
            .bind(consumer)
            .execute(pool)
            .await
            .map(drop)
        })
    }

    /// `consumer`'s checkpoint (the start of the log when it has none).
    pub async fn checkpoint(&self, consumer: &str) -> Result<Checkpoint, sqlx::Error> {
        let row: Option<(i64, i64)> = crate::on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT transaction_id, position FROM consumer_checkpoints WHERE consumer = $1",
            )
            .bind(consumer)
            .fetch_optional(pool)
            .await?
        });
        Ok(
            row.map_or(Checkpoint::default(), |(transaction_id, position)| {
                Checkpoint {
                    transaction_id,
                    position,
                }
            }),
        )
    }

    /// Moves `consumer`'s checkpoint from `from` to `to` unless someone else moved it: `false`
    /// when it had moved (another instance holds the work).
    pub async fn advance_checkpoint(
        &self,
        consumer: &str,
        from: Checkpoint,
        to: Checkpoint,
    ) -> Result<bool, sqlx::Error> {
        let now = projections::instant_key(chrono::Utc::now());
        let moved = crate::on_pool!(self, pool => {
            sqlx::query(ADVANCE_CHECKPOINT)
                .bind(consumer)
                .bind(to.transaction_id)
                .bind(to.position)
                .bind(&now)
                .bind(from.transaction_id)
                .bind(from.position)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(moved == 1)
    }

    /// The reading-order-earliest checkpoint among `consumers` and how far it has read: every
    /// consumer has read at least that far, since the events beyond a checkpoint only shrink as
    /// it moves.
    pub async fn slowest(&self, consumers: &[&str]) -> Result<(Checkpoint, i64), sqlx::Error> {
        match self {
            // One round trip: every projection-backed read asks this.
            Self::Postgres(pool) => {
                let (transaction_id, position, reached): (i64, i64, i64) =
                    sqlx::query_as(&slowest_statement())
                        .bind(consumers)
                        .fetch_one(pool)
                        .await?;
                Ok((
                    Checkpoint {
                        transaction_id,
                        position,
                    },
                    reached,
                ))
            }
            Self::Sqlite(pool) => {
                let sql = format!(
                    "SELECT transaction_id, position FROM consumer_checkpoints WHERE consumer IN ({})
                      ORDER BY transaction_id, position LIMIT 1",
                    (1..=consumers.len())
                        .map(|n| format!("${n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let mut query = sqlx::query_as(&sql);
                for consumer in consumers {
                    query = query.bind(*consumer);
                }
                let row: Option<(i64, i64)> = query.fetch_optional(pool).await?;
                let slowest = row.map_or(Checkpoint::default(), |(transaction_id, position)| {
                    Checkpoint {
                        transaction_id,
                        position,
                    }
                });
                Ok((slowest, self.position_reached(slowest).await?))
            }
        }
    }

    /// Roughly how far a consumer at `checkpoint` is behind, for progress reports while it
    /// catches up: the positions between it and the log's end, and the recording instant of
    /// the next event it will read. Costs two index lookups where [`Self::backlog`] counts the
    /// backlog (2 s per call over a million events, once every 10 s per catching-up projection).
    pub async fn lag_estimate(
        &self,
        checkpoint: Checkpoint,
    ) -> Result<(i64, Option<chrono::DateTime<chrono::Utc>>), sqlx::Error> {
        let (end, next): (i64, Option<String>) = match self {
            Self::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT (SELECT COALESCE(MAX(position), 0) FROM events),
                            (SELECT to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
                               FROM events
                              WHERE (transaction_id, position) > ($1::bigint::text::xid8, $2)
                              ORDER BY events.transaction_id, events.position LIMIT 1)",
                )
                .bind(checkpoint.transaction_id)
                .bind(checkpoint.position)
                .fetch_one(pool)
                .await?
            }
            Self::Sqlite(pool) => {
                sqlx::query_as(SQLITE_LAG_ESTIMATE)
                    .bind(checkpoint.position)
                .fetch_one(pool)
                .await?
            }
        };
        let next = next
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(&text).ok())
            .map(|at| at.with_timezone(&chrono::Utc));
        Ok(((end - checkpoint.position).max(0), next))
    }

    /// How many committed events lie beyond `checkpoint`, and the recording instant of the
    /// oldest of them. Counted exactly up to [`BACKLOG_COUNTED`] events; past that, the
    /// positions between the checkpoint and the log's end (at least as many): `/readyz` asks
    /// this of every consumer on every probe, and counting a million-event backlog took 2 s.
    pub async fn backlog(
        &self,
        checkpoint: Checkpoint,
    ) -> Result<(i64, Option<chrono::DateTime<chrono::Utc>>), sqlx::Error> {
        let (counted, oldest) = match self {
            Self::Postgres(pool) => {
                sqlx::query_as(&backlog_statement())
                    .bind(checkpoint.transaction_id)
                    .bind(checkpoint.position)
                    .fetch_one(pool)
                    .await?
            }
            Self::Sqlite(pool) => {
                let (count, oldest): (i64, Option<String>) = sqlx::query_as(&sqlite_backlog_sql())
                    .bind(checkpoint.position)
                    .fetch_one(pool)
                    .await?;
                let oldest = oldest
                    .and_then(|text| chrono::DateTime::parse_from_rfc3339(&text).ok())
                    .map(|at| at.with_timezone(&chrono::Utc));
                (count, oldest)
            }
        };
        if counted < BACKLOG_COUNTED {
            return Ok((counted, oldest));
        }
        let beyond = self.log_end().await? - checkpoint.position;
        Ok((beyond.max(counted), oldest))
    }
}

/// How many events of a backlog [`Store::backlog`] counts one by one.
pub const BACKLOG_COUNTED: i64 = 10_000;

/// [`Store::backlog`]'s count on PostgreSQL: along the reading order's index, at most
/// [`BACKLOG_COUNTED`] entries.
fn backlog_statement() -> String {
    format!(
        "SELECT COUNT(*), MIN(recorded_at)
           FROM (SELECT recorded_at FROM events
                  WHERE (transaction_id, position) > ($1::bigint::text::xid8, $2)
                  ORDER BY events.transaction_id, events.position
                  LIMIT {BACKLOG_COUNTED}) AS ahead"
    )
}

/// The log reader's query on PostgreSQL. The ORDER BY names `events.` columns: unqualified,
/// `transaction_id` would mean the select list's `transaction_id::text::bigint`, which no index
/// orders, and every batch would sort the whole rest of the log (0.7 s per batch at 1 M events,
/// found by the benchmarks).
fn read_log_sql() -> String {
    read_log_sql_of(
        "transaction_id::text::bigint, position, aggregate_type, aggregate_id,
            sequence, event_type, event_version, event_id::text,
            to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
            payload::text, metadata::text",
    )
}

/// [`read_log_sql`] selecting `columns`.
fn read_log_sql_of(columns: &str) -> String {
    "WITH horizon AS (SELECT ($HORIZON) AS below)
     SELECT $COLUMNS
       FROM events, horizon
      WHERE (transaction_id, position) > ($1::bigint::text::xid8, $2)
        AND (transaction_id, position) <= ($3::bigint::text::xid8, $4)
        AND transaction_id < horizon.below
      ORDER BY events.transaction_id, events.position
      LIMIT $5"
        .replace("$HORIZON", HORIZON)
        .replace("$COLUMNS", columns)
}

/// The log reader's query on SQLite, selecting `columns`: its single writer makes the position
/// order the commit order. `position > 0` is the position index's own predicate (the index is
/// partial: a row's position is set by a trigger just after its insert): SQLite uses a partial
/// index only for a query that states its predicate, and without it every poll scanned and
/// sorted the whole log (11-16 ms at 15 000 events, a core burnt by an idle service).
fn sqlite_read_log_sql_of(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM events
          WHERE position > 0 AND position > $1 AND position <= $2
          ORDER BY position
          LIMIT $3"
    )
}

impl Store {
    /// SQLite's plan of the log reader's query, one line per step: for tests that it walks the
    /// position index instead of scanning and sorting the log.
    #[doc(hidden)]
    pub async fn explain_sqlite(&self, sql: &str) -> Result<Vec<String>, sqlx::Error> {
        let Self::Sqlite(pool) = self else {
            return Ok(Vec::new());
        };
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(pool)
                .await?;
        Ok(rows.into_iter().map(|(_, _, _, detail)| detail).collect())
    }

    /// The SQLite statements that look at the log by position, with literal values in place of
    /// their parameters: the reader's batch, the log's end, an event's place, a consumer's lag
    /// and backlog.
    #[doc(hidden)]
    pub fn sqlite_position_statements() -> Vec<(&'static str, String)> {
        vec![
            (
                "read_log",
                sqlite_read_log_sql_of("position, payload")
                    .replace("$1", "10")
                    .replace("$2", "9223372036854775807")
                    .replace("$3", "500"),
            ),
            ("log_end", crate::store::SQLITE_LOG_END.to_owned()),
            ("event_at", SQLITE_EVENT_AT.replace("$1", "10")),
            ("lag_estimate", SQLITE_LAG_ESTIMATE.replace("$1", "10")),
            ("backlog", sqlite_backlog_sql().replace("$1", "10")),
        ]
    }
}

/// [`Store::event_at`] on SQLite.
const SQLITE_EVENT_AT: &str = "SELECT 0, event_id FROM events WHERE position > 0 AND position = $1";

/// [`Store::lag_estimate`] on SQLite.
const SQLITE_LAG_ESTIMATE: &str =
    "SELECT (SELECT COALESCE(MAX(position), 0) FROM events WHERE position > 0),
        (SELECT recorded_at FROM events WHERE position > 0 AND position > $1
          ORDER BY position LIMIT 1)";

/// [`Store::backlog`]'s count on SQLite.
fn sqlite_backlog_sql() -> String {
    format!(
        "SELECT COUNT(*), MIN(recorded_at)
           FROM (SELECT recorded_at FROM events WHERE position > 0 AND position > $1
                  ORDER BY position LIMIT {BACKLOG_COUNTED})"
    )
}

/// The columns [`Store::read_log_decoded`] reads: what projections fold, nothing else. The
/// `xid8` is read as the 8-byte integer it is (no text round trip per event).
const DECODED_COLUMNS: &str =
    "transaction_id, position, aggregate_type, aggregate_id, sequence, payload::text";

impl Store {
    /// [`Self::read_log`]'s events decoded for projections, with the checkpoint of the last:
    /// reads only the columns folding needs (no metadata, id, instant or type) and decodes each
    /// payload straight from the row, for a replay's many batches.
    pub async fn read_log_decoded(
        &self,
        after: Checkpoint,
        until: Checkpoint,
        limit: i64,
    ) -> Result<(Vec<projections::LoggedEvent>, Option<Checkpoint>), ConsumerError> {
        use futures::TryStreamExt;
        use sqlx::Row;
        let mut events = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(100_000));
        let mut last = None;
        macro_rules! decode_rows {
            ($rows:expr) => {{
                let mut rows = $rows;
                while let Some(row) = rows.try_next().await? {
                    let checkpoint = Checkpoint {
                        // `xid8` has no Rust type in sqlx; its binary form is `bigint`'s.
                        transaction_id: row.try_get_unchecked(0)?,
                        position: row.try_get(1)?,
                    };
                    events.push(projections::LoggedEvent::decode(
                        checkpoint.position,
                        row.try_get(2)?,
                        row.try_get(3)?,
                        row.try_get(4)?,
                        row.try_get(5)?,
                    )?);
                    last = Some(checkpoint);
                }
            }};
        }
        match self {
            Self::Postgres(pool) => {
                let sql = read_log_sql_of(DECODED_COLUMNS);
                decode_rows!(sqlx::query(&sql)
                    .bind(after.transaction_id)
                    .bind(after.position)
                    .bind(until.transaction_id)
                    .bind(until.position)
                    .bind(limit)
                    .fetch(pool))
            }
            Self::Sqlite(pool) => {
                let sql = sqlite_read_log_sql_of(
                    "0, position, aggregate_type, aggregate_id, sequence, payload",
                );
                decode_rows!(sqlx::query(&sql)
                    .bind(after.position)
                    .bind(until.position)
                    .bind(limit)
                    .fetch(pool))
            }
        }
        Ok((events, last))
    }
}

impl Store {
    /// PostgreSQL's plan, as run, of [`Self::position_reached`] at `checkpoint`: for tests that
    /// it reads the backlog, not the log.
    #[doc(hidden)]
    pub async fn explain_position_reached(
        &self,
        checkpoint: Checkpoint,
        kind: PlanKind,
    ) -> Result<Vec<String>, sqlx::Error> {
        let arguments = [checkpoint.transaction_id, checkpoint.position].map(|n| n.to_string());
        self.explain(&position_reached_statement(), &arguments, kind)
            .await
    }

    /// PostgreSQL's plan, as run, of [`Self::backlog`]'s count at `checkpoint`: for tests
    /// that it stops counting at [`BACKLOG_COUNTED`].
    #[doc(hidden)]
    pub async fn explain_backlog(
        &self,
        checkpoint: Checkpoint,
        kind: PlanKind,
    ) -> Result<Vec<String>, sqlx::Error> {
        let arguments = [checkpoint.transaction_id, checkpoint.position].map(|n| n.to_string());
        self.explain(&backlog_statement(), &arguments, kind).await
    }

    /// PostgreSQL's plan, as run, of [`Self::slowest`] among `consumers`: for tests that it
    /// reads the backlog, not the log.
    #[doc(hidden)]
    pub async fn explain_slowest(
        &self,
        consumers: &[&str],
        kind: PlanKind,
    ) -> Result<Vec<String>, sqlx::Error> {
        let names: Vec<String> = consumers.iter().map(|name| sql_literal(name)).collect();
        let arguments = [format!("ARRAY[{}]::text[]", names.join(", "))];
        self.explain(&slowest_statement(), &arguments, kind).await
    }

    /// PostgreSQL's plan, as run, for one batch of the log reader from the start to the end:
    /// for tests that the reader walks an index instead of sorting the log.
    #[doc(hidden)]
    pub async fn explain_read_log(&self, kind: PlanKind) -> Result<Vec<String>, sqlx::Error> {
        let arguments = [0, 0, i64::MAX, i64::MAX, 500].map(|n| n.to_string());
        self.explain(&read_log_sql(), &arguments, kind).await
    }
}

/// [`Store::position_reached`] on PostgreSQL, after the checkpoint the two SQL expressions
/// give: the lowest position after the checkpoint, less one
/// (or the end of the log when nothing follows it). `position + 0` keeps the planner from its
/// MIN/MAX shortcut — walking the position index from the log's start until a row passes the
/// (transaction, position) filter — which it prefers whenever it guesses that few events follow
/// the checkpoint; exactly then (a consumer caught up) that walk reads the whole log (10 ms per
/// call at 40 000 events, found by the benchmarks). Summing up the backlog through the
/// (transaction, position) index costs what is behind the checkpoint instead.
fn position_reached_sql(after_transaction: &str, after_position: &str) -> String {
    format!(
        "COALESCE(
            (SELECT MIN(position + 0) FROM events
              WHERE (transaction_id, position) > (({after_transaction})::bigint::text::xid8, {after_position})) - 1,
            (SELECT COALESCE(MAX(position), 0) FROM events))::bigint"
    )
}

/// [`Store::slowest`]'s statement on PostgreSQL: the slowest of the consumers `$1` names, and
/// how far it has read.
fn slowest_statement() -> String {
    format!(
        "SELECT COALESCE(slowest.transaction_id, 0), COALESCE(slowest.position, 0), {}
           FROM (SELECT 1) AS one
           LEFT JOIN LATERAL (
                SELECT transaction_id, position FROM consumer_checkpoints
                 WHERE consumer = ANY($1)
                 ORDER BY transaction_id, position LIMIT 1) AS slowest ON true",
        position_reached_sql(
            "COALESCE(slowest.transaction_id, 0)",
            "COALESCE(slowest.position, 0)"
        )
    )
}

/// [`Store::position_reached`]'s statement.
fn position_reached_statement() -> String {
    format!("SELECT {}", position_reached_sql("$1", "$2"))
}

/// The oldest transaction still running that could be writing to this database's log: the
/// snapshot's in-progress transactions, less the ones `pg_stat_activity` shows in *other*
/// databases (a backend never changes database, so those can never append here); without it,
/// any long transaction anywhere on the server would hold every projection back. A transaction
/// the activity view cannot place (hidden without `pg_read_all_stats`, prepared, or newer than
/// the view) still counts: waiting longer is safe, skipping is not.
const HORIZON: &str = "SELECT COALESCE(
        (SELECT MIN(running) FROM pg_snapshot_xip(pg_current_snapshot()) AS running
          WHERE (running::text::numeric % 4294967296)::text NOT IN (
                SELECT backend_xid::text FROM pg_stat_activity
                 WHERE backend_xid IS NOT NULL AND datname IS NOT NULL
                   AND datname <> current_database())),
        pg_snapshot_xmax(pg_current_snapshot()))";

/// Shared by both backends (sqlx numbers `$n` parameters on SQLite too).
pub(crate) const ADVANCE_CHECKPOINT: &str = "UPDATE consumer_checkpoints
    SET transaction_id = $2, position = $3, updated_at = $4
  WHERE consumer = $1 AND transaction_id = $5 AND position = $6";
