//! Health, authentication, tokens and the catalog over HTTP, on both backends.

use crate::support::{spawn_app, Backend};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn problem(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    body
}

async fn basics(backend: Backend) {
    let app = spawn_app(backend).await;

    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");

    // No token, a wrong token: 401.
    let anonymous = app.client.get(app.url("/v1/offers")).send().await.unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong = app
        .request(Method::GET, "/v1/offers", "nope")
        .send()
        .await
        .unwrap();
    problem(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // The default catalog is served, with real ids and decimal-string prices.
    let offers: Value = app
        .request(Method::GET, "/v1/offers", &app.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(offers["offers"].as_array().unwrap().len(), 8);
    let bp: Value = app
        .request(
            Method::GET,
            "/v1/offers/031C9E47-4802-4248-838E-778FB1D2CC05",
            &app.admin_token,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bp["offer"]["provisioning_id"], "O365_BUSINESS_PREMIUM");
    assert_eq!(
        bp["offer"]["unit_price"],
        json!({"amount": "12.50", "currency": "USD"})
    );
    let unknown = app
        .request(
            Method::GET,
            "/v1/offers/00000000-0000-0000-0000-000000000000",
            &app.admin_token,
        )
        .send()
        .await
        .unwrap();
    problem(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let not_a_guid = app
        .request(Method::GET, "/v1/offers/e3", &app.admin_token)
        .send()
        .await
        .unwrap();
    let body = problem(
        not_a_guid,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    )
    .await;
    assert_eq!(body["field"], "offer_id");

    // Tokens: admin issues a support token; support may read but not issue.
    let issued = app
        .request(Method::POST, "/v1/tokens", &app.admin_token)
        .json(&json!({"role": "support"}))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), StatusCode::CREATED);
    let support: Value = issued.json().await.unwrap();
    let support_token = support["token"].as_str().unwrap().to_owned();
    let read = app
        .request(Method::GET, "/v1/offers", &support_token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let denied = app
        .request(Method::POST, "/v1/tokens", &support_token)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    problem(denied, StatusCode::FORBIDDEN, "forbidden").await;

    // Bad token requests: a role without its scope, an unknown role, malformed JSON.
    let unscoped = app
        .request(Method::POST, "/v1/tokens", &app.admin_token)
        .json(&json!({"role": "customer_admin"}))
        .send()
        .await
        .unwrap();
    problem(unscoped, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value").await;
    let unknown_role = app
        .request(Method::POST, "/v1/tokens", &app.admin_token)
        .json(&json!({"role": "root"}))
        .send()
        .await
        .unwrap();
    let body = problem(
        unknown_role,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    )
    .await;
    assert_eq!(body["field"], "role");
    let malformed = app
        .request(Method::POST, "/v1/tokens", &app.admin_token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(malformed, StatusCode::BAD_REQUEST, "malformed_request").await;
    let oversized = app
        .request(Method::POST, "/v1/tokens", &app.admin_token)
        .header("content-type", "application/json")
        .body(format!("{{\"role\": \"{}\"}}", "x".repeat(100 * 1024)))
        .send()
        .await
        .unwrap();
    problem(
        oversized,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    // Catalog changes: admin publishes an add-on; a cycle or a negative price is refused.
    let addon = json!({
        "id": "11111111-1111-1111-1111-111111111111",
        "name": "Test Add-on",
        "provisioning_id": "TEST_ADDON",
        "assignable_to_users": true,
        "unit_price": {"amount": "1.25", "currency": "EUR"},
        "parent_offers": ["031c9e47-4802-4248-838e-778fb1d2cc05"]
    });
    let published = app
        .request(Method::POST, "/v1/offers", &app.admin_token)
        .json(&addon)
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), StatusCode::OK);
    let published: Value = published.json().await.unwrap();
    assert!(published["position"].as_i64().unwrap() > 8);
    let mut cyclic = addon.clone();
    cyclic["parent_offers"] = json!(["11111111-1111-1111-1111-111111111111"]);
    let refused = app
        .request(Method::POST, "/v1/offers", &app.admin_token)
        .json(&cyclic)
        .send()
        .await
        .unwrap();
    problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "offer_parent_cycle",
    )
    .await;
    let mut negative = addon.clone();
    negative["unit_price"]["amount"] = json!("-1");
    let refused = app
        .request(Method::POST, "/v1/offers", &app.admin_token)
        .json(&negative)
        .send()
        .await
        .unwrap();
    let body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value").await;
    assert_eq!(body["field"], "unit_price");
    // A price so large that invoices would overflow is refused where it enters.
    let mut huge = addon.clone();
    huge["unit_price"]["amount"] = json!("79000000000000000000000000000");
    let refused = app
        .request(Method::POST, "/v1/offers", &app.admin_token)
        .json(&huge)
        .send()
        .await
        .unwrap();
    let body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value").await;
    assert_eq!(body["field"], "unit_price");
    let by_support = app
        .request(Method::POST, "/v1/offers", &support_token)
        .json(&addon)
        .send()
        .await
        .unwrap();
    problem(by_support, StatusCode::FORBIDDEN, "forbidden").await;

    app.stop().await;
}

/// The sandbox clock refuses a step it cannot take (422 naming the field) and goes on working;
/// seat counts stop at the subscription's limit instead of wrapping.
async fn bounds(backend: Backend) {
    let app = crate::support::spawn_app_with(backend, true).await;
    let admin = app.admin_token.clone();
    for body in [
        json!({"advance_seconds": 10_000_000_000_000i64}),
        json!({"advance_seconds": i64::MAX}),
        json!({"now": "9999-12-31T00:00:00Z"}),
    ] {
        let field = body.as_object().unwrap().keys().next().unwrap().clone();
        let response = app
            .request(Method::POST, "/v1/sandbox/clock", &admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let refused = problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value").await;
        assert_eq!(refused["field"], json!(field), "{refused}");
    }
    let (status, moved) = app
        .call(
            Method::POST,
            &admin,
            "/v1/sandbox/clock",
            Some(json!({"advance_seconds": 86_400})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the clock still moves: {moved}");

    let (profile, tenant) = app.billing_profile_and_contoso().await;
    let (status, subscription) = app
        .call(
            Method::POST,
            &admin,
            &format!("/v1/tenants/{tenant}/subscriptions"),
            Some(json!({
                "offer_id": aggregates::catalog::offers::ENTERPRISE_E3,
                "quantity": 1_000_000,
                "billing_profile_id": profile,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{subscription}");
    let add = format!(
        "/v1/subscriptions/{}/licenses:add",
        subscription["id"].as_str().unwrap()
    );
    let (status, refused) = app
        .call(Method::POST, &admin, &add, Some(json!({"count": 1})))
        .await;
    assert_eq!(
        (status, refused["code"].clone()),
        (StatusCode::CONFLICT, json!("seat_limit_exceeded")),
        "{refused}"
    );
    let (status, refused) = app
        .call(
            Method::POST,
            &admin,
            &add,
            Some(json!({"count": 1_000_001})),
        )
        .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("count")),
        "{refused}"
    );
    // A command after all of that still runs: nothing was left poisoned.
    let (status, _) = app
        .call(
            Method::POST,
            &admin,
            "/v1/resellers",
            Some(json!({"name": "After"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    app.stop().await;
}

#[tokio::test]
async fn clock_and_seat_bounds_on_postgres() {
    bounds(Backend::Postgres).await;
}

#[tokio::test]
async fn clock_and_seat_bounds_on_sqlite() {
    bounds(Backend::Sqlite).await;
}

#[tokio::test]
async fn health_auth_tokens_and_catalog_on_postgres() {
    basics(Backend::Postgres).await;
}

#[tokio::test]
async fn health_auth_tokens_and_catalog_on_sqlite() {
    basics(Backend::Sqlite).await;
}

/// A client that dribbles its request headers is cut off once the header deadline passes
/// (two seconds here), while a client that sends them whole is served on the same service.
#[tokio::test]
async fn a_connection_that_dribbles_its_headers_is_closed_at_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = crate::support::spawn_app_configured(Backend::Sqlite, |settings| {
        settings.header_read_timeout_seconds = 2;
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    // Keep dribbling a header line now and then, never finishing the request.
    for n in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if slow
            .write_all(format!("X-Dribble-{n}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut byte = [0u8; 512];
        match tokio::time::timeout(std::time::Duration::from_millis(10), slow.read(&mut byte)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                // hyper answers 408 before closing: fine, the connection is done either way.
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "the dribbling connection was still open after {:?}",
        started.elapsed()
    );
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    app.stop().await;
}

/// `seatledger token create` issues a working token on the store itself (no service running):
/// the way back in when the only admin token is lost; scoped only to what exists.
#[tokio::test]
async fn the_cli_issues_a_token_on_the_store() {
    let fresh = crate::support::fresh_store(Backend::Sqlite).await;
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatledger"))
            .args(["token", "create", "--database-url", &fresh.url])
            .args(extra)
            .output()
            .expect("the seatledger binary runs")
    };
    let issued = run(&["--role", "admin"]);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let stdout = String::from_utf8(issued.stdout).unwrap();
    let token = stdout
        .trim()
        .strip_prefix("export TOKEN=")
        .unwrap_or_else(|| panic!("an export line: {stdout}"));
    let principal = seatledger::auth::Tokens::new(fresh.store.clone())
        .authenticate(token)
        .await
        .unwrap()
        .expect("the store knows the token");
    assert_eq!(principal.role, seatledger::auth::Role::Admin);
    let refused = run(&[
        "--role",
        "reseller",
        "--reseller-id",
        &uuid::Uuid::new_v4().to_string(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not exist"));
    fresh.remove().await;
}
