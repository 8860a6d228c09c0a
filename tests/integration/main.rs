//! The integration tests, one binary: every module talks to the real PostgreSQL (and, where it
//! says so, NATS with JetStream) through `support`'s helpers, each test on a database of its
//! own that is dropped when it ends.

mod support;

mod api_basics;
mod api_events;
mod api_idempotency;
mod api_parties;
mod api_projections;
mod api_reads;
mod api_subscriptions;
mod api_users;
mod append;
mod authorization;
mod concurrency;
mod demo;
mod events_doc;
mod executor;
mod feed_jetstream;
mod instances;
mod ledger;
mod log_reader;
mod replay;
mod snapshots;
mod timers;
mod vault;
