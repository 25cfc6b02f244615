//! Tenants' deployed WebAssembly, as the catalog knows it: projections (log → views)
//! with their versions, and masking policies.
//!
//! The kernel never runs Wasm. It records what was deployed (the module's bytes are in
//! the log itself, as `ModuleChunk` records just before the deploy record, so every
//! replica and every later audit has them), which version of each projection serves
//! queries, which one is being built to replace it, and which faulted where. The host
//! runs the modules and reports back through commands (`ActivateProjection`,
//! `FaultProjection`), which are log records like every other change.
//!
//! A projection *version* is named by the position of its deploy record in the tenant's
//! partition: unique forever, like a table id.

use crate::catalog::TableDef;
use crate::value::{Position, TableId};
use serde::{Deserialize, Serialize};

/// The view tables of a projection version get store table ids
/// `version + (index << VIEW_TABLE_INDEX_SHIFT)`: disjoint from native table ids (the
/// positions of `CreateTable` records, far below 2^48) and from each other.
pub const VIEW_TABLE_INDEX_SHIFT: u32 = 48;

/// The store table id of the `index`-th table of projection version `version`.
pub fn view_table_id(version: Position, index: usize) -> TableId {
    assert!(
        version < 1 << VIEW_TABLE_INDEX_SHIFT,
        "positions stay below 2^{VIEW_TABLE_INDEX_SHIFT}"
    );
    version + ((index as u64) << VIEW_TABLE_INDEX_SHIFT)
}

/// Where a deployed module's bytes are in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRef {
    /// BLAKE3 of the module as deployed, lowercase hex.
    pub blake3: String,
    pub bytes: u64,
    /// The module is the concatenated payloads of the `chunks` records just before the
    /// deploy record (`version - chunks .. version`).
    pub chunks: u32,
}

impl ModuleRef {
    /// The positions of the chunk records of a deploy record at `version`.
    pub fn chunk_positions(&self, version: Position) -> std::ops::Range<Position> {
        version - u64::from(self.chunks)..version
    }
}

/// Where and why a projection version stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionFault {
    /// The log position of the event it faulted at.
    pub position: Position,
    pub message: String,
}

/// One deployed version of a projection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionVersion {
    /// The position of its deploy record.
    pub version: Position,
    pub module: ModuleRef,
    /// Configuration bytes given at deploy (often JSON); empty when none.
    pub config: Vec<u8>,
    /// Its view tables; `id` from [`view_table_id`], `created_at` 0 (a version is built
    /// from position 0, so its rows exist at every position it has applied).
    pub tables: Vec<TableDef>,
    pub deployed_by: String,
    pub fault: Option<VersionFault>,
}

impl ProjectionVersion {
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.iter().find(|table| table.name == name)
    }
}

/// A named projection and its versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projection {
    pub name: String,
    /// Every version ever deployed, in deploy order.
    pub versions: Vec<ProjectionVersion>,
    /// The version whose views answer queries (the first deploy serves at once, while
    /// it builds; later ones replace it only once they have caught up).
    pub active: Option<Position>,
    /// The version being built to replace `active`, if any.
    pub target: Option<Position>,
}

impl Projection {
    pub fn version(&self, version: Position) -> Option<&ProjectionVersion> {
        self.versions
            .iter()
            .find(|candidate| candidate.version == version)
    }

    pub(crate) fn version_mut(&mut self, version: Position) -> Option<&mut ProjectionVersion> {
        self.versions
            .iter_mut()
            .find(|candidate| candidate.version == version)
    }

    pub fn active_version(&self) -> Option<&ProjectionVersion> {
        self.active.and_then(|version| self.version(version))
    }

    pub fn target_version(&self) -> Option<&ProjectionVersion> {
        self.target.and_then(|version| self.version(version))
    }

    /// The version a rollback returns to: the newest one deployed before the active one
    /// that has not faulted.
    pub fn rollback_candidate(&self) -> Option<&ProjectionVersion> {
        let active = self.active?;
        self.versions
            .iter()
            .rev()
            .find(|version| version.version < active && version.fault.is_none())
    }

    /// The versions the host must run: the active one and the one being built.
    pub fn live_versions(&self) -> impl Iterator<Item = &ProjectionVersion> {
        self.versions.iter().filter(|version| {
            Some(version.version) == self.active || Some(version.version) == self.target
        })
    }

    /// The names of the tables of the active and target versions.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.live_versions()
            .flat_map(|version| version.tables.iter().map(|table| table.name.as_str()))
    }
}

/// One deployed version of a masking policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version: Position,
    pub module: ModuleRef,
    pub config: Vec<u8>,
    /// The tables and views it masks.
    pub covers: Vec<String>,
    pub deployed_by: String,
}

/// A named masking policy: its versions and the active one. A deploy activates its
/// version at once (the swap is the deploy record); a rollback activates the previous one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub versions: Vec<PolicyVersion>,
    pub active: Option<Position>,
}

impl Policy {
    pub fn version(&self, version: Position) -> Option<&PolicyVersion> {
        self.versions
            .iter()
            .find(|candidate| candidate.version == version)
    }

    pub fn active_version(&self) -> Option<&PolicyVersion> {
        self.active.and_then(|version| self.version(version))
    }

    /// The version a rollback returns to: the newest one deployed before the active one.
    pub fn rollback_candidate(&self) -> Option<&PolicyVersion> {
        let active = self.active?;
        self.versions
            .iter()
            .rev()
            .find(|version| version.version < active)
    }
}
