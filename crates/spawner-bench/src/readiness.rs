//! Phase `readiness`: how late Spawner sees a backend Ready after the backend's own
//! `listen()`, for a fast and a slow starter, beside a connect probe with back-off (the way
//! Spawner used to probe, run here by the harness on the same backends); and what watching
//! 1,000 starting backends costs the control plane.
//!
//! The backend is this harness itself (`spawner-bench listen-after MS`): it sleeps, listens
//! on `PORT`, and prints the wall-clock time of its `listen()` in microseconds, which the
//! phase reads from the backend's log. Lateness is the arrival of the `Ready` event at this
//! client (status stream) minus that time.

use crate::api::Server;
use crate::report::{fmt, Check, Phase};
use crate::util::{self, Dist, Proc};
use crate::Ctx;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
/// What the backend prints, followed by the microseconds since the epoch of its `listen()`.
const MARK: &str = "listened_at_us=";

/// The backend: sleeps `delay_ms`, listens on `PORT` (loopback), says when, then answers
/// every connection with a small `200` and closes it.
pub fn listen_after(delay_ms: u64) -> Result<()> {
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set")?
        .parse()
        .context("PORT is not a port number")?;
    std::thread::sleep(Duration::from_millis(delay_ms));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let at = util::wall_us();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{at}")?;
    out.flush()?;
    drop(out);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n");
    }
    Ok(())
}

/// The listen time a backend printed in `log`, waiting (bounded) for it to be written.
async fn listened_at(log: &Path) -> Result<i64> {
    let since = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(log) {
            if let Some(v) = text.lines().find_map(|l| l.strip_prefix(MARK)) {
                return v.trim().parse().context("unreadable listen time");
            }
        }
        if since.elapsed() > Duration::from_secs(10) {
            bail!("no listen time in {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spec(harness: &Path, delay_ms: u64) -> Value {
    json!({
        "executable": {"command": [harness, "listen-after", delay_ms.to_string()]},
        "grace_period_seconds": 3600,
    })
}

/// Spawns a backend that listens after `delay_ms`; its lateness in ms (Ready seen here
/// minus its listen), and its id.
async fn through_spawner(server: &Server, harness: &Path, delay_ms: u64) -> Result<(f64, String)> {
    let id = server.api.spawn(&spec(harness, delay_ms)).await?;
    let seen = server.api.wait_for(&id, "Ready", LIMIT).await?;
    let log = server
        .dir
        .join("data")
        .join("logs")
        .join(format!("{id}.log"));
    let listened = listened_at(&log).await?;
    Ok(((seen.wall_us - listened) as f64 / 1000.0, id))
}

/// The same backend launched by the harness and found by a connect probe with back-off
/// (a tenth of the time waited, 1–100 ms: Spawner's probe before the listen watch).
async fn by_connect_probe(ctx: &Ctx, harness: &Path, delay_ms: u64, log: &Path) -> Result<f64> {
    let port = util::free_port()?;
    let mut cmd = tokio::process::Command::new(harness);
    cmd.arg("listen-after")
        .arg(delay_ms.to_string())
        .env("PORT", port.to_string());
    let proc = Proc::start("listen-after", cmd, &ctx.token, log)?;
    util::wait_port(SocketAddr::from(([127, 0, 0, 1], port)), LIMIT).await?;
    let seen = util::wall_us();
    let listened = listened_at(log).await?;
    proc.stop().await;
    Ok((seen - listened) as f64 / 1000.0)
}

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    Server::phase(ctx, "readiness", async |_, server| {
        measure(ctx, server).await
    })
    .await
}

async fn measure(ctx: &Ctx, server: &Server) -> Result<Phase> {
    let harness: PathBuf = std::env::current_exe()?;
    let own_logs = server.dir.join("own-logs");
    std::fs::create_dir_all(&own_logs)?;

    // Fast starters, one at a time, alternating with the connect probe.
    let mut fast_via = Vec::new();
    let mut fast_probe = Vec::new();
    // A free port can be taken by another process before the harness's backend binds it
    // (the reason Spawner has a port range of its own); such runs are counted, not used.
    let mut probe_failed: Vec<String> = Vec::new();
    for i in 0..ctx.readiness_fast {
        let (late, id) = through_spawner(server, &harness, 5).await?;
        fast_via.push(late);
        server.api.terminate(&id, true).await?;
        let log = own_logs.join(format!("fast-{i}.log"));
        match by_connect_probe(ctx, &harness, 5, &log).await {
            Ok(late) => fast_probe.push(late),
            Err(e) => probe_failed.push(e.to_string()),
        }
    }

    // Slow starters (3 s), many at once, their listens spread over 100 ms; then the same
    // found by connect probes.
    let n = ctx.readiness_slow;
    let slow: Vec<Result<(f64, String)>> = futures_util::stream::iter(0..n)
        .map(|i| through_spawner(server, &harness, 3000 + (i as u64 * 100) / n as u64))
        .buffer_unordered(n)
        .collect()
        .await;
    let mut slow_via = Vec::new();
    for r in slow {
        slow_via.push(r?.0);
    }
    server.api.terminate_all().await?;
    let slow_probe: Vec<Result<f64>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let log = own_logs.join(format!("slow-{i}.log"));
            let harness = harness.clone();
            async move {
                by_connect_probe(ctx, &harness, 3000 + (i as u64 * 100) / n as u64, &log).await
            }
        })
        .buffer_unordered(n)
        .collect()
        .await;
    let slow_probe: Vec<f64> = slow_probe
        .into_iter()
        .filter_map(|r| r.map_err(|e| probe_failed.push(e.to_string())).ok())
        .collect();
    if let Some(e) = probe_failed.first() {
        eprintln!(
            "spawner-bench: {} connect-probe runs not counted, e.g.: {e}",
            probe_failed.len()
        );
    }

    // The cost of watching: the server's CPU over a few seconds with nothing starting, then
    // with `watched` backends started that do not listen within the window.
    let window = Duration::from_secs(5);
    let pid = server.proc.pid();
    let idle = cpu_share(pid, window).await?;
    let watched = ctx.readiness_watched;
    let sleeper = json!({
        "executable": {"command": ["sleep", "600"]},
        "grace_period_seconds": 3600,
    });
    let ids: Vec<Result<String>> = futures_util::stream::iter(0..watched)
        .map(|_| server.api.spawn(&sleeper))
        .buffer_unordered(32)
        .collect()
        .await;
    let ids = ids.into_iter().collect::<Result<Vec<_>>>()?;
    // Settled: every one Running (the launches' own CPU is not the watch's).
    let since = Instant::now();
    loop {
        // Ready too: on a shared machine, something else may listen on a sleeper's port.
        let running = crate::storm::count_state(&server.api, "Running").await?
            + crate::storm::count_state(&server.api, "Ready").await?;
        if running >= ids.len() {
            break;
        }
        if since.elapsed() > LIMIT {
            bail!("only {running} of {} sleepers Running", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let watch1 = thread_cpu(pid, "listen-watch");
    let t = Instant::now();
    let watching = cpu_share(pid, window).await?;
    let thread_share = thread_cpu(pid, "listen-watch")
        .saturating_sub(watch1)
        .as_secs_f64()
        / t.elapsed().as_secs_f64();
    server.api.terminate_all().await?;

    let fast_via = Dist::new(fast_via);
    let fast_probe = Dist::new(fast_probe);
    let slow_via = Dist::new(slow_via);
    let slow_probe = Dist::new(slow_probe);
    let pair = |d: &Dist| format!("{} / {} ms", fmt(d.pct(50.0)), fmt(d.pct(99.0)));
    let mut phase = Phase::new(
        "R. Readiness: Ready seen after the backend's own listen() (status stream), and the watch's cost",
    );
    phase.row(
        format!(
            "listens after 5 ms: Ready lateness p50 / p99 ({} spawns)",
            fast_via.len()
        ),
        pair(&fast_via),
    );
    phase.row(
        "listens after 5 ms: connect probe with back-off, lateness p50 / p99",
        pair(&fast_probe),
    );
    phase.row(
        format!("listens after 3 s: Ready lateness p50 / p99 ({n} at once)"),
        pair(&slow_via),
    );
    phase.row(
        "listens after 3 s: connect probe with back-off, lateness p50 / p99",
        pair(&slow_probe),
    );
    phase.row(
        "connect-probe runs not counted (their free port was taken before the bind)",
        probe_failed.len().to_string(),
    );
    phase.row(
        format!(
            "server CPU, nothing starting / {watched} starting (not listening); the watch thread's"
        ),
        format!(
            "{:.2} % / {:.2} %; {:.2} % of a core",
            idle * 100.0,
            watching * 100.0,
            thread_share * 100.0
        ),
    );
    for (name, d, p50, p99) in [
        ("5 ms starter", &fast_via, 1.0, 3.0),
        ("3 s starter", &slow_via, 1.0, 3.0),
    ] {
        phase.checks.push(Check::at_most(
            &format!("Ready lateness after listen, {name}, p50"),
            d.pct(50.0),
            p50,
            "ms",
            format!("≤ {p50} ms"),
        ));
        phase.checks.push(Check::at_most(
            &format!("Ready lateness after listen, {name}, p99"),
            d.pct(99.0),
            p99,
            "ms",
            format!("≤ {p99} ms"),
        ));
    }
    phase.checks.push(Check::at_most(
        &format!("watching {watched} starting backends, server CPU beyond idle"),
        (watching - idle) * 100.0,
        5.0,
        "% of a core",
        "< 5 %".into(),
    ));
    phase.json = json!({
        "fast_delay_ms": 5,
        "fast_lateness_ms": fast_via.json(),
        "fast_connect_probe_lateness_ms": fast_probe.json(),
        "slow_delay_ms": 3000,
        "slow_lateness_ms": slow_via.json(),
        "slow_connect_probe_lateness_ms": slow_probe.json(),
        "watched": watched,
        "cpu_share_idle": util::round3(idle),
        "cpu_share_watching": util::round3(watching),
        "cpu_share_watch_thread": util::round3(thread_share),
    });
    Ok(phase)
}

/// The share of a core process `pid` used over `window`.
async fn cpu_share(pid: i32, window: Duration) -> Result<f64> {
    let before = util::cpu_time(pid, false)?;
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let used = util::cpu_time(pid, false)?
        .checked_sub(before)
        .ok_or_else(|| anyhow!("CPU time went backwards"))?;
    Ok(used.as_secs_f64() / t.elapsed().as_secs_f64())
}

/// CPU time (user + system) of the threads of `pid` named `name`, from `/proc`.
fn thread_cpu(pid: i32, name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += num(11) + num(12);
    }
    Duration::from_micros(ticks * 1_000_000 / hz)
}
