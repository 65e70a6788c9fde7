//! The embedded control plane: `spawner serve`. One process that is the HTTP API, the
//! reconciler, the proxy and the sweeper, with its state in SQLite.

mod access;
pub mod access_key;
pub mod api;
pub mod app;
pub mod backup;
pub mod config;
pub mod data_dir;
mod hold;
pub mod http;
pub mod kept;
pub mod live;
mod memory;
pub mod metrics;
pub mod pools;
pub mod reconciler;
pub mod runtimes;
pub mod store;
pub mod sweeper;
pub mod token;
mod writer;

pub use config::Config;
pub use runtimes::Runtimes;

use anyhow::Context;
use app::App;
use spawner_proxy::Forwarder;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A server that has opened its store, adopted its backends and bound its socket.
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    /// Held until the server stops.
    data_dir: data_dir::DataDir,
}

impl Server {
    /// Opens the store, adopts what runs, and binds the listening socket.
    pub async fn start(config: Config, runtimes: Runtimes) -> anyhow::Result<Self> {
        config.check().map_err(anyhow::Error::msg)?;
        memory::configure();
        // The address first: a server that cannot listen leaves nothing behind.
        let listener = bind(config.listen).await?;
        // Before anything in it is read: another server may be using it.
        let data_dir = data_dir::DataDir::open(&config.data_dir, listener.local_addr()?)?;
        let db = config.data_dir.join("spawner.db");
        let store = store::Store::open(&db)
            .with_context(|| format!("opening the database {}", db.display()))?;
        let mut config = config;
        if config.token.is_none() && !config.no_token {
            config.token = Some(token::load_or_create(&config.data_dir)?);
        }
        let access_key = access_key::load_or_create(&config.data_dir)?;
        let instance = store.instance_id(|| {
            spawner_core::BackendId::generate()
                .map(|id| id.as_str()[..16].to_string())
                .unwrap_or_else(|_| format!("{:x}", std::process::id()))
        })?;
        config.listen = listener.local_addr()?;
        for line in runtimes.describe() {
            tracing::info!("{line}");
        }
        let forwarder = Forwarder::new()
            .with_client_idle_timeout(config.client_idle_timeout)
            .with_threads(config.proxy_threads)
            .with_busy_poll(config.busy_poll);
        let urls = config::Urls::new(&config);
        let login = config
            .token
            .as_deref()
            .map(|t| Arc::new(spawner_api::login::LoginCodes::new(t, urls.base())));
        let app = Arc::new(App {
            urls,
            login,
            config,
            store,
            registry: live::Registry::default(),
            runtimes,
            forwarder,
            ports: spawner_runtime::PortAllocator::default(),
            metrics: metrics::Metrics::new()?,
            pools: pools::Pools::default(),
            instance,
            access_key,
            nonces: Default::default(),
        });
        reconciler::adopt_all(&app).await?;
        pools::restore(&app)?;
        Ok(Server {
            app,
            listener,
            data_dir,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.app.config.listen
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves until `shutdown` resolves. Backends keep running after it returns: a later
    /// start adopts them again.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let _locked = self.data_dir;
        let sweeper = tokio::spawn(sweeper::run(self.app.clone()));
        let pools = tokio::spawn(pools::run(self.app.clone()));
        let memory = tokio::spawn(memory::run());
        http::serve(self.app, self.listener, shutdown).await;
        sweeper.abort();
        pools.abort();
        memory.abort();
    }
}

/// Binds the listening socket; an address in use says how to pick another.
async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "{addr} is already in use (another `spawner serve`?): stop it, or listen elsewhere with --listen (or SPAWNER_LISTEN), e.g. --listen 127.0.0.1:8081"
        ),
        _ => anyhow::Error::new(e).context(format!("listening on {addr}")),
    })
}
