//! Tables: one per scenario, printed as it ends and written to `docs/BENCHMARKS.md` on
//! `--write` (the hand-written "Findings" section below the tables is kept).

use std::fmt::Write as _;
use std::time::Duration;

use crate::infra::Machine;
use crate::stats::{self, LatencySummary};

/// One row of a scenario's table.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// How many operations (requests, transactions, events, messages) counted.
    pub count: Option<u64>,
    /// Their unit.
    pub unit: &'static str,
    /// Over how long.
    pub elapsed: Option<Duration>,
    /// Per second.
    pub throughput: Option<f64>,
    /// Latency distribution, when operations were timed one by one.
    pub latency: Option<LatencySummary>,
    /// Failed operations (`None` where failures stop the measurement instead).
    pub errors: Option<u64>,
    /// Ratio to the baseline(s) measured before it in the same run.
    pub ratio: Option<String>,
}

impl Measurement {
    /// A row for a closed-loop outcome.
    pub fn of_outcome(name: &str, unit: &'static str, outcome: &mut crate::load::Outcome) -> Self {
        Self {
            name: name.to_owned(),
            count: Some(outcome.completed),
            unit,
            elapsed: Some(outcome.window),
            throughput: Some(outcome.throughput()),
            latency: outcome.samples.summary(),
            errors: Some(outcome.errors + outcome.warmup_errors),
            ratio: None,
        }
    }

    /// A row for a count over a time.
    pub fn of_count(name: &str, unit: &'static str, count: u64, elapsed: Duration) -> Self {
        Self {
            name: name.to_owned(),
            count: Some(count),
            unit,
            elapsed: Some(elapsed),
            throughput: Some(stats::rate(count, elapsed)),
            ..Self::default()
        }
    }
}

/// A target of the issue and whether the run met it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The target, as the issue states it.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether it was met.
    pub met: bool,
}

/// One scenario's results.
#[derive(Debug, Clone, Default)]
pub struct ScenarioReport {
    /// `A` … `G`.
    pub id: &'static str,
    /// Its title.
    pub title: String,
    /// How it was measured.
    pub method: Vec<String>,
    /// The rows.
    pub measurements: Vec<Measurement>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Anything else observed (sanity checks, error kinds).
    pub notes: Vec<String>,
    /// Why it could not finish, if it failed.
    pub failure: Option<String>,
}

impl ScenarioReport {
    /// A report of a scenario that failed before it could measure.
    pub fn failed(id: &'static str, title: &str, error: &anyhow::Error) -> Self {
        Self {
            id,
            title: title.to_owned(),
            failure: Some(format!("{error:#}")),
            ..Self::default()
        }
    }

    /// The scenario as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {}. {}\n", self.id, self.title);
        for line in &self.method {
            let _ = writeln!(out, "{line}");
        }
        if !self.method.is_empty() {
            out.push('\n');
        }
        if let Some(failure) = &self.failure {
            let _ = writeln!(out, "**The scenario failed:** `{failure}`\n");
        }
        if !self.measurements.is_empty() {
            out.push_str(
                "| measurement | count | time | throughput | p50 | p99 | max | errors | ratio to baseline |\n",
            );
            out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
            for row in &self.measurements {
                let dash = || "—".to_owned();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.name,
                    row.count.map_or_else(dash, |count| {
                        format!("{} {}", stats::thousands(count), row.unit)
                    }),
                    row.elapsed
                        .map_or_else(dash, |elapsed| format!("{:.1} s", elapsed.as_secs_f64())),
                    row.throughput.map_or_else(dash, stats::per_second),
                    row.latency.map_or_else(dash, |l| stats::ms(l.p50)),
                    row.latency.map_or_else(dash, |l| stats::ms(l.p99)),
                    row.latency.map_or_else(dash, |l| stats::ms(l.max)),
                    row.errors.map_or_else(dash, |errors| errors.to_string()),
                    row.ratio.clone().unwrap_or_else(dash),
                );
            }
            out.push('\n');
        }
        if !self.targets.is_empty() {
            out.push_str("| target | measured | met |\n|---|---|---|\n");
            for target in &self.targets {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    target.target,
                    target.measured,
                    if target.met { "**yes**" } else { "**no**" }
                );
            }
            out.push('\n');
        }
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        out
    }
}

/// What the whole run was.
pub struct RunReport {
    /// The machine.
    pub machine: Machine,
    /// The settings, as `flag value` lines.
    pub settings: Vec<(String, String)>,
    /// The command line.
    pub command: String,
    /// Every scenario run.
    pub scenarios: Vec<ScenarioReport>,
    /// Every phase's time.
    pub phases: Vec<(String, String, Duration)>,
    /// When it started.
    pub started: chrono::DateTime<chrono::Utc>,
    /// How long it took.
    pub total: Duration,
    /// `/proc/loadavg` when it ended.
    pub load_at_end: String,
}

/// The heading the generated part ends at.
pub const FINDINGS: &str = "## Findings";

impl RunReport {
    /// The summary of every target.
    fn summary(&self) -> String {
        let mut out = String::from("| scenario | target | measured | met |\n|---|---|---|---|\n");
        for scenario in &self.scenarios {
            if let Some(failure) = &scenario.failure {
                let _ = writeln!(
                    out,
                    "| {}. {} | — | failed: {} | **no** |",
                    scenario.id,
                    scenario.title,
                    failure.replace('|', "\\|")
                );
            }
            for target in &scenario.targets {
                let _ = writeln!(
                    out,
                    "| {}. {} | {} | {} | {} |",
                    scenario.id,
                    scenario.title,
                    target.target,
                    target.measured,
                    if target.met { "**yes**" } else { "**no**" }
                );
            }
        }
        out
    }

    /// The generated part of `docs/BENCHMARKS.md`.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("# Benchmarks\n\n");
        out.push_str(
            "Generated by `cargo run --release -p seatledger-bench -- all --write` (the harness in \
             `bench/`); everything above \"Findings\" is rewritten by the next `--write`. Every \
             ratio compares with a baseline measured by the same run, right before the scenario, \
             at the same concurrency, on the same machine: absolute numbers on a shared 2-core \
             machine drift, ratios hold better. The service runs as a child process of the \
             harness (`seatledger-bench serve-child`, i.e. `seatledger::start` + \
             `seatledger::http::serve`), so load generator and service are separate processes \
             sharing the machine's cores with PostgreSQL and NATS. Each scenario uses a fresh \
             PostgreSQL database (dropped afterwards); C, E, F and G share one large store built \
             once per run. Timings are never asserted by `cargo test`.\n\n",
        );
        let _ = writeln!(
            out,
            "Run of {} UTC, {:.1} min in all: `{}`\n",
            self.started.format("%Y-%m-%d %H:%M"),
            self.total.as_secs_f64() / 60.0,
            self.command
        );
        out.push_str("## Summary\n\n");
        out.push_str(&self.summary());
        out.push_str("\n## Machine\n\n");
        let m = &self.machine;
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| CPU | {} |", m.cpu);
        let _ = writeln!(out, "| cores | {} |", m.cores);
        let _ = writeln!(out, "| RAM | {} |", stats::mib(m.ram_kib));
        let _ = writeln!(out, "| kernel | {} |", m.kernel);
        let _ = writeln!(out, "| PostgreSQL | {} |", m.postgres);
        let _ = writeln!(out, "| synchronous_commit | {} |", m.synchronous_commit);
        let _ = writeln!(out, "| shared_buffers | {} |", m.shared_buffers);
        let _ = writeln!(out, "| max_connections | {} |", m.max_connections);
        let _ = writeln!(out, "| NATS | {} |", m.nats);
        let _ = writeln!(out, "| git commit | {} |", m.git);
        let _ = writeln!(
            out,
            "| load average (1, 5, 15 min) | {} at the start, {} at the end (other work on the machine shows here) |",
            m.load_at_start, self.load_at_end
        );
        out.push_str("\n## Settings\n\n| setting | value |\n|---|---|\n");
        for (name, value) in &self.settings {
            let _ = writeln!(out, "| {name} | {value} |");
        }
        out.push_str("\n## Scenarios\n\n");
        for scenario in &self.scenarios {
            out.push_str(&scenario.markdown());
        }
        out.push_str("## Phases\n\n| scenario | phase | time |\n|---|---|---:|\n");
        for (scenario, phase, elapsed) in &self.phases {
            let _ = writeln!(
                out,
                "| {scenario} | {phase} | {:.1} s |",
                elapsed.as_secs_f64()
            );
        }
        out.push('\n');
        out
    }

    /// The whole file: the generated part, then the findings kept from `existing`.
    pub fn document(&self, existing: Option<&str>) -> String {
        let findings = existing
            .and_then(|text| text.find(FINDINGS).map(|at| text[at..].to_owned()))
            .unwrap_or_else(|| {
                format!("{FINDINGS}\n\n(To be written after a full run: for each missed target, where the time goes.)\n")
            });
        format!("{}{findings}", self.markdown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunReport {
        RunReport {
            machine: Machine::default(),
            settings: vec![("--seconds".into(), "10".into())],
            command: "seatledger-bench all".into(),
            scenarios: vec![ScenarioReport {
                id: "B",
                title: "hot tenant".into(),
                measurements: vec![Measurement::of_count(
                    "x",
                    "req",
                    10,
                    Duration::from_secs(1),
                )],
                targets: vec![Target {
                    target: "≥ 1 000/s".into(),
                    measured: "10/s".into(),
                    met: false,
                }],
                ..ScenarioReport::default()
            }],
            phases: vec![],
            started: chrono::Utc::now(),
            total: Duration::from_secs(60),
            load_at_end: String::new(),
        }
    }

    #[test]
    fn findings_survive_a_rewrite() {
        let report = run();
        let first = report.document(None);
        assert!(first.contains("## Findings\n\n(To be written"));
        let edited = first.replace(
            "(To be written after a full run: for each missed target, where the time goes.)",
            "B misses: locks.",
        );
        let second = report.document(Some(&edited));
        assert!(
            second.ends_with("## Findings\n\nB misses: locks.\n"),
            "{second}"
        );
        assert!(second.contains("| B. hot tenant | ≥ 1 000/s | 10/s | **no** |"));
        assert!(second.contains("| x | 10 req | 1.0 s | 10/s | — | — | — | — | — |"));
    }
}
