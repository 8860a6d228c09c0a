//! `seatledger replay`: rebuilds every projection from the start of the log into the replay
//! table, beside the live one, and with `--verify` proves the two equal row by row.
//!
//! The rebuild is one pass over the log in three overlapping stages: a reader task reads and
//! decodes the next batches while the folding stage folds the current one into every
//! projection, and a writer task commits the previous one. The replay is the only writer of
//! its rows (the table is emptied first and the checkpoints' compare-and-set catches a second
//! replay), so the folding stage keeps the rows it has seen in memory between batches, up to
//! a byte budget, and knows which keys it never wrote: most batches read no row from the
//! table at all, new rows go in by `COPY`, and each batch's changes are one transaction that
//! also moves the checkpoints.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use projections::{LoggedEvent, RowSet};
use tokio::sync::{mpsc, watch};

use crate::log::Checkpoint;
use crate::read::{
    compare, copy_rows, fetch_rows, write_rows, ConsumerError, ConsumerWrites, Difference,
    ProjectionRunner, SecondaryIndexes, Table,
};
use crate::store::Store;

/// Events per read of the log.
const REPLAY_BATCH: i64 = 5_000;
/// Events per replay transaction: larger than live batches, as nobody waits on them, and
/// the rows a transaction changes are written once however many of its events change them.
const REPLAY_TRANSACTION: usize = 20_000;
/// Memory for the rows the replay keeps between batches, all projections together (roughly:
/// key, row and bookkeeping). Rows used least recently are dropped first, and read again
/// from the table when an event needs them.
const CACHE_BYTES: usize = 32 << 20;
/// Batches read and decoded ahead of the one being folded.
const READ_AHEAD: usize = 2;
/// How often verification chases a live projection that keeps moving before giving up.
const VERIFY_ATTEMPTS: usize = 20;

/// How a replay runs: [`Settings::default`] is what `seatledger replay` uses; tests shrink
/// both to make every mechanism work hard on a small log.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Events per read of the log.
    pub batch: i64,
    /// Events per transaction (whole batches: at least one).
    pub transaction: usize,
    /// Roughly the memory for rows kept between batches (0: none is kept beyond the batches
    /// not yet committed).
    pub cache_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: REPLAY_BATCH,
            transaction: REPLAY_TRANSACTION,
            cache_bytes: CACHE_BYTES,
        }
    }
}

/// What a replay did for one projection.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// The projection.
    pub projection: &'static str,
    /// Events read.
    pub events: u64,
    /// How long it took (the pass shared with the other projections included).
    pub elapsed: std::time::Duration,
    /// The differences found, when verifying.
    pub differences: Option<Vec<Difference>>,
    /// Rows read back from the table during the pass shared with the other projections (rows
    /// the replay had written, then dropped from memory, before an event needed them again).
    pub rows_read: usize,
}

/// How far a replay is, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The projection being rebuilt.
    pub projection: &'a str,
    /// Events read so far.
    pub events: u64,
    /// The position reached.
    pub position: i64,
    /// The log's last position.
    pub log_end: i64,
}

/// Rebuilds every projection in one pass over the log (each batch read and decoded once, then
/// folded into every projection); with `verify`, each up to its live checkpoint, then compares.
/// `progress` is called after every batch committed.
pub async fn run(
    store: &Store,
    verify: bool,
    progress: impl FnMut(Progress<'_>),
) -> Result<Vec<Rebuilt>, ConsumerError> {
    run_with(store, verify, Settings::default(), progress).await
}

/// [`run`] with other [`Settings`].
pub async fn run_with(
    store: &Store,
    verify: bool,
    settings: Settings,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Vec<Rebuilt>, ConsumerError> {
    let log_end = store.log_end().await?;
    let runners: Vec<ProjectionRunner> = projections::all()
        .into_iter()
        .map(|projection| ProjectionRunner::new(projection, Table::Replay))
        .collect();
    let started = Instant::now();
    let mut targets = Vec::with_capacity(runners.len());
    for runner in &runners {
        runner.reset(store).await?;
        targets.push(if verify {
            store.checkpoint(runner.projection()).await?
        } else {
            Checkpoint::END
        });
    }
    // Together as far as every projection goes; each on alone to its own live checkpoint.
    let common = targets.iter().copied().min().unwrap_or(Checkpoint::END);
    let indexes = SecondaryIndexes::remove(store, Table::Replay).await?;
    let together =
        rebuild_together(store, &runners, common, settings, log_end, &mut progress).await;
    // Built again whether the pass went through or not.
    let rebuilt = indexes.rebuild(store, Table::Replay).await;
    let (together, rows_read) = together?;
    rebuilt?;
    let shared = started.elapsed();
    let mut report = Vec::new();
    for ((runner, mut target), rows_read) in runners.iter().zip(targets).zip(rows_read) {
        let name = runner.projection();
        let alone = Instant::now();
        let mut events = together;
        catch_up(
            store,
            runner,
            target,
            log_end,
            settings.batch,
            &mut events,
            &mut progress,
        )
        .await?;
        let mut differences = None;
        if verify {
            for _ in 0..VERIFY_ATTEMPTS {
                if let Some(found) = compare(store, name, target).await? {
                    differences = Some(found);
                    break;
                }
                target = store.checkpoint(name).await?;
                let batch = settings.batch;
                catch_up(
                    store,
                    runner,
                    target,
                    log_end,
                    batch,
                    &mut events,
                    &mut progress,
                )
                .await?;
            }
            if differences.is_none() {
                return Err(ConsumerError::Failed(format!(
                    "the live '{name}' projection kept moving; verify again when the service is quieter"
                )));
            }
        }
        report.push(Rebuilt {
            projection: name,
            events,
            elapsed: shared + alone.elapsed(),
            differences,
            rows_read,
        });
    }
    Ok(report)
}

async fn catch_up(
    store: &Store,
    runner: &ProjectionRunner,
    target: Checkpoint,
    log_end: i64,
    batch: i64,
    events: &mut u64,
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<(), ConsumerError> {
    while let Some(taken) = runner.step(store, batch, target).await? {
        *events += taken.events as u64;
        progress(Progress {
            projection: runner.projection(),
            events: *events,
            position: taken.checkpoint.position,
            log_end,
        });
    }
    Ok(())
}

/// One batch of the log, read and decoded.
struct Batch {
    /// The checkpoint after it.
    to: Checkpoint,
    events: Vec<LoggedEvent>,
}

/// What the reader hands the folding stage.
enum Read {
    /// The next batch.
    Batch(Batch),
    /// Nothing more for now: what was folded must be committed before the reader looks again.
    Idle,
}

/// One transaction's writes for every projection, for the writer.
struct Job {
    /// The rows sets' round of these writes.
    round: u64,
    /// How many batches are taken in once it is committed.
    batches: u64,
    from: Checkpoint,
    to: Checkpoint,
    writes: Vec<ConsumerWrites>,
    /// The new rows, as `COPY` data (PostgreSQL), taken out of `writes` by the folding stage.
    copied: Vec<u8>,
    /// How many new rows.
    inserted: usize,
}

/// What the writer has committed.
#[derive(Debug, Clone, Copy, Default)]
struct Committed {
    /// The row sets' round of the last writes committed.
    round: u64,
    /// How many batches are taken in.
    batches: u64,
}

/// What the folding stage did, for the log.
#[derive(Debug, Default)]
struct Counts {
    fetched: usize,
    inserted: usize,
    upserted: usize,
    deleted: usize,
}

/// A spawned task that ends when its handle is dropped (when the replay fails or finishes).
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The folding stage of [`rebuild_together`]: every runner's rows, and the batches folded
/// since the last transaction.
struct Folding<'a> {
    store: &'a Store,
    runners: &'a [ProjectionRunner],
    table: Table,
    sets: Vec<RowSet>,
    written: Written,
    counts: Counts,
    rows_read: Vec<usize>,
    /// Batches folded so far.
    batches: u64,
    /// Where the last transaction handed to the writer ends.
    flushed: Checkpoint,
    /// Where the batches folded since end, and how many events they hold.
    folded: Checkpoint,
    pending: usize,
}

impl Folding<'_> {
    /// Folds `batch` into every projection, after fetching the rows it needs that are not in
    /// memory and may be in the table.
    async fn fold(&mut self, batch: &Batch) -> Result<(), ConsumerError> {
        for (((runner, rows), read), written) in self
            .runners
            .iter()
            .zip(&mut self.sets)
            .zip(&mut self.rows_read)
            .zip(std::iter::repeat(&self.written))
        {
            let projection = runner.folds();
            let name = projection.name();
            let missing = rows.want(batch.events.iter().flat_map(|event| projection.keys(event)));
            let (fetch, absent): (Vec<String>, Vec<String>) = missing
                .into_iter()
                .partition(|key| written.may_hold(name, key));
            for key in absent {
                rows.add_fetched(key, None);
            }
            self.counts.fetched += fetch.len();
            *read += fetch.len();
            if !fetch.is_empty() {
                for (key, row) in fetch_rows(self.store, self.table, name, &fetch).await? {
                    rows.add_fetched(key, row);
                }
            }
            for event in &batch.events {
                projection.apply(event, rows)?;
            }
        }
        self.batches += 1;
        self.folded = batch.to;
        self.pending += batch.events.len();
        Ok(())
    }

    /// The writes of the batches folded since the last transaction, as the next one; `None`
    /// when there are none.
    fn take(&mut self) -> Option<Job> {
        if self.pending == 0 {
            return None;
        }
        let mut writes = Vec::with_capacity(self.runners.len());
        let mut round = 0;
        for (runner, rows) in self.runners.iter().zip(&mut self.sets) {
            let name = runner.projection();
            let written = &self.written;
            let (taken_round, taken) = rows.take_writes(|key| written.may_hold(name, key));
            round = taken_round;
            self.counts.inserted += taken.inserts.len();
            self.counts.upserted += taken.upserts.len();
            self.counts.deleted += taken.deletes.len();
            for (key, _) in taken.inserts.iter().chain(&taken.upserts) {
                self.written.insert(name, key);
            }
            writes.push(ConsumerWrites {
                consumer: runner.consumer().to_owned(),
                projection: name,
                writes: taken,
            });
        }
        // Encoded here, off the writer's path, which is the pipeline's slowest stage.
        let inserted = writes
            .iter()
            .map(|consumer| consumer.writes.inserts.len())
            .sum();
        let mut copied = Vec::new();
        if matches!(self.store, Store::Postgres(_)) {
            for consumer in &mut writes {
                let inserts = std::mem::take(&mut consumer.writes.inserts);
                copy_rows(&mut copied, consumer.projection, &inserts);
            }
        }
        let job = Job {
            round,
            batches: self.batches,
            from: self.flushed,
            to: self.folded,
            writes,
            copied,
            inserted,
        };
        self.flushed = self.folded;
        self.pending = 0;
        Some(job)
    }
}

/// Rebuilds every runner (all at the same checkpoint) up to `until` in one pass: the reader
/// task reads and decodes ahead, this task folds, the writer task commits. Returns the events
/// taken in and, per runner, the rows read back from the table.
async fn rebuild_together(
    store: &Store,
    runners: &[ProjectionRunner],
    until: Checkpoint,
    settings: Settings,
    log_end: i64,
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<(u64, Vec<usize>), ConsumerError> {
    let Some(first) = runners.first() else {
        return Ok((0, Vec::new()));
    };
    let table = first.table();
    let from = store.checkpoint(first.consumer()).await?;
    let (committed_tx, committed) = watch::channel(Committed::default());
    let mut waiting = committed.clone();
    let (reads_tx, mut reads) = mpsc::channel(READ_AHEAD);
    let (jobs, jobs_rx) = mpsc::channel(1);
    let reader = Task(tokio::spawn(read_ahead(
        store.clone(),
        from,
        until,
        settings.batch.max(1),
        reads_tx,
        committed.clone(),
    )));
    let mut writer = Task(tokio::spawn(write_behind(
        store.clone(),
        table,
        jobs_rx,
        committed_tx,
    )));
    let mut folding = Folding {
        store,
        runners,
        table,
        sets: runners.iter().map(|_| RowSet::default()).collect(),
        written: Written::new(),
        counts: Counts::default(),
        rows_read: vec![0; runners.len()],
        batches: 0,
        flushed: from,
        folded: from,
        pending: 0,
    };
    // Batches folded, not yet reported committed: (number, position, events).
    let mut unreported: VecDeque<(u64, i64, usize)> = VecDeque::new();
    let mut events = 0_u64;
    let mut report = |upto: u64, unreported: &mut VecDeque<(u64, i64, usize)>| {
        while let Some(&(number, position, taken)) = unreported.front() {
            if number > upto {
                break;
            }
            unreported.pop_front();
            events += taken as u64;
            progress(Progress {
                projection: "all projections",
                events,
                position,
                log_end,
            });
        }
    };
    loop {
        let read = reads.recv().await.transpose()?;
        if let Some(Read::Batch(batch)) = &read {
            folding.fold(batch).await?;
            unreported.push_back((folding.batches, batch.to.position, batch.events.len()));
        }
        let full = folding.pending >= settings.transaction;
        if full || !matches!(read, Some(Read::Batch(_))) {
            if let Some(job) = folding.take() {
                // One transaction written while the next is folded: this one waits for the
                // previous one, so that no more than two are held in memory.
                let previous = job.round.saturating_sub(1);
                let handed = match waiting.wait_for(|done| done.round >= previous).await {
                    Ok(_) => jobs.send(job).await.is_ok(),
                    Err(_) => false,
                };
                if !handed {
                    // The writer stopped: its error says why.
                    break;
                }
            }
        }
        let done = *committed.borrow();
        evict(&mut folding.sets, settings.cache_bytes, done.round);
        report(done.batches, &mut unreported);
        if read.is_none() {
            break;
        }
    }
    drop(jobs);
    match (&mut writer.0).await {
        Ok(result) => result?,
        Err(error) => {
            return Err(ConsumerError::Failed(format!(
                "the replay's writer: {error}"
            )))
        }
    }
    drop(reader);
    let Folding {
        sets,
        counts,
        rows_read,
        ..
    } = folding;
    tracing::debug!(
        rows_read = counts.fetched,
        rows_inserted = counts.inserted,
        rows_upserted = counts.upserted,
        rows_deleted = counts.deleted,
        rows_held = sets.iter().map(RowSet::len).sum::<usize>(),
        bytes_held = sets.iter().map(RowSet::bytes).sum::<usize>(),
        "replay: one pass over the log done"
    );
    report(u64::MAX, &mut unreported);
    Ok((events, rows_read))
}

/// Reads and decodes batches from `from` to `until` ahead of the folding. The log reader only
/// returns events below the oldest transaction still running, and the replay's own writes are
/// one: the end of the log is only believed when no write of the replay was open, so on
/// finding nothing the reader first has what was folded committed, then looks again.
async fn read_ahead(
    store: Store,
    mut from: Checkpoint,
    until: Checkpoint,
    limit: i64,
    reads: mpsc::Sender<Result<Read, ConsumerError>>,
    mut committed: watch::Receiver<Committed>,
) {
    let mut sent = 0_u64;
    loop {
        let settled = committed.borrow().batches >= sent;
        match store.read_log_decoded(from, until, limit).await {
            Err(error) => {
                let _ = reads.send(Err(error)).await;
                return;
            }
            Ok((_, None)) => {
                if settled
                    || reads.send(Ok(Read::Idle)).await.is_err()
                    || committed
                        .wait_for(|done| done.batches >= sent)
                        .await
                        .is_err()
                {
                    return;
                }
            }
            Ok((events, Some(to))) => {
                sent += 1;
                if reads
                    .send(Ok(Read::Batch(Batch { to, events })))
                    .await
                    .is_err()
                {
                    return;
                }
                from = to;
            }
        }
    }
}

/// Commits the jobs in order, each in one transaction, and publishes what is committed.
async fn write_behind(
    store: Store,
    table: Table,
    mut jobs: mpsc::Receiver<Job>,
    committed: watch::Sender<Committed>,
) -> Result<(), ConsumerError> {
    // The rows read back from the table are found by key. A read through another index took
    // 112 ms a batch instead of 3.5 ms when the table had no statistics (found by the
    // benchmarks): on PostgreSQL the other indexes are dropped during the pass, and the
    // statistics are taken once the table holds the first transaction's rows, so that the
    // planner knows the keys are unique (it scales them as the table grows; renewing them
    // held the writer 0.3 s each time on a full table).
    let mut analysed = false;
    while let Some(job) = jobs.recv().await {
        write_rows(&store, table, &job.writes, &job.copied, job.from, job.to).await?;
        let first = !analysed && job.inserted > 0;
        let done = Committed {
            round: job.round,
            batches: job.batches,
        };
        drop(job);
        if first {
            store.analyze(table.name()).await?;
            analysed = true;
        }
        committed.send_replace(done);
    }
    Ok(())
}

/// Drops the rows used least recently once the sets hold more than `budget` bytes, down to
/// three quarters of it, keeping the rows of writes not committed yet (round above
/// `committed`): a row read from the table must be what the replay last wrote.
fn evict(sets: &mut [RowSet], budget: usize, committed: u64) {
    let total: usize = sets.iter().map(RowSet::bytes).sum();
    if total <= budget {
        return;
    }
    let target = budget / 4 * 3;
    let mut rounds = BTreeMap::new();
    for set in sets.iter() {
        set.bytes_by_round(&mut rounds);
    }
    let mut kept = total;
    let mut before = 0;
    for (&round, &bytes) in &rounds {
        if kept <= target {
            break;
        }
        kept -= bytes;
        before = round + 1;
    }
    for set in sets {
        set.evict_before(before, committed);
    }
}

/// The keys a replay may have written, per projection: a Bloom filter of fixed size (no
/// false "never written", a few false "maybe" that cost a read), so that a key seen for the
/// first time, most keys of a replay, is known absent without asking the table.
struct Written {
    bits: Vec<u64>,
}

impl Written {
    /// 2^25 bits (4 MiB): under one false "maybe" in 100 000 up to a million rows.
    const BITS: u64 = 1 << 25;
    const HASHES: u64 = 4;

    fn new() -> Self {
        Self {
            bits: vec![0; (Self::BITS / 64) as usize],
        }
    }

    fn positions(projection: &str, key: &str) -> impl Iterator<Item = u64> {
        let mut hasher = std::hash::DefaultHasher::new();
        projection.hash(&mut hasher);
        key.hash(&mut hasher);
        let hash = hasher.finish();
        let step = hash.rotate_left(32) | 1;
        (0..Self::HASHES).map(move |n| hash.wrapping_add(n.wrapping_mul(step)) & (Self::BITS - 1))
    }

    fn insert(&mut self, projection: &str, key: &str) {
        for bit in Self::positions(projection, key) {
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    fn may_hold(&self, projection: &str, key: &str) -> bool {
        Self::positions(projection, key)
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}
