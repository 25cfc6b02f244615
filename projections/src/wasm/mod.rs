//! Tenant-defined WebAssembly: projections (log → views) and masking policies (rows +
//! caller → what the caller may see), run deterministically under wasmtime.
//!
//! The contract is the WIT package `kimberlite:projection@0.1.0` in `wit/`; guests are
//! written against `kimberlite-guest` (`sdk-guest/`) and built for
//! `wasm32-unknown-unknown`. This module is the host side:
//!
//! - [`Engine`] — compiles and caches modules by BLAKE3 id ([`ModuleId`]), refuses any
//!   import that is not Kimberlite's own (no WASI), and runs every guest call in a fresh
//!   instance (from an `InstancePre`) with a fixed fuel budget, a memory cap and output
//!   bounds ([`Limits`]). NaNs are canonical and relaxed SIMD deterministic, and
//!   projections never see time: the same log gives the same rows, or the same
//!   [`Fault`] at the same position, on every replica.
//! - [`ProjectionModule::apply`] — a batch of events → each event's checked
//!   [`Change`]s, with its log position ([`EventChanges`]).
//! - [`PolicyModule::mask`] — result rows → masked rows, failing closed.
//! - [`ViewDigest`] — the BLAKE3 chain over applied changes, event by event, that
//!   replicas compare.
//!
//! **Architecture invariant:** only this module (in the whole workspace) knows wasmtime.
//! Values cross the boundary as `kimberlite_kernel::Value`.

mod bindings;
mod convert;
mod core_imports;
mod digest;
mod engine;
mod limits;
mod memory_view;
mod policy;
mod projection;

#[cfg(test)]
mod tests;

pub use digest::ViewDigest;
pub use engine::{Engine, EngineError, World};
pub use limits::*;
pub use memory_view::MemoryView;
pub use policy::{PolicyError, PolicyErrorKind, PolicyModule};
pub use projection::{
    ApplyError, Change, EventChanges, Fault, FaultKind, ProjectionModule, ViewLookup, ViewTable,
    event_from_record,
};

/// One committed log record as a projection sees it (generated from the WIT record
/// `event`): position, timestamp, stream, event type, payload, principal, reason.
pub use bindings::projection::kimberlite::projection::types::Event;

/// Who is reading, for a policy (generated from the WIT record `caller`): principal,
/// roles, attributes, and the purpose the request declared.
pub use bindings::projection::kimberlite::projection::types::Caller;

use std::fmt;

/// A module's identity: BLAKE3 of the bytes as deployed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub [u8; 32]);

impl ModuleId {
    pub fn of(bytes: &[u8]) -> ModuleId {
        ModuleId(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        digest::hex(&self.0)
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleId({})", self.to_hex())
    }
}

/// Why a deploy was refused. Nothing is compiled into the engine's cache or run for a
/// refused module beyond what the check needed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    #[error("module of {bytes} bytes is past module_bytes_max = {module_bytes_max}")]
    TooLarge {
        bytes: usize,
        module_bytes_max: usize,
    },
    #[error("configuration of {bytes} bytes is past config_bytes_max = {config_bytes_max}")]
    ConfigTooLarge {
        bytes: usize,
        config_bytes_max: usize,
    },
    #[error("not a WebAssembly module or component (no `\\0asm` preamble)")]
    NotWasm,
    #[error(
        "module imports `{import}`, which Kimberlite does not provide to a {} ({}); guests get no WASI — build for wasm32-unknown-unknown with kimberlite-guest",
        world.name(),
        allowed_imports(*world)
    )]
    ForbiddenImport { import: String, world: World },
    #[error(
        "core module cannot be made a {} component: {message}. Build it with kimberlite-guest's `export!` macro (it embeds the WIT world)",
        world.name()
    )]
    NotAComponent { world: World, message: String },
    #[error(
        "module is not a valid {}: it must export {} with the WIT signatures: {message}",
        world.name(),
        world.exports()
    )]
    MissingExports { world: World, message: String },
    #[error("invalid module: {0}")]
    Invalid(String),
    /// `describe` / `covers` trapped or returned something unusable.
    #[error("the module's description was refused: {0}")]
    Describe(String),
}

fn allowed_imports(world: World) -> String {
    let allowed: &[&str] = match world {
        World::Projection => &engine::PROJECTION_IMPORTS,
        World::Policy => &engine::POLICY_IMPORTS,
    };
    allowed.join(", ")
}
