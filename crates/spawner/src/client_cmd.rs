//! The command-line client: spawn, ls, status, terminate, logs. It speaks the HTTP API at
//! `SPAWNER_URL` with `SPAWNER_TOKEN`.

use anyhow::{bail, Context};
use clap::Args;
use futures_util::StreamExt;
use spawner_client::Client;
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
    /// Bearer token of the server.
    #[arg(long, env = "SPAWNER_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

impl Conn {
    fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(
            &self.url,
            self.token.clone().filter(|t| !t.is_empty()),
        )?)
    }
}

#[derive(Args, Debug)]
pub struct SpawnArgs {
    /// The command to run, as one shell-quoted string ("python3 -m http.server $(PORT)").
    #[arg(long, conflicts_with = "argv")]
    command: Option<String>,
    /// The command to run, as separate arguments after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    argv: Vec<String>,
    /// A container image (runs on the Docker runtime).
    #[arg(long)]
    image: Option<String>,
    /// Environment variables, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Labels, NAME=VALUE (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE")]
    labels: Vec<String>,
    /// Get-or-create: return the live backend with this key if there is one.
    #[arg(long)]
    key: Option<String>,
    /// Seconds without connections before the backend is swept.
    #[arg(long)]
    grace: Option<u64>,
    /// Seconds after which the backend is stopped whatever it does.
    #[arg(long)]
    lifetime: Option<u64>,
    /// The port the backend listens on (default: a free one for a process, 8080 for an image).
    #[arg(long)]
    port: Option<u16>,
    /// Forward /p/{id}/... unchanged instead of stripping the prefix.
    #[arg(long)]
    keep_prefix: bool,
    /// Wait until the backend is Ready, showing its progress, then print its URL.
    #[arg(long)]
    wait: bool,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

fn pairs(
    items: &[String],
    what: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--{what} {kv:?} must be NAME=VALUE"))
        })
        .collect()
}

/// Builds the spec the flags describe; shared by `spawn` and other commands that take them.
pub fn spec_of(args: &SpawnArgs) -> anyhow::Result<BackendSpec> {
    let command = match (&args.command, args.argv.is_empty()) {
        (Some(c), _) => Some(
            shlex::split(c).with_context(|| format!("--command {c:?} has unbalanced quotes"))?,
        ),
        (None, false) => Some(args.argv.clone()),
        (None, true) => None,
    };
    if command.is_none() && args.image.is_none() {
        bail!("say what to run: --command \"prog args\", -- prog args, or --image NAME");
    }
    let mut spec = BackendSpec::from_command(command.unwrap_or_default());
    if spec
        .executable
        .command
        .as_ref()
        .is_some_and(|c| c.is_empty())
    {
        spec.executable.command = None;
    }
    spec.executable.image = args.image.clone();
    spec.executable.env = pairs(&args.env, "env")?;
    spec.executable.port = args.port;
    spec.labels = pairs(&args.labels, "label")?;
    spec.key = args.key.clone();
    if let Some(g) = args.grace {
        spec.grace_period_seconds = g;
    }
    spec.lifetime_limit_seconds = args.lifetime;
    spec.strip_prefix = !args.keep_prefix;
    spec.validate()?;
    Ok(spec)
}

pub async fn spawn(args: SpawnArgs) -> anyhow::Result<()> {
    let spec = spec_of(&args)?;
    let client = args.conn.client()?;
    let (resp, created) = client.spawn(&spec).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
    } else if !args.wait {
        println!("{}\t{}\t{}", resp.id, resp.state, resp.url);
    }
    if !args.wait {
        return Ok(());
    }
    let started = now_millis();
    if !created {
        eprintln!(
            "key {:?} has a live backend: {}",
            spec.key.unwrap_or_default(),
            resp.id
        );
    }
    let mut events = Box::pin(client.status_stream(&resp.id, None).await?);
    while let Some(item) = events.next().await {
        let (_, event) = item?;
        eprintln!(
            "  {:>6} ms  {}{}",
            event.time - started,
            event.state,
            event
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        match event.state {
            State::Ready => {
                println!("{}", resp.url);
                return Ok(());
            }
            s if s.is_terminal() => {
                bail!(
                    "backend {} ended {s} before it was ready{}; see `spawner logs {}`",
                    resp.id,
                    event.reason.map(|r| format!(": {r}")).unwrap_or_default(),
                    resp.id
                )
            }
            _ => {}
        }
    }
    bail!("the status stream ended before the backend was ready")
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only backends in this state (e.g. Ready).
    #[arg(long)]
    state: Option<String>,
    /// Only backends with this label, NAME=VALUE (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Only the backends with this key.
    #[arg(long)]
    key: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let mut filters: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = &args.state {
        filters.push(("state", s));
    }
    if let Some(k) = &args.key {
        filters.push(("key", k));
    }
    for l in &args.labels {
        filters.push(("label", l));
    }
    let backends = args.conn.client()?.list(&filters).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&backends)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<28} {:<12} {:>5} {:<20} URL",
        "ID", "STATE", "CONNS", "KEY"
    )?;
    for b in backends {
        writeln!(
            out,
            "{:<28} {:<12} {:>5} {:<20} {}",
            b.id,
            b.state.as_str(),
            b.live_connections,
            b.key.as_deref().unwrap_or("-"),
            b.url
        )?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    id: String,
    /// Follow the event stream until the backend ends.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    if !args.follow {
        let e = client.status(&args.id).await?;
        println!("{}", serde_json::to_string(&e)?);
        return Ok(());
    }
    let mut events = Box::pin(client.status_stream(&args.id, None).await?);
    while let Some(item) = events.next().await {
        let (_, e) = item?;
        println!(
            "{}  {}{}",
            rfc3339(e.time),
            e.state,
            e.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct TerminateArgs {
    id: String,
    /// Kill at once (SIGKILL) instead of SIGTERM and the stop grace.
    #[arg(long)]
    hard: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn terminate(args: TerminateArgs) -> anyhow::Result<()> {
    args.conn.client()?.terminate(&args.id, args.hard).await?;
    eprintln!("terminating {}", args.id);
    Ok(())
}

#[derive(Args, Debug)]
pub struct LogsArgs {
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
