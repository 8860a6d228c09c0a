//! The rows a projection reads and writes: typed documents under string keys, each with the
//! scope it is listed by (a tenant, a billing profile) and an optional sort key (a deadline).
//!
//! A projection never does I/O: the service prefetches the rows a batch of events names
//! ([`crate::Projection::keys`]), the projection changes them in memory, and the service writes
//! the changes back in the transaction that moves its checkpoint. Replay and as-of queries run
//! the same code over rows held entirely in memory.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ProjectionError;

/// One stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What the document is (`user`, `seats`, `timer`…).
    pub kind: String,
    /// What it is listed by (a tenant id, a billing profile id, or empty).
    pub scope: String,
    /// An ordering key (a deadline), or empty.
    pub sort_key: String,
    /// The document, as JSON.
    pub doc: String,
}

/// The rows a projection works on during one batch of events.
#[derive(Debug, Clone, Default)]
pub struct RowSet {
    rows: BTreeMap<String, Option<Row>>,
    /// Whether every row is here (replay, as-of); otherwise only the prefetched ones are.
    complete: bool,
    dirty: BTreeSet<String>,
}

impl RowSet {
    /// An empty set that holds every row there is: absent means missing.
    pub fn complete() -> Self {
        Self {
            complete: true,
            ..Self::default()
        }
    }

    /// The rows fetched for a batch: each requested key with its row, or `None` when there is
    /// none. Other keys cannot be read.
    pub fn prefetched(rows: impl IntoIterator<Item = (String, Option<Row>)>) -> Self {
        Self {
            rows: rows.into_iter().collect(),
            complete: false,
            dirty: BTreeSet::new(),
        }
    }

    /// The row under `key`.
    pub fn get(&self, key: &str) -> Result<Option<&Row>, ProjectionError> {
        match self.rows.get(key) {
            Some(row) => Ok(row.as_ref()),
            None if self.complete => Ok(None),
            None => Err(ProjectionError::NotPrefetched(key.to_owned())),
        }
    }

    /// Writes `row` under `key`.
    pub fn put(&mut self, key: String, row: Row) {
        self.dirty.insert(key.clone());
        self.rows.insert(key, Some(row));
    }

    /// Removes the row under `key`.
    pub fn delete(&mut self, key: &str) {
        self.dirty.insert(key.to_owned());
        if self.complete {
            self.rows.remove(key);
        } else {
            self.rows.insert(key.to_owned(), None);
        }
    }

    /// The document under `key`, decoded.
    pub fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ProjectionError> {
        self.get(key)?
            .map(|row| {
                serde_json::from_str(&row.doc).map_err(|error| ProjectionError::Corrupt {
                    key: key.to_owned(),
                    reason: error.to_string(),
                })
            })
            .transpose()
    }

    /// Stores `doc` under `key`.
    pub fn store<T: Serialize>(
        &mut self,
        key: String,
        kind: &str,
        scope: String,
        sort_key: String,
        doc: &T,
    ) {
        let doc = serde_json::to_string(doc).expect("read-model documents serialise");
        self.put(
            key,
            Row {
                kind: kind.to_owned(),
                scope,
                sort_key,
                doc,
            },
        );
    }

    /// What changed since the set was made (or last drained): each key with its new row, or
    /// `None` when it was removed.
    pub fn take_changes(&mut self) -> Vec<(String, Option<Row>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|key| {
                let row = self.rows.get(&key).cloned().flatten();
                (key, row)
            })
            .collect()
    }

    /// Every present row, by key (for replay and as-of).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Row)> {
        self.rows
            .iter()
            .filter_map(|(key, row)| row.as_ref().map(|row| (key, row)))
    }

    /// The present rows of one kind and scope, decoded.
    pub fn scoped<T: DeserializeOwned>(
        &self,
        kind: &str,
        scope: &str,
    ) -> Result<Vec<T>, ProjectionError> {
        self.iter()
            .filter(|(_, row)| row.kind == kind && row.scope == scope)
            .map(|(key, row)| {
                serde_json::from_str(&row.doc).map_err(|error| ProjectionError::Corrupt {
                    key: key.clone(),
                    reason: error.to_string(),
                })
            })
            .collect()
    }
}

/// Decodes documents fetched from the store.
pub fn decode<T: DeserializeOwned>(key: &str, doc: &str) -> Result<T, ProjectionError> {
    serde_json::from_str(doc).map_err(|error| ProjectionError::Corrupt {
        key: key.to_owned(),
        reason: error.to_string(),
    })
}
