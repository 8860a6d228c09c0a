//! Taking a batch of the log into one or several projections: read it once, fold it, write every projection's rows and checkpoint together.

use super::*;

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
pub(super) async fn commit_batch(
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
pub(super) fn commit_batch_sql(table: &str) -> String {
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
pub(super) async fn commit_consumers_batch<'c>(
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
