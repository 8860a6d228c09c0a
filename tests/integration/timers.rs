//! Durable timers on the sandbox clock: a deleted user is purged when its 30-day restore window
//! closes (not a moment before), never after a restore, and exactly once even when the service
//! restarts between the delete and the deadline.

use std::time::Duration;

use crate::support::{spawn_app_with, Backend, TestApp};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use seatledger::store::Store;
use serde_json::{json, Value};

const DAY: i64 = 24 * 3600;
const HOUR: i64 = 3600;
/// Long enough for the scheduler (polling every 200 ms) to have looked several times.
const SCHEDULER_GRACE: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Creates the tenant contoso and `names.len()` users in it; returns the tenant and user ids.
async fn tenant_with_users(app: &TestApp, names: &[&str]) -> (String, Vec<String>) {
    let (_, tenant_id) = app.billing_profile_and_contoso().await;
    let mut users = Vec::new();
    for name in names {
        users.push(create_user(app, &tenant_id, name).await);
    }
    (tenant_id, users)
}

async fn create_user(app: &TestApp, tenant_id: &str, name: &str) -> String {
    let (status, user) = app
        .call(
            Method::POST,
            &app.admin_token,
            &format!("/v1/tenants/{tenant_id}/users"),
            Some(json!({
                "user_principal_name": format!("{name}@contoso.onmicrosoft.com"),
                "first_name": name,
                "last_name": "Tester",
                "display_name": format!("{name} Tester"),
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    user["id"].as_str().expect("a user id").to_owned()
}

/// Deletes the user; returns the end of its restore window as the service answered it.
async fn delete_user(app: &TestApp, user_id: &str) -> DateTime<Utc> {
    let (status, deleted) = app
        .call(
            Method::DELETE,
            &app.admin_token,
            &format!("/v1/users/{user_id}"),
            None,
        )
        .await;
    assert_eq!(
        (status, deleted["status"].clone()),
        (StatusCode::OK, json!("deleted")),
        "{deleted}"
    );
    instant(&deleted["restorable_until"])
}

async fn restore_user(app: &TestApp, user_id: &str) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        &app.admin_token,
        &format!("/v1/users/{user_id}:restore"),
        Some(json!({})),
    )
    .await
}

/// Moves the sandbox clock forward; returns the service's new "now".
async fn advance(app: &TestApp, seconds: i64) -> DateTime<Utc> {
    let (status, body) = app
        .call(
            Method::POST,
            &app.admin_token,
            "/v1/sandbox/clock",
            Some(json!({ "advance_seconds": seconds })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    instant(&body["now"])
}

/// Sets the sandbox clock to `to`.
async fn set_clock(app: &TestApp, to: DateTime<Utc>) {
    let (status, body) = app
        .call(
            Method::POST,
            &app.admin_token,
            "/v1/sandbox/clock",
            Some(json!({ "now": to })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn instant(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(
        value
            .as_str()
            .unwrap_or_else(|| panic!("an instant: {value}")),
    )
    .expect("an RFC 3339 instant")
    .with_timezone(&Utc)
}

async fn get_user(app: &TestApp, user_id: &str) -> Value {
    let (status, user) = app
        .call(
            Method::GET,
            &app.admin_token,
            &format!("/v1/users/{user_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    user
}

/// The tenant's user list with deleted users, as the projection holds it.
async fn listed_with_deleted(app: &TestApp, tenant_id: &str) -> Vec<Value> {
    let (status, list) = app
        .call(
            Method::GET,
            &app.admin_token,
            &format!("/v1/tenants/{tenant_id}/users?include_deleted=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["users"].as_array().expect("a user list").clone()
}

/// The event types of the user's history, in order.
async fn history_types(app: &TestApp, user_id: &str) -> Vec<String> {
    let (status, history) = app
        .call(
            Method::GET,
            &app.admin_token,
            &format!("/v1/users/{user_id}/history"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| {
            event["event_type"]
                .as_str()
                .expect("an event type")
                .to_owned()
        })
        .collect()
}

/// How many UserPurged events the log holds for the user.
async fn purges_in_log(store: &Store, user_id: &str) -> i64 {
    let sql = "SELECT count(*) FROM events WHERE event_type = 'UserPurged' AND aggregate_id = $1";
    match store {
        Store::Postgres(pool) => sqlx::query_scalar(sql).bind(user_id).fetch_one(pool).await,
        Store::Sqlite(pool) => sqlx::query_scalar(sql).bind(user_id).fetch_one(pool).await,
    }
    .expect("count of UserPurged")
}

fn purge_timer_key(user_id: &str) -> String {
    projections::timers::row_key(&format!("purge-user/{user_id}"))
}

/// The recorded firings of the user's purge timer: (due_at, outcome).
async fn purge_firings(store: &Store, user_id: &str) -> Vec<(String, String)> {
    let sql = "SELECT due_at, outcome FROM timer_firings WHERE timer_key = $1 ORDER BY due_at";
    let key = purge_timer_key(user_id);
    match store {
        Store::Postgres(pool) => sqlx::query_as(sql).bind(&key).fetch_all(pool).await,
        Store::Sqlite(pool) => sqlx::query_as(sql).bind(&key).fetch_all(pool).await,
    }
    .expect("the timer firings")
}

/// The deadline of the user's purge timer in the timers projection, if it has one.
async fn purge_timer_due(store: &Store, user_id: &str) -> Option<String> {
    let sql = "SELECT sort_key FROM read_models WHERE projection = $1 AND row_key = $2";
    let key = purge_timer_key(user_id);
    match store {
        Store::Postgres(pool) => {
            sqlx::query_scalar(sql)
                .bind(projections::timers::NAME)
                .bind(&key)
                .fetch_optional(pool)
                .await
        }
        Store::Sqlite(pool) => {
            sqlx::query_scalar(sql)
                .bind(projections::timers::NAME)
                .bind(&key)
                .fetch_optional(pool)
                .await
        }
    }
    .expect("the timers projection")
}

/// Whether the user's personal key is destroyed (`None`: no key row at all).
async fn key_destroyed(store: &Store, user_id: &str) -> Option<bool> {
    let sql = "SELECT key_material IS NULL FROM personal_keys WHERE key_id = $1";
    match store {
        Store::Postgres(pool) => {
            let id = uuid::Uuid::parse_str(user_id).expect("a UUID");
            sqlx::query_scalar(sql).bind(id).fetch_optional(pool).await
        }
        Store::Sqlite(pool) => {
            sqlx::query_scalar(sql)
                .bind(user_id)
                .fetch_optional(pool)
                .await
        }
    }
    .expect("the personal key")
}

async fn assert_purged_once(
    app: &TestApp,
    tenant_id: &str,
    user_id: &str,
    deadline: DateTime<Utc>,
) {
    let purged = app
        .eventually(8, "the deleted user is purged", || async {
            let user = get_user(app, user_id).await;
            (user["status"] == "purged").then_some(user)
        })
        .await;
    assert!(
        purged["user_principal_name"].is_null() && purged["display_name"].is_null(),
        "a purged user shows no personal details: {purged}"
    );
    // ... but when it was deleted and purged: the purge at the deadline, the deletion before.
    assert_eq!(instant(&purged["restorable_until"]), deadline, "{purged}");
    assert!(instant(&purged["purged_at"]) >= deadline, "{purged}");
    assert!(instant(&purged["deleted_at"]) < deadline, "{purged}");
    let types = history_types(app, user_id).await;
    assert_eq!(
        types.iter().filter(|kind| *kind == "UserPurged").count(),
        1,
        "exactly one UserPurged in the history: {types:?}"
    );
    assert_eq!(purges_in_log(&app.state.store, user_id).await, 1);
    app.eventually(5, "the purged user's key is destroyed", || async {
        (key_destroyed(&app.state.store, user_id).await == Some(true)).then_some(())
    })
    .await;
    app.eventually(5, "the purged user leaves the user list", || async {
        let listed = listed_with_deleted(app, tenant_id).await;
        (!listed.iter().any(|user| user["id"] == json!(user_id))).then_some(())
    })
    .await;
    let firings = purge_firings(&app.state.store, user_id).await;
    assert_eq!(
        firings,
        vec![(projections::instant_key(deadline), "fired".to_owned())],
        "one firing of the purge timer, at the restore window's end"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. The purge fires when the window closes, not an hour before.
// ---------------------------------------------------------------------------------------------

async fn purge_fires_at_thirty_days(backend: Backend) {
    let app = spawn_app_with(backend, true).await;
    let (tenant_id, users) = tenant_with_users(&app, &["megan"]).await;
    let megan = &users[0];
    let deadline = delete_user(&app, megan).await;

    // The delete reached the projections (the GET waits for it): the timer is in place.
    let listed = listed_with_deleted(&app, &tenant_id).await;
    let row = listed
        .iter()
        .find(|user| user["id"] == json!(megan))
        .expect("the deleted user is listed with include_deleted");
    assert_eq!(row["status"], "deleted");
    assert_eq!(instant(&row["restorable_until"]), deadline);
    assert_eq!(
        purge_timer_due(&app.state.store, megan).await,
        Some(projections::instant_key(deadline)),
        "the purge timer falls due when the restore window closes"
    );

    // 29 days 23 hours later: still deleted, still restorable, no purge.
    let now = advance(&app, 29 * DAY + 23 * HOUR).await;
    assert!(now < deadline, "{now} is before the deadline {deadline}");
    tokio::time::sleep(SCHEDULER_GRACE).await;
    let user = get_user(&app, megan).await;
    assert_eq!(user["status"], "deleted", "{user}");
    assert_eq!(instant(&user["restorable_until"]), deadline);
    assert_eq!(user["display_name"], "megan Tester", "{user}");
    let listed = listed_with_deleted(&app, &tenant_id).await;
    let row = listed
        .iter()
        .find(|user| user["id"] == json!(megan))
        .expect("still listed with include_deleted");
    assert_eq!(
        (row["status"].clone(), instant(&row["restorable_until"])),
        (json!("deleted"), deadline)
    );
    assert_eq!(purges_in_log(&app.state.store, megan).await, 0);
    assert!(purge_firings(&app.state.store, megan).await.is_empty());
    assert_eq!(key_destroyed(&app.state.store, megan).await, Some(false));

    // Two more hours: the window has closed; the scheduler purges.
    let now = advance(&app, 2 * HOUR).await;
    assert!(now >= deadline);
    assert_purged_once(&app, &tenant_id, megan, deadline).await;

    // Restoring now is refused by the window that closed (API.md), though the user is gone.
    let (status, body) = restore_user(&app, megan).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("restore_window_expired")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn purge_fires_at_thirty_days_not_before_on_postgres() {
    purge_fires_at_thirty_days(Backend::Postgres).await;
}

#[tokio::test]
async fn purge_fires_at_thirty_days_not_before_on_sqlite() {
    purge_fires_at_thirty_days(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------
// 1b. The restore window is half-open: restorable a minute before, refused at the deadline.
//     The background work is stopped so that the scheduler cannot purge first; a second
//     instance (with its own scheduler) then purges only the user left deleted.
// ---------------------------------------------------------------------------------------------

async fn restore_window_is_half_open(backend: Backend) {
    let app = spawn_app_with(backend, true).await;
    let (tenant_id, users) = tenant_with_users(&app, &["early", "late"]).await;
    let early_deadline = delete_user(&app, &users[0]).await;
    let late_deadline = delete_user(&app, &users[1]).await;
    // Let the projections take in the deletes, then stop every background worker.
    listed_with_deleted(&app, &tenant_id).await;
    app.state.workers.stop().await;

    set_clock(&app, early_deadline - chrono::Duration::seconds(60)).await;
    let (status, body) = restore_user(&app, &users[0]).await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("active")),
        "a minute before the window closes, the user is restorable: {body}"
    );

    set_clock(&app, late_deadline).await;
    let (status, body) = restore_user(&app, &users[1]).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("restore_window_expired")),
        "at exactly 30 days the window is closed: {body}"
    );
    assert_eq!(purges_in_log(&app.state.store, &users[1]).await, 0);

    // Another instance (same store, same sandbox time) does the background work now.
    let second = app.second_instance().await;
    assert!(
        second.state.clock.now() >= late_deadline,
        "the second instance adopts the stored sandbox offset"
    );
    copy_session(&app, &second);
    assert_purged_once(&second, &tenant_id, &users[1], late_deadline).await;
    tokio::time::sleep(SCHEDULER_GRACE).await;
    let early = get_user(&second, &users[0]).await;
    assert_eq!(early["status"], "active", "{early}");
    assert_eq!(purges_in_log(&app.state.store, &users[0]).await, 0);
    second.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn restore_window_is_half_open_on_postgres() {
    restore_window_is_half_open(Backend::Postgres).await;
}

#[tokio::test]
async fn restore_window_is_half_open_on_sqlite() {
    restore_window_is_half_open(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------
// 2. A restore cancels the purge.
// ---------------------------------------------------------------------------------------------

async fn no_purge_after_restore(backend: Backend) {
    let app = spawn_app_with(backend, true).await;
    let (tenant_id, users) = tenant_with_users(&app, &["adele"]).await;
    let adele = &users[0];
    let deadline = delete_user(&app, adele).await;
    listed_with_deleted(&app, &tenant_id).await;
    assert_eq!(
        purge_timer_due(&app.state.store, adele).await,
        Some(projections::instant_key(deadline))
    );
    let (status, restored) = restore_user(&app, adele).await;
    assert_eq!(
        (status, restored["status"].clone()),
        (StatusCode::OK, json!("active")),
        "{restored}"
    );
    // The restore reached the projections: the timer is cancelled.
    let listed = listed_with_deleted(&app, &tenant_id).await;
    let row = listed
        .iter()
        .find(|user| user["id"] == json!(adele))
        .expect("listed");
    assert_eq!(row["status"], "active");
    assert_eq!(purge_timer_due(&app.state.store, adele).await, None);

    advance(&app, 31 * DAY).await;
    tokio::time::sleep(SCHEDULER_GRACE).await;
    let user = get_user(&app, adele).await;
    assert_eq!(
        (user["status"].clone(), user["display_name"].clone()),
        (json!("active"), json!("adele Tester")),
        "{user}"
    );
    let types = history_types(&app, adele).await;
    assert_eq!(
        types,
        ["UserCreated", "UserDeleted", "UserRestored"],
        "no purge after a restore"
    );
    assert_eq!(purges_in_log(&app.state.store, adele).await, 0);
    assert!(purge_firings(&app.state.store, adele).await.is_empty());
    assert_eq!(key_destroyed(&app.state.store, adele).await, Some(false));
    app.stop().await;
}

#[tokio::test]
async fn no_purge_after_restore_on_postgres() {
    no_purge_after_restore(Backend::Postgres).await;
}

#[tokio::test]
async fn no_purge_after_restore_on_sqlite() {
    no_purge_after_restore(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Exactly once across restarts.
//
// `stop()` of the instance that created the database also drops it, so the first instance
// stays up as the database's owner but hands its background work over gracefully
// (`workers.stop()` releases its leases); later "restarts" are full stops and starts of
// further instances over the same database.
// ---------------------------------------------------------------------------------------------

fn copy_session(from: &TestApp, to: &TestApp) {
    use std::sync::atomic::Ordering;
    to.seen_position
        .fetch_max(from.seen_position.load(Ordering::SeqCst), Ordering::SeqCst);
}

async fn purge_exactly_once_across_restarts(backend: Backend) {
    let first = spawn_app_with(backend, true).await;
    let (tenant_id, users) = tenant_with_users(&first, &["lidia"]).await;
    let lidia = &users[0];
    let deadline = delete_user(&first, lidia).await;
    listed_with_deleted(&first, &tenant_id).await;
    // Part of the way on the first instance: the offset is stored.
    advance(&first, 29 * DAY).await;

    // Restart: the next instance comes up, the first hands over its work and goes quiet.
    let second = match backend {
        // One process per SQLite file: stop the first's work before the next starts.
        Backend::Sqlite => {
            first.state.workers.stop().await;
            first.second_instance().await
        }
        Backend::Postgres => {
            let second = first.second_instance().await;
            first.state.workers.stop().await;
            second
        }
    };
    copy_session(&first, &second);
    let offset = second.state.clock.offset().expect("a sandbox clock");
    assert!(
        offset >= chrono::Duration::days(29),
        "the restarted instance adopts the stored sandbox offset ({offset})"
    );
    let user = get_user(&second, lidia).await;
    assert_eq!(user["status"], "deleted", "{user}");

    // Past the deadline on the restarted instance: purged, once.
    let now = advance(&second, DAY + HOUR).await;
    assert!(now >= deadline);
    assert_purged_once(&second, &tenant_id, lidia, deadline).await;

    // Another restart after the purge: nothing fires again.
    let seen = second
        .seen_position
        .load(std::sync::atomic::Ordering::SeqCst);
    let third = match backend {
        Backend::Sqlite => {
            second.stop().await;
            first.second_instance().await
        }
        Backend::Postgres => {
            let third = first.second_instance().await;
            second.stop().await;
            third
        }
    };
    third
        .seen_position
        .store(seen, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(SCHEDULER_GRACE).await;
    advance(&third, DAY).await;
    tokio::time::sleep(SCHEDULER_GRACE).await;
    assert_eq!(purges_in_log(&third.state.store, lidia).await, 1);
    let types = history_types(&third, lidia).await;
    assert_eq!(
        types,
        ["UserCreated", "UserDeleted", "UserPurged"],
        "one purge, nothing after it"
    );
    assert_eq!(purge_firings(&third.state.store, lidia).await.len(), 1);
    third.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn purge_exactly_once_across_restarts_on_postgres() {
    purge_exactly_once_across_restarts(Backend::Postgres).await;
}

#[tokio::test]
async fn purge_exactly_once_across_restarts_on_sqlite() {
    purge_exactly_once_across_restarts(Backend::Sqlite).await;
}
