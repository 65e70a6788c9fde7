//! `spawner-bench`: the benchmark harness of issue 3. Measures Spawner's proxy, WebSocket
//! path, spawn path, scale and sweep precision side by side with their peers (direct,
//! nginx, HAProxy, the backend's own start-up) in one run, prints a table and writes a JSON
//! summary. Run it through `scripts/bench`, which installs the peers and builds Spawner.

mod api;
mod apiserver_requests;
mod k8s;
mod kubelet;
mod paced;
mod pools;
mod proxy;
mod readiness;
mod report;
mod scale;
mod sleep;
mod spawn;
mod storm;
mod sweep;
mod util;
mod ws;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use report::Phase;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "spawner-bench",
    about = "Benchmarks Spawner against its peers (issue 3)."
)]
struct Args {
    #[command(subcommand)]
    cleanup: Option<Cleanup>,
    /// The `spawner` binary to measure [default: next to this one].
    #[arg(long)]
    spawner: Option<PathBuf>,
    /// Where runs keep their files (configs, logs, data directories).
    #[arg(long, default_value = "target/bench/run")]
    work_dir: PathBuf,
    /// The JSON summary.
    #[arg(long, default_value = "target/bench/summary.json")]
    out: PathBuf,
    /// Phases to run, comma-separated: proxy, bodies, access, ws, paced, spawn, readiness, storm, scale, sleep,
    /// sweep, pools, k8s.
    #[arg(
        long,
        default_value = "proxy,bodies,access,ws,paced,spawn,readiness,storm,scale,sweep,sleep,pools,k8s",
        value_delimiter = ','
    )]
    phases: Vec<String>,
    /// Repetitions of the noisy measurements (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per loaded wrk run.
    #[arg(long, default_value_t = 4)]
    wrk_seconds: u64,
    /// Seconds per one-connection wrk run (latency).
    #[arg(long, default_value_t = 2)]
    wrk_solo_seconds: u64,
    /// wrk connections under load.
    #[arg(long, default_value_t = 50)]
    wrk_connections: usize,
    /// Worker processes of the nginx backend.
    #[arg(long, default_value_t = 1)]
    backend_workers: usize,
    /// WebSocket messages per round-trip run.
    #[arg(long, default_value_t = 10_000)]
    ws_messages: usize,
    /// Idle WebSockets for the memory figure (capped by the open-file limit).
    #[arg(long, default_value_t = 10_000)]
    ws_conns: usize,
    /// WebSockets in the paced phase.
    #[arg(long, default_value_t = 100)]
    paced_conns: usize,
    /// Messages per second on each paced WebSocket (60: a game's tick rate).
    #[arg(long, default_value_t = 60)]
    paced_hz: u32,
    /// Seconds per paced run.
    #[arg(long, default_value_t = 3)]
    paced_seconds: u64,
    /// Sequential spawns (and own start-ups) for the latency distribution.
    #[arg(long, default_value_t = 100)]
    spawns: usize,
    /// Spawns at once for the throughput figure.
    #[arg(long, default_value_t = 200)]
    concurrent: usize,
    /// Repetitions of the concurrent spawns.
    #[arg(long, default_value_t = 3)]
    concurrent_rounds: usize,
    /// Backends that listen after 5 ms, one at a time, in the readiness phase.
    #[arg(long, default_value_t = 60)]
    readiness_fast: usize,
    /// Backends that listen after 3 s, all at once, in the readiness phase.
    #[arg(long, default_value_t = 30)]
    readiness_slow: usize,
    /// Starting backends watched for the readiness phase's CPU figure.
    #[arg(long, default_value_t = 1000)]
    readiness_watched: usize,
    /// Spawns of `/bin/true` in the storm phase.
    #[arg(long, default_value_t = 10_000)]
    storm: usize,
    /// Connections posting spawns in the storm phase.
    #[arg(long, default_value_t = 64)]
    storm_conns: usize,
    /// `spawner example-app` spawns at once in the storm phase, until all are Ready.
    #[arg(long, default_value_t = 1000)]
    storm_real: usize,
    /// Live backends in the scale phase.
    #[arg(long, default_value_t = 1000)]
    scale: usize,
    /// Status calls and proxied requests in the scale phase (each).
    #[arg(long, default_value_t = 2000)]
    scale_calls: usize,
    /// Parallel clients in the scale phase.
    #[arg(long, default_value_t = 4)]
    scale_workers: usize,
    /// Backends in the sweep phase.
    #[arg(long, default_value_t = 20)]
    sweeps: usize,
    /// Wakes one at a time (against as many own start-ups) in the sleep phase.
    #[arg(long, default_value_t = 20)]
    sleep_rounds: usize,
    /// Sleeping backends in the sleep phase, woken all at once.
    #[arg(long, default_value_t = 1000)]
    sleepers: usize,
    /// Claims one at a time per backend kind in the pools phase.
    #[arg(long, default_value_t = 200)]
    pool_claims: usize,
    /// Claims at once in the pools phase.
    #[arg(long, default_value_t = 50)]
    pool_at_once: usize,
    /// Seconds of claims while the pool refills, per backend kind.
    #[arg(long, default_value_t = 5)]
    pool_sustain_seconds: u64,
    /// SessionLivedBackends created through `spawner api` in the k8s phase.
    #[arg(long, default_value_t = 1000)]
    k8s_backends: usize,
    /// Backends run to Ready and terminated in the k8s phase's requests-per-backend round
    /// (each with a `spawner sidecar` of its own).
    #[arg(long, default_value_t = 100)]
    k8s_ready: usize,
    /// Claims one at a time of a warm pool in the k8s phase.
    #[arg(long, default_value_t = 100)]
    k8s_claims: usize,
    /// Extra environment for `spawner serve` only (repeatable), e.g. TOKIO_WORKER_THREADS=1.
    #[arg(long, value_name = "NAME=VALUE")]
    spawner_env: Vec<String>,
    /// Marks every process of this run, for the cleanup [default: a fresh one].
    #[arg(long, env = "SPAWNER_BENCH_TOKEN")]
    token: Option<String>,
    /// The command line to record in the summary (set by scripts/bench).
    #[arg(long, env = "SPAWNER_BENCH_COMMAND")]
    command_line: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cleanup {
    /// Kill whatever a run with this token left behind.
    Cleanup { token: String },
    /// The readiness phase's backend: sleep MS, listen on `PORT`, print when.
    #[command(hide = true)]
    ListenAfter { ms: u64 },
}

/// What every phase needs.
pub struct Ctx {
    pub spawner: PathBuf,
    pub spawner_env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub token: String,
    pub cores: usize,
    pub rounds: usize,
    pub wrk_seconds: u64,
    pub wrk_solo_seconds: u64,
    pub wrk_connections: usize,
    pub backend_workers: usize,
    pub ws_messages: usize,
    pub ws_conns: usize,
    pub paced_conns: usize,
    pub paced_hz: u32,
    pub paced_seconds: u64,
    pub spawns: usize,
    pub concurrent: usize,
    pub concurrent_rounds: usize,
    pub readiness_fast: usize,
    pub readiness_slow: usize,
    pub readiness_watched: usize,
    pub storm: usize,
    pub storm_conns: usize,
    pub storm_real: usize,
    pub scale: usize,
    pub scale_calls: usize,
    pub scale_workers: usize,
    pub sweeps: usize,
    pub sleep_rounds: usize,
    pub sleepers: usize,
    pub k8s_backends: usize,
    pub k8s_ready: usize,
    pub k8s_claims: usize,
    pub pool_claims: usize,
    pub pool_at_once: usize,
    pub pool_sustain_seconds: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Cleanup::Cleanup { token }) = &args.cleanup {
        let n = util::kill_tagged(token);
        if n > 0 {
            eprintln!("spawner-bench cleanup: killed {n} leftover processes");
        }
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(Cleanup::ListenAfter { ms }) = &args.cleanup {
        return match readiness::listen_after(*ms) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let token = args
        .token
        .clone()
        .unwrap_or_else(|| format!("{}-{}", std::process::id(), util::wall_ms()));
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&args, &token) => r,
            () = interrupted() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Whatever a phase did not stop (also after an error or a signal) goes now.
    drop(runtime);
    util::kill_tagged(&token);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn interrupted() {
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

async fn run(args: &Args, token: &str) -> Result<()> {
    util::raise_nofile();
    let spawner = match &args.spawner {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the harness binary has no directory")?
            .join("spawner"),
    };
    let spawner = spawner.canonicalize().with_context(|| {
        format!(
            "no spawner binary at {}: build it or pass --spawner",
            spawner.display()
        )
    })?;
    std::fs::create_dir_all(&args.work_dir)?;
    let dir = args.work_dir.canonicalize()?;
    let mut spawner_env = Vec::new();
    for pair in &args.spawner_env {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--spawner-env {pair:?}: expected NAME=VALUE");
        };
        spawner_env.push((name.to_string(), value.to_string()));
    }
    let ctx = Ctx {
        spawner,
        spawner_env,
        dir,
        token: token.to_string(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rounds: args.rounds.max(1),
        wrk_seconds: args.wrk_seconds.max(1),
        wrk_solo_seconds: args.wrk_solo_seconds.max(1),
        wrk_connections: args.wrk_connections.max(1),
        backend_workers: args.backend_workers.max(1),
        ws_messages: args.ws_messages.max(1),
        ws_conns: args.ws_conns,
        paced_conns: args.paced_conns.max(1),
        paced_hz: args.paced_hz.clamp(1, 1000),
        paced_seconds: args.paced_seconds.max(1),
        spawns: args.spawns.max(1),
        concurrent: args.concurrent.max(1),
        concurrent_rounds: args.concurrent_rounds.max(1),
        readiness_fast: args.readiness_fast.max(1),
        readiness_slow: args.readiness_slow.max(1),
        readiness_watched: args.readiness_watched.max(1),
        storm: args.storm.max(1),
        storm_conns: args.storm_conns.max(1),
        storm_real: args.storm_real.max(1),
        scale: args.scale.max(1),
        scale_calls: args.scale_calls.max(1),
        scale_workers: args.scale_workers.max(1),
        sweeps: args.sweeps.max(1),
        sleep_rounds: args.sleep_rounds.max(1),
        sleepers: args.sleepers.max(1),
        k8s_backends: args.k8s_backends.max(1),
        k8s_ready: args.k8s_ready.max(1),
        k8s_claims: args.k8s_claims.max(1),
        pool_claims: args.pool_claims.max(1),
        pool_at_once: args.pool_at_once.max(1),
        pool_sustain_seconds: args.pool_sustain_seconds.max(1),
    };
    let machine = machine();
    eprintln!(
        "spawner-bench: {}",
        machine["summary"].as_str().unwrap_or_default()
    );

    let started = Instant::now();
    let mut phases: Vec<Phase> = Vec::new();
    let mut timings = serde_json::Map::new();
    for name in &args.phases {
        let t = Instant::now();
        eprintln!("spawner-bench: phase {name} …");
        let phase = match name.as_str() {
            "proxy" => proxy::run(&ctx).await,
            "bodies" => proxy::run_bodies(&ctx).await,
            "access" => proxy::run_access(&ctx).await,
            "ws" => ws::run(&ctx).await,
            "paced" => paced::run(&ctx).await,
            "spawn" => spawn::run(&ctx).await,
            "readiness" => readiness::run(&ctx).await,
            "storm" => storm::run(&ctx).await,
            "scale" => scale::run(&ctx).await,
            "sweep" => sweep::run(&ctx).await,
            "sleep" => sleep::run(&ctx).await,
            "pools" => pools::run(&ctx).await,
            "k8s" => k8s::run(&ctx).await,
            other => bail!(
                "unknown phase {other:?}: use proxy, bodies, access, ws, paced, spawn, readiness, storm, scale, sweep, sleep, pools, k8s"
            ),
        }
        .with_context(|| format!("phase {name}"))?;
        util::kill_tagged(token);
        eprintln!(
            "spawner-bench: phase {name} done in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        timings.insert(name.clone(), util::round3(t.elapsed().as_secs_f64()));
        phases.push(phase);
    }

    let table = report::markdown(&phases);
    println!("{table}");
    let checks: Vec<Value> = phases
        .iter()
        .flat_map(|p| &p.checks)
        .map(report::Check::json)
        .collect();
    let results: serde_json::Map<String, Value> = args
        .phases
        .iter()
        .zip(&phases)
        .map(|(name, p)| (name.clone(), p.json.clone()))
        .collect();
    let summary = json!({
        "command": args.command_line.clone().unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" ")),
        "started_at_ms": util::wall_ms() - started.elapsed().as_millis() as i64,
        "seconds": util::round3(started.elapsed().as_secs_f64()),
        "phase_seconds": Value::Object(timings),
        "machine": machine,
        "results": Value::Object(results),
        "targets": checks,
    });
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&summary)?)?;
    std::fs::write(args.out.with_extension("md"), &table)?;
    eprintln!(
        "spawner-bench: done in {:.0} s; summary in {} (table in {})",
        started.elapsed().as_secs_f64(),
        args.out.display(),
        args.out.with_extension("md").display()
    );
    Ok(())
}

/// The machine and the peers' versions, for the record.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim())
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let version = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                text.lines().next().unwrap_or_default().trim().to_string()
            })
            .unwrap_or_default()
    };
    let summary = format!(
        "{cores} cores ({cpu}), {:.1} GiB, Linux {kernel}, open-file limit {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        util::nofile_limit()
    );
    json!({
        "summary": summary,
        "nproc": cores,
        "cpu": cpu,
        "mem_total_kib": mem_kib,
        "kernel": kernel,
        "open_file_limit": util::nofile_limit(),
        "nginx": version("nginx", "-v"),
        "haproxy": version("haproxy", "-v"),
        "wrk": version("wrk", "-v"),
    })
}
