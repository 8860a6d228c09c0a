//! The executor behind the ledger (src/write/executor.rs), driven directly through `Ledger` on both
//! backends: a hot tenant's concurrent commands are batched yet each gets its own answer and its
//! own metadata; two instances over one store never over-assign (a stale cache is refreshed, a
//! batch that loses the race is re-run); tenants are snapshotted and loaded from their newest
//! snapshot; a caller that goes away corrupts neither the cache nor the log. One defect is
//! pinned down here and fails until fixed: a command whose caller gave up while it was still
//! queued is left behind in the queue and runs, later, in the batch of the next command for the
//! same aggregate (`an_abandoned_command_does_not_run_later_in_an_unrelated_batch_*`).
//!
//! Where an interleaving matters, the test forces it instead of hoping for it: on PostgreSQL by
//! holding a lock on the `events` table from a connection of its own (the ledger's statements
//! then wait in the server, visible in `pg_stat_activity`), on SQLite by holding the pool's only
//! connection.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{fresh_store, Backend, FreshStore};
use aggregates::catalog::{default_catalog, offers, Offer};
use aggregates::personal::{PrincipalFingerprint, SealedDetails};
use aggregates::policy::FollowUp;
use aggregates::tenant::{Tenant, TenantCommand, TenantEvent};
use aggregates::values::{
    DomainName, OfferId, OrganisationName, ProvisioningId, Quantity, Term, UserRole,
};
use aggregates::{CommercialRules, DomainError};
use chrono::{DateTime, TimeZone, Utc};
use seatledger::store::Store;
use seatledger::write::ledger::{Landed, LedgerError, Metadata, TENANT_SNAPSHOT_EVERY};
use seatledger::Ledger;
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

type Outcome = Result<Option<Landed>, LedgerError>;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap()
}

/// The metadata of one request.
fn request(id: &str) -> Metadata {
    Metadata::from([("request_id".to_owned(), id.to_owned())])
}

fn business_premium() -> Offer {
    default_catalog()
        .get(&OfferId::parse(offers::BUSINESS_PREMIUM).unwrap())
        .unwrap()
        .clone()
}

fn product() -> ProvisioningId {
    ProvisioningId::parse("O365_BUSINESS_PREMIUM").unwrap()
}

fn assign(tenant_id: Uuid, user_id: Uuid) -> FollowUp {
    FollowUp::Tenant {
        tenant_id,
        command: TenantCommand::AssignLicenses {
            user_id,
            add: vec![business_premium().id],
            remove: vec![],
            at: at(),
        },
    }
}

fn unassign(tenant_id: Uuid, user_id: Uuid) -> FollowUp {
    FollowUp::Tenant {
        tenant_id,
        command: TenantCommand::AssignLicenses {
            user_id,
            add: vec![],
            remove: vec![business_premium().id],
            at: at(),
        },
    }
}

fn register(tenant_id: Uuid, user_id: Uuid, n: usize) -> FollowUp {
    FollowUp::Tenant {
        tenant_id,
        command: TenantCommand::RegisterUser {
            user_id,
            principal_domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
            fingerprint: PrincipalFingerprint::parse(&format!("{n:064x}")).unwrap(),
            details: SealedDetails {
                key_id: user_id,
                ciphertext: "c2VhbGVk".into(),
            },
            role: UserRole::User,
            at: at(),
        },
    }
}

/// A tenant holding `seats` seats of Business Premium, with `users` registered users (none of
/// them licensed), on a database of its own; the ledger has the tenant in its cache.
struct Books {
    fresh: FreshStore,
    ledger: Arc<Ledger>,
    tenant_id: Uuid,
    users: Vec<Uuid>,
}

async fn books(backend: Backend, seats: i64, users: usize) -> Books {
    let fresh = fresh_store(backend).await;
    let ledger = Arc::new(Ledger::new(fresh.store.clone(), CommercialRules::default()));
    let tenant_id = Uuid::new_v4();
    let setup = request("setup");
    let tenant = |command| FollowUp::Tenant { tenant_id, command };
    ledger
        .dispatch(
            tenant(TenantCommand::CreateTenant {
                tenant_id,
                domain: DomainName::parse("contoso.onmicrosoft.com").unwrap(),
                name: OrganisationName::parse("Contoso").unwrap(),
                reseller_id: None,
                at: at(),
            }),
            &setup,
        )
        .await
        .unwrap();
    ledger
        .dispatch(
            tenant(TenantCommand::PurchaseSubscription {
                subscription_id: Uuid::new_v4(),
                offer: business_premium(),
                quantity: Quantity::parse("quantity", seats).unwrap(),
                term: Term::Monthly,
                billing_profile_id: Uuid::new_v4(),
                trial: false,
                at: at(),
            }),
            &setup,
        )
        .await
        .unwrap();
    let users: Vec<Uuid> = (0..users).map(|_| Uuid::new_v4()).collect();
    let registrations = users
        .iter()
        .enumerate()
        .map(|(n, user_id)| ledger.dispatch(register(tenant_id, *user_id, n), &setup));
    for registered in futures::future::join_all(registrations).await {
        registered.unwrap();
    }
    let state = ledger.tenant(tenant_id).await.unwrap();
    assert_eq!(state.members.len(), users.len());
    let seats_now = state.seats(&product());
    assert_eq!((seats_now.enabled, seats_now.assigned), (seats as u32, 0));
    Books {
        fresh,
        ledger,
        tenant_id,
        users,
    }
}

impl Books {
    /// A second instance: another ledger (another cache) over the same store.
    fn other_instance(&self) -> Arc<Ledger> {
        Arc::new(Ledger::new(
            self.fresh.store.clone(),
            CommercialRules::default(),
        ))
    }

    async fn remove(self) {
        drop(self.ledger);
        self.fresh.remove().await;
    }
}

/// One event of the tenant's stream as stored.
#[derive(Debug)]
struct Logged {
    sequence: i64,
    event: TenantEvent,
    metadata: Value,
    /// The writing transaction (PostgreSQL only).
    transaction: Option<String>,
}

impl Logged {
    fn request_id(&self) -> &str {
        self.metadata["request_id"].as_str().unwrap_or_default()
    }

    /// The user and whether the product was added (true) or removed (false), for a licence
    /// change.
    fn licence_change(&self) -> Option<(Uuid, bool)> {
        match &self.event {
            TenantEvent::LicensesAssigned {
                user_id,
                added,
                removed,
                ..
            } => {
                assert_eq!(added.len() + removed.len(), 1, "{self:?}");
                Some((*user_id, added.contains(&product())))
            }
            _ => None,
        }
    }
}

async fn tenant_log(store: &Store, tenant_id: Uuid) -> Vec<Logged> {
    let rows: Vec<(i64, Value, Value, Option<String>)> = match store {
        Store::Postgres(pool) => sqlx::query_as::<_, (i64, Value, Value, String)>(
            "SELECT sequence, payload, metadata, transaction_id::text FROM events
              WHERE aggregate_type = 'tenant' AND aggregate_id = $1 ORDER BY sequence",
        )
        .bind(tenant_id.to_string())
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(sequence, payload, metadata, transaction)| {
            (sequence, payload, metadata, Some(transaction))
        })
        .collect(),
        Store::Sqlite(pool) => sqlx::query_as::<_, (i64, String, String)>(
            "SELECT sequence, payload, metadata FROM events
              WHERE aggregate_type = 'tenant' AND aggregate_id = $1 ORDER BY sequence",
        )
        .bind(tenant_id.to_string())
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(sequence, payload, metadata)| {
            (
                sequence,
                serde_json::from_str(&payload).unwrap(),
                serde_json::from_str(&metadata).unwrap(),
                None,
            )
        })
        .collect(),
    };
    rows.into_iter()
        .map(|(sequence, payload, metadata, transaction)| Logged {
            sequence,
            event: serde_json::from_value(payload).expect("a readable tenant event"),
            metadata,
            transaction,
        })
        .collect()
}

/// The tenant as its whole stream makes it, event by event (no snapshot, no cache).
fn replay(log: &[Logged]) -> Tenant {
    let mut tenant = Tenant::default();
    for logged in log {
        cqrs_es::Aggregate::apply(&mut tenant, logged.event.clone());
    }
    tenant
}

fn assert_gap_free(log: &[Logged]) {
    let sequences: Vec<i64> = log.iter().map(|logged| logged.sequence).collect();
    let expected: Vec<i64> = (1..=log.len() as i64).collect();
    assert_eq!(sequences, expected, "the stream's sequences have no gap");
}

/// The cached state of every given ledger, and the state a ledger that has never seen the
/// tenant loads, all equal the replay of the whole stream; returns it.
async fn assert_views_agree(store: &Store, tenant_id: Uuid, ledgers: &[&Ledger]) -> Tenant {
    let log = tenant_log(store, tenant_id).await;
    assert_gap_free(&log);
    let replayed = replay(&log);
    for (n, ledger) in ledgers.iter().enumerate() {
        let cached = ledger.tenant(tenant_id).await.unwrap();
        assert!(
            *cached == replayed,
            "ledger #{n}'s state differs from the replay of the stream"
        );
    }
    let cold = Ledger::new(store.clone(), CommercialRules::default());
    assert!(
        *cold.tenant(tenant_id).await.unwrap() == replayed,
        "a fresh ledger's state differs from the replay of the stream"
    );
    let seats = replayed.seats(&product());
    assert!(!seats.over_assigned(), "over-assigned: {seats:?}");
    replayed
}

fn refused_for_want_of_seats(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Err(LedgerError::Domain(refusal @ DomainError::InsufficientLicenses { requested: 1, available: 0, .. }))
            if refusal.code() == "insufficient_licenses"
    )
}

fn holders(tenant: &Tenant) -> BTreeSet<Uuid> {
    tenant
        .members
        .iter()
        .filter(|(_, member)| member.licenses.contains(&product()))
        .map(|(id, _)| *id)
        .collect()
}

fn pg(store: &Store) -> &sqlx::PgPool {
    match store {
        Store::Postgres(pool) => pool,
        Store::Sqlite(_) => unreachable!("a PostgreSQL store"),
    }
}

/// A connection of its own holding `LOCK TABLE events IN <mode> MODE` until released: the
/// ledger's statements on `events` that the mode excludes wait in the server meanwhile.
async fn lock_events(url: &str, mode: &str) -> sqlx::PgConnection {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(&format!("BEGIN; LOCK TABLE events IN {mode} MODE"))
        .execute(&mut connection)
        .await
        .unwrap();
    connection
}

async fn release(mut lock: sqlx::PgConnection) {
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
}

/// Waits until `count` statements of this database matching `pattern` wait for a lock.
async fn wait_until_blocked(pool: &sqlx::PgPool, pattern: &str, count: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (blocked,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE $1",
        )
        .bind(pattern)
        .fetch_one(pool)
        .await
        .unwrap();
        if blocked >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} statements like {pattern} never waited for the lock ({blocked} did)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn snapshot_rows(store: &Store, tenant_id: Uuid) -> Vec<i64> {
    let query = "SELECT last_sequence FROM snapshots
                  WHERE aggregate_type = 'tenant' AND aggregate_id = $1 ORDER BY last_sequence";
    match store {
        Store::Postgres(pool) => sqlx::query_scalar(query)
            .bind(tenant_id.to_string())
            .fetch_all(pool)
            .await
            .unwrap(),
        Store::Sqlite(pool) => sqlx::query_scalar(query)
            .bind(tenant_id.to_string())
            .fetch_all(pool)
            .await
            .unwrap(),
    }
}

/// The snapshot rows once `settled` holds for them: snapshots are written in the background
/// after the batch that crossed the interval has answered. Fails after 10 s with the rows seen.
async fn snapshot_rows_once(
    store: &Store,
    tenant_id: Uuid,
    settled: impl Fn(&[i64]) -> bool,
) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = snapshot_rows(store, tenant_id).await;
        if settled(&rows) {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the snapshot rows never settled: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn insert_snapshot(store: &Store, tenant_id: Uuid, last_sequence: i64, payload: &str) {
    match store {
        Store::Postgres(pool) => {
            sqlx::query(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
                 VALUES ('tenant', $1, $2, $2, $3)",
            )
            .bind(tenant_id.to_string())
            .bind(last_sequence)
            .bind(payload)
            .execute(pool)
            .await
            .unwrap();
        }
        Store::Sqlite(pool) => {
            sqlx::query(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
                 VALUES ('tenant', $1, $2, $2, $3)",
            )
            .bind(tenant_id.to_string())
            .bind(last_sequence)
            .bind(payload)
            .execute(pool)
            .await
            .unwrap();
        }
    }
}

async fn delete_snapshot(store: &Store, tenant_id: Uuid, last_sequence: i64) {
    let query = "DELETE FROM snapshots
                  WHERE aggregate_type = 'tenant' AND aggregate_id = $1 AND last_sequence = $2";
    match store {
        Store::Postgres(pool) => {
            sqlx::query(query)
                .bind(tenant_id.to_string())
                .bind(last_sequence)
                .execute(pool)
                .await
                .unwrap();
        }
        Store::Sqlite(pool) => {
            sqlx::query(query)
                .bind(tenant_id.to_string())
                .bind(last_sequence)
                .execute(pool)
                .await
                .unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A hot tenant
// ---------------------------------------------------------------------------------------------

const HOT_SEATS: usize = 40;
const HOT_USERS: usize = 80;

/// 80 assignments of 40 seats, all at once. With `hold` (PostgreSQL), the first batch is held
/// in the server (its read of `events` waits for a lock) until every other command is queued,
/// so the rest can only be committed as one more batch.
async fn hot_tenant(backend: Backend, hold: bool) {
    let books = books(backend, HOT_SEATS as i64, HOT_USERS).await;
    let tenant_id = books.tenant_id;
    let before = tenant_log(&books.fresh.store, tenant_id).await.len();
    let lock = if hold {
        Some(lock_events(&books.fresh.url, "ACCESS EXCLUSIVE").await)
    } else {
        None
    };
    let started = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = books
        .users
        .iter()
        .enumerate()
        .map(|(n, user_id)| {
            let ledger = books.ledger.clone();
            let started = started.clone();
            let user_id = *user_id;
            tokio::spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                // Queued in the same poll: nothing awaits between the count and the queueing.
                ledger
                    .dispatch(assign(tenant_id, user_id), &request(&format!("assign-{n}")))
                    .await
            })
        })
        .collect();
    if let Some(lock) = lock {
        wait_until_blocked(pg(&books.fresh.store), "%insert into events%", 1).await;
        while started.load(Ordering::SeqCst) < HOT_USERS {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        release(lock).await;
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }

    // Exactly the seats are handed out; every other command is refused by the seat rule.
    let granted: Vec<usize> = (0..HOT_USERS)
        .filter(|n| matches!(outcomes[*n], Ok(Some(_))))
        .collect();
    let refused = outcomes
        .iter()
        .filter(|outcome| refused_for_want_of_seats(outcome))
        .count();
    assert_eq!(granted.len(), HOT_SEATS, "{outcomes:?}");
    assert_eq!(refused, HOT_USERS - HOT_SEATS, "{outcomes:?}");
    let state = assert_views_agree(&books.fresh.store, tenant_id, &[&books.ledger]).await;
    let seats = state.seats(&product());
    assert_eq!((seats.assigned, seats.available), (HOT_SEATS as u32, 0));
    let expected_holders: BTreeSet<Uuid> = granted.iter().map(|n| books.users[*n]).collect();
    assert_eq!(holders(&state), expected_holders);

    // One event per granted command, right after the setup, carrying its own command's
    // metadata, at the sequence its command was told.
    let log = tenant_log(&books.fresh.store, tenant_id).await;
    assert_gap_free(&log);
    let phase = &log[before..];
    assert_eq!(phase.len(), HOT_SEATS);
    let changes = log.iter().filter(|l| l.licence_change().is_some()).count();
    assert_eq!(changes, HOT_SEATS, "exactly one LicensesAssigned per seat");
    let index: HashMap<Uuid, usize> = books
        .users
        .iter()
        .enumerate()
        .map(|(n, user_id)| (*user_id, n))
        .collect();
    for logged in phase {
        let (user_id, added) = logged.licence_change().expect("a LicensesAssigned");
        assert!(added);
        let n = index[&user_id];
        assert_eq!(logged.request_id(), format!("assign-{n}"), "{logged:?}");
        let Ok(Some(landed)) = &outcomes[n] else {
            panic!("the command of an event in the log was not granted: {logged:?}")
        };
        assert_eq!(landed.sequence as i64, logged.sequence);
        assert_eq!(
            (landed.aggregate_type, landed.aggregate_id.as_str()),
            ("tenant", tenant_id.to_string().as_str())
        );
    }

    // Batching: fewer commits than granted commands.
    if let Backend::Postgres = backend {
        let transactions: BTreeSet<&String> = phase
            .iter()
            .map(|logged| logged.transaction.as_ref().unwrap())
            .collect();
        eprintln!(
            "hot tenant (held: {hold}): {} events in {} transactions",
            phase.len(),
            transactions.len()
        );
        assert!(
            transactions.len() < HOT_SEATS,
            "{} transactions for {HOT_SEATS} events",
            transactions.len()
        );
        if hold {
            // The held batch, and one batch of everything queued behind it.
            assert!(
                transactions.len() <= 2,
                "{} transactions",
                transactions.len()
            );
        }
    }
    books.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_tenant_hands_out_exactly_its_seats_in_few_commits_on_postgres() {
    hot_tenant(Backend::Postgres, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_tenant_free_running_commits_fewer_transactions_than_commands_on_postgres() {
    hot_tenant(Backend::Postgres, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_tenant_hands_out_exactly_its_seats_on_sqlite() {
    hot_tenant(Backend::Sqlite, false).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Two instances
// ---------------------------------------------------------------------------------------------

/// A's cache goes stale when B writes: A's next read and A's next command both see B's events.
async fn stale_cache_is_refreshed(backend: Backend) {
    let books = books(backend, 2, 3).await;
    let (tenant_id, users) = (books.tenant_id, books.users.clone());
    let a = books.ledger.clone();
    let b = books.other_instance();
    assert_eq!(
        a.tenant(tenant_id)
            .await
            .unwrap()
            .seats(&product())
            .available,
        2
    );

    // B takes both seats; A, which cached two free seats, is refused the third assignment.
    for (n, user_id) in users[..2].iter().enumerate() {
        b.dispatch(assign(tenant_id, *user_id), &request(&format!("b-{n}")))
            .await
            .unwrap();
    }
    let refused = a
        .dispatch(assign(tenant_id, users[2]), &request("a-stale"))
        .await;
    assert!(refused_for_want_of_seats(&refused), "{refused:?}");
    let state = assert_views_agree(&books.fresh.store, tenant_id, &[&a, &b]).await;
    assert_eq!(holders(&state), users[..2].iter().copied().collect());

    // B frees a seat; A's read shows it, and A's command gets it.
    b.dispatch(unassign(tenant_id, users[0]), &request("b-free"))
        .await
        .unwrap();
    let seen = a.tenant(tenant_id).await.unwrap();
    assert_eq!(seen.seats(&product()).available, 1);
    assert!(!holders(&seen).contains(&users[0]));
    a.dispatch(assign(tenant_id, users[2]), &request("a-fresh"))
        .await
        .unwrap()
        .expect("assigned");
    let state = assert_views_agree(&books.fresh.store, tenant_id, &[&a, &b]).await;
    assert_eq!(holders(&state), [users[1], users[2]].into_iter().collect());
    let requests: Vec<String> = tenant_log(&books.fresh.store, tenant_id)
        .await
        .iter()
        .filter(|logged| logged.licence_change().is_some())
        .map(|logged| logged.request_id().to_owned())
        .collect();
    assert_eq!(requests, ["b-0", "b-1", "b-free", "a-fresh"]);
    drop((a, b));
    books.remove().await;
}

#[tokio::test]
async fn a_stale_cache_is_refreshed_before_reads_and_commands_on_postgres() {
    stale_cache_is_refreshed(Backend::Postgres).await;
}

#[tokio::test]
async fn a_stale_cache_is_refreshed_before_reads_and_commands_on_sqlite() {
    stale_cache_is_refreshed(Backend::Sqlite).await;
}

/// A's cache says user 0 holds no seat, but B gave it one: A's "take the seat back" would be a
/// no-op on A's state. Nothing appended means nothing proved A's state current, so A checks
/// the store and decides again: the seat is taken back.
async fn a_no_op_on_a_stale_cache_is_decided_again(backend: Backend) {
    let books = books(backend, 2, 2).await;
    let (tenant_id, users) = (books.tenant_id, books.users.clone());
    let a = books.ledger.clone();
    let b = books.other_instance();
    a.tenant(tenant_id).await.unwrap();
    b.dispatch(assign(tenant_id, users[0]), &request("b-gives"))
        .await
        .unwrap()
        .expect("assigned");
    let landed = a
        .dispatch(unassign(tenant_id, users[0]), &request("a-takes-back"))
        .await
        .unwrap()
        .expect("A's unassignment is decided on B's assignment, not on A's stale cache");
    let state = assert_views_agree(&books.fresh.store, tenant_id, &[&a, &b]).await;
    assert!(holders(&state).is_empty());
    let log = tenant_log(&books.fresh.store, tenant_id).await;
    assert_eq!(log.last().unwrap().request_id(), "a-takes-back");
    assert_eq!(landed.sequence, log.len());
    drop((a, b));
    books.remove().await;
}

#[tokio::test]
async fn a_no_op_on_a_stale_cache_is_decided_again_on_postgres() {
    a_no_op_on_a_stale_cache_is_decided_again(Backend::Postgres).await;
}

#[tokio::test]
async fn a_no_op_on_a_stale_cache_is_decided_again_on_sqlite() {
    a_no_op_on_a_stale_cache_is_decided_again(Backend::Sqlite).await;
}

/// Both instances decide on the same state (one free seat, two takers) and both try to commit:
/// the insert of one waits for the other's and then fails the optimistic-concurrency check.
/// The loser is re-run on fresh state and refused by the seat rule, not by a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_loses_the_race_is_rerun_on_fresh_state_on_postgres() {
    let books = books(Backend::Postgres, 1, 2).await;
    let (tenant_id, users) = (books.tenant_id, books.users.clone());
    let a = books.ledger.clone();
    let b = books.other_instance();
    a.tenant(tenant_id).await.unwrap();
    b.tenant(tenant_id).await.unwrap();

    // SHARE lets the ledgers read `events` but not insert into it.
    let lock = lock_events(&books.fresh.url, "SHARE").await;
    let on_a = {
        let a = a.clone();
        let user_id = users[0];
        tokio::spawn(async move { a.dispatch(assign(tenant_id, user_id), &request("a")).await })
    };
    let on_b = {
        let b = b.clone();
        let user_id = users[1];
        tokio::spawn(async move { b.dispatch(assign(tenant_id, user_id), &request("b")).await })
    };
    // Both have read the stream, granted the seat in memory, and wait to insert at the same
    // sequence.
    wait_until_blocked(pg(&books.fresh.store), "%insert into events%", 2).await;
    release(lock).await;
    let outcomes = [on_a.await.unwrap(), on_b.await.unwrap()];
    let granted = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Ok(Some(_))))
        .count();
    assert_eq!(granted, 1, "{outcomes:?}");
    assert!(
        outcomes.iter().any(refused_for_want_of_seats),
        "the loser is refused by the seat rule after its re-run: {outcomes:?}"
    );
    let state = assert_views_agree(&books.fresh.store, tenant_id, &[&a, &b]).await;
    assert_eq!(state.seats(&product()).assigned, 1);
    let changes = tenant_log(&books.fresh.store, tenant_id)
        .await
        .iter()
        .filter(|logged| logged.licence_change().is_some())
        .count();
    assert_eq!(changes, 1);
    drop((a, b));
    books.remove().await;
}

const RACE_SEATS: usize = 30;
const RACE_USERS: usize = 90;
const RACE_ROUNDS: usize = 3;

/// Two instances race for the seats, many more takers than seats, several rounds: exactly the
/// seats are granted, the rest refused by the seat rule, and no one is told of a conflict.
async fn two_instances_race(backend: Backend) {
    let books = books(backend, RACE_SEATS as i64, RACE_USERS).await;
    let (tenant_id, users) = (books.tenant_id, books.users.clone());
    let a = books.ledger.clone();
    let b = books.other_instance();
    b.tenant(tenant_id).await.unwrap();
    for round in 0..RACE_ROUNDS {
        let tasks: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(n, user_id)| {
                let ledger = if n % 2 == 0 { a.clone() } else { b.clone() };
                let user_id = *user_id;
                let metadata = request(&format!("race-{round}-{n}"));
                tokio::spawn(
                    async move { ledger.dispatch(assign(tenant_id, user_id), &metadata).await },
                )
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let granted: Vec<usize> = (0..RACE_USERS)
            .filter(|n| matches!(outcomes[*n], Ok(Some(_))))
            .collect();
        let refused = outcomes
            .iter()
            .filter(|o| refused_for_want_of_seats(o))
            .count();
        let failed: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| matches!(o, Err(LedgerError::Conflict | LedgerError::Store(_))))
            .collect();
        assert!(failed.is_empty(), "round {round}: {failed:?}");
        assert_eq!(granted.len(), RACE_SEATS, "round {round}: {outcomes:?}");
        assert_eq!(refused, RACE_USERS - RACE_SEATS, "round {round}");
        let state = assert_views_agree(&books.fresh.store, tenant_id, &[&a, &b]).await;
        let winners: BTreeSet<Uuid> = granted.iter().map(|n| users[*n]).collect();
        assert_eq!(holders(&state), winners, "round {round}");
        assert_eq!(state.seats(&product()).available, 0);
        // The round's events: one per winner, with the winner's own request.
        let log = tenant_log(&books.fresh.store, tenant_id).await;
        let this_round: Vec<&Logged> = log
            .iter()
            .filter(|logged| logged.request_id().starts_with(&format!("race-{round}-")))
            .collect();
        assert_eq!(this_round.len(), RACE_SEATS);
        for logged in this_round {
            let (user_id, added) = logged.licence_change().unwrap();
            let n = users.iter().position(|user| *user == user_id).unwrap();
            assert!(added && granted.contains(&n));
            assert_eq!(logged.request_id(), format!("race-{round}-{n}"));
        }
        // Everyone gives the seat back, through either instance, at once.
        let releases = granted.iter().map(|n| {
            let ledger = if n % 2 == 0 { &b } else { &a };
            let (user_id, metadata) = (users[*n], request(&format!("free-{round}-{n}")));
            async move {
                ledger
                    .dispatch(unassign(tenant_id, user_id), &metadata)
                    .await
            }
        });
        for released in futures::future::join_all(releases).await {
            released.unwrap().expect("a seat given back");
        }
        assert_eq!(
            a.tenant(tenant_id)
                .await
                .unwrap()
                .seats(&product())
                .assigned,
            0
        );
    }
    assert_views_agree(&books.fresh.store, tenant_id, &[&a, &b]).await;
    if let Store::Postgres(pool) = &books.fresh.store {
        // For the report: the transactions rolled back are (nearly all) lost races, absorbed.
        pool.close().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut admin = sqlx::PgConnection::connect(crate::support::POSTGRES_ADMIN_URL)
            .await
            .unwrap();
        let (rollbacks,): (i64,) =
            sqlx::query_as("SELECT xact_rollback FROM pg_stat_database WHERE datname = $1")
                .bind(books.fresh.url.rsplit('/').next().unwrap())
                .fetch_one(&mut admin)
                .await
                .unwrap();
        eprintln!("two instances racing: {rollbacks} transactions rolled back, none reported");
    }
    drop((a, b));
    books.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_racing_never_over_assign_nor_report_conflicts_on_postgres() {
    two_instances_race(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_racing_never_over_assign_nor_report_conflicts_on_sqlite() {
    two_instances_race(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Snapshots
// ---------------------------------------------------------------------------------------------

/// Gives or takes back user `n`'s seat (whichever it does not hold now), one command at a time,
/// until the tenant's stream reaches `target` events; returns the last sequence.
async fn toggle_until(
    books: &Books,
    held: &mut [bool],
    mut sequence: usize,
    target: usize,
) -> usize {
    let mut n = 0;
    while sequence < target {
        let user_id = books.users[n];
        let command = if held[n] {
            unassign(books.tenant_id, user_id)
        } else {
            assign(books.tenant_id, user_id)
        };
        let landed = books
            .ledger
            .dispatch(command, &request(&format!("toggle-{sequence}")))
            .await
            .unwrap()
            .expect("a licence change");
        held[n] = !held[n];
        assert_eq!(landed.sequence, sequence + 1);
        sequence = landed.sequence;
        n = (n + 1) % held.len();
    }
    sequence
}

async fn snapshots(backend: Backend) {
    let every = TENANT_SNAPSHOT_EVERY;
    let books = books(backend, 20, 20).await;
    let (store, tenant_id) = (books.fresh.store.clone(), books.tenant_id);
    let mut held = vec![false; books.users.len()];
    let start = tenant_log(&store, tenant_id).await.len();
    assert!(start < every);
    assert!(snapshot_rows(&store, tenant_id).await.is_empty());

    // One command (one event) at a time: the snapshot is taken exactly at the interval.
    let sequence = toggle_until(&books, &mut held, start, every + 10).await;
    let rows = snapshot_rows_once(&store, tenant_id, |rows| !rows.is_empty()).await;
    assert_eq!(rows, [every as i64]);
    assert_views_agree(&store, tenant_id, &[&books.ledger]).await;

    // Older rows beside the newest, one of them unreadable, one the empty tenant: neither is
    // used (either would make a cold load fail or differ from the replay).
    insert_snapshot(&store, tenant_id, 100, r#"{"corrupted": true}"#).await;
    let empty = serde_json::to_string(&Tenant::default()).unwrap();
    insert_snapshot(&store, tenant_id, (every / 2) as i64, &empty).await;
    assert_views_agree(&store, tenant_id, &[&books.ledger]).await;
    // The newest row is what a cold load starts from: a marked copy of the current state at
    // the current sequence comes back as it is.
    let mut marked = (*books.ledger.tenant(tenant_id).await.unwrap()).clone();
    marked.profile.as_mut().unwrap().name = OrganisationName::parse("Marked").unwrap();
    let marked_json = serde_json::to_string(&marked).unwrap();
    insert_snapshot(&store, tenant_id, sequence as i64, &marked_json).await;
    let cold = Ledger::new(store.clone(), CommercialRules::default());
    assert!(
        *cold.tenant(tenant_id).await.unwrap() == marked,
        "a cold load starts from the newest snapshot"
    );
    drop(cold);
    delete_snapshot(&store, tenant_id, sequence as i64).await;
    // A newest snapshot the tenant's shape has outgrown (unreadable) is not fatal: a cold load
    // reads the whole stream instead and equals the replay.
    insert_snapshot(&store, tenant_id, sequence as i64, r#""not a tenant""#).await;
    let cold = Ledger::new(store.clone(), CommercialRules::default());
    assert_eq!(
        *cold.tenant(tenant_id).await.unwrap(),
        replay(&tenant_log(&store, tenant_id).await),
        "an unreadable snapshot is skipped"
    );
    drop(cold);
    delete_snapshot(&store, tenant_id, sequence as i64).await;
    assert_eq!(
        snapshot_rows(&store, tenant_id).await,
        [100, (every / 2) as i64, every as i64]
    );

    // Past the next multiple the new snapshot replaces all older rows. Here the interval is
    // crossed inside a batch of concurrent commands: the snapshot covers the batch's last event.
    let mut sequence = toggle_until(&books, &mut held, sequence, 2 * every - 8).await;
    while sequence < 2 * every + 10 {
        let commands = books.users.iter().enumerate().map(|(n, user_id)| {
            let command = if held[n] {
                unassign(tenant_id, *user_id)
            } else {
                assign(tenant_id, *user_id)
            };
            let (ledger, metadata) = (&books.ledger, request(&format!("wave-{sequence}-{n}")));
            async move { ledger.dispatch(command, &metadata).await }
        });
        for (n, outcome) in futures::future::join_all(commands)
            .await
            .into_iter()
            .enumerate()
        {
            let landed = outcome.unwrap().expect("a licence change");
            held[n] = !held[n];
            sequence = sequence.max(landed.sequence);
        }
    }
    let rows = snapshot_rows_once(&store, tenant_id, |rows| {
        rows.last()
            .is_some_and(|newest| *newest >= 2 * every as i64)
    })
    .await;
    eprintln!(
        "snapshot rows after crossing {} in batches: {rows:?} (stream at {sequence})",
        2 * every
    );
    assert_eq!(rows.len(), 1, "older snapshots are deleted: {rows:?}");
    assert!(
        (2 * every as i64..=sequence as i64).contains(&rows[0]),
        "{rows:?}"
    );
    let state = assert_views_agree(&store, tenant_id, &[&books.ledger]).await;
    assert_eq!(tenant_log(&store, tenant_id).await.len(), sequence);
    let expected: BTreeSet<Uuid> = books
        .users
        .iter()
        .zip(&held)
        .filter(|(_, held)| **held)
        .map(|(user_id, _)| *user_id)
        .collect();
    assert_eq!(holders(&state), expected);
    books.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_are_snapshotted_and_loaded_from_the_newest_snapshot_on_postgres() {
    snapshots(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_are_snapshotted_and_loaded_from_the_newest_snapshot_on_sqlite() {
    snapshots(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Callers that go away
// ---------------------------------------------------------------------------------------------

const BUSY_USERS: usize = 40;
const CANCELLED_USERS: usize = 20;
const CANCEL_SEATS: usize = 50;

/// Callers give up (a zero timeout: the next timer tick) while other commands keep the tenant
/// busy. Afterwards the cache, a fresh ledger and the log agree, later commands work on that
/// state, and each abandoned command is in the log once or not at all.
async fn cancelled_callers(backend: Backend) {
    for _ in 0..5 {
        if cancelled_callers_once(backend).await {
            return;
        }
    }
    panic!("in 5 rounds no caller went away: the scenario never arose");
}

/// One round of [`cancelled_callers`]; `false` when no caller went away (on a loaded machine
/// every batch can finish within its caller's first poll), so nothing was tested.
async fn cancelled_callers_once(backend: Backend) -> bool {
    // The last user is a bystander that no command gives a seat.
    let books = books(
        backend,
        CANCEL_SEATS as i64,
        BUSY_USERS + CANCELLED_USERS + 1,
    )
    .await;
    let (tenant_id, users) = (books.tenant_id, books.users.clone());
    let bystander = users[BUSY_USERS + CANCELLED_USERS];
    let busy: Vec<_> = users[..BUSY_USERS]
        .iter()
        .enumerate()
        .map(|(n, user_id)| {
            let ledger = books.ledger.clone();
            let user_id = *user_id;
            tokio::spawn(async move {
                ledger
                    .dispatch(assign(tenant_id, user_id), &request(&format!("busy-{n}")))
                    .await
            })
        })
        .collect();
    let mut abandoned = Vec::new();
    let mut answered = Vec::new();
    for (n, user_id) in users
        .iter()
        .enumerate()
        .skip(BUSY_USERS)
        .take(CANCELLED_USERS)
    {
        let metadata = request(&format!("cancelled-{n}"));
        let call = books
            .ledger
            .dispatch(assign(tenant_id, *user_id), &metadata);
        match tokio::time::timeout(Duration::ZERO, call).await {
            Err(_) => abandoned.push(n),
            Ok(outcome) => answered.push((n, outcome)),
        }
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    if abandoned.is_empty() {
        for task in busy {
            let _ = task.await;
        }
        books.remove().await;
        return false;
    }
    for task in busy {
        let outcome = task.await.unwrap();
        assert!(
            matches!(outcome, Ok(Some(_))) || refused_for_want_of_seats(&outcome),
            "{outcome:?}"
        );
    }
    for (n, outcome) in &answered {
        assert!(
            matches!(outcome, Ok(Some(_))) || refused_for_want_of_seats(outcome),
            "cancelled-{n}: {outcome:?}"
        );
    }
    let abandoned_in_log = |log: &[Logged]| -> Vec<usize> {
        let mut found = Vec::new();
        for n in &abandoned {
            let events: Vec<&Logged> = log
                .iter()
                .filter(|logged| logged.request_id() == format!("cancelled-{n}"))
                .collect();
            assert!(events.len() <= 1, "{events:?}");
            if let Some(logged) = events.first() {
                assert_eq!(logged.licence_change(), Some((users[*n], true)));
                found.push(*n);
            }
        }
        found
    };

    // Idle: the cache, a cold load and the log agree.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_views_agree(&books.fresh.store, tenant_id, &[&books.ledger]).await;
    let landed_when_idle = abandoned_in_log(&tenant_log(&books.fresh.store, tenant_id).await);

    // A command that changes nothing; any abandoned command still queued runs with it (see
    // `an_abandoned_command_does_not_run_later_in_an_unrelated_batch_*`).
    let nothing = books
        .ledger
        .dispatch(unassign(tenant_id, bystander), &request("nothing"))
        .await
        .unwrap();
    assert_eq!(nothing, None);
    let state = assert_views_agree(&books.fresh.store, tenant_id, &[&books.ledger]).await;
    let landed_later = abandoned_in_log(&tenant_log(&books.fresh.store, tenant_id).await);
    eprintln!(
        "cancelled callers: {} of {CANCELLED_USERS} abandoned; {} of their commands in the log \
         once the tenant was idle, {} after one more (unrelated) command",
        abandoned.len(),
        landed_when_idle.len(),
        landed_later.len()
    );

    // Later commands on that state: every holder gives its seat back, then everyone asks again.
    for user_id in holders(&state) {
        books
            .ledger
            .dispatch(unassign(tenant_id, user_id), &request("later-free"))
            .await
            .unwrap()
            .expect("a seat given back");
    }
    assert_eq!(
        books
            .ledger
            .tenant(tenant_id)
            .await
            .unwrap()
            .seats(&product())
            .assigned,
        0
    );
    let mut granted = 0;
    for user_id in &users {
        let outcome = books
            .ledger
            .dispatch(assign(tenant_id, *user_id), &request("later-take"))
            .await;
        if matches!(outcome, Ok(Some(_))) {
            granted += 1;
        } else {
            assert!(refused_for_want_of_seats(&outcome), "{outcome:?}");
        }
    }
    assert_eq!(granted, CANCEL_SEATS);
    let state = assert_views_agree(&books.fresh.store, tenant_id, &[&books.ledger]).await;
    assert_eq!(state.seats(&product()).assigned, CANCEL_SEATS as u32);
    assert_eq!(
        abandoned_in_log(&tenant_log(&books.fresh.store, tenant_id).await),
        landed_later
    );
    books.remove().await;
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_callers_leave_cache_and_log_consistent_on_postgres() {
    cancelled_callers(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_callers_leave_cache_and_log_consistent_on_sqlite() {
    cancelled_callers(Backend::Sqlite).await;
}

/// A caller gives up while its command waits behind a batch in flight, and no other command
/// follows. Once the tenant is idle again, the abandoned command's fate must be settled: it is
/// in the log, or it never will be. It must not lie in wait and run, long after its caller
/// left, inside the batch of the next, unrelated command.
async fn abandoned_command_stays_settled(backend: Backend) {
    let books = books(backend, 5, 3).await;
    let (tenant_id, users) = (books.tenant_id, books.users.clone());
    let store = books.fresh.store.clone();

    // Hold the batch of command X inside the store.
    enum Held {
        Lock(sqlx::PgConnection),
        Connection(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    }
    let held = match &store {
        Store::Postgres(_) => Held::Lock(lock_events(&books.fresh.url, "ACCESS EXCLUSIVE").await),
        Store::Sqlite(pool) => Held::Connection(pool.acquire().await.unwrap()),
    };
    let x = {
        let ledger = books.ledger.clone();
        let user_id = users[0];
        tokio::spawn(async move {
            ledger
                .dispatch(assign(tenant_id, user_id), &request("x"))
                .await
        })
    };
    match &store {
        Store::Postgres(pool) => wait_until_blocked(pool, "%insert into events%", 1).await,
        Store::Sqlite(_) => tokio::time::sleep(Duration::from_millis(200)).await,
    }
    // C queues behind X's batch; its caller gives up at once.
    let gave_up = tokio::time::timeout(
        Duration::ZERO,
        books
            .ledger
            .dispatch(assign(tenant_id, users[1]), &request("abandoned")),
    )
    .await;
    assert!(gave_up.is_err(), "{gave_up:?}");
    match held {
        Held::Lock(lock) => release(lock).await,
        Held::Connection(connection) => drop(connection),
    }
    x.await.unwrap().unwrap().expect("X assigned");

    // The tenant is idle: no caller is waiting for anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = |log: &[Logged]| {
        log.iter()
            .filter(|logged| logged.request_id() == "abandoned")
            .count()
    };
    let settled = count(&tenant_log(&store, tenant_id).await);
    let state = assert_views_agree(&store, tenant_id, &[&books.ledger]).await;
    assert_eq!(holders(&state).contains(&users[1]), settled == 1);

    // An unrelated command D, later.
    books
        .ledger
        .dispatch(assign(tenant_id, users[2]), &request("d"))
        .await
        .unwrap()
        .expect("D assigned");
    let log = tenant_log(&store, tenant_id).await;
    let after = count(&log);
    let d_transaction = log
        .iter()
        .find(|l| l.request_id() == "d")
        .unwrap()
        .transaction
        .clone();
    let abandoned_transaction = log
        .iter()
        .find(|l| l.request_id() == "abandoned")
        .and_then(|l| l.transaction.clone());
    let together = match (&d_transaction, &abandoned_transaction) {
        (Some(d), Some(abandoned)) => {
            format!(" (committed in D's transaction: {})", d == abandoned)
        }
        _ => String::new(),
    };
    assert_eq!(
        after, settled,
        "once the tenant was idle the abandoned command had {settled} event(s) in the log; \
         after an unrelated command D it has {after}: it ran later, with D's batch{together}, \
         although its caller had given up long before"
    );
    assert_views_agree(&store, tenant_id, &[&books.ledger]).await;
    books.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_command_does_not_run_later_in_an_unrelated_batch_on_postgres() {
    abandoned_command_stays_settled(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_command_does_not_run_later_in_an_unrelated_batch_on_sqlite() {
    abandoned_command_stays_settled(Backend::Sqlite).await;
}
