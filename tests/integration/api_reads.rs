//! Licence availability, user lists and histories over HTTP, with who/when/why in the history.

use crate::support::{spawn_app, Backend, TestApp};
use aggregates::catalog::offers::BUSINESS_PREMIUM;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Reads wait (`?min_position=`) for what the test wrote before: projections are eventually
/// consistent.
async fn call(
    app: &TestApp,
    method: Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.call_with_headers(method, token, path, body, &[("reason", "ticket 4711")])
        .await
}

async fn reads(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    let (profile_id, tenant_id) = app.billing_profile_and_contoso().await;
    let mut subscription_ids = Vec::new();
    for quantity in [1, 1] {
        let (_, bought) = call(&app, Method::POST, &admin, &format!("/v1/tenants/{tenant_id}/subscriptions"),
            Some(json!({"offer_id": BUSINESS_PREMIUM, "quantity": quantity, "billing_profile_id": profile_id}))).await;
        subscription_ids.push(bought["id"].clone());
    }
    let mut user_ids = Vec::new();
    for name in ["megan", "alex", "diego"] {
        let (_, user) = call(&app, Method::POST, &admin, &format!("/v1/tenants/{tenant_id}/users"),
            Some(json!({"user_principal_name": format!("{name}@contoso.onmicrosoft.com"), "first_name": name, "last_name": "X", "display_name": name}))).await;
        user_ids.push(user["id"].as_str().unwrap().to_owned());
    }
    for user_id in &user_ids[..2] {
        let (status, _) = call(
            &app,
            Method::POST,
            &admin,
            &format!("/v1/users/{user_id}/licenses"),
            Some(json!({"add": [BUSINESS_PREMIUM]})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Megan is deleted (seat freed), Diego takes it, Megan is restored: over-assigned by one.
    call(
        &app,
        Method::DELETE,
        &admin,
        &format!("/v1/users/{}", user_ids[0]),
        None,
    )
    .await;
    call(
        &app,
        Method::POST,
        &admin,
        &format!("/v1/users/{}/licenses", user_ids[2]),
        Some(json!({"add": [BUSINESS_PREMIUM]})),
    )
    .await;

    let (status, deleted_list) = call(
        &app,
        Method::GET,
        &admin,
        &format!("/v1/tenants/{tenant_id}/users?include_deleted=true"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let megan = deleted_list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["id"] == json!(user_ids[0]))
        .unwrap()
        .clone();
    assert_eq!(
        (
            megan["status"].clone(),
            megan["user_principal_name"].clone()
        ),
        (json!("deleted"), json!("megan@contoso.onmicrosoft.com"))
    );
    assert!(megan["restorable_until"].is_string());
    let (_, active_list) = call(
        &app,
        Method::GET,
        &admin,
        &format!("/v1/tenants/{tenant_id}/users"),
        None,
    )
    .await;
    assert_eq!(active_list["users"].as_array().unwrap().len(), 2);

    call(
        &app,
        Method::POST,
        &admin,
        &format!("/v1/users/{}:restore", user_ids[0]),
        Some(json!({})),
    )
    .await;
    let (status, licenses) = call(
        &app,
        Method::GET,
        &admin,
        &format!("/v1/tenants/{tenant_id}/licenses"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let row = &licenses["licenses"][0];
    assert_eq!(row["sku"], "O365_BUSINESS_PREMIUM");
    assert_eq!(row["product_name"], "Office 365 Business Premium");
    assert_eq!(
        (
            row["enabled"].clone(),
            row["assigned"].clone(),
            row["available"].clone()
        ),
        (json!(2), json!(3), json!(-1))
    );
    assert_eq!(row["over_assigned"], true);
    let mut behind: Vec<Value> = row["subscription_ids"].as_array().unwrap().clone();
    behind.sort_by_key(|id| id.to_string());
    subscription_ids.sort_by_key(|id| id.to_string());
    assert_eq!(behind, subscription_ids);
    let position = licenses["position"].as_i64().unwrap();
    assert!(position > 0);
    // Read-your-writes: a reached position answers at once, a future one times out with 504.
    let (status, _) = call(
        &app,
        Method::GET,
        &admin,
        &format!("/v1/tenants/{tenant_id}/licenses?min_position={position}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &app,
        Method::GET,
        &admin,
        &format!(
            "/v1/tenants/{tenant_id}/licenses?min_position={}",
            position + 1000
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::GATEWAY_TIMEOUT, json!("position_not_reached"))
    );
    let (status, body) = call(
        &app,
        Method::GET,
        &admin,
        &format!("/v1/tenants/{tenant_id}/licenses?min_position=soon"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("min_position"))
    );

    // The user's history says who, when and why; auditors may read it, password admins not.
    let (_, auditor) = call(
        &app,
        Method::POST,
        &admin,
        "/v1/tokens",
        Some(json!({"role": "auditor"})),
    )
    .await;
    let auditor = auditor["token"].as_str().unwrap().to_owned();
    let (status, history) = call(
        &app,
        Method::GET,
        &auditor,
        &format!("/v1/users/{}/history", user_ids[0]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let events = history["events"].as_array().unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|event| event["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["UserCreated", "UserDeleted", "UserRestored"]);
    let deleted = &events[1];
    assert_eq!(deleted["metadata"]["role"], "admin");
    assert_eq!(deleted["metadata"]["reason"], "ticket 4711");
    assert!(deleted["metadata"]["request_id"].is_string());
    assert!(deleted["metadata"]["token_id"].is_string());
    assert!(deleted["position"].as_i64().unwrap() < events[2]["position"].as_i64().unwrap());
    assert!(
        !history.to_string().contains(&admin),
        "a token leaked into the history"
    );
    let (status, tenant_history) = call(
        &app,
        Method::GET,
        &auditor,
        &format!("/v1/tenants/{tenant_id}/history"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tenant_history["events"][0]["event_type"], "TenantCreated");
    let (status, _) = call(
        &app,
        Method::GET,
        &auditor,
        &format!(
            "/v1/subscriptions/{}/history",
            subscription_ids[0].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, password_admin) = call(
        &app,
        Method::POST,
        &admin,
        "/v1/tokens",
        Some(json!({"role": "password_admin", "tenant_id": tenant_id})),
    )
    .await;
    let (status, _) = call(
        &app,
        Method::GET,
        password_admin["token"].as_str().unwrap(),
        &format!("/v1/users/{}/history", user_ids[0]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &app,
        Method::GET,
        &auditor,
        "/v1/tenants/00000000-0000-0000-0000-000000000001/licenses",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    app.stop().await;
}

#[tokio::test]
async fn licences_users_and_histories_on_postgres() {
    reads(Backend::Postgres).await;
}

#[tokio::test]
async fn licences_users_and_histories_on_sqlite() {
    reads(Backend::Sqlite).await;
}

/// A user list longer than the pages it is read in (500 users) lists every user once, in key
/// order, with their details, as one JSON document.
async fn a_long_user_list(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    let (_, tenant_id) = app.billing_profile_and_contoso().await;
    let path = format!("/v1/tenants/{tenant_id}/users");
    let mut created = Vec::new();
    for wave in 0..21 {
        let requests = (0..25).map(|n| {
            let name = format!("user{}", wave * 25 + n);
            call(
                &app,
                Method::POST,
                &admin,
                &path,
                Some(
                    json!({"user_principal_name": format!("{name}@contoso.onmicrosoft.com"),
                    "first_name": name, "last_name": "X", "display_name": name}),
                ),
            )
        });
        for (status, user) in futures::future::join_all(requests).await {
            assert_eq!(status, StatusCode::CREATED, "{user}");
            created.push((
                user["id"].as_str().unwrap().to_owned(),
                user["user_principal_name"].clone(),
            ));
        }
    }
    let (status, list) = call(&app, Method::GET, &admin, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed: Vec<(String, Value)> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| {
            (
                user["id"].as_str().unwrap().to_owned(),
                user["user_principal_name"].clone(),
            )
        })
        .collect();
    created.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed.len(), created.len(), "every user once");
    assert_eq!(listed, created, "in key order, each with its own details");
    assert_eq!(list["tenant_id"], json!(tenant_id));
    assert!(list["position"].as_i64().unwrap() > 0);
    assert!(list["as_of"].is_null());
    app.stop().await;
}

#[tokio::test]
async fn a_user_list_longer_than_a_page_on_postgres() {
    a_long_user_list(Backend::Postgres).await;
}

#[tokio::test]
async fn a_user_list_longer_than_a_page_on_sqlite() {
    a_long_user_list(Backend::Sqlite).await;
}
