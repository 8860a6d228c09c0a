//! Aggregate snapshots in the store: a large state goes in and comes back whole, stored on
//! PostgreSQL in parts no longer than [`PART`] (so that it streams in and out a part at a time),
//! whatever characters its text holds; the newest snapshot wins, and a second one of the same
//! sequence is left out.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::support::{fresh_store, Backend};
use seatledger::store::Store;
use seatledger::write::snapshot::{Found, PART};

/// A state whose JSON is several parts long, with text that needs escaping in COPY (tabs,
/// newlines, backslashes), in JSON (quotes, control characters) and multi-byte characters
/// that a cut at a fixed byte count would split.
fn large_state() -> BTreeMap<String, String> {
    (0..12_000)
        .map(|n| {
            (
                format!("user-{n:05}"),
                format!(
                    "Zoë\t«{n}»\nC:\\temp\\{n} \"quoted\" \u{1}ü€𝄞 {}",
                    "ß".repeat(n % 7)
                ),
            )
        })
        .collect()
}

async fn stored_parts(store: &Store, aggregate_id: &str) -> Vec<(i64, i64)> {
    let Store::Postgres(pool) = store else {
        return Vec::new();
    };
    sqlx::query_as(
        "SELECT last_sequence, octet_length(payload)::bigint FROM snapshots
          WHERE aggregate_type = 'tenant' AND aggregate_id = $1 ORDER BY last_sequence, part",
    )
    .bind(aggregate_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn a_large_snapshot_round_trips(backend: Backend) {
    let fresh = fresh_store(backend).await;
    let store = &fresh.store;
    let state = large_state();
    let text_length = serde_json::to_string(&state).unwrap().len();
    assert!(
        text_length > 3 * PART,
        "the state is {text_length} bytes of JSON, fewer than four parts"
    );
    let none: Option<Found<BTreeMap<String, String>>> =
        store.load_snapshot("tenant", "t-1").await.unwrap();
    assert!(
        none.is_none(),
        "{backend:?}: a snapshot nobody wrote was found"
    );

    store
        .save_snapshot("tenant", "t-1", 500, Arc::new(state.clone()))
        .await
        .unwrap();
    let (sequence, loaded) = store
        .load_snapshot::<BTreeMap<String, String>>("tenant", "t-1")
        .await
        .unwrap()
        .expect("the snapshot just written");
    assert_eq!(sequence, 500);
    assert!(
        loaded.unwrap() == state,
        "{backend:?}: the snapshot read back differs from the state written"
    );

    if matches!(backend, Backend::Postgres) {
        let parts = stored_parts(store, "t-1").await;
        assert!(
            parts.len() >= 4,
            "a {text_length}-byte snapshot is stored in {} part(s)",
            parts.len()
        );
        assert!(
            parts.iter().all(|(_, length)| *length as usize <= PART),
            "a part is longer than {PART} bytes: {parts:?}"
        );
        assert_eq!(
            parts
                .iter()
                .map(|(_, length)| *length as usize)
                .sum::<usize>(),
            text_length,
            "the parts add up to the snapshot's text"
        );
    }
    fresh.remove().await;
}

#[tokio::test]
async fn a_large_snapshot_round_trips_in_parts_on_postgres() {
    a_large_snapshot_round_trips(Backend::Postgres).await;
}

#[tokio::test]
async fn a_large_snapshot_round_trips_on_sqlite() {
    a_large_snapshot_round_trips(Backend::Sqlite).await;
}

async fn the_newest_snapshot_wins(backend: Backend) {
    let fresh = fresh_store(backend).await;
    let store = &fresh.store;
    let older = large_state();
    let mut newer = older.clone();
    newer.insert("user-new".into(), "added later".into());
    store
        .save_snapshot("tenant", "t-2", 100, Arc::new(older.clone()))
        .await
        .unwrap();
    store
        .save_snapshot("tenant", "t-2", 200, Arc::new(newer.clone()))
        .await
        .unwrap();
    // Another writer's snapshot of the same sequence: left out, no failure.
    let mut rival = newer.clone();
    rival.insert("user-rival".into(), "never stored".into());
    store
        .save_snapshot("tenant", "t-2", 200, Arc::new(rival))
        .await
        .expect("a second snapshot of the same sequence is no failure");
    // A snapshot of another aggregate is not this one's.
    store
        .save_snapshot("tenant", "t-3", 900, Arc::new(BTreeMap::from([("a", "b")])))
        .await
        .unwrap();

    let (sequence, loaded) = store
        .load_snapshot::<BTreeMap<String, String>>("tenant", "t-2")
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(sequence, 200, "{backend:?}: the newest snapshot is loaded");
    assert!(
        loaded.unwrap() == newer,
        "{backend:?}: the newest snapshot holds the first state written for its sequence"
    );
    if matches!(backend, Backend::Postgres) {
        let sequences: Vec<i64> = stored_parts(store, "t-2")
            .await
            .into_iter()
            .map(|(sequence, _)| sequence)
            .collect();
        assert!(
            !sequences.is_empty() && sequences.iter().all(|sequence| *sequence == 200),
            "the older snapshot's parts are dropped: {sequences:?}"
        );
    }
    fresh.remove().await;
}

#[tokio::test]
async fn the_newest_snapshot_wins_on_postgres() {
    the_newest_snapshot_wins(Backend::Postgres).await;
}

#[tokio::test]
async fn the_newest_snapshot_wins_on_sqlite() {
    the_newest_snapshot_wins(Backend::Sqlite).await;
}

/// A snapshot the state's shape has outgrown is found but does not decode (the executor then
/// loads the whole stream); the store itself does not fail.
async fn an_outgrown_snapshot_is_reported_not_fatal(backend: Backend) {
    let fresh = fresh_store(backend).await;
    let store = &fresh.store;
    store
        .save_snapshot("tenant", "t-4", 42, Arc::new(vec![1, 2, 3]))
        .await
        .unwrap();
    let (sequence, decoded) = store
        .load_snapshot::<BTreeMap<String, String>>("tenant", "t-4")
        .await
        .unwrap()
        .expect("the snapshot is found");
    assert_eq!(sequence, 42);
    assert!(
        decoded.is_err(),
        "{backend:?}: a list decoded as a map: {decoded:?}"
    );
    fresh.remove().await;
}

#[tokio::test]
async fn an_outgrown_snapshot_is_reported_not_fatal_on_postgres() {
    an_outgrown_snapshot_is_reported_not_fatal(Backend::Postgres).await;
}

#[tokio::test]
async fn an_outgrown_snapshot_is_reported_not_fatal_on_sqlite() {
    an_outgrown_snapshot_is_reported_not_fatal(Backend::Sqlite).await;
}
