//! The Pod and Service of a backend, built from its object: pure functions, so that the
//! exact bodies the controller sends are unit-tested.

use crate::model::crd::{
    SessionLivedBackend, LABEL_BACKEND, LABEL_MANAGED_BY, LABEL_NODE, MANAGED_BY,
};
use crate::model::naming::Urls;
pub use crate::model::read::{secret_of, SIDECAR_CONTAINER, SIDECAR_TOKEN_ENV};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, Pod, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::ObjectMeta;
use kube::Resource;
use spawner_core::env::{backend_env, expand};
use std::collections::BTreeMap;

pub const DEFAULT_SIDECAR_PORT: u16 = 9090;
/// The sidecar's user and group: not root, and not a user the image needs to define.
pub const SIDECAR_UID: i64 = 65532;

/// What the controller puts into every Pod besides the object's own template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodConfig {
    /// The image holding the `spawner` binary, for the sidecar container.
    pub sidecar_image: String,
    pub sidecar_port: u16,
    /// Seconds between SIGTERM and SIGKILL when a backend is stopped.
    pub stop_grace_seconds: i64,
    pub urls: Urls,
    /// A PersistentVolumeClaim per sleeping backend, mounted into its application
    /// (`--sleep-volume-size`); none: a sleeper's files go with its Pod.
    pub sleep_volume: Option<crate::controller::volume::SleepVolume>,
}

/// The labels of the Pod and the Service: the object's own labels (so that users can select
/// their backends' Pods by them) and Spawner's.
fn child_labels(obj: &SessionLivedBackend, name: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = obj
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LABEL_NODE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_BACKEND.to_string(), name.to_string());
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
    labels
}

fn child_meta(obj: &SessionLivedBackend, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: obj.metadata.namespace.clone(),
        labels: Some(child_labels(obj, name)),
        owner_references: obj.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// Escapes `$` so that Kubernetes' own `$(VAR)` expansion leaves an already-expanded
/// argument as it is: the command is expanded once, by spawner-core's rules, in both modes.
fn escape_dollars(arg: &str) -> String {
    arg.replace('$', "$$")
}

/// The application container: the template's first container with `PORT`, the
/// `SPAWNER_*` variables, its port, its resource limits, and its command expanded.
fn app_container(
    obj: &SessionLivedBackend,
    template: &Container,
    name: &str,
    cfg: &PodConfig,
) -> Container {
    let port = obj.http_port();
    let literal_env: BTreeMap<String, String> = template
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.as_ref().map(|v| (e.name.clone(), v.clone())))
        .collect();
    let url = cfg.urls.backend_url(name);
    let env = backend_env(&literal_env, name, port, &cfg.urls.base_path(name), &url);
    let expand_all = |args: &Vec<String>| -> Vec<String> {
        args.iter()
            .map(|a| escape_dollars(&expand(a, &env)))
            .collect()
    };

    let mut c = template.clone();
    // Without a policy of its own, a crash's last log lines become the termination
    // message, which the controller puts in the Failed reason.
    if c.termination_message_policy.is_none() {
        c.termination_message_policy = Some("FallbackToLogsOnError".to_string());
    }
    c.command = template.command.as_ref().map(expand_all);
    c.args = template.args.as_ref().map(expand_all);
    // Spawner's variables first and authoritative; the template's own follow, minus any
    // that would shadow them.
    let spawner_vars = [
        "PORT",
        "SPAWNER_BACKEND_ID",
        "SPAWNER_BASE_PATH",
        "SPAWNER_PUBLIC_URL",
    ];
    let mut vars: Vec<EnvVar> = spawner_vars
        .iter()
        .filter_map(|k| {
            env.get(*k).map(|v| EnvVar {
                name: (*k).to_string(),
                value: Some(v.clone()),
                value_from: None,
            })
        })
        .collect();
    vars.extend(
        template
            .env
            .iter()
            .flatten()
            .filter(|e| !spawner_vars.contains(&e.name.as_str()))
            .cloned(),
    );
    c.env = Some(vars);
    let mut ports: Vec<ContainerPort> = template.ports.clone().unwrap_or_default();
    if !ports.iter().any(|p| p.container_port == i32::from(port)) {
        ports.insert(
            0,
            ContainerPort {
                name: Some("app".to_string()),
                container_port: i32::from(port),
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            },
        );
    }
    c.ports = Some(ports);
    if let Some(r) = &obj.spec.resources {
        let mut limits = BTreeMap::new();
        if let Some(mb) = r.memory_mb {
            limits.insert("memory".to_string(), Quantity(format!("{mb}Mi")));
        }
        if let Some(m) = r.cpu_millis {
            limits.insert("cpu".to_string(), Quantity(format!("{m}m")));
        }
        if !limits.is_empty() {
            let mut res = c.resources.take().unwrap_or_default();
            let mut merged = res.limits.take().unwrap_or_default();
            merged.extend(limits);
            res.limits = Some(merged);
            c.resources = Some(res);
        }
    }
    c
}

fn sidecar_container(obj: &SessionLivedBackend, cfg: &PodConfig) -> Container {
    let requests: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity("10m".to_string())),
        ("memory".to_string(), Quantity("16Mi".to_string())),
    ]
    .into_iter()
    .collect();
    Container {
        name: SIDECAR_CONTAINER.to_string(),
        image: Some(cfg.sidecar_image.clone()),
        command: Some(vec![
            "spawner".to_string(),
            "sidecar".to_string(),
            "--app-port".to_string(),
            obj.http_port().to_string(),
            "--listen".to_string(),
            format!("0.0.0.0:{}", cfg.sidecar_port),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("sidecar".to_string()),
            container_port: i32::from(cfg.sidecar_port),
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            ..ResourceRequirements::default()
        }),
        security_context: Some(sidecar_security_context()),
        ..Container::default()
    }
}

/// What the Pod Security Standards' `restricted` level asks of a container, so that the
/// sidecar never keeps a backend out of a restricted namespace: the application container's
/// own securityContext is the template's to choose.
fn sidecar_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: None,
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(SIDECAR_UID),
        run_as_group: Some(SIDECAR_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// The backend's Pod, or `None` if the object has no application container (which
/// [`SessionLivedBackend::validate`] refuses before this is called).
pub fn build_pod(obj: &SessionLivedBackend, cfg: &PodConfig) -> Option<Pod> {
    let name = obj.metadata.name.as_deref()?;
    let template = &obj.spec.template;
    let (app, others) = template.containers.split_first()?;
    let mut containers = vec![app_container(obj, app, name, cfg)];
    containers.extend(others.iter().cloned());
    containers.push(sidecar_container(obj, cfg));
    let mut pod = Pod {
        metadata: child_meta(obj, name),
        spec: Some(PodSpec {
            containers,
            restart_policy: Some("Never".to_string()),
            image_pull_secrets: (!template.image_pull_secrets.is_empty())
                .then(|| template.image_pull_secrets.clone()),
            volumes: (!template.volumes.is_empty()).then(|| template.volumes.clone()),
            termination_grace_period_seconds: Some(cfg.stop_grace_seconds),
            // A backend runs user code: it gets no credentials for the Kubernetes API, and no
            // environment variables for every Service in the namespace.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            ..PodSpec::default()
        }),
        status: None,
    };
    if crate::controller::volume::wanted(obj, cfg.sleep_volume.as_ref()).is_some() {
        crate::controller::volume::mount(&mut pod, name);
    }
    Some(pod)
}

/// The variable of the application container holding its keepalive URL.
pub const KEEPALIVE_URL_ENV: &str = "SPAWNER_KEEPALIVE_URL";

/// Gives a Pod built by [`build_pod`] the backend's own secret: the sidecar gets it as
/// [`SIDECAR_TOKEN_ENV`], the application its keepalive URL, the sidecar's
/// `/_keepalive?token=` on the Pod's loopback. Made fresh when the Pod is created (so not in
/// the pure [`build_pod`]); the controller reads it back from the Pod ([`secret_of`]) to
/// call the sidecar's go-away.
pub fn add_secret(pod: &mut Pod, secret: &str, sidecar_port: u16) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let var = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    };
    let url = format!(
        "http://127.0.0.1:{sidecar_port}{}?token={secret}",
        spawner_proxy::sidecar::KEEPALIVE_PATH
    );
    for c in spec.containers.iter_mut() {
        let env = c.env.get_or_insert_with(Vec::new);
        if c.name == SIDECAR_CONTAINER {
            env.retain(|e| e.name != SIDECAR_TOKEN_ENV);
            env.push(var(SIDECAR_TOKEN_ENV, secret.to_string()));
        }
    }
    if let Some(app) = spec.containers.first_mut() {
        if app.name != SIDECAR_CONTAINER {
            let env = app.env.get_or_insert_with(Vec::new);
            env.retain(|e| e.name != KEEPALIVE_URL_ENV);
            // After Spawner's other variables, before the template's own.
            let at = env
                .iter()
                .position(|e| !e.name.starts_with("SPAWNER_") && e.name != "PORT")
                .unwrap_or(env.len());
            env.insert(at, var(KEEPALIVE_URL_ENV, url));
        }
    }
}

/// Gives the sidecar of a token-mode backend's Pod that backend's own access key
/// ([`crate::model::access`]), with the backend's name it is for: requests that do not come from
/// the router then need a cookie or token of this backend. Never the master key.
pub fn add_access_key(pod: &mut Pod, name: &str, key_hex: &str) {
    set_sidecar_env(pod, crate::model::access::BACKEND_ID_ENV, name);
    set_sidecar_env(pod, crate::model::access::BACKEND_ACCESS_KEY_ENV, key_hex);
}

fn set_sidecar_env(pod: &mut Pod, var: &str, value: &str) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    for c in spec
        .containers
        .iter_mut()
        .filter(|c| c.name == SIDECAR_CONTAINER)
    {
        let env = c.env.get_or_insert_with(Vec::new);
        env.retain(|e| e.name != var);
        env.push(EnvVar {
            name: var.to_string(),
            value: Some(value.to_string()),
            value_from: None,
        });
    }
}

/// The variable of the sidecar container holding the router's proof for this backend.
pub const ROUTER_PROOF_ENV: &str = "SPAWNER_ROUTER_PROOF";

/// Gives the sidecar of a Pod built by [`build_pod`] the router's proof for this backend
/// ([`crate::model::router_key`]): requests that carry it come from the router, whose forwarding
/// headers the sidecar then keeps. Without it the sidecar trusts no one. Set when the Pod is
/// created (the key is not part of the pure [`build_pod`]); a Pod keeps the proof it was
/// created with.
pub fn add_router_proof(pod: &mut Pod, proof: &str) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    for c in spec
        .containers
        .iter_mut()
        .filter(|c| c.name == SIDECAR_CONTAINER)
    {
        let env = c.env.get_or_insert_with(Vec::new);
        env.retain(|e| e.name != ROUTER_PROOF_ENV);
        env.push(EnvVar {
            name: ROUTER_PROOF_ENV.to_string(),
            value: Some(proof.to_string()),
            value_from: None,
        });
    }
}

/// The backend's Service: the sidecar's port, selecting the backend's Pod. Headless: its DNS
/// name resolves to the Pod's IP, so it takes no address from the cluster's Service range (a
/// /12 by default, but a few hundred on small clusters: one per backend ran out at 253 on the
/// tests' API server) and adds no kube-proxy rules per backend.
pub fn build_service(obj: &SessionLivedBackend, cfg: &PodConfig) -> Option<Service> {
    let name = obj.metadata.name.as_deref()?;
    Some(Service {
        metadata: child_meta(obj, name),
        spec: Some(ServiceSpec {
            selector: Some(
                [(LABEL_BACKEND.to_string(), name.to_string())]
                    .into_iter()
                    .collect(),
            ),
            ports: Some(vec![ServicePort {
                name: Some("http".to_string()),
                port: i32::from(cfg.sidecar_port),
                target_port: Some(IntOrString::String("sidecar".to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            type_: Some("ClusterIP".to_string()),
            cluster_ip: Some("None".to_string()),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::model::crd::tests::object;

    pub(crate) fn config() -> PodConfig {
        PodConfig {
            sidecar_image: "spawner:test".into(),
            sidecar_port: DEFAULT_SIDECAR_PORT,
            stop_grace_seconds: 10,
            urls: Urls::new("http://spawner.test", None),
            sleep_volume: None,
        }
    }

    #[test]
    fn the_router_proof_goes_to_the_sidecar_alone() {
        let mut pod = build_pod(&object("b1"), &config()).expect("pod");
        add_router_proof(&mut pod, "p1");
        add_router_proof(&mut pod, "p2");
        let spec = pod.spec.expect("spec");
        for c in &spec.containers {
            let proofs: Vec<_> = c
                .env
                .iter()
                .flatten()
                .filter(|e| e.name == ROUTER_PROOF_ENV)
                .map(|e| e.value.as_deref())
                .collect();
            if c.name == SIDECAR_CONTAINER {
                assert_eq!(proofs, [Some("p2")], "one, the last");
            } else {
                assert!(proofs.is_empty(), "{}: {proofs:?}", c.name);
            }
        }
    }

    #[test]
    fn the_secret_goes_to_the_sidecar_and_the_keepalive_url_to_the_app() {
        let mut pod = build_pod(&object("b1"), &config()).expect("pod");
        assert_eq!(secret_of(&pod), None);
        add_secret(&mut pod, "s3cret", 9090);
        assert_eq!(secret_of(&pod).as_deref(), Some("s3cret"));
        let containers = &pod.spec.as_ref().expect("spec").containers;
        let names: Vec<&str> = containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "PORT",
                "SPAWNER_BACKEND_ID",
                "SPAWNER_BASE_PATH",
                "SPAWNER_PUBLIC_URL",
                "SPAWNER_KEEPALIVE_URL",
                "MODE"
            ]
        );
        let url = containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == KEEPALIVE_URL_ENV)
            .and_then(|e| e.value.clone());
        assert_eq!(
            url.as_deref(),
            Some("http://127.0.0.1:9090/_keepalive?token=s3cret")
        );
    }

    #[test]
    fn pod_has_the_app_the_sidecar_and_the_rules() {
        let obj = object("b1");
        let pod = build_pod(&obj, &config()).expect("pod");
        let json = serde_json::to_value(&pod).expect("json");
        let spec = &json["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["imagePullSecrets"][0]["name"], "regcred");
        assert_eq!(spec["automountServiceAccountToken"], false);
        let app = &spec["containers"][0];
        assert_eq!(app["name"], "app");
        assert_eq!(
            app["command"],
            serde_json::json!([
                "serve",
                "--base=/p/b1/",
                "--mode=collab",
                "$$(HOME)",
                "$$(UNKNOWN)"
            ]),
            "expanded by spawner-core's rules, escaped so Kubernetes expands nothing more"
        );
        let env: Vec<(String, String)> = pod.spec.as_ref().expect("spec").containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            env,
            [
                ("PORT", "8000"),
                ("SPAWNER_BACKEND_ID", "b1"),
                ("SPAWNER_BASE_PATH", "/p/b1/"),
                ("SPAWNER_PUBLIC_URL", "http://spawner.test/p/b1/"),
                ("MODE", "collab"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(app["ports"][0]["containerPort"], 8000);
        assert_eq!(app["resources"]["limits"]["memory"], "256Mi");
        assert_eq!(app["resources"]["limits"]["cpu"], "500m");
        let sidecar = &spec["containers"][1];
        assert_eq!(sidecar["image"], "spawner:test");
        assert_eq!(
            sidecar["command"],
            serde_json::json!([
                "spawner",
                "sidecar",
                "--app-port",
                "8000",
                "--listen",
                "0.0.0.0:9090"
            ])
        );
        let meta = &json["metadata"];
        assert_eq!(meta["labels"]["spawner.dev/backend"], "b1");
        assert_eq!(meta["labels"]["owner"], "user-7");
        assert_eq!(meta["ownerReferences"][0]["kind"], "SessionLivedBackend");
        assert_eq!(meta["ownerReferences"][0]["uid"], "uid-b1");
        assert_eq!(meta["ownerReferences"][0]["controller"], true);
        // Round trip through the k8s-openapi type.
        let back: Pod = serde_json::from_value(json).expect("parses as a Pod");
        assert_eq!(back, pod);
    }

    #[test]
    fn service_targets_the_sidecar() {
        let svc = build_service(&object("b1"), &config()).expect("service");
        let json = serde_json::to_value(&svc).expect("json");
        assert_eq!(json["spec"]["selector"]["spawner.dev/backend"], "b1");
        assert_eq!(json["spec"]["ports"][0]["port"], 9090);
        assert_eq!(json["spec"]["ports"][0]["targetPort"], "sidecar");
        let back: Service = serde_json::from_value(json).expect("parses as a Service");
        assert_eq!(back, svc);
    }

    #[test]
    fn host_routing_gives_root_base_path() {
        let mut cfg = config();
        cfg.urls = Urls::new("https://spawner.example", Some("apps.example".into()));
        let pod = build_pod(&object("b2"), &cfg).expect("pod");
        let c = &pod.spec.expect("spec").containers[0];
        assert_eq!(c.command.as_ref().expect("cmd")[1], "--base=/");
        let url = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "SPAWNER_PUBLIC_URL");
        assert_eq!(
            url.and_then(|e| e.value.as_deref()),
            Some("https://b2.apps.example/")
        );
    }
}

#[cfg(test)]
mod golden {
    //! The whole Pod and Service of one object, as literal JSON: every field the controller
    //! sends is pinned here, not only the ones other tests look at.
    use super::tests::{config, object};
    use super::*;
    use serde_json::json;

    #[test]
    fn the_pod_of_an_object_field_by_field() {
        let pod = build_pod(&object("b1"), &config()).expect("pod");
        let want = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "labels": {
                    "app.kubernetes.io/managed-by": "spawner",
                    "owner": "user-7",
                    "spawner.dev/backend": "b1"
                },
                "name": "b1",
                "namespace": "default",
                "ownerReferences": [
                    {
                        "apiVersion": "spawner.dev/v1",
                        "controller": true,
                        "kind": "SessionLivedBackend",
                        "name": "b1",
                        "uid": "uid-b1"
                    }
                ]
            },
            "spec": {
                "automountServiceAccountToken": false,
                "containers": [
                    {
                        "command": [
                            "serve",
                            "--base=/p/b1/",
                            "--mode=collab",
                            "$$(HOME)",
                            "$$(UNKNOWN)"
                        ],
                        "env": [
                            {
                                "name": "PORT",
                                "value": "8000"
                            },
                            {
                                "name": "SPAWNER_BACKEND_ID",
                                "value": "b1"
                            },
                            {
                                "name": "SPAWNER_BASE_PATH",
                                "value": "/p/b1/"
                            },
                            {
                                "name": "SPAWNER_PUBLIC_URL",
                                "value": "http://spawner.test/p/b1/"
                            },
                            {
                                "name": "MODE",
                                "value": "collab"
                            }
                        ],
                        "image": "registry.example/app:1",
                        "name": "app",
                        "ports": [
                            {
                                "containerPort": 8000,
                                "name": "app",
                                "protocol": "TCP"
                            }
                        ],
                        "resources": {
                            "limits": {
                                "cpu": "500m",
                                "memory": "256Mi"
                            }
                        },
                        "terminationMessagePolicy": "FallbackToLogsOnError"
                    },
                    {
                        "command": [
                            "spawner",
                            "sidecar",
                            "--app-port",
                            "8000",
                            "--listen",
                            "0.0.0.0:9090"
                        ],
                        "image": "spawner:test",
                        "name": "spawner-sidecar",
                        "ports": [
                            {
                                "containerPort": 9090,
                                "name": "sidecar",
                                "protocol": "TCP"
                            }
                        ],
                        "resources": {
                            "requests": {
                                "cpu": "10m",
                                "memory": "16Mi"
                            }
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]},
                            "privileged": false,
                            "readOnlyRootFilesystem": true,
                            "runAsGroup": 65532,
                            "runAsNonRoot": true,
                            "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}
                        }
                    }
                ],
                "enableServiceLinks": false,
                "imagePullSecrets": [
                    {
                        "name": "regcred"
                    }
                ],
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 10
            }
        });
        assert_eq!(serde_json::to_value(&pod).expect("json"), want);
    }

    #[test]
    fn the_service_of_an_object_field_by_field() {
        let svc = build_service(&object("b1"), &config()).expect("service");
        let want = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "labels": {
                    "app.kubernetes.io/managed-by": "spawner",
                    "owner": "user-7",
                    "spawner.dev/backend": "b1"
                },
                "name": "b1",
                "namespace": "default",
                "ownerReferences": [
                    {
                        "apiVersion": "spawner.dev/v1",
                        "controller": true,
                        "kind": "SessionLivedBackend",
                        "name": "b1",
                        "uid": "uid-b1"
                    }
                ]
            },
            "spec": {
                "ports": [
                    {
                        "name": "http",
                        "port": 9090,
                        "protocol": "TCP",
                        "targetPort": "sidecar"
                    }
                ],
                "selector": {
                    "spawner.dev/backend": "b1"
                },
                "type": "ClusterIP",
                "clusterIP": "None"
            }
        });
        assert_eq!(serde_json::to_value(&svc).expect("json"), want);
    }
}
