//! `kimberlite start --replica`, `kimberlite cluster init|up|status`.

use crate::cli::{ClusterCommand, Connection, wait_for_shutdown_signal};
use crate::cluster::{self, ClusterFile, ReplicaOptions, ReplicaServer};
use anyhow::{Context, bail};
use kimberlite_client::{Client, ClientConfig};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `cluster up` waits this long for the cluster to elect a primary and serve.
pub const CLUSTER_UP_WAIT_MS: u64 = 60_000;
/// How often `cluster up` looks again while waiting.
const CLUSTER_UP_POLL_MS: u64 = 250;
/// After Ctrl-C, replicas get this long to stop cleanly before they are killed.
const CLUSTER_STOP_WAIT_MS: u64 = 20_000;

/// Runs one replica until Ctrl-C / SIGTERM.
pub async fn start_replica(options: ReplicaOptions) -> anyhow::Result<()> {
    let data_dir = options.data_dir.clone();
    let server = ReplicaServer::start(options).await?;
    println!(
        "Kimberlite replica {} listening for clients on {} (QUIC)\n  data dir: {}",
        server.replica(),
        server.client_address(),
        data_dir.display()
    );
    wait_for_shutdown_signal().await?;
    println!("shutting down: stopping the replica, syncing its logs …");
    server.stop().await?;
    println!("stopped cleanly");
    Ok(())
}

pub async fn run(connection: &Connection, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Init(init) => {
            let config = cluster::init(&init.options())?;
            println!(
                "created a cluster of {} replicas in {}\n  client config: {} (mode 0600: it holds the admin token)\n  start each with `kimberlite start --replica I --data-dir {}/replica-I`, or all with `kimberlite cluster up --data-dir {}`",
                config.replicas.len(),
                init.data_dir.display(),
                cluster::client_config_path(&init.data_dir).display(),
                init.data_dir.display(),
                init.data_dir.display(),
            );
            Ok(())
        }
        ClusterCommand::Up(init) => up(&init).await,
        ClusterCommand::Status => {
            let config = ClientConfig::load(&connection.config_path())?;
            print_status(&config, connection.token.clone()).await
        }
    }
}

/// Each replica's own answer about where it stands, in the config's order.
async fn replica_statuses(
    config: &ClientConfig,
    token: Option<String>,
) -> Vec<anyhow::Result<kimberlite_client::ReplicaStatus>> {
    let mut statuses = Vec::new();
    for endpoint in config.endpoints() {
        let single = ClientConfig {
            address: endpoint.address.clone(),
            certificate_sha256: endpoint.certificate_sha256.clone(),
            replicas: Vec::new(),
            ..config.clone()
        };
        statuses.push(match Client::connect(&single, token.clone()).await {
            Ok(client) => client.replica_status().await.map_err(anyhow::Error::from),
            Err(error) => Err(error.into()),
        });
    }
    statuses
}

async fn print_status(config: &ClientConfig, token: Option<String>) -> anyhow::Result<()> {
    println!(
        "{:>7}  {:<24}  {:<12}  {:>6}  {:>7}  {:>10}  {:>10}",
        "replica", "address", "status", "view", "primary", "op", "committed"
    );
    let statuses = replica_statuses(config, token).await;
    for (index, (endpoint, status)) in config.endpoints().iter().zip(statuses).enumerate() {
        match status {
            Ok(status) => println!(
                "{:>7}  {:<24}  {:<12}  {:>6}  {:>7}  {:>10}  {:>10}",
                status.replica,
                endpoint.address,
                if status.accepting_requests {
                    "primary".to_string()
                } else {
                    status.status
                },
                status.view,
                status.primary,
                status.op,
                status.commit
            ),
            Err(error) => println!("{index:>7}  {:<24}  down: {error:#}", endpoint.address),
        }
    }
    Ok(())
}

/// `cluster up`: init if needed, one `start --replica` process per replica, wait until the
/// cluster serves, stop them all on Ctrl-C.
async fn up(init: &crate::cli::ClusterInit) -> anyhow::Result<()> {
    let base = &init.data_dir;
    let client_path = cluster::client_config_path(base);
    if !client_path.exists() {
        cluster::init(&init.options())?;
        println!(
            "created a cluster of {} replicas in {}",
            init.replicas,
            base.display()
        );
    }
    let config = ClientConfig::load(&client_path)?;
    let count = config.endpoints().len() as u8;
    let executable = std::env::current_exe().context("cannot find this executable")?;
    let mut children = Vec::new();
    for replica in 0..count {
        let dir = cluster::replica_dir(base, replica);
        ClusterFile::load(&dir)?;
        let log_path = dir.join("replica.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let child = tokio::process::Command::new(&executable)
            .arg("start")
            .arg("--replica")
            .arg(replica.to_string())
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start replica {replica}"))?;
        children.push(child);
    }
    println!("started {count} replica processes; waiting for a primary …");
    let served = wait_until_serving(&config, &mut children).await;
    if let Err(error) = served {
        stop_children(&mut children).await;
        return Err(error);
    }
    println!(
        "Kimberlite cluster of {count} replicas is serving\n  client config: {} (clients find the primary and follow it)\n  replica logs: {}/replica-I/replica.log\n  press Ctrl-C to stop every replica",
        client_path.display(),
        base.display()
    );
    print_status(&config, None).await?;
    wait_for_shutdown_signal().await?;
    println!("stopping the replicas …");
    stop_children(&mut children).await;
    println!("stopped");
    Ok(())
}

async fn wait_until_serving(
    config: &ClientConfig,
    children: &mut [tokio::process::Child],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(CLUSTER_UP_WAIT_MS);
    let mut last_error = String::from("no attempt yet");
    while Instant::now() < deadline {
        for (replica, child) in children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                bail!("replica {replica} exited ({status}) while starting: see its replica.log");
            }
        }
        // Serving: the primary answers, and every replica has applied the admin token (so
        // it answers too).
        match Client::connect(config, None).await {
            Ok(client) => match client.list_tenants().await {
                Ok(_) => {
                    let statuses = replica_statuses(config, None).await;
                    match statuses.into_iter().find_map(Result::err) {
                        None => return Ok(()),
                        Some(error) => last_error = format!("{error:#}"),
                    }
                }
                Err(error) => last_error = error.to_string(),
            },
            Err(error) => last_error = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(CLUSTER_UP_POLL_MS)).await;
    }
    bail!("the cluster did not serve within {CLUSTER_UP_WAIT_MS} ms: {last_error}")
}

/// SIGTERM to each replica (a clean stop), then a kill for any still running after
/// [`CLUSTER_STOP_WAIT_MS`].
async fn stop_children(children: &mut [tokio::process::Child]) {
    for child in children.iter() {
        if let Some(pid) = child.id() {
            // No libc binding for kill(2) here: the `kill` utility is everywhere this runs.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    for child in children.iter_mut() {
        let waited =
            tokio::time::timeout(Duration::from_millis(CLUSTER_STOP_WAIT_MS), child.wait()).await;
        if waited.is_err() {
            let _ = child.kill().await;
        }
    }
}
