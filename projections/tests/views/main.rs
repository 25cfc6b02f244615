//! The view store, its encodings and the query executor, through their public API.
//! One test binary (it links wasmtime, which is slow to link), one module per area.

mod encoding;
mod query;
mod store;
