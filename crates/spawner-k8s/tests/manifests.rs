//! The manifests of deploy/kubernetes: every object round-trips through its k8s-openapi
//! type unchanged (so no field is misspelled or misplaced: k8s-openapi drops what it does
//! not know), and the RBAC grants what the code does.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// Every document of every manifest file, as JSON, by "Kind/name".
fn documents() -> BTreeMap<String, Value> {
    let mut docs = BTreeMap::new();
    let mut entries: Vec<_> = std::fs::read_dir(deploy_dir())
        .expect("deploy/kubernetes exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("readable");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).expect("valid YAML");
            if v.is_null() {
                continue;
            }
            let key = format!(
                "{}/{}",
                v["kind"].as_str().expect("kind"),
                v["metadata"]["name"].as_str().expect("name")
            );
            assert!(docs.insert(key.clone(), v).is_none(), "{key} twice");
        }
    }
    docs
}

fn round_trip<T: DeserializeOwned + Serialize>(key: &str, v: &Value) {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{key}: {e}"));
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(
        &back, v,
        "{key} changes through its k8s-openapi type: a field is unknown or mistyped"
    );
}

#[test]
fn every_manifest_object_round_trips_through_its_type() {
    let docs = documents();
    assert!(docs.len() >= 20, "{:?}", docs.keys());
    for (key, v) in &docs {
        match v["kind"].as_str().unwrap_or_default() {
            "Namespace" => round_trip::<Namespace>(key, v),
            "CustomResourceDefinition" => round_trip::<CustomResourceDefinition>(key, v),
            "ConfigMap" => round_trip::<ConfigMap>(key, v),
            "ServiceAccount" => round_trip::<ServiceAccount>(key, v),
            "Role" => round_trip::<Role>(key, v),
            "RoleBinding" => round_trip::<RoleBinding>(key, v),
            "Deployment" => round_trip::<Deployment>(key, v),
            "DaemonSet" => round_trip::<DaemonSet>(key, v),
            "Service" => round_trip::<Service>(key, v),
            other => panic!("{key}: no type check for kind {other}"),
        }
    }
}

/// Every grant of `role`, one `verb group/resource[/name]` a line, sorted.
fn grants(role: &Value) -> BTreeSet<String> {
    let list = |r: &Value, field: &str| -> Vec<String> {
        r[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let names = list(rule, "resourceNames");
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for group in list(rule, "apiGroups") {
            for resource in list(rule, "resources") {
                for verb in list(rule, "verbs") {
                    for name in &names {
                        let name = if name.is_empty() {
                            String::new()
                        } else {
                            format!("/{name}")
                        };
                        out.insert(format!("{verb} {group}/{resource}{name}"));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_what_each_component_does_and_no_more() {
    let docs = documents();
    let role = |name: &str| {
        docs.get(&format!("Role/{name}"))
            .unwrap_or_else(|| panic!("Role/{name}"))
            .clone()
    };
    // Exactly what each component calls, and nothing else.
    let expected: [(&str, &[&str]); 4] = [
        (
            "spawner-controller",
            &[
                "get spawner.dev/sessionlivedbackends",
                "list spawner.dev/sessionlivedbackends",
                "watch spawner.dev/sessionlivedbackends",
                "create spawner.dev/sessionlivedbackends",
                "patch spawner.dev/sessionlivedbackends",
                "delete spawner.dev/sessionlivedbackends",
                "patch spawner.dev/sessionlivedbackends/status",
                "get spawner.dev/sessionlivedbackendpools",
                "list spawner.dev/sessionlivedbackendpools",
                "watch spawner.dev/sessionlivedbackendpools",
                "get /pods",
                "list /pods",
                "watch /pods",
                "create /pods",
                "delete /pods",
                "get /services",
                "list /services",
                "watch /services",
                "create /services",
                "delete /services",
                "create /persistentvolumeclaims",
                "create events.k8s.io/events",
                "patch events.k8s.io/events",
                "create coordination.k8s.io/leases",
                "get coordination.k8s.io/leases/spawner-controller",
                "patch coordination.k8s.io/leases/spawner-controller",
            ],
        ),
        (
            "spawner-api",
            &[
                "get spawner.dev/sessionlivedbackends",
                "list spawner.dev/sessionlivedbackends",
                "watch spawner.dev/sessionlivedbackends",
                "create spawner.dev/sessionlivedbackends",
                "patch spawner.dev/sessionlivedbackends",
                "delete spawner.dev/sessionlivedbackends",
                "patch spawner.dev/sessionlivedbackends/status",
                "get /pods/log",
                "get spawner.dev/sessionlivedbackendpools",
                "list spawner.dev/sessionlivedbackendpools",
                "watch spawner.dev/sessionlivedbackendpools",
                "create spawner.dev/sessionlivedbackendpools",
                "patch spawner.dev/sessionlivedbackendpools",
                "delete spawner.dev/sessionlivedbackendpools",
                "get coordination.k8s.io/leases",
                "create coordination.k8s.io/leases",
                "update coordination.k8s.io/leases",
                "delete coordination.k8s.io/leases",
                "get /pods",
            ],
        ),
        (
            "spawner-sweeper",
            &[
                "get spawner.dev/sessionlivedbackends",
                "list spawner.dev/sessionlivedbackends",
                "watch spawner.dev/sessionlivedbackends",
                "patch spawner.dev/sessionlivedbackends/status",
                "create events.k8s.io/events",
                "patch events.k8s.io/events",
            ],
        ),
        (
            "spawner-router",
            &[
                "get spawner.dev/sessionlivedbackends",
                "list spawner.dev/sessionlivedbackends",
                "watch spawner.dev/sessionlivedbackends",
                "patch spawner.dev/sessionlivedbackends/status",
            ],
        ),
    ];
    for (name, want) in expected {
        let want: BTreeSet<String> = want.iter().map(|g| g.to_string()).collect();
        assert_eq!(grants(&role(name)), want, "Role/{name}");
    }
    for name in [
        "spawner-controller",
        "spawner-api",
        "spawner-sweeper",
        "spawner-router",
    ] {
        let binding = &docs[&format!("RoleBinding/{name}")];
        assert_eq!(binding["roleRef"]["name"], name);
        assert_eq!(binding["subjects"][0]["name"], name);
    }
}

#[test]
fn workloads_use_their_accounts_and_the_downward_api() {
    let docs = documents();
    for (kind, name) in [
        ("Deployment", "spawner-controller"),
        ("Deployment", "spawner-api"),
        ("DaemonSet", "spawner-sweeper"),
        ("Deployment", "spawner-router"),
    ] {
        let spec = &docs[&format!("{kind}/{name}")]["spec"]["template"]["spec"];
        assert_eq!(spec["serviceAccountName"], name, "{name}");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
    }
    let sweeper = &docs["DaemonSet/spawner-sweeper"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        sweeper["command"],
        serde_json::json!(["spawner", "sweeper", "--node-name", "$(NODE_NAME)"])
    );
    assert_eq!(
        sweeper["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    // The router and the controller read the router's key from the same Secret: the
    // sidecars' proofs are derived from it, and the router sends them.
    for name in ["spawner-controller", "spawner-router"] {
        let env = &docs[&format!("Deployment/{name}")]["spec"]["template"]["spec"]["containers"][0]
            ["env"];
        let key = env
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "SPAWNER_ROUTER_KEY")
            .unwrap_or_else(|| panic!("{name}: no SPAWNER_ROUTER_KEY"));
        assert_eq!(
            key["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "spawner-router", "key": "key"}),
            "{name}"
        );
    }
    // The sidecar image the controller uses is the image the kustomization deploys.
    let kustomization: Value = serde_yaml::from_str(
        &std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).expect("kustomization"),
    )
    .expect("YAML");
    let tag = kustomization["images"][0]["newTag"].as_str().expect("tag");
    assert_eq!(
        docs["ConfigMap/spawner-config"]["data"]["SPAWNER_SIDECAR_IMAGE"],
        format!("spawner:{tag}")
    );
}
