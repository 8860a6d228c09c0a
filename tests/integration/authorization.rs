//! Every role against every route: allowed roles get past authorization (whatever the rules then
//! say), all others get 403 or 404; a customer token never sees another tenant. Also: the OpenAPI
//! description and the router list the same routes.

use crate::support::{spawn_app_with, Backend, TestApp};
use aggregates::catalog::offers::{BUSINESS_PREMIUM, ENTERPRISE_E3 as E3};
use reqwest::{Method, StatusCode};
use seatledger::http::openapi::ROUTES;
use serde_json::{json, Value};

struct World {
    reseller_id: String,
    billing_profile_id: String,
    tenant_id: String,
    other_tenant_id: String,
    subscription_id: String,
    user_id: String,
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    // The live feed's body never ends while the service runs: its status is all there is to see.
    if path.starts_with("/v1/events/stream") && status.is_success() {
        return (status, String::new());
    }
    (status, response.text().await.unwrap())
}

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, text) = send(app, "POST", path, Some(&app.admin_token), Some(body)).await;
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

async fn world(app: &TestApp) -> World {
    let reseller = created(app, "/v1/resellers", json!({"name": "Northwind"})).await;
    let reseller_id = reseller["id"].as_str().unwrap().to_owned();
    let profile = created(
        app,
        "/v1/billing-profiles",
        json!({"name": "P", "currency": "USD", "reseller_id": reseller_id}),
    )
    .await;
    let tenant = created(
        app,
        "/v1/tenants",
        json!({"domain": "contoso.onmicrosoft.com", "name": "Contoso", "reseller_id": reseller_id}),
    )
    .await;
    let other = created(
        app,
        "/v1/tenants",
        json!({"domain": "fabrikam.onmicrosoft.com", "name": "Fabrikam"}),
    )
    .await;
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let subscription = created(
        app,
        &format!("/v1/tenants/{tenant_id}/subscriptions"),
        json!({"offer_id": BUSINESS_PREMIUM, "quantity": 50, "billing_profile_id": profile["id"]}),
    )
    .await;
    let user = created(
        app,
        &format!("/v1/tenants/{tenant_id}/users"),
        json!({"user_principal_name": "megan@contoso.onmicrosoft.com", "first_name": "M", "last_name": "B", "display_name": "M B"}),
    )
    .await;
    World {
        reseller_id,
        billing_profile_id: profile["id"].as_str().unwrap().to_owned(),
        tenant_id,
        other_tenant_id: other["id"].as_str().unwrap().to_owned(),
        subscription_id: subscription["id"].as_str().unwrap().to_owned(),
        user_id: user["id"].as_str().unwrap().to_owned(),
    }
}

fn concrete(path: &str, world: &World, tenant_id: &str) -> String {
    path.replace("{tenant_id}", tenant_id)
        .replace("{subscription_id}", &world.subscription_id)
        .replace("{user_id}", &world.user_id)
        .replace("{reseller_id}", &world.reseller_id)
        .replace("{billing_profile_id}", &world.billing_profile_id)
        .replace("{offer_id}", BUSINESS_PREMIUM)
        .replace("{month}", "2026-11")
}

fn body_for(method: &str, path: &str, world: &World, n: usize) -> Option<Value> {
    let body = match (method, path) {
        ("POST", "/v1/tokens") => json!({"role": "support"}),
        ("POST", "/v1/offers") => {
            json!({"id": "22222222-2222-2222-2222-222222222222", "name": "Matrix Add-on", "provisioning_id": "MATRIX", "assignable_to_users": true, "unit_price": {"amount": "1.00", "currency": "USD"}, "parent_offers": [BUSINESS_PREMIUM]})
        }
        ("POST", "/v1/resellers") => json!({"name": "Another"}),
        ("POST", "/v1/billing-profiles") => json!({"name": "Q", "currency": "USD"}),
        ("POST", "/v1/tenants") => json!({"domain": format!("t{n}.onmicrosoft.com"), "name": "T"}),
        ("POST", "/v1/tenants/{tenant_id}/subscriptions") => {
            json!({"offer_id": BUSINESS_PREMIUM, "quantity": 1, "billing_profile_id": world.billing_profile_id})
        }
        ("POST", "/v1/subscriptions/{subscription_id}/licenses:add")
        | ("POST", "/v1/subscriptions/{subscription_id}/licenses:remove") => json!({"count": 1}),
        ("POST", "/v1/subscriptions/{subscription_id}:upgrade") => json!({"offer_id": E3}),
        ("PUT", "/v1/subscriptions/{subscription_id}/billing-profile") => {
            json!({"billing_profile_id": world.billing_profile_id})
        }
        ("POST", "/v1/tenants/{tenant_id}/users") => {
            json!({"user_principal_name": format!("u{n}@contoso.onmicrosoft.com"), "first_name": "U", "last_name": "N", "display_name": "U N"})
        }
        ("PATCH", "/v1/users/{user_id}") => json!({"display_name": format!("Name {n}")}),
        ("POST", "/v1/users/{user_id}/licenses") => json!({"add": [BUSINESS_PREMIUM]}),
        ("POST", "/v1/sandbox/clock") => json!({"advance_seconds": 1}),
        ("POST", _) | ("PUT", _) | ("PATCH", _) => json!({}),
        _ => return None,
    };
    Some(body)
}

/// Who may pass authorization on each route (scoped roles within their scope).
fn allowed(method: &str, path: &str, role: &str) -> bool {
    let commanders = ["admin", "reseller", "customer_admin"];
    let readers = ["admin", "reseller", "customer_admin", "support", "auditor"];
    let everyone_in_scope = [
        "admin",
        "reseller",
        "customer_admin",
        "password_admin",
        "support",
        "auditor",
    ];
    let roles: &[&str] = match (method, path) {
        (_, "/healthz") | (_, "/readyz") | (_, "/v1/openapi.json") => &[
            "none",
            "admin",
            "reseller",
            "customer_admin",
            "password_admin",
            "support",
            "auditor",
        ],
        ("POST", "/v1/tokens")
        | ("POST", "/v1/offers")
        | ("POST", "/v1/resellers")
        | ("POST", "/v1/sandbox/clock") => &["admin"],
        ("GET", "/v1/resellers/{reseller_id}")
        | ("GET", "/v1/billing-profiles/{billing_profile_id}")
        | ("GET", "/v1/billing-profiles/{billing_profile_id}/invoices/{month}") => {
            &["admin", "reseller", "support", "auditor"]
        }
        ("POST", "/v1/billing-profiles") | ("POST", "/v1/tenants") => &["admin", "reseller"],
        // A password admin reads users and resets passwords, nothing else: not the tenant,
        // not its licence view, not the catalog.
        ("GET", "/v1/users/{user_id}") | ("GET", "/v1/tenants/{tenant_id}/users") => {
            &everyone_in_scope
        }
        ("POST", "/v1/users/{user_id}:reset-password") => {
            &["admin", "reseller", "customer_admin", "password_admin"]
        }
        ("GET", _) => &readers,
        _ => &commanders,
    };
    roles.contains(&role)
}

/// A validator of `schema`, whose `$ref`s point into the description's components.
fn answer_validator(description: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    root["components"] = description["components"].clone();
    if root.get("$ref").is_some() {
        // A `$ref` beside other keywords is fine in 2020-12; keep it as the whole check.
        root = json!({"allOf": [schema], "components": description["components"]});
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|error| panic!("the described schema compiles ({error}): {schema}"))
}

async fn matrix(backend: Backend) {
    let app = spawn_app_with(backend, true).await;
    let world = world(&app).await;
    let issue = |body: Value| {
        let app = &app;
        async move {
            created(app, "/v1/tokens", body).await["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let tokens = vec![
        ("admin", Some(app.admin_token.clone())),
        (
            "reseller",
            Some(issue(json!({"role": "reseller", "reseller_id": world.reseller_id})).await),
        ),
        (
            "customer_admin",
            Some(issue(json!({"role": "customer_admin", "tenant_id": world.tenant_id})).await),
        ),
        (
            "password_admin",
            Some(issue(json!({"role": "password_admin", "tenant_id": world.tenant_id})).await),
        ),
        ("support", Some(issue(json!({"role": "support"})).await)),
        ("auditor", Some(issue(json!({"role": "auditor"})).await)),
        ("none", None),
    ];
    let (_, description) = send(&app, "GET", "/v1/openapi.json", None, None).await;
    let description: Value = serde_json::from_str(&description).unwrap();
    // The check below is not vacuous: a wrong answer fails it.
    let offers = &description["paths"]["/v1/offers"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    assert!(!answer_validator(&description, offers).is_valid(&json!({"offers": 5})));
    let mut n = 0;
    // Destructive lifecycle routes go last, so that earlier calls meet a live subscription and user.
    let mut routes: Vec<_> = ROUTES.iter().collect();
    routes.sort_by_key(|route| {
        route.method == "DELETE"
            || route.path.ends_with(":cancel")
            || route.path.ends_with(":suspend")
    });
    for route in routes {
        for (role, token) in &tokens {
            n += 1;
            let path = concrete(route.path, &world, &world.tenant_id);
            let body = body_for(route.method, route.path, &world, n);
            let (status, text) = send(&app, route.method, &path, token.as_deref(), body).await;
            let what = format!("{role} {} {path}: {status} {text}", route.method);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "not routed: {what}");
            assert!(!status.is_server_error(), "{what}");
            // Every answer is what the description says it is.
            if route.response.is_some() && !text.is_empty() {
                let body: Value = serde_json::from_str(&text).expect("a JSON answer");
                let answer = if status.is_success() {
                    status.as_u16().to_string()
                } else {
                    "default".to_owned()
                };
                let content = if status.is_success() {
                    "application/json"
                } else {
                    "application/problem+json"
                };
                let schema = &description["paths"][route.path][route.method.to_lowercase()]
                    ["responses"][&answer]["content"][content]["schema"];
                assert!(
                    !schema.is_null(),
                    "{what}: no schema described for {answer}"
                );
                let validator = answer_validator(&description, schema);
                let errors: Vec<String> = validator
                    .iter_errors(&body)
                    .map(|error| format!("{error} at {}", error.instance_path()))
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{what}: unlike its description: {errors:?}"
                );
            }
            if allowed(route.method, route.path, role) {
                assert!(
                    ![
                        StatusCode::UNAUTHORIZED,
                        StatusCode::FORBIDDEN,
                        StatusCode::NOT_FOUND
                    ]
                    .contains(&status),
                    "should be allowed: {what}"
                );
            } else if token.is_none() {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
            } else {
                assert!(
                    [StatusCode::FORBIDDEN, StatusCode::NOT_FOUND].contains(&status),
                    "should be refused: {what}"
                );
            }
        }
    }

    // A customer's token never sees another tenant, on any tenant route.
    let customer = tokens[2].1.clone().unwrap();
    for route in ROUTES
        .iter()
        .filter(|route| route.path.starts_with("/v1/tenants/{tenant_id}"))
    {
        let path = concrete(route.path, &world, &world.other_tenant_id);
        let body = body_for(route.method, route.path, &world, 0);
        let (status, text) = send(&app, route.method, &path, Some(&customer), body).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{} {path}: {text}",
            route.method
        );
    }

    // The description lists exactly the routes the matrix just exercised.
    let (status, text) = send(&app, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let spec: Value = serde_json::from_str(&text).unwrap();
    let described: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(described, ROUTES.len());
    assert!(
        spec["paths"]["/v1/users/{user_id}/licenses"]["post"]["summary"]
            .as_str()
            .unwrap()
            .contains("all or nothing")
    );

    app.stop().await;
}

#[tokio::test]
async fn authorization_matrix_on_postgres() {
    matrix(Backend::Postgres).await;
}

#[tokio::test]
async fn authorization_matrix_on_sqlite() {
    matrix(Backend::Sqlite).await;
}

/// Rows in the idempotency table (a caller without a valid token must not write any).
async fn idempotency_rows(app: &TestApp) -> i64 {
    match &app.fresh.store {
        seatledger::store::Store::Postgres(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
                .fetch_one(pool)
                .await
                .unwrap()
        }
        seatledger::store::Store::Sqlite(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
                .fetch_one(pool)
                .await
                .unwrap()
        }
    }
}

async fn ownership_scopes_and_strangers(backend: Backend) {
    let app = spawn_app_with(backend, true).await;
    let world = world(&app).await;
    let admin = app.admin_token.clone();
    let customer = created(
        &app,
        "/v1/tokens",
        json!({"role": "customer_admin", "tenant_id": world.tenant_id}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let rival = created(&app, "/v1/resellers", json!({"name": "Rival"})).await;
    let rival_profile = created(
        &app,
        "/v1/billing-profiles",
        json!({"name": "Rival's", "currency": "USD", "reseller_id": rival["id"]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let unknown_profile = uuid::Uuid::new_v4().to_string();

    // A customer admin cannot bill another reseller's profile, and cannot tell it from an
    // unknown one; neither can it move its subscription onto it.
    let purchase = format!("/v1/tenants/{}/subscriptions", world.tenant_id);
    let mut answers = Vec::new();
    for profile in [&rival_profile, &unknown_profile] {
        let (status, text) = send(
            &app,
            "POST",
            &purchase,
            Some(&customer),
            Some(
                json!({"offer_id": BUSINESS_PREMIUM, "quantity": 1, "billing_profile_id": profile}),
            ),
        )
        .await;
        let body: Value = serde_json::from_str(&text).unwrap();
        answers.push((
            status,
            body["code"].clone(),
            body["field"].clone(),
            body["title"].clone(),
        ));
        let (status, text) = send(
            &app,
            "PUT",
            &format!(
                "/v1/subscriptions/{}/billing-profile",
                world.subscription_id
            ),
            Some(&customer),
            Some(json!({"billing_profile_id": profile})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    }
    assert_eq!(
        answers[0], answers[1],
        "a foreign profile answers as an unknown one"
    );
    assert_eq!(answers[0].0, StatusCode::UNPROCESSABLE_ENTITY);
    // Its own reseller's profile it may use.
    let (status, text) = send(
        &app,
        "POST",
        &purchase,
        Some(&customer),
        Some(json!({"offer_id": BUSINESS_PREMIUM, "quantity": 1, "billing_profile_id": world.billing_profile_id})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");

    // Tokens are scoped to things that exist.
    for (body, field) in [
        (
            json!({"role": "reseller", "reseller_id": uuid::Uuid::new_v4()}),
            "reseller_id",
        ),
        (
            json!({"role": "customer_admin", "tenant_id": uuid::Uuid::new_v4()}),
            "tenant_id",
        ),
    ] {
        let (status, text) = send(&app, "POST", "/v1/tokens", Some(&admin), Some(body)).await;
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (status, problem["field"].clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, json!(field)),
            "{text}"
        );
    }

    // A stranger costs nothing: no idempotency row, no wait for a position, and a wrong token
    // is told apart from a missing one.
    let rows_before = idempotency_rows(&app).await;
    for _ in 0..5 {
        let response = app
            .client
            .post(app.url("/v1/resellers"))
            .bearer_auth("sl_not_a_token")
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&json!({"name": "Mallory"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(idempotency_rows(&app).await, rows_before);
    let (status, wrong) = send(
        &app,
        "GET",
        &format!(
            "/v1/tenants/{}/licenses?min_position=999999999",
            world.tenant_id
        ),
        Some("sl_not_a_token"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, missing) = send(&app, "GET", "/v1/offers", None, None).await;
    assert_ne!(
        wrong, missing,
        "a wrong token and a missing one get different words"
    );

    // A position on an unknown resource is a 404, and one beyond the log's end does not wait.
    let (status, _) = send(
        &app,
        "GET",
        &format!(
            "/v1/tenants/{}/licenses?min_position=999999999",
            uuid::Uuid::new_v4()
        ),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, text) = send(
        &app,
        "GET",
        &format!(
            "/v1/tenants/{}/licenses?min_position=999999999",
            world.tenant_id
        ),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{text}");

    // Unknown routes, wrong methods and bad query strings are problem documents too.
    for (method, path, expected) in [
        ("GET", "/v1/nowhere".to_owned(), StatusCode::NOT_FOUND),
        (
            "DELETE",
            "/v1/offers".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "GET",
            format!("/v1/subscriptions/{}:cancel", world.subscription_id),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "GET",
            format!(
                "/v1/tenants/{}/users?include_deleted=perhaps",
                world.tenant_id
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "GET",
            "/v1/events?limit=many".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let response = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(&path),
            )
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{method} {path}"
        );
        assert_eq!(body["status"], json!(expected.as_u16()), "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn billing_ownership_token_scopes_and_unauthenticated_callers_on_postgres() {
    ownership_scopes_and_strangers(Backend::Postgres).await;
}

#[tokio::test]
async fn billing_ownership_token_scopes_and_unauthenticated_callers_on_sqlite() {
    ownership_scopes_and_strangers(Backend::Sqlite).await;
}

/// Runs a Python tool the contract tests use, or fails saying how to install it.
fn python_tool(program: &str, args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {program} ({error}): install the contract-test tools with \
                 python3 -m pip install openapi-spec-validator schemathesis"
            )
        })
}

/// The served description is valid OpenAPI (checked by openapi-spec-validator), and a fuzz run
/// of it with schemathesis — every operation, bodies and parameters generated from its schemas,
/// against real ids — meets no server error, no status, content type or body that the
/// description does not allow.
async fn fuzzed(backend: Backend) {
    let app = spawn_app_with(backend, true).await;
    let world = world(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let (status, text) = send(&app, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let document = dir.path().join("openapi.json");
    std::fs::write(&document, &text).unwrap();
    let validated = python_tool(
        "python3",
        &["-m", "openapi_spec_validator", document.to_str().unwrap()],
        dir.path(),
    );
    assert!(
        validated.status.success(),
        "the description is not valid OpenAPI: {}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
    // Real ids, so that the fuzzer reaches the rules behind the 404s; a `min_position` the
    // log has reached (a made-up one is a 504 position_not_reached by contract).
    let config = format!(
        "[parameters]\n\
         \"query.min_position\" = 0\n\
         tenant_id = \"{}\"\n\
         subscription_id = \"{}\"\n\
         user_id = \"{}\"\n\
         reseller_id = \"{}\"\n\
         billing_profile_id = \"{}\"\n\
         offer_id = \"{BUSINESS_PREMIUM}\"\n",
        world.tenant_id,
        world.subscription_id,
        world.user_id,
        world.reseller_id,
        world.billing_profile_id,
    );
    std::fs::write(dir.path().join("schemathesis.toml"), config).unwrap();
    let authorization = format!("Authorization: Bearer {}", app.admin_token);
    let url = app.url("/v1/openapi.json");
    let cwd = dir.path().to_owned();
    let fuzz = tokio::task::spawn_blocking(move || {
        python_tool(
            "schemathesis",
            &[
                "run",
                &url,
                "-H",
                &authorization,
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "10",
                "--seed",
                "1",
                "--exclude-path",
                "/v1/events/stream",
                "--no-color",
            ],
            &cwd,
        )
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&fuzz.stdout);
    assert!(
        fuzz.status.success(),
        "schemathesis found failures:\n{report}{}",
        String::from_utf8_lossy(&fuzz.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_is_valid_and_a_fuzz_run_meets_no_server_error_on_postgres() {
    fuzzed(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_is_valid_and_a_fuzz_run_meets_no_server_error_on_sqlite() {
    fuzzed(Backend::Sqlite).await;
}
