// expect-test's idiom passes `Expect` by value.
#![allow(clippy::needless_pass_by_value)]

use super::*;
use crate::catalog::Action;
use crate::expr::NoColumns;
use crate::sql::SelectItem;
use crate::store::MemoryRowStore;
use expect_test::{Expect, expect};
use kimberlite_log::RecordHeader;
use proptest::prelude::*;

/// 2024-01-15 10:00:00 UTC: the first command's time; each command is one second later.
const START_NS: u64 = 1_705_312_800_000_000_000;

/// Runs scripts of commands against a kernel and an in-memory row store, keeping every
/// record so the run can be replayed.
struct Harness {
    kernel: Kernel,
    rows: MemoryRowStore,
    records: Vec<(TenantId, Record)>,
    tenant: TenantId,
    reason: String,
    params: Vec<Value>,
    clock_ns: u64,
    request: u64,
}

fn secret_hash(name: &str) -> [u8; 32] {
    let mut hash = [0u8; 32];
    for (slot, byte) in hash.iter_mut().zip(name.bytes()) {
        *slot = byte;
    }
    hash
}

/// `1, 'x', NULL` → values, through the SQL front (literals and casts only).
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

impl Harness {
    fn new() -> Harness {
        Harness {
            kernel: Kernel::new(),
            rows: MemoryRowStore::new(),
            records: Vec::new(),
            tenant: 1,
            reason: String::new(),
            params: Vec::new(),
            clock_ns: START_NS,
            request: 0,
        }
    }

    fn command(&mut self, tenant: TenantId, body: CommandBody) -> Command {
        self.request += 1;
        let cmd = Command {
            tenant,
            client_id: 0xC1,
            request: self.request,
            timestamp_ns: self.clock_ns,
            principal: "alice".to_string(),
            reason: self.reason.clone(),
            body,
        };
        self.clock_ns += 1_000_000_000;
        cmd
    }

    fn execute(&mut self, cmd: &Command) -> Result<Effects, KernelError> {
        let before = self.kernel.clone();
        let result = self.kernel.execute(cmd, &mut self.rows);
        match &result {
            Ok(effects) => {
                for (offset, (tenant, record)) in effects.records.iter().enumerate() {
                    assert_eq!(*tenant, effects.partition);
                    let header = RecordHeader {
                        position: effects.first_position + offset as u64,
                        meta: record.meta.clone(),
                        key_id: record.key_id,
                        flags: 0,
                        prev_hash: [0; 32],
                        hash: [0; 32],
                        ciphertext_len: record.payload.len() as u32,
                    };
                    self.records.push((
                        *tenant,
                        Record {
                            header,
                            payload: record.payload.clone(),
                            erased: false,
                        },
                    ));
                }
            }
            // All-or-nothing: a refused command leaves the kernel exactly as it was.
            Err(_) => assert_eq!(self.kernel, before, "a refused command changed the kernel"),
        }
        result
    }

    /// Runs one script line and renders what happened.
    fn run(&mut self, line: &str) -> String {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let body = match word {
            "use" => {
                self.tenant = rest.parse().unwrap();
                return String::new();
            }
            "reason" => {
                self.reason = rest.to_string();
                return String::new();
            }
            "params" => {
                self.params = parse_values(rest);
                return String::new();
            }
            "clock" => {
                self.clock_ns = crate::timestamp::parse(rest).unwrap() as u64;
                return String::new();
            }
            "rows" => return self.render_rows(),
            "tables" => return self.render_tables(),
            "tenant" => {
                let (name, issuer) = match rest.split_once(" from ") {
                    Some((name, issuer)) => (name, issuer.parse().unwrap()),
                    None => (rest, SYSTEM_TENANT),
                };
                (
                    issuer,
                    CommandBody::CreateTenant {
                        name: name.to_string(),
                        region: None,
                    },
                )
            }
            "token" => {
                // token TENANT NAME ROLE,ROLE [k=v,k=v] [from ISSUER]
                let (spec, issuer) = match rest.split_once(" from ") {
                    Some((spec, issuer)) => (spec, issuer.parse().unwrap()),
                    None => (rest, SYSTEM_TENANT),
                };
                let parts: Vec<&str> = spec.split(' ').collect();
                let attributes = parts
                    .get(3)
                    .map(|attrs| {
                        attrs
                            .split(',')
                            .map(|pair| {
                                let (k, v) = pair.split_once('=').unwrap();
                                (k.to_string(), v.to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let body = CommandBody::CreateToken {
                    tenant: parts[0].parse().unwrap(),
                    name: parts[1].to_string(),
                    secret_hash: secret_hash(parts[1]),
                    roles: parts[2]
                        .split(',')
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect(),
                    attributes,
                };
                (issuer, body)
            }
            "rotate" => (self.tenant, CommandBody::RotateKey),
            "quota" => {
                // quota TARGET [queries=N] [appends=N] [stored=N] (from the system partition)
                let mut parts = rest.split(' ');
                let target = parts.next().unwrap().parse().unwrap();
                let mut quota = crate::Quota::default();
                for part in parts {
                    let (name, value) = part.split_once('=').unwrap();
                    let value = Some(value.parse().unwrap());
                    match name {
                        "queries" => quota.queries_per_second = value,
                        "appends" => quota.appends_per_second = value,
                        "stored" => quota.stored_bytes = value,
                        "fuel" => quota.fuel_per_second = value,
                        other => panic!("unknown quota {other}"),
                    }
                }
                (SYSTEM_TENANT, CommandBody::SetQuota { target, quota })
            }
            "erase-tenant" => (
                SYSTEM_TENANT,
                CommandBody::EraseTenant {
                    target: rest.parse().unwrap(),
                },
            ),
            "erase" => (
                self.tenant,
                CommandBody::Erase {
                    subject: rest.to_string(),
                },
            ),
            "append" | "append-about" => {
                // append-about SUBJECT STREAM TYPE PAYLOAD: an event naming a data subject.
                let (subject, rest) = match word {
                    "append-about" => {
                        let (subject, rest) = rest.split_once(' ').unwrap();
                        (Some(subject.to_string()), rest)
                    }
                    _ => (None, rest),
                };
                let mut parts = rest.splitn(3, ' ');
                let body = CommandBody::Append {
                    events: vec![AppendEvent {
                        subject,
                        stream: parts.next().unwrap().to_string(),
                        event_type: parts.next().unwrap().to_string(),
                        payload: parts.next().unwrap_or("").as_bytes().to_vec(),
                    }],
                };
                (self.tenant, body)
            }
            _ => {
                let params = std::mem::take(&mut self.params);
                (
                    self.tenant,
                    CommandBody::Sql {
                        sql: line.to_string(),
                        params,
                    },
                )
            }
        };
        let cmd = self.command(body.0, body.1);
        match self.execute(&cmd) {
            Ok(effects) => render_effects(&effects),
            Err(error) => format!("  error: {error}\n"),
        }
    }

    fn render_rows(&self) -> String {
        let mut out = String::new();
        for table in self.kernel.catalog().tables(self.tenant, None) {
            let rows: Vec<String> = self
                .rows
                .rows(self.tenant, table.id)
                .iter()
                .map(|row| {
                    format!(
                        "({})",
                        row.iter().map(Value::to_sql).collect::<Vec<_>>().join(", ")
                    )
                })
                .collect();
            out.push_str(&format!("  {}: {}\n", table.name, rows.join(" ")));
        }
        out
    }

    fn render_tables(&self) -> String {
        let mut out = String::new();
        for table in self.kernel.catalog().table_history(self.tenant) {
            out.push_str(&format!(
                "  {} id={} [{}, {}) ({}) key ({})\n",
                table.name,
                table.id,
                table.created_at,
                table.dropped_at.map_or("-".to_string(), |p| p.to_string()),
                table.describe_columns(),
                table.describe_primary_key()
            ));
        }
        out
    }

    /// Replays every record into a fresh kernel and store, and round-trips a snapshot:
    /// both must reproduce this run's state exactly.
    fn assert_replay_and_snapshot_agree(&self) {
        let mut kernel = Kernel::new();
        let mut rows = MemoryRowStore::new();
        // As the log reads them after an erasure: records under an erased subject's
        // (destroyed) key have no payload.
        let destroyed: Vec<u32> = self
            .kernel
            .catalog()
            .tenants()
            .flat_map(|tenant| tenant.subjects())
            .filter(|(_, subject)| subject.erased_at.is_some())
            .map(|(_, subject)| subject.key_id)
            .collect();
        // As the host replays: the system partition first, then each tenant's.
        let mut records: Vec<&(TenantId, Record)> = self.records.iter().collect();
        records.sort_by_key(|(tenant, _)| *tenant != SYSTEM_TENANT);
        for (tenant, record) in records {
            let mut record = record.clone();
            // An erased tenant's keys are all destroyed.
            let tenant_erased = self.kernel.erased_at(*tenant).is_some();
            if tenant_erased || destroyed.contains(&record.header.key_id) {
                record.payload.clear();
                record.erased = true;
            }
            kernel.apply_record(*tenant, &record, &mut rows).unwrap();
        }
        assert_eq!(
            String::from_utf8(kernel.snapshot()).unwrap(),
            String::from_utf8(self.kernel.snapshot()).unwrap(),
            "replayed kernel differs"
        );
        assert_eq!(rows, self.rows, "replayed rows differ");
        let restored = Kernel::restore(&self.kernel.snapshot()).unwrap();
        assert_eq!(restored, self.kernel);
        assert_eq!(restored.snapshot(), self.kernel.snapshot());
    }
}

fn render_effects(effects: &Effects) -> String {
    let mut out = format!("  {:?}\n", effects.outcome);
    if effects.records.is_empty() {
        out.push_str(&format!(
            "  (no records; next position {})\n",
            effects.first_position
        ));
    }
    for (offset, (tenant, record)) in effects.records.iter().enumerate() {
        let meta = &record.meta;
        let reason = if meta.reason.is_empty() {
            String::new()
        } else {
            format!(" reason={:?}", meta.reason)
        };
        // The key is shown when it is not the first data key (rotations, subjects).
        let key = if record.key_id == crate::kernel::FIRST_DATA_KEY_ID {
            String::new()
        } else {
            format!(" key={}", record.key_id)
        };
        out.push_str(&format!(
            "  t{tenant}@{} {} {} stream={}{reason}{key} {}\n",
            effects.first_position + offset as u64,
            meta.kind,
            meta.event_type,
            meta.stream,
            String::from_utf8_lossy(&record.payload)
        ));
    }
    out
}

/// Runs a script (one command per line; see `Harness::run`), renders each command and
/// its effects, and checks that replay and snapshot reproduce the final state.
fn check(script: &str, expected: Expect) {
    let mut harness = Harness::new();
    let mut out = String::new();
    for line in script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        out.push_str(line);
        out.push('\n');
        out.push_str(&harness.run(line));
    }
    harness.assert_replay_and_snapshot_agree();
    expected.assert_eq(&out);
}

const CLINIC: &str = "
    tenant clinic
    CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
";

#[test]
fn tenants() {
    check(
        "
        tenant clinic
        tenant bank
        tenant clinic
        tenant 'x'
        tenant sneaky from 1
        ",
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            tenant bank
              TenantCreated { tenant: 2, name: "bank" }
              t0@1 catalog TenantCreated stream=tenants {"tenant":2,"name":"bank"}
            tenant clinic
              error: tenant `clinic` already exists
            tenant 'x'
              error: invalid tenant name: "'x'": use 1 to 64 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit
            tenant sneaky from 1
              error: tenants are created by node-level commands (tenant 0), not by tenant 1
        "#]],
    );
}

#[test]
fn tokens() {
    check(
        "
        tenant clinic
        tenant bank
        token 1 alice writer,nurse ward=3,shift=night
        token 0 root admin
        token 1 bob reader from 1
        token 2 mallory admin from 1
        token 9 ghost reader
        token 1 alice reader
        token 1 nobody ,
        token 1 twice reader,reader
        token 1 attrs reader k=1,k=2
        ",
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            tenant bank
              TenantCreated { tenant: 2, name: "bank" }
              t0@1 catalog TenantCreated stream=tenants {"tenant":2,"name":"bank"}
            token 1 alice writer,nurse ward=3,shift=night
              TokenCreated { tenant: 1, name: "alice" }
              t0@2 catalog TokenCreated stream=tokens {"token":1,"tenant":1,"name":"alice","secret_hash":"616c696365000000000000000000000000000000000000000000000000000000","roles":["writer","nurse"],"attributes":[["ward","3"],["shift","night"]]}
            token 0 root admin
              TokenCreated { tenant: 0, name: "root" }
              t0@3 catalog TokenCreated stream=tokens {"token":2,"tenant":0,"name":"root","secret_hash":"726f6f7400000000000000000000000000000000000000000000000000000000","roles":["admin"],"attributes":[]}
            token 1 bob reader from 1
              TokenCreated { tenant: 1, name: "bob" }
              t0@4 catalog TokenCreated stream=tokens {"token":3,"tenant":1,"name":"bob","secret_hash":"626f620000000000000000000000000000000000000000000000000000000000","roles":["reader"],"attributes":[]}
            token 2 mallory admin from 1
              error: a command of tenant 1 cannot create a token in tenant 2
            token 9 ghost reader
              error: unknown tenant 9
            token 1 alice reader
              error: a token with this secret already exists
            token 1 nobody ,
              error: invalid roles: a token has 1 to token_roles_max (32) roles, got 0
            token 1 twice reader,reader
              error: invalid roles: role `reader` is given twice
            token 1 attrs reader k=1,k=2
              error: invalid attributes: `k` is given twice
        "#]],
    );
}

#[test]
fn roles_decide_what_a_token_may_do() {
    let mut harness = Harness::new();
    for line in [
        "tenant clinic",
        "tenant bank",
        "token 0 node admin",
        "token 1 boss admin",
        "token 1 clerk writer",
        "token 1 viewer reader",
        "token 1 inspector auditor",
        "token 1 nurse nurse",
    ] {
        harness.run(line);
    }
    let actions = [
        Action::ManageTenants,
        Action::ManageTokens,
        Action::Ddl,
        Action::Write,
        Action::Read,
        Action::Audit,
    ];
    let mut out = String::new();
    for token in harness.kernel.catalog().tokens() {
        for tenant in [1, 2] {
            let allowed: Vec<String> = actions
                .iter()
                .filter(|action| token.allows(tenant, **action))
                .map(|action| format!("{action:?}"))
                .collect();
            out.push_str(&format!(
                "{} in tenant {tenant}: {}\n",
                token.name,
                allowed.join(" ")
            ));
        }
    }
    expect![[r#"
        boss in tenant 1: ManageTokens Ddl Write Read Audit
        boss in tenant 2: 
        clerk in tenant 1: Write Read
        clerk in tenant 2: 
        inspector in tenant 1: Audit
        inspector in tenant 2: 
        node in tenant 1: ManageTenants ManageTokens Ddl Write Read Audit
        node in tenant 2: ManageTenants ManageTokens Ddl Write Read Audit
        nurse in tenant 1: 
        nurse in tenant 2: 
        viewer in tenant 1: Read
        viewer in tenant 2: 
    "#]]
    .assert_eq(&out);
    harness.assert_replay_and_snapshot_agree();
}

#[test]
fn ddl_history_keeps_dropped_tables() {
    check(
        "
        tenant clinic
        CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
        CREATE TABLE patients (id BIGINT PRIMARY KEY)
        CREATE TABLE IF NOT EXISTS patients (id BIGINT PRIMARY KEY)
        CREATE TABLE visits (patient BIGINT, at TIMESTAMP, note BYTES, PRIMARY KEY (patient, at))
        DROP TABLE patients
        DROP TABLE patients
        DROP TABLE IF EXISTS patients
        CREATE TABLE patients (id BIGINT PRIMARY KEY, score DOUBLE, active BOOLEAN)
        tables
        CREATE TABLE nokey (a BIGINT)
        ",
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
              TableCreated { table: "patients" }
              t1@0 ddl CreateTable stream=patients {"table":"patients","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"name","type":"TEXT","nullable":false},{"name":"region","type":"TEXT","nullable":true}],"primary_key":["id"]}
            CREATE TABLE patients (id BIGINT PRIMARY KEY)
              error: table `patients` already exists
            CREATE TABLE IF NOT EXISTS patients (id BIGINT PRIMARY KEY)
              Skipped { notice: "table `patients` already exists; nothing created" }
              (no records; next position 1)
            CREATE TABLE visits (patient BIGINT, at TIMESTAMP, note BYTES, PRIMARY KEY (patient, at))
              TableCreated { table: "visits" }
              t1@1 ddl CreateTable stream=visits {"table":"visits","columns":[{"name":"patient","type":"BIGINT","nullable":false},{"name":"at","type":"TIMESTAMP","nullable":false},{"name":"note","type":"BYTES","nullable":true}],"primary_key":["patient","at"]}
            DROP TABLE patients
              TableDropped { table: "patients" }
              t1@2 ddl DropTable stream=patients {"table":"patients","table_id":0}
            DROP TABLE patients
              error: unknown table `patients` (tables: visits)
            DROP TABLE IF EXISTS patients
              Skipped { notice: "table `patients` does not exist; nothing dropped" }
              (no records; next position 3)
            CREATE TABLE patients (id BIGINT PRIMARY KEY, score DOUBLE, active BOOLEAN)
              TableCreated { table: "patients" }
              t1@3 ddl CreateTable stream=patients {"table":"patients","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"score","type":"DOUBLE","nullable":true},{"name":"active","type":"BOOLEAN","nullable":true}],"primary_key":["id"]}
            tables
              patients id=0 [0, 2) (id BIGINT NOT NULL, name TEXT NOT NULL, region TEXT) key (id)
              visits id=1 [1, -) (patient BIGINT NOT NULL, at TIMESTAMP NOT NULL, note BYTES) key (patient, at)
              patients id=3 [3, -) (id BIGINT NOT NULL, score DOUBLE, active BOOLEAN) key (id)
            CREATE TABLE nokey (a BIGINT)
              error: table `nokey` has no PRIMARY KEY; every table needs one
        "#]],
    );
}

#[test]
fn catalog_resolves_tables_at_past_positions() {
    let mut harness = Harness::new();
    for line in [
        "tenant clinic",
        "CREATE TABLE a (id BIGINT PRIMARY KEY)",
        "CREATE TABLE b (id BIGINT PRIMARY KEY)",
        "DROP TABLE a",
        "CREATE TABLE a (id BIGINT PRIMARY KEY, x TEXT)",
    ] {
        harness.run(line);
    }
    let catalog = harness.kernel.catalog();
    let mut out = String::new();
    for at in [None, Some(0), Some(1), Some(2), Some(3), Some(9)] {
        let names: Vec<String> = catalog
            .tables(1, at)
            .iter()
            .map(|t| format!("{}#{}", t.name, t.id))
            .collect();
        let a = catalog.table_at(1, "a", at).map(|t| t.id);
        out.push_str(&format!("at {at:?}: tables {names:?}, a = {a:?}\n"));
    }
    expect![[r#"
        at None: tables ["a#3", "b#1"], a = Some(3)
        at Some(0): tables ["a#0"], a = Some(0)
        at Some(1): tables ["a#0", "b#1"], a = Some(0)
        at Some(2): tables ["b#1"], a = None
        at Some(3): tables ["a#3", "b#1"], a = Some(3)
        at Some(9): tables ["a#3", "b#1"], a = Some(3)
    "#]]
    .assert_eq(&out);
}

#[test]
fn insert() {
    check(
        &format!(
            "{CLINIC}
            reason admitted
            INSERT INTO patients VALUES (1, 'Ada', 'eu'), (2, 'Bo', NULL)
            INSERT INTO patients (name, id) VALUES ('Cy', 1 + 2)
            params 4, 'Di'
            INSERT INTO patients (id, name, region) VALUES ($1, $2, $2 || '-region')
            INSERT INTO patients VALUES (5, 'Ed', 'eu'), (5, 'Eve', 'us')
            INSERT INTO patients VALUES (1, 'Again', NULL)
            INSERT INTO patients (id) VALUES (6)
            INSERT INTO patients VALUES (7, 42, NULL)
            INSERT INTO patients VALUES (7, 'x')
            INSERT INTO patients (id, nope) VALUES (7, 'x')
            INSERT INTO patients (id, id) VALUES (7, 8)
            INSERT INTO nowhere VALUES (1)
            INSERT INTO patients VALUES (9223372036854775807 + 1, 'x', NULL)
            INSERT INTO patients VALUES (1 / 0, 'x', NULL)
            INSERT INTO patients VALUES (NULL, 'x', NULL)
            INSERT INTO patients VALUES ($1, 'x', NULL)
            rows
            "
        ),
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
              TableCreated { table: "patients" }
              t1@0 ddl CreateTable stream=patients {"table":"patients","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"name","type":"TEXT","nullable":false},{"name":"region","type":"TEXT","nullable":true}],"primary_key":["id"]}
            reason admitted
            INSERT INTO patients VALUES (1, 'Ada', 'eu'), (2, 'Bo', NULL)
              RowsAffected { count: 2 }
              t1@1 event RowInserted stream=patients reason="admitted" {"id":1,"name":"Ada","region":"eu"}
              t1@2 event RowInserted stream=patients reason="admitted" {"id":2,"name":"Bo","region":null}
            INSERT INTO patients (name, id) VALUES ('Cy', 1 + 2)
              RowsAffected { count: 1 }
              t1@3 event RowInserted stream=patients reason="admitted" {"id":3,"name":"Cy","region":null}
            params 4, 'Di'
            INSERT INTO patients (id, name, region) VALUES ($1, $2, $2 || '-region')
              RowsAffected { count: 1 }
              t1@4 event RowInserted stream=patients reason="admitted" {"id":4,"name":"Di","region":"Di-region"}
            INSERT INTO patients VALUES (5, 'Ed', 'eu'), (5, 'Eve', 'us')
              error: duplicate primary key (id) = (5) in table `patients`
            INSERT INTO patients VALUES (1, 'Again', NULL)
              error: duplicate primary key (id) = (1) in table `patients`
            INSERT INTO patients (id) VALUES (6)
              error: null value in column `name` of `patients`, which is NOT NULL
            INSERT INTO patients VALUES (7, 42, NULL)
              error: type mismatch for column `name` of `patients`: expected TEXT, got BIGINT 42
            INSERT INTO patients VALUES (7, 'x')
              error: INSERT row 1 has 2 values for 3 columns
            INSERT INTO patients (id, nope) VALUES (7, 'x')
              error: unknown column `nope` in table `patients` (columns: id, name, region)
            INSERT INTO patients (id, id) VALUES (7, 8)
              error: column `id` of `patients` is given twice
            INSERT INTO nowhere VALUES (1)
              error: unknown table `nowhere` (tables: patients)
            INSERT INTO patients VALUES (9223372036854775807 + 1, 'x', NULL)
              error: integer overflow in 9223372036854775807 + 1
            INSERT INTO patients VALUES (1 / 0, 'x', NULL)
              error: division by zero
            INSERT INTO patients VALUES (NULL, 'x', NULL)
              error: null value in column `id` of `patients`, which is NOT NULL
            INSERT INTO patients VALUES ($1, 'x', NULL)
              error: parameter $1 was not given (0 parameters given)
            rows
              patients: (1, 'Ada', 'eu') (2, 'Bo', NULL) (3, 'Cy', NULL) (4, 'Di', 'Di-region')
        "#]],
    );
}

#[test]
fn every_column_type_is_stored_and_coerced() {
    check(
        "
        tenant t
        CREATE TABLE v (k TEXT PRIMARY KEY, i INTEGER, d DOUBLE, b BOOLEAN, ts TIMESTAMP, raw BYTEA)
        INSERT INTO v VALUES ('a', -1, 2, true, '2024-01-15 10:30:00.25', X'C0FFEE')
        INSERT INTO v VALUES ('b', NULL, -0.0, NULL, '2024-01-15T12:30:00+02:00', NULL)
        INSERT INTO v VALUES ('c', 1.5, NULL, NULL, NULL, NULL)
        INSERT INTO v VALUES ('c', NULL, NULL, NULL, 'noon', NULL)
        INSERT INTO v VALUES ('c', NULL, NULL, 'yes', NULL, NULL)
        INSERT INTO v VALUES ('c', NULL, NULL, NULL, 12, NULL)
        INSERT INTO v VALUES ('c', NULL, NULL, NULL, TIMESTAMP '2024-01-01', CAST('hi' AS BYTES))
        rows
        ",
        expect![[r#"
            tenant t
              TenantCreated { tenant: 1, name: "t" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"t"}
            CREATE TABLE v (k TEXT PRIMARY KEY, i INTEGER, d DOUBLE, b BOOLEAN, ts TIMESTAMP, raw BYTEA)
              TableCreated { table: "v" }
              t1@0 ddl CreateTable stream=v {"table":"v","columns":[{"name":"k","type":"TEXT","nullable":false},{"name":"i","type":"BIGINT","nullable":true},{"name":"d","type":"DOUBLE","nullable":true},{"name":"b","type":"BOOLEAN","nullable":true},{"name":"ts","type":"TIMESTAMP","nullable":true},{"name":"raw","type":"BYTES","nullable":true}],"primary_key":["k"]}
            INSERT INTO v VALUES ('a', -1, 2, true, '2024-01-15 10:30:00.25', X'C0FFEE')
              RowsAffected { count: 1 }
              t1@1 event RowInserted stream=v {"k":"a","i":-1,"d":2.0,"b":true,"ts":1705314600250000000,"raw":"c0ffee"}
            INSERT INTO v VALUES ('b', NULL, -0.0, NULL, '2024-01-15T12:30:00+02:00', NULL)
              RowsAffected { count: 1 }
              t1@2 event RowInserted stream=v {"k":"b","i":null,"d":0.0,"b":null,"ts":1705314600000000000,"raw":null}
            INSERT INTO v VALUES ('c', 1.5, NULL, NULL, NULL, NULL)
              error: type mismatch for column `i` of `v`: expected BIGINT, got DOUBLE 1.5
            INSERT INTO v VALUES ('c', NULL, NULL, NULL, 'noon', NULL)
              error: type mismatch for column `ts` of `v`: expected TIMESTAMP, got TEXT 'noon' (invalid timestamp 'noon': expected 'YYYY-MM-DD HH:MM:SS[.fraction]' (UTC) or RFC 3339 with an offset)
            INSERT INTO v VALUES ('c', NULL, NULL, 'yes', NULL, NULL)
              error: type mismatch for column `b` of `v`: expected BOOLEAN, got TEXT 'yes'
            INSERT INTO v VALUES ('c', NULL, NULL, NULL, 12, NULL)
              error: type mismatch for column `ts` of `v`: expected TIMESTAMP, got BIGINT 12
            INSERT INTO v VALUES ('c', NULL, NULL, NULL, TIMESTAMP '2024-01-01', CAST('hi' AS BYTES))
              RowsAffected { count: 1 }
              t1@3 event RowInserted stream=v {"k":"c","i":null,"d":null,"b":null,"ts":1704067200000000000,"raw":"6869"}
            rows
              v: ('a', -1, 2.0, TRUE, TIMESTAMP '2024-01-15 10:30:00.25', X'c0ffee') ('b', NULL, 0.0, NULL, TIMESTAMP '2024-01-15 10:30:00', NULL) ('c', NULL, NULL, NULL, TIMESTAMP '2024-01-01 00:00:00', X'6869')
        "#]],
    );
}

#[test]
fn update() {
    check(
        &format!(
            "{CLINIC}
            INSERT INTO patients VALUES (1, 'Ada', 'eu'), (2, 'Bo', 'us'), (3, 'Cy', 'eu')
            reason moved
            UPDATE patients SET region = 'asia' WHERE id = 2
            UPDATE patients p SET name = p.name || '!' WHERE p.region = 'eu'
            UPDATE patients SET region = NULL WHERE id = 99
            UPDATE patients SET id = id + 10 WHERE id = 1
            UPDATE patients SET id = 5 - id WHERE id IN (2, 3)
            UPDATE patients SET id = 3 WHERE id = 11
            UPDATE patients SET id = 7 WHERE id IN (2, 3)
            UPDATE patients SET name = NULL WHERE id = 2
            UPDATE patients SET name = 1
            UPDATE patients SET nope = 1
            UPDATE patients SET name = 'x', name = 'y'
            UPDATE patients SET name = 'x' WHERE nope = 1
            UPDATE patients SET name = 'x' WHERE id
            UPDATE patients SET id = id * 9223372036854775807 WHERE id = 3
            rows
            "
        ),
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
              TableCreated { table: "patients" }
              t1@0 ddl CreateTable stream=patients {"table":"patients","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"name","type":"TEXT","nullable":false},{"name":"region","type":"TEXT","nullable":true}],"primary_key":["id"]}
            INSERT INTO patients VALUES (1, 'Ada', 'eu'), (2, 'Bo', 'us'), (3, 'Cy', 'eu')
              RowsAffected { count: 3 }
              t1@1 event RowInserted stream=patients {"id":1,"name":"Ada","region":"eu"}
              t1@2 event RowInserted stream=patients {"id":2,"name":"Bo","region":"us"}
              t1@3 event RowInserted stream=patients {"id":3,"name":"Cy","region":"eu"}
            reason moved
            UPDATE patients SET region = 'asia' WHERE id = 2
              RowsAffected { count: 1 }
              t1@4 event RowUpdated stream=patients reason="moved" {"id":2,"name":"Bo","region":"asia"}
            UPDATE patients p SET name = p.name || '!' WHERE p.region = 'eu'
              RowsAffected { count: 2 }
              t1@5 event RowUpdated stream=patients reason="moved" {"id":1,"name":"Ada!","region":"eu"}
              t1@6 event RowUpdated stream=patients reason="moved" {"id":3,"name":"Cy!","region":"eu"}
            UPDATE patients SET region = NULL WHERE id = 99
              RowsAffected { count: 0 }
              (no records; next position 7)
            UPDATE patients SET id = id + 10 WHERE id = 1
              RowsAffected { count: 1 }
              t1@7 event RowDeleted stream=patients reason="moved" {"id":1}
              t1@8 event RowInserted stream=patients reason="moved" {"id":11,"name":"Ada!","region":"eu"}
            UPDATE patients SET id = 5 - id WHERE id IN (2, 3)
              RowsAffected { count: 2 }
              t1@9 event RowDeleted stream=patients reason="moved" {"id":2}
              t1@10 event RowDeleted stream=patients reason="moved" {"id":3}
              t1@11 event RowInserted stream=patients reason="moved" {"id":3,"name":"Bo","region":"asia"}
              t1@12 event RowInserted stream=patients reason="moved" {"id":2,"name":"Cy!","region":"eu"}
            UPDATE patients SET id = 3 WHERE id = 11
              error: duplicate primary key (id) = (3) in table `patients`
            UPDATE patients SET id = 7 WHERE id IN (2, 3)
              error: duplicate primary key (id) = (7) in table `patients`
            UPDATE patients SET name = NULL WHERE id = 2
              error: null value in column `name` of `patients`, which is NOT NULL
            UPDATE patients SET name = 1
              error: type mismatch for column `name` of `patients`: expected TEXT, got BIGINT
            UPDATE patients SET nope = 1
              error: unknown column `nope` in table `patients` (columns: id, name, region)
            UPDATE patients SET name = 'x', name = 'y'
              error: column `name` of `patients` is given twice
            UPDATE patients SET name = 'x' WHERE nope = 1
              error: unknown column `nope` (columns: id, name, region)
            UPDATE patients SET name = 'x' WHERE id
              error: type mismatch in `id`: WHERE needs a BOOLEAN condition, got BIGINT
            UPDATE patients SET id = id * 9223372036854775807 WHERE id = 3
              error: integer overflow in 3 * 9223372036854775807
            rows
              patients: (2, 'Cy!', 'eu') (3, 'Bo', 'asia') (11, 'Ada!', 'eu')
        "#]],
    );
}

#[test]
fn delete() {
    check(
        &format!(
            "{CLINIC}
            INSERT INTO patients VALUES (1, 'Ada', 'eu'), (2, 'Bo', 'us'), (3, 'Cy', 'eu'), (4, 'Di', NULL)
            reason erasure request
            DELETE FROM patients WHERE id = 2
            DELETE FROM patients WHERE id = 2
            DELETE FROM patients p WHERE p.region = 'eu' AND p.name LIKE 'C%'
            DELETE FROM patients WHERE region IS NULL OR id IN (1, 999)
            DELETE FROM patients WHERE name = 5
            rows
            "
        ),
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
              TableCreated { table: "patients" }
              t1@0 ddl CreateTable stream=patients {"table":"patients","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"name","type":"TEXT","nullable":false},{"name":"region","type":"TEXT","nullable":true}],"primary_key":["id"]}
            INSERT INTO patients VALUES (1, 'Ada', 'eu'), (2, 'Bo', 'us'), (3, 'Cy', 'eu'), (4, 'Di', NULL)
              RowsAffected { count: 4 }
              t1@1 event RowInserted stream=patients {"id":1,"name":"Ada","region":"eu"}
              t1@2 event RowInserted stream=patients {"id":2,"name":"Bo","region":"us"}
              t1@3 event RowInserted stream=patients {"id":3,"name":"Cy","region":"eu"}
              t1@4 event RowInserted stream=patients {"id":4,"name":"Di","region":null}
            reason erasure request
            DELETE FROM patients WHERE id = 2
              RowsAffected { count: 1 }
              t1@5 event RowDeleted stream=patients reason="erasure request" {"id":2}
            DELETE FROM patients WHERE id = 2
              RowsAffected { count: 0 }
              (no records; next position 6)
            DELETE FROM patients p WHERE p.region = 'eu' AND p.name LIKE 'C%'
              RowsAffected { count: 1 }
              t1@6 event RowDeleted stream=patients reason="erasure request" {"id":3}
            DELETE FROM patients WHERE region IS NULL OR id IN (1, 999)
              RowsAffected { count: 2 }
              t1@7 event RowDeleted stream=patients reason="erasure request" {"id":1}
              t1@8 event RowDeleted stream=patients reason="erasure request" {"id":4}
            DELETE FROM patients WHERE name = 5
              error: type mismatch in `name = 5`: cannot compare TEXT with BIGINT
            rows
              patients: 
        "#]],
    );
}

#[test]
fn appends_and_command_errors() {
    check(
        &format!(
            "{CLINIC}
            append payments Deposited {{\"amount\":10}}
            append patients RowInserted {{\"id\":9}}
            append  Deposited x
            SELECT * FROM patients
            ALTER TABLE patients ADD COLUMN age BIGINT
            use 0
            append payments Deposited x
            CREATE TABLE t (id BIGINT PRIMARY KEY)
            use 7
            INSERT INTO patients VALUES (1, 'x', NULL)
            use 1
            DROP TABLE patients
            append patients RowInserted {{\"id\":9}}
            CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
            rows
            "
        ),
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
              TableCreated { table: "patients" }
              t1@0 ddl CreateTable stream=patients {"table":"patients","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"name","type":"TEXT","nullable":false},{"name":"region","type":"TEXT","nullable":true}],"primary_key":["id"]}
            append payments Deposited {"amount":10}
              Appended { count: 1 }
              t1@1 event Deposited stream=payments {"amount":10}
            append patients RowInserted {"id":9}
              error: stream `patients` is a SQL table; change its rows with INSERT, UPDATE or DELETE
            append  Deposited x
              error: invalid stream: it is empty
            SELECT * FROM patients
              error: a SELECT is a query, not a command; run it through the query path
            ALTER TABLE patients ADD COLUMN age BIGINT
              error: ALTER TABLE is not supported yet
            use 0
            append payments Deposited x
              error: the system partition holds no tables or events; send this command to a tenant
            CREATE TABLE t (id BIGINT PRIMARY KEY)
              error: the system partition holds no tables or events; send this command to a tenant
            use 7
            INSERT INTO patients VALUES (1, 'x', NULL)
              error: unknown tenant 7
            use 1
            DROP TABLE patients
              TableDropped { table: "patients" }
              t1@2 ddl DropTable stream=patients {"table":"patients","table_id":0}
            append patients RowInserted {"id":9}
              Appended { count: 1 }
              t1@3 event RowInserted stream=patients {"id":9}
            CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
              TableCreated { table: "patients" }
              t1@4 ddl CreateTable stream=patients {"table":"patients","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"name","type":"TEXT","nullable":false},{"name":"region","type":"TEXT","nullable":true}],"primary_key":["id"]}
            rows
              patients: 
        "#]],
    );
}

#[test]
fn records_carry_identity_and_timestamps_never_decrease() {
    let mut harness = Harness::new();
    harness.run("tenant clinic");
    harness.run("CREATE TABLE t (id BIGINT PRIMARY KEY)");
    harness.reason = "backdated".to_string();
    harness.run("clock 2020-01-01 00:00:00");
    harness.run("INSERT INTO t VALUES (1), (2)");
    harness.run("clock 2030-01-01 00:00:00");
    harness.run("INSERT INTO t VALUES (3)");
    let mut out = String::new();
    for (tenant, record) in &harness.records {
        let meta = &record.header.meta;
        out.push_str(&format!(
            "t{tenant}@{} {} op={} client={:x} request={} principal={} reason={:?}\n",
            record.header.position,
            crate::timestamp::format(meta.timestamp_ns as i64),
            meta.op,
            meta.client_id,
            meta.request,
            meta.principal,
            meta.reason
        ));
    }
    expect![[r#"
        t0@0 2024-01-15 10:00:00 op=0 client=c1 request=1 principal=alice reason=""
        t1@0 2024-01-15 10:00:01 op=0 client=c1 request=2 principal=alice reason=""
        t1@1 2024-01-15 10:00:01 op=0 client=c1 request=3 principal=alice reason="backdated"
        t1@2 2024-01-15 10:00:01 op=0 client=c1 request=3 principal=alice reason="backdated"
        t1@3 2030-01-01 00:00:00 op=0 client=c1 request=4 principal=alice reason="backdated"
    "#]]
    .assert_eq(&out);
    assert_eq!(harness.kernel.last_timestamp(1), 1_893_456_000_000_000_000);
    assert_eq!(harness.kernel.next_position(1), 4);
    assert_eq!(harness.kernel.next_position(0), 1);
    assert_eq!(harness.kernel.next_position(2), 0);
    harness.assert_replay_and_snapshot_agree();
}

#[test]
fn statement_rows_max_bounds_what_one_statement_writes() {
    let mut harness = Harness::new();
    harness.run("tenant clinic");
    harness.run("CREATE TABLE t (id BIGINT PRIMARY KEY, n BIGINT)");
    let table = harness.kernel.catalog().table_at(1, "t", None).unwrap().id;
    // Seed the store directly: going through INSERT would itself hit the bound.
    for id in 0..=STATEMENT_ROWS_MAX as i64 {
        harness
            .rows
            .upsert(
                1,
                table,
                &[Value::Integer(id)],
                vec![Value::Integer(id), Value::Null],
                0,
            )
            .unwrap();
    }
    let mut out = String::new();
    for line in [
        "UPDATE t SET n = 1",
        "DELETE FROM t WHERE n IS NULL",
        "DELETE FROM t WHERE id < 100000",
        "DELETE FROM t WHERE id = 5 OR id = 6",
    ] {
        out.push_str(&format!("{line}\n{}", harness.run(line)));
    }
    // The bound is checked before any row is evaluated, so the rows may repeat.
    let values = vec!["(0,0)"; STATEMENT_ROWS_MAX + 1];
    let insert = format!("INSERT INTO t VALUES {}", values.join(","));
    out.push_str(&format!(
        "INSERT of {} rows\n{}",
        values.len(),
        harness.run(&insert)
    ));
    expect![[r#"
        UPDATE t SET n = 1
          error: the statement would write more than statement_rows_max (100000) rows; narrow its WHERE or split it
        DELETE FROM t WHERE n IS NULL
          error: the statement would write more than statement_rows_max (100000) rows; narrow its WHERE or split it
        DELETE FROM t WHERE id < 100000
          RowsAffected { count: 100000 }
        DELETE FROM t WHERE id = 5 OR id = 6
          RowsAffected { count: 0 }
          (no records; next position 100001)
        INSERT of 100001 rows
          error: the statement would write more than statement_rows_max (100000) rows; narrow its WHERE or split it
    "#]]
    .assert_eq(&out.lines().filter(|line| !line.contains(" event RowDeleted ")).map(|line| format!("{line}\n")).collect::<String>());
}

#[test]
fn replay_refuses_records_out_of_order_or_foreign() {
    let mut harness = Harness::new();
    harness.run("tenant clinic");
    harness.run("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT)");
    harness.run("INSERT INTO t VALUES (1, 'a')");
    let records = harness.records.clone();
    let replay = |edit: &dyn Fn(&mut Record), skip: usize| {
        let mut kernel = Kernel::new();
        let mut rows = MemoryRowStore::new();
        let mut result = Ok(());
        for (index, (tenant, record)) in records.iter().enumerate() {
            if index == skip {
                continue;
            }
            let mut record = record.clone();
            if index == records.len() - 1 {
                edit(&mut record);
            }
            result = kernel.apply_record(*tenant, &record, &mut rows);
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(()) => "ok".to_string(),
            Err(error) => error.to_string(),
        }
    };
    let mut out = String::new();
    out.push_str(&format!("as stored: {}\n", replay(&|_| {}, usize::MAX)));
    out.push_str(&format!("one missing: {}\n", replay(&|_| {}, 1)));
    out.push_str(&format!(
        "bad payload: {}\n",
        replay(
            &|record| record.payload = br#"{"id":"one","name":"a"}"#.to_vec(),
            usize::MAX
        )
    ));
    out.push_str(&format!(
        "unknown type: {}\n",
        replay(
            &|record| record.header.meta.event_type = "RowRenamed".to_string(),
            usize::MAX
        )
    ));
    out.push_str(&format!(
        "other stream: {}\n",
        replay(
            &|record| record.header.meta.stream = "not_a_table".to_string(),
            usize::MAX
        )
    ));
    expect![[r#"
        as stored: ok
        one missing: cannot replay the record at position 1 of partition 1: expected position 0 next
        bad payload: cannot replay the record at position 1 of partition 1: column `id`: expected BIGINT, got "one"
        unknown type: cannot replay the record at position 1 of partition 1: event type `RowRenamed` on table stream `t`
        other stream: ok
    "#]]
    .assert_eq(&out);
}

#[test]
fn restore_refuses_bad_snapshots() {
    let render = |bytes: &[u8]| match Kernel::restore(bytes) {
        Ok(_) => "ok".to_string(),
        Err(error) => error.to_string(),
    };
    let good = Kernel::new().snapshot();
    expect![[
        r#"{"format":1,"catalog":{"tenants":{},"tokens":[],"next_token":0},"partitions":{}}"#
    ]]
    .assert_eq(std::str::from_utf8(&good).unwrap());
    expect!["ok"].assert_eq(&render(&good));
    expect!["kernel snapshot does not decode: format 2 is not the supported format 1"].assert_eq(
        &render(
            br#"{"format":2,"catalog":{"tenants":{},"tokens":[],"next_token":0},"partitions":{}}"#,
        ),
    );
    expect!["kernel snapshot does not decode: expected value at line 1 column 1"]
        .assert_eq(&render(b"garbage"));
}

/// One random DML step against table `t (id BIGINT PRIMARY KEY, v BIGINT)`.
#[derive(Clone, Debug)]
enum Step {
    Insert(Vec<(i64, i64)>),
    Update { key: Option<i64>, value: i64 },
    Move { from: i64, to: i64 },
    Delete(Option<i64>),
    Drop,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec((0i64..12, -5i64..5), 1..4).prop_map(Step::Insert),
        2 => (proptest::option::of(0i64..12), -5i64..5).prop_map(|(key, value)| Step::Update { key, value }),
        1 => (0i64..12, 0i64..12).prop_map(|(from, to)| Step::Move { from, to }),
        2 => proptest::option::of(0i64..12).prop_map(Step::Delete),
        1 => Just(Step::Drop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random DML scripts: the kernel's table equals a plain BTreeMap model after every
    /// step, and replaying the records reproduces kernel and store exactly.
    #[test]
    fn random_dml_matches_a_model_and_replays(steps in proptest::collection::vec(step(), 1..40)) {
        let mut harness = Harness::new();
        harness.run("tenant t");
        let create = "CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)";
        harness.run(create);
        let mut model: BTreeMap<i64, i64> = BTreeMap::new();
        for step in steps {
            let (sql, expected): (String, Option<BTreeMap<i64, i64>>) = match &step {
                Step::Insert(rows) => {
                    let values: Vec<String> = rows.iter().map(|(k, v)| format!("({k}, {v})")).collect();
                    let mut next = model.clone();
                    let ok = rows.iter().all(|(k, v)| next.insert(*k, *v).is_none());
                    (format!("INSERT INTO t VALUES {}", values.join(", ")), ok.then_some(next))
                }
                Step::Update { key, value } => {
                    let mut next = model.clone();
                    for (k, v) in next.iter_mut() {
                        if key.is_none_or(|key| key == *k) {
                            *v = *value;
                        }
                    }
                    let filter = key.map_or(String::new(), |key| format!(" WHERE id = {key}"));
                    (format!("UPDATE t SET v = {value}{filter}"), Some(next))
                }
                Step::Move { from, to } => {
                    let mut next = model.clone();
                    let ok = match next.remove(from) {
                        None => true,
                        Some(v) => next.insert(*to, v).is_none(),
                    };
                    (format!("UPDATE t SET id = {to} WHERE id = {from}"), ok.then_some(next))
                }
                Step::Delete(key) => {
                    let mut next = model.clone();
                    next.retain(|k, _| key.is_some_and(|key| key != *k));
                    let filter = key.map_or(String::new(), |key| format!(" WHERE id = {key}"));
                    (format!("DELETE FROM t{filter}"), Some(next))
                }
                Step::Drop => {
                    harness.run("DROP TABLE t");
                    (create.to_string(), Some(BTreeMap::new()))
                }
            };
            let output = harness.run(&sql);
            match expected {
                Some(next) => {
                    prop_assert!(!output.contains("error"), "{sql}: {output}");
                    model = next;
                }
                None => prop_assert!(output.contains("duplicate primary key"), "{sql}: {output}"),
            }
            let table = harness.kernel.catalog().table_at(1, "t", None).unwrap().id;
            let rows: Vec<(i64, i64)> = harness
                .rows
                .rows(1, table)
                .iter()
                .map(|row| match row.as_slice() {
                    [Value::Integer(k), Value::Integer(v)] => (*k, *v),
                    other => panic!("{other:?}"),
                })
                .collect();
            prop_assert_eq!(rows, model.clone().into_iter().collect::<Vec<_>>());
        }
        harness.assert_replay_and_snapshot_agree();
    }

    /// Random and mutated SQL never panics the kernel, and a refused command changes nothing
    /// (`Harness::execute` asserts that).
    #[test]
    fn random_sql_never_panics_the_kernel(
        text in prop_oneof![
            "\\PC{0,120}",
            "(INSERT INTO t VALUES |UPDATE t SET v = |DELETE FROM t WHERE |SELECT |CREATE TABLE u )[ (),'$.*=<>+/%|0-9a-zA-Z]{0,40}",
        ],
        params in proptest::collection::vec(prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Real),
            "[a-z0-9: -]{0,12}".prop_map(Value::Text),
        ], 0..3),
    ) {
        let mut harness = Harness::new();
        harness.run("tenant t");
        harness.run("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)");
        harness.run("INSERT INTO t VALUES (1, 1), (2, NULL)");
        harness.params = params;
        harness.run(&text);
        harness.assert_replay_and_snapshot_agree();
    }
}

#[test]
fn every_bound_is_named_in_its_error() {
    let mut harness = Harness::new();
    harness.run("tenant clinic");
    harness.run("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT, raw BYTES)");
    let mut out = String::new();
    let mut attempt = |label: &str, harness: &mut Harness, body: CommandBody| {
        let cmd = harness.command(1, body);
        let result = harness.execute(&cmd).map(|effects| effects.outcome);
        out.push_str(&format!(
            "{label}: {:?}\n",
            result.map_err(|error| error.to_string())
        ));
    };
    let sql = |text: &str, params: Vec<Value>| CommandBody::Sql {
        sql: text.to_string(),
        params,
    };
    let big_text = Value::Text("x".repeat(VALUE_BYTES_MAX + 1));
    attempt(
        "text value",
        &mut harness,
        sql("INSERT INTO notes VALUES (1, $1, NULL)", vec![big_text]),
    );
    let big_bytes = Value::Bytes(vec![0; VALUE_BYTES_MAX + 1]);
    attempt(
        "bytes value",
        &mut harness,
        sql("INSERT INTO notes VALUES (1, NULL, $1)", vec![big_bytes]),
    );
    let params = vec![Value::Null; STATEMENT_PARAMS_MAX + 1];
    attempt(
        "parameters",
        &mut harness,
        sql("INSERT INTO notes VALUES (1, NULL, NULL)", params),
    );
    let payload = vec![b'x'; EVENT_PAYLOAD_BYTES_MAX + 1];
    attempt(
        "event payload",
        &mut harness,
        CommandBody::Append {
            events: vec![AppendEvent {
                subject: None,
                stream: "s".to_string(),
                event_type: "E".to_string(),
                payload,
            }],
        },
    );
    let stream = "s".repeat(NAME_BYTES_MAX + 1);
    attempt(
        "stream name",
        &mut harness,
        CommandBody::Append {
            events: vec![AppendEvent {
                subject: None,
                stream,
                event_type: "E".to_string(),
                payload: Vec::new(),
            }],
        },
    );
    harness.reason = "r".repeat(REASON_BYTES_MAX + 1);
    attempt(
        "reason",
        &mut harness,
        sql("INSERT INTO notes VALUES (1, NULL, NULL)", Vec::new()),
    );
    harness.reason.clear();
    attempt(
        "within bounds",
        &mut harness,
        sql("INSERT INTO notes VALUES (1, 'ok', X'00')", Vec::new()),
    );
    expect![[r#"
        text value: Err("value for column `body` of `notes` is 1048577 bytes, above value_bytes_max (1048576 bytes)")
        bytes value: Err("value for column `raw` of `notes` is 1048577 bytes, above value_bytes_max (1048576 bytes)")
        parameters: Err("4097 parameters given, above statement_params_max (4096)")
        event payload: Err("invalid payload: 1048577 bytes, above event_payload_bytes_max (1048576 bytes)")
        stream name: Err("invalid stream: it is 129 bytes, above name_bytes_max (128 bytes)")
        reason: Err("invalid reason: it is 4097 bytes, above reason_bytes_max (4096 bytes)")
        within bounds: Ok(RowsAffected { count: 1 })
    "#]]
    .assert_eq(&out);
    harness.assert_replay_and_snapshot_agree();
}

fn view_schema(name: &str) -> ViewSchema {
    ViewSchema {
        name: name.to_string(),
        columns: vec![
            Column {
                name: "account".into(),
                ty: ColumnType::Text,
                nullable: false,
            },
            Column {
                name: "balance".into(),
                ty: ColumnType::BigInt,
                nullable: false,
            },
        ],
        primary_key: vec![0],
    }
}

fn deploy(module: &[u8], tables: &[&str]) -> CommandBody {
    CommandBody::DeployProjection {
        name: "balances".into(),
        module: module.to_vec(),
        config: b"{}".to_vec(),
        tables: tables.iter().map(|name| view_schema(name)).collect(),
    }
}

/// Deploys, rebuilds, activation, faults and rollbacks of projections and policies are
/// records; replaying them reproduces the catalog exactly.
#[test]
fn projection_and_policy_versions_through_records() {
    let mut harness = Harness::new();
    harness.run("tenant clinic");
    harness.run("CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT)");
    let outcome = |harness: &mut Harness, body: CommandBody| {
        let cmd = harness.command(1, body);
        match harness.execute(&cmd) {
            Ok(effects) => format!("{:?} ({} records)", effects.outcome, effects.records.len()),
            Err(error) => format!("error: {error}"),
        }
    };
    let state = |harness: &Harness| {
        let tenant = harness.kernel.catalog().tenant(1).unwrap();
        let projection = tenant.projection("balances").unwrap();
        format!(
            "active={:?} target={:?} view={:?}",
            projection.active,
            projection.target,
            tenant
                .view("balances")
                .map(|(_, version, table)| (version.version, table.id))
        )
    };
    // A module bigger than one chunk is cut into chunk records before the deploy record.
    let big = vec![7u8; crate::limits::MODULE_CHUNK_BYTES + 1];
    let mut out = String::new();
    out.push_str(&format!(
        "v1: {}\n",
        outcome(&mut harness, deploy(&big, &["balances"]))
    ));
    out.push_str(&format!("  {}\n", state(&harness)));
    out.push_str(&format!(
        "same again: {}\n",
        outcome(&mut harness, deploy(&big, &["balances"]))
    ));
    out.push_str(&format!(
        "clash with table: {}\n",
        outcome(&mut harness, deploy(b"m2", &["patients"]))
    ));
    out.push_str(&format!(
        "CREATE TABLE over view: {}\n",
        harness
            .run("CREATE TABLE balances (id BIGINT PRIMARY KEY)")
            .trim()
    ));
    out.push_str(&format!(
        "v2: {}\n",
        outcome(&mut harness, deploy(b"m2", &["balances"]))
    ));
    out.push_str(&format!("  {}\n", state(&harness)));
    let v2 = harness
        .kernel
        .catalog()
        .tenant(1)
        .unwrap()
        .projection("balances")
        .unwrap()
        .target
        .unwrap();
    out.push_str(&format!(
        "activate v2: {}\n",
        outcome(
            &mut harness,
            CommandBody::ActivateProjection {
                name: "balances".into(),
                version: v2
            }
        )
    ));
    out.push_str(&format!("  {}\n", state(&harness)));
    out.push_str(&format!(
        "rollback: {}\n",
        outcome(
            &mut harness,
            CommandBody::RollbackProjection {
                name: "balances".into()
            }
        )
    ));
    out.push_str(&format!("  {}\n", state(&harness)));
    out.push_str(&format!(
        "v3: {}\n",
        outcome(&mut harness, deploy(b"m3", &["balances"]))
    ));
    let v3 = harness
        .kernel
        .catalog()
        .tenant(1)
        .unwrap()
        .projection("balances")
        .unwrap()
        .target
        .unwrap();
    let fault = CommandBody::FaultProjection {
        name: "balances".into(),
        version: v3,
        position: 2,
        message: "the module trapped".into(),
    };
    out.push_str(&format!(
        "fault v3: {}\n",
        outcome(&mut harness, fault.clone())
    ));
    out.push_str(&format!(
        "fault v3 again: {}\n",
        outcome(&mut harness, fault)
    ));
    out.push_str(&format!(
        "activate faulted v3: {}\n",
        outcome(
            &mut harness,
            CommandBody::ActivateProjection {
                name: "balances".into(),
                version: v3
            }
        )
    ));
    let policy = |module: &[u8], name: &str| CommandBody::DeployPolicy {
        name: name.into(),
        module: module.to_vec(),
        config: Vec::new(),
        covers: vec!["patients".into()],
    };
    out.push_str(&format!(
        "policy v1: {}\n",
        outcome(&mut harness, policy(b"p1", "phi"))
    ));
    out.push_str(&format!(
        "policy v2: {}\n",
        outcome(&mut harness, policy(b"p2", "phi"))
    ));
    out.push_str(&format!(
        "other policy, same table: {}\n",
        outcome(&mut harness, policy(b"p3", "other"))
    ));
    let active_policy = |harness: &Harness| {
        let tenant = harness.kernel.catalog().tenant(1).unwrap();
        tenant
            .policy_covering("patients")
            .map(|(_, version)| version.version)
    };
    out.push_str(&format!("  covering: {:?}\n", active_policy(&harness)));
    out.push_str(&format!(
        "policy rollback: {}\n",
        outcome(
            &mut harness,
            CommandBody::RollbackPolicy { name: "phi".into() }
        )
    ));
    out.push_str(&format!("  covering: {:?}\n", active_policy(&harness)));
    out.push_str(&format!(
        "policy rollback again: {}\n",
        outcome(
            &mut harness,
            CommandBody::RollbackPolicy { name: "phi".into() }
        )
    ));
    out.push_str(&format!(
        "unknown: {}\n",
        outcome(
            &mut harness,
            CommandBody::RollbackPolicy {
                name: "nope".into()
            }
        )
    ));
    harness.assert_replay_and_snapshot_agree();
    expect![[r#"
        v1: ProjectionDeployed { name: "balances" } (3 records)
          active=Some(3) target=None view=Some((3, 3))
        same again: Skipped { notice: "projection `balances` already runs this module (version 3); nothing deployed" } (0 records)
        clash with table: error: a SQL table `patients` exists; projection `balances` wants a view of that name
        CREATE TABLE over view: error: `balances` is a view of projection `balances`
        v2: ProjectionDeployed { name: "balances" } (2 records)
          active=Some(3) target=Some(5) view=Some((3, 3))
        activate v2: ProjectionActivated { name: "balances", version: 5 } (1 records)
          active=Some(5) target=None view=Some((5, 5))
        rollback: ProjectionRolledBack { name: "balances", to: Some(3) } (1 records)
          active=Some(5) target=Some(3) view=Some((5, 5))
        v3: ProjectionDeployed { name: "balances" } (2 records)
        fault v3: ProjectionFaulted { name: "balances", version: 9 } (1 records)
        fault v3 again: Skipped { notice: "version 9 of `balances` already faulted at position 2" } (0 records)
        activate faulted v3: error: invalid projection version: version 9 of `balances` is not a healthy version being built; it cannot be activated
        policy v1: PolicyDeployed { name: "phi" } (2 records)
        policy v2: PolicyDeployed { name: "phi" } (2 records)
        other policy, same table: error: invalid policy: table `patients` is already masked by policy `phi`; deploy a new version of that policy instead
          covering: Some(14)
        policy rollback: PolicyRolledBack { name: "phi", to: 12 } (1 records)
          covering: Some(12)
        policy rollback again: error: invalid rollback: policy `phi` has no earlier version to return to
        unknown: error: unknown policy `nope`
    "#]].assert_eq(&out);
}

#[test]
fn grants_and_row_filters_are_logged_and_replayed() {
    check(
        "
        tenant clinic
        CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
        GRANT SELECT, INSERT ON patients TO analyst, public
        REVOKE ALL ON patients FROM reader, public
        GRANT SELECT ON kimberlite.log TO auditor
        GRANT INSERT ON kimberlite.log TO auditor
        GRANT SELECT ON nowhere TO analyst
        CREATE POLICY eu ON patients FOR SELECT TO reader USING (region = current_attribute('region'))
        CREATE POLICY eu ON patients FOR SELECT TO reader USING (true)
        CREATE POLICY treat ON patients AS RESTRICTIVE FOR SELECT USING (current_purpose() = 'treatment')
        CREATE POLICY bad ON patients FOR SELECT USING (nope = 1)
        CREATE POLICY bad ON patients FOR SELECT USING (region)
        CREATE POLICY bad ON patients FOR SELECT USING (id = $1)
        CREATE POLICY bad ON nowhere FOR SELECT USING (true)
        DROP POLICY treat ON patients
        DROP POLICY treat ON patients
        DROP POLICY IF EXISTS treat ON patients
        DROP TABLE patients
        GRANT SELECT ON patients TO historian
        ",
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            CREATE TABLE patients (id BIGINT PRIMARY KEY, name TEXT NOT NULL, region TEXT)
              TableCreated { table: "patients" }
              t1@0 ddl CreateTable stream=patients {"table":"patients","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"name","type":"TEXT","nullable":false},{"name":"region","type":"TEXT","nullable":true}],"primary_key":["id"]}
            GRANT SELECT, INSERT ON patients TO analyst, public
              AccessChanged { summary: "GRANT SELECT, INSERT ON patients TO analyst, public" }
              t1@1 ddl Grant stream=patients {"table":"patients","privileges":["SELECT","INSERT"],"roles":["analyst","public"]}
            REVOKE ALL ON patients FROM reader, public
              AccessChanged { summary: "REVOKE SELECT, INSERT, UPDATE, DELETE ON patients FROM reader, public" }
              t1@2 ddl Revoke stream=patients {"table":"patients","privileges":["SELECT","INSERT","UPDATE","DELETE"],"roles":["reader","public"]}
            GRANT SELECT ON kimberlite.log TO auditor
              AccessChanged { summary: "GRANT SELECT ON kimberlite.log TO auditor" }
              t1@3 ddl Grant stream=kimberlite.log {"table":"kimberlite.log","privileges":["SELECT"],"roles":["auditor"]}
            GRANT INSERT ON kimberlite.log TO auditor
              error: invalid grant: `kimberlite.log` shows log payloads: only SELECT can be granted or revoked
            GRANT SELECT ON nowhere TO analyst
              error: unknown table `nowhere` (tables: patients)
            CREATE POLICY eu ON patients FOR SELECT TO reader USING (region = current_attribute('region'))
              AccessChanged { summary: "CREATE POLICY eu ON patients AS PERMISSIVE FOR SELECT TO reader" }
              t1@4 ddl CreatePolicy stream=patients {"table":"patients","name":"eu","kind":"permissive","roles":["reader"],"using":"region = current_attribute('region')"}
            CREATE POLICY eu ON patients FOR SELECT TO reader USING (true)
              error: policy `eu` on `patients` already exists; DROP POLICY eu ON patients first
            CREATE POLICY treat ON patients AS RESTRICTIVE FOR SELECT USING (current_purpose() = 'treatment')
              AccessChanged { summary: "CREATE POLICY treat ON patients AS RESTRICTIVE FOR SELECT TO public" }
              t1@5 ddl CreatePolicy stream=patients {"table":"patients","name":"treat","kind":"restrictive","roles":["public"],"using":"current_purpose() = 'treatment'"}
            CREATE POLICY bad ON patients FOR SELECT USING (nope = 1)
              error: unknown column `nope` (columns: id, name, region)
            CREATE POLICY bad ON patients FOR SELECT USING (region)
              error: type mismatch in `region`: USING needs a BOOLEAN condition, got TEXT
            CREATE POLICY bad ON patients FOR SELECT USING (id = $1)
              error: parameter $1 was not given (0 parameters given)
            CREATE POLICY bad ON nowhere FOR SELECT USING (true)
              error: unknown table `nowhere` (tables: patients)
            DROP POLICY treat ON patients
              AccessChanged { summary: "DROP POLICY treat ON patients" }
              t1@6 ddl DropPolicy stream=patients {"table":"patients","name":"treat"}
            DROP POLICY treat ON patients
              error: no policy `treat` on `patients` (policies: eu)
            DROP POLICY IF EXISTS treat ON patients
              Skipped { notice: "policy `treat` on `patients` does not exist; nothing dropped" }
              (no records; next position 7)
            DROP TABLE patients
              TableDropped { table: "patients" }
              t1@7 ddl DropTable stream=patients {"table":"patients","table_id":0}
            GRANT SELECT ON patients TO historian
              AccessChanged { summary: "GRANT SELECT ON patients TO historian" }
              t1@8 ddl Grant stream=patients {"table":"patients","privileges":["SELECT"],"roles":["historian"]}
        "#]],
    );
}

#[test]
fn privileges_follow_the_default_list_until_the_first_grant() {
    let mut harness = Harness::new();
    for line in [
        "tenant clinic",
        "tenant bank",
        "token 0 node admin",
        "token 1 boss admin",
        "token 1 clerk writer",
        "token 1 viewer reader",
        "token 1 inspector auditor",
        "token 1 analyst analyst",
        "token 2 banker reader",
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, region TEXT)",
        "CREATE TABLE notes (id BIGINT PRIMARY KEY)",
        "REVOKE SELECT ON patients FROM reader",
        "GRANT SELECT ON patients TO analyst",
        "GRANT SELECT ON notes TO auditor",
        "CREATE POLICY eu ON patients FOR SELECT TO analyst, reader USING (region = 'eu')",
    ] {
        let out = harness.run(line);
        assert!(!out.contains("error"), "{line}: {out}");
    }
    let mut out = String::new();
    let catalog = harness.kernel.catalog();
    for token in catalog.tokens() {
        for table in ["patients", "notes"] {
            let held: Vec<&str> = Privilege::ALL
                .into_iter()
                .filter(|privilege| catalog.may(token, 1, table, *privilege))
                .map(Privilege::name)
                .collect();
            let filters: Vec<String> = catalog
                .row_filters_for(1, table, &token.roles)
                .iter()
                .map(|filter| filter.qualified_name())
                .collect();
            out.push_str(&format!(
                "{} on {table}: [{}] filters [{}]\n",
                token.name,
                held.join(" "),
                filters.join(" ")
            ));
        }
    }
    expect![[r#"
        analyst on patients: [SELECT] filters [patients.eu]
        analyst on notes: [] filters []
        banker on patients: [] filters [patients.eu]
        banker on notes: [] filters []
        boss on patients: [SELECT INSERT UPDATE DELETE] filters []
        boss on notes: [SELECT INSERT UPDATE DELETE] filters []
        clerk on patients: [SELECT INSERT UPDATE DELETE] filters []
        clerk on notes: [SELECT INSERT UPDATE DELETE] filters []
        inspector on patients: [] filters []
        inspector on notes: [SELECT] filters []
        node on patients: [SELECT INSERT UPDATE DELETE] filters []
        node on notes: [SELECT INSERT UPDATE DELETE] filters []
        viewer on patients: [] filters [patients.eu]
        viewer on notes: [SELECT] filters []
    "#]]
    .assert_eq(&out);
    harness.assert_replay_and_snapshot_agree();
}

#[test]
fn rotation_subject_keys_and_erasure_through_records() {
    check(
        "
        tenant clinic
        use 1
        CREATE TABLE visits (id BIGINT PRIMARY KEY, patient TEXT, note TEXT) WITH (subject = 'patient')
        INSERT INTO visits VALUES (1, 'ada', 'a1'), (2, 'bob', 'b1'), (3, NULL, 'anonymous')
        UPDATE visits SET note = 'a2' WHERE id = 1
        UPDATE visits SET patient = 'bob' WHERE id = 1
        append-about ada vitals Measured {\"pulse\":70}
        rotate
        INSERT INTO visits VALUES (4, 'ada', 'a3')
        DELETE FROM visits WHERE id = 2
        erase ada
        rows
        erase ada
        erase nobody
        INSERT INTO visits VALUES (5, 'ada', 'again')
        append-about ada vitals Measured {}
        INSERT INTO visits VALUES (1, 'carol', 'reuses the erased row key')
        rows
        ",
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            use 1
            CREATE TABLE visits (id BIGINT PRIMARY KEY, patient TEXT, note TEXT) WITH (subject = 'patient')
              TableCreated { table: "visits" }
              t1@0 ddl CreateTable stream=visits {"table":"visits","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"patient","type":"TEXT","nullable":true},{"name":"note","type":"TEXT","nullable":true}],"primary_key":["id"],"subject":"patient"}
            INSERT INTO visits VALUES (1, 'ada', 'a1'), (2, 'bob', 'b1'), (3, NULL, 'anonymous')
              RowsAffected { count: 3 }
              t1@1 key-rotation SubjectKeyCreated stream=kimberlite.keys {"subject":"ada","key_id":2147483648}
              t1@2 event RowInserted stream=visits key=2147483648 {"id":1,"patient":"ada","note":"a1"}
              t1@3 key-rotation SubjectKeyCreated stream=kimberlite.keys {"subject":"bob","key_id":2147483649}
              t1@4 event RowInserted stream=visits key=2147483649 {"id":2,"patient":"bob","note":"b1"}
              t1@5 event RowInserted stream=visits {"id":3,"patient":null,"note":"anonymous"}
            UPDATE visits SET note = 'a2' WHERE id = 1
              RowsAffected { count: 1 }
              t1@6 event RowUpdated stream=visits key=2147483648 {"id":1,"patient":"ada","note":"a2"}
            UPDATE visits SET patient = 'bob' WHERE id = 1
              error: invalid UPDATE: it changes `patient`, the data subject of `visits`: a row's records stay under one subject's key (DELETE it and INSERT the new row)
            append-about ada vitals Measured {"pulse":70}
              Appended { count: 1 }
              t1@7 event Measured stream=vitals key=2147483648 {"pulse":70}
            rotate
              KeyRotated { key_id: 2 }
              t1@8 key-rotation KeyRotated stream=kimberlite.keys {"key_id":2,"previous":1}
            INSERT INTO visits VALUES (4, 'ada', 'a3')
              RowsAffected { count: 1 }
              t1@9 event RowInserted stream=visits key=2147483648 {"id":4,"patient":"ada","note":"a3"}
            DELETE FROM visits WHERE id = 2
              RowsAffected { count: 1 }
              t1@10 event RowDeleted stream=visits key=2147483649 {"id":2}
            erase ada
              SubjectErased { subject: "ada", key_id: 2147483648 }
              t1@11 erasure SubjectErased stream=kimberlite.keys key=2 {"subject":"ada","key_id":2147483648}
            rows
              visits: (3, NULL, 'anonymous')
            erase ada
              error: data subject `ada` was erased at position 11: its key is destroyed and no record may name it again
            erase nobody
              error: no record of this tenant names the data subject `nobody`
            INSERT INTO visits VALUES (5, 'ada', 'again')
              error: data subject `ada` was erased at position 11: its key is destroyed and no record may name it again
            append-about ada vitals Measured {}
              error: data subject `ada` was erased at position 11: its key is destroyed and no record may name it again
            INSERT INTO visits VALUES (1, 'carol', 'reuses the erased row key')
              RowsAffected { count: 1 }
              t1@12 key-rotation SubjectKeyCreated stream=kimberlite.keys key=2 {"subject":"carol","key_id":2147483650}
              t1@13 event RowInserted stream=visits key=2147483650 {"id":1,"patient":"carol","note":"reuses the erased row key"}
            rows
              visits: (1, 'carol', 'reuses the erased row key') (3, NULL, 'anonymous')
        "#]],
    );
}

#[test]
fn erasing_a_tenant_leaves_only_its_tombstone() {
    check(
        "
        tenant clinic
        tenant bank
        use 1
        CREATE TABLE visits (id BIGINT PRIMARY KEY, patient TEXT) WITH (subject = 'patient')
        INSERT INTO visits VALUES (1, 'ada')
        append notes Written hello
        use 2
        CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT)
        INSERT INTO accounts VALUES (7, 100)
        erase-tenant 1
        reason contract ended
        erase-tenant 0
        erase-tenant 9
        erase-tenant 1
        erase-tenant 1
        use 1
        rows
        tables
        INSERT INTO visits VALUES (2, 'bob')
        append notes Written again
        rotate
        token 1 clerk writer
        quota 1 queries=5
        tenant clinic
        use 2
        rows
        INSERT INTO accounts VALUES (8, 5)
        ",
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            tenant bank
              TenantCreated { tenant: 2, name: "bank" }
              t0@1 catalog TenantCreated stream=tenants {"tenant":2,"name":"bank"}
            use 1
            CREATE TABLE visits (id BIGINT PRIMARY KEY, patient TEXT) WITH (subject = 'patient')
              TableCreated { table: "visits" }
              t1@0 ddl CreateTable stream=visits {"table":"visits","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"patient","type":"TEXT","nullable":true}],"primary_key":["id"],"subject":"patient"}
            INSERT INTO visits VALUES (1, 'ada')
              RowsAffected { count: 1 }
              t1@1 key-rotation SubjectKeyCreated stream=kimberlite.keys {"subject":"ada","key_id":2147483648}
              t1@2 event RowInserted stream=visits key=2147483648 {"id":1,"patient":"ada"}
            append notes Written hello
              Appended { count: 1 }
              t1@3 event Written stream=notes hello
            use 2
            CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT)
              TableCreated { table: "accounts" }
              t2@0 ddl CreateTable stream=accounts {"table":"accounts","columns":[{"name":"id","type":"BIGINT","nullable":false},{"name":"balance","type":"BIGINT","nullable":true}],"primary_key":["id"]}
            INSERT INTO accounts VALUES (7, 100)
              RowsAffected { count: 1 }
              t2@1 event RowInserted stream=accounts {"id":7,"balance":100}
            erase-tenant 1
              error: invalid reason: erasing a tenant needs a reason: it is part of the record auditors see
            reason contract ended
            erase-tenant 0
              error: the system partition holds no tables or events; send this command to a tenant
            erase-tenant 9
              error: unknown tenant 9
            erase-tenant 1
              TenantErased { tenant: 1, name: "clinic", records: 4 }
              t0@2 erasure TenantErased stream=tenants reason="contract ended" {"tenant":1,"name":"clinic","records":4}
            erase-tenant 1
              error: tenant `clinic` was erased at position 2 of the system log: its keys are destroyed and nothing can be written to, read from or named in it again
            use 1
            rows
            tables
            INSERT INTO visits VALUES (2, 'bob')
              error: tenant `clinic` was erased at position 2 of the system log: its keys are destroyed and nothing can be written to, read from or named in it again
            append notes Written again
              error: tenant `clinic` was erased at position 2 of the system log: its keys are destroyed and nothing can be written to, read from or named in it again
            rotate
              error: tenant `clinic` was erased at position 2 of the system log: its keys are destroyed and nothing can be written to, read from or named in it again
            token 1 clerk writer
              error: tenant `clinic` was erased at position 2 of the system log: its keys are destroyed and nothing can be written to, read from or named in it again
            quota 1 queries=5
              error: tenant `clinic` was erased at position 2 of the system log: its keys are destroyed and nothing can be written to, read from or named in it again
            tenant clinic
              error: tenant `clinic` was erased at position 2 of the system log: its keys are destroyed and nothing can be written to, read from or named in it again
            use 2
            rows
              accounts: (7, 100)
            INSERT INTO accounts VALUES (8, 5)
              RowsAffected { count: 1 }
              t2@2 event RowInserted stream=accounts reason="contract ended" {"id":8,"balance":5}
        "#]],
    );
}

#[test]
fn quotas_are_catalog_records() {
    check(
        "
        tenant clinic
        quota 1 queries=50 stored=1000
        quota 1 appends=0
        quota 9 queries=1
        quota 1
        ",
        expect![[r#"
            tenant clinic
              TenantCreated { tenant: 1, name: "clinic" }
              t0@0 catalog TenantCreated stream=tenants {"tenant":1,"name":"clinic"}
            quota 1 queries=50 stored=1000
              QuotaSet { tenant: 1 }
              t0@1 catalog QuotaSet stream=tenants {"tenant":1,"quota":{"stored_bytes":1000,"queries_per_second":50}}
            quota 1 appends=0
              error: invalid quota: appends_per_second = 0 would refuse everything; give a positive value or none
            quota 9 queries=1
              error: unknown tenant 9
            quota 1
              QuotaSet { tenant: 1 }
              t0@2 catalog QuotaSet stream=tenants {"tenant":1,"quota":{}}
        "#]],
    );
}
