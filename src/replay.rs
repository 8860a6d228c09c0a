//! `seatledger replay`: rebuilds every projection from the start of the log into the replay
//! table, beside the live one, and with `--verify` proves the two equal row by row.

use std::time::Instant;

use crate::log::Checkpoint;
use crate::read_models::{
    compare, step_together, ConsumerError, Difference, ProjectionRunner, Table,
};
use crate::store::Store;

/// Events per replay transaction: larger than live batches, as nobody waits on them.
const REPLAY_BATCH: i64 = 5_000;
/// Batches between statistics updates of the table being rebuilt: it grows from empty, and
/// without fresh statistics PostgreSQL reads all of it to find a batch's rows instead of using
/// the key (112 ms a batch instead of 3.5 ms, found by the benchmarks).
const ANALYZE_EVERY: usize = 20;
/// How often verification chases a live projection that keeps moving before giving up.
const VERIFY_ATTEMPTS: usize = 20;

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
/// `progress` is called after every batch.
pub async fn run(
    store: &Store,
    verify: bool,
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
    let mut together = 0;
    let mut batches = 0;
    while let Some(taken) = step_together(store, &runners, REPLAY_BATCH, common, || Ok(())).await? {
        together += taken.events as u64;
        batches += 1;
        if batches % ANALYZE_EVERY == 1 {
            store.analyze(Table::Replay.name()).await?;
        }
        progress(Progress {
            projection: "all projections",
            events: together,
            position: taken.checkpoint.position,
            log_end,
        });
    }
    let shared = started.elapsed();
    let mut report = Vec::new();
    for (runner, mut target) in runners.iter().zip(targets) {
        let name = runner.projection();
        let alone = Instant::now();
        let mut events = together;
        catch_up(store, runner, target, log_end, &mut events, &mut progress).await?;
        let mut differences = None;
        if verify {
            for _ in 0..VERIFY_ATTEMPTS {
                if let Some(found) = compare(store, name, target).await? {
                    differences = Some(found);
                    break;
                }
                target = store.checkpoint(name).await?;
                catch_up(store, runner, target, log_end, &mut events, &mut progress).await?;
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
        });
    }
    Ok(report)
}

async fn catch_up(
    store: &Store,
    runner: &ProjectionRunner,
    target: Checkpoint,
    log_end: i64,
    events: &mut u64,
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<(), ConsumerError> {
    while let Some(taken) = runner.step(store, REPLAY_BATCH, target).await? {
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
