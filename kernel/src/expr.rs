//! SQL expressions: compiled from sqlparser's AST against a scope of typed columns,
//! then evaluated over rows.
//!
//! Compiling resolves every column (with `t.col` qualifiers) to an index, inlines `$n`
//! parameters as literals, and type-checks, so evaluation cannot meet a type it does not
//! expect; what remains at run time are data errors (integer overflow, division by zero,
//! a failed CAST), reported as errors, never panics.
//!
//! NULL follows SQL's three-valued logic: a comparison with NULL is NULL (unknown),
//! `NULL AND false` is false, `NULL OR true` is true, and a WHERE/ON/HAVING keeps a row
//! only when its condition is true.
//!
//! DOUBLE values are canonical once assigned to a column (`assign`): every NaN is the one
//! NaN and -0.0 is 0.0, so equality, primary keys, grouping and ordering agree.

use crate::sql::{ast, column_type, normalize};
use crate::timestamp;
use crate::value::{ColumnType, Value};
use std::borrow::Cow;
use std::cmp::Ordering;

/// Why an expression does not compile or evaluate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("unknown column `{column}` ({available})")]
    UnknownColumn { column: String, available: String },
    #[error("column reference `{column}` is ambiguous (it could be {candidates})")]
    AmbiguousColumn { column: String, candidates: String },
    #[error("unknown table `{qualifier}` in `{qualifier}.{column}` (tables here: {available})")]
    UnknownQualifier {
        qualifier: String,
        column: String,
        available: String,
    },
    #[error("type mismatch in `{expr}`: {detail}")]
    TypeMismatch { expr: String, detail: String },
    #[error("parameter ${index} was not given ({given} parameters given)")]
    MissingParameter { index: usize, given: usize },
    #[error("invalid parameter `{0}`: parameters are written $1, $2, …")]
    BadParameter(String),
    #[error("invalid literal {literal}: {why}")]
    InvalidLiteral { literal: String, why: String },
    #[error("integer overflow in {left} {op} {right}")]
    Overflow {
        left: i64,
        op: &'static str,
        right: i64,
    },
    #[error("integer overflow in {function}({value})")]
    UnaryOverflow { function: &'static str, value: i64 },
    #[error(transparent)]
    Sql(#[from] crate::sql::SqlError),
    #[error("division by zero")]
    DivisionByZero,
    #[error("cannot cast {value} to {to}: {why}")]
    InvalidCast {
        value: String,
        to: ColumnType,
        why: String,
    },
    #[error(
        "aggregate function {name} is not allowed here (only in the select list, HAVING and ORDER BY)"
    )]
    AggregateNotAllowed { name: String },
    #[error("column `{column}` must appear in GROUP BY or be used in an aggregate function")]
    NotGrouped { column: String },
    #[error(
        "unknown function `{name}` (functions: COUNT, SUM, MIN, MAX, AVG, COALESCE, NULLIF, LOWER, UPPER, LENGTH, ABS)"
    )]
    UnknownFunction { name: String },
    #[error("{function} takes {expected}, got {got} arguments")]
    Arity {
        function: String,
        expected: &'static str,
        got: usize,
    },
    #[error("invalid AS OF: {0}")]
    InvalidAsOf(String),
    #[error("{0} is not supported yet")]
    Unsupported(String),
    #[error("{function}() is only available in a row filter (CREATE POLICY … USING (…))")]
    SessionOnly { function: String },
}

/// A compiled expression. Columns are indices into the row it is evaluated over.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Value),
    Column(usize),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// `x IS [NOT] TRUE|FALSE`: never NULL.
    IsBoolean {
        expr: Box<Expr>,
        value: bool,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<char>,
        negated: bool,
        case_insensitive: bool,
    },
    Cast {
        expr: Box<Expr>,
        to: ColumnType,
    },
    /// `CASE [operand] WHEN … THEN … [ELSE …] END`
    Case {
        operand: Option<Box<Expr>>,
        branches: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Function {
        function: Function,
        args: Vec<Expr>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Concat,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Concat => "||",
        }
    }

    fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
        )
    }
}

/// The scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Coalesce,
    NullIf,
    Lower,
    Upper,
    Length,
    Abs,
}

/// An expression with its type; `ty` is `None` only for an expression that is always NULL.
#[derive(Clone, Debug, PartialEq)]
pub struct Typed {
    pub expr: Expr,
    pub ty: Option<ColumnType>,
}

/// The columns an expression may name.
pub trait Scope {
    /// Resolves `[qualifier.]name` (both already normalized) to a column index and type.
    fn column(&self, qualifier: Option<&str>, name: &str)
    -> Result<(usize, ColumnType), ExprError>;

    /// A whole sub-expression the scope has computed itself (a GROUP BY key or an
    /// aggregate of a grouped query); `None` compiles the expression normally.
    fn computed(
        &self,
        _expr: &ast::Expr,
    ) -> Result<Option<(usize, Option<ColumnType>)>, ExprError> {
        Ok(None)
    }
}

/// The scope of `VALUES (…)`, LIMIT and AS OF: literals and parameters only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoColumns;

impl Scope for NoColumns {
    fn column(
        &self,
        qualifier: Option<&str>,
        name: &str,
    ) -> Result<(usize, ColumnType), ExprError> {
        let column = qualifier.map_or_else(
            || name.to_string(),
            |qualifier| format!("{qualifier}.{name}"),
        );
        Err(ExprError::UnknownColumn {
            column,
            available: "no columns can be named here".to_string(),
        })
    }
}

/// One column of a `Columns` scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeColumn {
    /// The table name or alias that qualifies it.
    pub qualifier: String,
    pub name: String,
    pub ty: ColumnType,
}

/// The columns of one or more tables side by side, as a join row lays them out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Columns {
    pub columns: Vec<ScopeColumn>,
}

impl Columns {
    pub fn new() -> Columns {
        Columns::default()
    }

    /// Appends a table's columns; returns the index of its first column.
    pub fn push_table(&mut self, qualifier: &str, columns: &[crate::value::Column]) -> usize {
        let offset = self.columns.len();
        self.columns
            .extend(columns.iter().map(|column| ScopeColumn {
                qualifier: qualifier.to_string(),
                name: column.name.clone(),
                ty: column.ty,
            }));
        offset
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    fn names(&self, filter: impl Fn(&ScopeColumn) -> bool) -> String {
        let multiple_tables = self
            .columns
            .iter()
            .any(|column| column.qualifier != self.columns[0].qualifier);
        let names: Vec<String> = self
            .columns
            .iter()
            .filter(|column| filter(column))
            .map(|column| {
                if multiple_tables {
                    format!("{}.{}", column.qualifier, column.name)
                } else {
                    column.name.clone()
                }
            })
            .collect();
        names.join(", ")
    }
}

impl Scope for Columns {
    fn column(
        &self,
        qualifier: Option<&str>,
        name: &str,
    ) -> Result<(usize, ColumnType), ExprError> {
        let matches: Vec<usize> = (0..self.columns.len())
            .filter(|&index| {
                let column = &self.columns[index];
                column.name == name
                    && qualifier.is_none_or(|qualifier| column.qualifier == qualifier)
            })
            .collect();
        match matches.as_slice() {
            [index] => Ok((*index, self.columns[*index].ty)),
            [] => match qualifier {
                Some(qualifier)
                    if !self
                        .columns
                        .iter()
                        .any(|column| column.qualifier == qualifier) =>
                {
                    let mut tables: Vec<&str> = self
                        .columns
                        .iter()
                        .map(|column| column.qualifier.as_str())
                        .collect();
                    tables.dedup();
                    Err(ExprError::UnknownQualifier {
                        qualifier: qualifier.to_string(),
                        column: name.to_string(),
                        available: tables.join(", "),
                    })
                }
                Some(qualifier) => Err(ExprError::UnknownColumn {
                    column: format!("{qualifier}.{name}"),
                    available: format!(
                        "columns of {qualifier}: {}",
                        self.names(|c| c.qualifier == qualifier)
                    ),
                }),
                None => Err(ExprError::UnknownColumn {
                    column: name.to_string(),
                    available: if self.columns.is_empty() {
                        "no table is in scope".to_string()
                    } else {
                        format!("columns: {}", self.names(|_| true))
                    },
                }),
            },
            several => Err(ExprError::AmbiguousColumn {
                column: name.to_string(),
                candidates: several
                    .iter()
                    .map(|&index| format!("{}.{}", self.columns[index].qualifier, name))
                    .collect::<Vec<_>>()
                    .join(" or "),
            }),
        }
    }
}

/// The aggregate functions, computed by the query executor over groups of rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    CountStar,
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

impl Aggregate {
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::CountStar | Aggregate::Count => "COUNT",
            Aggregate::Sum => "SUM",
            Aggregate::Min => "MIN",
            Aggregate::Max => "MAX",
            Aggregate::Avg => "AVG",
        }
    }
}

fn function_name(function: &ast::Function) -> String {
    function.name.to_string().to_uppercase()
}

/// If `expr` is an aggregate call: which, and its argument (`None` for `COUNT(*)`).
pub fn aggregate_call(
    expr: &ast::Expr,
) -> Result<Option<(Aggregate, Option<&ast::Expr>)>, ExprError> {
    let ast::Expr::Function(function) = expr else {
        return Ok(None);
    };
    let aggregate = match function_name(function).as_str() {
        "COUNT" => Aggregate::Count,
        "SUM" => Aggregate::Sum,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        "AVG" => Aggregate::Avg,
        _ => return Ok(None),
    };
    if function.over.is_some() {
        return Err(ExprError::Unsupported(
            "window functions (OVER)".to_string(),
        ));
    }
    if function.filter.is_some()
        || !function.within_group.is_empty()
        || function.null_treatment.is_some()
    {
        return Err(ExprError::Unsupported(format!(
            "{} with FILTER or WITHIN GROUP",
            aggregate.name()
        )));
    }
    let ast::FunctionArguments::List(list) = &function.args else {
        return Err(ExprError::Arity {
            function: aggregate.name().to_string(),
            expected: "one argument",
            got: 0,
        });
    };
    if matches!(
        list.duplicate_treatment,
        Some(ast::DuplicateTreatment::Distinct)
    ) {
        return Err(ExprError::Unsupported(format!(
            "{}(DISTINCT …)",
            aggregate.name()
        )));
    }
    if !list.clauses.is_empty() {
        return Err(ExprError::Unsupported(format!(
            "clauses inside {}(…)",
            aggregate.name()
        )));
    }
    match list.args.as_slice() {
        [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)]
            if aggregate == Aggregate::Count =>
        {
            Ok(Some((Aggregate::CountStar, None)))
        }
        [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))] => {
            Ok(Some((aggregate, Some(arg))))
        }
        args => Err(ExprError::Arity {
            function: aggregate.name().to_string(),
            expected: "one argument",
            got: args.len(),
        }),
    }
}

/// Collects the aggregate calls inside `expr` (not looking inside them), in order.
pub fn collect_aggregates<'a>(
    expr: &'a ast::Expr,
    out: &mut Vec<&'a ast::Expr>,
) -> Result<(), ExprError> {
    if aggregate_call(expr)?.is_some() {
        if !out.contains(&expr) {
            out.push(expr);
        }
        return Ok(());
    }
    for child in children(expr) {
        collect_aggregates(child, out)?;
    }
    Ok(())
}

/// The direct sub-expressions of the expression kinds `compile` accepts.
fn children(expr: &ast::Expr) -> Vec<&ast::Expr> {
    use ast::Expr as E;
    match expr {
        E::Nested(inner)
        | E::UnaryOp { expr: inner, .. }
        | E::IsNull(inner)
        | E::IsNotNull(inner)
        | E::IsTrue(inner)
        | E::IsNotTrue(inner)
        | E::IsFalse(inner)
        | E::IsNotFalse(inner)
        | E::Cast { expr: inner, .. } => vec![inner],
        E::BinaryOp { left, right, .. } => vec![left, right],
        E::In {
            expr,
            target: ast::InTarget::List(list),
            ..
        } => std::iter::once(&**expr).chain(list).collect(),
        E::Between {
            expr, low, high, ..
        } => vec![expr, low, high],
        E::Like { expr, pattern, .. } | E::ILike { expr, pattern, .. } => vec![expr, pattern],
        E::Case {
            operand,
            conditions,
            else_result,
            ..
        } => operand
            .as_deref()
            .into_iter()
            .chain(
                conditions
                    .iter()
                    .flat_map(|when| [&when.condition, &when.result]),
            )
            .chain(else_result.as_deref())
            .collect(),
        E::Function(function) => match &function.args {
            ast::FunctionArguments::List(list) => list
                .args
                .iter()
                .filter_map(|arg| match arg {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(expr)) => Some(expr),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Compiles `expr` against `scope`, inlining `params` (`$1` is `params[0]`).
pub fn compile(expr: &ast::Expr, scope: &dyn Scope, params: &[Value]) -> Result<Typed, ExprError> {
    Compiler {
        scope,
        params,
        session: None,
    }
    .compile(expr)
}

/// The caller a row filter is compiled for: what `current_attribute('key')` and
/// `current_purpose()` read. Both are TEXT, NULL when the caller has no such attribute or
/// gave no purpose (so a comparison with them is never true).
#[derive(Clone, Copy, Debug)]
pub struct Session<'a> {
    pub attributes: &'a [(String, String)],
    pub purpose: Option<&'a str>,
}

impl Session<'_> {
    /// A caller with no attributes and no purpose: every session value is NULL (used to
    /// type-check a row filter when it is created).
    pub const EMPTY: Session<'static> = Session {
        attributes: &[],
        purpose: None,
    };
}

/// Compiles a row filter's condition for one caller: the session functions become that
/// caller's values (literals), so evaluating the filter costs what any WHERE costs.
pub fn compile_filter(
    expr: &ast::Expr,
    scope: &dyn Scope,
    session: Session<'_>,
) -> Result<Expr, ExprError> {
    let typed = Compiler {
        scope,
        params: &[],
        session: Some(session),
    }
    .compile(expr)?;
    match typed.ty {
        None | Some(ColumnType::Boolean) => Ok(typed.expr),
        Some(other) => Err(ExprError::TypeMismatch {
            expr: expr.to_string(),
            detail: format!("USING needs a BOOLEAN condition, got {other}"),
        }),
    }
}

/// Compiles a condition (WHERE, ON, HAVING): it must be BOOLEAN (or NULL).
pub fn compile_condition(
    expr: &ast::Expr,
    scope: &dyn Scope,
    params: &[Value],
    clause: &str,
) -> Result<Expr, ExprError> {
    let typed = compile(expr, scope, params)?;
    match typed.ty {
        None | Some(ColumnType::Boolean) => Ok(typed.expr),
        Some(other) => Err(ExprError::TypeMismatch {
            expr: expr.to_string(),
            detail: format!("{clause} needs a BOOLEAN condition, got {other}"),
        }),
    }
}

struct Compiler<'a> {
    scope: &'a dyn Scope,
    params: &'a [Value],
    /// Set while compiling a row filter: the caller the session functions read.
    session: Option<Session<'a>>,
}

fn mismatch(expr: &ast::Expr, detail: String) -> ExprError {
    ExprError::TypeMismatch {
        expr: expr.to_string(),
        detail,
    }
}

fn type_name(ty: Option<ColumnType>) -> &'static str {
    ty.map_or("NULL", ColumnType::sql_name)
}

fn is_numeric(ty: Option<ColumnType>) -> bool {
    matches!(ty, None | Some(ColumnType::BigInt | ColumnType::Double))
}

fn literal(value: Value) -> Typed {
    let ty = value.column_type();
    Typed {
        expr: Expr::Literal(value),
        ty,
    }
}

impl Compiler<'_> {
    fn compile(&self, expr: &ast::Expr) -> Result<Typed, ExprError> {
        if let Some((index, ty)) = self.scope.computed(expr)? {
            return Ok(Typed {
                expr: Expr::Column(index),
                ty,
            });
        }
        use ast::Expr as E;
        match expr {
            E::Identifier(ident) => self.column(None, ident),
            E::CompoundIdentifier(parts) => match parts.as_slice() {
                [qualifier, name] => self.column(Some(qualifier), name),
                _ => Err(ExprError::Unsupported(format!(
                    "the name `{expr}` (use column or table.column)"
                ))),
            },
            E::Value(value) => self.value(&value.value),
            E::TypedString(typed) => {
                let to = column_type(&typed.data_type)?;
                let text = match &typed.value.value {
                    ast::Value::SingleQuotedString(text) => text,
                    other => {
                        return Err(ExprError::Unsupported(format!("the typed literal {other}")));
                    }
                };
                Ok(literal(cast(Value::Text(text.clone()), to)?))
            }
            E::Nested(inner) => self.compile(inner),
            E::UnaryOp { op, expr: inner } => self.unary(expr, *op, inner),
            E::BinaryOp { left, op, right } => self.binary(expr, op, left, right),
            E::IsNull(inner) | E::IsNotNull(inner) => Ok(Typed {
                expr: Expr::IsNull {
                    expr: Box::new(self.compile(inner)?.expr),
                    negated: matches!(expr, E::IsNotNull(_)),
                },
                ty: Some(ColumnType::Boolean),
            }),
            E::IsTrue(inner) | E::IsNotTrue(inner) | E::IsFalse(inner) | E::IsNotFalse(inner) => {
                let operand = self.boolean(inner, "IS TRUE/FALSE")?;
                Ok(Typed {
                    expr: Expr::IsBoolean {
                        expr: Box::new(operand),
                        value: matches!(expr, E::IsTrue(_) | E::IsNotTrue(_)),
                        negated: matches!(expr, E::IsNotTrue(_) | E::IsNotFalse(_)),
                    },
                    ty: Some(ColumnType::Boolean),
                })
            }
            E::In { global: true, .. } => Err(ExprError::Unsupported("GLOBAL IN".to_string())),
            E::In {
                expr: needle,
                target: ast::InTarget::List(list),
                negated,
                ..
            } => {
                let mut needle = self.compile(needle)?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let (left, right) = self.comparable(expr, needle, self.compile(item)?)?;
                    needle = left;
                    items.push(right.expr);
                }
                Ok(Typed {
                    expr: Expr::InList {
                        expr: Box::new(needle.expr),
                        list: items,
                        negated: *negated,
                    },
                    ty: Some(ColumnType::Boolean),
                })
            }
            E::Between {
                expr: value,
                negated,
                low,
                high,
            } => {
                let (value, low) =
                    self.comparable(expr, self.compile(value)?, self.compile(low)?)?;
                let (value, high) = self.comparable(expr, value, self.compile(high)?)?;
                Ok(Typed {
                    expr: Expr::Between {
                        expr: Box::new(value.expr),
                        low: Box::new(low.expr),
                        high: Box::new(high.expr),
                        negated: *negated,
                    },
                    ty: Some(ColumnType::Boolean),
                })
            }
            E::Like {
                negated,
                any,
                expr: value,
                pattern,
                escape_char,
            }
            | E::ILike {
                negated,
                any,
                expr: value,
                pattern,
                escape_char,
            } => {
                if *any {
                    return Err(ExprError::Unsupported("LIKE ANY".to_string()));
                }
                let value = self.text(value, "LIKE")?;
                let pattern = self.text(pattern, "LIKE")?;
                let escape = match escape_char.as_deref() {
                    None => Some('\\'),
                    Some(E::Value(v)) => match &v.value {
                        ast::Value::SingleQuotedString(text) if text.is_empty() => None,
                        ast::Value::SingleQuotedString(text) if text.chars().count() == 1 => {
                            text.chars().next()
                        }
                        _ => return Err(mismatch(expr, "ESCAPE takes one character".to_string())),
                    },
                    Some(_) => {
                        return Err(mismatch(expr, "ESCAPE takes a string literal".to_string()));
                    }
                };
                Ok(Typed {
                    expr: Expr::Like {
                        expr: Box::new(value),
                        pattern: Box::new(pattern),
                        escape,
                        negated: *negated,
                        case_insensitive: matches!(expr, E::ILike { .. }),
                    },
                    ty: Some(ColumnType::Boolean),
                })
            }
            E::Cast {
                kind,
                expr: inner,
                data_type,
                format,
            } => {
                if format.is_some()
                    || !matches!(kind, ast::CastKind::Cast | ast::CastKind::DoubleColon)
                {
                    return Err(ExprError::Unsupported(format!("the cast `{expr}`")));
                }
                let to = column_type(data_type)?;
                let operand = self.compile(inner)?;
                if let Some(from) = operand.ty
                    && !castable(from, to)
                {
                    return Err(mismatch(expr, format!("cannot cast {from} to {to}")));
                }
                // Cast literals now, so `'2024-01-15'::TIMESTAMP` errors at compile time.
                if let Expr::Literal(value) = &operand.expr {
                    return Ok(Typed {
                        expr: Expr::Literal(cast(value.clone(), to)?),
                        ty: Some(to),
                    });
                }
                Ok(Typed {
                    expr: Expr::Cast {
                        expr: Box::new(operand.expr),
                        to,
                    },
                    ty: Some(to),
                })
            }
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(expr, operand.as_deref(), conditions, else_result.as_deref()),
            E::Function(function) => {
                if let Some((aggregate, _)) = aggregate_call(expr)? {
                    return Err(ExprError::AggregateNotAllowed {
                        name: aggregate.name().to_string(),
                    });
                }
                self.function(expr, function)
            }
            E::Subquery(_) | E::Exists { .. } | E::In { .. } => {
                Err(ExprError::Unsupported("subqueries".to_string()))
            }
            other => Err(ExprError::Unsupported(format!("the expression `{other}`"))),
        }
    }

    fn column(
        &self,
        qualifier: Option<&ast::Ident>,
        name: &ast::Ident,
    ) -> Result<Typed, ExprError> {
        let qualifier = qualifier.map(normalize);
        let (index, ty) = self.scope.column(qualifier.as_deref(), &normalize(name))?;
        Ok(Typed {
            expr: Expr::Column(index),
            ty: Some(ty),
        })
    }

    fn value(&self, value: &ast::Value) -> Result<Typed, ExprError> {
        use ast::Value as V;
        Ok(literal(match value {
            V::Number(text, _) => number(text, false)?,
            V::SingleQuotedString(text) => Value::Text(text.clone()),
            V::HexStringLiteral(hex) => {
                Value::Bytes(
                    crate::hex::decode(hex).ok_or_else(|| ExprError::InvalidLiteral {
                        literal: format!("X'{hex}'"),
                        why: "a BYTES literal needs an even number of hex digits".to_string(),
                    })?,
                )
            }
            V::Boolean(value) => Value::Boolean(*value),
            V::Null => Value::Null,
            V::Placeholder(name) => {
                let index: usize = name
                    .strip_prefix('$')
                    .and_then(|digits| digits.parse().ok())
                    .filter(|&index| index >= 1)
                    .ok_or_else(|| ExprError::BadParameter(name.clone()))?;
                self.params
                    .get(index - 1)
                    .cloned()
                    .ok_or(ExprError::MissingParameter {
                        index,
                        given: self.params.len(),
                    })?
            }
            other => return Err(ExprError::Unsupported(format!("the literal {other}"))),
        }))
    }

    fn unary(
        &self,
        expr: &ast::Expr,
        op: ast::UnaryOperator,
        inner: &ast::Expr,
    ) -> Result<Typed, ExprError> {
        match op {
            ast::UnaryOperator::Not => {
                let operand = self.boolean(inner, "NOT")?;
                Ok(Typed {
                    expr: Expr::Not(Box::new(operand)),
                    ty: Some(ColumnType::Boolean),
                })
            }
            ast::UnaryOperator::Minus => {
                // `-9223372036854775808` only fits as one literal, not as -(9223372036854775808).
                if let ast::Expr::Value(value) = inner
                    && let ast::Value::Number(text, _) = &value.value
                {
                    return Ok(literal(number(text, true)?));
                }
                let operand = self.compile(inner)?;
                if !is_numeric(operand.ty) {
                    return Err(mismatch(
                        expr,
                        format!("unary - needs a number, got {}", type_name(operand.ty)),
                    ));
                }
                Ok(Typed {
                    expr: Expr::Negate(Box::new(operand.expr)),
                    ty: operand.ty,
                })
            }
            ast::UnaryOperator::Plus => {
                let operand = self.compile(inner)?;
                if !is_numeric(operand.ty) {
                    return Err(mismatch(
                        expr,
                        format!("unary + needs a number, got {}", type_name(operand.ty)),
                    ));
                }
                Ok(operand)
            }
            other => Err(ExprError::Unsupported(format!("the operator {other}"))),
        }
    }

    fn boolean(&self, expr: &ast::Expr, context: &str) -> Result<Expr, ExprError> {
        let typed = self.compile(expr)?;
        match typed.ty {
            None | Some(ColumnType::Boolean) => Ok(typed.expr),
            Some(other) => Err(mismatch(
                expr,
                format!("{context} needs BOOLEAN, got {other}"),
            )),
        }
    }

    fn text(&self, expr: &ast::Expr, context: &str) -> Result<Expr, ExprError> {
        let typed = self.compile(expr)?;
        match typed.ty {
            None | Some(ColumnType::Text) => Ok(typed.expr),
            Some(other) => Err(mismatch(expr, format!("{context} needs TEXT, got {other}"))),
        }
    }

    /// Makes two operands comparable: equal types, two numbers, or NULL; a TEXT literal
    /// compared with a TIMESTAMP is read as a timestamp.
    fn comparable(
        &self,
        expr: &ast::Expr,
        left: Typed,
        right: Typed,
    ) -> Result<(Typed, Typed), ExprError> {
        let (left_ty, right_ty) = (left.ty, right.ty);
        let (left, right) = (
            coerce_text_literal(left, right_ty)?,
            coerce_text_literal(right, left_ty)?,
        );
        match (left.ty, right.ty) {
            (None, _) | (_, None) => Ok((left, right)),
            (Some(a), Some(b)) if a == b || (is_numeric(Some(a)) && is_numeric(Some(b))) => {
                Ok((left, right))
            }
            (Some(a), Some(b)) => Err(mismatch(expr, format!("cannot compare {a} with {b}"))),
        }
    }

    fn binary(
        &self,
        expr: &ast::Expr,
        op: &ast::BinaryOperator,
        left: &ast::Expr,
        right: &ast::Expr,
    ) -> Result<Typed, ExprError> {
        use ast::BinaryOperator as B;
        let op = match op {
            B::Eq => BinaryOp::Eq,
            B::NotEq => BinaryOp::NotEq,
            B::Lt => BinaryOp::Lt,
            B::LtEq => BinaryOp::LtEq,
            B::Gt => BinaryOp::Gt,
            B::GtEq => BinaryOp::GtEq,
            B::And => BinaryOp::And,
            B::Or => BinaryOp::Or,
            B::Plus => BinaryOp::Add,
            B::Minus => BinaryOp::Sub,
            B::Multiply => BinaryOp::Mul,
            B::Divide => BinaryOp::Div,
            B::Modulo => BinaryOp::Mod,
            B::StringConcat => BinaryOp::Concat,
            other => return Err(ExprError::Unsupported(format!("the operator {other}"))),
        };
        let binary = |left: Expr, right: Expr, ty| Typed {
            expr: Expr::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
            },
            ty,
        };
        match op {
            BinaryOp::And | BinaryOp::Or => {
                let (l, r) = (
                    self.boolean(left, op.symbol())?,
                    self.boolean(right, op.symbol())?,
                );
                Ok(binary(l, r, Some(ColumnType::Boolean)))
            }
            _ if op.is_comparison() => {
                let (l, r) = self.comparable(expr, self.compile(left)?, self.compile(right)?)?;
                Ok(binary(l.expr, r.expr, Some(ColumnType::Boolean)))
            }
            BinaryOp::Concat => {
                let (l, r) = (self.text(left, "||")?, self.text(right, "||")?);
                Ok(binary(l, r, Some(ColumnType::Text)))
            }
            _ => {
                let (l, r) = (self.compile(left)?, self.compile(right)?);
                if !is_numeric(l.ty) || !is_numeric(r.ty) {
                    return Err(mismatch(
                        expr,
                        format!(
                            "{} needs numbers, got {} and {}",
                            op.symbol(),
                            type_name(l.ty),
                            type_name(r.ty)
                        ),
                    ));
                }
                let ty = match (l.ty, r.ty) {
                    (Some(ColumnType::Double), _) | (_, Some(ColumnType::Double)) => {
                        Some(ColumnType::Double)
                    }
                    (Some(ColumnType::BigInt), _) | (_, Some(ColumnType::BigInt)) => {
                        Some(ColumnType::BigInt)
                    }
                    _ => None,
                };
                Ok(binary(l.expr, r.expr, ty))
            }
        }
    }

    fn case(
        &self,
        expr: &ast::Expr,
        operand: Option<&ast::Expr>,
        conditions: &[ast::CaseWhen],
        otherwise: Option<&ast::Expr>,
    ) -> Result<Typed, ExprError> {
        let mut operand = operand.map(|operand| self.compile(operand)).transpose()?;
        let mut branches = Vec::with_capacity(conditions.len());
        let mut results = Vec::with_capacity(conditions.len() + 1);
        for when in conditions {
            let condition = match operand.take() {
                Some(value) => {
                    let (value, candidate) =
                        self.comparable(expr, value, self.compile(&when.condition)?)?;
                    operand = Some(value);
                    candidate.expr
                }
                None => self.boolean(&when.condition, "CASE WHEN")?,
            };
            branches.push(condition);
            results.push(self.compile(&when.result)?);
        }
        if let Some(otherwise) = otherwise {
            results.push(self.compile(otherwise)?);
        }
        let ty = unify(expr, results.iter().map(|result| result.ty))?;
        let mut results = results.into_iter().map(|result| widen(result, ty).expr);
        let branches = branches.into_iter().zip(results.by_ref()).collect();
        let otherwise = otherwise.and_then(|_| results.next()).map(Box::new);
        Ok(Typed {
            expr: Expr::Case {
                operand: operand.map(|operand| Box::new(operand.expr)),
                branches,
                otherwise,
            },
            ty,
        })
    }

    /// `current_attribute('key')` and `current_purpose()`: TEXT literals of the session.
    fn session_function(
        &self,
        expr: &ast::Expr,
        call: &ast::Function,
        name: &str,
    ) -> Result<Typed, ExprError> {
        let session = self.session.ok_or_else(|| ExprError::SessionOnly {
            function: name.to_lowercase(),
        })?;
        let args: &[ast::FunctionArg] = match &call.args {
            ast::FunctionArguments::List(list)
                if list.duplicate_treatment.is_none() && list.clauses.is_empty() =>
            {
                &list.args
            }
            ast::FunctionArguments::None => &[],
            _ => {
                return Err(ExprError::Unsupported(format!(
                    "this argument list of {name}"
                )));
            }
        };
        let value = match (name, args) {
            ("CURRENT_PURPOSE", []) => session.purpose,
            ("CURRENT_ATTRIBUTE", [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(key))]) => {
                let ast::Expr::Value(ast::ValueWithSpan {
                    value: ast::Value::SingleQuotedString(key),
                    ..
                }) = key
                else {
                    return Err(mismatch(
                        expr,
                        "current_attribute takes the attribute's name as a quoted string"
                            .to_string(),
                    ));
                };
                session
                    .attributes
                    .iter()
                    .find(|(name, _)| name == key)
                    .map(|(_, value)| value.as_str())
            }
            ("CURRENT_PURPOSE", _) => {
                return Err(ExprError::Arity {
                    function: name.to_string(),
                    expected: "no arguments",
                    got: args.len(),
                });
            }
            _ => {
                return Err(ExprError::Arity {
                    function: name.to_string(),
                    expected: "one argument",
                    got: args.len(),
                });
            }
        };
        Ok(Typed {
            expr: Expr::Literal(value.map_or(Value::Null, |value| Value::Text(value.to_string()))),
            ty: Some(ColumnType::Text),
        })
    }

    fn function(&self, expr: &ast::Expr, call: &ast::Function) -> Result<Typed, ExprError> {
        let name = function_name(call);
        if matches!(name.as_str(), "CURRENT_ATTRIBUTE" | "CURRENT_PURPOSE") {
            if call.over.is_some() || call.filter.is_some() || !call.within_group.is_empty() {
                return Err(ExprError::Unsupported(format!("OVER/FILTER on {name}")));
            }
            return self.session_function(expr, call, &name);
        }
        let function = match name.as_str() {
            "COALESCE" => Function::Coalesce,
            "NULLIF" => Function::NullIf,
            "LOWER" => Function::Lower,
            "UPPER" => Function::Upper,
            "LENGTH" | "CHAR_LENGTH" => Function::Length,
            "ABS" => Function::Abs,
            _ => {
                return Err(ExprError::UnknownFunction {
                    name: call.name.to_string(),
                });
            }
        };
        if call.over.is_some() || call.filter.is_some() || !call.within_group.is_empty() {
            return Err(ExprError::Unsupported(format!("OVER/FILTER on {name}")));
        }
        let args: Vec<&ast::Expr> = match &call.args {
            ast::FunctionArguments::List(list)
                if list.duplicate_treatment.is_none() && list.clauses.is_empty() =>
            {
                list.args
                    .iter()
                    .map(|arg| match arg {
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(expr)) => Ok(expr),
                        other => Err(ExprError::Unsupported(format!(
                            "the argument `{other}` of {name}"
                        ))),
                    })
                    .collect::<Result<_, _>>()?
            }
            ast::FunctionArguments::None => Vec::new(),
            _ => {
                return Err(ExprError::Unsupported(format!(
                    "this argument list of {name}"
                )));
            }
        };
        let args: Vec<Typed> = args
            .into_iter()
            .map(|arg| self.compile(arg))
            .collect::<Result<_, _>>()?;
        let arity = |expected: &'static str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(ExprError::Arity {
                    function: name.clone(),
                    expected,
                    got: args.len(),
                })
            }
        };
        let ty = match function {
            Function::Coalesce => {
                arity("one or more arguments", !args.is_empty())?;
                unify(expr, args.iter().map(|arg| arg.ty))?
            }
            Function::NullIf => {
                arity("two arguments", args.len() == 2)?;
                unify(expr, args.iter().map(|arg| arg.ty))?
            }
            Function::Lower | Function::Upper => {
                arity("one argument", args.len() == 1)?;
                if !matches!(args[0].ty, None | Some(ColumnType::Text)) {
                    return Err(mismatch(
                        expr,
                        format!("{name} needs TEXT, got {}", type_name(args[0].ty)),
                    ));
                }
                Some(ColumnType::Text)
            }
            Function::Length => {
                arity("one argument", args.len() == 1)?;
                if !matches!(
                    args[0].ty,
                    None | Some(ColumnType::Text | ColumnType::Bytes)
                ) {
                    return Err(mismatch(
                        expr,
                        format!("{name} needs TEXT or BYTES, got {}", type_name(args[0].ty)),
                    ));
                }
                Some(ColumnType::BigInt)
            }
            Function::Abs => {
                arity("one argument", args.len() == 1)?;
                if !is_numeric(args[0].ty) {
                    return Err(mismatch(
                        expr,
                        format!("{name} needs a number, got {}", type_name(args[0].ty)),
                    ));
                }
                args[0].ty
            }
        };
        let args = match function {
            Function::Coalesce | Function::NullIf => {
                args.into_iter().map(|arg| widen(arg, ty).expr).collect()
            }
            _ => args.into_iter().map(|arg| arg.expr).collect(),
        };
        Ok(Typed {
            expr: Expr::Function { function, args },
            ty,
        })
    }
}

/// The common type of several results (CASE branches, COALESCE arguments): all equal,
/// or numbers (DOUBLE if any is), NULL fitting anything.
fn unify(
    expr: &ast::Expr,
    types: impl Iterator<Item = Option<ColumnType>>,
) -> Result<Option<ColumnType>, ExprError> {
    let mut common: Option<ColumnType> = None;
    for ty in types.flatten() {
        common = Some(match common {
            None => ty,
            Some(current) if current == ty => ty,
            Some(ColumnType::BigInt | ColumnType::Double)
                if matches!(ty, ColumnType::BigInt | ColumnType::Double) =>
            {
                ColumnType::Double
            }
            Some(current) => return Err(mismatch(expr, format!("results mix {current} and {ty}"))),
        });
    }
    Ok(common)
}

/// Casts a BIGINT result up to DOUBLE when the common type is DOUBLE.
fn widen(typed: Typed, to: Option<ColumnType>) -> Typed {
    match (typed.ty, to) {
        (Some(ColumnType::BigInt), Some(ColumnType::Double)) => Typed {
            expr: Expr::Cast {
                expr: Box::new(typed.expr),
                to: ColumnType::Double,
            },
            ty: Some(ColumnType::Double),
        },
        _ => typed,
    }
}

/// A TEXT literal compared with a TIMESTAMP is parsed as a timestamp, at compile time.
fn coerce_text_literal(typed: Typed, other: Option<ColumnType>) -> Result<Typed, ExprError> {
    match (&typed.expr, other) {
        (Expr::Literal(Value::Text(text)), Some(ColumnType::Timestamp)) => {
            let nanos = timestamp::parse(text).map_err(|error| ExprError::InvalidLiteral {
                literal: format!("'{text}'"),
                why: error.to_string(),
            })?;
            Ok(literal(Value::Timestamp(nanos)))
        }
        _ => Ok(typed),
    }
}

/// A numeric literal: BIGINT if it is a plain integer, DOUBLE if it has a fraction or
/// an exponent.
fn number(text: &str, negative: bool) -> Result<Value, ExprError> {
    let signed = if negative {
        format!("-{text}")
    } else {
        text.to_string()
    };
    if text.contains(['.', 'e', 'E']) {
        return signed
            .parse::<f64>()
            .map(Value::Real)
            .map_err(|error| ExprError::InvalidLiteral {
                literal: signed.clone(),
                why: error.to_string(),
            });
    }
    signed
        .parse::<i64>()
        .map(Value::Integer)
        .map_err(|_| ExprError::InvalidLiteral {
            literal: signed.clone(),
            why: "out of range for BIGINT (use a DOUBLE literal such as 1e20)".to_string(),
        })
}

/// Whether `CAST(x AS to)` is defined for `x` of type `from`.
pub fn castable(from: ColumnType, to: ColumnType) -> bool {
    use ColumnType as T;
    from == to
        || from == T::Text
        || to == T::Text
        || matches!(
            (from, to),
            (T::BigInt, T::Double | T::Timestamp | T::Boolean)
                | (T::Double | T::Timestamp | T::Boolean, T::BigInt)
        )
}

/// `CAST(value AS to)`.
pub fn cast(value: Value, to: ColumnType) -> Result<Value, ExprError> {
    use ColumnType as T;
    let fail = |value: &Value, why: &str| ExprError::InvalidCast {
        value: value.to_sql(),
        to,
        why: why.to_string(),
    };
    Ok(match (value, to) {
        (Value::Null, _) => Value::Null,
        (Value::Text(text), T::Text) => Value::Text(text),
        (Value::Text(text), T::BigInt) => Value::Integer(
            text.trim()
                .parse()
                .map_err(|_| fail(&Value::Text(text.clone()), "not an integer"))?,
        ),
        (Value::Text(text), T::Double) => Value::Real(canonical(
            text.trim()
                .parse()
                .map_err(|_| fail(&Value::Text(text.clone()), "not a number"))?,
        )),
        (Value::Text(text), T::Boolean) => match text.trim().to_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => Value::Boolean(true),
            "false" | "f" | "no" | "n" | "off" | "0" => Value::Boolean(false),
            _ => return Err(fail(&Value::Text(text), "not a boolean")),
        },
        (Value::Text(text), T::Timestamp) => Value::Timestamp(
            timestamp::parse(&text)
                .map_err(|error| fail(&Value::Text(text.clone()), &error.to_string()))?,
        ),
        (Value::Text(text), T::Bytes) => Value::Bytes(text.into_bytes()),
        (Value::Bytes(bytes), T::Text) => match String::from_utf8(bytes) {
            Ok(text) => Value::Text(text),
            Err(error) => return Err(fail(&Value::Bytes(error.into_bytes()), "not valid UTF-8")),
        },
        (other, T::Text) => Value::Text(other.to_string()),
        (Value::Integer(n), T::BigInt) => Value::Integer(n),
        (Value::Integer(n), T::Double) => Value::Real(n as f64),
        (Value::Integer(n), T::Timestamp) | (Value::Timestamp(n), T::Timestamp) => {
            Value::Timestamp(n)
        }
        (Value::Integer(n), T::Boolean) => Value::Boolean(n != 0),
        (Value::Real(x), T::Double) => Value::Real(x),
        (Value::Real(x), T::BigInt) => {
            let rounded = x.round();
            // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
            if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&rounded) {
                return Err(fail(&Value::Real(x), "out of range for BIGINT"));
            }
            Value::Integer(rounded as i64)
        }
        (Value::Timestamp(n), T::BigInt) => Value::Integer(n),
        (Value::Boolean(b), T::BigInt) => Value::Integer(i64::from(b)),
        (Value::Boolean(b), T::Boolean) => Value::Boolean(b),
        (Value::Bytes(bytes), T::Bytes) => Value::Bytes(bytes),
        (other, _) => {
            let why = format!("{} cannot become {to}", other.type_name());
            return Err(fail(&other, &why));
        }
    })
}

/// The canonical DOUBLE: one NaN, and 0.0 for -0.0.
pub fn canonical(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// Why a value cannot be stored in a column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignError {
    /// The value's type does not fit (the value is given back for the message).
    Mismatch,
    /// A TEXT value for a TIMESTAMP column that does not parse.
    BadTimestamp(timestamp::TimestampError),
}

/// Converts a value for storage in a column of type `ty`: BIGINT widens to DOUBLE,
/// TEXT parses into TIMESTAMP, DOUBLE becomes canonical; anything else must match.
pub fn assign(value: Value, ty: ColumnType) -> Result<Value, AssignError> {
    Ok(match (value, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Integer(n), ColumnType::Double) => Value::Real(canonical(n as f64)),
        (Value::Real(x), ColumnType::Double) => Value::Real(canonical(x)),
        (Value::Text(text), ColumnType::Timestamp) => {
            Value::Timestamp(timestamp::parse(&text).map_err(AssignError::BadTimestamp)?)
        }
        (value, ty) if value.column_type() == Some(ty) => value,
        _ => return Err(AssignError::Mismatch),
    })
}

/// Converts a value to the exact representation a key column of type `ty` stores, for
/// a primary-key lookup; `None` when no stored value can equal it.
pub fn key_value(value: &Value, ty: ColumnType) -> Option<Value> {
    match (value, ty) {
        (Value::Null, _) => None,
        (Value::Integer(n), ColumnType::Double) => {
            let x = *n as f64;
            // Only an integer a DOUBLE represents exactly can equal a stored DOUBLE.
            ((-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&x)
                && x as i64 == *n)
                .then_some(Value::Real(canonical(x)))
        }
        (Value::Real(x), ColumnType::BigInt) => (x.fract() == 0.0
            && *x >= -9_223_372_036_854_775_808.0
            && *x < 9_223_372_036_854_775_808.0)
            .then_some(Value::Integer(*x as i64)),
        (Value::Real(x), ColumnType::Double) => Some(Value::Real(canonical(*x))),
        (value, ty) if value.column_type() == Some(ty) => Some(value.clone()),
        _ => None,
    }
}

/// SQL comparison: `None` when either side is NULL. Numbers compare by value across
/// BIGINT and DOUBLE (exactly, without rounding the integer); NaN equals NaN and is
/// larger than every other number; -0.0 equals 0.0.
pub fn compare(left: &Value, right: &Value) -> Option<Ordering> {
    Some(match (left, right) {
        (Value::Null, _) | (_, Value::Null) => return None,
        (Value::Integer(a), Value::Integer(b)) => a.cmp(b),
        (Value::Real(a), Value::Real(b)) => compare_reals(*a, *b),
        (Value::Integer(a), Value::Real(b)) => compare_integer_real(*a, *b),
        (Value::Real(a), Value::Integer(b)) => compare_integer_real(*b, *a).reverse(),
        (Value::Text(a), Value::Text(b)) => a.cmp(b),
        (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
        (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
        (Value::Boolean(a), Value::Boolean(b)) => a.cmp(b),
        (a, b) => a.total_cmp(b),
    })
}

fn compare_reals(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).expect("neither is NaN"),
    }
}

fn compare_integer_real(a: i64, b: f64) -> Ordering {
    if b.is_nan() || b >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if b < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let whole = b.trunc();
    match a.cmp(&(whole as i64)) {
        Ordering::Equal => 0.0.partial_cmp(&(b - whole)).expect("finite"),
        unequal => unequal,
    }
}

impl Expr {
    /// Evaluates over one row.
    pub fn eval(&self, row: &[Value]) -> Result<Value, ExprError> {
        self.eval_ref(row).map(Cow::into_owned)
    }

    /// A condition (WHERE, ON, HAVING): keeps the row only when it is true.
    pub fn matches(&self, row: &[Value]) -> Result<bool, ExprError> {
        Ok(matches!(*self.eval_ref(row)?, Value::Boolean(true)))
    }

    /// Evaluates without cloning columns that are read as they are.
    fn eval_ref<'a>(&'a self, row: &'a [Value]) -> Result<Cow<'a, Value>, ExprError> {
        Ok(match self {
            Expr::Literal(value) => Cow::Borrowed(value),
            Expr::Column(index) => Cow::Borrowed(&row[*index]),
            Expr::Not(inner) => Cow::Owned(match *inner.eval_ref(row)? {
                Value::Boolean(value) => Value::Boolean(!value),
                _ => Value::Null,
            }),
            Expr::Negate(inner) => Cow::Owned(match *inner.eval_ref(row)? {
                Value::Integer(n) => {
                    Value::Integer(n.checked_neg().ok_or(ExprError::UnaryOverflow {
                        function: "-",
                        value: n,
                    })?)
                }
                Value::Real(x) => Value::Real(-x),
                _ => Value::Null,
            }),
            Expr::Binary { op, left, right } => Cow::Owned(binary(*op, left, right, row)?),
            Expr::IsNull { expr, negated } => {
                Cow::Owned(Value::Boolean(expr.eval_ref(row)?.is_null() != *negated))
            }
            Expr::IsBoolean {
                expr,
                value,
                negated,
            } => {
                let is = matches!(*expr.eval_ref(row)?, Value::Boolean(b) if b == *value);
                Cow::Owned(Value::Boolean(is != *negated))
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let needle = expr.eval_ref(row)?;
                if needle.is_null() {
                    return Ok(Cow::Owned(Value::Null));
                }
                let mut saw_null = false;
                for item in list {
                    match compare(&needle, &*item.eval_ref(row)?) {
                        Some(Ordering::Equal) => return Ok(Cow::Owned(Value::Boolean(!*negated))),
                        Some(_) => {}
                        None => saw_null = true,
                    }
                }
                Cow::Owned(if saw_null {
                    Value::Null
                } else {
                    Value::Boolean(*negated)
                })
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let value = expr.eval_ref(row)?;
                let above =
                    compare(&value, &*low.eval_ref(row)?).map(|order| order != Ordering::Less);
                let below =
                    compare(&value, &*high.eval_ref(row)?).map(|order| order != Ordering::Greater);
                Cow::Owned(match and3(above, below) {
                    Some(inside) => Value::Boolean(inside != *negated),
                    None => Value::Null,
                })
            }
            Expr::Like {
                expr,
                pattern,
                escape,
                negated,
                case_insensitive,
            } => {
                let (value, pattern) = (expr.eval_ref(row)?, pattern.eval_ref(row)?);
                Cow::Owned(match (&*value, &*pattern) {
                    (Value::Text(value), Value::Text(pattern)) => {
                        let matched = if *case_insensitive {
                            like(&value.to_lowercase(), &pattern.to_lowercase(), *escape)
                        } else {
                            like(value, pattern, *escape)
                        };
                        Value::Boolean(matched != *negated)
                    }
                    _ => Value::Null,
                })
            }
            Expr::Cast { expr, to } => Cow::Owned(cast(expr.eval(row)?, *to)?),
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                let operand = operand
                    .as_ref()
                    .map(|operand| operand.eval_ref(row))
                    .transpose()?;
                for (condition, result) in branches {
                    let hit = match &operand {
                        Some(value) => {
                            compare(value, &*condition.eval_ref(row)?) == Some(Ordering::Equal)
                        }
                        None => condition.matches(row)?,
                    };
                    if hit {
                        return result.eval_ref(row);
                    }
                }
                match otherwise {
                    Some(otherwise) => otherwise.eval_ref(row)?,
                    None => Cow::Owned(Value::Null),
                }
            }
            Expr::Function { function, args } => Cow::Owned(call(*function, args, row)?),
        })
    }

    /// The terms of a conjunction `a AND b AND c` (just `[self]` otherwise).
    pub fn conjuncts(&self) -> Vec<&Expr> {
        match self {
            Expr::Binary {
                op: BinaryOp::And,
                left,
                right,
            } => {
                let mut terms = left.conjuncts();
                terms.extend(right.conjuncts());
                terms
            }
            other => vec![other],
        }
    }

    /// Whether every column the expression reads satisfies `allowed`.
    pub fn reads_only(&self, allowed: &dyn Fn(usize) -> bool) -> bool {
        match self {
            Expr::Literal(_) => true,
            Expr::Column(index) => allowed(*index),
            Expr::Not(inner) | Expr::Negate(inner) | Expr::Cast { expr: inner, .. } => {
                inner.reads_only(allowed)
            }
            Expr::IsNull { expr, .. } | Expr::IsBoolean { expr, .. } => expr.reads_only(allowed),
            Expr::Binary { left, right, .. } => {
                left.reads_only(allowed) && right.reads_only(allowed)
            }
            Expr::InList { expr, list, .. } => {
                expr.reads_only(allowed) && list.iter().all(|item| item.reads_only(allowed))
            }
            Expr::Between {
                expr, low, high, ..
            } => expr.reads_only(allowed) && low.reads_only(allowed) && high.reads_only(allowed),
            Expr::Like { expr, pattern, .. } => {
                expr.reads_only(allowed) && pattern.reads_only(allowed)
            }
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                operand
                    .as_ref()
                    .is_none_or(|operand| operand.reads_only(allowed))
                    && branches.iter().all(|(condition, result)| {
                        condition.reads_only(allowed) && result.reads_only(allowed)
                    })
                    && otherwise
                        .as_ref()
                        .is_none_or(|otherwise| otherwise.reads_only(allowed))
            }
            Expr::Function { args, .. } => args.iter().all(|arg| arg.reads_only(allowed)),
        }
    }
}

/// The expressions that pin `column` to a value in a conjunction — from `column = e`,
/// `e = column` or `column IN (e1, …)` terms whose `e` reads only columns for which
/// `bound` holds — or `None` when no term pins it. A row can only match if `column`
/// equals one of them, so a lookup by each candidate finds every match.
pub fn pinning_values<'a>(
    terms: &[&'a Expr],
    column: usize,
    bound: &dyn Fn(usize) -> bool,
) -> Option<Vec<&'a Expr>> {
    let pinned_by = |other: &'a Expr| other.reads_only(bound).then_some(other);
    for term in terms {
        match term {
            Expr::Binary {
                op: BinaryOp::Eq,
                left,
                right,
            } => {
                if **left == Expr::Column(column)
                    && let Some(value) = pinned_by(right)
                {
                    return Some(vec![value]);
                }
                if **right == Expr::Column(column)
                    && let Some(value) = pinned_by(left)
                {
                    return Some(vec![value]);
                }
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } if **expr == Expr::Column(column)
                && list.iter().all(|item| item.reads_only(bound)) =>
            {
                return Some(list.iter().collect());
            }
            _ => {}
        }
    }
    None
}

/// A primary-key access path found in a condition: for each key column, the
/// expressions one of which it must equal (see `pinning_values`).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyLookup {
    pins: Vec<Vec<Expr>>,
    types: Vec<ColumnType>,
}

impl KeyLookup {
    /// Finds a lookup for the key columns `key_columns` (indices in the condition's scope,
    /// with their types) in the condition's terms, the pinning expressions reading only
    /// columns for which `bound` holds. `None` when some key column is not pinned.
    pub fn plan(
        terms: &[&Expr],
        key_columns: &[usize],
        key_types: &[ColumnType],
        bound: &dyn Fn(usize) -> bool,
    ) -> Option<KeyLookup> {
        assert_eq!(key_columns.len(), key_types.len());
        assert!(!key_columns.is_empty(), "primary keys are never empty");
        let pins = key_columns
            .iter()
            .map(|&column| {
                pinning_values(terms, column, bound)
                    .map(|values| values.into_iter().cloned().collect())
            })
            .collect::<Option<Vec<Vec<Expr>>>>()?;
        Some(KeyLookup {
            pins,
            types: key_types.to_vec(),
        })
    }

    /// The distinct keys to look up, in key order, the pinning expressions evaluated over
    /// `row` (the bound columns); `None` when there would be more than `keys_max`, so the
    /// caller scans instead.
    pub fn keys(
        &self,
        row: &[Value],
        keys_max: usize,
    ) -> Result<Option<Vec<Vec<Value>>>, ExprError> {
        let mut keys: Vec<Vec<Value>> = vec![Vec::with_capacity(self.pins.len())];
        for (pins, ty) in self.pins.iter().zip(&self.types) {
            let mut values = Vec::with_capacity(pins.len());
            for pin in pins {
                // A value no stored key can equal (NULL, 1.5 for a BIGINT) pins nothing.
                if let Some(value) = key_value(&*pin.eval_ref(row)?, *ty) {
                    values.push(value);
                }
            }
            if keys.len().saturating_mul(values.len()) > keys_max {
                return Ok(None);
            }
            keys = keys
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |value| {
                        let mut key = prefix.clone();
                        key.push(value.clone());
                        key
                    })
                })
                .collect();
        }
        let distinct: std::collections::BTreeSet<crate::store::OrderedKey> =
            keys.into_iter().map(crate::store::OrderedKey).collect();
        Ok(Some(distinct.into_iter().map(|key| key.0).collect()))
    }
}

fn and3(left: Option<bool>, right: Option<bool>) -> Option<bool> {
    match (left, right) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Boolean(value) => Some(*value),
        _ => None,
    }
}

fn binary(op: BinaryOp, left: &Expr, right: &Expr, row: &[Value]) -> Result<Value, ExprError> {
    // AND and OR look at the right side only when the left does not decide alone, as
    // three-valued logic allows.
    match op {
        BinaryOp::And => {
            let l = as_bool(&*left.eval_ref(row)?);
            if l == Some(false) {
                return Ok(Value::Boolean(false));
            }
            return Ok(and3(l, as_bool(&*right.eval_ref(row)?)).map_or(Value::Null, Value::Boolean));
        }
        BinaryOp::Or => {
            let l = as_bool(&*left.eval_ref(row)?);
            if l == Some(true) {
                return Ok(Value::Boolean(true));
            }
            let r = as_bool(&*right.eval_ref(row)?);
            return Ok(match (l, r) {
                (_, Some(true)) => Value::Boolean(true),
                (Some(false), Some(false)) => Value::Boolean(false),
                _ => Value::Null,
            });
        }
        _ => {}
    }
    let (l, r) = (left.eval_ref(row)?, right.eval_ref(row)?);
    if op.is_comparison() {
        let Some(order) = compare(&l, &r) else {
            return Ok(Value::Null);
        };
        let result = match op {
            BinaryOp::Eq => order == Ordering::Equal,
            BinaryOp::NotEq => order != Ordering::Equal,
            BinaryOp::Lt => order == Ordering::Less,
            BinaryOp::LtEq => order != Ordering::Greater,
            BinaryOp::Gt => order == Ordering::Greater,
            BinaryOp::GtEq => order != Ordering::Less,
            _ => unreachable!("is_comparison"),
        };
        return Ok(Value::Boolean(result));
    }
    if l.is_null() || r.is_null() {
        return Ok(Value::Null);
    }
    match (&*l, &*r) {
        (Value::Text(a), Value::Text(b)) if op == BinaryOp::Concat => {
            Ok(Value::Text(format!("{a}{b}")))
        }
        (Value::Integer(a), Value::Integer(b)) => integer_arithmetic(op, *a, *b),
        (a, b) => {
            let (a, b) = (real(a), real(b));
            let result = match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
                BinaryOp::Div | BinaryOp::Mod if b == 0.0 => return Err(ExprError::DivisionByZero),
                BinaryOp::Div => a / b,
                BinaryOp::Mod => a % b,
                _ => unreachable!("type-checked: {op:?} on numbers"),
            };
            Ok(Value::Real(result))
        }
    }
}

fn real(value: &Value) -> f64 {
    match value {
        Value::Integer(n) => *n as f64,
        Value::Real(x) => *x,
        other => unreachable!("type-checked: {other:?} is a number"),
    }
}

fn integer_arithmetic(op: BinaryOp, a: i64, b: i64) -> Result<Value, ExprError> {
    let overflow = || ExprError::Overflow {
        left: a,
        op: op.symbol(),
        right: b,
    };
    let result = match op {
        BinaryOp::Add => a.checked_add(b).ok_or_else(overflow)?,
        BinaryOp::Sub => a.checked_sub(b).ok_or_else(overflow)?,
        BinaryOp::Mul => a.checked_mul(b).ok_or_else(overflow)?,
        BinaryOp::Div | BinaryOp::Mod if b == 0 => return Err(ExprError::DivisionByZero),
        BinaryOp::Div => a.checked_div(b).ok_or_else(overflow)?,
        BinaryOp::Mod => a.checked_rem(b).ok_or_else(overflow)?,
        _ => unreachable!("type-checked: {op:?} on integers"),
    };
    Ok(Value::Integer(result))
}

fn call(function: Function, args: &[Expr], row: &[Value]) -> Result<Value, ExprError> {
    match function {
        Function::Coalesce => {
            for arg in args {
                let value = arg.eval(row)?;
                if !value.is_null() {
                    return Ok(value);
                }
            }
            Ok(Value::Null)
        }
        Function::NullIf => {
            let value = args[0].eval(row)?;
            let other = args[1].eval_ref(row)?;
            Ok(if compare(&value, &other) == Some(Ordering::Equal) {
                Value::Null
            } else {
                value
            })
        }
        Function::Lower | Function::Upper | Function::Length | Function::Abs => {
            Ok(match (function, args[0].eval(row)?) {
                (_, Value::Null) => Value::Null,
                (Function::Lower, Value::Text(text)) => Value::Text(text.to_lowercase()),
                (Function::Upper, Value::Text(text)) => Value::Text(text.to_uppercase()),
                (Function::Length, Value::Text(text)) => {
                    Value::Integer(text.chars().count() as i64)
                }
                (Function::Length, Value::Bytes(bytes)) => Value::Integer(bytes.len() as i64),
                (Function::Abs, Value::Integer(n)) => {
                    Value::Integer(n.checked_abs().ok_or(ExprError::UnaryOverflow {
                        function: "ABS",
                        value: n,
                    })?)
                }
                (Function::Abs, Value::Real(x)) => Value::Real(x.abs()),
                (function, other) => unreachable!("type-checked: {function:?}({other:?})"),
            })
        }
    }
}

/// SQL LIKE: `%` matches any run of characters, `_` exactly one; `escape` makes the next
/// character literal. Greedy matching with backtracking to the last `%`: O(n·m) at worst.
pub fn like(text: &str, pattern: &str, escape: Option<char>) -> bool {
    #[derive(PartialEq)]
    enum Piece {
        Any,
        One,
        Char(char),
    }
    let mut pieces = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        pieces.push(match c {
            c if Some(c) == escape => chars.next().map_or(Piece::Char(c), Piece::Char),
            '%' => Piece::Any,
            '_' => Piece::One,
            c => Piece::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut p) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pieces.get(p) {
            Some(Piece::Any) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(Piece::One) => {
                t += 1;
                p += 1;
            }
            Some(Piece::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match backtrack {
                Some((star, start)) => {
                    p = star + 1;
                    t = start + 1;
                    backtrack = Some((star, start + 1));
                }
                None => return false,
            },
        }
    }
    pieces[p..].iter().all(|piece| *piece == Piece::Any)
}

#[cfg(test)]
mod tests;
