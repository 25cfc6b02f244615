//! Who may touch which table, and which of its rows they see: table privileges
//! (`GRANT` / `REVOKE`) and row filters (`CREATE POLICY … USING`). Both are catalog state
//! changed only by logged SQL commands, so they replay and replicate like a schema change.
//!
//! ## Privileges (PostgreSQL's model, with its NULL-ACL rule)
//!
//! - Every table and view name has an access list (`Acl`): role → `SELECT`, `INSERT`,
//!   `UPDATE`, `DELETE`.
//! - Until the first `GRANT` or `REVOKE` on a name, its access list is the built-in default
//!   (`Acl::table_default`): `writer` has all four privileges, `reader` has `SELECT`. The
//!   first `GRANT` or `REVOKE` copies the default and changes the copy; from then on only the
//!   stored list counts. So a grant never narrows anyone else's rights and a revocation never
//!   widens them (`REVOKE SELECT ON t FROM reader` is how a table is closed to readers).
//! - `admin` has every privilege on every name of its tenant and is never in an access list.
//!   `auditor` and tenant-defined roles have only what is granted to them. `PUBLIC` grants
//!   to every token of the tenant.
//! - Access lists belong to the *name*: `DROP TABLE` keeps them, so the history of a dropped
//!   table (`AS OF`) stays as protected as it was, and a table re-created under the name is
//!   governed by them.
//! - Rules are always today's, also under `AS OF`: a revoked reader cannot read the past.
//! - `kimberlite.log` may be named too: `SELECT` on it lets an auditor see the payloads of
//!   every log record (`ReadLog`, `Proof`). Its default list is empty.
//!
//! ## Row filters (row-level security)
//!
//! `CREATE POLICY name ON t [AS PERMISSIVE|RESTRICTIVE] FOR SELECT [TO role, …] USING (cond)`.
//! `cond` may read the row's columns, `current_attribute('key')` (the token's attribute,
//! TEXT) and `current_purpose()` (the request's purpose, TEXT); a missing attribute or
//! purpose is NULL, so a comparison with it is never true: deny by default. A caller to whom
//! at least one filter of `t` applies sees a row iff some applying permissive filter admits
//! it (or none is permissive) and every applying restrictive filter admits it. Filters apply
//! to every read of `t` — joins, `AS OF`, aggregates, views — but never to `admin` tokens.

use crate::catalog::{BuiltinRole, Token};
use crate::value::Position;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One table privilege.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
}

impl Privilege {
    pub const ALL: [Privilege; 4] = [
        Privilege::Select,
        Privilege::Insert,
        Privilege::Update,
        Privilege::Delete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
        }
    }
}

/// The role name that stands for every token of the tenant (`TO PUBLIC`).
pub const PUBLIC_ROLE: &str = "public";

/// The token attribute that lets a token break the glass: `break_glass=true`.
pub const BREAK_GLASS_ATTRIBUTE: &str = "break_glass";

/// The one system view a grant may name (see the module docs).
pub const LOG_GRANT_NAME: &str = "kimberlite.log";

/// The privileges on one table or view name, by role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub roles: BTreeMap<String, BTreeSet<Privilege>>,
}

impl Acl {
    /// A table's or view's list until the first GRANT or REVOKE on it.
    pub fn table_default() -> Acl {
        let mut acl = Acl::default();
        acl.grant(&[BuiltinRole::Writer.name().to_string()], &Privilege::ALL);
        acl.grant(
            &[BuiltinRole::Reader.name().to_string()],
            &[Privilege::Select],
        );
        acl
    }

    /// Whether one of `roles` (or `PUBLIC`) holds `privilege`.
    pub fn allows(&self, roles: &[String], privilege: Privilege) -> bool {
        self.roles.iter().any(|(role, privileges)| {
            privileges.contains(&privilege)
                && (role == PUBLIC_ROLE || roles.iter().any(|held| held == role))
        })
    }

    pub(crate) fn grant(&mut self, roles: &[String], privileges: &[Privilege]) {
        for role in roles {
            self.roles
                .entry(role.clone())
                .or_default()
                .extend(privileges.iter().copied());
        }
    }

    pub(crate) fn revoke(&mut self, roles: &[String], privileges: &[Privilege]) {
        for role in roles {
            if let Some(held) = self.roles.get_mut(role) {
                for privilege in privileges {
                    held.remove(privilege);
                }
                if held.is_empty() {
                    self.roles.remove(role);
                }
            }
        }
    }

    /// `reader: SELECT; writer: SELECT, INSERT, UPDATE, DELETE`, for messages and views.
    pub fn describe(&self) -> String {
        if self.roles.is_empty() {
            return "nobody but admin".to_string();
        }
        self.roles
            .iter()
            .map(|(role, privileges)| format!("{role}: {}", describe_privileges(privileges)))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `SELECT, INSERT`: privileges in their canonical order.
pub fn describe_privileges<'a>(privileges: impl IntoIterator<Item = &'a Privilege>) -> String {
    let mut names: Vec<Privilege> = privileges.into_iter().copied().collect();
    names.sort();
    names.dedup();
    names
        .iter()
        .map(|privilege| privilege.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a row filter combines with the others of its table (PostgreSQL's policy types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterKind {
    /// Filters of this kind are OR-ed: a row passes if one of them admits it.
    Permissive,
    /// Every filter of this kind must admit the row.
    Restrictive,
}

impl FilterKind {
    pub fn name(self) -> &'static str {
        match self {
            FilterKind::Permissive => "permissive",
            FilterKind::Restrictive => "restrictive",
        }
    }
}

/// One row filter (`CREATE POLICY`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowFilter {
    pub name: String,
    /// The table or view name it filters.
    pub table: String,
    pub kind: FilterKind,
    /// The roles it applies to; `public` applies to every token.
    pub roles: Vec<String>,
    /// The condition, as SQL text (re-parsed and compiled against the table's columns of
    /// the version each query reads).
    pub using: String,
    /// The position of its `CreatePolicy` record.
    pub created_at: Position,
    /// The principal that created it.
    pub created_by: String,
}

impl RowFilter {
    /// Whether it applies to a token with `roles` (never to an admin: see the module docs).
    pub fn applies_to(&self, roles: &[String]) -> bool {
        !is_admin(roles)
            && self
                .roles
                .iter()
                .any(|role| role == PUBLIC_ROLE || roles.contains(role))
    }

    /// `table.name`, as the access trail names it.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.table, self.name)
    }
}

/// Whether `roles` hold the built-in `admin` role.
pub fn is_admin(roles: &[String]) -> bool {
    roles
        .iter()
        .any(|role| BuiltinRole::from_name(role) == Some(BuiltinRole::Admin))
}

impl Token {
    /// Whether this token's reads may carry an emergency reason (break-glass): an `admin`, or a
    /// token with the attribute `break_glass=true` (set by an admin when creating it).
    pub fn may_break_glass(&self) -> bool {
        is_admin(&self.roles)
            || self
                .attributes
                .iter()
                .any(|(key, value)| key == BREAK_GLASS_ATTRIBUTE && value == "true")
    }

    /// The value of the attribute `key`, if the token has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn default_list_grant_and_revoke() {
        let mut acl = Acl::table_default();
        assert_eq!(
            acl.describe(),
            "reader: SELECT; writer: SELECT, INSERT, UPDATE, DELETE"
        );
        assert!(acl.allows(&roles(&["reader"]), Privilege::Select));
        assert!(!acl.allows(&roles(&["reader"]), Privilege::Insert));
        assert!(!acl.allows(&roles(&["auditor", "analyst"]), Privilege::Select));
        acl.revoke(&roles(&["reader"]), &[Privilege::Select]);
        acl.grant(&roles(&["analyst"]), &[Privilege::Select]);
        assert!(!acl.allows(&roles(&["reader"]), Privilege::Select));
        assert!(acl.allows(&roles(&["auditor", "analyst"]), Privilege::Select));
        acl.grant(&roles(&[PUBLIC_ROLE]), &[Privilege::Insert]);
        assert!(acl.allows(&roles(&["nobody"]), Privilege::Insert));
        assert_eq!(
            acl.describe(),
            "analyst: SELECT; public: INSERT; writer: SELECT, INSERT, UPDATE, DELETE"
        );
    }

    #[test]
    fn filters_never_apply_to_admins() {
        let filter = RowFilter {
            name: "eu".into(),
            table: "patients".into(),
            kind: FilterKind::Permissive,
            roles: roles(&[PUBLIC_ROLE]),
            using: "TRUE".into(),
            created_at: 1,
            created_by: "alice".into(),
        };
        assert!(filter.applies_to(&roles(&["reader"])));
        assert!(filter.applies_to(&[]));
        assert!(!filter.applies_to(&roles(&["reader", "admin"])));
    }
}
