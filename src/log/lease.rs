//! Leases: each background consumer runs on one instance at a time. On PostgreSQL a lease is a
//! session advisory lock held on a connection of its own, so it ends when the holder's process
//! or connection dies and another instance takes it over at its next attempt. On SQLite (one
//! process per file) a lease is always granted.

use sqlx::{Connection, PgConnection};

use crate::store::Store;

/// A held lease.
pub struct Lease {
    name: String,
    connection: Option<PgConnection>,
}

impl Lease {
    /// Takes the lease `name` if no one holds it. A standby keeps its connection in `spare`
    /// between attempts instead of opening one per attempt.
    pub async fn try_acquire(
        store: &Store,
        name: &str,
        spare: &mut Option<PgConnection>,
    ) -> Result<Option<Self>, sqlx::Error> {
        let Store::Postgres(pool) = store else {
            return Ok(Some(Self {
                name: name.to_owned(),
                connection: None,
            }));
        };
        let mut connection = match spare.take() {
            Some(connection) => connection,
            None => PgConnection::connect_with(&pool.connect_options()).await?,
        };
        let granted: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(format!("seatledger:{name}"))
            .fetch_one(&mut connection)
            .await?;
        if granted {
            Ok(Some(Self {
                name: name.to_owned(),
                connection: Some(connection),
            }))
        } else {
            *spare = Some(connection);
            Ok(None)
        }
    }

    /// Whether the lease is still held (its connection still answers).
    pub async fn is_held(&mut self) -> bool {
        match &mut self.connection {
            None => true,
            Some(connection) => connection.ping().await.is_ok(),
        }
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
