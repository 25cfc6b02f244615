//! `replicated`: the replication layer, 3 replicas on loopback, next to a 3-member etcd
//! cluster doing puts of the same size at its default durability.
//!
//! Kimberlite: the consensus driver (`kimberlite_consensus::driver::ReplicaDriver`:
//! `FileStorage` journals with fdatasync, the mutual-TLS QUIC transport between replicas)
//! with the node's replicated state machine, `kimberlite::replicated::KernelStateMachine`
//! (the kernel, the encrypted hash-chained tenant logs and the view store of every replica),
//! committing kernel `Append` commands of one `EVENT_BYTES`-byte event. The host's client
//! protocol is not wired to VSR yet, so clients submit encoded commands to the driver
//! in-process (no QUIC hop from the client); etcd's clients use its gRPC API
//! (`etcdserverpb.KV/Put`) over loopback TCP, sent to the leader as Kimberlite's go to the
//! primary. A 1-replica cluster runs in the same run, so the cost of replication itself is
//! visible.
//!
//! Shapes: 1 client with one request in flight (latency), and `CLIENTS_CONCURRENT` clients
//! with one request each in flight (throughput; VSR sessions allow one in flight per
//! client).

use crate::append::CLIENTS_CONCURRENT;
use crate::peers::{Peer, free_ports};
use crate::stats::Latencies;
use crate::{EVENT_BYTES, Settings, summary};
use kimberlite::replicated::{
    ClusterKeys, ClusterSecret, CommitReply, KernelStateMachine, ReplicatedOptions, ReplyOutcome,
    encode_command,
};
use kimberlite_consensus::Config;
use kimberlite_consensus::driver::{DriverConfig, ReplicaDriver, StartMode, SubmitError};
use kimberlite_consensus::transport::{CertificateFingerprint, ReplicaIdentity};
use kimberlite_kernel::{AppendEvent, Command, CommandBody, SYSTEM_TENANT, TenantId};
use kimberlite_log::LogConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long the replicas may take to elect a primary.
const ELECTION_TIMEOUT_MS: u64 = 30_000;
/// The cluster id of the benchmark's replicas.
const CLUSTER_ID: u128 = 0x6b696d62_62656e63;
/// The secret every replica derives the tenants' data keys from (a benchmark's, not a
/// secret).
const CLUSTER_SECRET: [u8; 32] = [0x6b; 32];
/// How long one request may take across view changes before the suite gives up.
const FAILOVER_MS_MAX: u64 = 30_000;
/// Pause before resubmitting to a replica that is not (yet) the primary.
const FAILOVER_RETRY_MS: u64 = 10;
/// Members of the etcd cluster (bench/peers/etcd.sh) and its port layout.
const ETCD_MEMBERS: u16 = 3;
const ETCD_PEER_PORT_OFFSET: u16 = 10;

/// One measured shape of one system, slices added up.
#[derive(Debug, Default)]
struct Measured {
    elapsed: Duration,
    latencies: Latencies,
    /// View changes during the phase (Kimberlite only).
    view_changes: u64,
}

impl Measured {
    fn add(&mut self, other: Measured) {
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.view_changes += other.view_changes;
    }

    fn commits_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// The systems of the suite, all running at once; each round gives each a slice in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Kimberlite1,
    Kimberlite3,
    Etcd,
}

impl System {
    fn key(self) -> &'static str {
        match self {
            System::Kimberlite1 => "kimberlite_1_replica",
            System::Kimberlite3 => "kimberlite_3_replica",
            System::Etcd => "etcd_3_members",
        }
    }

    fn name(self) -> &'static str {
        match self {
            System::Kimberlite1 => "Kimberlite VSR, 1 replica",
            System::Kimberlite3 => "Kimberlite VSR, 3 replicas",
            System::Etcd => "etcd, 3 members",
        }
    }
}

pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let etcd_missing = Peer::check("etcd.sh").err();
    let runtime = crate::runtime()?;
    let single = Cluster::start(settings, 1)?;
    let triple = Cluster::start(settings, 3)?;
    let peer_port = match etcd_missing {
        None => {
            let port = free_ports(
                &(0..ETCD_MEMBERS)
                    .flat_map(|member| [member, member + ETCD_PEER_PORT_OFFSET])
                    .collect::<Vec<_>>(),
            )?;
            Some((Peer::start("etcd.sh", port)?, port))
        }
        Some(_) => None,
    };
    let measured = runtime.block_on(measure(
        settings,
        [&single, &triple],
        peer_port.as_ref().map(|(_, port)| *port),
    ));
    drop(peer_port);
    single.shutdown();
    triple.shutdown();
    let mut rows = measured?;

    println!(
        "\nsuite replicated: {EVENT_BYTES}-byte commands committed on loopback, all systems up at once, \
         alternating slices. Kimberlite = the VSR replica driver with the node's kernel state \
         machine, commands submitted in-process"
    );
    if let Some(reason) = &etcd_missing {
        println!("  etcd: skipped: {reason}");
    }
    println!(
        "  {:<48} {:>11} {:>10} {:>10} {:>8}",
        "system, shape", "commits/s", "p50 us", "p99 us", "views+"
    );
    let mut figures = serde_json::Map::new();
    for (system, clients, measured) in &mut rows {
        let key = format!(
            "{}_{clients}_client{}",
            system.key(),
            if *clients == 1 { "" } else { "s" }
        );
        let (p50, p99) = (
            measured.latencies.quantile_us(0.5),
            measured.latencies.quantile_us(0.99),
        );
        println!(
            "  {:<48} {:>11.0} {:>10.0} {:>10.0} {:>8}",
            format!("{}, {clients} client(s)", system.name()),
            measured.commits_per_second(),
            p50,
            p99,
            measured.view_changes
        );
        if *system != System::Etcd {
            figures.insert(format!("{key}_view_changes"), measured.view_changes.into());
        }
        figures.insert(
            format!("{key}_commits_per_second"),
            measured.commits_per_second().into(),
        );
        figures.insert(format!("{key}_p50_us"), p50.into());
        figures.insert(format!("{key}_p99_us"), p99.into());
    }
    println!(
        "  views+ = view changes during the phase; a request in flight then was resubmitted to the new primary"
    );
    let find = |system: System, clients: usize| {
        rows.iter()
            .find(|(s, c, _)| *s == system && *c == clients)
            .map(|(_, _, measured)| measured)
    };
    let many = CLIENTS_CONCURRENT;
    let ours = find(System::Kimberlite3, many).expect("measured");
    let alone = find(System::Kimberlite1, many).expect("measured");
    let mut ratios = serde_json::Map::new();
    ratios.insert(
        "kimberlite_3_over_1_replica_throughput".into(),
        (ours.commits_per_second() / alone.commits_per_second()).into(),
    );
    let mut line = format!(
        "  3 replicas / 1 replica throughput ({many} clients): {:.2}",
        ours.commits_per_second() / alone.commits_per_second()
    );
    if let (Some(theirs), Some(single_theirs)) = (find(System::Etcd, many), find(System::Etcd, 1)) {
        let single_ours = find(System::Kimberlite3, 1).expect("measured");
        let p99 = |measured: &Measured| measured.latencies.clone().quantile_us(0.99);
        let throughput = ours.commits_per_second() / theirs.commits_per_second();
        ratios.insert("kimberlite_over_etcd_throughput".into(), throughput.into());
        ratios.insert(
            "kimberlite_over_etcd_throughput_1_client".into(),
            (single_ours.commits_per_second() / single_theirs.commits_per_second()).into(),
        );
        // Latency ratios are etcd's over Kimberlite's: above 1, Kimberlite is faster.
        ratios.insert(
            "etcd_over_kimberlite_p99_1_client".into(),
            (p99(single_theirs) / p99(single_ours)).into(),
        );
        ratios.insert(
            "etcd_over_kimberlite_p99_many_clients".into(),
            (p99(theirs) / p99(ours)).into(),
        );
        line = format!(
            "  Kimberlite/etcd throughput ({many} clients): {throughput:.2};{}",
            &line[1..]
        );
    }
    println!("{line}");
    summary("replicated", ratios, figures);
    Ok(())
}

/// Both shapes on every system, in rounds of one slice per system (the order rotates).
async fn measure(
    settings: &Settings,
    clusters: [&Cluster; 2],
    etcd_port: Option<u16>,
) -> anyhow::Result<Vec<(System, usize, Measured)>> {
    let mut systems = vec![System::Kimberlite1, System::Kimberlite3];
    let leader = match etcd_port {
        Some(port) => {
            systems.push(System::Etcd);
            Some(etcd::leader(port, ETCD_MEMBERS).await?)
        }
        None => None,
    };
    let mut sessions = Vec::new();
    for cluster in clusters {
        sessions.push(Sessions::open(cluster, CLIENTS_CONCURRENT).await?);
    }
    let mut rows = Vec::new();
    for clients in [1, CLIENTS_CONCURRENT] {
        let mut totals: Vec<Measured> = systems.iter().map(|_| Measured::default()).collect();
        for round in 0..settings.rounds() {
            for turn in 0..systems.len() {
                let index = (round + turn) % systems.len();
                let slice = settings.slice();
                let measured = match systems[index] {
                    System::Kimberlite1 | System::Kimberlite3 => {
                        sessions[index].run(clients, slice).await?
                    }
                    System::Etcd => etcd::puts(leader.expect("etcd is up"), clients, slice).await?,
                };
                totals[index].add(measured);
            }
        }
        for (system, measured) in systems.iter().zip(totals) {
            rows.push((*system, clients, measured));
        }
    }
    Ok(rows)
}

/// Registered client sessions of one cluster, with the next request number of each.
struct Sessions<'a> {
    cluster: &'a Cluster,
    primary: AtomicUsize,
    clients: Vec<(u128, u64)>,
    /// The encoded kernel command every request submits: append one event to the tenant.
    command: Vec<u8>,
}

impl<'a> Sessions<'a> {
    /// Registers `clients` sessions, creates the benchmark's tenant and checks that one
    /// append commits as an append.
    async fn open(cluster: &'a Cluster, clients: usize) -> anyhow::Result<Sessions<'a>> {
        let primary = AtomicUsize::new(cluster.primary().await?);
        let mut registered = Vec::new();
        for client in 1..=clients as u128 {
            submit_following_primary(cluster, &primary, client, 0, None).await?;
            registered.push((client, 1));
        }
        let create = encode_command(&command(
            SYSTEM_TENANT,
            CommandBody::CreateTenant {
                name: "bench".into(),
                region: None,
            },
        ));
        let reply = submit_following_primary(cluster, &primary, 1, 1, Some(&create)).await?;
        let tenant: TenantId = match CommitReply::decode(&reply)? {
            CommitReply::Written(written) => match written.outcome {
                ReplyOutcome::TenantCreated { tenant, .. } => tenant,
                other => anyhow::bail!("creating the tenant answered {other:?}"),
            },
            CommitReply::Refused(refusal) => {
                anyhow::bail!("creating the tenant was refused: {}", refusal.message)
            }
        };
        let append = encode_command(&command(
            tenant,
            CommandBody::Append {
                events: vec![AppendEvent {
                    subject: None,
                    stream: "accounts".into(),
                    event_type: "Deposited".into(),
                    payload: vec![0x42; EVENT_BYTES],
                }],
            },
        ));
        let reply = submit_following_primary(cluster, &primary, 1, 2, Some(&append)).await?;
        match CommitReply::decode(&reply)? {
            CommitReply::Written(written)
                if written.outcome == (ReplyOutcome::Appended { count: 1 }) => {}
            other => anyhow::bail!("a benchmark append answered {other:?}"),
        }
        registered[0].1 = 3;
        Ok(Sessions {
            cluster,
            primary,
            clients: registered,
            command: append,
        })
    }

    /// The first `clients` sessions each submit commands one at a time for `slice`. A view
    /// change (the disk of this VM can stall past the protocol's timeouts) is handled as a
    /// real client handles it: the same request goes to the new primary, its latency
    /// includes the failover, and the view changes are counted.
    async fn run(&mut self, clients: usize, slice: Duration) -> anyhow::Result<Measured> {
        let view_before = self.cluster.view();
        let command = &self.command;
        let start = Instant::now();
        let (cluster, primary) = (self.cluster, &self.primary);
        let submissions = self.clients[..clients]
            .iter_mut()
            .map(|(client, request)| async move {
                let mut latencies = Latencies::default();
                while start.elapsed() < slice {
                    let sent = Instant::now();
                    submit_following_primary(cluster, primary, *client, *request, Some(command))
                        .await?;
                    latencies.record(sent.elapsed());
                    *request += 1;
                }
                anyhow::Ok(latencies)
            });
        let mut latencies = Latencies::default();
        for result in futures_join_all(submissions).await {
            latencies.extend(result?);
        }
        Ok(Measured {
            elapsed: start.elapsed(),
            latencies,
            view_changes: self.cluster.view() - view_before,
        })
    }
}

/// A kernel command as a client would submit it (the committed op supplies client,
/// request and timestamp).
fn command(tenant: TenantId, body: CommandBody) -> Command {
    Command {
        tenant,
        client_id: 0,
        request: 0,
        timestamp_ns: 0,
        principal: "bench".into(),
        reason: String::new(),
        body,
    }
}

/// Replicas on loopback in a temporary directory.
struct Cluster {
    drivers: Vec<ReplicaDriver<KernelStateMachine>>,
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
                data_dir: directory.path().join(format!("replica-{replica}/vsr")),
                start: StartMode::Format,
            };
            let machine = KernelStateMachine::open(ReplicatedOptions {
                node_key_dir: None,
                data_dir: directory.path().join(format!("replica-{replica}/node")),
                log: LogConfig::default(),
                keys: ClusterKeys::new(CLUSTER_ID, ClusterSecret::new(CLUSTER_SECRET)),
            })?;
            drivers.push(ReplicaDriver::start(&config, machine)?);
        }
        Ok(Cluster {
            drivers,
            _directory: directory,
        })
    }

    /// The highest view any replica is in.
    fn view(&self) -> u64 {
        self.drivers
            .iter()
            .map(|driver| driver.status().view)
            .max()
            .unwrap_or(0)
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
            match driver.shutdown() {
                Ok(machine) => {
                    if let Err(error) = machine.close() {
                        eprintln!("warning: closing a benchmark replica's state: {error:#}");
                    }
                }
                Err(error) => eprintln!("warning: a benchmark replica failed: {error}"),
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

/// Submits request `request` of `client` (0 with no command: the registration) to the
/// primary `primary` believes in, and follows the cluster to its new primary until the
/// request is answered (at most `FAILOVER_MS_MAX`).
async fn submit_following_primary(
    cluster: &Cluster,
    primary: &AtomicUsize,
    client: u128,
    request: u64,
    command: Option<&Vec<u8>>,
) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_millis(FAILOVER_MS_MAX);
    loop {
        let target = primary.load(Ordering::Relaxed);
        let driver = &cluster.drivers[target];
        let result = match command {
            Some(command) => driver
                .submit(client, request, command.clone())
                .await
                .map(|reply| reply.body),
            None => driver.register(client).await.map(|_| Vec::new()),
        };
        match result {
            Ok(body) => return Ok(body),
            // Not (or no longer) the primary: go to the one it names, which may still be
            // finishing the view change (then it answers NotPrimary too, and we wait).
            Err(
                SubmitError::NotPrimary { primary: next, .. }
                | SubmitError::OutcomeUnknown { primary: next, .. },
            ) => {
                primary.store(next as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(FAILOVER_RETRY_MS)).await;
            }
            Err(SubmitError::TimedOut { .. } | SubmitError::Busy { .. }) => {
                tokio::time::sleep(Duration::from_millis(FAILOVER_RETRY_MS)).await;
            }
            Err(error) => anyhow::bail!("client {client:x} request {request}: {error}"),
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "client {client:x} request {request}: no primary answered within {FAILOVER_MS_MAX} ms: {:?}",
                cluster
                    .drivers
                    .iter()
                    .map(ReplicaDriver::status)
                    .collect::<Vec<_>>()
            );
        }
    }
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
        Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await
            .map_err(|error| anyhow::anyhow!("cannot connect to etcd on 127.0.0.1:{port}: {error}"))
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
            elapsed: start.elapsed(),
            latencies,
            view_changes: 0,
        })
    }
}
