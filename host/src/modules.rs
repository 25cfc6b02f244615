//! Tenants' Wasm in a running node: loading deployed modules from the log, the
//! projection runner thread, and masking query results with the active policies.
//!
//! The kernel's catalog says what is deployed and which version serves; the module bytes
//! are in the tenant's log (`ModuleChunk` records before each deploy record). This module
//! compiles them once per version (the engine caches by BLAKE3), runs every live
//! projection version over its tenant's durable log in bounded steps
//! (`kimberlite_projections::step`: rows and progress commit together), and reports back
//! through ordinary commands: `ActivateProjection` once a rebuilt version has caught up,
//! `FaultProjection` when one faults. Those are log records, so a swap or a fault is part
//! of the audit trail like a deploy.

use crate::quota::Quotas;
use kimberlite_kernel::modules::{ModuleRef, Policy, PolicyVersion, ProjectionVersion};
use kimberlite_kernel::{Catalog, Position, Row, Tenant, TenantId};
use kimberlite_log::LogReader;
use kimberlite_projections::query::Masker;
use kimberlite_projections::wasm::{Caller, Engine, PolicyModule, ProjectionModule};
use kimberlite_projections::{RunnerError, StepOutcome, ViewStore, ViewTables};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Rows handed to a policy's `mask` per call (the policy's fuel and output bounds are per
/// call; a large result is masked in several calls).
pub const MASK_BATCH_ROWS: usize = 1_024;

/// Compiled modules by (tenant, version), loaded from the log on first use.
#[derive(Clone)]
pub struct Modules {
    engine: Engine,
    projections: Arc<Mutex<HashMap<(TenantId, Position), ProjectionModule>>>,
    policies: Arc<Mutex<HashMap<(TenantId, Position), PolicyModule>>>,
}

impl std::fmt::Debug for Modules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modules").finish_non_exhaustive()
    }
}

impl Modules {
    pub fn new(engine: Engine) -> Modules {
        Modules {
            engine,
            projections: Arc::default(),
            policies: Arc::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn projection(
        &self,
        tenant: TenantId,
        version: &ProjectionVersion,
        log: &LogReader,
    ) -> Result<ProjectionModule, String> {
        let key = (tenant, version.version);
        if let Some(module) = self.projections.lock().expect("modules lock").get(&key) {
            return Ok(module.clone());
        }
        let bytes = module_bytes(log, version.version, &version.module)?;
        let module = self
            .engine
            .load_projection(&bytes, &version.config)
            .map_err(|error| format!("version {} does not load: {error}", version.version))?;
        self.projections
            .lock()
            .expect("modules lock")
            .insert(key, module.clone());
        Ok(module)
    }

    pub fn policy(
        &self,
        tenant: TenantId,
        version: &PolicyVersion,
        log: &LogReader,
    ) -> Result<PolicyModule, String> {
        let key = (tenant, version.version);
        if let Some(module) = self.policies.lock().expect("modules lock").get(&key) {
            return Ok(module.clone());
        }
        let bytes = module_bytes(log, version.version, &version.module)?;
        let module = self
            .engine
            .load_policy(&bytes, &version.config)
            .map_err(|error| format!("version {} does not load: {error}", version.version))?;
        self.policies
            .lock()
            .expect("modules lock")
            .insert(key, module.clone());
        Ok(module)
    }
}

/// A deployed module's bytes, read back from its chunk records and checked against the
/// BLAKE3 its deploy record names.
pub fn module_bytes(
    log: &LogReader,
    version: Position,
    module: &ModuleRef,
) -> Result<Vec<u8>, String> {
    let positions = module.chunk_positions(version);
    let records = log
        .read(positions.start, module.chunks as usize)
        .map_err(|error| {
            format!(
                "cannot read the module of version {version} at positions {positions:?}: {error}"
            )
        })?;
    if records.len() != module.chunks as usize {
        return Err(format!(
            "the log ends before the module of version {version} (positions {positions:?})"
        ));
    }
    let mut bytes = Vec::with_capacity(module.bytes as usize);
    for record in records {
        bytes.extend_from_slice(&record.payload);
    }
    let found = blake3::hash(&bytes).to_hex().to_string();
    if found != module.blake3 {
        return Err(format!(
            "the module of version {version} in the log hashes to {found}, not {}",
            module.blake3
        ));
    }
    Ok(bytes)
}

/// The view tables of a projection version: the module's own description, with the store
/// table ids the catalog gave them.
pub fn view_tables(
    module: &ProjectionModule,
    version: &ProjectionVersion,
) -> Result<ViewTables, String> {
    let mut tables = Vec::with_capacity(module.describe().len());
    for table in module.describe() {
        let Some(def) = version.table(&table.name) else {
            return Err(format!(
                "the module describes table `{}`, which version {} did not deploy",
                table.name, version.version
            ));
        };
        tables.push((def.id, table.clone()));
    }
    if tables.len() != version.tables.len() {
        return Err(format!(
            "the module describes {} tables; version {} deployed {}",
            tables.len(),
            version.version,
            version.tables.len()
        ));
    }
    Ok(ViewTables::new(tables))
}

/// What the runner wants written after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    Activate {
        tenant: TenantId,
        name: String,
        version: Position,
    },
    Fault {
        tenant: TenantId,
        name: String,
        version: Position,
        position: Position,
        message: String,
    },
}

/// One pass over every live projection version of every tenant: one bounded step each.
/// Returns whether any version still has work, and what to report.
pub fn run_pass(
    catalog: &Catalog,
    readers: &std::collections::BTreeMap<TenantId, LogReader>,
    modules: &Modules,
    store: &ViewStore,
    durable: bool,
    failing: &mut HashMap<(TenantId, Position), String>,
    quotas: &Quotas,
) -> (bool, Vec<Report>) {
    let mut busy = false;
    let mut reports = Vec::new();
    for tenant in catalog.tenants() {
        let Some(reader) = readers.get(&tenant.id) else {
            continue;
        };
        let end = reader.end();
        // Over its fuel/s quota: the tenant's views wait (the runner comes back after its
        // idle wait); other tenants' go on.
        if !quotas.fuel_available(tenant.id, &tenant.quota) {
            continue;
        }
        for projection in tenant.projections() {
            for version in projection.live_versions() {
                if version.fault.is_some() {
                    continue;
                }
                let (outcome, fuel) =
                    step_version(tenant, version, reader, end, modules, store, durable);
                quotas.charge_fuel(tenant.id, &tenant.quota, fuel);
                let key = (tenant.id, version.version);
                match outcome {
                    Ok(outcome) => {
                        failing.remove(&key);
                        if let Some((position, message)) = outcome.fault {
                            reports.push(Report::Fault {
                                tenant: tenant.id,
                                name: projection.name.clone(),
                                version: version.version,
                                position,
                                message,
                            });
                            continue;
                        }
                        if !outcome.caught_up {
                            busy = true;
                        } else if projection.target == Some(version.version) {
                            reports.push(Report::Activate {
                                tenant: tenant.id,
                                name: projection.name.clone(),
                                version: version.version,
                            });
                        }
                    }
                    Err(error) => {
                        // Not the module's fault (storage, a module that no longer
                        // loads here): retried on every pass, logged once per change.
                        if failing.get(&key) != Some(&error) {
                            tracing::error!(
                                tenant = tenant.id,
                                projection = %projection.name,
                                version = version.version,
                                %error,
                                "projection step failed; retrying"
                            );
                            failing.insert(key, error);
                        }
                    }
                }
            }
        }
    }
    (busy, reports)
}

fn step_version(
    tenant: &Tenant,
    version: &ProjectionVersion,
    reader: &LogReader,
    end: Position,
    modules: &Modules,
    store: &ViewStore,
    durable: bool,
) -> (Result<StepOutcome, String>, u64) {
    let module = match modules.projection(tenant.id, version, reader) {
        Ok(module) => module,
        Err(error) => return (Err(error), 0),
    };
    let tables = match view_tables(&module, version) {
        Ok(tables) => tables,
        Err(error) => return (Err(error), 0),
    };
    // One runner thread steps a module at a time, so the counter's growth is this step's.
    let fuel_before = module.fuel_used();
    let outcome = kimberlite_projections::step(
        &module,
        tenant.id,
        version.version,
        &tables,
        reader,
        end,
        store,
        durable,
    )
    .map_err(|error: RunnerError| error.to_string());
    (outcome, module.fuel_used() - fuel_before)
}

/// Masks query results with a tenant's active policies for one caller. Holds the catalog
/// of the query's start: a policy swapped during the query does not change it midway.
pub struct PolicyMasker {
    pub tenant: TenantId,
    pub catalog: Arc<Catalog>,
    pub modules: Modules,
    pub log: LogReader,
    pub caller: Caller,
    /// Every (table, policy, version) that masked something, for the access trail.
    pub used: Mutex<Vec<(String, String, Position)>>,
    /// Fuel the policies burnt for this query (charged to the tenant's fuel/s quota).
    pub fuel: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for PolicyMasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyMasker")
            .field("tenant", &self.tenant)
            .field("principal", &self.caller.principal)
            .finish_non_exhaustive()
    }
}

impl PolicyMasker {
    fn covering(&self, name: &str) -> Option<(&Policy, &PolicyVersion)> {
        self.catalog.tenant(self.tenant)?.policy_covering(name)
    }
}

impl Masker for PolicyMasker {
    fn covers(&self, name: &str) -> bool {
        self.covering(name).is_some()
    }

    fn mask(&self, table: &str, columns: &[String], rows: Vec<Row>) -> Result<Vec<Row>, String> {
        let Some((policy, version)) = self.covering(table) else {
            return Ok(rows);
        };
        let name = format!("policy `{}` (version {})", policy.name, version.version);
        let module = self
            .modules
            .policy(self.tenant, version, &self.log)
            .map_err(|error| format!("{name}: {error}"))?;
        let mut masked = Vec::with_capacity(rows.len());
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let batch: Vec<Row> = rows.by_ref().take(MASK_BATCH_ROWS).collect();
            let mut burnt = 0;
            let out = module.mask_metered(&self.caller, table, columns, batch, &mut burnt);
            self.fuel
                .fetch_add(burnt, std::sync::atomic::Ordering::Relaxed);
            let out = out.map_err(|error| format!("{name} on `{table}`: {}", error.kind))?;
            masked.extend(out);
        }
        let mut used = self.used.lock().expect("used lock");
        let entry = (table.to_string(), policy.name.clone(), version.version);
        if !used.contains(&entry) {
            used.push(entry);
        }
        Ok(masked)
    }
}
