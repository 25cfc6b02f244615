//! `append`: durable appends of `EVENT_BYTES`-byte events to one embedded node.
//!
//! - direct: the log API (`PartitionLog::append` + `sync`) in batches of
//!   `LIMIT_BATCH_RECORDS` and one record per sync — the storage engine alone;
//! - QUIC, 1 client sending `LIMIT_BATCH_RECORDS` events per request, one request at a
//!   time;
//! - QUIC, `LIMIT_BATCH_RECORDS` clients (one connection each) sending one event per
//!   request concurrently: the group commit folds them into shared fdatasyncs;
//! - QUIC, SQL `INSERT` of `LIMIT_BATCH_RECORDS` rows per statement.
//!
//! Each phase has at most `LIMIT_BATCH_RECORDS` records in flight, so its ratio is to the
//! `limit` ceiling at that batch size, measured in the same run.

use crate::limit::{Ceiling, LIMIT_BATCH_RECORDS};
use crate::stats::Latencies;
use crate::{EVENT_BYTES, Settings, run_for, summary};
use kimberlite::{EmbeddedServer, NodeOptions};
use kimberlite_client::{Client, ClientConfig, WireEvent};
use kimberlite_log::{
    DataKey, KeyRing, LogConfig, NewRecord, NodeKey, PartitionLog, RecordKind, RecordMeta,
};
use std::sync::Arc;
use std::time::Instant;

/// Concurrent clients in the many-clients phase.
pub const CLIENTS_CONCURRENT: usize = LIMIT_BATCH_RECORDS;
/// Events per request in the batched single-client phase.
pub const REQUEST_EVENTS: usize = LIMIT_BATCH_RECORDS;
/// Rows per INSERT statement.
pub const INSERT_ROWS: usize = LIMIT_BATCH_RECORDS;
/// The aim of issue 6: batched appends at half the machine's ceiling or better.
const AIM_RATIO_TO_LIMIT: f64 = 0.5;

/// One measured phase: a throughput and the latency of each request.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub key: &'static str,
    /// Records per fdatasync the phase allows at most (its ceiling's batch size).
    pub batch: usize,
    pub events_per_second: f64,
    pub latencies: Latencies,
}

/// What the append suite measured over QUIC, for the postgres suite's ratios.
#[derive(Debug, Clone)]
pub struct Appended {
    pub phases: Vec<Phase>,
}

impl Appended {
    pub fn phase(&self, key: &str) -> &Phase {
        self.phases
            .iter()
            .find(|phase| phase.key == key)
            .unwrap_or_else(|| panic!("no append phase {key}"))
    }
}

pub fn run(settings: &Settings, ceiling: &Ceiling) -> anyhow::Result<Appended> {
    let mut phases = vec![direct(settings, LIMIT_BATCH_RECORDS, "direct_batched")?];
    phases.push(direct(settings, 1, "direct_sync_per_record")?);
    let quic = crate::runtime()?.block_on(over_quic(settings))?;
    phases.extend(quic.iter().cloned());

    println!(
        "\nsuite append: durable {EVENT_BYTES}-byte events on one embedded node; ratio = events/s \
         over the limit ceiling at the same records per fdatasync"
    );
    println!(
        "  {:<50} {:>11} {:>9} {:>7} {:>9} {:>9}",
        "phase", "events/s", "ceiling", "ratio", "p50 us", "p99 us"
    );
    let mut ratios = serde_json::Map::new();
    let mut figures = serde_json::Map::new();
    for phase in &mut phases {
        let limit = ceiling.records_per_second(phase.batch);
        let ratio = phase.events_per_second / limit;
        let (p50, p99) = (
            phase.latencies.quantile_us(0.5),
            phase.latencies.quantile_us(0.99),
        );
        println!(
            "  {:<50} {:>11.0} {:>9.0} {:>7.3} {:>9.0} {:>9.0}",
            phase.name, phase.events_per_second, limit, ratio, p50, p99
        );
        ratios.insert(format!("{}_to_limit", phase.key), ratio.into());
        figures.insert(
            format!("{}_events_per_second", phase.key),
            phase.events_per_second.into(),
        );
        figures.insert(format!("{}_p50_us", phase.key), p50.into());
        figures.insert(format!("{}_p99_us", phase.key), p99.into());
    }
    let batched = phases[0].events_per_second / ceiling.records_per_second(LIMIT_BATCH_RECORDS);
    println!(
        "  aim: batched appends ≥ {AIM_RATIO_TO_LIMIT} of the ceiling: direct log API {batched:.2} ({})",
        if batched >= AIM_RATIO_TO_LIMIT {
            "met"
        } else {
            "NOT met"
        }
    );
    figures.insert(
        "ceiling_records_per_second_batch_64".into(),
        ceiling.records_per_second(LIMIT_BATCH_RECORDS).into(),
    );
    figures.insert(
        "ceiling_records_per_second_batch_1".into(),
        ceiling.records_per_second(1).into(),
    );
    summary("append", ratios.into(), figures.into());
    Ok(Appended { phases: quic })
}

/// The benchmark's record at `index` (timestamps strictly increase, as the log requires).
fn record(index: u64) -> NewRecord {
    NewRecord {
        meta: RecordMeta {
            kind: RecordKind::Event,
            event_type: "Deposited".into(),
            op: 0,
            timestamp_ns: 1_700_000_000_000_000_000 + index,
            client_id: 7,
            request: index,
            stream: "accounts".into(),
            principal: "bench".into(),
            reason: String::new(),
        },
        payload: vec![0x42; EVENT_BYTES],
    }
}

/// Records `first..first + count`, built outside any timed region.
pub fn records(first: u64, count: usize) -> Vec<NewRecord> {
    (first..first + count as u64).map(record).collect()
}

fn direct(settings: &Settings, batch: usize, key: &'static str) -> anyhow::Result<Phase> {
    let dir = settings.dir.join(format!("direct-{batch}"));
    std::fs::create_dir_all(&dir)?;
    let node_key = Arc::new(NodeKey::load_or_create(&settings.dir)?);
    let (mut log, _) = PartitionLog::open(
        &dir,
        1,
        KeyRing::new(DataKey::generate(1)),
        node_key,
        LogConfig::default(),
    )?;
    let mut batch_records = records(0, batch);
    let mut next = 0u64;
    let mut latencies = Latencies::default();
    let (batches, elapsed) = run_for(settings.phase(), || {
        // Renumber in place: timestamps and request numbers move on, nothing is allocated.
        for record in &mut batch_records {
            record.meta.timestamp_ns = 1_700_000_000_000_000_000 + next;
            record.meta.request = next;
            next += 1;
        }
        let start = Instant::now();
        log.append(&batch_records)?;
        log.sync()?;
        latencies.record(start.elapsed());
        Ok(())
    })?;
    log.close()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(Phase {
        name: format!("direct log API, {batch} per fdatasync"),
        key,
        batch,
        events_per_second: (batches as usize * batch) as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}

pub fn event() -> WireEvent {
    WireEvent {
        stream: "accounts".into(),
        event_type: "Deposited".into(),
        payload: vec![b'x'; EVENT_BYTES],
    }
}

/// The QUIC phases on a fresh embedded node (also what the postgres suite compares).
pub async fn over_quic(settings: &Settings) -> anyhow::Result<Vec<Phase>> {
    let dir = settings.dir.join("append-node");
    let server = EmbeddedServer::start(NodeOptions::new(&dir), "127.0.0.1:0".parse()?).await?;
    let config = server.client_config().clone();
    let admin = Client::connect(&config, None).await?;
    admin.create_tenant("bench", "benchmark").await?;
    admin
        .sql(
            "bench",
            "CREATE TABLE events (id BIGINT PRIMARY KEY, body TEXT)",
            &[],
            "schema",
        )
        .await?;
    let phase = settings.phase();
    let mut phases = Vec::new();

    // One client, batches of events per request.
    let batch: Vec<WireEvent> = (0..REQUEST_EVENTS).map(|_| event()).collect();
    let mut latencies = Latencies::default();
    let start = Instant::now();
    let mut events = 0usize;
    while start.elapsed() < phase {
        let sent = Instant::now();
        admin.append("bench", batch.clone(), "").await?;
        latencies.record(sent.elapsed());
        events += REQUEST_EVENTS;
    }
    phases.push(Phase {
        name: format!("QUIC, 1 client, {REQUEST_EVENTS} events per request"),
        key: "quic_1_client_batched",
        batch: REQUEST_EVENTS,
        events_per_second: events as f64 / start.elapsed().as_secs_f64(),
        latencies,
    });

    phases.push(many_clients(&config, phase).await?);

    // SQL: multi-row INSERTs of rows about EVENT_BYTES wide.
    let body = "y".repeat(EVENT_BYTES - 16);
    let mut next_id = 0usize;
    let mut latencies = Latencies::default();
    let start = Instant::now();
    while start.elapsed() < phase {
        let values: Vec<String> = (next_id..next_id + INSERT_ROWS)
            .map(|id| format!("({id}, '{body}')"))
            .collect();
        next_id += INSERT_ROWS;
        let sql = format!("INSERT INTO events (id, body) VALUES {}", values.join(", "));
        let sent = Instant::now();
        admin.sql("bench", &sql, &[], "").await?;
        latencies.record(sent.elapsed());
    }
    phases.push(Phase {
        name: format!("QUIC, SQL INSERT of {INSERT_ROWS} rows per statement"),
        key: "quic_sql_insert",
        batch: INSERT_ROWS,
        events_per_second: next_id as f64 / start.elapsed().as_secs_f64(),
        latencies,
    });
    admin.close().await;
    server.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(phases)
}

/// Many clients, one event per request: the group commit at work. Every client connects
/// first; the clock starts when all are connected (handshakes are not appends).
async fn many_clients(config: &ClientConfig, phase: std::time::Duration) -> anyhow::Result<Phase> {
    let mut clients = Vec::new();
    for _ in 0..CLIENTS_CONCURRENT {
        clients.push(Client::connect(config, None).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let event = event();
            while start.elapsed() < phase {
                let sent = Instant::now();
                client.append("bench", vec![event.clone()], "").await?;
                latencies.record(sent.elapsed());
            }
            anyhow::Ok((client, latencies))
        }));
    }
    let mut latencies = Latencies::default();
    let mut finished = Vec::new();
    for task in tasks {
        let (client, client_latencies) = task.await??;
        latencies.extend(client_latencies);
        finished.push(client);
    }
    let elapsed = start.elapsed();
    for client in finished {
        client.close().await;
    }
    Ok(Phase {
        name: format!("QUIC, {CLIENTS_CONCURRENT} clients, 1 event per request"),
        key: "quic_64_clients",
        batch: CLIENTS_CONCURRENT,
        events_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}
