//! Users over HTTP: personal data sealed, principal names unique, licences all or nothing,
//! delete and restore with their window, password resets that leave no trace of the password.

use crate::support::{spawn_app_with, Backend, TestApp};
use aggregates::catalog::offers::BUSINESS_PREMIUM;
use reqwest::{Method, StatusCode};
use seatledger::store::Store;
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

/// Every text the store holds, table by table, to search for secrets.
async fn everything_stored(store: &Store) -> String {
    let tables = [
        "events",
        "snapshots",
        "read_models",
        "read_models_replay",
        "timer_firings",
        "personal_keys",
        "service_secrets",
        "api_tokens",
    ];
    let mut all = String::new();
    for table in tables {
        let rows: Vec<String> = match store {
            Store::Postgres(pool) => {
                sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                    .fetch_all(pool)
                    .await
                    .unwrap()
            }
            Store::Sqlite(pool) => {
                let columns: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                let concat = columns
                    .iter()
                    .map(|column| {
                        format!("COALESCE(CASE WHEN typeof({column}) = 'blob' THEN hex({column}) ELSE CAST({column} AS TEXT) END, '')")
                    })
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                sqlx::query_scalar(&format!("SELECT {concat} FROM {table}"))
                    .fetch_all(pool)
                    .await
                    .unwrap()
            }
        };
        all.push_str(&rows.join("\n"));
    }
    all
}

async fn users(backend: Backend) {
    let captured = crate::support::captured_logs();
    let app = spawn_app_with(backend, true).await;
    let admin = app.admin_token.clone();
    let (profile_id, tenant_id) = app.billing_profile_and_contoso().await;
    let (status, _) = call(
        &app,
        Method::POST,
        &admin,
        &format!("/v1/tenants/{tenant_id}/subscriptions"),
        Some(
            json!({"offer_id": BUSINESS_PREMIUM, "quantity": 1, "billing_profile_id": profile_id}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let new_user = |upn: &str| json!({"user_principal_name": upn, "first_name": "Megan", "last_name": "Bowen", "display_name": "Megan Bowen", "location": "Seattle"});
    let users_path = format!("/v1/tenants/{tenant_id}/users");

    let (status, megan) = call(
        &app,
        Method::POST,
        &admin,
        &users_path,
        Some(new_user("Megan.Bowen@contoso.onmicrosoft.com")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{megan}");
    assert_eq!(
        megan["user_principal_name"],
        "megan.bowen@contoso.onmicrosoft.com"
    );
    assert_eq!(
        (megan["status"].clone(), megan["role"].clone()),
        (json!("active"), json!("user"))
    );
    let megan_id = megan["id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        &app,
        Method::POST,
        &admin,
        &users_path,
        Some(new_user("megan.bowen@contoso.onmicrosoft.com")),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("duplicate_user_principal_name"))
    );
    let (status, body) = call(
        &app,
        Method::POST,
        &admin,
        &users_path,
        Some(new_user("megan@fabrikam.com")),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("principal_domain_mismatch"))
    );
    let (status, body) = call(
        &app,
        Method::POST,
        &admin,
        &users_path,
        Some(new_user("not-an-address")),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("user_principal_name")
        )
    );
    let mut nameless = new_user("x@contoso.onmicrosoft.com");
    nameless["first_name"] = json!("");
    let (status, body) = call(&app, Method::POST, &admin, &users_path, Some(nameless)).await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("first_name"))
    );
    let (_, alex) = call(
        &app,
        Method::POST,
        &admin,
        &users_path,
        Some(new_user("alex@contoso.onmicrosoft.com")),
    )
    .await;
    let alex_id = alex["id"].as_str().unwrap().to_owned();

    // The one seat goes to Megan; Alex is refused, all or nothing.
    let (status, licensed) = call(
        &app,
        Method::POST,
        &admin,
        &format!("/v1/users/{megan_id}/licenses"),
        Some(json!({"add": [BUSINESS_PREMIUM]})),
    )
    .await;
    assert_eq!(
        (status, licensed["licenses"].clone()),
        (StatusCode::OK, json!(["O365_BUSINESS_PREMIUM"]))
    );
    let (status, body) = call(
        &app,
        Method::POST,
        &admin,
        &format!("/v1/users/{alex_id}/licenses"),
        Some(json!({"add": [BUSINESS_PREMIUM]})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("insufficient_licenses"))
    );
    let (status, body) = call(
        &app,
        Method::POST,
        &admin,
        &format!("/v1/users/{alex_id}/licenses"),
        Some(json!({"add": ["e3"]})),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("add"))
    );

    // Edit.
    let (status, edited) = call(
        &app,
        Method::PATCH,
        &admin,
        &format!("/v1/users/{megan_id}"),
        Some(json!({"display_name": "Megan B.", "role": "global_admin"})),
    )
    .await;
    assert_eq!(
        (
            status,
            edited["display_name"].clone(),
            edited["role"].clone()
        ),
        (StatusCode::OK, json!("Megan B."), json!("global_admin"))
    );

    // Delete frees the seat; Alex takes it; restoring Megan over-assigns but succeeds.
    let (status, deleted) = call(
        &app,
        Method::DELETE,
        &admin,
        &format!("/v1/users/{megan_id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, deleted["status"].clone()),
        (StatusCode::OK, json!("deleted"))
    );
    assert!(deleted["restorable_until"].is_string());
    let (status, _) = call(
        &app,
        Method::POST,
        &admin,
        &format!("/v1/users/{alex_id}/licenses"),
        Some(json!({"add": [BUSINESS_PREMIUM]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, restored) = call(
        &app,
        Method::POST,
        &admin,
        &format!("/v1/users/{megan_id}:restore"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, restored["licenses"].clone()),
        (StatusCode::OK, json!(["O365_BUSINESS_PREMIUM"]))
    );

    // After 30 days a deleted user can no longer be restored.
    call(
        &app,
        Method::DELETE,
        &admin,
        &format!("/v1/users/{alex_id}"),
        None,
    )
    .await;
    // Whether the scheduler has purged the user yet or not, the window refuses.
    let (status, _) = call(
        &app,
        Method::POST,
        &admin,
        "/v1/sandbox/clock",
        Some(json!({"advance_seconds": 30 * 24 * 3600})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &app,
        Method::POST,
        &admin,
        &format!("/v1/users/{alex_id}:restore"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("restore_window_expired")),
        "{body}"
    );

    // Password reset by a password admin: returned once, stored nowhere.
    let (_, password_admin) = call(
        &app,
        Method::POST,
        &admin,
        "/v1/tokens",
        Some(json!({"role": "password_admin", "tenant_id": tenant_id})),
    )
    .await;
    let password_admin = password_admin["token"].as_str().unwrap().to_owned();
    let (status, reset) = call(
        &app,
        Method::POST,
        &password_admin,
        &format!("/v1/users/{megan_id}:reset-password"),
        Some(json!({"notify_email": "it@contoso.com"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    let password = reset["temporary_password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 16);
    let (status, body) = call(
        &app,
        Method::POST,
        &password_admin,
        &format!("/v1/users/{megan_id}:reset-password"),
        Some(json!({"notify_email": "nope"})),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("notify_email"))
    );
    let (status, _) = call(
        &app,
        Method::DELETE,
        &password_admin,
        &format!("/v1/users/{megan_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, read) = call(
        &app,
        Method::GET,
        &password_admin,
        &format!("/v1/users/{megan_id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, read["password_resets"].clone()),
        (StatusCode::OK, json!(1))
    );
    let stored = everything_stored(&app.fresh.store).await;
    assert!(
        stored.contains("PasswordReset"),
        "the search sees the events"
    );
    assert!(
        !stored.contains(&password),
        "the temporary password was stored"
    );
    let logs = captured.text();
    assert!(
        logs.contains("\"route\":\"/v1/users/{user}\""),
        "the logs were captured"
    );
    assert!(
        !logs.contains(&password),
        "the temporary password was logged"
    );
    // Personal data is stored sealed only.
    assert!(
        !stored.contains("Bowen") && !stored.contains("megan.bowen"),
        "personal data stored in clear"
    );

    app.stop().await;
}

#[tokio::test]
async fn users_over_http_on_postgres() {
    users(Backend::Postgres).await;
}

#[tokio::test]
async fn users_over_http_on_sqlite() {
    users(Backend::Sqlite).await;
}
