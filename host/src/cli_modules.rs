//! `kimberlite projection …` and `kimberlite policy …`: deploying tenants' Wasm and
//! watching it run. Listing and status are SQL over the system views
//! `kimberlite.projections` and `kimberlite.policies`, so what the CLI shows is what an
//! auditor's query shows.

use crate::render::{self, Format};
use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use kimberlite_client::{Client, ModuleKind, ResultSet, WireValue};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `projection deploy` looks at the new version's progress.
pub const DEPLOY_POLL_MS: u64 = 200;

#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Deploy a projection module (a .wasm built against kimberlite-guest). A new
    /// version of an existing name rebuilds from position 0 in the background while the
    /// old one serves; by default this waits, showing progress, until it serves.
    Deploy {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// Configuration handed to the module: JSON text, or @FILE. (Not `--config`, which
        /// names the client.toml.)
        #[arg(long)]
        module_config: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        /// Return once the deploy is recorded, without waiting for the build.
        #[arg(long)]
        no_wait: bool,
        /// The module: a wasm32-unknown-unknown core module or a component.
        file: PathBuf,
    },
    /// Every version of every projection, with its state and progress.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The live versions (serving and building): progress, lag, digest, faults.
    Status {
        #[arg(long)]
        tenant: String,
        /// Only this projection.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Cancel a pending build, or (with none pending) return to the previous version.
    Rollback {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Deploy a masking policy module; it masks every query from its deploy on (queries
    /// already running finish under the version they started with).
    Deploy {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// Configuration handed to the module: JSON text, or @FILE. (Not `--config`, which
        /// names the client.toml.)
        #[arg(long)]
        module_config: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        file: PathBuf,
    },
    /// Every version of every policy and which one is active.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Make the policy's previous version active again.
    Rollback {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn read_module(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read the module {}", file.display()))
}

fn read_config(config: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match config {
        None => Ok(Vec::new()),
        Some(path) if path.starts_with('@') => std::fs::read(&path[1..])
            .with_context(|| format!("cannot read the configuration file {}", &path[1..])),
        Some(text) => Ok(text.as_bytes().to_vec()),
    }
}

async fn query(
    client: &Client,
    tenant: &str,
    sql: &str,
    params: &[WireValue],
) -> anyhow::Result<ResultSet> {
    Ok(client.query(tenant, sql, params).await?)
}

/// Runs a listing query over a system view and prints it.
async fn print_query(
    client: &Client,
    tenant: &str,
    sql: &str,
    format: Format,
) -> anyhow::Result<()> {
    let rows = query(client, tenant, sql, &[]).await?;
    print!("{}", render::result_set(&rows, format));
    Ok(())
}

pub async fn projection(client: &Client, command: ProjectionCommand) -> anyhow::Result<()> {
    match command {
        ProjectionCommand::Deploy {
            tenant,
            name,
            module_config,
            reason,
            no_wait,
            file,
        } => {
            let module = read_module(&file)?;
            let config = read_config(module_config.as_deref())?;
            let outcome = client
                .deploy(
                    &tenant,
                    ModuleKind::Projection,
                    &name,
                    module,
                    config,
                    &reason,
                )
                .await?;
            println!("{}", outcome.summary);
            let Some((_, version)) = outcome.positions else {
                return Ok(());
            };
            if no_wait {
                return Ok(());
            }
            wait_until_serving(client, &tenant, &name, version).await
        }
        ProjectionCommand::List { tenant, format } => {
            print_query(
                client,
                &tenant,
                "SELECT name, version, state, module, tables, applied, lag, deployed_by FROM kimberlite.projections ORDER BY name, version",
                format,
            )
            .await
        }
        ProjectionCommand::Status {
            tenant,
            name,
            format,
        } => {
            let (sql, params) = match &name {
                Some(name) => (
                    "SELECT name, version, state, applied, events, lag, digest, fault_position, fault FROM kimberlite.projections WHERE state <> 'retired' AND name = $1 ORDER BY name, version",
                    vec![WireValue::Text(name.clone())],
                ),
                None => (
                    "SELECT name, version, state, applied, events, lag, digest, fault_position, fault FROM kimberlite.projections WHERE state <> 'retired' ORDER BY name, version",
                    Vec::new(),
                ),
            };
            let rows = query(client, &tenant, sql, &params).await?;
            if rows.rows.is_empty() {
                match name {
                    Some(name) => bail!("tenant `{tenant}` has no projection `{name}`"),
                    None => println!("tenant `{tenant}` has no projections"),
                }
                return Ok(());
            }
            print!("{}", render::result_set(&rows, format));
            Ok(())
        }
        ProjectionCommand::Rollback {
            tenant,
            name,
            reason,
        } => {
            let outcome = client
                .rollback(&tenant, ModuleKind::Projection, &name, &reason)
                .await?;
            println!("{}", outcome.summary);
            Ok(())
        }
    }
}

/// Shows the build of `version` until it serves (active and caught up) or faults.
async fn wait_until_serving(
    client: &Client,
    tenant: &str,
    name: &str,
    version: u64,
) -> anyhow::Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} building {msg} [{bar:30}] {pos}/{len} positions ({per_sec}, eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{name} version {version}"));
    let params = [
        WireValue::Text(name.to_string()),
        WireValue::Integer(version as i64),
    ];
    loop {
        let rows = query(
            client,
            tenant,
            "SELECT state, applied, lag, fault FROM kimberlite.projections WHERE name = $1 AND version = $2",
            &params,
        )
        .await?;
        let Some(row) = rows.rows.first() else {
            bar.finish_and_clear();
            bail!("version {version} of `{name}` is not in kimberlite.projections");
        };
        let text = |index: usize| match &row[index] {
            WireValue::Text(text) => text.clone(),
            _ => String::new(),
        };
        let number = |index: usize| match &row[index] {
            WireValue::Integer(n) => *n as u64,
            _ => 0,
        };
        let (state, applied, lag) = (text(0), number(1), number(2));
        bar.set_length(applied + lag);
        bar.set_position(applied);
        match state.as_str() {
            "faulted" => {
                bar.finish_and_clear();
                bail!("version {version} of `{name}` faulted: {}", text(3));
            }
            "active" if lag == 0 => {
                bar.finish_and_clear();
                println!(
                    "version {version} of `{name}` serves queries (applied {applied} positions)"
                );
                return Ok(());
            }
            "retired" => {
                bar.finish_and_clear();
                println!(
                    "version {version} of `{name}` was replaced before it served (a newer deploy or a rollback)"
                );
                return Ok(());
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(DEPLOY_POLL_MS)).await;
    }
}

pub async fn policy(client: &Client, command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Deploy {
            tenant,
            name,
            module_config,
            reason,
            file,
        } => {
            let module = read_module(&file)?;
            let config = read_config(module_config.as_deref())?;
            let outcome = client
                .deploy(&tenant, ModuleKind::Policy, &name, module, config, &reason)
                .await?;
            println!("{}", outcome.summary);
            Ok(())
        }
        PolicyCommand::List { tenant, format } => {
            print_query(
                client,
                &tenant,
                "SELECT name, version, state, module, covers, deployed_by FROM kimberlite.policies ORDER BY name, version",
                format,
            )
            .await
        }
        PolicyCommand::Rollback {
            tenant,
            name,
            reason,
        } => {
            let outcome = client
                .rollback(&tenant, ModuleKind::Policy, &name, &reason)
                .await?;
            println!("{}", outcome.summary);
            Ok(())
        }
    }
}
