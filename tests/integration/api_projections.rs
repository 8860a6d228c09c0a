//! Projection-backed reads over HTTP: licences and users as of a past instant on the sandbox
//! clock, invoices with their monthly charges and prorations to the cent, a tenant's
//! subscriptions, and the consumers' lag in /readyz.

use crate::support::{spawn_app_with, Backend, TestApp};
use aggregates::catalog::offers::{BUSINESS_PREMIUM, EXCHANGE_ONLINE_ARCHIVING as ARCHIVING};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
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

/// An admin call that must succeed.
async fn ok(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = call(app, method, &app.admin_token, path, body).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

fn instant(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(
        value
            .as_str()
            .unwrap_or_else(|| panic!("an instant: {value}")),
    )
    .expect("RFC 3339")
    .with_timezone(&Utc)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

async fn create_user(app: &TestApp, tenant_id: &str, name: &str) -> String {
    let user = ok(
        app,
        Method::POST,
        &format!("/v1/tenants/{tenant_id}/users"),
        Some(json!({
            "user_principal_name": format!("{name}@contoso.onmicrosoft.com"),
            "first_name": name, "last_name": "Test", "display_name": name,
        })),
    )
    .await;
    user["id"].as_str().expect("an id").to_owned()
}

/// The single licence row of a view (one product bought).
fn premium(view: &Value) -> (Value, Value, Value) {
    let rows = view["licenses"]
        .as_array()
        .unwrap_or_else(|| panic!("{view}"));
    assert_eq!(rows.len(), 1, "{view}");
    let row = &rows[0];
    assert_eq!(row["offer_id"], BUSINESS_PREMIUM);
    (
        row["enabled"].clone(),
        row["assigned"].clone(),
        row["available"].clone(),
    )
}

/// `(id, status)` of every listed user, sorted.
fn listed(view: &Value) -> Vec<(String, String)> {
    let mut users: Vec<(String, String)> = view["users"]
        .as_array()
        .unwrap_or_else(|| panic!("{view}"))
        .iter()
        .map(|user| {
            (
                user["id"].as_str().unwrap().to_owned(),
                user["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    users.sort();
    users
}

async fn as_of_views(backend: Backend) {
    let app = spawn_app_with(backend, true).await;
    let admin = app.admin_token.clone();
    let (profile_id, tenant_id) = app.billing_profile_and_contoso().await;
    let alice = create_user(&app, &tenant_id, "alice").await;
    let bob = create_user(&app, &tenant_id, "bob").await;
    let bought = ok(
        &app,
        Method::POST,
        &format!("/v1/tenants/{tenant_id}/subscriptions"),
        Some(
            json!({"offer_id": BUSINESS_PREMIUM, "quantity": 5, "billing_profile_id": profile_id}),
        ),
    )
    .await;
    let subscription_id = bought["id"].as_str().unwrap().to_owned();
    let t1 = instant(&bought["purchased_at"]);

    let clock = ok(
        &app,
        Method::POST,
        "/v1/sandbox/clock",
        Some(json!({"advance_seconds": 86_400})),
    )
    .await;
    assert!(instant(&clock["now"]) >= t1 + Duration::days(1), "{clock}");
    ok(
        &app,
        Method::POST,
        &format!("/v1/subscriptions/{subscription_id}/licenses:add"),
        Some(json!({"count": 3})),
    )
    .await;
    let carol = create_user(&app, &tenant_id, "carol").await;
    for user_id in [&alice, &carol] {
        ok(
            &app,
            Method::POST,
            &format!("/v1/users/{user_id}/licenses"),
            Some(json!({"add": [BUSINESS_PREMIUM]})),
        )
        .await;
    }
    ok(&app, Method::DELETE, &format!("/v1/users/{bob}"), None).await;

    let then = rfc3339(t1 + Duration::hours(1));
    let licenses = |query: String| {
        let app = &app;
        let admin = admin.clone();
        let tenant_id = tenant_id.clone();
        async move {
            let (status, body) = call(
                app,
                Method::GET,
                &admin,
                &format!("/v1/tenants/{tenant_id}/licenses{query}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(body["position"].as_i64().unwrap() > 0, "{body}");
            body
        }
    };
    let past = licenses(format!("?as_of={then}")).await;
    assert_eq!(premium(&past), (json!(5), json!(0), json!(5)), "{past}");
    assert_eq!(instant(&past["as_of"]), t1 + Duration::hours(1));
    // The instant of the purchase itself includes it; just before, nothing was bought.
    let at_purchase = licenses(format!("?as_of={}", rfc3339(t1))).await;
    assert_eq!(
        premium(&at_purchase),
        (json!(5), json!(0), json!(5)),
        "{at_purchase}"
    );
    let before = licenses(format!(
        "?as_of={}",
        rfc3339(t1 - Duration::milliseconds(1))
    ))
    .await;
    assert_eq!(before["licenses"], json!([]), "{before}");
    let current = licenses(String::new()).await;
    assert_eq!(
        premium(&current),
        (json!(8), json!(2), json!(6)),
        "{current}"
    );
    assert_eq!(current["as_of"], Value::Null);
    // Folding the whole log as of a later instant gives what the live projection holds.
    let future = licenses("?as_of=2100-01-01T00:00:00Z".into()).await;
    assert_eq!(future["licenses"], current["licenses"]);

    let users = |query: String| {
        let app = &app;
        let admin = admin.clone();
        let tenant_id = tenant_id.clone();
        async move {
            let (status, body) = call(
                app,
                Method::GET,
                &admin,
                &format!("/v1/tenants/{tenant_id}/users{query}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let active = |ids: &[&String]| -> Vec<(String, String)> {
        let mut users: Vec<(String, String)> = ids
            .iter()
            .map(|id| ((*id).clone(), "active".to_owned()))
            .collect();
        users.sort();
        users
    };
    // As of then: Carol did not exist yet, Bob was not deleted yet.
    let past_users = users(format!("?as_of={then}")).await;
    assert_eq!(listed(&past_users), active(&[&alice, &bob]), "{past_users}");
    let past_all = users(format!("?as_of={then}&include_deleted=true")).await;
    assert_eq!(listed(&past_all), active(&[&alice, &bob]), "{past_all}");
    for user in past_users["users"].as_array().unwrap() {
        assert_eq!(user["licenses"], json!([]), "{user}");
        assert_eq!(user["deleted_at"], Value::Null, "{user}");
    }
    let now_users = users(String::new()).await;
    assert_eq!(listed(&now_users), active(&[&alice, &carol]), "{now_users}");
    let mut with_deleted = active(&[&alice, &carol]);
    with_deleted.push((bob.clone(), "deleted".into()));
    with_deleted.sort();
    let now_all = users("?include_deleted=true".into()).await;
    assert_eq!(listed(&now_all), with_deleted, "{now_all}");
    let future_all = users("?include_deleted=true&as_of=2100-01-01T00:00:00Z".into()).await;
    assert_eq!(listed(&future_all), with_deleted, "{future_all}");

    for path in [
        format!("/v1/tenants/{tenant_id}/licenses?as_of=yesterday"),
        format!("/v1/tenants/{tenant_id}/licenses?as_of=2030-01-01"),
        format!("/v1/tenants/{tenant_id}/users?as_of=2030-13-01T00:00:00Z"),
    ] {
        let (status, body) = call(&app, Method::GET, &admin, &path, None).await;
        assert_eq!(
            (status, body["field"].clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, json!("as_of")),
            "{path}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn licences_and_users_as_of_an_instant_on_postgres() {
    as_of_views(Backend::Postgres).await;
}

#[tokio::test]
async fn licences_and_users_as_of_an_instant_on_sqlite() {
    as_of_views(Backend::Sqlite).await;
}

/// A decimal string ("12.50", "-3.1", "88") in cents; panics on fractions of a cent.
fn cents(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("money is a string: {value}"));
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(fraction.len() <= 2, "'{text}' is not rounded to the cent");
    let fraction = format!("{fraction:0<2}");
    sign * (whole.parse::<i64>().expect("whole units") * 100
        + fraction.parse::<i64>().expect("cents"))
}

/// A price (up to 4 decimal places) in ten-thousandths.
fn ten_thousandths(value: &Value) -> i64 {
    let text = value.as_str().unwrap();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    assert!(fraction.len() <= 4, "{text}");
    whole.parse::<i64>().unwrap() * 10_000 + format!("{fraction:0<4}").parse::<i64>().unwrap()
}

/// `numerator / denominator` (both positive) rounded half away from zero.
fn rounded(numerator: i64, denominator: i64) -> i64 {
    (2 * numerator + denominator) / (2 * denominator)
}

async fn invoices(backend: Backend) {
    let app = spawn_app_with(backend, true).await;
    let admin = app.admin_token.clone();
    let clock = ok(
        &app,
        Method::POST,
        "/v1/sandbox/clock",
        Some(json!({"now": "2030-01-10T12:00:00Z"})),
    )
    .await;
    // The answer is the clock's reading once set: the instant, plus the time the call took.
    let set_to = instant(&json!("2030-01-10T12:00:00Z"));
    let read = instant(&clock["now"]);
    assert!(
        read >= set_to && read - set_to < Duration::seconds(5),
        "{clock}"
    );
    let (profile_id, tenant_id) = app.billing_profile_and_contoso().await;
    // The catalog is read from the log, not from a projection: no min_position needed.
    let offer: Value = app
        .request(
            Method::GET,
            &format!("/v1/offers/{BUSINESS_PREMIUM}"),
            &admin,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let price = offer["offer"]["unit_price"].clone();
    assert_eq!(price["currency"], "USD");
    let price_units = ten_thousandths(&price["amount"]);
    assert!(price_units > 0, "{offer}");
    let bought = ok(
        &app,
        Method::POST,
        &format!("/v1/tenants/{tenant_id}/subscriptions"),
        Some(
            json!({"offer_id": BUSINESS_PREMIUM, "quantity": 4, "billing_profile_id": profile_id}),
        ),
    )
    .await;
    let subscription_id = bought["id"].clone();
    let purchased_at = instant(&bought["purchased_at"]);
    assert_eq!(rfc3339(purchased_at).get(..10), Some("2030-01-10"));

    ok(
        &app,
        Method::POST,
        "/v1/sandbox/clock",
        Some(json!({"now": "2030-02-01T08:00:00Z"})),
    )
    .await;
    let invoice = |month: &'static str| {
        let app = &app;
        let admin = admin.clone();
        let profile_id = profile_id.clone();
        async move {
            call(
                app,
                Method::GET,
                &admin,
                &format!("/v1/billing-profiles/{profile_id}/invoices/{month}"),
                None,
            )
            .await
        }
    };
    let (status, february) = invoice("2030-02").await;
    assert_eq!(status, StatusCode::OK, "{february}");
    assert_eq!(february["status"], "final", "{february}");
    assert_eq!(february["month"], "2030-02");
    assert_eq!(february["billing_profile_id"], json!(profile_id));
    assert!(february["position"].as_i64().unwrap() > 0);
    let lines = february["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("{february}"));
    assert_eq!(lines.len(), 2, "{february}");
    let (charge, proration) = (&lines[0], &lines[1]);
    assert_eq!(charge["kind"], "monthly_charge", "{february}");
    assert_eq!(charge["subscription_id"], subscription_id);
    assert_eq!(charge["tenant_id"], json!(tenant_id));
    assert_eq!(
        (
            charge["seats"].clone(),
            charge["days"].clone(),
            charge["days_in_month"].clone()
        ),
        (json!(4), json!(28), json!(28))
    );
    assert_eq!(
        (charge["period_start"].clone(), charge["period_end"].clone()),
        (json!("2030-02-01"), json!("2030-02-28"))
    );
    let charge_cents = rounded(4 * price_units, 100);
    assert_eq!(cents(&charge["amount"]), charge_cents, "{charge}");
    assert_eq!(charge["currency"], "USD");
    assert_eq!(charge["unit_price"], price);

    assert_eq!(proration["kind"], "proration", "{february}");
    assert_eq!(proration["subscription_id"], subscription_id);
    // 10 January to 31 January, both included: 22 of 31 days.
    assert_eq!(
        (
            proration["seats"].clone(),
            proration["days"].clone(),
            proration["days_in_month"].clone()
        ),
        (json!(4), json!(22), json!(31))
    );
    assert_eq!(
        (
            proration["period_start"].clone(),
            proration["period_end"].clone()
        ),
        (json!("2030-01-10"), json!("2030-01-31"))
    );
    assert_eq!(instant(&proration["changed_at"]), purchased_at);
    let proration_cents = rounded(4 * price_units * 22, 31 * 100);
    assert_eq!(cents(&proration["amount"]), proration_cents, "{proration}");
    assert_eq!(proration["currency"], "USD");

    let totals = february["totals"].as_array().unwrap();
    assert_eq!(totals.len(), 1, "{february}");
    assert_eq!(totals[0]["currency"], "USD");
    assert_eq!(
        cents(&totals[0]["amount"]),
        charge_cents + proration_cents,
        "{february}"
    );

    // January's invoice reads what happened before January: nothing.
    let (status, january) = invoice("2030-01").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            january["status"].clone(),
            january["lines"].clone(),
            january["totals"].clone()
        ),
        (json!("final"), json!([]), json!([])),
        "{january}"
    );

    // March has not begun: a preview, the charge alone (nothing changed in February).
    let (status, march) = invoice("2030-03").await;
    assert_eq!(status, StatusCode::OK, "{march}");
    assert_eq!(march["status"], "preview", "{march}");
    let lines = march["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{march}");
    assert_eq!(
        (lines[0]["kind"].clone(), lines[0]["days"].clone()),
        (json!("monthly_charge"), json!(31))
    );
    assert_eq!(cents(&lines[0]["amount"]), charge_cents);

    for month in ["2030-13", "2030-1", "2030-00", "soon"] {
        let (status, body) = call(
            &app,
            Method::GET,
            &admin,
            &format!("/v1/billing-profiles/{profile_id}/invoices/{month}"),
            None,
        )
        .await;
        assert_eq!(
            (status, body["field"].clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, json!("month")),
            "{month}: {body}"
        );
    }

    let (_, customer_admin) = call(
        &app,
        Method::POST,
        &admin,
        "/v1/tokens",
        Some(json!({"role": "customer_admin", "tenant_id": tenant_id})),
    )
    .await;
    let customer_admin = customer_admin["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let (status, body) = call(
        &app,
        Method::GET,
        &customer_admin,
        &format!("/v1/billing-profiles/{profile_id}/invoices/2030-02"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn invoices_over_http_on_postgres() {
    invoices(Backend::Postgres).await;
}

#[tokio::test]
async fn invoices_over_http_on_sqlite() {
    invoices(Backend::Sqlite).await;
}

async fn subscription_list_and_readiness(backend: Backend) {
    let app = spawn_app_with(backend, false).await;
    let admin = app.admin_token.clone();
    let (profile_id, tenant_id) = app.billing_profile_and_contoso().await;
    let purchase = |offer: &str, quantity: i64| json!({"offer_id": offer, "quantity": quantity, "billing_profile_id": profile_id});
    let premium = ok(
        &app,
        Method::POST,
        &format!("/v1/tenants/{tenant_id}/subscriptions"),
        Some(purchase(BUSINESS_PREMIUM, 5)),
    )
    .await;
    let premium_id = premium["id"].as_str().unwrap().to_owned();
    let archiving = ok(
        &app,
        Method::POST,
        &format!("/v1/tenants/{tenant_id}/subscriptions"),
        Some(purchase(ARCHIVING, 2)),
    )
    .await;
    let archiving_id = archiving["id"].as_str().unwrap().to_owned();
    ok(
        &app,
        Method::POST,
        &format!("/v1/subscriptions/{premium_id}/licenses:add"),
        Some(json!({"count": 2})),
    )
    .await;
    ok(
        &app,
        Method::POST,
        &format!("/v1/subscriptions/{archiving_id}:suspend"),
        Some(json!({})),
    )
    .await;
    let other = ok(
        &app,
        Method::POST,
        "/v1/tenants",
        Some(json!({"domain": "fabrikam.onmicrosoft.com", "name": "Fabrikam"})),
    )
    .await;
    let other_id = other["id"].as_str().unwrap().to_owned();
    let elsewhere = ok(
        &app,
        Method::POST,
        &format!("/v1/tenants/{other_id}/subscriptions"),
        Some(purchase(BUSINESS_PREMIUM, 1)),
    )
    .await;

    let (status, list) = call(
        &app,
        Method::GET,
        &admin,
        &format!("/v1/tenants/{tenant_id}/subscriptions"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["tenant_id"], json!(tenant_id));
    assert!(list["position"].as_i64().unwrap() > 0);
    let listed = list["subscriptions"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{list}");
    assert!(listed
        .iter()
        .all(|subscription| subscription["id"] != elsewhere["id"]));
    let find = |id: &str| {
        listed
            .iter()
            .find(|subscription| subscription["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {list}"))
    };
    let premium = find(&premium_id);
    assert_eq!(
        (
            premium["quantity"].clone(),
            premium["status"]["status"].clone()
        ),
        (json!(7), json!("active")),
        "{premium}"
    );
    let seats: Vec<Value> = premium["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|batch| batch["seats"].clone())
        .collect();
    assert_eq!(seats, [json!(5), json!(2)], "{premium}");
    assert!(premium["batches"]
        .as_array()
        .unwrap()
        .iter()
        .all(|batch| batch["refundable"] == true && batch["refundable_until"].is_string()));
    assert_eq!(premium["refundable_quantity"], 7);
    assert_eq!(premium["offer_id"], BUSINESS_PREMIUM);
    let archiving = find(&archiving_id);
    assert_eq!(
        (
            archiving["quantity"].clone(),
            archiving["status"]["status"].clone()
        ),
        (json!(2), json!("suspended")),
        "{archiving}"
    );
    // Exactly what the subscription's own read says.
    let (_, single) = call(
        &app,
        Method::GET,
        &admin,
        &format!("/v1/subscriptions/{premium_id}"),
        None,
    )
    .await;
    for field in [
        "quantity",
        "status",
        "batches",
        "billing_profile_id",
        "purchased_at",
    ] {
        assert_eq!(single[field], premium[field], "{field}");
    }

    // Scopes: the other tenant's customer admin sees nothing; a password admin may not read it.
    let (_, outsider) = call(
        &app,
        Method::POST,
        &admin,
        "/v1/tokens",
        Some(json!({"role": "customer_admin", "tenant_id": other_id})),
    )
    .await;
    let (status, _) = call(
        &app,
        Method::GET,
        outsider["token"].as_str().unwrap(),
        &format!("/v1/tenants/{tenant_id}/subscriptions"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
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
        &format!("/v1/tenants/{tenant_id}/subscriptions"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Readiness names every consumer with its lag; they all reach the end of the log.
    let ready = app
        .eventually(10, "readyz 200 with every consumer at lag 0", || async {
            let response = app.client.get(app.url("/readyz")).send().await.ok()?;
            let status = response.status();
            let body: Value = response.json().await.ok()?;
            let consumers = body["consumers"].as_object()?;
            let settled = consumers
                .values()
                .all(|consumer| consumer["lag_events"] == 0);
            (status == StatusCode::OK && settled).then_some(body)
        })
        .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let log_end = ready["log_end"].as_i64().expect("log_end");
    let consumers = ready["consumers"].as_object().unwrap();
    let mut names: Vec<&str> = consumers.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = seatledger::workers::consumers();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for (name, consumer) in consumers {
        assert_eq!(consumer["lag_seconds"], 0, "{name}: {consumer}");
        assert_eq!(consumer["caught_up"], true, "{name}: {consumer}");
        let position = consumer["position"]
            .as_i64()
            .unwrap_or_else(|| panic!("{name}: {consumer}"));
        assert!(position > 0 && position <= log_end, "{name}: {consumer}");
    }
    app.stop().await;
}

#[tokio::test]
async fn tenant_subscriptions_and_readiness_on_postgres() {
    subscription_list_and_readiness(Backend::Postgres).await;
}

#[tokio::test]
async fn tenant_subscriptions_and_readiness_on_sqlite() {
    subscription_list_and_readiness(Backend::Sqlite).await;
}

/// The projections' read horizon on PostgreSQL is the oldest transaction still running. A
/// transaction in another database of the same cluster can never add to this database's log,
/// so it must not hold the projections (and with them read-your-writes and readiness) back.
/// The foreign transaction is held for at most 2 s, so that other tests sharing the cluster
/// (whose reads wait up to 5 s) are not disturbed by it.
#[tokio::test]
async fn a_transaction_in_another_database_does_not_stall_the_projections_on_postgres() {
    use sqlx::Connection;
    let app = spawn_app_with(Backend::Postgres, false).await;
    app.billing_profile_and_contoso().await;
    let projections = projections::names();
    let reached = || async {
        app.state
            .store
            .slowest(&projections)
            .await
            .expect("checkpoints readable")
            .1
    };

    // Another application's transaction, in the cluster's `postgres` database, that has
    // written something (so it holds a transaction id).
    let mut elsewhere = sqlx::PgConnection::connect(crate::support::POSTGRES_ADMIN_URL)
        .await
        .expect("PostgreSQL reachable");
    let mut transaction = elsewhere.begin().await.unwrap();
    let _xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *transaction)
        .await
        .unwrap();

    let (status, tenant) = call(
        &app,
        Method::POST,
        &app.admin_token,
        "/v1/tenants",
        Some(json!({"domain": "fabrikam.onmicrosoft.com", "name": "Fabrikam"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let written = tenant["position"].as_i64().unwrap();
    let started = std::time::Instant::now();
    let mut seen = reached().await;
    while seen < written && started.elapsed() < std::time::Duration::from_secs(2) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        seen = reached().await;
    }
    let stalled = seen < written;
    transaction.rollback().await.unwrap();
    elsewhere.close().await.ok();
    // Once the foreign transaction ended, the projections move on at once.
    let after = app
        .eventually(5, "the projections reach the write", || async {
            let now = reached().await;
            (now >= written).then_some(started.elapsed())
        })
        .await;
    app.stop().await;
    assert!(
        !stalled,
        "the projections stood at position {seen} for 2 s while a transaction of another \
         database was open, short of the write at {written}; they reached it {after:?} after \
         the write, once that transaction ended"
    );
}
