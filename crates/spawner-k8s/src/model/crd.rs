//! The `SessionLivedBackend` custom resource: one object per backend, its spec what was
//! asked for, its status the lifecycle. Conversions to and from the embedded API's
//! [`BackendSpec`] keep the two modes one model.

use crate::model::status::SessionLivedBackendStatus;
use k8s_openapi::api::core::v1::{Container, EnvVar, LocalObjectReference, Volume};
use kube::core::ObjectMeta;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use spawner_core::spec::{DEFAULT_GRACE_SECONDS, DEFAULT_PORT, DEFAULT_STARTUP_TIMEOUT_SECONDS};
use spawner_core::{BackendSpec, Executable, PullPolicy, Resources, ValidationError};
use std::collections::BTreeMap;

/// The API group of Spawner's resources, and the prefix of its labels and annotations.
pub const GROUP: &str = "spawner.dev";
/// On the Pod and Service: the name of the SessionLivedBackend they belong to.
pub const LABEL_BACKEND: &str = "spawner.dev/backend";
/// On the object: the node its Pod runs on, so that each node's sweeper selects its own.
pub const LABEL_NODE: &str = "spawner.dev/node";
/// On everything the controller creates, so its watches select only Spawner's Pods.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "spawner";
/// Annotation asking the controller to stop a backend; the value is a
/// [`spawner_core::lifecycle::StopReason`] name (`terminate requested`, `idle`, ...).
pub const ANNOTATION_STOP: &str = "spawner.dev/stop";
/// Annotation `"true"` alongside [`ANNOTATION_STOP`]: skip the graceful stop.
pub const ANNOTATION_STOP_HARD: &str = "spawner.dev/stop-hard";
/// The name of the application container Spawner gives a container converted from a spec.
pub const APP_CONTAINER: &str = "app";

/// A session-lived backend: a Pod (the application plus Spawner's sidecar) and a Service,
/// created by the controller, stopped when idle, deleted when done.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "spawner.dev",
    version = "v1",
    kind = "SessionLivedBackend",
    namespaced,
    status = "SessionLivedBackendStatus",
    shortname = "slab",
    category = "spawner",
    derive = "PartialEq",
    doc = "A session-lived backend: a server process (a Pod) dedicated to one user or document, stopped when idle.",
    // Raw JSON rather than printcolumn(...) lists: clippy's duplicated_attributes lint
    // mistakes the repeated `type_` keys of the list form for duplicates.
    printcolumn = r#"{"name": "State", "type": "string", "jsonPath": ".status.state"}"#,
    printcolumn = r#"{"name": "Node", "type": "string", "jsonPath": ".status.nodeName", "priority": 1}"#,
    printcolumn = r#"{"name": "URL", "type": "string", "jsonPath": ".status.url"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SessionLivedBackendSpec {
    /// The Pod to run; its first container is the application.
    pub template: BackendPodTemplate,
    /// Seconds without a connection or request after which the backend is swept (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<u64>,
    /// The port the application listens on, passed to it as `PORT` (default 8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// Seconds after which the backend is stopped whatever it is doing (no default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_limit_seconds: Option<u64>,
    /// Seconds within which the backend must become Ready, or it fails (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timeout_seconds: Option<u64>,
    /// The get-or-create key it was spawned with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Memory and CPU limits of the application container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BackendResources>,
    /// Whether the router strips `/p/{name}` before forwarding (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<bool>,
    /// Seconds without client activity (a request, a WebSocket data frame) after which the
    /// backend is swept even with connections open (none: only the grace period applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    /// Seconds before the lifetime limit or a pending idle timeout that the status stream
    /// announces it (`expiring`; default 60, 0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_warning_seconds: Option<u64>,
    /// Who may reach it through the router: `open` without it; with mode `token`, the users
    /// holding access (written by the API; docs/kubernetes.md, "Per-user access").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<crate::model::access::SlabAccess>,
    /// What idleness does to it: `sweep` (the default) ends it; `sleep` deletes its Pod and
    /// keeps the object (Sleeping) until a request wakes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "idle_action_schema")]
    pub idle_action: Option<String>,
    /// With `idleAction: sleep`: seconds asleep after which it is swept for good (default a
    /// day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sleep_seconds: Option<u64>,
}

fn idle_action_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["sweep", "sleep"]})
}

/// The part of a PodSpec a backend chooses. The CRD schema keeps containers and volumes
/// open (their full schemas would make the CRD too large for a client-side apply); the
/// controller checks them against the Kubernetes types when it builds the Pod.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendPodTemplate {
    /// The containers; the first one is the application, the others run beside it.
    #[schemars(schema_with = "open_objects_named")]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "open_objects_named")]
    pub volumes: Vec<Volume>,
}

/// The application container's limits, in the units of the embedded API.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
}

/// A list of objects that each need a `name` and may hold any other field.
fn open_objects_named(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}},
            "x-kubernetes-preserve-unknown-fields": true
        }
    })
}

/// The backends' CustomResourceDefinition as YAML (the first of [`crds_yaml`]).
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&SessionLivedBackend::crd())
}

/// Every CustomResourceDefinition of Spawner (backends, then pools): what
/// `spawner print-crd` prints and deploy/kubernetes/crd.yaml holds.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "{}---\n{}",
        crd_yaml()?,
        crate::model::pool_crd::pool_crd_yaml()?
    ))
}

/// Any Kubernetes object as YAML (`spawner print-slab`).
pub fn to_yaml<T: Serialize>(obj: &T) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(obj)
}

impl SessionLivedBackend {
    /// The object for a validated embedded-API spec, named `name`. The spec's labels become
    /// the object's labels, so that list filters select by them.
    pub fn from_backend_spec(
        name: &str,
        spec: &BackendSpec,
    ) -> Result<SessionLivedBackend, ValidationError> {
        let exe = &spec.executable;
        let image = exe.image.clone().ok_or_else(|| {
            ValidationError::new(
                "executable.image",
                "Kubernetes mode runs containers: give \"image\" (a \"command\" alone needs the embedded server)",
            )
        })?;
        let container = Container {
            name: APP_CONTAINER.to_string(),
            image: Some(image),
            command: exe.command.clone(),
            env: (!exe.env.is_empty()).then(|| {
                exe.env
                    .iter()
                    .map(|(k, v)| EnvVar {
                        name: k.clone(),
                        value: Some(v.clone()),
                        value_from: None,
                    })
                    .collect()
            }),
            working_dir: exe.working_dir.clone(),
            image_pull_policy: exe.pull_policy.map(|p| pull_policy_name(p).to_string()),
            ..Container::default()
        };
        let template = BackendPodTemplate {
            containers: vec![container],
            image_pull_secrets: exe
                .image_pull_secret
                .iter()
                .map(|s| LocalObjectReference { name: s.clone() })
                .collect(),
            volumes: Vec::new(),
        };
        let slab_spec = SessionLivedBackendSpec {
            template,
            grace_period_seconds: Some(spec.grace_period_seconds),
            http_port: Some(exe.port.unwrap_or(DEFAULT_PORT)),
            lifetime_limit_seconds: spec.lifetime_limit_seconds,
            startup_timeout_seconds: Some(spec.startup_timeout_seconds),
            key: spec.key.clone(),
            resources: spec.resources.as_ref().map(|r| BackendResources {
                memory_mb: r.memory_mb,
                cpu_millis: r.cpu_millis,
            }),
            strip_prefix: Some(spec.strip_prefix),
            idle_timeout_seconds: spec.idle_timeout_seconds,
            lifetime_warning_seconds: Some(spec.lifetime_warning_seconds),
            // The mode alone: the API adds the grants.
            access: spec
                .access
                .as_ref()
                .map(|a| crate::model::access::SlabAccess {
                    mode: a.mode.into(),
                    grants: Vec::new(),
                }),
            idle_action: (!spec.idle_action.is_sweep())
                .then(|| spec.idle_action.as_str().to_string()),
            max_sleep_seconds: (spec.max_sleep_seconds
                != spawner_core::spec::DEFAULT_MAX_SLEEP_SECONDS)
                .then_some(spec.max_sleep_seconds),
        };
        let mut obj = SessionLivedBackend::new(name, slab_spec);
        obj.metadata = ObjectMeta {
            name: Some(name.to_string()),
            labels: (!spec.labels.is_empty()).then(|| spec.labels.clone()),
            ..ObjectMeta::default()
        };
        Ok(obj)
    }

    /// The embedded-API view of this object, as `GET /v1/backends/{id}` shows it. Fields the
    /// embedded API cannot express (extra containers, volumes, `valueFrom` variables) are
    /// left out.
    pub fn backend_spec(&self) -> BackendSpec {
        let app = self.spec.template.containers.first();
        let env: BTreeMap<String, String> = app
            .and_then(|c| c.env.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|e| e.value.as_ref().map(|v| (e.name.clone(), v.clone())))
            .collect();
        let labels = self
            .metadata
            .labels
            .iter()
            .flatten()
            .filter(|(k, _)| !k.starts_with("spawner.dev/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        BackendSpec {
            key: self.spec.key.clone(),
            executable: Executable {
                command: app.and_then(|c| match (&c.command, &c.args) {
                    (Some(cmd), Some(args)) => Some(cmd.iter().chain(args).cloned().collect()),
                    (Some(cmd), None) => Some(cmd.clone()),
                    _ => None,
                }),
                image: app.and_then(|c| c.image.clone()),
                env,
                port: Some(self.http_port()),
                working_dir: app.and_then(|c| c.working_dir.clone()),
                pull_policy: app
                    .and_then(|c| c.image_pull_policy.as_deref())
                    .and_then(parse_pull_policy),
                image_pull_secret: self
                    .spec
                    .template
                    .image_pull_secrets
                    .first()
                    .map(|s| s.name.clone()),
            },
            grace_period_seconds: self
                .spec
                .grace_period_seconds
                .unwrap_or(DEFAULT_GRACE_SECONDS),
            lifetime_limit_seconds: self.spec.lifetime_limit_seconds,
            startup_timeout_seconds: self
                .spec
                .startup_timeout_seconds
                .unwrap_or(DEFAULT_STARTUP_TIMEOUT_SECONDS),
            labels,
            resources: self.spec.resources.as_ref().map(|r| Resources {
                memory_mb: r.memory_mb,
                cpu_millis: r.cpu_millis,
            }),
            strip_prefix: self.spec.strip_prefix.unwrap_or(true),
            idle_timeout_seconds: self.spec.idle_timeout_seconds,
            lifetime_warning_seconds: self
                .spec
                .lifetime_warning_seconds
                .unwrap_or(spawner_core::spec::DEFAULT_LIFETIME_WARNING_SECONDS),
            access: self
                .spec
                .access
                .as_ref()
                .map(|a| spawner_core::access::Access::stored(a.mode.into())),
            idle_action: self.idle_action(),
            max_sleep_seconds: self
                .spec
                .max_sleep_seconds
                .unwrap_or(spawner_core::spec::DEFAULT_MAX_SLEEP_SECONDS),
        }
    }

    /// `sleep` or `sweep` (the CRD's schema admits no other value; anything else found
    /// reads as the default).
    pub fn idle_action(&self) -> spawner_core::IdleAction {
        self.spec
            .idle_action
            .as_deref()
            .and_then(spawner_core::IdleAction::parse)
            .unwrap_or_default()
    }

    pub fn http_port(&self) -> u16 {
        self.spec.http_port.unwrap_or(DEFAULT_PORT)
    }

    /// Checks an object however it was created (the API validates before creating, but
    /// `kubectl apply` does not): the same rules as the embedded API, plus what a Pod needs.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let Some(app) = self.spec.template.containers.first() else {
            return Err(ValidationError::new(
                "spec.template.containers",
                "needs at least one container: the first is the application",
            ));
        };
        if app.image.as_deref().is_none_or(str::is_empty) {
            return Err(ValidationError::new(
                "spec.template.containers[0].image",
                "the application container needs an image",
            ));
        }
        if self.spec.http_port == Some(0) {
            return Err(ValidationError::new(
                "spec.httpPort",
                "must be between 1 and 65535",
            ));
        }
        self.backend_spec().validate()
    }
}

fn pull_policy_name(p: PullPolicy) -> &'static str {
    match p {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
}

fn parse_pull_policy(s: &str) -> Option<PullPolicy> {
    match s {
        "Always" => Some(PullPolicy::Always),
        "IfNotPresent" => Some(PullPolicy::IfNotPresent),
        "Never" => Some(PullPolicy::Never),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A backend object as the API would create it, for the programs' unit tests.
    pub(crate) fn object(name: &str) -> SessionLivedBackend {
        let spec: BackendSpec = serde_json::from_value(serde_json::json!({
            "executable": {
                "image": "registry.example/app:1",
                "command": ["serve", "--base=$(SPAWNER_BASE_PATH)", "--mode=$(MODE)", "$$(HOME)", "$(UNKNOWN)"],
                "env": {"MODE": "collab"},
                "port": 8000,
                "image_pull_secret": "regcred"
            },
            "labels": {"owner": "user-7"},
            "resources": {"memory_mb": 256, "cpu_millis": 500}
        }))
        .expect("valid spec");
        let mut obj = SessionLivedBackend::from_backend_spec(name, &spec).expect("converts");
        obj.metadata.namespace = Some("default".into());
        obj.metadata.uid = Some(format!("uid-{name}"));
        obj
    }

    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    fn full_spec() -> BackendSpec {
        let json = serde_json::json!({
            "key": "doc-42",
            "executable": {
                "command": ["ttyd", "--base-path", "$(SPAWNER_BASE_PATH)"],
                "image": "registry.example/app:1.2",
                "env": {"MODE": "collab"},
                "port": 7681,
                "working_dir": "/srv",
                "pull_policy": "IfNotPresent",
                "image_pull_secret": "regcred"
            },
            "grace_period_seconds": 60,
            "lifetime_limit_seconds": 3600,
            "startup_timeout_seconds": 30,
            "labels": {"owner": "user-7"},
            "resources": {"memory_mb": 256, "cpu_millis": 500},
            "strip_prefix": false,
            "idle_timeout_seconds": 1800,
            "lifetime_warning_seconds": 120,
            "idle_action": "sleep",
            "max_sleep_seconds": 7200
        });
        serde_json::from_value(json).expect("a valid spec")
    }

    #[test]
    fn backend_spec_round_trips_through_the_object() {
        let spec = full_spec();
        let obj = SessionLivedBackend::from_backend_spec("abc", &spec).expect("converts");
        assert_eq!(obj.backend_spec(), spec);
        assert!(obj.validate().is_ok());
        // And through JSON, as the API server stores it.
        let json = serde_json::to_value(&obj).expect("serializes");
        assert_eq!(json["apiVersion"], "spawner.dev/v1");
        assert_eq!(json["spec"]["httpPort"], 7681);
        assert_eq!(json["spec"]["idleAction"], "sleep");
        assert_eq!(json["spec"]["maxSleepSeconds"], 7200);
        assert_eq!(
            json["spec"]["template"]["imagePullSecrets"][0]["name"],
            "regcred"
        );
        let back: SessionLivedBackend = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, obj);
    }

    #[test]
    fn a_command_without_image_is_refused() {
        let spec = BackendSpec::from_command(vec!["app".into()]);
        let err = SessionLivedBackend::from_backend_spec("abc", &spec).unwrap_err();
        assert_eq!(err.field, "executable.image");
    }

    #[test]
    fn objects_from_kubectl_are_validated() {
        let mut obj = SessionLivedBackend::from_backend_spec("abc", &full_spec()).expect("ok");
        obj.spec.template.containers[0].env = Some(vec![EnvVar {
            name: "PORT".into(),
            value: Some("1".into()),
            value_from: None,
        }]);
        assert_eq!(
            obj.validate().unwrap_err().field,
            "executable.env.PORT",
            "the embedded rules apply"
        );
        obj.spec.template.containers.clear();
        assert_eq!(
            obj.validate().unwrap_err().field,
            "spec.template.containers"
        );
    }

    #[test]
    fn crd_is_a_valid_apiextensions_v1_definition() {
        let yaml = crd_yaml().expect("renders");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("parses");
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("sessionlivedbackends.spawner.dev")
        );
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["slab".to_string()][..])
        );
        let v1 = &crd.spec.versions[0];
        assert_eq!(v1.name, "v1");
        assert!(v1
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
        let columns: Vec<_> = v1
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["State", "Node", "URL", "Age"]);
        let schema = serde_json::to_value(&v1.schema).expect("schema");
        let props = &schema["openAPIV3Schema"]["properties"];
        assert_eq!(
            props["spec"]["properties"]["template"]["properties"]["containers"]["items"]
                ["x-kubernetes-preserve-unknown-fields"],
            true
        );
        let states = &props["status"]["properties"]["state"]["enum"];
        assert_eq!(states.as_array().map(Vec::len), Some(11));
    }

    #[test]
    fn committed_crd_matches_the_generated_one() {
        let committed = include_str!("../../../../deploy/kubernetes/crd.yaml");
        let generated = crds_yaml().expect("renders");
        if std::env::var_os("SPAWNER_BLESS").is_some() {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../deploy/kubernetes/crd.yaml"
            );
            std::fs::write(path, &generated).expect("writes the CRD");
            return;
        }
        assert!(
            committed == generated,
            "deploy/kubernetes/crd.yaml is stale: regenerate it with `spawner print-crd > deploy/kubernetes/crd.yaml`"
        );
    }
}
