//! `seatledger-bench`: seatledger's benchmarks against what PostgreSQL and JetStream can do
//! on the same machine, measured in the same run (issue 6).
//!
//! ```sh
//! cargo run --release -p seatledger-bench -- all            # every scenario, default sizes
//! cargo run --release -p seatledger-bench -- all --quick    # a smoke run, seconds per scenario
//! cargo run --release -p seatledger-bench -- a d            # some scenarios
//! cargo run --release -p seatledger-bench -- all --write    # and rewrite docs/BENCHMARKS.md
//! ```

mod baselines;
mod bulk;
mod infra;
mod load;
mod progress;
mod report;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::infra::Servers;
use crate::progress::Phases;
use crate::report::{RunReport, ScenarioReport};
use crate::scenarios::{Ctx, Settings};

const SCENARIOS: [&str; 7] = ["A", "B", "C", "D", "E", "F", "G"];

/// Benchmarks seatledger against PostgreSQL's and JetStream's own limits, measured in the same
/// run. Scenarios: A AssignLicenses over HTTP on distinct tenants (baselines 1 raw
/// load+append and 2 bare postgres-es), B one hot tenant, C AssignLicenses latency on a tenant
/// with many users, D projection lag at a fixed command rate, E replay (baseline 3 raw
/// sequential read), F JetStream publisher catch-up (baseline 4 raw pipelined publish),
/// G memory of the service over the large store.
#[derive(Debug, Parser)]
#[command(name = "seatledger-bench", version)]
struct Cli {
    /// `all`, or scenarios among a b c d e f g.
    #[arg(required = true, value_parser = parse_scenario)]
    scenarios: Vec<String>,

    /// Rewrite docs/BENCHMARKS.md with this run's tables (its "Findings" section is kept).
    #[arg(long)]
    write: bool,

    /// A smoke run: small sizes and short windows (explicit flags still win).
    #[arg(long)]
    quick: bool,

    /// Events in the large store of C, E, F and G [default: 1000000; quick: 30000].
    #[arg(long)]
    events: Option<u64>,

    /// Users of the large tenant of C and G [default: 100000; quick: 2000].
    #[arg(long)]
    users: Option<usize>,

    /// Concurrent clients of A, B, D and baselines 1 and 2 [default: 32].
    #[arg(long)]
    clients: Option<usize>,

    /// Seconds per measurement [default: 10; quick: 2].
    #[arg(long)]
    seconds: Option<f64>,

    /// Seconds of warm-up before each measurement [default: 1; quick: 0.5].
    #[arg(long)]
    warmup: Option<f64>,

    /// Commands per second of D [default: 1000].
    #[arg(long)]
    rate: Option<u64>,

    /// Clients of C's latency measurement and G's mixed load [default: 4].
    #[arg(long)]
    latency_clients: Option<usize>,

    /// Seconds of G's mixed load [default: 60; quick: 3].
    #[arg(long)]
    memory_seconds: Option<f64>,

    /// Longest publisher catch-up (F) and service catch-up from position 0 (C, G); past it
    /// the rate so far is reported [default: 120; quick: 60].
    #[arg(long)]
    limit_seconds: Option<f64>,

    /// Longest replay (E; C and G when their catch-up hits the limit) [default: 1200; quick: 300].
    #[arg(long)]
    replay_limit_seconds: Option<f64>,

    /// Users per tenant in A and D, per client in B [default: 8].
    #[arg(long)]
    users_per_client: Option<usize>,

    /// PostgreSQL (user with CREATEDB; any database to connect to).
    #[arg(
        long,
        env = "SEATLEDGER_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,

    /// NATS with JetStream.
    #[arg(
        long,
        env = "SEATLEDGER_BENCH_NATS",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,

    /// Where --write writes [default: docs/BENCHMARKS.md of the workspace].
    #[arg(long)]
    output: Option<PathBuf>,
}

fn parse_scenario(raw: &str) -> Result<String, String> {
    let upper = raw.to_ascii_uppercase();
    if upper == "ALL" || SCENARIOS.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!(
            "'{raw}' is not a scenario: use all or a, b, c, d, e, f, g"
        ))
    }
}

impl Cli {
    fn settings(&self) -> Settings {
        let quick = self.quick;
        let pick = |given: Option<f64>, full: f64, small: f64| {
            Duration::from_secs_f64(given.unwrap_or(if quick { small } else { full }))
        };
        Settings {
            events: self
                .events
                .unwrap_or(if quick { 30_000 } else { 1_000_000 }),
            users: self.users.unwrap_or(if quick { 2_000 } else { 100_000 }),
            clients: self.clients.unwrap_or(32).max(1),
            seconds: pick(self.seconds, 10.0, 2.0),
            warmup: pick(self.warmup, 1.0, 0.5),
            rate: self.rate.unwrap_or(1_000).max(1),
            latency_clients: self.latency_clients.unwrap_or(4).max(1),
            memory_seconds: pick(self.memory_seconds, 60.0, 3.0),
            users_per_client: self.users_per_client.unwrap_or(8).max(1),
            limit: pick(self.limit_seconds, 120.0, 60.0),
            replay_limit: pick(self.replay_limit_seconds, 1200.0, 300.0),
        }
    }

    fn selected(&self) -> Vec<&'static str> {
        if self.scenarios.iter().any(|s| s == "ALL") {
            return SCENARIOS.to_vec();
        }
        SCENARIOS
            .into_iter()
            .filter(|id| self.scenarios.iter().any(|s| s == id))
            .collect()
    }
}

fn settings_table(cli: &Cli, settings: &Settings) -> Vec<(String, String)> {
    vec![
        ("--events (large store)".into(), stats::thousands(settings.events)),
        ("--users (large tenant)".into(), stats::thousands(settings.users as u64)),
        ("--clients (A, B, D, baselines 1 and 2)".into(), settings.clients.to_string()),
        ("--seconds (per measurement)".into(), format!("{}", settings.seconds.as_secs_f64())),
        ("--warmup (before each measurement)".into(), format!("{}", settings.warmup.as_secs_f64())),
        ("--rate (D, commands/s)".into(), settings.rate.to_string()),
        ("--latency-clients (C, G)".into(), settings.latency_clients.to_string()),
        ("--memory-seconds (G)".into(), format!("{}", settings.memory_seconds.as_secs_f64())),
        ("--users-per-client (A, B, D)".into(), settings.users_per_client.to_string()),
        ("--limit-seconds (F, and C/G catch-up)".into(), format!("{}", settings.limit.as_secs_f64())),
        ("--replay-limit-seconds (E, C/G)".into(), format!("{}", settings.replay_limit.as_secs_f64())),
        ("--quick".into(), cli.quick.to_string()),
        (
            "build".into(),
            if cfg!(debug_assertions) { "debug (numbers are not representative)" } else { "release" }.into(),
        ),
        (
            "service".into(),
            "child process `seatledger-bench serve-child` (seatledger::start + http::serve), no NATS unless F; RUST_LOG=warn; its PostgreSQL pool: 16 connections".into(),
        ),
    ]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve-child") {
        #[derive(Parser)]
        #[command(name = "seatledger-bench serve-child")]
        struct Child {
            #[command(flatten)]
            serve: seatledger::config::ServeSettings,
        }
        let child = Child::parse_from(
            std::iter::once("seatledger-bench serve-child".to_owned())
                .chain(args.into_iter().skip(2)),
        );
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        return match runtime.block_on(infra::serve_child(child.serve)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("serve-child: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        tokio::select! {
            code = run(cli) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: dropping this run's databases and streams");
                infra::clean_up_everything().await;
                ExitCode::from(130)
            }
        }
    })
}

async fn run(cli: Cli) -> ExitCode {
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let settings = cli.settings();
    let selected = cli.selected();
    let servers = Servers {
        postgres_admin_url: cli.postgres.clone(),
        nats_url: cli.nats.clone(),
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for numbers that mean anything");
    }
    let machine = infra::machine(&servers).await;
    if machine.postgres.is_empty() {
        eprintln!(
            "PostgreSQL is not reachable at {}. Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            seatledger::store::redact(&servers.postgres_admin_url)
        );
        return ExitCode::FAILURE;
    }
    if machine.nats.is_empty() && selected.contains(&"F") {
        eprintln!(
            "NATS is not reachable at {}. Start it with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server",
            servers.nats_url
        );
        return ExitCode::FAILURE;
    }
    eprintln!(
        "seatledger-bench: scenarios {} on {} ({} cores), {}; {}",
        selected.join(" "),
        machine.cpu,
        machine.cores,
        machine.postgres.split(" on ").next().unwrap_or_default(),
        machine.nats
    );
    let ctx = Ctx {
        servers: servers.clone(),
        settings: settings.clone(),
        phases: Phases::default(),
        admin_token: format!("bench-admin-{}", uuid::Uuid::new_v4()),
    };
    let mut reports: Vec<ScenarioReport> = Vec::new();
    let show = |report: ScenarioReport, reports: &mut Vec<ScenarioReport>| {
        println!("{}", report.markdown());
        reports.push(report);
    };
    for id in ["A", "B", "D"] {
        if !selected.contains(&id) {
            continue;
        }
        let result = match id {
            "A" => scenarios::scenario_a(&ctx).await,
            "B" => scenarios::scenario_b(&ctx).await,
            _ => scenarios::scenario_d(&ctx).await,
        };
        let report = result.unwrap_or_else(|error| {
            eprintln!("[{id}] FAILED: {error:#}");
            ScenarioReport::failed(id, scenarios::title_of(id), &error)
        });
        show(report, &mut reports);
    }
    let large: Vec<&str> = ["C", "E", "F", "G"]
        .into_iter()
        .filter(|id| selected.contains(id))
        .collect();
    if !large.is_empty() {
        let outcome =
            infra::with_fresh_db(&servers, |db| {
                let ctx = ctx.clone();
                let large = large.clone();
                async move {
                    let big = scenarios::build_big(&ctx, db).await?;
                    let mut done = Vec::new();
                    if large.contains(&"E") {
                        done.push(scenarios::scenario_e(&ctx, &big).await.unwrap_or_else(
                            |error| {
                                eprintln!("[E] FAILED: {error:#}");
                                ScenarioReport::failed("E", scenarios::title_of("E"), &error)
                            },
                        ));
                        println!("{}", done.last().expect("a report").markdown());
                    }
                    if large.contains(&"F") {
                        done.push(scenarios::scenario_f(&ctx, &big).await.unwrap_or_else(
                            |error| {
                                eprintln!("[F] FAILED: {error:#}");
                                ScenarioReport::failed("F", scenarios::title_of("F"), &error)
                            },
                        ));
                        println!("{}", done.last().expect("a report").markdown());
                    }
                    let (run_c, run_g) = (large.contains(&"C"), large.contains(&"G"));
                    if run_c || run_g {
                        match scenarios::scenarios_c_g(&ctx, &big, run_c, run_g).await {
                            Ok(reports) => {
                                for report in reports {
                                    println!("{}", report.markdown());
                                    done.push(report);
                                }
                            }
                            Err(error) => {
                                eprintln!("[C/G] FAILED: {error:#}");
                                for id in ["C", "G"] {
                                    if large.contains(&id) {
                                        done.push(ScenarioReport::failed(
                                            if id == "C" { "C" } else { "G" },
                                            scenarios::title_of(if id == "C" { "C" } else { "G" }),
                                            &error,
                                        ));
                                    }
                                }
                            }
                        }
                    }
                    Ok(done)
                }
            })
            .await;
        match outcome {
            Ok(done) => reports.extend(done),
            Err(error) => {
                eprintln!("[store] FAILED: {error:#}");
                for id in large {
                    let id: &'static str = SCENARIOS.into_iter().find(|s| *s == id).unwrap_or("?");
                    reports.push(ScenarioReport::failed(id, scenarios::title_of(id), &error));
                }
            }
        }
    }
    reports.sort_by_key(|report| report.id);
    let failed = reports.iter().any(|report| report.failure.is_some());
    let run = RunReport {
        machine,
        settings: settings_table(&cli, &settings),
        command: format!(
            "seatledger-bench {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        ),
        scenarios: reports,
        phases: ctx.phases.all(),
        started: started_at,
        total: started.elapsed(),
        load_at_end: infra::load_average(),
    };
    println!("## Summary ({:.1} min)\n", run.total.as_secs_f64() / 60.0);
    println!(
        "{}",
        run.markdown()
            .split("## Summary\n\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## Machine").next())
            .unwrap_or_default()
    );
    if cli.write {
        let path = cli.output.clone().unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../docs/BENCHMARKS.md"
            ))
        });
        let existing = std::fs::read_to_string(&path).ok();
        match std::fs::write(&path, run.document(existing.as_deref())) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(error) => {
                eprintln!("could not write {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
