//! The log as a feed: `GET /v1/events` pages through it, `GET /v1/events/stream` follows it
//! live with Server-Sent Events. Both serve the CloudEvents envelopes JetStream carries, in the
//! log's reading (commit) order, limited to what the token's scope may see.

use std::convert::Infallible;
use std::time::Duration;

use crate::http::Query;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

use tokio::sync::broadcast;
use tracing::{debug, error};

use crate::auth::Principal;
use crate::feed::tail::{Batch, FeedRefusal, FeedSlot};
use crate::feed::tenancy::Audience;
use crate::feed::{self, FeedError};
use crate::http::min_position::{MinPosition, ReadFrom};
use crate::http::problem::ApiError;
use crate::http::{AppState, Json};
use crate::log::Checkpoint;

/// The page size when none is asked for, and the largest one may ask for.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;
/// How many events one page may read past while filling itself from a narrow scope.
const PAGE_SCAN: usize = 10_000;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list))
        .route("/v1/events/stream", get(stream))
}

#[derive(Debug, Deserialize)]
struct FeedQuery {
    after: Option<String>,
    limit: Option<String>,
}

impl From<FeedError> for ApiError {
    fn from(error: FeedError) -> Self {
        named(error, "after")
    }
}

/// The problem for a feed error, naming `field` when the cursor it gave names no event.
fn named(error: FeedError, field: &str) -> ApiError {
    match error {
        FeedError::UnknownPosition(position) => ApiError::Invalid {
            field: field.into(),
            reason: format!(
                "no event has position {position}; pass 0 or a position the feed or a command returned"
            ),
        },
        other => ApiError::internal(other),
    }
}

fn audience(principal: &Principal) -> Result<Audience, ApiError> {
    Audience::of(principal).ok_or(ApiError::Forbidden)
}

fn parse_after(field: &str, raw: Option<&str>) -> Result<i64, ApiError> {
    let Some(raw) = raw else { return Ok(0) };
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|after| *after >= 0)
        .ok_or_else(|| ApiError::Invalid {
            field: field.into(),
            reason: format!("'{raw}' is not a position (a whole number, 0 or more)"),
        })
}

fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
        .ok_or_else(|| ApiError::Invalid {
            field: "limit".into(),
            reason: format!("'{raw}' is not a page size from 1 to {MAX_LIMIT}"),
        })
}

/// A page of the log.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventPage {
    /// The events the token may see, in the log's reading order.
    pub events: Vec<feed::envelope::CloudEvent>,
    /// The cursor of the next page (`after=`).
    pub next_after: i64,
    /// Whether the log holds more now.
    pub has_more: bool,
    /// How far the log had been read.
    pub position: i64,
}

async fn list(
    principal: Principal,
    State(state): State<AppState>,
    Query(query): Query<FeedQuery>,
    min_position: MinPosition,
) -> Result<Json<EventPage>, ApiError> {
    let audience = audience(&principal)?;
    let after = parse_after("after", query.after.as_deref())?;
    let limit = parse_limit(query.limit.as_deref())?;
    let position = min_position.reached(&state, ReadFrom::Log).await?;
    let from = feed::cursor(&state.store, after).await?;
    let page = feed::page(
        &state.store,
        &state.tenancy,
        audience,
        from,
        limit,
        PAGE_SCAN,
    )
    .await?;
    let next_after = if page.next == from {
        after
    } else {
        page.next.position
    };
    Ok(Json(EventPage {
        events: page.events,
        next_after,
        has_more: page.more,
        position,
    }))
}

async fn stream(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<FeedQuery>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let audience = audience(&principal)?;
    // Refused before anything reads the store: a caller at its cap costs nothing.
    let slot = state
        .feeds
        .open(principal.token_id)
        .map_err(|refusal| match refusal {
            FeedRefusal::TooManyForToken(max) => ApiError::TooManyStreams(max),
            FeedRefusal::TooMany => ApiError::StreamsUnavailable,
        })?;
    // A reconnecting EventSource sends the id of the last event it received.
    let resume = headers
        .get("last-event-id")
        .map(|value| value.to_str().unwrap_or("not text"));
    let field = if resume.is_some() {
        "Last-Event-ID"
    } else {
        "after"
    };
    let after = parse_after(field, resume.or(query.after.as_deref()))?;
    let from = feed::cursor(&state.store, after)
        .await
        .map_err(|error| named(error, field))?;
    let follower = Follower {
        closing: state.closing.subscribe(),
        state,
        audience,
        next: from,
        pending: VecDeque::new(),
        live: None,
        ended: false,
        _slot: slot,
    };
    let events = futures::stream::unfold(follower, |mut follower| async move {
        let event = follower.next_event().await?;
        Some((Ok::<_, Infallible>(event), follower))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Events a catching-up client reads from the store per page.
const CATCH_UP_PAGE: usize = 100;
/// How long a catching-up client waits when the events before the tail's head cannot be read
/// yet.
const CATCH_UP_RETRY: Duration = Duration::from_millis(50);

/// One live feed: it catches up from the store, then follows the shared tail of the log
/// (`crate::feed::tail`), sending what its scope may see. Nothing runs for it while its
/// client is not reading: the response body polls it only when it can write.
struct Follower {
    state: AppState,
    audience: Audience,
    /// The last event read, seen by this client or not.
    next: Checkpoint,
    /// Events ready to send, in order.
    pending: VecDeque<Event>,
    /// The shared tail, once subscribed, and the head up to which the store is read first.
    live: Option<(broadcast::Receiver<Batch>, Checkpoint)>,
    /// Set once the last event (a `lagged` notice) is queued.
    ended: bool,
    closing: tokio::sync::watch::Receiver<bool>,
    _slot: FeedSlot,
}

impl Follower {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended || *self.closing.borrow() {
                return None;
            }
            let until = match &self.live {
                None => Checkpoint::END,
                Some((_, head)) if self.next < *head => *head,
                Some(_) => {
                    self.receive().await?;
                    continue;
                }
            };
            let page = {
                let _reading = self.state.feeds.catching_up().await;
                feed::page_until(
                    &self.state.store,
                    &self.state.tenancy,
                    self.audience,
                    self.next,
                    until,
                    CATCH_UP_PAGE,
                    PAGE_SCAN,
                )
                .await
            };
            let page = match page {
                Ok(page) => page,
                Err(failure) => {
                    // The client reconnects with Last-Event-ID and misses nothing.
                    error!(error = %failure, "event stream interrupted");
                    return None;
                }
            };
            for event in &page.events {
                match Event::default()
                    .id(event.position.to_string())
                    .json_data(event)
                {
                    Ok(sse) => self.pending.push_back(sse),
                    Err(failure) => {
                        error!(error = %failure, "cannot encode an event for the stream");
                        return None;
                    }
                }
            }
            let stuck = page.events.is_empty() && page.next == self.next;
            self.next = page.next;
            if stuck && until != Checkpoint::END {
                // The tail is ahead but nothing below the read horizon is readable yet (an
                // older transaction still runs): wait a moment instead of asking at once.
                tokio::select! {
                    _ = tokio::time::sleep(CATCH_UP_RETRY) => {}
                    _ = self.closing.changed() => return None,
                }
            }
            if !page.more && self.live.is_none() {
                // Caught up with the log as it stood: from here the shared tail carries on.
                self.live = Some(self.state.tail.subscribe(self.next));
            }
        }
    }

    /// Takes the next batch of the shared tail into `pending`; `None` when the feed ends.
    async fn receive(&mut self) -> Option<()> {
        let (receiver, _) = self.live.as_mut()?;
        let received = tokio::select! {
            received = receiver.recv() => received,
            _ = self.closing.changed() => return None,
        };
        match received {
            Ok(batch) => {
                for event in batch.iter() {
                    if event.checkpoint <= self.next {
                        continue;
                    }
                    self.next = event.checkpoint;
                    if event.visible_to(self.audience) {
                        self.pending.push_back(
                            Event::default()
                                .id(event.checkpoint.position.to_string())
                                .data(&*event.json),
                        );
                    }
                }
                Some(())
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Too far behind the shared tail to keep its place in memory: end with the id
                // to resume from; the EventSource reconnects with it as Last-Event-ID and
                // catches up from the store.
                debug!(
                    missed,
                    "a slow event stream client fell behind; ending its feed"
                );
                self.pending.push_back(
                    Event::default()
                        .event("lagged")
                        .id(self.next.position.to_string())
                        .retry(Duration::from_secs(1))
                        .data(format!(
                            "{{\"resume_after\":{},\"detail\":\"the client fell behind the live feed; reconnect with Last-Event-ID to resume\"}}",
                            self.next.position
                        )),
                );
                self.ended = true;
                Some(())
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
