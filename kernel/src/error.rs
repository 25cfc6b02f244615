//! How refusals are classified for clients: the wire protocol maps each class to its
//! error code, so a client can tell "fix your SQL" from "that key exists" from "our bug".

use crate::expr::ExprError;
use crate::sql::SqlError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// An unknown tenant, table or column.
    NotFound,
    /// SQL that does not parse, is not supported, or does not type-check.
    BadSql,
    /// Valid SQL that fails on the data (overflow, division by zero, a bad cast, a NULL
    /// in a NOT NULL column) or a request that makes no sense here.
    BadRequest,
    /// A duplicate primary key, or a name that is taken.
    Conflict,
    /// Over a named bound.
    TooLarge,
    /// Acting on another tenant.
    PermissionDenied,
    /// A tenant's masking policy failed (trap, deadline, bad output): the read is refused.
    PolicyFailed,
    /// The store underneath failed, or stored state does not decode: a bug or corruption.
    Internal,
}

impl SqlError {
    pub fn code(&self) -> ErrorClass {
        match self {
            SqlError::TooLong { .. } | SqlError::TooManyColumns { .. } => ErrorClass::TooLarge,
            SqlError::UnknownSchema { .. } => ErrorClass::NotFound,
            _ => ErrorClass::BadSql,
        }
    }
}

impl ExprError {
    pub fn code(&self) -> ErrorClass {
        match self {
            ExprError::UnknownColumn { .. } | ExprError::UnknownQualifier { .. } => {
                ErrorClass::NotFound
            }
            ExprError::Overflow { .. }
            | ExprError::UnaryOverflow { .. }
            | ExprError::DivisionByZero
            | ExprError::InvalidCast { .. }
            | ExprError::InvalidAsOf(_) => ErrorClass::BadRequest,
            ExprError::Sql(error) => error.code(),
            _ => ErrorClass::BadSql,
        }
    }
}
