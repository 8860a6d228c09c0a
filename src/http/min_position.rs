//! `?min_position=N` on a query: the answer waits until what it reads has reached N — every
//! projection for a projection-backed read, the log for the rest — or answers 504 after a
//! bounded wait.
//!
//! Each route decides what it reads and calls [`MinPosition::reached`] once it has checked
//! that the caller may see the resource: an unknown or foreign resource answers 404 at once
//! instead of after the wait, and the position the wait found is the one the answer reports
//! (one "how far have we read" per request).

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::problem::ApiError;
use super::AppState;

/// How long a query waits for `?min_position=` before answering 504.
pub const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);

/// How often the wait looks again.
const POLL: Duration = Duration::from_millis(20);

/// What a read is answered from, and so what must have reached the wanted position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The checkpointed projections (lists, views, invoices): every one of them.
    Projections,
    /// The aggregates or the log itself: current as soon as the log holds the position.
    Log,
}

/// The `min_position` a query asked for, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct MinPosition(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for MinPosition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("min_position="))
        });
        match raw {
            None => Ok(Self(None)),
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|wanted| *wanted >= 0)
                .map(|wanted| Self(Some(wanted)))
                .ok_or_else(|| ApiError::Invalid {
                    field: "min_position".into(),
                    reason: format!("'{raw}' is not a whole number of at least 0"),
                }),
        }
    }
}

impl MinPosition {
    /// How far `source` has read, once it has reached the wanted position. A position beyond
    /// the log's end was never answered by any command (answers come after their commit): it
    /// gets its 504 at once rather than after the wait, so a made-up position costs a query,
    /// not five seconds of polling.
    pub async fn reached(&self, state: &AppState, source: ReadFrom) -> Result<i64, ApiError> {
        let deadline = tokio::time::Instant::now() + MIN_POSITION_WAIT;
        let mut within_log = false;
        loop {
            let reached = match source {
                ReadFrom::Projections => state.store.slowest(&projections::names()).await?.1,
                ReadFrom::Log => state.store.log_end().await?,
            };
            let Some(wanted) = self.0 else {
                return Ok(reached);
            };
            if reached >= wanted {
                return Ok(reached);
            }
            if !within_log {
                let end = match source {
                    ReadFrom::Log => reached,
                    ReadFrom::Projections => state.store.log_end().await?,
                };
                if wanted > end {
                    return Err(ApiError::NotCaughtUp { wanted, reached });
                }
                within_log = true;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::NotCaughtUp { wanted, reached });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
