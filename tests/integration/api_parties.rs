//! Resellers, billing profiles and tenants over HTTP: creation, reads, validation and scopes.

use crate::support::{spawn_app, Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .request(Method::POST, path, token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn get(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let response = app.request(Method::GET, path, token).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn token(app: &TestApp, body: Value) -> String {
    let (status, issued) = post(app, &app.admin_token, "/v1/tokens", body).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    issued["token"].as_str().unwrap().to_owned()
}

async fn parties(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();

    // Resellers.
    let (status, reseller) = post(
        &app,
        &admin,
        "/v1/resellers",
        json!({"name": "Northwind Traders"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{reseller}");
    let reseller_id = reseller["id"].as_str().unwrap().to_owned();
    assert!(reseller["position"].as_i64().unwrap() > 0);
    let (status, read) = get(&app, &admin, &format!("/v1/resellers/{reseller_id}")).await;
    assert_eq!(
        (status, read["name"].clone()),
        (StatusCode::OK, json!("Northwind Traders"))
    );
    let (status, body) = post(&app, &admin, "/v1/resellers", json!({"name": "  "})).await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("name"))
    );
    let (status, _) = get(
        &app,
        &admin,
        "/v1/resellers/00000000-0000-0000-0000-000000000001",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Billing profiles, also by a reseller for itself.
    let reseller_token = token(
        &app,
        json!({"role": "reseller", "reseller_id": reseller_id}),
    )
    .await;
    let (status, profile) = post(
        &app,
        &reseller_token,
        "/v1/billing-profiles",
        json!({"name": "Northwind EUR", "currency": "eur"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{profile}");
    assert_eq!(profile["currency"], "EUR");
    assert_eq!(profile["reseller_id"], json!(reseller_id));
    let profile_id = profile["id"].as_str().unwrap().to_owned();
    let (status, read) = get(
        &app,
        &reseller_token,
        &format!("/v1/billing-profiles/{profile_id}"),
    )
    .await;
    assert_eq!(
        (status, read["name"].clone()),
        (StatusCode::OK, json!("Northwind EUR"))
    );
    let (status, body) = post(
        &app,
        &admin,
        "/v1/billing-profiles",
        json!({"name": "X", "currency": "EURO"}),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("currency"))
    );
    let (status, body) = post(
        &app,
        &admin,
        "/v1/billing-profiles",
        json!({"name": "X", "currency": "USD", "reseller_id": "00000000-0000-0000-0000-000000000009"}),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("reseller_id"))
    );

    // Tenants: a reseller creates under itself only.
    let (status, tenant) = post(
        &app,
        &reseller_token,
        "/v1/tenants",
        json!({"domain": "Contoso.onmicrosoft.com", "name": "Contoso"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    assert_eq!(tenant["domain"], "contoso.onmicrosoft.com");
    assert_eq!(tenant["reseller_id"], json!(reseller_id));
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let (status, _) = post(
        &app,
        &reseller_token,
        "/v1/tenants",
        json!({"domain": "fabrikam.onmicrosoft.com", "name": "Fabrikam", "reseller_id": "00000000-0000-0000-0000-000000000009"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = post(
        &app,
        &admin,
        "/v1/tenants",
        json!({"domain": "no dots", "name": "X"}),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("domain"))
    );
    let (status, body) = post(&app, &admin, "/v1/tenants", json!({"name": "X"})).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("invalid_value"))
    );
    let (status, direct) = post(
        &app,
        &admin,
        "/v1/tenants",
        json!({"domain": "adatum.onmicrosoft.com", "name": "Adatum"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let direct_id = direct["id"].as_str().unwrap().to_owned();

    // Who sees which tenant: others' tenants are 404, not 403, so existence does not leak.
    let other_reseller = {
        let (_, other) = post(&app, &admin, "/v1/resellers", json!({"name": "Other"})).await;
        token(
            &app,
            json!({"role": "reseller", "reseller_id": other["id"]}),
        )
        .await
    };
    let customer = token(
        &app,
        json!({"role": "customer_admin", "tenant_id": tenant_id}),
    )
    .await;
    let support = token(&app, json!({"role": "support"})).await;
    for (who, token, path, expected) in [
        ("admin", &admin, &tenant_id, StatusCode::OK),
        ("support", &support, &tenant_id, StatusCode::OK),
        ("its reseller", &reseller_token, &tenant_id, StatusCode::OK),
        (
            "another reseller",
            &other_reseller,
            &tenant_id,
            StatusCode::NOT_FOUND,
        ),
        ("its customer admin", &customer, &tenant_id, StatusCode::OK),
        (
            "a customer admin of another tenant",
            &customer,
            &direct_id,
            StatusCode::NOT_FOUND,
        ),
        (
            "a reseller, for a direct tenant",
            &reseller_token,
            &direct_id,
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, body) = get(&app, token, &format!("/v1/tenants/{path}")).await;
        assert_eq!(status, expected, "{who}: {body}");
    }
    let (status, body) = get(&app, &admin, "/v1/tenants/not-a-uuid").await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("tenant_id"))
    );
    let (status, _) = post(
        &app,
        &support,
        "/v1/tenants",
        json!({"domain": "x.onmicrosoft.com", "name": "X"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    app.stop().await;
}

#[tokio::test]
async fn resellers_billing_profiles_and_tenants_on_postgres() {
    parties(Backend::Postgres).await;
}

#[tokio::test]
async fn resellers_billing_profiles_and_tenants_on_sqlite() {
    parties(Backend::Sqlite).await;
}
