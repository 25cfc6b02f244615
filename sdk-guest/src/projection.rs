//! The projection world: the trait a tenant implements and the batch loop around it.

use crate::bindings::projection::kimberlite::projection::{config, view};
use crate::{Change, Event, Row, RowRemoval, RowUpsert, Table, Value};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A projection: log events in, rows of its own tables out.
///
/// The host calls [`Projection::apply`] once per event, in log order, in batches; one
/// batch runs in a fresh instance, so nothing but the rows in the view carries over from
/// one batch to the next. Keep all state in rows — that is what makes a replay, or a
/// replica, derive the same view.
pub trait Projection: Sized {
    /// The tables this projection maintains (same answer every time).
    fn describe() -> Vec<Table>;

    /// Made once per batch from the deployment's configuration.
    fn new(config: &Config) -> Result<Self, String>;

    /// Apply one event: read rows with [`View::get`], write with [`View::upsert`] and
    /// [`View::remove`]. An `Err` faults the projection at this event.
    fn apply(&mut self, view: &mut View, event: &Event) -> Result<(), String>;
}

/// The deployment configuration (`projection deploy --config`), often JSON.
#[derive(Debug, Clone, Default)]
pub struct Config {
    bytes: Vec<u8>,
}

impl Config {
    /// Reads the configuration from the host.
    pub fn load() -> Config {
        Config {
            bytes: config::get(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The configuration as JSON; `T::default()` when none was given.
    pub fn json<T: DeserializeOwned + Default>(&self) -> Result<T, String> {
        if self.bytes.is_empty() {
            return Ok(T::default());
        }
        serde_json::from_slice(&self.bytes)
            .map_err(|error| format!("configuration is not the expected JSON: {error}"))
    }
}

/// The projection's tables as the batch has changed them so far.
///
/// Reads see the host's rows as of the batch start, overlaid with this batch's own
/// changes, so a projection reads its own writes within a batch as it would across
/// batches.
#[derive(Debug)]
pub struct View {
    /// Table name → positions of its key columns in a row.
    keys: BTreeMap<String, Vec<usize>>,
    /// Table name → encoded key → index in `changes` of the upsert that wrote the row
    /// last in this batch (None: removed). An index, not a copy of the row, so a write
    /// costs no extra allocation.
    pending: BTreeMap<String, PendingRows>,
    changes: Vec<Change>,
}

impl View {
    fn new(tables: &[Table]) -> View {
        let keys: BTreeMap<String, Vec<usize>> = tables
            .iter()
            .map(|table| {
                let positions = table
                    .primary_key
                    .iter()
                    .filter_map(|key| table.columns.iter().position(|column| &column.name == key))
                    .collect();
                (table.name.clone(), positions)
            })
            .collect();
        // One (empty) overlay per described table up front, so writes never allocate a
        // table name.
        let pending = keys
            .keys()
            .map(|name| (name.clone(), PendingRows::default()))
            .collect();
        View {
            keys,
            pending,
            changes: Vec::new(),
        }
    }

    /// The current row of `table` with primary key `key` (key values in key order).
    pub fn get(&self, table: &str, key: &[Value]) -> Option<Row> {
        if let Some(written) = self
            .pending
            .get(table)
            .and_then(|rows| rows.get(&encode_key(key.iter())))
        {
            return written.map(|index| match &self.changes[index] {
                Change::Upsert(upsert) => upsert.row.clone(),
                Change::Remove(_) => unreachable!("pending rows index upserts only"),
            });
        }
        view::get(table, key)
    }

    /// Insert or replace a full row (one value per column, in column order).
    pub fn upsert(&mut self, table: &str, row: Row) {
        // An unknown table, or a row too short for its key, is recorded as is: the host
        // validates every change against the schema and faults the projection with a
        // precise message, which is more useful than a guest-side panic.
        if let Some(positions) = self.keys.get(table)
            && let Some(rows) = self.pending.get_mut(table)
            && positions.iter().all(|position| *position < row.len())
        {
            let key = encode_key(positions.iter().map(|position| &row[*position]));
            rows.insert(key, Some(self.changes.len()));
        }
        self.changes.push(Change::Upsert(RowUpsert {
            table: table.to_owned(),
            row,
        }));
    }

    /// Delete the row of `table` with primary key `key` (no-op when there is none).
    pub fn remove(&mut self, table: &str, key: Vec<Value>) {
        if let Some(rows) = self.pending.get_mut(table) {
            rows.insert(encode_key(key.iter()), None);
        }
        self.changes.push(Change::Remove(RowRemoval {
            table: table.to_owned(),
            key,
        }));
    }

    /// How many changes this batch has made so far.
    pub fn changes_len(&self) -> usize {
        self.changes.len()
    }
}

/// Rows written in this batch, by encoded key. Hashed, not ordered: a `BTreeMap` of byte
/// keys costs dozens of `memcmp`s per write, which dominates a projection's fuel.
type PendingRows = HashMap<Vec<u8>, Option<usize>, BuildHasherDefault<KeyHasher>>;

/// FxHash (the rustc hasher) over the encoded key. A fixed function, no random seed:
/// guests have no randomness, and the map is only looked up, never iterated, so its
/// order cannot reach the output.
#[derive(Default, Clone, Copy)]
struct KeyHasher {
    hash: u64,
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
            self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
        }
        for byte in chunks.remainder() {
            self.hash = (self.hash.rotate_left(5) ^ u64::from(*byte)).wrapping_mul(SEED);
        }
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

fn encode_key<'a>(values: impl Iterator<Item = &'a Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    for value in values {
        value.encode_key(&mut out);
    }
    out
}

pub fn describe<P: Projection>() -> Vec<Table> {
    P::describe()
}

pub fn apply<P: Projection>(events: Vec<Event>) -> Result<Vec<Change>, String> {
    let config = Config::load();
    let mut projection = P::new(&config)?;
    let mut view = View::new(&P::describe());
    for event in &events {
        projection.apply(&mut view, event)?;
    }
    Ok(view.changes)
}
