//! The policy world: masking query results for a caller.

use crate::{Caller, Row};

/// A masking policy. The host calls [`Policy::mask`] with a batch of result rows of one
/// covered table; the answer must keep the row count and arity, and each cell either
/// keeps its type or becomes NULL. Anything else — an `Err`, a trap, a late answer —
/// fails the read closed: the caller gets an error, never unmasked rows.
pub trait Policy {
    /// Names of the tables and views this policy masks.
    fn covers() -> Vec<String>;

    /// Mask `rows` of `table`, whose columns are named by `columns` (row order).
    fn mask(
        who: &Caller,
        table: &str,
        columns: &[String],
        rows: Vec<Row>,
    ) -> Result<Vec<Row>, String>;
}

/// The position of column `name` in a result, if the query selected it.
pub fn column_index(columns: &[String], name: &str) -> Option<usize> {
    columns.iter().position(|column| column == name)
}

pub fn covers<P: Policy>() -> Vec<String> {
    P::covers()
}

pub fn mask<P: Policy>(
    who: Caller,
    table: String,
    columns: Vec<String>,
    rows: Vec<Row>,
) -> Result<Vec<Row>, String> {
    P::mask(&who, &table, &columns, rows)
}
