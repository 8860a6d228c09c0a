//! The HTTP API of API.md (axum): state, authentication, the router and graceful serving.

mod idempotency;
pub mod openapi;
pub mod problem;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::Router;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tracing::info;

use crate::auth::{Principal, Tokens};
use crate::clock::Clock;
use crate::store::Store;
use crate::vault::Vault;
use crate::AnyLedger;
use problem::ApiError;

/// Bodies larger than this are refused with 413: no command needs more.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The write side.
    pub ledger: Arc<AnyLedger>,
    /// The store (for reads until the projections arrive).
    pub store: Store,
    /// The key store.
    pub vault: Vault,
    /// The token table.
    pub tokens: Tokens,
    /// The service's clock.
    pub clock: Arc<Clock>,
    /// The background work (stopped with the service).
    pub workers: Arc<crate::workers::Workers>,
    /// The JetStream publisher, when NATS is configured (for its counts in `/readyz`).
    pub publisher: Option<Arc<crate::feed::publisher::Publisher>>,
    /// Tells the tenant of events, for the feed's scopes.
    pub tenancy: Arc<crate::feed::tenancy::Tenancy>,
    /// Set when the service begins to shut down: live feeds end so that shutdown can finish.
    pub closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl FromRef<AppState> for Tokens {
    fn from_ref(state: &AppState) -> Self {
        state.tokens.clone()
    }
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    Tokens: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        Tokens::from_ref(state)
            .authenticate(token)
            .await?
            .ok_or(ApiError::Unauthorized)
    }
}

/// A JSON body whose rejections are problem documents (400 malformed, 422 invalid).
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// What the request says about itself, recorded with the events it causes.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request's id (`X-Request-Id`, or generated).
    pub request_id: String,
    /// The correlation id (`X-Correlation-Id`, or the request id).
    pub correlation_id: String,
    /// Why, in the caller's words (`Reason` header), if given.
    pub reason: Option<String>,
}

tokio::task_local! {
    /// The context of the request being handled on this task.
    pub static REQUEST: RequestContext;
}

fn header_text(request: &Request, name: &str, max: usize) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(|value| value.chars().take(max).collect())
}

async fn with_request_context(
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let request_id = header_text(&request, "x-request-id", 128)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let context = RequestContext {
        correlation_id: header_text(&request, "x-correlation-id", 128)
            .unwrap_or_else(|| request_id.clone()),
        reason: header_text(&request, "reason", 500),
        request_id: request_id.clone(),
    };
    let mut response = REQUEST.scope(context, next.run(request)).await;
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// How long a query waits for `?min_position=` before answering 504.
pub const MIN_POSITION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `?min_position=N` on a query: answer only once what it reads has reached N — every
/// projection for a projection-backed read, the log for the rest — or 504 after a bounded wait.
async fn wait_for_position(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let wanted = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("min_position="))
            .map(str::to_owned)
    });
    if let (Some(raw), &axum::http::Method::GET) = (wanted, request.method()) {
        let Ok(wanted) = raw.parse::<i64>() else {
            return ApiError::Invalid {
                field: "min_position".into(),
                reason: "must be a whole number".into(),
            }
            .into_response();
        };
        let deadline = tokio::time::Instant::now() + MIN_POSITION_WAIT;
        let projections = projections::names();
        let from_projections = routes::reads_projections(request.uri().path());
        loop {
            let reached = if from_projections {
                state
                    .store
                    .slowest(&projections)
                    .await
                    .map(|(_, reached)| reached)
            } else {
                state.store.log_end().await
            };
            match reached {
                Ok(end) if end >= wanted => break,
                Ok(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Ok(end) => {
                    return ApiError::NotCaughtUp {
                        wanted,
                        reached: end,
                    }
                    .into_response()
                }
                Err(error) => return ApiError::from(error).into_response(),
            }
        }
    }
    next.run(request).await
}

/// With the sandbox clock, takes over the offset another instance stored before the request
/// runs: every instance over one store stamps commands with the same sandbox time.
async fn shared_sandbox_time(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if state.clock.is_sandbox() {
        match state.store.sandbox_offset().await {
            Ok(Some(offset)) => state.clock.adopt(offset),
            Ok(None) => {}
            Err(error) => return ApiError::from(error).into_response(),
        }
    }
    next.run(request).await
}

/// Turns the body limit's bare 413 into a problem document like every other error.
async fn too_large_as_problem(response: axum::response::Response) -> axum::response::Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE && !is_problem {
        return ApiError::TooLarge.into_response();
    }
    response
}

/// Parses an optional JSON body (empty means `T::default()`), with the same 400/422 split as
/// [`Json`]; for routes whose body only some actions need.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|error| {
        if error.is_syntax() || error.is_eof() {
            ApiError::Malformed(error.to_string())
        } else {
            ApiError::Invalid {
                field: "body".into(),
                reason: error.to_string(),
            }
        }
    })
}

/// The service's router over `state`.
pub fn router(state: AppState) -> Router {
    routes::routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotent,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            wait_for_position,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            shared_sandbox_time,
        ))
        .layer(axum::middleware::from_fn(with_request_context))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(too_large_as_problem))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` completes; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address: SocketAddr = listener.local_addr()?;
    info!(%address, "seatledger listening");
    let closing = state.closing.clone();
    let mut closed = closing.subscribe();
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown.await;
        closing.send_replace(true);
    });
    // Requests in flight get a grace period; a client that stops reading a live feed would
    // otherwise hold the shutdown forever.
    let overdue = async move {
        let _ = closed.wait_for(|closing| *closing).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served,
        () = overdue => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still open after the grace period; closing them");
            Ok(())
        }
    }
}

/// How long requests in flight may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
