//! Idempotency-Key: a retried POST returns the first response and writes nothing new.

use crate::support::{
    spawn_app, spawn_app_behind, spawn_app_with, Backend, PrivateCluster, StoreOutage, TestApp,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn post_with_key(
    app: &TestApp,
    token: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value, bool) {
    let response = app
        .request(Method::POST, "/v1/tenants", token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (status, response.json().await.unwrap(), replayed)
}

async fn event_count(app: &TestApp) -> i64 {
    match &app.fresh.store {
        seatledger::store::Store::Postgres(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(pool)
                .await
                .unwrap()
        }
        seatledger::store::Store::Sqlite(pool) => sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await
            .unwrap(),
    }
}

async fn idempotency(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    let body = json!({"domain": "contoso.onmicrosoft.com", "name": "Contoso"});

    let (status, first, replayed) =
        post_with_key(&app, &admin, "create-contoso", body.clone()).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{first}");
    let events_after_first = event_count(&app).await;
    let (status, second, replayed) =
        post_with_key(&app, &admin, "create-contoso", body.clone()).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(first, second, "the retry returns the first response");
    assert_eq!(
        event_count(&app).await,
        events_after_first,
        "the retry wrote nothing"
    );

    // Same key, another body: refused.
    let (status, refused, _) = post_with_key(
        &app,
        &admin,
        "create-contoso",
        json!({"domain": "other.onmicrosoft.com", "name": "Other"}),
    )
    .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("Idempotency-Key"))
    );

    // A refusal is replayed too, as the same problem.
    let bad = json!({"domain": "no dots", "name": "X"});
    let (status, first_refusal, _) = post_with_key(&app, &admin, "bad-domain", bad.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, second_refusal, replayed) = post_with_key(&app, &admin, "bad-domain", bad).await;
    assert_eq!(
        (status, replayed, first_refusal),
        (StatusCode::UNPROCESSABLE_ENTITY, true, second_refusal)
    );

    // Keys belong to their caller: another token's same key is another request.
    let issued: Value = app
        .request(Method::POST, "/v1/tokens", &admin)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (status, other, replayed) = post_with_key(
        &app,
        issued["token"].as_str().unwrap(),
        "create-contoso",
        body,
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    assert_ne!(other["id"], first["id"]);

    app.stop().await;
}

#[tokio::test]
async fn idempotency_keys_on_postgres() {
    idempotency(Backend::Postgres).await;
}

#[tokio::test]
async fn idempotency_keys_on_sqlite() {
    idempotency(Backend::Sqlite).await;
}

/// A keyed POST to any path: status, body, whether it was replayed.
async fn keyed(
    app: &TestApp,
    token: &str,
    path: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value, bool) {
    let response = app
        .request(Method::POST, path, token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        replayed,
    )
}

/// Every stored answer, as the database holds it.
async fn stored_answers(app: &TestApp) -> Vec<String> {
    let bodies: Vec<Option<Vec<u8>>> = match &app.fresh.store {
        seatledger::store::Store::Postgres(pool) => {
            sqlx::query_scalar("SELECT body FROM idempotency_keys")
                .fetch_all(pool)
                .await
                .unwrap()
        }
        seatledger::store::Store::Sqlite(pool) => {
            sqlx::query_scalar("SELECT body FROM idempotency_keys")
                .fetch_all(pool)
                .await
                .unwrap()
        }
    };
    bodies
        .into_iter()
        .flatten()
        .map(|body| String::from_utf8_lossy(&body).into_owned())
        .collect()
}

/// Runs `sql` (one statement, no parameters) on the test's database.
async fn execute(app: &TestApp, sql: &str) {
    match &app.fresh.store {
        seatledger::store::Store::Postgres(pool) => {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
        seatledger::store::Store::Sqlite(pool) => {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
    }
}

async fn secrets_are_never_kept_and_personal_data_goes_with_the_purge(backend: Backend) {
    let app = spawn_app_with(backend, true).await;
    let admin = app.admin_token.clone();

    // An issued token is shown once: the replay names the token's id and says so.
    let (status, issued, _) = keyed(
        &app,
        &admin,
        "/v1/tokens",
        "issue-support",
        json!({"role": "support"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let token = issued["token"].as_str().unwrap().to_owned();
    let (status, replayed, was_replayed) = keyed(
        &app,
        &admin,
        "/v1/tokens",
        "issue-support",
        json!({"role": "support"}),
    )
    .await;
    assert_eq!((status, was_replayed), (StatusCode::CREATED, true));
    assert_eq!(replayed["token_id"], issued["token_id"]);
    assert!(replayed["token"].is_null(), "{replayed}");
    assert!(
        replayed["secret_withheld"]
            .as_str()
            .is_some_and(|text| text.contains("shown once")),
        "{replayed}"
    );

    // A user's names are in the answer, and in the replay, but never in clear in the store.
    let (_, tenant_id) = app.billing_profile_and_contoso().await;
    let new_user = json!({
        "user_principal_name": "megan.bowen@contoso.onmicrosoft.com",
        "first_name": "Megan",
        "last_name": "Bowen",
        "display_name": "Megan Bowen",
        "location": "Redmond",
    });
    let users = format!("/v1/tenants/{tenant_id}/users");
    let (status, created, _) = keyed(&app, &admin, &users, "create-megan", new_user.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let user_id = created["id"].as_str().unwrap().to_owned();
    let (status, replayed, was_replayed) =
        keyed(&app, &admin, &users, "create-megan", new_user.clone()).await;
    assert_eq!((status, was_replayed), (StatusCode::CREATED, true));
    assert_eq!(replayed, created, "the replay unseals what the answer said");

    // A temporary password is shown once too.
    let reset = format!("/v1/users/{user_id}:reset-password");
    let (status, first_reset, _) = keyed(&app, &admin, &reset, "reset-1", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{first_reset}");
    let password = first_reset["temporary_password"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, replayed_reset, was_replayed) = keyed(&app, &admin, &reset, "reset-1", json!({})).await;
    assert!(was_replayed);
    assert!(
        replayed_reset["temporary_password"].is_null(),
        "{replayed_reset}"
    );
    assert_eq!(replayed_reset["user_id"], json!(user_id));

    let stored = stored_answers(&app).await.join("\n");
    for secret_or_personal in [
        token.as_str(),
        password.as_str(),
        "Megan",
        "Bowen",
        "megan.bowen",
        "Redmond",
    ] {
        assert!(
            !stored.contains(secret_or_personal),
            "'{secret_or_personal}' is stored in clear: {stored}"
        );
    }

    // Purged 30 days after deletion: the stored answer's personal data is unreadable too.
    let (status, _) = app
        .call(
            Method::DELETE,
            &admin,
            &format!("/v1/users/{user_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(
            Method::POST,
            &admin,
            "/v1/sandbox/clock",
            Some(json!({"advance_seconds": 31 * 86_400})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.eventually(10, "the user is purged", || async {
        let (_, user) = app
            .call(Method::GET, &admin, &format!("/v1/users/{user_id}"), None)
            .await;
        (user["status"] == "purged").then_some(())
    })
    .await;
    // The key is destroyed by the shredder, which follows the purge in the log.
    let (status, after_purge, was_replayed) = app
        .eventually(10, "the purged user's key is destroyed", || async {
            let replay = keyed(&app, &admin, &users, "create-megan", new_user.clone()).await;
            replay.1["display_name"].is_null().then_some(replay)
        })
        .await;
    assert_eq!((status, was_replayed), (StatusCode::CREATED, true));
    assert_eq!(after_purge["id"], json!(user_id));
    for field in [
        "user_principal_name",
        "first_name",
        "last_name",
        "display_name",
        "location",
    ] {
        assert!(
            after_purge[field].is_null(),
            "{field} readable after purge: {after_purge}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn stored_answers_keep_no_secret_and_no_readable_personal_data_on_postgres() {
    secrets_are_never_kept_and_personal_data_goes_with_the_purge(Backend::Postgres).await;
}

#[tokio::test]
async fn stored_answers_keep_no_secret_and_no_readable_personal_data_on_sqlite() {
    secrets_are_never_kept_and_personal_data_goes_with_the_purge(Backend::Sqlite).await;
}

async fn expiry_and_lost_answers(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    let body = json!({"name": "Northwind"});

    // An answer older than the retention (24 h by default) is gone: the key runs anew.
    let (status, first, _) = keyed(&app, &admin, "/v1/resellers", "old-key", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let long_ago = match backend {
        Backend::Postgres => "now() - interval '25 hours'",
        Backend::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-25 hours')",
    };
    execute(
        &app,
        &format!("UPDATE idempotency_keys SET created_at = {long_ago} WHERE key = 'old-key'"),
    )
    .await;
    let (status, again, replayed) =
        keyed(&app, &admin, "/v1/resellers", "old-key", body.clone()).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    assert_ne!(again["id"], first["id"]);

    // The first attempt committed but its answer was lost (a 5xx, a crash): the retry finds
    // what it wrote instead of running the command twice.
    let (status, committed, _) = keyed(&app, &admin, "/v1/resellers", "lost", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    execute(
        &app,
        "UPDATE idempotency_keys SET status = NULL, body = NULL, unsettled = true WHERE key = 'lost'",
    )
    .await;
    let events_before = event_count(&app).await;
    let (status, recovered, replayed) =
        keyed(&app, &admin, "/v1/resellers", "lost", body.clone()).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{recovered}");
    assert_eq!(recovered["outcome"], json!("committed"));
    assert_eq!(recovered["position"], committed["position"]);
    assert_eq!(
        recovered["events"][0]["aggregate_id"], committed["id"],
        "{recovered}"
    );
    assert_eq!(event_count(&app).await, events_before, "nothing ran twice");
    let (_, once_more, replayed) = keyed(&app, &admin, "/v1/resellers", "lost", body.clone()).await;
    assert!(replayed);
    assert_eq!(
        once_more, recovered,
        "the recovered answer is the key's answer from now on"
    );

    // The first attempt wrote nothing before it failed: the retry runs the command.
    let (status, _, _) = keyed(&app, &admin, "/v1/resellers", "failed", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    execute(
        &app,
        "UPDATE idempotency_keys SET status = NULL, body = NULL, unsettled = true, attempt = 'an attempt that wrote nothing' WHERE key = 'failed'",
    )
    .await;
    let events_before = event_count(&app).await;
    let (status, ran, replayed) = keyed(&app, &admin, "/v1/resellers", "failed", body).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{ran}");
    assert_eq!(event_count(&app).await, events_before + 1);
    app.stop().await;
}

#[tokio::test]
async fn keys_expire_and_lost_answers_are_found_not_rerun_on_postgres() {
    expiry_and_lost_answers(Backend::Postgres).await;
}

#[tokio::test]
async fn keys_expire_and_lost_answers_are_found_not_rerun_on_sqlite() {
    expiry_and_lost_answers(Backend::Sqlite).await;
}

/// Keyed commands from four clients, each retried with its key until it lands, while the
/// store goes away (`outage`) and comes back (`recovery`) under them: every answer during the
/// outage is a 503 with `Retry-After` (never a 500, never "not found"), reads and readiness
/// say 503 too, and afterwards every command has landed exactly once.
async fn keyed_commands_across_an_outage(
    app: &TestApp,
    outage: impl FnOnce() + Send + 'static,
    recovery: impl FnOnce() + Send + 'static,
) {
    let admin = app.admin_token.clone();
    let (_, tenant_id) = app.billing_profile_and_contoso().await;
    let commands = 24;
    let clients = 4;
    let unavailable = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (http, url, admin, unavailable) = (
            app.client.clone(),
            app.url("/v1/resellers"),
            admin.clone(),
            unavailable.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for n in (client..commands).step_by(clients) {
                let key = format!("reseller-{n}");
                loop {
                    let response = http
                        .post(&url)
                        .bearer_auth(&admin)
                        .header("idempotency-key", &key)
                        .json(&json!({"name": format!("Reseller {n}")}))
                        .send()
                        .await
                        .expect("the service answers during the outage");
                    let status = response.status();
                    let retry_after = response.headers().get("retry-after").cloned();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    assert!(
                        status != StatusCode::INTERNAL_SERVER_ERROR
                            && status != StatusCode::NOT_FOUND,
                        "an outage is not a {status}: {body}"
                    );
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        assert!(retry_after.is_some(), "a 503 says when to retry: {body}");
                        assert_eq!(body["code"], json!("store_unavailable"));
                        unavailable.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    if status.is_success() {
                        break;
                    }
                    // 503 (store away) or 409 (the key's attempt still settling): retry.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tokio::task::spawn_blocking(outage).await.unwrap();
    // A read during the outage is a 503 as well, not a 404 or a 500; so is readiness.
    let response = app
        .request(Method::GET, &format!("/v1/tenants/{tenant_id}"), &admin)
        .send()
        .await
        .unwrap();
    let (status, retry_after) = (
        response.status(),
        response.headers().contains_key("retry-after"),
    );
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(retry_after, "{body}");
    let readiness = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(readiness.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    tokio::task::spawn_blocking(recovery).await.unwrap();
    for task in tasks {
        task.await.expect("every client finished");
    }
    assert!(
        unavailable.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the outage was seen by the clients"
    );
    let seatledger::store::Store::Postgres(pool) = &app.state.store else {
        unreachable!("outages are staged on PostgreSQL")
    };
    let created: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'reseller' AND event_type = 'ResellerCreated'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        created, commands as i64,
        "every command landed exactly once"
    );
}

/// The network to PostgreSQL drops (open connections cut, new ones refused) and comes back.
#[tokio::test]
async fn a_store_outage_answers_503_and_keyed_retries_land_exactly_once() {
    crate::support::captured_logs();
    let outage = std::sync::Arc::new(StoreOutage::start().await);
    let app = spawn_app_behind(&outage).await;
    let (cut, restore) = (outage.clone(), outage.clone());
    keyed_commands_across_an_outage(&app, move || cut.cut(), move || restore.restore()).await;
    app.stop().await;
}

/// PostgreSQL itself crashes (every backend killed) and restarts with crash recovery.
#[tokio::test]
async fn a_postgres_restart_under_load_answers_503_and_keyed_retries_land_exactly_once() {
    let cluster = std::sync::Arc::new(PrivateCluster::start());
    let app = cluster.spawn_app().await;
    let (stop, start) = (cluster.clone(), cluster.clone());
    keyed_commands_across_an_outage(
        &app,
        move || stop.stop_immediately(),
        move || start.start_again(),
    )
    .await;
    app.stop().await;
}
