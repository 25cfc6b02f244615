//! Kimberlite's derived state: the versioned view store, the query executor, and the
//! Wasm projections and policies (`wasm`). See ARCHITECTURE.md.
//!
//! - `store`: `ViewStore` (redb) — versioned rows with `[created_at, deleted_at)`
//!   positions, applied positions and the kernel snapshot committed atomically.
//! - `query`: SELECT over the views, at the present or AS OF a past position.
//! - `log_source`: what the query executor reads from the log (`kimberlite.log`,
//!   `AS OF TIMESTAMP`).
//! - `runner`: one step of a Wasm projection version over its tenant's log, committed
//!   atomically with its progress.
//! - `system_views`: `kimberlite.projections`, `kimberlite.policies`, `kimberlite.access`,
//!   `kimberlite.grants` and `kimberlite.row_filters`.
//! - `encoding`: memcomparable keys and compact rows.

pub mod encoding;
pub mod log_source;
pub mod query;
pub mod runner;
pub mod store;
pub mod system_views;
pub mod wasm;

pub use log_source::{LogSource, MemoryLog};
pub use runner::{RunnerError, StepOutcome, ViewTables, step};
pub use store::{Applied, ProjectionProgress, ViewRead, ViewStore, ViewWrite};
