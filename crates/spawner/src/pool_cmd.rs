//! `spawner pool create|ls|get|resize|rm`: warm pools through the HTTP API (`/v1/pools`);
//! a claim is `spawner spawn --pool NAME`.

use crate::client_cmd::Conn;
use crate::human;
use crate::spec_args::{in_flags, SpecArgs};
use anyhow::bail;
use clap::{Args, Subcommand};
use spawner_core::access::{Access, AccessMode};
use spawner_core::pool::{PoolSize, PoolSpec, PoolStatus, PoolTemplate};
use std::io::Write;

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Create a pool: --min-ready backends of the template kept Ready, --max in all.
    Create(Box<CreateArgs>),
    /// List the pools with their sizes and what they hold.
    Ls(LsArgs),
    /// Show a pool: sizes, ready/starting/claimed counts, claims, template.
    Get(GetArgs),
    /// Change a pool's sizes (over the new max, unclaimed backends are stopped).
    Resize(ResizeArgs),
    /// Remove a pool: its unclaimed backends are stopped, claimed ones run on.
    Rm(RmArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The pool's name: lowercase letters, digits and '-' (e.g. notebooks).
    name: String,
    /// How many unclaimed backends the pool keeps Ready (or starting).
    #[arg(long, value_name = "N")]
    min_ready: u32,
    /// The most backends of the pool at once, claimed ones included.
    #[arg(long, value_name = "M")]
    max: u32,
    /// What each backend runs, and its settings: the flags of `spawner spawn`.
    #[command(flatten)]
    spec: SpecArgs,
    /// Who may reach a claimed backend: `open` or `token` (each claim names its --user)
    /// [default: the server's, `serve --access`].
    #[arg(long, value_parser = ["open", "token"], value_name = "MODE")]
    access: Option<String>,
    /// Where Spawner POSTs {"key", "labels"} to a backend before a claim answers; a backend
    /// that does not answer 2xx is replaced, not handed out [default: none].
    #[arg(long, value_name = "PATH")]
    claim_path: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print the API's JSON answer ({"pools": [...]}).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// The pool's name.
    name: String,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("size").required(true).multiple(true).args(["min_ready", "max"])))]
pub struct ResizeArgs {
    /// The pool's name.
    name: String,
    /// The new min-ready [default: unchanged].
    #[arg(long, value_name = "N")]
    min_ready: Option<u32>,
    /// The new max [default: unchanged].
    #[arg(long, value_name = "M")]
    max: Option<u32>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// The pool's name.
    name: String,
    #[command(flatten)]
    conn: Conn,
}

pub async fn run(cmd: PoolCommand) -> anyhow::Result<()> {
    match cmd {
        PoolCommand::Create(args) => create(*args).await,
        PoolCommand::Ls(args) => ls(args).await,
        PoolCommand::Get(args) => get(args).await,
        PoolCommand::Resize(args) => resize(args).await,
        PoolCommand::Rm(args) => rm(args).await,
    }
}

/// The pool the flags describe, validated, its errors said as flags.
fn pool_of(args: &CreateArgs) -> anyhow::Result<PoolSpec> {
    let mut spec = args.spec.spec()?;
    spec.access = args.access.as_deref().map(|m| {
        Access::stored(if m == "token" {
            AccessMode::Token
        } else {
            AccessMode::Open
        })
    });
    let pool = PoolSpec {
        name: args.name.clone(),
        template: PoolTemplate {
            spec,
            claim_path: args.claim_path.clone(),
        },
        min_ready: args.min_ready,
        max: args.max,
    };
    pool.validate()
        .map_err(|e| anyhow::anyhow!(in_flags(&e.field, &e.message)))?;
    Ok(pool)
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let pool = pool_of(&args)?;
    let status = args.conn.client()?.create_pool(&pool).await?;
    show(&status, args.json)?;
    if !args.json {
        eprintln!(
            "claim one with: spawner spawn --pool {} [--key KEY] [--wait]",
            status.name
        );
    }
    Ok(())
}

async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let pools = args.conn.client()?.list_pools().await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let list = serde_json::json!({ "pools": pools });
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24}  {:>9}  {:>5}  {:>5}  {:>8}  {:>7}  {:>6}  RUNS",
        "NAME", "MIN-READY", "MAX", "READY", "STARTING", "CLAIMED", "CLAIMS"
    )?;
    for p in &pools {
        writeln!(
            out,
            "{:<24}  {:>9}  {:>5}  {:>5}  {:>8}  {:>7}  {:>6}  {}",
            p.name,
            p.min_ready,
            p.max,
            p.ready,
            p.starting,
            p.claimed,
            p.claims,
            runs(&p.template)
        )?;
    }
    if pools.is_empty() {
        eprintln!("(no pools; create one with `spawner pool create NAME --min-ready N --max M -- COMMAND`)");
    }
    Ok(())
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let status = args.conn.client()?.get_pool(&args.name).await?;
    show(&status, args.json)
}

async fn resize(args: ResizeArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    // A size not given stays as it is.
    let (min_ready, max) = match (args.min_ready, args.max) {
        (Some(n), Some(m)) => (n, m),
        (n, m) => {
            let now = client.get_pool(&args.name).await?;
            (n.unwrap_or(now.min_ready), m.unwrap_or(now.max))
        }
    };
    let size = PoolSize { min_ready, max };
    if let Err(e) = size.validate() {
        bail!(in_flags(&e.field, &e.message));
    }
    let status = client.resize_pool(&args.name, size).await?;
    show(&status, args.json)
}

async fn rm(args: RmArgs) -> anyhow::Result<()> {
    let drained = args.conn.client()?.delete_pool(&args.name).await?;
    eprintln!(
        "removed pool {}: stopping {} unclaimed backend{}; claimed ones run on",
        drained.name,
        drained.stopping,
        if drained.stopping == 1 { "" } else { "s" }
    );
    Ok(())
}

/// What a template runs, in a few words: its command or its image.
fn runs(t: &PoolTemplate) -> String {
    match (&t.spec.executable.command, &t.spec.executable.image) {
        (Some(c), _) => {
            shlex::try_join(c.iter().map(String::as_str)).unwrap_or_else(|_| c.join(" "))
        }
        (None, Some(image)) => format!("image {image}"),
        (None, None) => "-".to_string(),
    }
}

/// A pool as `pool get` prints it (or its JSON).
fn show(p: &PoolStatus, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(p)?)?;
        return Ok(());
    }
    let t = &p.template.spec;
    let secs = |s: u64| human::duration(i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000));
    let or_none = |s: Option<u64>| s.map_or_else(|| "none".to_string(), secs);
    writeln!(out, "pool        {}", p.name)?;
    writeln!(out, "sizes       min-ready {}, max {}", p.min_ready, p.max)?;
    writeln!(
        out,
        "backends    {} ready, {} starting, {} claimed",
        p.ready, p.starting, p.claimed
    )?;
    writeln!(
        out,
        "claims      {} ({} waited for a backend)",
        p.claims, p.cold_claims
    )?;
    writeln!(out, "runs        {}", runs(&p.template))?;
    if let Some(port) = t.executable.port {
        writeln!(out, "port        {port}")?;
    }
    if !t.executable.env.is_empty() {
        let env: Vec<String> = t.executable.env.keys().cloned().collect();
        writeln!(out, "env         {}", env.join(", "))?;
    }
    if !t.labels.is_empty() {
        let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(out, "labels      {}", labels.join(","))?;
    }
    writeln!(
        out,
        "timings     grace {}, startup timeout {}, lifetime {}, idle timeout {}",
        secs(t.grace_period_seconds),
        secs(t.startup_timeout_seconds),
        or_none(t.lifetime_limit_seconds),
        or_none(t.idle_timeout_seconds)
    )?;
    writeln!(
        out,
        "access      {}",
        if t.access_mode() == AccessMode::Token {
            "token"
        } else {
            "open"
        }
    )?;
    if let Some(path) = &p.template.claim_path {
        writeln!(out, "claim path  {path}")?;
    }
    Ok(())
}
