//! Shared helpers of the integration tests: a fresh database per test, on the real servers.

#![allow(dead_code)]

use seatledger::store::Store;

/// Where the tests find PostgreSQL (CI and developers run it locally).
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A migrated store on a database of its own: a new PostgreSQL database, or a new SQLite file.
pub struct FreshStore {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub async fn fresh_store(backend: Backend) -> FreshStore {
    let (url, dir) = match backend {
        Backend::Postgres => (fresh_postgres_database().await, None),
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let url = format!("sqlite:{}", dir.path().join("seatledger.db").display());
            (url, Some(dir))
        }
    };
    let store = Store::connect(&url)
        .await
        .expect("the fresh database opens");
    store
        .migrate()
        .await
        .expect("migrations apply to a fresh database");
    FreshStore {
        store,
        url,
        _dir: dir,
    }
}

impl FreshStore {
    /// Closes the pool and drops a PostgreSQL test database (an SQLite file goes with its
    /// temporary directory).
    pub async fn remove(self) {
        use sqlx::Connection;
        if let Store::Postgres(pool) = &self.store {
            pool.close().await;
            let name = self.url.rsplit('/').next().expect("a database name");
            let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL)
                .await
                .expect("PostgreSQL still reachable");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .expect("DROP DATABASE of the test");
        }
    }
}

/// Creates an empty PostgreSQL database for one test and returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({error}). Start it with: \
                 pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
            )
        });
    let name = format!("seatledger_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("CREATE DATABASE for the test");
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// The service running on a free port over a fresh database.
pub struct TestApp {
    pub address: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub fresh: FreshStore,
    pub state: seatledger::http::AppState,
    /// The highest `position` any answer through [`TestApp::call`] reported: later GETs
    /// through it wait for the projections to reach it (session consistency, as a client that
    /// reads its own writes does with `?min_position=`).
    pub seen_position: std::sync::Arc<std::sync::atomic::AtomicI64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// Whether this instance removes the database when stopped (a second instance does not).
    owns_database: bool,
    /// Where it publishes, if anywhere.
    pub nats: Option<seatledger::config::NatsSettings>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request with the given bearer token.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// Sends a request and returns its status and JSON body (`null` when there is none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.call_with_headers(method, token, path, body, &[]).await
    }

    /// [`TestApp::call`] with extra request headers.
    pub async fn call_with_headers(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> (reqwest::StatusCode, serde_json::Value) {
        use std::sync::atomic::Ordering;
        let seen = self.seen_position.load(Ordering::SeqCst);
        let path = if method == reqwest::Method::GET && !path.contains("min_position=") && seen > 0
        {
            let separator = if path.contains('?') { '&' } else { '?' };
            format!("{path}{separator}min_position={seen}")
        } else {
            path.to_owned()
        };
        let mut request = self.request(method, &path, token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        if let Some(position) = body.get("position").and_then(serde_json::Value::as_i64) {
            self.seen_position.fetch_max(position, Ordering::SeqCst);
        }
        (status, body)
    }

    /// Creates, as admin, a USD billing profile and the tenant contoso.onmicrosoft.com; returns
    /// their ids.
    pub async fn billing_profile_and_contoso(&self) -> (String, String) {
        let (status, profile) = self
            .call(
                reqwest::Method::POST,
                &self.admin_token,
                "/v1/billing-profiles",
                Some(serde_json::json!({"name": "P", "currency": "USD"})),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{profile}");
        let (status, tenant) = self
            .call(
                reqwest::Method::POST,
                &self.admin_token,
                "/v1/tenants",
                Some(serde_json::json!({"domain": "contoso.onmicrosoft.com", "name": "Contoso"})),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{tenant}");
        let id = |value: &serde_json::Value| value["id"].as_str().expect("an id").to_owned();
        (id(&profile), id(&tenant))
    }

    /// Stops the server (gracefully) and removes the database, if this instance owns it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("the server task ends cleanly");
        }
        self.state.workers.stop().await;
        if self.owns_database {
            self.fresh.remove().await;
        } else if let Store::Postgres(pool) = &self.fresh.store {
            pool.close().await;
        }
    }

    /// Ends this instance as a crash would: no graceful shutdown, its background work and
    /// its connections (and with them its leases) dropped mid-step.
    pub async fn kill(mut self) {
        self.state.workers.abort();
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        self.shutdown.take();
        // Let the aborted tasks drop their lease connections before the pool goes.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if let Store::Postgres(pool) = &self.state.store {
            pool.close().await;
        }
    }

    /// Another instance of the service over this one's database, with the same admin token.
    pub async fn second_instance(&self) -> TestApp {
        let store = Store::connect(&self.fresh.url)
            .await
            .expect("the shared database opens");
        let fresh = FreshStore {
            store,
            url: self.fresh.url.clone(),
            _dir: None,
        };
        start_instance(
            fresh,
            self.admin_token.clone(),
            self.state.clock.is_sandbox(),
            self.nats.clone(),
            false,
        )
        .await
    }

    /// Polls `probe` every 50 ms until it returns `Some`, or panics naming `what` after
    /// `seconds`.
    pub async fn eventually<T, F, Fut>(&self, seconds: u64, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within {seconds} s: {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, false).await
}

pub async fn spawn_app_with(backend: Backend, sandbox_clock: bool) -> TestApp {
    let fresh = fresh_store(backend).await;
    let admin_token = format!("test-admin-{}", uuid::Uuid::new_v4());
    start_instance(fresh, admin_token, sandbox_clock, None, true).await
}

/// The service over a fresh database, publishing to NATS as `nats` says.
pub async fn spawn_app_with_nats(
    backend: Backend,
    nats: seatledger::config::NatsSettings,
) -> TestApp {
    let fresh = fresh_store(backend).await;
    let admin_token = format!("test-admin-{}", uuid::Uuid::new_v4());
    start_instance(fresh, admin_token, false, Some(nats), true).await
}

/// Where the tests find NATS with JetStream (CI and developers run it locally).
pub const NATS_URL: &str = "nats://127.0.0.1:4222";

/// Publisher settings for the shared NATS server with a stream and subject prefix of the
/// test's own, so that tests running at once never see each other's events.
pub fn private_stream_settings(url: &str) -> seatledger::config::NatsSettings {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    seatledger::config::NatsSettings {
        url: Some(url.to_owned()),
        stream: format!("SEATLEDGER_TEST_{unique}"),
        subject_prefix: format!("seatledger_test_{unique}"),
        duplicate_window_seconds: 600,
    }
}

/// Connects to NATS or fails the test saying how to start it.
pub async fn nats_client(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.unwrap_or_else(|error| {
        panic!(
            "NATS is not reachable at {url} ({error}). Start it with: start-stop-daemon --start \
             --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js \
             -sd /var/lib/nats-server"
        )
    })
}

async fn start_instance(
    fresh: FreshStore,
    admin_token: String,
    sandbox_clock: bool,
    nats: Option<seatledger::config::NatsSettings>,
    owns_database: bool,
) -> TestApp {
    start_instance_configured(
        fresh,
        admin_token,
        sandbox_clock,
        nats,
        owns_database,
        |_| {},
    )
    .await
}

/// The service over a fresh database with settings of the test's own.
pub async fn spawn_app_configured(
    backend: Backend,
    configure: impl FnOnce(&mut seatledger::config::ServeSettings),
) -> TestApp {
    let fresh = fresh_store(backend).await;
    let admin_token = format!("test-admin-{}", uuid::Uuid::new_v4());
    start_instance_configured(fresh, admin_token, false, None, true, configure).await
}

async fn start_instance_configured(
    fresh: FreshStore,
    admin_token: String,
    sandbox_clock: bool,
    nats: Option<seatledger::config::NatsSettings>,
    owns_database: bool,
    configure: impl FnOnce(&mut seatledger::config::ServeSettings),
) -> TestApp {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        serve: seatledger::config::ServeSettings,
    }
    let mut settings = Args::parse_from(["seatledger"]).serve;
    settings.store.database_url = fresh.url.clone();
    settings.bind = "127.0.0.1:0".into();
    settings.admin_token = Some(admin_token.clone());
    settings.sandbox_clock = sandbox_clock;
    // Only the tests that ask for NATS publish, whatever the environment says.
    settings.nats = nats.clone().unwrap_or(seatledger::config::NatsSettings {
        url: None,
        ..settings.nats
    });
    configure(&mut settings);
    let (state, generated) = seatledger::start(&settings)
        .await
        .expect("the service starts");
    assert!(
        generated.is_none(),
        "a configured admin token is not replaced"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let app_state = state.clone();
    let server = tokio::spawn(async move {
        seatledger::http::serve(listener, state, async {
            let _ = stop.await;
        })
        .await
        .expect("the server runs");
    });
    TestApp {
        address,
        admin_token,
        client: reqwest::Client::new(),
        fresh,
        state: app_state,
        seen_position: Default::default(),
        shutdown: Some(shutdown),
        server: Some(server),
        owns_database,
        nats,
    }
}

/// Every attribute an event envelope may carry (docs/events.md): the CloudEvents ones the feed
/// uses and seatledger's extensions.
pub const ENVELOPE_ATTRIBUTES: [&str; 13] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "position",
    "streamsequence",
    "tenantid",
    "correlationid",
    "causationid",
    "data",
];

/// A TCP proxy in front of PostgreSQL that a test cuts and restores: an outage of the store as
/// the service sees it (open connections dropped mid-statement, new ones refused), without
/// touching the server other tests share.
pub struct StoreOutage {
    port: u16,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accepting: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl StoreOutage {
    /// A proxy to PostgreSQL at 127.0.0.1:5432 on a free port.
    pub async fn start() -> Self {
        let listener = Self::listen(0);
        let port = listener.local_addr().unwrap().port();
        let outage = Self {
            port,
            links: Default::default(),
            accepting: Default::default(),
        };
        outage.accept(listener);
        outage
    }

    fn listen(port: u16) -> tokio::net::TcpListener {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap();
        socket.listen(128).unwrap()
    }

    fn accept(&self, listener: tokio::net::TcpListener) {
        let links = self.links.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut links = links.lock().unwrap();
                links.retain(|link| !link.is_finished());
                links.push(link);
            }
        });
        *self.accepting.lock().unwrap() = Some(task);
    }

    /// `url` (a database on 127.0.0.1:5432) reached through the proxy.
    pub fn through(&self, url: &str) -> String {
        url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port))
    }

    /// The store goes away: every open connection drops, new ones are refused (nothing
    /// listens on the port any more).
    pub fn cut(&self) {
        if let Some(task) = self.accepting.lock().unwrap().take() {
            task.abort();
        }
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// The store is back, on the same port.
    pub fn restore(&self) {
        self.accept(Self::listen(self.port));
    }
}

impl Drop for StoreOutage {
    fn drop(&mut self) {
        self.cut();
    }
}

/// The service on a fresh PostgreSQL database that it reaches only through `outage`'s proxy.
pub async fn spawn_app_behind(outage: &StoreOutage) -> TestApp {
    let mut fresh = fresh_store(Backend::Postgres).await;
    if let Store::Postgres(pool) = &fresh.store {
        pool.close().await;
    }
    fresh.url = outage.through(&fresh.url);
    fresh.store = Store::connect(&fresh.url)
        .await
        .expect("the database opens through the proxy");
    let admin_token = format!("test-admin-{}", uuid::Uuid::new_v4());
    start_instance(fresh, admin_token, false, None, true).await
}

/// A PostgreSQL server of the test's own — `initdb` in a temporary directory, on a free port —
/// that the test stops and starts again: a real restart (backends killed, crash recovery),
/// without touching the server other tests share.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivateCluster {
    /// Creates and starts the cluster.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(Result::ok)
                    .map(|version| version.path().join("bin"))
                    .filter(|bin| bin.join("initdb").exists())
                    .max()
            })
            .expect(
                "PostgreSQL's server binaries are not in /usr/lib/postgresql/<version>/bin: \
                 install them with apt-get install -y postgresql",
            );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { dir, bin, port };
        // PostgreSQL refuses to run as root: as root, the cluster belongs to `postgres`.
        if Self::as_root() {
            cluster.run(
                "chown",
                &["-R", "postgres:postgres", &cluster.path("")],
                false,
            );
        }
        let data = cluster.path("data");
        let initdb = cluster.bin.join("initdb");
        cluster.run(
            initdb.to_str().unwrap(),
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            true,
        );
        cluster.start_again();
        cluster
    }

    fn as_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| output.stdout.starts_with(b"0"))
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn run(&self, program: &str, args: &[&str], as_postgres: bool) {
        let mut command = if as_postgres && Self::as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--", program]);
            command
        } else {
            std::process::Command::new(program)
        };
        let output = command.args(args).output().expect("the command runs");
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.path("data");
        let mut all = vec!["-D", data.as_str(), "-w"];
        all.extend_from_slice(args);
        self.run(pg_ctl.to_str().unwrap(), &all, true);
    }

    /// Starts the (stopped) server.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.path("")
        );
        let log = self.path("server.log");
        self.pg_ctl(&["-o", &options, "-l", &log, "start"]);
    }

    /// Stops the server as a crash would: every backend killed, no checkpoint.
    pub fn stop_immediately(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The service over a new database of this server.
    pub async fn spawn_app(&self) -> TestApp {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("the private server answers");
        sqlx::query("CREATE DATABASE seatledger")
            .execute(&mut admin)
            .await
            .unwrap();
        let url = self.url("seatledger");
        let store = Store::connect(&url).await.expect("the database opens");
        let fresh = FreshStore {
            store,
            url,
            _dir: None,
        };
        let admin_token = format!("test-admin-{}", uuid::Uuid::new_v4());
        // The cluster goes with the test: nothing to drop.
        start_instance(fresh, admin_token, false, None, false).await
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.path("data");
        let mut command = if Self::as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]);
            command.arg(&pg_ctl);
            command
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// What the service logged in this test binary: the service's own lines at every level, other
/// crates' warnings, as JSON, in memory. A process has one global subscriber; every test that
/// wants logs asks for this one (the first call installs it), and the secret scan of
/// `api_users` reads it.
pub struct CapturedLogs(std::sync::Mutex<Vec<u8>>);

impl CapturedLogs {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct LogWriter(&'static CapturedLogs);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 .0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The binary's log capture, installed on first use.
pub fn captured_logs() -> &'static CapturedLogs {
    static LOGS: std::sync::OnceLock<&'static CapturedLogs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static CapturedLogs =
            Box::leak(Box::new(CapturedLogs(std::sync::Mutex::new(Vec::new()))));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("seatledger=trace,warn"))
            .with_writer(move || LogWriter(logs))
            .json()
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("only support::captured_logs installs the tests' subscriber");
        logs
    })
}
