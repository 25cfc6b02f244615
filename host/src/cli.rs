//! The `kimberlite` command line.

use crate::embedded::EmbeddedServer;
use crate::node::NodeOptions;
use crate::render::{self, Format};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kimberlite_client::{AsOf, Client, ClientConfig, SqlOptions, SqlOutcome, WireEvent, WireValue};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where `start` keeps its data and where clients look for `client.toml` by default.
pub const DATA_DIR_DEFAULT: &str = "./data";

/// Where `start` listens by default.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7878";

/// Records `log read` asks for when no --limit is given.
pub const LOG_READ_LIMIT_DEFAULT: u32 = 100;

/// How often `log tail` asks for new records.
pub const LOG_TAIL_POLL_MS: u64 = 500;

/// Events per request when `append -` streams JSON lines from stdin.
pub const APPEND_BATCH_EVENTS: usize = 1_000;

#[derive(Debug, Parser)]
#[command(
    name = "kimberlite",
    version,
    about = "Kimberlite: a compliance-first database. All data is an immutable, hash-chained, \
             encrypted log; all state is derived from it.",
    after_help = "Start a node with `kimberlite start`, or see everything at once with `kimberlite demo`.\n\
                  Client commands find the node from --config FILE, else $KIMBERLITE_CONFIG, else ./data/client.toml,\n\
                  and use --token / $KIMBERLITE_TOKEN, else the admin token of that config."
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Connection {
    /// client.toml of the node to talk to.
    #[arg(long, env = "KIMBERLITE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// API token (default: the admin token in the config).
    #[arg(long, env = "KIMBERLITE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an embedded single node, or with --replica one replica of a cluster (clean
    /// shutdown on Ctrl-C / SIGTERM).
    Start {
        #[arg(long, default_value = DATA_DIR_DEFAULT)]
        data_dir: PathBuf,
        #[arg(long, default_value = LISTEN_DEFAULT)]
        listen: SocketAddr,
        /// Run replica I of the cluster whose files `cluster init` wrote in --data-dir
        /// (addresses, certificates and secret come from DATA/cluster.toml).
        #[arg(long)]
        replica: Option<u8>,
        /// The replicas' addresses ADDR0,ADDR1,…, checked against DATA/cluster.toml.
        #[arg(long, value_delimiter = ',', requires = "replica")]
        cluster: Option<Vec<SocketAddr>>,
        /// This replica's disk was lost: rejoin with an empty data directory, taking the
        /// state and the logs from the other replicas.
        #[arg(long, requires = "replica")]
        recover: bool,
        /// The region this node runs in: it creates and serves tenants of this region and
        /// tenants without one, never another region's. Without it, only tenants without one.
        /// (A replica's region is the cluster's: `cluster init --region`.)
        #[arg(long, env = "KIMBERLITE_REGION", conflicts_with = "replica")]
        region: Option<String>,
    },
    /// A cluster of replicas (Viewstamped Replication over QUIC).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// A narrated walk through Kimberlite on a temporary directory.
    Demo {
        /// Keep the demo's data directory here instead of a temporary one.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Where the sample modules are (default: target/guests/… next to this binary).
        #[arg(long)]
        guests: Option<PathBuf>,
    },
    /// Run one SQL statement.
    Sql {
        #[arg(long)]
        tenant: String,
        /// Why: recorded in the log with every write.
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Read as of this log position (queries only).
        #[arg(long, conflicts_with = "as_of_timestamp")]
        as_of_position: Option<u64>,
        /// Read as of this UTC time, e.g. '2024-01-15 10:30:00' (queries only).
        #[arg(long)]
        as_of_timestamp: Option<String>,
        /// A value for $1, $2, …: an integer, a decimal, true/false, null, or text.
        #[arg(long = "param")]
        params: Vec<String>,
        /// Why you read, for masking policies (e.g. treatment); else the token's `purpose`.
        #[arg(long)]
        purpose: Option<String>,
        /// Read-your-writes on views: wait until they have applied this log position.
        #[arg(long)]
        after: Option<u64>,
        /// Break-glass: why this read needs more than your grants allow. Bypasses table
        /// grants and row filters for this query only, and is recorded in
        /// kimberlite.access first (tokens with role admin or attribute break_glass=true).
        #[arg(long, value_name = "REASON")]
        emergency: Option<String>,
        statement: String,
    },
    /// Tenant projections (Wasm): log → queryable views.
    Projection {
        #[command(subcommand)]
        command: crate::cli_modules::ProjectionCommand,
    },
    /// Tenant masking policies (Wasm): rows + caller → what the caller may see.
    Policy {
        #[command(subcommand)]
        command: crate::cli_modules::PolicyCommand,
    },
    /// Interactive SQL (history, multi-line statements ending in `;`, `.help`).
    Repl {
        #[arg(long)]
        tenant: String,
    },
    /// Tenants: create, list, quota, erase.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Erase a data subject (GDPR art. 17): destroy the subject's key, write an erasure
    /// record, remove its rows from every table and version, and print an attestation: the
    /// erasure record proven (inclusion proof, checked here) to be in the tenant's log under
    /// a tree head signed by a trusted node key, bound to that head's chain head.
    Erase {
        #[arg(long)]
        tenant: String,
        /// The subject's id as records name it (a table's subject column, an event's subject).
        #[arg(long)]
        subject: String,
        /// Why (required): part of the erasure record auditors see.
        #[arg(long)]
        reason: String,
    },
    /// The tenant's encryption keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Append application events to a stream.
    Append {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        stream: String,
        /// The event type, e.g. Deposited.
        #[arg(long)]
        kind: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// The data subject the events are about (a patient, a customer): they are encrypted
        /// under the subject's own key, which `kimberlite erase` destroys.
        #[arg(long)]
        subject: Option<String>,
        /// The JSON payload, or `-` to read one JSON payload per line from stdin.
        payload: String,
    },
    /// Read a tenant's log.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Check a stopped node's data offline (every CRC, hash chain and checkpoint signature),
    /// or with --remote a running node's history of one tenant, without trusting the node:
    /// a signed Merkle tree head, proven to extend the head this client trusted before
    /// (kept in trust.toml beside the client config).
    Verify {
        #[arg(long, default_value = DATA_DIR_DEFAULT)]
        data_dir: PathBuf,
        /// Trust this node public key (hex) instead of DATA/node.pub.
        #[arg(long)]
        public_key: Option<String>,
        /// Ask the node in the client config instead of reading a data directory.
        #[arg(long, requires = "tenant")]
        remote: bool,
        #[arg(long, requires = "remote")]
        tenant: Option<String>,
    },
    /// Prove that the record at a position is in a tenant's log: a signed tree head, the
    /// record's inclusion proof and the head's consistency with the one trusted before, all
    /// checked here.
    Proof {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        position: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Write the files of a new cluster: BASE/replica-I/ for each replica and
    /// BASE/client.toml (every replica, and the admin token).
    Init(ClusterInit),
    /// Start a local cluster of replica processes on this machine (creating it first if
    /// BASE has none), wait until it serves, and stop it on Ctrl-C. Each replica logs to
    /// BASE/replica-I/replica.log.
    Up(ClusterInit),
    /// Where every replica stands (view, primary, ops committed).
    Status,
}

#[derive(Debug, Args, Clone)]
pub struct ClusterInit {
    /// 3 survive 1 failure, 5 survive 2.
    #[arg(long, default_value_t = 3)]
    pub replicas: u8,
    #[arg(long, default_value = "./cluster")]
    pub data_dir: PathBuf,
    /// The address every replica listens on, or one per replica: IP0,IP1,…
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub host: Vec<std::net::IpAddr>,
    /// Replica I uses port BASE+2I (replicas) and BASE+2I+1 (clients).
    #[arg(long, default_value_t = crate::cluster::BASE_PORT_DEFAULT)]
    pub base_port: u16,
    /// VSR journal slots (ops between checkpoints must fit; equal on every replica).
    #[arg(long, default_value_t = kimberlite_consensus::constants::journal_slots_max, hide = true)]
    pub journal_slots: u64,
    /// Ops between VSR checkpoints.
    #[arg(long, default_value_t = kimberlite_consensus::constants::checkpoint_interval_ops, hide = true)]
    pub checkpoint_interval_ops: u64,
    /// The region the cluster runs in (every replica holds the same data, so they share
    /// one): its replicas create and serve tenants of this region and tenants without one.
    #[arg(long)]
    pub region: Option<String>,
}

impl ClusterInit {
    pub fn options(&self) -> crate::cluster::InitOptions {
        crate::cluster::InitOptions {
            replicas: self.replicas,
            base: self.data_dir.clone(),
            hosts: self.host.clone(),
            base_port: self.base_port,
            journal_slots: self.journal_slots,
            checkpoint_interval_ops: self.checkpoint_interval_ops,
            region: self.region.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    Create {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Where the tenant's data must live: only nodes started with this --region create
        /// and serve it.
        #[arg(long)]
        region: Option<String>,
    },
    List,
    /// Set a tenant's quotas (node admin; logged). Each one not given is unlimited. A
    /// request over a quota is refused with `quota exceeded`, naming it and its value.
    Quota {
        name: String,
        /// Bytes of the tenant's log; writes are refused at or above it.
        #[arg(long)]
        stored_bytes: Option<u64>,
        /// Records appended per second (an append of n events counts n, a SQL write 1).
        #[arg(long)]
        appends_per_second: Option<u64>,
        /// SELECT queries per second.
        #[arg(long)]
        queries_per_second: Option<u64>,
        /// Wasm fuel per second for the tenant's projections (its views then wait) and
        /// masking policies (its masked queries are then refused).
        #[arg(long)]
        fuel_per_second: Option<u64>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Erase a whole tenant (node admin; cannot be undone): destroy its key-encryption key
    /// and every data and subject key, empty its tables and views, refuse it and its tokens
    /// from then on, and print an attestation: the `TenantErased` record proven to be in the
    /// system partition under a tree head signed by a trusted node key. Its log stays on
    /// disk, unreadable, and `kimberlite verify` still checks its whole chain.
    Erase {
        name: String,
        /// Why (required): part of the erasure record auditors see.
        #[arg(long)]
        reason: String,
        /// The tenant's name again, to confirm: nothing of its data can be recovered.
        #[arg(long)]
        confirm: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token scoped to one tenant; prints the secret once.
    Create {
        #[arg(long)]
        tenant: String,
        /// admin, writer, reader, auditor, or a tenant-defined role (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// An attribute key=value for access rules and masking policies (repeatable).
        #[arg(long = "attr", value_parser = parse_attribute)]
        attributes: Vec<(String, String)>,
        /// The principal name recorded with this token's writes.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Start a new data key for the tenant's new records (admin). Older records stay
    /// readable under the key they were written with; the rotation is a log record
    /// (kind key-rotation, stream kimberlite.keys).
    Rotate {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Print records from a position.
    Read {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = LOG_READ_LIMIT_DEFAULT)]
        limit: u32,
        /// Print payloads as text (JSON events) instead of byte counts.
        #[arg(long)]
        payloads: bool,
    },
    /// Follow the log: print new records as they are written (Ctrl-C stops).
    Tail {
        #[arg(long)]
        tenant: String,
        /// Start here instead of at the current end.
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        payloads: bool,
    },
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not key=value")),
    }
}

/// Turns a command-line parameter into a value: integers, decimals, booleans, null, else text.
pub fn parse_param(text: &str) -> WireValue {
    if let Ok(integer) = text.parse::<i64>() {
        WireValue::Integer(integer)
    } else if let Ok(real) = text.parse::<f64>()
        && text.contains(['.', 'e', 'E'])
    {
        WireValue::Real(real)
    } else {
        match text.to_ascii_lowercase().as_str() {
            "true" => WireValue::Boolean(true),
            "false" => WireValue::Boolean(false),
            "null" => WireValue::Null,
            _ => WireValue::Text(text.to_string()),
        }
    }
}

/// Parses a UTC timestamp for `--as-of-timestamp` with the same rules as SQL's AS OF TIMESTAMP.
pub fn parse_timestamp(text: &str) -> anyhow::Result<i64> {
    kimberlite_kernel::timestamp::parse(text).map_err(|error| anyhow::anyhow!("{error}"))
}

impl Connection {
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT).join("client.toml"))
    }

    pub async fn connect(&self) -> anyhow::Result<Client> {
        let config = ClientConfig::load(&self.config_path())?;
        Ok(Client::connect(&config, self.token.clone()).await?)
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let connection = cli.connection;
    match cli.command {
        Command::Start {
            data_dir,
            replica: Some(replica),
            cluster,
            recover,
            ..
        } => {
            crate::cluster_cli::start_replica(crate::cluster::ReplicaOptions {
                data_dir,
                replica,
                addresses: cluster,
                recover,
            })
            .await
        }
        Command::Start {
            data_dir,
            listen,
            region,
            ..
        } => start(data_dir, listen, region).await,
        Command::Cluster { command } => crate::cluster_cli::run(&connection, command).await,
        Command::Demo { keep, guests } => crate::demo::run(keep, guests).await,
        Command::Sql {
            tenant,
            reason,
            format,
            as_of_position,
            as_of_timestamp,
            params,
            purpose,
            after,
            emergency,
            statement,
        } => {
            let client = connection.connect().await?;
            let as_of = match (as_of_position, as_of_timestamp) {
                (Some(position), _) => Some(AsOf::Position(position)),
                (None, Some(text)) => Some(AsOf::TimestampNs(parse_timestamp(&text)?)),
                (None, None) => None,
            };
            let params: Vec<WireValue> = params.iter().map(|param| parse_param(param)).collect();
            let options = SqlOptions {
                reason,
                as_of,
                purpose,
                after,
                emergency,
            };
            let outcome = client
                .sql_with(&tenant, &statement, &params, &options)
                .await?;
            print!("{}", render_outcome(outcome, format));
            Ok(())
        }
        Command::Projection { command } => {
            let client = connection.connect().await?;
            crate::cli_modules::projection(&client, command).await
        }
        Command::Policy { command } => {
            let client = connection.connect().await?;
            crate::cli_modules::policy(&client, command).await
        }
        Command::Repl { tenant } => crate::repl::run(connection, tenant).await,
        Command::Tenant {
            command:
                TenantCommand::Erase {
                    name,
                    reason,
                    confirm,
                },
        } => {
            if confirm != name {
                anyhow::bail!(
                    "not erasing tenant `{name}`: --confirm must repeat its name exactly (got `{confirm}`); erasing destroys every key of the tenant and cannot be undone"
                );
            }
            crate::cli_proof::erase_tenant(&connection, &name, &reason).await
        }
        Command::Tenant { command } => {
            let client = connection.connect().await?;
            match command {
                TenantCommand::Create {
                    name,
                    reason,
                    region,
                } => {
                    let id = client
                        .create_tenant_in(&name, region.as_deref(), &reason)
                        .await?;
                    println!("created tenant `{name}` (id {id})");
                }
                TenantCommand::Quota {
                    name,
                    stored_bytes,
                    appends_per_second,
                    queries_per_second,
                    fuel_per_second,
                    reason,
                } => {
                    let written = client
                        .set_quota(
                            &name,
                            stored_bytes,
                            appends_per_second,
                            queries_per_second,
                            fuel_per_second,
                            &reason,
                        )
                        .await?;
                    println!("{}", written.summary);
                }
                TenantCommand::List => {
                    let tenants = client.list_tenants().await?;
                    println!("{:>4}  {:<24}  {:>10}  created", "id", "name", "records");
                    for tenant in tenants {
                        let erased = tenant.erased_at.map_or(String::new(), |at| {
                            format!("  (erased at system position {at})")
                        });
                        println!(
                            "{:>4}  {:<24}  {:>10}  {}{erased}",
                            tenant.id,
                            tenant.name,
                            tenant.log_end,
                            render::timestamp(tenant.created_at_ns as i64)
                        );
                    }
                }
                TenantCommand::Erase { .. } => unreachable!("handled above"),
            }
            Ok(())
        }
        Command::Token { command } => {
            let client = connection.connect().await?;
            match command {
                TokenCommand::Create {
                    tenant,
                    roles,
                    attributes,
                    name,
                    reason,
                } => {
                    let (token, principal) = client
                        .create_token(&tenant, name.as_deref(), &roles, &attributes, &reason)
                        .await?;
                    eprintln!(
                        "token for principal `{principal}` in tenant `{tenant}` (shown once; store it safely):"
                    );
                    println!("{token}");
                }
            }
            Ok(())
        }
        Command::Erase {
            tenant,
            subject,
            reason,
        } => crate::cli_proof::erase(&connection, &tenant, &subject, &reason).await,
        Command::Key { command } => {
            let client = connection.connect().await?;
            match command {
                KeyCommand::Rotate { tenant, reason } => {
                    let written = client.rotate_key(&tenant, &reason).await?;
                    println!("{}", written.summary);
                }
            }
            Ok(())
        }
        Command::Append {
            tenant,
            stream,
            kind,
            reason,
            subject,
            payload,
        } => {
            let client = connection.connect().await?;
            let event = EventTarget {
                stream: &stream,
                kind: &kind,
                subject: subject.as_deref(),
            };
            append(&client, &tenant, &event, &reason, &payload).await
        }
        Command::Log { command } => {
            let client = connection.connect().await?;
            match command {
                LogCommand::Read {
                    tenant,
                    from,
                    limit,
                    payloads,
                } => {
                    let (records, end) = client.read_log(&tenant, from, limit).await?;
                    for record in &records {
                        println!("{}", describe_record(record, payloads));
                    }
                    eprintln!(
                        "({} records; the log ends at position {end})",
                        records.len()
                    );
                    Ok(())
                }
                LogCommand::Tail {
                    tenant,
                    from,
                    payloads,
                } => {
                    let mut position = match from {
                        Some(from) => from,
                        None => client.read_log(&tenant, 0, 0).await?.1,
                    };
                    loop {
                        let (records, _) = client
                            .read_log(
                                &tenant,
                                position,
                                kimberlite_client::protocol::READ_LOG_RECORDS_MAX,
                            )
                            .await?;
                        for record in &records {
                            println!("{}", describe_record(record, payloads));
                            position = record.position + 1;
                        }
                        if records.is_empty() {
                            tokio::select! {
                                _ = tokio::time::sleep(std::time::Duration::from_millis(LOG_TAIL_POLL_MS)) => {}
                                _ = tokio::signal::ctrl_c() => return Ok(()),
                            }
                        }
                    }
                }
            }
        }
        Command::Verify {
            remote: true,
            tenant: Some(tenant),
            ..
        } => crate::cli_proof::verify_remote(&connection, &tenant).await,
        Command::Proof { tenant, position } => {
            crate::cli_proof::prove(&connection, &tenant, position).await
        }
        Command::Verify {
            data_dir,
            public_key,
            ..
        } => {
            let ok = crate::verify::run(&data_dir, public_key.as_deref(), true)?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Where appended events go: their stream, type and data subject.
struct EventTarget<'a> {
    stream: &'a str,
    kind: &'a str,
    subject: Option<&'a str>,
}

async fn append(
    client: &Client,
    tenant: &str,
    target: &EventTarget<'_>,
    reason: &str,
    payload: &str,
) -> anyhow::Result<()> {
    let event = |payload: &str| -> anyhow::Result<WireEvent> {
        serde_json::from_str::<serde_json::Value>(payload)
            .with_context(|| format!("the payload is not JSON: {payload}"))?;
        Ok(WireEvent {
            subject: target.subject.map(str::to_string),
            stream: target.stream.to_string(),
            event_type: target.kind.to_string(),
            payload: payload.as_bytes().to_vec(),
        })
    };
    if payload != "-" {
        let outcome = client.append(tenant, vec![event(payload)?], reason).await?;
        println!(
            "{}",
            describe_positions(&outcome.summary, outcome.positions)
        );
        return Ok(());
    }
    let mut batch = Vec::with_capacity(APPEND_BATCH_EVENTS);
    let mut total = 0u64;
    let mut last_position = None;
    let stdin = std::io::stdin();
    for (index, line) in stdin.lock().lines().enumerate() {
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        batch.push(event(&line).with_context(|| format!("line {}", index + 1))?);
        if batch.len() == APPEND_BATCH_EVENTS {
            let outcome = client
                .append(tenant, std::mem::take(&mut batch), reason)
                .await?;
            total += outcome.rows_affected;
            last_position = outcome.positions.map(|(_, last)| last);
        }
    }
    if !batch.is_empty() {
        let outcome = client.append(tenant, batch, reason).await?;
        total += outcome.rows_affected;
        last_position = outcome.positions.map(|(_, last)| last);
    }
    match last_position {
        Some(last) => println!("appended {total} events (last position {last})"),
        None => println!("appended nothing (stdin was empty)"),
    }
    Ok(())
}

fn describe_positions(summary: &str, positions: Option<(u64, u64)>) -> String {
    match positions {
        Some((first, last)) if first == last => format!("{summary} (log position {first})"),
        Some((first, last)) => format!("{summary} (log positions {first}..={last})"),
        None => summary.to_string(),
    }
}

pub fn render_outcome(outcome: SqlOutcome, format: Format) -> String {
    match outcome {
        SqlOutcome::Rows(rows) => render::result_set(&rows, format),
        SqlOutcome::Written(written) => match format {
            Format::Json => format!(
                "{}\n",
                serde_json::json!({
                    "summary": written.summary,
                    "rows_affected": written.rows_affected,
                    "first_position": written.positions.map(|(first, _)| first),
                    "last_position": written.positions.map(|(_, last)| last),
                })
            ),
            _ => format!(
                "{}\n",
                describe_positions(&written.summary, written.positions)
            ),
        },
    }
}

pub fn describe_record(record: &kimberlite_client::LogRecord, payloads: bool) -> String {
    let reason = if record.reason.is_empty() {
        String::new()
    } else {
        format!(" reason={:?}", record.reason)
    };
    let payload = if record.erased {
        " (erased: the data subject's key is destroyed)".to_string()
    } else if record.redacted {
        " (payload withheld: no grant on this table)".to_string()
    } else if payloads {
        format!(" {}", String::from_utf8_lossy(&record.payload))
    } else {
        format!(" ({} bytes)", record.payload.len())
    };
    format!(
        "{:>8}  {}  {:<8} {:<14} stream={} by={}{}{}",
        record.position,
        render::timestamp(record.timestamp_ns as i64),
        record.record_kind,
        record.event_type,
        record.stream,
        record.principal,
        reason,
        payload
    )
}

async fn start(
    data_dir: PathBuf,
    listen: SocketAddr,
    region: Option<String>,
) -> anyhow::Result<()> {
    let options = NodeOptions {
        region,
        ..NodeOptions::new(&data_dir)
    };
    let server = EmbeddedServer::start(options, listen).await?;
    for note in &server.report.notes {
        eprintln!("recovery: {note}");
    }
    let config_path = server.node().layout().client_config();
    println!(
        "Kimberlite listening on {} (QUIC, ALPN kimberlite/1)\n  data dir: {}\n  client config: {}{}",
        server.address(),
        data_dir.display(),
        config_path.display(),
        if server.created_admin_token {
            " (new admin token written there, mode 0600)"
        } else {
            ""
        }
    );
    if server.report.records_replayed > 0 {
        println!(
            "  recovered: replayed {} records into the views",
            server.report.records_replayed
        );
    }
    wait_for_shutdown_signal().await?;
    println!("shutting down: finishing writes, signing checkpoints …");
    server.stop().await?;
    println!("stopped cleanly");
    Ok(())
}

pub(crate) async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
