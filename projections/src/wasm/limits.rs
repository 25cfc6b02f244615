//! Every bound on a guest, as a named constant with its unit last.
//!
//! Projection bounds are part of the replicated semantics: a projection faults at the
//! same event on every replica only if every replica runs with the same numbers. Change
//! them only together with a log-recorded deploy (and say so in the release notes).

/// Largest module (core module or component) accepted at deploy.
pub const MODULE_BYTES_MAX: usize = 8 << 20;

/// Fuel (≈ Wasm instructions) one `apply` call may burn. One event at a time must fit;
/// a batch that needs more is re-run one event per call (see `ProjectionModule::apply`),
/// so whether an event faults never depends on the batch it arrived in. Sized so that
/// `CHANGES_PER_EVENT_MAX` changes fit (a guest write costs a few thousand instructions,
/// mostly allocation) and a typical batch (≈ 10,000 fuel per event) runs in one call;
/// a runaway event is stopped after ~0.1–0.3 s of CPU.
pub const FUEL_PER_EVENT_MAX: u64 = 200_000_000;

/// Linear memory of one guest instance (a fresh instance runs each call).
pub const WASM_MEMORY_BYTES_MAX: usize = 64 << 20;

/// Elements of one guest table (function tables of Rust guests hold a few hundred).
pub const WASM_TABLE_ELEMENTS_MAX: usize = 100_000;

/// Core instances, tables and memories one component may create (a componentized Rust
/// guest has a handful of each: the module plus the canonical-ABI shims).
pub const WASM_INSTANCES_MAX: usize = 16;
pub const WASM_TABLES_MAX: usize = 16;
pub const WASM_MEMORIES_MAX: usize = 2;

/// Changes one `apply` call may return (same re-run rule as fuel).
pub const CHANGES_PER_EVENT_MAX: usize = 10_000;

/// Encoded size of one row or key a guest returns (see `digest::value_bytes`).
pub const ROW_BYTES_MAX: usize = 1 << 20;

/// `view.get` calls one `apply` call may make (same re-run rule as fuel).
pub const VIEW_READS_PER_EVENT_MAX: usize = 10_000;

/// Events one `apply` call may carry; the runner cuts longer runs into batches.
pub const BATCH_EVENTS_MAX: usize = 1_024;

/// Tables one projection may describe, and columns one table may have.
pub const TABLES_PER_PROJECTION_MAX: usize = 64;
pub const COLUMNS_PER_TABLE_MAX: usize = 256;

/// Length of a table, column or covered-table name.
pub const NAME_BYTES_MAX: usize = 128;

/// Deployment configuration size.
pub const CONFIG_BYTES_MAX: usize = 64 << 10;

/// Fuel for one `describe` or `covers` call.
pub const FUEL_PER_DESCRIBE_MAX: u64 = 10_000_000;

/// Fuel a policy may burn per row of one `mask` call (plus one row's worth per call).
pub const POLICY_FUEL_PER_ROW_MAX: u64 = 1_000_000;

/// Wall-clock deadline of one `mask` call: the watchdog for a read path that must not
/// hang. Never applied to projections, whose results must not depend on time.
pub const POLICY_DEADLINE_MS: u64 = 2_000;

/// Period of the epoch watchdog thread.
pub const EPOCH_TICK_MS: u64 = 10;

/// Compiled components kept in the engine's cache (by module id).
pub const COMPILED_MODULES_MAX: usize = 256;

/// The limits an engine enforces. `Limits::default()` is the replicated configuration;
/// tests narrow or widen single bounds to reach a failure quickly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub module_bytes_max: usize,
    pub fuel_per_event_max: u64,
    pub wasm_memory_bytes_max: usize,
    pub wasm_table_elements_max: usize,
    pub changes_per_event_max: usize,
    pub row_bytes_max: usize,
    pub view_reads_per_event_max: usize,
    pub batch_events_max: usize,
    pub config_bytes_max: usize,
    pub fuel_per_describe_max: u64,
    pub policy_fuel_per_row_max: u64,
    pub policy_deadline_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            module_bytes_max: MODULE_BYTES_MAX,
            fuel_per_event_max: FUEL_PER_EVENT_MAX,
            wasm_memory_bytes_max: WASM_MEMORY_BYTES_MAX,
            wasm_table_elements_max: WASM_TABLE_ELEMENTS_MAX,
            changes_per_event_max: CHANGES_PER_EVENT_MAX,
            row_bytes_max: ROW_BYTES_MAX,
            view_reads_per_event_max: VIEW_READS_PER_EVENT_MAX,
            batch_events_max: BATCH_EVENTS_MAX,
            config_bytes_max: CONFIG_BYTES_MAX,
            fuel_per_describe_max: FUEL_PER_DESCRIBE_MAX,
            policy_fuel_per_row_max: POLICY_FUEL_PER_ROW_MAX,
            policy_deadline_ms: POLICY_DEADLINE_MS,
        }
    }
}
