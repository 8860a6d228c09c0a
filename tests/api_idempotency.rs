//! Idempotency-Key: a retried POST returns the first response and writes nothing new.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{spawn_app, Backend, TestApp};

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
