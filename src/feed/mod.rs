//! The event feed for downstream services: every event of the log, in the order the log's
//! consumers read it, as a CloudEvents envelope — published to NATS JetStream when configured
//! and served over HTTP (pages and Server-Sent Events) always.

pub mod envelope;
pub mod publisher;
pub mod tail;
pub mod tenancy;

use crate::log::{Checkpoint, StoredEvent};
use crate::store::Store;
use envelope::CloudEvent;
use tenancy::{Audience, Tenancy, TenancyError};

/// Events read from the log per query while filling a page.
const SCAN_BATCH: i64 = 500;

/// Why the feed could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    /// The tenant of an event could not be told.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// A stored payload is not JSON.
    #[error("the event at position {position} is not JSON: {reason}")]
    Undecodable {
        /// Where.
        position: i64,
        /// Why.
        reason: String,
    },
    /// `after` names no event.
    #[error("no event has position {0}")]
    UnknownPosition(i64),
}

/// A page of the feed.
#[derive(Debug)]
pub struct Page {
    /// The events the reader may see.
    pub events: Vec<CloudEvent>,
    /// Where the next page starts: the last event read, seen or not (the reader's scope may
    /// hide a long run of events).
    pub next: Checkpoint,
    /// Whether the page stopped before the end of what the log holds now.
    pub more: bool,
}

/// Where the feed continues after the event at `position` (0: the start of the log).
pub async fn cursor(store: &Store, position: i64) -> Result<Checkpoint, FeedError> {
    if position == 0 {
        return Ok(Checkpoint::default());
    }
    store
        .event_at(position)
        .await?
        .map(|(checkpoint, _)| checkpoint)
        .ok_or(FeedError::UnknownPosition(position))
}

/// Up to `limit` events after `after` that `audience` may see, reading at most `scan` events
/// of the log.
pub async fn page(
    store: &Store,
    tenancy: &Tenancy,
    audience: Audience,
    after: Checkpoint,
    limit: usize,
    scan: usize,
) -> Result<Page, FeedError> {
    page_until(
        store,
        tenancy,
        audience,
        after,
        Checkpoint::END,
        limit,
        scan,
    )
    .await
}

/// [`page`] of the events after `after` up to and including `until` only (`more` says
/// whether any remain before `until`).
pub async fn page_until(
    store: &Store,
    tenancy: &Tenancy,
    audience: Audience,
    after: Checkpoint,
    until: Checkpoint,
    limit: usize,
    scan: usize,
) -> Result<Page, FeedError> {
    let mut events = Vec::new();
    let mut next = after;
    let mut scanned = 0;
    loop {
        let want = SCAN_BATCH.min((scan - scanned).max(1) as i64);
        let batch = store.read_log(next, until, want).await?;
        let exhausted = (batch.len() as i64) < want;
        for stored in batch {
            scanned += 1;
            next = stored.checkpoint;
            let (event, tenant) = wrap(tenancy, &stored).await?;
            if tenancy.may_read(audience, tenant).await? {
                events.push(event);
                if events.len() >= limit {
                    let more = !store.read_log(next, until, 1).await?.is_empty();
                    return Ok(Page { events, next, more });
                }
            }
        }
        if exhausted {
            return Ok(Page {
                events,
                next,
                more: false,
            });
        }
        if scanned >= scan {
            return Ok(Page {
                events,
                next,
                more: true,
            });
        }
    }
}

/// The envelope of a stored event and the tenant it belongs to.
pub async fn wrap(
    tenancy: &Tenancy,
    stored: &StoredEvent,
) -> Result<(CloudEvent, Option<uuid::Uuid>), FeedError> {
    let payload: serde_json::Value =
        serde_json::from_str(&stored.payload).map_err(|error| FeedError::Undecodable {
            position: stored.position(),
            reason: error.to_string(),
        })?;
    let data = envelope::data_of(&stored.event_type, payload);
    let tenant = tenancy.tenant_of(stored, &data).await?;
    Ok((CloudEvent::wrap(stored, data, tenant), tenant))
}
