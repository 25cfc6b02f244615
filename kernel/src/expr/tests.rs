// expect-test's idiom passes `Expect` by value.
#![allow(clippy::needless_pass_by_value)]

use super::*;
use crate::sql::{self, SelectItem, Statement};
use crate::value::Column;
use expect_test::{Expect, expect};

fn scope() -> (Columns, Vec<Value>) {
    let columns = [
        ("id", ColumnType::BigInt, Value::Integer(7)),
        ("name", ColumnType::Text, Value::Text("Ada".to_string())),
        ("score", ColumnType::Double, Value::Real(2.5)),
        ("ok", ColumnType::Boolean, Value::Boolean(true)),
        (
            "at",
            ColumnType::Timestamp,
            Value::Timestamp(1_705_314_600_000_000_000),
        ),
        ("raw", ColumnType::Bytes, Value::Bytes(vec![0, 255])),
        ("missing", ColumnType::Text, Value::Null),
        ("big", ColumnType::BigInt, Value::Integer(i64::MAX)),
    ];
    let mut scope = Columns::new();
    let table: Vec<Column> = columns
        .iter()
        .map(|(name, ty, _)| Column {
            name: name.to_string(),
            ty: *ty,
            nullable: true,
        })
        .collect();
    scope.push_table("t", &table);
    let mut other = Columns::new();
    other.push_table(
        "u",
        &[Column {
            name: "id".to_string(),
            ty: ColumnType::BigInt,
            nullable: false,
        }],
    );
    scope.columns.extend(other.columns);
    let mut row: Vec<Value> = columns.into_iter().map(|(_, _, value)| value).collect();
    row.push(Value::Integer(8));
    (scope, row)
}

fn parse_expr(text: &str) -> sql::ast::Expr {
    match sql::parse(&format!("SELECT {text} FROM t")) {
        Ok(Statement::Select(mut select)) => match select.items.remove(0) {
            SelectItem::Expr { expr, .. } => expr,
            other => panic!("not an expression: {other:?}"),
        },
        other => panic!("{text} does not parse as an expression: {other:?}"),
    }
}

/// Compiles `text` against table `t` (and `u`, which also has an `id`) with
/// parameters `$1 = 10`, `$2 = 'x'`, `$3 = NULL`, evaluates it over one row and renders
/// `value : type`.
fn check(text: &str, expected: Expect) {
    let (scope, row) = scope();
    let params = [
        Value::Integer(10),
        Value::Text("x".to_string()),
        Value::Null,
    ];
    let actual = match compile(&parse_expr(text), &scope, &params) {
        Ok(typed) => match typed.expr.eval(&row) {
            Ok(value) => format!("{} : {}", value.to_sql(), type_name(typed.ty)),
            Err(error) => format!("eval error: {error}"),
        },
        Err(error) => format!("compile error: {error}"),
    };
    expected.assert_eq(&actual);
}

#[test]
fn columns_literals_and_parameters() {
    check(
        "id",
        expect!["compile error: column reference `id` is ambiguous (it could be t.id or u.id)"],
    );
    check("T.Name", expect!["'Ada' : TEXT"]);
    check("u.id", expect!["8 : BIGINT"]);
    check("\"name\"", expect!["'Ada' : TEXT"]);
    check(
        "-9223372036854775808",
        expect!["-9223372036854775808 : BIGINT"],
    );
    check(
        "9223372036854775808",
        expect![
            "compile error: invalid literal 9223372036854775808: out of range for BIGINT (use a DOUBLE literal such as 1e20)"
        ],
    );
    check("1.5e3", expect!["1500.0 : DOUBLE"]);
    check("X'00FF'", expect!["X'00ff' : BYTES"]);
    check(
        "X'0'",
        expect![
            "compile error: invalid literal X'0': a BYTES literal needs an even number of hex digits"
        ],
    );
    check(
        "TIMESTAMP '2024-01-15 10:30:00'",
        expect!["TIMESTAMP '2024-01-15 10:30:00' : TIMESTAMP"],
    );
    check(
        "TIMESTAMP 'soon'",
        expect![
            "compile error: cannot cast 'soon' to TIMESTAMP: invalid timestamp 'soon': expected 'YYYY-MM-DD HH:MM:SS[.fraction]' (UTC) or RFC 3339 with an offset"
        ],
    );
    check("$1 + 1", expect!["11 : BIGINT"]);
    check("$2", expect!["'x' : TEXT"]);
    check("$3", expect!["NULL : NULL"]);
    check(
        "$4",
        expect!["compile error: parameter $4 was not given (3 parameters given)"],
    );
    check(
        "$0",
        expect!["compile error: invalid parameter `$0`: parameters are written $1, $2, …"],
    );
    check(
        "nope",
        expect![
            "compile error: unknown column `nope` (columns: t.id, t.name, t.score, t.ok, t.at, t.raw, t.missing, t.big, u.id)"
        ],
    );
    check(
        "t.nope",
        expect![
            "compile error: unknown column `t.nope` (columns of t: t.id, t.name, t.score, t.ok, t.at, t.raw, t.missing, t.big)"
        ],
    );
    check(
        "v.id",
        expect!["compile error: unknown table `v` in `v.id` (tables here: t, u)"],
    );
    check(
        "t.id + 0 = u.id - 1 AND T.ID = 7",
        expect!["TRUE : BOOLEAN"],
    );
    check(
        "a.b.c",
        expect![
            "compile error: the name `a.b.c` (use column or table.column) is not supported yet"
        ],
    );
}

#[test]
fn arithmetic() {
    check("t.id * 3 - 1", expect!["20 : BIGINT"]);
    check("t.id / 2", expect!["3 : BIGINT"]);
    check("t.id % 4", expect!["3 : BIGINT"]);
    check("-t.id", expect!["-7 : BIGINT"]);
    check("t.id + score", expect!["9.5 : DOUBLE"]);
    check("score / 0.5", expect!["5.0 : DOUBLE"]);
    check(
        "big + 1",
        expect!["eval error: integer overflow in 9223372036854775807 + 1"],
    );
    check(
        "big * 2",
        expect!["eval error: integer overflow in 9223372036854775807 * 2"],
    );
    check(
        "-(big + 0) - 2",
        expect!["eval error: integer overflow in -9223372036854775807 - 2"],
    );
    check("t.id / 0", expect!["eval error: division by zero"]);
    check("t.id % 0", expect!["eval error: division by zero"]);
    check("score / 0", expect!["eval error: division by zero"]);
    check(
        "ABS(-9223372036854775808)",
        expect!["eval error: integer overflow in ABS(-9223372036854775808)"],
    );
    check("missing || 'x'", expect!["NULL : TEXT"]);
    check("name || '!' || $2", expect!["'Ada!x' : TEXT"]);
    check(
        "name + 1",
        expect!["compile error: type mismatch in `name + 1`: + needs numbers, got TEXT and BIGINT"],
    );
    check(
        "t.id || 'x'",
        expect!["compile error: type mismatch in `t.id`: || needs TEXT, got BIGINT"],
    );
    check(
        "-name",
        expect!["compile error: type mismatch in `-name`: unary - needs a number, got TEXT"],
    );
    check("NULL + 1", expect!["NULL : BIGINT"]);
}

#[test]
fn comparisons_and_three_valued_logic() {
    check("t.id = 7.0", expect!["TRUE : BOOLEAN"]);
    check("t.id < 7.5", expect!["TRUE : BOOLEAN"]);
    check("big > 9.2e18", expect!["TRUE : BOOLEAN"]);
    check("name <> 'Ada'", expect!["FALSE : BOOLEAN"]);
    check("at = '2024-01-15T10:30:00Z'", expect!["TRUE : BOOLEAN"]);
    check(
        "at > '2024-13-01'",
        expect![
            "compile error: invalid literal '2024-13-01': invalid timestamp '2024-13-01': expected 'YYYY-MM-DD HH:MM:SS[.fraction]' (UTC) or RFC 3339 with an offset"
        ],
    );
    check("raw = X'00ff'", expect!["TRUE : BOOLEAN"]);
    check(
        "name = 1",
        expect!["compile error: type mismatch in `name = 1`: cannot compare TEXT with BIGINT"],
    );
    check("missing = 'x'", expect!["NULL : BOOLEAN"]);
    check("missing = 'x' AND false", expect!["FALSE : BOOLEAN"]);
    check("missing = 'x' AND true", expect!["NULL : BOOLEAN"]);
    check("missing = 'x' OR true", expect!["TRUE : BOOLEAN"]);
    check("missing = 'x' OR false", expect!["NULL : BOOLEAN"]);
    check("NOT (missing = 'x')", expect!["NULL : BOOLEAN"]);
    check("NOT ok", expect!["FALSE : BOOLEAN"]);
    check(
        "ok AND 1",
        expect!["compile error: type mismatch in `1`: AND needs BOOLEAN, got BIGINT"],
    );
    check("missing IS NULL", expect!["TRUE : BOOLEAN"]);
    check("name IS NOT NULL", expect!["TRUE : BOOLEAN"]);
    check("(missing = 'x') IS NOT TRUE", expect!["TRUE : BOOLEAN"]);
    check("ok IS FALSE", expect!["FALSE : BOOLEAN"]);
    check("t.id IN (1, 7)", expect!["TRUE : BOOLEAN"]);
    check("t.id IN (1, NULL)", expect!["NULL : BOOLEAN"]);
    check("t.id NOT IN (1, 2)", expect!["TRUE : BOOLEAN"]);
    check("t.id NOT IN (1, NULL)", expect!["NULL : BOOLEAN"]);
    check(
        "t.id IN (1, 'x')",
        expect![
            "compile error: type mismatch in `t.id IN (1, 'x')`: cannot compare BIGINT with TEXT"
        ],
    );
    check("t.id BETWEEN 1 AND 7", expect!["TRUE : BOOLEAN"]);
    check("t.id NOT BETWEEN 1 AND 7", expect!["FALSE : BOOLEAN"]);
    check("t.id BETWEEN NULL AND 3", expect!["FALSE : BOOLEAN"]);
    check("t.id BETWEEN NULL AND 9", expect!["NULL : BOOLEAN"]);
    check(
        "at BETWEEN '2024-01-01' AND '2024-02-01'",
        expect!["TRUE : BOOLEAN"],
    );
    check(
        "t.id IN (SELECT 1)",
        expect!["compile error: subqueries is not supported yet"],
    );
}

#[test]
fn like() {
    check("name LIKE 'A%'", expect!["TRUE : BOOLEAN"]);
    check("name LIKE '_d_'", expect!["TRUE : BOOLEAN"]);
    check("name LIKE 'a%'", expect!["FALSE : BOOLEAN"]);
    check("name ILIKE 'a%'", expect!["TRUE : BOOLEAN"]);
    check("name NOT LIKE '%d%'", expect!["FALSE : BOOLEAN"]);
    check("missing LIKE '%'", expect!["NULL : BOOLEAN"]);
    check("'50%' LIKE '50\\%'", expect!["TRUE : BOOLEAN"]);
    check("'50x' LIKE '50\\%'", expect!["FALSE : BOOLEAN"]);
    check("'a_b' LIKE 'a!_b' ESCAPE '!'", expect!["TRUE : BOOLEAN"]);
    check(
        "t.id LIKE '7'",
        expect!["compile error: type mismatch in `t.id`: LIKE needs TEXT, got BIGINT"],
    );
    let cases = [
        ("", "", true),
        ("", "%", true),
        ("abc", "%%%", true),
        ("abc", "a%c", true),
        ("abcbc", "a%bc", true),
        ("abcb", "a%bc", false),
        ("mississippi", "%iss%ppi", true),
        ("mississippi", "m%ss_ss%", true),
        ("ab", "a_b", false),
        ("üx", "_x", true),
    ];
    for (text, pattern, expected) in cases {
        assert_eq!(
            super::like(text, pattern, Some('\\')),
            expected,
            "{text:?} LIKE {pattern:?}"
        );
    }
}

#[test]
fn casts() {
    check("CAST(score AS BIGINT)", expect!["3 : BIGINT"]);
    check("CAST('42' AS BIGINT) + 1", expect!["43 : BIGINT"]);
    check(
        "CAST('4x' AS BIGINT)",
        expect!["compile error: cannot cast '4x' to BIGINT: not an integer"],
    );
    check(
        "CAST(name AS BIGINT)",
        expect!["eval error: cannot cast 'Ada' to BIGINT: not an integer"],
    );
    check("CAST(t.id AS TEXT) || name", expect!["'7Ada' : TEXT"]);
    check("CAST(score AS TEXT)", expect!["'2.5' : TEXT"]);
    check("CAST(at AS TEXT)", expect!["'2024-01-15 10:30:00' : TEXT"]);
    check(
        "CAST(at AS BIGINT)",
        expect!["1705314600000000000 : BIGINT"],
    );
    check(
        "CAST(0 AS TIMESTAMP)",
        expect!["TIMESTAMP '1970-01-01 00:00:00' : TIMESTAMP"],
    );
    check("CAST('yes' AS BOOLEAN)", expect!["TRUE : BOOLEAN"]);
    check("CAST(ok AS BIGINT)", expect!["1 : BIGINT"]);
    check(
        "CAST(raw AS TEXT)",
        expect!["eval error: cannot cast X'00ff' to TEXT: not valid UTF-8"],
    );
    check("CAST('hi' AS BYTES)", expect!["X'6869' : BYTES"]);
    check(
        "CAST(1e300 AS BIGINT)",
        expect!["compile error: cannot cast 1e300 to BIGINT: out of range for BIGINT"],
    );
    check(
        "CAST(ok AS TIMESTAMP)",
        expect![
            "compile error: type mismatch in `CAST(ok AS TIMESTAMP)`: cannot cast BOOLEAN to TIMESTAMP"
        ],
    );
    check("t.id::DOUBLE / 2", expect!["3.5 : DOUBLE"]);
    check("CAST(NULL AS TEXT)", expect!["NULL : TEXT"]);
    check(
        "CAST(t.id AS DECIMAL)",
        expect![
            "compile error: column type `DECIMAL` is not supported (types: BIGINT, TEXT, BOOLEAN, DOUBLE, TIMESTAMP, BYTES)"
        ],
    );
}

#[test]
fn case_and_functions() {
    check(
        "CASE WHEN t.id > 5 THEN 'big' ELSE 'small' END",
        expect!["'big' : TEXT"],
    );
    check(
        "CASE t.id WHEN 1 THEN 1 WHEN 7 THEN 2.5 END",
        expect!["2.5 : DOUBLE"],
    );
    check("CASE WHEN false THEN 1 END", expect!["NULL : BIGINT"]);
    check(
        "CASE WHEN ok THEN 1 ELSE 'x' END",
        expect![
            "compile error: type mismatch in `CASE WHEN ok THEN 1 ELSE 'x' END`: results mix BIGINT and TEXT"
        ],
    );
    check("COALESCE(missing, name)", expect!["'Ada' : TEXT"]);
    check("COALESCE(NULL, 1, 2.5)", expect!["1.0 : DOUBLE"]);
    check("NULLIF(t.id, 7)", expect!["NULL : BIGINT"]);
    check("LOWER(name) || UPPER(name)", expect!["'adaADA' : TEXT"]);
    check("LENGTH(name) + LENGTH(raw)", expect!["5 : BIGINT"]);
    check("ABS(-score)", expect!["2.5 : DOUBLE"]);
    check(
        "LOWER(t.id)",
        expect!["compile error: type mismatch in `LOWER(t.id)`: LOWER needs TEXT, got BIGINT"],
    );
    check(
        "LOWER(name, name)",
        expect!["compile error: LOWER takes one argument, got 2 arguments"],
    );
    check(
        "NOW()",
        expect![
            "compile error: unknown function `NOW` (functions: COUNT, SUM, MIN, MAX, AVG, COALESCE, NULLIF, LOWER, UPPER, LENGTH, ABS)"
        ],
    );
    check(
        "COUNT(*)",
        expect![
            "compile error: aggregate function COUNT is not allowed here (only in the select list, HAVING and ORDER BY)"
        ],
    );
    check(
        "SUM(t.id) OVER ()",
        expect!["compile error: window functions (OVER) is not supported yet"],
    );
}

#[test]
fn key_lookups_find_pinned_keys() {
    let (scope, row) = scope();
    let plan = |text: &str, key: &[usize], types: &[ColumnType]| {
        let filter = compile_condition(&parse_expr(text), &scope, &[], "WHERE").unwrap();
        match KeyLookup::plan(&filter.conjuncts(), key, types, &|_| false) {
            None => "scan".to_string(),
            Some(lookup) => format!("{:?}", lookup.keys(&row, 4).unwrap()),
        }
    };
    let render = |text: &str| plan(text, &[0], &[ColumnType::BigInt]);
    expect!["Some([[Integer(7)]])"].assert_eq(&render("t.id = 7"));
    expect!["Some([[Integer(7)]])"].assert_eq(&render("7.0 = t.id AND name = 'x'"));
    expect!["Some([])"].assert_eq(&render("t.id = 7.5"));
    expect!["Some([])"].assert_eq(&render("t.id = NULL"));
    expect!["Some([[Integer(1)], [Integer(2)]])"].assert_eq(&render("t.id IN (2, 1, 2, NULL)"));
    expect!["None"].assert_eq(&render("t.id IN (1, 2, 3, 4, 5)"));
    expect!["scan"].assert_eq(&render("t.id = 7 OR t.id = 8"));
    expect!["scan"].assert_eq(&render("t.id > 7"));
    expect!["scan"].assert_eq(&render("t.id = big"));
    expect!["scan"].assert_eq(&render("t.id NOT IN (1)"));
    let composite = plan(
        "t.id = 1 AND name IN ('a', 'b')",
        &[1, 0],
        &[ColumnType::Text, ColumnType::BigInt],
    );
    expect![[r#"Some([[Text("a"), Integer(1)], [Text("b"), Integer(1)]])"#]].assert_eq(&composite);
    expect!["scan"].assert_eq(&plan(
        "t.id = 1",
        &[1, 0],
        &[ColumnType::Text, ColumnType::BigInt],
    ));
    // A DOUBLE key pinned to an integer (or to -0.0) looks up the canonical DOUBLE.
    expect!["Some([[Real(0.0)]])"].assert_eq(&plan("score = -0.0", &[2], &[ColumnType::Double]));
    expect!["Some([[Real(3.0)]])"].assert_eq(&plan("score = 3", &[2], &[ColumnType::Double]));
    expect!["Some([])"].assert_eq(&plan(
        "score = 9007199254740993",
        &[2],
        &[ColumnType::Double],
    ));
}

#[test]
fn assignment_converts_only_what_is_safe() {
    let render = |value: Value, ty: ColumnType| format!("{:?}", assign(value, ty));
    expect!["Ok(Real(3.0))"].assert_eq(&render(Value::Integer(3), ColumnType::Double));
    expect!["Ok(Real(0.0))"].assert_eq(&render(Value::Real(-0.0), ColumnType::Double));
    expect!["Ok(Timestamp(1705276800000000000))"].assert_eq(&render(
        Value::Text("2024-01-15".into()),
        ColumnType::Timestamp,
    ));
    expect!["Err(Mismatch)"].assert_eq(&render(Value::Real(3.0), ColumnType::BigInt));
    expect!["Err(Mismatch)"].assert_eq(&render(Value::Integer(3), ColumnType::Text));
    expect!["Ok(Null)"].assert_eq(&render(Value::Null, ColumnType::Bytes));
    assert!(
        matches!(assign(Value::Real(-f64::NAN), ColumnType::Double), Ok(Value::Real(x)) if x.to_bits() == f64::NAN.to_bits())
    );
}

#[test]
fn row_filter_session_values() {
    let (scope, row) = scope();
    let attributes = [("team".to_string(), "Ada".to_string())];
    let session = Session {
        attributes: &attributes,
        purpose: Some("treatment"),
    };
    let run =
        |text: &str, session: Session<'_>| match compile_filter(&parse_expr(text), &scope, session)
        {
            Ok(filter) => format!("{:?}", filter.matches(&row)),
            Err(error) => format!("compile error: {error}"),
        };
    let mut out = String::new();
    for text in [
        "name = current_attribute('team')",
        "name = current_attribute('nope')",
        "NOT (name = current_attribute('nope'))",
        "current_purpose() = 'treatment'",
        "current_attribute(name) = 'x'",
        "current_attribute('a', 'b') = 'x'",
        "current_purpose('x') = 'x'",
        "name",
    ] {
        out.push_str(&format!(
            "{text}: {} / without session values: {}\n",
            run(text, session),
            run(text, Session::EMPTY)
        ));
    }
    out.push_str(&format!(
        "in a plain WHERE: {}\n",
        compile(&parse_expr("current_purpose() = 'x'"), &scope, &[]).unwrap_err()
    ));
    expect![[r#"
        name = current_attribute('team'): Ok(true) / without session values: Ok(false)
        name = current_attribute('nope'): Ok(false) / without session values: Ok(false)
        NOT (name = current_attribute('nope')): Ok(false) / without session values: Ok(false)
        current_purpose() = 'treatment': Ok(true) / without session values: Ok(false)
        current_attribute(name) = 'x': compile error: type mismatch in `current_attribute(name)`: current_attribute takes the attribute's name as a quoted string / without session values: compile error: type mismatch in `current_attribute(name)`: current_attribute takes the attribute's name as a quoted string
        current_attribute('a', 'b') = 'x': compile error: CURRENT_ATTRIBUTE takes one argument, got 2 arguments / without session values: compile error: CURRENT_ATTRIBUTE takes one argument, got 2 arguments
        current_purpose('x') = 'x': compile error: CURRENT_PURPOSE takes no arguments, got 1 arguments / without session values: compile error: CURRENT_PURPOSE takes no arguments, got 1 arguments
        name: compile error: type mismatch in `name`: USING needs a BOOLEAN condition, got TEXT / without session values: compile error: type mismatch in `name`: USING needs a BOOLEAN condition, got TEXT
        in a plain WHERE: current_purpose() is only available in a row filter (CREATE POLICY … USING (…))
    "#]]
    .assert_eq(&out);
}
