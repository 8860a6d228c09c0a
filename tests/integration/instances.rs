//! Several instances of the service over one PostgreSQL database: all of them take commands,
//! the background work runs on one at a time and moves to a survivor when its holder crashes,
//! timers fire once however many schedulers stand by, and the sandbox time is one for all.

use aggregates::catalog::offers::BUSINESS_PREMIUM;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::{spawn_app_with, Backend, TestApp, POSTGRES_ADMIN_URL};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use seatledger::store::Store;
use serde_json::{json, Value};

const DAY: i64 = 24 * 3600;
/// Long enough for a scheduler (polling every 200 ms) to have looked several times.
const SCHEDULER_GRACE: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn pg(store: &Store) -> &sqlx::PgPool {
    match store {
        Store::Postgres(pool) => pool,
        Store::Sqlite(_) => panic!("these tests run on PostgreSQL"),
    }
}

/// Lets `to` read its own writes and those made through `from`.
fn share_session(from: &TestApp, to: &TestApp) {
    to.seen_position
        .fetch_max(from.seen_position.load(Ordering::SeqCst), Ordering::SeqCst);
}

/// Drops the test database of an instance whose owner was killed (a kill removes nothing).
async fn drop_database(url: &str) {
    use sqlx::Connection;
    let name = url.rsplit('/').next().expect("a database name");
    let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("DROP DATABASE of the test");
}

async fn create_user(app: &TestApp, tenant_id: &str, name: &str) -> Value {
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
    user
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

async fn delete_user(app: &TestApp, user_id: &str) -> Value {
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
    deleted
}

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

fn instant(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(
        value
            .as_str()
            .unwrap_or_else(|| panic!("an instant: {value}")),
    )
    .expect("an RFC 3339 instant")
    .with_timezone(&Utc)
}

/// The tenant's user list (GET with the instance's session position), answered or not.
async fn user_list(app: &TestApp, tenant_id: &str) -> (StatusCode, Value) {
    app.call(
        Method::GET,
        &app.admin_token,
        &format!("/v1/tenants/{tenant_id}/users?include_deleted=true"),
        None,
    )
    .await
}

fn listed_ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(id)
        .collect();
    ids.sort();
    ids
}

async fn purges_in_log(store: &Store, user_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'UserPurged' AND aggregate_id = $1",
    )
    .bind(user_id)
    .fetch_one(pg(store))
    .await
    .expect("count of UserPurged")
}

async fn purge_firings(store: &Store, user_id: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT due_at, outcome FROM timer_firings WHERE timer_key = $1")
        .bind(projections::timers::row_key(&format!(
            "purge-user/{user_id}"
        )))
        .fetch_all(pg(store))
        .await
        .expect("the timer firings")
}

// ---------------------------------------------------------------------------------------------
// 4. Both instances take commands; when the one holding the background work crashes, the other
//    takes its leases over and its reads catch up.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_survivor_takes_over_the_background_work_of_a_crashed_instance() {
    let first = spawn_app_with(Backend::Postgres, false).await;
    let second = first.second_instance().await;
    let url = second.fresh.url.clone();
    let (profile_id, tenant_id) = first.billing_profile_and_contoso().await;

    // Commands through either instance.
    let megan = id(&create_user(&first, &tenant_id, "megan").await);
    let mut expected = vec![
        megan.clone(),
        id(&create_user(&second, &tenant_id, "alex").await),
        id(&create_user(&first, &tenant_id, "diego").await),
        id(&create_user(&second, &tenant_id, "lidia").await),
    ];
    expected.sort();
    // Each reads both instances' writes (the first holds the projections' leases).
    share_session(&first, &second);
    share_session(&second, &first);
    for app in [&first, &second] {
        let (status, list) = user_list(app, &tenant_id).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(listed_ids(&list), expected);
    }

    // The first instance crashes with every lease it held.
    first.kill().await;
    let crashed_at = tokio::time::Instant::now();

    // The second goes on taking commands...
    let (status, bought) = second
        .call(
            Method::POST,
            &second.admin_token,
            &format!("/v1/tenants/{tenant_id}/subscriptions"),
            Some(json!({"offer_id": BUSINESS_PREMIUM, "quantity": 3, "billing_profile_id": profile_id})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bought}");
    let patti = id(&create_user(&second, &tenant_id, "patti").await);
    expected.push(patti.clone());
    expected.sort();
    let (status, assigned) = second
        .call(
            Method::POST,
            &second.admin_token,
            &format!("/v1/users/{patti}/licenses"),
            Some(json!({"add": [BUSINESS_PREMIUM]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{assigned}");
    delete_user(&second, &megan).await;

    // ...and its projections reach its last write within the bounded wait: 200, not 504.
    let (status, list) = user_list(&second, &tenant_id).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the survivor's projections did not catch up after {:?}: {list}",
        crashed_at.elapsed()
    );
    assert_eq!(listed_ids(&list), expected);
    let deleted = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["id"] == json!(megan))
        .unwrap();
    assert_eq!(deleted["status"], "deleted");
    let (status, licenses) = second
        .call(
            Method::GET,
            &second.admin_token,
            &format!("/v1/tenants/{tenant_id}/licenses"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{licenses}");
    let rows = licenses["licenses"].as_array().expect("licence rows");
    assert_eq!(rows.len(), 1, "{licenses}");
    assert_eq!(
        (
            rows[0]["sku"].clone(),
            rows[0]["enabled"].clone(),
            rows[0]["assigned"].clone(),
            rows[0]["available"].clone(),
        ),
        (json!("O365_BUSINESS_PREMIUM"), json!(3), json!(1), json!(2)),
        "{licenses}"
    );
    eprintln!(
        "survivor's reads caught up {:?} after the crash",
        crashed_at.elapsed()
    );

    // Readiness on the survivor: every consumer caught up.
    let ready = second
        .eventually(10, "the survivor reports ready", || async {
            let response = second
                .client
                .get(second.url("/readyz"))
                .send()
                .await
                .expect("readyz answers");
            let status = response.status();
            let body: Value = response.json().await.expect("a JSON body");
            (status == StatusCode::OK).then_some(body)
        })
        .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let consumers = ready["consumers"].as_object().expect("consumers");
    assert_eq!(consumers.len(), seatledger::workers::consumers().len());
    let log_end = ready["log_end"].as_i64().expect("log_end");
    for (name, consumer) in consumers {
        assert_eq!(consumer["caught_up"], true, "{name}: {consumer}");
        assert_eq!(consumer["lag_events"], 0, "{name}: {consumer}");
        assert_eq!(consumer["position"], log_end, "{name}: {consumer}");
    }

    second.stop().await;
    drop_database(&url).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Two schedulers over one database purge each user exactly once.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_instances_purge_each_user_once() {
    let first = spawn_app_with(Backend::Postgres, true).await;
    let second = first.second_instance().await;
    let (_, tenant_id) = first.billing_profile_and_contoso().await;
    let mut users = Vec::new();
    for n in 0..10 {
        let via = if n % 2 == 0 { &first } else { &second };
        users.push(id(&create_user(via, &tenant_id, &format!("user{n}")).await));
    }
    for (n, user_id) in users.iter().enumerate() {
        let via = if n % 2 == 0 { &second } else { &first };
        delete_user(via, user_id).await;
    }
    // Every delete (and so every purge timer) reached the projections.
    share_session(&second, &first);
    let (status, list) = user_list(&first, &tenant_id).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["users"].as_array().unwrap().len(), 10);

    // Past the windows, moved through the instance that does not hold the scheduler's lease.
    advance(&second, 30 * DAY + 3600).await;
    let store = first.state.store.clone();
    first
        .eventually(10, "every deleted user is purged", || async {
            let purged: i64 =
                sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserPurged'")
                    .fetch_one(pg(&store))
                    .await
                    .unwrap();
            (purged >= 10).then_some(())
        })
        .await;
    // Give a second scheduler every chance to fire again.
    tokio::time::sleep(SCHEDULER_GRACE).await;
    for user_id in &users {
        assert_eq!(
            purges_in_log(&store, user_id).await,
            1,
            "user {user_id} purged exactly once"
        );
        let firings = purge_firings(&store, user_id).await;
        assert_eq!(firings.len(), 1, "one firing for {user_id}: {firings:?}");
        assert_eq!(firings[0].1, "fired", "{firings:?}");
    }
    let total_firings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM timer_firings WHERE timer_key LIKE $1")
            .bind(projections::timers::row_key("purge-user/%"))
            .fetch_one(pg(&store))
            .await
            .unwrap();
    assert_eq!(total_firings, 10);
    // Every key is destroyed and every purged user has left the list, seen through either.
    first
        .eventually(5, "every purged user's key is destroyed", || async {
            let destroyed: i64 =
                sqlx::query_scalar("SELECT count(*) FROM personal_keys WHERE key_material IS NULL")
                    .fetch_one(pg(&store))
                    .await
                    .unwrap();
            (destroyed == 10).then_some(())
        })
        .await;
    for app in [&first, &second] {
        app.eventually(5, "the purged users leave the list", || async {
            let (status, list) = user_list(app, &tenant_id).await;
            (status == StatusCode::OK && list["users"].as_array().unwrap().is_empty()).then_some(())
        })
        .await;
    }
    second.stop().await;
    first.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. One sandbox time for every instance: a command through an instance that did not move the
//    clock (and does not hold the scheduler's lease) carries the moved time too (README:
//    "the sandbox clock ..., whose offset is stored and shared by every instance").
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_instance_stamps_commands_with_the_shared_sandbox_time() {
    let first = spawn_app_with(Backend::Postgres, true).await;
    let second = first.second_instance().await;
    let (_, tenant_id) = first.billing_profile_and_contoso().await;
    let now = advance(&first, 31 * DAY).await;

    // A user created and deleted through the other instance after the clock moved.
    let created = create_user(&second, &tenant_id, "nestor").await;
    let nestor = id(&created);
    let deleted = delete_user(&second, &nestor).await;
    let deleted_at = instant(&deleted["deleted_at"]);
    let restorable_until = instant(&deleted["restorable_until"]);
    // A restore window opened then lasts 30 days of the shared clock: nothing is purged now.
    tokio::time::sleep(SCHEDULER_GRACE).await;
    let purged = purges_in_log(&first.state.store, &nestor).await;
    let (_, user) = second
        .call(
            Method::GET,
            &second.admin_token,
            &format!("/v1/users/{nestor}"),
            None,
        )
        .await;
    second.stop().await;
    first.stop().await;

    let created_at = instant(&created["created_at"]);
    let observed = format!(
        "the sandbox clock read {now} after the first instance moved it; through the second \
         instance the user was created at {created_at}, deleted at {deleted_at} (restorable \
         until {restorable_until}); 1.5 s later the log holds {purged} UserPurged for it and \
         it reads {}",
        user["status"]
    );
    assert!(
        created_at >= now && deleted_at >= now,
        "commands through the second instance carry a stale sandbox time: {observed}"
    );
    assert_eq!(
        (purged, user["status"].clone()),
        (0, json!("deleted")),
        "a user deleted a moment ago was purged at once: {observed}"
    );
}
