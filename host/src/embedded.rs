//! A node with its QUIC server, in this process: what `kimberlite start` runs, and
//! what the demo, the tests and the benchmarks start on a temporary directory.

use crate::node::{Node, NodeOptions, OpenReport};
use crate::server;
use crate::tls::TlsIdentity;
use anyhow::Context;
use kimberlite_client::ClientConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug)]
pub struct EmbeddedServer {
    node: Arc<Node>,
    address: SocketAddr,
    config: ClientConfig,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub report: OpenReport,
    /// True when this start created the admin token (first start of the data dir).
    pub created_admin_token: bool,
}

impl EmbeddedServer {
    /// Opens the node (recovering it), listens on `listen` (port 0 picks a free one),
    /// and writes `DATA/client.toml` for local clients.
    pub async fn start(options: NodeOptions, listen: SocketAddr) -> anyhow::Result<EmbeddedServer> {
        let data_dir = options.data_dir.clone();
        let (node, report) = tokio::task::spawn_blocking(move || Node::open(options))
            .await
            .context("the node's open task failed")??;
        let node = Arc::new(node);
        let identity = TlsIdentity::load_or_create(&data_dir)?;
        let endpoint = quinn::Endpoint::server(identity.quic_server_config()?, listen)
            .with_context(|| {
                format!("cannot listen on {listen} (is another node running there?)")
            })?;
        let address = endpoint
            .local_addr()
            .context("the endpoint has no local address")?;
        let config_path = node.layout().client_config();
        let previous = ClientConfig::load(&config_path).ok();
        let created = node.bootstrap_admin_token().await?;
        let admin_token = created
            .clone()
            .or_else(|| previous.and_then(|config| config.admin_token));
        if admin_token.is_none() {
            tracing::warn!(
                path = %config_path.display(),
                "client.toml has no admin token and the node already has one: pass --token to clients"
            );
        }
        let config = ClientConfig {
            address: address.to_string(),
            server_name: kimberlite_client::config::SERVER_NAME_DEFAULT.to_string(),
            certificate_sha256: identity.fingerprint(),
            admin_token,
            replicas: Vec::new(),
            node_public_keys: vec![hex::encode(
                kimberlite_log::NodeKey::load_public_key(&data_dir)
                    .context("cannot read the node public key")?
                    .as_bytes(),
            )],
        };
        config.save(&config_path)?;
        let (shutdown, receiver) = watch::channel(false);
        let task = tokio::spawn(server::serve(endpoint, node.clone(), receiver));
        Ok(EmbeddedServer {
            node,
            address,
            config,
            shutdown,
            task: Some(task),
            report,
            created_admin_token: created.is_some(),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// What a local client needs (address, certificate pin, admin token).
    pub fn client_config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops serving, then shuts the node down cleanly (signed checkpoints, durable views).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.await.context("the server task failed")?;
        }
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || node.shutdown())
            .await
            .context("the shutdown task failed")?;
        Ok(())
    }
}
