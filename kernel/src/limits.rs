//! Every bound the kernel enforces, in one place, each named with its unit last.
//!
//! A command that crosses one is refused with an error naming the bound and its
//! value; nothing is truncated silently.

/// The text of one SQL statement.
pub const SQL_BYTES_MAX: usize = 1 << 20;

/// Rows one INSERT, UPDATE or DELETE may write. A statement above it is refused as a
/// whole (nothing is written), so one command never becomes an unbounded batch of records.
pub const STATEMENT_ROWS_MAX: usize = 100_000;

/// `$n` parameters of one statement.
pub const STATEMENT_PARAMS_MAX: usize = 4_096;

/// Nesting depth of a SQL expression; the parser refuses deeper input before our
/// recursive compiler and evaluator see it, so neither can overflow the stack.
pub const EXPR_DEPTH_MAX: usize = 64;

/// Names of tables, columns, streams, event types, principals and roles.
pub const NAME_BYTES_MAX: usize = 128;

/// Tenant names.
pub const TENANT_NAME_BYTES_MAX: usize = 64;

/// Columns of one table.
pub const TABLE_COLUMNS_MAX: usize = 256;

/// Tables a tenant may have at one time (dropped tables do not count).
pub const TENANT_TABLES_MAX: usize = 10_000;

/// Roles of one token.
pub const TOKEN_ROLES_MAX: usize = 32;

/// Attributes of one token.
pub const TOKEN_ATTRIBUTES_MAX: usize = 64;

/// A token attribute's key or value.
pub const ATTRIBUTE_BYTES_MAX: usize = 1_024;

/// The payload of one appended application event.
pub const EVENT_PAYLOAD_BYTES_MAX: usize = 1 << 20;

/// The caller's reason carried by every record of a command.
pub const REASON_BYTES_MAX: usize = 4_096;

/// One TEXT or BYTES value stored in a table.
pub const VALUE_BYTES_MAX: usize = 1 << 20;

/// Bytes of a deployed Wasm module (projection or policy). Its bytes go into the log.
pub const MODULE_BYTES_MAX: usize = 8 << 20;
/// The log record payload a module is cut into (records carry at most 1 MiB).
pub const MODULE_CHUNK_BYTES: usize = 512 << 10;
/// Bytes of a module's deploy-time configuration.
pub const MODULE_CONFIG_BYTES_MAX: usize = 64 << 10;
/// Tables one projection may maintain.
pub const PROJECTION_TABLES_MAX: usize = 64;
/// Tables and views one policy may cover.
pub const POLICY_COVERS_MAX: usize = 256;
/// Bytes of a fault message kept in the catalog (longer ones are cut).
pub const FAULT_MESSAGE_BYTES_MAX: usize = 4_096;
/// Events one `Append` command may carry (they are written atomically).
pub const APPEND_EVENTS_MAX: usize = 10_000;

/// Row filters (`CREATE POLICY`) on one table or view.
pub const TABLE_ROW_FILTERS_MAX: usize = 64;
/// The SQL text of one row filter's `USING` condition.
pub const ROW_FILTER_BYTES_MAX: usize = 4_096;
/// Roles in one table's access list (a GRANT that would exceed it is refused).
pub const ACL_ROLES_MAX: usize = 256;
