use expect_test::expect;
use kimberlite_kernel::{
    MemoryRowStore, Position, Row, RowStore, StoreError, TableId, TenantId, Value,
};
use kimberlite_projections::{ViewRead, ViewStore};
use proptest::prelude::*;
use redb::{Database, StorageBackend, TableDefinition};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The store's own metadata table, as its module docs describe it.
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

/// An in-memory redb backend that models a crash: writes land in `volatile`, a sync
/// copies them to `durable`, and a crash keeps only `durable`. It can also fail every
/// I/O after a number of operations, like a dying disk.
#[derive(Debug, Default)]
struct DiskState {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    operations: usize,
    fail_after: Option<usize>,
}

#[derive(Debug, Default, Clone)]
struct CrashDisk(Arc<Mutex<DiskState>>);

impl CrashDisk {
    /// A disk holding what a crash left: the durable bytes only.
    fn after_crash(&self) -> CrashDisk {
        let durable = self.0.lock().unwrap().durable.clone();
        CrashDisk(Arc::new(Mutex::new(DiskState {
            volatile: durable.clone(),
            durable,
            ..DiskState::default()
        })))
    }

    fn fail_after(&self, operations: usize) {
        let mut state = self.0.lock().unwrap();
        state.operations = 0;
        state.fail_after = Some(operations);
    }

    fn operate(&self) -> Result<std::sync::MutexGuard<'_, DiskState>, std::io::Error> {
        let mut state = self.0.lock().unwrap();
        state.operations += 1;
        if state
            .fail_after
            .is_some_and(|limit| state.operations > limit)
        {
            return Err(std::io::Error::other("injected disk failure"));
        }
        Ok(state)
    }
}

impl StorageBackend for CrashDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.lock().unwrap().volatile.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let state = self.0.lock().unwrap();
        let start = offset as usize;
        let bytes = state
            .volatile
            .get(start..start + out.len())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end")
            })?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.operate()?.volatile.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut state = self.operate()?;
        state.durable = state.volatile.clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut state = self.operate()?;
        let start = offset as usize;
        if state.volatile.len() < start + data.len() {
            state.volatile.resize(start + data.len(), 0);
        }
        state.volatile[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn int(n: i64) -> Value {
    Value::Integer(n)
}

fn row(key: i64, version: i64) -> Row {
    vec![int(key), Value::Text(format!("v{version}"))]
}

/// Every row of a tenant's table: now, and at each position below `end`.
fn dump(read: &ViewRead, tenant: TenantId, table: TableId, end: Position) -> String {
    let mut out = String::new();
    let render = |rows: Vec<Row>| {
        rows.iter()
            .map(|row| format!("{}:{}", row[0], row[1]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut now = Vec::new();
    read.scan(tenant, table, None, &mut |row| {
        now.push(row);
        true
    })
    .unwrap();
    out.push_str(&format!("now: {}\n", render(now)));
    for at in 0..end {
        let mut rows = Vec::new();
        read.scan(tenant, table, Some(at), &mut |row| {
            rows.push(row);
            true
        })
        .unwrap();
        out.push_str(&format!("@{at}: {}\n", render(rows)));
    }
    out
}

#[test]
fn versions_answer_past_positions_by_lookup_and_scan() {
    let store = ViewStore::with_backend(CrashDisk::default()).unwrap();
    let mut write = store.begin().unwrap();
    write.upsert(1, 0, &[int(1)], row(1, 1), 1).unwrap();
    write.upsert(1, 0, &[int(2)], row(2, 1), 2).unwrap();
    write.upsert(1, 0, &[int(1)], row(1, 2), 3).unwrap();
    // Reads inside the transaction see its own writes.
    assert_eq!(write.get(1, 0, &[int(1)]).unwrap(), Some(row(1, 2)));
    write.remove(1, 0, &[int(2)], 4).unwrap();
    write.upsert(1, 0, &[int(2)], row(2, 2), 5).unwrap();
    write.upsert(2, 0, &[int(1)], row(1, 9), 0).unwrap();
    let missing = write.remove(1, 0, &[int(7)], 6).unwrap_err();
    expect!["view store has no current row with key [Integer(7)] in table 0 of tenant 1"]
        .assert_eq(&missing.to_string());
    write.set_applied(1, 6).unwrap();
    write.commit(false).unwrap();
    let read = store.read().unwrap();
    expect![[r#"
        now: 1:v2 2:v2
        @0: 
        @1: 1:v1
        @2: 1:v1 2:v1
        @3: 1:v2 2:v1
        @4: 1:v2
        @5: 1:v2 2:v2
    "#]]
    .assert_eq(&dump(&read, 1, 0, 6));
    let lookups: Vec<String> = (0..6)
        .map(|at| {
            format!(
                "{:?}",
                read.get(1, 0, &[int(2)], Some(at))
                    .unwrap()
                    .map(|row| row[1].clone())
            )
        })
        .collect();
    expect![[r#"["None", "None", "Some(Text(\"v1\"))", "Some(Text(\"v1\"))", "None", "Some(Text(\"v2\"))"]"#]]
        .assert_eq(&format!("{lookups:?}"));
    assert_eq!(read.applied(1), 6);
    assert_eq!(read.applied(2), 0);
    assert_eq!(read.get(2, 0, &[int(1)], None).unwrap(), Some(row(1, 9)));
}

#[test]
fn an_uncommitted_transaction_leaves_no_trace() {
    let store = ViewStore::with_backend(CrashDisk::default()).unwrap();
    let mut write = store.begin().unwrap();
    write.upsert(1, 0, &[int(1)], row(1, 1), 1).unwrap();
    write.set_applied(1, 2).unwrap();
    drop(write);
    let read = store.read().unwrap();
    assert_eq!(read.get(1, 0, &[int(1)], None).unwrap(), None);
    assert_eq!(store.applied().unwrap(), (BTreeMap::new(), None));
}

/// The batch a test host writes: rows, applied position and snapshot in one transaction.
fn write_batch(
    store: &ViewStore,
    first: i64,
    end: Position,
    durable: bool,
) -> Result<(), StoreError> {
    let mut write = store.begin()?;
    for key in first..first + 3 {
        write.upsert(1, 0, &[int(key)], row(key, end as i64), end - 1)?;
    }
    write.set_applied(1, end)?;
    write.set_kernel_snapshot(format!("kernel at {end}").as_bytes())?;
    write.commit(durable)
}

fn state(store: &ViewStore) -> String {
    let (applied, snapshot) = store.applied().unwrap();
    let snapshot = snapshot.map(|bytes| String::from_utf8(bytes).unwrap());
    let mut keys = Vec::new();
    store
        .read()
        .unwrap()
        .scan(1, 0, None, &mut |row| {
            keys.push(format!("{}:{}", row[0], row[1]));
            true
        })
        .unwrap();
    format!(
        "applied {applied:?}, snapshot {snapshot:?}, rows {}",
        keys.join(" ")
    )
}

#[test]
fn a_crash_returns_to_the_last_durable_commit_and_replay_catches_up() {
    let disk = CrashDisk::default();
    let store = ViewStore::with_backend(disk.clone()).unwrap();
    write_batch(&store, 0, 10, true).unwrap();
    write_batch(&store, 2, 20, false).unwrap();
    write_batch(&store, 4, 30, false).unwrap();
    // Non-durable commits are visible at once…
    expect![[r#"applied {1: 30}, snapshot Some("kernel at 30"), rows 0:v10 1:v10 2:v20 3:v20 4:v30 5:v30 6:v30"#]]
        .assert_eq(&state(&store));
    // …and gone after a crash: the store is back at its last durable commit, with the
    // applied position and kernel snapshot of that same commit.
    let crashed = disk.after_crash();
    drop(store);
    let store = ViewStore::with_backend(crashed).unwrap();
    expect![[r#"applied {1: 10}, snapshot Some("kernel at 10"), rows 0:v10 1:v10 2:v10"#]]
        .assert_eq(&state(&store));
    // The host replays the log from the applied position: the same batches again.
    write_batch(&store, 2, 20, false).unwrap();
    write_batch(&store, 4, 30, true).unwrap();
    expect![[r#"applied {1: 30}, snapshot Some("kernel at 30"), rows 0:v10 1:v10 2:v20 3:v20 4:v30 5:v30 6:v30"#]]
        .assert_eq(&state(&store));
}

#[test]
fn a_failing_disk_never_leaves_a_half_commit() {
    let before = "applied {1: 10}, snapshot Some(\"kernel at 10\"), rows 0:v10 1:v10 2:v10";
    let after =
        "applied {1: 20}, snapshot Some(\"kernel at 20\"), rows 0:v10 1:v10 2:v20 3:v20 4:v20";
    let mut outcomes = BTreeSet::new();
    for operations in 0..40 {
        let disk = CrashDisk::default();
        let store = ViewStore::with_backend(disk.clone()).unwrap();
        write_batch(&store, 0, 10, true).unwrap();
        disk.fail_after(operations);
        let committed = write_batch(&store, 2, 20, true).is_ok();
        let crashed = disk.after_crash();
        drop(store);
        let reopened = state(&ViewStore::with_backend(crashed).unwrap());
        assert!(
            reopened == before || reopened == after,
            "after {operations} operations: {reopened}"
        );
        if committed {
            assert_eq!(
                reopened, after,
                "an acknowledged durable commit was lost after {operations} operations"
            );
        }
        outcomes.insert((committed, reopened == after));
    }
    // Both the failed and the successful commit were exercised.
    expect!["{(false, false), (true, true)}"].assert_eq(&format!("{outcomes:?}"));
}

#[test]
fn a_store_of_another_format_is_refused() {
    let disk = CrashDisk::default();
    let db = Database::builder()
        .create_with_backend(disk.clone())
        .unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("format", b"kimberlite-views-0".as_slice())
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    let error = ViewStore::with_backend(disk.after_crash()).unwrap_err();
    expect![[r#"view store is corrupt: the view store has format "kimberlite-views-0"; this build reads "kimberlite-views-1""#]]
        .assert_eq(&error.to_string());
}

#[test]
fn a_file_store_reopens_with_its_durable_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    {
        let store = ViewStore::open(&path).unwrap();
        write_batch(&store, 0, 10, true).unwrap();
    }
    let store = ViewStore::open(&path).unwrap();
    expect![[r#"applied {1: 10}, snapshot Some("kernel at 10"), rows 0:v10 1:v10 2:v10"#]]
        .assert_eq(&state(&store));
}

/// One change of the model test.
#[derive(Clone, Debug)]
enum Op {
    Upsert {
        tenant: TenantId,
        table: TableId,
        key: i64,
    },
    Remove {
        tenant: TenantId,
        table: TableId,
        key: i64,
    },
    Commit {
        durable: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..3, 0u64..2, 0i64..6).prop_map(|(tenant, table, key)| Op::Upsert { tenant, table, key }),
        3 => (1u64..3, 0u64..2, 0i64..6).prop_map(|(tenant, table, key)| Op::Remove { tenant, table, key }),
        1 => any::<bool>().prop_map(|durable| Op::Commit { durable }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The view store behaves as `MemoryRowStore` does, now and at every past position,
    /// through any split of the changes into transactions.
    #[test]
    fn view_store_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let store = ViewStore::with_backend(CrashDisk::default()).unwrap();
        let mut model = MemoryRowStore::new();
        let mut write = store.begin().unwrap();
        let mut position: Position = 0;
        for op in ops {
            match op {
                Op::Upsert { tenant, table, key } => {
                    let new = vec![int(key), int(position as i64)];
                    write.upsert(tenant, table, &[int(key)], new.clone(), position).unwrap();
                    model.upsert(tenant, table, &[int(key)], new, position).unwrap();
                    position += 1;
                }
                Op::Remove { tenant, table, key } => {
                    let ours = write.remove(tenant, table, &[int(key)], position);
                    let theirs = model.remove(tenant, table, &[int(key)], position);
                    prop_assert_eq!(ours.is_ok(), theirs.is_ok());
                    position += 1;
                }
                Op::Commit { durable } => {
                    write.commit(durable).unwrap();
                    write = store.begin().unwrap();
                }
            }
        }
        for tenant in 1..3 {
            for table in 0..2 {
                // The open transaction reads its own writes like the model.
                let mut ours = Vec::new();
                write.scan(tenant, table, &mut |row| { ours.push(row.clone()); true }).unwrap();
                prop_assert_eq!(&ours, &model.rows(tenant, table));
                for key in 0..6 {
                    prop_assert_eq!(write.get(tenant, table, &[int(key)]).unwrap(), model.get(tenant, table, &[int(key)]).unwrap());
                }
            }
        }
        write.commit(false).unwrap();
        let read = store.read().unwrap();
        for tenant in 1..3 {
            for table in 0..2 {
                let mut now = Vec::new();
                read.scan(tenant, table, None, &mut |row| { now.push(row); true }).unwrap();
                prop_assert_eq!(&now, &model.rows(tenant, table));
                for at in 0..position {
                    let mut past = Vec::new();
                    read.scan(tenant, table, Some(at), &mut |row| { past.push(row); true }).unwrap();
                    prop_assert_eq!(&past, &model.rows_at(tenant, table, at), "scan at {}", at);
                    for key in 0..6 {
                        prop_assert_eq!(
                            read.get(tenant, table, &[int(key)], Some(at)).unwrap(),
                            model.get_at(tenant, table, &[int(key)], at),
                            "key {} at {}", key, at
                        );
                    }
                }
            }
        }
    }
}
