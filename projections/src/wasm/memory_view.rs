//! An in-memory view: the rows of one projection's tables, kept by applying its
//! changes. For tests, benchmarks and tools; the server's views live in the versioned
//! view store.

use super::digest::{encode_values, key_bytes};
use super::{Change, EventChanges, ViewLookup, ViewTable};
use kimberlite_kernel::{Row, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Table name → encoded primary key → row.
type Tables = BTreeMap<String, BTreeMap<Vec<u8>, Row>>;

/// Rows by table and encoded primary key. A cheap handle: clones share the rows, so one
/// clone can be handed to `apply` (as `Arc<dyn ViewLookup>`) while another applies the
/// changes that come back.
#[derive(Clone, Debug)]
pub struct MemoryView {
    tables: Arc<[ViewTable]>,
    rows: Arc<RwLock<Tables>>,
}

impl MemoryView {
    pub fn new(tables: &[ViewTable]) -> MemoryView {
        MemoryView {
            tables: tables.into(),
            rows: Arc::default(),
        }
    }

    /// Applies what `ProjectionModule::apply` returned, event by event. (A memory view
    /// keeps only the current rows, so positions do not matter here.)
    pub fn apply_events(&self, events: &[EventChanges]) {
        for event in events {
            self.apply(&event.changes);
        }
    }

    /// Applies checked changes in order.
    pub fn apply(&self, changes: &[Change]) {
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            match change {
                Change::Upsert { table, row } => {
                    let key = key_bytes(&self.schema(table).key_of(row));
                    rows.entry(table.clone())
                        .or_default()
                        .insert(key, row.clone());
                }
                Change::Remove { table, key } => {
                    if let Some(table_rows) = rows.get_mut(table) {
                        table_rows.remove(&key_bytes(key));
                    }
                }
            }
        }
    }

    /// The rows of `table`, ordered by encoded key.
    pub fn rows(&self, table: &str) -> Vec<Row> {
        let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
        rows.get(table)
            .map(|table_rows| table_rows.values().cloned().collect())
            .unwrap_or_default()
    }

    /// BLAKE3 over every table's rows in key order: equal for equal contents, however
    /// the changes were batched.
    pub fn state_digest(&self) -> [u8; 32] {
        let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
        let mut hasher = blake3::Hasher::new();
        let mut buffer = Vec::new();
        for (table, table_rows) in rows.iter() {
            hasher.update(&(table.len() as u64).to_le_bytes());
            hasher.update(table.as_bytes());
            hasher.update(&(table_rows.len() as u64).to_le_bytes());
            for row in table_rows.values() {
                buffer.clear();
                encode_values(row, &mut buffer);
                hasher.update(&buffer);
            }
        }
        *hasher.finalize().as_bytes()
    }

    fn schema(&self, table: &str) -> &ViewTable {
        self.tables
            .iter()
            .find(|candidate| candidate.name == table)
            .unwrap_or_else(|| {
                panic!("change for `{table}`, which the projection did not describe")
            })
    }
}

impl ViewLookup for MemoryView {
    fn get(&self, table: &str, key: &[Value]) -> Result<Option<Row>, String> {
        let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
        Ok(rows
            .get(table)
            .and_then(|table_rows| table_rows.get(&key_bytes(key)))
            .cloned())
    }
}
