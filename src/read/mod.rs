//! Runs the `projections` crate's read models over the global log: each projection is a
//! consumer with its own checkpoint, and every batch's row changes are written in the same
//! transaction that moves that checkpoint, so a crash at any point neither loses nor repeats
//! an event. The rows a batch reads are fetched once, in one query, before it is folded; a
//! batch taken into several projections at once reads and writes all of theirs together.
//!
//! [`replay`] rebuilds every projection from the start of the log beside the live rows and
//! compares them.

pub mod replay;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use projections::rows::Writes;
use projections::{LoggedEvent, Projection, ProjectionError, Row, RowSet};

use crate::copy_text::escape_into;
use crate::log::{Checkpoint, ADVANCE_CHECKPOINT};
use crate::store::{sql_literal, PlanKind, Store};

/// How many rows one statement reads or writes.
const ROWS_PER_STATEMENT: usize = 500;

pub use crate::log::ConsumerError;

/// Where a projection's rows live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// The rows the API serves.
    Live,
    /// The rows `seatledger replay` rebuilds beside them.
    Replay,
}

impl Table {
    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "read_models",
            Self::Replay => "read_models_replay",
        }
    }

    fn consumer(self, projection: &str) -> String {
        match self {
            Self::Live => projection.to_owned(),
            Self::Replay => format!("replay:{projection}"),
        }
    }
}

/// What one step took in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The checkpoint after it.
    pub checkpoint: Checkpoint,
    /// How many events.
    pub events: usize,
}

/// One projection as a checkpointed consumer of the log.
#[derive(Clone)]
pub struct ProjectionRunner {
    projection: Arc<dyn Projection>,
    table: Table,
    consumer: String,
}

impl ProjectionRunner {
    /// Runs `projection` into `table`.
    pub fn new(projection: Arc<dyn Projection>, table: Table) -> Self {
        let consumer = table.consumer(projection.name());
        Self {
            projection,
            table,
            consumer,
        }
    }

    /// The consumer's name (its checkpoint's).
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The projection's name.
    pub fn projection(&self) -> &'static str {
        self.projection.name()
    }

    /// The projection itself.
    pub(crate) fn folds(&self) -> &dyn Projection {
        self.projection.as_ref()
    }

    /// Where its rows live.
    pub(crate) fn table(&self) -> Table {
        self.table
    }

    /// Takes in up to `limit` events not after `until`; `None` when there was nothing to take
    /// in.
    pub async fn step(
        &self,
        store: &Store,
        limit: i64,
        until: Checkpoint,
    ) -> Result<Option<Taken>, ConsumerError> {
        self.step_interrupted(store, limit, until, || Ok(())).await
    }

    /// [`Self::step`], calling `before_commit` once the batch is folded, before anything is
    /// written: an error there leaves the store as it was (crash tests).
    pub async fn step_interrupted(
        &self,
        store: &Store,
        limit: i64,
        until: Checkpoint,
        before_commit: impl FnOnce() -> Result<(), ConsumerError>,
    ) -> Result<Option<Taken>, ConsumerError> {
        step_together(
            store,
            std::slice::from_ref(self),
            limit,
            until,
            before_commit,
        )
        .await
    }

    /// Empties the table's rows of this projection and moves its checkpoint to the start.
    pub async fn reset(&self, store: &Store) -> Result<(), ConsumerError> {
        let table = self.table.name();
        crate::on_pool!(store, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(&format!("DELETE FROM {table} WHERE projection = $1"))
                .bind(self.projection.name())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO consumer_checkpoints (consumer, transaction_id, position, updated_at)
                 VALUES ($1, 0, 0, '')
                 ON CONFLICT (consumer) DO UPDATE SET transaction_id = 0, position = 0, updated_at = ''",
            )
            .bind(&self.consumer)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }
}

/// Takes the same batch of events into several projections at once — read and decoded once,
/// written with every checkpoint in one transaction — for runners that stand at the same
/// checkpoint (a replay rebuilding them all side by side).
#[tracing::instrument(name = "consumer batch", skip_all, fields(consumer = runners.first().map(|runner| runner.consumer.as_str()), projections = runners.len(), limit))]
pub async fn step_together(
    store: &Store,
    runners: &[ProjectionRunner],
    limit: i64,
    until: Checkpoint,
    before_commit: impl FnOnce() -> Result<(), ConsumerError>,
) -> Result<Option<Taken>, ConsumerError> {
    let Some(first) = runners.first() else {
        return Ok(None);
    };
    let from = store.checkpoint(&first.consumer).await?;
    for runner in &runners[1..] {
        if store.checkpoint(&runner.consumer).await? != from {
            return Err(ConsumerError::Failed(format!(
                "'{}' and '{}' stand at different checkpoints; step them one by one",
                first.consumer, runner.consumer
            )));
        }
    }
    step_together_from(store, runners, from, limit, until, before_commit).await
}

/// [`step_together`] for runners known to stand at `from` (a consumer remembers where its last
/// batch left it instead of asking the store each time); when they do not, nothing is written
/// and the step ends with [`ConsumerError::Overtaken`].
///
/// The rows are read before the write and outside its transaction: the checkpoint's
/// compare-and-set makes that safe, since whoever else writes these rows (another instance, a
/// replay's swap) moves the checkpoint too, and then nothing of this batch is written.
#[tracing::instrument(
    name = "consumer batch",
    skip_all,
    fields(
        consumer = runners.first().map(|runner| runner.consumer.as_str()),
        projections = runners.len(),
        from = from.position,
        limit,
    )
)]
pub async fn step_together_from(
    store: &Store,
    runners: &[ProjectionRunner],
    from: Checkpoint,
    limit: i64,
    until: Checkpoint,
    before_commit: impl FnOnce() -> Result<(), ConsumerError>,
) -> Result<Option<Taken>, ConsumerError> {
    let Some(first) = runners.first() else {
        return Ok(None);
    };
    let table = first.table;
    if let Some(other) = runners.iter().find(|runner| runner.table != table) {
        return Err(ConsumerError::Failed(format!(
            "'{}' and '{}' write different tables; step them one by one",
            first.consumer, other.consumer
        )));
    }
    let events = store.read_log(from, until, limit).await?;
    let Some(last) = events.last() else {
        return Ok(None);
    };
    let to = last.checkpoint;
    let logged = events
        .iter()
        .map(crate::log::StoredEvent::decode)
        .collect::<Result<Vec<LoggedEvent>, ProjectionError>>()?;
    drop(events);
    let wanted: Vec<(&str, Vec<String>)> = runners
        .iter()
        .map(|runner| {
            let keys: BTreeSet<String> = logged
                .iter()
                .flat_map(|event| runner.projection.keys(event))
                .collect();
            (runner.projection.name(), keys.into_iter().collect())
        })
        .collect();
    let fetched = fetch_rows_of(store, table, &wanted).await?;
    let mut writes = Vec::with_capacity(runners.len());
    for (runner, found) in runners.iter().zip(fetched) {
        let name = runner.projection.name();
        let mut rows = RowSet::prefetched(found);
        for event in &logged {
            runner.projection.apply(event, &mut rows)?;
        }
        // Every key was fetched, so the set knows what the store holds under each.
        let (_, changes) = rows.take_writes(|_| true);
        writes.push(ConsumerWrites {
            consumer: runner.consumer.clone(),
            projection: name,
            writes: changes,
        });
    }
    before_commit()?;
    commit_batch(store, table, &writes, from, to).await?;
    Ok(Some(Taken {
        checkpoint: to,
        events: logged.len(),
    }))
}

/// Writes one batch and moves its consumers' checkpoints from `from` to `to`. On PostgreSQL
/// the whole batch is a single statement, whatever the number of consumers: a transaction of
/// several statements would hold its transaction id across round trips (every log reader
/// waits below the oldest one running), and each statement is a round trip the commands wait
/// behind. Each consumer's checkpoint compare-and-set guards its own rows: a consumer someone
/// else moved (another instance, a replay's swap) gets nothing written, the others are written,
/// and the step ends with [`ConsumerError::Overtaken`].
async fn commit_batch(
    store: &Store,
    table: Table,
    writes: &[ConsumerWrites],
    from: Checkpoint,
    to: Checkpoint,
) -> Result<(), ConsumerError> {
    let Store::Postgres(pool) = store else {
        return write_rows(store, table, writes, &[], from, to).await;
    };
    let moved = commit_consumers_batch(pool, table, writes, from, to).await?;
    match writes
        .iter()
        .find(|consumer| !moved.contains(&consumer.consumer))
    {
        Some(overtaken) => Err(ConsumerError::Overtaken(overtaken.consumer.clone())),
        None => Ok(()),
    }
}

/// The statement of [`commit_consumers_batch`]: rows are written and deleted only for the
/// projections whose consumer's checkpoint moved. Deleted rows are looked up one key at a time
/// (`LATERAL … LIMIT 1`, as [`fetch_rows_of`] does) and deleted by their row address: asked as
/// `row_key = ANY(…)`, or joined, a planner without fresh statistics reads the whole table.
fn commit_batch_sql(table: &str) -> String {
    format!(
        "WITH moved AS (
              UPDATE consumer_checkpoints
                 SET transaction_id = $3, position = $4, updated_at = $5
               WHERE consumer = ANY($1::text[]) AND transaction_id = $6 AND position = $7
              RETURNING consumer),
          moved_projections AS (
              SELECT owner.projection
                FROM unnest($1::text[], $2::text[]) AS owner (consumer, projection)
               WHERE owner.consumer IN (SELECT consumer FROM moved)),
          written AS (
              INSERT INTO {table} (projection, row_key, kind, scope, sort_key, doc)
              SELECT projection, row_key, kind, scope, sort_key, doc
                FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                            $13::text[])
                     AS written (projection, row_key, kind, scope, sort_key, doc)
               WHERE projection IN (SELECT projection FROM moved_projections)
              ON CONFLICT (projection, row_key) DO UPDATE SET kind = excluded.kind,
                  scope = excluded.scope, sort_key = excluded.sort_key, doc = excluded.doc),
          deleted AS (
              DELETE FROM {table}
               WHERE ctid = ANY(ARRAY(
                     SELECT found.ctid
                       FROM unnest($14::text[], $15::text[]) AS gone (projection, row_key),
                            LATERAL (SELECT ctid FROM {table}
                                      WHERE projection = gone.projection
                                        AND row_key = gone.row_key
                                      LIMIT 1) AS found
                      WHERE gone.projection IN (SELECT projection FROM moved_projections))))
         SELECT consumer FROM moved"
    )
}

/// PostgreSQL's plan, as run, of a batch of `projection` that only deletes `keys` and moves
/// `consumer` from `from` to `to` (it is executed): for tests that deleted rows are found
/// along the primary key.
#[doc(hidden)]
pub async fn explain_commit_deletes(
    store: &Store,
    table: Table,
    consumer: &str,
    projection: &str,
    (from, to): (Checkpoint, Checkpoint),
    keys: &[String],
    kind: PlanKind,
) -> Result<Vec<String>, sqlx::Error> {
    let array = |texts: Vec<String>| format!("ARRAY[{}]::text[]", texts.join(", "));
    let empty = || "'{}'::text[]".to_owned();
    let arguments = [
        array(vec![sql_literal(consumer)]),
        array(vec![sql_literal(projection)]),
        to.transaction_id.to_string(),
        to.position.to_string(),
        sql_literal(&projections::instant_key(chrono::Utc::now())),
        from.transaction_id.to_string(),
        from.position.to_string(),
        empty(),
        empty(),
        empty(),
        empty(),
        empty(),
        empty(),
        array(keys.iter().map(|_| sql_literal(projection)).collect()),
        array(keys.iter().map(|key| sql_literal(key)).collect()),
    ];
    store
        .explain(&commit_batch_sql(table.name()), &arguments, kind)
        .await
}

/// Every consumer's rows and checkpoint in one PostgreSQL statement; the consumers whose
/// checkpoint moved (only their rows were written).
async fn commit_consumers_batch<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    table: Table,
    consumers: &[ConsumerWrites],
    from: Checkpoint,
    to: Checkpoint,
) -> Result<Vec<String>, ConsumerError> {
    let rows: Vec<(&str, &(String, Row))> = consumers
        .iter()
        .flat_map(|consumer| {
            let writes = &consumer.writes;
            writes
                .inserts
                .iter()
                .chain(&writes.upserts)
                .map(|row| (consumer.projection, row))
        })
        .collect();
    fn column<'a>(
        rows: &[(&'a str, &'a (String, Row))],
        field: impl Fn(&'a (String, Row)) -> &'a str,
    ) -> Vec<&'a str> {
        rows.iter().map(|(_, row)| field(row)).collect()
    }
    let deletes: Vec<(&str, &String)> = consumers
        .iter()
        .flat_map(|consumer| {
            consumer
                .writes
                .deletes
                .iter()
                .map(|key| (consumer.projection, key))
        })
        .collect();
    let moved: Vec<String> = sqlx::query_scalar(&commit_batch_sql(table.name()))
        .bind(
            consumers
                .iter()
                .map(|c| c.consumer.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(consumers.iter().map(|c| c.projection).collect::<Vec<_>>())
        .bind(to.transaction_id)
        .bind(to.position)
        .bind(projections::instant_key(chrono::Utc::now()))
        .bind(from.transaction_id)
        .bind(from.position)
        .bind(
            rows.iter()
                .map(|(projection, _)| *projection)
                .collect::<Vec<_>>(),
        )
        .bind(column(&rows, |(key, _)| key))
        .bind(column(&rows, |(_, row)| &row.kind))
        .bind(column(&rows, |(_, row)| &row.scope))
        .bind(column(&rows, |(_, row)| &row.sort_key))
        .bind(column(&rows, |(_, row)| &row.doc))
        .bind(
            deletes
                .iter()
                .map(|(projection, _)| *projection)
                .collect::<Vec<_>>(),
        )
        .bind(
            deletes
                .iter()
                .map(|(_, key)| key.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_all(executor)
        .await?;
    Ok(moved)
}

/// Rows of one statement of [`fetch_rows`] and [`write_rows`] on PostgreSQL, where keys and
/// rows travel as arrays.
const ROWS_PER_ARRAY: usize = 5_000;

/// [`fetch_rows_of`] on PostgreSQL: one primary-key lookup per (projection, key). Asked as
/// `row_key = ANY($2)`, a planner without fresh statistics (a new or fast-growing table,
/// autovacuum off or behind) read all of the projection's rows through a secondary index and
/// filtered them: a live batch of 14 users read the 1 024 rows of D's user view. Per key, with
/// `LIMIT 1`, the unique key is the only plan.
fn fetch_rows_sql(table: &str) -> String {
    format!(
        "SELECT wanted.projection, wanted.row_key, found.kind, found.scope, found.sort_key,
                found.doc
           FROM unnest($1::text[], $2::text[]) AS wanted (projection, row_key),
                LATERAL (SELECT kind, scope, sort_key, doc FROM {table}
                          WHERE projection = wanted.projection AND row_key = wanted.row_key
                          LIMIT 1) AS found"
    )
}

/// PostgreSQL's plan, as run, of [`fetch_rows`] of `keys`: for tests that it looks the keys
/// up instead of reading the projection.
#[doc(hidden)]
pub async fn explain_fetch_rows(
    store: &Store,
    table: Table,
    projection: &str,
    keys: &[String],
    kind: PlanKind,
) -> Result<Vec<String>, sqlx::Error> {
    let array = |texts: Vec<String>| format!("ARRAY[{}]::text[]", texts.join(", "));
    let arguments = [
        array(keys.iter().map(|_| sql_literal(projection)).collect()),
        array(keys.iter().map(|key| sql_literal(key)).collect()),
    ];
    store
        .explain(&fetch_rows_sql(table.name()), &arguments, kind)
        .await
}

/// The columns [`fetch_rows_of`] reads: projection, key and row.
type Found = (String, String, String, String, String, String);

fn found_row((projection, key, kind, scope, sort_key, doc): Found) -> ((String, String), Row) {
    (
        (projection, key),
        Row {
            kind,
            scope,
            sort_key,
            doc,
        },
    )
}

/// The rows of `projection` under `keys` in `table`, each key with its row or `None`.
pub(crate) async fn fetch_rows(
    store: &Store,
    table: Table,
    projection: &str,
    keys: &[String],
) -> Result<Vec<(String, Option<Row>)>, sqlx::Error> {
    let wanted = [(projection, keys)];
    Ok(fetch_rows_of(store, table, &wanted)
        .await?
        .pop()
        .unwrap_or_default())
}

/// [`fetch_rows`] of several projections at once, in the order given: on PostgreSQL one
/// statement for all of them (a batch taken into every projection reads their rows in one
/// round trip).
pub(crate) async fn fetch_rows_of<K: AsRef<[String]>>(
    store: &Store,
    table: Table,
    wanted: &[(&str, K)],
) -> Result<Vec<Vec<(String, Option<Row>)>>, sqlx::Error> {
    let table = table.name();
    // By projection, then key: looked up by `&str`, without building a key per lookup.
    let mut found: HashMap<String, HashMap<String, Row>> = HashMap::new();
    let mut keep = |rows: Vec<Found>| {
        for ((projection, key), row) in rows.into_iter().map(found_row) {
            found.entry(projection).or_default().insert(key, row);
        }
    };
    match store {
        Store::Postgres(pool) => {
            let pairs: Vec<(&str, &String)> = wanted
                .iter()
                .flat_map(|(projection, keys)| {
                    keys.as_ref().iter().map(move |key| (*projection, key))
                })
                .collect();
            for chunk in pairs.chunks(ROWS_PER_ARRAY) {
                let (projections, keys): (Vec<&str>, Vec<&String>) = chunk.iter().copied().unzip();
                let rows: Vec<Found> = sqlx::query_as(&fetch_rows_sql(table))
                    .bind(projections)
                    .bind(keys)
                    .fetch_all(pool)
                    .await?;
                keep(rows);
            }
        }
        Store::Sqlite(pool) => {
            for (projection, keys) in wanted {
                for chunk in keys.as_ref().chunks(ROWS_PER_STATEMENT) {
                    let sql = format!(
                        "SELECT projection, row_key, kind, scope, sort_key, doc FROM {table}
                          WHERE projection = $1 AND row_key IN ({})",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query_as::<_, Found>(&sql).bind(*projection);
                    for key in chunk {
                        query = query.bind(key);
                    }
                    let rows = query.fetch_all(pool).await?;
                    keep(rows);
                }
            }
        }
    }
    Ok(wanted
        .iter()
        .map(|(projection, keys)| {
            keys.as_ref()
                .iter()
                .map(|key| {
                    let row = found
                        .get_mut(*projection)
                        .and_then(|rows| rows.remove(key.as_str()));
                    (key.clone(), row)
                })
                .collect()
        })
        .collect())
}

/// What one batch writes for one consumer of a projection.
#[derive(Debug)]
pub(crate) struct ConsumerWrites {
    /// The consumer whose checkpoint moves.
    pub consumer: String,
    /// Its projection's name (the rows' owner).
    pub projection: &'static str,
    /// The rows.
    pub writes: Writes,
}

/// The secondary indexes (neither primary key nor unique) a bulk rebuild of `table` drops
/// and builds again once it is filled: each index then costs one sort at the end instead of
/// an insertion per row written (on the 1 M-event store the two secondary indexes took 2–3 s
/// of the replay's writes, and building them 1 s). Dropped on PostgreSQL only.
#[derive(Debug, Default)]
pub(crate) struct SecondaryIndexes {
    /// `USING method (columns…)` of each index to build.
    definitions: BTreeSet<String>,
}

/// `(name, definition)` of the secondary indexes of `table` on PostgreSQL: the name as a
/// reference (quoted and qualified as needed), the definition from `USING` on.
async fn secondary_indexes(
    pool: &sqlx::PgPool,
    table: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT x.indexrelid::regclass::text, pg_get_indexdef(x.indexrelid)
           FROM pg_index AS x
          WHERE x.indrelid = $1::regclass AND NOT x.indisprimary AND NOT x.indisunique",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    Ok(found
        .into_iter()
        .filter_map(|(name, definition)| {
            let (_, using) = definition.split_once(" USING ")?;
            Some((name, format!("USING {using}")))
        })
        .collect())
}

impl SecondaryIndexes {
    /// Drops the secondary indexes of `table` and remembers what to build: those, and for the
    /// replay table those of the live table too (its twin), so that indexes a replay dropped
    /// before dying come back with the next one.
    pub(crate) async fn remove(store: &Store, table: Table) -> Result<Self, sqlx::Error> {
        let Store::Postgres(pool) = store else {
            return Ok(Self::default());
        };
        let own = secondary_indexes(pool, table.name()).await?;
        let mut definitions: BTreeSet<String> = own
            .iter()
            .map(|(_, definition)| definition.clone())
            .collect();
        if table == Table::Replay {
            definitions.extend(
                secondary_indexes(pool, Table::Live.name())
                    .await?
                    .into_iter()
                    .map(|(_, definition)| definition),
            );
        }
        for (name, _) in own {
            sqlx::query(&format!("DROP INDEX IF EXISTS {name}"))
                .execute(pool)
                .await?;
        }
        Ok(Self { definitions })
    }

    /// Builds every index remembered that `table` lacks, side by side, then renews the
    /// table's statistics.
    pub(crate) async fn rebuild(self, store: &Store, table: Table) -> Result<(), sqlx::Error> {
        let Store::Postgres(pool) = store else {
            return Ok(());
        };
        let name = table.name();
        let present: BTreeSet<String> = secondary_indexes(pool, name)
            .await?
            .into_iter()
            .map(|(_, definition)| definition)
            .collect();
        let builds = self
            .definitions
            .difference(&present)
            .map(|definition| format!("CREATE INDEX ON {name} {definition}"))
            .chain([format!("ANALYZE {name}")])
            .map(|sql| async move { sqlx::query(&sql).execute(pool).await.map(drop) });
        futures::future::try_join_all(builds).await?;
        Ok(())
    }
}

/// Bytes of `COPY` data per message.
const COPY_CHUNK: usize = 1 << 20;

/// Appends `rows` of `projection` to `buffer` as `COPY … FROM STDIN` text (the columns of
/// [`write_rows`]' `COPY`).
pub(crate) fn copy_rows(buffer: &mut Vec<u8>, projection: &str, rows: &[(String, Row)]) {
    for (key, row) in rows {
        for (n, field) in [
            projection,
            key,
            &row.kind,
            &row.scope,
            &row.sort_key,
            &row.doc,
        ]
        .into_iter()
        .enumerate()
        {
            if n > 0 {
                buffer.push(b'\t');
            }
            escape_into(buffer, field.as_bytes());
        }
        buffer.push(b'\n');
    }
}

/// Moves every consumer of `writes` from `from` to `to` inside the transaction `tx` (either
/// backend's), or ends the write with [`ConsumerError::Overtaken`] (the transaction then rolls
/// back when dropped).
macro_rules! advance_checkpoints {
    ($tx:ident, $writes:expr, $from:expr, $to:expr) => {
        for ConsumerWrites { consumer, .. } in $writes {
            let moved = sqlx::query(ADVANCE_CHECKPOINT)
                .bind(consumer)
                .bind($to.transaction_id)
                .bind($to.position)
                .bind(projections::instant_key(chrono::Utc::now()))
                .bind($from.transaction_id)
                .bind($from.position)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if moved != 1 {
                return Err(ConsumerError::Overtaken(consumer.clone()));
            }
        }
    };
}

/// Writes the rows of several projections' batch into `table` and moves each consumer's
/// checkpoint from `from` to `to`, in one transaction; `copied` holds new rows already
/// encoded by [`copy_rows`] (PostgreSQL only). On PostgreSQL new rows go in by `COPY`, the
/// others as arrays, and the commit does not wait for the disk: a crash can lose the last
/// batches, never part of one, and a replay starts again from the beginning anyway.
pub(crate) async fn write_rows(
    store: &Store,
    table: Table,
    writes: &[ConsumerWrites],
    copied: &[u8],
    from: Checkpoint,
    to: Checkpoint,
) -> Result<(), ConsumerError> {
    let table = table.name();
    match store {
        Store::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
            if !copied.is_empty()
                || writes
                    .iter()
                    .any(|consumer| !consumer.writes.inserts.is_empty())
            {
                let mut copy = tx
                    .copy_in_raw(&format!(
                        "COPY {table} (projection, row_key, kind, scope, sort_key, doc) FROM STDIN"
                    ))
                    .await?;
                let mut buffer = Vec::new();
                for consumer in writes {
                    copy_rows(&mut buffer, consumer.projection, &consumer.writes.inserts);
                }
                for chunk in copied.chunks(COPY_CHUNK).chain(buffer.chunks(COPY_CHUNK)) {
                    copy.send(chunk).await?;
                }
                copy.finish().await?;
            }
            let upserts: Vec<(&str, &str, &Row)> = writes
                .iter()
                .flat_map(|consumer| {
                    let projection = consumer.projection;
                    consumer
                        .writes
                        .upserts
                        .iter()
                        .map(move |(key, row)| (projection, key.as_str(), row))
                })
                .collect();
            for chunk in upserts.chunks(ROWS_PER_ARRAY) {
                fn column<'a>(
                    chunk: &[(&'a str, &'a str, &'a Row)],
                    field: impl Fn(&(&'a str, &'a str, &'a Row)) -> &'a str,
                ) -> Vec<&'a str> {
                    chunk.iter().map(field).collect()
                }
                sqlx::query(&format!(
                    "INSERT INTO {table} (projection, row_key, kind, scope, sort_key, doc)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                     ON CONFLICT (projection, row_key) DO UPDATE SET kind = excluded.kind,
                         scope = excluded.scope, sort_key = excluded.sort_key, doc = excluded.doc"
                ))
                .bind(column(chunk, |(projection, _, _)| projection))
                .bind(column(chunk, |(_, key, _)| key))
                .bind(column(chunk, |(_, _, row)| &row.kind))
                .bind(column(chunk, |(_, _, row)| &row.scope))
                .bind(column(chunk, |(_, _, row)| &row.sort_key))
                .bind(column(chunk, |(_, _, row)| &row.doc))
                .execute(&mut *tx)
                .await?;
            }
            for ConsumerWrites {
                projection, writes, ..
            } in writes
            {
                for chunk in writes.deletes.chunks(ROWS_PER_ARRAY) {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE projection = $1 AND row_key = ANY($2)"
                    ))
                    .bind(*projection)
                    .bind(chunk)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            advance_checkpoints!(tx, writes, from, to);
            tx.commit().await?;
        }
        Store::Sqlite(pool) => {
            debug_assert!(copied.is_empty(), "SQLite takes rows, not COPY data");
            let mut tx = pool.begin().await?;
            for ConsumerWrites {
                projection, writes, ..
            } in writes
            {
                let rows: Vec<&(String, Row)> =
                    writes.inserts.iter().chain(&writes.upserts).collect();
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    let sql = upsert_sql(table, chunk.len());
                    let mut query = sqlx::query(&sql).bind(*projection);
                    for (key, row) in chunk {
                        query = query
                            .bind(key)
                            .bind(&row.kind)
                            .bind(&row.scope)
                            .bind(&row.sort_key)
                            .bind(&row.doc);
                    }
                    query.execute(&mut *tx).await?;
                }
                for chunk in writes.deletes.chunks(ROWS_PER_STATEMENT) {
                    let sql = format!(
                        "DELETE FROM {table} WHERE projection = $1 AND row_key IN ({})",
                        placeholders(2, chunk.len())
                    );
                    let mut query = sqlx::query(&sql).bind(*projection);
                    for key in chunk {
                        query = query.bind(key);
                    }
                    query.execute(&mut *tx).await?;
                }
            }
            advance_checkpoints!(tx, writes, from, to);
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Inserts or replaces `count` rows of one projection (`$1`), five parameters a row.
fn upsert_sql(table: &str, count: usize) -> String {
    let values: Vec<String> = (0..count)
        .map(|i| format!("($1, {})", placeholders(2 + i * 5, 5)))
        .collect();
    format!(
        "INSERT INTO {table} (projection, row_key, kind, scope, sort_key, doc) VALUES {}
         ON CONFLICT (projection, row_key) DO UPDATE SET kind = excluded.kind,
             scope = excluded.scope, sort_key = excluded.sort_key, doc = excluded.doc",
        values.join(", ")
    )
}

/// `$first, $first+1, …` for `count` parameters.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The documents of one kind listed under `scope` in a projection's live rows.
pub async fn scoped_docs(
    store: &Store,
    projection: &str,
    kind: &str,
    scope: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    crate::on_pool!(store, pool => {
        sqlx::query_as(
            "SELECT row_key, doc FROM read_models
              WHERE projection = $1 AND kind = $2 AND scope = $3 ORDER BY row_key",
        )
        .bind(projection)
        .bind(kind)
        .bind(scope)
        .fetch_all(pool)
        .await
    })
}

/// Up to `limit` of [`scoped_docs`]' rows, those after the key `after` (`""` for the first
/// page): a long list read a page at a time, each page a range of the scope's index.
pub async fn scoped_docs_page(
    store: &Store,
    projection: &str,
    kind: &str,
    scope: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    crate::on_pool!(store, pool => {
        sqlx::query_as(
            "SELECT row_key, doc FROM read_models
              WHERE projection = $1 AND kind = $2 AND scope = $3 AND row_key > $4
              ORDER BY row_key LIMIT $5",
        )
        .bind(projection)
        .bind(kind)
        .bind(scope)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}

/// One document of a projection's live rows.
pub async fn doc(
    store: &Store,
    projection: &str,
    row_key: &str,
) -> Result<Option<String>, sqlx::Error> {
    crate::on_pool!(store, pool => {
        sqlx::query_scalar("SELECT doc FROM read_models WHERE projection = $1 AND row_key = $2")
            .bind(projection)
            .bind(row_key)
            .fetch_optional(pool)
            .await
    })
}

/// Decodes the documents of [`scoped_docs`].
pub fn decode_all<T: serde::de::DeserializeOwned>(
    docs: &[(String, String)],
) -> Result<Vec<T>, ProjectionError> {
    docs.iter()
        .map(|(key, doc)| projections::rows::decode(key, doc))
        .collect()
}

/// One row that differs between the live read models and a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The projection.
    pub projection: String,
    /// The row.
    pub row_key: String,
    /// What differs.
    pub what: DifferenceKind,
}

/// How a row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DifferenceKind {
    /// Only the live table has it.
    OnlyLive,
    /// Only the replay has it.
    OnlyReplay,
    /// Both have it, with different contents.
    Changed,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.what {
            DifferenceKind::OnlyLive => "only in the live table (the replay has no such row)",
            DifferenceKind::OnlyReplay => "missing from the live table (the replay has it)",
            DifferenceKind::Changed => "differs between the live table and the replay",
        };
        write!(f, "{}: row '{}' {what}", self.projection, self.row_key)
    }
}

/// Compares a projection's live rows with its replayed rows, provided the live checkpoint is
/// `expected` (read in the same snapshot as the rows). `None` when the live projection has
/// moved on since: replay up to its new checkpoint and compare again.
pub async fn compare(
    store: &Store,
    projection: &str,
    expected: Checkpoint,
) -> Result<Option<Vec<Difference>>, sqlx::Error> {
    const ONE_SIDED: &str = "SELECT row_key FROM (
            SELECT row_key, kind, scope, sort_key, doc FROM {a} WHERE projection = $1
            EXCEPT
            SELECT row_key, kind, scope, sort_key, doc FROM {b} WHERE projection = $1) AS d
          ORDER BY row_key";
    let live_not_replay = ONE_SIDED
        .replace("{a}", "read_models")
        .replace("{b}", "read_models_replay");
    let replay_not_live = ONE_SIDED
        .replace("{a}", "read_models_replay")
        .replace("{b}", "read_models");
    let (live_side, replay_side): (Vec<String>, Vec<String>) = crate::on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        if matches!(store, Store::Postgres(_)) {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        let (transaction_id, position): (i64, i64) = sqlx::query_as(
            "SELECT transaction_id, position FROM consumer_checkpoints WHERE consumer = $1",
        )
        .bind(projection)
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or((0, 0));
        if (Checkpoint { transaction_id, position }) != expected {
            return Ok(None);
        }
        let live_side = sqlx::query_scalar(&live_not_replay).bind(projection).fetch_all(&mut *tx).await?;
        let replay_side = sqlx::query_scalar(&replay_not_live).bind(projection).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        (live_side, replay_side)
    });
    let replayed: BTreeSet<&String> = replay_side.iter().collect();
    let live: BTreeSet<&String> = live_side.iter().collect();
    let mut differences: Vec<Difference> = live_side
        .iter()
        .map(|key| Difference {
            projection: projection.to_owned(),
            row_key: key.clone(),
            what: if replayed.contains(key) {
                DifferenceKind::Changed
            } else {
                DifferenceKind::OnlyLive
            },
        })
        .collect();
    differences.extend(
        replay_side
            .iter()
            .filter(|key| !live.contains(key))
            .map(|key| Difference {
                projection: projection.to_owned(),
                row_key: key.clone(),
                what: DifferenceKind::OnlyReplay,
            }),
    );
    differences.sort_by(|a, b| a.row_key.cmp(&b.row_key));
    Ok(Some(differences))
}
