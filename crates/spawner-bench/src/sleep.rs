//! Phase: sleep and wake (`idle_action: "sleep"`). What a wake adds to the backend's own
//! start-up (a request to a sleeping backend, held at the proxy until its first byte,
//! against the same command launched by itself); what a sleeping backend costs (processes,
//! and the server's memory once it restarts with only sleeping backends in its store); and
//! many sleeping backends woken by as many requests at once.

use crate::api::{Api, Server};
use crate::report::{fmt, Check, Phase};
use crate::util::{ms, Dist};
use crate::Ctx;
use anyhow::{anyhow, bail, Result};
use futures_util::StreamExt;
use http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);
/// Sleepers added, per sleeper woken at once, for the memory's second reading.
const MORE: usize = 3;

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    let dir = ctx.dir.join("sleep");
    let server = Server::start(ctx, &dir.join("spawner"), &ctx.token).await?;
    let mut phase = Phase::new("Sleep and wake: `spawner example-app`, idle_action sleep");
    let (server, result) = match wakes(ctx, &server, &mut phase).await {
        Ok(()) => many(ctx, server, &mut phase).await,
        Err(e) => (Some(server), Err(e)),
    };
    let stopped = match server {
        Some(s) => s.stop().await,
        None => Ok(()),
    };
    result?;
    stopped?;
    Ok(phase)
}

/// A backend that sleeps one second after its last request.
fn sleeper(ctx: &Ctx) -> Value {
    let mut spec = crate::spawn::backend_spec(ctx, 1);
    spec["idle_action"] = json!("sleep");
    spec
}

/// Spawns `n` sleepers (32 at a time), waits until each is Ready and then Sleeping.
async fn asleep(ctx: &Ctx, api: &Api, n: usize) -> Result<Vec<String>> {
    let spec = sleeper(ctx);
    let spec = &spec;
    let ids: Vec<Result<String>> = futures_util::stream::iter(0..n)
        .map(|_| async move {
            let id = api.spawn(spec).await?;
            api.wait_for(&id, "Ready", LIMIT).await?;
            Ok(id)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let ids = ids.into_iter().collect::<Result<Vec<_>>>()?;
    let slept: Vec<Result<()>> = futures_util::stream::iter(&ids)
        .map(|id| async move { sleeping(api, id).await })
        .buffer_unordered(64)
        .collect()
        .await;
    slept.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(ids)
}

/// Waits until the backend's state is Sleeping (its status stream replays from the start,
/// so the state is read instead).
async fn sleeping(api: &Api, id: &str) -> Result<()> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let status = api.get_json(&format!("/v1/backends/{id}/status")).await?;
        match status["state"].as_str() {
            Some("Sleeping") => return Ok(()),
            Some(s @ ("Swept" | "Failed" | "Terminated")) => {
                bail!("backend {id} ended {s} instead of sleeping")
            }
            _ if Instant::now() > deadline => bail!("backend {id} not Sleeping within {LIMIT:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One GET of the backend's page through the proxy: its time to the whole answer.
async fn get(api: &Api, id: &str) -> Result<f64> {
    let t = Instant::now();
    let (status, body) = api.call(Method::GET, &format!("/p/{id}/"), None).await?;
    if !status.is_success() {
        bail!(
            "GET /p/{id}/: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(ms(t.elapsed()))
}

/// Wakes one at a time, alternating with launches of the same command by itself.
async fn wakes(ctx: &Ctx, server: &Server, phase: &mut Phase) -> Result<()> {
    let api = &server.api;
    let rounds = ctx.sleep_rounds;
    let ids = asleep(ctx, api, rounds + 2).await?;
    let logs = server.dir.join("own-logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("own.log");
    // Warm-up: a launch and a wake, not counted.
    crate::spawn::own_start(ctx, &log).await?.1.stop().await;
    get(api, &ids[rounds]).await?;
    let mut own = Vec::with_capacity(rounds);
    let mut woken = Vec::with_capacity(rounds);
    let mut awake = Vec::with_capacity(rounds);
    for (i, id) in ids.iter().take(rounds).enumerate() {
        for step in [i % 2, 1 - i % 2] {
            if step == 0 {
                let (took, proc) = crate::spawn::own_start(ctx, &log).await?;
                own.push(ms(took));
                proc.stop().await;
            } else {
                woken.push(get(api, id).await?);
                awake.push(get(api, id).await?);
            }
        }
    }
    // Each woken backend's timeline: Sleeping, Waking, Ready again.
    let record = api.get_json(&format!("/v1/backends/{}", ids[0])).await?;
    let states: Vec<&str> = record["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["state"].as_str())
        .collect();
    // After the last sleep: Waking (the runtime's notes are more Waking events), then Ready.
    let after_sleep = states
        .iter()
        .rposition(|s| *s == "Sleeping")
        .map(|i| &states[i + 1..]);
    let whole = after_sleep.is_some_and(|w| {
        w.first() == Some(&"Waking")
            && w.last() == Some(&"Ready")
            && w[..w.len() - 1].iter().all(|s| *s == "Waking")
    });
    if !whole {
        bail!("a woken backend's events are {states:?}, not Sleeping, Waking, Ready");
    }
    let own = Dist::new(own);
    let woken = Dist::new(woken);
    let awake = Dist::new(awake);
    let added = woken.pct(50.0) - own.pct(50.0);
    phase.row(
        format!("own start-up p50 / p99 (launch until the port accepts, {rounds} runs)"),
        format!("{} / {} ms", fmt(own.pct(50.0)), fmt(own.pct(99.0))),
    );
    phase.row(
        format!("request to a sleeping backend until answered (the wake), p50 / p99 ({rounds} wakes one at a time)"),
        format!("{} / {} ms", fmt(woken.pct(50.0)), fmt(woken.pct(99.0))),
    );
    phase.row(
        "the same request to it awake, p50",
        format!("{} ms", fmt(awake.pct(50.0))),
    );
    phase.row(
        "what a wake adds to the own start-up, p50 / p99",
        format!(
            "{} / {} ms",
            fmt(added),
            fmt(woken.pct(99.0) - own.pct(99.0))
        ),
    );
    phase.checks.push(Check::at_most(
        "a wake adds to the backend's own start-up (p50)",
        added,
        5.0,
        "ms",
        "≤ 5 ms".into(),
    ));
    phase.json["wakes"] = json!({
        "rounds": rounds,
        "own_start_ms": own.json(),
        "wake_ms": woken.json(),
        "awake_request_ms": awake.json(),
    });
    for id in &ids {
        api.terminate(id, true).await?;
    }
    Ok(())
}

/// Processes whose parent is `pid`: the backends a server runs.
fn children(pid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid …: comm may hold spaces, so read after its ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<i32>().ok())
                == Some(pid)
        })
        .count()
}

/// Restarts the server and reads, once its store is adopted and its freed memory trimmed
/// (it trims every second), its RSS and how many processes it runs; checks that `expect`
/// backends are Sleeping (read after the RSS: a list's buffers would count).
async fn restarted(
    ctx: &Ctx,
    server: Server,
    expect: usize,
) -> (Option<Server>, Result<(u64, usize)>) {
    let server = match server.restart(ctx).await {
        Ok(s) => s,
        Err(e) => return (None, Err(e)),
    };
    let read = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = server.rss_kib()?;
        let procs = children(server.proc.pid());
        let sleeping = server.api.list_all("?state=Sleeping").await?.len();
        if sleeping != expect {
            bail!("{sleeping} of {expect} backends Sleeping after the restart");
        }
        Ok((rss, procs))
    }
    .await;
    (Some(server), read)
}

/// Many sleepers: what they cost, and `n` woken at once. The server is restarted (an
/// upgrade) with `n` sleeping backends and again with `4n`, so that its memory is that of a
/// server whose store holds only sleeping backends, not the high-water mark of having run
/// them; the memory a sleeping backend costs is the growth from `n` to `4n` per backend
/// (what is fixed or bounded, SQLite's page caches once full among it, is not counted),
/// shown beside the plain average over the empty server.
async fn many(ctx: &Ctx, server: Server, phase: &mut Phase) -> (Option<Server>, Result<()>) {
    let n = ctx.sleepers;
    let empty_rss = match server.rss_kib() {
        Ok(r) => r,
        Err(e) => return (Some(server), Err(e)),
    };
    let t0 = Instant::now();
    let ids = match asleep(ctx, &server.api, n).await {
        Ok(ids) => ids,
        Err(e) => return (Some(server), Err(e)),
    };
    let asleep_after = t0.elapsed();
    let procs_asleep = children(server.proc.pid());
    let (server, rss_n) = match restarted(ctx, server, n).await {
        (Some(s), Ok(r)) => (s, r),
        (s, r) => return (s, r.map(|_| ())),
    };
    if let Err(e) = asleep(ctx, &server.api, MORE * n).await {
        return (Some(server), Err(e));
    }
    let (server, rss_more) = match restarted(ctx, server, (MORE + 1) * n).await {
        (Some(s), Ok(r)) => (s, r),
        (s, r) => return (s, r.map(|_| ())),
    };
    let result = async {
        let (rss, procs_restarted) = (rss_n.0, rss_n.1 + rss_more.1);
        let average = (rss_more.0 as f64 - empty_rss as f64) / ((MORE + 1) * n) as f64;
        let per_backend = (rss_more.0 as f64 - rss as f64) / (MORE * n) as f64;

        // All woken at once, one request each.
        let t = Instant::now();
        let api = &server.api;
        let answers: Vec<Result<f64>> = futures_util::stream::iter(&ids)
            .map(|id| async move { get(api, id).await })
            .buffer_unordered(n)
            .collect()
            .await;
        let all_answered = t.elapsed();
        let failures: Vec<String> = answers
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
            .collect();
        let times = Dist::new(answers.into_iter().filter_map(Result::ok).collect());
        let ready = api.list_all("?state=Ready").await?.len();

        phase.row(
            format!("{n} backends spawned, Ready and asleep"),
            format!("{:.1} s", asleep_after.as_secs_f64()),
        );
        phase.row(
            "processes of the sleeping backends: before / after the restarts of the server",
            format!("{procs_asleep} / {procs_restarted}"),
        );
        phase.row(
            format!(
                "server RSS: empty / restarted with {n} sleeping backends / with {}",
                (MORE + 1) * n
            ),
            format!(
                "{} / {} / {} MiB",
                fmt(empty_rss as f64 / 1024.0),
                fmt(rss as f64 / 1024.0),
                fmt(rss_more.0 as f64 / 1024.0)
            ),
        );
        phase.row(
            format!(
                "server memory per sleeping backend: from {n} to {} / average over the empty server",
                (MORE + 1) * n
            ),
            format!("{} / {} KiB", fmt(per_backend), fmt(average)),
        );
        phase.row(
            format!("{n} requests at once, one per sleeping backend: answered / lost"),
            format!("{} / {}", times.len(), failures.len()),
        );
        phase.row(
            "…their time to the answer p50 / p99 / all answered",
            format!(
                "{} / {} ms / {:.1} s",
                fmt(times.pct(50.0)),
                fmt(times.pct(99.0)),
                all_answered.as_secs_f64()
            ),
        );
        phase.checks.push(Check::at_most(
            "processes of sleeping backends",
            (procs_asleep + procs_restarted) as f64,
            0.0,
            "",
            "none".into(),
        ));
        phase.checks.push(Check::at_most(
            "server memory per sleeping backend",
            per_backend,
            2.0,
            "KiB",
            "< 2 KiB".into(),
        ));
        phase.checks.push(Check::at_most(
            &format!("requests lost of {n} waking {n} backends at once"),
            failures.len() as f64,
            0.0,
            "",
            "none".into(),
        ));
        phase.json["many"] = json!({
            "backends": n,
            "asleep_after_s": crate::util::round3(asleep_after.as_secs_f64()),
            "processes_asleep": procs_asleep,
            "processes_after_restart": procs_restarted,
            "rss_empty_kib": empty_rss,
            "rss_sleeping_kib": rss,
            "rss_more_sleeping_kib": rss_more.0,
            "more_sleeping": MORE * n,
            "kib_per_sleeping_backend": crate::util::round3(per_backend),
            "kib_per_sleeping_backend_average": crate::util::round3(average),
            "woken_answered": times.len(),
            "woken_lost": failures.len(),
            "first_failures": failures.iter().take(5).collect::<Vec<_>>(),
            "woken_ms": times.json(),
            "all_answered_s": crate::util::round3(all_answered.as_secs_f64()),
            "ready_after": ready,
        });
        if times.len() == 0 {
            return Err(anyhow!("no request to a sleeping backend was answered"));
        }
        Ok(())
    }
    .await;
    (Some(server), result)
}
