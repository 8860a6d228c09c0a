//! What the HTTP reads ask of the read models: a scope's documents, a page of them, one row.

use super::*;

/// The documents of one kind listed under `scope` in a projection's live rows.
pub async fn scoped_docs(
    store: &Store,
    projection: &str,
    kind: &str,
    scope: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    crate::on_pool!(store, pool => {
        sqlx::query_as(
            "SELECT row_key, doc FROM read_models
              WHERE projection = $1 AND kind = $2 AND scope = $3 ORDER BY row_key",
        )
        .bind(projection)
        .bind(kind)
        .bind(scope)
        .fetch_all(pool)
        .await
    })
}

/// Up to `limit` of [`scoped_docs`]' rows, those after the key `after` (`""` for the first
/// page): a long list read a page at a time, each page a range of the scope's index.
pub async fn scoped_docs_page(
    store: &Store,
    projection: &str,
    kind: &str,
    scope: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    crate::on_pool!(store, pool => {
        sqlx::query_as(
            "SELECT row_key, doc FROM read_models
              WHERE projection = $1 AND kind = $2 AND scope = $3 AND row_key > $4
              ORDER BY row_key LIMIT $5",
        )
        .bind(projection)
        .bind(kind)
        .bind(scope)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}

/// One document of a projection's live rows.
pub async fn doc(
    store: &Store,
    projection: &str,
    row_key: &str,
) -> Result<Option<String>, sqlx::Error> {
    crate::on_pool!(store, pool => {
        sqlx::query_scalar("SELECT doc FROM read_models WHERE projection = $1 AND row_key = $2")
            .bind(projection)
            .bind(row_key)
            .fetch_optional(pool)
            .await
    })
}

/// Decodes the documents of [`scoped_docs`].
pub fn decode_all<T: serde::de::DeserializeOwned>(
    docs: &[(String, String)],
) -> Result<Vec<T>, ProjectionError> {
    docs.iter()
        .map(|(key, doc)| projections::rows::decode(key, doc))
        .collect()
}
