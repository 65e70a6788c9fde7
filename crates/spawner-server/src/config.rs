//! The settings of `spawner serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long ended backends are kept by default: a week, time enough to look at what
/// happened, short enough that the data directory does not grow forever.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything the embedded server is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// API, proxy and dashboard on one address.
    pub listen: SocketAddr,
    /// The SQLite database and the backends' log files.
    pub data_dir: PathBuf,
    /// Bearer token for the control routes; required on a non-loopback address.
    pub token: Option<String>,
    /// Enables `{id}.{domain}` host routing.
    pub domain: Option<String>,
    /// Peers whose forwarding headers (`X-Forwarded-*`, `Forwarded`) the proxy keeps:
    /// proxies in front of Spawner. Empty: Spawner is the edge, and sets its own.
    pub trusted_proxies: spawner_proxy::TrustedProxies,
    /// Base of the URLs the API returns; defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// Time between SIGTERM and SIGKILL when a backend is stopped.
    pub stop_grace: Duration,
    /// How often the sweeper looks at every backend.
    pub sweep_interval: Duration,
    /// Client connections quiet this long between requests are closed (`None`: never).
    pub client_idle_timeout: Option<Duration>,
    /// Threads that relay proxied connections (at least one).
    pub proxy_threads: usize,
    /// How long a proxy thread polls after activity before it sleeps (`None`: never).
    pub busy_poll: Option<Duration>,
    /// At start-up, remove containers labelled with this installation whose backend the
    /// store has no record of (otherwise they are only reported).
    pub remove_unknown_containers: bool,
    /// How long an ended backend's record and log are kept (`None`: forever).
    pub retention: Option<Duration>,
}

impl Config {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Config {
            listen,
            data_dir,
            token: None,
            domain: None,
            trusted_proxies: spawner_proxy::TrustedProxies::default(),
            public_url: None,
            stop_grace: Duration::from_secs(10),
            sweep_interval: Duration::from_millis(100),
            client_idle_timeout: Some(spawner_proxy::forward::CLIENT_IDLE_TIMEOUT),
            proxy_threads: spawner_proxy::forward::default_threads(),
            busy_poll: Some(spawner_proxy::forward::BUSY_POLL),
            remove_unknown_containers: false,
            retention: Some(DEFAULT_RETENTION),
        }
    }

    /// Refuses settings that would be unsafe or cannot work.
    pub fn check(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            return Err(format!(
                "refusing to listen on {} without a token: anyone who can reach it could start programs on this machine. \
                 Set --token (or SPAWNER_TOKEN), or listen on 127.0.0.1",
                self.listen
            ));
        }
        if let Some(t) = &self.token {
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("--token must be at least 16 characters without spaces".into());
            }
        }
        if let Some(d) = &self.domain {
            if d.is_empty() || d.starts_with('.') || d.contains('/') || d.contains(':') {
                return Err(format!("--domain {d:?} must be a host name like spawner.example.com (no scheme, port or path)"));
            }
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!(
                    "--public-url {u:?} must start with http:// or https://"
                ));
            }
        }
        Ok(())
    }
}

/// Builds the URLs the API hands out.
#[derive(Debug, Clone)]
pub struct Urls {
    /// `scheme://host[:port]` without a trailing slash.
    base: String,
    scheme: String,
    port_suffix: String,
    domain: Option<String>,
}

impl Urls {
    pub fn new(config: &Config) -> Self {
        let base = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen))
            .trim_end_matches('/')
            .to_string();
        let (scheme, rest) = base.split_once("://").unwrap_or(("http", base.as_str()));
        let host_port = rest.split('/').next().unwrap_or(rest);
        let port_suffix = host_port
            .rsplit_once(':')
            .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            .map(|(_, p)| format!(":{p}"))
            .unwrap_or_default();
        Urls {
            scheme: scheme.to_string(),
            port_suffix,
            domain: config.domain.clone(),
            base,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The path prefix a browser uses for the backend: `/p/{id}/`, or `/` under host routing.
    pub fn base_path(&self, id: &str) -> String {
        match self.domain {
            Some(_) => "/".to_string(),
            None => format!("/p/{id}/"),
        }
    }

    /// The backend's public URL.
    pub fn backend(&self, id: &str) -> String {
        match &self.domain {
            Some(d) => format!("{}://{id}.{d}{}/", self.scheme, self.port_suffix),
            None => format!("{}/p/{id}/", self.base),
        }
    }

    pub fn api(&self, id: &str, tail: &str) -> String {
        format!("{}/v1/backends/{id}/{tail}", self.base)
    }
}
