//! Leader election against a mocked API server: one candidate wins, the other waits, and
//! takes over once the lease expires; a stale write loses.

mod support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use serde_json::json;
use spawner_k8s::leader::{try_acquire, LeaseConfig};
use std::time::Duration;
use support::Fake;

fn cfg(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "spawner-controller".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn one_leads_the_other_takes_over_after_expiry() {
    let (fake, client) = Fake::start();
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let t0 = Timestamp::from_second(1_700_000_000).expect("time");
    let at = |s: i64| t0.checked_add(SignedDuration::from_secs(s)).expect("time");

    assert!(try_acquire(&leases, &cfg("a"), t0).await.expect("api"));
    let log = fake.take_log();
    assert_eq!(
        log.iter().map(|l| l.short()).collect::<Vec<_>>(),
        ["GET leases/spawner-controller", "POST leases"]
    );
    assert_eq!(
        log[0].path,
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/spawner-controller"
    );
    let body = log[1].body.clone().expect("body");
    assert_eq!(body["spec"]["holderIdentity"], "a");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);

    assert!(
        !try_acquire(&leases, &cfg("b"), at(10)).await.expect("api"),
        "still a's"
    );
    assert_eq!(
        fake.take_short_log(),
        ["GET leases/spawner-controller"],
        "a waiting candidate writes nothing"
    );

    assert!(
        try_acquire(&leases, &cfg("a"), at(12)).await.expect("api"),
        "a renews"
    );
    let log = fake.take_log();
    let patch = log[1].body.clone().expect("patch");
    assert!(
        patch["metadata"]["resourceVersion"].is_string(),
        "conditional: {patch}"
    );
    assert_eq!(patch["spec"]["holderIdentity"], "a");

    assert!(
        !try_acquire(&leases, &cfg("b"), at(26)).await.expect("api"),
        "renewed at 12: valid until 27"
    );
    assert!(
        try_acquire(&leases, &cfg("b"), at(28)).await.expect("api"),
        "expired: b takes over"
    );
    let lease = fake.get("leases", "spawner-controller").expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    // a, back from a long pause, finds it is no longer the holder.
    assert!(!try_acquire(&leases, &cfg("a"), at(30)).await.expect("api"));
}

#[tokio::test]
async fn a_write_based_on_a_stale_read_loses() {
    let (fake, client) = Fake::start();
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let t0 = Timestamp::from_second(1_700_000_000).expect("time");
    // An expired lease of "old"; the API server answers the take-over with a conflict, as
    // it would if another candidate had written in between.
    fake.put("leases", json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "spawner-controller"},
        "spec": {"holderIdentity": "old", "leaseDurationSeconds": 15, "renewTime": "2020-01-01T00:00:00.000000Z"}
    }));
    fake.fail_next("PATCH", "leases/spawner-controller", 409, "Conflict");
    assert!(!try_acquire(&leases, &cfg("b"), t0)
        .await
        .expect("a conflict is not an error"));
    assert!(try_acquire(&leases, &cfg("b"), t0).await.expect("api"));
}
