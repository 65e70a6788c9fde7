//! The kubelet's and the scheduler's part for the k8s phase, on an API server that has
//! neither (scripts/k8s-test-apiserver.sh): each new Pod of the namespace is bound to the
//! node, its sidecar (`spawner sidecar`) started on a loopback address of its own in front
//! of one shared application (`spawner example-app`), and the Pod reported Running; a
//! deleted Pod's sidecar is stopped and the Pod removed. So the sweeper marks backends
//! Ready exactly as on a cluster. Every request this stand-in makes is counted, so that
//! the phase can tell Spawner's own requests from the kubelet's.

use crate::util::Proc;
use anyhow::{Context, Result};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::process::Command;
use tokio::task::JoinHandle;

/// The Node object scripts/k8s-test-apiserver.sh makes.
pub const NODE: &str = "node-a";
/// The sidecar container's name in Spawner's Pods.
const SIDECAR: &str = "spawner-sidecar";

/// The stand-in, until dropped (its sidecars with it).
pub struct Kubelet {
    requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
    sidecars: Arc<Mutex<HashMap<String, Proc>>>,
    _app: Proc,
}

/// What each Pod's sidecar needs.
#[derive(Clone)]
struct Setup {
    spawner: PathBuf,
    token: String,
    dir: PathBuf,
    app_port: u16,
}

impl Kubelet {
    /// Starts the shared application and the watch of `namespace`'s Pods.
    pub async fn start(
        client: Client,
        namespace: &str,
        spawner: &Path,
        token: &str,
        dir: &Path,
    ) -> Result<Kubelet> {
        let app_port = crate::util::free_port()?;
        let mut cmd = Command::new(spawner);
        cmd.args([
            "example-app",
            "--port",
            &app_port.to_string(),
            "--host",
            "127.0.0.1",
        ]);
        let mut app = Proc::start("example-app", cmd, token, &dir.join("example-app.log"))?;
        app.wait_port(
            format!("127.0.0.1:{app_port}").parse()?,
            std::time::Duration::from_secs(10),
        )
        .await?;
        let setup = Setup {
            spawner: spawner.to_path_buf(),
            token: token.to_string(),
            dir: dir.to_path_buf(),
            app_port,
        };
        let requests = Arc::new(AtomicU64::new(0));
        let sidecars = Arc::new(Mutex::new(HashMap::new()));
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let task = tokio::spawn(run(pods, setup, requests.clone(), sidecars.clone()));
        Ok(Kubelet {
            requests,
            task,
            sidecars,
            _app: app,
        })
    }

    /// The mean resident memory of the sidecars running now (KiB), and how many there are.
    pub fn sidecar_rss_kib(&self) -> (f64, usize) {
        let Ok(sidecars) = self.sidecars.lock() else {
            return (0.0, 0);
        };
        let rss: Vec<u64> = sidecars
            .values()
            .filter_map(|p| crate::util::rss_kib(p.pid()).ok())
            .collect();
        let n = rss.len();
        (rss.iter().sum::<u64>() as f64 / n.max(1) as f64, n)
    }

    /// The requests it has made so far (watches included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        // Their processes are killed as they are dropped.
        if let Ok(mut s) = self.sidecars.lock() {
            s.clear();
        }
    }
}

async fn run(
    pods: Api<Pod>,
    setup: Setup,
    requests: Arc<AtomicU64>,
    sidecars: Arc<Mutex<HashMap<String, Proc>>>,
) {
    let seq = Arc::new(AtomicU64::new(0));
    let deleting: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    // A watch is a list and a watch request; the watcher restarts it rarely in a run.
    let mut events = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
    requests.fetch_add(2, Ordering::Relaxed);
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(Event::Delete(pod)) => {
                if let Ok(mut s) = sidecars.lock() {
                    s.remove(&pod.name_any());
                }
                continue;
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(_) => {
                requests.fetch_add(2, Ordering::Relaxed);
                continue;
            }
        };
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            let first = deleting.lock().is_ok_and(|mut d| d.insert(name.clone()));
            if first {
                if let Ok(mut s) = sidecars.lock() {
                    s.remove(&name);
                }
                let pods = pods.clone();
                let requests = requests.clone();
                tokio::spawn(async move {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let _ = pods
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                });
            }
            continue;
        }
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some();
        let started = sidecars.lock().is_ok_and(|s| s.contains_key(&name));
        if bound || started {
            continue;
        }
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let ip = format!("127.77.{}.{}", (n / 250) % 250, 1 + n % 250);
        match start_sidecar(&setup, &pod, &ip) {
            Ok(proc) => {
                if let Ok(mut s) = sidecars.lock() {
                    s.insert(name.clone(), proc);
                }
            }
            Err(e) => {
                eprintln!("stand-in kubelet: {name}: {e:#}");
                continue;
            }
        }
        let pods = pods.clone();
        let requests = requests.clone();
        tokio::spawn(async move {
            if let Err(e) = bind_and_report(&pods, &pod, &ip, &requests).await {
                eprintln!("stand-in kubelet: {name}: {e:#}");
            }
        });
    }
}

/// `spawner sidecar` for `pod` on `ip`, with the sidecar container's own variables.
fn start_sidecar(setup: &Setup, pod: &Pod, ip: &str) -> Result<Proc> {
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == SIDECAR))
        .context("no sidecar container")?;
    let port = container
        .ports
        .iter()
        .flatten()
        .next()
        .map_or(9090, |p| p.container_port);
    let mut cmd = Command::new(&setup.spawner);
    cmd.args([
        "sidecar",
        "--app-port",
        &setup.app_port.to_string(),
        "--listen",
        &format!("{ip}:{port}"),
    ]);
    for var in container.env.iter().flatten() {
        if let Some(v) = &var.value {
            cmd.env(&var.name, v);
        }
    }
    cmd.env("SPAWNER_LOG", "warn");
    let name = pod.name_any();
    Proc::start(
        &format!("sidecar-{name}"),
        cmd,
        &setup.token,
        &setup.dir.join("sidecars.log"),
    )
}

/// The scheduler's binding and the kubelet's "Running" with the Pod's address.
async fn bind_and_report(pods: &Api<Pod>, pod: &Pod, ip: &str, requests: &AtomicU64) -> Result<()> {
    let name = pod.name_any();
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}
    });
    requests.fetch_add(1, Ordering::Relaxed);
    pods.create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
        .await
        .context("binding")?;
    let now = chrono_now();
    let running = json!({"running": {"startedAt": now}});
    let statuses: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": true,
                   "restartCount": 0, "started": true, "state": running})
        })
        .collect();
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "containerStatuses": statuses,
    }});
    requests.fetch_add(1, Ordering::Relaxed);
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("reporting Running")?;
    Ok(())
}

/// Now as RFC 3339 (seconds), as the kubelet writes `startedAt`.
fn chrono_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
