//! Errors as RFC 9457 problem details with a machine `code`, mapped in this one place.

use aggregates::{DomainError, ErrorCategory};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::error;

use crate::write::ledger::LedgerError;
use crate::write::Cause;

/// An error and every error beneath it, `: `-separated: what the logs say of a failure.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let next = inner.to_string();
        // Errors that print their source already (`…: {0}`) are not repeated.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = inner.source();
    }
    text
}

impl ApiError {
    /// An internal error from any error or message; logged with its causes, never shown.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::Internal(crate::write::error_cause(error))
    }
}

/// Why a request was not authenticated: the two get different words, so that a client with a
/// mistyped or revoked token is not told to send one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token the service does not know.
    Unknown,
}

/// An error a request ends with.
#[derive(Debug)]
pub enum ApiError {
    /// No bearer token, or one the service does not know.
    Unauthorized(Unauthorized),
    /// The token's role or scope does not allow this.
    Forbidden,
    /// Unknown id (or one the caller may not know exists), or a path no route serves.
    NotFound(String),
    /// The path is a route, but not for this method.
    MethodNotAllowed(String),
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
    /// The token holds its most live feeds already (the most it may hold).
    TooManyStreams(u32),
    /// The service holds its most live feeds already.
    StreamsUnavailable,
    /// The store cannot be reached now: 503 with `Retry-After`, quickly, never a 500.
    Unavailable(Cause),
    /// Something broke inside; logged with its chain of causes, never shown.
    Internal(Cause),
}

impl From<crate::access::Denied> for ApiError {
    fn from(_: crate::access::Denied) -> Self {
        Self::Forbidden
    }
}

impl From<crate::vault::VaultError> for ApiError {
    fn from(error: crate::vault::VaultError) -> Self {
        match error {
            crate::vault::VaultError::Store(error) => error.into(),
            other => Self::internal(other),
        }
    }
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
            LedgerError::Unavailable(_) | LedgerError::Store(_) => {
                let unavailable = matches!(error, LedgerError::Unavailable(_));
                let cause: Cause = std::sync::Arc::new(error);
                if unavailable {
                    Self::Unavailable(cause)
                } else {
                    Self::Internal(cause)
                }
            }
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
        if crate::store::is_unreachable(&error) {
            Self::Unavailable(std::sync::Arc::new(error))
        } else {
            Self::Internal(std::sync::Arc::new(error))
        }
    }
}

fn with_retry_after(mut response: Response, seconds: u32) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    response
}

/// What a 503 asks the client to wait before retrying.
pub const UNAVAILABLE_RETRY_AFTER_SECONDS: u32 = 2;

fn problem(status: StatusCode, code: &str, title: &str, detail: &str) -> Response {
    problem_with_field(status, code, title, detail, None)
}

/// An RFC 9457 problem document, as every error answers.
#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`https://seatledger.dev/problems/<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// The machine-readable kind: the rule that refused a command, or the kind of error.
    pub code: String,
    /// What happened, for people.
    pub detail: String,
    /// The request field (or parameter, or header) at fault, for invalid input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

fn problem_with_field(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: &str,
    field: Option<&str>,
) -> Response {
    let body = Problem {
        kind: format!("https://seatledger.dev/problems/{code}"),
        title: title.to_owned(),
        status: status.as_u16(),
        code: code.to_owned(),
        detail: detail.to_owned(),
        field: field.map(str::to_owned),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::to_string(&body).expect("a problem serialises"),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthorized(why) => problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                match why {
                    Unauthorized::Missing => "send Authorization: Bearer <token>",
                    Unauthorized::Unknown => {
                        "the bearer token is not known to this service (mistyped, or issued by another store)"
                    }
                },
            ),
            Self::Forbidden => problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "the token's role or scope does not allow this",
            ),
            Self::NotFound(what) => problem(StatusCode::NOT_FOUND, "not_found", "Not found", &what),
            Self::MethodNotAllowed(what) => problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                &what,
            ),
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
            Self::TooManyStreams(max) => with_retry_after(
                problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    "Too many live feeds",
                    &format!("this token holds {max} live feeds already, its most; close one first"),
                ),
                5,
            ),
            Self::StreamsUnavailable => with_retry_after(
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "streams_unavailable",
                    "No live feed free",
                    "the service holds its most live feeds; retry shortly, or page with GET /v1/events",
                ),
                10,
            ),
            Self::Unavailable(cause) => {
                tracing::warn!(error = %chain(&*cause), "store unreachable");
                let mut response = problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "Store unavailable",
                    "the service cannot reach its store just now; retry shortly (an Idempotency-Key makes the retry safe)",
                );
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECONDS),
                );
                response
            }
            Self::Internal(cause) => {
                error!(error = %chain(&*cause), "internal error");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_is_logged_with_every_cause_once() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let failure = LedgerError::Store(std::sync::Arc::new(refused));
        assert_eq!(chain(&failure), "event store failure: connection refused");
        // A cause already in its error's own words is not repeated.
        let store = crate::log::ConsumerError::Store(sqlx::Error::PoolTimedOut);
        assert_eq!(
            chain(&store),
            format!("store failure: {}", sqlx::Error::PoolTimedOut)
        );
    }
}
