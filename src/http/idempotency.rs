//! `Idempotency-Key` on POST: the same key and body return the first answer and write nothing
//! new; the same key with another body is refused (422); a repeat while the first is still
//! running is told to wait (409).
//!
//! What is kept of an answer is kept with care: a secret (an issued token, a temporary
//! password) is never stored — a replay says it was shown once —, a user's personal details
//! are sealed under that user's key like the events' (so a purge makes them unreadable here
//! too), the request is remembered by a keyed digest only, and every stored answer expires
//! (24 hours unless configured otherwise).
//!
//! A run whose answer is lost (a 5xx after the command may have committed, a crash) leaves its
//! key unsettled: the retry looks in the log for the events the attempt wrote, and answers
//! what it finds instead of running the command a second time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aggregates::personal::SealedDetails;
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::problem::ApiError;
use super::{AppState, MAX_BODY_BYTES, REQUEST};
use crate::auth::Principal;
use crate::store::Store;
use crate::vault::Vault;

/// Answers larger than this are not kept (command answers are small).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Fields whose values are secrets shown once: never stored.
const SECRET_FIELDS: [&str; 2] = ["token", "temporary_password"];

/// Fields that are a user's personal data: stored sealed under the user's key.
const PERSONAL_FIELDS: [&str; 5] = [
    "user_principal_name",
    "first_name",
    "last_name",
    "display_name",
    "location",
];

/// Where a stored answer keeps the sealed personal fields of the object they belonged to.
const SEALED_FIELD: &str = "sealed_personal_data";

/// What a replay says in place of a secret.
const SECRET_WITHHELD: &str = "secret_withheld";

/// A run still marked as running after this long has ended without settling (the instance
/// died): a retry treats it as unsettled.
const RUNNING_LIMIT: Duration = Duration::from_secs(120);

/// How often an instance deletes expired keys.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// This instance's keyed requests: how long their answers are kept (`--idempotency-ttl-hours`)
/// and which attempts are running here now.
#[derive(Debug)]
pub struct Retention {
    ttl: chrono::Duration,
    last_sweep: AtomicI64,
    /// Begins every attempt id this instance makes: an attempt of this instance that is not
    /// running here any more has ended, whatever its row says.
    instance: String,
    running: Mutex<HashSet<String>>,
}

impl Retention {
    /// Answers kept for `ttl`.
    pub fn new(ttl: chrono::Duration) -> Self {
        Self {
            ttl,
            last_sweep: AtomicI64::new(0),
            instance: format!("{}/", Uuid::new_v4().simple()),
            running: Mutex::default(),
        }
    }

    /// A new attempt id of this instance.
    fn new_attempt(&self) -> String {
        format!("{}{}", self.instance, Uuid::new_v4().simple())
    }

    /// Whether an attempt whose row says it is still running has in fact ended: one of this
    /// instance's exactly when it no longer runs here (it ended without settling its row, say
    /// while the store was unreachable); another instance's once it has run implausibly long
    /// (that instance died; a restarted process is a new instance).
    fn has_ended(&self, attempt: &str, age_seconds: f64) -> bool {
        if attempt.starts_with(&self.instance) {
            return !self
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(attempt);
        }
        age_seconds > RUNNING_LIMIT.as_secs_f64()
    }

    /// Marks `attempt` as running here until the guard drops (however the request ends).
    fn run(self: &Arc<Self>, attempt: &str) -> Running {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(attempt.to_owned());
        Running {
            retention: self.clone(),
            attempt: attempt.to_owned(),
        }
    }

    /// Keys created before this instant are expired.
    fn cutoff(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() - self.ttl
    }

    /// Whether this call should sweep (at most once per [`SWEEP_EVERY`] per instance).
    fn sweep_due(&self) -> bool {
        let now = chrono::Utc::now().timestamp();
        let last = self.last_sweep.load(Ordering::Relaxed);
        now - last >= SWEEP_EVERY.as_secs() as i64
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// An attempt running on this instance, for as long as this lives.
struct Running {
    retention: Arc<Retention>,
    attempt: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut running) = self.retention.running.lock() {
            running.remove(&self.attempt);
        }
    }
}

/// A key's row.
#[derive(Debug)]
struct StoredKey {
    request_hash: String,
    status: Option<i32>,
    body: Option<Vec<u8>>,
    attempt: String,
    log_start: i64,
    unsettled: bool,
    /// Seconds since the row was (re)claimed.
    age_seconds: f64,
}

enum Claim {
    /// This request runs as this attempt (running here already); its answer is to be
    /// recorded.
    Fresh(String, Running),
    /// A completed first answer to return.
    Replay(u16, Vec<u8>),
    /// The key was used with another request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
    /// An earlier attempt ended without a recorded answer: what it wrote must be looked for.
    Unsettled(StoredKey),
}

/// The key's table, on either backend.
struct Keys {
    store: Store,
    caller: String,
    key: String,
}

impl Keys {
    /// Claims the key for a new attempt in one statement: inserted, or taking over a row
    /// older than `cutoff` (expired); `false` when a live row holds the key. The log's end
    /// when the attempt begins is read by the same statement.
    async fn claim_fresh(
        &self,
        request_hash: &str,
        attempt: &str,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, sqlx::Error> {
        let claimed = match &self.store {
            Store::Postgres(pool) => sqlx::query(
                "INSERT INTO idempotency_keys (caller, key, request_hash, attempt, log_start)
                 VALUES ($1, $2, $3, $4, (SELECT COALESCE(MAX(position), 0) FROM events))
                 ON CONFLICT (caller, key) DO UPDATE
                    SET request_hash = excluded.request_hash, attempt = excluded.attempt,
                        log_start = excluded.log_start, status = NULL, body = NULL,
                        unsettled = false, created_at = now()
                  WHERE idempotency_keys.created_at < $5",
            )
            .bind(&self.caller)
            .bind(&self.key)
            .bind(request_hash)
            .bind(attempt)
            .bind(cutoff)
            .execute(pool)
            .await?
            .rows_affected(),
            Store::Sqlite(pool) => sqlx::query(
                "INSERT INTO idempotency_keys (caller, key, request_hash, attempt, log_start)
                 VALUES ($1, $2, $3, $4,
                         (SELECT COALESCE(MAX(position), 0) FROM events WHERE position > 0))
                 ON CONFLICT (caller, key) DO UPDATE
                    SET request_hash = excluded.request_hash, attempt = excluded.attempt,
                        log_start = excluded.log_start, status = NULL, body = NULL,
                        unsettled = 0, created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                  WHERE idempotency_keys.created_at < $5",
            )
            .bind(&self.caller)
            .bind(&self.key)
            .bind(request_hash)
            .bind(attempt)
            .bind(sqlite_instant(cutoff))
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(claimed == 1)
    }

    async fn read(&self) -> Result<Option<StoredKey>, sqlx::Error> {
        type Row = (String, Option<i32>, Option<Vec<u8>>, String, i64, bool, f64);
        let row: Option<Row> = match &self.store {
            Store::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT request_hash, status, body, attempt, log_start, unsettled,
                            EXTRACT(EPOCH FROM now() - created_at)::float8
                     FROM idempotency_keys WHERE caller = $1 AND key = $2",
                )
                .bind(&self.caller)
                .bind(&self.key)
                .fetch_optional(pool)
                .await?
            }
            Store::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT request_hash, status, body, attempt, log_start, unsettled != 0,
                            (julianday('now') - julianday(created_at)) * 86400.0
                     FROM idempotency_keys WHERE caller = ? AND key = ?",
                )
                .bind(&self.caller)
                .bind(&self.key)
                .fetch_optional(pool)
                .await?
            }
        };
        Ok(row.map(
            |(request_hash, status, body, attempt, log_start, unsettled, age_seconds)| StoredKey {
                request_hash,
                status,
                body,
                attempt,
                log_start,
                unsettled,
                age_seconds,
            },
        ))
    }

    /// Makes this request the key's next attempt, if `previous` is still the key's attempt
    /// (of two retries at once, one wins; the other is told the request is running).
    async fn take_over(&self, previous: &str, attempt: &str) -> Result<bool, sqlx::Error> {
        let updated = match &self.store {
            Store::Postgres(pool) => sqlx::query(
                "UPDATE idempotency_keys SET attempt = $4, unsettled = false,
                        log_start = (SELECT COALESCE(MAX(position), 0) FROM events),
                        status = NULL, body = NULL, created_at = now()
                 WHERE caller = $1 AND key = $2 AND attempt = $3 AND status IS NULL",
            )
            .bind(&self.caller)
            .bind(&self.key)
            .bind(previous)
            .bind(attempt)
            .execute(pool)
            .await?
            .rows_affected(),
            Store::Sqlite(pool) => sqlx::query(
                "UPDATE idempotency_keys SET attempt = ?4, unsettled = 0,
                        log_start = (SELECT COALESCE(MAX(position), 0) FROM events
                                      WHERE position > 0),
                        status = NULL, body = NULL,
                        created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE caller = ?1 AND key = ?2 AND attempt = ?3 AND status IS NULL",
            )
            .bind(&self.caller)
            .bind(&self.key)
            .bind(previous)
            .bind(attempt)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(updated == 1)
    }

    /// Records the attempt's answer (what may be kept of it).
    async fn settle(&self, attempt: &str, status: u16, body: &[u8]) -> Result<(), sqlx::Error> {
        crate::on_pool!(&self.store, pool => sqlx::query(
            "UPDATE idempotency_keys SET status = $4, body = $5, unsettled = false
             WHERE caller = $1 AND key = $2 AND attempt = $3",
        )
        .bind(&self.caller)
        .bind(&self.key)
        .bind(attempt)
        .bind(i32::from(status))
        .bind(body)
        .execute(pool)
        .await
        .map(|_| ()))
    }

    /// Marks the attempt as ended without an answer: it may or may not have written.
    async fn leave_unsettled(&self, attempt: &str) -> Result<(), sqlx::Error> {
        crate::on_pool!(&self.store, pool => sqlx::query(
            "UPDATE idempotency_keys SET unsettled = true
             WHERE caller = $1 AND key = $2 AND attempt = $3",
        )
        .bind(&self.caller)
        .bind(&self.key)
        .bind(attempt)
        .execute(pool)
        .await
        .map(|_| ()))
    }
}

/// `created_at` as SQLite stores it.
fn sqlite_instant(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Deletes every key older than the retention.
async fn sweep(store: &Store, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, sqlx::Error> {
    Ok(match store {
        Store::Postgres(pool) => sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await?
            .rows_affected(),
        Store::Sqlite(pool) => sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
            .bind(sqlite_instant(cutoff))
            .execute(pool)
            .await?
            .rows_affected(),
    })
}

/// One event an attempt wrote.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WrittenEvent {
    /// The stream's type.
    pub aggregate_type: String,
    /// The stream's id.
    pub aggregate_id: String,
    /// Its place in the global log.
    pub position: i64,
}

/// The events attempt `attempt` wrote after `log_start`.
async fn written_by(
    store: &Store,
    attempt: &str,
    log_start: i64,
) -> Result<Vec<WrittenEvent>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = match store {
        Store::Postgres(pool) => {
            sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, position FROM events
                 WHERE position > $1 AND metadata->>'idempotency_attempt' = $2
                 ORDER BY position",
            )
            .bind(log_start)
            .bind(attempt)
            .fetch_all(pool)
            .await?
        }
        Store::Sqlite(pool) => {
            sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, position FROM events
                 WHERE position > 0 AND position > ?
                   AND json_extract(metadata, '$.idempotency_attempt') = ?
                 ORDER BY position",
            )
            .bind(log_start)
            .bind(attempt)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(aggregate_type, aggregate_id, position)| WrittenEvent {
            aggregate_type,
            aggregate_id,
            position,
        })
        .collect())
}

/// The answer to a retry whose first attempt committed but lost its answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecoveredAnswer {
    /// Always `committed`.
    pub outcome: String,
    /// What happened, in words.
    pub detail: String,
    /// The events the first attempt wrote.
    pub events: Vec<WrittenEvent>,
    /// The global position of the last of them.
    pub position: i64,
}

/// What may be kept of an answer: secrets left out, personal data sealed under its user's key.
async fn keepable(vault: &Vault, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        // Not JSON: nothing the service answers, but nothing to keep either.
        return Ok(Vec::new());
    };
    seal_object_tree(vault, &mut value).await?;
    Ok(serde_json::to_vec(&value).expect("a JSON value serialises"))
}

/// Walks the answer, taking secrets out and sealing personal fields (boxed: it recurses).
fn seal_object_tree<'a>(
    vault: &'a Vault,
    value: &'a mut Value,
) -> futures::future::BoxFuture<'a, Result<(), ApiError>> {
    Box::pin(async move {
        match value {
            Value::Array(items) => {
                for item in items {
                    seal_object_tree(vault, item).await?;
                }
            }
            Value::Object(object) => {
                withhold_secrets(object);
                seal_personal_fields(vault, object).await?;
                for (_, child) in object.iter_mut() {
                    seal_object_tree(vault, child).await?;
                }
            }
            _ => {}
        }
        Ok(())
    })
}

fn withhold_secrets(object: &mut Map<String, Value>) {
    for field in SECRET_FIELDS {
        if object.get(field).is_some_and(|value| !value.is_null()) {
            object.insert(field.to_owned(), Value::Null);
            object.insert(
                SECRET_WITHHELD.to_owned(),
                Value::String(format!(
                    "the {field} was shown once, in the first answer; it is never stored"
                )),
            );
        }
    }
}

async fn seal_personal_fields(
    vault: &Vault,
    object: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let mut personal = Map::new();
    for field in PERSONAL_FIELDS {
        if let Some(value) = object.remove(field) {
            personal.insert(field.to_owned(), value);
        }
    }
    if personal.is_empty() {
        return Ok(());
    }
    // The object that names a person is that user's: its id is the key the data goes with.
    let owner = object
        .get("id")
        .or_else(|| object.get("user_id"))
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok());
    for field in personal.keys() {
        object.insert(field.clone(), Value::Null);
    }
    let Some(user_id) = owner else {
        // No owner to seal under: left out.
        return Ok(());
    };
    let plaintext = serde_json::to_vec(&personal).expect("a JSON map serialises");
    match vault.seal_bytes(user_id, &plaintext).await {
        Ok(sealed) => {
            object.insert(
                SEALED_FIELD.to_owned(),
                serde_json::to_value(sealed).expect("sealed details serialise"),
            );
            Ok(())
        }
        // The user was purged meanwhile: the data is gone for good, as it should be.
        Err(crate::vault::VaultError::Shredded(_)) => Ok(()),
        Err(crate::vault::VaultError::Store(error)) => Err(error.into()),
    }
}

/// A stored answer as it is replayed: personal fields unsealed while their key lives.
async fn replayable(vault: &Vault, stored: &[u8]) -> Result<Vec<u8>, ApiError> {
    let Ok(mut value) = serde_json::from_slice::<Value>(stored) else {
        return Ok(stored.to_vec());
    };
    unseal_object_tree(vault, &mut value).await?;
    Ok(serde_json::to_vec(&value).expect("a JSON value serialises"))
}

fn unseal_object_tree<'a>(
    vault: &'a Vault,
    value: &'a mut Value,
) -> futures::future::BoxFuture<'a, Result<(), ApiError>> {
    Box::pin(async move {
        match value {
            Value::Array(items) => {
                for item in items {
                    unseal_object_tree(vault, item).await?;
                }
            }
            Value::Object(object) => {
                if let Some(sealed) = object.remove(SEALED_FIELD) {
                    let sealed: SealedDetails =
                        serde_json::from_value(sealed).map_err(|error| {
                            ApiError::internal(format!(
                                "a stored answer's sealed data is unreadable: {error}"
                            ))
                        })?;
                    let opened =
                        vault
                            .unseal_bytes(&sealed)
                            .await
                            .map_err(|error| match error {
                                crate::vault::VaultError::Store(error) => ApiError::from(error),
                                other => ApiError::internal(other),
                            })?;
                    if let Some(Ok(Value::Object(fields))) =
                        opened.map(|bytes| serde_json::from_slice::<Value>(&bytes))
                    {
                        object.extend(fields);
                    }
                }
                for (_, child) in object.iter_mut() {
                    unseal_object_tree(vault, child).await?;
                }
            }
            _ => {}
        }
        Ok(())
    })
}

fn replay(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    response.headers_mut().insert(
        "idempotent-replayed",
        header::HeaderValue::from_static("true"),
    );
    response
}

/// The middleware (inside authentication: keys belong to the token that sent them).
pub async fn idempotent(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let (Some(key), true) = (key, request.method() == Method::POST) else {
        return next.run(request).await;
    };
    if key.is_empty() || key.len() > 255 {
        return ApiError::Invalid {
            field: "Idempotency-Key".into(),
            reason: "must be 1-255 characters".into(),
        }
        .into_response();
    }
    let Some(principal) = request.extensions().get::<Principal>().cloned() else {
        return ApiError::Unauthorized(super::problem::Unauthorized::Missing).into_response();
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::TooLarge.into_response();
    };
    let keys = Keys {
        store: state.store.clone(),
        caller: principal.token_id.to_string(),
        key,
    };
    let request_hash = state
        .vault
        .keyed_digest(&[parts.uri.path().as_bytes(), &bytes]);
    if state.idempotency.sweep_due() {
        let store = state.store.clone();
        let cutoff = state.idempotency.cutoff();
        tokio::spawn(async move {
            match sweep(&store, cutoff).await {
                Ok(swept) => tracing::debug!(swept, "expired idempotency keys deleted"),
                Err(error) => tracing::warn!(%error, "expired idempotency keys not deleted"),
            }
        });
    }
    let (attempt, running) = match claim(&state, &keys, &request_hash).await {
        Err(error) => return error.into_response(),
        Ok(Claim::Replay(status, body)) => {
            return match replayable(&state.vault, &body).await {
                Ok(body) => replay(status, body),
                Err(error) => error.into_response(),
            }
        }
        Ok(Claim::Mismatch) => {
            return ApiError::Invalid {
                field: "Idempotency-Key".into(),
                reason: "this key was already used with a different request".into(),
            }
            .into_response()
        }
        Ok(Claim::InProgress) => return ApiError::InProgress.into_response(),
        Ok(Claim::Unsettled(stored)) => match recover(&state, &keys, stored).await {
            Ok(Recovery::Answered(response)) => return response,
            Ok(Recovery::RunAgain(attempt, running)) => (attempt, running),
            Err(error) => return error.into_response(),
        },
        Ok(Claim::Fresh(attempt, running)) => (attempt, running),
    };
    let mut context = REQUEST
        .try_with(Clone::clone)
        .expect("the request context is set by the outer layer");
    context.idempotency_attempt = Some(attempt.clone());
    // The attempt runs and settles in a task of its own: a client that hangs up (or times out
    // and retries) must not end it half way, or the retry would find it gone and run the
    // command a second time.
    let request = Request::from_parts(parts, Body::from(bytes));
    let attempt_run = REQUEST.scope(context, async move {
        let response = next.run(request).await;
        let answer = settle(&state, &keys, &attempt, response).await;
        drop(running);
        answer
    });
    match tokio::spawn(attempt_run).await {
        Ok(response) => response,
        Err(failure) => {
            // The attempt panicked: it stays unsettled, so a retry looks before it runs.
            super::REQUEST_PANICS.fetch_add(1, Ordering::Relaxed);
            ApiError::internal(format!("an idempotent request failed: {failure}")).into_response()
        }
    }
}

/// Records what may be kept of an attempt's answer, and answers it.
async fn settle(state: &AppState, keys: &Keys, attempt: &str, response: Response) -> Response {
    if response.status().is_server_error() {
        // The command may have committed before the failure: a retry looks before it runs.
        if let Err(error) = keys.leave_unsettled(attempt).await {
            tracing::warn!(%error, "an idempotency key could not be marked unsettled; this instance knows the attempt has ended");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, MAX_RESPONSE_BYTES).await else {
        let _ = keys.leave_unsettled(attempt).await;
        return ApiError::internal("response too large to keep for Idempotency-Key")
            .into_response();
    };
    let kept = match keepable(&state.vault, &body).await {
        Ok(kept) => kept,
        Err(error) => {
            let _ = keys.leave_unsettled(attempt).await;
            return error.into_response();
        }
    };
    if let Err(error) = keys.settle(attempt, parts.status.as_u16(), &kept).await {
        // The command ran and its answer stands; a retry will find its events.
        tracing::warn!(%error, "an idempotent answer could not be recorded");
        let _ = keys.leave_unsettled(attempt).await;
    }
    Response::from_parts(parts, Body::from(body))
}

async fn claim(state: &AppState, keys: &Keys, request_hash: &str) -> Result<Claim, ApiError> {
    let attempt = state.idempotency.new_attempt();
    // Running from before its row exists: no retry can take it for one that has ended.
    let running = state.idempotency.run(&attempt);
    if keys
        .claim_fresh(request_hash, &attempt, state.idempotency.cutoff())
        .await?
    {
        return Ok(Claim::Fresh(attempt, running));
    }
    drop(running);
    Ok(match keys.read().await? {
        Some(stored) if stored.request_hash != request_hash => Claim::Mismatch,
        Some(StoredKey {
            status: Some(status),
            body,
            ..
        }) => Claim::Replay(status as u16, body.unwrap_or_default()),
        Some(stored)
            if stored.unsettled
                || state
                    .idempotency
                    .has_ended(&stored.attempt, stored.age_seconds) =>
        {
            Claim::Unsettled(stored)
        }
        Some(_) => Claim::InProgress,
        // Expired and deleted between our insert and read: the client retries.
        None => Claim::InProgress,
    })
}

enum Recovery {
    /// The earlier attempt committed: this is its answer.
    Answered(Response),
    /// It wrote nothing: this request runs as the new attempt (running here already).
    RunAgain(String, Running),
}

/// After an attempt without an answer: answer what it wrote, or run again if it wrote nothing.
async fn recover(state: &AppState, keys: &Keys, stored: StoredKey) -> Result<Recovery, ApiError> {
    let written = written_by(&state.store, &stored.attempt, stored.log_start).await?;
    if let Some(last) = written.last() {
        let answer = RecoveredAnswer {
            outcome: "committed".into(),
            detail: "the first request with this key committed, but its answer was lost; these are the events it wrote (read the resources for their state)".into(),
            position: last.position,
            events: written,
        };
        let body = serde_json::to_vec(&answer).expect("the answer serialises");
        keys.settle(&stored.attempt, StatusCode::OK.as_u16(), &body)
            .await?;
        return Ok(Recovery::Answered(replay(StatusCode::OK.as_u16(), body)));
    }
    let attempt = state.idempotency.new_attempt();
    let running = state.idempotency.run(&attempt);
    if keys.take_over(&stored.attempt, &attempt).await? {
        Ok(Recovery::RunAgain(attempt, running))
    } else {
        Err(ApiError::InProgress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_of_this_instance_has_ended_exactly_when_it_no_longer_runs() {
        let retention = Arc::new(Retention::new(chrono::Duration::hours(24)));
        let attempt = retention.new_attempt();
        let running = retention.run(&attempt);
        // Running, however old its row: a retry must wait, not run the command again.
        assert!(!retention.has_ended(&attempt, 0.0));
        assert!(!retention.has_ended(&attempt, 3_600.0));
        drop(running);
        assert!(retention.has_ended(&attempt, 0.0));
    }

    #[test]
    fn another_instance_s_attempt_has_ended_only_once_it_ran_implausibly_long() {
        let here = Retention::new(chrono::Duration::hours(24));
        let elsewhere = Retention::new(chrono::Duration::hours(24)).new_attempt();
        assert!(!here.has_ended(&elsewhere, 1.0));
        assert!(here.has_ended(&elsewhere, RUNNING_LIMIT.as_secs_f64() + 1.0));
    }
}
