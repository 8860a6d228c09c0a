//! The seatledger service: the event store on PostgreSQL or SQLite, the write side that runs
//! commands and their process managers, and (to come) the HTTP API and log consumers.

pub mod config;
pub mod ledger;
pub mod store;
pub mod vault;

use postgres_es::PostgresEventRepository;
use sqlite_es::SqliteEventRepository;

use crate::ledger::Ledger;
use crate::store::Store;

/// A ledger over whichever backend the store is.
pub enum AnyLedger {
    /// Over PostgreSQL.
    Postgres(Ledger<PostgresEventRepository>),
    /// Over SQLite.
    Sqlite(Ledger<SqliteEventRepository>),
}

impl AnyLedger {
    /// Builds the ledger for `store`.
    pub fn new(store: Store, rules: aggregates::CommercialRules) -> Self {
        match &store {
            Store::Postgres(pool) => {
                let pool = pool.clone();
                Self::Postgres(Ledger::new(store, rules, move || {
                    PostgresEventRepository::new(pool.clone())
                }))
            }
            Store::Sqlite(pool) => {
                let pool = pool.clone();
                Self::Sqlite(Ledger::new(store, rules, move || {
                    SqliteEventRepository::new(pool.clone())
                }))
            }
        }
    }
}

/// Runs `$body` with `$ledger` bound to the concrete ledger, whichever backend it is.
#[macro_export]
macro_rules! with_ledger {
    ($any:expr, $ledger:ident => $body:expr) => {
        match $any {
            $crate::AnyLedger::Postgres($ledger) => $body,
            $crate::AnyLedger::Sqlite($ledger) => $body,
        }
    };
}
