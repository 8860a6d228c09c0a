//! Errors as RFC 9457 problem details with a machine `code`, mapped in this one place.

use aggregates::{DomainError, ErrorCategory};
use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::error;

use crate::ledger::LedgerError;

/// An error a request ends with.
#[derive(Debug)]
pub enum ApiError {
    /// No or an unknown bearer token.
    Unauthorized,
    /// The token's role or scope does not allow this.
    Forbidden,
    /// Unknown id (or one the caller may not know exists).
    NotFound(String),
    /// The body is not JSON at all.
    Malformed(String),
    /// A value is invalid: names the field.
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A rule of the domain refused the command.
    Domain(DomainError),
    /// Concurrent writers kept winning.
    Conflict,
    /// A request with the same Idempotency-Key is still running.
    InProgress,
    /// The body is larger than any command needs.
    TooLarge,
    /// `?min_position=` was not reached within the bounded wait.
    NotCaughtUp {
        /// The position asked for.
        wanted: i64,
        /// The position reached.
        reached: i64,
    },
    /// Something broke inside; logged, never shown.
    Internal(String),
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        Self::Domain(error)
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Domain(domain) => Self::Domain(domain),
            LedgerError::Conflict => Self::Conflict,
            LedgerError::Store(message) => Self::Internal(message),
        }
    }
}

impl From<aggregates::values::ParseError> for ApiError {
    fn from(error: aggregates::values::ParseError) -> Self {
        Self::Invalid {
            field: error.field.to_owned(),
            reason: error.reason,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(error) => Self::Invalid {
                field: "body".to_owned(),
                reason: error.body_text(),
            },
            other => Self::Malformed(other.body_text()),
        }
    }
}

fn problem(status: StatusCode, code: &str, title: &str, detail: &str) -> Response {
    problem_with_field(status, code, title, detail, None)
}

fn problem_with_field(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: &str,
    field: Option<&str>,
) -> Response {
    let mut body = json!({
        "type": format!("https://seatledger.dev/problems/{code}"),
        "title": title,
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
    });
    if let Some(field) = field {
        body["field"] = json!(field);
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthorized => problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "send Authorization: Bearer <token>",
            ),
            Self::Forbidden => problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "the token's role or scope does not allow this",
            ),
            Self::NotFound(what) => problem(StatusCode::NOT_FOUND, "not_found", "Not found", &what),
            Self::Malformed(detail) => problem(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "Malformed request",
                &detail,
            ),
            Self::Invalid { field, reason } => problem_with_field(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_value",
                "Invalid value",
                &format!("{field}: {reason}"),
                Some(&field),
            ),
            Self::Domain(error) => {
                let status = match error.category() {
                    ErrorCategory::NotFound => StatusCode::NOT_FOUND,
                    ErrorCategory::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCategory::RuleViolation => StatusCode::CONFLICT,
                };
                problem(status, error.code(), error.title(), &error.to_string())
            }
            Self::Conflict => problem(
                StatusCode::CONFLICT,
                "concurrent_modification",
                "Concurrent modification",
                "the resource kept changing while the command ran; retry it",
            ),
            Self::NotCaughtUp { wanted, reached } => problem(
                StatusCode::GATEWAY_TIMEOUT,
                "position_not_reached",
                "Position not reached",
                &format!("asked for position {wanted}, the log has reached {reached}; retry later"),
            ),
            Self::TooLarge => problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                &format!(
                    "request bodies are limited to {} bytes",
                    super::MAX_BODY_BYTES
                ),
            ),
            Self::InProgress => problem(
                StatusCode::CONFLICT,
                "idempotent_request_in_progress",
                "Request in progress",
                "a request with this Idempotency-Key is still running; retry shortly",
            ),
            Self::Internal(message) => {
                error!(%message, "internal error");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Internal error",
                    "the service could not complete the request; it has been logged",
                )
            }
        }
    }
}
