//! Commands and records of deployed Wasm: projection and policy deploys, activation of a
//! rebuilt projection version, faults, rollbacks.
//!
//! ## Records (kind `DeployProjection` / `DeployPolicy`, stream = the module's name)
//!
//! - `ModuleChunk`: raw bytes of the module, cut at `MODULE_CHUNK_BYTES`; a deploy
//!   writes all its chunks and then its deploy record in one command, so the chunks of
//!   version `v` are the `chunks` records just before position `v`.
//! - `ProjectionDeployed`: `{"name":…,"module":{"blake3":…,"bytes":…,"chunks":…},
//!   "config":"<hex>","tables":[<CreateTable schema>,…]}`.
//! - `ProjectionActivated`: `{"name":…,"version":v}` — version `v` caught up and now
//!   serves queries.
//! - `ProjectionFaulted`: `{"name":…,"version":v,"position":p,"message":…}`.
//! - `ProjectionRolledBack`: `{"name":…,"to":v}` (`to` = null: a pending build was
//!   cancelled).
//! - `PolicyDeployed`: `{"name":…,"module":{…},"config":"<hex>","covers":[…]}` — active
//!   from its own position on.
//! - `PolicyRolledBack`: `{"name":…,"to":v}`.

use super::{Change, Entry, Kernel, KernelError, Outcome, Plan, check_name};
use crate::catalog::TableDef;
use crate::limits::{
    FAULT_MESSAGE_BYTES_MAX, MODULE_BYTES_MAX, MODULE_CHUNK_BYTES, MODULE_CONFIG_BYTES_MAX,
    NAME_BYTES_MAX, POLICY_COVERS_MAX, PROJECTION_TABLES_MAX, TABLE_COLUMNS_MAX,
};
use crate::modules::{
    ModuleRef, Policy, PolicyVersion, Projection, ProjectionVersion, VersionFault, view_table_id,
};
use crate::payload::{self, PayloadError, TableSchema};
use crate::value::{Column, Position, TenantId};
use kimberlite_log::RecordKind;
use serde::{Deserialize, Serialize};

pub const EVENT_MODULE_CHUNK: &str = "ModuleChunk";
pub const EVENT_PROJECTION_DEPLOYED: &str = "ProjectionDeployed";
pub const EVENT_PROJECTION_ACTIVATED: &str = "ProjectionActivated";
pub const EVENT_PROJECTION_FAULTED: &str = "ProjectionFaulted";
pub const EVENT_PROJECTION_ROLLED_BACK: &str = "ProjectionRolledBack";
pub const EVENT_POLICY_DEPLOYED: &str = "PolicyDeployed";
pub const EVENT_POLICY_ROLLED_BACK: &str = "PolicyRolledBack";

/// A view table a projection declares (from its `describe`, checked by the host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewSchema {
    pub name: String,
    pub columns: Vec<Column>,
    /// Indices into `columns`, in key order.
    pub primary_key: Vec<usize>,
}

/// A change to the deployed-module catalog.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum ModuleChange {
    ProjectionDeployed {
        name: String,
        module: ModuleRef,
        config: Vec<u8>,
        tables: Vec<ViewSchema>,
        deployed_by: String,
    },
    ProjectionActivated {
        name: String,
        version: Position,
    },
    ProjectionFaulted {
        name: String,
        version: Position,
        fault: VersionFault,
    },
    ProjectionRolledBack {
        name: String,
        to: Option<Position>,
    },
    PolicyDeployed {
        name: String,
        module: ModuleRef,
        config: Vec<u8>,
        covers: Vec<String>,
        deployed_by: String,
    },
    PolicyRolledBack {
        name: String,
        to: Position,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectionDeployed {
    name: String,
    module: ModuleRef,
    config: String,
    tables: Vec<TableSchema>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectionActivated {
    name: String,
    version: Position,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectionFaulted {
    name: String,
    version: Position,
    position: Position,
    message: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolledBack {
    name: String,
    to: Option<Position>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDeployed {
    name: String,
    module: ModuleRef,
    config: String,
    covers: Vec<String>,
}

fn invalid(what: &'static str, why: String) -> KernelError {
    KernelError::Invalid { what, why }
}

/// Checks module and configuration sizes; the chunk entries and the module's reference.
fn module_entries(
    kind: RecordKind,
    name: &str,
    module: &[u8],
    config: &[u8],
) -> Result<(Vec<Entry>, ModuleRef), KernelError> {
    if module.is_empty() || module.len() > MODULE_BYTES_MAX {
        return Err(invalid(
            "module",
            format!(
                "it is {} bytes; a module has 1 to module_bytes_max ({MODULE_BYTES_MAX}) bytes",
                module.len()
            ),
        ));
    }
    if config.len() > MODULE_CONFIG_BYTES_MAX {
        return Err(invalid(
            "configuration",
            format!(
                "it is {} bytes, above module_config_bytes_max ({MODULE_CONFIG_BYTES_MAX} bytes)",
                config.len()
            ),
        ));
    }
    let entries: Vec<Entry> = module
        .chunks(MODULE_CHUNK_BYTES)
        .map(|chunk| Entry {
            subject: None,
            kind,
            event_type: EVENT_MODULE_CHUNK.to_string(),
            stream: name.to_string(),
            payload: chunk.to_vec(),
            change: Change::None,
        })
        .collect();
    let reference = ModuleRef {
        blake3: blake3::hash(module).to_hex().to_string(),
        bytes: module.len() as u64,
        chunks: u32::try_from(entries.len()).expect("bounded by module_bytes_max"),
    };
    Ok((entries, reference))
}

fn check_view_schema(table: &ViewSchema) -> Result<(), KernelError> {
    check_name("view name", &table.name, NAME_BYTES_MAX, "name_bytes_max")?;
    if table.columns.is_empty() || table.columns.len() > TABLE_COLUMNS_MAX {
        return Err(invalid(
            "view",
            format!(
                "`{}` has {} columns; a view has 1 to table_columns_max ({TABLE_COLUMNS_MAX})",
                table.name,
                table.columns.len()
            ),
        ));
    }
    for (index, column) in table.columns.iter().enumerate() {
        check_name(
            "column name",
            &column.name,
            NAME_BYTES_MAX,
            "name_bytes_max",
        )?;
        if table.columns[..index]
            .iter()
            .any(|other| other.name == column.name)
        {
            return Err(invalid(
                "view",
                format!("`{}` has column `{}` twice", table.name, column.name),
            ));
        }
    }
    let key_ok = !table.primary_key.is_empty()
        && table
            .primary_key
            .iter()
            .all(|&index| table.columns.get(index).is_some_and(|c| !c.nullable));
    if !key_ok {
        return Err(invalid(
            "view",
            format!(
                "`{}` needs a primary key of existing NOT NULL columns",
                table.name
            ),
        ));
    }
    Ok(())
}

fn cut_message(message: &str) -> String {
    if message.len() <= FAULT_MESSAGE_BYTES_MAX {
        return message.to_string();
    }
    let mut end = FAULT_MESSAGE_BYTES_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

fn hex_config(config: &[u8]) -> String {
    crate::hex::encode(config)
}

fn config_from_hex(text: &str) -> Result<Vec<u8>, PayloadError> {
    crate::hex::decode(text).ok_or_else(|| PayloadError("config is not hex".into()))
}

impl Kernel {
    fn tenant_for_modules(&self, tenant: TenantId) -> Result<&crate::catalog::Tenant, KernelError> {
        let id = self.data_tenant(tenant)?;
        Ok(self.catalog.tenant(id).expect("data_tenant checked it"))
    }

    pub(super) fn plan_deploy_projection(
        &self,
        tenant: TenantId,
        name: &str,
        module: &[u8],
        config: &[u8],
        tables: &[ViewSchema],
    ) -> Result<Plan, KernelError> {
        let state = self.tenant_for_modules(tenant)?;
        check_name("projection name", name, NAME_BYTES_MAX, "name_bytes_max")?;
        if tables.is_empty() || tables.len() > PROJECTION_TABLES_MAX {
            return Err(invalid(
                "projection",
                format!(
                    "it describes {} tables; a projection has 1 to projection_tables_max ({PROJECTION_TABLES_MAX})",
                    tables.len()
                ),
            ));
        }
        for (index, table) in tables.iter().enumerate() {
            check_view_schema(table)?;
            if tables[..index].iter().any(|other| other.name == table.name) {
                return Err(invalid(
                    "projection",
                    format!("it describes table `{}` twice", table.name),
                ));
            }
            if let Some(user) = state.table_name_user(&table.name, Some(name)) {
                return Err(KernelError::NameInUse(format!(
                    "{user}; projection `{name}` wants a view of that name"
                )));
            }
        }
        let (mut entries, reference) =
            module_entries(RecordKind::DeployProjection, name, module, config)?;
        if let Some(existing) = state.projection(name)
            && let Some(active) = existing.active_version()
            && existing.target.is_none()
            && active.module == reference
            && active.config == config
        {
            let notice = format!(
                "projection `{name}` already runs this module (version {}); nothing deployed",
                active.version
            );
            return Ok(Plan {
                partition: tenant,
                entries: Vec::new(),
                outcome: Outcome::Skipped { notice },
            });
        }
        let manifest = ProjectionDeployed {
            name: name.to_string(),
            module: reference.clone(),
            config: hex_config(config),
            tables: tables
                .iter()
                .map(|table| TableSchema::new(&table.name, &table.columns, &table.primary_key))
                .collect(),
        };
        entries.push(Entry {
            subject: None,
            kind: RecordKind::DeployProjection,
            event_type: EVENT_PROJECTION_DEPLOYED.to_string(),
            stream: name.to_string(),
            payload: payload::to_json(&manifest),
            change: Change::Module(ModuleChange::ProjectionDeployed {
                name: name.to_string(),
                module: reference,
                config: config.to_vec(),
                tables: tables.to_vec(),
                deployed_by: String::new(),
            }),
        });
        Ok(Plan {
            partition: tenant,
            entries,
            outcome: Outcome::ProjectionDeployed {
                name: name.to_string(),
            },
        })
    }

    pub(super) fn plan_activate_projection(
        &self,
        tenant: TenantId,
        name: &str,
        version: Position,
    ) -> Result<Plan, KernelError> {
        let projection = self.projection(tenant, name)?;
        let candidate = projection.version(version).ok_or_else(|| {
            invalid(
                "projection version",
                format!("projection `{name}` has no version {version}"),
            )
        })?;
        if projection.active == Some(version) {
            return Ok(skip(
                tenant,
                format!("version {version} of `{name}` is already active"),
            ));
        }
        if projection.target != Some(version) || candidate.fault.is_some() {
            return Err(invalid(
                "projection version",
                format!(
                    "version {version} of `{name}` is not a healthy version being built; it cannot be activated"
                ),
            ));
        }
        let body = ProjectionActivated {
            name: name.to_string(),
            version,
        };
        Ok(single(
            tenant,
            RecordKind::DeployProjection,
            EVENT_PROJECTION_ACTIVATED,
            name,
            payload::to_json(&body),
            ModuleChange::ProjectionActivated {
                name: name.to_string(),
                version,
            },
            Outcome::ProjectionActivated {
                name: name.to_string(),
                version,
            },
        ))
    }

    pub(super) fn plan_fault_projection(
        &self,
        tenant: TenantId,
        name: &str,
        version: Position,
        position: Position,
        message: &str,
    ) -> Result<Plan, KernelError> {
        let projection = self.projection(tenant, name)?;
        let faulted = projection.version(version).ok_or_else(|| {
            invalid(
                "projection version",
                format!("projection `{name}` has no version {version}"),
            )
        })?;
        if let Some(fault) = &faulted.fault {
            return Ok(skip(
                tenant,
                format!(
                    "version {version} of `{name}` already faulted at position {}",
                    fault.position
                ),
            ));
        }
        let message = cut_message(message);
        let body = ProjectionFaulted {
            name: name.to_string(),
            version,
            position,
            message: message.clone(),
        };
        Ok(single(
            tenant,
            RecordKind::DeployProjection,
            EVENT_PROJECTION_FAULTED,
            name,
            payload::to_json(&body),
            ModuleChange::ProjectionFaulted {
                name: name.to_string(),
                version,
                fault: VersionFault { position, message },
            },
            Outcome::ProjectionFaulted {
                name: name.to_string(),
                version,
            },
        ))
    }

    pub(super) fn plan_rollback_projection(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> Result<Plan, KernelError> {
        let projection = self.projection(tenant, name)?;
        let to = if projection.target.is_some() {
            // A build in progress is what a rollback undoes first: the active version
            // keeps serving.
            None
        } else {
            Some(
                projection
                    .rollback_candidate()
                    .ok_or_else(|| {
                        invalid(
                            "rollback",
                            format!(
                                "projection `{name}` has no earlier healthy version to return to"
                            ),
                        )
                    })?
                    .version,
            )
        };
        let body = RolledBack {
            name: name.to_string(),
            to,
        };
        Ok(single(
            tenant,
            RecordKind::DeployProjection,
            EVENT_PROJECTION_ROLLED_BACK,
            name,
            payload::to_json(&body),
            ModuleChange::ProjectionRolledBack {
                name: name.to_string(),
                to,
            },
            Outcome::ProjectionRolledBack {
                name: name.to_string(),
                to,
            },
        ))
    }

    pub(super) fn plan_deploy_policy(
        &self,
        tenant: TenantId,
        name: &str,
        module: &[u8],
        config: &[u8],
        covers: &[String],
    ) -> Result<Plan, KernelError> {
        let state = self.tenant_for_modules(tenant)?;
        check_name("policy name", name, NAME_BYTES_MAX, "name_bytes_max")?;
        if covers.is_empty() || covers.len() > POLICY_COVERS_MAX {
            return Err(invalid(
                "policy",
                format!(
                    "it covers {} tables; a policy covers 1 to policy_covers_max ({POLICY_COVERS_MAX})",
                    covers.len()
                ),
            ));
        }
        for (index, table) in covers.iter().enumerate() {
            check_name("covered table", table, NAME_BYTES_MAX, "name_bytes_max")?;
            if covers[..index].contains(table) {
                return Err(invalid("policy", format!("it covers `{table}` twice")));
            }
            if let Some((other, _)) = state.policy_covering(table)
                && other.name != name
            {
                return Err(invalid(
                    "policy",
                    format!(
                        "table `{table}` is already masked by policy `{}`; deploy a new version of that policy instead",
                        other.name
                    ),
                ));
            }
        }
        let (mut entries, reference) =
            module_entries(RecordKind::DeployPolicy, name, module, config)?;
        if let Some(active) = state.policy(name).and_then(Policy::active_version)
            && active.module == reference
            && active.config == config
            && active.covers == covers
        {
            return Ok(skip(
                tenant,
                format!(
                    "policy `{name}` already runs this module (version {}); nothing deployed",
                    active.version
                ),
            ));
        }
        let manifest = PolicyDeployed {
            name: name.to_string(),
            module: reference.clone(),
            config: hex_config(config),
            covers: covers.to_vec(),
        };
        entries.push(Entry {
            subject: None,
            kind: RecordKind::DeployPolicy,
            event_type: EVENT_POLICY_DEPLOYED.to_string(),
            stream: name.to_string(),
            payload: payload::to_json(&manifest),
            change: Change::Module(ModuleChange::PolicyDeployed {
                name: name.to_string(),
                module: reference,
                config: config.to_vec(),
                covers: covers.to_vec(),
                deployed_by: String::new(),
            }),
        });
        Ok(Plan {
            partition: tenant,
            entries,
            outcome: Outcome::PolicyDeployed {
                name: name.to_string(),
            },
        })
    }

    pub(super) fn plan_rollback_policy(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> Result<Plan, KernelError> {
        let state = self.tenant_for_modules(tenant)?;
        let policy = state
            .policy(name)
            .ok_or_else(|| KernelError::UnknownModule {
                what: "policy",
                name: name.to_string(),
            })?;
        let to = policy
            .rollback_candidate()
            .ok_or_else(|| {
                invalid(
                    "rollback",
                    format!("policy `{name}` has no earlier version to return to"),
                )
            })?
            .version;
        let body = RolledBack {
            name: name.to_string(),
            to: Some(to),
        };
        Ok(single(
            tenant,
            RecordKind::DeployPolicy,
            EVENT_POLICY_ROLLED_BACK,
            name,
            payload::to_json(&body),
            ModuleChange::PolicyRolledBack {
                name: name.to_string(),
                to,
            },
            Outcome::PolicyRolledBack {
                name: name.to_string(),
                to,
            },
        ))
    }

    fn projection(&self, tenant: TenantId, name: &str) -> Result<&Projection, KernelError> {
        self.tenant_for_modules(tenant)?
            .projection(name)
            .ok_or_else(|| KernelError::UnknownModule {
                what: "projection",
                name: name.to_string(),
            })
    }

    /// The change a stored deploy-kind record makes (replay).
    pub(super) fn decode_module_record(
        &self,
        tenant: TenantId,
        kind: RecordKind,
        event_type: &str,
        principal: &str,
        bytes: &[u8],
    ) -> Result<Change, PayloadError> {
        let refuse = |why: String| Err(PayloadError(why));
        let Some(state) = self.catalog.tenant(tenant) else {
            return refuse(format!("tenant {tenant} does not exist"));
        };
        let change = match (kind, event_type) {
            (_, EVENT_MODULE_CHUNK) => return Ok(Change::None),
            (RecordKind::DeployProjection, EVENT_PROJECTION_DEPLOYED) => {
                let manifest: ProjectionDeployed =
                    payload::from_json(EVENT_PROJECTION_DEPLOYED, bytes)?;
                let tables = manifest
                    .tables
                    .iter()
                    .map(|schema| {
                        let (columns, primary_key) = schema.decode()?;
                        Ok(ViewSchema {
                            name: schema.table.clone(),
                            columns,
                            primary_key,
                        })
                    })
                    .collect::<Result<Vec<_>, PayloadError>>()?;
                ModuleChange::ProjectionDeployed {
                    config: config_from_hex(&manifest.config)?,
                    name: manifest.name,
                    module: manifest.module,
                    tables,
                    deployed_by: principal.to_string(),
                }
            }
            (RecordKind::DeployProjection, EVENT_PROJECTION_ACTIVATED) => {
                let body: ProjectionActivated =
                    payload::from_json(EVENT_PROJECTION_ACTIVATED, bytes)?;
                let known = state
                    .projection(&body.name)
                    .is_some_and(|p| p.target == Some(body.version));
                if !known {
                    return refuse(format!(
                        "version {} of `{}` is not being built",
                        body.version, body.name
                    ));
                }
                ModuleChange::ProjectionActivated {
                    name: body.name,
                    version: body.version,
                }
            }
            (RecordKind::DeployProjection, EVENT_PROJECTION_FAULTED) => {
                let body: ProjectionFaulted = payload::from_json(EVENT_PROJECTION_FAULTED, bytes)?;
                let known = state
                    .projection(&body.name)
                    .and_then(|p| p.version(body.version))
                    .is_some_and(|version| version.fault.is_none());
                if !known {
                    return refuse(format!(
                        "version {} of `{}` is unknown or already faulted",
                        body.version, body.name
                    ));
                }
                ModuleChange::ProjectionFaulted {
                    name: body.name,
                    version: body.version,
                    fault: VersionFault {
                        position: body.position,
                        message: body.message,
                    },
                }
            }
            (RecordKind::DeployProjection, EVENT_PROJECTION_ROLLED_BACK) => {
                let body: RolledBack = payload::from_json(EVENT_PROJECTION_ROLLED_BACK, bytes)?;
                if state.projection(&body.name).is_none() {
                    return refuse(format!("projection `{}` does not exist", body.name));
                }
                ModuleChange::ProjectionRolledBack {
                    name: body.name,
                    to: body.to,
                }
            }
            (RecordKind::DeployPolicy, EVENT_POLICY_DEPLOYED) => {
                let manifest: PolicyDeployed = payload::from_json(EVENT_POLICY_DEPLOYED, bytes)?;
                ModuleChange::PolicyDeployed {
                    config: config_from_hex(&manifest.config)?,
                    name: manifest.name,
                    module: manifest.module,
                    covers: manifest.covers,
                    deployed_by: principal.to_string(),
                }
            }
            (RecordKind::DeployPolicy, EVENT_POLICY_ROLLED_BACK) => {
                let body: RolledBack = payload::from_json(EVENT_POLICY_ROLLED_BACK, bytes)?;
                let Some(to) = body.to else {
                    return refuse("a policy rollback names the version it returns to".into());
                };
                if state
                    .policy(&body.name)
                    .and_then(|policy| policy.version(to))
                    .is_none()
                {
                    return refuse(format!("policy `{}` has no version {to}", body.name));
                }
                ModuleChange::PolicyRolledBack {
                    name: body.name,
                    to,
                }
            }
            (kind, other) => return refuse(format!("unknown {kind} event type `{other}`")),
        };
        Ok(Change::Module(change))
    }

    /// Applies a module change at `position` of `tenant` (validated before).
    pub(super) fn apply_module_change(
        &mut self,
        tenant: TenantId,
        position: Position,
        change: ModuleChange,
        principal: &str,
    ) {
        let state = self
            .catalog
            .tenant_mut(tenant)
            .expect("module changes are validated against an existing tenant");
        match change {
            ModuleChange::ProjectionDeployed {
                name,
                module,
                config,
                tables,
                deployed_by,
            } => {
                let version = ProjectionVersion {
                    version: position,
                    module,
                    config,
                    tables: tables
                        .into_iter()
                        .enumerate()
                        .map(|(index, table)| TableDef {
                            id: view_table_id(position, index),
                            name: table.name,
                            columns: table.columns,
                            primary_key: table.primary_key,
                            created_at: 0,
                            dropped_at: None,
                            subject: None,
                        })
                        .collect(),
                    deployed_by: if deployed_by.is_empty() {
                        principal.to_string()
                    } else {
                        deployed_by
                    },
                    fault: None,
                };
                match state.projection_mut(&name) {
                    Some(projection) => {
                        projection.versions.push(version);
                        projection.target = Some(position);
                    }
                    None => state.insert_projection(Projection {
                        name,
                        versions: vec![version],
                        active: Some(position),
                        target: None,
                    }),
                }
            }
            ModuleChange::ProjectionActivated { name, version } => {
                let projection = state.projection_mut(&name).expect("validated");
                projection.active = Some(version);
                projection.target = None;
            }
            ModuleChange::ProjectionFaulted {
                name,
                version,
                fault,
            } => {
                let projection = state.projection_mut(&name).expect("validated");
                projection.version_mut(version).expect("validated").fault = Some(fault);
            }
            ModuleChange::ProjectionRolledBack { name, to } => {
                let projection = state.projection_mut(&name).expect("validated");
                projection.target = to;
            }
            ModuleChange::PolicyDeployed {
                name,
                module,
                config,
                covers,
                deployed_by,
            } => {
                let version = PolicyVersion {
                    version: position,
                    module,
                    config,
                    covers,
                    deployed_by: if deployed_by.is_empty() {
                        principal.to_string()
                    } else {
                        deployed_by
                    },
                };
                match state.policy_mut(&name) {
                    Some(policy) => {
                        policy.versions.push(version);
                        policy.active = Some(position);
                    }
                    None => state.insert_policy(Policy {
                        name,
                        versions: vec![version],
                        active: Some(position),
                    }),
                }
            }
            ModuleChange::PolicyRolledBack { name, to } => {
                state.policy_mut(&name).expect("validated").active = Some(to);
            }
        }
    }
}

fn skip(tenant: TenantId, notice: String) -> Plan {
    Plan {
        partition: tenant,
        entries: Vec::new(),
        outcome: Outcome::Skipped { notice },
    }
}

fn single(
    tenant: TenantId,
    kind: RecordKind,
    event_type: &str,
    stream: &str,
    payload: Vec<u8>,
    change: ModuleChange,
    outcome: Outcome,
) -> Plan {
    Plan {
        partition: tenant,
        entries: vec![Entry {
            subject: None,
            kind,
            event_type: event_type.to_string(),
            stream: stream.to_string(),
            payload,
            change: Change::Module(change),
        }],
        outcome,
    }
}
