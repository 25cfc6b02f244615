//! Kimberlite's kernel: the pure state machine. See ARCHITECTURE.md.
//!
//! - `catalog`: tenants, tokens, roles, and tables with their history.
//! - `access`: table privileges (GRANT/REVOKE) and row filters (CREATE POLICY): the rules.
//! - `sql`: SQL text → `Statement` (DDL/DML commands and SELECT queries).
//! - `expr`: expressions compiled against a schema and evaluated over rows
//!   (shared with the query executor in `kimberlite-projections`).
//! - `Kernel`: commands → validated records → applied state; replay of stored records.
//! - `store`: the `RowStore` trait the native table projection writes through, and its
//!   in-memory model.
//! - `modules`: deployed Wasm projections (with versions) and masking policies.
//! - `payload`: the JSON of every record the kernel writes.
//!
//! **Architecture invariant:** the kernel does no I/O and reads no clock; the same
//! commands give the same records and state on every replica.

pub mod access;
pub mod catalog;
mod error;
pub mod expr;
pub mod hex;
mod kernel;
pub mod limits;
pub mod modules;
pub mod payload;
pub mod sql;
pub mod store;
pub mod timestamp;
pub mod value;

pub use catalog::{Action, BuiltinRole, Catalog, Quota, TableDef, Tenant, Token};
pub use error::ErrorClass;
pub use kernel::{
    AppendEvent, Command, CommandBody, Effects, FIRST_DATA_KEY_ID, Kernel, KernelError, Outcome,
    Partition, SUBJECT_KEY_ID_FIRST, ViewSchema, describe_tables,
};
pub use store::{MemoryRowStore, RowStore, StoreError};
pub use value::{Column, ColumnType, Position, Row, SYSTEM_TENANT, TableId, TenantId, Value};
