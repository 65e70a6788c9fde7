//! The Docker runtime: a backend is a container on the local Docker engine (or on anything
//! that speaks its API, such as Podman's compatible socket).
//!
//! - Every container joins a user-defined bridge network owned by Spawner (`spawner` by
//!   default) and is reached at its address on it: nothing is published on the host's
//!   interfaces, and since no docker-proxy sits in between, a TCP connect to the container
//!   succeeds only once the application listens (which is what the readiness probe needs).
//! - Containers carry labels (`dev.spawner.instance`, `dev.spawner.backend-id`, ...) which is
//!   how a restarted Spawner finds its own, also those the store never heard of.
//! - Output goes to the engine's log driver; a follower task appends it to the backend's log
//!   file and records how far it got in a cursor file beside it, so that following again after
//!   a restart neither loses nor repeats lines.
//! - A backend with `idle_action: "sleep"` keeps its files in a named volume of its own
//!   ([`volume_name`], labelled as its containers are), mounted at its `working_dir` or at
//!   [`DATA_MOUNT`]: its container is removed when it goes to sleep, the volume only when
//!   it ends for good.
//! - The container runs under the engine's init (`--init`) by default: an application that
//!   is PID 1 would otherwise ignore SIGTERM unless it installs a handler.

use crate::{Handle, Launch, Owned, Runtime, RuntimeError, Signal, Started};
use base64::Engine as _;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    ListNetworksOptions, ListVolumesOptions, LogsOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};
use bollard::{auth::DockerCredentials, container::LogOutput, Docker};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use spawner_core::lifecycle::Exit;
use spawner_core::spec::PullPolicy;
use spawner_core::BackendId;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Mutex};

/// Label with the Spawner installation a container belongs to.
pub const LABEL_INSTANCE: &str = "dev.spawner.instance";
/// Label with the backend id.
pub const LABEL_BACKEND_ID: &str = "dev.spawner.backend-id";
/// Label with the backend's key, when it has one.
pub const LABEL_KEY: &str = "dev.spawner.key";
/// Label with the host path of the backend's log file, so that a container found without
/// its record can still have its output followed.
pub const LABEL_LOG_PATH: &str = "dev.spawner.log-path";
/// Label on the network Spawner created.
pub const LABEL_MANAGED: &str = "dev.spawner.managed";
/// Where a sleeping backend's volume is mounted when its spec names no `working_dir`.
pub const DATA_MOUNT: &str = "/data";

/// The named volume a backend of `instance` keeps its files in across sleeps.
pub fn volume_name(instance: &str, id: &BackendId) -> String {
    format!("spawner-{instance}-{id}")
}

/// Where a backend's kept files are inside its container: its `working_dir`, or
/// [`DATA_MOUNT`] (told to it as `SPAWNER_DATA_DIR`).
pub fn data_mount(spec: &spawner_core::BackendSpec) -> &str {
    spec.executable.working_dir.as_deref().unwrap_or(DATA_MOUNT)
}

/// Starts tried again while the network's name is ambiguous (see `start_container`).
const AMBIGUOUS_NETWORK_RETRIES: usize = 5;

const DEFAULT_SOCKET_PATH: &str = "/var/run/docker.sock";
/// Engine requests (not the long-lived log and wait streams) give up after this long.
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// How long `connect` waits for the engine to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an exit waits for the log follower to write the container's last output.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How the Docker runtime is set up.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The engine's address (`unix:///path` or `tcp://host:port`); `None` reads `DOCKER_HOST`,
    /// then falls back to `unix:///var/run/docker.sock`.
    pub host: Option<String>,
    /// The user-defined bridge network the containers join (created when missing).
    pub network: String,
    /// Leave containers in place after their backend ended (stopped, not removed), to
    /// inspect them; they are then removed by hand (`docker rm`).
    pub keep_containers: bool,
    /// Where `image_pull_secret` names are looked up: `{dir}/{name}.json`, each a Docker
    /// config file (`{"auths": {"registry": {"auth": "base64(user:password)"}}}`, the
    /// content of a Kubernetes `dockerconfigjson` secret).
    pub pull_secrets_dir: Option<PathBuf>,
    /// The Docker config file used for pulls without `image_pull_secret`; `None` reads
    /// `$DOCKER_CONFIG/config.json`, then `~/.docker/config.json`. Only inline `auths`
    /// entries are used (credential helpers are not run).
    pub docker_config: Option<PathBuf>,
    /// Run the engine's init as PID 1 in each container, so that SIGTERM reaches an
    /// application that installs no handler for it.
    pub init: bool,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            host: None,
            network: "spawner".into(),
            keep_containers: false,
            pull_secrets_dir: None,
            docker_config: None,
            init: true,
        }
    }
}

/// Runs backends as containers on a Docker engine.
///
/// Clones share one engine connection. The background tasks that copy container output into
/// log files stop when the last clone is dropped, as they would if Spawner went away.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    options: Arc<DockerOptions>,
    /// The id of the network in use, once known.
    network_id: Arc<Mutex<Option<String>>>,
    /// Never sent on: its receivers see it closed once every clone is dropped.
    alive: Arc<watch::Sender<()>>,
    /// Where the engine is, for messages.
    host: String,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("host", &self.host)
            .field("options", &self.options)
            .finish()
    }
}

/// A container create in flight. Dropped before its answer was taken, it removes the
/// container the create makes, so that an abandoned start leaves nothing behind.
struct Creating {
    docker: Docker,
    keep: bool,
    task: Option<tokio::task::JoinHandle<Result<String, DockerError>>>,
}

impl Creating {
    /// The create's answer; from then on, what it made is the caller's.
    async fn answer(&mut self) -> Result<String, DockerError> {
        let joined = match self.task.as_mut() {
            Some(task) => task.await,
            None => return Err(create_task_failed("its answer was already taken")),
        };
        self.task = None;
        joined.unwrap_or_else(|e| Err(create_task_failed(&e.to_string())))
    }
}

fn create_task_failed(why: &str) -> DockerError {
    DockerError::IOError {
        err: std::io::Error::other(format!("the container create task failed: {why}")),
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        let (Some(task), Ok(rt)) = (self.task.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        if self.keep {
            return;
        }
        let docker = self.docker.clone();
        rt.spawn(async move {
            if let Ok(Ok(container)) = task.await {
                let options = RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                };
                if let Err(e) = docker.remove_container(&container, Some(options)).await {
                    tracing::warn!(container = %short(&container), error = %e, "removing the container of an abandoned start failed");
                }
            }
        });
    }
}

/// What identifies one backend container across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DockerHandle {
    container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_path: Option<PathBuf>,
}

impl DockerHandle {
    fn to_handle(&self) -> Handle {
        // A struct of a string and a path always serializes.
        Handle(serde_json::to_value(self).unwrap_or(serde_json::Value::Null))
    }
    fn from_handle(h: &Handle) -> Result<Self, RuntimeError> {
        serde_json::from_value(h.0.clone())
            .map_err(|e| RuntimeError::Unavailable(format!("not a docker handle: {e}")))
    }
}

impl DockerRuntime {
    /// Connects to the engine and checks that it answers, and that Spawner's network exists
    /// (creating it if needed). The error says why the runtime is unavailable, for `serve`
    /// to report at start-up.
    pub async fn connect(options: DockerOptions) -> Result<Self, String> {
        let host = options
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET_PATH}"));
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            if !Path::new(path).exists() {
                return Err(format!(
                    "no Docker engine socket at {path} (start the engine, or set DOCKER_HOST)"
                ));
            }
            Docker::connect_with_unix(
                &host,
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(
                &host,
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )
        } else {
            return Err(format!(
                "DOCKER_HOST {host:?} is not supported: use unix:///path/to/docker.sock or tcp://host:port"
            ));
        }
        .map_err(|e| format!("cannot connect to the Docker engine at {host}: {e}"))?;
        let unreachable = |e: DockerError| {
            let text = e.to_string();
            let hint = if text.contains("ermission denied") {
                " (is this user allowed to use the socket, e.g. in the docker group?)"
            } else {
                ""
            };
            format!("the Docker engine at {host} does not answer: {text}{hint}")
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unreachable(e)),
            Err(_) => {
                return Err(format!(
                    "the Docker engine at {host} did not answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            }
        }
        // Speak the engine's API version when it is older than the client's (20.10: 1.41).
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unreachable(e)),
            Err(_) => {
                return Err(format!(
                    "the Docker engine at {host} did not tell its API version within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            }
        };
        let (alive, _) = watch::channel(());
        let runtime = DockerRuntime {
            docker,
            options: Arc::new(options),
            network_id: Arc::new(Mutex::new(None)),
            alive: Arc::new(alive),
            host,
        };
        runtime
            .ensure_network()
            .await
            .map_err(|e| format!("Docker network {:?}: {e}", runtime.options.network))?;
        Ok(runtime)
    }

    /// The engine's address and API version, for the start-up log.
    pub fn describe(&self) -> String {
        let v = self.docker.client_version();
        format!(
            "{} (API {}.{}, network {})",
            self.host, v.major_version, v.minor_version, self.options.network
        )
    }

    pub fn options(&self) -> &DockerOptions {
        &self.options
    }

    /// The id of Spawner's network, created if missing.
    ///
    /// Engines before API 1.44 allow two networks of one name when created concurrently (by
    /// two Spawner processes, say): every caller then settles on the oldest one and removes
    /// the others, so that they all agree.
    async fn ensure_network(&self) -> Result<String, RuntimeError> {
        let mut cached = self.network_id.lock().await;
        if let Some(id) = &*cached {
            return Ok(id.clone());
        }
        let id = match self.find_network().await? {
            Some(id) => id,
            None => {
                let request = NetworkCreateRequest {
                    name: self.options.network.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(HashMap::from([(LABEL_MANAGED.into(), "true".into())])),
                    ..Default::default()
                };
                match self.docker.create_network(request).await {
                    Ok(_) => {}
                    Err(e) if status(&e) == Some(409) => {}
                    Err(e) => return Err(unavailable("creating the network", e)),
                }
                self.find_network().await?.ok_or_else(|| {
                    RuntimeError::Unavailable(
                        "the network vanished right after its creation".into(),
                    )
                })?
            }
        };
        *cached = Some(id.clone());
        Ok(id)
    }

    /// Starts a created container. An engine before API 1.44 refuses to while another
    /// network has the same name as the container's, even though the container names its
    /// network by id: another Spawner process that created its network at the same moment
    /// as this one removes the newer of the two right after (`find_network`). So the
    /// duplicate is removed here too, and the start tried again, a few times.
    async fn start_container(&self, container: &str) -> Result<(), bollard::errors::Error> {
        let mut pause = Duration::from_millis(20);
        for _ in 0..AMBIGUOUS_NETWORK_RETRIES {
            match self.docker.start_container(container, None).await {
                Err(e) if engine_message(&e).contains("is ambiguous") => {
                    tracing::debug!(error = %e, "two networks of one name: settling on one");
                    let _ = self.find_network().await;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                result => return result,
            }
        }
        self.docker.start_container(container, None).await
    }

    async fn find_network(&self) -> Result<Option<String>, RuntimeError> {
        let name = &self.options.network;
        let filters = HashMap::from([("name".to_string(), vec![name.clone()])]);
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| unavailable("listing networks", e))?;
        // The filter matches substrings: keep the exact name only.
        let mut same: Vec<(String, String, bool)> = networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name.as_str()))
            .filter_map(|n| {
                let created = n.created.as_deref().map(normalize_time).unwrap_or_default();
                let managed = n
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(LABEL_MANAGED));
                n.id.map(|id| (created, id, managed))
            })
            .collect();
        same.sort();
        let mut rest = same.into_iter();
        let Some((_, keep, _)) = rest.next() else {
            return Ok(None);
        };
        for (_, extra, managed) in rest {
            if managed {
                let _ = self.docker.remove_network(&extra).await;
            }
        }
        Ok(Some(keep))
    }

    /// Makes sure the image is there as the pull policy says; says what was done.
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        secret: Option<&str>,
        progress: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<String, RuntimeError> {
        let present = || async {
            match self.docker.inspect_image(image).await {
                Ok(_) => Ok(true),
                Err(e) if status(&e) == Some(404) => Ok(false),
                Err(e) => Err(unavailable("inspecting the image", e)),
            }
        };
        match policy {
            PullPolicy::Never => {
                if present().await? {
                    Ok(format!("image {image} present"))
                } else {
                    Err(RuntimeError::Start(format!(
                        "image {image} is not on the Docker engine and pull_policy is Never: \
                         build or load it there first (docker build, docker load), \
                         or use pull_policy IfNotPresent"
                    )))
                }
            }
            PullPolicy::IfNotPresent if present().await? => Ok(format!("image {image} present")),
            PullPolicy::IfNotPresent | PullPolicy::Always => {
                let credentials = self.credentials(image, secret)?;
                if let Some(tx) = progress {
                    let _ = tx.send(format!("pulling image {image}"));
                }
                let started = Instant::now();
                let options = CreateImageOptions {
                    from_image: Some(with_default_tag(image)),
                    ..Default::default()
                };
                let mut progress = self.docker.create_image(Some(options), None, credentials);
                while let Some(item) = progress.next().await {
                    match item {
                        Ok(info) => {
                            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                                return Err(pull_failed(image, &detail));
                            }
                        }
                        Err(e) => return Err(pull_failed(image, &engine_message(&e))),
                    }
                }
                Ok(format!(
                    "pulled image {image} in {:.1} s",
                    started.elapsed().as_secs_f64()
                ))
            }
        }
    }

    /// The registry credentials for pulling `image`: from the named pull secret, or from
    /// the Docker config file when there is one with an entry for the image's registry.
    fn credentials(
        &self,
        image: &str,
        secret: Option<&str>,
    ) -> Result<Option<DockerCredentials>, RuntimeError> {
        let registry = registry_host(image);
        match secret {
            Some(name) => {
                let Some(dir) = &self.options.pull_secrets_dir else {
                    return Err(RuntimeError::Start(format!(
                        "image_pull_secret {name:?} was given, but this server has no pull secrets directory configured"
                    )));
                };
                if name.contains('/') || name.starts_with('.') {
                    return Err(RuntimeError::Start(format!(
                        "image_pull_secret {name:?} is not a plain name"
                    )));
                }
                let path = dir.join(format!("{name}.json"));
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    RuntimeError::Start(format!(
                        "image_pull_secret {name:?}: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                let found = credentials_for(&text, &registry).map_err(|e| {
                    RuntimeError::Start(format!(
                        "image_pull_secret {name:?}: {}: {e}",
                        path.display()
                    ))
                })?;
                found.map(Some).ok_or_else(|| {
                    RuntimeError::Start(format!(
                        "image_pull_secret {name:?} has no credentials for registry {registry}"
                    ))
                })
            }
            None => {
                let path = self
                    .options
                    .docker_config
                    .clone()
                    .or_else(default_docker_config);
                let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
                    return Ok(None);
                };
                // A config file that cannot be read is no reason to refuse an anonymous pull.
                Ok(credentials_for(&text, &registry).ok().flatten())
            }
        }
    }

    /// Creates the container in a task of its own. The engine finishes a create whose
    /// client went away, so a start abandoned while the request is in flight (a stop came
    /// first) would leave a container that nobody lists in time to remove: dropped before
    /// the answer, [`Creating`] removes what the create made once it has made it.
    async fn create(&self, name: &str, body: &ContainerCreateBody) -> Result<String, DockerError> {
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let docker = self.docker.clone();
        let body = body.clone();
        let task = tokio::spawn(async move {
            docker
                .create_container(Some(options), body)
                .await
                .map(|r| r.id)
        });
        let mut creating = Creating {
            docker: self.docker.clone(),
            keep: self.options.keep_containers,
            task: Some(task),
        };
        creating.answer().await
    }

    /// The backend's named volume, made on its first start (labelled as its containers
    /// are, so that a restart finds it) and found again at each wake.
    async fn ensure_volume(&self, launch: &Launch) -> Result<String, RuntimeError> {
        let name = volume_name(&launch.instance, &launch.id);
        let request = VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(HashMap::from([
                (LABEL_INSTANCE.to_string(), launch.instance.clone()),
                (LABEL_BACKEND_ID.to_string(), launch.id.to_string()),
            ])),
            ..Default::default()
        };
        // The engine answers a create of an existing volume with that volume.
        self.docker
            .create_volume(request)
            .await
            .map_err(|e| start_failed("creating its volume", e))?;
        Ok(name)
    }

    /// Removes a container, unless containers are kept; a container already gone is fine.
    async fn remove(&self, container: &str) -> Result<(), RuntimeError> {
        if self.options.keep_containers {
            return Ok(());
        }
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            // 404: gone; 409: a removal is already in progress.
            Err(e) if matches!(status(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(unavailable("removing the container", e)),
        }
    }

    /// Starts copying the container's output into `log_path` from where the last copy
    /// stopped; with `follow` until the container stops, otherwise what is there now.
    fn spawn_log_copy(
        &self,
        container: &str,
        log_path: PathBuf,
        follow: bool,
    ) -> tokio::task::JoinHandle<()> {
        let docker = self.docker.clone();
        let container = container.to_string();
        let mut stop = self.alive.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                r = copy_logs(&docker, &container, &log_path, follow) => {
                    if let Err(e) = r {
                        tracing::warn!(container = %short(&container), error = %e, "copying container output stopped");
                    }
                }
                _ = stop.changed() => {}
            }
        })
    }

    /// Resolves when the container has exited, once its last output is in the log file.
    fn exit_future(
        &self,
        container: &str,
        logs: tokio::task::JoinHandle<()>,
    ) -> BoxFuture<'static, Exit> {
        let docker = self.docker.clone();
        let container = container.to_string();
        async move {
            let exit = wait_exit(&docker, &container).await;
            let _ = tokio::time::timeout(LOG_DRAIN_TIMEOUT, logs).await;
            exit
        }
        .boxed()
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, launch: &Launch) -> Result<Started, RuntimeError> {
        let exe = &launch.spec.executable;
        let Some(image) = exe.image.as_deref() else {
            return Err(RuntimeError::Start(
                "the docker runtime needs executable.image".into(),
            ));
        };
        let policy = exe.pull_policy.unwrap_or(PullPolicy::IfNotPresent);
        let image_note = self
            .ensure_image(
                image,
                policy,
                exe.image_pull_secret.as_deref(),
                launch.progress.as_ref(),
            )
            .await?;
        let network = self.ensure_network().await?;

        let mut env: Vec<String> = launch.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("SPAWNER_INSTANCE={}", launch.instance));
        let mut labels = HashMap::from([
            (LABEL_INSTANCE.to_string(), launch.instance.clone()),
            (LABEL_BACKEND_ID.to_string(), launch.id.to_string()),
            (
                LABEL_LOG_PATH.to_string(),
                launch.log_path.display().to_string(),
            ),
        ]);
        if let Some(key) = &launch.spec.key {
            labels.insert(LABEL_KEY.to_string(), key.clone());
        }
        let binds = match launch.spec.idle_action {
            spawner_core::spec::IdleAction::Sleep => {
                let volume = self.ensure_volume(launch).await?;
                Some(vec![format!("{volume}:{}", data_mount(&launch.spec))])
            }
            spawner_core::spec::IdleAction::Sweep => None,
        };
        let resources = launch.spec.resources.clone().unwrap_or_default();
        let memory = resources
            .memory_mb
            .and_then(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).ok());
        let mut body = ContainerCreateBody {
            image: Some(image.to_string()),
            env: Some(env),
            // As in Kubernetes, a command replaces the image's entry point and its arguments.
            entrypoint: launch.command.clone(),
            cmd: None,
            working_dir: exe.working_dir.clone(),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(network),
                binds,
                memory,
                // The limit covers swap too: a backend over it is killed, not swapped out.
                memory_swap: memory,
                nano_cpus: resources
                    .cpu_millis
                    .and_then(|m| i64::try_from(m.saturating_mul(1_000_000)).ok()),
                init: self.options.init.then_some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!("spawner-{}", launch.id);
        let container = match self.create(&name, &body).await {
            Ok(id) => id,
            // A container of this backend from a start that was never recorded: replace it.
            Err(e) if status(&e) == Some(409) => {
                let options = RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                let _ = self.docker.remove_container(&name, Some(options)).await;
                self.create(&name, &body)
                    .await
                    .map_err(|e| start_failed("creating the container", e))?
            }
            // The network was removed behind our back: make it again, once.
            Err(e) if status(&e) == Some(404) && engine_message(&e).contains("network") => {
                *self.network_id.lock().await = None;
                let network = self.ensure_network().await?;
                if let Some(hc) = body.host_config.as_mut() {
                    hc.network_mode = Some(network);
                }
                self.create(&name, &body)
                    .await
                    .map_err(|e| start_failed("creating the container", e))?
            }
            Err(e) => return Err(start_failed("creating the container", e)),
        };
        let handle = DockerHandle {
            container: container.clone(),
            log_path: Some(launch.log_path.clone()),
        };
        if let Err(e) = self.start_container(&container).await {
            let _ = self.remove(&container).await;
            return Err(start_failed("starting the container", e));
        }
        let logs = self.spawn_log_copy(&container, launch.log_path.clone(), true);

        let info = match self.docker.inspect_container(&container, None).await {
            Ok(info) => info,
            Err(e) => {
                let _ = self.remove(&container).await;
                return Err(unavailable("inspecting the container", e));
            }
        };
        // The container's network namespace, through its main process, when the engine
        // runs on this machine and its pids are ours (not a remote engine, not another pid
        // namespace: then the path names no process, or one whose watch is backed by a
        // connect probe anyway).
        let netns = info
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .filter(|pid| *pid > 0 && self.host.starts_with("unix://"))
            .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")))
            .filter(|p| p.exists());
        let ip = info
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|mut nets| {
                nets.remove(&self.options.network)
                    .or_else(|| nets.into_values().next())
            })
            .and_then(|ep| ep.ip_address)
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let Some(ip) = ip else {
            // It has no address only if it already stopped: report how, with its output
            // in the log file for the reason.
            let exit = wait_exit(&self.docker, &container).await;
            let _ = tokio::time::timeout(LOG_DRAIN_TIMEOUT, logs).await;
            let output = last_output(&self.docker, &container).await;
            let _ = self.remove(&container).await;
            let said = if output.is_empty() {
                String::new()
            } else {
                format!(": {output}")
            };
            return Err(RuntimeError::Start(format!(
                "the container exited at once ({}){said}",
                describe_exit(exit)
            )));
        };
        let exited = self.exit_future(&container, logs);
        Ok(Started {
            handle: handle.to_handle(),
            address: SocketAddr::new(ip, launch.port),
            netns,
            exited,
            note: Some(format!(
                "{image_note}; container {} at {ip} on network {}",
                short(&container),
                self.options.network
            )),
        })
    }

    async fn adopt(
        &self,
        id: &BackendId,
        handle: &Handle,
    ) -> Result<Option<BoxFuture<'static, Exit>>, RuntimeError> {
        let h = DockerHandle::from_handle(handle)?;
        let info = match self.docker.inspect_container(&h.container, None).await {
            Ok(info) => info,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(unavailable("inspecting the container", e)),
        };
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        if labels.get(LABEL_BACKEND_ID).map(String::as_str) != Some(id.as_str()) {
            return Ok(None);
        }
        let log_path = h
            .log_path
            .clone()
            .or_else(|| labels.get(LABEL_LOG_PATH).map(PathBuf::from));
        // A container that ended while nobody watched still has its exit code (and OOM
        // flag) in the engine: the exit future then resolves at once with the real outcome,
        // after what it wrote since the last copy has gone to its log.
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let logs = match log_path {
            Some(path) => self.spawn_log_copy(&h.container, path, running),
            None => tokio::spawn(async {}),
        };
        Ok(Some(self.exit_future(&h.container, logs)))
    }

    async fn signal(&self, handle: &Handle, signal: Signal) -> Result<(), RuntimeError> {
        let h = DockerHandle::from_handle(handle)?;
        let signal = match signal {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        };
        let options = KillContainerOptions {
            signal: signal.to_string(),
        };
        match self
            .docker
            .kill_container(&h.container, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            // 404: gone; 409: not running. Either way there is nothing to signal.
            Err(e) if matches!(status(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(unavailable("signalling the container", e)),
        }
    }

    async fn cleanup(&self, handle: &Handle) -> Result<(), RuntimeError> {
        let h = DockerHandle::from_handle(handle)?;
        if self.options.keep_containers {
            // Kept for debugging, but not left running.
            return self.signal(handle, Signal::Kill).await;
        }
        self.remove(&h.container).await?;
        if let Some(path) = &h.log_path {
            let _ = std::fs::remove_file(cursor_path(path));
        }
        Ok(())
    }

    async fn list_owned(&self, instance: &str) -> Result<Vec<Owned>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_INSTANCE}={instance}")],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| unavailable("listing containers", e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let container = c.id?;
                let labels = c.labels.unwrap_or_default();
                let id = labels.get(LABEL_BACKEND_ID)?.clone();
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                Some(Owned {
                    id,
                    describe: format!("container {} ({state})", short(&container)),
                    handle: DockerHandle {
                        container,
                        log_path: labels.get(LABEL_LOG_PATH).map(PathBuf::from),
                    }
                    .to_handle(),
                })
            })
            .collect())
    }

    async fn forget(&self, instance: &str, id: &BackendId) -> Result<(), RuntimeError> {
        self.remove_volume(&volume_name(instance, id)).await
    }

    async fn list_kept(&self, instance: &str) -> Result<Vec<Owned>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_INSTANCE}={instance}")],
        )]);
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| unavailable("listing volumes", e))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| {
                let id = v.labels.get(LABEL_BACKEND_ID)?.clone();
                Some(Owned {
                    id,
                    describe: format!("volume {}", v.name),
                    handle: Handle(serde_json::json!({ "volume": v.name })),
                })
            })
            .collect())
    }
}

impl DockerRuntime {
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        if self.options.keep_containers {
            return Ok(());
        }
        let options = RemoveVolumeOptions { force: true };
        match self.docker.remove_volume(name, Some(options)).await {
            Ok(()) => Ok(()),
            // 404: gone already.
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(unavailable("removing its volume", e)),
        }
    }
}

/// The exit code of a process killed by SIGKILL (128 + 9), as an OOM kill leaves it.
const SIGKILL_CODE: i32 = 137;
/// How many times, and how often, an exit by SIGKILL is looked at for an OOM kill.
const OOM_LOOKS: u32 = 10;
const OOM_LOOK_EVERY: Duration = Duration::from_millis(50);

/// Waits for the container to stop and tells how it ended. Survives a dropped connection
/// to the engine by asking again; a container removed meanwhile ended in an unknown way.
async fn wait_exit(docker: &Docker, container: &str) -> Exit {
    // The wait can be long: no request timeout on it.
    let docker = docker
        .clone()
        .with_timeout(Duration::from_secs(u32::MAX.into()));
    let code = loop {
        let mut wait = docker.wait_container(container, None);
        match wait.next().await {
            Some(Ok(r)) => break r.status_code,
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => break code,
            Some(Err(e)) if status(&e) == Some(404) => return Exit::Unknown,
            _ => {}
        }
        // The engine went away or the stream broke: look, then wait again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        match docker.inspect_container(container, None).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                if !state.running.unwrap_or(false)
                    && state.exit_code.is_some()
                    && state
                        .finished_at
                        .as_deref()
                        .is_some_and(|f| !f.starts_with("0001"))
                {
                    break state.exit_code.unwrap_or_default();
                }
            }
            Err(e) if status(&e) == Some(404) => return Exit::Unknown,
            Err(_) => {}
        }
    };
    let code = i32::try_from(code).unwrap_or(i32::MAX);
    // The engine may record the OOM kill a moment after the exit it caused (the kernel's
    // event reaches it apart from the exit): a SIGKILL of a container with a memory limit
    // is looked at a few times.
    let mut oom = false;
    for look in 0..OOM_LOOKS {
        if look > 0 {
            tokio::time::sleep(OOM_LOOK_EVERY).await;
        }
        let Ok(info) = docker.inspect_container(container, None).await else {
            break;
        };
        oom = info.state.and_then(|s| s.oom_killed).unwrap_or(false);
        let limited = info
            .host_config
            .and_then(|h| h.memory)
            .is_some_and(|m| m > 0);
        if oom || code != SIGKILL_CODE || !limited {
            break;
        }
    }
    if oom {
        Exit::OutOfMemory(Some(code))
    } else {
        Exit::Code(code)
    }
}

/// The last few lines the container wrote, on one line: often the reason it stopped.
async fn last_output(docker: &Docker, container: &str) -> String {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: "3".into(),
        ..Default::default()
    };
    let mut text = String::new();
    let mut stream = docker.logs(container, Some(options));
    while let Some(Ok(output)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&output.into_bytes()));
    }
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    match joined.char_indices().nth(500) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// Appends the container's output to `log_path`, after what an earlier copy recorded in
/// the cursor file, and keeps the cursor up to date.
async fn copy_logs(
    docker: &Docker,
    container: &str,
    log_path: &Path,
    follow: bool,
) -> std::io::Result<()> {
    let cursor_file = cursor_path(log_path);
    let mut cursor = std::fs::read_to_string(&cursor_file)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let since = cursor
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map_or(0, |t| i32::try_from(t.timestamp()).unwrap_or(0));
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::LOG_FILE_MODE)
        .open(log_path)
        .await?;
    let options = LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        timestamps: true,
        since,
        ..Default::default()
    };
    let docker = docker
        .clone()
        .with_timeout(Duration::from_secs(u32::MAX.into()));
    let mut stream = docker.logs(container, Some(options));
    let mut ended = false;
    while !ended {
        let Some(first) = stream.next().await else {
            break;
        };
        // Take every frame already there, then record the cursor once for all of them.
        let mut batch = vec![first];
        loop {
            match stream.next().now_or_never() {
                Some(Some(item)) => batch.push(item),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        let mut advanced = false;
        for item in batch {
            let output = match item {
                Ok(o) => o,
                Err(e) if status(&e) == Some(404) => return Ok(()),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            };
            let bytes = match output {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => message,
                LogOutput::StdIn { .. } => continue,
            };
            let (stamp, line) = split_timestamp(&bytes);
            if let Some(stamp) = stamp {
                if cursor.as_deref().is_some_and(|c| stamp.as_str() <= c) {
                    continue;
                }
                cursor = Some(stamp);
                advanced = true;
            }
            file.write_all(line).await?;
        }
        file.flush().await?;
        if advanced {
            if let Some(c) = &cursor {
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(crate::LOG_FILE_MODE)
                    .open(&cursor_file)
                    .await?;
                f.write_all(c.as_bytes()).await?;
            }
        }
    }
    Ok(())
}

/// Where the copy of a log file records the timestamp of the last line it wrote.
fn cursor_path(log_path: &Path) -> PathBuf {
    let mut name = log_path.as_os_str().to_owned();
    name.push(".cursor");
    PathBuf::from(name)
}

/// Splits a log frame with a timestamp prefix into the normalized timestamp and the line.
fn split_timestamp(frame: &[u8]) -> (Option<String>, &[u8]) {
    let Some(space) = frame.iter().position(|b| *b == b' ') else {
        return (None, frame);
    };
    match std::str::from_utf8(&frame[..space])
        .ok()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    {
        Some(t) => (
            Some(format_time(t.with_timezone(&chrono::Utc))),
            &frame[space + 1..],
        ),
        None => (None, frame),
    }
}

/// RFC 3339 with nanoseconds always written out, so that two such strings compare as
/// their times do (the engine trims trailing zeros, which breaks a plain comparison).
fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

fn normalize_time(s: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| format_time(t.with_timezone(&chrono::Utc)))
        .unwrap_or_else(|_| s.to_string())
}

/// The registry an image reference names, as a Docker config file keys it.
fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            normalize_registry(first)
        }
        _ => "docker.io".to_string(),
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `registry.example:5000` stays as it is.
fn normalize_registry(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        h => h.to_string(),
    }
}

/// An image reference with a tag: without one, the engine would pull every tag.
fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The credentials for `registry` in a Docker config file's text, if it has an entry.
fn credentials_for(text: &str, registry: &str) -> Result<Option<DockerCredentials>, String> {
    let config: DockerConfig =
        serde_json::from_str(text).map_err(|e| format!("not a Docker config file: {e}"))?;
    let Some((key, entry)) = config
        .auths
        .into_iter()
        .find(|(k, _)| normalize_registry(k) == registry)
    else {
        return Ok(None);
    };
    let (mut username, mut password) = (entry.username, entry.password);
    if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auths.{key}.auth is not base64: {e}"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| format!("auths.{key}.auth is not text"))?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| format!("auths.{key}.auth is not base64 of user:password"))?;
        username = Some(u.to_string());
        password = Some(p.to_string());
    }
    Ok(Some(DockerCredentials {
        username,
        password,
        identitytoken: entry.identitytoken,
        serveraddress: Some(key),
        ..Default::default()
    }))
}

fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The HTTP status of an engine error, if it was one.
fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message for an error it answered with, else the client's description.
fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn unavailable(doing: &str, e: DockerError) -> RuntimeError {
    RuntimeError::Unavailable(format!("Docker engine: {doing}: {}", engine_message(&e)))
}

/// An engine refusal at create or start (bad image, missing executable, bad limits) is the
/// spec's problem: the backend fails with the engine's words. Anything else is ours.
fn start_failed(doing: &str, e: DockerError) -> RuntimeError {
    match status(&e) {
        Some(400..=499) | Some(500) => {
            RuntimeError::Start(format!("{doing} failed: {}", engine_message(&e)))
        }
        _ => unavailable(doing, e),
    }
}

fn pull_failed(image: &str, why: &str) -> RuntimeError {
    RuntimeError::Start(format!("pulling image {image} failed: {why}"))
}

fn describe_exit(exit: Exit) -> String {
    match exit {
        Exit::Code(c) => format!("exit code {c}"),
        Exit::Signal(s) => format!("signal {s}"),
        Exit::OutOfMemory(Some(c)) => {
            format!("out of memory: killed at its memory limit, exit code {c}")
        }
        Exit::OutOfMemory(None) => "out of memory: killed at its memory limit".into(),
        Exit::Unknown => "removed before its exit was seen".into(),
    }
}

fn short(container: &str) -> &str {
    container.get(..12).unwrap_or(container)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_of_an_image() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox:1"), "docker.io");
        assert_eq!(
            registry_host("registry.example/app:1.2"),
            "registry.example"
        );
        assert_eq!(registry_host("localhost:5000/app"), "localhost:5000");
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
    }

    #[test]
    fn untagged_images_get_latest() {
        assert_eq!(with_default_tag("app"), "app:latest");
        assert_eq!(
            with_default_tag("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            with_default_tag("localhost:5000/app:2"),
            "localhost:5000/app:2"
        );
        assert_eq!(with_default_tag("app@sha256:abcd"), "app@sha256:abcd");
    }

    #[test]
    fn credentials_from_a_docker_config() {
        let text = r#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNzOndvcmQ="},
            "registry.example": {"username": "u2", "password": "p2"}
        }}"#;
        let hub = credentials_for(text, "docker.io").unwrap().unwrap();
        assert_eq!(hub.username.as_deref(), Some("user"));
        assert_eq!(hub.password.as_deref(), Some("pass:word"));
        let other = credentials_for(text, "registry.example").unwrap().unwrap();
        assert_eq!(other.username.as_deref(), Some("u2"));
        assert!(credentials_for(text, "ghcr.io").unwrap().is_none());
        assert!(credentials_for("{", "docker.io").is_err());
        assert!(credentials_for(r#"{"auths":{"r.io":{"auth":"%%"}}}"#, "r.io").is_err());
    }

    #[test]
    fn timestamps_compare_as_times() {
        let (a, line) = split_timestamp(b"2026-01-02T03:04:05.1Z hello\n");
        let (b, _) = split_timestamp(b"2026-01-02T03:04:05.12Z x\n");
        assert_eq!(line, b"hello\n");
        assert_eq!(a.as_deref(), Some("2026-01-02T03:04:05.100000000Z"));
        assert!(a < b);
        let (none, whole) = split_timestamp(b"no stamp here");
        assert!(none.is_none());
        assert_eq!(whole, b"no stamp here");
    }

    #[test]
    fn handles_round_trip() {
        let h = DockerHandle {
            container: "abc".into(),
            log_path: Some("/tmp/x.log".into()),
        };
        assert_eq!(DockerHandle::from_handle(&h.to_handle()).unwrap(), h);
        assert!(DockerHandle::from_handle(&Handle(serde_json::json!({"pid": 1}))).is_err());
    }
}
