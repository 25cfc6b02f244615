//! `postgres`: the workloads of `append` and `query` on "PostgreSQL plus an audit trigger"
//! (bench/peers/postgres-schema.sql: every write chained with SHA-256 by a pgcrypto trigger,
//! old versions kept in a history table), with full durability (fsync, synchronous_commit).
//!
//! Appends: the same three QUIC shapes as `append` — 1 client with 64 events per request
//! (one multi-row INSERT), 64 clients with one event per request (64 connections), and SQL
//! INSERTs of 64 rows written as literal SQL text — run on both databases in alternating
//! slices (round k: Kimberlite then PostgreSQL, round k+1 the other way round), so the
//! noise of this shared disk falls on both alike. Reads: the same data shape (rows ×
//! versions, loaded with batched INSERT/UPDATE) in both databases, then interleaved point
//! lookups on both — current and AS OF at each depth — by one client each.
//!
//! Ratios are Kimberlite over PostgreSQL: events/s for appends, and PostgreSQL's latency
//! over Kimberlite's for reads, so above 1 means Kimberlite is faster.

use crate::append::{CLIENTS_CONCURRENT, INSERT_ROWS, QuicNode, QuicShape, REQUEST_EVENTS, Slice};
use crate::peers::{Peer, free_ports};
use crate::query::{self, Ids, Kind, LOAD_STATEMENTS_IN_FLIGHT, STATEMENT_ROWS, Shape};
use crate::stats::Latencies;
use crate::{EVENT_BYTES, Settings, summary};
use kimberlite::{EmbeddedServer, NodeOptions};
use kimberlite_client::{Client, WireValue};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows × versions of the point-in-time comparison (loaded into both databases).
const READ_ROWS_FULL: usize = 20_000;
const READ_ROWS_QUICK: usize = 2_000;
const READ_VERSIONS_FULL: usize = 10;
const READ_VERSIONS_QUICK: usize = 4;
/// Lookups of each kind on each database.
const READ_LOOKUPS_FULL: usize = 3_000;
const READ_LOOKUPS_QUICK: usize = 300;
/// The aim of issue 6 for appends.
const AIM_APPEND_RATIO: f64 = 10.0;

const INSERT_EVENTS: &str = "INSERT INTO events (stream, event_type, payload) \
     SELECT 'accounts', 'Deposited', payload FROM unnest($1::bytea[]) AS payload";
const INSERT_EVENT: &str =
    "INSERT INTO events (stream, event_type, payload) VALUES ('accounts', 'Deposited', $1)";
const SELECT_CURRENT: &str = "SELECT id, body FROM items WHERE id = $1";
/// AS OF POSITION in PostgreSQL: the live row if it was written at or before the position,
/// else the history version whose range contains it. Both are primary-key lookups.
const SELECT_AS_OF: &str = "SELECT id, body FROM items WHERE id = $1 AND position <= $2 \
     UNION ALL \
     SELECT id, body FROM items_history WHERE id = $1 AND position <= $2 AND valid_to > $2";

pub fn run(settings: &Settings) -> anyhow::Result<()> {
    if let Err(reason) = Peer::check("postgres.sh") {
        crate::skip("postgres", &reason);
        return Ok(());
    }
    let runtime = crate::runtime()?;
    let port = free_ports(&[0])?;
    let peer = Peer::start("postgres.sh", port)?;
    let result = runtime.block_on(measure(settings, port));
    drop(peer);
    let (appends, reads) = result?;

    println!(
        "\nsuite postgres: Kimberlite vs PostgreSQL with a SHA-256 audit-chain trigger and a history \
         table (fsync=on, synchronous_commit=on)"
    );
    println!(
        "  {:<44} {:>11} {:>11} {:>8} {:>10} {:>10}",
        "append shape (events/s)", "Kimberlite", "PostgreSQL", "ratio", "KB p50 us", "PG p50 us"
    );
    let mut ratios = serde_json::Map::new();
    let mut figures = serde_json::Map::new();
    let mut worst_append = f64::INFINITY;
    for (shape, mut ours, mut theirs) in appends {
        let key = shape.key();
        let ratio = ours.events_per_second() / theirs.events_per_second();
        worst_append = worst_append.min(ratio);
        let (our_p50, their_p50) = (
            ours.latencies.quantile_us(0.5),
            theirs.latencies.quantile_us(0.5),
        );
        println!(
            "  {:<44} {:>11.0} {:>11.0} {:>8.2} {:>10.0} {:>10.0}",
            shape.name().trim_start_matches("QUIC, "),
            ours.events_per_second(),
            theirs.events_per_second(),
            ratio,
            our_p50,
            their_p50
        );
        ratios.insert(format!("{key}_append"), ratio.into());
        figures.insert(
            format!("kimberlite_{key}_events_per_second"),
            ours.events_per_second().into(),
        );
        figures.insert(
            format!("postgres_{key}_events_per_second"),
            theirs.events_per_second().into(),
        );
        figures.insert(format!("kimberlite_{key}_p50_us"), our_p50.into());
        figures.insert(format!("postgres_{key}_p50_us"), their_p50.into());
        figures.insert(
            format!("kimberlite_{key}_p99_us"),
            ours.latencies.quantile_us(0.99).into(),
        );
        figures.insert(
            format!("postgres_{key}_p99_us"),
            theirs.latencies.quantile_us(0.99).into(),
        );
    }
    println!(
        "  aim: appends ≥ {AIM_APPEND_RATIO}× PostgreSQL: worst shape {worst_append:.2}× ({})",
        if worst_append >= AIM_APPEND_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );
    let Reads {
        shape,
        mut kinds,
        mut theirs,
    } = reads;
    println!(
        "  {:<48} {:>12} {:>12} {:>8} {:>10} {:>10}",
        format!(
            "point lookup, {} rows × {} versions",
            shape.rows, shape.versions
        ),
        "KB p50 us",
        "PG p50 us",
        "ratio",
        "KB p99 us",
        "PG p99 us"
    );
    for (ours, theirs) in kinds.iter_mut().zip(theirs.iter_mut()) {
        let (our_p50, their_p50) = (
            ours.latencies.quantile_us(0.5),
            theirs.latencies.quantile_us(0.5),
        );
        let (our_p99, their_p99) = (
            ours.latencies.quantile_us(0.99),
            theirs.latencies.quantile_us(0.99),
        );
        let ratio = their_p50 / our_p50;
        println!(
            "  {:<48} {:>12.0} {:>12.0} {:>8.2} {:>10.0} {:>10.0}",
            ours.name, our_p50, their_p50, ratio, our_p99, their_p99
        );
        ratios.insert(format!("{}_read_p50", ours.key), ratio.into());
        ratios.insert(
            format!("{}_read_p99", ours.key),
            (their_p99 / our_p99).into(),
        );
        figures.insert(format!("kimberlite_{}_p50_us", ours.key), our_p50.into());
        figures.insert(format!("postgres_{}_p50_us", ours.key), their_p50.into());
        figures.insert(format!("kimberlite_{}_p99_us", ours.key), our_p99.into());
        figures.insert(format!("postgres_{}_p99_us", ours.key), their_p99.into());
    }
    println!(
        "  ratio: appends Kimberlite/PostgreSQL events/s; reads PostgreSQL/Kimberlite latency (>1: Kimberlite faster)"
    );
    figures.insert("read_rows".into(), shape.rows.into());
    figures.insert("read_versions".into(), shape.versions.into());
    summary("postgres", ratios, figures);
    Ok(())
}

struct Reads {
    shape: Shape,
    kinds: Vec<Kind>,
    theirs: Vec<Kind>,
}

/// Per append shape: Kimberlite's and PostgreSQL's slices added up.
type Appends = Vec<(QuicShape, Slice, Slice)>;

async fn measure(settings: &Settings, port: u16) -> anyhow::Result<(Appends, Reads)> {
    let mut ours = QuicNode::start(settings, "postgres-append-node").await?;
    let mut theirs = PgAppender::start(port).await?;
    let mut appends = Vec::new();
    for shape in QuicShape::ALL {
        let (mut our_total, mut their_total) = (Slice::default(), Slice::default());
        for round in 0..settings.rounds() {
            // Alternate who goes first, so neither always follows the other's writeback.
            if round % 2 == 0 {
                our_total.add(ours.run(shape, settings.slice()).await?);
                their_total.add(theirs.run(shape, settings.slice()).await?);
            } else {
                their_total.add(theirs.run(shape, settings.slice()).await?);
                our_total.add(ours.run(shape, settings.slice()).await?);
            }
        }
        appends.push((shape, our_total, their_total));
    }
    ours.stop().await?;
    let reads = reads(settings, port).await?;
    Ok((appends, reads))
}

/// The append shapes on PostgreSQL, connections opened and statements prepared up front.
struct PgAppender {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
    many: Vec<Arc<(tokio_postgres::Client, tokio_postgres::Statement)>>,
    next_id: usize,
}

impl PgAppender {
    async fn start(port: u16) -> anyhow::Result<PgAppender> {
        let client = connect(port).await?;
        let insert = client.prepare(INSERT_EVENTS).await?;
        let mut many = Vec::new();
        for _ in 0..CLIENTS_CONCURRENT {
            let client = connect(port).await?;
            let statement = client.prepare(INSERT_EVENT).await?;
            many.push(Arc::new((client, statement)));
        }
        Ok(PgAppender {
            client,
            insert,
            many,
            next_id: 0,
        })
    }

    async fn run(&mut self, shape: QuicShape, slice: Duration) -> anyhow::Result<Slice> {
        let mut latencies = Latencies::default();
        let start = Instant::now();
        let mut events = 0usize;
        match shape {
            // 1 client, 64 events per request: one multi-row INSERT (one transaction, one
            // commit).
            QuicShape::Batched => {
                let payloads: Vec<Vec<u8>> = (0..REQUEST_EVENTS)
                    .map(|_| vec![b'x'; EVENT_BYTES])
                    .collect();
                while start.elapsed() < slice {
                    let sent = Instant::now();
                    self.client.execute(&self.insert, &[&payloads]).await?;
                    latencies.record(sent.elapsed());
                    events += REQUEST_EVENTS;
                }
            }
            QuicShape::ManyClients => {
                let mut tasks = Vec::new();
                for connection in &self.many {
                    let connection = connection.clone();
                    tasks.push(tokio::spawn(async move {
                        let (client, statement) = &*connection;
                        let payload = vec![b'x'; EVENT_BYTES];
                        let mut latencies = Latencies::default();
                        while start.elapsed() < slice {
                            let sent = Instant::now();
                            client.execute(statement, &[&payload]).await?;
                            latencies.record(sent.elapsed());
                        }
                        anyhow::Ok(latencies)
                    }));
                }
                for task in tasks {
                    latencies.extend(task.await??);
                }
                events = latencies.len();
            }
            // SQL text INSERTs of 64 rows, as Kimberlite gets them.
            QuicShape::SqlInsert => {
                let body = "y".repeat(EVENT_BYTES - 16);
                while start.elapsed() < slice {
                    let values: Vec<String> = (self.next_id..self.next_id + INSERT_ROWS)
                        .map(|id| format!("({id}, '{body}')"))
                        .collect();
                    self.next_id += INSERT_ROWS;
                    let sql = format!(
                        "INSERT INTO records (id, body) VALUES {}",
                        values.join(", ")
                    );
                    let sent = Instant::now();
                    self.client.batch_execute(&sql).await?;
                    latencies.record(sent.elapsed());
                    events += INSERT_ROWS;
                }
            }
        }
        Ok(Slice {
            events,
            elapsed: start.elapsed(),
            latencies,
        })
    }
}

async fn connect(port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .map_err(|error| {
        anyhow::anyhow!("cannot connect to the benchmark's PostgreSQL on port {port}: {error}")
    })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("PostgreSQL connection ended: {error}");
        }
    });
    Ok(client)
}

/// Loads the same rows × versions into both databases, then interleaves lookups.
async fn reads(settings: &Settings, port: u16) -> anyhow::Result<Reads> {
    let shape = Shape {
        rows: settings.pick(READ_ROWS_FULL, READ_ROWS_QUICK),
        versions: settings.pick(READ_VERSIONS_FULL, READ_VERSIONS_QUICK),
    };
    let postgres_ends = load_postgres(port, shape).await?;

    let dir = settings.dir.join("postgres-kimberlite-node");
    let server = EmbeddedServer::start(NodeOptions::new(&dir), "127.0.0.1:0".parse()?).await?;
    let ours = Arc::new(Client::connect(server.client_config(), None).await?);
    ours.create_tenant("bench", "benchmark").await?;
    let loaded = query::load_kimberlite(&ours, shape).await?;

    let theirs = connect(port).await?;
    let current = theirs.prepare(SELECT_CURRENT).await?;
    let as_of = theirs.prepare(SELECT_AS_OF).await?;
    let depths = shape.depths();
    // Both databases get the same lookups (the same ids), alternating round by round, so
    // noise falls on both alike.
    let mut kinds = query::kinds(&depths);
    let mut their_kinds = query::kinds(&depths);
    let mut ids = Ids::new(0x706f7374);
    for round in 0..settings.pick(READ_LOOKUPS_FULL, READ_LOOKUPS_QUICK) {
        let mut their_ids = ids.clone();
        let latencies =
            query::lookup_round(&ours, shape, &loaded.round_ends, &mut ids, round).await?;
        for (kind, latency) in kinds.iter_mut().zip(latencies) {
            kind.latencies.record(latency);
        }
        for index in query::round_order(their_kinds.len(), round) {
            let id = their_ids.next(shape.rows);
            let version = query::version_of(shape, &depths, index);
            let sent = Instant::now();
            let rows = if index == 0 {
                theirs.query(&current, &[&(id as i64)]).await?
            } else {
                theirs
                    .query(&as_of, &[&(id as i64), &postgres_ends[version]])
                    .await?
            };
            their_kinds[index].latencies.record(sent.elapsed());
            let rows: Vec<Vec<WireValue>> = rows
                .iter()
                .map(|row| {
                    vec![
                        WireValue::Integer(row.get::<_, i64>(0)),
                        WireValue::Text(row.get::<_, String>(1)),
                    ]
                })
                .collect();
            query::check_answer(&rows, id, version)?;
        }
    }
    drop(ours);
    server.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(Reads {
        shape,
        kinds,
        theirs: their_kinds,
    })
}

/// Writes the versions into PostgreSQL in rounds like `query::load_kimberlite`; returns the
/// chain position at the end of each round.
async fn load_postgres(port: u16, shape: Shape) -> anyhow::Result<Vec<i64>> {
    let bar = query::progress("loading PostgreSQL", shape.rows * shape.versions);
    let mut clients = Vec::new();
    for _ in 0..LOAD_STATEMENTS_IN_FLIGHT {
        let client = connect(port).await?;
        let insert = client
            .prepare("INSERT INTO items (id, body) SELECT id, body FROM unnest($1::bigint[], $2::text[]) AS t(id, body)")
            .await?;
        let update = client
            .prepare("UPDATE items SET body = $1 WHERE id = ANY($2::bigint[])")
            .await?;
        clients.push(Arc::new((client, insert, update)));
    }
    let head = connect(port).await?;
    let mut round_ends = Vec::new();
    for version in 0..shape.versions {
        let chunks: Vec<std::ops::Range<usize>> = (0..shape.rows)
            .step_by(STATEMENT_ROWS)
            .map(|first| first..(first + STATEMENT_ROWS).min(shape.rows))
            .collect();
        // LOAD_STATEMENTS_IN_FLIGHT connections, each taking every n-th chunk.
        let mut tasks = Vec::new();
        for (lane, client) in clients.iter().enumerate() {
            let client = client.clone();
            let mine: Vec<std::ops::Range<usize>> = chunks
                .iter()
                .skip(lane)
                .step_by(LOAD_STATEMENTS_IN_FLIGHT)
                .cloned()
                .collect();
            let bar = bar.clone();
            tasks.push(tokio::spawn(async move {
                let (client, insert, update) = &*client;
                for chunk in mine {
                    let ids: Vec<i64> = chunk.clone().map(|id| id as i64).collect();
                    let written = if version == 0 {
                        let bodies: Vec<String> =
                            chunk.clone().map(|id| query::body(id, 0)).collect();
                        client.execute(insert, &[&ids, &bodies]).await?
                    } else {
                        client
                            .execute(update, &[&query::body(chunk.start, version), &ids])
                            .await?
                    };
                    bar.inc(written);
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let row = head
            .query_one("SELECT position FROM audit_head", &[])
            .await?;
        round_ends.push(row.get::<_, i64>(0));
    }
    bar.finish_and_clear();
    Ok(round_ends)
}
