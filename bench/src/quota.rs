//! `quota`: does one tenant flooding a node hurt another? Tenant `quiet` runs point
//! lookups from one client and we record their latency, in three kinds of slice that
//! alternate round by round (so this machine's noise falls on all three alike):
//!
//! - `alone`: nothing else runs;
//! - `flood, quota`: tenant `noisy` is flooded by `FLOOD_CLIENTS` clients, each sending
//!   SELECTs and appends back to back, while `noisy` has quotas (`QUOTA_QUERIES_PER_SECOND`,
//!   `QUOTA_APPENDS_PER_SECOND`): the node refuses the excess with `QuotaExceeded`;
//! - `flood, no quota`: the same flood with `noisy`'s quotas removed (the reference: what
//!   the quota buys).
//!
//! The aim (issue 7): the quiet tenant's p99 under the flood with quotas within 2× of its
//! p99 alone. Node, clients and flood share this process and its 2 cores, as tenants share
//! a node.

use crate::stats::Latencies;
use crate::{Settings, summary};
use kimberlite::{EmbeddedServer, NodeOptions};
use kimberlite_client::{Client, ErrorCode, WireEvent, WireValue};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Concurrent flooding clients of tenant `noisy`.
pub const FLOOD_CLIENTS: usize = 8;
/// `noisy`'s quotas in the `flood, quota` slices.
pub const QUOTA_QUERIES_PER_SECOND: u64 = 200;
pub const QUOTA_APPENDS_PER_SECOND: u64 = 200;
/// Rows of the table each tenant reads.
pub const ROWS: i64 = 1_000;
/// Events per flooding append.
pub const FLOOD_EVENTS_PER_APPEND: usize = 4;
/// The aim: the quiet tenant's p99 under a flood with quotas, over its p99 alone.
const AIM_P99_RATIO: f64 = 2.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slice {
    Alone,
    FloodQuota,
    FloodNoQuota,
}

impl Slice {
    const ALL: [Slice; 3] = [Slice::Alone, Slice::FloodQuota, Slice::FloodNoQuota];

    fn name(self) -> &'static str {
        match self {
            Slice::Alone => "alone",
            Slice::FloodQuota => "flood, quota",
            Slice::FloodNoQuota => "flood, no quota",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Slice::Alone => "alone",
            Slice::FloodQuota => "flood_quota",
            Slice::FloodNoQuota => "flood_no_quota",
        }
    }
}

/// What the flood got done in one kind of slice.
#[derive(Default)]
struct Flood {
    accepted: AtomicU64,
    refused: AtomicU64,
}

pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let runtime = crate::runtime()?;
    let rounds = settings.rounds();
    let slice_time = settings.slice();
    let (mut latencies, floods, seconds) = runtime.block_on(async {
        let dir = settings.dir.join("quota-node");
        let server = EmbeddedServer::start(NodeOptions::new(&dir), "127.0.0.1:0".parse()?).await?;
        let admin = Client::connect(server.client_config(), None).await?;
        for tenant in ["quiet", "noisy"] {
            admin.create_tenant(tenant, "quota bench").await?;
            admin
                .sql(
                    tenant,
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT)",
                    &[],
                    "",
                )
                .await?;
            for chunk in (0..ROWS).collect::<Vec<_>>().chunks(500) {
                let values: Vec<String> = chunk
                    .iter()
                    .map(|id| format!("({id}, 'value {id}')"))
                    .collect();
                let sql = format!("INSERT INTO t VALUES {}", values.join(", "));
                admin.sql(tenant, &sql, &[], "").await?;
            }
        }
        let quiet = Client::connect(server.client_config(), None).await?;
        let mut flooders = Vec::with_capacity(FLOOD_CLIENTS);
        for _ in 0..FLOOD_CLIENTS {
            flooders.push(Arc::new(
                Client::connect(server.client_config(), None).await?,
            ));
        }
        let mut latencies: Vec<Latencies> = vec![Latencies::default(); Slice::ALL.len()];
        let floods: Vec<Arc<Flood>> = (0..Slice::ALL.len())
            .map(|_| Arc::new(Flood::default()))
            .collect();
        let mut seconds = vec![0.0f64; Slice::ALL.len()];
        let mut next_id = 0i64;
        for round in 0..rounds {
            // Rotate the order so no kind always follows another.
            for offset in 0..Slice::ALL.len() {
                let index = (round + offset) % Slice::ALL.len();
                let slice = Slice::ALL[index];
                let (stored, appends, queries) = match slice {
                    Slice::FloodQuota => (
                        None,
                        Some(QUOTA_APPENDS_PER_SECOND),
                        Some(QUOTA_QUERIES_PER_SECOND),
                    ),
                    _ => (None, None, None),
                };
                admin
                    .set_quota("noisy", stored, appends, queries, None, "bench")
                    .await?;
                let stop = Arc::new(AtomicBool::new(slice == Slice::Alone));
                let mut tasks = Vec::new();
                if slice != Slice::Alone {
                    for client in &flooders {
                        tasks.push(tokio::spawn(flood(
                            client.clone(),
                            stop.clone(),
                            floods[index].clone(),
                        )));
                    }
                }
                let started = Instant::now();
                while started.elapsed() < slice_time {
                    next_id = (next_id + 7919) % ROWS;
                    let asked = Instant::now();
                    let rows = quiet
                        .query(
                            "quiet",
                            "SELECT v FROM t WHERE id = $1",
                            &[WireValue::Integer(next_id)],
                        )
                        .await?;
                    latencies[index].record(asked.elapsed());
                    anyhow::ensure!(rows.rows.len() == 1, "row {next_id} not found");
                }
                seconds[index] += started.elapsed().as_secs_f64();
                stop.store(true, Ordering::Relaxed);
                for task in tasks {
                    task.await??;
                }
            }
        }
        drop(flooders);
        drop(quiet);
        drop(admin);
        server.stop().await?;
        std::fs::remove_dir_all(&dir)?;
        anyhow::Ok((latencies, floods, seconds))
    })?;

    println!(
        "\nsuite quota: tenant `quiet` point lookups (1 client) while tenant `noisy` is flooded by {FLOOD_CLIENTS} clients (SELECT + append of {FLOOD_EVENTS_PER_APPEND} events, back to back); quotas {QUOTA_QUERIES_PER_SECOND} queries/s, {QUOTA_APPENDS_PER_SECOND} appends/s; {rounds} rounds"
    );
    println!(
        "  {:<18} {:>9} {:>9} {:>9} {:>12} {:>16} {:>16}",
        "slice", "lookups", "p50 us", "p99 us", "p99/alone", "noisy ok/s", "noisy refused/s"
    );
    let alone_p99 = latencies[0].quantile_us(0.99);
    let mut ratios = serde_json::Map::new();
    let mut figures = serde_json::Map::new();
    for (index, slice) in Slice::ALL.iter().enumerate() {
        let (p50, p99) = (
            latencies[index].quantile_us(0.5),
            latencies[index].quantile_us(0.99),
        );
        let ratio = p99 / alone_p99;
        let per_second = |count: &AtomicU64| count.load(Ordering::Relaxed) as f64 / seconds[index];
        let (accepted, refused) = (
            per_second(&floods[index].accepted),
            per_second(&floods[index].refused),
        );
        println!(
            "  {:<18} {:>9} {:>9.0} {:>9.0} {:>12.2} {:>16.0} {:>16.0}",
            slice.name(),
            latencies[index].len(),
            p50,
            p99,
            ratio,
            accepted,
            refused
        );
        if *slice != Slice::Alone {
            ratios.insert(format!("p99_{}_over_alone", slice.key()), ratio.into());
            figures.insert(
                format!("noisy_accepted_per_s_{}", slice.key()),
                accepted.into(),
            );
            figures.insert(
                format!("noisy_refused_per_s_{}", slice.key()),
                refused.into(),
            );
        }
        figures.insert(format!("p50_us_{}", slice.key()), p50.into());
        figures.insert(format!("p99_us_{}", slice.key()), p99.into());
    }
    let with_quota = ratios["p99_flood_quota_over_alone"]
        .as_f64()
        .unwrap_or(f64::NAN);
    println!(
        "  aim: p99 under the flood with quotas within {AIM_P99_RATIO}x of alone: {}",
        if with_quota <= AIM_P99_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );
    summary("quota", ratios, figures);
    Ok(())
}

/// One flooding client: SELECTs and appends to `noisy` until `stop`, counting what the
/// node accepted and what it refused over quota (any other error ends the bench).
async fn flood(
    client: Arc<Client>,
    stop: Arc<AtomicBool>,
    flood: Arc<Flood>,
) -> anyhow::Result<()> {
    let events = || {
        (0..FLOOD_EVENTS_PER_APPEND)
            .map(|n| WireEvent {
                subject: None,
                stream: "flood".into(),
                event_type: "Flooded".into(),
                payload: format!("{{\"n\":{n}}}").into_bytes(),
            })
            .collect()
    };
    let mut id = 0i64;
    while !stop.load(Ordering::Relaxed) {
        id = (id + 1) % ROWS;
        let query = client
            .query(
                "noisy",
                "SELECT v FROM t WHERE id = $1",
                &[WireValue::Integer(id)],
            )
            .await
            .map(drop);
        let append = client.append("noisy", events(), "").await.map(drop);
        for result in [query, append] {
            match result {
                Ok(()) => flood.accepted.fetch_add(1, Ordering::Relaxed),
                Err(error) if error.code() == Some(ErrorCode::QuotaExceeded) => {
                    flood.refused.fetch_add(1, Ordering::Relaxed)
                }
                Err(error) => return Err(error.into()),
            };
        }
    }
    Ok(())
}
