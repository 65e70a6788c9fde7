//! `spawner serve`.

use anyhow::Context;
use clap::Args;
use spawner_server::{Config, Runtimes, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Bearer token for the control routes; required when --listen is not a loopback address.
    #[arg(long, env = "SPAWNER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Route `{id}.{domain}` to backend `{id}` (needs a wildcard DNS record).
    #[arg(long, env = "SPAWNER_DOMAIN")]
    domain: Option<String>,
    /// Base of the URLs the API returns [default: http://{listen}].
    #[arg(long, env = "SPAWNER_PUBLIC_URL")]
    public_url: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when a backend is stopped.
    #[arg(long, env = "SPAWNER_STOP_GRACE", default_value_t = 10)]
    stop_grace: u64,
    /// Milliseconds between two sweeps (idle, lifetime and startup checks).
    #[arg(
        long,
        env = "SPAWNER_SWEEP_INTERVAL_MS",
        default_value_t = 100,
        hide = true
    )]
    sweep_interval_ms: u64,
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("spawner"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
        "no --data-dir given and neither XDG_DATA_HOME nor HOME is set: pass --data-dir",
    )?;
    Ok(PathBuf::from(home).join(".local/share/spawner"))
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
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let mut config = Config::new(args.listen, data_dir);
    config.token = args.token.filter(|t| !t.is_empty());
    config.domain = args.domain.filter(|d| !d.is_empty());
    config.public_url = args.public_url.filter(|u| !u.is_empty());
    config.stop_grace = Duration::from_secs(args.stop_grace);
    config.sweep_interval = Duration::from_millis(args.sweep_interval_ms.max(10));
    let runtimes = Runtimes::new(Err("not enabled in this build".to_string()));
    let server = Server::start(config, runtimes).await?;
    let app = server.app().clone();
    tracing::info!(
        "spawner serving on http://{} (data in {}, {} backends adopted)",
        server.local_addr(),
        app.config.data_dir.display(),
        app.registry.len()
    );
    server.run(shutdown_signal()).await;
    tracing::info!("stopped; backends keep running and are adopted at the next start");
    Ok(())
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
