//! Many clients assigning licences of one tenant at once never get more seats than exist.

use crate::support::{spawn_app, Backend};
use aggregates::catalog::offers::BUSINESS_PREMIUM;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SEATS: i64 = 10;
const CLIENTS: usize = 32;

#[tokio::test]
async fn thirty_two_concurrent_assignments_get_exactly_the_free_seats_on_postgres() {
    let app = spawn_app(Backend::Postgres).await;
    let admin = app.admin_token.clone();
    let send = |method: Method, path: String, body: Value| {
        app.request(method, &path, &admin).json(&body).send()
    };
    let profile: Value = send(
        Method::POST,
        "/v1/billing-profiles".into(),
        json!({"name": "P", "currency": "USD"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let tenant: Value = send(
        Method::POST,
        "/v1/tenants".into(),
        json!({"domain": "contoso.onmicrosoft.com", "name": "Contoso"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let bought = send(
        Method::POST,
        format!("/v1/tenants/{tenant_id}/subscriptions"),
        json!({"offer_id": BUSINESS_PREMIUM, "quantity": SEATS, "billing_profile_id": profile["id"]}),
    )
    .await
    .unwrap();
    assert_eq!(bought.status(), StatusCode::CREATED);
    let mut users = Vec::new();
    for n in 0..CLIENTS {
        let user: Value = send(
            Method::POST,
            format!("/v1/tenants/{tenant_id}/users"),
            json!({"user_principal_name": format!("user{n}@contoso.onmicrosoft.com"), "first_name": "U", "last_name": "N", "display_name": "U N"}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        users.push(user["id"].as_str().unwrap().to_owned());
    }

    let requests = users.iter().map(|user_id| {
        let request = app
            .request(
                Method::POST,
                &format!("/v1/users/{user_id}/licenses"),
                &admin,
            )
            .json(&json!({"add": [BUSINESS_PREMIUM]}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body["code"].as_str().map(str::to_owned))
        }
    });
    let outcomes = futures::future::join_all(requests).await;
    let granted = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    let refused = outcomes
        .iter()
        .filter(|(status, code)| {
            *status == StatusCode::CONFLICT && code.as_deref() == Some("insufficient_licenses")
        })
        .count();
    assert_eq!(granted as i64, SEATS, "{outcomes:?}");
    assert_eq!(
        granted + refused,
        CLIENTS,
        "every other request is refused for lack of seats: {outcomes:?}"
    );

    // The pool agrees: every seat assigned, none twice.
    let (assigned, holders) = {
        let mut holders = 0;
        for user_id in &users {
            let user: Value = app
                .request(Method::GET, &format!("/v1/users/{user_id}"), &admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            holders += user["licenses"].as_array().unwrap().len();
        }
        (granted, holders)
    };
    assert_eq!(assigned, holders);
    app.stop().await;
}

/// The position a command answers covers every event its chain wrote, even when the durable
/// process-manager consumer (woken by the command's first commit) runs a follow-up first and
/// the command's own run of it decides nothing. The consumer wins that race most often when
/// it is idle as a burst begins, so the creations come in bursts with pauses between them;
/// each answer is checked against the log.
#[tokio::test]
async fn a_create_user_answer_covers_its_user_created_event_under_concurrency_on_postgres() {
    const BURSTS: usize = 30;
    let app = spawn_app(Backend::Postgres).await;
    let admin = app.admin_token.clone();
    let (_, tenant_id) = app.billing_profile_and_contoso().await;
    let url = app.url(&format!("/v1/tenants/{tenant_id}/users"));
    let mut answers = Vec::new();
    for burst in 0..BURSTS {
        let creations = (0..CLIENTS).map(|client| {
            let n = burst * CLIENTS + client;
            app.client
                .post(&url)
                .bearer_auth(&admin)
                .json(&json!({
                    "user_principal_name": format!("user{n}@contoso.onmicrosoft.com"),
                    "first_name": "U", "last_name": "N", "display_name": format!("User {n}"),
                }))
                .send()
        });
        for response in futures::future::join_all(creations).await {
            answers.push(response.unwrap().json::<Value>().await.unwrap());
        }
        // Let the process-manager consumer catch up and fall idle again.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let seatledger::store::Store::Postgres(pool) = &app.state.store else {
        unreachable!("a PostgreSQL app")
    };
    let written: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, position FROM events WHERE aggregate_type = 'user' AND event_type = 'UserCreated'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let written: std::collections::HashMap<String, i64> = written.into_iter().collect();
    let short: Vec<String> = answers
        .iter()
        .filter_map(|answer| {
            let id = answer["id"].as_str().expect("a created user");
            let created_at = written[id];
            let answered = answer["position"].as_i64().unwrap();
            (answered < created_at)
                .then(|| format!("{id}: answered {answered}, UserCreated at {created_at}"))
        })
        .collect();
    assert_eq!(answers.len(), BURSTS * CLIENTS);
    assert!(
        short.is_empty(),
        "answers short of their own events: {short:?}"
    );
    app.stop().await;
}
