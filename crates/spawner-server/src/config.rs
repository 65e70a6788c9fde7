//! The settings of `spawner serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long ended backends are kept by default: a week, time enough to look at what
/// happened, short enough that the data directory does not grow forever.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The domain of backends' own origins unless `--domain` says otherwise: browsers resolve
/// every `*.localhost` name to loopback (RFC 6761), so `{id}.localhost:8080` works on the
/// machine the server runs on without any DNS record.
pub const DEFAULT_DOMAIN: &str = "localhost";

/// Everything the embedded server is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// API, proxy and dashboard on one address.
    pub listen: SocketAddr,
    /// The SQLite database and the backends' log files.
    pub data_dir: PathBuf,
    /// Bearer token for the control routes. `None` at start: the data directory's `token`
    /// file, made at the first start (unless `no_token`).
    pub token: Option<String>,
    /// The explicit opt-out of authentication (`--no-token`): every local user and program
    /// may drive the server. Refused on a non-loopback address.
    pub no_token: bool,
    /// Backends are served at `{id}.{domain}`, each on an origin of its own (`localhost`
    /// by default, whose subdomains browsers resolve to loopback).
    pub domain: String,
    /// Names besides the server's own under which clients reach the API (`Host`).
    pub allowed_hosts: Vec<String>,
    /// Origins of other sites whose pages may call the API (CORS); none by default.
    pub cors_origins: Vec<String>,
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
    /// The access mode of a spawn that names none (`--access`; `open` unless set).
    pub access: spawner_core::access::AccessMode,
}

impl Config {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Config {
            listen,
            data_dir,
            token: None,
            no_token: false,
            domain: DEFAULT_DOMAIN.to_string(),
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            trusted_proxies: spawner_proxy::TrustedProxies::default(),
            public_url: None,
            stop_grace: Duration::from_secs(10),
            sweep_interval: Duration::from_millis(100),
            client_idle_timeout: Some(spawner_proxy::forward::CLIENT_IDLE_TIMEOUT),
            proxy_threads: spawner_proxy::forward::default_threads(),
            busy_poll: Some(spawner_proxy::forward::BUSY_POLL),
            remove_unknown_containers: false,
            retention: Some(DEFAULT_RETENTION),
            access: spawner_core::access::AccessMode::Open,
        }
    }

    /// Refuses settings that would be unsafe or cannot work.
    pub fn check(&self) -> Result<(), String> {
        if self.no_token && !self.listen.ip().is_loopback() {
            return Err(format!(
                "refusing --no-token on {}: anyone who can reach it could start programs on this machine. \
                 Drop --no-token (a token is then made in the data directory), or listen on 127.0.0.1",
                self.listen
            ));
        }
        if self.no_token && self.token.is_some() {
            return Err(
                "--no-token and --token (SPAWNER_TOKEN) contradict each other: drop one".into(),
            );
        }
        if self.domain == DEFAULT_DOMAIN {
            let remote = !self.listen.ip().is_loopback() && self.public_url.is_none();
            let public_host = self.public_url.as_deref().and_then(url_host);
            if remote || public_host.is_some_and(|h| !is_local_name(&h)) {
                return Err(format!(
                    "every backend is served on an origin of its own, {{id}}.DOMAIN, and {DEFAULT_DOMAIN} \
                     only works on this machine: pass --domain (e.g. --domain spawner.example.com, with a \
                     wildcard DNS record *.spawner.example.com pointing here{})",
                    if remote { ", and --public-url" } else { "" }
                ));
            }
        }
        if let Some(t) = &self.token {
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("--token must be at least 16 characters without spaces".into());
            }
        }
        for h in &self.allowed_hosts {
            if h.is_empty() || h.contains('/') || h.chars().any(char::is_whitespace) {
                return Err(format!(
                    "--allowed-host {h:?} must be a host name like spawner.internal (no scheme or path)"
                ));
            }
        }
        for o in &self.cors_origins {
            let ok = url_host(o).is_some()
                && o.trim_end_matches('/')
                    .split_once("://")
                    .is_some_and(|(_, rest)| !rest.contains('/'));
            if !ok {
                return Err(format!(
                    "--cors-origin {o:?} must be an origin like https://app.example.com (scheme and host, no path)"
                ));
            }
        }
        let d = &self.domain;
        if d.is_empty() || d.starts_with('.') || d.contains('/') || d.contains(':') {
            return Err(format!("--domain {d:?} must be a host name like spawner.example.com (no scheme, port or path)"));
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

/// `$XDG_DATA_HOME/spawner`, or `~/.local/share/spawner`: where `spawner serve` keeps its
/// data and the CLI looks for the server's token unless told otherwise.
pub fn default_data_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("spawner"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or("no --data-dir given and neither XDG_DATA_HOME nor HOME is set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/spawner"))
}

/// The host of an `http(s)://` URL, in lowercase, without port or brackets.
fn url_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `localhost`, a name under it, or a loopback address.
fn is_local_name(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Builds the URLs the API hands out.
#[derive(Debug, Clone)]
pub struct Urls {
    /// `scheme://host[:port]` without a trailing slash.
    base: String,
    scheme: String,
    port_suffix: String,
    domain: String,
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

    /// The path prefix a browser uses for every backend: each is at the root of its own
    /// origin.
    pub const BASE_PATH: &'static str = "/";

    /// The backend's public URL, on its own origin.
    pub fn backend(&self, id: &str) -> String {
        format!(
            "{}://{id}.{}{}/",
            self.scheme, self.domain, self.port_suffix
        )
    }

    /// Whether backends are reached over TLS (an `https` public URL): access cookies are
    /// then `Secure` and `__Host-`.
    pub fn secure(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("https")
    }

    pub fn api(&self, id: &str, tail: &str) -> String {
        format!("{}/v1/backends/{id}/{tail}", self.base)
    }
}
