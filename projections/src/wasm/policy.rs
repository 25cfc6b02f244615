//! Masking policies: deploy, and `mask` that fails closed.

use super::bindings::policy::PolicyPre;
use super::convert::{type_name, value_to_wit, wit_value_type};
use super::engine::{Engine, HostState, HostStop, World};
use super::limits::NAME_BYTES_MAX;
use super::projection::{check_name, trap_message};
use super::{Caller, DeployError, ModuleId};
use kimberlite_kernel::{ColumnType, Row};
use std::fmt;
use std::sync::Arc;

/// A deployed masking policy. Cheap to clone; `mask` may run on several threads at
/// once (each call has its own instance), so a hot swap is replacing one handle with
/// another while reads in flight finish under the handle they hold.
#[derive(Clone)]
pub struct PolicyModule {
    inner: Arc<PolicyInner>,
}

struct PolicyInner {
    id: ModuleId,
    engine: Engine,
    pre: PolicyPre<HostState>,
    config: Arc<[u8]>,
    covers: Vec<String>,
}

impl fmt::Debug for PolicyModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyModule")
            .field("id", &self.inner.id)
            .field("covers", &self.inner.covers)
            .finish_non_exhaustive()
    }
}

/// A read failed closed: the caller gets this error, never the unmasked rows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy {policy} failed closed while masking `{table}`: {kind}")]
pub struct PolicyError {
    pub policy: ModuleId,
    pub table: String,
    pub kind: PolicyErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyErrorKind {
    Trap {
        message: String,
    },
    Rejected {
        message: String,
    },
    /// The wall-clock watchdog stopped it.
    Deadline {
        policy_deadline_ms: u64,
    },
    FuelExhausted {
        fuel: u64,
    },
    MemoryLimit {
        requested_bytes: usize,
        wasm_memory_bytes_max: usize,
    },
    /// Rows that do not correspond to the input (count, arity, a cell's type).
    BadOutput {
        message: String,
    },
}

impl fmt::Display for PolicyErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyErrorKind::Trap { message } => write!(f, "the module trapped: {message}"),
            PolicyErrorKind::Rejected { message } => write!(f, "mask returned an error: {message}"),
            PolicyErrorKind::Deadline { policy_deadline_ms } => write!(
                f,
                "it ran past its deadline (policy_deadline_ms = {policy_deadline_ms})"
            ),
            PolicyErrorKind::FuelExhausted { fuel } => {
                write!(
                    f,
                    "it ran out of fuel ({fuel} for this call, policy_fuel_per_row_max per row)"
                )
            }
            PolicyErrorKind::MemoryLimit {
                requested_bytes,
                wasm_memory_bytes_max,
            } => write!(
                f,
                "memory limit: linear memory would grow to {requested_bytes} bytes, past wasm_memory_bytes_max = {wasm_memory_bytes_max}"
            ),
            PolicyErrorKind::BadOutput { message } => write!(f, "bad output: {message}"),
        }
    }
}

impl Engine {
    /// Deploys a masking policy (core module or component), with its configuration.
    pub fn load_policy(&self, bytes: &[u8], config: &[u8]) -> Result<PolicyModule, DeployError> {
        let limits = self.limits().clone();
        if config.len() > limits.config_bytes_max {
            return Err(DeployError::ConfigTooLarge {
                bytes: config.len(),
                config_bytes_max: limits.config_bytes_max,
            });
        }
        let (id, component) = self.compile(bytes, World::Policy)?;
        let instance_pre = self
            .inner
            .policy_linker
            .instantiate_pre(&component)
            .map_err(|error| DeployError::Invalid(format!("{error:#}")))?;
        let pre = PolicyPre::new(instance_pre).map_err(|error| DeployError::MissingExports {
            world: World::Policy,
            message: format!("{error:#}"),
        })?;
        let config: Arc<[u8]> = Arc::from(config);

        let state = HostState::new(&limits, config.clone(), None);
        let mut store = self.store(World::Policy, state, limits.fuel_per_describe_max);
        store.set_epoch_deadline(deadline_ticks(limits.policy_deadline_ms));
        let covers = pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_covers(&mut store))
            .map_err(|error| DeployError::Describe(format!("covers: {error:#}")))?;
        if covers.is_empty() {
            return Err(DeployError::Describe(
                "covers returned no tables; a policy masks at least one".into(),
            ));
        }
        for table in &covers {
            check_name(table, "covered table", NAME_BYTES_MAX).map_err(DeployError::Describe)?;
        }

        Ok(PolicyModule {
            inner: Arc::new(PolicyInner {
                id,
                engine: self.clone(),
                pre,
                config,
                covers,
            }),
        })
    }
}

/// Epoch ticks for a deadline, rounded up, plus one: the tick in progress when the
/// call starts may be almost over.
fn deadline_ticks(deadline_ms: u64) -> u64 {
    deadline_ms.div_ceil(super::limits::EPOCH_TICK_MS) + 1
}

impl PolicyModule {
    pub fn id(&self) -> ModuleId {
        self.inner.id
    }

    /// The tables (and views) this policy masks.
    pub fn covers(&self) -> &[String] {
        &self.inner.covers
    }

    /// Masks `rows` of `table` for `caller`. `columns` names the row's cells in order.
    /// Rows of a table the policy does not cover are returned as they are. Any failure —
    /// trap, error, deadline, fuel, memory, output that does not match the input — is
    /// an error; the rows are never returned unmasked from a failed call.
    pub fn mask(
        &self,
        caller: &Caller,
        table: &str,
        columns: &[String],
        rows: Vec<Row>,
    ) -> Result<Vec<Row>, PolicyError> {
        self.mask_metered(caller, table, columns, rows, &mut 0)
    }

    /// [`PolicyModule::mask`], adding the fuel the call burnt to `fuel` (for a tenant's
    /// fuel/s quota), failed calls included.
    pub fn mask_metered(
        &self,
        caller: &Caller,
        table: &str,
        columns: &[String],
        rows: Vec<Row>,
        fuel_burnt: &mut u64,
    ) -> Result<Vec<Row>, PolicyError> {
        if !self.inner.covers.iter().any(|covered| covered == table) {
            return Ok(rows);
        }
        for row in &rows {
            assert_eq!(
                row.len(),
                columns.len(),
                "mask got a row whose arity differs from its column list"
            );
        }
        let fail = |kind| PolicyError {
            policy: self.inner.id,
            table: table.to_owned(),
            kind,
        };
        let engine = &self.inner.engine;
        let limits = engine.limits();
        // One row's worth on top, so a call with no rows can still run.
        let fuel = limits
            .policy_fuel_per_row_max
            .saturating_mul(rows.len() as u64 + 1);
        let types: Vec<Vec<Option<ColumnType>>> = rows
            .iter()
            .map(|row| row.iter().map(|value| value.column_type()).collect())
            .collect();
        let rows: Vec<Vec<_>> = rows
            .into_iter()
            .map(|row| row.into_iter().map(value_to_wit).collect())
            .collect();

        let state = HostState::new(limits, self.inner.config.clone(), None);
        let mut store = engine.store(World::Policy, state, fuel);
        store.set_epoch_deadline(deadline_ticks(limits.policy_deadline_ms));
        let result = self
            .inner
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_mask(&mut store, caller, table, columns, &rows));
        *fuel_burnt += fuel - store.get_fuel().unwrap_or(0);
        drop(rows);
        let masked = match result {
            Ok(Ok(masked)) => masked,
            Ok(Err(message)) => return Err(fail(PolicyErrorKind::Rejected { message })),
            Err(error) => {
                return Err(fail(policy_failure(
                    &error,
                    fuel,
                    limits.policy_deadline_ms,
                )));
            }
        };
        if masked.len() != types.len() {
            return Err(fail(PolicyErrorKind::BadOutput {
                message: format!("{} rows in, {} rows out", types.len(), masked.len()),
            }));
        }
        let mut out = Vec::with_capacity(masked.len());
        for (index, (row, input_types)) in masked.into_iter().zip(&types).enumerate() {
            if row.len() != input_types.len() {
                return Err(fail(PolicyErrorKind::BadOutput {
                    message: format!(
                        "row {index} has {} cells, the input had {}",
                        row.len(),
                        input_types.len()
                    ),
                }));
            }
            for ((value, input_type), column) in row.iter().zip(input_types).zip(columns) {
                let output_type = wit_value_type(value);
                // A mask may hide (NULL) or rewrite within the type; it may not invent a
                // value where there was none, nor change what type a column holds.
                if output_type.is_some() && output_type != *input_type {
                    return Err(fail(PolicyErrorKind::BadOutput {
                        message: format!(
                            "row {index}, column `{column}`: {} in, {} out; a mask keeps the type or returns NULL",
                            type_name(*input_type),
                            type_name(output_type)
                        ),
                    }));
                }
            }
            out.push(
                row.into_iter()
                    .map(super::convert::value_from_wit)
                    .collect(),
            );
        }
        Ok(out)
    }
}

fn policy_failure(error: &wasmtime::Error, fuel: u64, deadline_ms: u64) -> PolicyErrorKind {
    if let Some(HostStop::Memory {
        requested_bytes,
        wasm_memory_bytes_max,
    }) = error.downcast_ref::<HostStop>()
    {
        return PolicyErrorKind::MemoryLimit {
            requested_bytes: *requested_bytes,
            wasm_memory_bytes_max: *wasm_memory_bytes_max,
        };
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => PolicyErrorKind::FuelExhausted { fuel },
        Some(wasmtime::Trap::Interrupt) => PolicyErrorKind::Deadline {
            policy_deadline_ms: deadline_ms,
        },
        Some(trap) => PolicyErrorKind::Trap {
            message: trap_message(trap, error),
        },
        None => PolicyErrorKind::Trap {
            message: format!("{error:#}"),
        },
    }
}
