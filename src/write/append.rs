//! Appends a batch of one aggregate's events to the log in one statement and says where each
//! landed, so that a command's answer needs no second query for its position.
//!
//! postgres-es and sqlite-es insert a batch one statement per event inside a transaction and
//! return nothing; on PostgreSQL that is `events + 2` round trips per batch, plus one more to
//! find the position afterwards. Here it is one.

use thiserror::Error;

use crate::store::Store;

/// One event of a batch, already encoded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Its sequence in the aggregate's stream.
    pub sequence: i64,
    /// The event's type name.
    pub event_type: String,
    /// The event's version.
    pub event_version: String,
    /// The event as JSON text.
    pub payload: String,
    /// Its metadata as JSON text.
    pub metadata: String,
}

/// Why a batch was not appended.
#[derive(Debug, Error)]
pub enum AppendError {
    /// Another writer appended to the stream first (a sequence is already taken): nothing of
    /// the batch was written.
    #[error("another writer appended to the stream first")]
    Conflict,
    /// The database failed; nothing of the batch was written.
    #[error(transparent)]
    Store(sqlx::Error),
}

impl From<sqlx::Error> for AppendError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(database) if database.is_unique_violation() => Self::Conflict,
            _ => Self::Store(error),
        }
    }
}

impl Store {
    /// Appends `events` (consecutive sequences of one stream) all or nothing, and returns
    /// each one's log position, in the order given.
    pub async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        events: &[NewEvent],
    ) -> Result<Vec<i64>, AppendError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut landed: Vec<(i64, i64)> = match self {
            // One statement is one transaction: no BEGIN/COMMIT round trips.
            Self::Postgres(pool) => {
                sqlx::query_as(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                         event_version, payload, metadata)
                     SELECT $1, $2, batch.sequence, batch.event_type, batch.event_version,
                            batch.payload::json, batch.metadata::json
                       FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
                            AS batch(sequence, event_type, event_version, payload, metadata)
                     RETURNING sequence, position",
                )
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(events.iter().map(|e| e.sequence).collect::<Vec<_>>())
                .bind(
                    events
                        .iter()
                        .map(|e| e.event_type.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    events
                        .iter()
                        .map(|e| e.event_version.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    events
                        .iter()
                        .map(|e| e.payload.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    events
                        .iter()
                        .map(|e| e.metadata.as_str())
                        .collect::<Vec<_>>(),
                )
                .fetch_all(pool)
                .await?
            }
            // SQLite has one writer at a time, and a transaction of local statements costs no
            // round trips. The position is the rowid (a trigger copies it after the insert,
            // which RETURNING does not see).
            Self::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut landed = Vec::with_capacity(events.len());
                for event in events {
                    let position: i64 = sqlx::query_scalar(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                             event_version, payload, metadata)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING rowid",
                    )
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(event.sequence)
                    .bind(&event.event_type)
                    .bind(&event.event_version)
                    .bind(&event.payload)
                    .bind(&event.metadata)
                    .fetch_one(&mut *tx)
                    .await?;
                    landed.push((event.sequence, position));
                }
                tx.commit().await?;
                landed
            }
        };
        // RETURNING's row order is not promised; the sequences say which is which.
        landed.sort_unstable();
        Ok(landed.into_iter().map(|(_, position)| position).collect())
    }
}
