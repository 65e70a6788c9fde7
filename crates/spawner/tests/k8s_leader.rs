//! Leader election of `spawner controller --leader-elect` on a real API server (its Lease,
//! under the controller's Role), as a rollout exercises it: a standby stops on SIGTERM, a
//! leader stopped gracefully hands the Lease over, a new replica leads.

mod k8s;

use k8s::TestNs;
use k8s_openapi::api::coordination::v1::Lease;
use spawner_core::State;
use spawner_k8s::kube::api::Api;

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_stops_on_sigterm_and_a_stopping_leader_hands_its_lease_over() {
    let ns = TestNs::new("lead").await;
    let leases: Api<Lease> = Api::namespaced(ns.admin.clone(), &ns.name);
    let elect = ["--leader-elect"];
    let mut a = ns.controller(&elect, &[("POD_NAME", "controller-a")]);
    a.wait_for_log("controller started");
    assert_eq!(
        holder(&leases.get("spawner-controller").await.expect("lease")).as_deref(),
        Some("controller-a")
    );
    ns.create_slab("first", serde_json::json!({})).await;
    ns.wait_state("first", State::Constructed).await;

    // A standby waiting for the Lease stops on SIGTERM (issue 15, fault 4: it waited for
    // the Lease before listening, so a rollout had to kill it).
    let mut b = ns.controller(&elect, &[("POD_NAME", "controller-b")]);
    b.wait_for_log("waiting to lead");
    let status = b.stop();
    assert!(status.success(), "the standby: {status}\n{}", b.log_text());
    assert!(
        b.log_text().contains("stopped before leading"),
        "{}",
        b.log_text()
    );
    assert!(!b.log_text().contains("controller started"));

    // The leader stopped gracefully releases the Lease (fault 5: it kept it until it
    // expired, 15 s without any controller).
    let mut c = ns.controller(&elect, &[("POD_NAME", "controller-c")]);
    c.wait_for_log("waiting to lead");
    let status = a.stop();
    assert!(status.success(), "the leader: {status}\n{}", a.log_text());
    assert!(
        a.log_text().contains("leadership released"),
        "{}",
        a.log_text()
    );
    // The standby takes it over and reconciles.
    c.wait_for_log("controller started");
    let lease = leases.get("spawner-controller").await.expect("lease");
    assert_eq!(holder(&lease).as_deref(), Some("controller-c"));
    assert_eq!(lease.spec.and_then(|s| s.lease_transitions), Some(1));
    ns.create_slab("second", serde_json::json!({})).await;
    ns.wait_state("second", State::Constructed).await;
    assert!(c.stop().success());
}
