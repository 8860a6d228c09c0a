//! The event feed over HTTP, `GET /v1/events` (pages) and `GET /v1/events/stream` (Server-Sent
//! Events): every event exactly once in the log's reading order, envelopes that match the
//! `events` table, cursors and `has_more` as documented, no skip under concurrent commits, the
//! scopes of every role, validation, resuming with `Last-Event-ID`, and shutdown with open streams.

use aggregates::catalog::offers::BUSINESS_PREMIUM;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{spawn_app, Backend, TestApp};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use seatledger::store::Store;
use serde_json::{json, Value};
use tokio::time::Instant;

/// The tenants of [`world`]: the first reseller's, the second reseller's, and a direct one.
const DOMAINS: [&str; 3] = [
    "alpha.onmicrosoft.com",
    "beta.onmicrosoft.com",
    "delta.onmicrosoft.com",
];
/// A generous bound for anything that happens in the background or live.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Commands and plain reads
// ---------------------------------------------------------------------------------------------

/// Sends a command as admin and insists that it succeeds.
async fn command(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = app.call(method.clone(), &app.admin_token, path, body).await;
    assert!(status.is_success(), "{method} {path}: {status} {answer}");
    answer
}

async fn post(app: &TestApp, path: &str, body: Value) -> Value {
    command(app, Method::POST, path, Some(body)).await
}

fn id(answer: &Value) -> String {
    answer["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an id in {answer}"))
        .to_owned()
}

async fn token(app: &TestApp, body: Value) -> String {
    post(app, "/v1/tokens", body).await["token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

/// A GET as `token` (none: anonymous), without `min_position`: status, content type, body.
async fn get(app: &TestApp, token: Option<&str>, path: &str) -> (StatusCode, String, Value) {
    let mut request = app.client.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Adds (or updates) an offer of the catalog: a catalog event.
async fn publish_offer(app: &TestApp, n: u32) {
    post(
        app,
        "/v1/offers",
        json!({"id": format!("33333333-3333-3333-3333-33333333333{n}"), "name": format!("Feed Add-on {n}"), "provisioning_id": format!("FEED_ADDON_{n}"), "assignable_to_users": true, "unit_price": {"amount": "1.00", "currency": "USD"}, "parent_offers": [BUSINESS_PREMIUM]}),
    )
    .await;
}

/// What [`world`] created.
struct World {
    resellers: Vec<String>,
    tenants: Vec<String>,
    subscriptions: Vec<String>,
}

/// A catalog change, two resellers with a tenant each and a direct tenant, each tenant with a
/// billing profile, a subscription and [`activity`]: events of every aggregate type.
async fn world(app: &TestApp) -> World {
    publish_offer(app, 1).await;
    let mut resellers = Vec::new();
    for name in ["Northwind", "Litware"] {
        resellers.push(id(&post(app, "/v1/resellers", json!({"name": name})).await));
    }
    let mut tenants = Vec::new();
    let mut subscriptions = Vec::new();
    for (n, domain) in DOMAINS.iter().enumerate() {
        let reseller = resellers.get(n).cloned();
        let mut profile = json!({"name": format!("Profile {n}"), "currency": "USD"});
        let mut tenant = json!({"domain": domain, "name": format!("Tenant {n}")});
        if let Some(reseller) = &reseller {
            profile["reseller_id"] = json!(reseller);
            tenant["reseller_id"] = json!(reseller);
        }
        let profile = id(&post(app, "/v1/billing-profiles", profile).await);
        let tenant = id(&post(app, "/v1/tenants", tenant).await);
        let subscription = id(&post(
            app,
            &format!("/v1/tenants/{tenant}/subscriptions"),
            json!({"offer_id": BUSINESS_PREMIUM, "quantity": 5, "billing_profile_id": profile}),
        )
        .await);
        activity(app, &tenant, &subscription, domain, 0).await;
        tenants.push(tenant);
        subscriptions.push(subscription);
    }
    World {
        resellers,
        tenants,
        subscriptions,
    }
}

/// Commands on one tenant that log events of the tenant, its subscription (LicensesAdded, whose
/// data names no tenant) and a new user.
async fn activity(app: &TestApp, tenant: &str, subscription: &str, domain: &str, n: usize) {
    post(
        app,
        &format!("/v1/subscriptions/{subscription}/licenses:add"),
        json!({"count": 2}),
    )
    .await;
    let user = id(&post(
        app,
        &format!("/v1/tenants/{tenant}/users"),
        json!({"user_principal_name": format!("user{n}@{domain}"), "first_name": "Megan", "last_name": "Bowen", "display_name": "Megan Bowen"}),
    )
    .await);
    post(
        app,
        &format!("/v1/users/{user}/licenses"),
        json!({"add": [BUSINESS_PREMIUM]}),
    )
    .await;
    command(
        app,
        Method::PATCH,
        &format!("/v1/users/{user}"),
        Some(json!({"display_name": "Megan B."})),
    )
    .await;
    post(app, &format!("/v1/users/{user}:reset-password"), json!({})).await;
    command(app, Method::DELETE, &format!("/v1/users/{user}"), None).await;
    post(app, &format!("/v1/users/{user}:restore"), json!({})).await;
    post(
        app,
        &format!("/v1/subscriptions/{subscription}:suspend"),
        json!({}),
    )
    .await;
    post(
        app,
        &format!("/v1/subscriptions/{subscription}:reactivate"),
        json!({}),
    )
    .await;
}

/// Waits until the log has stopped growing and every consumer has read all of it (follow-ups of
/// the process managers included); returns the log's end.
async fn quiesce(app: &TestApp) -> i64 {
    let consumers = seatledger::workers::consumers();
    let consumers = &consumers;
    let store = &app.state.store;
    app.eventually(
        DEADLINE.as_secs(),
        "the background work catches up with the log",
        move || async move {
            let end = store.log_end().await.ok()?;
            let (_, reached) = store.slowest(consumers).await.ok()?;
            (reached >= end && store.log_end().await.ok()? == end).then_some(end)
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// The events table, read independently of the feed
// ---------------------------------------------------------------------------------------------

/// One row of the `events` table.
#[derive(Debug, Clone)]
struct Row {
    position: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    event_id: String,
    /// `recorded_at` in microseconds since the epoch.
    recorded_micros: i64,
    payload: Value,
    metadata: Value,
}

impl Row {
    /// The body of the stored `{"<EventType>": {…}}` payload.
    fn body(&self) -> &Value {
        &self.payload[self.event_type.as_str()]
    }
}

type RawRow = (
    i64,
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|error| panic!("'{rfc3339}' is not RFC 3339: {error}"))
        .timestamp_micros()
}

/// Every row of the `events` table, in the log's reading order ((transaction id, position) on
/// PostgreSQL, position on SQLite).
async fn table(store: &Store) -> Vec<Row> {
    let raw: Vec<RawRow> = match store {
        Store::Postgres(pool) => sqlx::query_as(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                    event_id::text, ((extract(epoch FROM recorded_at) * 1000000)::bigint)::text,
                    payload::text, metadata::text
               FROM events ORDER BY transaction_id, position",
        )
        .fetch_all(pool)
        .await
        .expect("the events table"),
        Store::Sqlite(pool) => sqlx::query_as(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                    event_id, recorded_at, payload, metadata
               FROM events ORDER BY position",
        )
        .fetch_all(pool)
        .await
        .expect("the events table"),
    };
    let postgres = matches!(store, Store::Postgres(_));
    raw.into_iter()
        .map(
            |(
                position,
                aggregate_type,
                aggregate_id,
                sequence,
                event_type,
                event_version,
                event_id,
                recorded_at,
                payload,
                metadata,
            )| Row {
                position,
                aggregate_type,
                aggregate_id,
                sequence,
                event_type,
                event_version,
                event_id,
                recorded_micros: if postgres {
                    recorded_at.parse().expect("microseconds")
                } else {
                    micros(&recorded_at)
                },
                payload: serde_json::from_str(&payload).expect("a JSON payload"),
                metadata: serde_json::from_str(&metadata).expect("JSON metadata"),
            },
        )
        .collect()
}

/// The tenant of every row (by event id), worked out from the table alone: a tenant's events are
/// its own, a user's event names its tenant, a subscription's tenant is named by its first
/// event; catalog, reseller and billing-profile events have none.
fn tenants_of(rows: &[Row]) -> HashMap<String, Option<String>> {
    let named = |row: &Row| row.body()["tenant_id"].as_str().map(str::to_owned);
    let subscriptions: HashMap<&str, String> = rows
        .iter()
        .filter(|row| row.aggregate_type == "subscription" && row.sequence == 1)
        .map(|row| {
            let tenant = named(row).unwrap_or_else(|| panic!("a tenant in {:?}", row.payload));
            (row.aggregate_id.as_str(), tenant)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let tenant = match row.aggregate_type.as_str() {
                "tenant" => Some(row.aggregate_id.clone()),
                "user" => Some(named(row).expect("user events name their tenant")),
                "subscription" => Some(subscriptions[row.aggregate_id.as_str()].clone()),
                _ => None,
            };
            (row.event_id.clone(), tenant)
        })
        .collect()
}

/// The ids of `rows` (in order) whose tenant is one of `tenants`.
fn ids_of_tenants(rows: &[Row], tenants: &[&str]) -> Vec<String> {
    let tenancy = tenants_of(rows);
    rows.iter()
        .filter(|row| {
            tenancy[&row.event_id]
                .as_deref()
                .is_some_and(|tenant| tenants.contains(&tenant))
        })
        .map(|row| row.event_id.clone())
        .collect()
}

fn ids(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|row| row.event_id.clone()).collect()
}

fn event_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["id"].as_str().expect("an event id").to_owned())
        .collect()
}

/// Checks every attribute of `event` against its row of the table.
fn assert_envelope(event: &Value, row: &Row, tenant: Option<&str>) {
    let what = format!(
        "{} {} at {}: {event}",
        row.aggregate_type, row.event_type, row.position
    );
    for key in event.as_object().expect("an envelope object").keys() {
        assert!(
            crate::support::ENVELOPE_ATTRIBUTES.contains(&key.as_str()),
            "unknown attribute {key}: {what}"
        );
    }
    assert_eq!(event["specversion"], "1.0", "{what}");
    assert_eq!(event["id"], json!(row.event_id), "{what}");
    assert_eq!(
        event["source"],
        json!(format!("urn:seatledger:{}", row.aggregate_type)),
        "{what}"
    );
    assert_eq!(
        event["type"],
        json!(format!(
            "seatledger.{}.{}.v{}",
            row.aggregate_type, row.event_type, row.event_version
        )),
        "{what}"
    );
    assert_eq!(event["subject"], json!(row.aggregate_id), "{what}");
    let time = event["time"].as_str().expect("a time");
    assert!(time.ends_with('Z'), "UTC: {what}");
    assert_eq!(micros(time), row.recorded_micros, "{what}");
    assert_eq!(event["datacontenttype"], "application/json", "{what}");
    assert_eq!(event["position"], json!(row.position), "{what}");
    assert_eq!(event["streamsequence"], json!(row.sequence), "{what}");
    assert_eq!(
        event.get("tenantid").and_then(Value::as_str),
        tenant,
        "{what}"
    );
    for (attribute, field) in [
        ("correlationid", "correlation_id"),
        ("causationid", "causation_id"),
    ] {
        assert_eq!(
            event.get(attribute),
            row.metadata.get(field).filter(|value| !value.is_null()),
            "{attribute}: {what}"
        );
    }
    assert_eq!(&event["data"], row.body(), "{what}");
}

/// Within each stream, `streamsequence` runs 1, 2, 3… in the order served.
fn assert_stream_order(events: &[Value]) {
    let mut last: HashMap<(String, String), i64> = HashMap::new();
    for event in events {
        let stream = (
            event["source"].as_str().unwrap().to_owned(),
            event["subject"].as_str().unwrap().to_owned(),
        );
        let sequence = event["streamsequence"].as_i64().unwrap();
        let previous = last.insert(stream.clone(), sequence).unwrap_or(0);
        assert_eq!(
            sequence,
            previous + 1,
            "out of order in {stream:?}: {event}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Paging
// ---------------------------------------------------------------------------------------------

/// One page as served.
#[derive(Debug)]
struct Page {
    events: Vec<Value>,
    next_after: i64,
    has_more: bool,
    position: i64,
}

async fn page(app: &TestApp, token: &str, after: i64, limit: usize) -> Page {
    let (status, _, body) = get(
        app,
        Some(token),
        &format!("/v1/events?after={after}&limit={limit}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "after={after}: {body}");
    Page {
        events: body["events"].as_array().expect("events").clone(),
        next_after: body["next_after"].as_i64().expect("next_after"),
        has_more: body["has_more"].as_bool().expect("has_more"),
        position: body["position"].as_i64().expect("position"),
    }
}

/// Pages through the whole feed as `token`, `limit` events at a time, checking every page
/// against the paging rules (`everything`: the token sees every event, so pages are full until
/// the end); returns the events in the order served and (count, has_more) of every page.
async fn page_all(
    app: &TestApp,
    token: &str,
    limit: usize,
    everything: bool,
) -> (Vec<Value>, Vec<(usize, bool)>) {
    let mut events = Vec::new();
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let served = page(app, token, after, limit).await;
        let what = format!("after={after} limit={limit}: {served:?}");
        assert!(served.events.len() <= limit, "{what}");
        for event in &served.events {
            assert!(
                event["position"].as_i64().unwrap() <= served.position,
                "position is the log's end: {what}"
            );
        }
        if everything {
            match served.events.last() {
                Some(last) => assert_eq!(json!(served.next_after), last["position"], "{what}"),
                None => assert_eq!(served.next_after, after, "{what}"),
            }
            if served.has_more {
                assert_eq!(served.events.len(), limit, "{what}");
            }
        }
        pages.push((served.events.len(), served.has_more));
        events.extend(served.events);
        if !served.has_more {
            // Past the end: an empty page that keeps the cursor where it is.
            let end = page(app, token, served.next_after, limit).await;
            assert!(end.events.is_empty(), "{end:?}");
            assert!(!end.has_more, "{end:?}");
            assert_eq!(end.next_after, served.next_after, "{end:?}");
            return (events, pages);
        }
        assert!(pages.len() < 10_000, "the feed never ends: {what}");
        after = served.next_after;
    }
}

async fn paging(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    world(&app).await;
    let end = quiesce(&app).await;
    let rows = table(&app.state.store).await;
    assert!(rows.len() > 50, "a workload of some size: {}", rows.len());
    let tenancy = tenants_of(&rows);
    let by_id: HashMap<&str, &Row> = rows
        .iter()
        .map(|row| (row.event_id.as_str(), row))
        .collect();

    // Small pages from the start: every event exactly once, in the log's reading order.
    let (events, pages) = page_all(&app, &admin, 7, true).await;
    let served = event_ids(&events);
    let unique: HashSet<&String> = served.iter().collect();
    assert_eq!(unique.len(), served.len(), "an event served twice");
    assert_eq!(served, ids(&rows), "the table's events in reading order");
    assert!(pages.len() > 5, "{pages:?}");
    assert_stream_order(&events);

    // Every envelope matches its row, attribute by attribute, for every aggregate type.
    let mut types = HashSet::new();
    for event in &events {
        let row = by_id[event["id"].as_str().unwrap()];
        assert_envelope(event, row, tenancy[&row.event_id].as_deref());
        types.insert(row.aggregate_type.clone());
    }
    for aggregate_type in [
        "catalog",
        "reseller",
        "billing_profile",
        "tenant",
        "subscription",
        "user",
    ] {
        assert!(types.contains(aggregate_type), "no {aggregate_type} event");
    }
    assert!(
        events
            .iter()
            .any(|event| event.get("correlationid").is_some()),
        "commands record a correlation id"
    );

    // `position` is the log's end; the default page is 100 events, the largest 1000.
    let first = page(&app, &admin, 0, 1000).await;
    assert_eq!(first.position, end);
    assert_eq!(event_ids(&first.events), ids(&rows));
    assert!(!first.has_more);
    let (status, _, default) = get(&app, Some(&admin), "/v1/events").await;
    assert_eq!(status, StatusCode::OK);
    let expected = ids(&rows).into_iter().take(100).collect::<Vec<_>>();
    assert_eq!(
        event_ids(default["events"].as_array().unwrap()),
        expected,
        "the default page"
    );
    assert_eq!(default["has_more"], json!(rows.len() > 100));

    // A cursor in the middle continues right after its event.
    let middle = &rows[rows.len() / 2];
    let next = page(&app, &admin, middle.position, 3).await;
    assert_eq!(
        event_ids(&next.events),
        ids(&rows[rows.len() / 2 + 1..rows.len() / 2 + 4])
    );
    assert!(next.has_more);
    assert_eq!(json!(next.next_after), next.events[2]["position"]);

    // A page that ends exactly at the log's end says there is no more.
    let before_last = &rows[rows.len() - 3];
    let last = page(&app, &admin, before_last.position, 2).await;
    assert_eq!(event_ids(&last.events), ids(&rows[rows.len() - 2..]));
    assert!(!last.has_more, "{last:?}");
    let past = page(&app, &admin, last.next_after, 2).await;
    assert!(past.events.is_empty() && !past.has_more);
    assert_eq!(past.next_after, last.next_after);

    app.stop().await;
}

#[tokio::test]
async fn paging_serves_every_event_once_in_order_with_its_row_on_postgres() {
    paging(Backend::Postgres).await;
}

#[tokio::test]
async fn paging_serves_every_event_once_in_order_with_its_row_on_sqlite() {
    paging(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------
// Concurrency (PostgreSQL: positions commit out of order)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_reader_paging_during_concurrent_writes_gets_every_event_once_on_postgres() {
    const WRITERS: usize = 4;
    const ROUNDS: usize = 12;
    let app = spawn_app(Backend::Postgres).await;
    let admin = app.admin_token.clone();
    let profile = id(&post(
        &app,
        "/v1/billing-profiles",
        json!({"name": "P", "currency": "USD"}),
    )
    .await);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let domain = format!("writer{w}.onmicrosoft.com");
        let tenant = id(&post(
            &app,
            "/v1/tenants",
            json!({"domain": domain, "name": format!("Writer {w}")}),
        )
        .await);
        let subscription = id(&post(
            &app,
            &format!("/v1/tenants/{tenant}/subscriptions"),
            json!({"offer_id": BUSINESS_PREMIUM, "quantity": 1, "billing_profile_id": profile}),
        )
        .await);
        writers.push((domain, tenant, subscription));
    }

    // `writing`: the HTTP writers still run; `done`: every writer has finished.
    let writing = AtomicBool::new(true);
    let done = AtomicBool::new(false);
    let reader = async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = HashSet::new();
        let mut order = Vec::new();
        let mut after = 0;
        loop {
            let finished = done.load(Ordering::SeqCst);
            let served = page(&app, &admin, after, 7).await;
            for event in served.events {
                let id = event["id"].as_str().unwrap().to_owned();
                assert!(seen.insert(id), "served twice: {event}");
                order.push(event);
            }
            after = served.next_after;
            if !served.has_more {
                if finished {
                    let all: HashSet<String> =
                        ids(&table(&app.state.store).await).into_iter().collect();
                    assert!(seen.is_subset(&all));
                    if all == seen {
                        return order;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the reader never got {:?}",
                        all.difference(&seen).collect::<Vec<_>>()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let http_writers = async {
        futures::future::join_all(writers.iter().map(|(domain, tenant, subscription)| {
            let app = &app;
            async move {
                for round in 0..ROUNDS {
                    post(
                        app,
                        &format!("/v1/subscriptions/{subscription}/licenses:add"),
                        json!({"count": 1}),
                    )
                    .await;
                    post(
                        app,
                        &format!("/v1/tenants/{tenant}/users"),
                        json!({"user_principal_name": format!("u{round}@{domain}"), "first_name": "U", "last_name": "N", "display_name": "U N"}),
                    )
                    .await;
                }
            }
        }))
        .await;
        writing.store(false, Ordering::SeqCst);
    };
    // Meanwhile a late writer makes positions commit out of order for sure: it takes its
    // transaction id, waits until a later transaction has committed an event (with a lower
    // position than its own will be), then inserts and commits.
    let late_writer = async {
        use sqlx::Connection;
        let mut connection = connect(&app).await;
        let mut rounds = 0;
        while writing.load(Ordering::SeqCst) {
            let mut transaction = connection.begin().await.unwrap();
            sqlx::query("SELECT pg_current_xact_id()")
                .execute(&mut *transaction)
                .await
                .unwrap();
            let deadline = Instant::now() + DEADLINE;
            loop {
                let overtaken: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM events WHERE transaction_id > pg_current_xact_id())",
                )
                .fetch_one(&mut *transaction)
                .await
                .unwrap();
                if overtaken || !writing.load(Ordering::SeqCst) {
                    break;
                }
                assert!(Instant::now() < deadline, "the writers stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sqlx::query(INSERT_RESELLER)
                .bind(1_i64)
                .execute(&mut *transaction)
                .await
                .unwrap();
            transaction.commit().await.unwrap();
            rounds += 1;
        }
        rounds
    };
    let writers_then_done = async {
        let ((), rounds) = tokio::join!(http_writers, late_writer);
        done.store(true, Ordering::SeqCst);
        rounds
    };
    let (order, late_rounds) = tokio::join!(reader, writers_then_done);

    assert_stream_order(&order);
    let rows = table(&app.state.store).await;
    assert_eq!(event_ids(&order), ids(&rows), "the reading order");
    let mut highest = 0;
    let inversions = order
        .iter()
        .filter(|event| {
            let position = event["position"].as_i64().unwrap();
            let lower = position < highest;
            highest = highest.max(position);
            lower
        })
        .count();
    eprintln!(
        "{} events read while {WRITERS} writers and {late_rounds} late commits ran; {inversions} \
         served after a higher position",
        order.len()
    );
    assert!(
        inversions > 0,
        "each late commit puts a higher position before lower ones"
    );
    app.stop().await;
}

/// A connection of the test's own to the app's PostgreSQL database (retried for a while: other
/// tests running at once may hold every connection the server allows for a moment).
async fn connect(app: &TestApp) -> sqlx::PgConnection {
    use sqlx::Connection;
    let deadline = Instant::now() + DEADLINE;
    loop {
        match sqlx::PgConnection::connect(&app.fresh.url).await {
            Ok(connection) => return connection,
            Err(error) if Instant::now() < deadline => {
                eprintln!("connecting again after: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("PostgreSQL refuses a connection: {error}"),
        }
    }
}

/// A ResellerCreated event written straight into the table, as the service would write it.
const INSERT_RESELLER: &str =
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                         payload, metadata)
     SELECT 'reseller', id::text, 1, 'ResellerCreated', '1',
            json_build_object('ResellerCreated',
                              json_build_object('reseller_id', id, 'name', 'Bulk ' || n,
                                                'at', '2026-01-01T00:00:00Z')),
            '{}'::json
       FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, $1::bigint) AS n) AS bulk
     RETURNING position";

#[tokio::test]
async fn a_lower_position_committed_later_is_served_after_the_higher_one_on_postgres() {
    use sqlx::Connection;
    let app = spawn_app(Backend::Postgres).await;
    let admin = app.admin_token.clone();
    app.billing_profile_and_contoso().await;
    quiesce(&app).await;
    let (mut events, _) = page_all(&app, &admin, 5, true).await;
    let mut after = events.last().unwrap()["position"].as_i64().unwrap();

    // A writer takes its transaction id first but inserts last: its event's position is higher
    // than that of a command committed in the meantime, yet it comes first in commit order.
    let mut late = connect(&app).await;
    let mut transaction = late.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *transaction)
        .await
        .unwrap();
    let early = post(&app, "/v1/resellers", json!({"name": "Early"})).await;
    let lower = early["position"].as_i64().unwrap();
    // A reader pages meanwhile (and must not move past what the late writer will commit).
    let meanwhile = page(&app, &admin, after, 1).await;
    events.extend(meanwhile.events);
    after = meanwhile.next_after;
    let higher: i64 = sqlx::query_scalar(INSERT_RESELLER)
        .bind(1_i64)
        .fetch_one(&mut *transaction)
        .await
        .unwrap();
    assert!(higher > lower);
    transaction.commit().await.unwrap();

    // One event a page, from where the reader was.
    loop {
        let served = page(&app, &admin, after, 1).await;
        events.extend(served.events);
        after = served.next_after;
        if !served.has_more {
            break;
        }
    }
    let rows = table(&app.state.store).await;
    assert_eq!(
        event_ids(&events),
        ids(&rows),
        "every event once, in commit order"
    );
    let at = |position: i64| {
        events
            .iter()
            .position(|event| event["position"] == json!(position))
            .unwrap_or_else(|| panic!("position {position} never served"))
    };
    assert!(
        at(higher) < at(lower),
        "{higher} (committed first) is served before {lower}"
    );
    // The cursor of the higher position leads to the lower one.
    let next = page(&app, &admin, higher, 1).await;
    assert_eq!(next.events[0]["position"], json!(lower));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Scopes
// ---------------------------------------------------------------------------------------------

async fn scopes(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    let world = world(&app).await;
    quiesce(&app).await;
    let rows = table(&app.state.store).await;
    let tenant = |n: usize| world.tenants[n].as_str();
    let reseller = token(
        &app,
        json!({"role": "reseller", "reseller_id": world.resellers[0]}),
    )
    .await;
    let other_reseller = token(
        &app,
        json!({"role": "reseller", "reseller_id": world.resellers[1]}),
    )
    .await;
    let customer = token(
        &app,
        json!({"role": "customer_admin", "tenant_id": tenant(2)}),
    )
    .await;
    let password_admin = token(
        &app,
        json!({"role": "password_admin", "tenant_id": tenant(0)}),
    )
    .await;
    let support = token(&app, json!({"role": "support"})).await;
    let auditor = token(&app, json!({"role": "auditor"})).await;

    // Each scoped token sees exactly its tenants' events, subscription events without a
    // tenant_id in their data included, and nothing tenant-less.
    for (who, token, tenants) in [
        ("reseller", &reseller, vec![tenant(0)]),
        ("other reseller", &other_reseller, vec![tenant(1)]),
        ("customer admin", &customer, vec![tenant(2)]),
    ] {
        let (events, _) = page_all(&app, token, 5, false).await;
        assert_eq!(
            event_ids(&events),
            ids_of_tenants(&rows, &tenants),
            "{who} sees its tenants' events"
        );
        for event in &events {
            assert!(
                tenants.contains(&event["tenantid"].as_str().unwrap()),
                "{who}: {event}"
            );
        }
        assert!(
            events.iter().any(
                |event| event["type"] == "seatledger.subscription.LicensesAdded.v1"
                    && event["data"].get("tenant_id").is_none()
            ),
            "{who} sees LicensesAdded, whose data names no tenant"
        );
        for source in ["tenant", "subscription", "user"] {
            assert!(
                events
                    .iter()
                    .any(|event| event["source"] == json!(format!("urn:seatledger:{source}"))),
                "{who} sees {source} events"
            );
        }
    }
    for (who, token) in [
        ("admin", &admin),
        ("support", &support),
        ("auditor", &auditor),
    ] {
        let (events, _) = page_all(&app, token, 50, true).await;
        assert_eq!(event_ids(&events), ids(&rows), "{who} sees everything");
    }
    for path in ["/v1/events", "/v1/events/stream"] {
        let (status, content_type, body) = get(&app, Some(&password_admin), path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(content_type.starts_with("application/problem+json"));
        let (status, content_type, body) = get(&app, None, path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert!(content_type.starts_with("application/problem+json"));
    }

    // The same scopes on the live stream: the backlog, then new events of the scope only
    // (commands on other tenants and the catalog commit first, so a leak would come first).
    let mut streams = Vec::new();
    for (token, tenants) in [
        (&reseller, vec![tenant(0)]),
        (&customer, vec![tenant(2)]),
        (&support, world.tenants.iter().map(String::as_str).collect()),
    ] {
        let mut stream = Sse::open(&app, Some(token), "", None)
            .await
            .expect("the stream opens");
        let expected = if token == &support {
            ids(&rows)
        } else {
            ids_of_tenants(&rows, &tenants)
        };
        let backlog = stream.take(expected.len()).await;
        assert_eq!(event_ids(&backlog), expected);
        streams.push((stream, token, tenants));
    }
    publish_offer(&app, 2).await;
    for n in [1, 0, 2] {
        post(
            &app,
            &format!("/v1/subscriptions/{}/licenses:add", world.subscriptions[n]),
            json!({"count": 1}),
        )
        .await;
    }
    quiesce(&app).await;
    let now = table(&app.state.store).await;
    assert_eq!(ids(&now[..rows.len()]), ids(&rows), "commits come after");
    for (mut stream, token, tenants) in streams {
        let expected = if token == &support {
            ids(&now[rows.len()..])
        } else {
            let all = ids_of_tenants(&now, &tenants);
            let before = ids_of_tenants(&rows, &tenants).len();
            all[before..].to_vec()
        };
        assert!(!expected.is_empty());
        let live = stream.take(expected.len()).await;
        assert_eq!(event_ids(&live), expected, "live events of the scope only");
    }
    app.stop().await;
}

#[tokio::test]
async fn each_role_sees_its_scope_of_the_feed_on_postgres() {
    scopes(Backend::Postgres).await;
}

#[tokio::test]
async fn each_role_sees_its_scope_of_the_feed_on_sqlite() {
    scopes(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_page_scans_at_most_ten_thousand_events_for_a_narrow_scope_on_postgres() {
    let app = spawn_app(Backend::Postgres).await;
    let admin = app.admin_token.clone();
    let reseller = id(&post(&app, "/v1/resellers", json!({"name": "Northwind"})).await);
    let profile = id(&post(
        &app,
        "/v1/billing-profiles",
        json!({"name": "P", "currency": "USD", "reseller_id": reseller}),
    )
    .await);
    let tenant = id(&post(
        &app,
        "/v1/tenants",
        json!({"domain": DOMAINS[0], "name": "Alpha", "reseller_id": reseller}),
    )
    .await);
    let subscription = id(&post(
        &app,
        &format!("/v1/tenants/{tenant}/subscriptions"),
        json!({"offer_id": BUSINESS_PREMIUM, "quantity": 5, "billing_profile_id": profile}),
    )
    .await);
    quiesce(&app).await;
    // Over ten thousand events the reseller may not see, then some of its own.
    let Store::Postgres(pool) = &app.state.store else {
        unreachable!()
    };
    sqlx::query(INSERT_RESELLER)
        .bind(10_500_i64)
        .execute(pool)
        .await
        .unwrap();
    post(
        &app,
        &format!("/v1/subscriptions/{subscription}/licenses:add"),
        json!({"count": 2}),
    )
    .await;
    quiesce(&app).await;
    let rows = table(&app.state.store).await;
    let expected = ids_of_tenants(&rows, &[tenant.as_str()]);
    let reseller_token = token(&app, json!({"role": "reseller", "reseller_id": reseller})).await;

    let (events, pages) = page_all(&app, &reseller_token, 100, false).await;
    assert_eq!(event_ids(&events), expected);
    assert!(
        pages[0].0 < 100 && pages[0].1,
        "the first page stops after its scan with fewer events and has_more: {pages:?}"
    );
    assert!(pages.len() >= 2, "{pages:?}");

    // The admin pages through all of it.
    let (everything, _) = page_all(&app, &admin, 1000, true).await;
    assert_eq!(event_ids(&everything), ids(&rows));

    // The live stream reads on past the scan.
    let mut stream = Sse::open(&app, Some(&reseller_token), "", None)
        .await
        .expect("the stream opens");
    assert_eq!(event_ids(&stream.take(expected.len()).await), expected);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

async fn validation(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    app.billing_profile_and_contoso().await;
    let end = quiesce(&app).await;
    let invalid = |path: String, field: &'static str| {
        let app = &app;
        let admin = &admin;
        async move {
            let (status, content_type, body) = get(app, Some(admin), &path).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
            assert!(
                content_type.starts_with("application/problem+json"),
                "{path}: {content_type}"
            );
            assert_eq!(body["field"], field, "{path}: {body}");
            assert_eq!(body["status"], 422, "{path}: {body}");
        }
    };
    for after in ["-1".to_owned(), "abc".to_owned(), (end + 1000).to_string()] {
        invalid(format!("/v1/events?after={after}"), "after").await;
        invalid(format!("/v1/events/stream?after={after}"), "after").await;
    }
    for limit in ["0", "1001", "abc"] {
        invalid(format!("/v1/events?limit={limit}"), "limit").await;
    }
    // The edges are fine.
    for path in [
        "/v1/events?after=0&limit=1".to_owned(),
        format!("/v1/events?after={end}&limit=1000"),
    ] {
        let (status, _, body) = get(&app, Some(&admin), &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }

    // A reconnecting client's Last-Event-ID is checked the same way.
    for last_event_id in ["xyz", "-1"] {
        let Err((status, body)) = Sse::open(&app, Some(&admin), "", Some(last_event_id)).await
        else {
            panic!("Last-Event-ID: {last_event_id} accepted");
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], "Last-Event-ID", "{body}");
    }
    let Err((status, body)) =
        Sse::open(&app, Some(&admin), "", Some(&(end + 1000).to_string())).await
    else {
        panic!("a Last-Event-ID with no event accepted");
    };
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "Last-Event-ID", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn bad_cursors_and_limits_are_422_naming_the_field_on_postgres() {
    validation(Backend::Postgres).await;
}

#[tokio::test]
async fn bad_cursors_and_limits_are_422_naming_the_field_on_sqlite() {
    validation(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------------------------

/// A minimal Server-Sent Events client: `id:` and `data:` lines, a blank line ends an event,
/// comments (keep-alives) are ignored.
struct Sse {
    response: reqwest::Response,
    buffer: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
    /// How the stream ended, once it has: cleanly, or with the transport's error.
    ended: Option<Result<(), String>>,
}

/// One event of the stream.
#[derive(Debug)]
struct SseEvent {
    id: Option<String>,
    /// The `event:` name, when the service names one (`lagged`).
    event: Option<String>,
    data: Value,
}

impl Sse {
    /// Opens `/v1/events/stream?{query}` (with `Last-Event-ID` if given); an error answer comes
    /// back as its status and body.
    async fn open(
        app: &TestApp,
        token: Option<&str>,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<Sse, (StatusCode, Value)> {
        let mut request = app
            .client
            .get(app.url(&format!("/v1/events/stream{query}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(last_event_id) = last_event_id {
            request = request.header("Last-Event-ID", last_event_id);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status();
        if !status.is_success() {
            return Err((status, response.json().await.unwrap_or(Value::Null)));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Ok(Sse {
            response,
            buffer: Vec::new(),
            id: None,
            event: None,
            data: Vec::new(),
            ended: None,
        })
    }

    /// The next event, or `None` once the stream has ended; panics if neither happens by
    /// `deadline`.
    async fn next(&mut self, deadline: Instant) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8(line).expect("the stream is UTF-8");
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    let id = self.id.take();
                    let event = self.event.take();
                    if self.data.is_empty() {
                        continue;
                    }
                    let data = std::mem::take(&mut self.data).join("\n");
                    let data = serde_json::from_str(&data)
                        .unwrap_or_else(|error| panic!("data is not JSON ({error}): {data}"));
                    return Some(SseEvent { id, event, data });
                }
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => self.id = Some(value.to_owned()),
                    "event" => self.event = Some(value.to_owned()),
                    "data" => self.data.push(value.to_owned()),
                    _ => {}
                }
            }
            if self.ended.is_some() {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => panic!("the stream sent nothing more by the deadline"),
                Ok(Ok(Some(bytes))) => self.buffer.extend_from_slice(&bytes),
                Ok(Ok(None)) => self.ended = Some(Ok(())),
                Ok(Err(error)) => self.ended = Some(Err(error.to_string())),
            }
        }
    }

    /// The next `count` events (each within [`DEADLINE`]), checking that each one's SSE id is
    /// its position.
    async fn take(&mut self, count: usize) -> Vec<Value> {
        let mut events = Vec::new();
        while events.len() < count {
            let event = self
                .next(Instant::now() + DEADLINE)
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "the stream ended after {} of {count} events: {:?}",
                        events.len(),
                        self.ended
                    )
                });
            assert_eq!(
                event.id.as_deref().map(str::parse::<i64>),
                Some(Ok(event.data["position"].as_i64().unwrap())),
                "the SSE id is the position: {event:?}"
            );
            events.push(event.data);
        }
        events
    }
}

async fn resume(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    let world = world(&app).await;
    quiesce(&app).await;
    let rows = table(&app.state.store).await;

    // A client reads the first events, then goes away.
    let mut stream = Sse::open(&app, Some(&admin), "?after=0", None)
        .await
        .expect("the stream opens");
    let first = stream.take(10).await;
    assert_eq!(event_ids(&first), ids(&rows[..10]));
    let last_id = first[9]["position"].to_string();
    drop(stream);

    // More happens while it is away.
    activity(
        &app,
        &world.tenants[1],
        &world.subscriptions[1],
        DOMAINS[1],
        1,
    )
    .await;
    quiesce(&app).await;
    let rows = table(&app.state.store).await;

    // It comes back with the last id it received (which wins over ?after=): exactly what it
    // had not seen, then live events.
    let mut stream = Sse::open(&app, Some(&admin), "?after=0", Some(&last_id))
        .await
        .expect("the stream reopens");
    let rest = stream.take(rows.len() - 10).await;
    assert_eq!(
        event_ids(&rest),
        ids(&rows[10..]),
        "none missed, none repeated"
    );
    let added = post(
        &app,
        &format!("/v1/subscriptions/{}/licenses:add", world.subscriptions[2]),
        json!({"count": 1}),
    )
    .await;
    let wanted = added["position"].as_i64().unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut live = Vec::new();
    while !live
        .iter()
        .any(|event: &Value| event["position"] == json!(wanted))
    {
        let event = stream.next(deadline).await.expect("the stream stays open");
        live.push(event.data);
    }
    quiesce(&app).await;
    let now = table(&app.state.store).await;
    assert_eq!(
        event_ids(&live),
        ids(&now[rows.len()..rows.len() + live.len()]),
        "the command's events arrive live, after the backlog"
    );
    let all: Vec<String> = event_ids(&first)
        .into_iter()
        .chain(event_ids(&rest))
        .chain(event_ids(&live))
        .collect();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        all.len(),
        "no event twice"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_stream_resumes_after_its_last_event_id_then_goes_live_on_postgres() {
    resume(Backend::Postgres).await;
}

#[tokio::test]
async fn a_stream_resumes_after_its_last_event_id_then_goes_live_on_sqlite() {
    resume(Backend::Sqlite).await;
}

async fn shutdown(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token.clone();
    app.billing_profile_and_contoso().await;
    quiesce(&app).await;
    let mut stream = Sse::open(&app, Some(&admin), "", None)
        .await
        .expect("the stream opens");
    let backlog = table(&app.state.store).await.len();
    stream.take(backlog).await;

    tokio::time::timeout(DEADLINE, app.stop())
        .await
        .expect("the service stops with a stream open");
    let deadline = Instant::now() + DEADLINE;
    let after_shutdown = stream.next(deadline).await;
    assert!(
        after_shutdown.is_none(),
        "an event after shutdown: {after_shutdown:?}"
    );
    assert_eq!(stream.ended, Some(Ok(())), "the stream ends cleanly");
}

#[tokio::test]
async fn shutdown_ends_an_open_stream_on_postgres() {
    shutdown(Backend::Postgres).await;
}

#[tokio::test]
async fn shutdown_ends_an_open_stream_on_sqlite() {
    shutdown(Backend::Sqlite).await;
}

#[tokio::test]
async fn shutdown_ends_a_stream_whose_client_stopped_reading_on_postgres() {
    let app = spawn_app(Backend::Postgres).await;
    let admin = app.admin_token.clone();
    let Store::Postgres(pool) = &app.state.store else {
        unreachable!()
    };
    // Far more than the stream's buffer and the sockets' hold.
    sqlx::query(INSERT_RESELLER)
        .bind(20_000_i64)
        .execute(pool)
        .await
        .unwrap();
    quiesce(&app).await;
    let mut stream = Sse::open(&app, Some(&admin), "", None)
        .await
        .expect("the stream opens");
    stream.take(1).await;
    // The client reads no further; give the service time to fill every buffer (this waits, it
    // asserts nothing).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut stopping = tokio::spawn(app.stop());
    match tokio::time::timeout(DEADLINE, &mut stopping).await {
        Ok(stopped) => {
            stopped.expect("the service stops");
            // The client finds the rest of what was sent, then the end.
            let deadline = Instant::now() + DEADLINE;
            while stream.next(deadline).await.is_some() {}
        }
        Err(_) => {
            // Hanging up lets the stuck shutdown finish (and remove the test's database).
            drop(stream);
            stopping
                .await
                .expect("the service stops once the client hangs up");
            panic!(
                "the service did not stop within {DEADLINE:?} while a client of the stream had \
                 stopped reading; it stopped once the client hung up"
            );
        }
    }
}

/// Appends `count` copies of the log's first reseller event (each its own new reseller) in one
/// statement: a burst far larger than the shared tail's ring, written in a moment.
async fn burst_of_events(store: &Store, count: i64) {
    let Store::Postgres(pool) = store else {
        unreachable!("the burst is written on PostgreSQL")
    };
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT aggregate_type, gen_random_uuid()::text, 1, event_type, event_version, payload, metadata
           FROM (SELECT * FROM events WHERE aggregate_type = 'reseller' ORDER BY position LIMIT 1) AS first,
                generate_series(1, $1)",
    )
    .bind(count)
    .execute(pool)
    .await
    .expect("the burst is written");
}

/// A client that stops reading falls behind the shared tail: the service holds nothing more
/// for it than the ring everybody shares, ends its feed with a `lagged` event whose id is where
/// to resume, and the reconnect with that `Last-Event-ID` gets the rest with nothing missed or
/// repeated.
#[tokio::test]
async fn a_client_that_stops_reading_is_ended_with_an_id_to_resume_from_on_postgres() {
    const BURST: i64 = 40_000;
    let app = spawn_app(Backend::Postgres).await;
    let admin = app.admin_token.clone();
    world(&app).await;
    quiesce(&app).await;
    let mut slow = Sse::open(&app, Some(&admin), "?after=0", None)
        .await
        .expect("the stream opens");
    let before = table(&app.state.store).await.len();
    let mut received = slow.take(before).await;
    // Live now; while it reads nothing, the log runs far past what any buffer holds.
    burst_of_events(&app.state.store, BURST).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resume_after = loop {
        let event = slow
            .next(Instant::now() + DEADLINE)
            .await
            .expect("the feed says where to resume before it ends");
        if event.event.as_deref() == Some("lagged") {
            let resume_after = event.data["resume_after"].as_i64().expect("resume_after");
            assert_eq!(event.id, Some(resume_after.to_string()), "{event:?}");
            break resume_after;
        }
        received.push(event.data);
    };
    assert!(
        slow.next(Instant::now() + DEADLINE).await.is_none(),
        "the lagged feed ends"
    );
    assert!(
        received.len() < before + BURST as usize,
        "the client did fall behind"
    );
    let mut resumed = Sse::open(&app, Some(&admin), "", Some(&resume_after.to_string()))
        .await
        .expect("the stream resumes");
    let rows = table(&app.state.store).await;
    received.extend(resumed.take(rows.len() - received.len()).await);
    assert_eq!(
        event_ids(&received),
        ids(&rows),
        "every event once, in the log's order"
    );
    app.stop().await;
}

/// Live feeds are capped per token (429) with `Retry-After`; a feed whose client went away
/// frees its place.
#[tokio::test]
async fn live_feeds_are_capped_per_token_on_sqlite() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin = app.admin_token.clone();
    let mut open = Vec::new();
    for _ in 0..16 {
        open.push(
            Sse::open(&app, Some(&admin), "", None)
                .await
                .expect("under the cap"),
        );
    }
    let refused = app
        .client
        .get(app.url("/v1/events/stream"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], json!("too_many_streams"));
    // Another token has its own share.
    let support = token(&app, json!({"role": "support"})).await;
    Sse::open(&app, Some(&support), "", None)
        .await
        .expect("another token's feed opens");
    // A client that hangs up frees its place once the service next writes to it.
    open.pop();
    post(&app, "/v1/resellers", json!({"name": "Wakes every feed"})).await;
    app.eventually(
        DEADLINE.as_secs(),
        "the closed feed's place is free",
        || async { Sse::open(&app, Some(&admin), "", None).await.ok() },
    )
    .await;
    app.stop().await;
}
