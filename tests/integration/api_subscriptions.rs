//! Subscriptions over HTTP: purchase rules, seats and their windows on the sandbox clock,
//! lifecycle, billing profiles, scopes.

use crate::support::{spawn_app_with, Backend, TestApp};
use aggregates::catalog::offers::{
    BUSINESS_PREMIUM, ENTERPRISE_E1 as E1, ENTERPRISE_E3 as E3,
    EXCHANGE_ONLINE_ARCHIVING as ARCHIVING,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn call(
    app: &TestApp,
    method: Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.call(method, token, path, body).await
}

async fn subscriptions(backend: Backend) {
    let app = spawn_app_with(backend, true).await;
    let admin = app.admin_token.clone();
    let post = |path: String, body: Value| {
        let admin = admin.clone();
        let app = &app;
        async move { call(app, Method::POST, &admin, &path, Some(body)).await }
    };

    let (_, profile) = post(
        "/v1/billing-profiles".into(),
        json!({"name": "Contoso", "currency": "USD"}),
    )
    .await;
    let (_, other_profile) = post(
        "/v1/billing-profiles".into(),
        json!({"name": "Contoso IT", "currency": "USD"}),
    )
    .await;
    let (_, tenant) = post(
        "/v1/tenants".into(),
        json!({"domain": "contoso.onmicrosoft.com", "name": "Contoso"}),
    )
    .await;
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let purchase = |offer: &str, quantity: i64, trial: bool| json!({"offer_id": offer, "quantity": quantity, "billing_profile_id": profile["id"], "trial": trial});

    // An add-on first is refused; the parent, then the add-on, are bought.
    let (status, body) = post(
        format!("/v1/tenants/{tenant_id}/subscriptions"),
        purchase(ARCHIVING, 2, false),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("parent_offer_required"))
    );
    let (status, bp) = post(
        format!("/v1/tenants/{tenant_id}/subscriptions"),
        purchase(BUSINESS_PREMIUM, 5, false),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bp}");
    assert_eq!(
        (bp["quantity"].clone(), bp["refundable_quantity"].clone()),
        (json!(5), json!(5))
    );
    assert_eq!(bp["status"]["status"], "active");
    assert!(bp["position"].as_i64().unwrap() > 0);
    let bp_id = bp["id"].as_str().unwrap().to_owned();
    let (status, _) = post(
        format!("/v1/tenants/{tenant_id}/subscriptions"),
        purchase(ARCHIVING, 2, false),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Bad purchases: unknown offer, zero seats, a trial of the wrong size, unknown tenant.
    let (status, body) = post(
        format!("/v1/tenants/{tenant_id}/subscriptions"),
        purchase("00000000-0000-0000-0000-000000000000", 1, false),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("offer_id"))
    );
    let (status, body) = post(
        format!("/v1/tenants/{tenant_id}/subscriptions"),
        purchase(BUSINESS_PREMIUM, 0, false),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("quantity"))
    );
    let (status, body) = post(
        format!("/v1/tenants/{tenant_id}/subscriptions"),
        purchase(BUSINESS_PREMIUM, 10, true),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("trial_quantity_fixed"))
    );
    let (status, _) = post(
        "/v1/tenants/00000000-0000-0000-0000-000000000001/subscriptions".into(),
        purchase(BUSINESS_PREMIUM, 1, false),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Seats: add, remove within the window, then the window closes on the sandbox clock.
    let (status, added) = post(
        format!("/v1/subscriptions/{bp_id}/licenses:add"),
        json!({"count": 2}),
    )
    .await;
    assert_eq!(
        (status, added["quantity"].clone()),
        (StatusCode::OK, json!(7))
    );
    assert_eq!(added["batches"].as_array().unwrap().len(), 2);
    let (status, removed) = post(
        format!("/v1/subscriptions/{bp_id}/licenses:remove"),
        json!({"count": 1}),
    )
    .await;
    assert_eq!(
        (status, removed["quantity"].clone()),
        (StatusCode::OK, json!(6))
    );
    let (status, body) = post(
        format!("/v1/subscriptions/{bp_id}/licenses:add"),
        json!({"count": -1}),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("count"))
    );
    let (status, clock) = post(
        "/v1/sandbox/clock".into(),
        json!({"advance_seconds": 169 * 3600}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{clock}");
    let (status, body) = post(
        format!("/v1/subscriptions/{bp_id}/licenses:remove"),
        json!({"count": 1}),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("cancellation_window_closed")),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains("closed at"));
    let (status, read) = call(
        &app,
        Method::GET,
        &admin,
        &format!("/v1/subscriptions/{bp_id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, read["refundable_quantity"].clone()),
        (StatusCode::OK, json!(0))
    );
    let (status, body) = post(format!("/v1/subscriptions/{bp_id}:cancel"), json!({})).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("cancellation_window_closed"))
    );

    // Lifecycle: suspend, reactivate; unknown actions and ids.
    let (status, suspended) = post(format!("/v1/subscriptions/{bp_id}:suspend"), json!({})).await;
    assert_eq!(
        (status, suspended["status"]["status"].clone()),
        (StatusCode::OK, json!("suspended"))
    );
    let (status, active) = post(format!("/v1/subscriptions/{bp_id}:reactivate"), json!({})).await;
    assert_eq!(
        (status, active["status"]["status"].clone()),
        (StatusCode::OK, json!("active"))
    );
    let (status, _) = post(format!("/v1/subscriptions/{bp_id}:explode"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &app,
        Method::GET,
        &admin,
        "/v1/subscriptions/00000000-0000-0000-0000-000000000001",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Upgrades go only where the catalog allows; trials convert with a fresh window.
    let (_, e1) = post(
        format!("/v1/tenants/{tenant_id}/subscriptions"),
        purchase(E1, 3, false),
    )
    .await;
    let e1_id = e1["id"].as_str().unwrap().to_owned();
    let (status, upgraded) = post(
        format!("/v1/subscriptions/{e1_id}:upgrade"),
        json!({"offer_id": E3}),
    )
    .await;
    assert_eq!(
        (status, upgraded["sku"].clone()),
        (StatusCode::OK, json!("ENTERPRISEPACK"))
    );
    let (status, body) = post(
        format!("/v1/subscriptions/{bp_id}:upgrade"),
        json!({"offer_id": E3}),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("upgrade_not_allowed"))
    );
    let (status, body) = post(format!("/v1/subscriptions/{bp_id}:upgrade"), json!({})).await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("offer_id"))
    );
    let (_, fabrikam) = post(
        "/v1/tenants".into(),
        json!({"domain": "fabrikam.onmicrosoft.com", "name": "Fabrikam"}),
    )
    .await;
    let (status, trial) = post(
        format!(
            "/v1/tenants/{}/subscriptions",
            fabrikam["id"].as_str().unwrap()
        ),
        purchase(BUSINESS_PREMIUM, 25, true),
    )
    .await;
    assert_eq!(
        (status, trial["trial"].clone()),
        (StatusCode::CREATED, json!(true))
    );
    let trial_id = trial["id"].as_str().unwrap().to_owned();
    let (status, converted) = post(
        format!("/v1/subscriptions/{trial_id}:convert-trial"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, converted["trial"].clone()),
        (StatusCode::OK, json!(false))
    );
    assert_eq!(converted["refundable_quantity"], 25);

    // Billing profile moves.
    let (status, moved) = call(
        &app,
        Method::PUT,
        &admin,
        &format!("/v1/subscriptions/{bp_id}/billing-profile"),
        Some(json!({"billing_profile_id": other_profile["id"]})),
    )
    .await;
    assert_eq!(
        (status, moved["billing_profile_id"].clone()),
        (StatusCode::OK, other_profile["id"].clone())
    );
    let (status, body) = call(
        &app,
        Method::PUT,
        &admin,
        &format!("/v1/subscriptions/{bp_id}/billing-profile"),
        Some(json!({"billing_profile_id": "00000000-0000-0000-0000-000000000003"})),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("billing_profile_id")
        )
    );

    // Scopes: support reads but cannot command; another tenant's customer admin sees nothing.
    let (_, support) = post("/v1/tokens".into(), json!({"role": "support"})).await;
    let support = support["token"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &app,
        Method::GET,
        &support,
        &format!("/v1/subscriptions/{bp_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &app,
        Method::POST,
        &support,
        &format!("/v1/subscriptions/{bp_id}/licenses:add"),
        Some(json!({"count": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, outsider) = post(
        "/v1/tokens".into(),
        json!({"role": "customer_admin", "tenant_id": fabrikam["id"]}),
    )
    .await;
    let outsider = outsider["token"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &app,
        Method::GET,
        &outsider,
        &format!("/v1/subscriptions/{bp_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &app,
        Method::POST,
        &outsider,
        &format!("/v1/subscriptions/{bp_id}:suspend"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    app.stop().await;
}

#[tokio::test]
async fn subscriptions_over_http_on_postgres() {
    subscriptions(Backend::Postgres).await;
}

#[tokio::test]
async fn subscriptions_over_http_on_sqlite() {
    subscriptions(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_sandbox_clock_route_is_absent_without_the_flag() {
    let app = crate::support::spawn_app(Backend::Sqlite).await;
    let (status, body) = call(
        &app,
        Method::POST,
        &app.admin_token.clone(),
        "/v1/sandbox/clock",
        Some(json!({"advance_seconds": 60})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    app.stop().await;
}
