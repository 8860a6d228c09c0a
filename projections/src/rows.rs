//! The rows a projection reads and writes: typed documents under string keys, each with the
//! scope it is listed by (a tenant, a billing profile) and an optional sort key (a deadline).
//!
//! A projection never does I/O: the service prefetches the rows a batch of events names
//! ([`crate::Projection::keys`]), the projection changes them in memory, and the service writes
//! the changes back in the transaction that moves its checkpoint. Replay and as-of queries run
//! the same code over rows held entirely in memory.

use std::any::Any;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

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

impl Row {
    fn size(&self) -> usize {
        self.kind.len() + self.scope.len() + self.sort_key.len() + self.doc.len()
    }
}

/// Bytes a held key costs besides its strings' contents (its map entry with the map's slack,
/// the strings' headers), roughly: what [`RowSet::bytes`] adds per key.
const SLOT_OVERHEAD: usize = 256;
/// What a decoded document takes beyond its JSON's length, roughly (a `BTreeSet`'s first node
/// alone takes some 290 bytes).
const DECODED_OVERHEAD: usize = 320;
/// What a decoded document is counted as until its row is written and its JSON's length known.
const UNSERIALISED_DOC: usize = 1_024;

/// A document as a projection stored it: kept decoded, serialised only when its row is
/// written (once per batch however often the batch changed it) and never parsed back while
/// the set holds it.
trait Doc: Any + Send + Sync + std::fmt::Debug {
    fn json(&self) -> String;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Serialize + Send + Sync + std::fmt::Debug + 'static> Doc for T {
    fn json(&self) -> String {
        serde_json::to_string(self).expect("read-model documents serialise")
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Debug builds check that a document stored decoded reads back from its JSON as itself:
/// otherwise what a projection computes would depend on where batches begin.
fn check_reads_back<T>(key: &str, doc: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if cfg!(debug_assertions) {
        let json = serde_json::to_string(doc).expect("read-model documents serialise");
        let back: T = serde_json::from_str(&json).expect("read-model documents read back");
        assert!(
            &back == doc,
            "the document under '{key}' does not read back as itself from its JSON: {json}"
        );
    }
}

/// A row as a set holds it.
#[derive(Debug)]
struct Held {
    kind: Cow<'static, str>,
    scope: String,
    sort_key: String,
    doc: HeldDoc,
}

#[derive(Debug)]
enum HeldDoc {
    /// As read from the store.
    Text(String),
    /// As stored by the projection.
    Value(Box<dyn Doc>),
}

impl Held {
    fn row(&self) -> Row {
        Row {
            kind: self.kind.clone().into_owned(),
            scope: self.scope.clone(),
            sort_key: self.sort_key.clone(),
            doc: match &self.doc {
                HeldDoc::Text(doc) => doc.clone(),
                HeldDoc::Value(doc) => doc.json(),
            },
        }
    }

    fn decode<T: DeserializeOwned + Clone + 'static>(
        &self,
        key: &str,
    ) -> Result<T, ProjectionError> {
        match &self.doc {
            HeldDoc::Text(doc) => decode(key, doc),
            HeldDoc::Value(doc) => match doc.as_any().downcast_ref::<T>() {
                Some(value) => Ok(value.clone()),
                None => decode(key, &doc.json()),
            },
        }
    }

    fn size(&self) -> usize {
        self.kind.len()
            + self.scope.len()
            + self.sort_key.len()
            + match &self.doc {
                HeldDoc::Text(doc) => doc.len(),
                HeldDoc::Value(_) => UNSERIALISED_DOC,
            }
    }
}

impl From<Row> for Held {
    fn from(row: Row) -> Self {
        Self {
            kind: Cow::Owned(row.kind),
            scope: row.scope,
            sort_key: row.sort_key,
            doc: HeldDoc::Text(row.doc),
        }
    }
}

/// FxHash's mixing, 8 bytes at a time: keys are built by the service from ids it issued, and
/// `std`'s SipHash cost more than the lookup itself (a replay looks keys up several times per
/// event).
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl KeyHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0_u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What the store holds under a key, as far as the set knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// The store holds a row under the key.
    Yes,
    /// It holds none.
    No,
    /// Not known: the key was written without being read first.
    Unknown,
}

/// One key held by a set.
#[derive(Debug)]
struct Slot {
    /// The row as the projection sees it, `None` when there is none.
    row: Option<Held>,
    stored: Stored,
    /// Changed since the last [`RowSet::take_writes`] or [`RowSet::take_changes`].
    dirty: bool,
    /// The round it was last used in (see [`RowSet::want`]).
    used: u64,
    /// The round whose writes last carried it ([`RowSet::take_writes`]).
    written: u64,
    /// What it counts for in [`RowSet::bytes`].
    size: usize,
}

/// What a set's changes do to the store, given what the store held: taken by
/// [`RowSet::take_writes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    /// Rows under keys the store holds no row under: plain inserts.
    pub inserts: Vec<(String, Row)>,
    /// Rows under keys the store holds (or may hold) a row under: inserted or replaced.
    pub upserts: Vec<(String, Row)>,
    /// Keys whose rows the store holds (or may hold) and must drop.
    pub deletes: Vec<String>,
}

impl Writes {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.upserts.is_empty() && self.deletes.is_empty()
    }

    /// How many rows are written or deleted.
    pub fn len(&self) -> usize {
        self.inserts.len() + self.upserts.len() + self.deletes.len()
    }
}

/// A document a [`RowSet`] can hold decoded: written as JSON, read back equal, shared across
/// the consumer's tasks.
pub trait StoredDoc:
    Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + std::fmt::Debug + 'static
{
}

impl<T> StoredDoc for T where
    T: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + std::fmt::Debug + 'static
{
}

/// The rows a projection works on during one batch of events, or across batches when the set
/// is kept as a cache of a table only its owner writes (a replay): then [`Self::want`] says
/// which rows a batch needs fetched, [`Self::take_writes`] what the batch changes in the table,
/// and [`Self::evict_before`] keeps the set bounded.
#[derive(Debug, Default)]
pub struct RowSet {
    rows: HashMap<String, Slot, BuildHasherDefault<KeyHasher>>,
    /// Whether every row is here (replay, as-of); otherwise only the prefetched ones are.
    complete: bool,
    /// Keys changed since the last take (a key may repeat).
    dirty: Vec<String>,
    /// Roughly the memory the held keys and rows take.
    bytes: usize,
    /// Advanced by every [`Self::take_writes`].
    round: u64,
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
        let mut set = Self::default();
        for (key, row) in rows {
            set.add_fetched(key, row);
        }
        set
    }

    /// The row under `key`.
    fn get(&self, key: &str) -> Result<Option<&Held>, ProjectionError> {
        match self.rows.get(key) {
            Some(slot) => Ok(slot.row.as_ref()),
            None if self.complete => Ok(None),
            None => Err(ProjectionError::NotPrefetched(key.to_owned())),
        }
    }

    /// Sets the row under `key` and marks it changed.
    fn set(&mut self, key: String, row: Option<Held>) {
        let round = self.round;
        let size = SLOT_OVERHEAD + key.len() + row.as_ref().map_or(0, Held::size);
        match self.rows.get_mut(&key) {
            Some(slot) => {
                self.bytes = self.bytes - slot.size + size;
                slot.row = row;
                slot.size = size;
                slot.used = round;
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty.push(key);
                }
            }
            None => {
                self.bytes += size;
                self.dirty.push(key.clone());
                self.rows.insert(
                    key,
                    Slot {
                        row,
                        stored: Stored::Unknown,
                        dirty: true,
                        used: round,
                        written: 0,
                        size,
                    },
                );
            }
        }
    }

    /// Writes `row` under `key`.
    pub fn put(&mut self, key: String, row: Row) {
        self.set(key, Some(row.into()));
    }

    /// Removes the row under `key`.
    pub fn delete(&mut self, key: &str) {
        if self.complete {
            if let Some(slot) = self.rows.remove(key) {
                self.bytes -= slot.size;
            }
            self.dirty.push(key.to_owned());
        } else {
            self.set(key.to_owned(), None);
        }
    }

    /// Adds a row read from the store (`None`: the store holds none under `key`); a key the set
    /// already holds keeps what it has.
    pub fn add_fetched(&mut self, key: String, row: Option<Row>) {
        if self.rows.contains_key(&key) {
            return;
        }
        let stored = if row.is_some() {
            Stored::Yes
        } else {
            Stored::No
        };
        let row: Option<Held> = row.map(Held::from);
        let size = SLOT_OVERHEAD + key.len() + row.as_ref().map_or(0, Held::size);
        self.bytes += size;
        self.rows.insert(
            key,
            Slot {
                row,
                stored,
                dirty: false,
                used: self.round,
                written: 0,
                size,
            },
        );
    }

    /// Marks the held keys among `keys` used in this round and returns the others, each once
    /// and in order: the rows to fetch (or to [`Self::add_fetched`] as absent) before the
    /// batch is folded.
    pub fn want(&mut self, keys: impl IntoIterator<Item = String>) -> Vec<String> {
        let round = self.round;
        let mut missing = Vec::new();
        for key in keys {
            match self.rows.get_mut(&key) {
                Some(slot) => slot.used = round,
                None => missing.push(key),
            }
        }
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// The changed keys, each once, in order; none of them is dirty any more.
    fn take_dirty(&mut self) -> Vec<String> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for key in &dirty {
            if let Some(slot) = self.rows.get_mut(key) {
                slot.dirty = false;
            }
        }
        dirty
    }

    /// Takes what changed since the last call as writes to the store, classified by what the
    /// store held (`may_hold` answers for keys written without being read: `false` only when
    /// the store surely holds no row under the key). From then on the set takes the writes as
    /// done, and keeps their rows until [`Self::evict_before`] is told that this round's writes
    /// are committed. Starts the next round; returns this one's number with the writes.
    pub fn take_writes(&mut self, may_hold: impl Fn(&str) -> bool) -> (u64, Writes) {
        self.round += 1;
        let round = self.round;
        let mut writes = Writes::default();
        for key in self.take_dirty() {
            let Some(slot) = self.rows.get_mut(&key) else {
                // A complete set forgets deleted keys: delete whatever the store may hold.
                if may_hold(&key) {
                    writes.deletes.push(key);
                }
                continue;
            };
            let stored = match slot.stored {
                Stored::Unknown if !may_hold(&key) => Stored::No,
                known => known,
            };
            match (&slot.row, stored) {
                (Some(held), stored) => {
                    let row = held.row();
                    // Now the document's size is known.
                    let decoded = match held.doc {
                        HeldDoc::Text(_) => 0,
                        HeldDoc::Value(_) => DECODED_OVERHEAD,
                    };
                    let size = SLOT_OVERHEAD + key.len() + row.size() + decoded;
                    self.bytes = self.bytes - slot.size + size;
                    slot.size = size;
                    if stored == Stored::No {
                        writes.inserts.push((key, row));
                    } else {
                        writes.upserts.push((key, row));
                    }
                }
                (None, Stored::No) => {}
                (None, _) => writes.deletes.push(key),
            }
            slot.stored = if slot.row.is_some() {
                Stored::Yes
            } else {
                Stored::No
            };
            slot.written = round;
        }
        (round, writes)
    }

    /// Forgets the keys last used before round `round` whose writes are committed (written in
    /// round `committed` or earlier) and that have not changed since: the store holds what
    /// they hold. Returns how many bytes that freed.
    pub fn evict_before(&mut self, round: u64, committed: u64) -> usize {
        let mut freed = 0;
        self.rows.retain(|_, slot| {
            let keep = slot.used >= round || slot.written > committed || slot.dirty;
            if !keep {
                freed += slot.size;
            }
            keep
        });
        self.bytes -= freed;
        freed
    }

    /// Adds the bytes held per round of last use into `rounds` (to choose a round to
    /// [`Self::evict_before`] across several sets).
    pub fn bytes_by_round(&self, rounds: &mut BTreeMap<u64, usize>) {
        for slot in self.rows.values() {
            *rounds.entry(slot.used).or_default() += slot.size;
        }
    }

    /// Roughly the memory the held keys and rows take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many keys the set holds (present or known absent).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The document under `key`, decoded.
    pub fn load<T: DeserializeOwned + Clone + 'static>(
        &self,
        key: &str,
    ) -> Result<Option<T>, ProjectionError> {
        self.get(key)?.map(|held| held.decode(key)).transpose()
    }

    /// Whether there is a row under `key`.
    pub fn contains(&self, key: &str) -> Result<bool, ProjectionError> {
        Ok(self.get(key)?.is_some())
    }

    /// Stores `doc` under `key`. The set keeps the document itself, serialised only when the
    /// row is written: [`Self::load`] gives a copy of it, which must equal what reading its
    /// JSON back would give (debug builds check that on every store).
    pub fn store<T>(
        &mut self,
        key: String,
        kind: &'static str,
        scope: String,
        sort_key: String,
        doc: T,
    ) where
        T: StoredDoc,
    {
        check_reads_back(&key, &doc);
        self.set(
            key,
            Some(Held {
                kind: Cow::Borrowed(kind),
                scope,
                sort_key,
                doc: HeldDoc::Value(Box::new(doc)),
            }),
        );
    }

    /// Changes the document under `key` in place: what [`Self::load`], the change and
    /// [`Self::store`] under the same kind, scope and sort key do, without copying the
    /// document. `false` when there is no row under `key`.
    pub fn update<T>(
        &mut self,
        key: &str,
        change: impl FnOnce(&mut T),
    ) -> Result<bool, ProjectionError>
    where
        T: StoredDoc,
    {
        let slot = match self.rows.get_mut(key) {
            Some(slot) => slot,
            None if self.complete => return Ok(false),
            None => return Err(ProjectionError::NotPrefetched(key.to_owned())),
        };
        let Some(held) = &mut slot.row else {
            return Ok(false);
        };
        let value = match &mut held.doc {
            HeldDoc::Value(doc) => doc.as_any_mut().downcast_mut::<T>(),
            HeldDoc::Text(_) => None,
        };
        match value {
            Some(value) => {
                change(value);
                check_reads_back(key, value);
            }
            None => {
                // Read from the store (or stored as another type): decoded once.
                let mut value: T = held.decode(key)?;
                change(&mut value);
                check_reads_back(key, &value);
                held.doc = HeldDoc::Value(Box::new(value));
                let size = SLOT_OVERHEAD + key.len() + held.size();
                self.bytes = self.bytes - slot.size + size;
                slot.size = size;
            }
        }
        slot.used = self.round;
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(key.to_owned());
        }
        Ok(true)
    }

    /// What changed since the set was made (or last drained): each key with its new row, or
    /// `None` when it was removed; in key order.
    pub fn take_changes(&mut self) -> Vec<(String, Option<Row>)> {
        self.take_dirty()
            .into_iter()
            .map(|key| {
                let row = self
                    .rows
                    .get_mut(&key)
                    .and_then(|slot| {
                        slot.stored = if slot.row.is_some() {
                            Stored::Yes
                        } else {
                            Stored::No
                        };
                        slot.row.as_ref()
                    })
                    .map(Held::row);
                (key, row)
            })
            .collect()
    }

    /// Every present row, in key order (for replay and as-of), its document as text.
    pub fn iter(&self) -> impl Iterator<Item = (&String, Row)> {
        let mut held: Vec<(&String, &Held)> = self
            .rows
            .iter()
            .filter_map(|(key, slot)| slot.row.as_ref().map(|held| (key, held)))
            .collect();
        held.sort_unstable_by(|a, b| a.0.cmp(b.0));
        held.into_iter().map(|(key, held)| (key, held.row()))
    }

    /// The present rows of one kind and scope, decoded, in key order.
    pub fn scoped<T: DeserializeOwned + Clone + 'static>(
        &self,
        kind: &str,
        scope: &str,
    ) -> Result<Vec<T>, ProjectionError> {
        let mut held: Vec<(&String, &Held)> = self
            .rows
            .iter()
            .filter_map(|(key, slot)| slot.row.as_ref().map(|held| (key, held)))
            .filter(|(_, held)| held.kind == kind && held.scope == scope)
            .collect();
        held.sort_unstable_by(|a, b| a.0.cmp(b.0));
        held.into_iter()
            .map(|(key, held)| held.decode(key))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(doc: &str) -> Row {
        Row {
            kind: "k".into(),
            scope: "s".into(),
            sort_key: String::new(),
            doc: doc.into(),
        }
    }

    fn keys(writes: &[(String, Row)]) -> Vec<&str> {
        writes.iter().map(|(key, _)| key.as_str()).collect()
    }

    #[test]
    fn writes_follow_what_the_store_holds() {
        let mut rows = RowSet::prefetched([
            ("held".to_owned(), Some(row("1"))),
            ("absent".to_owned(), None),
        ]);
        rows.store("held".into(), "k", "s".into(), String::new(), 2_u32);
        rows.store("absent".into(), "k", "s".into(), String::new(), 3_u32);
        // Written without being read: the caller says whether the store may hold it.
        rows.store("blind-new".into(), "k", "s".into(), String::new(), 4_u32);
        rows.store("blind-old".into(), "k", "s".into(), String::new(), 5_u32);
        rows.delete("blind-gone");
        let (round, writes) = rows.take_writes(|key| key != "blind-new");
        assert_eq!(round, 1);
        assert_eq!(keys(&writes.inserts), ["absent", "blind-new"]);
        assert_eq!(keys(&writes.upserts), ["blind-old", "held"]);
        assert_eq!(writes.deletes, ["blind-gone"]);
        assert_eq!(
            writes.upserts[1].1.doc, "2",
            "the document is serialised when written"
        );

        // Nothing changed: nothing to write. Then what was written is what the store holds.
        assert!(rows.take_writes(|_| true).1.is_empty());
        rows.delete("held");
        rows.delete("absent");
        rows.delete("blind-gone");
        rows.store("blind-new".into(), "k", "s".into(), String::new(), 6_u32);
        let (_, writes) = rows.take_writes(|_| panic!("every key is known now"));
        assert!(writes.inserts.is_empty());
        assert_eq!(keys(&writes.upserts), ["blind-new"]);
        assert_eq!(writes.deletes, ["absent", "held"]);
    }

    #[test]
    fn a_stored_document_reads_back_without_its_json_and_as_text_once_written() {
        let mut rows = RowSet::prefetched([("a".to_owned(), Some(row("[1,2]")))]);
        assert_eq!(rows.load::<Vec<u8>>("a").unwrap(), Some(vec![1, 2]));
        let mut doc: Vec<u8> = rows.load("a").unwrap().unwrap();
        doc.push(3);
        rows.store("a".into(), "k", "s".into(), String::new(), doc);
        assert_eq!(rows.load::<Vec<u8>>("a").unwrap(), Some(vec![1, 2, 3]));
        // Read as another type, it goes through its JSON.
        assert_eq!(rows.load::<Vec<u32>>("a").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(
            rows.take_changes(),
            [("a".to_owned(), Some(row("[1,2,3]")))]
        );
        assert!(
            matches!(rows.load::<u8>("b"), Err(ProjectionError::NotPrefetched(key)) if key == "b")
        );
    }

    #[test]
    fn update_changes_a_document_in_place_whether_read_or_stored() {
        let mut rows = RowSet::prefetched([
            ("read".to_owned(), Some(row("[1]"))),
            ("absent".to_owned(), None),
        ]);
        rows.store("stored".into(), "k", "s".into(), String::new(), vec![2_u8]);
        assert!(rows
            .update("read", |doc: &mut Vec<u8>| doc.push(10))
            .unwrap());
        assert!(rows
            .update("stored", |doc: &mut Vec<u8>| doc.push(20))
            .unwrap());
        assert!(!rows
            .update("absent", |_: &mut Vec<u8>| unreachable!())
            .unwrap());
        assert!(rows.update("elsewhere", |_: &mut Vec<u8>| ()).is_err());
        assert_eq!(
            rows.take_changes(),
            [
                ("read".to_owned(), Some(row("[1,10]"))),
                ("stored".to_owned(), Some(row("[2,20]"))),
            ]
        );
    }

    #[test]
    fn eviction_keeps_recent_changed_and_uncommitted_rows() {
        let mut rows = RowSet::default();
        assert_eq!(rows.want(["old".to_owned(), "old".to_owned()]), ["old"]);
        rows.add_fetched("old".into(), None);
        rows.store("old".into(), "k", "s".into(), String::new(), 1_u8);
        let (first, _) = rows.take_writes(|_| false);
        assert_eq!(rows.want(["old".to_owned(), "new".to_owned()]), ["new"]);
        rows.add_fetched("new".into(), Some(row("1")));
        rows.store("new".into(), "k", "s".into(), String::new(), 2_u8);
        let (second, _) = rows.take_writes(|_| false);
        rows.store("dirty".into(), "k", "s".into(), String::new(), 3_u8);
        let bytes = rows.bytes();

        // Nothing committed yet: every row may be newer than the store's.
        assert_eq!(rows.evict_before(u64::MAX, 0), 0);
        // Everything was used in round 1 or later.
        assert_eq!(rows.evict_before(first, second), 0);
        // Only the first round is committed: 'new' waits for the second.
        let freed = rows.evict_before(second + 1, first);
        assert!(freed > 0 && rows.bytes() == bytes - freed);
        assert_eq!(rows.want(["old".to_owned(), "new".to_owned()]), ["old"]);
        rows.evict_before(second + 2, second);
        assert_eq!(rows.len(), 1, "the changed row stays");
        assert_eq!(rows.load::<u8>("dirty").unwrap(), Some(3));
    }

    #[test]
    fn bytes_follow_rows_in_and_out() {
        let mut rows = RowSet::default();
        rows.add_fetched("a".into(), Some(row("1234")));
        rows.store("b".into(), "k", "s".into(), String::new(), "x".repeat(1000));
        let (round, _) = rows.take_writes(|_| false);
        let mut by_round = BTreeMap::new();
        rows.bytes_by_round(&mut by_round);
        assert_eq!(by_round.values().sum::<usize>(), rows.bytes());
        assert!(rows.bytes() > 1000, "a written document counts its JSON");
        rows.evict_before(round + 1, round);
        assert_eq!((rows.bytes(), rows.len()), (0, 0));
    }
}
