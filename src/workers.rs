//! The service's background work, each piece a consumer that runs under a lease on exactly one
//! instance at a time: the projections, the process managers' durable replay, the key shredder
//! and the timer scheduler. Another instance takes a piece over within seconds of its holder
//! dying.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aggregates::policy::{FollowUp, Timer};
use aggregates::user::UserEvent;
use projections::DomainEvent;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::feed::publisher::{Publisher, PUBLISHER};
use crate::lease::Lease;
use crate::ledger::{LedgerError, Metadata};
use crate::log::{Checkpoint, StoredEvent};
use crate::read_models::{
    step_together, step_together_from, ConsumerError, ProjectionRunner, Table,
};
use crate::store::Store;
use crate::vault::Vault;
use crate::AnyLedger;

/// How many events a projection takes in per transaction.
pub const PROJECTION_BATCH: i64 = 500;
/// How many events the process-manager consumer re-runs per checkpoint.
const PROCESS_MANAGER_BATCH: i64 = 100;
/// How many events the shredder reads per checkpoint.
const SHREDDER_BATCH: i64 = 500;
/// How many due timers the scheduler fires per step.
const DUE_TIMERS_BATCH: i64 = 50;
/// How long an idle consumer waits for news before looking at the log again (other instances'
/// commits are only seen this way).
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How often a standby instance tries to take a lease.
const LEASE_RETRY: Duration = Duration::from_secs(1);
/// How often a holder checks that its lease is still held.
const LEASE_CHECK: Duration = Duration::from_secs(1);
/// The longest pause after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The consumer that re-runs the process managers' follow-ups from the log.
pub const PROCESS_MANAGER: &str = "process-manager";
/// The consumer that destroys purged users' keys.
pub const SHREDDER: &str = "shredder";
/// The timer scheduler's lease.
pub const SCHEDULER: &str = "scheduler";

/// Every checkpointed consumer of the log (the scheduler reads timers, not the log).
pub fn consumers() -> Vec<&'static str> {
    let mut names = projections::names();
    names.extend([PROCESS_MANAGER, SHREDDER]);
    names
}

type Step<'a> = Pin<Box<dyn Future<Output = Result<Stepped, ConsumerError>> + Send + 'a>>;

/// What a step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stepped {
    /// A full batch: more is waiting, step again at once.
    Full,
    /// Less than a batch: probably caught up. Look again after the next commit, or shortly
    /// (a commit can be hidden for a moment behind an older transaction still running).
    Partial,
    /// Nothing: wait for the next commit or the idle poll.
    Nothing,
}

impl Stepped {
    fn of_batch(taken: usize, limit: i64) -> Self {
        match taken {
            0 => Self::Nothing,
            taken if taken as i64 >= limit => Self::Full,
            _ => Self::Partial,
        }
    }
}

/// How soon a consumer that took a partial batch looks again when no commit wakes it first.
const RECHECK: Duration = Duration::from_millis(5);

/// One piece of background work: a step does some and says how much it found. One that took
/// a partial batch does not ask again at once but after the next commit (or `RECHECK`): with
/// every consumer stepping until it found nothing, the empty second looks cost the database
/// more statements than the commands themselves.
trait Work: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn step(&self) -> Step<'_>;
    fn idle(&self) -> Duration {
        IDLE_POLL
    }
    /// Whether this instance's commits are news for it (timers are not: the clock is).
    fn wakes_on_commits(&self) -> bool {
        true
    }
    /// The longest pause after repeated failures.
    fn max_backoff(&self) -> Duration {
        MAX_BACKOFF
    }
    /// The shortest time from one step's start to the next while caught up: zero for work
    /// whose results readers wait for; more for work nobody waits on, so that it takes in
    /// several commits per step instead of competing with the commands for every one.
    fn cadence(&self) -> Duration {
        Duration::ZERO
    }
}

/// How often the process managers' replay and the shredder look at the log while caught up:
/// no read waits for them (a follow-up runs inline first; a purge is due days later), and at
/// 1 000 commands a second they each stepped about 75 times a second.
const BACKGROUND_CADENCE: Duration = Duration::from_millis(50);

/// What the background work needs.
#[derive(Clone)]
pub struct Context {
    /// The store.
    pub store: Store,
    /// The write side.
    pub ledger: Arc<AnyLedger>,
    /// The key store.
    pub vault: Vault,
    /// The service's clock.
    pub clock: Arc<Clock>,
    /// The JetStream publisher, when NATS is configured.
    pub publisher: Option<Arc<Publisher>>,
}

/// The running background work.
pub struct Workers {
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts every piece of background work.
    pub fn start(context: Context) -> Self {
        let (shutdown, stopping) = watch::channel(false);
        let mut work: Vec<Arc<dyn Work>> = projection_groups()
            .into_iter()
            .map(|runners| {
                Arc::new(ProjectionWork::new(runners, context.store.clone())) as Arc<dyn Work>
            })
            .collect();
        work.push(Arc::new(ProcessManager(
            context.clone(),
            Standing::default(),
        )));
        work.push(Arc::new(Shredder(context.clone(), Standing::default())));
        work.push(Arc::new(Scheduler(context.clone())));
        if let Some(publisher) = &context.publisher {
            work.push(Arc::new(PublisherWork(publisher.clone())));
        }
        let tasks = work
            .into_iter()
            .map(|work| {
                tokio::spawn(run(
                    work,
                    context.store.clone(),
                    context.ledger.commits(),
                    stopping.clone(),
                ))
            })
            .collect();
        Self {
            shutdown,
            tasks: std::sync::Mutex::new(tasks),
        }
    }

    /// Stops the work (a step in progress finishes or rolls back) and releases the leases.
    pub async fn stop(&self) {
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("worker list lock"));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Ends the work at once, as a crash would (tests of take-over).
    pub fn abort(&self) {
        for task in self.tasks.lock().expect("worker list lock").iter() {
            task.abort();
        }
    }
}

/// Waits `duration` or until shutdown; `true` when shutting down.
async fn pause(stopping: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => *stopping.borrow(),
        _ = stopping.changed() => true,
    }
}

async fn run(
    work: Arc<dyn Work>,
    store: Store,
    mut commits: watch::Receiver<u64>,
    mut stopping: watch::Receiver<bool>,
) {
    let name = work.name().to_owned();
    let mut failures: u32 = 0;
    let mut standby = None;
    loop {
        if *stopping.borrow() {
            return;
        }
        let mut lease = match Lease::try_acquire(&store, &name, &mut standby).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                if pause(&mut stopping, LEASE_RETRY).await {
                    return;
                }
                continue;
            }
            Err(error) => {
                warn!(consumer = %name, %error, "cannot ask for the lease; retrying");
                if pause(&mut stopping, LEASE_RETRY).await {
                    return;
                }
                continue;
            }
        };
        debug!(consumer = %name, "holding the lease");
        let mut checked = tokio::time::Instant::now();
        loop {
            if *stopping.borrow() {
                return;
            }
            if checked.elapsed() >= LEASE_CHECK {
                if !lease.is_held().await {
                    warn!(consumer = %name, lease = lease.name(), "lost the lease; standing by");
                    break;
                }
                checked = tokio::time::Instant::now();
            }
            let started = tokio::time::Instant::now();
            match work.step().await {
                Ok(Stepped::Full) => failures = 0,
                Ok(found) => {
                    failures = 0;
                    let cadence = work.cadence();
                    if !cadence.is_zero()
                        && pause(&mut stopping, cadence.saturating_sub(started.elapsed())).await
                    {
                        return;
                    }
                    let wakes = work.wakes_on_commits();
                    let wait = if found == Stepped::Partial {
                        RECHECK
                    } else {
                        work.idle()
                    };
                    tokio::select! {
                        changed = commits.changed(), if wakes => {
                            if changed.is_err() && pause(&mut stopping, work.idle()).await {
                                return;
                            }
                        }
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopping.changed() => return,
                    }
                }
                Err(ConsumerError::Overtaken(_)) => {
                    warn!(consumer = %name, "another instance took this consumer over; standing by");
                    break;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(100)
                        .saturating_mul(2u32.saturating_pow(failures.min(10)))
                        .min(work.max_backoff());
                    warn!(consumer = %name, %error, ?backoff, "step failed; retrying");
                    if pause(&mut stopping, backoff).await {
                        return;
                    }
                }
            }
        }
        drop(lease);
        if pause(&mut stopping, LEASE_RETRY).await {
            return;
        }
    }
}

/// The live projections in groups, each group one consumer: a group is taken in together (one
/// read of the log, one read of the rows and one statement per batch for all of its
/// projections). All of them form one group: every projection-backed read waits for the
/// slowest projection anyway, and apart each commit cost the database five reads of the log and
/// five writes (C's commands queued behind them).
fn projection_groups() -> Vec<Vec<ProjectionRunner>> {
    vec![projections::all()
        .into_iter()
        .map(|projection| ProjectionRunner::new(projection, Table::Live))
        .collect()]
}

/// A group of live projections taken in together. Each keeps its own checkpoint; one that
/// stands behind the others (new, or rebuilt) is first brought alone to where they are.
struct ProjectionWork {
    /// The group's lease: its projections' consumer names.
    name: String,
    runners: Vec<ProjectionRunner>,
    store: Store,
    /// Where the group's last batch left its checkpoints.
    standing: Standing,
    lag: std::sync::Mutex<LagReport>,
}

/// When a projection last said how far behind it is.
struct LagReport {
    reported: tokio::time::Instant,
    catching_up: bool,
}

/// How often a consumer that is behind logs its lag.
const LAG_REPORT_EVERY: Duration = Duration::from_secs(10);

impl ProjectionWork {
    fn new(runners: Vec<ProjectionRunner>, store: Store) -> Self {
        let names: Vec<&str> = runners.iter().map(ProjectionRunner::consumer).collect();
        Self {
            name: names.join("+"),
            runners,
            store,
            standing: Standing::default(),
            lag: std::sync::Mutex::new(LagReport {
                reported: tokio::time::Instant::now(),
                catching_up: false,
            }),
        }
    }

    /// Logs the lag (events and seconds behind) every so often while behind, and once when
    /// caught up again.
    async fn report(&self, full_batch: bool) -> Result<(), ConsumerError> {
        let (due, was_catching_up) = {
            let mut lag = self.lag.lock().expect("lag report lock");
            let due = lag.reported.elapsed() >= LAG_REPORT_EVERY;
            let was = lag.catching_up;
            lag.catching_up = full_batch;
            if due && full_batch {
                lag.reported = tokio::time::Instant::now();
            }
            (due, was)
        };
        if full_batch && due {
            for runner in &self.runners {
                let checkpoint = self.store.checkpoint(runner.consumer()).await?;
                let (behind, next) = self.store.lag_estimate(checkpoint).await?;
                let seconds = next.map_or(0, |next| (chrono::Utc::now() - next).num_seconds());
                info!(
                    consumer = runner.consumer(),
                    position = checkpoint.position,
                    lag_positions = behind,
                    lag_seconds = seconds,
                    "projection catching up"
                );
            }
        } else if was_catching_up && !full_batch {
            info!("projections caught up");
        }
        Ok(())
    }

    /// Brings the projections that stand behind the others one batch nearer; `false` when
    /// they all stand at the same checkpoint.
    async fn align(&self) -> Result<bool, ConsumerError> {
        if self.runners.len() < 2 {
            return Ok(false);
        }
        let mut standing = Vec::with_capacity(self.runners.len());
        for runner in &self.runners {
            standing.push(self.store.checkpoint(runner.consumer()).await?);
        }
        let Some(lead) = standing.iter().copied().max() else {
            return Ok(false);
        };
        let mut moved = false;
        for (runner, checkpoint) in self.runners.iter().zip(standing) {
            if checkpoint < lead {
                runner.step(&self.store, PROJECTION_BATCH, lead).await?;
                moved = true;
            }
        }
        Ok(moved)
    }
}

impl Work for ProjectionWork {
    fn name(&self) -> &str {
        &self.name
    }

    fn step(&self) -> Step<'_> {
        Box::pin(async move {
            let remembered = self.standing.take();
            let stepped = match remembered {
                Some(from) => {
                    step_together_from(
                        &self.store,
                        &self.runners,
                        from,
                        PROJECTION_BATCH,
                        Checkpoint::END,
                        || Ok(()),
                    )
                    .await
                }
                None => {
                    if self.align().await? {
                        return Ok(Stepped::Full);
                    }
                    step_together(
                        &self.store,
                        &self.runners,
                        PROJECTION_BATCH,
                        Checkpoint::END,
                        || Ok(()),
                    )
                    .await
                }
            };
            let taken = match stepped {
                // What this instance remembered is out of date (a replay swapped the rows in,
                // or another instance stepped): look again from what the store says. Only a
                // step from the store's own checkpoint tells that another instance holds it.
                Err(ConsumerError::Overtaken(_)) if remembered.is_some() => {
                    return Ok(Stepped::Full)
                }
                Err(error) => return Err(error),
                Ok(taken) => taken,
            };
            self.standing
                .keep(taken.map(|taken| taken.checkpoint).or(remembered));
            let stepped =
                Stepped::of_batch(taken.map_or(0, |taken| taken.events), PROJECTION_BATCH);
            self.report(stepped == Stepped::Full).await?;
            Ok(stepped)
        })
    }
}

/// The metadata of the service's own commands.
fn system_metadata(reason: String, cause: Option<&StoredEvent>) -> Metadata {
    let mut metadata = Metadata::from([
        ("role".to_owned(), "system".to_owned()),
        ("reason".to_owned(), reason),
    ]);
    if let Some(event) = cause {
        metadata.insert("causation_id".into(), event.event_id.clone());
        if let Ok(serde_json::Value::Object(caused_by)) =
            serde_json::from_str::<serde_json::Value>(&event.metadata)
        {
            if let Some(serde_json::Value::String(correlation)) = caused_by.get("correlation_id") {
                metadata.insert("correlation_id".into(), correlation.clone());
            }
        }
    }
    metadata
}

/// Where a consumer's last batch left its checkpoint, while this instance holds it: the next
/// step starts there instead of asking the store (one round trip less per batch). The
/// checkpoint's compare-and-set still decides; a remembered checkpoint it refuses is only out
/// of date, and the consumer looks again from what the store says.
#[derive(Default)]
struct Standing(std::sync::Mutex<Option<Checkpoint>>);

impl Standing {
    fn take(&self) -> Option<Checkpoint> {
        self.0.lock().expect("checkpoint lock").take()
    }

    fn keep(&self, checkpoint: Option<Checkpoint>) {
        *self.0.lock().expect("checkpoint lock") = checkpoint;
    }
}

/// A batch for a consumer that is not a projection: its effects are idempotent, so it applies
/// them first and moves its checkpoint after.
struct EffectBatch {
    from: Checkpoint,
    remembered: bool,
    events: Vec<StoredEvent>,
}

async fn effect_batch(
    store: &Store,
    consumer: &str,
    standing: &Standing,
    limit: i64,
) -> Result<EffectBatch, ConsumerError> {
    let remembered = standing.take();
    let from = match remembered {
        Some(from) => from,
        None => store.checkpoint(consumer).await?,
    };
    let events = store.read_log(from, Checkpoint::END, limit).await?;
    Ok(EffectBatch {
        from,
        remembered: remembered.is_some(),
        events,
    })
}

/// Moves the checkpoint past the batch whose effects are done; what the step found.
async fn commit_effects(
    store: &Store,
    consumer: &str,
    standing: &Standing,
    batch: &EffectBatch,
    limit: i64,
) -> Result<Stepped, ConsumerError> {
    let Some(last) = batch.events.last() else {
        standing.keep(Some(batch.from));
        return Ok(Stepped::Nothing);
    };
    if store
        .advance_checkpoint(consumer, batch.from, last.checkpoint)
        .await?
    {
        standing.keep(Some(last.checkpoint));
        Ok(Stepped::of_batch(batch.events.len(), limit))
    } else if batch.remembered {
        // Out of date: the effects ran again harmlessly; look again from the store.
        Ok(Stepped::Full)
    } else {
        Err(ConsumerError::Overtaken(consumer.to_owned()))
    }
}

/// Re-runs, from the log, the follow-up commands the process managers decide for each event.
/// The write side runs them inline already; this makes them durable: a follow-up lost to a
/// crash runs here, and one that already ran is refused or decides nothing (they are all
/// idempotent).
struct ProcessManager(Context, Standing);

impl Work for ProcessManager {
    fn name(&self) -> &str {
        PROCESS_MANAGER
    }

    fn cadence(&self) -> Duration {
        BACKGROUND_CADENCE
    }

    fn step(&self) -> Step<'_> {
        Box::pin(async move {
            let context = &self.0;
            let batch = effect_batch(
                &context.store,
                PROCESS_MANAGER,
                &self.1,
                PROCESS_MANAGER_BATCH,
            )
            .await?;
            for stored in &batch.events {
                let logged = stored.decode()?;
                for follow_up in logged.follow_ups()? {
                    if matches!(follow_up, FollowUp::Schedule(_) | FollowUp::Cancel { .. }) {
                        continue;
                    }
                    let metadata = system_metadata(
                        format!(
                            "follow-up of {} at position {}",
                            stored.event_type,
                            stored.position()
                        ),
                        Some(stored),
                    );
                    match context.ledger.dispatch(follow_up, &metadata).await {
                        Ok(_) | Err(LedgerError::Domain(_)) => {}
                        Err(error) => {
                            return Err(ConsumerError::Failed(format!(
                                "follow-up of the event at position {}: {error}",
                                stored.position()
                            )))
                        }
                    }
                }
            }
            commit_effects(
                &context.store,
                PROCESS_MANAGER,
                &self.1,
                &batch,
                PROCESS_MANAGER_BATCH,
            )
            .await
        })
    }
}

/// Destroys the key of every purged user, so their sealed details are unreadable everywhere
/// (the log itself stays immutable).
struct Shredder(Context, Standing);

impl Work for Shredder {
    fn name(&self) -> &str {
        SHREDDER
    }

    fn cadence(&self) -> Duration {
        BACKGROUND_CADENCE
    }

    fn step(&self) -> Step<'_> {
        Box::pin(async move {
            let context = &self.0;
            let batch = effect_batch(&context.store, SHREDDER, &self.1, SHREDDER_BATCH).await?;
            for stored in batch
                .events
                .iter()
                .filter(|event| event.event_type == "UserPurged")
            {
                if let DomainEvent::User(UserEvent::UserPurged { key_id, .. }) =
                    stored.decode()?.event
                {
                    context
                        .vault
                        .shred(key_id)
                        .await
                        .map_err(|error| ConsumerError::Failed(error.to_string()))?;
                    info!(%key_id, "purged user's key destroyed");
                }
            }
            commit_effects(&context.store, SHREDDER, &self.1, &batch, SHREDDER_BATCH).await
        })
    }
}

/// Publishes the log to JetStream. During a NATS outage it retries often (the outage is
/// usually short and the backlog grows meanwhile), never more than every few seconds.
struct PublisherWork(Arc<Publisher>);

impl Work for PublisherWork {
    fn name(&self) -> &str {
        PUBLISHER
    }

    fn max_backoff(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn step(&self) -> Step<'_> {
        Box::pin(async move {
            // A step that published anything looks again at once (its batches are large).
            Ok(if self.0.step().await? {
                Stepped::Full
            } else {
                Stepped::Nothing
            })
        })
    }
}

/// Fires timers whose deadline the service's clock has reached, once per deadline: a fired
/// timer is recorded with its outcome; the action itself is idempotent, so a crash between
/// firing and recording fires it again harmlessly.
struct Scheduler(Context);

impl Work for Scheduler {
    fn name(&self) -> &str {
        SCHEDULER
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn wakes_on_commits(&self) -> bool {
        false
    }

    fn step(&self) -> Step<'_> {
        Box::pin(async move {
            let context = &self.0;
            if context.clock.is_sandbox() {
                if let Some(offset) = context.store.sandbox_offset().await? {
                    context.clock.adopt(offset);
                }
            }
            let now = context.clock.now();
            let due = due_timers(
                &context.store,
                &projections::instant_key(now),
                DUE_TIMERS_BATCH,
            )
            .await?;
            for (row_key, due_at, doc) in &due {
                let timer: Timer = projections::rows::decode(row_key, doc)?;
                let metadata =
                    system_metadata(format!("timer {} due at {due_at}", timer.key), None);
                let outcome = match context
                    .ledger
                    .dispatch(timer.action.follow_up(now), &metadata)
                    .await
                {
                    Ok(_) => "fired".to_owned(),
                    Err(LedgerError::Domain(refusal)) => {
                        format!("nothing to do: {}", refusal.code())
                    }
                    Err(error) => {
                        return Err(ConsumerError::Failed(format!(
                            "timer {}: {error}",
                            timer.key
                        )))
                    }
                };
                info!(timer = %timer.key, %due_at, %outcome, "timer fired");
                record_firing(&context.store, row_key, due_at, &outcome, now).await?;
            }
            // Timers fire by the clock; due ones left over are taken at once.
            Ok(Stepped::of_batch(due.len(), DUE_TIMERS_BATCH))
        })
    }
}

/// Timers due at `now` not fired for their current deadline: (row key, deadline, timer).
async fn due_timers(
    store: &Store,
    now: &str,
    limit: i64,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    crate::on_pool!(store, pool => {
        sqlx::query_as(
            "SELECT m.row_key, m.sort_key, m.doc FROM read_models m
              WHERE m.projection = $1 AND m.kind = $2 AND m.sort_key <= $3
                AND NOT EXISTS (SELECT 1 FROM timer_firings f
                                 WHERE f.timer_key = m.row_key AND f.due_at = m.sort_key)
              ORDER BY m.sort_key
              LIMIT $4",
        )
        .bind(projections::timers::NAME)
        .bind(projections::timers::TIMER)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}

async fn record_firing(
    store: &Store,
    row_key: &str,
    due_at: &str,
    outcome: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    crate::on_pool!(store, pool => {
        sqlx::query(
            "INSERT INTO timer_firings (timer_key, due_at, outcome, fired_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (timer_key, due_at) DO NOTHING",
        )
        .bind(row_key)
        .bind(due_at)
        .bind(outcome)
        .bind(projections::instant_key(now))
        .execute(pool)
        .await
        .map(drop)
    })
}
