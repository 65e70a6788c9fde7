//! The install of docs/kubernetes.md on a real API server: `deploy/kubernetes` rendered by
//! kustomize and applied into a namespace that enforces Pod Security `restricted`. The
//! controller-manager's Deployment, ReplicaSet and DaemonSet controllers create the
//! components' Pods, so admission passes judgement on each of them. (No kubelet runs them.)

mod k8s;

use k8s::{kubectl, TestNs};
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_applies_and_every_component_is_admitted_in_a_restricted_namespace() {
    let ns = TestNs::with_labels(
        "install",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let admin = &ns.cluster.admin_kubeconfig;
    kubectl(
        admin,
        &[
            "create",
            "secret",
            "generic",
            "spawner-api",
            "-n",
            &ns.name,
            "--from-literal=token=t0ken",
            "--from-literal=key-secret=k3y",
        ],
        None,
    );
    kubectl(
        admin,
        &[
            "create",
            "secret",
            "generic",
            "spawner-router",
            "-n",
            &ns.name,
            "--from-literal=key=the-router-key-0123456789",
        ],
        None,
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let rendered = kubectl(admin, &["kustomize", &root.to_string_lossy()], None);
    // Into this test's namespace (created above, labelled) instead of `spawner`; the CRD is
    // the server's already.
    let docs: Vec<String> = rendered
        .split("\n---\n")
        .filter(|d| {
            !d.contains("\nkind: Namespace\n") && !d.contains("\nkind: CustomResourceDefinition\n")
        })
        .map(|d| {
            d.lines()
                .map(|l| match l.trim_start() {
                    "namespace: spawner" => l.replace("spawner", &ns.name),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    kubectl(admin, &["apply", "-f", "-"], Some(&docs.join("\n---\n")));

    // Two replicas each of the controller, the API and the router: six Pods, each admitted
    // under `restricted`.
    let deadline = Instant::now() + k8s::PATIENCE;
    loop {
        let pods: Value = serde_json::from_str(&kubectl(
            admin,
            &["get", "pods", "-n", &ns.name, "-o", "json"],
            None,
        ))
        .expect("pods json");
        let names: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        let of = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
        let counts = [
            of("spawner-controller-"),
            of("spawner-api-"),
            of("spawner-router-"),
        ];
        if counts == [2, 2, 2] {
            break;
        }
        let events = kubectl(
            admin,
            &[
                "get",
                "events",
                "-n",
                &ns.name,
                "--field-selector",
                "reason=FailedCreate",
            ],
            None,
        );
        assert!(
            !events.contains("PodSecurity"),
            "a component was refused under restricted:\n{events}"
        );
        assert!(
            Instant::now() < deadline,
            "the components' Pods (controller, api, router) are {counts:?}, not [2, 2, 2]: {names:?}\n{events}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The sweeper's DaemonSet makes no Pod here (the Node without a kubelet is tainted
    // not-ready): a Pod of its template goes through admission as a server-side dry run.
    let ds: Value = serde_json::from_str(&kubectl(
        admin,
        &[
            "get",
            "daemonset",
            "spawner-sweeper",
            "-n",
            &ns.name,
            "-o",
            "json",
        ],
        None,
    ))
    .expect("daemonset json");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "spawner-sweeper-check", "namespace": ns.name},
        "spec": ds["spec"]["template"]["spec"],
    });
    kubectl(
        admin,
        &["create", "--dry-run=server", "-f", "-"],
        Some(&pod.to_string()),
    );
}
