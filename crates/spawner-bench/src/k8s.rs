//! Phase k8s: Kubernetes mode on the real API server of the tests
//! (scripts/k8s-test-apiserver.sh: etcd, kube-apiserver, kube-controller-manager, no kubelet).
//! `spawner controller` and `spawner api` run with their service accounts' tokens under
//! deploy/kubernetes's RBAC, as in a cluster. N SessionLivedBackends are created through the
//! API: how many creates per second it accepts, how long each takes from the API's answer
//! to Constructed (the controller's reconcile: status write, Pod, Service), and the memory
//! of both processes with N objects and Pods.

use crate::api::Api;
use crate::apiserver_requests::Counts;
use crate::report::{fmt, Phase};
use crate::util::{self, Dist, Proc};
use crate::Ctx;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use http::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Command;

const NAMESPACE: &str = "bench";
/// Creates in flight at once.
const IN_FLIGHT: usize = 32;

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .context("running kubectl (scripts/k8s-test-apiserver.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The test API server, stopped when dropped.
struct Server {
    dir: PathBuf,
    script: PathBuf,
}

impl Server {
    async fn start(dir: &Path) -> Result<Server> {
        let script = std::env::current_dir()?.join("scripts/k8s-test-apiserver.sh");
        if !script.exists() {
            bail!(
                "no {}: run the k8s phase from the repository (scripts/bench)",
                script.display()
            );
        }
        let out = Command::new(&script)
            .arg("start")
            .arg(dir)
            .output()
            .await
            .context("starting the API server")?;
        if !out.status.success() {
            bail!(
                "scripts/k8s-test-apiserver.sh start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Server {
            dir: dir.to_path_buf(),
            script,
        })
    }

    fn admin(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// A kubeconfig for the service account `sa` of the bench namespace.
async fn kubeconfig(server: &Server, dir: &Path, sa: &str) -> Result<PathBuf> {
    let admin = std::fs::read_to_string(server.admin())?;
    let field = |key: &str| {
        admin
            .lines()
            .find_map(|l| l.split_once(&format!("{key}: \"")))
            .and_then(|(_, rest)| rest.split('"').next())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {key} in the admin kubeconfig"))
    };
    let (url, ca) = (field("server")?, field("certificate-authority")?);
    let token = kubectl(
        &server.admin(),
        &["create", "token", sa, "-n", NAMESPACE, "--duration", "2h"],
    )
    .await?;
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster: {{server: \"{url}\", certificate-authority: \"{ca}\"}}\nusers:\n- name: {sa}\n  user: {{token: \"{}\"}}\ncontexts:\n- name: b\n  context: {{cluster: b, user: {sa}, namespace: {NAMESPACE}}}\ncurrent-context: b\n",
            token.trim()
        ),
    )?;
    Ok(path)
}

pub async fn run(ctx: &Ctx) -> Result<Phase> {
    let dir = ctx.dir.join("k8s");
    std::fs::create_dir_all(&dir)?;
    let server = Server::start(&dir.join("apiserver")).await?;
    let admin = server.admin();
    kubectl(&admin, &["create", "namespace", NAMESPACE]).await?;
    let rbac = dir.join("rbac");
    std::fs::create_dir_all(&rbac)?;
    std::fs::copy("deploy/kubernetes/rbac.yaml", rbac.join("rbac.yaml"))
        .context("deploy/kubernetes/rbac.yaml")?;
    std::fs::write(
        rbac.join("kustomization.yaml"),
        format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {NAMESPACE}\nresources: [rbac.yaml]\n"),
    )?;
    kubectl(&admin, &["apply", "-k", &rbac.to_string_lossy()]).await?;
    // Pod admission needs the namespace's default service account.
    let since = Instant::now();
    while kubectl(
        &admin,
        &["get", "serviceaccount", "default", "-n", NAMESPACE],
    )
    .await
    .is_err()
    {
        if since.elapsed() > Duration::from_secs(60) {
            bail!("no default service account in {NAMESPACE}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let controller_kc = kubeconfig(&server, &dir, "spawner-controller").await?;
    let start_controller = |name: &str| -> Result<Proc> {
        let mut cmd = Command::new(&ctx.spawner);
        cmd.args(["controller", "--namespace", NAMESPACE, "--leader-elect"])
            // Ended objects go at once, so that a round's deletions are over before the next.
            .args(["--retention", "0"])
            .env("KUBECONFIG", &controller_kc)
            .env("POD_NAME", name)
            .env("SPAWNER_LOG", "info");
        let log = dir.join(format!("{name}.log"));
        Proc::start(name, cmd, &ctx.token, &log)
    };
    let mut controller = start_controller("controller-a")?;
    wait_holder(&admin, "controller-a").await?;
    let port = util::free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut cmd = Command::new(&ctx.spawner);
    cmd.args([
        "api",
        "--listen",
        &addr.to_string(),
        "--namespace",
        NAMESPACE,
        "--token",
        crate::api::TOKEN,
    ])
    .env(
        "KUBECONFIG",
        kubeconfig(&server, &dir, "spawner-api").await?,
    )
    .env("SPAWNER_KEY_SECRET", "bench")
    .env("SPAWNER_LOG", "warn");
    let mut api_proc = Proc::start("api", cmd, &ctx.token, &dir.join("api.log"))?;
    api_proc.wait_port(addr, Duration::from_secs(30)).await?;
    let mut cmd = Command::new(&ctx.spawner);
    cmd.args([
        "sweeper",
        "--node-name",
        crate::kubelet::NODE,
        "--namespace",
        NAMESPACE,
    ])
    .env(
        "KUBECONFIG",
        kubeconfig(&server, &dir, "spawner-sweeper").await?,
    )
    .env("SPAWNER_LOG", "warn");
    let mut sweeper = Proc::start("sweeper", cmd, &ctx.token, &dir.join("sweeper.log"))?;
    let api = Api::new(addr);
    let result = {
        let mut procs = Procs {
            controller: &mut controller,
            api: &mut api_proc,
            sweeper: &mut sweeper,
        };
        measure(ctx, &api, &admin, &dir, &mut procs).await
    };
    let result = match result {
        Ok(mut phase) => handover(&admin, controller, start_controller, &mut phase)
            .await
            .map(|()| phase),
        Err(e) => {
            controller.stop().await;
            Err(e)
        }
    };
    sweeper.stop().await;
    api_proc.stop().await;
    drop(server);
    result
}

/// Spawner's processes of the phase, checked alive while it waits.
struct Procs<'a> {
    controller: &'a mut Proc,
    api: &'a mut Proc,
    sweeper: &'a mut Proc,
}

impl Procs<'_> {
    fn check_alive(&mut self) -> Result<()> {
        self.controller.check_alive()?;
        self.api.check_alive()?;
        self.sweeper.check_alive()
    }
}

/// The leader Lease's holder, if any.
async fn holder(admin: &Path) -> Result<Option<String>> {
    let jsonpath = "jsonpath={.spec.holderIdentity}";
    let lease = [
        "get",
        "lease",
        "spawner-controller",
        "-n",
        NAMESPACE,
        "-o",
        jsonpath,
    ];
    match kubectl(admin, &lease).await {
        Ok(h) if !h.trim().is_empty() => Ok(Some(h.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.to_string().contains("NotFound") => Ok(None),
        Err(e) => Err(e),
    }
}

async fn wait_holder(admin: &Path, who: &str) -> Result<Duration> {
    let since = Instant::now();
    while holder(admin).await?.as_deref() != Some(who) {
        if since.elapsed() > Duration::from_secs(60) {
            bail!("{who} never held the leader Lease");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(since.elapsed())
}

/// A rollout's two steps: a standby stopped (SIGTERM to its exit), and the leader stopped
/// (SIGTERM to a standby holding the Lease; kubectl's polling adds some 30 ms).
async fn handover(
    admin: &Path,
    leader: Proc,
    start: impl Fn(&str) -> Result<Proc>,
    phase: &mut Phase,
) -> Result<()> {
    let mut standby = start("controller-b")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    standby.check_alive()?;
    let exit = standby.terminate_and_wait(Duration::from_secs(30)).await?;
    let standby = start("controller-c")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let since = Instant::now();
    leader.signal_term();
    let took_over = wait_holder(admin, "controller-c").await;
    leader.stop().await;
    standby.stop().await;
    let took_over = took_over.map(|_| since.elapsed())?;
    phase.row(
        "standby controller: SIGTERM to exit",
        format!("{} ms", fmt(util::ms(exit))),
    );
    phase.row(
        "leader controller: SIGTERM to the standby holding the Lease",
        format!("{} ms", fmt(util::ms(took_over))),
    );
    phase.json["standby_exit_ms"] = util::round3(util::ms(exit));
    phase.json["handover_ms"] = util::round3(util::ms(took_over));
    Ok(())
}

/// A kube client of a kubeconfig: the admin's for the stand-in kubelet, the API's for the
/// bare creates.
async fn admin_client(admin: &Path) -> Result<kube::Client> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kc = Kubeconfig::read_from(admin)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// The object a spawn through the API made (`sample`: its JSON as the API server has it),
/// as a fresh object named `bare-{i}`: the same object POSTed straight to the API server.
fn bare_object(sample: &Value, i: usize) -> Value {
    let mut meta = serde_json::Map::new();
    meta.insert("name".into(), json!(format!("bare-{i:05}")));
    for field in ["labels", "annotations"] {
        if let Some(v) = sample["metadata"].get(field) {
            meta.insert(field.into(), v.clone());
        }
    }
    json!({
        "apiVersion": sample["apiVersion"],
        "kind": sample["kind"],
        "metadata": meta,
        "spec": sample["spec"],
    })
}

/// POSTs `n` copies of `sample` (named from `first` on) straight to the API server,
/// [`IN_FLIGHT`] at a time: the wall time of each answer by name, and how long all took.
async fn bare_create(
    slabs: &kube::Api<kube::api::DynamicObject>,
    sample: &Value,
    first: usize,
    n: usize,
) -> Result<(HashMap<String, i64>, f64)> {
    let started = Instant::now();
    let posted: Vec<Result<(String, i64)>> = futures_util::stream::iter(first..first + n)
        .map(|i| async move {
            let obj: kube::api::DynamicObject = serde_json::from_value(bare_object(sample, i))?;
            let made = slabs
                .create(&kube::api::PostParams::default(), &obj)
                .await?;
            Ok((made.metadata.name.unwrap_or_default(), util::wall_ms()))
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let took = started.elapsed().as_secs_f64();
    Ok((posted.into_iter().collect::<Result<_>>()?, took))
}

/// The spawn body of every backend of the phase.
fn spec() -> Value {
    json!({"executable": {"image": "registry.example/app:1", "command": ["serve"]}})
}

/// Creates `n` backends through the API, `in_flight` at a time: the wall time of each
/// answer by id, and how long all took.
async fn create(api: &Api, n: usize, in_flight: usize) -> Result<(HashMap<String, i64>, f64)> {
    let spec = spec();
    let started = Instant::now();
    let answers: Vec<Result<(String, i64)>> = futures_util::stream::iter(0..n)
        .map(|_| {
            let spec = &spec;
            async move {
                let (status, body) = api.call(Method::POST, "/v1/backends", Some(spec)).await?;
                let at = util::wall_ms();
                if status.as_u16() != 201 {
                    bail!("spawn: {status}: {}", String::from_utf8_lossy(&body));
                }
                let v: Value = serde_json::from_slice(&body)?;
                let id = v["id"].as_str().ok_or_else(|| anyhow!("no id in {v}"))?;
                Ok((id.to_string(), at))
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let took = started.elapsed().as_secs_f64();
    Ok((answers.into_iter().collect::<Result<_>>()?, took))
}

/// The objects of the namespace (as admin): name → (state, when each state was entered).
async fn objects(admin: &Path) -> Result<HashMap<String, HashMap<String, i64>>> {
    let list: Value = serde_json::from_str(
        &kubectl(
            admin,
            &["get", "sessionlivedbackends", "-n", NAMESPACE, "-o", "json"],
        )
        .await?,
    )?;
    let mut out = HashMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        let mut entered = HashMap::new();
        for h in item["status"]["history"].as_array().into_iter().flatten() {
            if let (Some(state), Some(at)) = (
                h["state"].as_str(),
                h["time"].as_str().and_then(util::parse_rfc3339_ms),
            ) {
                entered.insert(state.to_string(), at);
            }
        }
        out.insert(name.to_string(), entered);
    }
    Ok(out)
}

/// Polls (as admin, every `every`) until `done` holds of the namespace's objects; the
/// polls made, for the count of the phase's own requests.
async fn wait_objects(
    admin: &Path,
    procs: &mut Procs<'_>,
    what: &str,
    every: Duration,
    done: impl Fn(&HashMap<String, HashMap<String, i64>>) -> bool,
) -> Result<(HashMap<String, HashMap<String, i64>>, u64)> {
    let since = Instant::now();
    let mut polls = 0;
    loop {
        procs.check_alive()?;
        polls += 1;
        let now = objects(admin).await?;
        if done(&now) {
            return Ok((now, polls));
        }
        if since.elapsed() > Duration::from_secs(300) {
            bail!("{what}: not after 300 s");
        }
        tokio::time::sleep(every).await;
    }
}

/// Terminates every backend through the API and waits until their objects are deleted,
/// and their Pods and Services too (the garbage collector's part, whose requests would
/// otherwise be counted in the next round); the phase's own polls.
async fn clear(api: &Api, admin: &Path, procs: &mut Procs<'_>) -> Result<u64> {
    // The bare rounds' objects have names no API id takes: stopped as the API stops one
    // (the stop annotation, hard), not left to their startup timeout.
    let names = kubectl(
        admin,
        &["get", "sessionlivedbackends", "-n", NAMESPACE, "-o", "name"],
    )
    .await?;
    let bare: Vec<&str> = names.lines().filter(|n| n.contains("/bare-")).collect();
    for chunk in bare.chunks(200) {
        let mut args = vec!["annotate", "--overwrite", "-n", NAMESPACE];
        args.extend_from_slice(chunk);
        args.extend_from_slice(&[
            "spawner.dev/stop=terminate requested",
            "spawner.dev/stop-hard=true",
        ]);
        kubectl(admin, &args).await?;
    }
    if let Err(e) = api.terminate_all().await {
        // Waited for below all the same (the controller ends what the API stopped).
        eprintln!("spawner-bench: k8s: terminating every backend: {e:#}");
    }
    let (_, mut polls) = wait_objects(
        admin,
        procs,
        "every object deleted",
        Duration::from_millis(250),
        |o| o.is_empty(),
    )
    .await?;
    let since = Instant::now();
    loop {
        // A list of each.
        polls += 2;
        let left = kubectl(
            admin,
            &[
                "get",
                "pods,services",
                "-n",
                NAMESPACE,
                "--no-headers",
                "-o",
                "name",
            ],
        )
        .await?;
        if left.trim().is_empty() {
            return Ok(polls);
        }
        if since.elapsed() > Duration::from_secs(120) {
            bail!("Pods and Services left 120 s after their objects: {left}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The Events of the namespace, by who reported them and why, with how many times each
/// happened (series counted): what an operator finds in `kubectl get events`.
async fn events_census(admin: &Path) -> Result<String> {
    let list: Value = serde_json::from_str(
        &kubectl(
            admin,
            &["get", "events.events.k8s.io", "-n", NAMESPACE, "-o", "json"],
        )
        .await?,
    )?;
    let mut by: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for e in list["items"].as_array().into_iter().flatten() {
        let who = e["reportingController"].as_str().unwrap_or("?");
        let why = e["reason"].as_str().unwrap_or("?");
        let times = e["series"]["count"].as_u64().unwrap_or(1);
        let entry = by.entry(format!("{who}: {why}")).or_default();
        entry.0 += 1;
        entry.1 += times;
    }
    if by.is_empty() {
        return Ok("none".into());
    }
    Ok(by
        .iter()
        .map(|(k, (objects, times))| format!("{k} {objects} Events ({times} times)"))
        .collect::<Vec<_>>()
        .join("; "))
}

const REQUESTS_TO_READY: f64 = 12.0;
const REQUESTS_LIFE: f64 = 25.0;
const CONSTRUCTED_P99_MS: f64 = 5_000.0;
const CREATES_PER_S: f64 = 1_000.0;
const CLAIM_P50_MS: f64 = 20.0;
const CLAIM_P99_MS: f64 = 50.0;

async fn measure(
    ctx: &Ctx,
    api: &Api,
    admin: &Path,
    dir: &Path,
    procs: &mut Procs<'_>,
) -> Result<Phase> {
    let client = admin_client(admin).await?;
    let mut phase = Phase::new("k8s");

    let n = ctx.k8s_backends;
    // 1. The object a spawn makes, read back to be POSTed as is in the bare round.
    let (one, _) = create(api, 1, 1).await?;
    let sample_id = one.keys().next().cloned().unwrap_or_default();
    let sample: Value = serde_json::from_str(
        &kubectl(
            admin,
            &[
                "get",
                "sessionlivedbackends",
                "-n",
                NAMESPACE,
                &sample_id,
                "-o",
                "json",
            ],
        )
        .await?,
    )?;
    clear(api, admin, procs).await?;

    // 2. Side by side: the same objects POSTed straight to the API server (with the API's
    // own token, into the same namespace, so the controller reconciles them as it does the
    // API's), and created through `spawner api`; each one's answer to Constructed.
    // As `spawner api` itself (its service account's token), not as admin: the API server's
    // flow control (API Priority and Fairness) exempts admin's requests and queues a
    // service account's, so an admin's POSTs would not be the same requests.
    // A round of n bare creates not counted, then four rounds of n, in the order bare, API,
    // API, bare: a round run after another one finds the API server still busy with that
    // one's deletions (garbage collection, endpoints, etcd compaction), so that the first
    // round of a phase runs faster than any later one, and a shared machine's load drifts;
    // a single round of each, bare first, made the API look 0.43x of the bare rate when the
    // same bare round run later was no faster than the API's.
    let as_api = admin_client(&dir.join("spawner-api.kubeconfig")).await?;
    let slabs: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        as_api,
        NAMESPACE,
        &kube::api::ApiResource {
            group: "spawner.dev".into(),
            version: "v1".into(),
            api_version: "spawner.dev/v1".into(),
            kind: "SessionLivedBackend".into(),
            plural: "sessionlivedbackends".into(),
        },
    );
    let (mut bare_s, mut create_s) = (0.0, 0.0);
    let (mut bare_latencies, mut latencies) = (Vec::new(), Vec::new());
    let (mut all_constructed_s, mut pods, mut controller_rss, mut api_rss) = (0.0, 0, 0.0, 0.0);
    let mut round_rates = Vec::new();
    let warm_up = 1;
    for (round, through_api) in [false, false, true, true, false].into_iter().enumerate() {
        let started = Instant::now();
        let (answered, took) = if through_api {
            create(api, n, IN_FLIGHT).await?
        } else {
            bare_create(&slabs, &sample, round * n, n).await?
        };
        if round < warm_up {
            wait_objects(
                admin,
                procs,
                &format!("all {n} of the warm-up round Constructed"),
                Duration::from_millis(500),
                |o| o.len() >= n && o.values().all(|e| e.contains_key("Constructed")),
            )
            .await?;
            clear(api, admin, procs).await?;
            continue;
        }
        round_rates.push(n as f64 / took);
        let (seen, _) = wait_objects(
            admin,
            procs,
            &format!("all {n} Constructed"),
            Duration::from_millis(500),
            |o| o.len() >= n && o.values().all(|e| e.contains_key("Constructed")),
        )
        .await?;
        let constructed = answered
            .iter()
            .filter_map(|(id, at)| seen.get(id)?.get("Constructed").map(|c| (c - at) as f64));
        if through_api {
            create_s += took;
            latencies.extend(constructed);
            // The figures of one round through the API, with its n objects and Pods.
            all_constructed_s = started.elapsed().as_secs_f64();
            pods = kubectl(admin, &["get", "pods", "-n", NAMESPACE, "--no-headers"])
                .await?
                .lines()
                .count();
            controller_rss = util::rss_kib(procs.controller.pid())? as f64 / 1024.0;
            api_rss = util::rss_kib(procs.api.pid())? as f64 / 1024.0;
        } else {
            bare_s += took;
            bare_latencies.extend(constructed);
        }
        clear(api, admin, procs).await?;
    }
    let bare_per_s = (2 * n) as f64 / bare_s;
    let creates_per_s = (2 * n) as f64 / create_s;
    let bare_dist = Dist::new(bare_latencies);
    let dist = Dist::new(latencies);

    phase.row(
        format!("creates through `spawner api` (2 rounds of {n}, {IN_FLIGHT} in flight)"),
        format!("{} /s", fmt(creates_per_s)),
    );
    phase.row(
        format!("the same objects POSTed straight to the API server with the API's token (2 rounds of {n}, before and after those through the API; {IN_FLIGHT} in flight, the controller reconciling them)"),
        format!(
            "{} /s (through Spawner: {}x)",
            fmt(bare_per_s),
            fmt(creates_per_s / bare_per_s)
        ),
    );
    phase.row(
        "creates per round, in their order (after a bare round not counted): bare / API / API / bare",
        format!(
            "{} /s",
            round_rates
                .iter()
                .map(|r| fmt(*r))
                .collect::<Vec<_>>()
                .join(" / ")
        ),
    );
    phase.row(
        "API answer to Constructed (status, Pod, Service): p50 / p99 / max",
        format!(
            "{} / {} / {} ms (POSTed straight: {} / {} / {} ms)",
            fmt(dist.pct(50.0)),
            fmt(dist.pct(99.0)),
            fmt(dist.max()),
            fmt(bare_dist.pct(50.0)),
            fmt(bare_dist.pct(99.0)),
            fmt(bare_dist.max())
        ),
    );
    phase.row(
        format!("all {n} Constructed after the first create"),
        format!("{} s", fmt(all_constructed_s)),
    );
    phase.row(
        format!("RSS with {n} objects and {pods} Pods: controller / API"),
        format!("{} / {} MiB", fmt(controller_rss), fmt(api_rss)),
    );
    // Where the API server is the ceiling, 0.9x of its own rate is the target.
    let creates_target = CREATES_PER_S.min(0.9 * bare_per_s);
    phase.checks.push(crate::report::Check::at_least(
        "creates through spawner api",
        creates_per_s,
        creates_target,
        "/s",
        format!(
            "1,000/s, or 0.9x the API server's own {} /s",
            fmt(bare_per_s)
        ),
    ));
    phase.checks.push(crate::report::Check::at_most(
        "create to Constructed p99",
        dist.pct(99.0),
        CONSTRUCTED_P99_MS,
        "ms",
        format!("under 5 s for {n} at once"),
    ));

    // 3. Requests per backend: M backends run to Ready (a stand-in kubelet and a sidecar
    // each), then terminated and deleted; kube-apiserver's own count, less the stand-in's.
    let m = ctx.k8s_ready;
    let kubelet =
        crate::kubelet::Kubelet::start(client.clone(), NAMESPACE, &ctx.spawner, &ctx.token, dir)
            .await?;
    let before = Counts::read(admin).await?;
    let kubelet_before = kubelet.requests();
    let started = Instant::now();
    let (_, _) = create(api, m, 16).await?;
    let (_, polls_ready) = wait_objects(
        admin,
        procs,
        &format!("all {m} Ready"),
        Duration::from_millis(250),
        |o| o.len() >= m && o.values().all(|e| e.contains_key("Ready")),
    )
    .await?;
    let all_ready_s = started.elapsed().as_secs_f64();
    let at_ready = Counts::read(admin).await?;
    // What each node and each backend costs there, beside the application itself.
    let sweeper_rss = util::rss_kib(procs.sweeper.pid())? as f64 / 1024.0;
    let (sidecar_rss, sidecars) = kubelet.sidecar_rss_kib();
    let kubelet_ready = kubelet.requests() - kubelet_before;
    let polls_clear = clear(api, admin, procs).await?;
    let at_end = Counts::read(admin).await?;
    let kubelet_all = kubelet.requests() - kubelet_before;
    // The phase's own: its polls (one LIST each) and the stand-in kubelet's requests.
    let to_ready = at_ready.since(&before);
    let life = at_end.since(&before);
    let own_ready = (polls_ready + kubelet_ready) as f64;
    let own_life = (polls_ready + polls_clear + kubelet_all) as f64;
    let per_ready = (to_ready.total() - own_ready).max(0.0) / m as f64;
    let per_life = (life.total() - own_life).max(0.0) / m as f64;
    let top = |c: &Counts| {
        c.top(6)
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt(v / m as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    phase.row(
        format!("kube-apiserver requests per backend, create to Ready ({m} backends, all Ready in {} s)", fmt(all_ready_s)),
        format!("{} (largest, with the phase's own: {})", fmt(per_ready), top(&to_ready)),
    );
    phase.row(
        "kube-apiserver requests per backend, whole life (create, Ready, terminate, delete)",
        format!("{} (largest: {})", fmt(per_life), top(&life)),
    );
    phase.row(
        format!("per node: the sweeper following {m} backends / per backend: its sidecar (mean of {sidecars})"),
        format!(
            "{} MiB / {} MiB RSS",
            fmt(sweeper_rss),
            fmt(sidecar_rss / 1024.0)
        ),
    );
    phase.row(
        "Events in the namespace after the round (reporter: reason × count)",
        events_census(admin).await?,
    );
    phase.checks.push(crate::report::Check::at_most(
        "requests per backend to Ready",
        per_ready,
        REQUESTS_TO_READY,
        "",
        "at most 12 (Spawner's own components)".into(),
    ));
    phase.checks.push(crate::report::Check::at_most(
        "requests per backend, whole life",
        per_life,
        REQUESTS_LIFE,
        "",
        "at most 25".into(),
    ));

    // 4. Claims of a warm pool, one at a time, each once the pool is Ready again: with a
    // key (the target's) and without one, alternately, so that both meet the same load.
    let claims = ctx.k8s_claims;
    let pool = json!({"name": "bench", "template": spec(), "min_ready": 4, "max": 2 * claims + 8});
    let (status, body) = api.call(Method::POST, "/v1/pools", Some(&pool)).await?;
    if status.as_u16() != 201 {
        bail!("pool: {status}: {}", String::from_utf8_lossy(&body));
    }
    let mut claim_ms = Vec::with_capacity(claims);
    let mut unkeyed_ms = Vec::with_capacity(claims);
    // What one write costs on this API server at the same time, for scale on a loaded
    // machine: a Lease created as `spawner api`'s service account (as a key's Lease is),
    // between the claims; deleted untimed.
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> = kube::Api::namespaced(
        admin_client(&dir.join("spawner-api.kubeconfig")).await?,
        NAMESPACE,
    );
    let mut write_ms = Vec::with_capacity(claims);
    for i in 0..2 * claims {
        let since = Instant::now();
        loop {
            procs.check_alive()?;
            let p = api.get_json("/v1/pools/bench").await?;
            if p["ready"].as_u64().unwrap_or(0) >= 1 {
                break;
            }
            if since.elapsed() > Duration::from_secs(120) {
                bail!("the pool has no Ready backend after 120 s: {p}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let keyed = i % 2 == 0;
        let body = if keyed {
            json!({"pool": "bench", "key": format!("claim-{i}"), "if_none_ready": "wait"})
        } else {
            json!({"pool": "bench", "if_none_ready": "wait"})
        };
        let t = Instant::now();
        let (status, answer) = api.call(Method::POST, "/v1/backends", Some(&body)).await?;
        let ms = util::ms(t.elapsed());
        if keyed {
            claim_ms.push(ms);
        } else {
            unkeyed_ms.push(ms);
        }
        if !status.is_success() {
            bail!("claim: {status}: {}", String::from_utf8_lossy(&answer));
        }
        if keyed {
            let lease: k8s_openapi::api::coordination::v1::Lease =
                serde_json::from_value(json!({"metadata": {"name": format!("bench-write-{i}")}}))?;
            let t = Instant::now();
            leases
                .create(&kube::api::PostParams::default(), &lease)
                .await?;
            write_ms.push(util::ms(t.elapsed()));
            leases
                .delete(&format!("bench-write-{i}"), &Default::default())
                .await?;
        }
    }
    let claim = Dist::new(claim_ms);
    let unkeyed = Dist::new(unkeyed_ms);
    let write = Dist::new(write_ms);
    phase.row(
        format!("warm claims with a key ({claims}, one at a time): p50 / p99 / max"),
        format!(
            "{} / {} / {} ms",
            fmt(claim.pct(50.0)),
            fmt(claim.pct(99.0)),
            fmt(claim.max())
        ),
    );
    phase.row(
        format!("warm claims without a key ({claims}, between those): p50 / p99 / max"),
        format!(
            "{} / {} / {} ms",
            fmt(unkeyed.pct(50.0)),
            fmt(unkeyed.pct(99.0)),
            fmt(unkeyed.max())
        ),
    );
    phase.row(
        "one write to the API server at the same time (a Lease created as the API): p50 / p99",
        format!("{} / {} ms", fmt(write.pct(50.0)), fmt(write.pct(99.0))),
    );
    phase.checks.push(crate::report::Check::at_most(
        "warm claim p50",
        claim.pct(50.0),
        CLAIM_P50_MS,
        "ms",
        "20 ms (agent-sandbox: 92 ms)".into(),
    ));
    phase.checks.push(crate::report::Check::at_most(
        "warm claim p99",
        claim.pct(99.0),
        CLAIM_P99_MS,
        "ms",
        "50 ms (agent-sandbox: 376 ms)".into(),
    ));
    let _ = api.call(Method::DELETE, "/v1/pools/bench", None).await;
    clear(api, admin, procs).await?;
    drop(kubelet);

    phase.json = json!({
        "backends": n,
        "in_flight": IN_FLIGHT,
        "creates_per_s": util::round3(creates_per_s),
        "bare_creates_per_s": util::round3(bare_per_s),
        "create_rounds_per_s": round_rates.iter().map(|r| util::round3(*r)).collect::<Vec<_>>(),
        "bare_create_to_constructed_ms": bare_dist.json(),
        "create_to_constructed_ms": dist.json(),
        "all_constructed_s": util::round3(all_constructed_s),
        "pods": pods,
        "controller_rss_mib": util::round3(controller_rss),
        "api_rss_mib": util::round3(api_rss),
        "ready_backends": m,
        "all_ready_s": util::round3(all_ready_s),
        "sweeper_rss_mib": util::round3(sweeper_rss),
        "sidecar_rss_mib": util::round3(sidecar_rss / 1024.0),
        "requests_per_backend_to_ready": util::round3(per_ready),
        "requests_per_backend_life": util::round3(per_life),
        "requests_to_ready": to_ready.json(),
        "requests_life": life.json(),
        "own_requests_to_ready": own_ready,
        "own_requests_life": own_life,
        "claims": claims,
        "claim_ms": claim.json(),
        "unkeyed_claim_ms": unkeyed.json(),
        "write_ms": write.json(),
    });
    Ok(phase)
}
