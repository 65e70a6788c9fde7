//! The Kubernetes data-path subcommands: `sidecar` (beside each application container),
//! `sweeper` (one per node) and `proxy --kubernetes` (the router).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use spawner_k8s::kube::Client;
use spawner_k8s::model::router_key::RouterKey;
use spawner_k8s::node::sweeper::{self, SweeperConfig};
use spawner_k8s::router::{self, RouterConfig};
use spawner_proxy::sidecar::{self, Secrets, Sidecar};
use spawner_proxy::{Cidr, TrustedProxies};
use std::net::SocketAddr;

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Kubernetes: the proxy beside the application container; serves /_events.
    Sidecar(SidecarArgs),
    /// Kubernetes: follow the sidecars of this node's backends; mark Ready and Swept.
    Sweeper(SweeperArgs),
    /// Route /p/{id}/ and {id}.{domain} to backends (Kubernetes: --kubernetes).
    Proxy(ProxyArgs),
}

#[derive(Args)]
pub struct SidecarArgs {
    /// The port the application listens on, on 127.0.0.1 (the Pod's network).
    #[arg(long, env = "PORT")]
    app_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:9090")]
    listen: SocketAddr,
    /// The backend's own secret, for its keepalive URL and the controller's go-away call
    /// (the controller sets it in each Pod).
    #[arg(long, env = "SPAWNER_SIDECAR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The router's proof for this backend (the controller sets it in each Pod, from the
    /// router's key): only requests carrying it may set X-Forwarded-* headers.
    #[arg(long, env = "SPAWNER_ROUTER_PROOF", hide_env_values = true)]
    router_proof: Option<String>,
    /// A token-mode backend's own access key (the controller sets it, derived from the
    /// access key): requests not from the router need a cookie or token of this backend.
    #[arg(long, env = "SPAWNER_BACKEND_ACCESS_KEY", hide_env_values = true)]
    backend_access_key: Option<String>,
    /// The backend this sidecar serves (the controller sets it with the access key).
    #[arg(long, env = "SPAWNER_BACKEND_ID")]
    backend_id: Option<String>,
}

#[derive(Args)]
pub struct SweeperArgs {
    /// This node's name (from the downward API: spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Follow backends of this namespace only (all namespaces without it).
    #[arg(long, env = "SPAWNER_NAMESPACE")]
    namespace: Option<String>,
}

#[derive(Args)]
pub struct ProxyArgs {
    /// Route to the SessionLivedBackends of a Kubernetes cluster (the only mode: the
    /// embedded server serves its own proxy).
    #[arg(long)]
    kubernetes: bool,
    /// Address to listen on.
    #[arg(long, env = "SPAWNER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The namespace of the backends (all namespaces without it).
    #[arg(long, env = "SPAWNER_NAMESPACE")]
    namespace: Option<String>,
    /// Route Host: {id}.{domain} to backend {id}, besides /p/{id}/; browsers asking for a
    /// backend by path are then sent to {id}.{domain}.
    #[arg(long, env = "SPAWNER_DOMAIN")]
    domain: Option<String>,
    /// Where browsers reach the router: the scheme of the backends' own origins.
    #[arg(long, env = "SPAWNER_PUBLIC_URL")]
    public_url: Option<String>,
    /// A proxy in front of the router (an address, or a CIDR block such as 10.0.0.0/8)
    /// whose X-Forwarded-* and Forwarded headers are kept; repeat the flag for more.
    #[arg(
        long = "trusted-proxy",
        env = "SPAWNER_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<Cidr>,
    /// The key the router proves itself to each backend's sidecar with (the controller
    /// has the same): without it, sidecars keep no X-Forwarded-* header of the router's.
    #[arg(long, env = "SPAWNER_ROUTER_KEY", hide_env_values = true)]
    router_key: Option<String>,
    /// The access key (the Secret spawner-access): token-mode backends' cookies and connect
    /// tokens are checked with it; without it, those backends are refused.
    #[arg(long, env = "SPAWNER_ACCESS_KEY", hide_env_values = true)]
    access_key: Option<String>,
}

/// The access key from `--access-key`/`SPAWNER_ACCESS_KEY` (none if empty), for the API,
/// the router and the controller.
pub fn access_key(
    given: Option<String>,
) -> anyhow::Result<Option<spawner_proxy::access::MasterKey>> {
    match given.filter(|k| !k.trim().is_empty()) {
        Some(k) => Ok(Some(spawner_k8s::model::access::master_key(&k)?)),
        None => {
            tracing::info!(
                "no SPAWNER_ACCESS_KEY: per-user access (\"access\": {{\"mode\": \"token\"}}) is off (docs/kubernetes.md)"
            );
            Ok(None)
        }
    }
}

/// The router's key from `--router-key`/`SPAWNER_ROUTER_KEY` (none if empty), for the
/// router and the controller.
pub fn router_key(given: Option<String>) -> anyhow::Result<Option<RouterKey>> {
    match given.filter(|k| !k.is_empty()) {
        Some(k) => Ok(Some(RouterKey::new(&k)?)),
        None => {
            tracing::warn!(
                "no SPAWNER_ROUTER_KEY: sidecars trust no one's X-Forwarded-* headers, and \
                 applications see the router's address as their client's (docs/kubernetes.md)"
            );
            Ok(None)
        }
    }
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPAWNER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a Pod's log (a file) they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Ctrl-C, or SIGTERM (what the kubelet sends a Pod that is being stopped).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn client() -> anyhow::Result<Client> {
    Client::try_default()
        .await
        .context("no Kubernetes configuration: run in a cluster or set KUBECONFIG")
}

pub async fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    init_tracing();
    match cmd {
        NodeCommand::Sidecar(args) => run_sidecar(args).await,
        NodeCommand::Sweeper(args) => run_sweeper(args).await,
        NodeCommand::Proxy(args) => run_proxy(args).await,
    }
}

pub async fn run_sidecar(args: SidecarArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, app_port = args.app_port, "sidecar started");
    let access = match (
        args.backend_access_key.filter(|k| !k.is_empty()),
        args.backend_id,
    ) {
        (Some(key), Some(id)) => Some(spawner_k8s::model::access::backend_key(&id, &key)?),
        (Some(_), None) => anyhow::bail!(
            "SPAWNER_BACKEND_ACCESS_KEY needs SPAWNER_BACKEND_ID: the key is one backend's"
        ),
        (None, _) => None,
    };
    let sc = Sidecar::with_secrets(
        args.app_port,
        Secrets {
            token: args.token,
            router_proof: args.router_proof,
            access,
        },
    );
    sidecar::serve(sc, listener, shutdown_signal()).await;
    tracing::info!("sidecar stopped");
    Ok(())
}

pub async fn run_sweeper(args: SweeperArgs) -> anyhow::Result<()> {
    let config = SweeperConfig {
        node_name: args.node_name,
        namespace: args.namespace.filter(|n| !n.is_empty()),
    };
    sweeper::run(client().await?, config, None, shutdown_signal()).await?;
    Ok(())
}

pub async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    if !args.kubernetes {
        anyhow::bail!(
            "`spawner proxy` routes to a Kubernetes cluster: add --kubernetes (`spawner serve` has its own proxy)"
        );
    }
    let config = RouterConfig {
        namespace: args.namespace.filter(|n| !n.is_empty()),
        domain: args.domain.filter(|d| !d.is_empty()),
        public_url: args.public_url.filter(|u| !u.is_empty()),
        trusted_proxies: TrustedProxies::new(args.trusted_proxies),
        key: router_key(args.router_key)?,
        access_key: access_key(args.access_key)?,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let (router, watch) = router::start(client().await?, config);
    tracing::info!(listen = %args.listen, "router started");
    router::serve(router, listener, shutdown_signal()).await;
    watch.abort();
    tracing::info!("router stopped");
    Ok(())
}
