//! Phase 1: HTTP throughput and latency with keep-alive, side by side: straight to an nginx
//! backend spawned through Spawner, through Spawner's proxy, through nginx as a reverse
//! proxy, and through HAProxy. The `bodies` phase runs the same four paths with long bodies
//! (1 MiB downloads and uploads) and with 1,000 connections.

use crate::api::Server;
use crate::report::{fmt, Check, Phase};
use crate::util::{self, median, Proc};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The four ways to the same backend.
const PATHS: [&str; 4] = ["direct", "spawner", "nginx", "haproxy"];

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct Wrk {
    rps: f64,
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    Server::phase(ctx, "proxy", async |dir, server| {
        let paths = start_paths(ctx, dir, server).await?;
        measure(ctx, &paths).await
    })
    .await
}

pub async fn run_bodies(ctx: &Ctx) -> Result<Phase> {
    Server::phase(ctx, "bodies", async |dir, server| {
        let paths = start_paths(ctx, dir, server).await?;
        measure_bodies(ctx, dir, &paths).await
    })
    .await
}

/// The four ways to one backend, ready: each path's base URL (to which a file's path is
/// added), and the process that does each path's proxying.
struct Paths {
    bases: [String; 4],
    proxies: [Option<(i32, bool)>; 4],
    _peers: (Proc, Proc),
}

fn nginx_user() -> &'static str {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Workers would otherwise switch to `nobody`, who may not read the run directory.
        "user root root;\n"
    } else {
        ""
    }
}

/// Starts nginx in the foreground with `conf`, its files in `dir` named after `file`.
pub(crate) fn start_nginx(
    ctx: &Ctx,
    dir: &Path,
    conf: &Path,
    label: &str,
    file: &str,
) -> Result<Proc> {
    let mut cmd = tokio::process::Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join(format!("{file}-error.log")));
    cmd.arg("-c").arg(conf).arg("-g").arg("daemon off;");
    Proc::start(label, cmd, &ctx.token, &dir.join(format!("{file}.out")))
}

pub(crate) fn nginx_common(dir: &Path, name: &str, workers: &str) -> String {
    let d = dir.display();
    format!(
        "{user}worker_processes {workers};\npid {d}/{name}.pid;\nerror_log {d}/{name}-error.log warn;\n\
         events {{ worker_connections 8192; }}\n",
        user = nginx_user()
    )
}

async fn start_paths(ctx: &Ctx, dir: &Path, server: &Server) -> Result<Paths> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    // A small static response: 128 bytes of body; and a long one of 1 MiB.
    std::fs::write(www.join("index.html"), format!("{}\n", "x".repeat(127)))?;
    std::fs::write(www.join("big.bin"), vec![b'b'; 1 << 20])?;
    let d = dir.display();

    // The backend: nginx serving the file, spawned through the API on a port of our choice.
    let backend_port = util::free_port()?;
    let backend_conf = dir.join("backend.conf");
    std::fs::write(
        &backend_conf,
        format!(
            "{common}http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
             keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  \
             client_max_body_size 4m;\n  client_body_buffer_size 2m;\n  \
             server {{\n    listen 127.0.0.1:{backend_port};\n    root {d}/www;\n    \
             location = /upload {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            common = nginx_common(dir, "backend", &ctx.backend_workers.to_string())
        ),
    )?;
    let spec = json!({
        "executable": {
            "command": ["nginx", "-p", dir, "-e", dir.join("backend-error.log"), "-c", backend_conf, "-g", "daemon off;"],
            "port": backend_port,
        },
        "grace_period_seconds": 3600,
    });
    let id = server
        .api
        .spawn_ready(&spec, Duration::from_secs(20))
        .await?;

    // nginx as the reverse proxy, with keep-alive to the backend.
    let nginx_port = util::free_port()?;
    let proxy_conf = dir.join("proxy.conf");
    std::fs::write(
        &proxy_conf,
        format!(
            "{common}http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
             keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  client_max_body_size 4m;\n  \
             upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 256; keepalive_requests 100000000; }}\n  \
             server {{\n    listen 127.0.0.1:{nginx_port};\n    location / {{\n      proxy_pass http://backend;\n      \
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      \
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Forwarded-Proto $scheme;\n      \
             proxy_set_header X-Forwarded-Host $host;\n    }}\n  }}\n}}\n",
            common = nginx_common(dir, "proxy", "auto")
        ),
    )?;
    let mut nginx = start_nginx(ctx, dir, &proxy_conf, "nginx (reverse proxy)", "proxy")?;

    // HAProxy, likewise.
    let haproxy_port = util::free_port()?;
    let haproxy_conf = dir.join("haproxy.cfg");
    std::fs::write(
        &haproxy_conf,
        format!(
            "global\n  maxconn 4096\n  nbthread {threads}\n\ndefaults\n  mode http\n  timeout connect 5s\n  \
             timeout client 300s\n  timeout server 300s\n  option http-keep-alive\n  option forwardfor\n\n\
             frontend fe\n  bind 127.0.0.1:{haproxy_port}\n  default_backend be\n\n\
             backend be\n  http-reuse always\n  server s1 127.0.0.1:{backend_port}\n",
            threads = ctx.cores
        ),
    )?;
    let mut cmd = tokio::process::Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&haproxy_conf);
    let mut haproxy = Proc::start("haproxy", cmd, &ctx.token, &dir.join("haproxy.out"))?;

    nginx
        .wait_port(([127, 0, 0, 1], nginx_port).into(), Duration::from_secs(10))
        .await?;
    haproxy
        .wait_port(
            ([127, 0, 0, 1], haproxy_port).into(),
            Duration::from_secs(10),
        )
        .await?;

    Ok(Paths {
        bases: [
            format!("http://127.0.0.1:{backend_port}"),
            format!("http://{}/p/{id}", server.api.addr),
            format!("http://127.0.0.1:{nginx_port}"),
            format!("http://127.0.0.1:{haproxy_port}"),
        ],
        // Spawner's server alone (its children are the backends), nginx's master with its
        // workers, HAProxy's one process.
        proxies: [
            None,
            Some((server.proc.pid(), false)),
            Some((nginx.pid(), true)),
            Some((haproxy.pid(), false)),
        ],
        _peers: (nginx, haproxy),
    })
}

/// One workload of the bodies phase.
struct Load {
    name: &'static str,
    key: &'static str,
    connections: &'static str,
    path: &'static str,
    script: Option<PathBuf>,
}

async fn measure_bodies(ctx: &Ctx, dir: &Path, paths: &Paths) -> Result<Phase> {
    let upload = dir.join("upload.lua");
    std::fs::write(
        &upload,
        "wrk.method = \"POST\"\nwrk.body = string.rep(\"u\", 1048576)\n\
         wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n",
    )?;
    let loads = [
        Load {
            name: "1 MiB responses (GET), 8 connections",
            key: "get_1mib_8",
            connections: "8",
            path: "/big.bin",
            script: None,
        },
        Load {
            name: "1 MiB uploads (POST), 8 connections",
            key: "post_1mib_8",
            connections: "8",
            path: "/upload",
            script: Some(upload),
        },
        Load {
            name: "128-byte responses, 1,000 connections",
            key: "get_128b_1000",
            connections: "1000",
            path: "/index.html",
            script: None,
        },
    ];
    let mut phase = Phase::new("1b. Proxy: long bodies and many connections");
    let mut results = serde_json::Map::new();
    for load in &loads {
        let urls = paths.bases.clone().map(|b| format!("{b}{}", load.path));
        let shape = ["-t", "2", "-c", load.connections];
        let script = load.script.as_deref();
        for url in &urls {
            wrk_script(&shape, 1, url, script).await?;
        }
        let mut runs: Vec<Vec<Wrk>> = vec![Vec::new(); PATHS.len()];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); PATHS.len()];
        for round in 0..ctx.rounds {
            for k in 0..PATHS.len() {
                let i = (k + round) % PATHS.len();
                let proxy = paths.proxies[i];
                let before = proxy
                    .map(|(pid, kids)| util::cpu_time(pid, kids))
                    .transpose()?;
                let run = wrk_script(&shape, ctx.wrk_seconds, &urls[i], script).await?;
                if let (Some((pid, kids)), Some(before)) = (proxy, before) {
                    let used = util::cpu_time(pid, kids)?.saturating_sub(before);
                    cpu[i].push(used.as_secs_f64() * 1e6 / run.requests.max(1) as f64);
                }
                runs[i].push(run);
            }
        }
        let ratio = |a: usize, b: usize| {
            median(
                &(0..ctx.rounds)
                    .map(|r| runs[a][r].rps / runs[b][r].rps)
                    .collect::<Vec<_>>(),
            )
        };
        let mut per_path = serde_json::Map::new();
        let mut cells = Vec::new();
        for (i, name) in PATHS.iter().enumerate() {
            let rps = median(&runs[i].iter().map(|w| w.rps).collect::<Vec<_>>());
            let p99 = median(&runs[i].iter().map(|w| w.p99_ms).collect::<Vec<_>>());
            let errors: u64 = runs[i].iter().map(|w| w.errors).sum();
            let cpu_us = (!cpu[i].is_empty()).then(|| median(&cpu[i]));
            cells.push(format!(
                "{name} {} req/s (p99 {} ms{}{})",
                fmt(rps),
                fmt(p99),
                cpu_us
                    .map(|c| format!(", {} µs CPU", fmt(c)))
                    .unwrap_or_default(),
                if errors > 0 {
                    format!(", {errors} errors")
                } else {
                    String::new()
                }
            ));
            per_path.insert(
                name.to_string(),
                json!({
                    "rps_median": util::round3(rps),
                    "rps_runs": runs[i].iter().map(|w| util::round3(w.rps)).collect::<Vec<_>>(),
                    "p99_ms": util::round3(p99),
                    "proxy_cpu_us_per_request": cpu_us.map(util::round3),
                    "errors": errors,
                }),
            );
        }
        let (b_a, b_c, b_d) = (ratio(1, 0), ratio(1, 2), ratio(1, 3));
        phase.row(load.name.to_string(), cells.join("; "));
        phase.row(
            format!("{}: ratio spawner / direct; / nginx; / haproxy", load.name),
            format!("{}; {}; {}", fmt(b_a), fmt(b_c), fmt(b_d)),
        );
        if load.key != "get_128b_1000" {
            phase.checks.push(Check::at_least(
                &format!("{}: req/s ÷ HAProxy", load.name),
                b_d,
                1.1,
                "×",
                "≥ 1.1×".into(),
            ));
        }
        results.insert(
            load.key.to_string(),
            json!({
                "paths": Value::Object(per_path),
                "ratio_spawner_direct": util::round3(b_a),
                "ratio_spawner_nginx": util::round3(b_c),
                "ratio_spawner_haproxy": util::round3(b_d),
            }),
        );
    }
    results.insert("wrk_seconds".into(), json!(ctx.wrk_seconds));
    results.insert("rounds".into(), json!(ctx.rounds));
    phase.json = Value::Object(results);
    Ok(phase)
}

async fn measure(ctx: &Ctx, paths: &Paths) -> Result<Phase> {
    let urls = paths.bases.clone().map(|b| format!("{b}/index.html"));
    let conns = ctx.wrk_connections.to_string();
    let loaded = ["-t", "2", "-c", conns.as_str()];
    let single = ["-t", "1", "-c", "1"];

    // Warm-up: connections, pools, page cache.
    for url in &urls {
        wrk(&single, 1, url).await?;
    }
    let proxies = paths.proxies;
    let mut load: Vec<Vec<Wrk>> = vec![Vec::new(); PATHS.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); PATHS.len()];
    let mut solo: Vec<Vec<Wrk>> = vec![Vec::new(); PATHS.len()];
    for round in 0..ctx.rounds {
        // Rotate the order so that no path always runs first in a round.
        for k in 0..PATHS.len() {
            let i = (k + round) % PATHS.len();
            let before = proxies[i]
                .map(|(pid, kids)| util::cpu_time(pid, kids))
                .transpose()?;
            let run = wrk(&loaded, ctx.wrk_seconds, &urls[i]).await?;
            if let (Some((pid, kids)), Some(before)) = (proxies[i], before) {
                let used = util::cpu_time(pid, kids)?.saturating_sub(before);
                cpu[i].push(used.as_secs_f64() * 1e6 / run.requests.max(1) as f64);
            }
            load[i].push(run);
        }
        for k in 0..PATHS.len() {
            let i = (k + round) % PATHS.len();
            solo[i].push(wrk(&single, ctx.wrk_solo_seconds, &urls[i]).await?);
        }
    }

    let med = |runs: &[Wrk], f: fn(&Wrk) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let mut phase = Phase::new("1. Proxy: HTTP keep-alive, 128-byte static file from nginx");
    let mut paths = serde_json::Map::new();
    for (i, name) in PATHS.iter().enumerate() {
        let rps = med(&load[i], |w| w.rps);
        let p50 = med(&load[i], |w| w.p50_ms);
        let p99 = med(&load[i], |w| w.p99_ms);
        let s50 = med(&solo[i], |w| w.p50_ms);
        let s99 = med(&solo[i], |w| w.p99_ms);
        let errors: u64 = load[i].iter().chain(&solo[i]).map(|w| w.errors).sum();
        phase.row(
            format!(
                "{name}: req/s; p50 / p99 under load ({} conns)",
                ctx.wrk_connections
            ),
            format!("{} req/s; {} / {} ms", fmt(rps), fmt(p50), fmt(p99)),
        );
        phase.row(
            format!("{name}: p50 / p99, one connection"),
            format!("{} / {} ms", fmt(s50), fmt(s99)),
        );
        let cpu_us = (!cpu[i].is_empty()).then(|| median(&cpu[i]));
        if let Some(us) = cpu_us {
            phase.row(
                format!("{name}: proxy CPU time per request under load"),
                format!("{} µs", fmt(us)),
            );
        }
        if errors > 0 {
            phase.row(format!("{name}: errors"), errors.to_string());
        }
        paths.insert(
            name.to_string(),
            json!({
                "rps_median": util::round3(rps),
                "rps_runs": load[i].iter().map(|w| util::round3(w.rps)).collect::<Vec<_>>(),
                "loaded_p50_ms": util::round3(p50),
                "loaded_p99_ms": util::round3(p99),
                "single_p50_ms": util::round3(s50),
                "single_p99_ms": util::round3(s99),
                "single_p99_runs_ms": solo[i].iter().map(|w| util::round3(w.p99_ms)).collect::<Vec<_>>(),
                "proxy_cpu_us_per_request": cpu_us.map(util::round3),
                "proxy_cpu_us_per_request_runs": cpu[i].iter().map(|&v| util::round3(v)).collect::<Vec<_>>(),
                "errors": errors,
            }),
        );
    }
    // Ratios per round (same round, same conditions), then their median.
    let ratio = |a: usize, b: usize| {
        median(
            &(0..ctx.rounds)
                .map(|r| load[a][r].rps / load[b][r].rps)
                .collect::<Vec<_>>(),
        )
    };
    let (b_a, b_c, b_d) = (ratio(1, 0), ratio(1, 2), ratio(1, 3));
    let added_p99 = median(
        &(0..ctx.rounds)
            .map(|r| solo[1][r].p99_ms - solo[0][r].p99_ms)
            .collect::<Vec<_>>(),
    );
    let added_p50 = median(
        &(0..ctx.rounds)
            .map(|r| solo[1][r].p50_ms - solo[0][r].p50_ms)
            .collect::<Vec<_>>(),
    );
    let nginx_added_p99 = median(
        &(0..ctx.rounds)
            .map(|r| solo[2][r].p99_ms - solo[0][r].p99_ms)
            .collect::<Vec<_>>(),
    );
    phase.row("ratio req/s spawner / direct (b/a)", fmt(b_a));
    phase.row("ratio req/s spawner / nginx (b/c)", fmt(b_c));
    phase.row("ratio req/s spawner / haproxy (b/d)", fmt(b_d));
    // CPU per request is steadier than req/s on a shared machine: it does not depend on
    // what else got the cores during the run.
    let cpu_ratio = |other: usize| {
        median(
            &cpu[1]
                .iter()
                .zip(&cpu[other])
                .map(|(s, o)| s / o)
                .collect::<Vec<_>>(),
        )
    };
    let (cpu_c, cpu_d) = (cpu_ratio(2), cpu_ratio(3));
    phase.row(
        "ratio proxy CPU per request spawner / nginx; spawner / haproxy",
        format!("{}; {}", fmt(cpu_c), fmt(cpu_d)),
    );
    phase.row(
        "added latency, one connection: spawner p50 / p99 (nginx p99)",
        format!(
            "{} / {} ms ({} ms)",
            fmt(added_p50),
            fmt(added_p99),
            fmt(nginx_added_p99)
        ),
    );
    phase.checks.push(Check::at_least(
        "proxy req/s ÷ nginx reverse proxy",
        b_c,
        1.0,
        "×",
        "≥ 1.0×".into(),
    ));
    phase.checks.push(Check::at_least(
        "proxy req/s ÷ direct",
        b_a,
        0.6,
        "×",
        "≥ 0.6×".into(),
    ));
    phase.checks.push(Check::at_most(
        "proxy added p99 latency",
        added_p99,
        0.3,
        "ms",
        "≤ 0.3 ms".into(),
    ));
    phase.json = json!({
        "paths": Value::Object(paths),
        "ratio_spawner_direct": util::round3(b_a),
        "ratio_spawner_nginx": util::round3(b_c),
        "ratio_spawner_haproxy": util::round3(b_d),
        "ratio_cpu_per_request_spawner_nginx": util::round3(cpu_c),
        "ratio_cpu_per_request_spawner_haproxy": util::round3(cpu_d),
        "added_p50_ms": util::round3(added_p50),
        "added_p99_ms": util::round3(added_p99),
        "nginx_added_p99_ms": util::round3(nginx_added_p99),
        "wrk_connections": ctx.wrk_connections,
        "wrk_seconds": ctx.wrk_seconds,
        "rounds": ctx.rounds,
    });
    Ok(phase)
}

/// Runs wrk and reads its figures.
async fn wrk(shape: &[&str], seconds: u64, url: &str) -> Result<Wrk> {
    wrk_script(shape, seconds, url, None).await
}

/// A wrk run, with a Lua script that shapes its requests (a method and a body).
async fn wrk_script(shape: &[&str], seconds: u64, url: &str, script: Option<&Path>) -> Result<Wrk> {
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.args(shape)
        .arg("-d")
        .arg(format!("{seconds}s"))
        .arg("--latency");
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(seconds + 30),
        cmd.arg(url).kill_on_drop(true).output(),
    )
    .await
    .context("wrk did not finish")??;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output for {url}:\n{text}"))
}

fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut rps = None;
    let mut requests = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0u64;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            requests = n.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    match (rps, requests, p50, p99) {
        (Some(rps), Some(requests), Some(p50_ms), Some(p99_ms)) => Ok(Wrk {
            rps,
            requests,
            p50_ms,
            p99_ms,
            errors,
        }),
        _ => bail!("no Requests/sec, request count or latency distribution"),
    }
}

/// `123.45us`, `1.2ms`, `2.00s` → milliseconds.
fn duration_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|n| n * scale)
}

/// The access phase: the proxy phase's load through Spawner to two twins of the nginx
/// backend, one open and one with per-user access (`"access": {"mode": "token"}`, each
/// request carrying the access cookie, which the proxy verifies and strips, and the
/// identity headers it adds), beside nginx and HAProxy in front of the open twin.
pub async fn run_access(ctx: &Ctx) -> Result<Phase> {
    Server::phase(ctx, "access", async |dir, server| {
        let paths = start_paths(ctx, dir, server).await?;
        let (id, cookie) = start_token_twin(ctx, dir, server).await?;
        measure_access(ctx, &paths, &id, &cookie, server).await
    })
    .await
}

/// A second nginx backend like the first, spawned with token access; its id, and the
/// access cookie (`name=value`) a connect URL is exchanged for, by path as a client that is
/// no browser does.
async fn start_token_twin(ctx: &Ctx, dir: &Path, server: &Server) -> Result<(String, String)> {
    let d = dir.display();
    let port = util::free_port()?;
    let conf = dir.join("twin.conf");
    std::fs::write(
        &conf,
        format!(
            "{common}http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
             keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  \
             server {{\n    listen 127.0.0.1:{port};\n    root {d}/www;\n  }}\n}}\n",
            common = nginx_common(dir, "twin", &ctx.backend_workers.to_string())
        ),
    )?;
    let spec = json!({
        "executable": {
            "command": ["nginx", "-p", dir, "-e", dir.join("twin-error.log"), "-c", conf, "-g", "daemon off;"],
            "port": port,
        },
        "grace_period_seconds": 3600,
        "access": {"mode": "token", "user": "bench", "user_data": {"plan": "load"}},
    });
    let (status, body) = server
        .api
        .call(http::Method::POST, "/v1/backends", Some(&spec))
        .await?;
    if !status.is_success() {
        bail!(
            "spawn refused: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let answer: Value = serde_json::from_slice(&body)?;
    let id = answer["id"].as_str().context("no id")?.to_string();
    let url = answer["connect_url"].as_str().context("no connect_url")?;
    let token = url.split("spawner_token=").nth(1).context("no token")?;
    server
        .api
        .wait_for(&id, "Ready", Duration::from_secs(20))
        .await?;
    // The exchange, by path: a raw request, to read its Set-Cookie.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(server.api.addr).await?;
    conn.write_all(
        format!(
            "GET /p/{id}/index.html?spawner_token={token} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.api.addr
        )
        .as_bytes(),
    )
    .await?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await?;
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .with_context(|| format!("the exchange gave no cookie:\n{answer}"))?
        .to_string();
    Ok((id, cookie))
}

async fn measure_access(
    ctx: &Ctx,
    paths: &Paths,
    id: &str,
    cookie: &str,
    server: &Server,
) -> Result<Phase> {
    const NAMES: [&str; 4] = ["spawner, open", "spawner, access", "nginx", "haproxy"];
    let urls = [
        format!("{}/index.html", paths.bases[1]),
        format!("http://{}/p/{id}/index.html", server.api.addr),
        format!("{}/index.html", paths.bases[2]),
        format!("{}/index.html", paths.bases[3]),
    ];
    let header = format!("Cookie: {cookie}");
    let conns = ctx.wrk_connections.to_string();
    let plain = ["-t", "2", "-c", conns.as_str()];
    let with_cookie = ["-t", "2", "-c", conns.as_str(), "-H", header.as_str()];
    let shape = |i: usize| if i == 1 { &with_cookie[..] } else { &plain[..] };
    // The cookie admits (a refusal would measure 401s).
    let check = wrk(&["-t", "1", "-c", "1", "-H", header.as_str()], 1, &urls[1]).await?;
    if check.errors > 0 {
        bail!(
            "the access cookie was refused ({} non-2xx answers)",
            check.errors
        );
    }
    for (i, url) in urls.iter().enumerate() {
        wrk(shape(i), 1, url).await?;
    }
    let mut runs: Vec<Vec<Wrk>> = vec![Vec::new(); NAMES.len()];
    // Spawner's CPU time per request, open and with access: steadier than req/s on a
    // shared machine.
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); 2];
    let pid = server.proc.pid();
    for round in 0..ctx.rounds {
        for k in 0..NAMES.len() {
            let i = (k + round) % NAMES.len();
            let before = util::cpu_time(pid, false)?;
            let run = wrk(shape(i), ctx.wrk_seconds, &urls[i]).await?;
            if i < 2 {
                let used = util::cpu_time(pid, false)?.saturating_sub(before);
                cpu[i].push(used.as_secs_f64() * 1e6 / run.requests.max(1) as f64);
            }
            runs[i].push(run);
        }
    }
    let cpu_open = median(&cpu[0]);
    let cpu_access = median(&cpu[1]);
    let ratio = |a: usize, b: usize| {
        median(
            &(0..ctx.rounds)
                .map(|r| runs[a][r].rps / runs[b][r].rps)
                .collect::<Vec<_>>(),
        )
    };
    let mut phase = Phase::new("1c. Proxy with per-user access (cookie verified per request)");
    let mut per_path = serde_json::Map::new();
    for (i, name) in NAMES.iter().enumerate() {
        let rps = median(&runs[i].iter().map(|w| w.rps).collect::<Vec<_>>());
        let p99 = median(&runs[i].iter().map(|w| w.p99_ms).collect::<Vec<_>>());
        let errors: u64 = runs[i].iter().map(|w| w.errors).sum();
        phase.row(
            format!("{name}: req/s; p99 ({} conns)", ctx.wrk_connections),
            format!(
                "{} req/s; {} ms{}",
                fmt(rps),
                fmt(p99),
                if errors > 0 {
                    format!("; {errors} errors")
                } else {
                    String::new()
                }
            ),
        );
        per_path.insert(
            name.to_string(),
            json!({
                "rps_median": util::round3(rps),
                "rps_runs": runs[i].iter().map(|w| util::round3(w.rps)).collect::<Vec<_>>(),
                "p99_ms": util::round3(p99),
                "errors": errors,
            }),
        );
    }
    let (on_off, on_nginx, on_haproxy) = (ratio(1, 0), ratio(1, 2), ratio(1, 3));
    phase.row(
        "spawner's CPU time per request: open; access".to_string(),
        format!("{} µs; {} µs", fmt(cpu_open), fmt(cpu_access)),
    );
    phase.row(
        "ratio access on / off; on / nginx; on / haproxy".to_string(),
        format!("{}; {}; {}", fmt(on_off), fmt(on_nginx), fmt(on_haproxy)),
    );
    phase.checks.push(Check::at_least(
        "req/s with access on ÷ off",
        on_off,
        0.95,
        "×",
        "≥ 0.95×".into(),
    ));
    phase.checks.push(Check::at_least(
        "req/s with access on ÷ nginx",
        on_nginx,
        1.0,
        "×",
        "≥ 1×".into(),
    ));
    phase.checks.push(Check::at_least(
        "req/s with access on ÷ HAProxy",
        on_haproxy,
        1.0,
        "×",
        "≥ 1×".into(),
    ));
    phase.json = json!({
        "paths": Value::Object(per_path),
        "ratio_access_on_off": util::round3(on_off),
        "ratio_access_nginx": util::round3(on_nginx),
        "ratio_access_haproxy": util::round3(on_haproxy),
        "spawner_cpu_us_per_request_open": util::round3(cpu_open),
        "spawner_cpu_us_per_request_access": util::round3(cpu_access),
        "spawner_cpu_us_runs_open": cpu[0].iter().map(|&v| util::round3(v)).collect::<Vec<_>>(),
        "spawner_cpu_us_runs_access": cpu[1].iter().map(|&v| util::round3(v)).collect::<Vec<_>>(),
        "wrk_seconds": ctx.wrk_seconds,
        "rounds": ctx.rounds,
    });
    Ok(phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 1 connections\n\
                   \x20 Latency Distribution\n     50%   45.00us\n     75%   50.00us\n     90%   60.00us\n     99%    1.20ms\n\
                   \x20 1000 requests in 1.00s, 1.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
                   \x20 Non-2xx or 3xx responses: 4\nRequests/sec:  22222.50\nTransfer/sec:      3.00MB\n";
        let w = parse_wrk(out).unwrap();
        assert_eq!(w.rps, 22222.5);
        assert_eq!(w.requests, 1000);
        assert!((w.p50_ms - 0.045).abs() < 1e-9);
        assert!((w.p99_ms - 1.2).abs() < 1e-9);
        assert_eq!(w.errors, 7);
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert!(parse_wrk("nothing").is_err());
    }
}
