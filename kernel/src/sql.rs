//! SQL text → `Statement`: the one SQL front of Kimberlite.
//!
//! Parsing uses sqlparser with a small dialect of our own. The shape of each statement
//! is checked here (anything Kimberlite does not implement is refused with an error
//! naming the construct), while expressions stay sqlparser `ast::Expr` until they are
//! compiled against a schema by `crate::expr` — the schema depends on the position a
//! query reads at, which is only known when it runs.
//!
//! ## Time travel
//!
//! Every table reference of a SELECT may carry its own point in time:
//!
//! - `FROM t AS OF POSITION 42` — the state after applying the records at positions
//!   `<= 42` of the tenant's log;
//! - `FROM t AS OF TIMESTAMP '2024-01-15 10:30:00'` (UTC; RFC 3339 with an offset too);
//! - `FROM t FOR SYSTEM_TIME AS OF '2024-01-15 10:30:00'` (SQL:2011), where a string or
//!   TIMESTAMP is a timestamp and an integer is a position (our extension).
//!
//! The clause follows the table name, before an alias (`FROM t AS OF POSITION 3 p`),
//! and takes a literal or a `$n` parameter. sqlparser knows only `FOR SYSTEM_TIME AS OF`,
//! so `AS OF POSITION x` / `AS OF TIMESTAMP x` are rewritten on the token stream (never
//! on the text, which could touch string literals) into
//! `FOR SYSTEM_TIME AS OF CAST(x AS BIGINT)` / `… CAST(x AS TIMESTAMP)`; the type of the
//! expression then tells a position from a timestamp (`resolve_as_of`).

use crate::access::{FilterKind, PUBLIC_ROLE, Privilege};
use crate::catalog::{Action, BuiltinRole};
use crate::expr::{self, ExprError};
use crate::limits::{EXPR_DEPTH_MAX, NAME_BYTES_MAX, SQL_BYTES_MAX, TABLE_COLUMNS_MAX};
use crate::value::{Column, ColumnType, Position, Value};
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};
use std::fmt;

/// The sqlparser AST, re-exported so every crate compiles expressions of the same version.
pub use sqlparser::ast;

/// The schema of the read-only system views.
pub const SYSTEM_SCHEMA: &str = "kimberlite";

/// Why a statement was refused before touching any state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    #[error("SQL syntax error: {0}")]
    Syntax(String),
    #[error("{0} is not supported yet")]
    Unsupported(String),
    #[error("expected one SQL statement, got {0}")]
    StatementCount(usize),
    #[error("SQL text is {bytes} bytes, above sql_bytes_max ({max} bytes)")]
    TooLong { bytes: usize, max: usize },
    #[error("invalid {what} name {name:?}: {why}")]
    InvalidName {
        what: &'static str,
        name: String,
        why: String,
    },
    #[error("column `{column}` is declared twice in table `{table}`")]
    DuplicateColumn { table: String, column: String },
    #[error("table `{table}` has no PRIMARY KEY; every table needs one")]
    MissingPrimaryKey { table: String },
    #[error("table `{table}` declares PRIMARY KEY twice")]
    PrimaryKeyTwice { table: String },
    #[error(
        "PRIMARY KEY names `{column}`, which is not a column of `{table}` (columns: {columns})"
    )]
    UnknownKeyColumn {
        table: String,
        column: String,
        columns: String,
    },
    #[error(
        "WITH (subject = …) names `{column}`, which is not a column of `{table}` (columns: {columns})"
    )]
    UnknownSubjectColumn {
        table: String,
        column: String,
        columns: String,
    },
    #[error("table `{table}` has {count} columns, above table_columns_max ({max})")]
    TooManyColumns {
        table: String,
        count: usize,
        max: usize,
    },
    #[error(
        "column type `{ty}` is not supported (types: BIGINT, TEXT, BOOLEAN, DOUBLE, TIMESTAMP, BYTES)"
    )]
    UnsupportedType { ty: String },
    #[error("{clause} expects {expected}, found `{found}`")]
    AsOfSyntax {
        clause: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("the `kimberlite` schema holds read-only system views; `{0}` cannot be changed")]
    SystemSchemaReadOnly(String),
    #[error(
        "unknown schema `{schema}` in `{schema}.{name}`: tables live in the tenant's own namespace; system views are `kimberlite.log` and `kimberlite.tables`"
    )]
    UnknownSchema { schema: String, name: String },
    #[error("role `admin` {0}")]
    AdminRole(&'static str),
}

/// One parsed statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    CreateTable(CreateTable),
    DropTable(DropTable),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    /// A query: executed by `kimberlite_projections::query`, never a command.
    Select(Select),
    /// `GRANT privileges ON tables TO roles`.
    Grant(Grant),
    /// `REVOKE privileges ON tables FROM roles`.
    Revoke(Grant),
    /// `CREATE POLICY … USING (…)`: a row filter.
    CreatePolicy(CreatePolicy),
    DropPolicy(DropPolicy),
}

/// One thing a token must hold to run a statement.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Requirement {
    /// A role-level right (`Token::allows`).
    Action(Action),
    /// A privilege on a table or view (`Catalog::may`).
    Privilege { table: String, privilege: Privilege },
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Action(action) => write!(f, "{action:?}"),
            Requirement::Privilege { table, privilege } => {
                write!(f, "{} ON {table}", privilege.name())
            }
        }
    }
}

impl Statement {
    /// Whether this is a query (read path) rather than a command (write path).
    pub fn is_query(&self) -> bool {
        matches!(self, Statement::Select(_))
    }

    /// What a token must hold to run this statement: DDL and access control need the `admin`
    /// role; reading and changing rows need table privileges (an UPDATE or DELETE with a
    /// WHERE reads rows, so it also needs SELECT, as in PostgreSQL); system views need the
    /// audit right.
    pub fn requirements(&self) -> Vec<Requirement> {
        let privilege = |table: &str, privilege| Requirement::Privilege {
            table: table.to_string(),
            privilege,
        };
        let mut requirements = match self {
            Statement::CreateTable(_)
            | Statement::DropTable(_)
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::CreatePolicy(_)
            | Statement::DropPolicy(_) => vec![Requirement::Action(Action::Ddl)],
            Statement::Insert(insert) => vec![privilege(&insert.table, Privilege::Insert)],
            Statement::Update(update) => {
                let mut needed = vec![privilege(&update.table, Privilege::Update)];
                if update.selection.is_some() {
                    needed.push(privilege(&update.table, Privilege::Select));
                }
                needed
            }
            Statement::Delete(delete) => {
                let mut needed = vec![privilege(&delete.table, Privilege::Delete)];
                if delete.selection.is_some() {
                    needed.push(privilege(&delete.table, Privilege::Select));
                }
                needed
            }
            Statement::Select(select) => select
                .from
                .iter()
                .map(|item| {
                    if item.table.is_system() {
                        Requirement::Action(Action::Audit)
                    } else {
                        privilege(&item.table.name, Privilege::Select)
                    }
                })
                .collect(),
        };
        requirements.sort();
        requirements.dedup();
        requirements
    }
}

/// `GRANT` or `REVOKE` (the same shape).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Canonical order, no duplicates; `ALL` is all four.
    pub privileges: Vec<Privilege>,
    /// Table or view names, or `kimberlite.log`.
    pub tables: Vec<TableName>,
    /// Role names (`public` for `PUBLIC`), no duplicates; never `admin`.
    pub roles: Vec<String>,
}

/// `CREATE POLICY name ON table [AS kind] FOR SELECT [TO roles] USING (condition)`.
#[derive(Clone, Debug, PartialEq)]
pub struct CreatePolicy {
    pub name: String,
    pub table: String,
    pub kind: FilterKind,
    /// `public` when the statement names no role; never `admin`.
    pub roles: Vec<String>,
    pub using: ast::Expr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropPolicy {
    pub name: String,
    pub table: String,
    pub if_exists: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTable {
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<Column>,
    /// Indices into `columns`; its columns are NOT NULL.
    pub primary_key: Vec<usize>,
    /// `WITH (subject = 'column')`: the column naming each row's data subject (a patient,
    /// a customer), whose own key encrypts the row's records (see `kimberlite erase`).
    pub subject: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropTable {
    pub name: String,
    pub if_exists: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Insert {
    pub table: String,
    /// `None`: all columns in table order.
    pub columns: Option<Vec<String>>,
    pub rows: Vec<Vec<ast::Expr>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub table: String,
    pub alias: Option<String>,
    pub assignments: Vec<(String, ast::Expr)>,
    pub selection: Option<ast::Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Delete {
    pub table: String,
    pub alias: Option<String>,
    pub selection: Option<ast::Expr>,
}

/// A SELECT, its shape checked, its expressions not yet compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct Select {
    pub distinct: bool,
    pub items: Vec<SelectItem>,
    /// The tables in join order; the first has no `on`. Empty for `SELECT 1`.
    pub from: Vec<FromItem>,
    pub selection: Option<ast::Expr>,
    pub group_by: Vec<ast::Expr>,
    pub having: Option<ast::Expr>,
    pub order_by: Vec<OrderItem>,
    pub limit: Option<ast::Expr>,
    pub offset: Option<ast::Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SelectItem {
    /// `*`
    Wildcard,
    /// `t.*` (a table name or alias)
    QualifiedWildcard(String),
    Expr {
        expr: ast::Expr,
        alias: Option<String>,
    },
}

/// One table of a FROM clause.
#[derive(Clone, Debug, PartialEq)]
pub struct FromItem {
    pub table: TableName,
    pub alias: Option<String>,
    /// The table's own point in time (see the module docs), still an expression.
    pub as_of: Option<ast::Expr>,
    /// The join condition; `None` for the first table and for cross joins.
    pub on: Option<ast::Expr>,
}

impl FromItem {
    /// The name other clauses use for this table: its alias, else its name.
    pub fn qualifier(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.table.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableName {
    /// `Some("kimberlite")` for the system views; no other schema exists.
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    pub fn is_system(&self) -> bool {
        self.schema.as_deref() == Some(SYSTEM_SCHEMA)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderItem {
    pub expr: ast::Expr,
    pub descending: bool,
    /// `None`: the default, which follows `Value::total_cmp` (NULL is the smallest value:
    /// first ascending, last descending).
    pub nulls_first: Option<bool>,
}

/// A resolved point in time of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// The state after applying the records at positions `<= p`.
    Position(Position),
    /// Nanoseconds since the epoch, UTC: the state after the last record with a
    /// timestamp `<= t`.
    Timestamp(i64),
}

impl fmt::Display for AsOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsOf::Position(position) => write!(f, "POSITION {position}"),
            AsOf::Timestamp(nanos) => write!(f, "TIMESTAMP '{}'", crate::timestamp::format(*nanos)),
        }
    }
}

/// Evaluates a table's AS OF expression (a literal or parameter) to a point in time:
/// BIGINT → a position; TIMESTAMP, or TEXT parsed as one → a timestamp.
pub fn resolve_as_of(expr: &ast::Expr, params: &[Value]) -> Result<AsOf, ExprError> {
    let typed = expr::compile(expr, &expr::NoColumns, params)?;
    match typed.expr.eval(&[])? {
        Value::Integer(position) => u64::try_from(position).map(AsOf::Position).map_err(|_| {
            ExprError::InvalidAsOf(format!("a position is never negative, got {position}"))
        }),
        Value::Timestamp(nanos) => Ok(AsOf::Timestamp(nanos)),
        Value::Text(text) => crate::timestamp::parse(&text)
            .map(AsOf::Timestamp)
            .map_err(|error| ExprError::InvalidAsOf(error.to_string())),
        other => Err(ExprError::InvalidAsOf(format!(
            "expected a position (BIGINT) or a timestamp, got {} {}",
            other.type_name(),
            other.to_sql()
        ))),
    }
}

/// The SQL dialect: PostgreSQL-like identifiers and `$n` parameters, plus
/// `FOR SYSTEM_TIME AS OF` after a table name. Everything else is sqlparser's default
/// (ANSI) behaviour, so exotic syntax of other databases fails to parse.
#[derive(Debug, Default, Clone, Copy)]
pub struct KimberliteDialect;

impl Dialect for KimberliteDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '"'
    }

    fn supports_table_versioning(&self) -> bool {
        true
    }
}

/// Parses exactly one statement.
pub fn parse(sql: &str) -> Result<Statement, SqlError> {
    if sql.len() > SQL_BYTES_MAX {
        return Err(SqlError::TooLong {
            bytes: sql.len(),
            max: SQL_BYTES_MAX,
        });
    }
    let dialect = KimberliteDialect;
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|error| SqlError::Syntax(error.to_string()))?;
    let tokens = rewrite_as_of(tokens)?;
    let mut statements = Parser::new(&dialect)
        .with_recursion_limit(EXPR_DEPTH_MAX)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(syntax_error)?;
    if statements.len() != 1 {
        return Err(SqlError::StatementCount(statements.len()));
    }
    convert_statement(statements.pop().expect("one statement"))
}

/// Parses one expression (the stored `USING` condition of a row filter).
pub fn parse_expr(text: &str) -> Result<ast::Expr, SqlError> {
    if text.len() > SQL_BYTES_MAX {
        return Err(SqlError::TooLong {
            bytes: text.len(),
            max: SQL_BYTES_MAX,
        });
    }
    let dialect = KimberliteDialect;
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(EXPR_DEPTH_MAX)
        .try_with_sql(text)
        .map_err(syntax_error)?;
    let expr = parser.parse_expr().map_err(syntax_error)?;
    let rest = parser.peek_token();
    if rest.token != Token::EOF {
        return Err(SqlError::Syntax(format!(
            "unexpected `{}` after the expression",
            rest.token
        )));
    }
    Ok(expr)
}

fn syntax_error(error: ParserError) -> SqlError {
    match error {
        ParserError::TokenizerError(message) | ParserError::ParserError(message) => {
            SqlError::Syntax(message)
        }
        ParserError::RecursionLimitExceeded => SqlError::Syntax(format!(
            "the statement nests deeper than expr_depth_max ({EXPR_DEPTH_MAX})"
        )),
    }
}

/// `AS OF POSITION x` → `FOR SYSTEM_TIME AS OF CAST(x AS BIGINT)` and
/// `AS OF TIMESTAMP x` → `FOR SYSTEM_TIME AS OF CAST(x AS TIMESTAMP)`, on tokens.
fn rewrite_as_of(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, SqlError> {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&index| !matches!(tokens[index].token, Token::Whitespace(_)))
        .collect();
    let keyword_at = |n: usize, keyword: Keyword| {
        significant.get(n).is_some_and(|&index| {
            matches!(&tokens[index].token, Token::Word(Word { keyword: k, quote_style: None, .. }) if *k == keyword)
        })
    };
    // (index of AS, index of the value token, target type) of every clause to rewrite.
    let mut clauses = Vec::new();
    for n in 0..significant.len() {
        if !(keyword_at(n, Keyword::AS) && keyword_at(n + 1, Keyword::OF)) {
            continue;
        }
        let (clause, target, expected) = if keyword_at(n + 2, Keyword::POSITION) {
            ("AS OF POSITION", "BIGINT", "an integer or a $n parameter")
        } else if keyword_at(n + 2, Keyword::TIMESTAMP) {
            (
                "AS OF TIMESTAMP",
                "TIMESTAMP",
                "a quoted timestamp or a $n parameter",
            )
        } else {
            continue;
        };
        let value = significant.get(n + 3).map(|&index| &tokens[index]);
        let fits = |token: &Token| match target {
            "BIGINT" => matches!(token, Token::Number(..) | Token::Placeholder(_)),
            _ => matches!(token, Token::SingleQuotedString(_) | Token::Placeholder(_)),
        };
        match value {
            Some(value) if fits(&value.token) => {
                clauses.push((significant[n], significant[n + 3], target))
            }
            _ => {
                let found = value.map_or_else(
                    || "end of statement".to_string(),
                    |value| value.token.to_string(),
                );
                return Err(SqlError::AsOfSyntax {
                    clause,
                    expected,
                    found,
                });
            }
        }
    }
    if clauses.is_empty() {
        return Ok(tokens);
    }
    let mut out = Vec::with_capacity(tokens.len() + 8 * clauses.len());
    let mut next = 0;
    for (as_index, value_index, target) in clauses {
        out.extend_from_slice(&tokens[next..as_index]);
        let span = tokens[as_index].span;
        let word = |text: &str| TokenWithSpan {
            token: Token::make_keyword(text),
            span,
        };
        let symbol = |token: Token| TokenWithSpan { token, span };
        out.extend([
            word("FOR"),
            symbol(Token::Whitespace(sqlparser::tokenizer::Whitespace::Space)),
            word("SYSTEM_TIME"),
            symbol(Token::Whitespace(sqlparser::tokenizer::Whitespace::Space)),
            word("AS"),
            symbol(Token::Whitespace(sqlparser::tokenizer::Whitespace::Space)),
            word("OF"),
            symbol(Token::Whitespace(sqlparser::tokenizer::Whitespace::Space)),
            word("CAST"),
            symbol(Token::LParen),
            tokens[value_index].clone(),
            symbol(Token::Whitespace(sqlparser::tokenizer::Whitespace::Space)),
            word("AS"),
            symbol(Token::Whitespace(sqlparser::tokenizer::Whitespace::Space)),
            word(target),
            symbol(Token::RParen),
        ]);
        next = value_index + 1;
    }
    out.extend_from_slice(&tokens[next..]);
    Ok(out)
}

fn unsupported<T>(construct: impl Into<String>) -> Result<T, SqlError> {
    Err(SqlError::Unsupported(construct.into()))
}

fn convert_statement(statement: ast::Statement) -> Result<Statement, SqlError> {
    match statement {
        ast::Statement::CreateTable(create) => {
            convert_create_table(&create).map(Statement::CreateTable)
        }
        ast::Statement::Drop {
            object_type,
            if_exists,
            names,
            cascade,
            restrict,
            purge,
            temporary,
            table,
        } => {
            if object_type != ast::ObjectType::Table {
                return unsupported(format!("DROP {object_type}"));
            }
            if cascade || restrict || purge || temporary || table.is_some() {
                return unsupported("DROP TABLE with CASCADE, RESTRICT, PURGE or TEMPORARY");
            }
            if names.len() != 1 {
                return unsupported("DROP TABLE of several tables in one statement");
            }
            let name = writable_table_name(&names[0])?;
            Ok(Statement::DropTable(DropTable { name, if_exists }))
        }
        ast::Statement::Insert(insert) => convert_insert(insert).map(Statement::Insert),
        ast::Statement::Update(update) => convert_update(update).map(Statement::Update),
        ast::Statement::Delete(delete) => convert_delete(delete).map(Statement::Delete),
        ast::Statement::Query(query) => convert_query(*query).map(Statement::Select),
        ast::Statement::Grant(grant) => convert_grant(&grant).map(Statement::Grant),
        ast::Statement::Revoke(revoke) => convert_revoke(&revoke).map(Statement::Revoke),
        ast::Statement::CreatePolicy(create) => {
            convert_create_policy(create).map(Statement::CreatePolicy)
        }
        ast::Statement::DropPolicy(drop) => convert_drop_policy(&drop).map(Statement::DropPolicy),
        other => unsupported(statement_name(&other)),
    }
}

fn convert_privileges(privileges: &ast::Privileges) -> Result<Vec<Privilege>, SqlError> {
    let actions = match privileges {
        ast::Privileges::All { .. } => return Ok(Privilege::ALL.to_vec()),
        ast::Privileges::Actions(actions) => actions,
    };
    let mut out = Vec::with_capacity(actions.len());
    for action in actions {
        let privilege = match action {
            ast::Action::Select { columns: None } => Privilege::Select,
            ast::Action::Insert { columns: None } => Privilege::Insert,
            ast::Action::Update { columns: None } => Privilege::Update,
            ast::Action::Delete => Privilege::Delete,
            ast::Action::Select { .. }
            | ast::Action::Insert { .. }
            | ast::Action::Update { .. } => return unsupported("column privileges"),
            other => {
                return unsupported(format!(
                    "the privilege {other} (privileges: SELECT, INSERT, UPDATE, DELETE, ALL)"
                ));
            }
        };
        out.push(privilege);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn convert_grant_objects(objects: Option<&ast::GrantObjects>) -> Result<Vec<TableName>, SqlError> {
    let Some(ast::GrantObjects::Tables(names)) = objects else {
        return unsupported("GRANT on anything but tables and views");
    };
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let table = object_name(name)?;
        if table.is_system() && table.name != "log" {
            return unsupported(format!(
                "a grant on `{table}` (system views are read by the admin and auditor roles; only kimberlite.log may be granted, for log payloads)"
            ));
        }
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    Ok(tables)
}

fn convert_grantees(grantees: &[ast::Grantee]) -> Result<Vec<String>, SqlError> {
    let mut roles = Vec::with_capacity(grantees.len());
    for grantee in grantees {
        let role = match (&grantee.grantee_type, &grantee.name) {
            (ast::GranteesType::Public, _) => PUBLIC_ROLE.to_string(),
            (
                ast::GranteesType::None | ast::GranteesType::Role,
                Some(ast::GranteeName::ObjectName(name)),
            ) => single_ident(name, "role")?,
            _ => return unsupported(format!("the grantee `{grantee}` (grant to roles)")),
        };
        if BuiltinRole::from_name(&role) == Some(BuiltinRole::Admin) {
            return Err(SqlError::AdminRole(
                "always holds every privilege; grant to or revoke from another role",
            ));
        }
        check_name("role", &role)?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(roles)
}

fn convert_grant(grant: &ast::Grant) -> Result<Grant, SqlError> {
    if grant.with_grant_option {
        return unsupported("WITH GRANT OPTION (only admins grant)");
    }
    if grant.as_grantor.is_some() || grant.granted_by.is_some() || grant.current_grants.is_some() {
        return unsupported("this form of GRANT");
    }
    Ok(Grant {
        privileges: convert_privileges(&grant.privileges)?,
        tables: convert_grant_objects(grant.objects.as_ref())?,
        roles: convert_grantees(&grant.grantees)?,
    })
}

fn convert_revoke(revoke: &ast::Revoke) -> Result<Grant, SqlError> {
    if revoke.grant_option_for || revoke.granted_by.is_some() || revoke.cascade.is_some() {
        return unsupported("this form of REVOKE");
    }
    Ok(Grant {
        privileges: convert_privileges(&revoke.privileges)?,
        tables: convert_grant_objects(revoke.objects.as_ref())?,
        roles: convert_grantees(&revoke.grantees)?,
    })
}

fn convert_create_policy(create: ast::CreatePolicy) -> Result<CreatePolicy, SqlError> {
    let name = normalize(&create.name);
    check_name("policy", &name)?;
    let table = writable_table_name(&create.table_name)?;
    let kind = match create.policy_type {
        None | Some(ast::CreatePolicyType::Permissive) => FilterKind::Permissive,
        Some(ast::CreatePolicyType::Restrictive) => FilterKind::Restrictive,
    };
    if create.command != Some(ast::CreatePolicyCommand::Select) {
        return unsupported(
            "a policy for anything but SELECT (row filters apply to reads: write FOR SELECT)",
        );
    }
    if create.with_check.is_some() {
        return unsupported("WITH CHECK");
    }
    let mut roles = Vec::new();
    for owner in create.to.unwrap_or_default() {
        let role = match owner {
            ast::Owner::Ident(ident) => normalize(&ident),
            other => return unsupported(format!("TO {other} (name roles)")),
        };
        if BuiltinRole::from_name(&role) == Some(BuiltinRole::Admin) {
            return Err(SqlError::AdminRole(
                "is never filtered; name the roles the filter applies to",
            ));
        }
        check_name("role", &role)?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        roles.push(PUBLIC_ROLE.to_string());
    }
    let using = create
        .using
        .ok_or_else(|| SqlError::Syntax(format!("CREATE POLICY {name} needs USING (condition)")))?;
    Ok(CreatePolicy {
        name,
        table,
        kind,
        roles,
        using,
    })
}

fn convert_drop_policy(drop: &ast::DropPolicy) -> Result<DropPolicy, SqlError> {
    if drop.drop_behavior.is_some() {
        return unsupported("DROP POLICY with CASCADE or RESTRICT");
    }
    Ok(DropPolicy {
        name: normalize(&drop.name),
        table: writable_table_name(&drop.table_name)?,
        if_exists: drop.if_exists,
    })
}

/// The leading keywords of a statement, for "… is not supported yet".
fn statement_name(statement: &ast::Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|word| word.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .take(3)
        .collect();
    if words.is_empty() {
        "this statement".to_string()
    } else {
        words.join(" ")
    }
}

/// The catalog name of an identifier: unquoted identifiers are case-insensitive (folded
/// to lowercase, as PostgreSQL does); quoted ones keep their case.
pub fn normalize(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn object_name(name: &ast::ObjectName) -> Result<TableName, SqlError> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| match part {
            ast::ObjectNamePart::Identifier(ident) => Ok(normalize(ident)),
            ast::ObjectNamePart::Function(_) => unsupported("a function in a table name"),
        })
        .collect::<Result<_, _>>()?;
    match <[String; 2]>::try_from(parts) {
        Ok([schema, name]) => {
            if schema != SYSTEM_SCHEMA {
                return Err(SqlError::UnknownSchema { schema, name });
            }
            Ok(TableName {
                schema: Some(schema),
                name,
            })
        }
        Err(mut parts) => match parts.len() {
            1 => Ok(TableName {
                schema: None,
                name: parts.pop().expect("one part"),
            }),
            _ => unsupported(format!(
                "the name `{name}` (names have one part, or two for system views)"
            )),
        },
    }
}

/// A table name that DDL or DML may change: not a system view.
fn writable_table_name(name: &ast::ObjectName) -> Result<String, SqlError> {
    let table = object_name(name)?;
    if table.is_system() {
        return Err(SqlError::SystemSchemaReadOnly(table.to_string()));
    }
    Ok(table.name)
}

/// Checks a name that DDL is about to store.
fn check_name(what: &'static str, name: &str) -> Result<(), SqlError> {
    let why = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > NAME_BYTES_MAX {
        format!(
            "it is {} bytes, above name_bytes_max ({NAME_BYTES_MAX} bytes)",
            name.len()
        )
    } else if name.chars().any(char::is_control) {
        "it contains a control character".to_string()
    } else if name.contains('.') {
        "it contains a `.`, which separates a schema from a name".to_string()
    } else {
        return Ok(());
    };
    Err(SqlError::InvalidName {
        what,
        name: name.to_string(),
        why,
    })
}

fn single_ident(name: &ast::ObjectName, what: &str) -> Result<String, SqlError> {
    match name.0.as_slice() {
        [ast::ObjectNamePart::Identifier(ident)] => Ok(normalize(ident)),
        _ => unsupported(format!("the qualified {what} name `{name}`")),
    }
}

fn convert_create_table(create: &ast::CreateTable) -> Result<CreateTable, SqlError> {
    if create.or_replace {
        return unsupported("CREATE OR REPLACE TABLE");
    }
    if create.temporary || create.global.is_some() {
        return unsupported("CREATE TEMPORARY TABLE");
    }
    if create.external
        || create.transient
        || create.volatile
        || create.iceberg
        || create.dynamic
        || create.unlogged
    {
        return unsupported("this kind of CREATE TABLE");
    }
    if create.query.is_some() {
        return unsupported("CREATE TABLE … AS SELECT");
    }
    if create.like.is_some() || create.clone.is_some() {
        return unsupported("CREATE TABLE … LIKE/CLONE");
    }
    let name = writable_table_name(&create.name)?;
    check_name("table", &name)?;
    if create.columns.len() > TABLE_COLUMNS_MAX {
        return Err(SqlError::TooManyColumns {
            table: name,
            count: create.columns.len(),
            max: TABLE_COLUMNS_MAX,
        });
    }
    let mut columns: Vec<Column> = Vec::with_capacity(create.columns.len());
    let mut primary_key: Option<Vec<usize>> = None;
    for definition in &create.columns {
        let column_name = normalize(&definition.name);
        check_name("column", &column_name)?;
        if columns.iter().any(|column| column.name == column_name) {
            return Err(SqlError::DuplicateColumn {
                table: name,
                column: column_name,
            });
        }
        let ty = column_type(&definition.data_type)?;
        let mut nullable = true;
        for option in &definition.options {
            match &option.option {
                ast::ColumnOption::Null => nullable = true,
                ast::ColumnOption::NotNull => nullable = false,
                ast::ColumnOption::PrimaryKey(_) => {
                    if primary_key.replace(vec![columns.len()]).is_some() {
                        return Err(SqlError::PrimaryKeyTwice { table: name });
                    }
                }
                other => return unsupported(format!("the column option `{other}`")),
            }
        }
        columns.push(Column {
            name: column_name,
            ty,
            nullable,
        });
    }
    if columns.is_empty() {
        return Err(SqlError::Syntax(format!(
            "table `{name}` needs at least one column"
        )));
    }
    for constraint in &create.constraints {
        match constraint {
            ast::TableConstraint::PrimaryKey(key) => {
                let mut indices = Vec::with_capacity(key.columns.len());
                for index_column in &key.columns {
                    let column = match &index_column.column.expr {
                        ast::Expr::Identifier(ident) => normalize(ident),
                        other => return unsupported(format!("the PRIMARY KEY element `{other}`")),
                    };
                    let index = columns
                        .iter()
                        .position(|c| c.name == column)
                        .ok_or_else(|| SqlError::UnknownKeyColumn {
                            table: name.clone(),
                            column: column.clone(),
                            columns: column_names(&columns),
                        })?;
                    if indices.contains(&index) {
                        return Err(SqlError::DuplicateColumn {
                            table: name,
                            column,
                        });
                    }
                    indices.push(index);
                }
                if primary_key.replace(indices).is_some() {
                    return Err(SqlError::PrimaryKeyTwice { table: name });
                }
            }
            other => return unsupported(format!("the table constraint `{other}`")),
        }
    }
    let primary_key = primary_key.ok_or(SqlError::MissingPrimaryKey {
        table: name.clone(),
    })?;
    // Key columns identify rows, so they can never be NULL.
    for &index in &primary_key {
        columns[index].nullable = false;
    }
    let subject = table_subject(&create.table_options, &name, &columns)?;
    Ok(CreateTable {
        name,
        if_not_exists: create.if_not_exists,
        columns,
        primary_key,
        subject,
    })
}

/// `WITH (subject = 'column')`, the only table option: the index of that column.
fn table_subject(
    options: &ast::CreateTableOptions,
    table: &str,
    columns: &[Column],
) -> Result<Option<usize>, SqlError> {
    let options = match options {
        ast::CreateTableOptions::None => return Ok(None),
        ast::CreateTableOptions::With(options) => options,
        other => return unsupported(format!("the table options `{other}`")),
    };
    let mut subject = None;
    for option in options {
        // `subject = column` or `subject = 'column'`; nothing else.
        let column = match option {
            ast::SqlOption::KeyValue { key, value }
                if key.to_string().eq_ignore_ascii_case("subject") =>
            {
                match value {
                    ast::Expr::Identifier(ident) => Some(normalize(ident)),
                    ast::Expr::Value(value) => match &value.value {
                        ast::Value::SingleQuotedString(text) => Some(text.to_lowercase()),
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(column) = column else {
            return unsupported(format!(
                "the table option `{option}` (only subject = 'column')"
            ));
        };
        let index = columns
            .iter()
            .position(|c| c.name == column)
            .ok_or_else(|| SqlError::UnknownSubjectColumn {
                table: table.to_string(),
                column: column.clone(),
                columns: column_names(columns),
            })?;
        if subject.replace(index).is_some() {
            return Err(SqlError::Syntax(format!(
                "table `{table}` names its subject twice"
            )));
        }
    }
    Ok(subject)
}

/// `a, b, c`: a table's column names for an error message.
fn column_names(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Maps a SQL type to a column type. Integer types are all BIGINT, the floating types
/// all DOUBLE (storage is 64-bit), VARCHAR(n) is TEXT (the length is not enforced).
pub fn column_type(data_type: &ast::DataType) -> Result<ColumnType, SqlError> {
    use ast::DataType as D;
    Ok(match data_type {
        D::BigInt(_)
        | D::Int(_)
        | D::Integer(_)
        | D::Int8(_)
        | D::Int4(_)
        | D::Int64
        | D::SmallInt(_)
        | D::Int2(_) => ColumnType::BigInt,
        D::Text | D::Varchar(_) | D::CharacterVarying(_) | D::CharVarying(_) | D::String(_) => {
            ColumnType::Text
        }
        D::Boolean | D::Bool => ColumnType::Boolean,
        D::Double(_)
        | D::DoublePrecision
        | D::Real
        | D::Float(_)
        | D::Float8
        | D::Float64
        | D::Float4 => ColumnType::Double,
        D::Timestamp(_, _) => ColumnType::Timestamp,
        D::Bytes(_) | D::Bytea | D::Blob(_) | D::Varbinary(_) => ColumnType::Bytes,
        D::Custom(name, modifiers) if modifiers.is_empty() => {
            match name.to_string().to_uppercase().as_str() {
                "DOUBLE" => ColumnType::Double,
                "BYTES" => ColumnType::Bytes,
                _ => {
                    return Err(SqlError::UnsupportedType {
                        ty: data_type.to_string(),
                    });
                }
            }
        }
        _ => {
            return Err(SqlError::UnsupportedType {
                ty: data_type.to_string(),
            });
        }
    })
}

/// The inverse of `ColumnType::sql_name`.
pub fn column_type_from_name(name: &str) -> Option<ColumnType> {
    [
        ColumnType::BigInt,
        ColumnType::Text,
        ColumnType::Boolean,
        ColumnType::Double,
        ColumnType::Timestamp,
        ColumnType::Bytes,
    ]
    .into_iter()
    .find(|ty| ty.sql_name() == name)
}

fn convert_insert(insert: ast::Insert) -> Result<Insert, SqlError> {
    if insert.or.is_some() || insert.ignore || insert.replace_into {
        return unsupported("INSERT OR/IGNORE/REPLACE");
    }
    if insert.on.is_some() {
        return unsupported("INSERT … ON CONFLICT");
    }
    if insert.returning.is_some() || insert.output.is_some() {
        return unsupported("RETURNING");
    }
    if !insert.assignments.is_empty()
        || insert.partitioned.is_some()
        || insert.overwrite
        || insert.table_alias.is_some()
    {
        return unsupported("this form of INSERT");
    }
    let table = match &insert.table {
        ast::TableObject::TableName(name) => writable_table_name(name)?,
        _ => return unsupported("INSERT into a table function"),
    };
    let columns = if insert.columns.is_empty() {
        None
    } else {
        Some(
            insert
                .columns
                .iter()
                .map(|name| single_ident(name, "column"))
                .collect::<Result<_, _>>()?,
        )
    };
    let Some(source) = insert.source else {
        return unsupported("INSERT without VALUES");
    };
    if source.with.is_some() || source.order_by.is_some() || source.limit_clause.is_some() {
        return unsupported("INSERT … SELECT");
    }
    let rows = match *source.body {
        ast::SetExpr::Values(values) => values.rows.into_iter().map(|row| row.content).collect(),
        _ => return unsupported("INSERT … SELECT"),
    };
    Ok(Insert {
        table,
        columns,
        rows,
    })
}

/// `t` or `t AS x` as the target of UPDATE/DELETE.
fn single_target(
    target: &ast::TableWithJoins,
    statement: &str,
) -> Result<(String, Option<String>), SqlError> {
    if !target.joins.is_empty() {
        return unsupported(format!("{statement} with a JOIN"));
    }
    match &target.relation {
        ast::TableFactor::Table {
            name,
            alias,
            args: None,
            version: None,
            ..
        } => {
            let table = writable_table_name(name)?;
            let alias = match alias {
                Some(alias) if alias.columns.is_empty() => Some(normalize(&alias.name)),
                Some(_) => return unsupported("column aliases on a table"),
                None => None,
            };
            Ok((table, alias))
        }
        ast::TableFactor::Table {
            version: Some(_), ..
        } => unsupported(format!("AS OF in {statement}")),
        _ => unsupported(format!("{statement} of something other than a table")),
    }
}

fn convert_update(update: ast::Update) -> Result<Update, SqlError> {
    if update.from.is_some() {
        return unsupported("UPDATE … FROM");
    }
    if update.returning.is_some() || update.output.is_some() {
        return unsupported("RETURNING");
    }
    if update.or.is_some() || !update.order_by.is_empty() || update.limit.is_some() {
        return unsupported("UPDATE with OR, ORDER BY or LIMIT");
    }
    let (table, alias) = single_target(&update.table, "UPDATE")?;
    let assignments = update
        .assignments
        .into_iter()
        .map(|assignment| match assignment.target {
            ast::AssignmentTarget::ColumnName(name) => {
                // `SET t.col = …` names the column through the table or its alias.
                let column = match name.0.as_slice() {
                    [ast::ObjectNamePart::Identifier(ident)] => normalize(ident),
                    [
                        ast::ObjectNamePart::Identifier(qualifier),
                        ast::ObjectNamePart::Identifier(ident),
                    ] if [Some(&table), alias.as_ref()].contains(&Some(&normalize(qualifier))) => {
                        normalize(ident)
                    }
                    _ => return unsupported(format!("the assignment target `{name}`")),
                };
                Ok((column, assignment.value))
            }
            ast::AssignmentTarget::Tuple(_) => unsupported("tuple assignment in UPDATE"),
        })
        .collect::<Result<_, _>>()?;
    Ok(Update {
        table,
        alias,
        assignments,
        selection: update.selection,
    })
}

fn convert_delete(delete: ast::Delete) -> Result<Delete, SqlError> {
    if !delete.tables.is_empty() || delete.using.is_some() {
        return unsupported("DELETE of several tables or with USING");
    }
    if delete.returning.is_some() || delete.output.is_some() {
        return unsupported("RETURNING");
    }
    if !delete.order_by.is_empty() || delete.limit.is_some() {
        return unsupported("DELETE with ORDER BY or LIMIT");
    }
    let from = match &delete.from {
        ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from) => from,
    };
    let [target] = from.as_slice() else {
        return unsupported("DELETE from several tables");
    };
    let (table, alias) = single_target(target, "DELETE")?;
    Ok(Delete {
        table,
        alias,
        selection: delete.selection,
    })
}

fn convert_query(query: ast::Query) -> Result<Select, SqlError> {
    if query.with.is_some() {
        return unsupported("WITH (common table expressions)");
    }
    if query.fetch.is_some() {
        return unsupported("FETCH");
    }
    if !query.locks.is_empty() || query.for_clause.is_some() {
        return unsupported("FOR UPDATE/SHARE");
    }
    if query.settings.is_some() || query.format_clause.is_some() || !query.pipe_operators.is_empty()
    {
        return unsupported("this query syntax");
    }
    let select = match *query.body {
        ast::SetExpr::Select(select) => *select,
        ast::SetExpr::SetOperation { op, .. } => return unsupported(format!("{op}")),
        ast::SetExpr::Query(_) => return unsupported("a parenthesized query"),
        ast::SetExpr::Values(_) => return unsupported("VALUES as a query"),
        _ => return unsupported("this kind of query"),
    };
    let (limit, offset) = match query.limit_clause {
        None => (None, None),
        Some(ast::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return unsupported("LIMIT BY");
            }
            (limit, offset.map(|offset| offset.value))
        }
        Some(ast::LimitClause::OffsetCommaLimit { .. }) => {
            return unsupported("LIMIT offset, count (use LIMIT … OFFSET …)");
        }
    };
    let order_by = match query.order_by {
        None => Vec::new(),
        Some(order_by) => {
            if order_by.interpolate.is_some() {
                return unsupported("INTERPOLATE");
            }
            match order_by.kind {
                ast::OrderByKind::All(_) => return unsupported("ORDER BY ALL"),
                ast::OrderByKind::Expressions(items) => items
                    .into_iter()
                    .map(|item| {
                        if item.with_fill.is_some() {
                            return unsupported("WITH FILL");
                        }
                        let descending = match item.options.sort {
                            None => false,
                            Some(ast::OrderBySort::Asc) => false,
                            Some(ast::OrderBySort::Desc) => true,
                            Some(other) => return unsupported(format!("ORDER BY … {other:?}")),
                        };
                        Ok(OrderItem {
                            expr: item.expr,
                            descending,
                            nulls_first: item.options.nulls_first,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            }
        }
    };
    convert_select(select, order_by, limit, offset)
}

fn convert_select(
    select: ast::Select,
    order_by: Vec<OrderItem>,
    limit: Option<ast::Expr>,
    offset: Option<ast::Expr>,
) -> Result<Select, SqlError> {
    let distinct = match &select.distinct {
        None | Some(ast::Distinct::All) => false,
        Some(ast::Distinct::Distinct) => true,
        Some(_) => return unsupported("DISTINCT ON"),
    };
    if select.top.is_some() {
        return unsupported("TOP");
    }
    if select.into.is_some() {
        return unsupported("SELECT INTO");
    }
    if select.exclude.is_some()
        || select.select_modifiers.is_some()
        || !select.optimizer_hints.is_empty()
    {
        return unsupported("this SELECT modifier");
    }
    if !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.connect_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || !select.named_window.is_empty()
        || select.qualify.is_some()
        || select.value_table_mode.is_some()
    {
        return unsupported("this SELECT clause");
    }
    if select.flavor != ast::SelectFlavor::Standard {
        return unsupported("FROM-first SELECT");
    }
    let group_by = match select.group_by {
        ast::GroupByExpr::All(_) => return unsupported("GROUP BY ALL"),
        ast::GroupByExpr::Expressions(expressions, modifiers) => {
            if !modifiers.is_empty() {
                return unsupported("GROUP BY modifiers (ROLLUP, CUBE, TOTALS)");
            }
            expressions
        }
    };
    let items = select
        .projection
        .into_iter()
        .map(|item| match item {
            ast::SelectItem::UnnamedExpr(expr) => Ok(SelectItem::Expr { expr, alias: None }),
            ast::SelectItem::ExprWithAlias { expr, alias } => Ok(SelectItem::Expr {
                expr,
                alias: Some(normalize(&alias)),
            }),
            ast::SelectItem::Wildcard(options) => {
                plain_wildcard(&options)?;
                Ok(SelectItem::Wildcard)
            }
            ast::SelectItem::QualifiedWildcard(
                ast::SelectItemQualifiedWildcardKind::ObjectName(name),
                options,
            ) => {
                plain_wildcard(&options)?;
                Ok(SelectItem::QualifiedWildcard(single_ident(&name, "table")?))
            }
            other => unsupported(format!("the select item `{other}`")),
        })
        .collect::<Result<_, _>>()?;
    let mut from = Vec::new();
    for table in select.from {
        // `FROM a, b` is a cross join of a and b.
        from.push(from_item(table.relation, None)?);
        for join in table.joins {
            if join.global {
                return unsupported("GLOBAL JOIN");
            }
            let on = match join.join_operator {
                ast::JoinOperator::Join(constraint) | ast::JoinOperator::Inner(constraint) => {
                    match constraint {
                        ast::JoinConstraint::On(on) => Some(on),
                        ast::JoinConstraint::None => None,
                        ast::JoinConstraint::Using(_) | ast::JoinConstraint::UsingAlias(..) => {
                            return unsupported("JOIN … USING (write the condition with ON)");
                        }
                        ast::JoinConstraint::Natural => return unsupported("NATURAL JOIN"),
                    }
                }
                ast::JoinOperator::CrossJoin(ast::JoinConstraint::None) => None,
                ast::JoinOperator::Left(_) | ast::JoinOperator::LeftOuter(_) => {
                    return unsupported("LEFT JOIN");
                }
                ast::JoinOperator::Right(_) | ast::JoinOperator::RightOuter(_) => {
                    return unsupported("RIGHT JOIN");
                }
                ast::JoinOperator::FullOuter(_) => return unsupported("FULL JOIN"),
                _ => return unsupported("this kind of JOIN"),
            };
            from.push(from_item(join.relation, on)?);
        }
    }
    Ok(Select {
        distinct,
        items,
        from,
        selection: select.selection,
        group_by,
        having: select.having,
        order_by,
        limit,
        offset,
    })
}

fn plain_wildcard(options: &ast::WildcardAdditionalOptions) -> Result<(), SqlError> {
    if options.opt_ilike.is_some()
        || options.opt_exclude.is_some()
        || options.opt_except.is_some()
        || options.opt_replace.is_some()
        || options.opt_rename.is_some()
        || options.opt_alias.is_some()
    {
        return unsupported("wildcard options (EXCLUDE, EXCEPT, REPLACE, RENAME)");
    }
    Ok(())
}

fn from_item(relation: ast::TableFactor, on: Option<ast::Expr>) -> Result<FromItem, SqlError> {
    match relation {
        ast::TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_directives,
            inheritance,
        } => {
            if args.is_some() {
                return unsupported("table functions");
            }
            if !with_hints.is_empty()
                || with_ordinality
                || !partitions.is_empty()
                || json_path.is_some()
                || sample.is_some()
                || !index_directives.is_empty()
                || inheritance.is_some()
            {
                return unsupported("this table reference syntax");
            }
            let table = object_name(&name)?;
            let alias = match alias {
                Some(alias) if alias.columns.is_empty() => Some(normalize(&alias.name)),
                Some(_) => return unsupported("column aliases on a table"),
                None => None,
            };
            let as_of = match version {
                None => None,
                Some(ast::TableVersion::ForSystemTimeAsOf(expr)) => Some(expr),
                Some(ast::TableVersion::TimestampAsOf(expr)) => Some(ast::Expr::Cast {
                    kind: ast::CastKind::Cast,
                    expr: Box::new(expr),
                    data_type: ast::DataType::Timestamp(None, ast::TimezoneInfo::None),
                    format: None,
                }),
                Some(ast::TableVersion::VersionAsOf(expr)) => Some(ast::Expr::Cast {
                    kind: ast::CastKind::Cast,
                    expr: Box::new(expr),
                    data_type: ast::DataType::BigInt(None),
                    format: None,
                }),
                Some(other) => return unsupported(format!("the table version clause `{other}`")),
            };
            Ok(FromItem {
                table,
                alias,
                as_of,
                on,
            })
        }
        ast::TableFactor::Derived { .. } => unsupported("subqueries in FROM"),
        ast::TableFactor::NestedJoin { .. } => unsupported("parenthesized joins"),
        _ => unsupported("this kind of FROM item"),
    }
}

#[cfg(test)]
mod tests;
