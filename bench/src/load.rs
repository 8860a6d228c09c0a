//! Load generation: an HTTP client of the API, and a closed loop of N clients whose every
//! operation is timed and whose failures are counted, never hidden.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::progress::{Counter, Ticker};
use crate::stats::Samples;

/// The API of one running service, as the admin.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

/// An answer: status and JSON body (`null` when there is none).
pub type Answer = (reqwest::StatusCode, Value);

impl Api {
    /// A client of the service at `base` with the bearer `token`.
    pub fn new(base: &str, token: &str) -> Self {
        Self::with_timeout(base, token, Duration::from_secs(60))
    }

    /// A client whose requests may take up to `timeout`.
    pub fn with_timeout(base: &str, token: &str, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .timeout(timeout)
            .build()
            .expect("an HTTP client");
        Self {
            client,
            base: base.to_owned(),
            token: token.to_owned(),
        }
    }

    /// `http://host:port` of the service.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("transport: {}", without_url(&error)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| format!("transport: {}", without_url(&error)))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// A POST that must succeed; its body.
    pub async fn post_ok(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, answer) = self
            .call(reqwest::Method::POST, path, Some(body))
            .await
            .map_err(anyhow::Error::msg)?;
        if !status.is_success() {
            bail!("POST {path} answered {status}: {answer}");
        }
        Ok(answer)
    }

    /// A GET that must succeed; its body.
    pub async fn get_ok(&self, path: &str) -> anyhow::Result<Value> {
        let (status, answer) = self
            .call(reqwest::Method::GET, path, None)
            .await
            .map_err(anyhow::Error::msg)?;
        if !status.is_success() {
            bail!("GET {path} answered {status}: {answer}");
        }
        Ok(answer)
    }

    /// Waits until the service answers `/healthz`.
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        for _ in 0..600 {
            if let Ok((status, _)) = self.call(reqwest::Method::GET, "/healthz", None).await {
                if status.is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the service did not become healthy within 60 s")
    }
}

fn without_url(error: &reqwest::Error) -> String {
    // The URL names a user or tenant: without it, failures of one kind count together.
    let text = error.to_string();
    let mut text = match text.find(" for url (") {
        Some(at) => text[..at].to_owned(),
        None => text,
    };
    if let Some(source) = std::error::Error::source(error) {
        text.push_str(&format!(" ({source})"));
    }
    text
}

/// How a failed request is counted: `HTTP 409 insufficient_licenses`, `transport: …`.
pub fn failure((status, body): &Answer) -> String {
    match body.get("code").and_then(Value::as_str) {
        Some(code) => format!("HTTP {} {code}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// The `id` of a created resource.
pub fn id_of(body: &Value) -> anyhow::Result<uuid::Uuid> {
    body.get("id")
        .and_then(Value::as_str)
        .and_then(|raw| uuid::Uuid::parse_str(raw).ok())
        .with_context(|| format!("no id in {body}"))
}

/// A future of one operation.
pub type OpFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One client of a closed loop: it runs its next operation as soon as the previous one ends.
pub trait Worker: Send + 'static {
    /// Runs one operation; `Err` names the failure (counted, never hidden).
    fn op(&mut self) -> OpFuture<'_>;
}

/// What a closed loop measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Operations that succeeded within the measurement window.
    pub completed: u64,
    /// Operations that failed within the window.
    pub errors: u64,
    /// Operations that failed during the warm-up (not in the window, still reported).
    pub warmup_errors: u64,
    /// Failures by kind, warm-up included.
    pub error_kinds: BTreeMap<String, u64>,
    /// The window's length.
    pub window: Duration,
    /// Latencies of the operations that ended within the window (failures included).
    pub samples: Samples,
}

impl Outcome {
    /// Successful operations per second in the window.
    pub fn throughput(&self) -> f64 {
        crate::stats::rate(self.completed, self.window)
    }

    /// `kind × count, …` of every failure, or `none`.
    pub fn error_text(&self) -> String {
        if self.error_kinds.is_empty() {
            "none".into()
        } else {
            self.error_kinds
                .iter()
                .map(|(kind, count)| format!("{count} × {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// Runs `workers` as a closed loop: a warm-up, then a window of `measure`; an operation counts
/// in the window when it ends inside it. Returns the outcome and the workers (with whatever
/// state they tracked).
pub async fn closed_loop<W: Worker>(
    scenario: &str,
    phase: &str,
    workers: Vec<W>,
    warmup: Duration,
    measure: Duration,
) -> (Outcome, Vec<W>) {
    let counter = Counter::new();
    let start = Instant::now();
    let from = start + warmup;
    let end = from + measure;
    let shown = counter.clone();
    let _ticker = Ticker::start(scenario, phase, move |elapsed| {
        let stage = if elapsed < warmup {
            "warm-up"
        } else {
            "measuring"
        };
        shown.line(&format!("{stage}: operations"))
    });
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let result = worker.op().await;
                    let ended = Instant::now();
                    counter.add(1);
                    let in_window = ended >= from && ended <= end;
                    if let Err(kind) = &result {
                        counter.error();
                        *outcome.error_kinds.entry(kind.clone()).or_default() += 1;
                        if ended < from {
                            outcome.warmup_errors += 1;
                        }
                    }
                    if in_window {
                        outcome.samples.record(ended - began);
                        match result {
                            Ok(()) => outcome.completed += 1,
                            Err(_) => outcome.errors += 1,
                        }
                    }
                }
                (outcome, worker)
            })
        })
        .collect();
    let mut total = Outcome {
        window: measure,
        ..Outcome::default()
    };
    let mut workers = Vec::new();
    for task in tasks {
        let (outcome, worker) = task.await.expect("a load client does not panic");
        total.completed += outcome.completed;
        total.errors += outcome.errors;
        total.warmup_errors += outcome.warmup_errors;
        for (kind, count) in outcome.error_kinds {
            *total.error_kinds.entry(kind).or_default() += count;
        }
        total.samples.merge(outcome.samples);
        workers.push(worker);
    }
    (total, workers)
}
