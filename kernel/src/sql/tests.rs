// expect-test's idiom passes `Expect` by value.
#![allow(clippy::needless_pass_by_value)]

use super::*;
use expect_test::{Expect, expect};
use proptest::prelude::*;

/// Parses one statement and renders what the rest of Kimberlite sees of it.
fn check(sql: &str, expected: Expect) {
    let actual = match parse(sql) {
        Ok(statement) => render(&statement),
        Err(error) => format!("error: {error}"),
    };
    expected.assert_eq(&actual);
}

fn render(statement: &Statement) -> String {
    let opt = |expr: &Option<ast::Expr>| expr.as_ref().map_or("-".to_string(), ToString::to_string);
    let requirements: Vec<String> = statement
        .requirements()
        .iter()
        .map(ToString::to_string)
        .collect();
    let needs = format!(" needs [{}]", requirements.join(", "));
    let shape = render_shape(statement, opt);
    // SELECTs show their needs inline; CREATE TABLE always needs Ddl.
    if matches!(statement, Statement::Select(_) | Statement::CreateTable(_)) {
        shape
    } else {
        shape + &needs
    }
}

fn render_shape(statement: &Statement, opt: impl Fn(&Option<ast::Expr>) -> String) -> String {
    match statement {
        Statement::Grant(grant) | Statement::Revoke(grant) => {
            let tables: Vec<String> = grant.tables.iter().map(ToString::to_string).collect();
            format!(
                "{} {} on [{}] roles {:?}",
                if matches!(statement, Statement::Grant(_)) {
                    "grant"
                } else {
                    "revoke"
                },
                crate::access::describe_privileges(&grant.privileges),
                tables.join(", "),
                grant.roles
            )
        }
        Statement::CreatePolicy(create) => format!(
            "policy {} on {} {} roles {:?} using {}",
            create.name,
            create.table,
            create.kind.name(),
            create.roles,
            create.using
        ),
        Statement::DropPolicy(drop) => format!(
            "drop policy {} on {} if_exists={}",
            drop.name, drop.table, drop.if_exists
        ),
        Statement::CreateTable(create) => {
            let columns: Vec<String> = create
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "{} {}{}",
                        c.name,
                        c.ty,
                        if c.nullable { "" } else { " NOT NULL" }
                    )
                })
                .collect();
            format!(
                "create {} if_not_exists={} ({}) key={:?}",
                create.name,
                create.if_not_exists,
                columns.join(", "),
                create.primary_key
            )
        }
        Statement::DropTable(drop) => format!("drop {} if_exists={}", drop.name, drop.if_exists),
        Statement::Insert(insert) => {
            let rows: Vec<String> = insert
                .rows
                .iter()
                .map(|row| {
                    format!(
                        "({})",
                        row.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect();
            format!(
                "insert {} columns={:?} rows={}",
                insert.table,
                insert.columns,
                rows.join(" ")
            )
        }
        Statement::Update(update) => {
            let sets: Vec<String> = update
                .assignments
                .iter()
                .map(|(c, e)| format!("{c}={e}"))
                .collect();
            format!(
                "update {} alias={:?} set {} where {}",
                update.table,
                update.alias,
                sets.join(", "),
                opt(&update.selection)
            )
        }
        Statement::Delete(delete) => {
            format!(
                "delete {} alias={:?} where {}",
                delete.table,
                delete.alias,
                opt(&delete.selection)
            )
        }
        Statement::Select(select) => {
            let items: Vec<String> = select
                .items
                .iter()
                .map(|item| match item {
                    SelectItem::Wildcard => "*".to_string(),
                    SelectItem::QualifiedWildcard(table) => format!("{table}.*"),
                    SelectItem::Expr {
                        expr,
                        alias: Some(alias),
                    } => format!("{expr} AS {alias}"),
                    SelectItem::Expr { expr, alias: None } => expr.to_string(),
                })
                .collect();
            let from: Vec<String> = select
                .from
                .iter()
                .map(|item| {
                    format!(
                        "{}{}{}{}",
                        item.table,
                        item.alias
                            .as_ref()
                            .map_or(String::new(), |a| format!(" as {a}")),
                        item.as_of
                            .as_ref()
                            .map_or(String::new(), |e| format!(" as_of[{e}]")),
                        item.on
                            .as_ref()
                            .map_or(String::new(), |e| format!(" on[{e}]")),
                    )
                })
                .collect();
            let order: Vec<String> = select
                .order_by
                .iter()
                .map(|o| {
                    format!(
                        "{}{}{}",
                        o.expr,
                        if o.descending { " desc" } else { "" },
                        match o.nulls_first {
                            None => "",
                            Some(true) => " nulls_first",
                            Some(false) => " nulls_last",
                        }
                    )
                })
                .collect();
            let group: Vec<String> = select.group_by.iter().map(ToString::to_string).collect();
            format!(
                "select{} [{}] from [{}] where {} group [{}] having {} order [{}] limit {} offset {} needs [{}]",
                if select.distinct { " distinct" } else { "" },
                items.join(", "),
                from.join(", "),
                opt(&select.selection),
                group.join(", "),
                opt(&select.having),
                order.join(", "),
                opt(&select.limit),
                opt(&select.offset),
                statement
                    .requirements()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        }
    }
}

#[test]
fn create_table() {
    check(
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT, region TEXT)",
        expect![
            "create patients if_not_exists=false (id BIGINT NOT NULL, name TEXT, region TEXT) key=[0]"
        ],
    );
    check(
        "create table if not exists T (a int, b integer not null, c varchar(20), d real, e float, f double precision, g bool, h timestamp, i bytea, j blob, k bytes, l double, PRIMARY KEY (b, a))",
        expect![
            "create t if_not_exists=true (a BIGINT NOT NULL, b BIGINT NOT NULL, c TEXT, d DOUBLE, e DOUBLE, f DOUBLE, g BOOLEAN, h TIMESTAMP, i BYTES, j BYTES, k BYTES, l DOUBLE) key=[1, 0]"
        ],
    );
    check(
        r#"CREATE TABLE "Mixed" ("Id" BIGINT PRIMARY KEY)"#,
        expect!["create Mixed if_not_exists=false (Id BIGINT NOT NULL) key=[0]"],
    );
    check(
        "CREATE TABLE t (a BIGINT)",
        expect!["error: table `t` has no PRIMARY KEY; every table needs one"],
    );
    check(
        "CREATE TABLE t (a BIGINT PRIMARY KEY, A TEXT)",
        expect!["error: column `a` is declared twice in table `t`"],
    );
    check(
        "CREATE TABLE t (a BIGINT PRIMARY KEY, b TEXT, PRIMARY KEY (b))",
        expect!["error: table `t` declares PRIMARY KEY twice"],
    );
    check(
        "CREATE TABLE t (a BIGINT, PRIMARY KEY (z))",
        expect!["error: PRIMARY KEY names `z`, which is not a column of `t` (columns: a)"],
    );
    check(
        "CREATE TABLE t (a DECIMAL(10, 2) PRIMARY KEY)",
        expect![
            "error: column type `DECIMAL(10,2)` is not supported (types: BIGINT, TEXT, BOOLEAN, DOUBLE, TIMESTAMP, BYTES)"
        ],
    );
    check(
        "CREATE TABLE t (a BIGINT PRIMARY KEY, b TEXT DEFAULT 'x')",
        expect!["error: the column option `DEFAULT 'x'` is not supported yet"],
    );
    check(
        "CREATE TABLE t (a BIGINT PRIMARY KEY, b TEXT UNIQUE)",
        expect!["error: the column option `UNIQUE` is not supported yet"],
    );
    check(
        "CREATE TABLE t AS SELECT 1",
        expect!["error: CREATE TABLE … AS SELECT is not supported yet"],
    );
    check(
        "CREATE TABLE kimberlite.log (a BIGINT PRIMARY KEY)",
        expect![
            "error: the `kimberlite` schema holds read-only system views; `kimberlite.log` cannot be changed"
        ],
    );
    check(
        "CREATE TABLE other.t (a BIGINT PRIMARY KEY)",
        expect![
            "error: unknown schema `other` in `other.t`: tables live in the tenant's own namespace; system views are `kimberlite.log` and `kimberlite.tables`"
        ],
    );
    check(
        r#"CREATE TABLE "a.b" (a BIGINT PRIMARY KEY)"#,
        expect![[
            r#"error: invalid table name "a.b": it contains a `.`, which separates a schema from a name"#
        ]],
    );
    let wide = format!(
        "CREATE TABLE t ({}, PRIMARY KEY (c0))",
        (0..=TABLE_COLUMNS_MAX)
            .map(|n| format!("c{n} BIGINT"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    check(
        &wide,
        expect!["error: table `t` has 257 columns, above table_columns_max (256)"],
    );
}

#[test]
fn drop_table() {
    check(
        "DROP TABLE patients",
        expect!["drop patients if_exists=false needs [Ddl]"],
    );
    check(
        "drop table if exists Patients",
        expect!["drop patients if_exists=true needs [Ddl]"],
    );
    check(
        "DROP TABLE a, b",
        expect!["error: DROP TABLE of several tables in one statement is not supported yet"],
    );
    check(
        "DROP TABLE a CASCADE",
        expect![
            "error: DROP TABLE with CASCADE, RESTRICT, PURGE or TEMPORARY is not supported yet"
        ],
    );
    check(
        "DROP VIEW v",
        expect!["error: DROP VIEW is not supported yet"],
    );
}

#[test]
fn dml() {
    check(
        "INSERT INTO patients VALUES (1, 'Ada', 'eu'), ($1, $2, NULL)",
        expect![
            "insert patients columns=None rows=(1, 'Ada', 'eu') ($1, $2, NULL) needs [INSERT ON patients]"
        ],
    );
    check(
        "insert into patients (ID, name) values (1, 'it''s')",
        expect![[
            r#"insert patients columns=Some(["id", "name"]) rows=(1, 'it''s') needs [INSERT ON patients]"#
        ]],
    );
    check(
        "INSERT INTO t SELECT * FROM u",
        expect!["error: INSERT … SELECT is not supported yet"],
    );
    check(
        "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
        expect!["error: INSERT … ON CONFLICT is not supported yet"],
    );
    check(
        "INSERT INTO t VALUES (1) RETURNING id",
        expect!["error: RETURNING is not supported yet"],
    );
    check(
        "UPDATE patients SET name = 'Bea', region = region || '!' WHERE id = 2",
        expect![
            "update patients alias=None set name='Bea', region=region || '!' where id = 2 needs [SELECT ON patients, UPDATE ON patients]"
        ],
    );
    check(
        "UPDATE patients AS p SET p.name = $1",
        expect![[
            r#"update patients alias=Some("p") set name=$1 where - needs [UPDATE ON patients]"#
        ]],
    );
    check(
        "UPDATE a SET x = 1 FROM b",
        expect!["error: UPDATE … FROM is not supported yet"],
    );
    check(
        "DELETE FROM patients WHERE id IN (1, 2)",
        expect![
            "delete patients alias=None where id IN (1, 2) needs [SELECT ON patients, DELETE ON patients]"
        ],
    );
    check(
        "DELETE FROM patients",
        expect!["delete patients alias=None where - needs [DELETE ON patients]"],
    );
    check(
        "DELETE FROM kimberlite.log",
        expect![
            "error: the `kimberlite` schema holds read-only system views; `kimberlite.log` cannot be changed"
        ],
    );
}

#[test]
fn select() {
    check(
        "SELECT * FROM patients",
        expect![
            "select [*] from [patients] where - group [] having - order [] limit - offset - needs [SELECT ON patients]"
        ],
    );
    check(
        "SELECT DISTINCT p.*, name AS n, count(*) FROM patients p JOIN visits AS v ON v.patient = p.id, wards WHERE p.id > $1 GROUP BY name HAVING count(*) > 1 ORDER BY 2 DESC, name NULLS FIRST LIMIT 10 OFFSET $2",
        expect![
            "select distinct [p.*, name AS n, count(*)] from [patients as p, visits as v on[v.patient = p.id], wards] where p.id > $1 group [name] having count(*) > 1 order [2 desc, name nulls_first] limit 10 offset $2 needs [SELECT ON patients, SELECT ON visits, SELECT ON wards]"
        ],
    );
    check(
        "SELECT 1 + 1",
        expect![
            "select [1 + 1] from [] where - group [] having - order [] limit - offset - needs []"
        ],
    );
    check(
        "SELECT position, reason FROM kimberlite.log WHERE position >= 10 LIMIT 5",
        expect![
            "select [position, reason] from [kimberlite.log] where position >= 10 group [] having - order [] limit 5 offset - needs [Audit]"
        ],
    );
    check(
        "SELECT * FROM t CROSS JOIN kimberlite.tables",
        expect![
            "select [*] from [t, kimberlite.tables] where - group [] having - order [] limit - offset - needs [Audit, SELECT ON t]"
        ],
    );
    check(
        "SELECT * FROM a LEFT JOIN b ON a.x = b.x",
        expect!["error: LEFT JOIN is not supported yet"],
    );
    check(
        "SELECT * FROM a JOIN b USING (x)",
        expect!["error: JOIN … USING (write the condition with ON) is not supported yet"],
    );
    check(
        "SELECT * FROM (SELECT 1) s",
        expect!["error: subqueries in FROM is not supported yet"],
    );
    check(
        "SELECT 1 UNION SELECT 2",
        expect!["error: UNION is not supported yet"],
    );
    check(
        "WITH x AS (SELECT 1) SELECT * FROM x",
        expect!["error: WITH (common table expressions) is not supported yet"],
    );
    check(
        "SELECT * FROM t FOR UPDATE",
        expect!["error: FOR UPDATE/SHARE is not supported yet"],
    );
    check(
        "SELECT * FROM a.b.c",
        expect![
            "error: the name `a.b.c` (names have one part, or two for system views) is not supported yet"
        ],
    );
}

#[test]
fn time_travel() {
    check(
        "SELECT * FROM patients AS OF POSITION 42",
        expect![
            "select [*] from [patients as_of[CAST(42 AS BIGINT)]] where - group [] having - order [] limit - offset - needs [SELECT ON patients]"
        ],
    );
    check(
        "select * from patients as of timestamp '2024-01-15 10:30:00' p where p.id = 1",
        expect![
            "select [*] from [patients as p as_of[CAST('2024-01-15 10:30:00' AS TIMESTAMP)]] where p.id = 1 group [] having - order [] limit - offset - needs [SELECT ON patients]"
        ],
    );
    check(
        "SELECT * FROM a AS OF POSITION $1 JOIN b AS OF TIMESTAMP $2 ON a.id = b.id",
        expect![
            "select [*] from [a as_of[CAST($1 AS BIGINT)], b as_of[CAST($2 AS TIMESTAMP)] on[a.id = b.id]] where - group [] having - order [] limit - offset - needs [SELECT ON a, SELECT ON b]"
        ],
    );
    check(
        "SELECT * FROM patients FOR SYSTEM_TIME AS OF '2024-01-15T10:30:00Z'",
        expect![
            "select [*] from [patients as_of['2024-01-15T10:30:00Z']] where - group [] having - order [] limit - offset - needs [SELECT ON patients]"
        ],
    );
    check(
        "SELECT * FROM patients FOR SYSTEM_TIME AS OF 7",
        expect![
            "select [*] from [patients as_of[7]] where - group [] having - order [] limit - offset - needs [SELECT ON patients]"
        ],
    );
    // The rewrite works on tokens: the same words inside a string literal are untouched.
    check(
        "SELECT 'AS OF POSITION 3' AS x FROM kimberlite.log AS OF POSITION 3",
        expect![
            "select ['AS OF POSITION 3' AS x] from [kimberlite.log as_of[CAST(3 AS BIGINT)]] where - group [] having - order [] limit - offset - needs [Audit]"
        ],
    );
    check(
        "SELECT * FROM t AS OF POSITION 'x'",
        expect!["error: AS OF POSITION expects an integer or a $n parameter, found `'x'`"],
    );
    check(
        "SELECT * FROM t AS OF TIMESTAMP",
        expect![
            "error: AS OF TIMESTAMP expects a quoted timestamp or a $n parameter, found `end of statement`"
        ],
    );
    check(
        "UPDATE t AS OF POSITION 3 SET a = 1",
        expect!["error: AS OF in UPDATE is not supported yet"],
    );
}

#[test]
fn statement_level_errors() {
    check("", expect!["error: expected one SQL statement, got 0"]);
    check(
        "SELECT 1; SELECT 2",
        expect!["error: expected one SQL statement, got 2"],
    );
    check(
        "SELEC 1",
        expect![
            "error: SQL syntax error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1"
        ],
    );
    check(
        "SELECT 'unterminated",
        expect!["error: SQL syntax error: Unterminated string literal at Line: 1, Column: 8"],
    );
    check(
        "ALTER TABLE t ADD COLUMN c TEXT",
        expect!["error: ALTER TABLE is not supported yet"],
    );
    check(
        "CREATE INDEX i ON t (a)",
        expect!["error: CREATE INDEX is not supported yet"],
    );
    check("BEGIN", expect!["error: BEGIN is not supported yet"]);
    let deep = format!("SELECT {}1{}", "(".repeat(100), ")".repeat(100));
    check(
        &deep,
        expect!["error: SQL syntax error: the statement nests deeper than expr_depth_max (64)"],
    );
    let long = format!("SELECT '{}'", "x".repeat(SQL_BYTES_MAX));
    check(
        &long,
        expect!["error: SQL text is 1048585 bytes, above sql_bytes_max (1048576 bytes)"],
    );
}

const VALID: &[&str] = &[
    "CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)",
    "INSERT INTO patients (id, name) VALUES (1, 'Ada'), (2, $1)",
    "UPDATE patients SET name = name || 'x' WHERE id BETWEEN 1 AND 3 AND name LIKE 'A%'",
    "DELETE FROM patients WHERE id IN (1, 2) OR region IS NULL",
    "SELECT p.id, count(*) FROM patients AS OF POSITION 3 p JOIN v ON v.id = p.id GROUP BY p.id ORDER BY 1 DESC LIMIT 3",
    "SELECT * FROM t FOR SYSTEM_TIME AS OF '2024-01-15 10:30:00' WHERE CAST(a AS TEXT) = 'x'",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random text never panics the parser.
    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse(&text);
    }

    /// Valid statements with bytes cut out, duplicated or replaced never panic it either.
    #[test]
    fn mutated_statements_never_panic(
        which in 0..VALID.len(),
        cuts in proptest::collection::vec((0usize..200, 0usize..8, "[ (),'$;.*=0-9a-zA-Z]{0,3}"), 1..4),
    ) {
        let mut text = VALID[which].to_string();
        for (at, length, insert) in cuts {
            let start = text.char_indices().map(|(i, _)| i).nth(at % text.len().max(1)).unwrap_or(0);
            let end = text[start..].char_indices().map(|(i, _)| start + i).nth(length).unwrap_or(text.len());
            text.replace_range(start..end, &insert);
        }
        let _ = parse(&text);
    }
}

#[test]
fn grant_revoke_and_policies() {
    check(
        "GRANT SELECT ON patients TO analyst",
        expect!["grant SELECT on [patients] roles [\"analyst\"] needs [Ddl]"],
    );
    check(
        "grant insert, select, SELECT on table Patients, visits to Analyst, \"Night Shift\", public",
        expect![
            "grant SELECT, INSERT on [patients, visits] roles [\"analyst\", \"Night Shift\", \"public\"] needs [Ddl]"
        ],
    );
    check(
        "GRANT ALL PRIVILEGES ON patients TO writer",
        expect![
            "grant SELECT, INSERT, UPDATE, DELETE on [patients] roles [\"writer\"] needs [Ddl]"
        ],
    );
    check(
        "REVOKE SELECT ON patients FROM reader",
        expect!["revoke SELECT on [patients] roles [\"reader\"] needs [Ddl]"],
    );
    check(
        "GRANT SELECT ON kimberlite.log TO auditor",
        expect!["grant SELECT on [kimberlite.log] roles [\"auditor\"] needs [Ddl]"],
    );
    check(
        "GRANT SELECT ON kimberlite.access TO auditor",
        expect![
            "error: a grant on `kimberlite.access` (system views are read by the admin and auditor roles; only kimberlite.log may be granted, for log payloads) is not supported yet"
        ],
    );
    check(
        "GRANT SELECT ON other.patients TO analyst",
        expect![
            "error: unknown schema `other` in `other.patients`: tables live in the tenant's own namespace; system views are `kimberlite.log` and `kimberlite.tables`"
        ],
    );
    check(
        "GRANT SELECT ON patients TO admin",
        expect![
            "error: role `admin` always holds every privilege; grant to or revoke from another role"
        ],
    );
    check(
        "GRANT SELECT (name) ON patients TO analyst",
        expect!["error: column privileges is not supported yet"],
    );
    check(
        "GRANT SELECT ON patients TO analyst WITH GRANT OPTION",
        expect!["error: WITH GRANT OPTION (only admins grant) is not supported yet"],
    );
    check(
        "GRANT TRUNCATE ON patients TO analyst",
        expect![
            "error: the privilege TRUNCATE (privileges: SELECT, INSERT, UPDATE, DELETE, ALL) is not supported yet"
        ],
    );
    check(
        "GRANT reader TO bob",
        expect!["error: GRANT is not supported yet"],
    );
    check(
        "CREATE POLICY eu ON patients FOR SELECT TO reader USING (region = current_attribute('region'))",
        expect![
            "policy eu on patients permissive roles [\"reader\"] using region = current_attribute('region') needs [Ddl]"
        ],
    );
    check(
        "CREATE POLICY p ON patients AS RESTRICTIVE FOR SELECT USING (current_purpose() = 'treatment')",
        expect![
            "policy p on patients restrictive roles [\"public\"] using current_purpose() = 'treatment' needs [Ddl]"
        ],
    );
    check(
        "CREATE POLICY p ON patients USING (true)",
        expect![
            "error: a policy for anything but SELECT (row filters apply to reads: write FOR SELECT) is not supported yet"
        ],
    );
    check(
        "CREATE POLICY p ON patients FOR SELECT TO admin USING (true)",
        expect!["error: role `admin` is never filtered; name the roles the filter applies to"],
    );
    check(
        "CREATE POLICY p ON patients FOR SELECT TO reader",
        expect!["error: SQL syntax error: CREATE POLICY p needs USING (condition)"],
    );
    check(
        "CREATE POLICY p ON kimberlite.log FOR SELECT USING (true)",
        expect![
            "error: the `kimberlite` schema holds read-only system views; `kimberlite.log` cannot be changed"
        ],
    );
    check(
        "DROP POLICY IF EXISTS eu ON patients",
        expect!["drop policy eu on patients if_exists=true needs [Ddl]"],
    );
}

#[test]
fn requirements_of_reads_and_writes() {
    check(
        "INSERT INTO patients VALUES (1)",
        expect!["insert patients columns=None rows=(1) needs [INSERT ON patients]"],
    );
    check(
        "UPDATE patients SET name = 'x'",
        expect!["update patients alias=None set name='x' where - needs [UPDATE ON patients]"],
    );
    check(
        "UPDATE patients SET name = 'x' WHERE id = 1",
        expect![
            "update patients alias=None set name='x' where id = 1 needs [SELECT ON patients, UPDATE ON patients]"
        ],
    );
    check(
        "DELETE FROM patients WHERE id = 1",
        expect![
            "delete patients alias=None where id = 1 needs [SELECT ON patients, DELETE ON patients]"
        ],
    );
    check(
        "CREATE TABLE t (id BIGINT PRIMARY KEY)",
        expect!["create t if_not_exists=false (id BIGINT NOT NULL) key=[0]"],
    );
}

#[test]
fn stored_filter_conditions_parse_back() {
    for text in [
        "region = current_attribute('region')",
        "(a > 1 OR b IS NULL) AND c LIKE 'x%'",
        "current_purpose() IN ('treatment', 'billing')",
    ] {
        let expr = parse_expr(text).unwrap();
        assert_eq!(
            parse_expr(&expr.to_string()).unwrap().to_string(),
            expr.to_string()
        );
    }
    assert_eq!(
        parse_expr("a = 1 b").unwrap_err().to_string(),
        "SQL syntax error: unexpected `b` after the expression"
    );
}
