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
//! `limit` ceiling at that batch size. The disk of these machines is shared and its
//! fdatasync latency swings between 0.2 and 8 ms within seconds, so the disk half of the
//! ceiling is measured *paired*: each phase runs in rounds, and every round first runs the
//! `limit` disk probe (write + fdatasync at the phase's batch size) for a slice, then the
//! phase for a slice of the same length. Noise then falls on both sides of the ratio.

use crate::limit::{Ceiling, DiskProbe, LIMIT_BATCH_RECORDS};
use crate::stats::Latencies;
use crate::{EVENT_BYTES, Settings, summary};
use kimberlite::{EmbeddedServer, NodeOptions};
use kimberlite_client::{Client, WireEvent};
use kimberlite_log::{
    DataKey, KeyRing, LogConfig, NewRecord, NodeKey, PartitionLog, RecordKind, RecordMeta,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent clients in the many-clients phase.
pub const CLIENTS_CONCURRENT: usize = LIMIT_BATCH_RECORDS;
/// Events per request in the batched single-client phase.
pub const REQUEST_EVENTS: usize = LIMIT_BATCH_RECORDS;
/// Rows per INSERT statement.
pub const INSERT_ROWS: usize = LIMIT_BATCH_RECORDS;
/// The aim of issue 6: batched appends at half the machine's ceiling or better.
const AIM_RATIO_TO_LIMIT: f64 = 0.5;

/// What one slice of a phase did.
#[derive(Debug, Default, Clone)]
pub struct Slice {
    pub events: usize,
    pub elapsed: Duration,
    /// One sample per request (a request may carry many events).
    pub latencies: Latencies,
}

impl Slice {
    pub fn add(&mut self, other: Slice) {
        self.events += other.events;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// One measured phase: its slices added up, and the disk probe run beside it.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub key: &'static str,
    pub measured: Slice,
    /// Records/s of the `limit` disk probe at `batch`, in the rounds paired with this phase.
    pub disk_records_per_second: f64,
}

impl Phase {
    /// The ceiling of this phase: the limit's CPU rate with the disk rate paired with it.
    pub fn ceiling(&self, ceiling: &Ceiling) -> f64 {
        ceiling.combined(self.disk_records_per_second)
    }
}

/// Runs `phase` in `settings.rounds()` rounds, each a slice of the disk probe at `batch`
/// then a slice of the phase.
fn paired(
    settings: &Settings,
    probe: &mut DiskProbe,
    batch: usize,
    mut phase: impl FnMut(Duration) -> anyhow::Result<Slice>,
) -> anyhow::Result<(Slice, f64)> {
    let mut measured = Slice::default();
    let (mut records, mut probe_elapsed) = (0usize, Duration::ZERO);
    for _ in 0..settings.rounds() {
        let (written, elapsed) = probe.run(batch, settings.slice())?;
        records += written;
        probe_elapsed += elapsed;
        measured.add(phase(settings.slice())?);
    }
    Ok((measured, records as f64 / probe_elapsed.as_secs_f64()))
}

pub fn run(settings: &Settings, ceiling: &Ceiling) -> anyhow::Result<()> {
    let mut probe = DiskProbe::create(settings, "append")?;
    let mut phases = Vec::new();
    for (batch, key) in [
        (LIMIT_BATCH_RECORDS, "direct_batched"),
        (1, "direct_sync_per_record"),
    ] {
        let mut log = DirectLog::open(settings, batch)?;
        let (measured, disk) = paired(settings, &mut probe, batch, |slice| log.run(slice))?;
        log.close()?;
        phases.push(Phase {
            name: format!("direct log API, {batch} per fdatasync"),
            key,
            measured,
            disk_records_per_second: disk,
        });
    }
    let runtime = crate::runtime()?;
    let mut node = runtime.block_on(QuicNode::start(settings, "append-node"))?;
    for shape in QuicShape::ALL {
        let (measured, disk) = paired(settings, &mut probe, LIMIT_BATCH_RECORDS, |slice| {
            runtime.block_on(node.run(shape, slice))
        })?;
        phases.push(Phase {
            name: shape.name(),
            key: shape.key(),
            measured,
            disk_records_per_second: disk,
        });
    }
    runtime.block_on(node.stop())?;
    probe.remove()?;

    println!(
        "\nsuite append: durable {EVENT_BYTES}-byte events on one embedded node; ratio = events/s \
         over the limit ceiling at the same records per fdatasync, disk measured in paired slices"
    );
    println!(
        "  {:<46} {:>10} {:>9} {:>7} {:>9} {:>9}",
        "phase", "events/s", "ceiling", "ratio", "p50 us", "p99 us"
    );
    let mut ratios = serde_json::Map::new();
    let mut figures = serde_json::Map::new();
    for phase in &mut phases {
        let limit = phase.ceiling(ceiling);
        let rate = phase.measured.events_per_second();
        let ratio = rate / limit;
        let (p50, p99) = (
            phase.measured.latencies.quantile_us(0.5),
            phase.measured.latencies.quantile_us(0.99),
        );
        println!(
            "  {:<46} {:>10.0} {:>9.0} {:>7.3} {:>9.0} {:>9.0}",
            phase.name, rate, limit, ratio, p50, p99
        );
        ratios.insert(format!("{}_to_limit", phase.key), ratio.into());
        figures.insert(format!("{}_events_per_second", phase.key), rate.into());
        figures.insert(format!("{}_ceiling_per_second", phase.key), limit.into());
        figures.insert(format!("{}_p50_us", phase.key), p50.into());
        figures.insert(format!("{}_p99_us", phase.key), p99.into());
    }
    println!(
        "  ceiling = 1 / (1 / CPU rate of limit + 1 / disk probe rate in the same rounds); {} rounds of {} ms per side",
        settings.rounds(),
        settings.slice().as_millis()
    );
    for key in ["direct_batched", "quic_1_client_batched"] {
        let phase = phases
            .iter()
            .find(|phase| phase.key == key)
            .expect("measured above");
        let ratio = phase.measured.events_per_second() / phase.ceiling(ceiling);
        println!(
            "  aim: batched appends ≥ {AIM_RATIO_TO_LIMIT} of the ceiling: {} {ratio:.2} ({})",
            phase.name,
            if ratio >= AIM_RATIO_TO_LIMIT {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    figures.insert(
        "cpu_records_per_second".into(),
        ceiling.cpu_records_per_second.into(),
    );
    summary("append", ratios, figures);
    Ok(())
}

/// The benchmark's record at `index` (timestamps strictly increase, as the log requires).
fn record(index: u64) -> NewRecord {
    NewRecord {
        key_id: 1,
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

/// A partition log written directly, `batch` records per sync.
struct DirectLog {
    log: PartitionLog,
    dir: std::path::PathBuf,
    batch: Vec<NewRecord>,
    next: u64,
}

impl DirectLog {
    fn open(settings: &Settings, batch: usize) -> anyhow::Result<DirectLog> {
        let dir = settings.dir.join(format!("direct-{batch}"));
        std::fs::create_dir_all(&dir)?;
        let node_key = Arc::new(NodeKey::load_or_create(&settings.dir)?);
        let (log, _) = PartitionLog::open(
            &dir,
            1,
            KeyRing::new(DataKey::generate(1)),
            node_key,
            LogConfig::default(),
        )?;
        Ok(DirectLog {
            log,
            dir,
            batch: records(0, batch),
            next: 0,
        })
    }

    fn run(&mut self, slice: Duration) -> anyhow::Result<Slice> {
        let mut latencies = Latencies::default();
        let start = Instant::now();
        let mut events = 0;
        while start.elapsed() < slice {
            // Renumber in place: timestamps and request numbers move on, nothing is
            // allocated.
            for record in &mut self.batch {
                record.meta.timestamp_ns = 1_700_000_000_000_000_000 + self.next;
                record.meta.request = self.next;
                self.next += 1;
            }
            let sent = Instant::now();
            self.log.append(&self.batch)?;
            self.log.sync()?;
            latencies.record(sent.elapsed());
            events += self.batch.len();
        }
        Ok(Slice {
            events,
            elapsed: start.elapsed(),
            latencies,
        })
    }

    fn close(self) -> anyhow::Result<()> {
        self.log.close()?;
        std::fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}

pub fn event() -> WireEvent {
    WireEvent {
        subject: None,
        stream: "accounts".into(),
        event_type: "Deposited".into(),
        payload: vec![b'x'; EVENT_BYTES],
    }
}

/// The append shapes over QUIC (also what the postgres suite runs on PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuicShape {
    /// One client, `REQUEST_EVENTS` events per request.
    Batched,
    /// `CLIENTS_CONCURRENT` clients, one event per request each.
    ManyClients,
    /// SQL `INSERT` of `INSERT_ROWS` rows, as SQL text.
    SqlInsert,
}

impl QuicShape {
    pub const ALL: [QuicShape; 3] = [
        QuicShape::Batched,
        QuicShape::ManyClients,
        QuicShape::SqlInsert,
    ];

    pub fn key(self) -> &'static str {
        match self {
            QuicShape::Batched => "quic_1_client_batched",
            QuicShape::ManyClients => "quic_64_clients",
            QuicShape::SqlInsert => "quic_sql_insert",
        }
    }

    pub fn name(self) -> String {
        match self {
            QuicShape::Batched => format!("QUIC, 1 client, {REQUEST_EVENTS} events per request"),
            QuicShape::ManyClients => {
                format!("QUIC, {CLIENTS_CONCURRENT} clients, 1 event per request")
            }
            QuicShape::SqlInsert => format!("QUIC, SQL INSERT of {INSERT_ROWS} rows per statement"),
        }
    }
}

/// An embedded node with a tenant, a table and every client connected (handshakes are not
/// appends), ready to run slices of each shape.
pub struct QuicNode {
    server: EmbeddedServer,
    dir: std::path::PathBuf,
    admin: Client,
    clients: Vec<Arc<Client>>,
    next_id: usize,
}

impl QuicNode {
    pub async fn start(settings: &Settings, name: &str) -> anyhow::Result<QuicNode> {
        let dir = settings.dir.join(name);
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
        let mut clients = Vec::new();
        for _ in 0..CLIENTS_CONCURRENT {
            clients.push(Arc::new(Client::connect(&config, None).await?));
        }
        Ok(QuicNode {
            server,
            dir,
            admin,
            clients,
            next_id: 0,
        })
    }

    /// Runs `shape` for about `slice`.
    pub async fn run(&mut self, shape: QuicShape, slice: Duration) -> anyhow::Result<Slice> {
        match shape {
            QuicShape::Batched => {
                let batch: Vec<WireEvent> = (0..REQUEST_EVENTS).map(|_| event()).collect();
                let mut latencies = Latencies::default();
                let start = Instant::now();
                let mut events = 0usize;
                while start.elapsed() < slice {
                    let sent = Instant::now();
                    self.admin.append("bench", batch.clone(), "").await?;
                    latencies.record(sent.elapsed());
                    events += REQUEST_EVENTS;
                }
                Ok(Slice {
                    events,
                    elapsed: start.elapsed(),
                    latencies,
                })
            }
            QuicShape::ManyClients => {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for client in &self.clients {
                    let client = client.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut latencies = Latencies::default();
                        let event = event();
                        while start.elapsed() < slice {
                            let sent = Instant::now();
                            client.append("bench", vec![event.clone()], "").await?;
                            latencies.record(sent.elapsed());
                        }
                        anyhow::Ok(latencies)
                    }));
                }
                let mut latencies = Latencies::default();
                for task in tasks {
                    latencies.extend(task.await??);
                }
                Ok(Slice {
                    events: latencies.len(),
                    elapsed: start.elapsed(),
                    latencies,
                })
            }
            QuicShape::SqlInsert => {
                // Rows about EVENT_BYTES wide.
                let body = "y".repeat(EVENT_BYTES - 16);
                let mut latencies = Latencies::default();
                let start = Instant::now();
                let mut events = 0;
                while start.elapsed() < slice {
                    let values: Vec<String> = (self.next_id..self.next_id + INSERT_ROWS)
                        .map(|id| format!("({id}, '{body}')"))
                        .collect();
                    self.next_id += INSERT_ROWS;
                    let sql = format!("INSERT INTO events (id, body) VALUES {}", values.join(", "));
                    let sent = Instant::now();
                    self.admin.sql("bench", &sql, &[], "").await?;
                    latencies.record(sent.elapsed());
                    events += INSERT_ROWS;
                }
                Ok(Slice {
                    events,
                    elapsed: start.elapsed(),
                    latencies,
                })
            }
        }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        for client in self.clients {
            if let Ok(client) = Arc::try_unwrap(client) {
                client.close().await;
            }
        }
        self.admin.close().await;
        self.server.stop().await?;
        std::fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}
