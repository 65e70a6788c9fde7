//! Phase k8s: Kubernetes mode on the real API server of the tests
//! (scripts/k8s-test-apiserver.sh: etcd, kube-apiserver, kube-controller-manager, no kubelet).
//! `spawner controller` and `spawner api` run with their service accounts' tokens under
//! deploy/kubernetes's RBAC, as in a cluster. N SessionLivedBackends are created through the
//! API: how many creates per second it accepts, how long each takes from the API's answer
//! to Constructed (the controller's reconcile: status write, Pod, Service), and the memory
//! of both processes with N objects and Pods.

use crate::api::Api;
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
            .args(["--retention", "3600"])
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
    let api = Api::new(addr);
    let result = measure(ctx, &api, &admin, &mut controller, &mut api_proc).await;
    let result = match result {
        Ok(mut phase) => handover(&admin, controller, start_controller, &mut phase)
            .await
            .map(|()| phase),
        Err(e) => {
            controller.stop().await;
            Err(e)
        }
    };
    api_proc.stop().await;
    drop(server);
    result
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

async fn measure(
    ctx: &Ctx,
    api: &Api,
    admin: &Path,
    controller: &mut Proc,
    api_proc: &mut Proc,
) -> Result<Phase> {
    let n = ctx.k8s_backends;
    let spec = json!({"executable": {"image": "registry.example/app:1", "command": ["serve"]}});
    // Creates, IN_FLIGHT at a time; when each answer came (ms since the epoch).
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
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let create_s = started.elapsed().as_secs_f64();
    let answered: HashMap<String, i64> = answers.into_iter().collect::<Result<_>>()?;

    // Every object Constructed: read them all (as admin) until they are.
    let mut constructed: HashMap<String, i64> = HashMap::new();
    let since = Instant::now();
    while constructed.len() < n {
        controller.check_alive()?;
        api_proc.check_alive()?;
        if since.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {} of {n} backends Constructed after 300 s",
                constructed.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let list: Value = serde_json::from_str(
            &kubectl(
                admin,
                &["get", "sessionlivedbackends", "-n", NAMESPACE, "-o", "json"],
            )
            .await?,
        )?;
        for item in list["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let at = item["status"]["history"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|h| h["state"] == "Constructed")
                .and_then(|h| h["time"].as_str())
                .and_then(util::parse_rfc3339_ms);
            if let Some(at) = at {
                constructed.insert(name.to_string(), at);
            }
        }
    }
    let all_constructed_s = started.elapsed().as_secs_f64();
    let latencies: Vec<f64> = answered
        .iter()
        .filter_map(|(id, at)| constructed.get(id).map(|c| (c - at) as f64))
        .collect();
    let dist = Dist::new(latencies);
    let pods = kubectl(admin, &["get", "pods", "-n", NAMESPACE, "--no-headers"])
        .await?
        .lines()
        .count();
    let controller_rss = util::rss_kib(controller.pid())? as f64 / 1024.0;
    let api_rss = util::rss_kib(api_proc.pid())? as f64 / 1024.0;
    let creates_per_s = n as f64 / create_s;

    let mut phase = Phase::new("k8s");
    phase.row(
        format!("creates through `spawner api` ({n}, {IN_FLIGHT} in flight)"),
        format!("{} /s", fmt(creates_per_s)),
    );
    phase.row(
        "API answer to Constructed (status, Pod, Service): p50 / p99 / max",
        format!(
            "{} / {} / {} ms",
            fmt(dist.pct(50.0)),
            fmt(dist.pct(99.0)),
            fmt(dist.max())
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
    phase.json = json!({
        "backends": n,
        "in_flight": IN_FLIGHT,
        "creates_per_s": util::round3(creates_per_s),
        "create_to_constructed_ms": dist.json(),
        "all_constructed_s": util::round3(all_constructed_s),
        "pods": pods,
        "controller_rss_mib": util::round3(controller_rss),
        "api_rss_mib": util::round3(api_rss),
    });
    Ok(phase)
}
