//! What the scenarios run on: a fresh PostgreSQL database each, JetStream streams of their own,
//! the service as a child process, and the machine's description.
//!
//! Everything created is registered, so that an interrupted run (Ctrl-C) still drops its
//! databases and deletes its streams; a child service exits by itself when its parent goes,
//! because its stdin closes.

use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};

/// Where the servers are.
#[derive(Debug, Clone)]
pub struct Servers {
    /// A PostgreSQL URL of a database the harness may connect to for `CREATE DATABASE`.
    pub postgres_admin_url: String,
    /// The NATS server with JetStream.
    pub nats_url: String,
}

enum Resource {
    Database { admin_url: String, name: String },
    Stream { nats_url: String, name: String },
}

static CREATED: Mutex<Vec<Resource>> = Mutex::new(Vec::new());

fn register(resource: Resource) {
    CREATED.lock().expect("registry lock").push(resource);
}

fn forget_database(name: &str) {
    CREATED
        .lock()
        .expect("registry lock")
        .retain(|r| !matches!(r, Resource::Database { name: n, .. } if n == name));
}

fn forget_stream(name: &str) {
    CREATED
        .lock()
        .expect("registry lock")
        .retain(|r| !matches!(r, Resource::Stream { name: n, .. } if n == name));
}

/// Drops every database and deletes every stream still registered (after an interruption).
pub async fn clean_up_everything() {
    let leftovers: Vec<Resource> = std::mem::take(&mut *CREATED.lock().expect("registry lock"));
    for resource in leftovers {
        match resource {
            Resource::Database { admin_url, name } => {
                if let Err(error) = drop_database(&admin_url, &name).await {
                    eprintln!("could not drop database {name}: {error:#}");
                } else {
                    eprintln!("dropped database {name}");
                }
            }
            Resource::Stream { nats_url, name } => {
                if let Err(error) = delete_stream(&nats_url, &name).await {
                    eprintln!("could not delete stream {name}: {error:#}");
                } else {
                    eprintln!("deleted stream {name}");
                }
            }
        }
    }
}

/// A database of its own, dropped by [`FreshDb::drop_now`] (or at Ctrl-C).
#[derive(Debug, Clone)]
pub struct FreshDb {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    admin_url: String,
}

/// `admin_url` with its database replaced by `name`.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |at| at + 3);
    let root = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{name}?{query}"),
        None => format!("{root}/{name}"),
    }
}

impl FreshDb {
    /// Creates `seatledger_bench_<uuid>`.
    pub async fn create(servers: &Servers) -> anyhow::Result<Self> {
        let name = format!("seatledger_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&servers.postgres_admin_url)
            .await
            .with_context(|| {
                format!(
                    "PostgreSQL is not reachable at {}",
                    seatledger::store::redact(&servers.postgres_admin_url)
                )
            })?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        register(Resource::Database {
            admin_url: servers.postgres_admin_url.clone(),
            name: name.clone(),
        });
        Ok(Self {
            url: database_url(&servers.postgres_admin_url, &name),
            name,
            admin_url: servers.postgres_admin_url.clone(),
        })
    }

    /// Drops the database, whoever is still connected.
    pub async fn drop_now(&self) -> anyhow::Result<()> {
        drop_database(&self.admin_url, &self.name).await?;
        forget_database(&self.name);
        Ok(())
    }
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// Runs `work` on a fresh database and drops the database afterwards, whether `work`
/// succeeded, failed or panicked.
pub async fn with_fresh_db<T, F, Fut>(servers: &Servers, work: F) -> anyhow::Result<T>
where
    F: FnOnce(FreshDb) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    use futures::FutureExt;
    let db = FreshDb::create(servers).await?;
    let outcome = std::panic::AssertUnwindSafe(work(db.clone()))
        .catch_unwind()
        .await;
    let dropped = db.drop_now().await;
    let result = match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    if let Err(error) = dropped {
        eprintln!("could not drop database {}: {error:#}", db.name);
    }
    result
}

/// A JetStream stream name and subject prefix of this run's own.
pub fn private_nats(servers: &Servers, what: &str) -> seatledger::config::NatsSettings {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    seatledger::config::NatsSettings {
        url: Some(servers.nats_url.clone()),
        stream: format!("SEATLEDGER_BENCH_{what}_{unique}"),
        subject_prefix: format!("seatledger_bench_{}_{unique}", what.to_lowercase()),
        duplicate_window_seconds: 600,
    }
}

/// Remembers a stream for deletion at Ctrl-C.
pub fn register_stream(servers: &Servers, name: &str) {
    register(Resource::Stream {
        nats_url: servers.nats_url.clone(),
        name: name.to_owned(),
    });
}

/// Deletes a stream (and forgets it); a stream that does not exist is fine.
pub async fn remove_stream(servers: &Servers, name: &str) -> anyhow::Result<()> {
    delete_stream(&servers.nats_url, name).await?;
    forget_stream(name);
    Ok(())
}

async fn delete_stream(nats_url: &str, name: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(nats_url).await?;
    let jetstream = async_nats::jetstream::new(client);
    match jetstream.delete_stream(name).await {
        Ok(_) => Ok(()),
        Err(error) if error.to_string().contains("not found") => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub hwm_kib: u64,
}

/// Reads the memory of `pid`.
pub fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    })
}

/// The service, running as a child process of the harness.
pub struct ServiceChild {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its process id.
    pub pid: u32,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

/// What the child prints on stdout once it listens.
pub const LISTENING: &str = "SEATLEDGER_BENCH_LISTENING";

impl ServiceChild {
    /// Starts `seatledger-bench serve-child` over `database_url`, publishing to `nats` if
    /// given, and waits until it listens.
    pub async fn start(
        database_url: &str,
        admin_token: &str,
        nats: Option<&seatledger::config::NatsSettings>,
    ) -> anyhow::Result<Self> {
        // The running binary itself, even if a rebuild has replaced the file since it started.
        let exe = match std::path::Path::new("/proc/self/exe") {
            path if path.exists() => path.to_path_buf(),
            _ => std::env::current_exe().context("the harness's own executable")?,
        };
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("serve-child")
            .arg("--database-url")
            .arg(database_url)
            .arg("--bind")
            .arg("127.0.0.1:0");
        if let Some(nats) = nats {
            command
                .arg("--nats-url")
                .arg(nats.url.as_deref().unwrap_or_default())
                .arg("--nats-stream")
                .arg(&nats.stream)
                .arg("--nats-subject-prefix")
                .arg(&nats.subject_prefix);
        }
        // Only what the harness says configures the child.
        for variable in [
            "DATABASE_URL",
            "NATS_URL",
            "SEATLEDGER_BIND",
            "SEATLEDGER_NATS_STREAM",
            "SEATLEDGER_NATS_SUBJECT_PREFIX",
            "SEATLEDGER_NATS_DUPLICATE_WINDOW_SECONDS",
            "SEATLEDGER_SANDBOX_CLOCK",
            "SEATLEDGER_CANCELLATION_WINDOW_HOURS",
            "SEATLEDGER_LOG_FORMAT",
        ] {
            command.env_remove(variable);
        }
        command.env("SEATLEDGER_ADMIN_TOKEN", admin_token);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().context("starting the service child")?;
        let pid = child.id().context("the child's pid")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(Duration::from_secs(300), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(address) = line.strip_prefix(LISTENING) {
                    return Ok::<_, anyhow::Error>(Some(address.trim().to_owned()));
                }
                eprintln!("[service] {line}");
            }
            Ok(None)
        })
        .await
        .context("the service did not listen within 300 s")??;
        let Some(address) = address else {
            let status = child.wait().await?;
            bail!("the service child exited before listening ({status})");
        };
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[service] {line}");
            }
        });
        Ok(Self {
            child,
            stdin,
            pid,
            base: format!("http://{address}"),
        })
    }

    /// Stops it gracefully (closing its stdin), or kills it after 20 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    eprintln!("the service child exited with {status}");
                }
            }
            Err(_) => {
                eprintln!("the service child did not stop within 20 s; killing it");
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// `seatledger-bench serve-child`: the service over the given settings, printing its address
/// on stdout, until its stdin closes or it gets SIGTERM.
pub async fn serve_child(settings: seatledger::config::ServeSettings) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let (state, _) = seatledger::start(&settings).await?;
    let listener = tokio::net::TcpListener::bind(&settings.bind).await?;
    println!("{LISTENING} {}", listener.local_addr()?);
    let workers = state.workers.clone();
    let shutdown = async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler installs");
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        let eof = async {
            loop {
                match stdin.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            _ = eof => {}
            _ = terminate.recv() => {}
        }
    };
    seatledger::http::serve(listener, state, shutdown).await?;
    workers.stop().await;
    Ok(())
}

/// The machine and servers a run measured.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// Total RAM, KiB.
    pub ram_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// PostgreSQL's `version()`.
    pub postgres: String,
    /// `synchronous_commit`.
    pub synchronous_commit: String,
    /// `shared_buffers`.
    pub shared_buffers: String,
    /// `max_connections`.
    pub max_connections: String,
    /// The NATS server's version.
    pub nats: String,
    /// The commit the harness was built from, and whether the tree had changes.
    pub git: String,
    /// `/proc/loadavg` when the run started.
    pub load_at_start: String,
}

/// Describes the machine.
pub async fn machine(servers: &Servers) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let ram_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_default();
    let mut machine = Machine {
        cpu,
        cores,
        ram_kib,
        kernel,
        git: git_description(),
        load_at_start: load_average(),
        ..Machine::default()
    };
    if let Ok(mut connection) = sqlx::PgConnection::connect(&servers.postgres_admin_url).await {
        let show = |setting: &'static str| format!("SHOW {setting}");
        machine.postgres = sqlx::query_scalar("SELECT version()")
            .fetch_one(&mut connection)
            .await
            .unwrap_or_default();
        for (setting, slot) in [
            ("synchronous_commit", &mut machine.synchronous_commit),
            ("shared_buffers", &mut machine.shared_buffers),
            ("max_connections", &mut machine.max_connections),
        ] {
            *slot = sqlx::query_scalar(&show(setting))
                .fetch_one(&mut connection)
                .await
                .unwrap_or_default();
        }
    }
    if let Ok(client) = async_nats::connect(&servers.nats_url).await {
        machine.nats = format!("nats-server {}", client.server_info().version);
    }
    machine
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn git_description() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let Some(commit) = run(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let changed: Vec<String> = run(&["status", "--porcelain", "--untracked-files=all"])
        .unwrap_or_default()
        .lines()
        .map(|line| line.get(3..).unwrap_or(line).to_owned())
        .filter(|path| !path.starts_with("bench/") && path != "docs/BENCHMARKS.md")
        .collect();
    if changed.is_empty() {
        commit
    } else {
        format!(
            "{commit} plus uncommitted changes to {}",
            changed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            database_url("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(database_url("postgres://h", "x"), "postgres://h/x");
    }
}
