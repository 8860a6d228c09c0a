//! The global log as its consumers read it: a checkpointed reader sees every committed event
//! exactly once even when transactions commit out of position order (PostgreSQL's late
//! commits), a projection killed between applying a batch and committing its checkpoint
//! resumes without losing or repeating an event, and two runners of one projection racing over
//! the same checkpoint never both apply a batch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{fresh_store, Backend};
use aggregates::catalog::{default_catalog, offers};
use aggregates::personal::{PrincipalFingerprint, SealedDetails};
use aggregates::policy::FollowUp;
use aggregates::tenant::TenantCommand;
use aggregates::user::UserCommand;
use aggregates::values::{
    DomainName, OfferId, OrganisationName, ProvisioningId, Quantity, Term, UserRole,
};
use aggregates::CommercialRules;
use chrono::{TimeZone, Utc};
use projections::licenses::{AssignedDoc, Licenses};
use projections::users::{UserListStatus, UserRow, Users};
use projections::{LoggedEvent, Projection, RowSet};
use seatledger::log::{Checkpoint, StoredEvent};
use seatledger::read::{self, scoped_docs, ConsumerError, ProjectionRunner, Table};
use seatledger::store::{PlanKind, Store};
use seatledger::write::ledger::Metadata;
use seatledger::Ledger;
use sqlx::postgres::{PgPool, PgPoolOptions};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A small xorshift generator: the tests only need cheap, per-task randomness.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Self((Uuid::new_v4().as_u128() as u64) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Waits until every event in the database lies below the PostgreSQL snapshot horizon (no
/// transaction that could still be running, anywhere in the cluster, is older than an event),
/// so a `read_log` issued afterwards sees the whole log. Immediate on SQLite.
async fn wait_for_settled_log(store: &Store) {
    let Store::Postgres(pool) = store else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events
                             WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if !pending {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot horizon did not pass the log's last transaction within 20 s \
             (a long transaction elsewhere in the cluster?)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The whole log, decoded, once it has settled.
async fn whole_log(store: &Store) -> (Vec<StoredEvent>, Vec<LoggedEvent>) {
    wait_for_settled_log(store).await;
    let stored = store
        .read_log(Checkpoint::default(), Checkpoint::END, i64::MAX)
        .await
        .unwrap();
    let logged = stored
        .iter()
        .map(|event| event.decode().expect("every logged event decodes"))
        .collect();
    (stored, logged)
}

/// One read-model row, with its document parsed so that equal documents compare equal.
type RowImage = (String, String, String, serde_json::Value);

/// Every live row of `projection` in the store, by key.
async fn stored_rows(store: &Store, projection: &str) -> BTreeMap<String, RowImage> {
    const SQL: &str =
        "SELECT row_key, kind, scope, sort_key, doc FROM read_models WHERE projection = $1";
    let rows: Vec<(String, String, String, String, String)> = match store {
        Store::Postgres(pool) => sqlx::query_as(SQL).bind(projection).fetch_all(pool).await,
        Store::Sqlite(pool) => sqlx::query_as(SQL).bind(projection).fetch_all(pool).await,
    }
    .unwrap();
    rows.into_iter()
        .map(|(key, kind, scope, sort_key, doc)| {
            let doc = serde_json::from_str(&doc)
                .unwrap_or_else(|error| panic!("row '{key}' holds no JSON ({error}): {doc}"));
            (key, (kind, scope, sort_key, doc))
        })
        .collect()
}

/// The rows of `projection` folded in memory from `events` (what a replay computes).
fn folded_rows(projection: &dyn Projection, events: &[LoggedEvent]) -> BTreeMap<String, RowImage> {
    let mut rows = RowSet::complete();
    projections::fold(projection, events, &mut rows).expect("the log folds");
    rows.iter()
        .map(|(key, row)| {
            let doc = serde_json::from_str(&row.doc).expect("folded documents are JSON");
            (
                key.clone(),
                (
                    row.kind.clone(),
                    row.scope.clone(),
                    row.sort_key.clone(),
                    doc,
                ),
            )
        })
        .collect()
}

/// Asserts that the stored rows are the folded rows, naming each row that differs.
fn assert_rows_match(
    what: &str,
    stored: &BTreeMap<String, RowImage>,
    folded: &BTreeMap<String, RowImage>,
) {
    let mut differences = Vec::new();
    for (key, row) in stored {
        match folded.get(key) {
            None => differences.push(format!("only stored: {key} = {row:?}")),
            Some(expected) if expected != row => differences.push(format!(
                "differs: {key}\n    stored: {row:?}\n    folded: {expected:?}"
            )),
            Some(_) => {}
        }
    }
    for (key, row) in folded {
        if !stored.contains_key(key) {
            differences.push(format!("missing from the store: {key} = {row:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{what}: the stored rows ({}) are not the fold of the log ({}):\n  {}",
        stored.len(),
        folded.len(),
        differences.join("\n  ")
    );
}

/// What the licence workload leaves behind, as the write side counts it.
struct Workload {
    tenant_id: Uuid,
    product: ProvisioningId,
    users: usize,
    /// Users holding the product at the end.
    holders: u32,
}

/// A realistic run of the write side: a tenant buys 50 Business Premium seats, registers 30
/// users and gives each a licence; five users are deleted (their seats are released), one of
/// them is restored (its seat reinstated), and two users hand their licence back.
async fn licence_workload(store: &Store) -> Workload {
    const USERS: usize = 30;
    let any = Ledger::new(store.clone(), CommercialRules::default());
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
    let tenant_id = Uuid::new_v4();
    let bp = default_catalog()
        .get(&OfferId::parse(offers::BUSINESS_PREMIUM).unwrap())
        .unwrap()
        .clone();
    let product = bp.provisioning_id.clone();
    let metadata = Metadata::from([("request_id".to_owned(), "log-reader-test".to_owned())]);
    let user_ids: Vec<Uuid> = (0..USERS).map(|_| Uuid::new_v4()).collect();
    let holders = {
        let ledger = &any;
        let tenant = |command| FollowUp::Tenant { tenant_id, command };
        ledger
            .dispatch(
                tenant(TenantCommand::CreateTenant {
                    tenant_id,
                    domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                    name: OrganisationName::parse("Contoso").unwrap(),
                    reseller_id: None,
                    at,
                }),
                &metadata,
            )
            .await
            .unwrap()
            .expect("tenant created");
        ledger
            .dispatch(
                tenant(TenantCommand::PurchaseSubscription {
                    subscription_id: Uuid::new_v4(),
                    offer: bp.clone(),
                    quantity: Quantity::parse("quantity", 50).unwrap(),
                    term: Term::Monthly,
                    billing_profile_id: Uuid::new_v4(),
                    trial: false,
                    at,
                }),
                &metadata,
            )
            .await
            .unwrap()
            .expect("purchase recorded");
        for (n, user_id) in user_ids.iter().enumerate() {
            ledger
                .dispatch(
                    tenant(TenantCommand::RegisterUser {
                        user_id: *user_id,
                        principal_domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                        fingerprint: PrincipalFingerprint::parse(&format!("{n:064x}")).unwrap(),
                        details: SealedDetails {
                            key_id: *user_id,
                            ciphertext: "c2VhbGVk".into(),
                        },
                        role: UserRole::User,
                        at,
                    }),
                    &metadata,
                )
                .await
                .unwrap();
            ledger
                .dispatch(
                    tenant(TenantCommand::AssignLicenses {
                        user_id: *user_id,
                        add: vec![bp.id],
                        remove: vec![],
                        at,
                    }),
                    &metadata,
                )
                .await
                .unwrap();
        }
        for user_id in &user_ids[..5] {
            ledger
                .dispatch(
                    FollowUp::User {
                        user_id: *user_id,
                        command: UserCommand::DeleteUser { at },
                    },
                    &metadata,
                )
                .await
                .unwrap();
        }
        ledger
            .dispatch(
                FollowUp::User {
                    user_id: user_ids[0],
                    command: UserCommand::RestoreUser { at },
                },
                &metadata,
            )
            .await
            .unwrap();
        for user_id in &user_ids[10..12] {
            ledger
                .dispatch(
                    tenant(TenantCommand::AssignLicenses {
                        user_id: *user_id,
                        add: vec![],
                        remove: vec![bp.id],
                        at,
                    }),
                    &metadata,
                )
                .await
                .unwrap();
        }
        ledger
            .tenant(tenant_id)
            .await
            .unwrap()
            .seats(&product)
            .assigned
    };
    // 30 assigned, 5 released by deletion, 1 reinstated by the restore, 2 handed back.
    assert_eq!(holders, 24, "the write side's own count of licence holders");
    Workload {
        tenant_id,
        product,
        users: USERS,
        holders,
    }
}

/// Checks the rows a runner left against the fold of the whole log, and the counts the
/// licences and users views show against the write side's.
async fn assert_projection_matches_log(
    store: &Store,
    projection: &dyn Projection,
    logged: &[LoggedEvent],
    workload: &Workload,
    context: &str,
) {
    let stored = stored_rows(store, projection.name()).await;
    assert_rows_match(
        &format!("{context}: projection '{}'", projection.name()),
        &stored,
        &folded_rows(projection, logged),
    );
    let tenant = workload.tenant_id.to_string();
    match projection.name() {
        projections::licenses::NAME => {
            let assigned: Vec<AssignedDoc> = read::decode_all(
                &scoped_docs(
                    store,
                    projections::licenses::NAME,
                    projections::licenses::ASSIGNED,
                    &tenant,
                )
                .await
                .unwrap(),
            )
            .unwrap();
            assert_eq!(
                assigned
                    .iter()
                    .map(|doc| (doc.sku.clone(), doc.holders))
                    .collect::<Vec<_>>(),
                vec![(workload.product.clone(), workload.holders)],
                "{context}: the 'assigned' rows of the tenant count every licence holder once"
            );
        }
        projections::users::NAME => {
            let users: Vec<UserRow> = read::decode_all(
                &scoped_docs(
                    store,
                    projections::users::NAME,
                    projections::users::USER,
                    &tenant,
                )
                .await
                .unwrap(),
            )
            .unwrap();
            assert_eq!(
                users.len(),
                workload.users,
                "{context}: every user is listed once"
            );
            let holding = users
                .iter()
                .filter(|user| user.licenses.contains(&workload.product))
                .count();
            assert_eq!(
                holding, workload.holders as usize,
                "{context}: users listed with the licence"
            );
            let deleted = users
                .iter()
                .filter(|user| user.status == UserListStatus::Deleted)
                .count();
            assert_eq!(deleted, 4, "{context}: five deleted, one restored");
        }
        other => unreachable!("no checks for projection {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The checkpointed reader under concurrent writers with late commits and rollbacks
// ---------------------------------------------------------------------------------------------

const WRITERS: usize = 16;
const STREAMS_PER_ROUND: usize = 24;
const EVENTS_PER_ROUND: i64 = 2000;
const ROUNDS: usize = 3;

#[derive(Debug, Default, Clone, Copy)]
struct WriterStats {
    committed_transactions: usize,
    committed_events: usize,
    rollbacks: usize,
    conflicts: usize,
}

/// Appends to random streams of this round as an event repository does (read the stream's
/// last sequence, insert the next ones, a duplicate sequence is a conflict), holding each
/// transaction open 0–15 ms before it commits, so that positions taken later often commit
/// earlier; one transaction in eight rolls back, leaving a gap in the positions.
async fn writer(pool: PgPool, streams: Arc<Vec<String>>, budget: Arc<AtomicI64>) -> WriterStats {
    let mut rng = Rng::new();
    let mut stats = WriterStats::default();
    while budget.load(Ordering::SeqCst) > 0 {
        let stream = &streams[rng.below(streams.len() as u64) as usize];
        let count = 1 + rng.below(3) as i64;
        let mut tx = pool.begin().await.unwrap();
        let last: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(sequence), 0) FROM events
              WHERE aggregate_type = 'probe' AND aggregate_id = $1",
        )
        .bind(stream)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let mut conflict = false;
        for n in 1..=count {
            let inserted = sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                     event_version, payload, metadata)
                 VALUES ('probe', $1, $2, 'Probed', '1', json_build_object('n', $2), '{}'::json)",
            )
            .bind(stream)
            .bind(last + n)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                    conflict = true;
                    break;
                }
                Err(error) => panic!("insert into events failed: {error}"),
            }
        }
        if conflict {
            tx.rollback().await.unwrap();
            stats.conflicts += 1;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(16))).await;
        if rng.below(8) == 0 {
            tx.rollback().await.unwrap();
            stats.rollbacks += 1;
        } else {
            tx.commit().await.unwrap();
            stats.committed_transactions += 1;
            stats.committed_events += count as usize;
            budget.fetch_sub(count, Ordering::SeqCst);
        }
    }
    stats
}

/// One event as the checkpointed reader took it in.
#[derive(Debug, Clone)]
struct Seen {
    checkpoint: Checkpoint,
    aggregate_id: String,
    sequence: i64,
}

/// Follows the log with `read_log` from `checkpoint`, 50 events at a time, until the writers
/// are done and the log has been drained.
async fn checkpointed_reader(
    store: Store,
    mut checkpoint: Checkpoint,
    writers_done: Arc<AtomicBool>,
) -> (Checkpoint, Vec<Seen>, usize) {
    let Store::Postgres(pool) = &store else {
        unreachable!("a PostgreSQL test")
    };
    let mut seen = Vec::new();
    let mut reads = 0;
    let mut drain_deadline = None;
    loop {
        // Once the writers are done, the log is drained when every event was below the horizon
        // before a read that comes back empty (the horizon only moves forward).
        let settled = if writers_done.load(Ordering::SeqCst) {
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(15));
            assert!(
                Instant::now() < deadline,
                "the reader could not drain the log within 15 s of the writers finishing"
            );
            !sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM events
                                 WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))",
            )
            .fetch_one(pool)
            .await
            .unwrap()
        } else {
            false
        };
        let batch = store
            .read_log(checkpoint, Checkpoint::END, 50)
            .await
            .unwrap();
        reads += 1;
        assert!(
            batch.len() <= 50,
            "read_log returned {} events for a limit of 50",
            batch.len()
        );
        if batch.is_empty() {
            if settled {
                return (checkpoint, seen, reads);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for event in batch {
            assert!(
                event.checkpoint > checkpoint,
                "read_log returned {:?} at or before the checkpoint {checkpoint:?} it was given",
                event.checkpoint
            );
            checkpoint = event.checkpoint;
            seen.push(Seen {
                checkpoint: event.checkpoint,
                aggregate_id: event.aggregate_id,
                sequence: event.sequence,
            });
        }
    }
}

/// Follows the log the naive way, `position > last`, to show what that loses.
async fn naive_reader(
    pool: PgPool,
    mut last: i64,
    writers_done: Arc<AtomicBool>,
) -> (i64, Vec<i64>) {
    let mut seen = Vec::new();
    loop {
        let done = writers_done.load(Ordering::SeqCst);
        let positions: Vec<i64> =
            sqlx::query_scalar("SELECT position FROM events WHERE position > $1 ORDER BY position")
                .bind(last)
                .fetch_all(&pool)
                .await
                .unwrap();
        if let Some(max) = positions.last() {
            last = *max;
        }
        seen.extend(positions);
        if done {
            // Every transaction had ended before that read: nothing more will appear.
            return (last, seen);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn reader_sees_every_event_exactly_once_under_concurrent_writers() {
    let started = Instant::now();
    let fresh = fresh_store(Backend::Postgres).await;
    let pool = PgPoolOptions::new()
        .max_connections(WRITERS as u32 + 2)
        .connect(&fresh.url)
        .await
        .unwrap();

    let mut checkpoint = Checkpoint::default();
    let mut naive_last = 0;
    let mut seen: Vec<Seen> = Vec::new();
    let mut naive_seen: Vec<i64> = Vec::new();
    let mut naive_skipped_total = 0;
    for round in 0..ROUNDS {
        let streams: Arc<Vec<String>> = Arc::new(
            (0..STREAMS_PER_ROUND)
                .map(|n| format!("round{round}-stream{n}"))
                .collect(),
        );
        let budget = Arc::new(AtomicI64::new(EVENTS_PER_ROUND));
        let writers_done = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(checkpointed_reader(
            fresh.store.clone(),
            checkpoint,
            writers_done.clone(),
        ));
        let naive = tokio::spawn(naive_reader(pool.clone(), naive_last, writers_done.clone()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| tokio::spawn(writer(pool.clone(), streams.clone(), budget.clone())))
            .collect();
        let mut stats = WriterStats::default();
        for handle in writers {
            let one = handle.await.expect("a writer panicked");
            stats.committed_transactions += one.committed_transactions;
            stats.committed_events += one.committed_events;
            stats.rollbacks += one.rollbacks;
            stats.conflicts += one.conflicts;
        }
        writers_done.store(true, Ordering::SeqCst);
        let (reached, round_seen, reads) = reader.await.expect("the checkpointed reader panicked");
        let (reached_naive, round_naive) = naive.await.expect("the naive reader panicked");
        checkpoint = reached;
        naive_last = reached_naive;
        seen.extend(round_seen);
        naive_seen.extend(round_naive);

        let Store::Postgres(store_pool) = &fresh.store else {
            unreachable!()
        };
        let mut in_table: Vec<i64> = sqlx::query_scalar("SELECT position FROM events")
            .fetch_all(store_pool)
            .await
            .unwrap();
        in_table.sort_unstable();
        let round_events: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE aggregate_id LIKE $1")
                .bind(format!("round{round}-%"))
                .fetch_one(store_pool)
                .await
                .unwrap();
        assert_eq!(
            round_events, stats.committed_events as i64,
            "round {round}: the table holds what the writers committed"
        );

        // Exactly once: no position read twice, and the positions read are the table's.
        let mut read_positions: Vec<i64> = seen.iter().map(|s| s.checkpoint.position).collect();
        read_positions.sort_unstable();
        let mut duplicates: Vec<i64> = read_positions
            .windows(2)
            .filter(|pair| pair[0] == pair[1])
            .map(|pair| pair[0])
            .collect();
        duplicates.dedup();
        assert!(
            duplicates.is_empty(),
            "round {round}: positions read more than once: {duplicates:?}"
        );
        let read_set: HashSet<i64> = read_positions.iter().copied().collect();
        let table_set: HashSet<i64> = in_table.iter().copied().collect();
        let mut missed: Vec<i64> = table_set.difference(&read_set).copied().collect();
        missed.sort_unstable();
        let mut phantom: Vec<i64> = read_set.difference(&table_set).copied().collect();
        phantom.sort_unstable();
        assert!(
            missed.is_empty() && phantom.is_empty(),
            "round {round}: the checkpointed reader skipped {} committed events (first: {:?}) \
             and read {} that are not in the table (first: {:?})",
            missed.len(),
            &missed[..missed.len().min(20)],
            phantom.len(),
            &phantom[..phantom.len().min(20)]
        );

        // Each stream in its order: sequences 1, 2, 3… with neither gap nor reordering.
        let mut next: HashMap<&str, i64> = HashMap::new();
        for event in &seen {
            let expected = next.entry(event.aggregate_id.as_str()).or_insert(1);
            assert_eq!(
                event.sequence, *expected,
                "round {round}: stream {} arrived out of order at {:?}",
                event.aggregate_id, event.checkpoint
            );
            *expected += 1;
        }

        let naive_set: HashSet<i64> = naive_seen.iter().copied().collect();
        let naive_skipped = table_set.difference(&naive_set).count();
        naive_skipped_total = naive_skipped;
        println!(
            "round {round}: {} events in {} transactions ({} rolled back, {} sequence conflicts); \
             the checkpointed reader took {} events in {reads} reads and skipped 0; a naive \
             `position > last` reader skipped {naive_skipped} of {} so far",
            stats.committed_events,
            stats.committed_transactions,
            stats.rollbacks,
            stats.conflicts,
            read_positions.len(),
            table_set.len()
        );
    }
    println!(
        "{ROUNDS} rounds in {:.1} s; naive reader skipped {naive_skipped_total} events in all",
        started.elapsed().as_secs_f64()
    );
    pool.close().await;
    fresh.remove().await;
}

// ---------------------------------------------------------------------------------------------
// 2. A consumer killed between applying a batch and committing its checkpoint
// ---------------------------------------------------------------------------------------------

/// Runs `projection` over the whole log, crashing every batch once before its commit (with a
/// limit that ends it mid-way through the workload's commands) and then resuming with a fresh
/// runner and a different limit, so that crashed and committed batches never line up.
async fn crash_and_resume(
    store: &Store,
    projection: Arc<dyn Projection>,
    stored: &[StoredEvent],
    logged: &[LoggedEvent],
    workload: &Workload,
    context: &str,
) {
    let consumer = ProjectionRunner::new(projection.clone(), Table::Live)
        .consumer()
        .to_owned();
    store.ensure_checkpoint(&consumer).await.unwrap();
    let end = stored.last().expect("the workload wrote events").checkpoint;
    let crash_limits = [7_i64, 11, 7, 13];
    let resume_limits = [5_i64, 7, 3, 9];
    let mut crashes = 0;
    let mut taken_in_all = 0;
    let mut round = 0;
    loop {
        let before = store.checkpoint(&consumer).await.unwrap();
        let rows_before = stored_rows(store, projection.name()).await;
        // A first crash, and on every third batch a second one at the same place.
        for attempt in 0..(1 + usize::from(round % 3 == 0)) {
            let called = AtomicBool::new(false);
            let limit = crash_limits[(round + attempt) % crash_limits.len()];
            let crashed = ProjectionRunner::new(projection.clone(), Table::Live)
                .step_interrupted(store, limit, Checkpoint::END, || {
                    called.store(true, Ordering::SeqCst);
                    Err(ConsumerError::Interrupted(format!(
                        "killed in batch {round}"
                    )))
                })
                .await;
            match crashed {
                Err(ConsumerError::Interrupted(_)) => {
                    assert!(called.load(Ordering::SeqCst));
                    crashes += 1;
                }
                Ok(None) => {
                    assert_eq!(
                        before, end,
                        "{context}: nothing left to read before the end of the log"
                    );
                }
                other => panic!("{context}: the crashing step ended with {other:?}"),
            }
            assert_eq!(
                store.checkpoint(&consumer).await.unwrap(),
                before,
                "{context}: a batch killed before its commit moved the checkpoint"
            );
            let rows_after = stored_rows(store, projection.name()).await;
            assert!(
                rows_after == rows_before,
                "{context}: a batch killed before its commit left rows behind ({} rows before, {} after)",
                rows_before.len(),
                rows_after.len()
            );
        }
        // The restarted consumer.
        let resume_limit = resume_limits[round % resume_limits.len()];
        let taken = ProjectionRunner::new(projection.clone(), Table::Live)
            .step(store, resume_limit, Checkpoint::END)
            .await
            .unwrap_or_else(|error| panic!("{context}: the resumed step failed: {error}"));
        let Some(taken) = taken else {
            assert_eq!(
                before, end,
                "{context}: the runner stopped before the end of the log"
            );
            break;
        };
        assert!(
            taken.events >= 1 && taken.events as i64 <= resume_limit,
            "{context}: a step of limit {resume_limit} took {} events",
            taken.events
        );
        assert!(
            taken.checkpoint > before,
            "{context}: the checkpoint went backwards"
        );
        assert_eq!(store.checkpoint(&consumer).await.unwrap(), taken.checkpoint);
        let expected_events = stored
            .iter()
            .filter(|event| event.checkpoint > before && event.checkpoint <= taken.checkpoint)
            .count();
        assert_eq!(
            taken.events, expected_events,
            "{context}: the resumed batch is the events just after the checkpoint"
        );
        taken_in_all += taken.events;
        round += 1;
    }
    assert_eq!(
        taken_in_all,
        stored.len(),
        "{context}: the committed batches add up to the log"
    );
    assert!(
        crashes >= 10,
        "{context}: only {crashes} crashes were simulated"
    );
    assert_eq!(store.checkpoint(&consumer).await.unwrap(), end);
    assert_projection_matches_log(store, projection.as_ref(), logged, workload, context).await;
}

async fn killed_consumer_resumes(backend: Backend) {
    let fresh = fresh_store(backend).await;
    let workload = licence_workload(&fresh.store).await;
    let (stored, logged) = whole_log(&fresh.store).await;
    assert!(
        stored.len() > 60,
        "the workload wrote {} events",
        stored.len()
    );
    for projection in [
        Arc::new(Licenses) as Arc<dyn Projection>,
        Arc::new(Users) as Arc<dyn Projection>,
    ] {
        let context = format!("{backend:?}/{}", projection.name());
        crash_and_resume(
            &fresh.store,
            projection,
            &stored,
            &logged,
            &workload,
            &context,
        )
        .await;
    }
    fresh.remove().await;
}

#[tokio::test]
async fn a_consumer_killed_before_its_checkpoint_resumes_without_loss_or_double_count_on_postgres()
{
    killed_consumer_resumes(Backend::Postgres).await;
}

#[tokio::test]
async fn a_consumer_killed_before_its_checkpoint_resumes_without_loss_or_double_count_on_sqlite() {
    killed_consumer_resumes(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------
// 2b. Projections taken in together (the service's one consumer of every live projection)
// ---------------------------------------------------------------------------------------------

/// Steps `runners` together, `limit` events a batch, until they reach the end of the log.
async fn step_group_to_end(store: &Store, runners: &[ProjectionRunner], limit: i64) {
    let mut batches = 0;
    while read::step_together(store, runners, limit, Checkpoint::END, || Ok(()))
        .await
        .unwrap()
        .is_some()
    {
        batches += 1;
        assert!(
            batches < 10_000,
            "the group never reached the end of the log"
        );
    }
}

/// Moves `consumer`'s checkpoint to `to` behind the runners' backs, as a replay's swap or
/// another instance would.
async fn move_checkpoint(store: &Store, consumer: &str, to: Checkpoint) {
    const SQL: &str =
        "UPDATE consumer_checkpoints SET transaction_id = $1, position = $2 WHERE consumer = $3";
    let moved = match store {
        Store::Postgres(pool) => sqlx::query(SQL)
            .bind(to.transaction_id)
            .bind(to.position)
            .bind(consumer)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
        Store::Sqlite(pool) => sqlx::query(SQL)
            .bind(to.transaction_id)
            .bind(to.position)
            .bind(consumer)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(moved, 1, "{consumer} has a checkpoint to move");
}

/// A batch taken into several projections writes each one's rows only with its checkpoint:
/// when someone else moved one projection's checkpoint, that projection's rows and checkpoint
/// stay as they were, the step says it was overtaken, and every other projection's rows are
/// still exactly the fold of the log up to its own checkpoint.
async fn a_projection_moved_by_someone_else_keeps_its_rows_in_a_group(backend: Backend) {
    let fresh = fresh_store(backend).await;
    let store = &fresh.store;
    licence_workload(store).await;
    let (stored, logged) = whole_log(store).await;
    let runners = [
        ProjectionRunner::new(Arc::new(Licenses), Table::Live),
        ProjectionRunner::new(Arc::new(Users), Table::Live),
    ];
    for runner in &runners {
        store.ensure_checkpoint(runner.consumer()).await.unwrap();
    }
    let first = read::step_together(store, &runners, 20, Checkpoint::END, || Ok(()))
        .await
        .unwrap()
        .expect("a first batch");
    assert_eq!(first.events, 20);
    // A replay's swap moves the user view elsewhere.
    let swapped = stored[40].checkpoint;
    move_checkpoint(store, "users", swapped).await;
    let users_before = stored_rows(store, "users").await;

    let step = read::step_together_from(
        store,
        &runners,
        first.checkpoint,
        20,
        Checkpoint::END,
        || Ok(()),
    )
    .await;
    assert!(
        matches!(&step, Err(ConsumerError::Overtaken(consumer)) if consumer == "users"),
        "{backend:?}: the step over a moved checkpoint ended with {step:?}"
    );
    assert_eq!(
        store.checkpoint("users").await.unwrap(),
        swapped,
        "{backend:?}: the moved checkpoint stays where it was moved"
    );
    assert!(
        stored_rows(store, "users").await == users_before,
        "{backend:?}: rows were written for a projection whose checkpoint did not move"
    );
    let licences_at = store.checkpoint("licenses").await.unwrap();
    assert!(
        licences_at == first.checkpoint || licences_at == stored[39].checkpoint,
        "{backend:?}: the licence view's checkpoint is neither before nor after the batch"
    );
    let read = stored
        .iter()
        .take_while(|event| event.checkpoint <= licences_at)
        .count();
    assert_rows_match(
        &format!("{backend:?}: the licence view after the overtaken batch"),
        &stored_rows(store, "licenses").await,
        &folded_rows(&Licenses, &logged[..read]),
    );
    fresh.remove().await;
}

#[tokio::test]
async fn a_projection_moved_by_someone_else_keeps_its_rows_in_a_group_on_postgres() {
    a_projection_moved_by_someone_else_keeps_its_rows_in_a_group(Backend::Postgres).await;
}

#[tokio::test]
async fn a_projection_moved_by_someone_else_keeps_its_rows_in_a_group_on_sqlite() {
    a_projection_moved_by_someone_else_keeps_its_rows_in_a_group(Backend::Sqlite).await;
}

/// Projections share one table, so a key can stand in several: a batch deleting a row of one
/// projection (a cancelled purge timer) leaves the row under the same key of another alone,
/// and every projection of the group ends as the fold of the whole log.
async fn a_group_deletes_only_its_own_projections_rows(backend: Backend) {
    let fresh = fresh_store(backend).await;
    let store = &fresh.store;
    let workload = licence_workload(store).await;
    let (_, logged) = whole_log(store).await;
    let timers = projections::timers::Timers;
    // A timer row some prefix of the log holds and the whole log does not: the restored
    // user's cancelled purge.
    let at_end = folded_rows(&timers, &logged);
    let cancelled = (1..logged.len())
        .flat_map(|end| folded_rows(&timers, &logged[..end]).into_keys())
        .find(|key| !at_end.contains_key(key))
        .expect("the workload cancels a timer (the restored user's purge)");
    // The same key in the licence view, which no event of the log touches.
    let stranger = "SELECT 'licenses', $1, 'stranger', 'nowhere', 'k', '{\"kept\":true}'";
    let insert = format!(
        "INSERT INTO read_models (projection, row_key, kind, scope, sort_key, doc) {stranger}"
    );
    match store {
        Store::Postgres(pool) => sqlx::query(&insert)
            .bind(&cancelled)
            .execute(pool)
            .await
            .map(drop),
        Store::Sqlite(pool) => sqlx::query(&insert)
            .bind(&cancelled)
            .execute(pool)
            .await
            .map(drop),
    }
    .unwrap();
    let runners = [
        ProjectionRunner::new(Arc::new(Licenses), Table::Live),
        ProjectionRunner::new(Arc::new(timers), Table::Live),
        ProjectionRunner::new(Arc::new(Users), Table::Live),
    ];
    for runner in &runners {
        store.ensure_checkpoint(runner.consumer()).await.unwrap();
    }
    step_group_to_end(store, &runners, 7).await;

    let mut licences = stored_rows(store, "licenses").await;
    let kept = licences.remove(&cancelled);
    assert_eq!(
        kept.map(|(kind, _, _, doc)| (kind, doc)),
        Some(("stranger".to_owned(), serde_json::json!({ "kept": true }))),
        "{backend:?}: deleting timer '{cancelled}' touched the licence view's row of that key"
    );
    assert_rows_match(
        &format!("{backend:?}: licenses, taken in with the others"),
        &licences,
        &folded_rows(&Licenses, &logged),
    );
    assert_rows_match(
        &format!("{backend:?}: timers, taken in with the others"),
        &stored_rows(store, "timers").await,
        &at_end,
    );
    assert_projection_matches_log(
        store,
        &Users,
        &logged,
        &workload,
        &format!("{backend:?}/users"),
    )
    .await;
    fresh.remove().await;
}

#[tokio::test]
async fn a_group_deletes_only_its_own_projections_rows_on_postgres() {
    a_group_deletes_only_its_own_projections_rows(Backend::Postgres).await;
}

#[tokio::test]
async fn a_group_deletes_only_its_own_projections_rows_on_sqlite() {
    a_group_deletes_only_its_own_projections_rows(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Two runners of one projection, no lease
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct RunnerStats {
    batches: usize,
    events: usize,
    overtaken: usize,
    /// Where each committed batch left the checkpoint.
    ends: Vec<Checkpoint>,
}

/// Steps `runner` until the projection's checkpoint reaches `end`. Each batch pauses briefly
/// between moving the checkpoint and committing, which widens the window in which the other
/// runner reads the old checkpoint and folds the same events.
async fn race(store: Store, runner: ProjectionRunner, end: Checkpoint) -> RunnerStats {
    let mut stats = RunnerStats::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "the runners did not reach the end of the log in 30 s"
        );
        let stepped = runner
            .step_interrupted(&store, 4, Checkpoint::END, || {
                std::thread::sleep(Duration::from_millis(2));
                Ok(())
            })
            .await;
        match stepped {
            Ok(Some(taken)) => {
                stats.batches += 1;
                stats.events += taken.events;
                stats.ends.push(taken.checkpoint);
            }
            Ok(None) => {
                if store.checkpoint(runner.consumer()).await.unwrap() == end {
                    return stats;
                }
                tokio::task::yield_now().await;
            }
            Err(ConsumerError::Overtaken(consumer)) => {
                assert_eq!(consumer, runner.consumer());
                stats.overtaken += 1;
            }
            Err(error) => {
                panic!("a racing runner failed otherwise than by being overtaken: {error}")
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_of_one_projection_never_double_apply() {
    let fresh = fresh_store(Backend::Postgres).await;
    let workload = licence_workload(&fresh.store).await;
    let (stored, logged) = whole_log(&fresh.store).await;
    let end = stored.last().unwrap().checkpoint;
    for projection in [
        Arc::new(Licenses) as Arc<dyn Projection>,
        Arc::new(Users) as Arc<dyn Projection>,
    ] {
        let context = format!("two runners/{}", projection.name());
        let first = ProjectionRunner::new(projection.clone(), Table::Live);
        let second = ProjectionRunner::new(projection.clone(), Table::Live);
        fresh
            .store
            .ensure_checkpoint(first.consumer())
            .await
            .unwrap();
        let (a, b) = tokio::join!(
            tokio::spawn(race(fresh.store.clone(), first, end)),
            tokio::spawn(race(fresh.store.clone(), second, end)),
        );
        let (a, b) = (a.expect("runner A panicked"), b.expect("runner B panicked"));
        println!(
            "{context}: runner A committed {} batches ({} events) and was overtaken {} times; \
             runner B committed {} batches ({} events) and was overtaken {} times",
            a.batches, a.events, a.overtaken, b.batches, b.events, b.overtaken
        );
        // No batch was committed twice: each committed batch left the checkpoint somewhere new.
        let mut ends: Vec<Checkpoint> = a.ends.iter().chain(&b.ends).copied().collect();
        ends.sort();
        let twice: Vec<&Checkpoint> = ends
            .windows(2)
            .filter(|pair| pair[0] == pair[1])
            .map(|pair| &pair[0])
            .collect();
        assert!(
            twice.is_empty(),
            "{context}: batches ending at {twice:?} were committed by both runners"
        );
        // Every committed batch took events no other committed batch took.
        assert_eq!(
            a.events + b.events,
            stored.len(),
            "{context}: the committed batches of both runners add up to the log (A took {}, B took {})",
            a.events,
            b.events
        );
        assert!(
            a.overtaken + b.overtaken > 0,
            "{context}: the runners never raced (neither was overtaken); the test proved nothing"
        );
        assert_eq!(
            fresh.store.checkpoint(projection.name()).await.unwrap(),
            end
        );
        assert_projection_matches_log(
            &fresh.store,
            projection.as_ref(),
            &logged,
            &workload,
            &context,
        )
        .await;
    }
    fresh.remove().await;
}

/// On a long log the reader walks the (transaction, position) index to its next batch: a plan
/// that sorts would cost every batch the whole rest of the log (it once did: the ORDER BY
/// named the select list's converted column instead of the table's).
#[tokio::test]
async fn the_reader_walks_the_index_instead_of_sorting_the_log_on_postgres() {
    let fresh = fresh_store(Backend::Postgres).await;
    let Store::Postgres(pool) = &fresh.store else {
        unreachable!()
    };
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'reseller', 'r' || n, 1, 'ResellerCreated', '1', '{}', '{}'
           FROM generate_series(1, 100000) AS n",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE events").execute(pool).await.unwrap();
    for kind in [PlanKind::Custom, PlanKind::Generic] {
        let plan = fresh.store.explain_read_log(kind).await.unwrap();
        assert!(
            plan.iter()
                .any(|line| line.contains("events_by_transaction")),
            "the reader uses the (transaction, position) index ({kind:?} plan):\n{}",
            plan.join("\n")
        );
        assert!(
            !plan
                .iter()
                .any(|line| line.trim_start().starts_with("Sort") || line.contains("->  Sort")),
            "the reader sorts the log ({kind:?} plan):\n{}",
            plan.join("\n")
        );
    }
    fresh.remove().await;
}

/// How far a caught-up consumer has read is answered from what lies behind its checkpoint: a
/// plan that walks the log from its start (the planner's MIN/MAX shortcut once did, 10 ms per
/// call at 40 000 events, 18 ms at 100 000) costs every projection-backed read and `?min_position=` wait the
/// whole log. Likewise a catching-up consumer's progress report estimates its lag from two
/// index entries instead of counting the backlog.
#[tokio::test]
async fn how_far_a_caught_up_consumer_has_read_costs_its_backlog_not_the_log_on_postgres() {
    let fresh = fresh_store(Backend::Postgres).await;
    let Store::Postgres(pool) = &fresh.store else {
        unreachable!()
    };
    // Many writing transactions, as a live log has: the planner then expects few events after a
    // checkpoint in the last one.
    for batch in 0..200 {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'reseller', 'r' || n, 1, 'ResellerCreated', '1', '{}', '{}'
               FROM generate_series($1 * 500 + 1, $1 * 500 + 500) AS n",
        )
        .bind(batch)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE events").execute(pool).await.unwrap();
    // A thousand events behind: 1 % of the log, where the planner's guess favours the walk.
    let near_the_end = fresh
        .store
        .read_log(Checkpoint::default(), Checkpoint::END, 100_000)
        .await
        .unwrap()[98_999]
        .checkpoint;
    assert_eq!(
        fresh.store.position_reached(near_the_end).await.unwrap(),
        near_the_end.position,
        "a thousand events follow the checkpoint in both orders"
    );
    // A catching-up consumer's progress report reads two index entries, not the backlog.
    let (behind, next) = fresh.store.lag_estimate(near_the_end).await.unwrap();
    assert_eq!(
        behind, 1_000,
        "positions between the checkpoint and the log's end"
    );
    assert!(next.is_some(), "the next event's recording instant");
    let end = fresh.store.log_end().await.unwrap();
    let last = fresh
        .store
        .read_log(near_the_end, Checkpoint::END, 1_000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .checkpoint;
    assert_eq!(last.position, end);
    assert_eq!(fresh.store.lag_estimate(last).await.unwrap(), (0, None));
    // `/readyz` asks every consumer's backlog on every probe: exact while short, and never
    // counted past BACKLOG_COUNTED.
    let (behind, oldest) = fresh.store.backlog(near_the_end).await.unwrap();
    assert_eq!(behind, 1_000, "a short backlog is counted exactly");
    assert!(oldest.is_some());
    assert_eq!(fresh.store.backlog(last).await.unwrap(), (0, None));
    let (behind, _) = fresh.store.backlog(Checkpoint::default()).await.unwrap();
    assert_eq!(
        behind, end,
        "a long backlog: every position up to the log's end"
    );
    for kind in [PlanKind::Custom, PlanKind::Generic] {
        let plan = fresh
            .store
            .explain_backlog(Checkpoint::default(), kind)
            .await
            .unwrap();
        let most = plan
            .iter()
            .filter_map(|line| line.split(" rows=").nth(1))
            .filter_map(|rows| {
                rows.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .max()
            .unwrap_or(0_i64);
        assert!(
            most <= seatledger::log::BACKLOG_COUNTED,
            "counting a 100 000-event backlog read {most} rows ({kind:?} plan):\n{}",
            plan.join("\n")
        );
    }
    // The slowest projection's checkpoint is there too: every projection-backed read asks
    // how far it has read.
    fresh.store.ensure_checkpoint("licenses").await.unwrap();
    assert!(fresh
        .store
        .advance_checkpoint("licenses", Checkpoint::default(), near_the_end)
        .await
        .unwrap());
    assert_eq!(
        fresh
            .store
            .slowest(&["licenses", "not-yet-started"])
            .await
            .unwrap(),
        (near_the_end, near_the_end.position),
        "a consumer without a checkpoint yet does not count"
    );
    for kind in [PlanKind::Custom, PlanKind::Generic] {
        let mut plan = fresh
            .store
            .explain_position_reached(near_the_end, kind)
            .await
            .unwrap();
        plan.extend(
            fresh
                .store
                .explain_slowest(&["licenses"], kind)
                .await
                .unwrap(),
        );
        assert!(
            rows_removed_by_filters(&plan) < 10_000,
            "position_reached reads the whole log to find what follows a checkpoint 1 000 events from its end ({kind:?} plan):\n{}",
            plan.join("\n")
        );
        assert!(
            plan.iter()
                .any(|line| line.contains("events_by_transaction")),
            "position_reached walks the (transaction, position) index ({kind:?} plan):\n{}",
            plan.join("\n")
        );
    }
    fresh.remove().await;
}

/// 1 024 rows of the user view (`user/1` …) and 2 048 of `other` (projection, kind), named
/// after their kind: a table large enough that reading it whole shows in a plan.
async fn fill_read_models(pool: &PgPool, (projection, kind): (&str, &str)) {
    sqlx::query(
        "INSERT INTO read_models (projection, row_key, kind, scope, sort_key, doc)
         SELECT projection, kind || '/' || n, kind, 'tenant/' || (n / 32), 'k' || n, '{}'
           FROM (VALUES ('users', 'user', 1024), ($1, $2, 2048)) AS p (projection, kind, count),
                generate_series(1, count) AS n",
    )
    .bind(projection)
    .bind(kind)
    .execute(pool)
    .await
    .unwrap();
}

/// A batch's rows are looked up by key, whatever the planner knows of the table: without fresh
/// statistics (a new or fast-growing table; autovacuum off, as on CI's machines) it once read
/// every row of the projection through a secondary index for a batch that needed fourteen.
#[tokio::test]
async fn a_batch_looks_its_rows_up_by_key_without_statistics_on_postgres() {
    let fresh = fresh_store(Backend::Postgres).await;
    let Store::Postgres(pool) = &fresh.store else {
        unreachable!()
    };
    fill_read_models(pool, ("licenses", "holder")).await;
    let keys: Vec<String> = (1..=14)
        .map(|n| format!("user/{}", n * 70))
        .chain(["user/none".to_owned()])
        .collect();
    for kind in [PlanKind::Custom, PlanKind::Generic] {
        let plan = read::explain_fetch_rows(&fresh.store, Table::Live, "users", &keys, kind)
            .await
            .unwrap();
        let removed = rows_removed_by_filters(&plan);
        assert!(
            removed < 100,
            "fetching 15 keys read {removed} rows it did not want ({kind:?} plan):\n{}",
            plan.join("\n")
        );
        assert!(
            plan.iter().any(|line| line.contains("read_models_pkey")),
            "the keys are looked up in the primary key ({kind:?} plan):\n{}",
            plan.join("\n")
        );
    }
    fresh.remove().await;
}

/// A batch's deleted rows are found along the primary key, whatever the planner knows of the
/// table (both plans), and only the keys asked for go.
#[tokio::test]
async fn a_batch_deletes_its_rows_by_key_without_statistics_on_postgres() {
    let fresh = fresh_store(Backend::Postgres).await;
    let Store::Postgres(pool) = &fresh.store else {
        unreachable!()
    };
    fill_read_models(pool, ("timers", "user")).await;
    fresh.store.ensure_checkpoint("timers").await.unwrap();
    let mut at = fresh.store.checkpoint("timers").await.unwrap();
    let mut deleted = 0;
    for (round, kind) in [PlanKind::Custom, PlanKind::Generic]
        .into_iter()
        .enumerate()
    {
        let keys: Vec<String> = (1..=7)
            .map(|n| format!("user/{}", n * 100 + round))
            .collect();
        let next = Checkpoint {
            transaction_id: at.transaction_id,
            position: at.position + 1,
        };
        let plan = read::explain_commit_deletes(
            &fresh.store,
            Table::Live,
            "timers",
            "timers",
            (at, next),
            &keys,
            kind,
        )
        .await
        .unwrap();
        at = next;
        deleted += keys.len();
        let removed = rows_removed_by_filters(&plan);
        assert!(
            removed < 100,
            "deleting 7 keys read {removed} rows it did not want ({kind:?} plan):\n{}",
            plan.join("\n")
        );
        assert!(
            !plan
                .iter()
                .any(|line| line.contains("Seq Scan on read_models")),
            "a batch's delete reads the whole table ({kind:?} plan):\n{}",
            plan.join("\n")
        );
    }
    assert_eq!(fresh.store.checkpoint("timers").await.unwrap(), at);
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT projection, COUNT(*) FROM read_models GROUP BY projection ORDER BY projection",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        [
            ("timers".to_owned(), 2048 - deleted as i64),
            ("users".to_owned(), 1024)
        ],
        "exactly the timers' keys asked for were deleted; the users' rows of the same keys stay"
    );
    fresh.remove().await;
}

/// The rows an `EXPLAIN ANALYZE` says its filters read and threw away.
fn rows_removed_by_filters(plan: &[String]) -> u64 {
    plan.iter()
        .filter_map(|line| {
            let rows = line.split("Rows Removed by Filter: ").nth(1)?;
            rows.trim().parse::<u64>().ok()
        })
        .sum()
}

/// Every SQLite statement that looks at the log by position walks the (partial) position
/// index: none scans the log or sorts it in a temporary B-tree, so an idle service's polls cost
/// microseconds however long the log grows.
#[tokio::test]
async fn sqlite_reads_of_the_log_walk_the_position_index() {
    let fresh = fresh_store(Backend::Sqlite).await;
    for (name, sql) in Store::sqlite_position_statements() {
        let plan = fresh.store.explain_sqlite(&sql).await.unwrap();
        let text = plan.join(" | ");
        assert!(
            text.contains("events_by_position"),
            "{name} does not use the position index: {text}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN events")),
            "{name} scans the log: {text}"
        );
        assert!(
            !text.contains("TEMP B-TREE"),
            "{name} sorts the log: {text}"
        );
    }
    fresh.remove().await;
}
