//! The read models' rows in the store: looked up per key, written per batch (arrays and COPY on PostgreSQL), and the replay table's secondary indexes.

use super::*;

/// Rows of one statement of [`fetch_rows`] and [`write_rows`] on PostgreSQL, where keys and
/// rows travel as arrays.
pub(super) const ROWS_PER_ARRAY: usize = 5_000;

/// [`fetch_rows_of`] on PostgreSQL: one primary-key lookup per (projection, key). Asked as
/// `row_key = ANY($2)`, a planner without fresh statistics (a new or fast-growing table,
/// autovacuum off or behind) read all of the projection's rows through a secondary index and
/// filtered them: a live batch of 14 users read the 1 024 rows of D's user view. Per key, with
/// `LIMIT 1`, the unique key is the only plan.
pub(super) fn fetch_rows_sql(table: &str) -> String {
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
pub(super) type Found = (String, String, String, String, String, String);

pub(super) fn found_row(
    (projection, key, kind, scope, sort_key, doc): Found,
) -> ((String, String), Row) {
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
pub(super) async fn secondary_indexes(
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
pub(super) const COPY_CHUNK: usize = 1 << 20;

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
pub(super) fn upsert_sql(table: &str, count: usize) -> String {
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
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
