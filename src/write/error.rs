//! The write side's one error type, and the metadata every event carries.

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::DomainError;
use cqrs_es::AggregateError;
use thiserror::Error;

/// The cause of a failure, kept for the logs (shared: one batch's failure answers every
/// command in it).
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A cause from any error or message.
pub fn cause(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Cause {
    Arc::from(error.into())
}

/// Why a command did not happen.
#[derive(Debug, Clone, Error)]
pub enum LedgerError {
    /// A rule of the domain refused it.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Other writers kept winning the race for the same aggregate.
    #[error("the aggregate kept changing under the command; try again")]
    Conflict,
    /// The store could not be reached (or is not taking work now): the command may be
    /// retried once it is back.
    #[error("event store unreachable")]
    Unavailable(#[source] Cause),
    /// The store failed, or what it holds could not be read.
    #[error("event store failure")]
    Store(#[source] Cause),
}

impl LedgerError {
    /// A store error, told apart by whether the store could be reached at all.
    pub fn from_store(error: sqlx::Error) -> Self {
        if crate::store::is_unreachable(&error) {
            Self::Unavailable(Arc::new(error))
        } else {
            Self::Store(Arc::new(error))
        }
    }

    /// A failure of the store, or of what it holds, described by `error`.
    pub fn store(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::Store(cause(error))
    }
}

impl From<AggregateError<DomainError>> for LedgerError {
    fn from(error: AggregateError<DomainError>) -> Self {
        match error {
            AggregateError::UserError(domain) => Self::Domain(domain),
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::DatabaseConnectionError(error) => Self::Unavailable(Arc::from(error)),
            AggregateError::UnexpectedError(error) if crate::store::is_unreachable_dyn(&*error) => {
                Self::Unavailable(Arc::from(error))
            }
            other => Self::store(other),
        }
    }
}

/// Who and why, recorded in every event's metadata.
pub type Metadata = HashMap<String, String>;
