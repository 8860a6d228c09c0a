//! The write side: a command runs on its aggregate's state and lands in the log.
//!
//! - [`ledger`]: runs a command and, to completion, the follow-ups it causes; says where the
//!   chain's events landed.
//! - `executor`: one aggregate type's cache of states and its command batches, checked against
//!   the store by the append's sequence check (optimistic concurrency).
//! - `cache`: the most recently used aggregates of each type, kept in memory.
//! - [`snapshot`]: snapshots of long streams, streamed through COPY on PostgreSQL.
//! - [`append`]: the one statement that appends a batch and returns its positions.
//! - `repository`: cqrs-es's event repository of the store's backend.

pub mod append;
mod cache;
mod error;
mod executor;
pub mod ledger;
mod repository;
pub mod snapshot;

pub use error::{cause as error_cause, Cause, LedgerError, Metadata};
