//! The HTTP API of API.md (axum): state, authentication, the router and graceful serving.

pub mod idempotency;
pub mod min_position;
pub mod openapi;
pub mod problem;
mod routes;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::Router;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::Instrument;

use crate::auth::{Principal, Tokens};
use crate::clock::Clock;
use crate::store::Store;
use crate::vault::Vault;
use crate::Ledger;
use problem::ApiError;
use problem::Unauthorized;

/// Bodies larger than this are refused with 413: no command needs more.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The write side.
    pub ledger: Arc<Ledger>,
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
    /// How long `Idempotency-Key` answers are kept.
    pub idempotency: Arc<idempotency::Retention>,
    /// The shared tail of the log every live feed follows.
    pub tail: Arc<crate::feed::tail::LogTail>,
    /// The caps on live feeds.
    pub feeds: Arc<crate::feed::tail::LiveFeeds>,
    /// How long a connection may take to send a request's headers.
    pub header_read_timeout: std::time::Duration,
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// The principal [`authenticated`] found for this request; a route outside that layer has
    /// none, and answers 401.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthorized(Unauthorized::Missing))
    }
}

/// The first step of every route but the public three: the bearer token is checked before
/// anything else runs, so an unauthenticated caller costs one cached hash lookup — no
/// idempotency row, no wait for `?min_position=`, no aggregate load.
async fn authenticated(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty());
    let Some(token) = presented else {
        return ApiError::Unauthorized(Unauthorized::Missing).into_response();
    };
    match state.tokens.authenticate(token).await {
        Ok(Some(principal)) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Ok(None) => ApiError::Unauthorized(Unauthorized::Unknown).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// A JSON body whose rejections are problem documents: 400 when it is not JSON, 422 naming
/// the field when a value is missing or of the wrong kind.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                let essence = value.split(';').next().unwrap_or_default().trim();
                essence == "application/json" || essence.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::Malformed(
                "send the body as JSON, with Content-Type: application/json".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::Malformed(rejection.body_text())
                }
            })?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses a JSON body, naming the field a value is missing from or wrong in.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::Malformed(inner.to_string());
        }
        let message = inner.to_string();
        // "missing field `x`" is reported at the object that lacks it: name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(field)) => field.to_owned(),
            (parent, Some(field)) => format!("{parent}.{field}"),
            (".", None) => "body".to_owned(),
            (path, None) => path.to_owned(),
        };
        ApiError::Invalid {
            field,
            reason: message,
        }
    })
}

/// A query string whose rejections are problem documents naming the parameter (422), not
/// axum's plain-text 400.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Self)
            .map_err(|error| {
                let path = error.path().to_string();
                ApiError::Invalid {
                    field: if path == "." { "query".into() } else { path },
                    reason: error.into_inner().to_string(),
                }
            })
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
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
    /// The attempt of an `Idempotency-Key` request this run is (recorded with its events, so
    /// that a retry after a lost answer finds what the attempt wrote).
    pub idempotency_attempt: Option<String>,
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
        idempotency_attempt: None,
    };
    let method = request.method().clone();
    // The route as declared (`/v1/users/{user_id}`), never the path: no ids in the access log.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "(no route)".to_owned(), |path| path.as_str().to_owned());
    let span = tracing::info_span!("request", %request_id, %method, %route);
    let started = std::time::Instant::now();
    let mut response = REQUEST
        .scope(context, next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    // One line per request (never a token: only the route, status and ids). A client's own
    // 4xx or a position not reached yet is its business, not the operator's alarm.
    span.in_scope(|| match status {
        500 => tracing::error!(status, latency_ms, "request failed"),
        503 => tracing::warn!(status, latency_ms, "request answered unavailable"),
        _ => tracing::info!(status, latency_ms, "request"),
    });
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

pub use min_position::MIN_POSITION_WAIT;

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

/// Requests that panicked since the service started (reported by `/readyz`).
pub static REQUEST_PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A request that panicked answers a 500 problem document; the panic is logged (as one log
/// event, in the log's own format) and counted, and the service goes on: no lock is left
/// poisoned for the next request (the shared state's locks recover from poisoning).
fn panic_as_problem(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    REQUEST_PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ApiError::internal(format!("request panicked: {message}")).into_response()
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
    parse_json(body)
}

/// The service's router over `state`.
pub fn router(state: AppState) -> Router {
    // Layers run outside in: authentication first, so that nothing else (the sandbox clock's
    // shared offset, an idempotency row) costs anything for a caller without a valid token.
    let protected = routes::protected()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotent,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            shared_sandbox_time,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticated,
        ));
    routes::public()
        .merge(protected)
        .fallback(routes::unknown_route)
        .method_not_allowed_fallback(routes::wrong_method)
        .layer(axum::middleware::from_fn(with_request_context))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(too_large_as_problem))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_as_problem,
        ))
        .with_state(state)
}

/// Serves until `shutdown` completes; in-flight requests finish first (for at most
/// [`SHUTDOWN_GRACE`]).
///
/// The accept loop is ours rather than `axum::serve`'s for one setting that lacks: a deadline
/// for a request's headers. Without it a client that dribbles its headers a byte at a time
/// holds a connection (and a task) for as long as it likes; with it the connection is closed
/// once `state.header_read_timeout` passes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_read_timeout = state.header_read_timeout;
    let closing = state.closing.clone();
    let app = router(state);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(%error, "cannot accept a connection; pausing");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut closed = closing.subscribe();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                _ = async { closed.wait_for(|closing| *closing).await.is_ok() } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        // Forget the connections that have ended.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    // Live feeds end when the service closes; requests in flight get a grace period (a client
    // that stops reading would otherwise hold the shutdown forever).
    closing.send_replace(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    tokio::select! {
        () = drained => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still open after the grace period; closing them");
            connections.abort_all();
        }
    }
    Ok(())
}

/// How long requests in flight may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    /// The layer the router uses: a request that panics answers a 500 problem document, is
    /// counted for /readyz, and the service answers the next request.
    #[tokio::test]
    async fn a_panicking_request_answers_a_problem_and_is_counted() {
        async fn boom() -> &'static str {
            panic!("a handler broke")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                panic_as_problem,
            ));
        let before = REQUEST_PANICS.load(std::sync::atomic::Ordering::Relaxed);
        let request = |path: &str| {
            Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let answer = app.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(
            answer.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            answer.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(REQUEST_PANICS.load(std::sync::atomic::Ordering::Relaxed) > before);
        let answer = app.oneshot(request("/fine")).await.unwrap();
        assert_eq!(answer.status(), axum::http::StatusCode::OK);
    }
}
