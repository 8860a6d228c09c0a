//! Runs one aggregate type's commands: each aggregate is kept in memory after its first load
//! (refreshed with whatever other instances appended since), and the commands waiting for the
//! same aggregate are handled one after another on its state and committed together, in one
//! transaction.
//!
//! A hot tenant thus costs one load and one commit per *batch*, not per command, and a tenant
//! with a long history costs the same as a short one: loading happens once (from a snapshot),
//! after which a command reads only the events it has not seen. Optimistic concurrency still
//! decides between instances: the cached state is trusted, the append's sequence check proves
//! it was current, and a batch that loses the race is re-run on the refreshed state (a batch
//! that writes nothing has no such proof, so it is checked against the store first).
//!
//! Readers never wait for a running batch: each slot also publishes the state last committed.

use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistenceError;
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use tokio::sync::{oneshot, watch, Mutex, OwnedMutexGuard};

use super::append::{AppendError, NewEvent};
use super::cache::RecentlyUsed;
use super::error::{LedgerError, Metadata};
use super::repository::Repository;
use crate::store::Store;

/// How often a batch that lost an optimistic-concurrency race is re-run before giving up.
const CONFLICT_RETRIES: usize = 8;
/// Aggregates of one type kept in memory; past this, the least recently used ones nobody is
/// using are forgotten. Enough for every hot aggregate; a 100 000-user tenant is ~50 MiB by
/// itself, and a small one a few KiB.
const CACHED_AGGREGATES: usize = 1_024;
/// The most commands committed in one transaction.
const MAX_BATCH: usize = 256;
/// Events read per page when an aggregate is loaded cold.
const COLD_LOAD_PAGE: i64 = 1_000;

/// One aggregate's state as last committed, with the sequence of its last event.
struct Loaded<A> {
    aggregate: Arc<A>,
    sequence: usize,
}

impl<A> Clone for Loaded<A> {
    fn clone(&self) -> Self {
        Self {
            aggregate: self.aggregate.clone(),
            sequence: self.sequence,
        }
    }
}

/// The commands waiting for one aggregate, its state (locked while a batch runs), and the
/// state last committed, which readers take without waiting for the batch.
struct Slot<A: Aggregate> {
    waiting: std::sync::Mutex<Vec<Waiting<A>>>,
    state: Arc<Mutex<Option<Loaded<A>>>>,
    committed: std::sync::Mutex<Option<Loaded<A>>>,
}

impl<A: Aggregate> Slot<A> {
    fn committed(&self) -> Option<Loaded<A>> {
        self.committed.lock().expect("committed state lock").clone()
    }

    /// Publishes `loaded` unless a newer state already is.
    fn publish(&self, loaded: &Loaded<A>) {
        let mut committed = self.committed.lock().expect("committed state lock");
        if committed
            .as_ref()
            .is_none_or(|known| known.sequence <= loaded.sequence)
        {
            *committed = Some(loaded.clone());
        }
    }
}

/// What one command committed: its events and the log position of the last one.
pub(crate) struct Committed<A: Aggregate> {
    pub(crate) events: Vec<EventEnvelope<A>>,
    /// `None` when the command decided nothing.
    pub(crate) position: Option<i64>,
}

type Outcome<A> = Result<Committed<A>, LedgerError>;

struct Waiting<A: Aggregate> {
    command: A::Command,
    metadata: Metadata,
    reply: oneshot::Sender<Outcome<A>>,
}

struct Inner<A: Aggregate> {
    repository: Repository,
    store: Store,
    services: A::Services,
    snapshot_every: Option<fn(&A) -> usize>,
    slots: std::sync::Mutex<RecentlyUsed<String, Slot<A>>>,
    commits: Arc<watch::Sender<u64>>,
}

/// Runs the commands of one aggregate type.
pub(crate) struct Executor<A: Aggregate> {
    inner: Arc<Inner<A>>,
}

impl<A> Executor<A>
where
    A: Aggregate<Error = aggregates::DomainError> + Clone + 'static,
    A::Command: Clone + Send + Sync + 'static,
{
    /// An executor over `store`; every `snapshot_every(state)` events a snapshot is written
    /// (for aggregates whose history grows without bound).
    pub(crate) fn new(
        store: Store,
        services: A::Services,
        snapshot_every: Option<fn(&A) -> usize>,
        commits: Arc<watch::Sender<u64>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                repository: Repository::of(&store),
                store,
                services,
                snapshot_every,
                slots: std::sync::Mutex::new(RecentlyUsed::new(CACHED_AGGREGATES)),
                commits,
            }),
        }
    }

    /// Runs `command` (with the commands that arrive for the same aggregate meanwhile) and
    /// returns the events it committed.
    pub(crate) async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> Outcome<A> {
        let slot = self.inner.slot(aggregate_id);
        let (reply, answer) = oneshot::channel();
        slot.waiting
            .lock()
            .expect("waiting list lock")
            .push(Waiting {
                command,
                metadata: metadata.clone(),
                reply,
            });
        // The batch is taken and run by a task of its own, not by this caller: a caller that
        // goes away (a timeout, a client hanging up) must neither leave its command queued for
        // a stranger's batch hours later nor cut a batch short, which would leave the state in
        // memory ahead of the store.
        let inner = self.inner.clone();
        let id = aggregate_id.to_owned();
        tokio::spawn(async move {
            let state = slot.state.clone().lock_owned().await;
            let batch = take_batch(&slot);
            if !batch.is_empty() {
                inner.run_batch(&id, &slot, state, batch).await;
            }
        });
        answer.await.unwrap_or_else(|_| {
            Err(LedgerError::store(
                "the command's batch ended without an answer",
            ))
        })
    }

    /// The aggregate's current state: the state last committed here, brought up to date with
    /// whatever other instances appended since (without waiting for a batch running here).
    pub(crate) async fn load(&self, aggregate_id: &str) -> Result<Arc<A>, LedgerError> {
        let slot = self.inner.slot(aggregate_id);
        if let Some(committed) = slot.committed() {
            let fresh = self.inner.fresh(aggregate_id, Some(committed)).await?;
            slot.publish(&fresh);
            return Ok(fresh.aggregate);
        }
        self.inner.load_into(aggregate_id, &slot).await
    }
}

impl<A> Executor<A>
where
    A: Aggregate<Error = aggregates::DomainError> + Clone + 'static,
    A::Command: Clone + Send + Sync + 'static,
{
    /// The aggregate as this instance last knew it, loaded only when unknown: for facts that
    /// never change once the aggregate exists (a user's tenant, a tenant's reseller), where
    /// asking the store for newer events would be a wasted round trip.
    pub(crate) async fn known(&self, aggregate_id: &str) -> Result<Arc<A>, LedgerError> {
        let slot = self.inner.slot(aggregate_id);
        // An aggregate known not to exist yet may exist by now (created by another instance).
        if let Some(committed) = slot.committed().filter(|loaded| loaded.sequence > 0) {
            return Ok(committed.aggregate);
        }
        self.inner.load_into(aggregate_id, &slot).await
    }
}

/// How a batch ended.
enum Decided<A: Aggregate> {
    /// Every command's outcome, its events committed.
    Committed(Vec<Outcome<A>>),
    /// Nothing was written and the state turned out to be old: decide again.
    OnStaleState,
}

fn take_batch<A: Aggregate>(slot: &Slot<A>) -> Vec<Waiting<A>> {
    let mut waiting = slot.waiting.lock().expect("waiting list lock");
    let take = waiting.len().min(MAX_BATCH);
    waiting.drain(..take).collect()
}

impl<A> Inner<A>
where
    A: Aggregate<Error = aggregates::DomainError> + Clone + 'static,
    A::Command: Clone + Send + Sync + 'static,
{
    fn slot(&self, aggregate_id: &str) -> Arc<Slot<A>> {
        self.slots
            .lock()
            .expect("slot map lock")
            .get_or_insert_with(&aggregate_id.to_owned(), || Slot {
                waiting: std::sync::Mutex::new(Vec::new()),
                state: Arc::new(Mutex::new(None)),
                committed: std::sync::Mutex::new(None),
            })
    }

    /// Loads the aggregate into its slot under the batch lock (a cold load, or one checking
    /// whether an aggregate known not to exist does by now).
    async fn load_into(&self, aggregate_id: &str, slot: &Slot<A>) -> Result<Arc<A>, LedgerError> {
        let mut state = slot.state.lock().await;
        let loaded = self.fresh(aggregate_id, state.take()).await?;
        slot.publish(&loaded);
        let aggregate = loaded.aggregate.clone();
        *state = Some(loaded);
        Ok(aggregate)
    }

    #[tracing::instrument(
        name = "command batch",
        skip_all,
        fields(aggregate = A::TYPE, aggregate_id, commands = batch.len())
    )]
    async fn run_batch(
        &self,
        aggregate_id: &str,
        slot: &Slot<A>,
        mut state: OwnedMutexGuard<Option<Loaded<A>>>,
        batch: Vec<Waiting<A>>,
    ) {
        let (commands, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|waiting| ((waiting.command, waiting.metadata), waiting.reply))
            .unzip();
        let mut attempt = 0;
        let mut check_first = false;
        let outcomes = loop {
            match self
                .try_batch(aggregate_id, &mut state, &commands, check_first)
                .await
            {
                Ok(Decided::Committed(outcomes)) => break outcomes,
                // Decided on a state that turned out old: decide again on the new one.
                Ok(Decided::OnStaleState) => check_first = true,
                Err(LedgerError::Conflict) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    check_first = true;
                }
                Err(error) => {
                    break commands.iter().map(|_| Err(error.clone())).collect();
                }
            }
        };
        if let Some(loaded) = state.as_ref() {
            slot.publish(loaded);
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }

    /// Handles every command in turn on the evolving state and commits all their events at
    /// once. A refused command gets its refusal and adds nothing. The cached state is trusted
    /// unless `check_first`: the append's sequence check proves it current, and a batch with
    /// nothing to append, which has no such proof, is checked afterwards.
    async fn try_batch(
        &self,
        aggregate_id: &str,
        state: &mut Option<Loaded<A>>,
        commands: &[(A::Command, Metadata)],
        check_first: bool,
    ) -> Result<Decided<A>, LedgerError> {
        // Taken out while the batch runs: if anything fails before the commit, the next batch
        // loads afresh instead of trusting a state that holds uncommitted events (an append
        // whose outcome is unknown included).
        // Whether the state was read from the store for this attempt (checked, or loaded now).
        let checked = check_first || state.is_none();
        let before = match state.take() {
            Some(known) if !check_first => known,
            known => self.fresh(aggregate_id, known).await?,
        };
        let base = before.sequence;
        let mut aggregate = before.aggregate.clone();
        let mut sequence = base;
        let mut appended = Vec::new();
        // Per command: its events and how many events of the batch precede its last one.
        let mut decided = Vec::with_capacity(commands.len());
        for (command, metadata) in commands {
            let sink: EventSink<A> = EventSink::default();
            // cqrs-es's sink applies each event it is given to the aggregate, so after `handle`
            // the state includes the command's events (a refusal writes none). `make_mut`
            // copies the state when a reader still holds it (cheap: the large registers are
            // persistent maps sharing their nodes).
            if let Err(refusal) = Arc::make_mut(&mut aggregate)
                .handle(command.clone(), &self.services, &sink)
                .await
            {
                decided.push(Err(LedgerError::Domain(refusal)));
                continue;
            }
            let metadata_json = serde_json::to_string(metadata).map_err(encoding)?;
            let mut envelopes = Vec::new();
            for event in sink.collect().await {
                sequence += 1;
                appended.push(NewEvent {
                    sequence: sequence as i64,
                    event_type: event.event_type(),
                    event_version: event.event_version(),
                    payload: serde_json::to_string(&event).map_err(encoding)?,
                    metadata: metadata_json.clone(),
                });
                envelopes.push(EventEnvelope {
                    aggregate_id: aggregate_id.to_owned(),
                    sequence,
                    payload: event,
                    metadata: metadata.clone(),
                });
            }
            decided.push(Ok((envelopes, appended.len())));
        }
        if appended.is_empty() {
            let settled = if checked {
                before
            } else {
                // Nothing was appended, so nothing proved the state current: a refusal or a
                // no-op decided on a state another instance has moved on from would be wrong.
                let checked = self.fresh(aggregate_id, Some(before)).await?;
                if checked.sequence != base {
                    *state = Some(checked);
                    return Ok(Decided::OnStaleState);
                }
                checked
            };
            *state = Some(settled);
            return Ok(Decided::Committed(
                decided
                    .into_iter()
                    .map(|outcome| {
                        outcome.map(|(events, _)| Committed {
                            events,
                            position: None,
                        })
                    })
                    .collect(),
            ));
        }
        let positions = match self.store.append(A::TYPE, aggregate_id, &appended).await {
            Ok(positions) => positions,
            Err(AppendError::Conflict) => {
                // Keep what is known: the retry reads only the events it missed.
                *state = Some(before);
                return Err(LedgerError::Conflict);
            }
            Err(AppendError::Store(error)) => return Err(LedgerError::from_store(error)),
        };
        // Wakes this instance's log consumers at once instead of at their next poll.
        self.commits
            .send_modify(|commits| *commits = commits.wrapping_add(1));
        if let Some(every) = self.snapshot_every {
            let every = every(&aggregate).max(1);
            if sequence / every > base / every {
                self.snapshot_later(aggregate_id, sequence, aggregate.clone());
            }
        }
        *state = Some(Loaded {
            aggregate,
            sequence,
        });
        Ok(Decided::Committed(
            decided
                .into_iter()
                .map(|outcome| {
                    outcome.map(|(events, through)| Committed {
                        position: (!events.is_empty()).then(|| positions[through - 1]),
                        events,
                    })
                })
                .collect(),
        ))
    }

    /// `known` brought up to date with the events appended since (by other instances), or the
    /// aggregate loaded from its latest snapshot and the events after it.
    async fn fresh(
        &self,
        aggregate_id: &str,
        known: Option<Loaded<A>>,
    ) -> Result<Loaded<A>, LedgerError> {
        let Some(Loaded {
            mut aggregate,
            mut sequence,
        }) = known
        else {
            return self.load_cold(aggregate_id).await;
        };
        let newer = self
            .repository
            .events_after::<A>(aggregate_id, sequence)
            .await
            .map_err(persistence)?;
        for event in newer {
            let payload: A::Event = serde_json::from_value(event.payload).map_err(|error| {
                LedgerError::store(format!(
                    "event {} of {} {aggregate_id} is unreadable: {error}",
                    event.sequence,
                    A::TYPE
                ))
            })?;
            Arc::make_mut(&mut aggregate).apply(payload);
            sequence = event.sequence;
        }
        Ok(Loaded {
            aggregate,
            sequence,
        })
    }

    /// The aggregate from its latest snapshot (when it has snapshots) and the events after it,
    /// read a page at a time: a large tenant's cold load applies up to a snapshot interval of
    /// events (25 000 for 100 000 users), which read at once stood in memory together.
    async fn load_cold(&self, aggregate_id: &str) -> Result<Loaded<A>, LedgerError> {
        let mut loaded = self.snapshot(aggregate_id).await?;
        loop {
            let page = self
                .store
                .stream_page(
                    A::TYPE,
                    aggregate_id,
                    loaded.sequence as i64,
                    COLD_LOAD_PAGE,
                )
                .await
                .map_err(LedgerError::from_store)?;
            let full = page.len() as i64 == COLD_LOAD_PAGE;
            for (sequence, payload) in page {
                let event: A::Event = serde_json::from_str(&payload).map_err(|error| {
                    LedgerError::store(format!(
                        "event {sequence} of {} {aggregate_id} is unreadable: {error}",
                        A::TYPE
                    ))
                })?;
                Arc::make_mut(&mut loaded.aggregate).apply(event);
                loaded.sequence = usize::try_from(sequence).unwrap_or_default();
            }
            if !full {
                return Ok(loaded);
            }
        }
    }

    /// The aggregate as its latest snapshot has it, or as it was before its first event.
    async fn snapshot(&self, aggregate_id: &str) -> Result<Loaded<A>, LedgerError> {
        let from_start = Loaded {
            aggregate: Arc::new(A::default()),
            sequence: 0,
        };
        if self.snapshot_every.is_none() {
            return Ok(from_start);
        }
        let snapshot = self
            .store
            .load_snapshot::<A>(A::TYPE, aggregate_id)
            .await
            .map_err(LedgerError::from_store)?;
        let Some((sequence, decoded)) = snapshot else {
            return Ok(from_start);
        };
        match decoded {
            Ok(aggregate) => Ok(Loaded {
                aggregate: Arc::new(aggregate),
                sequence: usize::try_from(sequence).unwrap_or_default(),
            }),
            Err(error) => {
                // A snapshot only saves time: one the aggregate's shape has outgrown is ignored
                // and the whole stream read instead (the next snapshot replaces it).
                tracing::warn!(aggregate = A::TYPE, %aggregate_id, %error,
                    "snapshot unreadable; loading from the whole stream");
                Ok(from_start)
            }
        }
    }

    /// Writes a snapshot; a failure only costs a longer load later, so it is logged, not
    /// returned. It is written after the batch has answered (encoding a large aggregate takes
    /// milliseconds, on a blocking thread); holding the state meanwhile costs the next batch
    /// only a shallow copy.
    fn snapshot_later(&self, aggregate_id: &str, sequence: usize, aggregate: Arc<A>) {
        let store = self.store.clone();
        let aggregate_id = aggregate_id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = store
                .save_snapshot(A::TYPE, &aggregate_id, sequence as i64, aggregate)
                .await
            {
                tracing::warn!(aggregate = A::TYPE, %aggregate_id, %error, "snapshot not written");
            }
        });
    }
}

fn encoding(error: serde_json::Error) -> LedgerError {
    LedgerError::store(error)
}

fn persistence(error: PersistenceError) -> LedgerError {
    match error {
        PersistenceError::OptimisticLockError => LedgerError::Conflict,
        PersistenceError::ConnectionError(error) => LedgerError::Unavailable(Arc::from(error)),
        PersistenceError::UnknownError(error) if crate::store::is_unreachable_dyn(&*error) => {
            LedgerError::Unavailable(Arc::from(error))
        }
        other => LedgerError::store(other),
    }
}
