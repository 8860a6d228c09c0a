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
