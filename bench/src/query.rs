//! `query`: point lookups over QUIC on a table of `rows` rows with `versions` versions per
//! row: the current row (`SELECT … WHERE id = $1`) vs the same lookup `AS OF POSITION p`
//! at several depths of history (the newest version, the middle, the oldest). The aim of
//! issue 6: AS OF within 2× of current at any depth.
//!
//! The data goes in through the real write path: multi-row INSERTs for the first version,
//! then one round per later version of `UPDATE … WHERE id IN (…)`, several statements in
//! flight. The round boundaries are log positions, so `AS OF POSITION` the end of round k
//! must answer version k of every row — each answer is checked.
//!
//! Lookups of all kinds are interleaved (current, depth 0, depth mid, depth oldest, …, the
//! order rotating each round) by one client, so machine noise falls on every kind alike.

use crate::stats::Latencies;
use crate::{Settings, summary};
use indicatif::{ProgressBar, ProgressStyle};
use kimberlite::{EmbeddedServer, NodeOptions};
use kimberlite_client::{Client, SqlOutcome, WireValue};
use std::sync::Arc;
use std::time::Instant;

/// Rows and versions per row: the full run is the 1M rows × 10 versions (10M row
/// versions, loaded through SQL in about 7 minutes here).
pub const ROWS_FULL: usize = 1_000_000;
pub const ROWS_QUICK: usize = 5_000;
pub const VERSIONS_FULL: usize = 10;
pub const VERSIONS_QUICK: usize = 4;
/// Rows per INSERT or UPDATE statement while loading.
pub const STATEMENT_ROWS: usize = 1_000;
/// Statements in flight while loading (the group commit folds them into shared syncs).
pub const LOAD_STATEMENTS_IN_FLIGHT: usize = 4;
/// Lookups of each kind, full and quick.
pub const LOOKUPS_FULL: usize = 5_000;
pub const LOOKUPS_QUICK: usize = 400;
/// Bytes of the `body` column (after the version tag).
pub const BODY_BYTES: usize = 64;
/// The aim: an AS OF lookup at most this many times a current one (p50 and p99).
const AIM_AS_OF_OVER_CURRENT: f64 = 2.0;

/// Rows × versions of one data set.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub rows: usize,
    pub versions: usize,
}

impl Shape {
    pub fn of(settings: &Settings) -> Shape {
        Shape {
            rows: settings.pick(ROWS_FULL, ROWS_QUICK),
            versions: settings.pick(VERSIONS_FULL, VERSIONS_QUICK),
        }
    }

    /// The versions read AS OF: newest, middle and oldest (by depth below the newest).
    pub fn depths(&self) -> Vec<usize> {
        let mut depths = vec![0, self.versions / 2, self.versions - 1];
        depths.dedup();
        depths
    }
}

/// The body of `id` at `version`; its prefix names the version so every answer is checked.
pub fn body(id: usize, version: usize) -> String {
    let tag = format!("v{version}-{id}-");
    format!("{tag}{}", "x".repeat(BODY_BYTES.saturating_sub(tag.len())))
}

/// A deterministic stream of row ids (xorshift): the same lookups on every system.
#[derive(Debug, Clone)]
pub struct Ids(u64);

impl Ids {
    pub fn new(seed: u64) -> Ids {
        Ids(seed | 1)
    }

    pub fn next(&mut self, rows: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % rows as u64) as usize
    }
}

/// A progress bar over row versions written; silent when stderr is not a terminal, which
/// then gets a line per round instead.
pub fn progress(what: &str, total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "  {msg} [{bar:30}] {pos}/{len} row versions, {per_sec}, eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Lookup latencies of one kind.
#[derive(Debug, Clone)]
pub struct Kind {
    pub name: String,
    pub key: String,
    pub latencies: Latencies,
}

pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let shape = Shape::of(settings);
    let runtime = crate::runtime()?;
    let (load, mut kinds) = runtime.block_on(async {
        let dir = settings.dir.join("query-node");
        let server = EmbeddedServer::start(NodeOptions::new(&dir), "127.0.0.1:0".parse()?).await?;
        let client = Arc::new(Client::connect(server.client_config(), None).await?);
        client.create_tenant("bench", "benchmark").await?;
        let load = load_kimberlite(&client, shape).await?;
        let kinds = lookups_kimberlite(
            &client,
            shape,
            &load.round_ends,
            settings.pick(LOOKUPS_FULL, LOOKUPS_QUICK),
        )
        .await?;
        drop(client);
        server.stop().await?;
        std::fs::remove_dir_all(&dir)?;
        anyhow::Ok((load, kinds))
    })?;

    println!(
        "\nsuite query: point lookups over QUIC, {} rows × {} versions (loaded at {:.0} row versions/s through SQL)",
        shape.rows, shape.versions, load.row_versions_per_second
    );
    println!(
        "  {:<44} {:>9} {:>9} {:>13} {:>13}",
        "lookup", "p50 us", "p99 us", "p50/current", "p99/current"
    );
    let (current_p50, current_p99) = (
        kinds[0].latencies.quantile_us(0.5),
        kinds[0].latencies.quantile_us(0.99),
    );
    let mut ratios = serde_json::Map::new();
    let mut figures = serde_json::Map::new();
    let mut worst: f64 = 0.0;
    for kind in &mut kinds {
        let (p50, p99) = (
            kind.latencies.quantile_us(0.5),
            kind.latencies.quantile_us(0.99),
        );
        let (r50, r99) = (p50 / current_p50, p99 / current_p99);
        println!(
            "  {:<44} {:>9.0} {:>9.0} {:>13.2} {:>13.2}",
            kind.name, p50, p99, r50, r99
        );
        figures.insert(format!("{}_p50_us", kind.key), p50.into());
        figures.insert(format!("{}_p99_us", kind.key), p99.into());
        if kind.key != "current" {
            ratios.insert(format!("{}_p50_over_current", kind.key), r50.into());
            ratios.insert(format!("{}_p99_over_current", kind.key), r99.into());
            worst = worst.max(r50).max(r99);
        }
    }
    println!(
        "  aim: AS OF within {AIM_AS_OF_OVER_CURRENT}× of current at any depth: worst {worst:.2}× ({})",
        if worst <= AIM_AS_OF_OVER_CURRENT {
            "met"
        } else {
            "NOT met"
        }
    );
    figures.insert("rows".into(), shape.rows.into());
    figures.insert("versions".into(), shape.versions.into());
    figures.insert(
        "load_row_versions_per_second".into(),
        load.row_versions_per_second.into(),
    );
    summary("query", ratios, figures);
    Ok(())
}

/// What loading produced.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Log position at the end of each version's round: AS OF it, every row is at that
    /// version.
    pub round_ends: Vec<u64>,
    pub row_versions_per_second: f64,
}

/// Creates `items` and writes `shape.versions` versions of `shape.rows` rows through SQL.
pub async fn load_kimberlite(client: &Arc<Client>, shape: Shape) -> anyhow::Result<Loaded> {
    client
        .sql(
            "bench",
            "CREATE TABLE items (id BIGINT PRIMARY KEY, body TEXT)",
            &[],
            "schema",
        )
        .await?;
    let bar = progress("loading Kimberlite", shape.rows * shape.versions);
    let start = Instant::now();
    let mut round_ends = Vec::new();
    for version in 0..shape.versions {
        let mut statements = Vec::new();
        for first in (0..shape.rows).step_by(STATEMENT_ROWS) {
            let ids = first..(first + STATEMENT_ROWS).min(shape.rows);
            let sql = if version == 0 {
                let values: Vec<String> =
                    ids.map(|id| format!("({id}, '{}')", body(id, 0))).collect();
                format!("INSERT INTO items (id, body) VALUES {}", values.join(", "))
            } else {
                // One body per statement (the id is part of it only for version 0); the
                // version tag is what the lookups check.
                let list: Vec<String> = ids.map(|id| id.to_string()).collect();
                format!(
                    "UPDATE items SET body = '{}' WHERE id IN ({})",
                    body(first, version),
                    list.join(", ")
                )
            };
            statements.push(sql);
        }
        let mut round_end = 0u64;
        let mut pending = Vec::new();
        for sql in statements {
            if pending.len() == LOAD_STATEMENTS_IN_FLIGHT {
                round_end = round_end.max(finish_write(pending.remove(0), &bar).await?);
            }
            let client = client.clone();
            pending.push(tokio::spawn(async move {
                client.sql("bench", &sql, &[], "load").await
            }));
        }
        for task in pending {
            round_end = round_end.max(finish_write(task, &bar).await?);
        }
        round_ends.push(round_end);
        if bar.is_hidden() {
            eprintln!(
                "  loaded version {} of {} ({} rows)",
                version + 1,
                shape.versions,
                shape.rows
            );
        }
    }
    bar.finish_and_clear();
    Ok(Loaded {
        round_ends,
        row_versions_per_second: (shape.rows * shape.versions) as f64
            / start.elapsed().as_secs_f64(),
    })
}

type WriteTask = tokio::task::JoinHandle<Result<SqlOutcome, kimberlite_client::ClientError>>;

/// Waits for one load statement; returns the last log position it wrote.
async fn finish_write(task: WriteTask, bar: &ProgressBar) -> anyhow::Result<u64> {
    match task.await?? {
        SqlOutcome::Written(outcome) => {
            bar.inc(outcome.rows_affected);
            let (_, last) = outcome.positions.ok_or_else(|| {
                anyhow::anyhow!(
                    "a load statement wrote no log positions: {}",
                    outcome.summary
                )
            })?;
            Ok(last)
        }
        SqlOutcome::Rows(_) => anyhow::bail!("a load statement answered rows"),
    }
}

/// The kinds of lookup: current, then AS OF each depth (versions back from the newest).
pub fn kinds(depths: &[usize]) -> Vec<Kind> {
    let mut kinds = vec![Kind {
        name: "current (no AS OF)".into(),
        key: "current".into(),
        latencies: Latencies::default(),
    }];
    for depth in depths {
        kinds.push(Kind {
            name: format!("AS OF POSITION, {depth} versions back"),
            key: format!("as_of_depth_{depth}"),
            latencies: Latencies::default(),
        });
    }
    kinds
}

/// The version lookup kind `index` of `kinds(depths)` must answer.
pub fn version_of(shape: Shape, depths: &[usize], index: usize) -> usize {
    let newest = shape.versions - 1;
    if index == 0 {
        newest
    } else {
        newest - depths[index - 1]
    }
}

/// Interleaved lookups: one of each kind per round, `lookups` rounds.
pub async fn lookups_kimberlite(
    client: &Client,
    shape: Shape,
    round_ends: &[u64],
    lookups: usize,
) -> anyhow::Result<Vec<Kind>> {
    let mut kinds = kinds(&shape.depths());
    let mut ids = Ids::new(0x6b696d62);
    for round in 0..lookups {
        for (kind, latency) in kinds
            .iter_mut()
            .zip(lookup_round(client, shape, round_ends, &mut ids, round).await?)
        {
            kind.latencies.record(latency);
        }
    }
    Ok(kinds)
}

/// The order of the kinds in round `round`: rotated each round, so that no kind always
/// comes first (after the client's idle time) or last.
pub fn round_order(kinds: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..kinds).map(move |turn| (turn + round) % kinds)
}

/// One lookup of each kind (a fresh id each, drawn in the round's order), checked; returns
/// their latencies by kind.
pub async fn lookup_round(
    client: &Client,
    shape: Shape,
    round_ends: &[u64],
    ids: &mut Ids,
    round: usize,
) -> anyhow::Result<Vec<std::time::Duration>> {
    let depths = shape.depths();
    let mut latencies = vec![std::time::Duration::ZERO; depths.len() + 1];
    for index in round_order(depths.len() + 1, round) {
        let id = ids.next(shape.rows);
        let version = version_of(shape, &depths, index);
        let sql = if index == 0 {
            "SELECT id, body FROM items WHERE id = $1".to_string()
        } else {
            format!(
                "SELECT id, body FROM items AS OF POSITION {} WHERE id = $1",
                round_ends[version]
            )
        };
        let sent = Instant::now();
        let rows = client
            .query("bench", &sql, &[WireValue::Integer(id as i64)])
            .await?;
        latencies[index] = sent.elapsed();
        check_answer(&rows.rows, id, version)?;
    }
    Ok(latencies)
}

/// The answer must be the one row `id` at `version` (a wrong answer fast is no answer).
pub fn check_answer(rows: &[Vec<WireValue>], id: usize, version: usize) -> anyhow::Result<()> {
    let tag = format!("v{version}-");
    match rows {
        [row]
            if matches!(row.as_slice(), [WireValue::Integer(got), WireValue::Text(text)]
            if *got == id as i64 && text.starts_with(&tag)) =>
        {
            Ok(())
        }
        other => anyhow::bail!("lookup of id {id} expected version {version}, got {other:?}"),
    }
}
