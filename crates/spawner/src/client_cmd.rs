//! The command-line client: spawn, ls, status, terminate, logs. It speaks the HTTP API at
//! `SPAWNER_URL` with `SPAWNER_TOKEN`.

use crate::human;
use crate::spec_args::{in_flags, pairs, SpecArgs};
use anyhow::{bail, Context};
use clap::Args;
use futures_util::StreamExt;
use spawner_client::Client;
use spawner_core::access::{Access, AccessMode, ConnectRequest};
use spawner_core::pool::{ClaimRequest, IfNoneReady};
use spawner_core::time::{now_millis, rfc3339};
use spawner_core::{BackendSpec, State};
use std::io::Write;

#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The Spawner server.
    #[arg(
        long,
        env = "SPAWNER_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Bearer token of the server [default: for a server on this machine, the `token`
    /// file in its data directory].
    #[arg(long, env = "SPAWNER_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    #[command(flatten)]
    data: DataDir,
}

/// Where a local server keeps its data, and so its token.
#[derive(Args, Debug, Clone)]
pub struct DataDir {
    /// The data directory of the local `spawner serve`, whose token the CLI reads
    /// [default: $XDG_DATA_HOME/spawner, or ~/.local/share/spawner].
    #[arg(long, env = "SPAWNER_DATA_DIR", global = true)]
    data_dir: Option<std::path::PathBuf>,
}

impl DataDir {
    fn path(&self) -> anyhow::Result<std::path::PathBuf> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => spawner_server::config::default_data_dir().map_err(anyhow::Error::msg),
        }
    }

    /// The token in the data directory, if there is one; an unreadable one says why.
    fn token(&self) -> anyhow::Result<Option<String>> {
        use spawner_server::token::{read, TokenError};
        let dir = self.path()?;
        match read(&dir) {
            Ok(t) => Ok(t),
            Err(TokenError::Read { path, source })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                bail!(
                    "cannot read the server's token {}: it belongs to the user who runs `spawner serve`. \
                     Run this as that user, or pass --token (SPAWNER_TOKEN)",
                    path.display()
                )
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Conn {
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let url = with_scheme(&self.url);
        let token = match self.token.clone().filter(|t| !t.is_empty()) {
            Some(t) => Some(t),
            // A server on this machine: its data directory has the token.
            None if is_local(&url) => self.data.token()?,
            None => None,
        };
        Ok(Client::new(&url, token)?)
    }
}

/// `--url 127.0.0.1:8080` as `http://127.0.0.1:8080`: a URL without a scheme names a
/// server the way `serve --listen` does.
fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// Whether `url` names this machine (loopback or `localhost`).
fn is_local(url: &str) -> bool {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    data: DataDir,
}

/// `spawner token`: the local server's token, for `curl -H "Authorization: Bearer $(spawner token)"`.
pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let dir = args.data.path()?;
    match args.data.token()? {
        Some(t) => {
            println!("{t}");
            Ok(())
        }
        None => bail!(
            "no token in {}: has `spawner serve` run with this data directory (--data-dir, SPAWNER_DATA_DIR)? \
             A server given --token keeps none there",
            dir.display()
        ),
    }
}

#[derive(Args, Debug)]
pub struct KeepaliveArgs {
    /// The backend's id.
    id: String,
    /// How long from now it is kept from being swept, busy with work nobody is connected
    /// to (at most a day).
    seconds: u64,
    #[command(flatten)]
    conn: Conn,
}

/// `spawner keepalive ID SECONDS`: the backend is busy until then, and not swept.
pub async fn keepalive(args: KeepaliveArgs) -> anyhow::Result<()> {
    let answer = args
        .conn
        .client()?
        .keepalive(&args.id, args.seconds)
        .await?;
    println!("{}	busy until {}", args.id, answer.busy_until);
    Ok(())
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// A new (or empty) directory to write the copy into.
    out: std::path::PathBuf,
    #[command(flatten)]
    data: DataDir,
}

/// `spawner backup DIR`: a consistent copy of the local server's state, while it runs.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let dir = args.data.path()?;
    let written = spawner_server::backup::backup(&dir, &args.out)?;
    eprintln!(
        "backed up {} into {}: {}. To restore: stop `spawner serve`, copy these files into its data directory (removing spawner.db-wal and spawner.db-shm there), start it",
        dir.display(),
        args.out.display(),
        written.join(", ")
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct DashboardArgs {
    #[command(flatten)]
    conn: Conn,
}

/// `spawner dashboard`: a one-time login link to the dashboard.
pub async fn dashboard(args: DashboardArgs) -> anyhow::Result<()> {
    let (url, expires) = args.conn.client()?.login_link().await?;
    println!("{url}");
    eprintln!(
        "(a one-time link: it logs one browser tab in, within {} minutes)",
        expires / 60
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct SpawnArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Get-or-create: return the live backend with this key if there is one.
    #[arg(long)]
    key: Option<String>,
    /// Who may reach it: `open` (whoever has its URL) or `token` (a connect URL for --user)
    /// [default: the server's, `serve --access`].
    #[arg(long, value_parser = ["open", "token"], value_name = "MODE")]
    access: Option<String>,
    /// With `--access token` (or a claim of a token-mode pool): the user the printed connect
    /// URL is for.
    #[arg(long)]
    user: Option<String>,
    /// With --user: JSON passed to the backend as `X-Spawner-User-Data`.
    #[arg(long, requires = "user", value_name = "JSON")]
    user_data: Option<String>,
    /// Claim a Ready backend of this warm pool instead of starting one (its template says
    /// what runs; --key, --label, --grace, --lifetime, --idle-action and --max-sleep apply
    /// to the claim).
    #[arg(long, value_name = "NAME", conflicts_with_all = [
        "command", "argv", "image", "env", "lifetime_warning", "idle_timeout", "port",
        "startup_timeout", "keep_prefix", "working_dir", "pull_policy", "image_pull_secret",
        "memory_mb", "cpu_millis", "access",
    ])]
    pool: Option<String>,
    /// With --pool and none Ready: `start` one more (within the pool's max) or `wait` for the
    /// refill [default: start].
    #[arg(long, value_parser = ["start", "wait"], value_name = "WHAT", requires = "pool")]
    if_none_ready: Option<String>,
    /// With --pool: seconds the claim waits for a Ready backend before it gives up
    /// [default: 60].
    #[arg(long, value_name = "SECONDS", requires = "pool")]
    claim_wait: Option<u64>,
    /// Wait until the backend is Ready, showing its progress, then print its URL (a claim's
    /// backend is Ready at once).
    #[arg(long)]
    wait: bool,
    /// With --wait: if the wait is interrupted (Ctrl-C), stop the backend before exiting.
    #[arg(long, requires = "wait")]
    rm: bool,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Builds the spec the flags describe, validated, its errors said as flags.
fn spec_of(args: &SpawnArgs) -> anyhow::Result<BackendSpec> {
    let mut spec = args.spec.spec()?;
    spec.key = args.key.clone();
    if let Some(mode) = &args.access {
        let mode = if mode == "token" {
            AccessMode::Token
        } else {
            AccessMode::Open
        };
        if mode == AccessMode::Token && args.user.is_none() {
            bail!("--access token needs --user: who the connect URL is for");
        }
        spec.access = Some(Access {
            mode,
            user: args.user.clone(),
            user_data: args.user_data.as_deref().map(user_data).transpose()?,
            ..Access::default()
        });
    } else if args.user.is_some() {
        bail!("--user is for a token-mode backend: add --access token (or claim from a token-mode pool with --pool)");
    }
    spec.validate()
        .map_err(|e| anyhow::anyhow!(in_flags(&e.field, &e.message)))?;
    Ok(spec)
}

/// The claim `spawn --pool` sends, validated, its errors said as flags.
fn claim_of(args: &SpawnArgs, pool: &str) -> anyhow::Result<ClaimRequest> {
    let req = ClaimRequest {
        pool: pool.to_string(),
        key: args.key.clone(),
        labels: pairs(&args.spec.labels, "label")?,
        grace_period_seconds: args.spec.grace,
        lifetime_limit_seconds: args.spec.lifetime,
        if_none_ready: match args.if_none_ready.as_deref() {
            Some("wait") => IfNoneReady::Wait,
            _ => IfNoneReady::Start,
        },
        wait_seconds: args.claim_wait.unwrap_or(60),
        access: match &args.user {
            Some(user) => Some(Access {
                mode: AccessMode::Token,
                user: Some(user.clone()),
                user_data: args.user_data.as_deref().map(user_data).transpose()?,
                ..Access::default()
            }),
            None => None,
        },
        idle_action: args.spec.idle_action(),
        max_sleep_seconds: args.spec.max_sleep,
    };
    req.validate().map_err(|e| {
        let field = if e.field == "pool" {
            "--pool"
        } else {
            &e.field
        };
        anyhow::anyhow!(in_flags(field, &e.message))
    })?;
    Ok(req)
}

/// The process ends with this after Ctrl-C, as shells report a SIGINT (128 + 2): the
/// message was printed already.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

pub async fn spawn(args: SpawnArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    // Taken over before the request, so that a Ctrl-C while it is answered is seen once the
    // backend's id is known, instead of ending the CLI with the backend unnamed.
    let mut interrupt = if args.wait {
        let sigint = tokio::signal::unix::SignalKind::interrupt();
        Some(tokio::signal::unix::signal(sigint).context("cannot take over Ctrl-C")?)
    } else {
        None
    };
    let (resp, created, startup_timeout) = match &args.pool {
        Some(pool) => {
            let req = claim_of(&args, pool)?;
            let (resp, created) = client.claim(&req).await?;
            (resp, created, None)
        }
        None => {
            let spec = spec_of(&args)?;
            let (resp, created) = client.spawn(&spec).await?;
            (resp, created, Some(spec.startup_timeout_seconds))
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
    } else if !args.wait {
        // A token-mode backend's URL admits nobody by itself: the connect URL is printed.
        let url = resp.connect_url.as_deref().unwrap_or(&resp.url);
        println!("{}\t{}\t{url}", resp.id, resp.state);
    }
    if !args.wait {
        return Ok(());
    }
    if !created {
        eprintln!(
            "key {:?} has a live backend: {}",
            args.key.clone().unwrap_or_default(),
            resp.id
        );
    }
    let url = resp.connect_url.as_deref().unwrap_or(&resp.url);
    if resp.state == State::Ready {
        // Nothing left to wait for (a claim answers Ready): replaying the backend's past
        // events would print its start-up as if it were happening now.
        match &args.pool {
            Some(pool) if created => eprintln!("claimed {} from pool {pool}: Ready", resp.id),
            _ => eprintln!("backend {} is Ready", resp.id),
        }
        println!("{url}");
        return Ok(());
    }
    let ctrl_c = async {
        match interrupt.as_mut() {
            Some(signals) => signals.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        done = wait_ready(&client, &resp.id, url, startup_timeout) => done,
        _ = ctrl_c => interrupted(&client, &resp.id, args.rm).await,
    }
}

/// Ctrl-C during `spawn --wait`: the backend goes on starting unless `--rm` stops it; either
/// way its id is said, so that it is not left running unknown.
async fn interrupted(client: &Client, id: &str, rm: bool) -> anyhow::Result<()> {
    if rm {
        match client.terminate(id, false).await {
            Ok(_) => eprintln!("\ninterrupted: terminating backend {id} (--rm)"),
            Err(e) => eprintln!(
                "\ninterrupted: could not terminate backend {id} ({e}); stop it with: spawner terminate {id}"
            ),
        }
    } else {
        eprintln!(
            "\ninterrupted: backend {id} goes on starting; stop it with: spawner terminate {id}"
        );
    }
    Err(Interrupted.into())
}

/// How often `spawn --wait` says what it still waits for.
const WAIT_NOTICE: std::time::Duration = std::time::Duration::from_secs(10);

/// Follows the status stream until Ready, printing each event with its time since the
/// backend was submitted; while it waits for the port, says which address and how long is
/// left, with the usual reasons a port never opens.
async fn wait_ready(
    client: &Client,
    id: &str,
    url: &str,
    startup_timeout: Option<u64>,
) -> anyhow::Result<()> {
    let mut events = Box::pin(client.status_stream(id, None).await?);
    let mut submitted: Option<i64> = None;
    let mut probing: Option<String> = None;
    let startup_timeout = match startup_timeout {
        Some(t) => t,
        // A claimed backend's is its template's.
        None => client.get(id).await?.spec.startup_timeout_seconds,
    };
    let deadline_s = startup_timeout as i64;
    let mut notice =
        tokio::time::interval_at(tokio::time::Instant::now() + WAIT_NOTICE, WAIT_NOTICE);
    loop {
        let item = tokio::select! {
            item = events.next() => item,
            _ = notice.tick() => {
                if let (Some(address), Some(t0)) = (&probing, submitted) {
                    let left = deadline_s - (now_millis() - t0) / 1000;
                    eprintln!("              still waiting for {address} to accept connections: {} left", human::duration(left.max(0) * 1000));
                }
                continue;
            }
        };
        let Some(item) = item else {
            bail!("the status stream ended before the backend was ready")
        };
        let (_, event) = item?;
        let t0 = *submitted.get_or_insert(event.time);
        eprintln!(
            "  {:>10}  {}{}",
            human::duration(event.time - t0),
            event.state,
            event
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        match event.state {
            State::Running => {
                let address = client
                    .get(id)
                    .await
                    .ok()
                    .and_then(|r| r.address)
                    .unwrap_or_else(|| "its port".to_string());
                eprintln!(
                    "              waiting for {address} to accept connections (startup timeout {})",
                    human::duration(deadline_s.saturating_mul(1000))
                );
                probing = Some(address);
            }
            State::Ready => {
                println!("{url}");
                return Ok(());
            }
            s if s.is_terminal() => {
                let reason = event.reason.clone().unwrap_or_default();
                let hint = if reason.contains("startup timeout") {
                    format!(
                        "\nits port never accepted connections. Does the program listen on $PORT \
                         (in the command: '$(PORT)', in single quotes)? In a container it must \
                         listen on 0.0.0.0, not 127.0.0.1. More time: --startup-timeout. See \
                         `spawner logs {id}`"
                    )
                } else {
                    format!("; see `spawner logs {id}`")
                };
                bail!(
                    "backend {id} ended {s} before it was ready{}{hint}",
                    event.reason.map(|r| format!(": {r}")).unwrap_or_default(),
                )
            }
            _ => {}
        }
    }
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only backends in this state (e.g. Ready); ended states are shown when asked for.
    #[arg(long)]
    state: Option<String>,
    /// Only backends with this label, NAME=VALUE (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Only the backends with this key.
    #[arg(long)]
    key: Option<String>,
    /// Also the backends that have ended (Swept, Failed, Terminated).
    #[arg(long, short)]
    all: bool,
    /// Print the API's JSON answer ({"backends": [...]}).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let mut filters: Vec<(&str, &str)> = Vec::new();
    // `ready` as well as `Ready`: a state is one word, whatever its case.
    let state = args.state.as_deref().map(|s| {
        spawner_core::State::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .map_or(s, |st| st.as_str())
    });
    if let Some(s) = state {
        filters.push(("state", s));
    }
    if let Some(k) = &args.key {
        filters.push(("key", k));
    }
    for l in &args.labels {
        filters.push(("label", l));
    }
    let mut backends = args.conn.client()?.list(&filters).await?;
    let all = args.all || args.state.is_some();
    let ended = backends.iter().filter(|b| b.state.is_terminal()).count();
    if !all {
        backends.retain(|b| !b.state.is_terminal());
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let list = serde_json::json!({ "backends": backends });
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    let now = now_millis();
    writeln!(
        out,
        "{:<26}  {:<11}  {:>5}  {:>11}  {:<16}  {:<24}  URL",
        "ID", "STATE", "CONNS", "AGE", "KEY", "LABELS"
    )?;
    for b in &backends {
        let labels: Vec<String> = b
            .spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            out,
            "{:<26}  {:<11}  {:>5}  {:>11}  {:<16}  {:<24}  {}",
            b.id,
            b.state.as_str(),
            b.live_connections,
            human::duration(now - b.created_at),
            b.key.as_deref().unwrap_or("-"),
            if labels.is_empty() {
                "-".to_string()
            } else {
                labels.join(",")
            },
            b.url
        )?;
    }
    if !all && ended > 0 {
        eprintln!("({ended} ended not shown; --all shows them)");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The backend's id (as `spawn` and `ls` print it).
    id: String,
    /// Follow the event stream until the backend ends.
    #[arg(long, short)]
    follow: bool,
    /// Print JSON: the last event, or with --follow one event per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    if !args.follow {
        let e = client.status(&args.id).await?;
        if args.json {
            writeln!(std::io::stdout(), "{}", serde_json::to_string(&e)?)?;
        } else {
            writeln!(
                std::io::stdout(),
                "{}{}{}  since {} ({} ago)",
                e.state,
                e.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                e.exit_code
                    .map(|c| format!(", exit code {c}"))
                    .unwrap_or_default(),
                rfc3339(e.time),
                human::duration(now_millis() - e.time)
            )?;
        }
        return Ok(());
    }
    let mut events = Box::pin(client.status_updates(&args.id, None).await?);
    let mut submitted = None;
    while let Some(item) = events.next().await {
        let e = match item? {
            spawner_client::StatusUpdate::Event(e) => e,
            // The stream's warning of a stop due soon: shown as it comes, between events.
            spawner_client::StatusUpdate::Expiring(x) => {
                if args.json {
                    writeln!(std::io::stdout(), "{}", serde_json::to_string(&x)?)?;
                } else {
                    writeln!(
                        std::io::stdout(),
                        "{}  expiring: {} at {} (in {})",
                        rfc3339(now_millis()),
                        x.reason,
                        rfc3339(x.at),
                        human::duration(x.at - now_millis())
                    )?;
                }
                continue;
            }
        };
        if args.json {
            writeln!(std::io::stdout(), "{}", serde_json::to_string(&e)?)?;
            continue;
        }
        let t0 = *submitted.get_or_insert(e.time);
        writeln!(
            std::io::stdout(),
            "{}  {:>10}  {}{}",
            rfc3339(e.time),
            human::duration(e.time - t0),
            e.state,
            e.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        )?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct TerminateArgs {
    /// The backend's id (as `spawn` and `ls` print it).
    id: String,
    /// Kill at once (SIGKILL) instead of SIGTERM and the stop grace.
    #[arg(long)]
    hard: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
pub struct WakeArgs {
    /// The backend's id (as `spawn` and `ls` print it).
    id: String,
    /// Wait until it is Ready again, then print its URL.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `spawner wake ID`: starts a Sleeping backend again ahead of its user.
pub async fn wake(args: WakeArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let state = client.wake(&args.id).await?;
    match state {
        State::Waking => eprintln!("waking {}", args.id),
        State::Ready => eprintln!("{} is awake (Ready)", args.id),
        other => eprintln!("{} is not asleep: it is {other}", args.id),
    }
    if args.wait && state != State::Ready {
        client.wait_ready(&args.id, None).await?;
        eprintln!("{} is Ready", args.id);
    }
    if args.wait {
        println!("{}", client.get(&args.id).await?.url);
    }
    Ok(())
}

pub async fn terminate(args: TerminateArgs) -> anyhow::Result<()> {
    let state = args.conn.client()?.terminate(&args.id, args.hard).await?;
    if state.is_terminal() {
        eprintln!("{} had already ended ({state})", args.id);
    } else {
        eprintln!("terminating {}", args.id);
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The backend's id (as `spawn` and `ls` print it).
    id: String,
    /// Keep printing what the backend writes until it ends.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let mut stream = Box::pin(args.conn.client()?.logs(&args.id, args.follow).await?);
    let mut out = tokio::io::stdout();
    while let Some(chunk) = stream.next().await {
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk?).await?;
        tokio::io::AsyncWriteExt::flush(&mut out).await?;
    }
    Ok(())
}

fn user_data(text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("--user-data {text:?} is not JSON"))
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The backend's id.
    id: String,
    /// Who the connect URL is for (passed to the backend as `X-Spawner-User`).
    #[arg(long)]
    user: String,
    /// JSON passed to the backend as `X-Spawner-User-Data`.
    #[arg(long, value_name = "JSON")]
    user_data: Option<String>,
    /// Seconds the URL works, 1 to 3600 [default: 60].
    #[arg(long, value_name = "SECONDS")]
    ttl: Option<u64>,
    /// The URL works more than once until it expires.
    #[arg(long)]
    reusable: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `spawner connect ID --user U`: prints a connect URL for another user of a backend.
pub async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let req = ConnectRequest {
        user: args.user,
        user_data: args.user_data.as_deref().map(user_data).transpose()?,
        ttl_seconds: args.ttl,
        reusable: args.reusable,
    };
    let resp = args.conn.client()?.connect(&args.id, &req).await?;
    println!("{}", resp.connect_url);
    Ok(())
}

#[derive(Args, Debug)]
pub struct AccessArgs {
    /// The backend's id.
    id: String,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `spawner access ID`: the backend's mode and who holds access.
pub async fn access(args: AccessArgs) -> anyhow::Result<()> {
    let list = args.conn.client()?.access(&args.id).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let mode = serde_json::to_value(list.mode)?;
    println!("mode {}", mode.as_str().unwrap_or("?"));
    for g in &list.users {
        let data = g
            .user_data
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        println!("{}\t{}\t{data}", g.user, rfc3339(g.granted_at));
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The backend's id.
    id: String,
    /// The user whose access ends (their WebSockets are closed).
    user: String,
    #[command(flatten)]
    conn: Conn,
}

/// `spawner revoke ID USER`.
pub async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    args.conn.client()?.revoke(&args.id, &args.user).await?;
    eprintln!("revoked {} on {}", args.user, args.id);
    Ok(())
}
