//! `seatledger replay`: after a realistic workload every projection rebuilt from the log equals
//! the live one; rows tampered with in the live table are each named, in process and by the
//! command line (which exits non-zero on a difference and says "verified" otherwise).

use aggregates::catalog::offers::{
    BUSINESS_PREMIUM, ENTERPRISE_E3 as E3, EXCHANGE_ONLINE_ARCHIVING as ARCHIVING,
};
use std::collections::BTreeSet;

use crate::support::{spawn_app, Backend, TestApp};
use reqwest::{Method, StatusCode};
use seatledger::read::{Difference, DifferenceKind};
use seatledger::store::Store;
use serde_json::{json, Value};

const PHONE_SYSTEM: &str = "4260988e-990d-479c-ae7b-f01ce8e1bb4d";

/// What the workload made that the tests tamper with.
struct Workload {
    /// The demo's deleted user, restored over HTTP (so its row went deleted → active).
    restored_user: String,
}

async fn ok(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = app.call(method, &app.admin_token, path, body).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

fn id_of<'a>(list: &'a Value, field: &str, key: &str, wanted: &str) -> &'a str {
    list[field]
        .as_array()
        .unwrap_or_else(|| panic!("a list of {field}: {list}"))
        .iter()
        .find(|item| item[key] == wanted)
        .unwrap_or_else(|| panic!("no {field} with {key} = {wanted}: {list}"))["id"]
        .as_str()
        .expect("an id")
}

/// The demo partner plus HTTP commands of every kind the projections fold: seats added and
/// removed, a suspension, a billing-profile move, users created, licensed, unlicensed,
/// deleted and restored.
async fn realistic_workload(app: &TestApp) -> Workload {
    let summary = seatledger::demo::run(&app.state)
        .await
        .expect("the demo fills the fresh store");
    let contoso = summary.tenants[0].1;
    let fabrikam = summary.tenants[1].1;
    let adatum = summary.tenants[2].1;
    // The demo ran through the ledger, not over HTTP: read once the projections have its end.
    let demo_end = app.state.store.log_end().await.unwrap();

    let subscriptions = ok(
        app,
        Method::GET,
        &format!("/v1/tenants/{contoso}/subscriptions?min_position={demo_end}"),
        None,
    )
    .await;
    let premium = id_of(
        &subscriptions,
        "subscriptions",
        "offer_id",
        BUSINESS_PREMIUM,
    )
    .to_owned();
    ok(
        app,
        Method::POST,
        &format!("/v1/subscriptions/{premium}/licenses:add"),
        Some(json!({"count": 3})),
    )
    .await;
    ok(
        app,
        Method::POST,
        &format!("/v1/subscriptions/{premium}/licenses:remove"),
        Some(json!({"count": 1})),
    )
    .await;

    let subscriptions = ok(
        app,
        Method::GET,
        &format!("/v1/tenants/{fabrikam}/subscriptions"),
        None,
    )
    .await;
    let phone = id_of(&subscriptions, "subscriptions", "offer_id", PHONE_SYSTEM).to_owned();
    let e3 = id_of(&subscriptions, "subscriptions", "offer_id", E3).to_owned();
    ok(
        app,
        Method::POST,
        &format!("/v1/subscriptions/{phone}:suspend"),
        Some(json!({})),
    )
    .await;
    let profile = ok(
        app,
        Method::POST,
        "/v1/billing-profiles",
        Some(json!({"name": "Fabrikam IT", "currency": "USD"})),
    )
    .await;
    ok(
        app,
        Method::PUT,
        &format!("/v1/subscriptions/{e3}/billing-profile"),
        Some(json!({"billing_profile_id": profile["id"]})),
    )
    .await;

    let users = ok(
        app,
        Method::GET,
        &format!("/v1/tenants/{contoso}/users"),
        None,
    )
    .await;
    let megan = id_of(
        &users,
        "users",
        "user_principal_name",
        "megan.bowen@contoso.onmicrosoft.com",
    )
    .to_owned();
    let lynne = id_of(
        &users,
        "users",
        "user_principal_name",
        "lynne.robbins@contoso.onmicrosoft.com",
    )
    .to_owned();
    ok(
        app,
        Method::POST,
        &format!("/v1/users/{megan}/licenses"),
        Some(json!({"remove": [ARCHIVING]})),
    )
    .await;
    ok(app, Method::DELETE, &format!("/v1/users/{lynne}"), None).await;
    let restored_user = summary.deleted_user.to_string();
    ok(
        app,
        Method::POST,
        &format!("/v1/users/{restored_user}:restore"),
        Some(json!({})),
    )
    .await;

    let newcomer = ok(
        app,
        Method::POST,
        &format!("/v1/tenants/{adatum}/users"),
        Some(json!({
            "user_principal_name": "nestor.wilke@adatum.onmicrosoft.com",
            "first_name": "Nestor", "last_name": "Wilke", "display_name": "Nestor Wilke",
        })),
    )
    .await;
    let newcomer = newcomer["id"].as_str().expect("an id").to_owned();
    ok(
        app,
        Method::POST,
        &format!("/v1/users/{newcomer}/licenses"),
        Some(json!({"add": [BUSINESS_PREMIUM]})),
    )
    .await;

    // Read-your-writes on the last write: the projections have taken everything in.
    let licenses = ok(
        app,
        Method::GET,
        &format!("/v1/tenants/{contoso}/licenses"),
        None,
    )
    .await;
    let premium_row = licenses["licenses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["offer_id"] == BUSINESS_PREMIUM)
        .expect("a Business Premium row")
        .clone();
    // 5 + 3 − 1 seats; Megan, Alex, Diego and the restored Isaiah hold one.
    assert_eq!(
        (
            premium_row["enabled"].clone(),
            premium_row["assigned"].clone()
        ),
        (json!(7), json!(4)),
        "{licenses}"
    );
    Workload { restored_user }
}

/// Waits until /readyz answers 200 with every consumer at lag 0.
async fn caught_up(app: &TestApp) {
    app.eventually(
        10,
        "every consumer caught up (readyz 200, lag 0)",
        || async {
            let response = app.client.get(app.url("/readyz")).send().await.ok()?;
            if response.status() != StatusCode::OK {
                return None;
            }
            let body: Value = response.json().await.ok()?;
            let consumers = body["consumers"].as_object()?;
            let all_zero = !consumers.is_empty()
                && consumers
                    .values()
                    .all(|consumer| consumer["lag_events"] == 0 && consumer["caught_up"] == true);
            all_zero.then_some(())
        },
    )
    .await;
}

async fn live_rows(store: &Store, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    seatledger::on_pool!(store, pool => sqlx::query_scalar::<_, i64>(&sql).fetch_one(pool).await)
        .expect("count rows")
}

/// Runs the built `seatledger replay --verify` on `url`: (success, stdout, stderr).
async fn cli_verify(url: &str) -> (bool, i32, String, String) {
    let url = url.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatledger"))
            .args(["replay", "--verify", "--database-url", &url])
            .env_remove("DATABASE_URL")
            .output()
            .expect("the seatledger binary runs")
    })
    .await
    .expect("the blocking task ends");
    (
        output.status.success(),
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn replay_after_a_realistic_workload(backend: Backend) {
    let app = spawn_app(backend).await;
    realistic_workload(&app).await;
    caught_up(&app).await;

    // The live workers keep running: verification chases their checkpoints.
    let mut progress_calls = 0;
    let report = seatledger::read::replay::run(&app.state.store, true, |progress| {
        assert!(progress.events > 0 && progress.position <= progress.log_end);
        progress_calls += 1;
    })
    .await
    .expect("replay --verify runs");
    assert!(progress_calls > 0);
    let names: Vec<&str> = report.iter().map(|rebuilt| rebuilt.projection).collect();
    assert_eq!(names, projections::names());
    for rebuilt in &report {
        assert!(rebuilt.events > 0, "{rebuilt:?}");
        assert_eq!(
            rebuilt.differences.as_deref(),
            Some(&[][..]),
            "{} differs from its replay",
            rebuilt.projection
        );
    }
    assert_eq!(
        live_rows(&app.state.store, "read_models").await,
        live_rows(&app.state.store, "read_models_replay").await
    );
    assert!(live_rows(&app.state.store, "read_models").await > 20);

    // Without --verify: rebuilt to the end of the log, nothing compared.
    let report = seatledger::read::replay::run(&app.state.store, false, |_| {})
        .await
        .expect("replay runs");
    assert!(report
        .iter()
        .all(|rebuilt| rebuilt.events > 0 && rebuilt.differences.is_none()));

    // The command line on the same (untampered) store.
    let (success, code, stdout, stderr) = cli_verify(&app.fresh.url).await;
    assert!(success, "exit {code}\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("verified"), "stdout: {stdout}");
    assert!(!stdout.contains("DIFFERENCE"), "stdout: {stdout}");
    for name in projections::names() {
        assert!(stdout.contains(name), "{name} missing from: {stdout}");
    }
    app.stop().await;
}

#[tokio::test]
async fn replay_verifies_a_realistic_workload_on_postgres() {
    replay_after_a_realistic_workload(Backend::Postgres).await;
}

#[tokio::test]
async fn replay_verifies_a_realistic_workload_on_sqlite() {
    replay_after_a_realistic_workload(Backend::Sqlite).await;
}

/// The replay keeps rows in memory between batches, drops the least recently used ones when
/// over its budget and reads them back from the table when an event needs them again. With
/// no budget, every row that several events change is written, dropped and read back across
/// transactions (the same row changed in many transactions): one event per batch and per
/// transaction, then three per batch and seven per transaction; with an unbounded budget,
/// none is ever read back. Each way the rebuilt rows equal the live ones.
async fn replay_with_small_batches_and_budgets(backend: Backend) {
    use seatledger::read::replay::Settings;
    let app = spawn_app(backend).await;
    realistic_workload(&app).await;
    caught_up(&app).await;
    let settings = |batch, transaction, cache_bytes| Settings {
        batch,
        transaction,
        cache_bytes,
    };
    for (settings, reads_back) in [
        (settings(1, 1, 0), true),
        (settings(3, 7, 0), true),
        (settings(7, 7, usize::MAX), false),
    ] {
        let report = seatledger::read::replay::run_with(&app.state.store, true, settings, |_| {})
            .await
            .expect("replay --verify runs");
        for rebuilt in &report {
            assert_eq!(
                rebuilt.differences.as_deref(),
                Some(&[][..]),
                "{} differs from its replay with {settings:?}",
                rebuilt.projection
            );
        }
        let read: usize = report.iter().map(|rebuilt| rebuilt.rows_read).sum();
        assert_eq!(
            read > 0,
            reads_back,
            "rows read back with {settings:?}: {read}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn replay_reads_back_dropped_rows_on_postgres() {
    replay_with_small_batches_and_budgets(Backend::Postgres).await;
}

#[tokio::test]
async fn replay_reads_back_dropped_rows_on_sqlite() {
    replay_with_small_batches_and_budgets(Backend::Sqlite).await;
}

/// The indexes of the replay table on PostgreSQL, from `USING` on.
async fn replay_indexes(store: &Store) -> Vec<String> {
    let Store::Postgres(pool) = store else {
        panic!("PostgreSQL expected");
    };
    sqlx::query_scalar(
        "SELECT regexp_replace(indexdef, '^.* USING ', '') FROM pg_indexes
          WHERE tablename = 'read_models_replay' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list the replay table's indexes")
}

/// A replay drops the replay table's secondary indexes while it fills the table and builds
/// them again at the end; one that died in between leaves them to the next replay, which
/// builds them from the live table's twins.
#[tokio::test]
async fn replay_builds_the_replay_tables_indexes_again_on_postgres() {
    let app = spawn_app(Backend::Postgres).await;
    realistic_workload(&app).await;
    caught_up(&app).await;
    let store = &app.state.store;
    let before = replay_indexes(store).await;
    assert_eq!(before.len(), 3, "{before:?}");
    seatledger::read::replay::run(store, true, |_| {})
        .await
        .expect("replay --verify runs");
    assert_eq!(replay_indexes(store).await, before);

    let Store::Postgres(pool) = store else {
        unreachable!()
    };
    let dropped: String = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes
          WHERE tablename = 'read_models_replay' AND indexname <> 'read_models_replay_pkey'
          LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    execute(store, &format!("DROP INDEX {dropped}"), &[]).await;
    assert_eq!(replay_indexes(store).await.len(), 2);
    let report = seatledger::read::replay::run(store, true, |_| {})
        .await
        .expect("replay --verify runs");
    assert!(report
        .iter()
        .all(|rebuilt| rebuilt.differences.as_deref() == Some(&[][..])));
    assert_eq!(replay_indexes(store).await, before);
    app.stop().await;
}

async fn execute(store: &Store, sql: &str, binds: &[&str]) -> u64 {
    seatledger::on_pool!(store, pool => {
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        query.execute(pool).await.expect(sql).rows_affected()
    })
}

async fn fetch_doc(store: &Store, projection: &str, row_key: &str) -> Option<String> {
    seatledger::read::doc(store, projection, row_key)
        .await
        .expect("read a live row")
}

async fn replay_names_tampered_rows(backend: Backend) {
    let app = spawn_app(backend).await;
    let workload = realistic_workload(&app).await;
    caught_up(&app).await;
    // Nothing may move the live rows while they are tampered with and compared.
    app.state.workers.stop().await;
    let store = &app.state.store;

    // 1. A licence count changed in place.
    let (assigned_key, assigned_doc): (String, String) = seatledger::on_pool!(store, pool => {
        sqlx::query_as(
            "SELECT row_key, doc FROM read_models
              WHERE projection = 'licenses' AND kind = 'assigned' ORDER BY row_key LIMIT 1",
        )
        .fetch_one(pool)
        .await
    })
    .expect("an assigned row");
    let holders = serde_json::from_str::<Value>(&assigned_doc).unwrap()["holders"]
        .as_i64()
        .expect("holders");
    let from = format!("\"holders\":{holders}");
    let to = format!("\"holders\":{}", holders + 40);
    assert!(assigned_doc.contains(&from), "{assigned_doc}");
    let changed = execute(
        store,
        "UPDATE read_models SET doc = replace(doc, $1, $2)
          WHERE projection = 'licenses' AND row_key = $3",
        &[&from, &to, &assigned_key],
    )
    .await;
    assert_eq!(changed, 1);
    let tampered_doc = fetch_doc(store, "licenses", &assigned_key).await.unwrap();
    assert_ne!(tampered_doc, assigned_doc);

    // 2. A user's row gone.
    let user_key = format!("user/{}", workload.restored_user);
    let deleted = execute(
        store,
        "DELETE FROM read_models WHERE projection = 'users' AND row_key = $1",
        &[&user_key],
    )
    .await;
    assert_eq!(deleted, 1);

    // 3. A row no event made.
    let bogus_key = "subscription/00000000-0000-0000-0000-00000000b065";
    let inserted = execute(
        store,
        "INSERT INTO read_models (projection, kind, row_key, scope, sort_key, doc)
         VALUES ('subscriptions', 'subscription', $1, '00000000-0000-0000-0000-000000000001', '', '{}')",
        &[bogus_key],
    )
    .await;
    assert_eq!(inserted, 1);

    let report = seatledger::read::replay::run(store, true, |_| {})
        .await
        .expect("replay --verify runs");
    let found: BTreeSet<(String, String, String)> = report
        .iter()
        .flat_map(|rebuilt| {
            rebuilt
                .differences
                .as_ref()
                .unwrap_or_else(|| panic!("{} was not verified", rebuilt.projection))
                .iter()
        })
        .map(
            |Difference {
                 projection,
                 row_key,
                 what,
             }| {
                let what = match what {
                    DifferenceKind::Changed => "changed",
                    DifferenceKind::OnlyLive => "only_live",
                    DifferenceKind::OnlyReplay => "only_replay",
                };
                (projection.clone(), row_key.clone(), what.to_owned())
            },
        )
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("licenses", assigned_key.as_str(), "changed"),
        ("users", user_key.as_str(), "only_replay"),
        ("subscriptions", bogus_key, "only_live"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(found, expected);
    for rebuilt in &report {
        assert!(rebuilt.events > 0, "{rebuilt:?}");
    }
    // Replay rebuilds beside the live rows: it repairs nothing by itself.
    assert_eq!(
        fetch_doc(store, "licenses", &assigned_key).await,
        Some(tampered_doc)
    );
    assert_eq!(fetch_doc(store, "users", &user_key).await, None);
    assert!(fetch_doc(store, "subscriptions", bogus_key).await.is_some());

    // The command line exits non-zero and names each row with what differs.
    let (success, code, stdout, stderr) = cli_verify(&app.fresh.url).await;
    assert!(
        !success,
        "a tampered store verified\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("verified:"), "stdout: {stdout}");
    for (line, what) in [
        (
            format!("DIFFERENCE licenses: row '{assigned_key}'"),
            "differs between the live table and the replay",
        ),
        (
            format!("DIFFERENCE users: row '{user_key}'"),
            "missing from the live table",
        ),
        (
            format!("DIFFERENCE subscriptions: row '{bogus_key}'"),
            "only in the live table",
        ),
    ] {
        let shown = stdout
            .lines()
            .find(|shown| shown.contains(&line))
            .unwrap_or_else(|| panic!("'{line}' missing from stdout: {stdout}"));
        assert!(shown.contains(what), "'{shown}' should say '{what}'");
    }
    assert!(stdout.contains("3 difference(s)"), "stdout: {stdout}");
    app.stop().await;
}

#[tokio::test]
async fn replay_names_tampered_rows_on_postgres() {
    replay_names_tampered_rows(Backend::Postgres).await;
}

#[tokio::test]
async fn replay_names_tampered_rows_on_sqlite() {
    replay_names_tampered_rows(Backend::Sqlite).await;
}
