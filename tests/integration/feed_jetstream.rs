//! The JetStream feed against real NATS servers: every event of the log reaches the stream
//! exactly once, in per-aggregate (and commit) order, in a valid CloudEvents envelope — through
//! concurrent writers, a NATS server killed mid-run and started again, a server that is not
//! there when the service starts, and a publisher that crashes between acknowledgement and
//! checkpoint. Each test has its own database and its own stream (`private_stream_settings`)
//! or its own `nats-server`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::{
    nats_client, private_stream_settings, spawn_app, spawn_app_with_nats, Backend, TestApp,
    NATS_URL,
};
use aggregates::catalog::offers::{BUSINESS_PREMIUM, EXCHANGE_ONLINE_ARCHIVING};
use async_nats::jetstream::{self, message::StreamMessage, stream};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use seatledger::config::NatsSettings;
use seatledger::feed::publisher::{Publisher, PublisherStats, PUBLISHER};
use seatledger::log::Checkpoint;
use seatledger::store::Store;
use seatledger::workers::PROCESS_MANAGER;
use serde_json::{json, Value};

/// The publisher's log lines are captured with the rest of the binary's.
fn init_tracing() {
    crate::support::captured_logs();
}

// ---------------------------------------------------------------------------------------------
// The workload: commands over HTTP, several writers at once.
// ---------------------------------------------------------------------------------------------

/// Sends a command as admin and returns its answer; fails the test unless it succeeded.
async fn command(
    app: &TestApp,
    method: Method,
    path: impl AsRef<str>,
    body: Option<Value>,
) -> Value {
    let path = path.as_ref();
    let mut request = app.request(method.clone(), path, &app.admin_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}

fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an id in {value}"))
        .to_owned()
}

/// What every tenant story needs: two billing profiles and a reseller (global events).
struct Parties {
    profiles: [String; 2],
    reseller: String,
}

async fn parties(app: &TestApp) -> Parties {
    let profile = |name: &'static str| {
        command(
            app,
            Method::POST,
            "/v1/billing-profiles",
            Some(json!({"name": name, "currency": "USD"})),
        )
    };
    let reseller = command(
        app,
        Method::POST,
        "/v1/resellers",
        Some(json!({"name": "Adatum Reseller"})),
    );
    let (first, second, reseller) = tokio::join!(profile("P1"), profile("P2"), reseller);
    Parties {
        profiles: [id(&first), id(&second)],
        reseller: id(&reseller),
    }
}

/// One tenant's life, with several writers at once on the same tenant: a purchase while four
/// users are created, seats added while licences are assigned, seats removed, a user deleted
/// and restored, a licence taken back, an edit, a billing-profile move, an add-on suspended
/// and reactivated.
async fn tenant_story(app: &TestApp, parties: &Parties, label: &str, indirect: bool) {
    let domain = format!(
        "{label}-{}.onmicrosoft.com",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut body = json!({"domain": domain, "name": label});
    if indirect {
        body["reseller_id"] = json!(parties.reseller);
    }
    let tenant_id = id(&command(app, Method::POST, "/v1/tenants", Some(body)).await);
    let subscriptions = format!("/v1/tenants/{tenant_id}/subscriptions");
    let users_path = format!("/v1/tenants/{tenant_id}/users");
    let purchase = |offer: &str, quantity: u32| {
        command(
            app,
            Method::POST,
            &subscriptions,
            Some(json!({"offer_id": offer, "quantity": quantity,
                        "billing_profile_id": parties.profiles[0]})),
        )
    };

    let new_users = futures::future::join_all((0..4).map(|n| {
        command(
            app,
            Method::POST,
            &users_path,
            Some(json!({"user_principal_name": format!("user{n}@{domain}"),
                        "first_name": "User", "last_name": format!("N{n}"),
                        "display_name": format!("User {n}")})),
        )
    }));
    let (premium, users) = tokio::join!(purchase(BUSINESS_PREMIUM, 4), new_users);
    let premium = id(&premium);
    let users: Vec<String> = users.iter().map(id).collect();
    let archiving = id(&purchase(EXCHANGE_ONLINE_ARCHIVING, 2).await);

    let add_seats = command(
        app,
        Method::POST,
        format!("/v1/subscriptions/{premium}/licenses:add"),
        Some(json!({"count": 2})),
    );
    let assign = futures::future::join_all(users.iter().enumerate().map(|(n, user)| {
        let add = if n == 3 {
            json!([BUSINESS_PREMIUM, EXCHANGE_ONLINE_ARCHIVING])
        } else {
            json!([BUSINESS_PREMIUM])
        };
        command(
            app,
            Method::POST,
            format!("/v1/users/{user}/licenses"),
            Some(json!({ "add": add })),
        )
    }));
    tokio::join!(add_seats, assign);

    command(
        app,
        Method::POST,
        format!("/v1/subscriptions/{premium}/licenses:remove"),
        Some(json!({"count": 1})),
    )
    .await;
    let delete = command(app, Method::DELETE, format!("/v1/users/{}", users[0]), None);
    let take_back = command(
        app,
        Method::POST,
        format!("/v1/users/{}/licenses", users[1]),
        Some(json!({"remove": [BUSINESS_PREMIUM]})),
    );
    let edit = command(
        app,
        Method::PATCH,
        format!("/v1/users/{}", users[2]),
        Some(json!({"display_name": format!("User 2 of {label}")})),
    );
    let move_billing = command(
        app,
        Method::PUT,
        format!("/v1/subscriptions/{premium}/billing-profile"),
        Some(json!({"billing_profile_id": parties.profiles[1]})),
    );
    tokio::join!(delete, take_back, edit, move_billing);
    command(
        app,
        Method::POST,
        format!("/v1/users/{}:restore", users[0]),
        Some(json!({})),
    )
    .await;
    for action in ["suspend", "reactivate"] {
        command(
            app,
            Method::POST,
            format!("/v1/subscriptions/{archiving}:{action}"),
            Some(json!({})),
        )
        .await;
    }
}

/// Several tenants' stories at once.
async fn workload(app: &TestApp, parties: &Parties, labels: &[&str]) {
    futures::future::join_all(
        labels
            .iter()
            .enumerate()
            .map(|(n, label)| tenant_story(app, parties, label, n % 2 == 1)),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// What the log says and what the stream holds.
// ---------------------------------------------------------------------------------------------

/// How many events lie beyond `consumer`'s checkpoint.
async fn behind(store: &Store, consumer: &str) -> Option<i64> {
    let checkpoint = store.checkpoint(consumer).await.ok()?;
    Some(store.backlog(checkpoint).await.ok()?.0)
}

/// Waits until the log is quiet (the process manager has re-run every follow-up) and the
/// publisher's checkpoint covers all of it.
async fn wait_published(app: &TestApp, seconds: u64) {
    let store = &app.state.store;
    app.eventually(
        seconds,
        "the publisher's checkpoint covers the whole log",
        || async move {
            let quiet = behind(store, PROCESS_MANAGER).await? == 0;
            (quiet && behind(store, PUBLISHER).await? == 0).then_some(())
        },
    )
    .await;
}

/// Waits until every follow-up of the log has run (no more events are coming).
async fn wait_quiet(app: &TestApp) {
    let store = &app.state.store;
    app.eventually(
        30,
        "the process manager read the whole log",
        || async move { (behind(store, PROCESS_MANAGER).await? == 0).then_some(()) },
    )
    .await;
}

/// One row of the `events` table, read straight from it.
#[derive(Debug, Clone)]
struct Row {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
    position: i64,
    event_id: String,
    recorded_at: DateTime<Utc>,
}

type RawRow = (
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    i64,
    String,
    DateTime<Utc>,
);

async fn events_table(store: &Store) -> Vec<Row> {
    let Store::Postgres(pool) = store else {
        panic!("the feed tests run on PostgreSQL")
    };
    let rows: Vec<RawRow> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload::text, metadata::text, position, event_id::text, recorded_at
           FROM events ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .expect("the events table reads");
    rows.into_iter()
        .map(
            |(
                aggregate_type,
                aggregate_id,
                sequence,
                event_type,
                event_version,
                payload,
                metadata,
                position,
                event_id,
                recorded_at,
            )| Row {
                aggregate_type,
                aggregate_id,
                sequence,
                event_type,
                event_version,
                payload: serde_json::from_str(&payload).expect("payload is JSON"),
                metadata: serde_json::from_str(&metadata).expect("metadata is JSON"),
                position,
                event_id,
                recorded_at,
            },
        )
        .collect()
}

/// The stream's info and every message it holds, in stream order.
async fn read_stream(
    client: &async_nats::Client,
    name: &str,
) -> (stream::Info, Vec<StreamMessage>) {
    let context = jetstream::new(client.clone());
    let mut stream = context
        .get_stream(name)
        .await
        .unwrap_or_else(|error| panic!("the stream {name} exists: {error}"));
    let info = stream.info().await.expect("stream info").clone();
    let mut messages = Vec::new();
    if info.state.messages > 0 {
        for sequence in info.state.first_sequence..=info.state.last_sequence {
            let message = stream
                .get_raw_message(sequence)
                .await
                .unwrap_or_else(|error| panic!("message {sequence} of {name}: {error}"));
            messages.push(message);
        }
    }
    (info, messages)
}

async fn delete_stream(client: &async_nats::Client, name: &str) {
    let _ = jetstream::new(client.clone()).delete_stream(name).await;
}

/// The stream is as `settings` asks: file storage, the prefix's subjects, the window.
fn assert_stream_config(info: &stream::Info, settings: &NatsSettings) {
    assert_eq!(info.config.name, settings.stream);
    assert_eq!(
        info.config.storage,
        stream::StorageType::File,
        "events must survive a NATS restart"
    );
    assert_eq!(
        info.config.subjects,
        vec![format!("{}.>", settings.subject_prefix)]
    );
    assert_eq!(
        info.config.duplicate_window,
        Duration::from_secs(settings.duplicate_window_seconds)
    );
}

/// The body of a stored `{"<EventType>": {…}}` payload.
fn inner(row: &Row) -> &Value {
    let object = row.payload.as_object().expect("payload is an object");
    assert_eq!(object.len(), 1, "payload has one key: {}", row.payload);
    object
        .get(&row.event_type)
        .unwrap_or_else(|| panic!("payload is keyed by its type: {}", row.payload))
}

/// The tenant an event belongs to, from the table alone: a tenant's own events, a user's
/// named tenant, a subscription's opening tenant; none for the rest.
fn expected_tenant(row: &Row, rows: &[Row]) -> Option<String> {
    let named = |row: &Row| inner(row)["tenant_id"].as_str().map(str::to_owned);
    match row.aggregate_type.as_str() {
        "tenant" => Some(row.aggregate_id.clone()),
        "user" => Some(named(row).expect("a user event names its tenant")),
        "subscription" => {
            let opening = rows
                .iter()
                .find(|other| {
                    other.aggregate_type == "subscription"
                        && other.aggregate_id == row.aggregate_id
                        && other.sequence == 1
                })
                .expect("every subscription stream has its first event");
            Some(named(opening).expect("a subscription's first event names its tenant"))
        }
        _ => None,
    }
}

/// Checks the stream against the log: every event exactly once, each envelope equal, field by
/// field, to its row, the subject and `Nats-Msg-Id` right, each aggregate's events in stream
/// order 1, 2, 3… without a gap, and the whole stream in the log's reading (commit) order.
async fn assert_feed_matches_log(
    store: &Store,
    settings: &NatsSettings,
    messages: &[StreamMessage],
) {
    let rows = events_table(store).await;
    assert!(!rows.is_empty());
    assert_eq!(
        messages.len(),
        rows.len(),
        "the stream holds as many messages as the events table has rows"
    );
    let by_id: HashMap<&str, &Row> = rows
        .iter()
        .map(|row| (row.event_id.as_str(), row))
        .collect();
    let mut seen = HashSet::new();
    let mut next_in_stream: HashMap<(&str, &str), i64> = HashMap::new();
    let mut stream_order = Vec::with_capacity(messages.len());

    for message in messages {
        let at = format!("stream sequence {}", message.sequence);
        let envelope: Value = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|error| panic!("{at}: the payload is JSON: {error}"));
        let fields = envelope
            .as_object()
            .unwrap_or_else(|| panic!("{at}: an object"));
        for key in fields.keys() {
            assert!(
                crate::support::ENVELOPE_ATTRIBUTES.contains(&key.as_str()),
                "{at}: unexpected envelope field {key}"
            );
        }
        let event_id = envelope["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: a string id"));
        assert!(seen.insert(event_id.to_owned()), "{at}: {event_id} twice");
        let row = by_id
            .get(event_id)
            .unwrap_or_else(|| panic!("{at}: {event_id} is not an event of the log"));
        stream_order.push(event_id.to_owned());

        // By the constant: async-nats matches a header named by a string only against
        // headers it does not know (`get("Nats-Msg-Id")` finds nothing).
        let msg_id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|value| value.as_str().to_owned());
        assert_eq!(msg_id.as_deref(), Some(event_id), "{at}: Nats-Msg-Id");

        let tenant = expected_tenant(row, &rows);
        let subject = format!(
            "{}.{}.{}.{}",
            settings.subject_prefix,
            tenant.as_deref().unwrap_or("global"),
            row.aggregate_type,
            row.event_type
        );
        assert_eq!(message.subject.as_str(), subject, "{at}: subject");

        assert_eq!(envelope["specversion"], "1.0", "{at}");
        assert_eq!(
            envelope["source"],
            format!("urn:seatledger:{}", row.aggregate_type),
            "{at}"
        );
        assert_eq!(
            envelope["type"],
            format!(
                "seatledger.{}.{}.v{}",
                row.aggregate_type, row.event_type, row.event_version
            ),
            "{at}"
        );
        assert_eq!(envelope["subject"], row.aggregate_id, "{at}");
        let time = envelope["time"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: a string time"));
        assert!(time.ends_with('Z'), "{at}: time in UTC: {time}");
        let parsed = DateTime::parse_from_rfc3339(time)
            .unwrap_or_else(|error| panic!("{at}: time {time} is RFC 3339: {error}"));
        assert_eq!(parsed.with_timezone(&Utc), row.recorded_at, "{at}: time");
        assert_eq!(envelope["datacontenttype"], "application/json", "{at}");
        assert_eq!(envelope["position"], row.position, "{at}");
        assert_eq!(envelope["streamsequence"], row.sequence, "{at}");
        assert_eq!(
            envelope.get("tenantid").cloned(),
            tenant.map(Value::from),
            "{at}: tenantid of a {} event",
            row.aggregate_type
        );
        for (field, recorded) in [
            ("correlationid", "correlation_id"),
            ("causationid", "causation_id"),
        ] {
            assert_eq!(
                envelope.get(field),
                row.metadata.get(recorded),
                "{at}: {field} is the metadata's {recorded}"
            );
        }
        assert_eq!(&envelope["data"], inner(row), "{at}: data");

        let stream_key = (row.aggregate_type.as_str(), row.aggregate_id.as_str());
        let expected = next_in_stream.entry(stream_key).or_insert(1);
        assert_eq!(
            row.sequence, *expected,
            "{at}: {stream_key:?} out of order or with a gap"
        );
        *expected += 1;
    }
    for row in &rows {
        let next = next_in_stream[&(row.aggregate_type.as_str(), row.aggregate_id.as_str())];
        assert!(row.sequence < next, "{row:?} never reached the stream");
    }

    let log_order: Vec<String> = store
        .read_log(Checkpoint::default(), Checkpoint::END, i64::MAX)
        .await
        .expect("the log reads")
        .into_iter()
        .map(|stored| stored.event_id)
        .collect();
    assert_eq!(
        stream_order, log_order,
        "the stream is the log in its reading (commit) order"
    );
}

async fn readyz(app: &TestApp) -> Value {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("/readyz answers")
        .json()
        .await
        .expect("/readyz is JSON")
}

fn publisher_stats(app: &TestApp) -> std::sync::Arc<PublisherStats> {
    app.state
        .publisher
        .as_ref()
        .expect("the app publishes")
        .stats()
}

fn published(app: &TestApp) -> u64 {
    publisher_stats(app).published.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// A nats-server of the test's own.
// ---------------------------------------------------------------------------------------------

/// A `nats-server` child process with JetStream on a port and storage directory of its own;
/// killed when dropped, also when the test panics.
struct NatsServer {
    child: Option<std::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// A free port and an empty storage directory; no server yet.
    fn reserve() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Self {
            child: None,
            port,
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn binary() -> String {
        std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".into())
    }

    /// Starts the server (again) on the port and storage directory, and waits until JetStream
    /// answers.
    async fn start(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let binary = Self::binary();
        let child = std::process::Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("jetstream"))
            .arg("-l")
            .arg(self.dir.path().join("nats-server.log"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run {binary} ({error}); install nats-server (apt-get install \
                     nats-server) or name it in NATS_SERVER_BIN"
                )
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = async_nats::connect(self.url()).await {
                // JetStream answers its API (no "no responders") once it is up.
                if client.request("$JS.API.INFO", "".into()).await.is_ok() {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{binary} exited ({status}); see {}", self.log());
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{binary} on port {} not ready within 20 s; see {}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Deletes the server's JetStream storage (while it is stopped).
    fn wipe_storage(&self) {
        assert!(self.child.is_none(), "stop the server first");
        let storage = self.dir.path().join("jetstream");
        if storage.exists() {
            std::fs::remove_dir_all(&storage).expect("the storage directory is removed");
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log"))
            .map(|log| {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            })
            .unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

/// Several writers at once over HTTP; then the stream holds every event of the log exactly
/// once, each envelope equal field by field to its row, each aggregate in order, the whole in
/// the log's order; the stream is configured as the settings ask and `/readyz` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_reaches_jetstream_once_in_order_with_its_envelope() {
    init_tracing();
    let client = nats_client(NATS_URL).await;
    let settings = private_stream_settings(NATS_URL);
    let app = spawn_app_with_nats(Backend::Postgres, settings.clone()).await;

    let parties = parties(&app).await;
    workload(&app, &parties, &["alpha", "beta", "gamma", "delta"]).await;
    wait_published(&app, 60).await;

    let (info, messages) = read_stream(&client, &settings.stream).await;
    // Gone from the shared server before anything can fail.
    delete_stream(&client, &settings.stream).await;
    assert_stream_config(&info, &settings);
    assert_feed_matches_log(&app.state.store, &settings, &messages).await;
    let rows = events_table(&app.state.store).await;
    let types: HashSet<&str> = rows.iter().map(|row| row.event_type.as_str()).collect();
    for expected in [
        "OfferPublished",
        "BillingProfileCreated",
        "ResellerCreated",
        "TenantCreated",
        "SubscriptionOpened",
        "LicensesAdded",
        "LicensesRemoved",
        "LicensesAssigned",
        "UserDeleted",
        "UserLicensesReleased",
        "UserRestored",
        "UserLicensesReinstated",
        "UserEdited",
        "BillingProfileAssigned",
        "SubscriptionSuspended",
        "SubscriptionReactivated",
    ] {
        assert!(
            types.contains(expected),
            "the workload wrote a {expected}: {types:?}"
        );
    }

    let ready = readyz(&app).await;
    let publisher = &ready["publisher"];
    assert_eq!(publisher["lag_events"], 0, "{ready}");
    assert_eq!(publisher["published"], rows.len() as u64, "{ready}");
    assert_eq!(publisher["duplicates_dropped"], 0, "{ready}");
    assert!(publisher["position"].as_i64().unwrap() > 0, "{ready}");

    app.stop().await;
}

/// The service starts while its NATS server is not there, answers commands and reports the
/// publisher behind; the server comes up and the publisher catches up; the server is killed
/// while writers run, commands still succeed, the server starts again on the same port and
/// storage: the stream ends up holding every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_down_at_start_and_killed_mid_run_loses_nothing_and_reorders_nothing() {
    init_tracing();
    let mut server = NatsServer::reserve();
    let settings = private_stream_settings(&server.url());

    // No server on the port: the service starts and serves anyway.
    let app = spawn_app_with_nats(Backend::Postgres, settings.clone()).await;
    let parties = parties(&app).await;
    tenant_story(&app, &parties, "early", false).await;
    wait_quiet(&app).await;
    let ready = readyz(&app).await;
    let publisher = &ready["publisher"];
    assert!(
        publisher["lag_events"].as_i64().unwrap() > 0,
        "the publisher is behind while NATS is away: {ready}"
    );
    assert_eq!(publisher["published"], 0, "{ready}");
    assert_eq!(publisher["position"], 0, "{ready}");

    // The server comes: the publisher catches up.
    server.start().await;
    wait_published(&app, 60).await;

    // Killed while several writers run; they go on writing.
    let before = published(&app);
    let failures_before = publisher_stats(&app).failures.load(Ordering::Relaxed);
    let writing = std::sync::atomic::AtomicBool::new(true);
    let writers = async {
        workload(&app, &parties, &["alpha", "beta", "gamma"]).await;
        writing.store(false, Ordering::SeqCst);
    };
    let killer = async {
        app.eventually(30, "some of the workload is published", || async {
            (published(&app) >= before + 10).then_some(())
        })
        .await;
        server.kill();
        println!(
            "NATS killed after {} of the workload's events were published, writers {}",
            published(&app) - before,
            if writing.load(Ordering::SeqCst) {
                "still writing"
            } else {
                "done"
            }
        );
    };
    tokio::join!(writers, killer);

    // Commands go on while NATS is down.
    tenant_story(&app, &parties, "outage", true).await;
    wait_quiet(&app).await;
    let ready = readyz(&app).await;
    assert!(
        ready["publisher"]["lag_events"].as_i64().unwrap() > 0,
        "events written during the outage wait in the log: {ready}"
    );
    // Down long enough for publishes to go unacknowledged (not only to wait in the client's
    // buffer until it reconnects): the publisher has failed, and will look at the stream
    // before publishing again.
    app.eventually(30, "the publisher notices the outage", || async {
        (publisher_stats(&app).failures.load(Ordering::Relaxed) > failures_before).then_some(())
    })
    .await;

    // Back on the same port and storage.
    server.start().await;
    wait_published(&app, 60).await;
    let client = async_nats::connect(server.url())
        .await
        .expect("the private server answers");
    let (info, messages) = read_stream(&client, &settings.stream).await;
    assert_stream_config(&info, &settings);
    assert_feed_matches_log(&app.state.store, &settings, &messages).await;

    app.stop().await;
}

/// What the publisher crash tests start from: a service without a publisher of its own, the
/// publisher's checkpoint at the start of the log, a tenant's story written (`label`), a NATS
/// client and the settings of a stream of the test's own.
struct Bench {
    client: async_nats::Client,
    settings: NatsSettings,
    app: TestApp,
    store: Store,
    parties: Parties,
}

async fn bench_with_story(label: &str) -> Bench {
    init_tracing();
    let client = nats_client(NATS_URL).await;
    let settings = private_stream_settings(NATS_URL);
    let app = spawn_app(Backend::Postgres).await;
    let store = app.state.store.clone();
    store
        .ensure_checkpoint(PUBLISHER)
        .await
        .expect("the publisher's checkpoint");
    let parties = parties(&app).await;
    tenant_story(&app, &parties, label, false).await;
    wait_quiet(&app).await;
    Bench {
        client,
        settings,
        app,
        store,
        parties,
    }
}

/// A publisher crashes after JetStream acknowledged a batch but before its checkpoint moved;
/// the next one re-sends that batch (JetStream drops every re-send as a duplicate) together
/// with newer events, and the stream holds each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_acknowledgement_and_checkpoint_resends_and_duplicates_are_dropped() {
    let Bench {
        client,
        settings,
        app,
        store,
        parties,
    } = bench_with_story("first").await;

    // A first publisher publishes and checkpoints what there is.
    let first = Publisher::new(store.clone(), settings.clone()).expect("valid settings");
    while first.step().await.expect("publishing") {}
    let checkpointed = first.stats().published.load(Ordering::Relaxed);
    assert_eq!(checkpointed as usize, events_table(&store).await.len());

    // More events; it publishes them and "crashes" before moving its checkpoint.
    tenant_story(&app, &parties, "second", true).await;
    wait_quiet(&app).await;
    let unrecorded = behind(&store, PUBLISHER).await.unwrap() as u64;
    assert!(unrecorded > 0);
    assert!(first
        .step_without_checkpoint()
        .await
        .expect("publishing without checkpoint"));
    assert_eq!(
        first.stats().published.load(Ordering::Relaxed),
        checkpointed + unrecorded
    );
    assert_eq!(
        behind(&store, PUBLISHER).await.unwrap() as u64,
        unrecorded,
        "the checkpoint stayed"
    );
    drop(first);

    // Newer events still; the next publisher re-sends the unrecorded batch and goes on.
    tenant_story(&app, &parties, "third", false).await;
    wait_quiet(&app).await;
    let newer = behind(&store, PUBLISHER).await.unwrap() as u64 - unrecorded;
    let second = Publisher::new(store.clone(), settings.clone()).expect("valid settings");
    while second.step().await.expect("publishing") {}
    let stats = second.stats();
    assert_eq!(
        stats.duplicates.load(Ordering::Relaxed),
        unrecorded,
        "every re-sent event was dropped as a duplicate"
    );
    assert_eq!(stats.published.load(Ordering::Relaxed), newer);
    assert_eq!(behind(&store, PUBLISHER).await, Some(0));

    let (info, messages) = read_stream(&client, &settings.stream).await;
    // Gone from the shared server before anything can fail.
    delete_stream(&client, &settings.stream).await;
    assert_stream_config(&info, &settings);
    assert_feed_matches_log(&store, &settings, &messages).await;

    drop(second);
    app.stop().await;
}

/// A crash before the first checkpoint ever moved: the next publisher finds the stream ahead
/// of its checkpoint, moves the checkpoint to the stream's end instead of re-sending, and the
/// stream holds each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_before_the_first_checkpoint_resumes_from_the_streams_end() {
    let Bench {
        client,
        settings,
        app,
        store,
        parties,
    } = bench_with_story("first").await;
    let total = behind(&store, PUBLISHER).await.unwrap() as u64;

    let first = Publisher::new(store.clone(), settings.clone()).expect("valid settings");
    assert!(first.step_without_checkpoint().await.expect("publishing"));
    assert_eq!(
        store.checkpoint(PUBLISHER).await.unwrap(),
        Checkpoint::default()
    );
    drop(first);

    tenant_story(&app, &parties, "second", true).await;
    wait_quiet(&app).await;
    let newer = behind(&store, PUBLISHER).await.unwrap() as u64 - total;
    let second = Publisher::new(store.clone(), settings.clone()).expect("valid settings");
    while second.step().await.expect("publishing") {}
    let stats = second.stats();
    assert_eq!(stats.published.load(Ordering::Relaxed), newer);
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 0);
    assert!(stats.resyncs.load(Ordering::Relaxed) >= 1);

    let (_, messages) = read_stream(&client, &settings.stream).await;
    // Gone from the shared server before anything can fail.
    delete_stream(&client, &settings.stream).await;
    assert_feed_matches_log(&store, &settings, &messages).await;

    drop(second);
    app.stop().await;
}

/// Without a NATS URL the service runs and serves its own feed, `/readyz` has no `publisher`,
/// and nothing of its log goes to NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_nats_the_service_serves_and_publishes_nothing() {
    init_tracing();
    let client = nats_client(NATS_URL).await;
    // Everything any publisher sends to the shared server, whatever its subject.
    let mut everything = client.subscribe(">").await.expect("a subscription");
    client
        .flush()
        .await
        .expect("the subscription is registered");

    let app = spawn_app(Backend::Postgres).await;
    assert!(app.state.publisher.is_none());
    let parties = parties(&app).await;
    tenant_story(&app, &parties, "offline", false).await;
    wait_quiet(&app).await;

    let ready = readyz(&app).await;
    assert!(ready.get("publisher").is_none(), "{ready}");
    assert!(ready.get("consumers").is_some(), "{ready}");
    let Store::Postgres(pool) = &app.state.store else {
        unreachable!()
    };
    let publisher_rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM consumer_checkpoints WHERE consumer = $1")
            .bind(PUBLISHER)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(publisher_rows, 0, "no publisher checkpoint without NATS");

    let (status, page) = app
        .call(
            Method::GET,
            &app.admin_token,
            "/v1/events?after=0&limit=1000",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let rows = events_table(&app.state.store).await;
    assert_eq!(
        page["events"].as_array().map(Vec::len),
        Some(rows.len()),
        "the HTTP feed serves every event: {page}"
    );

    // Nothing of this log reached NATS: no message names any of its event ids.
    let ids: HashSet<&str> = rows.iter().map(|row| row.event_id.as_str()).collect();
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(message)) =
        tokio::time::timeout_at(quiet_until, futures::StreamExt::next(&mut everything)).await
    {
        let text = String::from_utf8_lossy(&message.payload);
        for id in &ids {
            assert!(
                !text.contains(id),
                "event {id} reached NATS on {}",
                message.subject
            );
        }
    }
    app.stop().await;
}

/// NATS comes back without its storage (a server replaced, a container restarted without its
/// volume): the stream and every message in it are gone. The README promises that the
/// publisher "catches up when NATS returns" and that after a failure it "moves to where the
/// stream really is"; so the stream is created again and ends up holding the whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_back_without_its_storage_gets_the_whole_log_again() {
    init_tracing();
    let mut server = NatsServer::reserve();
    server.start().await;
    let settings = private_stream_settings(&server.url());
    let app = spawn_app_with_nats(Backend::Postgres, settings.clone()).await;
    let parties = parties(&app).await;
    tenant_story(&app, &parties, "before", false).await;
    wait_published(&app, 60).await;

    server.kill();
    server.wipe_storage();
    server.start().await;
    tenant_story(&app, &parties, "after", true).await;
    wait_quiet(&app).await;

    let client = async_nats::connect(server.url())
        .await
        .expect("the private server answers");
    let rows = events_table(&app.state.store).await.len() as u64;
    let context = jetstream::new(client.clone());
    let stream_name = settings.stream.clone();
    app.eventually(
        20,
        "the stream is there again and holds the whole log",
        || {
            let context = context.clone();
            let stream_name = stream_name.clone();
            async move {
                let mut stream = context.get_stream(&stream_name).await.ok()?;
                let messages = stream.info().await.ok()?.state.messages;
                (messages >= rows).then_some(())
            }
        },
    )
    .await;
    let (info, messages) = read_stream(&client, &settings.stream).await;
    assert_stream_config(&info, &settings);
    assert_feed_matches_log(&app.state.store, &settings, &messages).await;
    app.stop().await;
}

/// The stream was deleted (by an operator, or with its server's storage) after the publisher
/// had checkpointed the whole log; a publisher started afterwards creates it again. The
/// stream is to be "a gap-free prefix of the log", and the publisher moves its checkpoint
/// "back there when the stream lost messages": so the new stream must hold the whole log, not
/// only what came after the old checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publisher_facing_a_recreated_empty_stream_publishes_the_whole_log() {
    let Bench {
        client,
        settings,
        app,
        store,
        parties,
    } = bench_with_story("before").await;
    let first = Publisher::new(store.clone(), settings.clone()).expect("valid settings");
    while first.step().await.expect("publishing") {}
    drop(first);

    delete_stream(&client, &settings.stream).await;
    tenant_story(&app, &parties, "after", true).await;
    wait_quiet(&app).await;

    // A new publisher (a restarted service) runs until it has nothing left to publish; a
    // failed step (it finds the stream elsewhere than its checkpoint) is retried.
    let second = Publisher::new(store.clone(), settings.clone()).expect("valid settings");
    let mut failures = Vec::new();
    loop {
        match second.step().await {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                failures.push(error.to_string());
                assert!(
                    failures.len() < 10,
                    "the publisher keeps failing: {failures:?}"
                );
            }
        }
    }
    let (_, messages) = read_stream(&client, &settings.stream).await;
    // Gone from the shared server before anything can fail.
    delete_stream(&client, &settings.stream).await;
    assert_feed_matches_log(&store, &settings, &messages).await;

    drop(second);
    app.stop().await;
}
