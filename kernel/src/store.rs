//! Where table rows live: the `RowStore` trait, and `MemoryRowStore`, its model.
//!
//! The kernel decides *what* changes (validated, deterministic) and tells a `RowStore`;
//! it never does I/O itself. The node's store is `kimberlite_projections::ViewStore`
//! (redb); tests and the projections' model tests use `MemoryRowStore`.
//!
//! Rows are versioned: every version holds the positions `[created_at, deleted_at)`
//! of the records that started and ended it, so the state after applying the records
//! at positions `<= p` is "every version with `created_at <= p < deleted_at`".

use crate::value::{Position, Row, TableId, TenantId, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A failure of the store underneath, not of the command: the host must abort the
/// store's transaction (the kernel has not changed its own state).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("view store failure: {0}")]
    Backend(String),
    #[error("view store is corrupt: {0}")]
    Corrupt(String),
    #[error("view store has no current row with key {key} in table {table} of tenant {tenant}")]
    MissingRow {
        tenant: TenantId,
        table: TableId,
        key: String,
    },
}

/// The native table projection's storage, as the kernel sees it.
pub trait RowStore {
    /// The current row with this primary key.
    fn get(
        &self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
    ) -> Result<Option<Row>, StoreError>;
    /// The current rows in primary-key order; `visit` returns `false` to stop.
    fn scan(
        &self,
        tenant: TenantId,
        table: TableId,
        visit: &mut dyn FnMut(&Row) -> bool,
    ) -> Result<(), StoreError>;
    /// Ends the current version of `key` (if any) at `position` and starts `row` there.
    fn upsert(
        &mut self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        row: Row,
        position: Position,
    ) -> Result<(), StoreError>;
    /// Ends the current version of `key` at `position`; `MissingRow` if there is none.
    fn remove(
        &mut self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        position: Position,
    ) -> Result<(), StoreError>;
    /// Erasure: removes every version (current and past) of every row `matches`, as if it
    /// had never been written. Returns how many versions went. A scan of the table's whole
    /// history: erasures are rare, and correctness beats an index here.
    fn purge(
        &mut self,
        tenant: TenantId,
        table: TableId,
        matches: &dyn Fn(&Row) -> bool,
    ) -> Result<u64, StoreError>;
}

/// A primary key ordered by `Value::total_cmp`, column by column: the order of scans.
#[derive(Clone, Debug)]
pub struct OrderedKey(pub Vec<Value>);

impl PartialEq for OrderedKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OrderedKey {}

impl PartialOrd for OrderedKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_keys(&self.0, &other.0)
    }
}

/// Lexicographic `Value::total_cmp` over key columns.
pub fn compare_keys(left: &[Value], right: &[Value]) -> Ordering {
    for (a, b) in left.iter().zip(right) {
        match a.total_cmp(b) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
    }
    left.len().cmp(&right.len())
}

/// One version of a row: alive at positions `created_at <= p < deleted_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowVersion {
    pub created_at: Position,
    /// `None` while the version is current.
    pub deleted_at: Option<Position>,
    pub row: Row,
}

impl RowVersion {
    pub fn alive_at(&self, at: Position) -> bool {
        self.created_at <= at && self.deleted_at.is_none_or(|deleted| at < deleted)
    }
}

/// The in-memory model of a versioned row store: a `BTreeMap` from
/// (tenant, table, key) to the key's versions in creation order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryRowStore {
    versions: BTreeMap<(TenantId, TableId, OrderedKey), Vec<RowVersion>>,
}

impl MemoryRowStore {
    pub fn new() -> MemoryRowStore {
        MemoryRowStore::default()
    }

    /// The row with this key in the state after the positions `<= at`.
    pub fn get_at(
        &self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        at: Position,
    ) -> Option<Row> {
        let versions = self
            .versions
            .get(&(tenant, table, OrderedKey(key.to_vec())))?;
        versions
            .iter()
            .rev()
            .find(|version| version.alive_at(at))
            .map(|version| version.row.clone())
    }

    /// Every row alive at `at`, in key order.
    pub fn rows_at(&self, tenant: TenantId, table: TableId, at: Position) -> Vec<Row> {
        self.table_range(tenant, table)
            .filter_map(|(_, versions)| versions.iter().rev().find(|version| version.alive_at(at)))
            .map(|version| version.row.clone())
            .collect()
    }

    /// Every current row, in key order.
    pub fn rows(&self, tenant: TenantId, table: TableId) -> Vec<Row> {
        self.table_range(tenant, table)
            .filter_map(|(_, versions)| current(versions))
            .map(|version| version.row.clone())
            .collect()
    }

    /// All versions of all keys of one table, in key order: what model tests compare.
    pub fn versions(&self, tenant: TenantId, table: TableId) -> Vec<(Vec<Value>, Vec<RowVersion>)> {
        self.table_range(tenant, table)
            .map(|((_, _, key), versions)| (key.0.clone(), versions.clone()))
            .collect()
    }

    /// Every (tenant, table) that has rows.
    pub fn tables(&self) -> Vec<(TenantId, TableId)> {
        let mut tables: Vec<(TenantId, TableId)> = self
            .versions
            .keys()
            .map(|(tenant, table, _)| (*tenant, *table))
            .collect();
        tables.dedup();
        tables
    }

    fn table_range(
        &self,
        tenant: TenantId,
        table: TableId,
    ) -> impl Iterator<Item = (&(TenantId, TableId, OrderedKey), &Vec<RowVersion>)> {
        // An empty key sorts before every real key of the table (keys are never empty).
        let start = (tenant, table, OrderedKey(Vec::new()));
        self.versions
            .range(start..)
            .take_while(move |((t, id, _), _)| *t == tenant && *id == table)
    }
}

fn current(versions: &[RowVersion]) -> Option<&RowVersion> {
    versions
        .last()
        .filter(|version| version.deleted_at.is_none())
}

impl RowStore for MemoryRowStore {
    fn get(
        &self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
    ) -> Result<Option<Row>, StoreError> {
        let versions = self
            .versions
            .get(&(tenant, table, OrderedKey(key.to_vec())));
        Ok(versions
            .and_then(|versions| current(versions))
            .map(|version| version.row.clone()))
    }

    fn scan(
        &self,
        tenant: TenantId,
        table: TableId,
        visit: &mut dyn FnMut(&Row) -> bool,
    ) -> Result<(), StoreError> {
        for (_, versions) in self.table_range(tenant, table) {
            if let Some(version) = current(versions)
                && !visit(&version.row)
            {
                break;
            }
        }
        Ok(())
    }

    fn upsert(
        &mut self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        row: Row,
        position: Position,
    ) -> Result<(), StoreError> {
        assert!(!key.is_empty(), "primary keys are never empty");
        let versions = self
            .versions
            .entry((tenant, table, OrderedKey(key.to_vec())))
            .or_default();
        if let Some(last) = versions.last_mut() {
            assert!(last.created_at < position, "positions only grow");
            if last.deleted_at.is_none() {
                last.deleted_at = Some(position);
            }
        }
        versions.push(RowVersion {
            created_at: position,
            deleted_at: None,
            row,
        });
        Ok(())
    }

    fn remove(
        &mut self,
        tenant: TenantId,
        table: TableId,
        key: &[Value],
        position: Position,
    ) -> Result<(), StoreError> {
        let missing = || StoreError::MissingRow {
            tenant,
            table,
            key: format!("{key:?}"),
        };
        let versions = self
            .versions
            .get_mut(&(tenant, table, OrderedKey(key.to_vec())))
            .ok_or_else(missing)?;
        let last = versions
            .last_mut()
            .filter(|last| last.deleted_at.is_none())
            .ok_or_else(missing)?;
        assert!(last.created_at < position, "positions only grow");
        last.deleted_at = Some(position);
        Ok(())
    }

    fn purge(
        &mut self,
        tenant: TenantId,
        table: TableId,
        matches: &dyn Fn(&Row) -> bool,
    ) -> Result<u64, StoreError> {
        let mut purged = 0;
        self.versions.retain(|(t, tb, _), versions| {
            if (*t, *tb) == (tenant, table) {
                let before = versions.len();
                versions.retain(|version| !matches(&version.row));
                purged += (before - versions.len()) as u64;
                !versions.is_empty()
            } else {
                true
            }
        });
        Ok(purged)
    }
}
