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
/// replica, derive the same view. The changes of each event are stored at that event's
/// log position, so a view read `AS OF POSITION p` shows exactly the events up to `p`.
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
/// changes (of this event and of the batch's earlier events), so a projection reads its
/// own writes within a batch as it would across batches.
#[derive(Debug)]
pub struct View {
    /// Table name → positions of its key columns in a row.
    keys: BTreeMap<String, Vec<usize>>,
    /// Table name → encoded key → index in `changes` of the upsert that wrote the row
    /// last in this batch (None: removed). An index, not a copy of the row, so a write
    /// costs no extra allocation.
    pending: BTreeMap<String, PendingRows>,
    /// The batch's changes, flat, in order; `event_ends` cuts them into events.
    changes: Vec<Change>,
    /// For each event applied so far, the end (exclusive) of its changes in `changes`.
    event_ends: Vec<usize>,
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
            event_ends: Vec::new(),
        }
    }

    /// Closes the current event: the changes made since the previous call are its own.
    fn end_event(&mut self) {
        self.event_ends.push(self.changes.len());
    }

    /// The batch's changes cut into one list per event, in event order.
    fn into_event_changes(self) -> Vec<Vec<Change>> {
        let mut lists = Vec::with_capacity(self.event_ends.len());
        let mut changes = self.changes.into_iter();
        let mut start = 0;
        for end in self.event_ends {
            // An empty `Vec` does not allocate, so events that change nothing cost nothing.
            lists.push(changes.by_ref().take(end - start).collect());
            start = end;
        }
        debug_assert!(changes.next().is_none(), "every change belongs to an event");
        lists
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

    /// How many changes this batch has made so far (all its events so far).
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

/// The `apply` export: one list of changes per event, in event order.
pub fn apply<P: Projection>(events: Vec<Event>) -> Result<Vec<Vec<Change>>, String> {
    let config = Config::load();
    let projection = P::new(&config)?;
    apply_batch(projection, &P::describe(), &events)
}

/// Runs `projection` over `events` with one view for the whole batch (so later events
/// read the earlier events' writes) and cuts its changes per event.
fn apply_batch<P: Projection>(
    mut projection: P,
    tables: &[Table],
    events: &[Event],
) -> Result<Vec<Vec<Change>>, String> {
    let mut view = View::new(tables);
    for event in events {
        projection.apply(&mut view, event)?;
        view.end_event();
    }
    Ok(view.into_event_changes())
}

#[cfg(test)]
mod tests {
    //! Natively, without a host: every read below hits the batch's own writes, so the
    //! `view.get` import (a stub off wasm32) is never called.

    use super::*;
    use crate::{ColumnType, RowRemoval, RowUpsert};

    /// `Open` starts a counter at 0, `Add` reads it (written by an earlier event of the
    /// batch) and adds 1, `Close` removes it, anything else changes nothing.
    struct Counters;

    impl Projection for Counters {
        fn describe() -> Vec<Table> {
            vec![
                Table::new("counters")
                    .column("name", ColumnType::Text)
                    .column("count", ColumnType::Bigint)
                    .primary_key(&["name"]),
            ]
        }

        fn new(_config: &Config) -> Result<Self, String> {
            Ok(Counters)
        }

        fn apply(&mut self, view: &mut View, event: &Event) -> Result<(), String> {
            let name = Value::from(event.stream.as_str());
            match event.event_type.as_str() {
                "Open" => view.upsert("counters", vec![name, 0.into()]),
                "Add" => {
                    let count = view
                        .get("counters", std::slice::from_ref(&name))
                        .and_then(|row| row[1].as_integer())
                        .ok_or_else(|| format!("no counter `{}`", event.stream))?;
                    view.upsert("counters", vec![name, (count + 1).into()]);
                }
                "Close" => view.remove("counters", vec![name]),
                _ => {}
            }
            Ok(())
        }
    }

    fn event(position: u64, stream: &str, event_type: &str) -> Event {
        Event {
            position,
            timestamp_ns: position,
            stream: stream.into(),
            event_type: event_type.into(),
            payload: Vec::new(),
            principal: "test".into(),
            reason: None,
        }
    }

    fn upsert(name: &str, count: i64) -> Change {
        Change::Upsert(RowUpsert {
            table: "counters".into(),
            row: vec![name.into(), count.into()],
        })
    }

    fn run(events: &[Event]) -> Result<Vec<Vec<Change>>, String> {
        apply_batch(Counters, &Counters::describe(), events)
    }

    #[test]
    fn changes_come_back_one_list_per_event_and_reads_see_earlier_events() {
        let events = [
            event(10, "a", "Open"),
            event(11, "a", "Add"),
            event(12, "b", "Ignored"),
            event(13, "a", "Add"),
            event(14, "a", "Close"),
            event(15, "b", "Open"),
        ];
        let lists = run(&events).expect("no error");
        let removal = Change::Remove(RowRemoval {
            table: "counters".into(),
            key: vec!["a".into()],
        });
        let expected = vec![
            vec![upsert("a", 0)],
            vec![upsert("a", 1)],
            vec![],
            vec![upsert("a", 2)],
            vec![removal],
            vec![upsert("b", 0)],
        ];
        assert_eq!(format!("{lists:?}"), format!("{expected:?}"));
        assert!(run(&[]).expect("empty batch").is_empty());
    }

    #[test]
    fn an_error_fails_the_whole_batch() {
        // After `Close`, the overlay answers "no row" without asking the host.
        let events = [
            event(1, "a", "Open"),
            event(2, "a", "Close"),
            event(3, "a", "Add"),
        ];
        assert_eq!(run(&events).unwrap_err(), "no counter `a`");
    }
}
