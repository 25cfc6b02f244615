//! The wasmtime engine: deterministic configuration, deploy-time checks, the compiled
//! component cache, and the per-call store (fuel, memory cap, imports).

use super::bindings::policy::Policy;
use super::bindings::projection::Projection;
use super::bindings::projection::kimberlite::projection::{config, types as wit, view};
use super::convert::{type_name, value_from_wit, value_to_wit, wit_value_type};
use super::limits::{
    COMPILED_MODULES_MAX, EPOCH_TICK_MS, Limits, WASM_INSTANCES_MAX, WASM_MEMORIES_MAX,
    WASM_TABLES_MAX,
};
use super::{DeployError, ModuleId, ViewLookup, ViewTable, core_imports};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{ResourceLimiter, Store};

/// The interfaces a guest may import, by world. Anything else (WASI above all) is
/// refused at deploy: a guest that could read a clock, a file or randomness could make
/// replicas disagree. (`types` carries only type definitions; a component imports it
/// to name them.)
pub(crate) const PROJECTION_IMPORTS: [&str; 3] = [
    "kimberlite:projection/types@0.1.0",
    "kimberlite:projection/view@0.1.0",
    "kimberlite:projection/config@0.1.0",
];
pub(crate) const POLICY_IMPORTS: [&str; 2] = [
    "kimberlite:projection/types@0.1.0",
    "kimberlite:projection/config@0.1.0",
];

/// Which world a module is deployed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum World {
    Projection,
    Policy,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Projection => "kimberlite:projection/projection@0.1.0",
            World::Policy => "kimberlite:projection/policy@0.1.0",
        }
    }

    fn allowed_imports(self) -> &'static [&'static str] {
        match self {
            World::Projection => &PROJECTION_IMPORTS,
            World::Policy => &POLICY_IMPORTS,
        }
    }

    pub(crate) fn exports(self) -> &'static str {
        match self {
            World::Projection => "`describe` and `apply`",
            World::Policy => "`covers` and `mask`",
        }
    }
}

/// The Wasm engine of one node: compiles, caches and runs tenants' projections and
/// policies. Cheap to clone (a handle); safe to share between threads.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

pub(crate) struct EngineInner {
    /// Projections run on an engine without epoch interruption: their results may
    /// depend on fuel, never on time.
    pub(crate) projections: wasmtime::Engine,
    /// Policies run on the read path under a wall-clock watchdog (epochs) as well.
    pub(crate) policies: wasmtime::Engine,
    pub(crate) limits: Limits,
    pub(crate) projection_linker: Linker<HostState>,
    pub(crate) policy_linker: Linker<HostState>,
    compiled: Mutex<CompiledCache>,
    watchdog_stop: Arc<AtomicBool>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.watchdog_stop.store(true, Ordering::Relaxed);
    }
}

/// Compiled components by (world engine, module id), evicted oldest-first when full.
#[derive(Default)]
struct CompiledCache {
    components: HashMap<(World, ModuleId), (u64, Component)>,
    inserted: u64,
}

impl CompiledCache {
    fn get(&self, key: &(World, ModuleId)) -> Option<Component> {
        self.components
            .get(key)
            .map(|(_, component)| component.clone())
    }

    fn insert(&mut self, key: (World, ModuleId), component: Component) {
        if self.components.len() >= COMPILED_MODULES_MAX
            && let Some(oldest) = self
                .components
                .iter()
                .min_by_key(|(_, (inserted, _))| *inserted)
                .map(|(key, _)| *key)
        {
            self.components.remove(&oldest);
        }
        self.inserted += 1;
        self.components.insert(key, (self.inserted, component));
        assert!(self.components.len() <= COMPILED_MODULES_MAX);
    }
}

impl Engine {
    /// An engine with the replicated default limits.
    pub fn new() -> Result<Engine, EngineError> {
        Engine::with_limits(Limits::default())
    }

    /// An engine with explicit limits (tests, or a node configured differently).
    pub fn with_limits(limits: Limits) -> Result<Engine, EngineError> {
        let projections = wasmtime::Engine::new(&wasmtime_config(false))
            .map_err(|error| EngineError(format!("cannot build the projection engine: {error}")))?;
        let policies = wasmtime::Engine::new(&wasmtime_config(true))
            .map_err(|error| EngineError(format!("cannot build the policy engine: {error}")))?;

        let mut projection_linker = Linker::new(&projections);
        Projection::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut projection_linker,
            |state| state,
        )
        .map_err(|error| EngineError(format!("cannot link projection imports: {error}")))?;
        let mut policy_linker = Linker::new(&policies);
        Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut policy_linker, |state| state)
            .map_err(|error| EngineError(format!("cannot link policy imports: {error}")))?;

        let watchdog_stop = Arc::new(AtomicBool::new(false));
        spawn_watchdog(policies.weak(), watchdog_stop.clone())?;

        Ok(Engine {
            inner: Arc::new(EngineInner {
                projections,
                policies,
                limits,
                projection_linker,
                policy_linker,
                compiled: Mutex::new(CompiledCache::default()),
                watchdog_stop,
            }),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Checks the bytes of a deploy and compiles them (or takes them from the cache):
    /// size, format, imports. Exports are checked by the caller against its world.
    pub(crate) fn compile(
        &self,
        bytes: &[u8],
        world: World,
    ) -> Result<(ModuleId, Component), DeployError> {
        let limits = &self.inner.limits;
        if bytes.len() > limits.module_bytes_max {
            return Err(DeployError::TooLarge {
                bytes: bytes.len(),
                module_bytes_max: limits.module_bytes_max,
            });
        }
        let id = ModuleId::of(bytes);
        if let Some(component) = self.cache().get(&(world, id)) {
            return Ok((id, component));
        }

        let component_bytes = match module_format(bytes) {
            Some(Format::Core) => {
                let imports = core_imports::parse(bytes).map_err(|reason| {
                    DeployError::Invalid(format!("malformed core module: {reason}"))
                })?;
                for (module, name) in imports {
                    if !world.allowed_imports().contains(&module.as_str()) {
                        return Err(DeployError::ForbiddenImport {
                            import: format!("{module}::{name}"),
                            world,
                        });
                    }
                }
                wit_component::ComponentEncoder::default()
                    .module(bytes)
                    .and_then(|encoder| encoder.validate(true).encode())
                    .map_err(|error| DeployError::NotAComponent {
                        world,
                        message: format!("{error:#}"),
                    })?
            }
            Some(Format::Component) => bytes.to_vec(),
            None => return Err(DeployError::NotWasm),
        };

        let engine = match world {
            World::Projection => &self.inner.projections,
            World::Policy => &self.inner.policies,
        };
        let component = Component::new(engine, &component_bytes)
            .map_err(|error| DeployError::Invalid(format!("{error:#}")))?;
        for (name, _) in component.component_type().imports(engine) {
            if !world.allowed_imports().contains(&name) {
                return Err(DeployError::ForbiddenImport {
                    import: name.to_owned(),
                    world,
                });
            }
        }
        self.cache().insert((world, id), component.clone());
        Ok((id, component))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, CompiledCache> {
        // A panic while holding the lock cannot leave the map half-updated (each
        // operation is a single insert/remove), so a poisoned lock is still usable.
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh store for one guest call: memory and table caps, and `fuel` to burn.
    pub(crate) fn store(&self, world: World, state: HostState, fuel: u64) -> Store<HostState> {
        let engine = match world {
            World::Projection => &self.inner.projections,
            World::Policy => &self.inner.policies,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        store
            .set_fuel(fuel)
            .expect("fuel metering is enabled on both engines");
        store
    }
}

/// The engine could not be built (a wasmtime configuration the platform refuses).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

fn wasmtime_config(epochs: bool) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    // Determinism: NaNs produced by arithmetic have one bit pattern on every CPU;
    // relaxed SIMD gives the same answer everywhere; fuel is the only budget
    // projections see.
    config.cranelift_nan_canonicalization(true);
    config.relaxed_simd_deterministic(true);
    config.consume_fuel(true);
    config.epoch_interruption(epochs);
    // 32-bit memories only, so the memory cap is the whole story. (Threads and shared
    // memory, a source of nondeterminism, are not even compiled in: wasmtime's
    // `threads` feature is off.)
    config.wasm_memory64(false);
    config.wasm_component_model(true);
    config
}

/// Advances the policy engine's epoch every `EPOCH_TICK_MS` until the engine is gone.
fn spawn_watchdog(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) -> Result<(), EngineError> {
    std::thread::Builder::new()
        .name("kimberlite-wasm-watchdog".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
        .map_err(|error| EngineError(format!("cannot start the policy watchdog thread: {error}")))
}

enum Format {
    Core,
    Component,
}

/// Core module or component, from the preamble (`\0asm` then a version/layer word).
fn module_format(bytes: &[u8]) -> Option<Format> {
    match bytes.get(..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(Format::Core),
        [0, b'a', b's', b'm', _, _, 1, 0] => Some(Format::Component),
        _ => None,
    }
}

/// What a guest call's store holds: its limits and what its imports may reach.
pub(crate) struct HostState {
    pub(crate) limiter: GuestLimiter,
    config: Arc<[u8]>,
    view: Option<ViewAccess>,
}

impl HostState {
    pub(crate) fn new(limits: &Limits, config: Arc<[u8]>, view: Option<ViewAccess>) -> HostState {
        HostState {
            limiter: GuestLimiter {
                memory_bytes_max: limits.wasm_memory_bytes_max,
                table_elements_max: limits.wasm_table_elements_max,
            },
            config,
            view,
        }
    }

    /// A storage error met by `view.get` (not the guest's fault; retry the batch).
    pub(crate) fn take_view_error(&mut self) -> Option<String> {
        self.view
            .as_mut()
            .and_then(|view| view.storage_error.take())
    }
}

/// The projection's own rows, for `view.get` during one `apply` call.
pub(crate) struct ViewAccess {
    pub(crate) lookup: Arc<dyn ViewLookup>,
    pub(crate) tables: Arc<[ViewTable]>,
    pub(crate) reads: usize,
    pub(crate) reads_max: usize,
    pub(crate) storage_error: Option<String>,
}

/// Why a guest call was stopped by the host (carried as the trap's error, so the engine
/// can tell a limit from a plain trap).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostStop {
    #[error(
        "linear memory would grow to {requested_bytes} bytes, past wasm_memory_bytes_max = {wasm_memory_bytes_max}"
    )]
    Memory {
        requested_bytes: usize,
        wasm_memory_bytes_max: usize,
    },
    #[error(
        "a table would grow to {requested_elements} elements, past wasm_table_elements_max = {wasm_table_elements_max}"
    )]
    Table {
        requested_elements: usize,
        wasm_table_elements_max: usize,
    },
    #[error(
        "more than view_reads_per_event_max = {view_reads_per_event_max} view reads in one call"
    )]
    TooManyViewReads { view_reads_per_event_max: usize },
    #[error("bad view read: {0}")]
    BadViewRead(String),
    #[error("the view store failed: {0}")]
    Storage(String),
}

pub(crate) struct GuestLimiter {
    memory_bytes_max: usize,
    table_elements_max: usize,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes_max {
            // An error (not `Ok(false)`) traps at once: a guest must not go on after its
            // allocator saw memory run out, and the fault must say why it stopped.
            return Err(wasmtime::Error::new(HostStop::Memory {
                requested_bytes: desired,
                wasm_memory_bytes_max: self.memory_bytes_max,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements_max {
            return Err(wasmtime::Error::new(HostStop::Table {
                requested_elements: desired,
                wasm_table_elements_max: self.table_elements_max,
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        WASM_INSTANCES_MAX
    }

    fn tables(&self) -> usize {
        WASM_TABLES_MAX
    }

    fn memories(&self) -> usize {
        WASM_MEMORIES_MAX
    }
}

impl wit::Host for HostState {}

impl config::Host for HostState {
    fn get(&mut self) -> wasmtime::Result<Vec<u8>> {
        Ok(self.config.to_vec())
    }
}

impl view::Host for HostState {
    fn get(
        &mut self,
        table: String,
        key: Vec<wit::Value>,
    ) -> wasmtime::Result<Option<Vec<wit::Value>>> {
        let Some(view) = self.view.as_mut() else {
            return Err(wasmtime::Error::new(HostStop::BadViewRead(
                "the view is readable only during `apply`".into(),
            )));
        };
        view.reads += 1;
        if view.reads > view.reads_max {
            return Err(wasmtime::Error::new(HostStop::TooManyViewReads {
                view_reads_per_event_max: view.reads_max,
            }));
        }
        let Some(schema) = view.tables.iter().find(|candidate| candidate.name == table) else {
            return Err(wasmtime::Error::new(HostStop::BadViewRead(format!(
                "table `{table}` is not one of this projection's tables"
            ))));
        };
        check_key(schema, &key).map_err(|reason| {
            wasmtime::Error::new(HostStop::BadViewRead(format!(
                "key for `{table}`: {reason}"
            )))
        })?;
        let key: Vec<_> = key.into_iter().map(value_from_wit).collect();
        match view.lookup.get(&table, &key) {
            Ok(Some(row)) => {
                // What the store hands back is checked like what the guest writes: a
                // row that does not fit the schema is a store bug, not guest input.
                assert_eq!(
                    row.len(),
                    schema.columns.len(),
                    "view store returned a row of the wrong arity for `{table}`"
                );
                Ok(Some(row.into_iter().map(value_to_wit).collect()))
            }
            Ok(None) => Ok(None),
            Err(error) => {
                view.storage_error = Some(error.clone());
                Err(wasmtime::Error::new(HostStop::Storage(error)))
            }
        }
    }
}

/// A key must have one non-null value of the right type per key column.
pub(crate) fn check_key(table: &ViewTable, key: &[wit::Value]) -> Result<(), String> {
    if key.len() != table.primary_key.len() {
        return Err(format!(
            "{} values for a primary key of {} columns ({})",
            key.len(),
            table.primary_key.len(),
            table.primary_key.join(", ")
        ));
    }
    for (value, position) in key.iter().zip(&table.key_positions) {
        let column = &table.columns[*position];
        let ty = wit_value_type(value);
        if ty != Some(column.ty) {
            return Err(format!(
                "key column `{}` is {} but the value is {}",
                column.name,
                column.ty,
                type_name(ty)
            ));
        }
    }
    Ok(())
}
