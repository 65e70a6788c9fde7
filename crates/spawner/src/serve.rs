//! `spawner serve`.

use clap::Args;
use spawner_server::runtimes::{DockerOptions, DockerRuntime, ProcessRuntime, Runtime};
use spawner_server::{Config, Runtimes, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the API, the proxy and the dashboard.
    #[arg(long, env = "SPAWNER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the SQLite database and the backends' logs live
    /// [default: $XDG_DATA_HOME/spawner, or ~/.local/share/spawner].
    #[arg(long, env = "SPAWNER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Bearer token of the control routes [default: the data directory's `token` file, made
    /// at the first start (0600); the CLI of the same user reads it].
    #[arg(long, env = "SPAWNER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// No token at all: every local user and every program on this machine may start
    /// processes as you. Only on a loopback address, and never advisable.
    #[arg(long, env = "SPAWNER_NO_TOKEN", conflicts_with = "token")]
    no_token: bool,
    /// Each backend is served on an origin of its own, `{id}.{domain}`. Browsers resolve
    /// `*.localhost` to this machine; anywhere else, a wildcard DNS record for the domain.
    #[arg(long, env = "SPAWNER_DOMAIN", default_value = spawner_server::config::DEFAULT_DOMAIN)]
    domain: String,
    #[command(flatten)]
    browsers: crate::access_args::BrowserArgs,
    /// A proxy in front of Spawner (an address, or a CIDR block such as 10.0.0.0/8) whose
    /// X-Forwarded-* and Forwarded headers are kept; repeat the flag for more. Without one,
    /// Spawner is the edge: it drops every client's forwarding headers and sets its own.
    #[arg(
        long = "trusted-proxy",
        env = "SPAWNER_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<spawner_proxy::Cidr>,
    /// Base of the URLs the API returns [default: http://{listen}].
    #[arg(long, env = "SPAWNER_PUBLIC_URL")]
    public_url: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when a backend is stopped.
    #[arg(long, env = "SPAWNER_STOP_GRACE", default_value_t = 10)]
    stop_grace: u64,
    /// Seconds a client connection may stay quiet between requests (or take to send a
    /// request's head) before the proxy closes it; 0 keeps it open. WebSockets are exempt.
    #[arg(
        long,
        env = "SPAWNER_CLIENT_IDLE_TIMEOUT",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(0..=604_800)
    )]
    client_idle_timeout: u64,
    /// Threads that relay proxied connections, each with its own event loop [default: the
    /// number of CPUs this process may use]. The API runs on the process's other threads.
    #[arg(
        long,
        env = "SPAWNER_PROXY_THREADS",
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    proxy_threads: Option<u16>,
    /// Microseconds a proxy thread keeps polling for the next message after it relayed
    /// something, before it sleeps: lower latency for a CPU's time while the window lasts,
    /// handed at once to other programs that want the CPU. 0 turns it off.
    #[arg(
        long,
        env = "SPAWNER_BUSY_POLL_US",
        default_value_t = 50,
        value_parser = clap::value_parser!(u64).range(0..=10_000)
    )]
    busy_poll_us: u64,
    /// Milliseconds between two sweeps (idle, lifetime and startup checks).
    #[arg(
        long,
        env = "SPAWNER_SWEEP_INTERVAL_MS",
        default_value_t = 100,
        hide = true
    )]
    sweep_interval_ms: u64,
    /// Container backends (`executable.image`) on the local Docker engine: `auto` uses the
    /// engine when one answers, `on` refuses to start without one, `off` never uses it.
    #[arg(long, env = "SPAWNER_DOCKER", value_enum, default_value_t = DockerMode::Auto)]
    docker: DockerMode,
    /// The Docker network the containers join (created when missing).
    #[arg(long, env = "SPAWNER_DOCKER_NETWORK", default_value = "spawner")]
    docker_network: String,
    /// Keep each backend's container (stopped) after it ended, for debugging.
    #[arg(long, env = "SPAWNER_KEEP_CONTAINERS")]
    keep_containers: bool,
    /// At start-up, remove containers of this installation that the database does not know
    /// (by default they are only reported).
    #[arg(long, env = "SPAWNER_REMOVE_UNKNOWN_CONTAINERS")]
    remove_unknown_containers: bool,
    /// Seconds an ended backend's record and log are kept before they are deleted; 0 keeps
    /// them forever.
    #[arg(
        long,
        env = "SPAWNER_RETENTION",
        default_value_t = 604_800,
        value_name = "SECONDS"
    )]
    retention: u64,
    /// Who may reach a backend spawned without `"access"`: `open` (whoever holds its URL)
    /// or `token` (a connect URL per user; such spawns must then name `access.user`).
    #[arg(long, env = "SPAWNER_ACCESS", default_value = "open", value_parser = ["open", "token"], value_name = "MODE")]
    access: String,
    /// Directory of registry credentials: `image_pull_secret: "NAME"` uses `DIR/NAME.json`,
    /// a Docker config file (`{"auths": {...}}`).
    #[arg(long, env = "SPAWNER_DOCKER_PULL_SECRETS")]
    docker_pull_secrets: Option<PathBuf>,
    /// A variable of this environment that process backends get too (repeatable; the
    /// variable: comma-separated). Without it they get only PATH, HOME, USER, LOGNAME,
    /// SHELL, LANG, LANGUAGE, LC_*, TZ, TMPDIR and TERM of it.
    #[arg(
        long = "env-keep",
        env = "SPAWNER_ENV_KEEP",
        value_name = "NAME",
        value_delimiter = ','
    )]
    env_keep: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DockerMode {
    Auto,
    On,
    Off,
}

/// The Docker runtime as `--docker` asks, or why there is none.
async fn docker_runtime(args: &ServeArgs) -> anyhow::Result<Result<Arc<dyn Runtime>, String>> {
    if args.docker == DockerMode::Off {
        return Ok(Err("disabled by --docker off".into()));
    }
    let options = DockerOptions {
        network: args.docker_network.clone(),
        keep_containers: args.keep_containers,
        pull_secrets_dir: args.docker_pull_secrets.clone(),
        ..DockerOptions::default()
    };
    match DockerRuntime::connect(options).await {
        Ok(rt) => {
            tracing::info!("docker engine: {}", rt.describe());
            Ok(Ok(Arc::new(rt)))
        }
        Err(why) if args.docker == DockerMode::On => {
            anyhow::bail!("--docker on, but the Docker runtime is unavailable: {why}")
        }
        Err(why) => Ok(Err(why)),
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPAWNER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let env_keep: Vec<String> = args
        .env_keep
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    for name in &env_keep {
        spawner_core::env::check_keep(name).map_err(anyhow::Error::msg)?;
    }
    let process = ProcessRuntime::new(&env_keep);
    tracing::info!(
        "process backends get of this environment: {}",
        process.inherited_names().join(" ")
    );
    let docker = docker_runtime(&args).await?;
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => spawner_server::config::default_data_dir().map_err(anyhow::Error::msg)?,
    };
    let mut config = Config::new(args.listen, data_dir);
    config.token = args.token.filter(|t| !t.is_empty());
    config.no_token = args.no_token;
    config.domain = args.domain;
    config.allowed_hosts = args.browsers.allowed_hosts;
    config.cors_origins = args.browsers.cors_origins;
    config.trusted_proxies = spawner_proxy::TrustedProxies::new(args.trusted_proxies);
    config.public_url = args.public_url.filter(|u| !u.is_empty());
    config.stop_grace = Duration::from_secs(args.stop_grace);
    config.client_idle_timeout =
        Some(Duration::from_secs(args.client_idle_timeout)).filter(|d| !d.is_zero());
    config.busy_poll = Some(Duration::from_micros(args.busy_poll_us)).filter(|d| !d.is_zero());
    if let Some(threads) = args.proxy_threads {
        config.proxy_threads = threads.into();
    }
    config.sweep_interval = Duration::from_millis(args.sweep_interval_ms.max(10));
    config.remove_unknown_containers = args.remove_unknown_containers;
    config.retention = Some(Duration::from_secs(args.retention)).filter(|d| !d.is_zero());
    config.access = if args.access == "token" {
        spawner_core::access::AccessMode::Token
    } else {
        spawner_core::access::AccessMode::Open
    };
    let runtimes = Runtimes::new(process, docker);
    let server = Server::start(config, runtimes).await?;
    let app = server.app().clone();
    tracing::info!(
        "spawner serving on http://{} (data in {}, {} backends adopted)",
        server.local_addr(),
        app.config.data_dir.display(),
        app.registry.len()
    );
    announce_access(&app);
    server.run(shutdown_signal()).await;
    tracing::info!("stopped; backends keep running and are adopted at the next start");
    Ok(())
}

/// Says how to get in: the one-time dashboard link, or the warning that anyone can.
fn announce_access(app: &spawner_server::app::App) {
    match app.login.as_deref().map(|l| l.issue()) {
        Some(Ok(link)) => tracing::info!(
            "dashboard: {} (a one-time login link, valid {} min; `spawner dashboard` prints another, `spawner token` the token)",
            link.url,
            link.expires_in_seconds / 60
        ),
        Some(Err(e)) => tracing::warn!("no login link: {e}"),
        None => tracing::warn!(
            "--no-token: the control API is OPEN to every local user and every program on this machine, \
             which may start any command as {}. Browsers' pages are still refused, other local users are not",
            std::env::var("USER").unwrap_or_else(|_| "this user".into())
        ),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
