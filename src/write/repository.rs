//! cqrs-es's event repositories (postgres-es, sqlite-es) behind one type, chosen by the store:
//! the write side reads an aggregate's newer events through it without being generic over
//! the backend.

use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use sqlite_es::SqliteEventRepository;

use crate::store::Store;

/// The event repository of the store's backend.
pub(crate) enum Repository {
    /// postgres-es's.
    Postgres(PostgresEventRepository),
    /// sqlite-es's.
    Sqlite(SqliteEventRepository),
}

impl Repository {
    /// The repository over `store`'s pool.
    pub(crate) fn of(store: &Store) -> Self {
        match store {
            Store::Postgres(pool) => Self::Postgres(PostgresEventRepository::new(pool.clone())),
            Store::Sqlite(pool) => Self::Sqlite(SqliteEventRepository::new(pool.clone())),
        }
    }

    /// The events of `A` `aggregate_id` after `sequence`, in order.
    pub(crate) async fn events_after<A: Aggregate>(
        &self,
        aggregate_id: &str,
        sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Postgres(repository) => {
                repository
                    .get_last_events::<A>(aggregate_id, sequence)
                    .await
            }
            Self::Sqlite(repository) => {
                repository
                    .get_last_events::<A>(aggregate_id, sequence)
                    .await
            }
        }
    }
}
