//! `Idempotency-Key` on POST: the same key and body return the first response and write nothing
//! new; the same key with another body is refused (422); a repeat while the first is still
//! running is told to wait (409).

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::problem::ApiError;
use super::{AppState, MAX_BODY_BYTES};
use crate::store::Store;

/// Responses are kept as long as this (they are small: command answers).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

fn hex_digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

enum Claim {
    /// This request runs; its response is to be recorded.
    Fresh,
    /// A completed first response to return.
    Replay(u16, Vec<u8>),
    /// The key was used with another request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// A stored key: the request's hash, and the first response once it completed.
type StoredKey = (String, Option<i32>, Option<Vec<u8>>);

async fn claim(
    store: &Store,
    caller: &str,
    key: &str,
    request_hash: &str,
) -> Result<Claim, sqlx::Error> {
    let (inserted, row): (u64, Option<StoredKey>) = match store {
        Store::Postgres(pool) => {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (caller, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(caller)
            .bind(key)
            .bind(request_hash)
            .execute(pool)
            .await?
            .rows_affected();
            let row = sqlx::query_as(
                "SELECT request_hash, status, body FROM idempotency_keys WHERE caller = $1 AND key = $2",
            )
            .bind(caller)
            .bind(key)
            .fetch_optional(pool)
            .await?;
            (inserted, row)
        }
        Store::Sqlite(pool) => {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (caller, key, request_hash) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(caller)
            .bind(key)
            .bind(request_hash)
            .execute(pool)
            .await?
            .rows_affected();
            let row = sqlx::query_as(
                "SELECT request_hash, status, body FROM idempotency_keys WHERE caller = ? AND key = ?",
            )
            .bind(caller)
            .bind(key)
            .fetch_optional(pool)
            .await?;
            (inserted, row)
        }
    };
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    Ok(match row {
        Some((hash, _, _)) if hash != request_hash => Claim::Mismatch,
        Some((_, Some(status), body)) => Claim::Replay(status as u16, body.unwrap_or_default()),
        Some((_, None, _)) => Claim::InProgress,
        // Released between our insert and read: treat as running, the client retries.
        None => Claim::InProgress,
    })
}

async fn record(
    store: &Store,
    caller: &str,
    key: &str,
    status: u16,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    match store {
        Store::Postgres(pool) => {
            sqlx::query(
                "UPDATE idempotency_keys SET status = $3, body = $4 WHERE caller = $1 AND key = $2",
            )
            .bind(caller)
            .bind(key)
            .bind(i32::from(status))
            .bind(body)
            .execute(pool)
            .await?;
        }
        Store::Sqlite(pool) => {
            sqlx::query(
                "UPDATE idempotency_keys SET status = ?3, body = ?4 WHERE caller = ?1 AND key = ?2",
            )
            .bind(caller)
            .bind(key)
            .bind(i32::from(status))
            .bind(body)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

async fn release(store: &Store, caller: &str, key: &str) -> Result<(), sqlx::Error> {
    match store {
        Store::Postgres(pool) => {
            sqlx::query("DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2")
                .bind(caller)
                .bind(key)
                .execute(pool)
                .await?;
        }
        Store::Sqlite(pool) => {
            sqlx::query("DELETE FROM idempotency_keys WHERE caller = ? AND key = ?")
                .bind(caller)
                .bind(key)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
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

/// The middleware.
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
    // Keys are per caller: the same key from two tokens is two requests.
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes().to_vec())
        .unwrap_or_default();
    let caller = hex_digest(&[&authorization]);
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::TooLarge.into_response();
    };
    let request_hash = hex_digest(&[parts.uri.path().as_bytes(), &bytes]);
    match claim(&state.store, &caller, &key, &request_hash).await {
        Err(error) => return ApiError::from(error).into_response(),
        Ok(Claim::Replay(status, body)) => return replay(status, body),
        Ok(Claim::Mismatch) => {
            return ApiError::Invalid {
                field: "Idempotency-Key".into(),
                reason: "this key was already used with a different request".into(),
            }
            .into_response()
        }
        Ok(Claim::InProgress) => return ApiError::InProgress.into_response(),
        Ok(Claim::Fresh) => {}
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if status.is_server_error() {
        // Nothing to replay: let a retry run again.
        let _ = release(&state.store, &caller, &key).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, MAX_RESPONSE_BYTES).await else {
        let _ = release(&state.store, &caller, &key).await;
        return ApiError::Internal("response too large to keep for Idempotency-Key".into())
            .into_response();
    };
    if let Err(error) = record(&state.store, &caller, &key, status.as_u16(), &body).await {
        return ApiError::from(error).into_response();
    }
    Response::from_parts(parts, Body::from(body))
}
