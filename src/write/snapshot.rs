//! Aggregate snapshots, written and read as streams on PostgreSQL: a 100 000-user tenant's
//! snapshot is 22–29 MB of JSON, and holding it whole — as a string, in the driver's buffers,
//! in the statement's arguments — took the service's memory from 31 to over 220 MiB each time
//! one was written or loaded. It is stored in parts of at most a quarter megabyte (one row
//! each, migration 0007) and passes through `COPY` a part at a time between the encoder (or
//! decoder), on a blocking thread, and the connection. (`COPY … TO` sends a row as one
//! message: a snapshot in one row would still arrive whole.)

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::copy_text::{escape_into, FieldReader};
use crate::store::{sql_literal, Store};

/// The longest part of a snapshot's text, in bytes.
pub const PART: usize = 256 * 1024;
/// Parts in flight between the encoder or decoder and the connection.
const PARTS_IN_FLIGHT: usize = 2;

/// Why a snapshot was not written.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The store failed.
    #[error("store failure: {0}")]
    Store(#[from] sqlx::Error),
    /// The state could not be encoded.
    #[error("the state could not be encoded: {0}")]
    Encoding(String),
}

/// A snapshot found in the store: the sequence it covers and the state decoded from it, or
/// why it could not be (a state whose shape has outgrown it).
pub type Found<T> = (i64, Result<T, serde_json::Error>);

impl Store {
    /// Records a snapshot of `state` covering events up to `sequence`, and drops the older
    /// ones. Two writers of the same aggregate never clash: each writes its own row, the
    /// newest wins, and a second snapshot of the same sequence is left out.
    pub async fn save_snapshot<T>(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
        state: Arc<T>,
    ) -> Result<(), SnapshotError>
    where
        T: Serialize + Send + Sync + 'static,
    {
        match self {
            Self::Postgres(pool) => {
                save_streamed(pool, aggregate_type, aggregate_id, sequence, state).await
            }
            Self::Sqlite(pool) => {
                let payload = tokio::task::spawn_blocking(move || serde_json::to_string(&*state))
                    .await
                    .map_err(|error| SnapshotError::Encoding(error.to_string()))?
                    .map_err(|error| SnapshotError::Encoding(error.to_string()))?;
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
                     VALUES ($1, $2, $3, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(sequence)
                .bind(&payload)
                .execute(&mut *tx)
                .await?;
                sqlx::query(DROP_OLDER)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(sequence)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    }

    /// The latest snapshot of an aggregate, decoded; `None` when it has none.
    pub async fn load_snapshot<T>(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Found<T>>, sqlx::Error>
    where
        T: DeserializeOwned + Send + 'static,
    {
        match self {
            Self::Postgres(pool) => load_streamed(pool, aggregate_type, aggregate_id).await,
            Self::Sqlite(pool) => {
                let found: Option<(i64, String)> = sqlx::query_as(
                    "SELECT last_sequence, payload FROM snapshots
                      WHERE aggregate_type = $1 AND aggregate_id = $2
                      ORDER BY last_sequence DESC LIMIT 1",
                )
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_optional(pool)
                .await?;
                Ok(found.map(|(sequence, payload)| (sequence, serde_json::from_str(&payload))))
            }
        }
    }
}

/// Deletes the aggregate's snapshots older than the one just written.
const DROP_OLDER: &str = "DELETE FROM snapshots
                           WHERE aggregate_type = $1 AND aggregate_id = $2 AND last_sequence < $3";

/// Cuts what serde writes into parts and hands each on as one `COPY` text row.
struct PartRows {
    /// The row's fields before the part's number: type, id, sequence, sequence.
    head: Vec<u8>,
    part: u32,
    /// Unescaped text not yet handed on.
    buffer: Vec<u8>,
    rows: mpsc::Sender<Vec<u8>>,
}

impl PartRows {
    /// Hands on the buffer up to its last whole character (the rest starts the next part).
    fn hand_on(&mut self) -> io::Result<()> {
        let cut = last_char_boundary(&self.buffer);
        let rest = self.buffer.split_off(cut);
        let mut row = Vec::with_capacity(self.head.len() + self.buffer.len() + 64);
        row.extend_from_slice(&self.head);
        row.extend_from_slice(format!("{}\t", self.part).as_bytes());
        escape_into(&mut row, &self.buffer);
        row.push(b'\n');
        self.part += 1;
        self.buffer = rest;
        self.buffer.reserve(PART);
        self.rows.blocking_send(row).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the snapshot's writer stopped taking parts",
            )
        })
    }
}

/// `text` cut into a snapshot's parts, in order: for writers other than
/// [`Store::save_snapshot`] (the benchmarks' bulk loader).
pub fn parts(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(PART);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (part, after) = rest.split_at(cut);
        rest = after;
        Some(part)
    })
}

/// Where the last character of `bytes` that is whole ends (UTF-8: a part must be text).
fn last_char_boundary(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(error) => error.valid_up_to(),
    }
}

impl Write for PartRows {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = PART.saturating_sub(self.buffer.len());
            let (fits, after) = rest.split_at(room.min(rest.len()));
            self.buffer.extend_from_slice(fits);
            rest = after;
            if self.buffer.len() >= PART {
                self.hand_on()?;
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.hand_on()?;
        }
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the snapshot's text ends inside a character",
            ))
        }
    }
}

async fn save_streamed<T>(
    pool: &sqlx::PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    state: Arc<T>,
) -> Result<(), SnapshotError>
where
    T: Serialize + Send + Sync + 'static,
{
    let mut head = Vec::new();
    for field in [aggregate_type, aggregate_id] {
        escape_into(&mut head, field.as_bytes());
        head.push(b'\t');
    }
    head.extend_from_slice(format!("{sequence}\t{sequence}\t").as_bytes());
    let (sender, mut rows) = mpsc::channel(PARTS_IN_FLIGHT);
    let encoder = tokio::task::spawn_blocking(move || {
        let mut writer = PartRows {
            head,
            part: 0,
            buffer: Vec::with_capacity(PART + 64),
            rows: sender,
        };
        serde_json::to_writer(&mut writer, &*state).map_err(|error| error.to_string())?;
        writer.flush().map_err(|error| error.to_string())
    });
    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(
            "COPY snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, part,
                             payload)
             FROM STDIN",
        )
        .await?;
    while let Some(row) = rows.recv().await {
        copy.send(row).await?;
    }
    let encoded = encoder
        .await
        .map_err(|error| error.to_string())
        .and_then(|encoded| encoded);
    if let Err(error) = encoded {
        copy.abort("the snapshot could not be encoded").await.ok();
        return Err(SnapshotError::Encoding(error));
    }
    match copy.finish().await {
        Ok(_) => {}
        // Another writer recorded this very sequence first: its snapshot stands.
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    sqlx::query(DROP_OLDER)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// What the decoder reads: the parts' text, unescaped, in order.
struct PartReader {
    parts: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for PartReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.parts.blocking_recv() {
                Some(next) => {
                    self.current = next;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

async fn load_streamed<T>(
    pool: &sqlx::PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<Found<T>>, sqlx::Error>
where
    T: DeserializeOwned + Send + 'static,
{
    // COPY takes no parameters: the values go in as literals.
    let (aggregate_type, aggregate_id) = (sql_literal(aggregate_type), sql_literal(aggregate_id));
    let statement = format!(
        "COPY (SELECT last_sequence, payload FROM snapshots
                WHERE aggregate_type = {aggregate_type} AND aggregate_id = {aggregate_id}
                  AND last_sequence = (SELECT MAX(last_sequence) FROM snapshots
                                        WHERE aggregate_type = {aggregate_type}
                                          AND aggregate_id = {aggregate_id})
                ORDER BY part) TO STDOUT"
    );
    let mut connection = pool.acquire().await?;
    let mut stream = connection.copy_out_raw(&statement).await?;
    let (sender, parts) = mpsc::channel(PARTS_IN_FLIGHT);
    let decoder = tokio::task::spawn_blocking(move || {
        let reader = PartReader {
            parts,
            current: Vec::new(),
            at: 0,
        };
        serde_json::from_reader::<_, T>(BufReader::with_capacity(64 * 1024, reader))
    });
    let mut rows = Rows::default();
    let mut decoder_gone = false;
    // The stream is read to its end even when the decoder has given up: a connection left
    // inside a COPY would first have to drain it.
    while let Some(chunk) = stream.next().await.transpose()? {
        let text = rows.read(&chunk)?;
        if !decoder_gone && !text.is_empty() && sender.send(text).await.is_err() {
            decoder_gone = true;
        }
    }
    drop(sender);
    let decoded = decoder.await.map_err(|error| {
        sqlx::Error::Protocol(format!("the snapshot's decoder failed: {error}"))
    })?;
    Ok(rows.sequence.map(|sequence| (sequence, decoded)))
}

/// The rows of a snapshot's parts as `COPY … TO` sends them (sequence, tab, text, newline),
/// read chunk by chunk wherever the chunks are cut.
#[derive(Default)]
struct Rows {
    /// The snapshot's sequence, once a row has told it.
    sequence: Option<i64>,
    /// The current row's text, once its sequence is read.
    text: Option<FieldReader>,
    sequence_field: FieldReader,
    sequence_text: Vec<u8>,
}

impl Rows {
    /// The parts' text in `chunk`, unescaped and in order.
    fn read(&mut self, mut chunk: &[u8]) -> Result<Vec<u8>, sqlx::Error> {
        let mut text = Vec::with_capacity(chunk.len());
        while !chunk.is_empty() {
            let taken = match &mut self.text {
                Some(field) => {
                    let taken = field.read(chunk, &mut text);
                    if field.ended() {
                        self.text = None;
                    }
                    taken
                }
                None => {
                    let taken = self.sequence_field.read(chunk, &mut self.sequence_text);
                    if self.sequence_field.ended() {
                        let sequence = std::str::from_utf8(&self.sequence_text)
                            .ok()
                            .and_then(|digits| digits.parse().ok())
                            .ok_or_else(|| {
                                sqlx::Error::Protocol(
                                    "a snapshot's sequence is not a number".into(),
                                )
                            })?;
                        self.sequence = Some(sequence);
                        self.sequence_field = FieldReader::default();
                        self.sequence_text.clear();
                        self.text = Some(FieldReader::default());
                    }
                    taken
                }
            };
            chunk = &chunk[taken..];
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::{last_char_boundary, parts, PART};
    use proptest::prelude::*;

    proptest! {
        /// Parts put back together are the text; each is at most a part long, and none but
        /// the last is empty.
        #[test]
        fn parts_are_the_text_cut_at_character_boundaries(
            pieces in proptest::collection::vec(
                prop_oneof![Just("a"), Just("ß"), Just("€"), Just("𝄞"), Just("\\"), Just("\t")],
                0..64,
            ),
            repeat in 1usize..20_000,
        ) {
            let text: String = pieces.concat().repeat(repeat);
            let cut: Vec<&str> = parts(&text).collect();
            prop_assert_eq!(cut.concat(), text.clone());
            prop_assert!(cut.iter().all(|part| !part.is_empty() && part.len() <= PART));
            prop_assert!(cut.len() <= text.len() / (PART - 3) + 1);
        }

        /// The last whole character of a text cut anywhere ends where the text would be whole.
        #[test]
        fn the_last_whole_character_ends_a_prefix_that_is_text(text in ".{0,40}", cut in 0usize..200) {
            let bytes = text.as_bytes();
            let prefix = &bytes[..cut.min(bytes.len())];
            let boundary = last_char_boundary(prefix);
            prop_assert!(std::str::from_utf8(&prefix[..boundary]).is_ok());
            prop_assert!(prefix.len() - boundary < 4);
        }
    }
}
