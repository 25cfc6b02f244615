//! Kimberlite's kernel: the pure state machine. See ARCHITECTURE.md.

pub mod value;

pub use value::{Column, ColumnType, Position, Row, SYSTEM_TENANT, TableId, TenantId, Value};
