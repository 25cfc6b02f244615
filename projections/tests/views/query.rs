// expect-test's idiom passes `Expect` by value.
#![allow(clippy::needless_pass_by_value)]

use expect_test::{Expect, expect};
use kimberlite_kernel::expr::{self, ExprError, NoColumns};
use kimberlite_kernel::sql::{self, SelectItem, Statement};
use kimberlite_kernel::{
    ColumnType, Command, CommandBody, Kernel, RowStore, SYSTEM_TENANT, TenantId, Value,
};
use kimberlite_log::RecordHeader;
use kimberlite_projections::query::{
    AsOf, QUERY_ROWS_MAX, QueryContext, QueryError, Reader, ResultSet, execute,
};
use kimberlite_projections::{LogSource, MemoryLog, ViewStore};
use proptest::prelude::*;
use std::sync::OnceLock;

/// 2024-01-15 10:00:00 UTC; each command runs one minute after the previous one.
const START_NS: u64 = 1_705_312_800_000_000_000;
const MINUTE_NS: u64 = 60_000_000_000;

/// A node in miniature: kernel, view store and tenant 1's log, written the way the
/// host writes them (one view transaction per command, applied position committed with it).
struct Node {
    kernel: Kernel,
    store: ViewStore,
    log: MemoryLog,
    clock_ns: u64,
    reason: String,
    params: Vec<Value>,
    as_of: Option<AsOf>,
    /// The caller of the next queries (`caller ROLES [k=v,…] [purpose=p]`); none: unfiltered.
    caller: Option<Caller>,
}

/// A token's roles, attributes and purpose, for row filters.
struct Caller {
    roles: Vec<String>,
    attributes: Vec<(String, String)>,
    purpose: Option<String>,
}

fn parse_values(text: &str) -> Vec<Value> {
    let Ok(Statement::Select(select)) = sql::parse(&format!("SELECT {text}")) else {
        panic!("not a value list: {text}");
    };
    select
        .items
        .iter()
        .map(|item| match item {
            SelectItem::Expr { expr, .. } => expr::compile(expr, &NoColumns, &[])
                .unwrap()
                .expr
                .eval(&[])
                .unwrap(),
            other => panic!("not a value: {other:?}"),
        })
        .collect()
}

impl Node {
    fn new() -> Node {
        let store = ViewStore::with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let mut node = Node {
            kernel: Kernel::new(),
            store,
            log: MemoryLog::new(),
            clock_ns: START_NS,
            reason: String::new(),
            params: Vec::new(),
            as_of: None,
            caller: None,
        };
        node.command(
            SYSTEM_TENANT,
            CommandBody::CreateTenant {
                name: "clinic".to_string(),
                region: None,
            },
        )
        .unwrap();
        node
    }

    fn command(&mut self, tenant: TenantId, body: CommandBody) -> Result<(), String> {
        let cmd = Command {
            tenant,
            client_id: 0xC0FFEE,
            request: self.clock_ns,
            timestamp_ns: self.clock_ns,
            principal: "alice".to_string(),
            reason: self.reason.clone(),
            body,
        };
        self.clock_ns += MINUTE_NS;
        let mut write = self.store.begin().unwrap();
        let effects = self
            .kernel
            .execute(&cmd, &mut write)
            .map_err(|error| error.to_string())?;
        for (offset, (partition, record)) in effects.records.into_iter().enumerate() {
            if partition != 1 {
                continue;
            }
            self.log.push(RecordHeader {
                position: effects.first_position + offset as u64,
                meta: record.meta,
                key_id: 0,
                flags: 0,
                prev_hash: [0; 32],
                hash: [0; 32],
                ciphertext_len: record.payload.len() as u32,
            });
        }
        write.set_applied(1, self.kernel.next_position(1)).unwrap();
        write.commit(false).unwrap();
        Ok(())
    }

    fn query(&self, text: &str) -> Result<ResultSet, QueryError> {
        let Statement::Select(select) = sql::parse(text).map_err(ExprError::from)? else {
            panic!("not a query: {text}");
        };
        self.select(&select, &self.params, self.as_of)
    }

    fn select(
        &self,
        select: &sql::Select,
        params: &[Value],
        as_of: Option<AsOf>,
    ) -> Result<ResultSet, QueryError> {
        let views = self.store.read().unwrap();
        let reader = match &self.caller {
            None => Reader::Unfiltered,
            Some(caller) => Reader::Caller {
                roles: &caller.roles,
                attributes: &caller.attributes,
                purpose: caller.purpose.as_deref(),
            },
        };
        let ctx = QueryContext {
            tenant: 1,
            catalog: self.kernel.catalog(),
            views: &views,
            log: &self.log,
            params,
            as_of,
            masker: None,
            reader,
        };
        execute(select, &ctx)
    }

    /// Runs one script line: `? query` (`?+ query` also shows what was read), a directive,
    /// or a command. Commands print only when they fail.
    fn run(&mut self, line: &str) -> String {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "?" | "?+" => {
                let mut out = format!("{line}\n");
                match self.query(rest) {
                    Ok(result) => out.push_str(&render(&result, word == "?+")),
                    Err(error) => out.push_str(&format!("  error: {error}\n")),
                }
                self.params.clear();
                self.as_of = None;
                out
            }
            "params" => {
                self.params = parse_values(rest);
                String::new()
            }
            "caller" => {
                // caller ROLE,ROLE [k=v,k=v] [purpose=p] | caller none
                let mut parts = rest.split(' ');
                let roles = parts.next().unwrap();
                if roles == "none" {
                    self.caller = None;
                    return String::new();
                }
                let mut caller = Caller {
                    roles: roles.split(',').map(str::to_string).collect(),
                    attributes: Vec::new(),
                    purpose: None,
                };
                for part in parts {
                    for pair in part.split(',') {
                        let (key, value) = pair.split_once('=').unwrap();
                        if key == "purpose" {
                            caller.purpose = Some(value.to_string());
                        } else {
                            caller.attributes.push((key.to_string(), value.to_string()));
                        }
                    }
                }
                self.caller = Some(caller);
                String::new()
            }
            "reason" => {
                self.reason = rest.to_string();
                String::new()
            }
            "as_of_position" => {
                self.as_of = Some(AsOf::Position(rest.parse().unwrap()));
                String::new()
            }
            "as_of_timestamp" => {
                self.as_of = Some(AsOf::Timestamp(
                    kimberlite_kernel::timestamp::parse(rest).unwrap(),
                ));
                String::new()
            }
            "append" => {
                let mut parts = rest.splitn(3, ' ');
                let body = CommandBody::Append {
                    events: vec![kimberlite_kernel::AppendEvent {
                        subject: None,
                        stream: parts.next().unwrap().to_string(),
                        event_type: parts.next().unwrap().to_string(),
                        payload: parts.next().unwrap_or("").as_bytes().to_vec(),
                    }],
                };
                self.command(1, body).map_or_else(
                    |error| format!("{line}\n  error: {error}\n"),
                    |()| String::new(),
                )
            }
            _ => {
                let body = CommandBody::Sql {
                    sql: line.to_string(),
                    params: std::mem::take(&mut self.params),
                };
                self.command(1, body).map_or_else(
                    |error| format!("{line}\n  error: {error}\n"),
                    |()| String::new(),
                )
            }
        }
    }
}

fn render(result: &ResultSet, with_stats: bool) -> String {
    let header: Vec<String> = result
        .columns
        .iter()
        .map(|(name, ty)| format!("{name} {}", ty.map_or("NULL", ColumnType::sql_name)))
        .collect();
    let mut out = format!("  {}\n", header.join(" | "));
    for row in &result.rows {
        let cells: Vec<String> = row.iter().map(ToString::to_string).collect();
        out.push_str(&format!("  {}\n", cells.join(" | ")));
    }
    if let Some(position) = result.as_of {
        out.push_str(&format!("  (as of position {position})\n"));
    }
    if !result.row_filters.is_empty() {
        out.push_str(&format!(
            "  (row filters: {})\n",
            result.row_filters.join(", ")
        ));
    }
    if with_stats {
        let stats = result.stats;
        out.push_str(&format!(
            "  (read: {} scanned, {} key lookups, {} log headers)\n",
            stats.rows_scanned, stats.key_lookups, stats.log_headers_read
        ));
    }
    out
}

/// The clinic's story, positions of tenant 1 in brackets:
/// [0] CREATE patients 10:01 · [1, 2] two admissions 10:02 · [3] Bo moves 10:03 ·
/// [4] Ada erased 10:04 · [5] CREATE visits 10:05 · [6..9] four visits 10:06 ·
/// [10] CREATE wards 10:07 · [11..13] three wards 10:08 · [14..16] three admissions 10:09.
const CLINIC: &str = "
    CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
    reason admitted
    INSERT INTO patients VALUES (1, 'Ada', 'eu'), (2, 'Bo', 'us')
    reason moved abroad
    UPDATE patients SET region = 'asia' WHERE id = 2
    reason erasure request
    DELETE FROM patients WHERE id = 1
    reason
    CREATE TABLE visits (patient BIGINT, day BIGINT, ward TEXT, cost DOUBLE, PRIMARY KEY (patient, day))
    INSERT INTO visits VALUES (2, 1, 'north', 10.5), (2, 2, 'south', 20), (3, 1, 'north', NULL), (4, 7, NULL, 1)
    CREATE TABLE wards (name TEXT PRIMARY KEY, floor BIGINT)
    INSERT INTO wards VALUES ('north', 1), ('south', 2), ('east', 3)
    INSERT INTO patients VALUES (3, 'Cy', 'eu'), (4, 'Di', NULL), (5, 'Ed', 'us')
";

/// Runs the clinic setup, then `script`, rendering every query.
fn check(script: &str, expected: Expect) {
    let mut node = Node::new();
    let mut out = String::new();
    for line in CLINIC
        .lines()
        .chain(script.lines())
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        out.push_str(&node.run(line));
    }
    expected.assert_eq(&out);
}

#[test]
fn projection_filter_order_limit() {
    check(
        "
        ? SELECT * FROM patients
        ? SELECT name, id * 10 AS tens, region IS NULL FROM patients WHERE id >= 3 ORDER BY tens DESC
        ? SELECT p.name FROM patients AS p WHERE p.region = 'us' OR p.region IS NULL ORDER BY 1
        ? SELECT * FROM patients ORDER BY region, id DESC
        ? SELECT * FROM patients ORDER BY region DESC NULLS LAST
        ? SELECT * FROM patients ORDER BY region NULLS LAST LIMIT 2 OFFSET 1
        ? SELECT id FROM patients LIMIT 0
        ? SELECT DISTINCT region FROM patients ORDER BY region
        ? SELECT 1 + 1 AS two, 'x' || 'y', NULL
        ? SELECT 1 WHERE false
        ? SELECT name AS n FROM patients ORDER BY n LIMIT 1
        params 2
        ? SELECT name FROM patients WHERE id > $1 ORDER BY id LIMIT $1 OFFSET 1
        ? SELECT CAST(id AS TEXT) || ':' || name AS label, LENGTH(name) FROM patients WHERE name LIKE '_o' OR name ILIKE 'c%'
        ",
        expect![[r#"
            ? SELECT * FROM patients
              id BIGINT | name TEXT | region TEXT
              2 | Bo | asia
              3 | Cy | eu
              4 | Di | NULL
              5 | Ed | us
            ? SELECT name, id * 10 AS tens, region IS NULL FROM patients WHERE id >= 3 ORDER BY tens DESC
              name TEXT | tens BIGINT | region IS NULL BOOLEAN
              Ed | 50 | false
              Di | 40 | true
              Cy | 30 | false
            ? SELECT p.name FROM patients AS p WHERE p.region = 'us' OR p.region IS NULL ORDER BY 1
              name TEXT
              Di
              Ed
            ? SELECT * FROM patients ORDER BY region, id DESC
              id BIGINT | name TEXT | region TEXT
              4 | Di | NULL
              2 | Bo | asia
              3 | Cy | eu
              5 | Ed | us
            ? SELECT * FROM patients ORDER BY region DESC NULLS LAST
              id BIGINT | name TEXT | region TEXT
              5 | Ed | us
              3 | Cy | eu
              2 | Bo | asia
              4 | Di | NULL
            ? SELECT * FROM patients ORDER BY region NULLS LAST LIMIT 2 OFFSET 1
              id BIGINT | name TEXT | region TEXT
              3 | Cy | eu
              5 | Ed | us
            ? SELECT id FROM patients LIMIT 0
              id BIGINT
            ? SELECT DISTINCT region FROM patients ORDER BY region
              region TEXT
              NULL
              asia
              eu
              us
            ? SELECT 1 + 1 AS two, 'x' || 'y', NULL
              two BIGINT | 'x' || 'y' TEXT | NULL NULL
              2 | xy | NULL
            ? SELECT 1 WHERE false
              1 BIGINT
            ? SELECT name AS n FROM patients ORDER BY n LIMIT 1
              n TEXT
              Bo
            ? SELECT name FROM patients WHERE id > $1 ORDER BY id LIMIT $1 OFFSET 1
              name TEXT
              Di
              Ed
            ? SELECT CAST(id AS TEXT) || ':' || name AS label, LENGTH(name) FROM patients WHERE name LIKE '_o' OR name ILIKE 'c%'
              label TEXT | length BIGINT
              2:Bo | 2
              3:Cy | 2
        "#]],
    );
}

#[test]
fn point_lookups_read_one_row() {
    check(
        "
        ?+ SELECT * FROM patients WHERE id = 3
        ?+ SELECT * FROM patients WHERE id = 3 AND region = 'us'
        ?+ SELECT * FROM patients WHERE id IN (5, 3, 99)
        ?+ SELECT * FROM patients WHERE id = 1
        params 4
        ?+ SELECT name FROM patients WHERE $1 = id
        ?+ SELECT * FROM visits WHERE patient = 2 AND day = 2
        ?+ SELECT * FROM visits WHERE patient = 2
        ?+ SELECT * FROM patients WHERE id > 3
        ?+ SELECT id FROM patients ORDER BY id LIMIT 2
        ?+ SELECT * FROM patients AS OF POSITION 3 WHERE id = 2
        ",
        expect![[r#"
            ?+ SELECT * FROM patients WHERE id = 3
              id BIGINT | name TEXT | region TEXT
              3 | Cy | eu
              (read: 0 scanned, 1 key lookups, 0 log headers)
            ?+ SELECT * FROM patients WHERE id = 3 AND region = 'us'
              id BIGINT | name TEXT | region TEXT
              (read: 0 scanned, 1 key lookups, 0 log headers)
            ?+ SELECT * FROM patients WHERE id IN (5, 3, 99)
              id BIGINT | name TEXT | region TEXT
              3 | Cy | eu
              5 | Ed | us
              (read: 0 scanned, 3 key lookups, 0 log headers)
            ?+ SELECT * FROM patients WHERE id = 1
              id BIGINT | name TEXT | region TEXT
              (read: 0 scanned, 1 key lookups, 0 log headers)
            ?+ SELECT name FROM patients WHERE $1 = id
              name TEXT
              Di
              (read: 0 scanned, 1 key lookups, 0 log headers)
            ?+ SELECT * FROM visits WHERE patient = 2 AND day = 2
              patient BIGINT | day BIGINT | ward TEXT | cost DOUBLE
              2 | 2 | south | 20.0
              (read: 0 scanned, 1 key lookups, 0 log headers)
            ?+ SELECT * FROM visits WHERE patient = 2
              patient BIGINT | day BIGINT | ward TEXT | cost DOUBLE
              2 | 1 | north | 10.5
              2 | 2 | south | 20.0
              (read: 4 scanned, 0 key lookups, 0 log headers)
            ?+ SELECT * FROM patients WHERE id > 3
              id BIGINT | name TEXT | region TEXT
              4 | Di | NULL
              5 | Ed | us
              (read: 4 scanned, 0 key lookups, 0 log headers)
            ?+ SELECT id FROM patients ORDER BY id LIMIT 2
              id BIGINT
              2
              3
              (read: 2 scanned, 0 key lookups, 0 log headers)
            ?+ SELECT * FROM patients AS OF POSITION 3 WHERE id = 2
              id BIGINT | name TEXT | region TEXT
              2 | Bo | asia
              (as of position 3)
              (read: 0 scanned, 1 key lookups, 0 log headers)
        "#]],
    );
}

#[test]
fn joins() {
    check(
        "
        ?+ SELECT p.name, v.day, v.ward FROM patients p JOIN visits v ON v.patient = p.id ORDER BY p.name, v.day
        ?+ SELECT v.day, p.name FROM visits v JOIN patients p ON p.id = v.patient WHERE v.ward = 'north'
        ?+ SELECT v.patient, w.floor FROM visits v JOIN wards w ON w.name = v.ward ORDER BY 1, 2
        ? SELECT p.name, w.name FROM patients p, wards w WHERE p.id = w.floor
        ? SELECT p.name, w.name FROM patients p CROSS JOIN wards w WHERE p.region = 'asia' ORDER BY w.name
        ? SELECT p.*, w.floor FROM patients p JOIN wards w ON w.floor = p.id - 1 ORDER BY p.id
        ? SELECT a.name, b.name FROM patients a JOIN patients b ON a.region = b.region AND a.id < b.id
        ? SELECT id FROM patients JOIN visits ON visits.patient = patients.id
        ? SELECT * FROM patients JOIN patients ON true
        ? SELECT * FROM patients p JOIN visits v ON v.nope = p.id
        ? SELECT * FROM patients p JOIN visits v ON w.patient = p.id
        ? SELECT * FROM patients p JOIN visits v ON v.patient = x.id JOIN wards x ON true
        ",
        expect![[r#"
            ?+ SELECT p.name, v.day, v.ward FROM patients p JOIN visits v ON v.patient = p.id ORDER BY p.name, v.day
              name TEXT | day BIGINT | ward TEXT
              Bo | 1 | north
              Bo | 2 | south
              Cy | 1 | north
              Di | 7 | NULL
              (read: 8 scanned, 0 key lookups, 0 log headers)
            ?+ SELECT v.day, p.name FROM visits v JOIN patients p ON p.id = v.patient WHERE v.ward = 'north'
              day BIGINT | name TEXT
              1 | Bo
              1 | Cy
              (read: 4 scanned, 2 key lookups, 0 log headers)
            ?+ SELECT v.patient, w.floor FROM visits v JOIN wards w ON w.name = v.ward ORDER BY 1, 2
              patient BIGINT | floor BIGINT
              2 | 1
              2 | 2
              3 | 1
              (read: 4 scanned, 3 key lookups, 0 log headers)
            ? SELECT p.name, w.name FROM patients p, wards w WHERE p.id = w.floor
              name TEXT | name TEXT
              Bo | south
              Cy | east
            ? SELECT p.name, w.name FROM patients p CROSS JOIN wards w WHERE p.region = 'asia' ORDER BY w.name
              name TEXT | name TEXT
              Bo | east
              Bo | north
              Bo | south
            ? SELECT p.*, w.floor FROM patients p JOIN wards w ON w.floor = p.id - 1 ORDER BY p.id
              id BIGINT | name TEXT | region TEXT | floor BIGINT
              2 | Bo | asia | 1
              3 | Cy | eu | 2
              4 | Di | NULL | 3
            ? SELECT a.name, b.name FROM patients a JOIN patients b ON a.region = b.region AND a.id < b.id
              name TEXT | name TEXT
            ? SELECT id FROM patients JOIN visits ON visits.patient = patients.id
              id BIGINT
              2
              2
              3
              4
            ? SELECT * FROM patients JOIN patients ON true
              error: table name `patients` appears twice in FROM; give one of them an alias
            ? SELECT * FROM patients p JOIN visits v ON v.nope = p.id
              error: unknown column `v.nope` (columns of v: v.patient, v.day, v.ward, v.cost)
            ? SELECT * FROM patients p JOIN visits v ON w.patient = p.id
              error: unknown table `w` in `w.patient` (tables here: p, v)
            ? SELECT * FROM patients p JOIN visits v ON v.patient = x.id JOIN wards x ON true
              error: unknown table `x` in `x.id` (tables here: p, v)
        "#]],
    );
}

#[test]
fn aggregates() {
    check(
        "
        ? SELECT COUNT(*), COUNT(region), MIN(name), MAX(id), SUM(id), AVG(id) FROM patients
        ? SELECT region, COUNT(*) AS n FROM patients GROUP BY region ORDER BY n DESC, region
        ? SELECT ward, SUM(cost), AVG(cost), MIN(cost), MAX(day) FROM visits GROUP BY ward
        ? SELECT ward, COUNT(*) FROM visits GROUP BY 1 HAVING COUNT(*) > 1
        ? SELECT p.region AS r, COUNT(v.day) FROM patients p JOIN visits v ON v.patient = p.id GROUP BY r
        ? SELECT COUNT(*) FROM patients WHERE id > 100
        ? SELECT SUM(id) FROM patients WHERE id > 100
        ? SELECT region FROM patients GROUP BY region HAVING region IS NOT NULL ORDER BY COUNT(*), region
        ? SELECT UPPER(region), COUNT(*) + 1 FROM patients GROUP BY UPPER(region) ORDER BY 1
        ? SELECT name, COUNT(*) FROM patients
        ? SELECT region, id FROM patients GROUP BY region
        ? SELECT * FROM patients GROUP BY region
        ? SELECT SUM(name) FROM patients
        ? SELECT COUNT(*) FROM patients WHERE COUNT(*) > 1
        ? SELECT MAX(COUNT(*)) FROM patients
        ? SELECT region FROM patients GROUP BY 3
        ",
        expect![[r#"
            ? SELECT COUNT(*), COUNT(region), MIN(name), MAX(id), SUM(id), AVG(id) FROM patients
              count BIGINT | count BIGINT | min TEXT | max BIGINT | sum BIGINT | avg DOUBLE
              4 | 3 | Bo | 5 | 14 | 3.5
            ? SELECT region, COUNT(*) AS n FROM patients GROUP BY region ORDER BY n DESC, region
              region TEXT | n BIGINT
              NULL | 1
              asia | 1
              eu | 1
              us | 1
            ? SELECT ward, SUM(cost), AVG(cost), MIN(cost), MAX(day) FROM visits GROUP BY ward
              ward TEXT | sum DOUBLE | avg DOUBLE | min DOUBLE | max BIGINT
              NULL | 1.0 | 1.0 | 1.0 | 7
              north | 10.5 | 10.5 | 10.5 | 1
              south | 20.0 | 20.0 | 20.0 | 2
            ? SELECT ward, COUNT(*) FROM visits GROUP BY 1 HAVING COUNT(*) > 1
              ward TEXT | count BIGINT
              north | 2
            ? SELECT p.region AS r, COUNT(v.day) FROM patients p JOIN visits v ON v.patient = p.id GROUP BY r
              r TEXT | count BIGINT
              NULL | 1
              asia | 2
              eu | 1
            ? SELECT COUNT(*) FROM patients WHERE id > 100
              count BIGINT
              0
            ? SELECT SUM(id) FROM patients WHERE id > 100
              sum BIGINT
              NULL
            ? SELECT region FROM patients GROUP BY region HAVING region IS NOT NULL ORDER BY COUNT(*), region
              region TEXT
              asia
              eu
              us
            ? SELECT UPPER(region), COUNT(*) + 1 FROM patients GROUP BY UPPER(region) ORDER BY 1
              upper TEXT | COUNT(*) + 1 BIGINT
              NULL | 2
              ASIA | 2
              EU | 2
              US | 2
            ? SELECT name, COUNT(*) FROM patients
              error: column `name` must appear in GROUP BY or be used in an aggregate function
            ? SELECT region, id FROM patients GROUP BY region
              error: column `id` must appear in GROUP BY or be used in an aggregate function
            ? SELECT * FROM patients GROUP BY region
              error: SELECT * cannot be combined with GROUP BY or aggregates; list the columns
            ? SELECT SUM(name) FROM patients
              error: type mismatch in `SUM(name)`: SUM needs numbers, got TEXT
            ? SELECT COUNT(*) FROM patients WHERE COUNT(*) > 1
              error: aggregate function COUNT is not allowed here (only in the select list, HAVING and ORDER BY)
            ? SELECT MAX(COUNT(*)) FROM patients
              error: aggregate function COUNT is not allowed here (only in the select list, HAVING and ORDER BY)
            ? SELECT region FROM patients GROUP BY 3
              error: GROUP BY 3 is not a column of the select list (1 to 1)
        "#]],
    );
}

#[test]
fn time_travel() {
    check(
        "
        ? SELECT * FROM patients AS OF POSITION 2
        ? SELECT * FROM patients AS OF POSITION 3
        ? SELECT * FROM patients AS OF POSITION 4
        ? SELECT * FROM patients AS OF TIMESTAMP '2024-01-15 10:03:30'
        ? SELECT * FROM patients AS OF TIMESTAMP '2024-01-15T12:02:00+02:00'
        ? SELECT * FROM patients FOR SYSTEM_TIME AS OF '2024-01-15 10:02:59.999'
        ? SELECT * FROM patients FOR SYSTEM_TIME AS OF 3
        params 2, '2024-01-15 10:02:00'
        ? SELECT * FROM patients AS OF POSITION $1 WHERE id = 1
        params 2, '2024-01-15 10:02:00'
        ? SELECT name FROM patients AS OF TIMESTAMP $2
        ? SELECT p.name, v.ward FROM patients AS OF POSITION 3 p JOIN visits v ON v.patient = p.id
        as_of_position 3
        ? SELECT name, region FROM patients
        as_of_timestamp 2024-01-15 10:04:00
        ? SELECT name, region FROM patients
        as_of_position 3
        ? SELECT name FROM patients AS OF POSITION 1
        ? SELECT * FROM patients AS OF POSITION 99
        ? SELECT * FROM patients AS OF TIMESTAMP '2024-01-15 09:00:00'
        ? SELECT * FROM patients AS OF TIMESTAMP '2030-01-01'
        ? SELECT * FROM visits AS OF POSITION 4
        ? SELECT * FROM nowhere AS OF POSITION 4
        ? SELECT * FROM patients AS OF TIMESTAMP 'noon'
        ? SELECT * FROM patients FOR SYSTEM_TIME AS OF true
        ",
        expect![[r#"
            ? SELECT * FROM patients AS OF POSITION 2
              id BIGINT | name TEXT | region TEXT
              1 | Ada | eu
              2 | Bo | us
              (as of position 2)
            ? SELECT * FROM patients AS OF POSITION 3
              id BIGINT | name TEXT | region TEXT
              1 | Ada | eu
              2 | Bo | asia
              (as of position 3)
            ? SELECT * FROM patients AS OF POSITION 4
              id BIGINT | name TEXT | region TEXT
              2 | Bo | asia
              (as of position 4)
            ? SELECT * FROM patients AS OF TIMESTAMP '2024-01-15 10:03:30'
              id BIGINT | name TEXT | region TEXT
              1 | Ada | eu
              2 | Bo | asia
              (as of position 3)
            ? SELECT * FROM patients AS OF TIMESTAMP '2024-01-15T12:02:00+02:00'
              id BIGINT | name TEXT | region TEXT
              1 | Ada | eu
              2 | Bo | us
              (as of position 2)
            ? SELECT * FROM patients FOR SYSTEM_TIME AS OF '2024-01-15 10:02:59.999'
              id BIGINT | name TEXT | region TEXT
              1 | Ada | eu
              2 | Bo | us
              (as of position 2)
            ? SELECT * FROM patients FOR SYSTEM_TIME AS OF 3
              id BIGINT | name TEXT | region TEXT
              1 | Ada | eu
              2 | Bo | asia
              (as of position 3)
            ? SELECT * FROM patients AS OF POSITION $1 WHERE id = 1
              id BIGINT | name TEXT | region TEXT
              1 | Ada | eu
              (as of position 2)
            ? SELECT name FROM patients AS OF TIMESTAMP $2
              name TEXT
              Ada
              Bo
              (as of position 2)
            ? SELECT p.name, v.ward FROM patients AS OF POSITION 3 p JOIN visits v ON v.patient = p.id
              name TEXT | ward TEXT
              Bo | north
              Bo | south
              (as of position 3)
            ? SELECT name, region FROM patients
              name TEXT | region TEXT
              Ada | eu
              Bo | asia
              (as of position 3)
            ? SELECT name, region FROM patients
              name TEXT | region TEXT
              Bo | asia
              (as of position 4)
            ? SELECT name FROM patients AS OF POSITION 1
              name TEXT
              Ada
              (as of position 1)
            ? SELECT * FROM patients AS OF POSITION 99
              error: AS OF POSITION 99 is beyond the end of the log (last position: 16)
            ? SELECT * FROM patients AS OF TIMESTAMP '2024-01-15 09:00:00'
              error: AS OF TIMESTAMP '2024-01-15 09:00:00' is before the first record of the log
            ? SELECT * FROM patients AS OF TIMESTAMP '2030-01-01'
              id BIGINT | name TEXT | region TEXT
              2 | Bo | asia
              3 | Cy | eu
              4 | Di | NULL
              5 | Ed | us
              (as of position 16)
            ? SELECT * FROM visits AS OF POSITION 4
              error: table `visits` did not exist at position 4
            ? SELECT * FROM nowhere AS OF POSITION 4
              error: unknown table `nowhere` (tables: patients)
            ? SELECT * FROM patients AS OF TIMESTAMP 'noon'
              error: cannot cast 'noon' to TIMESTAMP: invalid timestamp 'noon': expected 'YYYY-MM-DD HH:MM:SS[.fraction]' (UTC) or RFC 3339 with an offset
            ? SELECT * FROM patients FOR SYSTEM_TIME AS OF true
              error: invalid AS OF: expected a position (BIGINT) or a timestamp, got BOOLEAN TRUE
        "#]],
    );
}

#[test]
fn dropped_tables_stay_readable_in_the_past() {
    check(
        "
        reason retired
        DROP TABLE wards
        CREATE TABLE wards (code BIGINT PRIMARY KEY)
        INSERT INTO wards VALUES (7)
        ? SELECT * FROM wards
        ? SELECT * FROM wards AS OF POSITION 13
        ? SELECT * FROM wards AS OF POSITION 14
        ? SELECT * FROM wards AS OF POSITION 9
        ? SELECT v.ward, w.floor FROM visits v JOIN wards AS OF POSITION 13 w ON w.name = v.ward ORDER BY v.patient, v.day
        DROP TABLE wards
        ? SELECT * FROM wards
        ? SELECT * FROM wards AS OF POSITION 16
        ? SELECT name, primary_key, created_at, dropped_at FROM kimberlite.tables ORDER BY created_at
        ? SELECT name, columns, dropped_at FROM kimberlite.tables AS OF POSITION 14 ORDER BY created_at
        ",
        expect![[r#"
            ? SELECT * FROM wards
              code BIGINT
              7
            ? SELECT * FROM wards AS OF POSITION 13
              name TEXT | floor BIGINT
              east | 3
              north | 1
              south | 2
              (as of position 13)
            ? SELECT * FROM wards AS OF POSITION 14
              name TEXT | floor BIGINT
              east | 3
              north | 1
              south | 2
              (as of position 14)
            ? SELECT * FROM wards AS OF POSITION 9
              error: table `wards` did not exist at position 9
            ? SELECT v.ward, w.floor FROM visits v JOIN wards AS OF POSITION 13 w ON w.name = v.ward ORDER BY v.patient, v.day
              ward TEXT | floor BIGINT
              north | 1
              south | 2
              north | 1
              (as of position 13)
            ? SELECT * FROM wards
              error: unknown table `wards` (tables: patients, visits)
            ? SELECT * FROM wards AS OF POSITION 16
              name TEXT | floor BIGINT
              east | 3
              north | 1
              south | 2
              (as of position 16)
            ? SELECT name, primary_key, created_at, dropped_at FROM kimberlite.tables ORDER BY created_at
              name TEXT | primary_key TEXT | created_at BIGINT | dropped_at BIGINT
              patients | id | 0 | NULL
              visits | patient, day | 5 | NULL
              wards | name | 10 | 17
              wards | code | 18 | 20
            ? SELECT name, columns, dropped_at FROM kimberlite.tables AS OF POSITION 14 ORDER BY created_at
              name TEXT | columns TEXT | dropped_at BIGINT
              patients | id BIGINT NOT NULL, name TEXT NOT NULL, region TEXT | NULL
              visits | patient BIGINT NOT NULL, day BIGINT NOT NULL, ward TEXT, cost DOUBLE | NULL
              wards | name TEXT NOT NULL, floor BIGINT | NULL
              (as of position 14)
        "#]],
    );
}

#[test]
fn the_log_system_view() {
    check(
        "
        append payments Deposited {\"amount\":1}
        ? SELECT position, timestamp, kind, record_kind, stream, client, client_id, request, reason FROM kimberlite.log WHERE position < 5
        ?+ SELECT position, kind, reason FROM kimberlite.log WHERE position >= 10 LIMIT 2
        ?+ SELECT position, kind FROM kimberlite.log ORDER BY position DESC LIMIT 3
        ?+ SELECT position FROM kimberlite.log WHERE position BETWEEN 3 AND 5 AND kind <> 'RowUpdated'
        ?+ SELECT position, stream FROM kimberlite.log AS OF POSITION 2 ORDER BY position DESC
        ? SELECT kind, COUNT(*) FROM kimberlite.log GROUP BY kind ORDER BY 2 DESC, 1
        ? SELECT reason, COUNT(*) FROM kimberlite.log WHERE reason IS NOT NULL GROUP BY reason ORDER BY reason
        ? SELECT stream, MAX(timestamp) FROM kimberlite.log WHERE timestamp < '2024-01-15 10:05:00' GROUP BY stream
        ? SELECT l.position, p.name FROM kimberlite.log l JOIN patients AS OF POSITION 2 p ON p.id = 1 WHERE l.position < 2
        ?+ SELECT position FROM kimberlite.log WHERE position = -1 OR position = 1
        ? SELECT * FROM kimberlite.logs
        ",
        expect![[r#"
            ? SELECT position, timestamp, kind, record_kind, stream, client, client_id, request, reason FROM kimberlite.log WHERE position < 5
              position BIGINT | timestamp TIMESTAMP | kind TEXT | record_kind TEXT | stream TEXT | client TEXT | client_id TEXT | request BIGINT | reason TEXT
              0 | 2024-01-15 10:01:00 | CreateTable | ddl | patients | alice | 00000000000000000000000000c0ffee | 1705312860000000000 | NULL
              1 | 2024-01-15 10:02:00 | RowInserted | event | patients | alice | 00000000000000000000000000c0ffee | 1705312920000000000 | admitted
              2 | 2024-01-15 10:02:00 | RowInserted | event | patients | alice | 00000000000000000000000000c0ffee | 1705312920000000000 | admitted
              3 | 2024-01-15 10:03:00 | RowUpdated | event | patients | alice | 00000000000000000000000000c0ffee | 1705312980000000000 | moved abroad
              4 | 2024-01-15 10:04:00 | RowDeleted | event | patients | alice | 00000000000000000000000000c0ffee | 1705313040000000000 | erasure request
            ?+ SELECT position, kind, reason FROM kimberlite.log WHERE position >= 10 LIMIT 2
              position BIGINT | kind TEXT | reason TEXT
              10 | CreateTable | NULL
              11 | RowInserted | NULL
              (read: 0 scanned, 0 key lookups, 2 log headers)
            ?+ SELECT position, kind FROM kimberlite.log ORDER BY position DESC LIMIT 3
              position BIGINT | kind TEXT
              17 | Deposited
              16 | RowInserted
              15 | RowInserted
              (read: 0 scanned, 0 key lookups, 3 log headers)
            ?+ SELECT position FROM kimberlite.log WHERE position BETWEEN 3 AND 5 AND kind <> 'RowUpdated'
              position BIGINT
              4
              5
              (read: 0 scanned, 0 key lookups, 3 log headers)
            ?+ SELECT position, stream FROM kimberlite.log AS OF POSITION 2 ORDER BY position DESC
              position BIGINT | stream TEXT
              2 | patients
              1 | patients
              0 | patients
              (as of position 2)
              (read: 0 scanned, 0 key lookups, 3 log headers)
            ? SELECT kind, COUNT(*) FROM kimberlite.log GROUP BY kind ORDER BY 2 DESC, 1
              kind TEXT | count BIGINT
              RowInserted | 12
              CreateTable | 3
              Deposited | 1
              RowDeleted | 1
              RowUpdated | 1
            ? SELECT reason, COUNT(*) FROM kimberlite.log WHERE reason IS NOT NULL GROUP BY reason ORDER BY reason
              reason TEXT | count BIGINT
              admitted | 2
              erasure request | 1
              moved abroad | 1
            ? SELECT stream, MAX(timestamp) FROM kimberlite.log WHERE timestamp < '2024-01-15 10:05:00' GROUP BY stream
              stream TEXT | max TIMESTAMP
              patients | 2024-01-15 10:04:00
            ? SELECT l.position, p.name FROM kimberlite.log l JOIN patients AS OF POSITION 2 p ON p.id = 1 WHERE l.position < 2
              position BIGINT | name TEXT
              0 | Ada
              1 | Ada
              (as of position 2)
            ?+ SELECT position FROM kimberlite.log WHERE position = -1 OR position = 1
              position BIGINT
              1
              (read: 0 scanned, 0 key lookups, 18 log headers)
            ? SELECT * FROM kimberlite.logs
              error: unknown system view `kimberlite.logs` (system views: kimberlite.log, kimberlite.tables, kimberlite.projections, kimberlite.policies, kimberlite.access, kimberlite.grants, kimberlite.row_filters)
        "#]],
    );
}

#[test]
fn errors_name_the_problem() {
    check(
        "
        ? SELECT * FROM nowhere
        ? SELECT nope FROM patients
        ? SELECT name FROM patients WHERE name = 1
        ? SELECT name FROM patients p JOIN wards w ON true
        ? SELECT q.* FROM patients p
        ? SELECT * FROM patients p JOIN wards p ON true
        ? SELECT * FROM patients WHERE id
        ? SELECT * FROM patients LIMIT -1
        ? SELECT * FROM patients LIMIT 'x'
        ? SELECT * FROM patients ORDER BY 4
        ? SELECT * FROM patients WHERE id = $1
        ? SELECT id / 0 FROM patients
        ? SELECT 9223372036854775807 + id FROM patients
        ",
        expect![[r#"
            ? SELECT * FROM nowhere
              error: unknown table `nowhere` (tables: patients, visits, wards)
            ? SELECT nope FROM patients
              error: unknown column `nope` (columns: id, name, region)
            ? SELECT name FROM patients WHERE name = 1
              error: type mismatch in `name = 1`: cannot compare TEXT with BIGINT
            ? SELECT name FROM patients p JOIN wards w ON true
              error: column reference `name` is ambiguous (it could be p.name or w.name)
            ? SELECT q.* FROM patients p
              error: unknown table `q` in `q.*` (tables here: p)
            ? SELECT * FROM patients p JOIN wards p ON true
              error: table name `p` appears twice in FROM; give one of them an alias
            ? SELECT * FROM patients WHERE id
              error: type mismatch in `id`: WHERE needs a BOOLEAN condition, got BIGINT
            ? SELECT * FROM patients LIMIT -1
              error: LIMIT must be a non-negative BIGINT, got BIGINT -1
            ? SELECT * FROM patients LIMIT 'x'
              error: LIMIT must be a non-negative BIGINT, got TEXT 'x'
            ? SELECT * FROM patients ORDER BY 4
              error: ORDER BY 4 is not a column of the select list (1 to 3)
            ? SELECT * FROM patients WHERE id = $1
              error: parameter $1 was not given (0 parameters given)
            ? SELECT id / 0 FROM patients
              error: division by zero
            ? SELECT 9223372036854775807 + id FROM patients
              error: integer overflow in 9223372036854775807 + 2
        "#]],
    );
}

#[test]
fn result_bounds() {
    let mut node = Node::new();
    node.run("CREATE TABLE big (id BIGINT PRIMARY KEY)");
    let table = node.kernel.catalog().table_at(1, "big", None).unwrap().id;
    // Seed past the kernel's per-statement bound directly through the store.
    let mut write = node.store.begin().unwrap();
    for id in 0..=QUERY_ROWS_MAX as i64 {
        write
            .upsert(1, table, &[Value::Integer(id)], vec![Value::Integer(id)], 0)
            .unwrap();
    }
    write.commit(false).unwrap();
    let mut out = String::new();
    for query in [
        "? SELECT * FROM big",
        "? SELECT COUNT(*) FROM big",
        "?+ SELECT * FROM big LIMIT 2",
        "?+ SELECT * FROM big ORDER BY id DESC LIMIT 2",
        "?+ SELECT * FROM big WHERE id = 77",
    ] {
        out.push_str(&node.run(query));
    }
    expect![[r#"
        ? SELECT * FROM big
          error: the result has more than query_rows_max (100000) rows; add a LIMIT or narrow the WHERE
        ? SELECT COUNT(*) FROM big
          count BIGINT
          100001
        ?+ SELECT * FROM big LIMIT 2
          id BIGINT
          0
          1
          (read: 2 scanned, 0 key lookups, 0 log headers)
        ?+ SELECT * FROM big ORDER BY id DESC LIMIT 2
          id BIGINT
          100000
          99999
          (read: 100001 scanned, 0 key lookups, 0 log headers)
        ?+ SELECT * FROM big WHERE id = 77
          id BIGINT
          77
          (read: 0 scanned, 1 key lookups, 0 log headers)
    "#]].assert_eq(&out);
}

fn clinic_node() -> Node {
    let mut node = Node::new();
    for line in CLINIC
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        assert_eq!(node.run(line), "", "{line}");
    }
    node
}

/// The clinic, built once for the property tests (queries only read it).
fn clinic() -> &'static Node {
    static CLINIC_NODE: OnceLock<Node> = OnceLock::new();
    CLINIC_NODE.get_or_init(clinic_node)
}

const QUERIES: &[&str] = &[
    "SELECT p.name, COUNT(*) FROM patients AS OF POSITION 3 p JOIN visits v ON v.patient = p.id WHERE p.id IN (1, 2) GROUP BY p.name HAVING COUNT(*) > 0 ORDER BY 2 DESC LIMIT 5",
    "SELECT DISTINCT region, id * 2 + 1 FROM patients WHERE name LIKE 'B%' OR region IS NULL ORDER BY 1 NULLS FIRST OFFSET 1",
    "SELECT position, kind, reason FROM kimberlite.log WHERE position BETWEEN 2 AND 9 ORDER BY position DESC LIMIT 3",
    "SELECT * FROM wards w, visits v WHERE w.name = v.ward AND CAST(v.cost AS BIGINT) >= $1",
    "SELECT name FROM patients FOR SYSTEM_TIME AS OF '2024-01-15 10:03:00' WHERE id = $1",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Mutated queries, with parameters of any type, never panic the executor: each one
    /// either answers or names its problem.
    #[test]
    fn mutated_queries_never_panic(
        which in 0..QUERIES.len(),
        cuts in proptest::collection::vec((0usize..200, 0usize..6, "[ (),'$.*=<>0-9a-zA-Z]{0,3}"), 0..3),
        params in proptest::collection::vec(prop_oneof![
            Just(Value::Null),
            (-3i64..20).prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Real),
            "[a-z0-9: -]{0,12}".prop_map(Value::Text),
        ], 0..2),
        as_of in proptest::option::of(prop_oneof![
            (0u64..30).prop_map(AsOf::Position),
            any::<i64>().prop_map(AsOf::Timestamp),
        ]),
    ) {
        let mut text = QUERIES[which].to_string();
        for (at, length, insert) in cuts {
            let start = text.char_indices().map(|(i, _)| i).nth(at % text.len()).unwrap_or(0);
            let end = text[start..].char_indices().map(|(i, _)| start + i).nth(length).unwrap_or(text.len());
            text.replace_range(start..end, &insert);
        }
        if let Ok(Statement::Select(select)) = sql::parse(&text) {
            let _ = clinic().select(&select, &params, as_of);
        }
    }
}

/// A log whose segments cannot be read.
struct BrokenLog;

impl LogSource for BrokenLog {
    fn end(&self) -> u64 {
        5
    }

    fn position_at_timestamp(&self, _timestamp_ns: u64) -> Option<u64> {
        Some(4)
    }

    fn headers(&self, from: u64, _limit: usize) -> Result<Vec<RecordHeader>, String> {
        Err(format!("record {from} fails its CRC"))
    }
}

#[test]
fn lagging_views_and_unreadable_logs_are_reported() {
    let mut node = clinic_node();
    // A record the log made durable but the views have not applied yet.
    let mut header = node.log.headers(16, 1).unwrap().remove(0);
    header.position = 17;
    node.log.push(header);
    let mut out = String::new();
    for line in [
        "? SELECT * FROM patients AS OF POSITION 17",
        "? SELECT * FROM patients AS OF POSITION 16 WHERE id = 5",
        "? SELECT COUNT(*) FROM kimberlite.log",
    ] {
        out.push_str(&node.run(line));
    }
    let Ok(Statement::Select(select)) = sql::parse("SELECT * FROM kimberlite.log") else {
        unreachable!()
    };
    let views = node.store.read().unwrap();
    let ctx = QueryContext {
        tenant: 1,
        catalog: node.kernel.catalog(),
        views: &views,
        log: &BrokenLog,
        params: &[],
        as_of: None,
        masker: None,
        reader: Reader::Unfiltered,
    };
    out.push_str(&format!(
        "broken log: {}\n",
        execute(&select, &ctx).unwrap_err()
    ));
    expect![[r#"
        ? SELECT * FROM patients AS OF POSITION 17
          error: AS OF POSITION 17 is not yet applied to this node's views (applied through 16); retry shortly
        ? SELECT * FROM patients AS OF POSITION 16 WHERE id = 5
          id BIGINT | name TEXT | region TEXT
          5 | Ed | us
          (as of position 16)
        ? SELECT COUNT(*) FROM kimberlite.log
          count BIGINT
          18
        broken log: cannot read the log: record 0 fails its CRC
    "#]].assert_eq(&out);
}

#[test]
fn row_filters_hide_rows_on_every_path() {
    check(
        "
        CREATE POLICY home ON patients FOR SELECT TO clinician USING (region = current_attribute('region'))
        CREATE POLICY treat ON visits AS RESTRICTIVE FOR SELECT TO clinician USING (current_purpose() = 'treatment')
        caller clinician region=eu purpose=treatment
        ? SELECT * FROM patients ORDER BY id
        ?+ SELECT * FROM patients WHERE id = 5
        ? SELECT COUNT(*), MAX(name) FROM patients
        ? SELECT p.name, v.day FROM visits v JOIN patients p ON p.id = v.patient ORDER BY 1
        ? SELECT v.day, p.name FROM patients p JOIN visits v ON v.patient = p.id
        ? SELECT * FROM patients AS OF POSITION 2 ORDER BY id
        caller clinician region=us
        ? SELECT * FROM patients ORDER BY id
        ? SELECT * FROM visits
        caller clinician
        ? SELECT * FROM patients
        caller reader,nurse region=eu
        ? SELECT COUNT(*) FROM patients
        caller admin,clinician region=eu
        ? SELECT COUNT(*) FROM patients
        caller none
        DROP TABLE patients
        CREATE TABLE patients (id BIGINT PRIMARY KEY)
        caller clinician region=eu
        ? SELECT * FROM patients
        ? SELECT name FROM patients AS OF POSITION 16 ORDER BY id
        ",
        expect![[r#"
            ? SELECT * FROM patients ORDER BY id
              id BIGINT | name TEXT | region TEXT
              3 | Cy | eu
              (row filters: patients.home)
            ?+ SELECT * FROM patients WHERE id = 5
              id BIGINT | name TEXT | region TEXT
              (row filters: patients.home)
              (read: 0 scanned, 1 key lookups, 0 log headers)
            ? SELECT COUNT(*), MAX(name) FROM patients
              count BIGINT | max TEXT
              1 | Cy
              (row filters: patients.home)
            ? SELECT p.name, v.day FROM visits v JOIN patients p ON p.id = v.patient ORDER BY 1
              name TEXT | day BIGINT
              Cy | 1
              (row filters: visits.treat, patients.home)
            ? SELECT v.day, p.name FROM patients p JOIN visits v ON v.patient = p.id
              day BIGINT | name TEXT
              1 | Cy
              (row filters: patients.home, visits.treat)
            ? SELECT * FROM patients AS OF POSITION 2 ORDER BY id
              id BIGINT | name TEXT | region TEXT
              1 | Ada | eu
              (as of position 2)
              (row filters: patients.home)
            ? SELECT * FROM patients ORDER BY id
              id BIGINT | name TEXT | region TEXT
              5 | Ed | us
              (row filters: patients.home)
            ? SELECT * FROM visits
              patient BIGINT | day BIGINT | ward TEXT | cost DOUBLE
              (row filters: visits.treat)
            ? SELECT * FROM patients
              id BIGINT | name TEXT | region TEXT
              (row filters: patients.home)
            ? SELECT COUNT(*) FROM patients
              count BIGINT
              4
            ? SELECT COUNT(*) FROM patients
              count BIGINT
              4
            ? SELECT * FROM patients
              error: row filter `patients.home` cannot be applied to `patients` as read here (unknown column `region` (columns: id)), so the read was refused
            ? SELECT name FROM patients AS OF POSITION 16 ORDER BY id
              name TEXT
              Cy
              (as of position 16)
              (row filters: patients.home)
        "#]],
    );
}
