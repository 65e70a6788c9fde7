//! Kubernetes mode on a real API server: the harness of the `k8s_*` tests.
//!
//! The server (etcd, kube-apiserver, kube-controller-manager; no kubelet) is the one
//! `scripts/k8s-test-apiserver.sh` started, found through `SPAWNER_TEST_APISERVER`
//! (scripts/test starts and stops it around the suite). Each test gets a namespace of its
//! own with deploy/kubernetes's RBAC applied to it (through kustomize, as the install does),
//! and runs each component (controller, api, sweeper, router) as a process of the real
//! `spawner` binary whose kubeconfig holds the token of that component's service account:
//! anything the Roles do not grant fails as it would in a cluster.
//!
//! There is no kubelet: [`TestNs::run_pod`] plays it for one Pod (binds it to the Node
//! `node-a`, starts the application and `spawner sidecar` as local processes on a loopback
//! address of the Pod's own, and reports both containers running), and a background task
//! finishes Pods being deleted as a kubelet would (stops their processes, reports the
//! containers terminated, removes the Pod).
#![allow(dead_code)]

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use serde_json::{json, Value};
use spawner_k8s::kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use spawner_k8s::kube::config::{KubeConfigOptions, Kubeconfig};
use spawner_k8s::kube::{Client, Config};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SPAWNER: &str = env!("CARGO_BIN_EXE_spawner");
/// Upper bound for anything a test waits for; reaching it is a failure, never a figure.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// The Node test Pods are bound to (scripts/k8s-test-apiserver.sh creates it).
pub const NODE: &str = "node-a";
pub const SIDECAR_CONTAINER: &str = "spawner-sidecar";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs kubectl with `kubeconfig`; panics with its output when it fails.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new("kubectl");
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kubectl ({e}): scripts/test installs it"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("kubectl stdin");
    }
    let out = child.wait_with_output().expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The API server the suite runs against.
#[derive(Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    /// The admin's (system:masters) kubeconfig.
    pub admin_kubeconfig: PathBuf,
    server: String,
    ca: String,
}

impl Cluster {
    /// The server scripts/test started. Fails the test, saying what to do, when there is none:
    /// the Kubernetes tests never pass without having run.
    pub fn get() -> Cluster {
        let dir = std::env::var_os("SPAWNER_TEST_APISERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "no Kubernetes API server for this test: run scripts/test, or start one with \
                     `scripts/k8s-test-apiserver.sh start DIR` and set SPAWNER_TEST_APISERVER=DIR"
                )
            });
        let admin_kubeconfig = dir.join("kubeconfig");
        let kc = Kubeconfig::read_from(&admin_kubeconfig).unwrap_or_else(|e| {
            panic!(
                "SPAWNER_TEST_APISERVER={}: no kubeconfig there ({e}); start the server with scripts/k8s-test-apiserver.sh",
                dir.display()
            )
        });
        let cluster = kc
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .expect("a cluster in the kubeconfig");
        let server = cluster.server.expect("server");
        let ca = cluster
            .certificate_authority
            .expect("certificate-authority");
        let c = Cluster {
            dir,
            admin_kubeconfig,
            server,
            ca,
        };
        let ready = Command::new("kubectl")
            .args(["get", "--raw", "/readyz"])
            .env("KUBECONFIG", &c.admin_kubeconfig)
            .output()
            .expect("kubectl");
        assert!(
            ready.status.success(),
            "the Kubernetes API server of SPAWNER_TEST_APISERVER={} does not answer: {}",
            c.dir.display(),
            String::from_utf8_lossy(&ready.stderr)
        );
        c
    }

    pub async fn admin(&self) -> Client {
        let kc = Kubeconfig::read_from(&self.admin_kubeconfig).expect("kubeconfig");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("admin config");
        Client::try_from(config).expect("admin client")
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

static SEQ: AtomicU32 = AtomicU32::new(1);

/// A short suffix unique to this process and call.
fn unique() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}{n}", std::process::id(), nanos % 4096)
}

/// A process of the `spawner` binary; SIGKILLed when dropped if still running.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `needle`; panics (with the log) if it exits first.
    pub fn wait_for_log(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{text}",
                    self.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {needle:?}:\n{text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Waits for it to exit; panics after [`PATIENCE`].
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The local processes standing for one Pod's containers.
struct LocalPod {
    app: Option<Proc>,
    sidecar: Proc,
    ip: String,
    /// The exit code the application reports when its Pod is deleted.
    exit_on_delete: i32,
}

type LocalPods = Arc<Mutex<HashMap<String, LocalPod>>>;

/// A namespace of its own for one test, with deploy/kubernetes's RBAC in it. Deleted on drop.
pub struct TestNs {
    pub cluster: Cluster,
    pub name: String,
    pub dir: tempfile::TempDir,
    pub admin: Client,
    /// The sidecar port the controller is told (each backend has a loopback IP of its own).
    pub sidecar_port: u16,
    pods: LocalPods,
    kubelet: tokio::task::JoinHandle<()>,
}

impl TestNs {
    pub async fn new(prefix: &str) -> TestNs {
        Self::with_labels(prefix, &[]).await
    }

    /// A namespace labelled with `labels` (e.g. a Pod Security level) before anything runs in it.
    pub async fn with_labels(prefix: &str, labels: &[(&str, &str)]) -> TestNs {
        let cluster = Cluster::get();
        let name = format!("{prefix}-{}", unique());
        let kc = cluster.admin_kubeconfig.clone();
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {}}});
        for (k, v) in labels {
            ns["metadata"]["labels"][*k] = json!(v);
        }
        kubectl(&kc, &["create", "-f", "-"], Some(&ns.to_string()));
        let dir = tempfile::tempdir().expect("temp dir");
        // deploy/kubernetes's RBAC through kustomize, in this namespace instead of `spawner`.
        let rbac = dir.path().join("rbac");
        std::fs::create_dir_all(&rbac).expect("rbac dir");
        std::fs::copy(
            repo_root().join("deploy/kubernetes/rbac.yaml"),
            rbac.join("rbac.yaml"),
        )
        .expect("deploy/kubernetes/rbac.yaml");
        std::fs::write(
            rbac.join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {name}\nresources: [rbac.yaml]\n"
            ),
        )
        .expect("kustomization");
        kubectl(&kc, &["apply", "-k", &rbac.to_string_lossy()], None);
        let admin = cluster.admin().await;
        // Pod admission needs the namespace's `default` service account, which the
        // controller-manager creates shortly after the namespace.
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &name);
        let deadline = Instant::now() + PATIENCE;
        while sas.get_opt("default").await.expect("read sa").is_none() {
            assert!(
                Instant::now() < deadline,
                "no default service account in {name}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pods: LocalPods = Arc::default();
        let kubelet = tokio::spawn(finish_deleted_pods(
            Api::namespaced(admin.clone(), &name),
            pods.clone(),
        ));
        TestNs {
            cluster,
            name,
            dir,
            admin,
            sidecar_port: free_port(),
            pods,
            kubelet,
        }
    }

    /// A kubeconfig holding a token of the service account `sa` of this namespace.
    pub fn kubeconfig(&self, sa: &str) -> PathBuf {
        let token = kubectl(
            &self.cluster.admin_kubeconfig,
            &["create", "token", sa, "-n", &self.name, "--duration", "2h"],
            None,
        );
        let path = self.dir.path().join(format!("{sa}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"{}\", certificate-authority: \"{}\"}}\nusers:\n- name: {sa}\n  user: {{token: \"{}\"}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: {sa}, namespace: {}}}\ncurrent-context: test\n",
            self.cluster.server,
            self.cluster.ca,
            token.trim(),
            self.name
        );
        std::fs::write(&path, text).expect("kubeconfig");
        path
    }

    /// Starts `spawner ARGS` as the service account `sa` (none: no Kubernetes credentials).
    pub fn spawn(
        &self,
        label: &str,
        sa: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let log = self.dir.path().join(format!("{label}-{}.log", unique()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(SPAWNER);
        cmd.args(args)
            .env("SPAWNER_LOG", "info,spawner_k8s=debug")
            .env_remove("KUBECONFIG")
            .env_remove("SPAWNER_TOKEN")
            .env_remove("SPAWNER_NAMESPACE")
            .env_remove("SPAWNER_KEY_SECRET")
            .env_remove("SPAWNER_ROUTER_KEY")
            .env_remove("SPAWNER_ACCESS_KEY")
            .env_remove("SPAWNER_TRUSTED_PROXIES")
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        if let Some(sa) = sa {
            cmd.env("KUBECONFIG", self.kubeconfig(sa));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SPAWNER} {args:?}: {e}"));
        Proc {
            name: label.to_string(),
            child,
            log,
        }
    }

    /// `spawner controller` for this namespace; `extra` flags appended.
    pub fn controller(&self, extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let port = self.sidecar_port.to_string();
        let mut args = vec![
            "controller",
            "--namespace",
            &self.name,
            "--sidecar-image",
            "spawner:test",
            "--sidecar-port",
            &port,
            "--public-url",
            "http://router.test",
        ];
        args.extend_from_slice(extra);
        self.spawn("controller", Some("spawner-controller"), &args, env)
    }

    /// `spawner api` on a port of its own, with bearer token `token`.
    pub fn api(&self, token: &str) -> ApiProc {
        self.api_with(token, &[])
    }

    /// [`TestNs::api`] with more arguments.
    pub fn api_with(&self, token: &str, extra: &[&str]) -> ApiProc {
        self.api_env(token, extra, &[])
    }

    /// [`TestNs::api_with`] with environment variables.
    pub fn api_env(&self, token: &str, extra: &[&str], env: &[(&str, &str)]) -> ApiProc {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "api",
            "--listen",
            &listen,
            "--namespace",
            &self.name,
            "--token",
            token,
            "--public-url",
            "http://router.test",
        ];
        args.extend_from_slice(extra);
        let mut proc = self.spawn("api", Some("spawner-api"), &args, env);
        proc.wait_for_log("API listening");
        ApiProc {
            proc,
            url: format!("http://{listen}"),
            token: token.to_string(),
        }
    }

    pub fn sweeper(&self) -> Proc {
        let mut p = self.spawn(
            "sweeper",
            Some("spawner-sweeper"),
            &["sweeper", "--node-name", NODE, "--namespace", &self.name],
            &[],
        );
        p.wait_for_log("sweeper started");
        p
    }

    /// `spawner proxy --kubernetes`, once it routes; returns it and its base URL.
    pub fn router(&self) -> (Proc, String) {
        self.router_with(&[])
    }

    /// [`TestNs::router`] with more arguments.
    pub fn router_with(&self, extra: &[&str]) -> (Proc, String) {
        self.router_env(extra, &[])
    }

    /// [`TestNs::router_with`] with environment variables.
    pub fn router_env(&self, extra: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "proxy",
            "--kubernetes",
            "--listen",
            &listen,
            "--namespace",
            &self.name,
        ];
        args.extend_from_slice(extra);
        let mut p = self.spawn("router", Some("spawner-router"), &args, env);
        p.wait_for_log("backends listed");
        (p, format!("http://{listen}"))
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.name)
    }

    pub fn slabs(&self) -> Api<spawner_k8s::SessionLivedBackend> {
        Api::namespaced(self.admin.clone(), &self.name)
    }

    pub fn leases(&self) -> Api<k8s_openapi::api::coordination::v1::Lease> {
        Api::namespaced(self.admin.clone(), &self.name)
    }

    /// Waits until the Lease of the key whose id is `key_id` names `backend` and is owned
    /// by its object as it is now (named just after the answer that made or claimed it).
    pub async fn wait_key_lease_names(&self, key_id: &str, backend: &str) {
        let uid = self
            .slabs()
            .get(backend)
            .await
            .expect("object")
            .metadata
            .uid;
        let name = format!("spawner-key-{key_id}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let lease = self.leases().get_opt(&name).await.expect("read");
            let holder = lease
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.clone());
            let owners: Vec<(String, String)> = lease
                .as_ref()
                .and_then(|l| l.metadata.owner_references.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|o| (o.kind, o.uid))
                .collect();
            let owner = uid
                .clone()
                .map(|u| vec![("SessionLivedBackend".to_string(), u)]);
            if holder.as_deref() == Some(backend) && Some(&owners) == owner.as_ref() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the key's Lease never named {backend} (owned by it): {lease:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates the SessionLivedBackend `name` (one app container, `spawner:test`), with
    /// `labels`, as an administrator would with kubectl.
    pub async fn create_slab(&self, name: &str, labels: Value) {
        let obj: spawner_k8s::SessionLivedBackend = serde_json::from_value(json!({
            "apiVersion": "spawner.dev/v1", "kind": "SessionLivedBackend",
            "metadata": {"name": name, "labels": labels},
            "spec": {"template": {"containers": [{"name": "app", "image": "spawner:test"}]}}
        }))
        .expect("object");
        self.slabs()
            .create(&PostParams::default(), &obj)
            .await
            .expect("create");
    }

    /// Waits for the Pod `name` to exist and returns it.
    pub async fn pod(&self, name: &str) -> Pod {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(p) = self.pods().get_opt(name).await.expect("read pod") {
                return p;
            }
            assert!(Instant::now() < deadline, "no Pod {name} appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Plays the kubelet for Pod `name`: binds it to [`NODE`], starts the application
    /// (`spawner example-app`) and `spawner sidecar` on a loopback address of its own, and
    /// reports both containers running with that address as the Pod IP. Returns the IP.
    pub async fn run_pod(&self, name: &str) -> String {
        self.run_pod_with(name, true).await
    }

    /// As [`Self::run_pod`]; without `app`, only the Pod is reported running (nothing listens).
    pub async fn run_pod_with(&self, name: &str, processes: bool) -> String {
        let pod = self.pod(name).await;
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}
        });
        self.pods()
            .create_subresource::<Value, Value>("binding", name, &PostParams::default(), &binding)
            .await
            .expect("bind the Pod to the node");
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let ip = format!(
            "127.{}.{}.{}",
            1 + std::process::id() % 250,
            1 + (n / 250) % 250,
            1 + n % 250
        );
        if processes {
            let app_port = free_port().to_string();
            // The containers' own variables that the local processes need: the sidecar's
            // secret, and the application's keepalive URL (on the Pod's address here, as
            // each local Pod has a loopback address of its own).
            let sidecar_env = container_env(&pod, SIDECAR_CONTAINER);
            let app_env: Vec<(String, String)> = container_env(&pod, &app_container(&pod))
                .into_iter()
                .filter(|(k, _)| k == "SPAWNER_KEEPALIVE_URL")
                .map(|(k, v)| (k, v.replace("127.0.0.1", &ip)))
                .collect();
            let app_env_ref: Vec<(&str, &str)> = app_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let sidecar_env_ref: Vec<(&str, &str)> = sidecar_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let app = self.spawn(
                &format!("app-{name}"),
                None,
                &["example-app", "--port", &app_port, "--host", "127.0.0.1"],
                &app_env_ref,
            );
            let listen = format!("{ip}:{}", self.sidecar_port);
            let sidecar = self.spawn(
                &format!("sidecar-{name}"),
                None,
                &["sidecar", "--app-port", &app_port, "--listen", &listen],
                &sidecar_env_ref,
            );
            self.pods.lock().expect("pods").insert(
                name.to_string(),
                LocalPod {
                    app: Some(app),
                    sidecar,
                    ip: ip.clone(),
                    exit_on_delete: 143,
                },
            );
        }
        let app_name = app_container(&pod);
        let running = json!({"running": {"startedAt": now()}});
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "containerStatuses": [
                container_status(&app_name, running.clone()),
                container_status(SIDECAR_CONTAINER, running),
            ]
        }});
        self.pods()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("report the Pod running");
        ip
    }

    /// The application of Pod `name` exits with `code`; the Pod reports it (with
    /// `message` as the container's termination message, as FallbackToLogsOnError gives).
    pub async fn exit_app(&self, name: &str, code: i32, message: Option<&str>) {
        if let Some(local) = self.pods.lock().expect("pods").get_mut(name) {
            if let Some(mut app) = local.app.take() {
                app.stop();
            }
        }
        let pod = self.pod(name).await;
        let mut terminated = json!({"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": now(), "finishedAt": now()});
        if let Some(m) = message {
            terminated["message"] = json!(m);
        }
        let statuses = json!([
            container_status(&app_container(&pod), json!({"terminated": terminated})),
            container_status(SIDECAR_CONTAINER, json!({"running": {"startedAt": now()}})),
        ]);
        self.pods()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"containerStatuses": statuses}})),
            )
            .await
            .expect("report the exit");
    }

    /// What the application of Pod `name` exits with when its Pod is deleted (default 143).
    pub fn exit_on_delete(&self, name: &str, code: i32) {
        if let Some(p) = self.pods.lock().expect("pods").get_mut(name) {
            p.exit_on_delete = code;
        }
    }

    /// The local sidecar process of Pod `name`'s address.
    pub fn pod_ip(&self, name: &str) -> Option<String> {
        self.pods
            .lock()
            .expect("pods")
            .get(name)
            .map(|p| p.ip.clone())
    }

    /// Waits until `ok` holds for the object `name` (as the admin reads it), and returns it.
    pub async fn wait_slab(
        &self,
        name: &str,
        what: &str,
        ok: impl Fn(&spawner_k8s::SessionLivedBackend) -> bool,
    ) -> spawner_k8s::SessionLivedBackend {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let obj = self.slabs().get_opt(name).await.expect("read object");
            if let Some(o) = obj.as_ref().filter(|o| ok(o)) {
                return o.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{name}: never {what}; last seen: {:?}",
                obj.and_then(|o| o.status)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the object `name` to be in `state`.
    pub async fn wait_state(
        &self,
        name: &str,
        state: spawner_core::State,
    ) -> spawner_k8s::SessionLivedBackend {
        self.wait_slab(name, state.as_str(), |o| {
            o.status.as_ref().and_then(|s| s.state) == Some(state)
        })
        .await
    }

    /// The Events of the object `name` (events.k8s.io), as "type reason: note".
    pub fn events_of(&self, name: &str) -> Vec<String> {
        let out = kubectl(
            &self.cluster.admin_kubeconfig,
            &[
                "get",
                "events.events.k8s.io",
                "-n",
                &self.name,
                "--field-selector",
                &format!("regarding.name={name}"),
                "-o",
                "json",
            ],
            None,
        );
        let v: Value = serde_json::from_str(&out).expect("events json");
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            // The backend's own, not its Service's (same name): the endpoint controllers
            // refuse the stand-in kubelet's loopback Pod addresses and say so.
            .filter(|e| e["regarding"]["kind"] == "SessionLivedBackend")
            .map(|e| {
                format!(
                    "{} {}: {}",
                    e["type"].as_str().unwrap_or(""),
                    e["reason"].as_str().unwrap_or(""),
                    e["note"].as_str().unwrap_or("")
                )
            })
            .collect()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.kubelet.abort();
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .env("KUBECONFIG", &self.cluster.admin_kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The `spawner api` process of a test, and how to call it.
pub struct ApiProc {
    pub proc: Proc,
    pub url: String,
    pub token: String,
}

impl ApiProc {
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http()
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http()
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET");
        let code = r.status().as_u16();
        (code, r.text().await.unwrap_or_default())
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let (code, text) = self.get(path).await;
        assert_eq!(code, 200, "GET {path}: {text}");
        serde_json::from_str(&text).expect("json")
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn app_container(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .expect("an application container")
}

/// The literal variables of container `container` of `pod`.
pub fn container_env(pod: &Pod, container: &str) -> Vec<(String, String)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter(|c| c.name == container)
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect()
}

fn container_status(name: &str, state: Value) -> Value {
    json!({"name": name, "image": "spawner:test", "imageID": "", "ready": state.get("running").is_some(),
           "restartCount": 0, "started": state.get("running").is_some(), "state": state})
}

/// The kubelet's part of a Pod deletion: stops the Pod's processes, reports its containers
/// terminated, and removes the Pod (a graceful delete of a bound Pod waits for this).
async fn finish_deleted_pods(pods: Api<Pod>, local: LocalPods) {
    loop {
        if let Ok(list) = pods.list(&Default::default()).await {
            for pod in list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_some())
            {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let taken = local.lock().map(|mut l| l.remove(&name)).ok().flatten();
                let mut statuses = vec![];
                if let Some(mut lp) = taken {
                    let app_running = lp.app.is_some();
                    if let Some(mut app) = lp.app.take() {
                        app.stop();
                    }
                    lp.sidecar.stop();
                    if app_running {
                        statuses.push(container_status(
                            &app_container(pod),
                            json!({"terminated": {"exitCode": lp.exit_on_delete, "startedAt": now(), "finishedAt": now()}}),
                        ));
                        statuses.push(container_status(
                            SIDECAR_CONTAINER,
                            json!({"terminated": {"exitCode": 0, "startedAt": now(), "finishedAt": now()}}),
                        ));
                    }
                }
                if !statuses.is_empty() {
                    let patch = json!({"status": {"containerStatuses": statuses}});
                    let _ = pods
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                    // Let the controller see the exit before the Pod is gone, as it would.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let _ = pods
                    .delete(
                        &name,
                        &DeleteParams {
                            grace_period_seconds: Some(0),
                            ..DeleteParams::default()
                        },
                    )
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails if a component hit its RBAC ("forbidden" in its log).
pub fn assert_no_forbidden(procs: &[&Proc]) {
    for p in procs {
        let log = p.log_text();
        assert!(!log.contains("forbidden"), "{} hit RBAC:\n{log}", p.name);
    }
}
