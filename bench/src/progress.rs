//! Progress on stderr: a line per second saying which scenario, which phase, and its counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Prints `line()` every second, prefixed with the scenario, phase and time in the phase,
/// until dropped.
pub struct Ticker {
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    /// Starts ticking.
    pub fn start(
        scenario: &str,
        phase: &str,
        line: impl Fn(Duration) -> String + Send + Sync + 'static,
    ) -> Self {
        let prefix = format!("[{scenario}] {phase}");
        eprintln!("{prefix}: started");
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.tick().await;
            loop {
                interval.tick().await;
                let elapsed = started.elapsed();
                eprintln!(
                    "{prefix} {:>6.1} s  {}",
                    elapsed.as_secs_f64(),
                    line(elapsed)
                );
            }
        });
        Self { task }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A counter whose per-second rate the ticker shows.
#[derive(Clone, Default)]
pub struct Counter {
    total: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    shown: Arc<AtomicU64>,
}

impl Counter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `n` more.
    pub fn add(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one error.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The total so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// A line with the total, the rate since the last line and the errors.
    pub fn line(&self, what: &str) -> String {
        let total = self.total();
        let before = self.shown.swap(total, Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        format!(
            "{what} {} ({}/s last second), errors {errors}",
            crate::stats::thousands(total),
            crate::stats::thousands(total.saturating_sub(before))
        )
    }
}

/// Runs `work`, printing how long the phase took when it ends; the elapsed time is recorded
/// in `phases`.
pub async fn phase<T>(
    phases: &Phases,
    scenario: &str,
    name: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let result = work.await;
    let elapsed = started.elapsed();
    eprintln!(
        "[{scenario}] {name}: {} after {:.1} s",
        if result.is_ok() { "done" } else { "FAILED" },
        elapsed.as_secs_f64()
    );
    phases.record(scenario, name, elapsed);
    result
}

/// How long every phase of the run took.
#[derive(Clone, Default)]
pub struct Phases {
    list: Arc<std::sync::Mutex<Vec<(String, String, Duration)>>>,
}

impl Phases {
    /// Records one phase.
    pub fn record(&self, scenario: &str, name: &str, elapsed: Duration) {
        self.list.lock().expect("phase list lock").push((
            scenario.to_owned(),
            name.to_owned(),
            elapsed,
        ));
    }

    /// Every phase so far, in order.
    pub fn all(&self) -> Vec<(String, String, Duration)> {
        self.list.lock().expect("phase list lock").clone()
    }
}
