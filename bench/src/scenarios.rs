//! The scenarios of issue 6, each with the baseline it is compared with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aggregates::catalog::offers::BUSINESS_PREMIUM;
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use seatledger::store::Store;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::baselines;
use crate::bulk::{self, BigStore};
use crate::infra::{self, FreshDb, Memory, Servers, ServiceChild};
use crate::load::{closed_loop, failure, id_of, Api, OpFuture, Outcome, Worker};
use crate::progress::{phase, Counter, Phases, Ticker};
use crate::report::{Measurement, ScenarioReport, Target};
use crate::stats::{self, Samples};

/// Sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Events in the large store (C, E, F, G).
    pub events: u64,
    /// Users of the large tenant (C, G).
    pub users: usize,
    /// Concurrent clients of A, B, D and the baselines 1 and 2.
    pub clients: usize,
    /// Measurement window.
    pub seconds: Duration,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Commands per second of D.
    pub rate: u64,
    /// Clients of C.
    pub latency_clients: usize,
    /// Mixed load of G.
    pub memory_seconds: Duration,
    /// Users per tenant in A, B (per client) and D.
    pub users_per_client: usize,
    /// Longest run of the publisher's catch-up (F) and the service's catch-up from position 0
    /// (C, G).
    pub limit: Duration,
    /// Longest replay (E, and C/G when they need one).
    pub replay_limit: Duration,
}

/// What every scenario needs.
#[derive(Clone)]
pub struct Ctx {
    /// Where PostgreSQL and NATS are.
    pub servers: Servers,
    /// Sizes.
    pub settings: Settings,
    /// Phase times.
    pub phases: Phases,
    /// The admin token every service child starts with.
    pub admin_token: String,
}

fn premium_sku() -> String {
    aggregates::catalog::default_catalog()
        .get(&aggregates::values::OfferId::parse(BUSINESS_PREMIUM).expect("a valid offer id"))
        .expect("Business Premium is in the default catalog")
        .provisioning_id
        .to_string()
}

fn holds(body: &Value, sku: &str) -> bool {
    body.get("licenses")
        .and_then(Value::as_array)
        .is_some_and(|licences| licences.iter().any(|l| l.as_str() == Some(sku)))
}

/// A client that alternately gives and takes Business Premium to and from its own users.
pub struct AssignWorker {
    api: Api,
    /// Its users and whether each holds the licence (as the last answer said).
    pub users: Vec<(Uuid, bool)>,
    next: usize,
    /// The highest position an answer reported.
    pub max_position: i64,
    sku: Arc<str>,
}

impl AssignWorker {
    fn new(api: &Api, users: Vec<(Uuid, bool)>) -> Self {
        Self {
            api: api.clone(),
            users,
            next: 0,
            max_position: 0,
            sku: premium_sku().into(),
        }
    }

    async fn assign(&mut self) -> Result<i64, String> {
        let index = self.next % self.users.len();
        self.next += 1;
        let (user, held) = self.users[index];
        let body = if held {
            json!({"add": [], "remove": [BUSINESS_PREMIUM]})
        } else {
            json!({"add": [BUSINESS_PREMIUM], "remove": []})
        };
        let answer = self
            .api
            .call(
                Method::POST,
                &format!("/v1/users/{user}/licenses"),
                Some(&body),
            )
            .await?;
        if answer.0.is_success() {
            self.users[index].1 = holds(&answer.1, &self.sku);
            let position = answer.1["position"].as_i64().unwrap_or(0);
            self.max_position = self.max_position.max(position);
            Ok(position)
        } else {
            // Learn where the user stands, so the next request for it is the right one.
            if let Ok((status, current)) = self
                .api
                .call(Method::GET, &format!("/v1/users/{user}"), None)
                .await
            {
                if status.is_success() {
                    self.users[index].1 = holds(&current, &self.sku);
                }
            }
            Err(failure(&answer))
        }
    }
}

impl Worker for AssignWorker {
    fn op(&mut self) -> OpFuture<'_> {
        Box::pin(async move { self.assign().await.map(drop) })
    }
}

/// A tenant created over HTTP, with its users.
pub struct SetupTenant {
    /// The tenant.
    pub tenant_id: Uuid,
    /// Its users.
    pub users: Vec<Uuid>,
}

/// Creates a billing profile and `tenants` tenants over HTTP, each with a Business Premium
/// subscription of `seats` seats and `users_each` users.
async fn setup_tenants(
    api: &Api,
    scenario: &str,
    tenants: usize,
    users_each: usize,
    seats: u32,
) -> anyhow::Result<Vec<SetupTenant>> {
    let counter = Counter::new();
    let shown = counter.clone();
    let _ticker = Ticker::start(scenario, "setup over HTTP", move |_| {
        shown.line("users created")
    });
    let profile = id_of(
        &api.post_ok(
            "/v1/billing-profiles",
            &json!({"name": "Bench", "currency": "USD"}),
        )
        .await?,
    )?;
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    futures::stream::iter(0..tenants)
        .map(|index| {
            let (api, counter, run) = (api.clone(), counter.clone(), run.clone());
            async move {
                let domain = format!("bench{index}-{run}.onmicrosoft.com");
                let tenant_id = id_of(
                    &api.post_ok(
                        "/v1/tenants",
                        &json!({"domain": domain, "name": format!("Bench {index}")}),
                    )
                    .await?,
                )?;
                api.post_ok(
                    &format!("/v1/tenants/{tenant_id}/subscriptions"),
                    &json!({"offer_id": BUSINESS_PREMIUM, "quantity": seats, "billing_profile_id": profile}),
                )
                .await?;
                let users: Vec<Uuid> = futures::stream::iter(0..users_each)
                    .map(|user| {
                        let (api, counter, domain) = (api.clone(), counter.clone(), domain.clone());
                        async move {
                            let created = api
                                .post_ok(
                                    &format!("/v1/tenants/{tenant_id}/users"),
                                    &json!({
                                        "user_principal_name": format!("user{user}@{domain}"),
                                        "first_name": "Bench",
                                        "last_name": format!("Tester {user}"),
                                        "display_name": format!("Bench Tester {user}"),
                                    }),
                                )
                                .await?;
                            counter.add(1);
                            id_of(&created)
                        }
                    })
                    .buffer_unordered(4)
                    .try_collect()
                    .await?;
                Ok::<_, anyhow::Error>(SetupTenant { tenant_id, users })
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await
}

/// Compares the licence view of each tenant with what the clients' answers said: `(tenants
/// checked, mismatches described)`.
async fn check_licence_views(
    api: &Api,
    expected: &HashMap<Uuid, u64>,
    min_position: i64,
) -> anyhow::Result<(usize, Vec<String>)> {
    let sku = premium_sku();
    let mut mismatches = Vec::new();
    for (tenant_id, count) in expected {
        let view = api
            .get_ok(&format!(
                "/v1/tenants/{tenant_id}/licenses?min_position={min_position}"
            ))
            .await?;
        let assigned = view["licenses"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["sku"].as_str() == Some(&sku)))
            .and_then(|row| row["assigned"].as_u64());
        if assigned != Some(*count) {
            mismatches.push(format!(
                "tenant {tenant_id}: the licence view shows {assigned:?} assigned, the answers said {count}"
            ));
        }
    }
    Ok((expected.len(), mismatches))
}

fn sanity_note(checked: usize, mismatches: &[String]) -> String {
    if mismatches.is_empty() {
        format!(
            "Sanity check: the licence view of all {checked} tenant(s), read with `?min_position=` \
             of the last answer, shows exactly the assignments the answers reported."
        )
    } else {
        format!(
            "**Sanity check failed** for {} of {checked} tenant(s): {}",
            mismatches.len(),
            mismatches.join("; ")
        )
    }
}

fn errors_note(outcome: &Outcome) -> Option<String> {
    (!outcome.error_kinds.is_empty()).then(|| {
        format!(
            "Failed requests (warm-up included): {}.",
            outcome.error_text()
        )
    })
}

async fn with_service<T, F, Fut>(
    ctx: &Ctx,
    database_url: &str,
    nats: Option<&seatledger::config::NatsSettings>,
    work: F,
) -> anyhow::Result<T>
where
    F: FnOnce(Api, u32) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let child = ServiceChild::start(database_url, &ctx.admin_token, nats).await?;
    let api = Api::new(&child.base, &ctx.admin_token);
    let result = async {
        api.wait_healthy().await?;
        work(api.clone(), child.pid).await
    }
    .await;
    child.stop().await?;
    result
}

async fn migrated(db: &FreshDb) -> anyhow::Result<Store> {
    let store = Store::connect(&db.url).await?;
    store.migrate().await?;
    Ok(store)
}

fn ratio_text(measured: f64, baseline: f64, name: &str) -> String {
    match stats::ratio(measured, baseline) {
        Some(ratio) => format!("{} {name}", stats::times(ratio)),
        None => format!("— × {name}"),
    }
}

/// A. AssignLicenses over HTTP, distinct tenants, against baselines 1 and 2.
pub async fn scenario_a(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let s = &ctx.settings;
    let clients = s.clients;
    infra::with_fresh_db(&ctx.servers, |db| async move {
        let store = migrated(&db).await?;
        let mut raw = phase(
            &ctx.phases,
            "A",
            "baseline 1: raw load + append",
            baselines::raw_load_append("A", &db.url, clients, s.warmup, s.seconds),
        )
        .await?;
        let mut bare = phase(
            &ctx.phases,
            "A",
            "baseline 2: bare postgres-es",
            baselines::bare_postgres_es("A", &db.url, clients, s.warmup, s.seconds),
        )
        .await?;
        let (mut outcome, checked, mismatches) = phase(
            &ctx.phases,
            "A",
            "service: setup and AssignLicenses",
            with_service(ctx, &db.url, None, |api, _| async move {
                let tenants = setup_tenants(&api, "A", clients, s.users_per_client, 1_000).await?;
                let workers = tenants
                    .iter()
                    .map(|tenant| {
                        AssignWorker::new(
                            &api,
                            tenant.users.iter().map(|user| (*user, false)).collect(),
                        )
                    })
                    .collect();
                let (outcome, workers) = closed_loop(
                    "A",
                    "AssignLicenses over HTTP",
                    workers,
                    s.warmup,
                    s.seconds,
                )
                .await;
                let mut expected = HashMap::new();
                let mut min_position = 0;
                for (tenant, worker) in tenants.iter().zip(&workers) {
                    let held = worker.users.iter().filter(|(_, held)| *held).count();
                    expected.insert(tenant.tenant_id, held as u64);
                    min_position = min_position.max(worker.max_position);
                }
                let (checked, mismatches) =
                    check_licence_views(&api, &expected, min_position).await?;
                Ok((outcome, checked, mismatches))
            }),
        )
        .await?;
        if let Store::Postgres(pool) = &store {
            pool.close().await;
        }
        let mut report = ScenarioReport {
            id: "A",
            title: "AssignLicenses over HTTP, distinct tenants".into(),
            method: vec![format!(
                "{clients} clients, each with a tenant of its own (a Business Premium subscription \
                 of 1 000 seats, {} users), alternately adding and removing the licence of its \
                 users over HTTP (`POST /v1/users/{{id}}/licenses`), closed loop, {} s warm-up \
                 then {} s measured. Baseline 1: {clients} connections, each on its own stream \
                 of a scratch table shaped like `events`, `BEGIN; SELECT` the stream`; INSERT` \
                 the next event`; COMMIT`. Baseline 2: a counter aggregate through cqrs-es \
                 `CqrsFramework` over postgres-es (event store, no snapshots, no queries, no \
                 HTTP), {clients} clients on distinct aggregates. In both baselines a client \
                 moves to a new stream after {} events (a snapshot every 100 events bounds what \
                 seatledger loads per command the same way; an ever-growing stream would make the \
                 baseline slower the longer the window). Both baselines use {clients} pool \
                 connections; the service's pool has 16.",
                s.users_per_client,
                s.warmup.as_secs_f64(),
                s.seconds.as_secs_f64(),
                baselines::STREAM_LENGTH
            )],
            ..ScenarioReport::default()
        };
        let raw_rate = raw.throughput();
        let bare_rate = bare.throughput();
        report.measurements.push(Measurement::of_outcome(
            "baseline 1: raw load + append (sqlx)",
            "tx",
            &mut raw,
        ));
        report.measurements.push(Measurement::of_outcome(
            "baseline 2: bare postgres-es counter",
            "cmd",
            &mut bare,
        ));
        let mut row = Measurement::of_outcome("AssignLicenses over HTTP", "req", &mut outcome);
        row.ratio = Some(format!(
            "{}; {}",
            ratio_text(outcome.throughput(), bare_rate, "baseline 2"),
            ratio_text(outcome.throughput(), raw_rate, "baseline 1")
        ));
        report.measurements.push(row);
        let versus_bare = stats::ratio(outcome.throughput(), bare_rate).unwrap_or(0.0);
        let versus_raw = stats::ratio(outcome.throughput(), raw_rate).unwrap_or(0.0);
        report.targets.push(Target {
            target: "≥ 1.0 × bare postgres-es throughput".into(),
            measured: stats::times(versus_bare),
            met: versus_bare >= 1.0,
        });
        report.targets.push(Target {
            target: "≥ 0.7 × raw load+append".into(),
            measured: stats::times(versus_raw),
            met: versus_raw >= 0.7,
        });
        report.notes.push(sanity_note(checked, &mismatches));
        report.notes.extend(errors_note(&outcome));
        report
            .notes
            .extend(errors_note(&raw).map(|n| format!("Baseline 1: {n}")));
        report
            .notes
            .extend(errors_note(&bare).map(|n| format!("Baseline 2: {n}")));
        Ok(report)
    })
    .await
}

/// B. One hot tenant, all clients assigning at once.
pub async fn scenario_b(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let s = &ctx.settings;
    let clients = s.clients;
    infra::with_fresh_db(&ctx.servers, |db| async move {
        let (mut outcome, checked, mismatches) = phase(
            &ctx.phases,
            "B",
            "service: setup and AssignLicenses on one tenant",
            with_service(ctx, &db.url, None, |api, _| async move {
                let tenants =
                    setup_tenants(&api, "B", 1, clients * s.users_per_client, 10_000).await?;
                let tenant = &tenants[0];
                let workers = tenant
                    .users
                    .chunks(s.users_per_client)
                    .map(|users| {
                        AssignWorker::new(&api, users.iter().map(|user| (*user, false)).collect())
                    })
                    .collect();
                let (outcome, workers) = closed_loop(
                    "B",
                    "AssignLicenses on one hot tenant",
                    workers,
                    s.warmup,
                    s.seconds,
                )
                .await;
                let held: usize = workers
                    .iter()
                    .map(|worker| worker.users.iter().filter(|(_, held)| *held).count())
                    .sum();
                let min_position = workers.iter().map(|w| w.max_position).max().unwrap_or(0);
                let (checked, mismatches) = check_licence_views(
                    &api,
                    &HashMap::from([(tenant.tenant_id, held as u64)]),
                    min_position,
                )
                .await?;
                Ok((outcome, checked, mismatches))
            }),
        )
        .await?;
        let mut report = ScenarioReport {
            id: "B",
            title: "one hot tenant (one seat pool), all clients at once".into(),
            method: vec![format!(
                "One tenant with one Business Premium subscription of 10 000 seats and {} users; \
                 {clients} clients, each alternately adding and removing the licence of its own \
                 {} users, all against the same tenant aggregate (one seat pool), closed loop, \
                 {} s warm-up then {} s measured. Every non-2xx answer counts as a failed \
                 request, warm-up included.",
                clients * s.users_per_client,
                s.users_per_client,
                s.warmup.as_secs_f64(),
                s.seconds.as_secs_f64()
            )],
            ..ScenarioReport::default()
        };
        let rate = outcome.throughput();
        let failed = outcome.errors + outcome.warmup_errors;
        report.measurements.push(Measurement::of_outcome(
            "AssignLicenses, one tenant",
            "req",
            &mut outcome,
        ));
        report.targets.push(Target {
            target: "≥ 1 000 assignments/s".into(),
            measured: stats::per_second(rate),
            met: rate >= 1000.0,
        });
        report.targets.push(Target {
            target: "0 failed requests".into(),
            measured: failed.to_string(),
            met: failed == 0,
        });
        report.notes.push(sanity_note(checked, &mismatches));
        report.notes.extend(errors_note(&outcome));
        Ok(report)
    })
    .await
}

/// One command of the open loop and its user.
struct Slot {
    user: Uuid,
    held: bool,
}

/// D. Projection lag under a fixed rate of commands.
pub async fn scenario_d(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let s = ctx.settings.clone();
    infra::with_fresh_db(&ctx.servers, |db| async move {
        let store = migrated(&db).await?;
        let result = phase(
            &ctx.phases,
            "D",
            "service: setup and open-loop commands",
            with_service(ctx, &db.url, None, |api, _| {
                let store = store.clone();
                let s = s.clone();
                async move {
                    let tenants =
                        setup_tenants(&api, "D", s.clients, 4 * s.users_per_client, 1_000).await?;
                    let free: Vec<Slot> = tenants
                        .iter()
                        .flat_map(|t| {
                            t.users.iter().map(|user| Slot {
                                user: *user,
                                held: false,
                            })
                        })
                        .collect();
                    open_loop_lag(&api, &store, free, &s).await
                }
            }),
        )
        .await;
        if let Store::Postgres(pool) = &store {
            pool.close().await;
        }
        let lag = result?;
        Ok(lag.report(&s))
    })
    .await
}

struct LagResult {
    issued: u64,
    completed: u64,
    errors: u64,
    error_kinds: HashMap<String, u64>,
    skipped: u64,
    window: Duration,
    latency: Samples,
    lag: Samples,
    unresolved: u64,
    polls: u64,
    poll_time: Duration,
}

impl LagResult {
    fn report(mut self, s: &Settings) -> ScenarioReport {
        let mut report = ScenarioReport {
            id: "D",
            title: format!("projection lag at {} commands/s sustained", s.rate),
            method: vec![format!(
                "{} tenants × {} users (as in A, with 4 times the users, so that commands find \
                 idle users however long answers take); AssignLicenses (alternately adding and removing) \
                 issued open-loop at a fixed {} commands/s (each on a user with no command in \
                 flight), {} s warm-up then {} s measured. For every command answered in \
                 the window, the lag is the time from its answer to the moment the harness sees \
                 the `licenses` projection's checkpoint reach the answer's position \
                 (`Store::slowest([\"licenses\"])`, i.e. `position_reached`, polled every \
                 millisecond on a connection of its own).",
                s.clients,
                4 * s.users_per_client,
                s.rate,
                s.warmup.as_secs_f64(),
                s.seconds.as_secs_f64()
            )],
            ..ScenarioReport::default()
        };
        let achieved = stats::rate(self.completed, self.window);
        report.measurements.push(Measurement {
            name: "AssignLicenses, open loop (answer latency)".into(),
            count: Some(self.completed),
            unit: "req",
            elapsed: Some(self.window),
            throughput: Some(achieved),
            latency: self.latency.summary(),
            errors: Some(self.errors),
            ratio: None,
        });
        let lag = self.lag.summary();
        report.measurements.push(Measurement {
            name: "answer → licence view (lag)".into(),
            count: Some(self.lag.len() as u64),
            unit: "cmd",
            elapsed: Some(self.window),
            throughput: None,
            latency: lag,
            errors: None,
            ratio: None,
        });
        let sustained = achieved >= 0.95 * s.rate as f64 && self.skipped == 0;
        report.targets.push(Target {
            target: format!("{} commands/s sustained", s.rate),
            measured: format!(
                "{} answered ({} issued, {} not issued: no idle user or too many in flight)",
                stats::per_second(achieved),
                stats::thousands(self.issued),
                self.skipped
            ),
            met: sustained,
        });
        report.targets.push(Target {
            target: "lag p99 < 50 ms".into(),
            measured: lag.map_or("—".into(), |l| stats::ms(l.p99)),
            met: lag.is_some_and(|l| l.p99 < Duration::from_millis(50)),
        });
        report.notes.push(format!(
            "{} polls of the checkpoint, {:.2} ms each on average (the lag's resolution).",
            stats::thousands(self.polls),
            self.poll_time.as_secs_f64() * 1000.0 / self.polls.max(1) as f64
        ));
        if self.lag.is_empty() {
            report
                .notes
                .push("**No command of the window reached the licence view.**".into());
        }
        if self.unresolved > 0 {
            report.notes.push(format!(
                "**{} command(s) of the window were still not in the licence view 30 s after the load ended.**",
                self.unresolved
            ));
        }
        if !self.error_kinds.is_empty() {
            let mut kinds: Vec<_> = self.error_kinds.iter().collect();
            kinds.sort();
            report.notes.push(format!(
                "Failed requests: {}.",
                kinds
                    .iter()
                    .map(|(kind, count)| format!("{count} × {kind}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        report
    }
}

async fn open_loop_lag(
    api: &Api,
    store: &Store,
    free: Vec<Slot>,
    s: &Settings,
) -> anyhow::Result<LagResult> {
    const MAX_IN_FLIGHT: usize = 1024;
    let free = Arc::new(Mutex::new(std::collections::VecDeque::from(free)));
    // Answers awaiting the projection: (position, answered at).
    let pending: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let lags: Arc<Mutex<Samples>> = Arc::default();
    let latencies: Arc<Mutex<Samples>> = Arc::default();
    let error_kinds: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counter = Counter::new();
    let start = Instant::now();
    let from = start + s.warmup;
    let end = from + s.seconds;

    let poller = {
        let (store, pending, lags, done) =
            (store.clone(), pending.clone(), lags.clone(), done.clone());
        tokio::spawn(async move {
            let mut polls = 0u64;
            let mut poll_time = Duration::ZERO;
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let deadline_after_done = Duration::from_secs(30);
            let mut done_at: Option<Instant> = None;
            loop {
                interval.tick().await;
                let asked = Instant::now();
                let reached = match store.slowest(&["licenses"]).await {
                    Ok((_, reached)) => reached,
                    Err(error) => {
                        eprintln!("[D] polling the checkpoint failed: {error}");
                        continue;
                    }
                };
                let seen = Instant::now();
                polls += 1;
                poll_time += seen - asked;
                let remaining = {
                    let mut pending = pending.lock().expect("pending lock");
                    let mut lags = lags.lock().expect("lag lock");
                    pending.retain(|(position, answered)| {
                        if *position <= reached {
                            lags.record(seen.saturating_duration_since(*answered));
                            false
                        } else {
                            true
                        }
                    });
                    pending.len() as u64
                };
                if done.load(Ordering::SeqCst) {
                    let since = *done_at.get_or_insert(seen);
                    if remaining == 0 || since.elapsed() > deadline_after_done {
                        return (polls, poll_time, remaining);
                    }
                }
            }
        })
    };

    let _ticker = {
        let (counter, lags, in_flight) = (counter.clone(), lags.clone(), in_flight.clone());
        let warmup = s.warmup;
        Ticker::start("D", "open-loop AssignLicenses", move |elapsed| {
            let stage = if elapsed < warmup {
                "warm-up"
            } else {
                "measuring"
            };
            let lag = {
                let mut lags = lags.lock().expect("lag lock");
                lags.percentile(99.0).map_or("—".into(), stats::ms)
            };
            format!(
                "{}, in flight {}, lag p99 so far {lag}",
                counter.line(&format!("{stage}: answered")),
                in_flight.load(Ordering::Relaxed)
            )
        })
    };
    let interval = Duration::from_secs_f64(1.0 / s.rate as f64);
    let mut next = start;
    let mut issued = 0u64;
    let mut skipped = 0u64;
    let mut tasks = Vec::new();
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        while next <= now && next < end {
            next += interval;
            let in_window = next >= from;
            if in_flight.load(Ordering::Relaxed) as usize >= MAX_IN_FLIGHT {
                if in_window {
                    skipped += 1;
                }
                continue;
            }
            let Some(slot) = free.lock().expect("free lock").pop_front() else {
                if in_window {
                    skipped += 1;
                }
                continue;
            };
            if in_window {
                issued += 1;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (api, free, pending, latencies, error_kinds, completed, errors, in_flight, counter) = (
                api.clone(),
                free.clone(),
                pending.clone(),
                latencies.clone(),
                error_kinds.clone(),
                completed.clone(),
                errors.clone(),
                in_flight.clone(),
                counter.clone(),
            );
            let sku = premium_sku();
            tasks.push(tokio::spawn(async move {
                let mut worker = AssignWorker::new(&api, vec![(slot.user, slot.held)]);
                worker.sku = sku.into();
                let began = Instant::now();
                let result = worker.assign().await;
                let answered = Instant::now();
                let counted = answered >= from && answered <= end;
                counter.add(1);
                match &result {
                    Ok(position) => {
                        if counted {
                            completed.fetch_add(1, Ordering::Relaxed);
                            latencies
                                .lock()
                                .expect("latency lock")
                                .record(answered - began);
                            pending
                                .lock()
                                .expect("pending lock")
                                .push((*position, answered));
                        }
                    }
                    Err(kind) => {
                        counter.error();
                        *error_kinds
                            .lock()
                            .expect("errors lock")
                            .entry(kind.clone())
                            .or_default() += 1;
                        if counted {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let (user, held) = worker.users[0];
                free.lock()
                    .expect("free lock")
                    .push_back(Slot { user, held });
                in_flight.fetch_sub(1, Ordering::Relaxed);
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    done.store(true, Ordering::SeqCst);
    let (polls, poll_time, unresolved) = poller.await?;
    let lag = std::mem::take(&mut *lags.lock().expect("lag lock"));
    let latency = std::mem::take(&mut *latencies.lock().expect("latency lock"));
    let error_kinds = std::mem::take(&mut *error_kinds.lock().expect("errors lock"));
    Ok(LagResult {
        issued,
        completed: completed.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        error_kinds,
        skipped,
        window: s.seconds,
        latency,
        lag,
        unresolved,
        polls,
        poll_time,
    })
}

/// The large store, with the database it lives in.
pub struct Big {
    /// Its database.
    pub db: FreshDb,
    /// What it holds.
    pub store: BigStore,
    /// Whether a complete replay has filled `read_models_replay`.
    pub replayed: AtomicBool,
}

/// Builds the large store of C, E, F and G.
pub async fn build_big(ctx: &Ctx, db: FreshDb) -> anyhow::Result<Big> {
    let plan = bulk::Plan {
        events: ctx.settings.events,
        big_users: ctx.settings.users,
    };
    let store = phase(
        &ctx.phases,
        "store",
        "build the large store (sealing, deciding, COPY, VACUUM)",
        bulk::build("store", &db.url, plan),
    )
    .await?;
    eprintln!(
        "[store] {} events, {} tenants, {} users ({} in the large tenant, whose stream holds {} events), {} snapshots",
        stats::thousands(store.events as u64),
        stats::thousands(store.tenants as u64),
        stats::thousands(store.users as u64),
        stats::thousands(store.big_users as u64),
        stats::thousands(store.big_tenant_events as u64),
        store.snapshots
    );
    Ok(Big {
        db,
        store,
        replayed: AtomicBool::new(false),
    })
}

/// How the large store was made, for the reports that use it.
pub fn big_store_note(big: &BigStore) -> String {
    let types: Vec<String> = big
        .by_type
        .iter()
        .map(|(kind, count)| format!("{kind} {}", stats::thousands(*count)))
        .collect();
    format!(
        "The large store: {} events ({}), {} tenants, {} subscriptions, {} users, of which one \
         tenant holds {} users ({} licensed) in a stream of {} events; {} tenant snapshots. \
         Built in {:.0} s (sealing {:.0} s, deciding + COPY {:.0} s, VACUUM ANALYZE {:.0} s) by \
         running every command through the real aggregates and process managers in memory and \
         COPYing the events (see `bench/src/bulk.rs`).",
        stats::thousands(big.events as u64),
        types.join(", "),
        stats::thousands(big.tenants as u64),
        stats::thousands(big.subscriptions as u64),
        stats::thousands(big.users as u64),
        stats::thousands(big.big_users as u64),
        stats::thousands(big.big_licensed),
        stats::thousands(big.big_tenant_events as u64),
        big.snapshots,
        (big.sealing + big.writing + big.vacuum).as_secs_f64(),
        big.sealing.as_secs_f64(),
        big.writing.as_secs_f64(),
        big.vacuum.as_secs_f64()
    )
}

/// E. `replay` of the large store into every projection, against baseline 3.
pub async fn scenario_e(ctx: &Ctx, big: &Big) -> anyhow::Result<ScenarioReport> {
    let store = Store::connect(&big.db.url).await?;
    let Store::Postgres(pool) = &store else {
        anyhow::bail!("PostgreSQL expected");
    };
    let (rows, read_time) = phase(
        &ctx.phases,
        "E",
        "baseline 3: raw sequential read",
        baselines::raw_sequential_read("E", pool),
    )
    .await?;
    let log_end = store.log_end().await?;
    let replay = phase(
        &ctx.phases,
        "E",
        "replay",
        timed_replay("E", &store, log_end, ctx.settings.replay_limit),
    )
    .await?;
    pool.close().await;
    if replay.rebuilt.is_some() {
        big.replayed.store(true, Ordering::SeqCst);
    }
    let elapsed = replay.elapsed;
    let log_events = big.store.events as u64;
    let raw_rate = stats::rate(rows, read_time);
    // A replay stopped at the limit is measured by the position it reached.
    let covered = if replay.rebuilt.is_some() {
        log_events
    } else {
        replay.reached.max(0) as u64
    };
    let replay_rate = stats::rate(covered, elapsed);
    let mut report = ScenarioReport {
        id: "E",
        title: format!(
            "replay of {} events into all projections",
            stats::thousands(log_events)
        ),
        method: vec![
            format!(
                "`seatledger::read::replay::run(&store, false, …)` in the harness's process (what \
                 `seatledger replay` runs): every projection rebuilt from position 0 into \
                 `read_models_replay`, {} events per transaction. The replay rate is the \
                 log's events divided by the wall time to rebuild *all* projections; the \
                 per-projection rows show the time `replay::run` reports for each (when it \
                 rebuilds them in one pass over the log, those times overlap). Baseline 3: one streamed \
                 `SELECT … FROM events ORDER BY position` over the same store, each row's \
                 columns (the log reader's) decoded.",
                5_000
            ),
            big_store_note(&big.store),
        ],
        ..ScenarioReport::default()
    };
    report.measurements.push(Measurement::of_count(
        "baseline 3: raw sequential read",
        "events",
        rows,
        read_time,
    ));
    for projection in replay.rebuilt.iter().flatten() {
        let mut row = Measurement::of_count(
            &format!(
                "replay: `{}` (as `replay::run` reports it)",
                projection.projection
            ),
            "events",
            projection.events,
            projection.elapsed,
        );
        row.ratio = Some(ratio_text(
            stats::rate(projection.events, projection.elapsed),
            raw_rate,
            "baseline 3",
        ));
        report.measurements.push(row);
    }
    let mut total = Measurement::of_count(
        if replay.rebuilt.is_some() {
            "replay: every projection"
        } else {
            "replay: every projection (stopped at the limit)"
        },
        "events",
        covered,
        elapsed,
    );
    total.ratio = Some(ratio_text(replay_rate, raw_rate, "baseline 3"));
    report.measurements.push(total);
    let ratio = stats::ratio(replay_rate, raw_rate).unwrap_or(0.0);
    report.targets.push(Target {
        target: "≥ 0.4 × raw sequential read rate".into(),
        measured: if replay.rebuilt.is_some() {
            format!(
                "{} ({})",
                stats::times(ratio),
                stats::per_second(replay_rate)
            )
        } else {
            format!(
                "{} ({}; stopped after {:.0} s at position {} of {})",
                stats::times(ratio),
                stats::per_second(replay_rate),
                elapsed.as_secs_f64(),
                stats::thousands(covered),
                stats::thousands(log_events)
            )
        },
        met: ratio >= 0.4,
    });
    report.targets.push(Target {
        target: "(≥ 100 k events/s on this machine)".into(),
        measured: stats::per_second(replay_rate),
        met: replay_rate >= 100_000.0,
    });
    Ok(report)
}

/// F. The JetStream publisher catching up the large store, against baseline 4.
pub async fn scenario_f(ctx: &Ctx, big: &Big) -> anyhow::Result<ScenarioReport> {
    use seatledger::feed::publisher::{Publisher, PUBLISHER, PUBLISH_BATCH};
    let store = Store::connect(&big.db.url).await?;
    let Store::Postgres(pool) = &store else {
        anyhow::bail!("PostgreSQL expected");
    };
    let raw_nats = infra::private_nats(&ctx.servers, "RAW");
    infra::register_stream(&ctx.servers, &raw_nats.stream);
    let messages =
        baselines::sample_messages(&store, pool, &raw_nats.subject_prefix, 2_000).await?;
    let raw = phase(
        &ctx.phases,
        "F",
        "baseline 4: raw JetStream publish",
        baselines::raw_publish(
            "F",
            &raw_nats,
            &messages,
            PUBLISH_BATCH as usize,
            ctx.settings.seconds,
        ),
    )
    .await;
    infra::remove_stream(&ctx.servers, &raw_nats.stream).await?;
    let raw = raw?;

    let nats = infra::private_nats(&ctx.servers, "PUB");
    infra::register_stream(&ctx.servers, &nats.stream);
    store.ensure_checkpoint(PUBLISHER).await?;
    let publisher = Publisher::new(store.clone(), nats.clone())?;
    let stats_handle = publisher.stats();
    let published = {
        let shown = stats_handle.clone();
        let counter = Counter::new();
        let _ticker = Ticker::start("F", "publisher catching up", move |_| {
            let now = shown.published.load(Ordering::Relaxed);
            counter.add(now.saturating_sub(counter.total()));
            counter.line("messages acknowledged")
        });
        phase(&ctx.phases, "F", "publisher catch-up", async {
            let started = Instant::now();
            let mut failures = 0;
            let mut finished = false;
            while started.elapsed() < ctx.settings.limit {
                match publisher.step().await {
                    Ok(true) => {}
                    Ok(false) => {
                        finished = true;
                        break;
                    }
                    Err(error) => {
                        failures += 1;
                        eprintln!("[F] publisher step failed: {error}");
                        anyhow::ensure!(failures < 10, "the publisher kept failing: {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            Ok((started.elapsed(), failures, finished))
        })
        .await
    };
    drop(publisher);
    let stream_messages = async {
        let client = async_nats::connect(&ctx.servers.nats_url).await?;
        let jetstream = async_nats::jetstream::new(client);
        let mut stream = jetstream.get_stream(&nats.stream).await?;
        Ok::<_, anyhow::Error>(stream.info().await?.state.messages)
    }
    .await;
    infra::remove_stream(&ctx.servers, &nats.stream).await?;
    pool.close().await;
    let (elapsed, failures, finished) = published?;
    let sent = stats_handle.published.load(Ordering::Relaxed);
    let raw_rate = stats::rate(raw.messages, raw.elapsed);
    let rate = stats::rate(sent, elapsed);
    let mut report = ScenarioReport {
        id: "F",
        title: format!(
            "JetStream publisher catching up {} events",
            stats::thousands(big.store.events as u64)
        ),
        method: vec![
            format!(
                "`seatledger::feed::publisher::Publisher::new(store, settings)` and `step()` \
                 until it reports nothing left, in the harness's process, to a stream of its own \
                 (file storage, 600 s duplicate window, as the service creates it). Baseline 4: \
                 the envelopes and subjects of {} events sampled across the same store (average \
                 {} bytes), published to another such stream with a new `Nats-Msg-Id` each, \
                 {} at a time pipelined (every message of a batch sent with `send_publish`, then \
                 every acknowledgement awaited, as the publisher batches), for {} s.",
                messages.len(),
                raw.average_bytes,
                PUBLISH_BATCH,
                ctx.settings.seconds.as_secs_f64()
            ),
            big_store_note(&big.store),
        ],
        ..ScenarioReport::default()
    };
    report.measurements.push(Measurement::of_count(
        "baseline 4: raw pipelined publish",
        "msgs",
        raw.messages,
        raw.elapsed,
    ));
    let mut row = Measurement::of_count(
        if finished {
            "publisher catch-up"
        } else {
            "publisher catch-up (stopped at the limit)"
        },
        "msgs",
        sent,
        elapsed,
    );
    row.errors = Some(failures);
    row.ratio = Some(ratio_text(rate, raw_rate, "baseline 4"));
    report.measurements.push(row);
    let ratio = stats::ratio(rate, raw_rate).unwrap_or(0.0);
    report.targets.push(Target {
        target: "≥ 0.5 × raw pipelined publish rate".into(),
        measured: if finished {
            stats::times(ratio)
        } else {
            format!(
                "{} (stopped after {:.0} s, {} of {} published)",
                stats::times(ratio),
                elapsed.as_secs_f64(),
                stats::thousands(sent),
                stats::thousands(big.store.events as u64)
            )
        },
        met: ratio >= 0.5,
    });
    match stream_messages {
        Ok(count) if !finished && sent == count => report.notes.push(format!(
            "Sanity check: the stream holds exactly the {} events the publisher counted.",
            stats::thousands(count)
        )),
        Ok(count) if count == big.store.events as u64 && sent == count => report.notes.push(format!(
            "Sanity check: the stream holds exactly the log's {} events.",
            stats::thousands(count)
        )),
        Ok(count) => report.notes.push(format!(
            "**Sanity check failed:** the stream holds {count} messages, the publisher counted {sent}, the log has {} events.",
            big.store.events
        )),
        Err(error) => report.notes.push(format!("The stream could not be inspected: {error:#}")),
    }
    Ok(report)
}

/// Mixed reads and commands of G.
struct MixedWorker {
    api: Api,
    random: u64,
    reserved: Vec<(Uuid, bool)>,
    fillers: Arc<Vec<bulk::Filler>>,
    filler_states: HashMap<Uuid, bool>,
    big_tenant: Uuid,
    next_reserved: usize,
    sku: Arc<str>,
    /// Latencies and failures per kind of request.
    by_kind: HashMap<&'static str, (Samples, u64)>,
}

impl MixedWorker {
    fn roll(&mut self, n: usize) -> usize {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        (self.random % n as u64) as usize
    }
}

impl Worker for MixedWorker {
    fn op(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let began = Instant::now();
            let (kind, result) = self.one().await;
            self.by_kind
                .entry(kind)
                .or_default()
                .0
                .record(began.elapsed());
            if result.is_err() {
                self.by_kind.entry(kind).or_default().1 += 1;
            }
            result
        })
    }
}

impl MixedWorker {
    async fn one(&mut self) -> (&'static str, Result<(), String>) {
        let pick = self.roll(self.fillers.len());
        let filler = self.fillers[pick].clone();
        let kind = self.roll(10);
        let (name, answer) = match kind {
            // Commands: on the large tenant and on an ordinary one.
            0..=1 if !self.reserved.is_empty() => {
                let index = self.next_reserved % self.reserved.len();
                self.next_reserved += 1;
                let (user, held) = self.reserved[index];
                let mut worker = AssignWorker::new(&self.api, vec![(user, held)]);
                let result = worker.assign().await;
                self.reserved[index].1 = worker.users[0].1;
                return ("AssignLicenses, large tenant", result.map(drop));
            }
            0..=3 if !filler.users.is_empty() => {
                let (user, initial) = filler.users[self.roll(filler.users.len())];
                let held = *self.filler_states.get(&user).unwrap_or(&initial);
                let mut worker = AssignWorker::new(&self.api, vec![(user, held)]);
                worker.sku = self.sku.clone();
                let result = worker.assign().await;
                self.filler_states.insert(user, worker.users[0].1);
                return ("AssignLicenses, ordinary tenant", result.map(drop));
            }
            4..=5 => {
                let (name, tenant) = if self.roll(4) == 0 {
                    ("GET licence view, large tenant", self.big_tenant)
                } else {
                    ("GET licence view, ordinary tenant", filler.tenant_id)
                };
                (
                    name,
                    self.api
                        .call(Method::GET, &format!("/v1/tenants/{tenant}/licenses"), None)
                        .await,
                )
            }
            6..=7 => {
                let Some((user, _)) = filler.users.first() else {
                    return ("GET /v1/users/{id}", Ok(()));
                };
                (
                    "GET /v1/users/{id}",
                    self.api
                        .call(Method::GET, &format!("/v1/users/{user}"), None)
                        .await,
                )
            }
            _ => (
                "GET user list, ordinary tenant",
                self.api
                    .call(
                        Method::GET,
                        &format!("/v1/tenants/{}/users", filler.tenant_id),
                        None,
                    )
                    .await,
            ),
        };
        let result = match answer {
            Ok(answer) if answer.0.is_success() => Ok(()),
            Ok(answer) => Err(failure(&answer)),
            Err(error) => Err(error),
        };
        (name, result)
    }
}

/// Samples a process's memory every second, keeping the largest RSS.
struct MemoryWatch {
    task: tokio::task::JoinHandle<()>,
    peak: Arc<AtomicU64>,
}

impl MemoryWatch {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(memory) = infra::memory_of(pid) {
                    seen.fetch_max(memory.rss_kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Self { task, peak }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Each consumer's name, the position it has read up to, and when it reached the end.
type ConsumerProgress = Vec<(String, i64, Option<Duration>)>;

/// Where every consumer of the log is while the service catches up.
struct CatchUp {
    /// Whether every consumer reached the end of the log within the limit.
    finished: bool,
    /// How long it ran.
    elapsed: Duration,
    /// Each consumer, the position it reached and when it reached the end.
    consumers: ConsumerProgress,
    /// The log's end when it started.
    log_end: i64,
    /// Events the service appended meanwhile (its process managers' follow-ups).
    appended: i64,
    /// The service's RSS when it ended, KiB.
    rss_kib: u64,
    /// The largest RSS sampled meanwhile, KiB.
    peak_kib: u64,
}

impl CatchUp {
    fn note(&self) -> String {
        let consumers = self
            .consumers
            .iter()
            .map(|(name, reached, done)| match done {
                Some(at) => format!("`{name}` at the end after {:.1} s", at.as_secs_f64()),
                None => format!(
                    "`{name}` at position {} ({} events/s)",
                    stats::thousands(*reached as u64),
                    stats::thousands(stats::rate(*reached as u64, self.elapsed) as u64)
                ),
            })
            .collect::<Vec<_>>()
            .join(", ");
        if self.finished {
            format!(
                "The service started over the large store with every consumer at position 0 and \
                 caught all of them up in {:.1} s ({} log events/s): {consumers}. Its process \
                 managers appended {} event(s) while re-running every follow-up of the log (0: \
                 the built store was consistent, nothing was left to do).",
                self.elapsed.as_secs_f64(),
                stats::thousands(stats::rate(self.log_end as u64, self.elapsed) as u64),
                self.appended
            )
        } else {
            format!(
                "**The service did not catch up within {:.0} s** (started over the large store \
                 with every consumer at position 0; the limit is `--limit-seconds`): {consumers}. \
                 It was stopped, and the measurements below ran on a second start over the same \
                 store with its projections as the commands would have left them: rebuilt by \
                 `replay::run` into `read_models_replay`, copied into `read_models`, and every \
                 consumer's checkpoint set to the end of the log (the process managers had \
                 nothing left to do: {} event(s) appended during the partial catch-up).",
                self.elapsed.as_secs_f64(),
                self.appended
            )
        }
    }
}

/// Waits until every consumer has read the whole log, or `limit` passes.
async fn catch_up(scenario: &str, store: &Store, limit: Duration) -> anyhow::Result<CatchUp> {
    let consumers = seatledger::workers::consumers();
    let log_at_start = store.log_end().await?;
    let started = Instant::now();
    let state: Arc<Mutex<ConsumerProgress>> = Arc::new(Mutex::new(
        consumers.iter().map(|c| (c.to_string(), 0, None)).collect(),
    ));
    let shown = state.clone();
    let _ticker = Ticker::start(scenario, "service catching up", move |_| {
        let state = shown.lock().expect("state lock");
        let positions: Vec<String> = state
            .iter()
            .map(|(name, position, done)| match done {
                Some(at) => format!("{name} done at {:.0} s", at.as_secs_f64()),
                None => format!("{name} {}", stats::thousands(*position as u64)),
            })
            .collect();
        format!(
            "of {} events: {}",
            stats::thousands(log_at_start as u64),
            positions.join(", ")
        )
    });
    loop {
        let log_end = store.log_end().await?;
        let mut all = true;
        for (index, consumer) in consumers.iter().enumerate() {
            let checkpoint = store.checkpoint(consumer).await?;
            let reached = store.position_reached(checkpoint).await?;
            let mut state = state.lock().expect("state lock");
            state[index].1 = reached;
            if reached >= log_end {
                state[index].2.get_or_insert(started.elapsed());
            } else {
                all = false;
            }
        }
        if all || started.elapsed() >= limit {
            let consumers = state.lock().expect("state lock").clone();
            return Ok(CatchUp {
                finished: all,
                elapsed: started.elapsed(),
                consumers,
                log_end: log_at_start,
                appended: store.log_end().await? - log_at_start,
                rss_kib: 0,
                peak_kib: 0,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What autovacuum would have done by the end of a catch-up that rewrote every read model
/// and moved each checkpoint thousands of times: this machine's PostgreSQL (and CI's) runs
/// with autovacuum off, and the dead row versions left behind would otherwise be measured
/// as the service's cost.
async fn vacuum_like_autovacuum(store: &Store) -> anyhow::Result<()> {
    let Store::Postgres(pool) = store else {
        return Ok(());
    };
    eprintln!("[C/G] VACUUM ANALYZE (as autovacuum would have after the catch-up)");
    sqlx::raw_sql("VACUUM ANALYZE").execute(pool).await?;
    Ok(())
}

/// What `replay::run` did within a time limit.
pub struct ReplayRun {
    /// Its report, when it finished.
    pub rebuilt: Option<Vec<seatledger::read::replay::Rebuilt>>,
    /// How long it ran.
    pub elapsed: Duration,
    /// The furthest position it reported.
    pub reached: i64,
}

/// Runs `replay::run` (no verification) for at most `limit`.
pub async fn timed_replay(
    scenario: &str,
    store: &Store,
    log_end: i64,
    limit: Duration,
) -> anyhow::Result<ReplayRun> {
    let reached = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let shown = reached.clone();
    let _ticker = Ticker::start(scenario, "replay into every projection", move |elapsed| {
        let at = shown.load(Ordering::Relaxed).max(0) as u64;
        format!(
            "position {} of {} ({} events/s so far)",
            stats::thousands(at),
            stats::thousands(log_end as u64),
            stats::thousands(stats::rate(at, elapsed) as u64)
        )
    });
    let started = Instant::now();
    let seen = reached.clone();
    let outcome = tokio::time::timeout(
        limit,
        seatledger::read::replay::run(store, false, move |progress| {
            seen.fetch_max(progress.position, Ordering::Relaxed);
        }),
    )
    .await;
    let elapsed = started.elapsed();
    let rebuilt = match outcome {
        Ok(Ok(rebuilt)) => Some(rebuilt),
        Ok(Err(error)) => anyhow::bail!("replay failed: {error}"),
        Err(_) => None,
    };
    Ok(ReplayRun {
        rebuilt,
        elapsed,
        reached: reached.load(Ordering::Relaxed),
    })
}

/// Makes the replayed projections the live ones and moves every consumer to the end of the
/// log: the store as it would stand had its commands run through the service.
async fn promote_replay(store: &Store) -> anyhow::Result<()> {
    let Store::Postgres(pool) = store else {
        anyhow::bail!("PostgreSQL expected");
    };
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM read_models")
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO read_models SELECT * FROM read_models_replay")
        .execute(&mut *tx)
        .await?;
    let end: (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, position FROM events
          ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1",
    )
    .fetch_one(&mut *tx)
    .await?;
    for consumer in seatledger::workers::consumers() {
        let replayed: Option<(i64, i64)> = sqlx::query_as(
            "SELECT transaction_id, position FROM consumer_checkpoints WHERE consumer = $1",
        )
        .bind(format!("replay:{consumer}"))
        .fetch_optional(&mut *tx)
        .await?;
        let (transaction_id, position) = replayed.unwrap_or(end);
        anyhow::ensure!(
            (transaction_id, position) == end,
            "the replay of {consumer} stopped at {position}, not at the end of the log"
        );
        sqlx::query(
            "INSERT INTO consumer_checkpoints (consumer, transaction_id, position)
             VALUES ($1, $2, $3)
             ON CONFLICT (consumer) DO UPDATE SET transaction_id = $2, position = $3",
        )
        .bind(consumer)
        .bind(transaction_id)
        .bind(position)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What C and G measured on a caught-up service.
struct Measured {
    c: Option<ScenarioReport>,
    g: Option<MixedResult>,
    after_start: Memory,
    after_catch_up: Memory,
    catch_up_peak: u64,
}

/// C and G: the service over the large store: catching up from position 0 (for at most
/// `--limit-seconds`; when it cannot, the projections are prepared from a replay and the
/// service started again), AssignLicenses latency on the large tenant, then memory under a
/// mixed load.
pub async fn scenarios_c_g(
    ctx: &Ctx,
    big: &Big,
    run_c: bool,
    run_g: bool,
) -> anyhow::Result<Vec<ScenarioReport>> {
    let s = ctx.settings.clone();
    let store = Store::connect(&big.db.url).await?;
    let measure = |api: Api, pid: u32, catch_up_limit: Duration, label: &'static str| {
        let store = store.clone();
        async move {
            let after_start = infra::memory_of(pid)?;
            let watch = MemoryWatch::start(pid);
            let mut caught = phase(
                &ctx.phases,
                "C/G",
                label,
                catch_up("C/G", &store, catch_up_limit),
            )
            .await?;
            let after_catch_up = infra::memory_of(pid)?;
            let catch_up_peak = watch.peak();
            caught.rss_kib = after_catch_up.rss_kib;
            caught.peak_kib = catch_up_peak;
            if !caught.finished {
                return Ok::<_, anyhow::Error>((caught, None));
            }
            phase(
                &ctx.phases,
                "C/G",
                "VACUUM ANALYZE after the catch-up",
                vacuum_like_autovacuum(&store),
            )
            .await?;
            let mut c = None;
            if run_c {
                c = Some(
                    phase(
                        &ctx.phases,
                        "C",
                        "AssignLicenses on the large tenant",
                        latency_on_big(ctx, &api, big, pid),
                    )
                    .await?,
                );
            }
            let mut g = None;
            if run_g {
                g = Some(
                    phase(
                        &ctx.phases,
                        "G",
                        "mixed reads and commands",
                        mixed_minute(ctx, &api, big, pid, &watch),
                    )
                    .await?,
                );
            }
            Ok((
                caught,
                Some(Measured {
                    c,
                    g,
                    after_start,
                    after_catch_up,
                    catch_up_peak,
                }),
            ))
        }
    };
    let first = with_service(ctx, &big.db.url, None, |api, pid| {
        measure(api, pid, s.limit, "service catches up from position 0")
    })
    .await;
    let (first_catch_up, measured) = match first {
        Ok(result) => result,
        Err(error) => {
            if let Store::Postgres(pool) = &store {
                pool.close().await;
            }
            return Err(error);
        }
    };
    let (measured, second) = match measured {
        Some(measured) => (measured, None),
        None => {
            let prepared = async {
                if !big.replayed.load(Ordering::SeqCst) {
                    let log_end = store.log_end().await?;
                    let replay = phase(
                        &ctx.phases,
                        "C/G",
                        "replay to prepare the projections",
                        timed_replay("C/G", &store, log_end, s.replay_limit),
                    )
                    .await?;
                    anyhow::ensure!(
                        replay.rebuilt.is_some(),
                        "the replay did not finish within {:.0} s",
                        s.replay_limit.as_secs_f64()
                    );
                    big.replayed.store(true, Ordering::SeqCst);
                }
                promote_replay(&store).await
            }
            .await;
            if let Err(error) = prepared {
                if let Store::Postgres(pool) = &store {
                    pool.close().await;
                }
                return Err(error);
            }
            let second = with_service(ctx, &big.db.url, None, |api, pid| {
                measure(
                    api,
                    pid,
                    Duration::from_secs(120),
                    "service starts on the prepared store",
                )
            })
            .await;
            match second {
                Ok((caught, Some(measured))) => (measured, Some(caught)),
                Ok((caught, None)) => {
                    if let Store::Postgres(pool) = &store {
                        pool.close().await;
                    }
                    anyhow::bail!(
                        "even with its projections prepared, the service did not catch up: {}",
                        caught.note()
                    )
                }
                Err(error) => {
                    if let Store::Postgres(pool) = &store {
                        pool.close().await;
                    }
                    return Err(error);
                }
            }
        }
    };
    if let Store::Postgres(pool) = &store {
        pool.close().await;
    }
    let catch_up_note = first_catch_up.note();
    let mut reports = Vec::new();
    if let Some(mut c) = measured.c {
        c.notes.insert(0, catch_up_note.clone());
        c.method.push(big_store_note(&big.store));
        reports.push(c);
    }
    if let Some((mut report, after_mixed, mixed_peak, list)) = measured.g {
        report.notes.insert(0, catch_up_note);
        report.method.push(big_store_note(&big.store));
        if second.is_some() {
            report.notes.push(format!(
                "First start (catching up from position 0, stopped after {:.0} s): RSS {} at \
                 the limit, {} the largest sampled; the rows below are of the second start.",
                first_catch_up.elapsed.as_secs_f64(),
                stats::mib(first_catch_up.rss_kib),
                stats::mib(first_catch_up.peak_kib)
            ));
        }
        let caught_label = if second.is_some() {
            "RSS after start on the prepared store, consumers at the end"
        } else {
            "RSS after catching up"
        };
        let rows = [
            (
                "RSS after start (migrations, catalog, before reading the log)",
                measured.after_start.rss_kib,
            ),
            (caught_label, measured.after_catch_up.rss_kib),
            (
                "largest RSS sampled until then (every 1 s)",
                measured.catch_up_peak,
            ),
            ("RSS after the mixed load", after_mixed.rss_kib),
            ("largest RSS sampled during the mixed load", mixed_peak),
            (
                "RSS after reading the large tenant's user list",
                list.1.rss_kib,
            ),
            (
                "peak RSS of the process (VmHWM)",
                after_mixed.hwm_kib.max(list.1.hwm_kib),
            ),
        ];
        for (what, kib) in rows {
            report.notes.push(format!("{what}: {}", stats::mib(kib)));
        }
        let limit_kib = 150 * 1000 * 1000 / 1024;
        report.targets.push(Target {
            target: "RSS < 150 MB (after catching up and after the mixed load)".into(),
            measured: format!(
                "{} {}, {} after the mixed load",
                stats::mib(measured.after_catch_up.rss_kib),
                if second.is_some() {
                    "after start on the prepared store"
                } else {
                    "after catching up"
                },
                stats::mib(after_mixed.rss_kib)
            ),
            met: measured.after_catch_up.rss_kib.max(after_mixed.rss_kib) < limit_kib,
        });
        let peak = after_mixed.hwm_kib.max(list.1.hwm_kib);
        report.targets.push(Target {
            target: "(peak RSS, VmHWM, < 150 MB)".into(),
            measured: stats::mib(peak),
            met: peak < limit_kib,
        });
        reports.push(report);
    }
    Ok(reports)
}

async fn latency_on_big(
    ctx: &Ctx,
    api: &Api,
    big: &Big,
    pid: u32,
) -> anyhow::Result<ScenarioReport> {
    let s = &ctx.settings;
    let clients = s.latency_clients.max(1);
    let per_client = (big.store.reserved.len() / clients).clamp(1, 16);
    anyhow::ensure!(
        big.store.reserved.len() >= clients,
        "too few unlicensed users in the large tenant"
    );
    // The first command loads the tenant (from its snapshot): timed on its own.
    let mut first = AssignWorker::new(api, vec![(big.store.reserved[0], false)]);
    let began = Instant::now();
    let first_result = first.assign().await;
    let cold = began.elapsed();
    let after_cold_load = infra::memory_of(pid)?;
    let _ = first.assign().await;
    let workers: Vec<AssignWorker> = big.store.reserved[..clients * per_client]
        .chunks(per_client)
        .map(|users| AssignWorker::new(api, users.iter().map(|user| (*user, false)).collect()))
        .collect();
    let (mut outcome, workers) = closed_loop(
        "C",
        "AssignLicenses on the large tenant",
        workers,
        s.warmup,
        s.seconds,
    )
    .await;
    let held: u64 = workers
        .iter()
        .map(|worker| worker.users.iter().filter(|(_, held)| *held).count() as u64)
        .sum();
    let min_position = workers.iter().map(|w| w.max_position).max().unwrap_or(0);
    let (checked, mismatches) = check_licence_views(
        api,
        &HashMap::from([(big.store.big_tenant, big.store.big_licensed + held)]),
        min_position,
    )
    .await?;
    let mut report = ScenarioReport {
        id: "C",
        title: format!(
            "tenant with {} users: AssignLicenses latency",
            stats::thousands(big.store.big_users as u64)
        ),
        method: vec![format!(
            "The service over the large store (below), caught up; {clients} clients, each \
             alternately adding and removing Business Premium for its own {per_client} \
             unlicensed users of the large tenant over HTTP, closed loop, {} s warm-up then \
             {} s measured. The very first command (which loads the tenant) is timed \
             separately.",
            s.warmup.as_secs_f64(),
            s.seconds.as_secs_f64()
        )],
        ..ScenarioReport::default()
    };
    report.measurements.push(Measurement {
        name: "first AssignLicenses after start (cold tenant)".into(),
        count: Some(1),
        unit: "req",
        latency: Some(stats::LatencySummary {
            p50: cold,
            p99: cold,
            max: cold,
        }),
        errors: Some(u64::from(first_result.is_err())),
        ..Measurement::default()
    });
    let p99 = outcome.samples.percentile(99.0);
    report.measurements.push(Measurement::of_outcome(
        "AssignLicenses on the large tenant",
        "req",
        &mut outcome,
    ));
    report.targets.push(Target {
        target: "p99 < 10 ms".into(),
        measured: p99.map_or("—".into(), stats::ms),
        met: p99.is_some_and(|p99| p99 < Duration::from_millis(10)),
    });
    report.notes.push(sanity_note(checked, &mismatches));
    report.notes.extend(errors_note(&outcome));
    let after = infra::memory_of(pid)?;
    report.notes.push(format!(
        "Service memory after the first command (the tenant loaded from its snapshot): RSS {}, \
         peak (VmHWM) {}; after the measurement: RSS {}, peak {}.",
        stats::mib(after_cold_load.rss_kib),
        stats::mib(after_cold_load.hwm_kib),
        stats::mib(after.rss_kib),
        stats::mib(after.hwm_kib)
    ));
    Ok(report)
}

type MixedResult = (ScenarioReport, Memory, u64, (Duration, Memory));

async fn mixed_minute(
    ctx: &Ctx,
    api: &Api,
    big: &Big,
    pid: u32,
    watch: &MemoryWatch,
) -> anyhow::Result<MixedResult> {
    let s = &ctx.settings;
    let clients = s.latency_clients.max(1);
    let fillers = Arc::new(big.store.fillers.clone());
    // The reserved users C used are left as C left them; G takes others.
    let reserved: Vec<Uuid> = big.store.reserved.iter().rev().copied().collect();
    let per_client = (reserved.len() / (2 * clients)).clamp(1, 16);
    let sku: Arc<str> = premium_sku().into();
    let workers: Vec<MixedWorker> = (0..clients)
        .map(|index| MixedWorker {
            api: api.clone(),
            random: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1),
            reserved: reserved
                .iter()
                .skip(index * per_client)
                .take(per_client)
                .map(|user| (*user, false))
                .collect(),
            fillers: fillers.clone(),
            filler_states: HashMap::new(),
            big_tenant: big.store.big_tenant,
            next_reserved: 0,
            sku: sku.clone(),
            by_kind: HashMap::new(),
        })
        .collect();
    watch.peak.store(0, Ordering::Relaxed);
    let (mut outcome, workers) = closed_loop(
        "G",
        "mixed reads and commands",
        workers,
        Duration::ZERO,
        s.memory_seconds,
    )
    .await;
    let after_mixed = infra::memory_of(pid)?;
    let mixed_peak = watch.peak();
    eprintln!(
        "[G] reading the large tenant's user list ({} users)",
        big.store.big_users
    );
    let slow = Api::with_timeout(api.base(), &ctx.admin_token, Duration::from_secs(900));
    let began = Instant::now();
    let listed = slow
        .call(
            Method::GET,
            &format!("/v1/tenants/{}/users", big.store.big_tenant),
            None,
        )
        .await;
    let list_time = began.elapsed();
    let after_list = infra::memory_of(pid)?;
    let listed_users = match &listed {
        Ok((status, body)) if status.is_success() => {
            body["users"].as_array().map_or(0, Vec::len) as u64
        }
        _ => 0,
    };
    let mut report = ScenarioReport {
        id: "G",
        title: format!(
            "memory: service over {} events / {} users",
            stats::thousands(big.store.events as u64),
            stats::thousands(big.store.users as u64)
        ),
        method: vec![format!(
            "The service child's VmRSS and VmHWM from `/proc/<pid>/status`: after start, after \
             catching up on the large store, and after {} s of a mixed closed-loop load from \
             {clients} clients (20 % AssignLicenses on the large tenant, 20 % on ordinary \
             tenants, 20 % licence views (a quarter of them of the large tenant), 20 % `GET /v1/users/{{id}}`, 20 % user lists of \
             ordinary tenants); RSS also sampled every second. Then one read of the large \
             tenant's whole user list.",
            s.memory_seconds.as_secs_f64()
        )],
        ..ScenarioReport::default()
    };
    report.measurements.push(Measurement::of_outcome(
        "mixed reads and commands",
        "req",
        &mut outcome,
    ));
    let mut by_kind: std::collections::BTreeMap<&'static str, (Samples, u64)> =
        std::collections::BTreeMap::new();
    for worker in workers {
        for (kind, (samples, failed)) in worker.by_kind {
            let entry = by_kind.entry(kind).or_default();
            entry.0.merge(samples);
            entry.1 += failed;
        }
    }
    for (kind, (mut samples, failed)) in by_kind {
        report.measurements.push(Measurement {
            name: format!("… of which {kind}"),
            count: Some(samples.len() as u64),
            unit: "req",
            latency: samples.summary(),
            errors: Some(failed),
            ..Measurement::default()
        });
    }
    report.measurements.push(Measurement {
        name: format!(
            "GET the large tenant's user list ({} users listed)",
            stats::thousands(listed_users)
        ),
        count: Some(1),
        unit: "req",
        latency: Some(stats::LatencySummary {
            p50: list_time,
            p99: list_time,
            max: list_time,
        }),
        errors: Some(u64::from(
            !matches!(&listed, Ok((status, _)) if status.is_success()),
        )),
        ..Measurement::default()
    });
    report.notes.extend(errors_note(&outcome));
    if let Err(error) = &listed {
        report.notes.push(format!("The user list failed: {error}"));
    }
    Ok((report, after_mixed, mixed_peak, (list_time, after_list)))
}

/// The title of a scenario, for a report of its failure.
pub fn title_of(id: &'static str) -> &'static str {
    match id {
        "A" => "AssignLicenses over HTTP, distinct tenants",
        "B" => "one hot tenant (one seat pool), all clients at once",
        "C" => "tenant with many users: AssignLicenses latency",
        "D" => "projection lag at a fixed rate of commands",
        "E" => "replay of the large store into all projections",
        "F" => "JetStream publisher catching up the large store",
        "G" => "memory: service over the large store",
        _ => "scenario",
    }
}
