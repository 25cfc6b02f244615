//! The catalog: tenants, tokens, and each tenant's tables with their full history.
//!
//! The catalog only changes through records (see `Kernel::execute` and
//! `Kernel::apply_record`), so every replica and every replay derives the same one.
//! Tables are never forgotten: a dropped table keeps its schema and its
//! `[created_at, dropped_at)` positions, so a query `AS OF` a past position resolves
//! the table as it was then.

use crate::access::{Acl, LOG_GRANT_NAME, Privilege, RowFilter};
use crate::modules::{Policy, PolicyVersion, Projection, ProjectionVersion};
use crate::value::{Column, Position, SYSTEM_TENANT, TableId, TenantId, Value};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The node's view of every tenant, token and table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    tenants: BTreeMap<TenantId, Tenant>,
    #[serde(with = "tokens_by_hash")]
    tokens: BTreeMap<[u8; 32], Token>,
    next_token: u64,
}

/// A tenant: its own log partition, tables and tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// The position of its `TenantCreated` record in the system partition.
    pub created_at: Position,
    /// Every table this tenant ever had, by name, each name's versions in creation order.
    tables: BTreeMap<String, Vec<TableDef>>,
    /// Deployed projections, by name.
    #[serde(default)]
    projections: BTreeMap<String, Projection>,
    /// Deployed masking policies, by name.
    #[serde(default)]
    policies: BTreeMap<String, Policy>,
    /// Access lists changed by GRANT/REVOKE, by table or view name (a name without one has
    /// the default list: see `crate::access`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    grants: BTreeMap<String, Acl>,
    /// Row filters (`CREATE POLICY`), by table or view name, then by filter name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    row_filters: BTreeMap<String, BTreeMap<String, RowFilter>>,
    /// Limits the node enforces for the tenant (`tenant quota`); none by default.
    #[serde(default, skip_serializing_if = "Quota::is_unlimited")]
    pub quota: Quota,
    /// The region the tenant's data must live in (`None`: any node may hold it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Data subjects named by the tenant's records, each with its own key id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    subjects: BTreeMap<String, Subject>,
    /// The position of its `TenantErased` record in the system partition: every key of the
    /// tenant is destroyed, its tables, views and modules are gone, nothing may name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<Position>,
}

/// A tenant's quotas: what one tenant may take of a node, so that it cannot starve the
/// others. `None`: unlimited. Set by a logged `QuotaSet` record; enforced by the host
/// (rates are admission control over wall-clock time, not replicated state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Bytes of the tenant's log on disk; writes are refused at or above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// Records appended per second (an append of n events counts n, a SQL write 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appends_per_second: Option<u64>,
    /// Queries (SELECT) per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries_per_second: Option<u64>,
    /// Wasm fuel per second burnt by the tenant's projections (its views then wait) and
    /// masking policies (its masked queries are then refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_second: Option<u64>,
}

impl Quota {
    pub fn is_unlimited(&self) -> bool {
        *self == Quota::default()
    }
}

/// A data subject (a patient, a customer): records naming it are encrypted under its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// From `SUBJECT_KEY_ID_FIRST` on, one per subject, in order of first appearance.
    pub key_id: u32,
    /// The position of its `SubjectKeyCreated` record.
    pub created_at: Position,
    /// The position of its `SubjectErased` record: its key is destroyed.
    pub erased_at: Option<Position>,
}

/// One version of a table: created by a `CreateTable` record, possibly ended by a `DropTable`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// The position of its `CreateTable` record in the tenant's partition; unique forever,
    /// so a table dropped and re-created under the same name is a different table.
    pub id: TableId,
    pub name: String,
    pub columns: Vec<Column>,
    /// Indices into `columns`, in key order. Never empty.
    pub primary_key: Vec<usize>,
    /// Equal to `id`: the table exists from this position on.
    pub created_at: Position,
    /// The position of its `DropTable` record; the table exists before it, not at it.
    pub dropped_at: Option<Position>,
    /// The column naming each row's data subject (`WITH (subject = 'column')`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<usize>,
}

impl TableDef {
    /// Whether the table exists in the state after applying the records at positions
    /// `<= at` (`None`: now).
    pub fn exists_at(&self, at: Option<Position>) -> bool {
        match at {
            None => self.dropped_at.is_none(),
            Some(at) => self.created_at <= at && self.dropped_at.is_none_or(|dropped| at < dropped),
        }
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }

    /// The primary-key values of a full row.
    pub fn key_of(&self, row: &[Value]) -> Vec<Value> {
        assert_eq!(
            row.len(),
            self.columns.len(),
            "row of table `{}` has the wrong width",
            self.name
        );
        self.primary_key
            .iter()
            .map(|&index| row[index].clone())
            .collect()
    }

    /// `a, b, c`: the column names, for error messages.
    pub fn column_names(&self) -> String {
        self.columns
            .iter()
            .map(|column| column.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(id) = (1)` or `(region, id) = ('eu', 7)`: a key, for error messages.
    pub fn describe_key(&self, key: &[Value]) -> String {
        let names: Vec<&str> = self
            .primary_key
            .iter()
            .map(|&index| self.columns[index].name.as_str())
            .collect();
        let values: Vec<String> = key.iter().map(Value::to_sql).collect();
        format!("({}) = ({})", names.join(", "), values.join(", "))
    }

    /// `id BIGINT NOT NULL, name TEXT`: the column list as `.schema` and
    /// `kimberlite.tables` show it.
    pub fn describe_columns(&self) -> String {
        self.columns
            .iter()
            .map(|column| {
                let null = if column.nullable { "" } else { " NOT NULL" };
                format!("{} {}{null}", column.name, column.ty)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `id` or `region, id`.
    pub fn describe_primary_key(&self) -> String {
        self.primary_key
            .iter()
            .map(|&index| self.columns[index].name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn assert_row(&self, row: &[Value]) {
        assert_eq!(
            row.len(),
            self.columns.len(),
            "row of table `{}` has the wrong width",
            self.name
        );
        for (value, column) in row.iter().zip(&self.columns) {
            assert!(
                value.column_type().is_none_or(|ty| ty == column.ty),
                "value {value:?} in column `{}` of `{}` is not a {}",
                column.name,
                self.name,
                column.ty
            );
            assert!(
                column.nullable || !value.is_null(),
                "NULL in NOT NULL column `{}` of `{}`",
                column.name,
                self.name
            );
        }
    }
}

/// An API token, stored by the SHA-256 of its secret (the secret itself is never kept).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Dense from 1, in creation order.
    pub id: u64,
    /// The tenant the token acts in; `SYSTEM_TENANT` marks a node-admin token, which may
    /// act on every tenant.
    pub tenant: TenantId,
    /// The principal name that records of this token's commands carry.
    pub name: String,
    #[serde(with = "hex32")]
    pub secret_hash: [u8; 32],
    /// Built-in (`admin`, `writer`, `reader`, `auditor`) and tenant-defined role names.
    pub roles: Vec<String>,
    /// Attributes for attribute-based access and masking policies.
    pub attributes: Vec<(String, String)>,
}

/// What a request wants to do, for the role check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Create tenants. Only a node-admin token (system tenant, role `admin`).
    ManageTenants,
    /// Create tokens in a tenant.
    ManageTokens,
    /// CREATE TABLE, DROP TABLE.
    Ddl,
    /// Appending application events. (Table writes are decided by table privileges,
    /// `Catalog::may`; the built-in roles' default privileges mirror `Write` and `Read`.)
    Write,
    /// The role-level read right (table reads are decided by `Catalog::may`).
    Read,
    /// Read the log and the system views (`kimberlite.log`, `kimberlite.tables`).
    Audit,
}

/// The built-in roles. Other role names are allowed and carried (masking policies read
/// them) but grant nothing by themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuiltinRole {
    /// Everything in its tenant: DDL, writes, reads, the audit trail, tokens.
    Admin,
    /// Writes and reads of tables; appends.
    Writer,
    /// Reads of tables.
    Reader,
    /// The audit trail: the log and the system views, nothing else.
    Auditor,
}

impl BuiltinRole {
    pub const ALL: [BuiltinRole; 4] = [
        BuiltinRole::Admin,
        BuiltinRole::Writer,
        BuiltinRole::Reader,
        BuiltinRole::Auditor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BuiltinRole::Admin => "admin",
            BuiltinRole::Writer => "writer",
            BuiltinRole::Reader => "reader",
            BuiltinRole::Auditor => "auditor",
        }
    }

    pub fn from_name(name: &str) -> Option<BuiltinRole> {
        BuiltinRole::ALL
            .into_iter()
            .find(|role| role.name() == name)
    }

    pub fn allows(self, action: Action) -> bool {
        match self {
            // Creating tenants is also gated on the token being a node-admin token.
            BuiltinRole::Admin => true,
            BuiltinRole::Writer => matches!(action, Action::Write | Action::Read),
            BuiltinRole::Reader => matches!(action, Action::Read),
            BuiltinRole::Auditor => matches!(action, Action::Audit),
        }
    }
}

impl Token {
    /// Whether this token may do `action` in `tenant`: it must be scoped to that tenant
    /// (or be a node-admin token) and one of its built-in roles must allow the action.
    pub fn allows(&self, tenant: TenantId, action: Action) -> bool {
        let node_token = self.tenant == SYSTEM_TENANT;
        if !node_token && self.tenant != tenant {
            return false;
        }
        if action == Action::ManageTenants && !node_token {
            return false;
        }
        self.roles
            .iter()
            .filter_map(|role| BuiltinRole::from_name(role))
            .any(|role| role.allows(action))
    }
}

impl Catalog {
    pub fn tenant(&self, id: TenantId) -> Option<&Tenant> {
        self.tenants.get(&id)
    }

    pub fn tenant_by_name(&self, name: &str) -> Option<&Tenant> {
        self.tenants.values().find(|tenant| tenant.name == name)
    }

    /// Every tenant, by id.
    pub fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.values()
    }

    pub fn token_by_hash(&self, secret_hash: &[u8; 32]) -> Option<&Token> {
        self.tokens.get(secret_hash)
    }

    /// Every token, by secret hash.
    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.tokens.values()
    }

    /// The table named `name` as it was after applying the positions `<= at` (`None`: now).
    pub fn table_at(
        &self,
        tenant: TenantId,
        name: &str,
        at: Option<Position>,
    ) -> Option<&TableDef> {
        self.tenants.get(&tenant)?.table_at(name, at)
    }

    /// The view `name` of a tenant that queries read now (see [`Tenant::view`]).
    pub fn view(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> Option<(&Projection, &ProjectionVersion, &TableDef)> {
        self.tenants.get(&tenant)?.view(name)
    }

    /// Whether `token` holds `privilege` on the table or view `table` of `tenant` (see
    /// `crate::access`). A token of another tenant holds nothing; an admin holds everything.
    pub fn may(&self, token: &Token, tenant: TenantId, table: &str, privilege: Privilege) -> bool {
        if token.tenant != SYSTEM_TENANT && token.tenant != tenant {
            return false;
        }
        if crate::access::is_admin(&token.roles) {
            return true;
        }
        self.tenants
            .get(&tenant)
            .is_some_and(|state| state.acl(table).allows(&token.roles, privilege))
    }

    /// The row filters of `table` that apply to a caller with `roles` (none for an admin).
    pub fn row_filters_for(
        &self,
        tenant: TenantId,
        table: &str,
        roles: &[String],
    ) -> Vec<&RowFilter> {
        self.tenants.get(&tenant).map_or_else(Vec::new, |state| {
            state
                .row_filters_on(table)
                .filter(|filter| filter.applies_to(roles))
                .collect()
        })
    }

    pub(crate) fn tenant_mut(&mut self, tenant: TenantId) -> Option<&mut Tenant> {
        self.tenants.get_mut(&tenant)
    }

    /// The tables that exist at `at` (`None`: now), by name.
    pub fn tables(&self, tenant: TenantId, at: Option<Position>) -> Vec<&TableDef> {
        self.tenants
            .get(&tenant)
            .map_or_else(Vec::new, |tenant| tenant.tables(at))
    }

    /// Every version of every table the tenant ever had, by creation position.
    pub fn table_history(&self, tenant: TenantId) -> Vec<&TableDef> {
        let mut all: Vec<&TableDef> = self
            .tenants
            .get(&tenant)
            .map(|tenant| tenant.tables.values().flatten().collect())
            .unwrap_or_default();
        all.sort_by_key(|table| table.id);
        all
    }

    pub(crate) fn next_tenant_id(&self) -> TenantId {
        // Tenant ids are dense from 1; the system tenant is 0 and is not in the map.
        self.tenants.keys().next_back().map_or(1, |last| last + 1)
    }

    pub(crate) fn next_token_id(&self) -> u64 {
        self.next_token.max(1)
    }

    pub(crate) fn add_tenant(
        &mut self,
        id: TenantId,
        name: String,
        region: Option<String>,
        created_at: Position,
    ) {
        assert_eq!(id, self.next_tenant_id(), "tenant ids are dense");
        assert!(
            self.tenant_by_name(&name).is_none(),
            "tenant `{name}` exists"
        );
        let tenant = Tenant {
            id,
            name,
            created_at,
            tables: BTreeMap::new(),
            projections: BTreeMap::new(),
            policies: BTreeMap::new(),
            grants: BTreeMap::new(),
            row_filters: BTreeMap::new(),
            subjects: BTreeMap::new(),
            region,
            quota: Quota::default(),
            erased_at: None,
        };
        self.tenants.insert(id, tenant);
    }

    /// Erases a tenant: only its tombstone stays (id, name, creation, region, erasure),
    /// so the name is never reused and its log can still be verified. Its tokens stay in
    /// the catalog (their hashes are in the system log) and are refused by the host.
    pub(crate) fn erase_tenant(&mut self, id: TenantId, at: Position) {
        let tenant = self
            .tenants
            .get_mut(&id)
            .expect("only existing tenants are erased");
        assert!(tenant.erased_at.is_none(), "a tenant is erased once");
        tenant.tables.clear();
        tenant.projections.clear();
        tenant.policies.clear();
        tenant.grants.clear();
        tenant.row_filters.clear();
        tenant.subjects.clear();
        tenant.quota = Quota::default();
        tenant.erased_at = Some(at);
    }

    pub(crate) fn add_token(&mut self, token: Token) {
        assert_eq!(token.id, self.next_token_id(), "token ids are dense");
        assert!(
            !self.tokens.contains_key(&token.secret_hash),
            "token secret hash is unique"
        );
        self.next_token = token.id + 1;
        self.tokens.insert(token.secret_hash, token);
    }

    pub(crate) fn add_table(&mut self, tenant: TenantId, table: TableDef) {
        let tenant = self
            .tenants
            .get_mut(&tenant)
            .expect("tables are added to existing tenants");
        assert!(
            tenant.table_at(&table.name, None).is_none(),
            "table `{}` exists",
            table.name
        );
        assert_eq!(table.id, table.created_at);
        assert!(!table.primary_key.is_empty());
        tenant
            .tables
            .entry(table.name.clone())
            .or_default()
            .push(table);
    }

    pub(crate) fn drop_table(&mut self, tenant: TenantId, name: &str, at: Position) {
        let tenant = self
            .tenants
            .get_mut(&tenant)
            .expect("tables are dropped in existing tenants");
        let current = tenant
            .tables
            .get_mut(name)
            .and_then(|versions| versions.last_mut())
            .filter(|table| table.dropped_at.is_none())
            .expect("only a current table is dropped");
        assert!(
            current.created_at < at,
            "a table is dropped after it is created"
        );
        current.dropped_at = Some(at);
    }
}

impl Tenant {
    /// Every deployed projection, by name.
    pub fn projections(&self) -> impl Iterator<Item = &Projection> {
        self.projections.values()
    }

    pub fn projection(&self, name: &str) -> Option<&Projection> {
        self.projections.get(name)
    }

    pub(crate) fn projection_mut(&mut self, name: &str) -> Option<&mut Projection> {
        self.projections.get_mut(name)
    }

    pub(crate) fn insert_projection(&mut self, projection: Projection) {
        self.projections.insert(projection.name.clone(), projection);
    }

    /// Every deployed masking policy, by name.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.get(name)
    }

    pub(crate) fn policy_mut(&mut self, name: &str) -> Option<&mut Policy> {
        self.policies.get_mut(name)
    }

    pub(crate) fn insert_policy(&mut self, policy: Policy) {
        self.policies.insert(policy.name.clone(), policy);
    }

    /// The access list of a table or view name: the stored one, else the default (empty for
    /// `kimberlite.log`).
    pub fn acl(&self, name: &str) -> Cow<'_, Acl> {
        match self.grants.get(name) {
            Some(acl) => Cow::Borrowed(acl),
            None if name == LOG_GRANT_NAME => Cow::Owned(Acl::default()),
            None => Cow::Owned(Acl::table_default()),
        }
    }

    /// The access lists changed by GRANT/REVOKE, by name.
    pub fn grants(&self) -> impl Iterator<Item = (&String, &Acl)> {
        self.grants.iter()
    }

    pub(crate) fn grant(&mut self, name: &str, roles: &[String], privileges: &[Privilege]) {
        let default = self.acl(name).into_owned();
        self.grants
            .entry(name.to_string())
            .or_insert(default)
            .grant(roles, privileges);
    }

    pub(crate) fn revoke(&mut self, name: &str, roles: &[String], privileges: &[Privilege]) {
        let default = self.acl(name).into_owned();
        self.grants
            .entry(name.to_string())
            .or_insert(default)
            .revoke(roles, privileges);
    }

    /// Every row filter, by table then name.
    pub fn row_filters(&self) -> impl Iterator<Item = &RowFilter> {
        self.row_filters.values().flat_map(BTreeMap::values)
    }

    /// The row filters of one table or view, by name.
    pub fn row_filters_on(&self, table: &str) -> impl Iterator<Item = &RowFilter> {
        self.row_filters
            .get(table)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    pub(crate) fn set_quota(&mut self, quota: Quota) {
        self.quota = quota;
    }

    pub fn subject(&self, name: &str) -> Option<&Subject> {
        self.subjects.get(name)
    }

    /// Every data subject, by name.
    pub fn subjects(&self) -> impl Iterator<Item = (&String, &Subject)> {
        self.subjects.iter()
    }

    /// The key id the next new subject gets.
    pub fn next_subject_key(&self) -> u32 {
        crate::kernel::SUBJECT_KEY_ID_FIRST + self.subjects.len() as u32
    }

    pub(crate) fn add_subject(&mut self, name: String, key_id: u32, position: Position) {
        assert_eq!(
            key_id,
            self.next_subject_key(),
            "subject keys come in order"
        );
        self.subjects.insert(
            name,
            Subject {
                key_id,
                created_at: position,
                erased_at: None,
            },
        );
    }

    pub(crate) fn erase_subject(&mut self, name: &str, position: Position) {
        let subject = self
            .subjects
            .get_mut(name)
            .expect("only known subjects are erased");
        subject.erased_at = Some(position);
    }

    /// Every table version with a subject column (dropped ones too: their history is
    /// readable AS OF), as (table id, column index).
    pub fn subject_tables(&self) -> Vec<(TableId, usize)> {
        self.tables
            .values()
            .flatten()
            .filter_map(|table| table.subject.map(|column| (table.id, column)))
            .collect()
    }

    pub fn row_filter(&self, table: &str, name: &str) -> Option<&RowFilter> {
        self.row_filters.get(table)?.get(name)
    }

    pub(crate) fn add_row_filter(&mut self, filter: RowFilter) {
        let filters = self.row_filters.entry(filter.table.clone()).or_default();
        assert!(
            !filters.contains_key(&filter.name),
            "row filter `{}` exists",
            filter.qualified_name()
        );
        filters.insert(filter.name.clone(), filter);
    }

    pub(crate) fn drop_row_filter(&mut self, table: &str, name: &str) {
        let filters = self
            .row_filters
            .get_mut(table)
            .expect("only an existing row filter is dropped");
        assert!(
            filters.remove(name).is_some(),
            "only an existing row filter is dropped"
        );
        if filters.is_empty() {
            self.row_filters.remove(table);
        }
    }

    /// The view `name` that queries read now: a table of a projection's active version.
    pub fn view(&self, name: &str) -> Option<(&Projection, &ProjectionVersion, &TableDef)> {
        self.projections.values().find_map(|projection| {
            let version = projection.active_version()?;
            let table = version.table(name)?;
            Some((projection, version, table))
        })
    }

    /// The active policy version that masks table or view `name`, if any.
    pub fn policy_covering(&self, name: &str) -> Option<(&Policy, &PolicyVersion)> {
        self.policies.values().find_map(|policy| {
            let version = policy.active_version()?;
            version
                .covers
                .iter()
                .any(|covered| covered == name)
                .then_some((policy, version))
        })
    }

    /// What already uses the table name `name` now: a SQL table, or a view of a
    /// projection (other than `except`), described for an error message.
    pub fn table_name_user(&self, name: &str, except: Option<&str>) -> Option<String> {
        if self.table_at(name, None).is_some() {
            return Some(format!("a SQL table `{name}` exists"));
        }
        self.projections
            .values()
            .filter(|projection| Some(projection.name.as_str()) != except)
            .find(|projection| projection.table_names().any(|table| table == name))
            .map(|projection| format!("`{name}` is a view of projection `{}`", projection.name))
    }

    pub fn table_at(&self, name: &str, at: Option<Position>) -> Option<&TableDef> {
        // Versions of one name never overlap in time, so at most one matches.
        self.tables
            .get(name)?
            .iter()
            .rev()
            .find(|table| table.exists_at(at))
    }

    /// Whether a table of this name ever existed (for "did not exist at position p").
    pub fn ever_had_table(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }

    pub fn tables(&self, at: Option<Position>) -> Vec<&TableDef> {
        self.tables
            .values()
            .filter_map(|versions| versions.iter().rev().find(|t| t.exists_at(at)))
            .collect()
    }
}

/// Tokens are keyed by secret hash in memory but stored as a list (JSON object keys
/// must be strings): deterministic, since the map iterates in key order.
mod tokens_by_hash {
    use super::Token;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        tokens: &BTreeMap<[u8; 32], Token>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let list: Vec<&Token> = tokens.values().collect();
        list.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<[u8; 32], Token>, D::Error> {
        let list = Vec::<Token>::deserialize(deserializer)?;
        Ok(list
            .into_iter()
            .map(|token| (token.secret_hash, token))
            .collect())
    }
}

/// A 32-byte hash as 64 hex digits.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&crate::hex::encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::hex::decode(&text)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| D::Error::custom("expected 64 hex digits"))
    }
}
