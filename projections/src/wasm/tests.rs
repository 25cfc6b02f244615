//! Engine tests against the real sample guests (`samples/`, built by
//! `cargo xtask build-guests` into `target/guests`).

use super::*;
use kimberlite_kernel::{ColumnType, Value};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The sample module `name` (crate name with `_`), as built by `cargo xtask build-guests`.
fn guest(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target/guests/wasm32-unknown-unknown/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "guest module {} is missing ({error}): run `cargo xtask build-guests` first",
            path.display()
        )
    })
}

/// One engine shared by the tests that do not need a fresh one (compiling a guest with
/// an unoptimized Cranelift takes a while; the cache makes it once per module).
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new().expect("engine"))
}

/// An event at `position` whose timestamp is derived from it (1 s apart).
fn event(position: u64, stream: &str, event_type: &str, payload: &str) -> Event {
    Event {
        position,
        timestamp_ns: 1_700_000_000_000_000_000 + position * 1_000_000_000,
        stream: stream.into(),
        event_type: event_type.into(),
        payload: payload.as_bytes().to_vec(),
        principal: "writer".into(),
        reason: Some("test".into()),
    }
}

fn ts(position: u64) -> Value {
    Value::Timestamp(1_700_000_000_000_000_000 + position as i64 * 1_000_000_000)
}

fn text(value: &str) -> Value {
    Value::Text(value.into())
}

/// Applies `events` in batches of `batch` events to a fresh in-memory view, committing
/// each batch's changes before the next, as the runner does. Returns the view, the
/// digest chain and the fault, if any (after applying the changes before it).
fn run(
    module: &ProjectionModule,
    events: &[Event],
    batch: usize,
) -> (MemoryView, ViewDigest, Option<Fault>) {
    let view = MemoryView::new(module.describe());
    let lookup: Arc<dyn ViewLookup> = Arc::new(view.clone());
    let mut digest = ViewDigest::GENESIS;
    for chunk in events.chunks(batch) {
        match module.apply(chunk, &lookup) {
            Ok(changes) => {
                assert!(
                    changes.iter().all(|event| !event.changes.is_empty()
                        && chunk.iter().any(|e| e.position == event.position)),
                    "changes are reported per event of the batch, only for events that made some"
                );
                view.apply_events(&changes);
                digest = digest.chain(&changes);
            }
            Err(ApplyError::Faulted { fault, applied }) => {
                assert!(applied.iter().all(|event| event.position < fault.position));
                view.apply_events(&applied);
                digest = digest.chain(&applied);
                return (view, digest, Some(fault));
            }
            Err(ApplyError::View(message)) => panic!("in-memory view failed: {message}"),
        }
    }
    (view, digest, None)
}

fn account_events() -> Vec<Event> {
    vec![
        event(
            0,
            "accounts",
            "Deposited",
            r#"{"account":"a1","amount":100}"#,
        ),
        event(
            1,
            "accounts",
            "Deposited",
            r#"{"account":"a2","amount":50}"#,
        ),
        event(2, "other", "Deposited", r#"{"account":"a1","amount":999}"#),
        event(
            3,
            "accounts",
            "Withdrawn",
            r#"{"account":"a1","amount":30}"#,
        ),
        event(
            4,
            "accounts",
            "Transferred",
            r#"{"from":"a2","to":"a3","amount":20}"#,
        ),
        event(5, "accounts", "Opened", r#"{"account":"a9"}"#),
        event(
            6,
            "accounts",
            "Withdrawn",
            r#"{"account":"a2","amount":40}"#,
        ),
        event(7, "accounts", "Deposited", r#"{"account":"a1","amount":5}"#),
    ]
}

#[test]
fn account_balances_applies_deposits_withdrawals_and_transfers() {
    let module = engine()
        .load_projection(&guest("account_balances"), b"")
        .expect("deploy");
    assert_eq!(module.id(), ModuleId::of(&guest("account_balances")));
    let tables = module.describe();
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].name, "balances");
    assert_eq!(tables[0].primary_key, vec!["account"]);
    let types: Vec<_> = tables[0]
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.ty))
        .collect();
    assert_eq!(
        types,
        vec![
            ("account", ColumnType::Text),
            ("balance", ColumnType::BigInt),
            ("updated_at", ColumnType::Timestamp)
        ]
    );

    // Without `reject_overdraft`, a2 may go below zero (50 - 20 - 40).
    let (view, _, fault) = run(&module, &account_events(), 3);
    assert_eq!(fault, None);
    assert_eq!(
        view.rows("balances"),
        vec![
            vec![text("a1"), Value::Integer(75), ts(7)],
            vec![text("a2"), Value::Integer(-10), ts(6)],
            vec![text("a3"), Value::Integer(20), ts(4)],
        ]
    );
}

#[test]
fn changes_come_back_per_event_with_the_event_position() {
    let module = engine()
        .load_projection(&guest("account_balances"), b"")
        .expect("deploy");
    let view: Arc<dyn ViewLookup> = Arc::new(MemoryView::new(module.describe()));
    let changes = module.apply(&account_events(), &view).expect("apply");
    // Position 2 is another stream and 5 an `Opened`: no changes, so no entry. The
    // transfer at 4 changes two rows.
    let shape: Vec<(u64, usize)> = changes
        .iter()
        .map(|event| (event.position, event.changes.len()))
        .collect();
    assert_eq!(shape, vec![(0, 1), (1, 1), (3, 1), (4, 2), (6, 1), (7, 1)]);
    let Change::Upsert { row, .. } = &changes[2].changes[0] else {
        panic!("a withdrawal upserts the balance");
    };
    // The withdrawal at 3 read the deposit at 0 of the same batch.
    assert_eq!(row, &vec![text("a1"), Value::Integer(70), ts(3)]);
}

#[test]
fn changes_per_event_max_bounds_each_event_not_the_batch() {
    // Eight events make seven changes, at most two per event.
    let two = Engine::with_limits(Limits {
        changes_per_event_max: 2,
        ..Limits::default()
    })
    .expect("engine");
    let module = two
        .load_projection(&guest("account_balances"), b"")
        .expect("deploy");
    let (view, _, fault) = run(&module, &account_events(), 8);
    assert_eq!(fault, None);
    assert_eq!(view.rows("balances").len(), 3);

    // With one, the transfer at 4 (two changes) faults, in a batch or alone.
    let one = Engine::with_limits(Limits {
        changes_per_event_max: 1,
        ..Limits::default()
    })
    .expect("engine");
    let module = one
        .load_projection(&guest("account_balances"), b"")
        .expect("deploy");
    for batch in [1, 8] {
        let (view, _, fault) = run(&module, &account_events(), batch);
        assert_eq!(
            fault,
            Some(Fault {
                position: 4,
                kind: FaultKind::TooManyChanges {
                    changes: 2,
                    changes_per_event_max: 1
                }
            }),
            "batch size {batch}"
        );
        assert_eq!(
            view.rows("balances"),
            vec![
                vec![text("a1"), Value::Integer(70), ts(3)],
                vec![text("a2"), Value::Integer(50), ts(1)],
            ]
        );
    }
}

#[test]
fn account_balances_rejects_overdraft_only_when_configured() {
    let config = br#"{"reject_overdraft": true}"#;
    let module = engine()
        .load_projection(&guest("account_balances"), config)
        .expect("deploy");
    for batch in [1, 4, 8] {
        let (view, _, fault) = run(&module, &account_events(), batch);
        let fault = fault.expect("the withdrawal at position 6 overdraws a2");
        assert_eq!(fault.position, 6, "batch size {batch}");
        let FaultKind::Rejected { message } = &fault.kind else {
            panic!("expected a rejection, got {fault}");
        };
        assert!(message.contains("overdraft rejected"), "{message}");
        assert!(message.contains("`a2` to -10"), "{message}");
        // Everything before the fault is applied, nothing after.
        assert_eq!(
            view.rows("balances"),
            vec![
                vec![text("a1"), Value::Integer(70), ts(3)],
                vec![text("a2"), Value::Integer(30), ts(4)],
                vec![text("a3"), Value::Integer(20), ts(4)],
            ]
        );
    }

    let broken = engine()
        .load_projection(&guest("account_balances"), b"{not json")
        .expect("config is read per batch, not at deploy");
    let (_, _, fault) = run(&broken, &account_events()[..1], 1);
    let fault = fault.expect("bad config faults the first event");
    assert!(
        fault
            .to_string()
            .contains("configuration is not the expected JSON"),
        "{fault}"
    );
}

fn patient_events() -> Vec<Event> {
    vec![
        event(
            10,
            "patients",
            "RowInserted",
            r#"{"id":1,"name":"Ada Lovelace","region":"north"}"#,
        ),
        event(
            11,
            "patients",
            "RowInserted",
            r#"{"id":2,"name":"Alan Turing","region":"north"}"#,
        ),
        event(
            12,
            "patients",
            "RowInserted",
            r#"{"id":3,"name":"Grace Hopper","region":"south"}"#,
        ),
        event(13, "accounts", "RowInserted", r#"{"id":4,"region":"west"}"#),
        // Ada moves south; Grace's update keeps her region.
        event(
            14,
            "patients",
            "RowUpdated",
            r#"{"id":1,"name":"Ada King","region":"south"}"#,
        ),
        event(
            15,
            "patients",
            "RowUpdated",
            r#"{"id":3,"name":"Grace B. Hopper","region":"south"}"#,
        ),
        event(
            16,
            "patients",
            "RowInserted",
            r#"{"id":5,"name":"Nobody","region":null}"#,
        ),
        event(17, "patients", "RowDeleted", r#"{"id":2}"#),
    ]
}

#[test]
fn patient_census_counts_per_region_through_updates_and_deletes() {
    let module = engine()
        .load_projection(&guest("patient_census"), b"")
        .expect("deploy");
    let names: Vec<_> = module.describe().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["census", "census_patients"]);
    for batch in [1, 3, 8] {
        let (view, _, fault) = run(&module, &patient_events(), batch);
        assert_eq!(fault, None);
        // north lost Ada (moved) and Alan (deleted), so it is gone.
        assert_eq!(
            view.rows("census"),
            vec![vec![text("south"), Value::Integer(2)]],
            "batch size {batch}"
        );
        assert_eq!(
            view.rows("census_patients"),
            vec![
                vec![Value::Integer(1), text("south")],
                vec![Value::Integer(3), text("south")],
                vec![Value::Integer(5), Value::Null],
            ]
        );
    }
}

fn caller(roles: &[&str], attributes: &[(&str, &str)], purpose: Option<&str>) -> Caller {
    Caller {
        principal: "someone".into(),
        roles: roles.iter().map(|role| (*role).to_owned()).collect(),
        attributes: attributes
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        purpose: purpose.map(str::to_owned),
    }
}

fn patient_rows() -> (Vec<String>, Vec<Vec<Value>>) {
    let columns = ["id", "name", "ssn", "region"].map(str::to_owned).to_vec();
    let rows = vec![
        vec![
            Value::Integer(1),
            text("Ada Lovelace"),
            text("123-45-6789"),
            text("north"),
        ],
        vec![
            Value::Integer(2),
            Value::Null,
            text("987-65-4321"),
            text("south"),
        ],
    ];
    (columns, rows)
}

#[test]
fn phi_mask_and_phi_mask_strict_mask_for_readers_not_for_treating_clinicians() {
    let mask = engine()
        .load_policy(&guest("phi_mask"), b"")
        .expect("deploy");
    let strict = engine()
        .load_policy(&guest("phi_mask_strict"), b"")
        .expect("deploy");
    assert_eq!(mask.covers(), ["patients"]);
    assert_eq!(strict.covers(), ["patients"]);
    assert_ne!(mask.id(), strict.id());
    let (columns, rows) = patient_rows();

    let reader = caller(&["reader"], &[], None);
    let masked = vec![
        vec![
            Value::Integer(1),
            text("A. L."),
            text("***-**-6789"),
            text("north"),
        ],
        vec![
            Value::Integer(2),
            Value::Null,
            text("***-**-4321"),
            text("south"),
        ],
    ];
    assert_eq!(
        mask.mask(&reader, "patients", &columns, rows.clone())
            .unwrap(),
        masked
    );
    let mut strictly_masked = masked.clone();
    strictly_masked[0][3] = text("***");
    strictly_masked[1][3] = text("***");
    assert_eq!(
        strict
            .mask(&reader, "patients", &columns, rows.clone())
            .unwrap(),
        strictly_masked
    );

    // `--role reader --role clinician --attr purpose=treatment`, or the purpose declared
    // by the request: clear values under both versions.
    let treating = caller(&["reader", "clinician"], &[("purpose", "treatment")], None);
    let declared = caller(&["clinician"], &[], Some("treatment"));
    for who in [&treating, &declared] {
        assert_eq!(
            mask.mask(who, "patients", &columns, rows.clone()).unwrap(),
            rows
        );
        assert_eq!(
            strict
                .mask(who, "patients", &columns, rows.clone())
                .unwrap(),
            rows
        );
    }
    // A clinician reading for another purpose is masked.
    let billing = caller(&["clinician"], &[("purpose", "billing")], None);
    assert_eq!(
        mask.mask(&billing, "patients", &columns, rows.clone())
            .unwrap(),
        masked
    );

    // Tables the policy does not cover pass through untouched.
    assert_eq!(
        mask.mask(&reader, "balances", &columns, rows.clone())
            .unwrap(),
        rows
    );
    // Only the selected columns are masked.
    let names = vec!["name".to_owned()];
    assert_eq!(
        strict
            .mask(
                &reader,
                "patients",
                &names,
                vec![vec![text("Grace Brewster Hopper")]]
            )
            .unwrap(),
        vec![vec![text("G. B. H.")]]
    );
}

/// Events for a hostile module: plain events, then the hostile one at position 3.
fn hostile_events(hostile: &str) -> Vec<Event> {
    (0..6)
        .map(|position| {
            let event_type = if position == 3 { hostile } else { "Plain" };
            event(position, "anything", event_type, "{}")
        })
        .collect()
}

/// Runs a hostile module at batch sizes 1 and 6 on two fresh engines; the fault must be
/// the same every time, at position 3, with the plain events before it applied.
fn assert_hostile_faults(module_name: &str, hostile: &str, check: impl Fn(&FaultKind) -> bool) {
    let mut faults = Vec::new();
    for _ in 0..2 {
        let engine = Engine::new().expect("engine");
        let module = engine
            .load_projection(&guest(module_name), b"")
            .expect("deploy");
        for batch in [1, 6] {
            let (view, _, fault) = run(&module, &hostile_events(hostile), batch);
            let fault = fault.unwrap_or_else(|| panic!("{module_name} must fault"));
            assert_eq!(fault.position, 3, "{module_name}: {fault}");
            assert!(
                check(&fault.kind),
                "{module_name}: unexpected fault {fault}"
            );
            let seen: Vec<_> = view
                .rows("seen")
                .into_iter()
                .map(|row| row[0].clone())
                .collect();
            assert_eq!(
                seen,
                vec![Value::Integer(0), Value::Integer(1), Value::Integer(2)]
            );
            faults.push(fault);
        }
        // The engine is still usable for other modules.
        let healthy = engine
            .load_projection(&guest("account_balances"), b"")
            .expect("deploy after a fault");
        let (view, _, fault) = run(&healthy, &account_events(), 8);
        assert_eq!(fault, None);
        assert_eq!(view.rows("balances").len(), 3);
    }
    assert!(
        faults.windows(2).all(|pair| pair[0] == pair[1]),
        "{faults:?}"
    );
}

#[test]
fn infinite_loop_runs_out_of_fuel_at_the_same_event_every_time() {
    assert_hostile_faults("hostile_loop", "Spin", |kind| {
        *kind
            == FaultKind::FuelExhausted {
                fuel_per_event_max: FUEL_PER_EVENT_MAX,
            }
    });
    let message = FaultKind::FuelExhausted {
        fuel_per_event_max: FUEL_PER_EVENT_MAX,
    }
    .to_string();
    assert!(
        message.contains("fuel_per_event_max = 200000000"),
        "{message}"
    );
}

#[test]
fn memory_bomb_hits_the_memory_cap_at_the_same_event_every_time() {
    assert_hostile_faults("hostile_memory", "Hoard", |kind| {
        matches!(kind, FaultKind::MemoryLimit { requested_bytes, wasm_memory_bytes_max }
            if *wasm_memory_bytes_max == WASM_MEMORY_BYTES_MAX && requested_bytes > wasm_memory_bytes_max)
    });
}

#[test]
fn huge_output_is_refused_at_the_flooding_event() {
    assert_hostile_faults("hostile_output", "Flood", |kind| {
        *kind
            == FaultKind::TooManyChanges {
                changes: 12_000,
                changes_per_event_max: CHANGES_PER_EVENT_MAX,
            }
    });
}

#[test]
fn trap_faults_at_the_exploding_event_with_the_trap_named() {
    assert_hostile_faults(
        "hostile_trap",
        "Explode",
        |kind| matches!(kind, FaultKind::Trap { message } if message.contains("unreachable")),
    );
}

#[test]
fn looping_policy_fails_closed_on_fuel_and_on_the_wall_clock_deadline() {
    let (columns, rows) = patient_rows();
    let reader = caller(&["reader"], &[], None);

    let policy = engine()
        .load_policy(&guest("hostile_loop"), b"")
        .expect("deploy");
    let error = policy
        .mask(&reader, "patients", &columns, rows.clone())
        .expect_err("a looping policy must fail the read");
    assert_eq!(
        error.kind,
        PolicyErrorKind::FuelExhausted {
            fuel: POLICY_FUEL_PER_ROW_MAX * 3
        }
    );
    assert!(
        error
            .to_string()
            .contains("failed closed while masking `patients`"),
        "{error}"
    );

    // With fuel to spare, the wall-clock watchdog is what stops it. The deadline is
    // generous; the test checks what stopped the call, not when.
    let limits = Limits {
        policy_fuel_per_row_max: u64::MAX / 8,
        policy_deadline_ms: 200,
        ..Limits::default()
    };
    let watched = Engine::with_limits(limits).expect("engine");
    let policy = watched
        .load_policy(&guest("hostile_loop"), b"")
        .expect("deploy");
    let error = policy
        .mask(&reader, "patients", &columns, rows.clone())
        .expect_err("the deadline must stop it");
    assert_eq!(
        error.kind,
        PolicyErrorKind::Deadline {
            policy_deadline_ms: 200
        }
    );

    // The engine goes on masking with a healthy policy.
    let mask = watched
        .load_policy(&guest("phi_mask"), b"")
        .expect("deploy");
    assert!(mask.mask(&reader, "patients", &columns, rows).is_ok());
}

#[test]
fn same_events_give_equal_digests_and_views_on_fresh_engines_and_across_batch_sizes() {
    let mut events = Vec::new();
    for position in 0..300u64 {
        let account = format!("acct-{}", position % 17);
        let payload = match position % 3 {
            0 => format!(r#"{{"account":"{account}","amount":{}}}"#, position + 1),
            1 => format!(r#"{{"account":"{account}","amount":{}}}"#, position / 2 + 1),
            _ => format!(
                r#"{{"from":"{account}","to":"acct-{}","amount":3}}"#,
                (position + 5) % 17
            ),
        };
        let kind = ["Deposited", "Withdrawn", "Transferred"][(position % 3) as usize];
        events.push(event(position, "accounts", kind, &payload));
    }

    let mut chains = Vec::new();
    let mut states = Vec::new();
    for _ in 0..2 {
        let engine = Engine::new().expect("engine");
        let module = engine
            .load_projection(&guest("account_balances"), b"")
            .expect("deploy");
        let (view, digest, fault) = run(&module, &events, 64);
        assert_eq!(fault, None);
        chains.push(digest);
        states.push(view.state_digest());
        // The chain is per event: how the log was cut into batches does not show.
        for batch in [1, 7, 300] {
            let (view, digest, _) = run(&module, &events, batch);
            chains.push(digest);
            states.push(view.state_digest());
        }
    }
    assert!(chains.windows(2).all(|pair| pair[0] == pair[1]));
    assert_ne!(chains[0], ViewDigest::GENESIS);
    assert!(states.windows(2).all(|pair| pair[0] == pair[1]));
}

/// A core module importing `wasi_snapshot_preview1::fd_write` (hand-assembled: a type
/// section with `() -> ()`, an import section with one function import).
pub(super) fn wasi_importing_module() -> Vec<u8> {
    core_module_importing("wasi_snapshot_preview1", "fd_write")
}

fn core_module_importing(module: &str, name: &str) -> Vec<u8> {
    let mut import = vec![1];
    import.push(module.len() as u8);
    import.extend_from_slice(module.as_bytes());
    import.push(name.len() as u8);
    import.extend_from_slice(name.as_bytes());
    import.extend_from_slice(&[0x00, 0x00]);
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend_from_slice(&[0x01, 0x04, 0x01, 0x60, 0x00, 0x00]);
    bytes.push(0x02);
    bytes.push(import.len() as u8);
    bytes.extend_from_slice(&import);
    bytes
}

#[test]
fn modules_importing_wasi_or_anything_unknown_are_refused_naming_the_import() {
    let error = engine()
        .load_projection(&wasi_importing_module(), b"")
        .expect_err("WASI is not provided");
    assert_eq!(
        error,
        DeployError::ForbiddenImport {
            import: "wasi_snapshot_preview1::fd_write".into(),
            world: World::Projection,
        }
    );
    let message = error.to_string();
    assert!(
        message.contains("imports `wasi_snapshot_preview1::fd_write`"),
        "{message}"
    );
    assert!(message.contains("wasm32-unknown-unknown"), "{message}");

    let error = engine()
        .load_policy(&core_module_importing("env", "clock_now"), b"")
        .expect_err("unknown imports are refused");
    assert!(
        error.to_string().contains("imports `env::clock_now`"),
        "{error}"
    );

    // A projection module as a policy: it imports `view`, which policies do not get.
    let error = engine()
        .load_policy(&guest("account_balances"), b"")
        .expect_err("a projection is not a policy");
    assert!(
        error
            .to_string()
            .contains("imports `kimberlite:projection/view@0.1.0::get`"),
        "{error}"
    );
}

#[test]
fn modules_that_are_not_the_right_world_or_not_wasm_are_refused_clearly() {
    let error = engine()
        .load_projection(&guest("phi_mask"), b"")
        .expect_err("a policy is not a projection");
    assert!(
        matches!(
            error,
            DeployError::MissingExports {
                world: World::Projection,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("must export `describe` and `apply`"),
        "{error}"
    );

    let error = engine()
        .load_policy(&guest("hostile_trap"), b"")
        .expect_err("a projection without covers/mask is not a policy");
    assert!(
        error
            .to_string()
            .contains("must export `covers` and `mask`"),
        "{error}"
    );

    assert_eq!(
        engine()
            .load_projection(b"not wasm at all", b"")
            .unwrap_err(),
        DeployError::NotWasm
    );

    let small = Engine::with_limits(Limits {
        module_bytes_max: 1_000,
        ..Limits::default()
    })
    .expect("engine");
    let bytes = guest("account_balances");
    assert_eq!(
        small.load_projection(&bytes, b"").unwrap_err(),
        DeployError::TooLarge {
            bytes: bytes.len(),
            module_bytes_max: 1_000
        }
    );
    let error = engine()
        .load_projection(&bytes, &vec![b' '; CONFIG_BYTES_MAX + 1])
        .unwrap_err();
    assert!(
        error.to_string().contains("config_bytes_max = 65536"),
        "{error}"
    );
}

/// A view store that fails every read.
struct FailingView;

impl ViewLookup for FailingView {
    fn get(&self, _table: &str, _key: &[Value]) -> Result<Option<kimberlite_kernel::Row>, String> {
        Err("disk on fire".into())
    }
}

#[test]
fn a_failing_view_store_is_not_a_projection_fault() {
    let module = engine()
        .load_projection(&guest("account_balances"), b"")
        .expect("deploy");
    let view: Arc<dyn ViewLookup> = Arc::new(FailingView);
    for batch in [&account_events()[..1], &account_events()[..]] {
        assert_eq!(
            module.apply(batch, &view),
            Err(ApplyError::View("disk on fire".into()))
        );
    }
}
