//! seatledger's read models. Each projection is a pure fold of the global log into rows
//! ([`rows::RowSet`]): the service feeds it batches of events and stores the rows it changes in
//! the transaction that moves its checkpoint; `seatledger replay` and as-of queries feed it the
//! same events over rows held in memory and get the same rows.

#![deny(missing_docs)]

pub mod billing;
pub mod event;
pub mod licenses;
pub mod rows;
pub mod subscriptions;
pub mod timers;
pub mod users;

use thiserror::Error;

pub use event::{DomainEvent, LoggedEvent};
pub use rows::{Row, RowSet};

/// Why a projection could not fold an event.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProjectionError {
    /// A stored event does not decode into the domain's types.
    #[error("the event at position {position} cannot be read: {reason}")]
    Undecodable {
        /// Where it is.
        position: i64,
        /// Why.
        reason: String,
    },
    /// A stored document does not decode.
    #[error("the read-model row '{key}' cannot be read: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The projection read a row it did not name in [`Projection::keys`] (a bug).
    #[error("the read-model row '{0}' was read without being prefetched")]
    NotPrefetched(String),
}

/// A read model folded from the log.
pub trait Projection: Send + Sync {
    /// Its name: the checkpoint's and the rows' owner.
    fn name(&self) -> &'static str;

    /// The rows `event` will read, so the service can fetch them for a whole batch at once.
    fn keys(&self, event: &LoggedEvent) -> Vec<String>;

    /// Folds `event` into `rows`.
    fn apply(&self, event: &LoggedEvent, rows: &mut RowSet) -> Result<(), ProjectionError>;
}

/// Every projection the service keeps.
pub fn all() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(licenses::Licenses),
        std::sync::Arc::new(users::Users),
        std::sync::Arc::new(subscriptions::Subscriptions),
        std::sync::Arc::new(billing::Billing),
        std::sync::Arc::new(timers::Timers),
    ]
}

/// The names of [`all`], for checkpoints and read-your-writes.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|projection| projection.name()).collect()
}

/// Folds `events` into `rows` (held in memory): replay and as-of.
pub fn fold<'a>(
    projection: &dyn Projection,
    events: impl IntoIterator<Item = &'a LoggedEvent>,
    rows: &mut RowSet,
) -> Result<(), ProjectionError> {
    for event in events {
        projection.apply(event, rows)?;
    }
    Ok(())
}

/// Ids and keys as text without the formatting machinery: a replay builds several per event.
pub(crate) mod text {
    use uuid::Uuid;

    /// Appends `id` as `Uuid`'s `Display` writes it (hyphenated, lower case).
    pub(crate) fn push_uuid(out: &mut String, id: Uuid) {
        let mut buffer = [0_u8; uuid::fmt::Hyphenated::LENGTH];
        out.push_str(id.hyphenated().encode_lower(&mut buffer));
    }

    /// `id.to_string()`.
    pub(crate) fn uuid(id: Uuid) -> String {
        let mut out = String::with_capacity(uuid::fmt::Hyphenated::LENGTH);
        push_uuid(&mut out, id);
        out
    }

    /// `format!("{prefix}/{id}")`, then `/{tail}` for each of `tail`.
    pub(crate) fn key(prefix: &str, id: Uuid, tail: &[&dyn Part]) -> String {
        let mut out = String::with_capacity(prefix.len() + 1 + 36 + tail.len() * 40);
        out.push_str(prefix);
        out.push('/');
        push_uuid(&mut out, id);
        for part in tail {
            out.push('/');
            part.push_to(&mut out);
        }
        out
    }

    /// What follows a key's first id.
    pub(crate) trait Part {
        fn push_to(&self, out: &mut String);
    }

    impl Part for Uuid {
        fn push_to(&self, out: &mut String) {
            push_uuid(out, *self);
        }
    }

    impl Part for &str {
        fn push_to(&self, out: &mut String) {
            out.push_str(self);
        }
    }
}

/// Instants in documents and sort keys: RFC 3339 UTC with microseconds, so that text order is
/// time order.
pub fn instant_key(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
