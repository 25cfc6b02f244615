//! The state machine: commands in, records and effects out.
//!
//! `execute` validates a whole command before it produces anything, then produces the
//! records and applies them (catalog in memory, rows through the `RowStore`).
//! `apply_record` replays one stored record with exactly the same state change, which is
//! how a node catches up after a restart from its last snapshot. Both are deterministic:
//! time and identity come in the command, never from a clock.

use crate::access::{FilterKind, Privilege, RowFilter};
use crate::catalog::{Catalog, Quota, TableDef, Token};
use crate::error::ErrorClass;
use crate::expr::{self, AssignError, Columns, ExprError, KeyLookup, NoColumns};
use crate::limits::{
    ACL_ROLES_MAX, APPEND_EVENTS_MAX, ATTRIBUTE_BYTES_MAX, EVENT_PAYLOAD_BYTES_MAX, NAME_BYTES_MAX,
    REASON_BYTES_MAX, ROW_FILTER_BYTES_MAX, STATEMENT_PARAMS_MAX, STATEMENT_ROWS_MAX,
    TABLE_ROW_FILTERS_MAX, TENANT_NAME_BYTES_MAX, TENANT_TABLES_MAX, TOKEN_ATTRIBUTES_MAX,
    TOKEN_ROLES_MAX, VALUE_BYTES_MAX,
};
use crate::payload::{self, PayloadError};
use crate::sql::{self, SqlError, Statement};
use crate::store::{OrderedKey, RowStore, StoreError};
use crate::value::{Column, ColumnType, Position, Row, SYSTEM_TENANT, TableId, TenantId, Value};
use kimberlite_log::{NewRecord, Record, RecordKind, RecordMeta};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One command, as the node ordered it. Time and identity are assigned by the node
/// (the VSR primary), so every replica executes the same command identically.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// The tenant the command acts in; `SYSTEM_TENANT` for node-level commands.
    pub tenant: TenantId,
    /// The client session and its request number (exactly-once), copied into records.
    pub client_id: u128,
    pub request: u64,
    /// Nanoseconds since the epoch, UTC, assigned by the node.
    pub timestamp_ns: u64,
    /// The authenticated principal (the token's name).
    pub principal: String,
    /// Why: the caller's reason, empty when none was given.
    pub reason: String,
    pub body: CommandBody,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CommandBody {
    /// Creates a tenant; only in a node-level command (`tenant = SYSTEM_TENANT`).
    CreateTenant {
        name: String,
        /// Where the tenant's data must live; only nodes of that region hold and serve it
        /// (the host checks its own region before submitting).
        region: Option<String>,
    },
    /// Creates a token in `tenant` (`SYSTEM_TENANT`: a node-admin token), from a
    /// node-level command or one of that same tenant.
    CreateToken {
        tenant: TenantId,
        name: String,
        secret_hash: [u8; 32],
        roles: Vec<String>,
        attributes: Vec<(String, String)>,
    },
    /// One DDL or DML statement (a SELECT is a query, not a command).
    Sql { sql: String, params: Vec<Value> },
    /// Raw application events on streams that are not SQL tables, written atomically
    /// (all or none) at consecutive positions.
    Append { events: Vec<AppendEvent> },
    /// Deploys a projection version (its tables as the module's `describe` gave them;
    /// the host checked the module). The first version serves at once; a later one is
    /// built in the background and activated once it has caught up.
    DeployProjection {
        name: String,
        module: Vec<u8>,
        config: Vec<u8>,
        tables: Vec<ViewSchema>,
    },
    /// The host's runner: the version being built has caught up; it now serves.
    ActivateProjection { name: String, version: Position },
    /// The host's runner: a version faulted at `position`.
    FaultProjection {
        name: String,
        version: Position,
        position: Position,
        message: String,
    },
    /// Cancels a pending build, or (with none pending) returns to the previous version.
    RollbackProjection { name: String },
    /// Deploys a masking policy version; it is active from its record on.
    DeployPolicy {
        name: String,
        module: Vec<u8>,
        config: Vec<u8>,
        covers: Vec<String>,
    },
    /// Makes the policy's previous version active again.
    RollbackPolicy { name: String },
    /// The host: a read of tables that a masking policy covered, a row filter restricted, or
    /// that broke the glass (who and when are the command's principal and time).
    RecordAccess {
        tables: Vec<String>,
        /// `policy@version` of each policy that masked the result.
        policies: Vec<String>,
        purpose: Option<String>,
        /// `table.filter` of each row filter that restricted the read.
        row_filters: Vec<String>,
        /// The emergency reason of a break-glass read.
        emergency: Option<String>,
    },
    /// Starts a new data key for the partition's new records (older records keep theirs).
    RotateKey,
    /// Sets a tenant's quotas (node-level: `tenant = SYSTEM_TENANT`); replaces them all.
    SetQuota { target: TenantId, quota: Quota },
    /// Erases a data subject: its key is destroyed (by the host, once the record is
    /// durable), its rows leave every table and every version, its records read as erased.
    Erase { subject: String },
    /// Erases a whole tenant (node-level: `tenant = SYSTEM_TENANT`): the host destroys its
    /// key-encryption key and every data and subject key once the record is durable; its
    /// rows leave every table and view; nothing may name the tenant again.
    EraseTenant { target: TenantId },
}

/// One application event of an `Append`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEvent {
    pub stream: String,
    pub event_type: String,
    pub payload: Vec<u8>,
    /// The data subject the event is about: encrypted under the subject's own key.
    pub subject: Option<String>,
}

/// What a command did.
#[derive(Clone, Debug, PartialEq)]
pub struct Effects {
    /// The records to append, in order, each with its partition. The host appends them
    /// and asserts the log assigned the positions the kernel expected
    /// (`first_position`, `first_position + 1`, …).
    pub records: Vec<(TenantId, NewRecord)>,
    /// The partition the records go to (the system partition for tenants and tokens).
    pub partition: TenantId,
    /// The position of the first record in `partition`; when there are no records,
    /// the position the next record will get.
    pub first_position: Position,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    TenantCreated {
        tenant: TenantId,
        name: String,
    },
    TokenCreated {
        tenant: TenantId,
        name: String,
    },
    TableCreated {
        table: String,
    },
    TableDropped {
        table: String,
    },
    RowsAffected {
        count: u64,
    },
    Appended {
        count: u64,
    },
    ProjectionDeployed {
        name: String,
    },
    ProjectionActivated {
        name: String,
        version: Position,
    },
    ProjectionFaulted {
        name: String,
        version: Position,
    },
    ProjectionRolledBack {
        name: String,
        to: Option<Position>,
    },
    PolicyDeployed {
        name: String,
    },
    PolicyRolledBack {
        name: String,
        to: Position,
    },
    AccessRecorded,
    /// The partition's new records are encrypted under data key `key_id` from the next
    /// record on; the host must hold that key before it appends them.
    KeyRotated {
        key_id: u32,
    },
    QuotaSet {
        tenant: TenantId,
    },
    /// A subject was erased: the host must destroy key `key_id` once the record is durable.
    SubjectErased {
        subject: String,
        key_id: u32,
    },
    /// A tenant was erased: the host must destroy all its keys once the record is durable.
    TenantErased {
        tenant: TenantId,
        name: String,
        /// Records in its log (all unreadable from now on).
        records: Position,
    },
    /// GRANT, REVOKE, CREATE POLICY or DROP POLICY: what changed.
    AccessChanged {
        summary: String,
    },
    /// Nothing to do (`CREATE TABLE IF NOT EXISTS` of an existing table, `DROP TABLE IF
    /// EXISTS` of a missing one); no records.
    Skipped {
        notice: String,
    },
}

/// Why a command was refused. Nothing was written and the kernel did not change.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Expr(#[from] ExprError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    #[error("the system partition holds no tables or events; send this command to a tenant")]
    SystemPartition,
    #[error("tenants are created by node-level commands (tenant 0), not by tenant {0}")]
    NotNodeLevel(TenantId),
    #[error("tenant `{0}` already exists")]
    TenantExists(String),
    #[error("a command of tenant {issuer} cannot create a token in tenant {target}")]
    CrossTenant { issuer: TenantId, target: TenantId },
    #[error("a token with this secret already exists")]
    DuplicateToken,
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("unknown table `{name}` ({available})")]
    UnknownTable { name: String, available: String },
    #[error("table `{0}` already exists")]
    TableExists(String),
    #[error("{0}")]
    NameInUse(String),
    #[error(
        "the tenant has {count} tables, the most tenant_tables_max allows ({max}); drop one first"
    )]
    TooManyTables { count: usize, max: usize },
    #[error("unknown column `{column}` in table `{table}` (columns: {columns})")]
    UnknownColumn {
        table: String,
        column: String,
        columns: String,
    },
    #[error("column `{column}` of `{table}` is given twice")]
    ColumnTwice { table: String, column: String },
    #[error("INSERT row {row} has {got} values for {expected} columns")]
    ValuesCount {
        row: usize,
        got: usize,
        expected: usize,
    },
    #[error("type mismatch for column `{column}` of `{table}`: expected {expected}, got {got}")]
    TypeMismatch {
        table: String,
        column: String,
        expected: ColumnType,
        got: String,
    },
    #[error("null value in column `{column}` of `{table}`, which is NOT NULL")]
    NullViolation { table: String, column: String },
    #[error(
        "value for column `{column}` of `{table}` is {bytes} bytes, above value_bytes_max ({max} bytes)"
    )]
    ValueTooLarge {
        table: String,
        column: String,
        bytes: usize,
        max: usize,
    },
    #[error("duplicate primary key {key} in table `{table}`")]
    DuplicateKey { table: String, key: String },
    #[error(
        "the statement would write more than statement_rows_max ({max}) rows; narrow its WHERE or split it"
    )]
    TooManyRows { max: usize },
    #[error("{given} parameters given, above statement_params_max ({max})")]
    TooManyParams { given: usize, max: usize },
    #[error("a SELECT is a query, not a command; run it through the query path")]
    QueryAsCommand,
    #[error("stream `{0}` is a SQL table; change its rows with INSERT, UPDATE or DELETE")]
    StreamIsTable(String),
    #[error("cannot replay the record at position {position} of partition {tenant}: {why}")]
    Replay {
        tenant: TenantId,
        position: Position,
        why: String,
    },
    #[error("kernel snapshot does not decode: {0}")]
    Snapshot(String),
    #[error("unknown {what} `{name}`")]
    UnknownModule { what: &'static str, name: String },
    #[error("no policy `{name}` on `{table}`{}", describe_filters(.existing))]
    UnknownRowFilter {
        table: String,
        name: String,
        existing: Vec<String>,
    },
    #[error("policy `{name}` on `{table}` already exists; DROP POLICY {name} ON {table} first")]
    RowFilterExists { table: String, name: String },
    #[error("no record of this tenant names the data subject `{0}`")]
    UnknownSubject(String),
    #[error(
        "data subject `{subject}` was erased at position {position}: its key is destroyed and no record may name it again"
    )]
    SubjectErased { subject: String, position: Position },
    #[error(
        "tenant `{name}` was erased at position {position} of the system log: its keys are destroyed and nothing can be written to, read from or named in it again"
    )]
    TenantErased { name: String, position: Position },
    #[error("{0}")]
    SubjectKeysRefused(String),
    #[error("`{table}` has {max} policies, the most table_row_filters_max allows; drop one first")]
    TooManyRowFilters { table: String, max: usize },
}

/// ` (policies: a, b)` or ` (it has none)`.
fn describe_filters(existing: &[String]) -> String {
    if existing.is_empty() {
        " (it has none)".to_string()
    } else {
        format!(" (policies: {})", existing.join(", "))
    }
}

impl KernelError {
    /// The class of this refusal, for the wire protocol.
    pub fn code(&self) -> ErrorClass {
        match self {
            KernelError::Sql(error) => error.code(),
            KernelError::Expr(error) => error.code(),
            KernelError::Store(_) | KernelError::Replay { .. } | KernelError::Snapshot(_) => {
                ErrorClass::Internal
            }
            KernelError::UnknownTenant(_)
            | KernelError::UnknownTable { .. }
            | KernelError::UnknownColumn { .. }
            | KernelError::UnknownModule { .. }
            | KernelError::UnknownRowFilter { .. }
            | KernelError::UnknownSubject(_) => ErrorClass::NotFound,
            KernelError::TenantExists(_)
            | KernelError::DuplicateToken
            | KernelError::TableExists(_)
            | KernelError::NameInUse(_)
            | KernelError::DuplicateKey { .. }
            | KernelError::RowFilterExists { .. }
            | KernelError::SubjectErased { .. }
            | KernelError::TenantErased { .. } => ErrorClass::Conflict,
            KernelError::TooManyTables { .. }
            | KernelError::TooManyRowFilters { .. }
            | KernelError::ValueTooLarge { .. }
            | KernelError::TooManyRows { .. }
            | KernelError::TooManyParams { .. } => ErrorClass::TooLarge,
            KernelError::CrossTenant { .. } => ErrorClass::PermissionDenied,
            KernelError::ColumnTwice { .. }
            | KernelError::ValuesCount { .. }
            | KernelError::TypeMismatch { .. } => ErrorClass::BadSql,
            KernelError::SystemPartition
            | KernelError::NotNodeLevel(_)
            | KernelError::Invalid { .. }
            | KernelError::NullViolation { .. }
            | KernelError::QueryAsCommand
            | KernelError::SubjectKeysRefused(_)
            | KernelError::StreamIsTable(_) => ErrorClass::BadRequest,
        }
    }
}

/// Where a partition's next record goes, the timestamp records may not go below, and the
/// data key its records are encrypted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub next_position: Position,
    pub last_timestamp_ns: u64,
    /// The id of the partition's current data key: [`FIRST_DATA_KEY_ID`], then one more at
    /// every `RotateKey`.
    #[serde(default = "first_data_key_id")]
    pub data_key: u32,
}

impl Default for Partition {
    fn default() -> Partition {
        Partition {
            next_position: 0,
            last_timestamp_ns: 0,
            data_key: FIRST_DATA_KEY_ID,
        }
    }
}

/// The data key every partition starts with.
pub const FIRST_DATA_KEY_ID: u32 = 1;
/// Data key ids stay below this; ids from here on belong to data subjects' keys.
pub const SUBJECT_KEY_ID_FIRST: u32 = 1 << 31;

fn first_data_key_id() -> u32 {
    FIRST_DATA_KEY_ID
}

/// The kernel: catalog plus per-partition positions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Kernel {
    catalog: Catalog,
    partitions: BTreeMap<TenantId, Partition>,
    /// Set by a cluster's state machine (equal on every replica; not in the snapshot).
    subject_keys_refused: bool,
}

/// The snapshot layout; `format` changes whenever the layout does.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    format: u32,
    catalog: Catalog,
    partitions: BTreeMap<TenantId, Partition>,
}

const SNAPSHOT_FORMAT: u32 = 1;

/// One state change, the unit both `execute` and `apply_record` apply.
#[derive(Clone, Debug, PartialEq)]
enum Change {
    TenantCreated {
        name: String,
        region: Option<String>,
    },
    TokenCreated(Token),
    TableCreated {
        name: String,
        columns: Vec<Column>,
        primary_key: Vec<usize>,
        subject: Option<usize>,
    },
    TableDropped {
        name: String,
    },
    Upsert {
        table: TableId,
        key: Vec<Value>,
        row: Row,
    },
    Remove {
        table: TableId,
        key: Vec<Value>,
    },
    /// Deployed Wasm: projections and policies.
    Module(deploy::ModuleChange),
    /// GRANT (`revoke: false`) or REVOKE on a table or view name.
    Grant {
        table: String,
        privileges: Vec<Privilege>,
        roles: Vec<String>,
        revoke: bool,
    },
    /// CREATE POLICY; its position and principal come from the record.
    RowFilterCreated {
        table: String,
        name: String,
        kind: FilterKind,
        roles: Vec<String>,
        using: String,
    },
    RowFilterDropped {
        table: String,
        name: String,
    },
    /// The partition's data key becomes `key_id` after this record.
    KeyRotated {
        key_id: u32,
    },
    /// A tenant's quotas change (a record of the system partition).
    QuotaSet {
        tenant: TenantId,
        quota: Quota,
    },
    /// A data subject's first record: it gets key `key_id`.
    SubjectKeyCreated {
        subject: String,
        key_id: u32,
    },
    /// The subject's rows leave every table, in every version.
    SubjectErased {
        subject: String,
    },
    /// Every row of the tenant leaves every table; the catalog keeps its tombstone (a
    /// record of the system partition).
    TenantErased {
        tenant: TenantId,
    },
    /// A record that changes no kernel state (application events).
    None,
}

/// A record to write and the change it makes.
struct Entry {
    /// The data subject the record names: encrypted under the subject's key.
    subject: Option<String>,
    kind: RecordKind,
    event_type: String,
    stream: String,
    payload: Vec<u8>,
    change: Change,
}

/// A validated command, ready to become records.
struct Plan {
    partition: TenantId,
    entries: Vec<Entry>,
    outcome: Outcome,
}

impl Kernel {
    pub fn new() -> Kernel {
        Kernel::default()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The position the next record of `tenant`'s partition gets (0 for a new partition).
    pub fn next_position(&self, tenant: TenantId) -> Position {
        self.partition(tenant).next_position
    }

    /// The timestamp of the partition's last record (0 before any).
    pub fn last_timestamp(&self, tenant: TenantId) -> u64 {
        self.partition(tenant).last_timestamp_ns
    }

    fn partition(&self, tenant: TenantId) -> Partition {
        self.partitions.get(&tenant).copied().unwrap_or_default()
    }

    /// Validates `cmd`, produces its records and applies them. All-or-nothing: on an
    /// error nothing is produced, and the kernel has not changed. If `rows` itself fails
    /// (`KernelError::Store`) some rows may have been written to it: the host must abort
    /// the store's transaction.
    pub fn execute(
        &mut self,
        cmd: &Command,
        rows: &mut dyn RowStore,
    ) -> Result<Effects, KernelError> {
        if cmd.reason.len() > REASON_BYTES_MAX {
            return Err(KernelError::Invalid {
                what: "reason",
                why: format!(
                    "it is {} bytes, above reason_bytes_max ({REASON_BYTES_MAX} bytes)",
                    cmd.reason.len()
                ),
            });
        }
        if cmd.tenant != SYSTEM_TENANT {
            // Every command of a tenant, whatever its body, is refused once it is erased.
            self.data_tenant(cmd.tenant)?;
        }
        let plan = match &cmd.body {
            CommandBody::CreateTenant { name, region } => {
                self.plan_create_tenant(cmd, name, region.as_deref())?
            }
            CommandBody::CreateToken {
                tenant,
                name,
                secret_hash,
                roles,
                attributes,
            } => self.plan_create_token(cmd, *tenant, name, secret_hash, roles, attributes)?,
            CommandBody::Sql { sql, params } => self.plan_sql(cmd, sql, params, rows)?,
            CommandBody::Append { events } => self.plan_append(cmd, events)?,
            CommandBody::DeployProjection {
                name,
                module,
                config,
                tables,
            } => self.plan_deploy_projection(cmd.tenant, name, module, config, tables)?,
            CommandBody::ActivateProjection { name, version } => {
                self.plan_activate_projection(cmd.tenant, name, *version)?
            }
            CommandBody::FaultProjection {
                name,
                version,
                position,
                message,
            } => self.plan_fault_projection(cmd.tenant, name, *version, *position, message)?,
            CommandBody::RollbackProjection { name } => {
                self.plan_rollback_projection(cmd.tenant, name)?
            }
            CommandBody::DeployPolicy {
                name,
                module,
                config,
                covers,
            } => self.plan_deploy_policy(cmd.tenant, name, module, config, covers)?,
            CommandBody::RollbackPolicy { name } => self.plan_rollback_policy(cmd.tenant, name)?,
            CommandBody::RecordAccess {
                tables,
                policies,
                purpose,
                row_filters,
                emergency,
            } => {
                let tenant = self.data_tenant(cmd.tenant)?;
                if let Some(emergency) = emergency
                    && (emergency.trim().is_empty() || emergency.len() > REASON_BYTES_MAX)
                {
                    return Err(KernelError::Invalid {
                        what: "emergency reason",
                        why: format!(
                            "it is {} bytes; give 1 to reason_bytes_max ({REASON_BYTES_MAX}) bytes saying why",
                            emergency.len()
                        ),
                    });
                }
                let access = payload::Access {
                    tables: tables.clone(),
                    policies: policies.clone(),
                    purpose: purpose.clone(),
                    row_filters: row_filters.clone(),
                    emergency: emergency.clone(),
                };
                Plan {
                    partition: tenant,
                    entries: vec![Entry {
                        subject: None,
                        kind: RecordKind::Access,
                        event_type: payload::EVENT_READ.to_string(),
                        stream: payload::STREAM_ACCESS.to_string(),
                        payload: payload::to_json(&access),
                        change: Change::None,
                    }],
                    outcome: Outcome::AccessRecorded,
                }
            }
            CommandBody::RotateKey => self.plan_rotate_key(cmd)?,
            CommandBody::SetQuota { target, quota } => {
                self.plan_set_quota(cmd, *target, quota.clone())?
            }
            CommandBody::Erase { subject } => self.plan_erase(cmd, subject)?,
            CommandBody::EraseTenant { target } => self.plan_erase_tenant(cmd, *target)?,
        };
        self.commit(cmd, plan, rows)
    }

    fn commit(
        &mut self,
        cmd: &Command,
        plan: Plan,
        rows: &mut dyn RowStore,
    ) -> Result<Effects, KernelError> {
        let partition = self.partition(plan.partition);
        let first_position = partition.next_position;
        // A rotation takes effect after its own record: the whole plan uses the key current
        // when it started.
        let key_id = partition.data_key;
        // Timestamps never decrease within a partition, whatever the node's clock did.
        let timestamp_ns = cmd.timestamp_ns.max(partition.last_timestamp_ns);
        let entries = self.with_subject_keys(plan.partition, plan.entries)?;
        let mut records = Vec::with_capacity(entries.len());
        let mut changes = Vec::with_capacity(entries.len());
        for (offset, (entry, key_id)) in entries
            .into_iter()
            .map(|(entry, subject_key)| (entry, subject_key.unwrap_or(key_id)))
            .enumerate()
        {
            let meta = RecordMeta {
                kind: entry.kind,
                event_type: entry.event_type,
                op: 0,
                timestamp_ns,
                client_id: cmd.client_id,
                request: cmd.request,
                stream: entry.stream,
                principal: cmd.principal.clone(),
                reason: cmd.reason.clone(),
            };
            records.push((
                plan.partition,
                NewRecord {
                    meta,
                    key_id,
                    payload: entry.payload,
                },
            ));
            changes.push((first_position + offset as u64, entry.change));
        }
        self.apply_changes(plan.partition, changes, &cmd.principal, rows)?;
        if !records.is_empty() {
            let state = self.partitions.entry(plan.partition).or_default();
            state.next_position = first_position + records.len() as u64;
            state.last_timestamp_ns = timestamp_ns;
        }
        Ok(Effects {
            records,
            partition: plan.partition,
            first_position,
            outcome: plan.outcome,
        })
    }

    /// Pairs each entry with its subject's key id (`None`: the partition's data key),
    /// putting a `SubjectKeyCreated` before the first record of a subject never seen.
    /// A subject that was erased cannot be named again.
    fn with_subject_keys(
        &self,
        tenant: TenantId,
        entries: Vec<Entry>,
    ) -> Result<Vec<(Entry, Option<u32>)>, KernelError> {
        if entries.iter().all(|entry| entry.subject.is_none()) {
            return Ok(entries.into_iter().map(|entry| (entry, None)).collect());
        }
        if self.subject_keys_refused {
            return Err(subject_keys_refused());
        }
        let state = self
            .catalog
            .tenant(tenant)
            .ok_or(KernelError::UnknownTenant(tenant))?;
        let mut created: BTreeMap<String, u32> = BTreeMap::new();
        let mut out = Vec::with_capacity(entries.len() + 1);
        for entry in entries {
            let Some(subject) = entry.subject.clone() else {
                out.push((entry, None));
                continue;
            };
            check_name("subject", &subject, NAME_BYTES_MAX, "name_bytes_max")?;
            let key_id = match (state.subject(&subject), created.get(&subject)) {
                (Some(known), _) => {
                    if let Some(erased_at) = known.erased_at {
                        return Err(KernelError::SubjectErased {
                            subject,
                            position: erased_at,
                        });
                    }
                    known.key_id
                }
                (None, Some(&key_id)) => key_id,
                (None, None) => {
                    let key_id = state.next_subject_key() + created.len() as u32;
                    created.insert(subject.clone(), key_id);
                    let key = payload::SubjectKey {
                        subject: subject.clone(),
                        key_id,
                    };
                    out.push((
                        Entry {
                            subject: None,
                            kind: RecordKind::KeyRotation,
                            event_type: payload::EVENT_SUBJECT_KEY_CREATED.to_string(),
                            stream: payload::STREAM_KEYS.to_string(),
                            payload: payload::to_json(&key),
                            change: Change::SubjectKeyCreated {
                                subject: subject.clone(),
                                key_id,
                            },
                        },
                        None,
                    ));
                    key_id
                }
            };
            out.push((entry, Some(key_id)));
        }
        Ok(out)
    }

    /// In a cluster: per-subject keys (and erasure) are refused, since a cluster's keys are
    /// derived from its shared secret and a derived key cannot be destroyed.
    pub fn refuse_subject_keys(&mut self) {
        self.subject_keys_refused = true;
    }

    /// Row changes first (the only ones that can fail), then catalog changes, so a store
    /// failure leaves the kernel as it was.
    fn apply_changes(
        &mut self,
        tenant: TenantId,
        mut changes: Vec<(Position, Change)>,
        principal: &str,
        rows: &mut dyn RowStore,
    ) -> Result<(), KernelError> {
        for (position, change) in &mut changes {
            match change {
                // The row moves into the store; the catalog pass below ignores row changes.
                Change::Upsert { table, key, row } => {
                    rows.upsert(tenant, *table, key, std::mem::take(row), *position)?
                }
                Change::Remove { table, key } => rows.remove(tenant, *table, key, *position)?,
                Change::SubjectErased { subject } => {
                    let tables = self
                        .catalog
                        .tenant(tenant)
                        .map(|state| state.subject_tables())
                        .unwrap_or_default();
                    for (table, column) in tables {
                        rows.purge(tenant, table, &|row: &Row| {
                            subject_text(&row[column]).as_deref() == Some(subject.as_str())
                        })?;
                    }
                }
                Change::TenantErased { tenant: target } => {
                    let tables: Vec<TableId> = self
                        .catalog
                        .table_history(*target)
                        .iter()
                        .map(|table| table.id)
                        .collect();
                    for table in tables {
                        rows.purge(*target, table, &|_: &Row| true)?;
                    }
                }
                _ => {}
            }
        }
        for (position, change) in changes {
            match change {
                Change::TenantCreated { name, region } => {
                    let id = self.catalog.next_tenant_id();
                    self.catalog.add_tenant(id, name, region, position);
                }
                Change::TokenCreated(token) => self.catalog.add_token(token),
                Change::TableCreated {
                    name,
                    columns,
                    primary_key,
                    subject,
                } => self.catalog.add_table(
                    tenant,
                    TableDef {
                        id: position,
                        name,
                        columns,
                        primary_key,
                        created_at: position,
                        dropped_at: None,
                        subject,
                    },
                ),
                Change::TableDropped { name } => self.catalog.drop_table(tenant, &name, position),
                Change::Module(change) => {
                    self.apply_module_change(tenant, position, change, principal)
                }
                Change::Grant {
                    table,
                    privileges,
                    roles,
                    revoke,
                } => {
                    let state = self
                        .catalog
                        .tenant_mut(tenant)
                        .expect("grants are made in existing tenants");
                    if revoke {
                        state.revoke(&table, &roles, &privileges);
                    } else {
                        state.grant(&table, &roles, &privileges);
                    }
                }
                Change::RowFilterCreated {
                    table,
                    name,
                    kind,
                    roles,
                    using,
                } => self
                    .catalog
                    .tenant_mut(tenant)
                    .expect("policies are created in existing tenants")
                    .add_row_filter(RowFilter {
                        name,
                        table,
                        kind,
                        roles,
                        using,
                        created_at: position,
                        created_by: principal.to_string(),
                    }),
                Change::RowFilterDropped { table, name } => self
                    .catalog
                    .tenant_mut(tenant)
                    .expect("policies are dropped in existing tenants")
                    .drop_row_filter(&table, &name),
                Change::KeyRotated { key_id } => {
                    self.partitions.entry(tenant).or_default().data_key = key_id;
                }
                Change::QuotaSet {
                    tenant: target,
                    quota,
                } => self
                    .catalog
                    .tenant_mut(target)
                    .expect("quotas are set on existing tenants")
                    .set_quota(quota),
                Change::SubjectKeyCreated { subject, key_id } => self
                    .catalog
                    .tenant_mut(tenant)
                    .expect("subjects live in existing tenants")
                    .add_subject(subject, key_id, position),
                Change::SubjectErased { subject } => self
                    .catalog
                    .tenant_mut(tenant)
                    .expect("subjects live in existing tenants")
                    .erase_subject(&subject, position),
                Change::TenantErased { tenant: target } => {
                    self.catalog.erase_tenant(target, position)
                }
                Change::Upsert { .. } | Change::Remove { .. } | Change::None => {}
            }
        }
        Ok(())
    }

    /// Replays one stored record of `tenant`'s partition: the same change `execute` made
    /// when it produced the record. Records must come in position order, from
    /// `next_position(tenant)` on, and the system partition before the tenants' (it creates
    /// them, and says which were erased: their records no longer decrypt).
    pub fn apply_record(
        &mut self,
        tenant: TenantId,
        record: &Record,
        rows: &mut dyn RowStore,
    ) -> Result<(), KernelError> {
        let position = record.header.position;
        let replay = |why: String| KernelError::Replay {
            tenant,
            position,
            why,
        };
        let expected = self.next_position(tenant);
        if position != expected {
            return Err(replay(format!("expected position {expected} next")));
        }
        let change = self
            .decode_record(tenant, record)
            .map_err(|PayloadError(why)| replay(why))?;
        self.apply_changes(
            tenant,
            vec![(position, change)],
            &record.header.meta.principal,
            rows,
        )?;
        let state = self.partitions.entry(tenant).or_default();
        state.next_position = position + 1;
        state.last_timestamp_ns = state.last_timestamp_ns.max(record.header.meta.timestamp_ns);
        Ok(())
    }

    fn decode_record(&self, tenant: TenantId, record: &Record) -> Result<Change, PayloadError> {
        let meta = &record.header.meta;
        let bytes = record.payload.as_slice();
        let refuse = |why: String| Err(PayloadError(why));
        if self.erased_at(tenant).is_some() {
            // An erased tenant's records changed only its own state, which the erasure
            // removed whole (its records read as erased once its keys are destroyed; until
            // then, after a crash, they may still decrypt).
            return Ok(Change::None);
        }
        if record.erased {
            // Under an erased subject's destroyed key: the erasure removed whatever the
            // record changed, so replaying it changes nothing. Only records naming a
            // subject are under a subject's key.
            if record.header.key_id < SUBJECT_KEY_ID_FIRST {
                return refuse(format!(
                    "its data key {} is destroyed, but only subjects' keys are",
                    record.header.key_id
                ));
            }
            return Ok(Change::None);
        }
        match (meta.kind, meta.event_type.as_str()) {
            (RecordKind::Catalog, payload::EVENT_TENANT_CREATED) => {
                let created: payload::TenantCreated = payload::from_json("TenantCreated", bytes)?;
                if tenant != SYSTEM_TENANT || created.tenant != self.catalog.next_tenant_id() {
                    return refuse(format!(
                        "tenant {} is not the next tenant of the system partition",
                        created.tenant
                    ));
                }
                if self.catalog.tenant_by_name(&created.name).is_some() {
                    return refuse(format!("tenant `{}` already exists", created.name));
                }
                if let Some(region) = &created.region {
                    check_region(region).map_err(|error| PayloadError(error.to_string()))?;
                }
                Ok(Change::TenantCreated {
                    name: created.name,
                    region: created.region,
                })
            }
            (RecordKind::Catalog, payload::EVENT_QUOTA_SET) => {
                let set: payload::QuotaSet = payload::from_json("QuotaSet", bytes)?;
                if tenant != SYSTEM_TENANT || self.catalog.tenant(set.tenant).is_none() {
                    return refuse(format!(
                        "a quota of tenant {} outside the system partition or of no tenant",
                        set.tenant
                    ));
                }
                Ok(Change::QuotaSet {
                    tenant: set.tenant,
                    quota: set.quota,
                })
            }
            (RecordKind::Catalog, payload::EVENT_TOKEN_CREATED) => {
                let created: payload::TokenCreated = payload::from_json("TokenCreated", bytes)?;
                let secret_hash = crate::hex::decode(&created.secret_hash)
                    .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                    .ok_or_else(|| PayloadError("secret_hash is not 64 hex digits".to_string()))?;
                if tenant != SYSTEM_TENANT || created.token != self.catalog.next_token_id() {
                    return refuse(format!(
                        "token {} is not the next token of the system partition",
                        created.token
                    ));
                }
                if self.catalog.token_by_hash(&secret_hash).is_some() {
                    return refuse("a token with this secret hash already exists".to_string());
                }
                Ok(Change::TokenCreated(Token {
                    id: created.token,
                    tenant: created.tenant,
                    name: created.name,
                    secret_hash,
                    roles: created.roles,
                    attributes: created.attributes,
                }))
            }
            (RecordKind::Ddl, payload::EVENT_CREATE_TABLE) => {
                let schema: payload::TableSchema = payload::from_json("CreateTable", bytes)?;
                let (columns, primary_key) = schema.decode()?;
                let subject = schema.subject_index(&columns)?;
                if self.catalog.tenant(tenant).is_none() {
                    return refuse(format!("tenant {tenant} does not exist"));
                }
                if self.catalog.table_at(tenant, &schema.table, None).is_some() {
                    return refuse(format!("table `{}` already exists", schema.table));
                }
                Ok(Change::TableCreated {
                    name: schema.table,
                    columns,
                    primary_key,
                    subject,
                })
            }
            (RecordKind::Ddl, payload::EVENT_DROP_TABLE) => {
                let dropped: payload::DropTable = payload::from_json("DropTable", bytes)?;
                match self.catalog.table_at(tenant, &dropped.table, None) {
                    Some(table) if table.id == dropped.table_id => Ok(Change::TableDropped {
                        name: dropped.table,
                    }),
                    _ => refuse(format!(
                        "table `{}` with id {} is not current",
                        dropped.table, dropped.table_id
                    )),
                }
            }
            (RecordKind::Ddl, payload::EVENT_GRANT | payload::EVENT_REVOKE) => {
                let grant: payload::Grant = payload::from_json(&meta.event_type, bytes)?;
                if self.catalog.tenant(tenant).is_none() {
                    return refuse(format!("tenant {tenant} does not exist"));
                }
                if grant.privileges.is_empty() || grant.roles.is_empty() {
                    return refuse(format!(
                        "a {} names no privilege or no role",
                        meta.event_type
                    ));
                }
                Ok(Change::Grant {
                    table: grant.table,
                    privileges: grant.privileges,
                    roles: grant.roles,
                    revoke: meta.event_type == payload::EVENT_REVOKE,
                })
            }
            (RecordKind::Ddl, payload::EVENT_CREATE_POLICY) => {
                let created: payload::CreatePolicy = payload::from_json("CreatePolicy", bytes)?;
                let Some(state) = self.catalog.tenant(tenant) else {
                    return refuse(format!("tenant {tenant} does not exist"));
                };
                if state.row_filter(&created.table, &created.name).is_some() {
                    return refuse(format!(
                        "policy `{}` on `{}` already exists",
                        created.name, created.table
                    ));
                }
                Ok(Change::RowFilterCreated {
                    table: created.table,
                    name: created.name,
                    kind: created.kind,
                    roles: created.roles,
                    using: created.using,
                })
            }
            (RecordKind::Ddl, payload::EVENT_DROP_POLICY) => {
                let dropped: payload::DropPolicy = payload::from_json("DropPolicy", bytes)?;
                let exists = self
                    .catalog
                    .tenant(tenant)
                    .and_then(|state| state.row_filter(&dropped.table, &dropped.name))
                    .is_some();
                if !exists {
                    return refuse(format!(
                        "policy `{}` on `{}` does not exist",
                        dropped.name, dropped.table
                    ));
                }
                Ok(Change::RowFilterDropped {
                    table: dropped.table,
                    name: dropped.name,
                })
            }
            (RecordKind::Event, event_type) => {
                // A stream names a SQL table only while the table exists: appends to a
                // table's stream are refused, so such records are the table's own rows.
                let Some(table) = self.catalog.table_at(tenant, &meta.stream, None) else {
                    return Ok(Change::None);
                };
                match event_type {
                    payload::EVENT_ROW_INSERTED | payload::EVENT_ROW_UPDATED => {
                        let all: Vec<usize> = (0..table.columns.len()).collect();
                        let row = payload::decode_row(&table.columns, &all, bytes)?;
                        Ok(Change::Upsert {
                            table: table.id,
                            key: table.key_of(&row),
                            row,
                        })
                    }
                    payload::EVENT_ROW_DELETED => {
                        let row = payload::decode_row(&table.columns, &table.primary_key, bytes)?;
                        Ok(Change::Remove {
                            table: table.id,
                            key: table.key_of(&row),
                        })
                    }
                    other => refuse(format!(
                        "event type `{other}` on table stream `{}`",
                        table.name
                    )),
                }
            }
            (RecordKind::DeployProjection | RecordKind::DeployPolicy, event_type) => {
                self.decode_module_record(tenant, meta.kind, event_type, &meta.principal, bytes)
            }
            (RecordKind::KeyRotation, payload::EVENT_KEY_ROTATED) => {
                let rotated: payload::KeyRotated = payload::from_json("KeyRotated", bytes)?;
                let current = self.partition(tenant).data_key;
                if rotated.previous != current || rotated.key_id != current + 1 {
                    return refuse(format!(
                        "rotation from data key {} to {} does not follow the current key {current}",
                        rotated.previous, rotated.key_id
                    ));
                }
                Ok(Change::KeyRotated {
                    key_id: rotated.key_id,
                })
            }
            (RecordKind::KeyRotation, payload::EVENT_SUBJECT_KEY_CREATED) => {
                let key: payload::SubjectKey = payload::from_json("SubjectKeyCreated", bytes)?;
                let Some(state) = self.catalog.tenant(tenant) else {
                    return refuse(format!("tenant {tenant} does not exist"));
                };
                if state.subject(&key.subject).is_some() || key.key_id != state.next_subject_key() {
                    return refuse(format!(
                        "subject key {} of `{}` is not the next new subject's key",
                        key.key_id, key.subject
                    ));
                }
                Ok(Change::SubjectKeyCreated {
                    subject: key.subject,
                    key_id: key.key_id,
                })
            }
            (RecordKind::Erasure, payload::EVENT_TENANT_ERASED) => {
                let erased: payload::TenantErased = payload::from_json("TenantErased", bytes)?;
                let known = self.catalog.tenant(erased.tenant);
                match known {
                    Some(known)
                        if tenant == SYSTEM_TENANT
                            && known.erased_at.is_none()
                            && known.name == erased.name =>
                    {
                        Ok(Change::TenantErased {
                            tenant: erased.tenant,
                        })
                    }
                    _ => refuse(format!(
                        "tenant {} (`{}`) is not a tenant the system partition can erase",
                        erased.tenant, erased.name
                    )),
                }
            }
            (RecordKind::Erasure, payload::EVENT_SUBJECT_ERASED) => {
                let erased: payload::SubjectKey = payload::from_json("SubjectErased", bytes)?;
                let known = self
                    .catalog
                    .tenant(tenant)
                    .and_then(|state| state.subject(&erased.subject));
                match known {
                    Some(known) if known.erased_at.is_none() && known.key_id == erased.key_id => {
                        Ok(Change::SubjectErased {
                            subject: erased.subject,
                        })
                    }
                    _ => refuse(format!(
                        "subject `{}` with key {} is not a subject that can be erased",
                        erased.subject, erased.key_id
                    )),
                }
            }
            (RecordKind::Catalog | RecordKind::Ddl, other) => {
                refuse(format!("unknown {} event type `{other}`", meta.kind))
            }
            // Keys and erasure belong to later layers; the kernel's
            // state does not change.
            _ => Ok(Change::None),
        }
    }

    /// The kernel's whole state as deterministic bytes (JSON; maps in key order).
    pub fn snapshot(&self) -> Vec<u8> {
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            catalog: self.catalog.clone(),
            partitions: self.partitions.clone(),
        };
        serde_json::to_vec(&snapshot).expect("the kernel state always serializes")
    }

    pub fn restore(bytes: &[u8]) -> Result<Kernel, KernelError> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)
            .map_err(|error| KernelError::Snapshot(error.to_string()))?;
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(KernelError::Snapshot(format!(
                "format {} is not the supported format {SNAPSHOT_FORMAT}",
                snapshot.format
            )));
        }
        Ok(Kernel {
            catalog: snapshot.catalog,
            partitions: snapshot.partitions,
            subject_keys_refused: false,
        })
    }

    fn plan_create_tenant(
        &self,
        cmd: &Command,
        name: &str,
        region: Option<&str>,
    ) -> Result<Plan, KernelError> {
        if cmd.tenant != SYSTEM_TENANT {
            return Err(KernelError::NotNodeLevel(cmd.tenant));
        }
        check_tenant_name(name)?;
        if let Some(region) = region {
            check_region(region)?;
        }
        if let Some(existing) = self.catalog.tenant_by_name(name) {
            if let Some(position) = existing.erased_at {
                return Err(KernelError::TenantErased {
                    name: name.to_string(),
                    position,
                });
            }
            return Err(KernelError::TenantExists(name.to_string()));
        }
        let tenant = self.catalog.next_tenant_id();
        let created = payload::TenantCreated {
            tenant,
            name: name.to_string(),
            region: region.map(str::to_string),
        };
        Ok(Plan {
            partition: SYSTEM_TENANT,
            entries: vec![Entry {
                subject: None,
                kind: RecordKind::Catalog,
                event_type: payload::EVENT_TENANT_CREATED.to_string(),
                stream: payload::STREAM_TENANTS.to_string(),
                payload: payload::to_json(&created),
                change: Change::TenantCreated {
                    name: name.to_string(),
                    region: region.map(str::to_string),
                },
            }],
            outcome: Outcome::TenantCreated {
                tenant,
                name: name.to_string(),
            },
        })
    }

    fn plan_create_token(
        &self,
        cmd: &Command,
        target: TenantId,
        name: &str,
        secret_hash: &[u8; 32],
        roles: &[String],
        attributes: &[(String, String)],
    ) -> Result<Plan, KernelError> {
        if target != SYSTEM_TENANT {
            self.data_tenant(target)?;
        }
        if cmd.tenant != SYSTEM_TENANT && cmd.tenant != target {
            return Err(KernelError::CrossTenant {
                issuer: cmd.tenant,
                target,
            });
        }
        check_name("token name", name, NAME_BYTES_MAX, "name_bytes_max")?;
        if roles.is_empty() || roles.len() > TOKEN_ROLES_MAX {
            return Err(KernelError::Invalid {
                what: "roles",
                why: format!(
                    "a token has 1 to token_roles_max ({TOKEN_ROLES_MAX}) roles, got {}",
                    roles.len()
                ),
            });
        }
        for (index, role) in roles.iter().enumerate() {
            check_name("role", role, NAME_BYTES_MAX, "name_bytes_max")?;
            if roles[..index].contains(role) {
                return Err(KernelError::Invalid {
                    what: "roles",
                    why: format!("role `{role}` is given twice"),
                });
            }
        }
        if attributes.len() > TOKEN_ATTRIBUTES_MAX {
            return Err(KernelError::Invalid {
                what: "attributes",
                why: format!(
                    "{} attributes, above token_attributes_max ({TOKEN_ATTRIBUTES_MAX})",
                    attributes.len()
                ),
            });
        }
        for (index, (key, value)) in attributes.iter().enumerate() {
            check_name(
                "attribute key",
                key,
                ATTRIBUTE_BYTES_MAX,
                "attribute_bytes_max",
            )?;
            if value.len() > ATTRIBUTE_BYTES_MAX {
                return Err(KernelError::Invalid {
                    what: "attribute value",
                    why: format!(
                        "`{key}` is {} bytes, above attribute_bytes_max ({ATTRIBUTE_BYTES_MAX} bytes)",
                        value.len()
                    ),
                });
            }
            if attributes[..index].iter().any(|(other, _)| other == key) {
                return Err(KernelError::Invalid {
                    what: "attributes",
                    why: format!("`{key}` is given twice"),
                });
            }
        }
        if self.catalog.token_by_hash(secret_hash).is_some() {
            return Err(KernelError::DuplicateToken);
        }
        let token = Token {
            id: self.catalog.next_token_id(),
            tenant: target,
            name: name.to_string(),
            secret_hash: *secret_hash,
            roles: roles.to_vec(),
            attributes: attributes.to_vec(),
        };
        let created = payload::TokenCreated {
            token: token.id,
            tenant: target,
            name: token.name.clone(),
            secret_hash: crate::hex::encode(secret_hash),
            roles: token.roles.clone(),
            attributes: token.attributes.clone(),
        };
        Ok(Plan {
            partition: SYSTEM_TENANT,
            entries: vec![Entry {
                subject: None,
                kind: RecordKind::Catalog,
                event_type: payload::EVENT_TOKEN_CREATED.to_string(),
                stream: payload::STREAM_TOKENS.to_string(),
                payload: payload::to_json(&created),
                change: Change::TokenCreated(token),
            }],
            outcome: Outcome::TokenCreated {
                tenant: target,
                name: name.to_string(),
            },
        })
    }

    /// The tenant a data command acts in: an existing tenant, never the system partition.
    fn data_tenant(&self, tenant: TenantId) -> Result<TenantId, KernelError> {
        if tenant == SYSTEM_TENANT {
            return Err(KernelError::SystemPartition);
        }
        let state = self
            .catalog
            .tenant(tenant)
            .ok_or(KernelError::UnknownTenant(tenant))?;
        if let Some(position) = state.erased_at {
            return Err(KernelError::TenantErased {
                name: state.name.clone(),
                position,
            });
        }
        Ok(state.id)
    }

    /// The position of `tenant`'s erasure in the system partition, if it was erased.
    pub fn erased_at(&self, tenant: TenantId) -> Option<Position> {
        self.catalog
            .tenant(tenant)
            .and_then(|state| state.erased_at)
    }

    fn plan_erase_tenant(&self, cmd: &Command, target: TenantId) -> Result<Plan, KernelError> {
        if cmd.tenant != SYSTEM_TENANT {
            return Err(KernelError::NotNodeLevel(cmd.tenant));
        }
        let target = self.data_tenant(target)?;
        if self.subject_keys_refused {
            return Err(KernelError::SubjectKeysRefused(
                "erasing a tenant is not available in a cluster yet: a cluster derives the tenant's keys from the shared cluster secret, and a derived key cannot be destroyed".to_string(),
            ));
        }
        if cmd.reason.trim().is_empty() {
            return Err(KernelError::Invalid {
                what: "reason",
                why: "erasing a tenant needs a reason: it is part of the record auditors see"
                    .to_string(),
            });
        }
        let name = self
            .catalog
            .tenant(target)
            .map(|state| state.name.clone())
            .ok_or(KernelError::UnknownTenant(target))?;
        let records = self.next_position(target);
        let erased = payload::TenantErased {
            tenant: target,
            name: name.clone(),
            records,
        };
        Ok(Plan {
            partition: SYSTEM_TENANT,
            entries: vec![Entry {
                subject: None,
                kind: RecordKind::Erasure,
                event_type: payload::EVENT_TENANT_ERASED.to_string(),
                stream: payload::STREAM_TENANTS.to_string(),
                payload: payload::to_json(&erased),
                change: Change::TenantErased { tenant: target },
            }],
            outcome: Outcome::TenantErased {
                tenant: target,
                name,
                records,
            },
        })
    }

    fn plan_erase(&self, cmd: &Command, subject: &str) -> Result<Plan, KernelError> {
        let tenant = self.data_tenant(cmd.tenant)?;
        if self.subject_keys_refused {
            return Err(subject_keys_refused());
        }
        let state = self
            .catalog
            .tenant(tenant)
            .ok_or(KernelError::UnknownTenant(tenant))?;
        let Some(known) = state.subject(subject) else {
            return Err(KernelError::UnknownSubject(subject.to_string()));
        };
        if let Some(erased_at) = known.erased_at {
            return Err(KernelError::SubjectErased {
                subject: subject.to_string(),
                position: erased_at,
            });
        }
        let erased = payload::SubjectKey {
            subject: subject.to_string(),
            key_id: known.key_id,
        };
        Ok(Plan {
            partition: tenant,
            entries: vec![Entry {
                subject: None,
                kind: RecordKind::Erasure,
                event_type: payload::EVENT_SUBJECT_ERASED.to_string(),
                stream: payload::STREAM_KEYS.to_string(),
                payload: payload::to_json(&erased),
                change: Change::SubjectErased {
                    subject: subject.to_string(),
                },
            }],
            outcome: Outcome::SubjectErased {
                subject: subject.to_string(),
                key_id: known.key_id,
            },
        })
    }

    fn plan_set_quota(
        &self,
        cmd: &Command,
        target: TenantId,
        quota: Quota,
    ) -> Result<Plan, KernelError> {
        if cmd.tenant != SYSTEM_TENANT {
            return Err(KernelError::NotNodeLevel(cmd.tenant));
        }
        self.data_tenant(target)?;
        for (name, value) in [
            ("stored_bytes", quota.stored_bytes),
            ("appends_per_second", quota.appends_per_second),
            ("queries_per_second", quota.queries_per_second),
            ("fuel_per_second", quota.fuel_per_second),
        ] {
            if value == Some(0) {
                return Err(KernelError::Invalid {
                    what: "quota",
                    why: format!(
                        "{name} = 0 would refuse everything; give a positive value or none"
                    ),
                });
            }
        }
        let set = payload::QuotaSet {
            tenant: target,
            quota: quota.clone(),
        };
        Ok(Plan {
            partition: SYSTEM_TENANT,
            entries: vec![Entry {
                subject: None,
                kind: RecordKind::Catalog,
                event_type: payload::EVENT_QUOTA_SET.to_string(),
                stream: payload::STREAM_TENANTS.to_string(),
                payload: payload::to_json(&set),
                change: Change::QuotaSet {
                    tenant: target,
                    quota,
                },
            }],
            outcome: Outcome::QuotaSet { tenant: target },
        })
    }

    fn plan_rotate_key(&self, cmd: &Command) -> Result<Plan, KernelError> {
        let tenant = self.data_tenant(cmd.tenant)?;
        let previous = self.partition(tenant).data_key;
        let key_id = previous + 1;
        if key_id >= SUBJECT_KEY_ID_FIRST {
            return Err(KernelError::Invalid {
                what: "key rotation",
                why: format!("data key ids are exhausted ({previous} rotations)"),
            });
        }
        let rotated = payload::KeyRotated { key_id, previous };
        Ok(Plan {
            partition: tenant,
            entries: vec![Entry {
                subject: None,
                kind: RecordKind::KeyRotation,
                event_type: payload::EVENT_KEY_ROTATED.to_string(),
                stream: payload::STREAM_KEYS.to_string(),
                payload: payload::to_json(&rotated),
                change: Change::KeyRotated { key_id },
            }],
            outcome: Outcome::KeyRotated { key_id },
        })
    }

    fn plan_append(&self, cmd: &Command, events: &[AppendEvent]) -> Result<Plan, KernelError> {
        let tenant = self.data_tenant(cmd.tenant)?;
        if events.is_empty() || events.len() > APPEND_EVENTS_MAX {
            return Err(KernelError::Invalid {
                what: "append",
                why: format!(
                    "{} events; an append carries 1 to append_events_max ({APPEND_EVENTS_MAX})",
                    events.len()
                ),
            });
        }
        let mut entries = Vec::with_capacity(events.len());
        for event in events {
            check_name("stream", &event.stream, NAME_BYTES_MAX, "name_bytes_max")?;
            check_name(
                "event type",
                &event.event_type,
                NAME_BYTES_MAX,
                "name_bytes_max",
            )?;
            if event.payload.len() > EVENT_PAYLOAD_BYTES_MAX {
                return Err(KernelError::Invalid {
                    what: "payload",
                    why: format!(
                        "{} bytes, above event_payload_bytes_max ({EVENT_PAYLOAD_BYTES_MAX} bytes)",
                        event.payload.len()
                    ),
                });
            }
            if self.catalog.table_at(tenant, &event.stream, None).is_some() {
                return Err(KernelError::StreamIsTable(event.stream.clone()));
            }
            entries.push(Entry {
                subject: event.subject.clone(),
                kind: RecordKind::Event,
                event_type: event.event_type.clone(),
                stream: event.stream.clone(),
                payload: event.payload.clone(),
                change: Change::None,
            });
        }
        Ok(Plan {
            partition: tenant,
            entries,
            outcome: Outcome::Appended {
                count: events.len() as u64,
            },
        })
    }

    fn plan_sql(
        &self,
        cmd: &Command,
        text: &str,
        params: &[Value],
        rows: &dyn RowStore,
    ) -> Result<Plan, KernelError> {
        if params.len() > STATEMENT_PARAMS_MAX {
            return Err(KernelError::TooManyParams {
                given: params.len(),
                max: STATEMENT_PARAMS_MAX,
            });
        }
        let statement = sql::parse(text)?;
        if statement.is_query() {
            return Err(KernelError::QueryAsCommand);
        }
        let tenant = self.data_tenant(cmd.tenant)?;
        let (entries, outcome) = match statement {
            Statement::CreateTable(create) => self.plan_create_table(tenant, create)?,
            Statement::DropTable(drop) => self.plan_drop_table(tenant, drop)?,
            Statement::Insert(insert) => self.plan_insert(tenant, &insert, params, rows)?,
            Statement::Update(update) => self.plan_update(tenant, &update, params, rows)?,
            Statement::Delete(delete) => self.plan_delete(tenant, &delete, params, rows)?,
            Statement::Grant(grant) => self.plan_grant(tenant, &grant, false)?,
            Statement::Revoke(revoke) => self.plan_grant(tenant, &revoke, true)?,
            Statement::CreatePolicy(create) => self.plan_create_policy(tenant, create)?,
            Statement::DropPolicy(drop) => self.plan_drop_policy(tenant, drop)?,
            Statement::Select(_) => return Err(KernelError::QueryAsCommand),
        };
        Ok(Plan {
            partition: tenant,
            entries,
            outcome,
        })
    }

    fn current_table(&self, tenant: TenantId, name: &str) -> Result<&TableDef, KernelError> {
        self.catalog
            .table_at(tenant, name, None)
            .ok_or_else(|| KernelError::UnknownTable {
                name: name.to_string(),
                available: describe_tables(&self.catalog.tables(tenant, None)),
            })
    }

    /// GRANT or REVOKE: one record per table, each naming the table as its stream.
    fn plan_grant(
        &self,
        tenant: TenantId,
        grant: &sql::Grant,
        revoke: bool,
    ) -> Result<(Vec<Entry>, Outcome), KernelError> {
        let state = self.catalog.tenant(tenant).expect("a data tenant exists");
        let mut entries = Vec::with_capacity(grant.tables.len());
        for table in &grant.tables {
            let name = table.to_string();
            let only_select = |what: String| -> Result<(), KernelError> {
                if grant.privileges == [Privilege::Select] {
                    return Ok(());
                }
                Err(KernelError::Invalid {
                    what: "grant",
                    why: format!("{what}: only SELECT can be granted or revoked"),
                })
            };
            if table.is_system() {
                only_select(format!("`{name}` shows log payloads"))?;
            } else if state.view(&name).is_some() {
                only_select(format!("`{name}` is a view, which is read-only"))?;
            } else if state.table_at(&name, None).is_none() && !state.ever_had_table(&name) {
                return Err(KernelError::UnknownTable {
                    available: describe_tables(&state.tables(None)),
                    name,
                });
            }
            let acl = state.acl(&name);
            let added = grant
                .roles
                .iter()
                .filter(|role| !acl.roles.contains_key(*role))
                .count();
            if !revoke && acl.roles.len() + added > ACL_ROLES_MAX {
                return Err(KernelError::Invalid {
                    what: "grant",
                    why: format!(
                        "`{name}` would have {} roles in its access list, above acl_roles_max ({ACL_ROLES_MAX})",
                        acl.roles.len() + added
                    ),
                });
            }
            let record = payload::Grant {
                table: name.clone(),
                privileges: grant.privileges.clone(),
                roles: grant.roles.clone(),
            };
            entries.push(Entry {
                subject: None,
                kind: RecordKind::Ddl,
                event_type: if revoke {
                    payload::EVENT_REVOKE
                } else {
                    payload::EVENT_GRANT
                }
                .to_string(),
                stream: name.clone(),
                payload: payload::to_json(&record),
                change: Change::Grant {
                    table: name,
                    privileges: grant.privileges.clone(),
                    roles: grant.roles.clone(),
                    revoke,
                },
            });
        }
        let tables: Vec<String> = grant.tables.iter().map(ToString::to_string).collect();
        let summary = format!(
            "{} {} ON {} {} {}",
            if revoke { "REVOKE" } else { "GRANT" },
            crate::access::describe_privileges(&grant.privileges),
            tables.join(", "),
            if revoke { "FROM" } else { "TO" },
            grant.roles.join(", ")
        );
        Ok((entries, Outcome::AccessChanged { summary }))
    }

    fn plan_create_policy(
        &self,
        tenant: TenantId,
        create: sql::CreatePolicy,
    ) -> Result<(Vec<Entry>, Outcome), KernelError> {
        let state = self.catalog.tenant(tenant).expect("a data tenant exists");
        let columns = match state.table_at(&create.table, None) {
            Some(table) => &table.columns,
            None => match state.view(&create.table) {
                Some((_, _, view)) => &view.columns,
                None => {
                    return Err(KernelError::UnknownTable {
                        name: create.table,
                        available: describe_tables(&state.tables(None)),
                    });
                }
            },
        };
        if state.row_filter(&create.table, &create.name).is_some() {
            return Err(KernelError::RowFilterExists {
                table: create.table,
                name: create.name,
            });
        }
        if state.row_filters_on(&create.table).count() >= TABLE_ROW_FILTERS_MAX {
            return Err(KernelError::TooManyRowFilters {
                table: create.table,
                max: TABLE_ROW_FILTERS_MAX,
            });
        }
        let using = create.using.to_string();
        if using.len() > ROW_FILTER_BYTES_MAX {
            return Err(KernelError::Invalid {
                what: "policy",
                why: format!(
                    "its USING condition is {} bytes, above row_filter_bytes_max ({ROW_FILTER_BYTES_MAX} bytes)",
                    using.len()
                ),
            });
        }
        // The stored text is what every query compiles: it must parse back and type-check
        // against the table's columns (session values are NULL here).
        let mut scope = Columns::new();
        scope.push_table(&create.table, columns);
        expr::compile_filter(&sql::parse_expr(&using)?, &scope, expr::Session::EMPTY)?;
        let record = payload::CreatePolicy {
            table: create.table.clone(),
            name: create.name.clone(),
            kind: create.kind,
            roles: create.roles.clone(),
            using: using.clone(),
        };
        let summary = format!(
            "CREATE POLICY {} ON {} AS {} FOR SELECT TO {}",
            create.name,
            create.table,
            create.kind.name().to_uppercase(),
            create.roles.join(", ")
        );
        let entry = Entry {
            subject: None,
            kind: RecordKind::Ddl,
            event_type: payload::EVENT_CREATE_POLICY.to_string(),
            stream: create.table.clone(),
            payload: payload::to_json(&record),
            change: Change::RowFilterCreated {
                table: create.table,
                name: create.name,
                kind: create.kind,
                roles: create.roles,
                using,
            },
        };
        Ok((vec![entry], Outcome::AccessChanged { summary }))
    }

    fn plan_drop_policy(
        &self,
        tenant: TenantId,
        drop: sql::DropPolicy,
    ) -> Result<(Vec<Entry>, Outcome), KernelError> {
        let state = self.catalog.tenant(tenant).expect("a data tenant exists");
        if state.row_filter(&drop.table, &drop.name).is_none() {
            if drop.if_exists {
                let notice = format!(
                    "policy `{}` on `{}` does not exist; nothing dropped",
                    drop.name, drop.table
                );
                return Ok((Vec::new(), Outcome::Skipped { notice }));
            }
            return Err(KernelError::UnknownRowFilter {
                existing: state
                    .row_filters_on(&drop.table)
                    .map(|filter| filter.name.clone())
                    .collect(),
                table: drop.table,
                name: drop.name,
            });
        }
        let record = payload::DropPolicy {
            table: drop.table.clone(),
            name: drop.name.clone(),
        };
        let summary = format!("DROP POLICY {} ON {}", drop.name, drop.table);
        let entry = Entry {
            subject: None,
            kind: RecordKind::Ddl,
            event_type: payload::EVENT_DROP_POLICY.to_string(),
            stream: drop.table.clone(),
            payload: payload::to_json(&record),
            change: Change::RowFilterDropped {
                table: drop.table,
                name: drop.name,
            },
        };
        Ok((vec![entry], Outcome::AccessChanged { summary }))
    }

    fn plan_create_table(
        &self,
        tenant: TenantId,
        create: sql::CreateTable,
    ) -> Result<(Vec<Entry>, Outcome), KernelError> {
        let view_user = self
            .catalog
            .tenant(tenant)
            .and_then(|state| state.table_name_user(&create.name, None))
            .filter(|_| self.catalog.table_at(tenant, &create.name, None).is_none());
        if let Some(user) = view_user {
            return Err(KernelError::NameInUse(user));
        }
        if self.catalog.table_at(tenant, &create.name, None).is_some() {
            if create.if_not_exists {
                let notice = format!("table `{}` already exists; nothing created", create.name);
                return Ok((Vec::new(), Outcome::Skipped { notice }));
            }
            return Err(KernelError::TableExists(create.name));
        }
        let count = self.catalog.tables(tenant, None).len();
        if count >= TENANT_TABLES_MAX {
            return Err(KernelError::TooManyTables {
                count,
                max: TENANT_TABLES_MAX,
            });
        }
        if create.subject.is_some() && self.subject_keys_refused {
            return Err(subject_keys_refused());
        }
        let mut schema =
            payload::TableSchema::new(&create.name, &create.columns, &create.primary_key);
        schema.subject = create
            .subject
            .map(|index| create.columns[index].name.clone());
        let entry = Entry {
            subject: None,
            kind: RecordKind::Ddl,
            event_type: payload::EVENT_CREATE_TABLE.to_string(),
            stream: create.name.clone(),
            payload: payload::to_json(&schema),
            change: Change::TableCreated {
                name: create.name.clone(),
                columns: create.columns,
                primary_key: create.primary_key,
                subject: create.subject,
            },
        };
        Ok((vec![entry], Outcome::TableCreated { table: create.name }))
    }

    fn plan_drop_table(
        &self,
        tenant: TenantId,
        drop: sql::DropTable,
    ) -> Result<(Vec<Entry>, Outcome), KernelError> {
        let table = match self.current_table(tenant, &drop.name) {
            Ok(table) => table,
            Err(_) if drop.if_exists => {
                let notice = format!("table `{}` does not exist; nothing dropped", drop.name);
                return Ok((Vec::new(), Outcome::Skipped { notice }));
            }
            Err(error) => return Err(error),
        };
        let dropped = payload::DropTable {
            table: table.name.clone(),
            table_id: table.id,
        };
        let entry = Entry {
            subject: None,
            kind: RecordKind::Ddl,
            event_type: payload::EVENT_DROP_TABLE.to_string(),
            stream: table.name.clone(),
            payload: payload::to_json(&dropped),
            change: Change::TableDropped {
                name: table.name.clone(),
            },
        };
        Ok((vec![entry], Outcome::TableDropped { table: drop.name }))
    }

    fn plan_insert(
        &self,
        tenant: TenantId,
        insert: &sql::Insert,
        params: &[Value],
        rows: &dyn RowStore,
    ) -> Result<(Vec<Entry>, Outcome), KernelError> {
        let table = self.current_table(tenant, &insert.table)?;
        if insert.rows.len() > STATEMENT_ROWS_MAX {
            return Err(KernelError::TooManyRows {
                max: STATEMENT_ROWS_MAX,
            });
        }
        let targets: Vec<usize> = match &insert.columns {
            None => (0..table.columns.len()).collect(),
            Some(names) => {
                let mut targets = Vec::with_capacity(names.len());
                for name in names {
                    let index = column_index(table, name)?;
                    if targets.contains(&index) {
                        return Err(KernelError::ColumnTwice {
                            table: table.name.clone(),
                            column: name.clone(),
                        });
                    }
                    targets.push(index);
                }
                targets
            }
        };
        let mut keys = BTreeSet::new();
        let mut entries = Vec::with_capacity(insert.rows.len());
        for (number, values) in insert.rows.iter().enumerate() {
            if values.len() != targets.len() {
                return Err(KernelError::ValuesCount {
                    row: number + 1,
                    got: values.len(),
                    expected: targets.len(),
                });
            }
            let mut row = vec![Value::Null; table.columns.len()];
            for (expr, &index) in values.iter().zip(&targets) {
                let value = expr::compile(expr, &NoColumns, params)?.expr.eval(&[])?;
                row[index] = assign(table, index, value)?;
            }
            check_row(table, &row)?;
            let key = table.key_of(&row);
            if !keys.insert(OrderedKey(key.clone())) || rows.get(tenant, table.id, &key)?.is_some()
            {
                return Err(KernelError::DuplicateKey {
                    table: table.name.clone(),
                    key: table.describe_key(&key),
                });
            }
            entries.push(row_entry(table, payload::EVENT_ROW_INSERTED, key, row));
        }
        let count = entries.len() as u64;
        Ok((entries, Outcome::RowsAffected { count }))
    }

    fn plan_update(
        &self,
        tenant: TenantId,
        update: &sql::Update,
        params: &[Value],
        rows: &dyn RowStore,
    ) -> Result<(Vec<Entry>, Outcome), KernelError> {
        let table = self.current_table(tenant, &update.table)?;
        let mut scope = Columns::new();
        scope.push_table(
            update.alias.as_deref().unwrap_or(&table.name),
            &table.columns,
        );
        let mut assignments: Vec<(usize, expr::Expr)> =
            Vec::with_capacity(update.assignments.len());
        for (name, value) in &update.assignments {
            let index = column_index(table, name)?;
            if assignments.iter().any(|(other, _)| *other == index) {
                return Err(KernelError::ColumnTwice {
                    table: table.name.clone(),
                    column: name.clone(),
                });
            }
            let typed = expr::compile(value, &scope, params)?;
            let column = &table.columns[index];
            if let Some(ty) = typed.ty
                && !assignable(ty, column.ty)
            {
                return Err(type_mismatch(table, index, ty.sql_name().to_string()));
            }
            assignments.push((index, typed.expr));
        }
        let matched = matching_rows(
            tenant,
            table,
            &scope,
            update.selection.as_ref(),
            params,
            rows,
        )?;
        let mut changes = Vec::with_capacity(matched.len());
        for old in matched {
            let mut new = old.clone();
            for (index, value) in &assignments {
                new[*index] = assign(table, *index, value.eval(&old)?)?;
            }
            check_row(table, &new)?;
            if subject_of(table, &old) != subject_of(table, &new) {
                let column = &table.columns[table.subject.expect("subjects differ")].name;
                return Err(KernelError::Invalid {
                    what: "UPDATE",
                    why: format!(
                        "it changes `{column}`, the data subject of `{}`: a row's records stay under one subject's key (DELETE it and INSERT the new row)",
                        table.name
                    ),
                });
            }
            changes.push((table.key_of(&old), table.key_of(&new), new, old));
        }
        // A changed key must not land on a key that stays taken: a key of a row this
        // statement does not touch, or the new key of another updated row.
        let old_keys: BTreeSet<OrderedKey> = changes
            .iter()
            .map(|(old, _, _, _)| OrderedKey(old.clone()))
            .collect();
        let mut new_keys = BTreeSet::new();
        for (old_key, new_key, _, _) in &changes {
            let taken_by_other = !new_keys.insert(OrderedKey(new_key.clone()))
                || (keys_differ(old_key, new_key)
                    && !old_keys.contains(&OrderedKey(new_key.clone()))
                    && rows.get(tenant, table.id, new_key)?.is_some());
            if taken_by_other {
                return Err(KernelError::DuplicateKey {
                    table: table.name.clone(),
                    key: table.describe_key(new_key),
                });
            }
        }
        // A key change is a delete of the old key and an insert of the new row, all the
        // deletes first, so every record names exactly one key and replays in order.
        let count = changes.len() as u64;
        let mut entries = Vec::with_capacity(changes.len());
        for (old_key, new_key, _, old) in &changes {
            if keys_differ(old_key, new_key) {
                entries.push(delete_entry(table, old_key.clone(), old));
            }
        }
        for (old_key, new_key, row, _) in changes {
            let event = if keys_differ(&old_key, &new_key) {
                payload::EVENT_ROW_INSERTED
            } else {
                payload::EVENT_ROW_UPDATED
            };
            entries.push(row_entry(table, event, new_key, row));
        }
        Ok((entries, Outcome::RowsAffected { count }))
    }

    fn plan_delete(
        &self,
        tenant: TenantId,
        delete: &sql::Delete,
        params: &[Value],
        rows: &dyn RowStore,
    ) -> Result<(Vec<Entry>, Outcome), KernelError> {
        let table = self.current_table(tenant, &delete.table)?;
        let mut scope = Columns::new();
        scope.push_table(
            delete.alias.as_deref().unwrap_or(&table.name),
            &table.columns,
        );
        let matched = matching_rows(
            tenant,
            table,
            &scope,
            delete.selection.as_ref(),
            params,
            rows,
        )?;
        let entries: Vec<Entry> = matched
            .iter()
            .map(|row| delete_entry(table, table.key_of(row), row))
            .collect();
        let count = entries.len() as u64;
        Ok((entries, Outcome::RowsAffected { count }))
    }
}

fn subject_keys_refused() -> KernelError {
    KernelError::SubjectKeysRefused(
        "per-subject keys and erasure are not available in a cluster yet: a cluster derives its keys from the shared cluster secret, and a derived key cannot be destroyed".to_string(),
    )
}

fn keys_differ(left: &[Value], right: &[Value]) -> bool {
    crate::store::compare_keys(left, right) != std::cmp::Ordering::Equal
}

/// The data subject a row of `table` names: its subject column's value (NULL: none).
fn subject_of(table: &TableDef, row: &Row) -> Option<String> {
    subject_text(&row[table.subject?])
}

/// A subject column's value as the subject's id (NULL: no subject).
fn subject_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Text(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

fn row_entry(table: &TableDef, event_type: &str, key: Vec<Value>, row: Row) -> Entry {
    Entry {
        subject: subject_of(table, &row),
        kind: RecordKind::Event,
        event_type: event_type.to_string(),
        stream: table.name.clone(),
        payload: payload::encode_row(&table.columns, 0..table.columns.len(), &row),
        change: Change::Upsert {
            table: table.id,
            key,
            row,
        },
    }
}

/// A `RowDeleted` of the row `old` (under its subject's key, like the row's other records).
fn delete_entry(table: &TableDef, key: Vec<Value>, old: &Row) -> Entry {
    let mut row = vec![Value::Null; table.columns.len()];
    for (&index, value) in table.primary_key.iter().zip(&key) {
        row[index] = value.clone();
    }
    Entry {
        subject: subject_of(table, old),
        kind: RecordKind::Event,
        event_type: payload::EVENT_ROW_DELETED.to_string(),
        stream: table.name.clone(),
        payload: payload::encode_row(&table.columns, table.primary_key.iter().copied(), &row),
        change: Change::Remove {
            table: table.id,
            key,
        },
    }
}

/// The rows of `table` a WHERE matches, by primary-key lookups when the WHERE pins the
/// whole key to constants, else by a scan; refused above `STATEMENT_ROWS_MAX`.
fn matching_rows(
    tenant: TenantId,
    table: &TableDef,
    scope: &Columns,
    selection: Option<&sql::ast::Expr>,
    params: &[Value],
    rows: &dyn RowStore,
) -> Result<Vec<Row>, KernelError> {
    let filter = selection
        .map(|expr| expr::compile_condition(expr, scope, params, "WHERE"))
        .transpose()?;
    let too_many = KernelError::TooManyRows {
        max: STATEMENT_ROWS_MAX,
    };
    if let Some(filter) = &filter {
        let key_types: Vec<ColumnType> = table
            .primary_key
            .iter()
            .map(|&index| table.columns[index].ty)
            .collect();
        let lookup = KeyLookup::plan(&filter.conjuncts(), &table.primary_key, &key_types, &|_| {
            false
        });
        if let Some(keys) = lookup
            .map(|lookup| lookup.keys(&[], STATEMENT_ROWS_MAX))
            .transpose()?
            .flatten()
        {
            let mut matched = Vec::new();
            for key in keys {
                if let Some(row) = rows.get(tenant, table.id, &key)?
                    && filter.matches(&row)?
                {
                    matched.push(row);
                }
            }
            return Ok(matched);
        }
    }
    let mut matched = Vec::new();
    let mut failure: Option<KernelError> = None;
    rows.scan(tenant, table.id, &mut |row| {
        match filter
            .as_ref()
            .map_or(Ok(true), |filter| filter.matches(row))
        {
            Ok(true) if matched.len() == STATEMENT_ROWS_MAX => {
                failure = Some(too_many.clone());
                return false;
            }
            Ok(true) => matched.push(row.clone()),
            Ok(false) => {}
            Err(error) => {
                failure = Some(error.into());
                return false;
            }
        }
        true
    })?;
    match failure {
        Some(error) => Err(error),
        None => Ok(matched),
    }
}

fn column_index(table: &TableDef, name: &str) -> Result<usize, KernelError> {
    table
        .column_index(name)
        .ok_or_else(|| KernelError::UnknownColumn {
            table: table.name.clone(),
            column: name.to_string(),
            columns: table.column_names(),
        })
}

fn type_mismatch(table: &TableDef, index: usize, got: String) -> KernelError {
    let column = &table.columns[index];
    KernelError::TypeMismatch {
        table: table.name.clone(),
        column: column.name.clone(),
        expected: column.ty,
        got,
    }
}

/// Whether an expression of type `from` may be stored in a column of type `to`
/// (mirrors `expr::assign`).
fn assignable(from: ColumnType, to: ColumnType) -> bool {
    from == to
        || matches!(
            (from, to),
            (ColumnType::BigInt, ColumnType::Double) | (ColumnType::Text, ColumnType::Timestamp)
        )
}

fn assign(table: &TableDef, index: usize, value: Value) -> Result<Value, KernelError> {
    let got = || format!("{} {}", value.type_name(), value.to_sql());
    let described = got();
    expr::assign(value, table.columns[index].ty).map_err(|error| match error {
        AssignError::Mismatch => type_mismatch(table, index, described),
        AssignError::BadTimestamp(error) => {
            type_mismatch(table, index, format!("{described} ({error})"))
        }
    })
}

/// NOT NULL and size bounds of a full row about to be written.
fn check_row(table: &TableDef, row: &[Value]) -> Result<(), KernelError> {
    for (value, column) in row.iter().zip(&table.columns) {
        if value.is_null() && !column.nullable {
            return Err(KernelError::NullViolation {
                table: table.name.clone(),
                column: column.name.clone(),
            });
        }
        let bytes = match value {
            Value::Text(text) => text.len(),
            Value::Bytes(bytes) => bytes.len(),
            _ => 0,
        };
        if bytes > VALUE_BYTES_MAX {
            return Err(KernelError::ValueTooLarge {
                table: table.name.clone(),
                column: column.name.clone(),
                bytes,
                max: VALUE_BYTES_MAX,
            });
        }
    }
    table.assert_row(row);
    Ok(())
}

/// `tables: a, b` or `no tables yet`, for unknown-table messages.
pub fn describe_tables(tables: &[&TableDef]) -> String {
    if tables.is_empty() {
        return "the tenant has no tables".to_string();
    }
    let names: Vec<&str> = tables.iter().map(|table| table.name.as_str()).collect();
    format!("tables: {}", names.join(", "))
}

/// A name about to be stored: not empty, within its bound (`bound` names the constant),
/// no control characters.
fn check_name(what: &'static str, name: &str, max: usize, bound: &str) -> Result<(), KernelError> {
    let why = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > max {
        format!("it is {} bytes, above {bound} ({max} bytes)", name.len())
    } else if name.chars().any(char::is_control) {
        format!("{name:?} contains a control character")
    } else {
        return Ok(());
    };
    Err(KernelError::Invalid { what, why })
}

fn check_tenant_name(name: &str) -> Result<(), KernelError> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid || name.len() > TENANT_NAME_BYTES_MAX {
        return Err(KernelError::Invalid {
            what: "tenant name",
            why: format!(
                "{name:?}: use 1 to {TENANT_NAME_BYTES_MAX} ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit"
            ),
        });
    }
    Ok(())
}

/// A region name: like a tenant name (`eu-west`, `us_1`).
fn check_region(region: &str) -> Result<(), KernelError> {
    check_tenant_name(region).map_err(|_| KernelError::Invalid {
        what: "region",
        why: format!(
            "{region:?}: use 1 to {TENANT_NAME_BYTES_MAX} ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ),
    })
}

mod deploy;
pub use deploy::ViewSchema;

#[cfg(test)]
mod tests;
