//! `replicated`: the replication layer, 3 replicas on loopback, next to a 3-member etcd
//! cluster doing puts of the same size at its default durability.
//!
//! **What this measures until the node is wired to VSR:** Kimberlite's consensus driver
//! (`kimberlite_consensus::driver::ReplicaDriver`: `FileStorage` journals with fdatasync,
//! the mutual-TLS QUIC transport between replicas) committing `EVENT_BYTES`-byte commands
//! into a *model* state machine (a SHA-256 chain over the commands), not the kernel, the log
//! or SQL. A 1-replica cluster runs in the same run, so the cost of replication itself is
//! visible. Clients talk to the driver in-process (no client protocol hop); etcd's clients
//! use its gRPC API (`etcdserverpb.KV/Put`) over loopback TCP, sent to the leader as
//! Kimberlite's go to the primary.
//!
//! Shapes: 1 client with one request in flight (latency), and `CLIENTS_CONCURRENT` clients
//! with one request each in flight (throughput; VSR sessions allow one in flight per
//! client).

use crate::append::CLIENTS_CONCURRENT;
use crate::peers::{Peer, free_ports};
use crate::stats::Latencies;
use crate::{EVENT_BYTES, Settings, summary};
use kimberlite_consensus::driver::{DriverConfig, ReplicaDriver, StartMode, SubmitError};
use kimberlite_consensus::transport::{CertificateFingerprint, ReplicaIdentity};
use kimberlite_consensus::{Config, StateMachine};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the replicas may take to elect a primary.
const ELECTION_TIMEOUT_MS: u64 = 30_000;
/// The cluster id of the benchmark's replicas.
const CLUSTER_ID: u128 = 0x6b696d62_62656e63;
/// Members of the etcd cluster (bench/peers/etcd.sh) and its port layout.
const ETCD_MEMBERS: u16 = 3;
const ETCD_PEER_PORT_OFFSET: u16 = 10;

/// The model state machine: a SHA-256 chain over committed commands, like a log's hash
/// chain without the log. Constant-size snapshots, so checkpoints cost the same however
/// long the run.
#[derive(Debug, Default)]
struct Chain {
    commits: u64,
    head: [u8; 32],
}

impl StateMachine for Chain {
    fn commit(
        &mut self,
        op: u64,
        _timestamp_ns: u64,
        _client: u128,
        _request: u64,
        command: &[u8],
    ) -> Vec<u8> {
        let mut hasher = Sha256::new();
        hasher.update(self.head);
        hasher.update(op.to_le_bytes());
        hasher.update(command);
        self.head = hasher.finalize().into();
        self.commits += 1;
        op.to_le_bytes().to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = self.commits.to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.head);
        bytes
    }

    fn restore(&mut self, snapshot: &[u8]) {
        self.commits = u64::from_le_bytes(snapshot[..8].try_into().expect("8 bytes"));
        self.head = snapshot[8..40].try_into().expect("32 bytes");
    }
}

/// One measured shape of one system.
#[derive(Debug)]
struct Measured {
    commits_per_second: f64,
    latencies: Latencies,
}

pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let runtime = crate::runtime()?;
    let mut rows: Vec<(String, String, Measured)> = Vec::new();
    for replicas in [1u8, 3] {
        let cluster = Cluster::start(settings, replicas)?;
        let measured = runtime.block_on(async {
            let primary = cluster.primary().await?;
            let single = kimberlite_clients(&cluster, primary, 1, settings.phase(), 1).await?;
            let many =
                kimberlite_clients(&cluster, primary, CLIENTS_CONCURRENT, settings.phase(), 2)
                    .await?;
            anyhow::Ok((single, many))
        });
        cluster.shutdown();
        let (single, many) = measured?;
        rows.push((
            format!("kimberlite_{replicas}_replica_1_client"),
            format!("Kimberlite VSR, {replicas} replica(s), 1 client"),
            single,
        ));
        rows.push((
            format!("kimberlite_{replicas}_replica_{CLIENTS_CONCURRENT}_clients"),
            format!("Kimberlite VSR, {replicas} replica(s), {CLIENTS_CONCURRENT} clients"),
            many,
        ));
    }
    let port = free_ports(
        &(0..ETCD_MEMBERS)
            .flat_map(|member| [member, member + ETCD_PEER_PORT_OFFSET])
            .collect::<Vec<_>>(),
    )?;
    let peer = Peer::start("etcd.sh", port)?;
    let etcd = runtime.block_on(async {
        let leader = etcd::leader(port, ETCD_MEMBERS).await?;
        let single = etcd::puts(leader, 1, settings.phase()).await?;
        let many = etcd::puts(leader, CLIENTS_CONCURRENT, settings.phase()).await?;
        anyhow::Ok((single, many))
    });
    drop(peer);
    let (single, many) = etcd?;
    rows.push((
        "etcd_3_members_1_client".into(),
        "etcd, 3 members, 1 client".into(),
        single,
    ));
    rows.push((
        format!("etcd_3_members_{CLIENTS_CONCURRENT}_clients"),
        format!("etcd, 3 members, {CLIENTS_CONCURRENT} clients"),
        many,
    ));

    println!(
        "\nsuite replicated: {EVENT_BYTES}-byte commands committed by 3 replicas on loopback. Kimberlite = the VSR \
         replica driver with a MODEL state machine (the node is not wired to VSR yet)"
    );
    println!(
        "  {:<48} {:>11} {:>10} {:>10}",
        "system, shape", "commits/s", "p50 us", "p99 us"
    );
    let mut figures = serde_json::Map::new();
    for (key, name, measured) in &mut rows {
        let (p50, p99) = (
            measured.latencies.quantile_us(0.5),
            measured.latencies.quantile_us(0.99),
        );
        println!(
            "  {:<48} {:>11.0} {:>10.0} {:>10.0}",
            name, measured.commits_per_second, p50, p99
        );
        figures.insert(
            format!("{key}_commits_per_second"),
            measured.commits_per_second.into(),
        );
        figures.insert(format!("{key}_p50_us"), p50.into());
        figures.insert(format!("{key}_p99_us"), p99.into());
    }
    let find = |key: &str| {
        rows.iter()
            .find(|(k, ..)| k == key)
            .map(|(_, _, m)| m)
            .expect("measured")
    };
    let many = format!("{CLIENTS_CONCURRENT}_clients");
    let ours = find(&format!("kimberlite_3_replica_{many}"));
    let theirs = find(&format!("etcd_3_members_{many}"));
    let single_ours = find("kimberlite_3_replica_1_client");
    let single_theirs = find("etcd_3_members_1_client");
    let alone = find(&format!("kimberlite_1_replica_{many}"));
    let p99 = |measured: &Measured| measured.latencies.clone().quantile_us(0.99);
    let ratios = serde_json::json!({
        "kimberlite_over_etcd_throughput": ours.commits_per_second / theirs.commits_per_second,
        // Latency ratios are etcd's over Kimberlite's: above 1, Kimberlite is faster.
        "etcd_over_kimberlite_p99_1_client": p99(single_theirs) / p99(single_ours),
        "etcd_over_kimberlite_p99_many_clients": p99(theirs) / p99(ours),
        "kimberlite_3_over_1_replica_throughput": ours.commits_per_second / alone.commits_per_second,
    });
    println!(
        "  Kimberlite/etcd throughput ({CLIENTS_CONCURRENT} clients): {:.2}; 3 replicas / 1 replica: {:.2}",
        ours.commits_per_second / theirs.commits_per_second,
        ours.commits_per_second / alone.commits_per_second
    );
    summary("replicated", ratios, figures.into());
    Ok(())
}

/// Replicas on loopback in a temporary directory.
struct Cluster {
    drivers: Vec<ReplicaDriver<Chain>>,
    _directory: tempfile::TempDir,
}

impl Cluster {
    fn start(settings: &Settings, replica_count: u8) -> anyhow::Result<Cluster> {
        let directory = tempfile::Builder::new()
            .prefix("replicated-")
            .tempdir_in(&settings.dir)?;
        let identities: Vec<ReplicaIdentity> = (0..replica_count)
            .map(|_| {
                let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
                anyhow::Ok(ReplicaIdentity {
                    certificate_der: generated.cert.der().to_vec(),
                    private_key_der: generated.signing_key.serialize_der(),
                })
            })
            .collect::<Result<_, _>>()?;
        let fingerprints: Vec<CertificateFingerprint> = identities
            .iter()
            .map(ReplicaIdentity::fingerprint)
            .collect();
        let addresses = free_udp_addresses(replica_count as usize)?;
        let mut drivers = Vec::new();
        for replica in 0..replica_count {
            let config = DriverConfig {
                // Production defaults: journal size, checkpoint interval, pipeline depth.
                protocol: Config::new(CLUSTER_ID, replica_count, replica),
                addresses: addresses.clone(),
                identity: identities[replica as usize].clone(),
                fingerprints: fingerprints.clone(),
                data_dir: directory.path().join(format!("replica-{replica}")),
                start: StartMode::Format,
            };
            drivers.push(ReplicaDriver::start(&config, Chain::default())?);
        }
        Ok(Cluster {
            drivers,
            _directory: directory,
        })
    }

    /// Waits for a primary in normal status; returns its index.
    async fn primary(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_millis(ELECTION_TIMEOUT_MS);
        loop {
            let statuses: Vec<_> = self.drivers.iter().map(ReplicaDriver::status).collect();
            if let Some(status) = statuses
                .iter()
                .filter(|status| status.accepting_requests)
                .max_by_key(|status| status.view)
            {
                return Ok(status.replica as usize);
            }
            if Instant::now() > deadline {
                anyhow::bail!("no primary elected within {ELECTION_TIMEOUT_MS} ms: {statuses:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn shutdown(self) {
        for driver in self.drivers {
            if let Err(error) = driver.shutdown() {
                eprintln!("warning: a benchmark replica failed: {error}");
            }
        }
    }
}

fn free_udp_addresses(count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let sockets = (0..count)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sockets
        .iter()
        .map(|socket| socket.local_addr())
        .collect::<Result<_, _>>()?)
}

/// `clients` clients (ids distinct per `generation`) each submitting commands one at a time
/// to the primary for `phase`.
async fn kimberlite_clients(
    cluster: &Cluster,
    primary: usize,
    clients: usize,
    phase: Duration,
    generation: u128,
) -> anyhow::Result<Measured> {
    let driver = &cluster.drivers[primary];
    let ids: Vec<u128> = (1..=clients as u128)
        .map(|client| generation << 64 | client)
        .collect();
    for &client in &ids {
        driver
            .register(client)
            .await
            .map_err(|error| anyhow::anyhow!("registering client {client:x}: {error}"))?;
    }
    let command = vec![0x42u8; EVENT_BYTES];
    let start = Instant::now();
    let submissions = ids.iter().map(|&client| {
        let command = command.clone();
        async move {
            let mut latencies = Latencies::default();
            let mut request = 1;
            while start.elapsed() < phase {
                let sent = Instant::now();
                match driver.submit(client, request, command.clone()).await {
                    Ok(_) => latencies.record(sent.elapsed()),
                    Err(error @ (SubmitError::NotPrimary { .. } | SubmitError::OutcomeUnknown { .. })) => {
                        anyhow::bail!("a view change happened during the benchmark (no faults were injected): {error}")
                    }
                    Err(error) => anyhow::bail!("client {client:x} request {request}: {error}"),
                }
                request += 1;
            }
            anyhow::Ok(latencies)
        }
    });
    let mut latencies = Latencies::default();
    for result in futures_join_all(submissions).await {
        latencies.extend(result?);
    }
    Ok(Measured {
        commits_per_second: latencies.len() as f64 / start.elapsed().as_secs_f64(),
        latencies,
    })
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (index, future) in set.iter_mut().enumerate() {
            if outputs[index].is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(output) => outputs[index] = Some(output),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}

/// etcd's gRPC API, the two calls the suite needs, with messages declared by hand (field
/// numbers from etcd's api/etcdserverpb/rpc.proto; unknown fields are skipped on decode).
mod etcd {
    use super::Measured;
    use crate::EVENT_BYTES;
    use crate::stats::Latencies;
    use std::time::{Duration, Instant};
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }

    async fn channel(port: u16) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await
            .map_err(|error| {
                anyhow::anyhow!("cannot connect to etcd on 127.0.0.1:{port}: {error}")
            })?)
    }

    async fn unary<Q, A>(channel: Channel, path: &'static str, request: Q) -> anyhow::Result<A>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|error| anyhow::anyhow!("etcd is not ready: {error}"))?;
        let codec = tonic_prost::ProstCodec::<Q, A>::default();
        let response = grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map_err(|status| anyhow::anyhow!("etcd {path}: {status}"))?;
        Ok(response.into_inner())
    }

    /// The client port of the current leader.
    pub async fn leader(base: u16, members: u16) -> anyhow::Result<u16> {
        for port in base..base + members {
            let status: StatusResponse = unary(
                channel(port).await?,
                "/etcdserverpb.Maintenance/Status",
                StatusRequest {},
            )
            .await?;
            if status
                .header
                .is_some_and(|header| header.member_id == status.leader)
            {
                return Ok(port);
            }
        }
        anyhow::bail!(
            "no etcd member on ports {base}..{} says it is the leader",
            base + members
        )
    }

    /// `clients` clients, each with its own connection and one put in flight, for `phase`.
    pub async fn puts(port: u16, clients: usize, phase: Duration) -> anyhow::Result<Measured> {
        let mut channels = Vec::new();
        for _ in 0..clients {
            channels.push(channel(port).await?);
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (client, channel) in channels.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut grpc = tonic::client::Grpc::new(channel);
                let value = vec![0x42u8; EVENT_BYTES];
                let mut latencies = Latencies::default();
                let mut request = 0u64;
                while start.elapsed() < phase {
                    let put = PutRequest {
                        key: format!("bench/{client}/{request}").into_bytes(),
                        value: value.clone(),
                    };
                    let sent = Instant::now();
                    grpc.ready()
                        .await
                        .map_err(|error| anyhow::anyhow!("etcd is not ready: {error}"))?;
                    let codec = tonic_prost::ProstCodec::<PutRequest, PutResponse>::default();
                    grpc.unary(
                        tonic::Request::new(put),
                        PathAndQuery::from_static("/etcdserverpb.KV/Put"),
                        codec,
                    )
                    .await
                    .map_err(|status| anyhow::anyhow!("etcd put: {status}"))?;
                    latencies.record(sent.elapsed());
                    request += 1;
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies = Latencies::default();
        for task in tasks {
            latencies.extend(task.await??);
        }
        Ok(Measured {
            commits_per_second: latencies.len() as f64 / start.elapsed().as_secs_f64(),
            latencies,
        })
    }
}
