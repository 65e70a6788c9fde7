//! The Kubernetes subcommands: `controller`, `api`, `print-crd`, `print-slab`, `create-slab`.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use spawner_core::{BackendId, BackendSpec, Executable};
use spawner_k8s::api::{ApiConfig, ApiState};
use spawner_k8s::controller::leader::LeaseConfig;
use spawner_k8s::controller::pod::{PodConfig, DEFAULT_SIDECAR_PORT};
use spawner_k8s::controller::volume::SleepVolume;
use spawner_k8s::controller::ControllerConfig;
use spawner_k8s::kube::api::{Api, PostParams};
use spawner_k8s::kube::runtime::events::Reporter;
use spawner_k8s::kube::{Client, ResourceExt};
use spawner_k8s::model::naming::Urls;
use spawner_k8s::SessionLivedBackend;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand)]
pub enum K8sCommand {
    /// Kubernetes: run the controller (SessionLivedBackends -> Pods and Services).
    Controller(ControllerArgs),
    /// Kubernetes: serve the HTTP API, backed by SessionLivedBackend objects.
    Api(ApiArgs),
    /// Kubernetes: print the CustomResourceDefinitions (SessionLivedBackend, SessionLivedBackendPool) as YAML.
    PrintCrd,
    /// Kubernetes: print a SessionLivedBackend for the given flags as YAML.
    PrintSlab(PrintSlabArgs),
    /// Kubernetes: create a SessionLivedBackend for the given flags.
    CreateSlab(CreateSlabArgs),
}

/// Where browsers reach backends; shared by the controller and the API.
#[derive(Args, Clone)]
pub struct UrlArgs {
    /// The router's public base URL; backends are at {public-url}/p/{id}/.
    #[arg(
        long,
        env = "SPAWNER_PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    public_url: String,
    /// Serve backends at {id}.{domain} instead of under /p/{id}/.
    #[arg(long, env = "SPAWNER_DOMAIN")]
    domain: Option<String>,
}

impl UrlArgs {
    fn urls(&self) -> Urls {
        Urls::new(
            &self.public_url,
            self.domain.clone().filter(|d| !d.is_empty()),
        )
    }
}

#[derive(Args)]
pub struct ControllerArgs {
    /// Watch only this namespace (all namespaces without it).
    #[arg(long, env = "SPAWNER_NAMESPACE")]
    namespace: Option<String>,
    /// The image of the sidecar container (this binary's image).
    #[arg(long, env = "SPAWNER_SIDECAR_IMAGE", default_value = "spawner:latest")]
    sidecar_image: String,
    /// The sidecar's port, on the Pod and on the Service.
    #[arg(long, default_value_t = DEFAULT_SIDECAR_PORT)]
    sidecar_port: u16,
    /// Seconds between SIGTERM and SIGKILL when a backend is stopped.
    #[arg(long, default_value_t = 10)]
    stop_grace: u32,
    /// Seconds a terminal backend's object is kept before it is deleted.
    #[arg(long, default_value_t = 60)]
    retention: u64,
    /// Run several replicas: only the holder of the Lease `spawner-controller` reconciles.
    #[arg(long, env = "SPAWNER_LEADER_ELECT")]
    leader_elect: bool,
    /// The router's key (the router's own SPAWNER_ROUTER_KEY): each new backend's sidecar
    /// gets the router's proof for it, and keeps the router's X-Forwarded-* headers.
    #[arg(long, env = "SPAWNER_ROUTER_KEY", hide_env_values = true)]
    router_key: Option<String>,
    /// The access key (the Secret spawner-access): each new token-mode backend's sidecar
    /// gets that backend's own key derived from it.
    #[arg(long, env = "SPAWNER_ACCESS_KEY", hide_env_values = true)]
    access_key: Option<String>,
    /// Give each backend with `idle_action: "sleep"` a PersistentVolumeClaim of this size
    /// (a quantity: 1Gi), mounted at its working directory (or /data), so that its files
    /// are kept while it sleeps. Without it, a sleeper's files go with its Pod.
    #[arg(long, env = "SPAWNER_SLEEP_VOLUME_SIZE")]
    sleep_volume_size: Option<String>,
    /// The StorageClass of those claims (the cluster's default without it).
    #[arg(
        long,
        env = "SPAWNER_SLEEP_VOLUME_CLASS",
        requires = "sleep_volume_size"
    )]
    sleep_volume_class: Option<String>,
    #[command(flatten)]
    urls: UrlArgs,
}

#[derive(Args)]
pub struct ApiArgs {
    /// Address to listen on; a non-loopback address needs --token.
    #[arg(long, env = "SPAWNER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The namespace backends are created in.
    #[arg(long, env = "SPAWNER_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Bearer token of the control routes (required, but for --no-token).
    #[arg(long, env = "SPAWNER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// No token: anyone who reaches the API may start backends. Only on a loopback
    /// address, for a try-out.
    #[arg(long, env = "SPAWNER_NO_TOKEN", conflicts_with = "token")]
    no_token: bool,
    #[command(flatten)]
    browsers: crate::access_args::BrowserArgs,
    /// Secret keying the object names derived from keys (default: the token).
    #[arg(long, env = "SPAWNER_KEY_SECRET", hide_env_values = true)]
    key_secret: Option<String>,
    /// This API's public base URL, for ready_url and status URLs (default: --public-url).
    #[arg(long, env = "SPAWNER_API_URL")]
    api_url: Option<String>,
    /// The access key (the Secret spawner-access): connect URLs of token-mode backends are
    /// signed with it; without it, such spawns are refused.
    #[arg(long, env = "SPAWNER_ACCESS_KEY", hide_env_values = true)]
    access_key: Option<String>,
    #[command(flatten)]
    urls: UrlArgs,
}

/// The flags of `spawner spawn` that describe a backend.
#[derive(Args)]
pub struct SlabArgs {
    /// The container image (required on Kubernetes).
    #[arg(long)]
    image: String,
    /// The command, as one shell-quoted string; overrides the image's entry point.
    #[arg(long, conflicts_with = "argv")]
    command: Option<String>,
    /// The command, as separate arguments after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    argv: Vec<String>,
    /// Environment variables, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Labels, NAME=VALUE (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE")]
    labels: Vec<String>,
    /// The get-or-create key: the object is named as the API names the backend of this key
    /// (needs --key-secret), so that the API finds it.
    #[arg(long, requires = "key_secret", conflicts_with = "name")]
    key: Option<String>,
    /// The API's key secret (its --key-secret, or its --token when it has none).
    #[arg(long, env = "SPAWNER_KEY_SECRET", hide_env_values = true)]
    key_secret: Option<String>,
    /// Seconds without connections before the backend is swept.
    #[arg(long)]
    grace: Option<u64>,
    /// Seconds after which the backend is stopped whatever it does.
    #[arg(long)]
    lifetime: Option<u64>,
    /// The port the application listens on (default 8080).
    #[arg(long)]
    port: Option<u16>,
    /// Forward /p/{id}/... unchanged instead of stripping the prefix.
    #[arg(long)]
    keep_prefix: bool,
    /// The object's name (default: a fresh random id).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args)]
pub struct PrintSlabArgs {
    #[command(flatten)]
    slab: SlabArgs,
    /// The namespace it is for (a keyed backend's name depends on it).
    #[arg(long, short = 'n', default_value = "spawner")]
    namespace: String,
    /// Also print the Pod and the Service the controller would create for it.
    #[arg(long)]
    children: bool,
    /// The sidecar image, for --children.
    #[arg(long, env = "SPAWNER_SIDECAR_IMAGE", default_value = "spawner:latest")]
    sidecar_image: String,
    #[command(flatten)]
    urls: UrlArgs,
}

#[derive(Args)]
pub struct CreateSlabArgs {
    #[command(flatten)]
    slab: SlabArgs,
    /// The namespace to create it in (default: the kubeconfig's).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
}

fn slab_of(args: &SlabArgs, namespace: &str) -> anyhow::Result<SessionLivedBackend> {
    let command = match &args.command {
        Some(c) => Some(
            shlex::split(c).with_context(|| format!("--command {c:?} has unbalanced quotes"))?,
        ),
        None if !args.argv.is_empty() => Some(args.argv.clone()),
        None => None,
    };
    let mut spec = BackendSpec::from_command(Vec::new());
    spec.executable = Executable {
        command,
        image: Some(args.image.clone()),
        env: crate::spec_args::pairs(&args.env, "env")?,
        port: args.port,
        ..Executable::default()
    };
    spec.key = args.key.clone();
    spec.labels = crate::spec_args::pairs(&args.labels, "label")?;
    if let Some(g) = args.grace {
        spec.grace_period_seconds = g;
    }
    spec.lifetime_limit_seconds = args.lifetime;
    spec.strip_prefix = !args.keep_prefix;
    spec.validate()?;
    let name = match (&args.name, &args.key) {
        (Some(n), _) => BackendId::parse(n)
            .map_err(|e| anyhow::anyhow!("--name {n:?}: {e}"))?
            .to_string(),
        (None, Some(key)) => {
            let secret = args.key_secret.as_deref().unwrap_or_default();
            spawner_k8s::model::naming::name_for_key(secret.as_bytes(), namespace, key).to_string()
        }
        (None, None) => BackendId::generate()
            .context("no randomness for an id")?
            .to_string(),
    };
    Ok(SessionLivedBackend::from_backend_spec(&name, &spec)?)
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPAWNER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a Pod's log (a file) they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn client() -> anyhow::Result<Client> {
    Client::try_default()
        .await
        .context("no Kubernetes configuration: run in a cluster or set KUBECONFIG")
}

/// Ctrl-C, or SIGTERM (what the kubelet sends a Pod that is being stopped).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

pub async fn run(cmd: K8sCommand) -> anyhow::Result<()> {
    match cmd {
        K8sCommand::PrintCrd => {
            print!("{}", spawner_k8s::model::crd::crds_yaml()?);
            Ok(())
        }
        K8sCommand::PrintSlab(args) => {
            let mut obj = slab_of(&args.slab, &args.namespace)?;
            print!("{}", spawner_k8s::model::crd::to_yaml(&obj)?);
            if args.children {
                let cfg = PodConfig {
                    sidecar_image: args.sidecar_image,
                    sidecar_port: DEFAULT_SIDECAR_PORT,
                    stop_grace_seconds: 10,
                    urls: args.urls.urls(),
                    sleep_volume: None,
                };
                obj.metadata.namespace = Some(args.namespace.clone());
                let pod = spawner_k8s::controller::pod::build_pod(&obj, &cfg)
                    .context("no application container")?;
                let svc = spawner_k8s::controller::pod::build_service(&obj, &cfg)
                    .context("the object has no name")?;
                print!("---\n{}", spawner_k8s::model::crd::to_yaml(&pod)?);
                print!("---\n{}", spawner_k8s::model::crd::to_yaml(&svc)?);
            }
            Ok(())
        }
        K8sCommand::CreateSlab(args) => {
            let client = client().await?;
            let ns = args
                .namespace
                .unwrap_or_else(|| client.default_namespace().to_string());
            let obj = slab_of(&args.slab, &ns)?;
            let api: Api<SessionLivedBackend> = Api::namespaced(client, &ns);
            let created = api
                .create(&PostParams::default(), &obj)
                .await
                .with_context(|| format!("creating the SessionLivedBackend in {ns}"))?;
            println!("sessionlivedbackend/{} created in {ns}", created.name_any());
            Ok(())
        }
        K8sCommand::Controller(args) => {
            init_tracing();
            let router_key = crate::k8s_node_cmd::router_key(args.router_key)?;
            let config = ControllerConfig {
                pod: PodConfig {
                    sidecar_image: args.sidecar_image,
                    sidecar_port: args.sidecar_port,
                    stop_grace_seconds: i64::from(args.stop_grace),
                    urls: args.urls.urls(),
                    sleep_volume: args
                        .sleep_volume_size
                        .map(|size| SleepVolume::new(size, args.sleep_volume_class))
                        .transpose()
                        .map_err(|e| anyhow::anyhow!("--sleep-volume-size: {e}"))?,
                },
                retention: Duration::from_secs(args.retention),
                resync: Duration::from_secs(300),
                router_key,
                access_key: crate::k8s_node_cmd::access_key(args.access_key)?,
            };
            let reporter = Reporter {
                controller: "spawner-controller".to_string(),
                instance: std::env::var("POD_NAME").ok(),
            };
            let lease = args.leader_elect.then(|| LeaseConfig {
                name: "spawner-controller".to_string(),
                identity: reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| format!("spawner-controller-{}", std::process::id())),
                duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
                retry_every: Duration::from_millis(500),
            });
            let client = client().await?;
            let ns = args.namespace.filter(|n| !n.is_empty());
            spawner_k8s::controller::run(
                client,
                ns.as_deref(),
                config,
                reporter,
                lease,
                shutdown_signal(),
            )
            .await?;
            Ok(())
        }
        K8sCommand::Api(args) => {
            init_tracing();
            let token = args.token.filter(|t| !t.is_empty());
            match (&token, args.no_token) {
                (None, false) => anyhow::bail!(
                    "set --token (SPAWNER_TOKEN; e.g. from a Secret, see docs/kubernetes.md) so that only your app can spawn backends, \
                     or --no-token on a loopback address for a try-out"
                ),
                (None, true) if !args.listen.ip().is_loopback() => anyhow::bail!(
                    "--no-token on {}, which is not a loopback address: anyone who reaches it could start backends; set --token",
                    args.listen
                ),
                (None, true) => tracing::warn!(
                    "--no-token: the control API is OPEN to everyone who reaches {}",
                    args.listen
                ),
                (Some(_), _) => {}
            }
            let key_secret = match (args.key_secret.filter(|s| !s.is_empty()), &token) {
                (Some(s), _) => s.into_bytes(),
                (None, Some(t)) => t.clone().into_bytes(),
                (None, None) => {
                    tracing::warn!("no --key-secret or --token: ids of keyed backends can be computed from their keys");
                    Vec::new()
                }
            };
            let urls = args.urls.urls();
            let api_base = args.api_url.unwrap_or_else(|| urls.base.clone());
            let guard = spawner_api::Guard::for_server(
                args.listen,
                Some(&api_base),
                &args.browsers.allowed_hosts,
                &args.browsers.cors_origins,
            );
            let login = token
                .as_deref()
                .map(|t| Arc::new(spawner_api::login::LoginCodes::new(t, &api_base)));
            let config = ApiConfig {
                namespace: args.namespace,
                api_base,
                urls,
                token,
                guard,
                key_secret,
                access_key: crate::k8s_node_cmd::access_key(args.access_key)?,
            };
            let client = client().await?;
            let pool_cache =
                spawner_k8s::api::pool_cache::PoolCache::start(client.clone(), &config.namespace);
            let state = Arc::new(ApiState {
                client,
                config,
                login,
                pool_stats: Default::default(),
                lifecycle_stats: Default::default(),
                pool_cache: Some(pool_cache),
            });
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            tracing::info!(listen = %args.listen, "API listening");
            spawner_k8s::api::serve(listener, state, shutdown_signal()).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        slab: SlabArgs,
    }

    fn slab(args: &[&str]) -> Result<SlabArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("print-slab").chain(args.iter().copied()))
            .map(|c| c.slab)
    }

    #[test]
    fn a_keyed_object_gets_the_name_the_api_derives_from_its_key() {
        let args =
            slab(&["--image", "app:1", "--key", "doc-42", "--key-secret", "s3"]).expect("flags");
        let obj = slab_of(&args, "spawner").expect("object");
        let want = spawner_k8s::model::naming::name_for_key(b"s3", "spawner", "doc-42");
        assert_eq!(obj.metadata.name.as_deref(), Some(want.as_str()));
        assert_eq!(obj.spec.key.as_deref(), Some("doc-42"));
    }

    #[test]
    fn a_key_needs_the_key_secret_and_excludes_a_name() {
        std::env::remove_var("SPAWNER_KEY_SECRET");
        let err = slab(&["--image", "app:1", "--key", "doc-42"])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--key-secret"), "{err}");
        let err = slab(&[
            "--image",
            "a",
            "--key",
            "k",
            "--key-secret",
            "s",
            "--name",
            "x",
        ])
        .err()
        .expect("refused");
        assert!(err.to_string().contains("--name"), "{err}");
    }

    #[test]
    fn argv_and_keep_prefix_as_in_spawn() {
        let args = slab(&[
            "--image",
            "app:1",
            "--keep-prefix",
            "--",
            "serve",
            "$(PORT)",
        ])
        .expect("flags");
        let obj = slab_of(&args, "spawner").expect("object");
        let spec = obj.backend_spec();
        assert_eq!(
            spec.executable.command,
            Some(vec!["serve".to_string(), "$(PORT)".to_string()])
        );
        assert!(!spec.strip_prefix);
    }
}
