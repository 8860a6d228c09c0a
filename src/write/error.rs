//! The write side's one error type, and the metadata every event carries.

use std::collections::HashMap;

use aggregates::DomainError;
use cqrs_es::AggregateError;
use thiserror::Error;

/// Why a command did not happen.
#[derive(Debug, Error)]
pub enum LedgerError {
    /// A rule of the domain refused it.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Other writers kept winning the race for the same aggregate.
    #[error("the aggregate kept changing under the command; try again")]
    Conflict,
    /// The store could not be reached (or is not taking work now): the command may be
    /// retried once it is back.
    #[error("event store unreachable: {0}")]
    Unavailable(String),
    /// The store failed.
    #[error("event store failure: {0}")]
    Store(String),
}

impl LedgerError {
    /// A store error, told apart by whether the store could be reached at all.
    pub fn from_store(error: sqlx::Error) -> Self {
        if crate::store::is_unreachable(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Store(error.to_string())
        }
    }
}

impl From<AggregateError<DomainError>> for LedgerError {
    fn from(error: AggregateError<DomainError>) -> Self {
        match error {
            AggregateError::UserError(domain) => Self::Domain(domain),
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::DatabaseConnectionError(error) => Self::Unavailable(error.to_string()),
            AggregateError::UnexpectedError(error) if crate::store::is_unreachable_dyn(&*error) => {
                Self::Unavailable(error.to_string())
            }
            other => Self::Store(other.to_string()),
        }
    }
}

/// Who and why, recorded in every event's metadata.
pub type Metadata = HashMap<String, String>;
