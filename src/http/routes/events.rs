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
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{debug, error};

use crate::auth::Principal;
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
/// How often a live feed that is caught up looks at the log for other instances' commits.
const LIVE_POLL: Duration = Duration::from_millis(250);
/// Events held for a slow SSE client before the feed waits for it.
const SSE_BUFFER: usize = 256;

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
        other => ApiError::Internal(other.to_string()),
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

async fn list(
    principal: Principal,
    State(state): State<AppState>,
    Query(query): Query<FeedQuery>,
    min_position: MinPosition,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "events": page.events,
        "next_after": next_after,
        "has_more": page.more,
        "position": position,
    })))
}

async fn stream(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<FeedQuery>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let audience = audience(&principal)?;
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
    let (sender, receiver) = mpsc::channel(SSE_BUFFER);
    tokio::spawn(follow(state, audience, from, sender));
    Ok(
        Sse::new(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .keep_alive(KeepAlive::default()),
    )
}

/// Sends every visible event after `from`, then each new one as it commits, until the client
/// goes away or the service shuts down.
async fn follow(
    state: AppState,
    audience: Audience,
    mut next: Checkpoint,
    sender: mpsc::Sender<Result<Event, Infallible>>,
) {
    let mut commits = state.ledger.commits();
    let mut closing = state.closing.subscribe();
    loop {
        if *closing.borrow() {
            return;
        }
        let page = match feed::page(
            &state.store,
            &state.tenancy,
            audience,
            next,
            MAX_LIMIT,
            PAGE_SCAN,
        )
        .await
        {
            Ok(page) => page,
            Err(failure) => {
                // The client reconnects with Last-Event-ID and misses nothing.
                error!(error = %failure, "event stream interrupted");
                return;
            }
        };
        for event in &page.events {
            let sse = match Event::default()
                .id(event.position.to_string())
                .json_data(event)
            {
                Ok(sse) => sse,
                Err(failure) => {
                    error!(error = %failure, "cannot encode an event for the stream");
                    return;
                }
            };
            tokio::select! {
                sent = sender.send(Ok(sse)) => {
                    if sent.is_err() {
                        debug!("event stream client went away");
                        return;
                    }
                }
                _ = closing.changed() => return,
            }
        }
        next = page.next;
        if page.more {
            continue;
        }
        tokio::select! {
            changed = commits.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(LIVE_POLL).await;
                }
            }
            _ = tokio::time::sleep(LIVE_POLL) => {}
            _ = closing.changed() => return,
            _ = sender.closed() => return,
        }
    }
}
