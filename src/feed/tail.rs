//! One shared tail of the log for every live feed (`GET /v1/events/stream`).
//!
//! A single task reads the log past its head — once for all clients, only while any client is
//! listening — wraps each event in its envelope once, learns its tenant and that tenant's
//! reseller once, and broadcasts the batch. Each client filters the batches by its scope
//! without touching the store. A client that connects behind the tail catches up from the
//! store (in pages, a few clients at a time) up to the head it was given, then takes the
//! broadcast: the catch-up covers `(from, head]`, the broadcast every batch past `head`, both
//! in the log's gap-free reading order, so nothing is missed or repeated.
//!
//! Memory is bounded for the whole service: the broadcast ring holds at most
//! [`RING_BATCHES`] batches of at most [`TAIL_BATCH`] events, shared by every client; a client
//! that falls a ring behind is ended with the id to resume from.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify};
use tracing::warn;
use uuid::Uuid;

use super::tenancy::{Audience, Tenancy};
use super::FeedError;
use crate::log::Checkpoint;
use crate::store::Store;

/// Events the tail reads and broadcasts at a time.
pub const TAIL_BATCH: i64 = 128;
/// Batches the broadcast keeps for clients that are behind.
pub const RING_BATCHES: usize = 64;
/// How often the tail looks for other instances' commits while anyone listens.
const LIVE_POLL: Duration = Duration::from_millis(250);
/// Feeds that read the store at once while catching up.
const CATCHING_UP_AT_ONCE: usize = 2;
/// The longest pause after repeated read failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One event of the log as every live feed sends it.
#[derive(Debug)]
pub struct TailEvent {
    /// Its place in the reading order.
    pub checkpoint: Checkpoint,
    /// The tenant it belongs to, if any.
    pub tenant: Option<Uuid>,
    /// That tenant's reseller, if any.
    pub reseller: Option<Uuid>,
    /// Its CloudEvents envelope, as JSON.
    pub json: Arc<str>,
}

impl TailEvent {
    /// Whether `audience` may read this event (the same rule as [`Tenancy::may_read`], with
    /// the tenant's reseller already known).
    pub fn visible_to(&self, audience: Audience) -> bool {
        match audience {
            Audience::Everything => true,
            Audience::Tenant(own) => self.tenant == Some(own),
            Audience::Reseller(own) => self.tenant.is_some() && self.reseller == Some(own),
        }
    }
}

/// A batch of the tail, shared by every client.
pub type Batch = Arc<Vec<TailEvent>>;

/// The shared tail.
pub struct LogTail {
    store: Store,
    tenancy: Arc<Tenancy>,
    sender: broadcast::Sender<Batch>,
    /// The last event broadcast (or, while nobody listens, where the next listener stands).
    head: Mutex<Checkpoint>,
    wake: Notify,
}

impl LogTail {
    /// A tail over `store`; [`LogTail::run`] moves it.
    pub fn new(store: Store, tenancy: Arc<Tenancy>) -> Self {
        Self {
            store,
            tenancy,
            sender: broadcast::channel(RING_BATCHES).0,
            head: Mutex::new(Checkpoint::default()),
            wake: Notify::new(),
        }
    }

    /// Listens from `after` on: the receiver gets every batch broadcast from now, and the
    /// returned head says up to where the caller must read the store itself first (nothing
    /// when `after` is at or past it). With nobody listening the tail has not moved, so it
    /// starts again from the new listener's place.
    pub fn subscribe(&self, after: Checkpoint) -> (broadcast::Receiver<Batch>, Checkpoint) {
        let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        if self.sender.receiver_count() == 0 && *head < after {
            *head = after;
        }
        let receiver = self.sender.subscribe();
        let from = *head;
        drop(head);
        self.wake.notify_one();
        (receiver, from)
    }

    /// Reads and broadcasts until `closing` says the service stops; then every feed ends.
    pub async fn run(
        self: Arc<Self>,
        mut commits: watch::Receiver<u64>,
        mut closing: watch::Receiver<bool>,
    ) {
        let mut failures = 0u32;
        loop {
            if *closing.borrow() {
                return;
            }
            let listening = self.sender.receiver_count() > 0;
            let mut full = false;
            if listening {
                match self.step().await {
                    Ok(read) => {
                        failures = 0;
                        full = read as i64 >= TAIL_BATCH;
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        let backoff = Duration::from_millis(100)
                            .saturating_mul(2u32.saturating_pow(failures.min(6)))
                            .min(MAX_BACKOFF);
                        warn!(%error, ?backoff, "the live feed's tail could not read the log; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = closing.changed() => return,
                        }
                        continue;
                    }
                }
            }
            if full {
                continue;
            }
            // Nobody listening: nothing to read until someone subscribes.
            tokio::select! {
                _ = self.wake.notified() => {}
                changed = commits.changed(), if listening => {
                    if changed.is_err() {
                        tokio::time::sleep(LIVE_POLL).await;
                    }
                }
                _ = tokio::time::sleep(LIVE_POLL), if listening => {}
                _ = closing.changed() => return,
            }
        }
    }

    /// Reads one batch past the head, wraps it and broadcasts it; how many events it read.
    #[tracing::instrument(name = "live tail batch", skip_all)]
    async fn step(&self) -> Result<usize, FeedError> {
        let from = *self.head.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = self
            .store
            .read_log(from, Checkpoint::END, TAIL_BATCH)
            .await?;
        let Some(last) = stored.last().map(|event| event.checkpoint) else {
            return Ok(0);
        };
        let mut batch = Vec::with_capacity(stored.len());
        for event in &stored {
            let (envelope, tenant) = super::wrap(&self.tenancy, event).await?;
            let reseller = match tenant {
                Some(tenant) => self.tenancy.reseller_of(tenant).await?,
                None => None,
            };
            let json =
                serde_json::to_string(&envelope).map_err(|error| FeedError::Undecodable {
                    position: event.position(),
                    reason: error.to_string(),
                })?;
            batch.push(TailEvent {
                checkpoint: event.checkpoint,
                tenant,
                reseller,
                json: json.into(),
            });
        }
        let read = batch.len();
        let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        // No receiver (they all left meanwhile) is fine: the batch goes nowhere.
        let _ = self.sender.send(Arc::new(batch));
        if *head < last {
            *head = last;
        }
        Ok(read)
    }
}

/// Caps on live feeds: in total and per token, so that no caller can hold the service's
/// connections and memory.
pub struct LiveFeeds {
    total: Arc<tokio::sync::Semaphore>,
    per_token: Mutex<std::collections::HashMap<Uuid, u32>>,
    max_per_token: u32,
    /// Feeds reading the store while they catch up, at most a few at a time (on SQLite every
    /// read queues for the one connection, ahead of the commands).
    catching_up: tokio::sync::Semaphore,
}

/// Why a live feed was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedRefusal {
    /// This token holds its most feeds already.
    TooManyForToken(u32),
    /// The service holds its most feeds already.
    TooMany,
}

impl LiveFeeds {
    /// At most `total` feeds at once, `per_token` of them for one token.
    pub fn new(total: u32, per_token: u32) -> Arc<Self> {
        Arc::new(Self {
            total: Arc::new(tokio::sync::Semaphore::new(total as usize)),
            per_token: Mutex::default(),
            max_per_token: per_token,
            catching_up: tokio::sync::Semaphore::new(CATCHING_UP_AT_ONCE),
        })
    }

    /// Waits for a turn to read the store while catching up (held for one page).
    pub async fn catching_up(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.catching_up
            .acquire()
            .await
            .expect("the catch-up semaphore is never closed")
    }

    /// A slot for one more feed of `token`, held until the slot drops.
    pub fn open(self: &Arc<Self>, token: Uuid) -> Result<FeedSlot, FeedRefusal> {
        let mut per_token = self
            .per_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = per_token.get(&token).copied().unwrap_or(0);
        if held >= self.max_per_token {
            return Err(FeedRefusal::TooManyForToken(self.max_per_token));
        }
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| FeedRefusal::TooMany)?;
        per_token.insert(token, held + 1);
        Ok(FeedSlot {
            _permit: permit,
            token,
            feeds: self.clone(),
        })
    }

    /// Feeds open now.
    pub fn open_count(&self) -> usize {
        self.per_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|held| *held as usize)
            .sum()
    }
}

/// One open feed's place under the caps.
pub struct FeedSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    token: Uuid,
    feeds: Arc<LiveFeeds>,
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        let mut per_token = self
            .feeds
            .per_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = per_token.get_mut(&self.token) {
            *held -= 1;
            if *held == 0 {
                per_token.remove(&self.token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_token_and_in_total_and_free_on_drop() {
        let feeds = LiveFeeds::new(3, 2);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let first = feeds.open(alice).unwrap();
        let _second = feeds.open(alice).unwrap();
        assert_eq!(
            feeds.open(alice).err(),
            Some(FeedRefusal::TooManyForToken(2))
        );
        let _third = feeds.open(bob).unwrap();
        assert_eq!(feeds.open(bob).err(), Some(FeedRefusal::TooMany));
        assert_eq!(feeds.open_count(), 3);
        drop(first);
        assert_eq!(feeds.open_count(), 2);
        assert!(feeds.open(bob).is_ok(), "a dropped feed frees its slot");
    }

    #[test]
    fn scopes_filter_without_the_store() {
        let (tenant, reseller) = (Uuid::new_v4(), Uuid::new_v4());
        let event = TailEvent {
            checkpoint: Checkpoint::default(),
            tenant: Some(tenant),
            reseller: Some(reseller),
            json: "{}".into(),
        };
        assert!(event.visible_to(Audience::Everything));
        assert!(event.visible_to(Audience::Tenant(tenant)));
        assert!(event.visible_to(Audience::Reseller(reseller)));
        assert!(!event.visible_to(Audience::Tenant(Uuid::new_v4())));
        assert!(!event.visible_to(Audience::Reseller(Uuid::new_v4())));
        let untenanted = TailEvent {
            tenant: None,
            reseller: None,
            ..event
        };
        assert!(untenanted.visible_to(Audience::Everything));
        assert!(!untenanted.visible_to(Audience::Tenant(tenant)));
    }
}
