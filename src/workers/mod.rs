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
use tracing::{debug, info, warn, Instrument};

use crate::clock::Clock;
use crate::feed::publisher::{Publisher, PUBLISHER};
use crate::log::lease::Lease;
use crate::log::{Checkpoint, StoredEvent};
use crate::read::{step_together, step_together_from, ConsumerError, ProjectionRunner, Table};
use crate::store::Store;
use crate::vault::Vault;
use crate::write::ledger::{LedgerError, Metadata};
use crate::Ledger;

mod effects;
mod process_manager;
mod projection_work;
mod publisher;
mod scheduler;
mod shredder;

use effects::*;
use process_manager::ProcessManager;
use projection_work::{projection_groups, ProjectionWork};
use publisher::PublisherWork;
use scheduler::Scheduler;
use shredder::Shredder;

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
    pub ledger: Arc<Ledger>,
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
            let step = work
                .step()
                .instrument(tracing::debug_span!("worker step", worker = %name));
            match step.await {
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
