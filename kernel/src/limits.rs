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
