//! The controller against a mocked Kubernetes API, kept only for the faults a real API
//! server does not produce on demand: a request failing at one chosen point (a 500 on the
//! status patch after the Pod was created, as a crash there leaves it; 500s in a row for the
//! backoff), a Pod created by someone else between the controller's read and its create
//! (409 AlreadyExists), and a sweeper write landing between the controller's read and its
//! patch (409 Conflict). Everything else the controller does is tested on a real API server
//! (crates/spawner/tests/k8s_*.rs).

mod support;

use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::Reporter;
use serde_json::{json, Value};
use spawner_core::time::Millis;
use spawner_core::{BackendSpec, State};
use spawner_k8s::controller::pod::PodConfig;
use spawner_k8s::controller::{error_policy, reconcile, Context, ControllerConfig, Error};
use spawner_k8s::model::naming::Urls;
use spawner_k8s::{SessionLivedBackend, SessionLivedBackendStatus};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::Fake;

const SLABS: &str = "sessionlivedbackends";
/// support::NOW in milliseconds: the objects' creation time.
const T0: Millis = 1_700_000_000_000;

fn config() -> ControllerConfig {
    ControllerConfig {
        pod: PodConfig {
            sidecar_image: "spawner:test".into(),
            sidecar_port: 9090,
            stop_grace_seconds: 10,
            urls: Urls::new("http://spawner.test", None),
            sleep_volume: None,
        },
        retention: Duration::from_secs(60),
        resync: Duration::from_secs(300),
        router_key: None,
        access_key: None,
    }
}

struct Harness {
    fake: Fake,
    clock: Arc<AtomicI64>,
    ctx: Arc<Context>,
}

impl Harness {
    fn new() -> Harness {
        let (fake, client) = Fake::start();
        let clock = Arc::new(AtomicI64::new(T0));
        let ctx = Self::context(client, &clock);
        Harness { fake, clock, ctx }
    }

    fn context(client: kube::Client, clock: &Arc<AtomicI64>) -> Arc<Context> {
        let c = clock.clone();
        Arc::new(Context::new(
            client,
            Reporter {
                controller: "spawner-controller".into(),
                instance: None,
            },
            config(),
            Box::new(move || c.load(Ordering::SeqCst)),
        ))
    }

    /// A controller restart: a new context (new Event cache, no failure counters) on the
    /// same API server.
    fn restart(&mut self) {
        self.ctx = Self::context(self.ctx.client.clone(), &self.clock);
    }

    fn object(&self, name: &str) -> SessionLivedBackend {
        serde_json::from_value(self.fake.get(SLABS, name).expect("object exists")).expect("parses")
    }

    async fn reconcile(&self, name: &str) -> Result<Requeue, Error> {
        self.reconcile_obj(self.object(name)).await
    }

    async fn reconcile_obj(&self, obj: SessionLivedBackend) -> Result<Requeue, Error> {
        reconcile(Arc::new(obj), self.ctx.clone()).await
    }
}

fn spec() -> BackendSpec {
    serde_json::from_value(json!({
        "executable": {"image": "registry.example/app:1", "command": ["serve", "$(SPAWNER_BASE_PATH)"], "port": 8000},
        "labels": {"owner": "user-7"}
    }))
    .expect("spec")
}

fn create(fake: &Fake, name: &str) -> SessionLivedBackend {
    let obj = SessionLivedBackend::from_backend_spec(name, &spec()).expect("converts");
    let stored = fake.put(SLABS, serde_json::to_value(&obj).expect("json"));
    serde_json::from_value(stored).expect("parses")
}

fn status(obj: &SessionLivedBackend) -> SessionLivedBackendStatus {
    obj.status.clone().unwrap_or_default()
}

fn history(obj: &SessionLivedBackend) -> Vec<State> {
    status(obj).history.iter().map(|h| h.state).collect()
}

/// The Pod as the scheduler and the kubelet leave it: on a node, the app container in `app`.
fn run_pod(fake: &Fake, name: &str, app: Value) {
    fake.update("pods", name, |pod| {
        pod["spec"]["nodeName"] = json!("node-a");
        pod["status"] = json!({
            "phase": "Running", "podIP": "10.1.2.3",
            "containerStatuses": [{"name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 0, "state": app}]
        });
    });
}

#[tokio::test]
async fn restart_between_creating_the_pod_and_recording_it() {
    let mut h = Harness::new();
    create(&h.fake, "b3");
    h.reconcile("b3").await.expect("records Submitted");
    // The status patch fails after the Pod and Service were created (a crash there).
    h.fake
        .fail_next("PATCH", "sessionlivedbackends/b3", 500, "InternalError");
    let err = h.reconcile("b3").await.expect_err("the patch failed");
    assert!(matches!(err, Error::Kube(_)), "{err}");
    assert!(h.fake.get("pods", "b3").is_some());
    h.fake.take_log();
    // The restarted controller finds the Pod and Service and records Constructed only.
    h.restart();
    h.reconcile("b3").await.expect("reconciles");
    let log = h.fake.take_log();
    assert_eq!(
        log.iter().map(|l| l.short()).collect::<Vec<_>>(),
        ["GET pods/b3", "GET services/b3", "PATCH slabs/b3/status",]
    );
    assert_eq!(
        history(&h.object("b3")),
        [State::Submitted, State::Constructed]
    );
}

#[tokio::test]
async fn children_that_already_exist_are_not_an_error() {
    let h = Harness::new();
    create(&h.fake, "b4");
    h.reconcile("b4").await.expect("records Submitted");
    // Created by someone else between our read and our create.
    h.fake.fail_next("POST", "pods", 409, "AlreadyExists");
    h.fake.fail_next("POST", "services", 409, "AlreadyExists");
    h.reconcile("b4").await.expect("AlreadyExists is tolerated");
    assert_eq!(
        history(&h.object("b4")),
        [State::Submitted, State::Constructed]
    );
}

#[tokio::test]
async fn a_lost_race_with_the_sweeper_is_retried_not_overwritten() {
    let h = Harness::new();
    create(&h.fake, "b5");
    h.reconcile("b5").await.expect("records Submitted");
    h.reconcile("b5").await.expect("constructs");
    let stale = h.object("b5");
    // The sweeper writes in between; the controller still holds the older object.
    h.fake
        .update(SLABS, "b5", |o| o["status"]["liveConnections"] = json!(2));
    run_pod(&h.fake, "b5", json!({"running": {}}));
    let err = h.reconcile_obj(stale.clone()).await.expect_err("conflict");
    assert_eq!(
        error_policy(Arc::new(stale), &err, h.ctx.clone()),
        Requeue::requeue(Duration::from_millis(500))
    );
    assert_eq!(
        status(&h.object("b5")).live_connections,
        Some(2),
        "the sweeper's write stands"
    );
    h.reconcile("b5").await.expect("the retry sees both");
    let st = status(&h.object("b5"));
    assert_eq!(
        (st.state, st.live_connections),
        (Some(State::Running), Some(2))
    );
}

#[tokio::test]
async fn errors_back_off_exponentially() {
    let h = Harness::new();
    create(&h.fake, "b6");
    h.reconcile("b6").await.expect("records Submitted");
    let obj = Arc::new(h.object("b6"));
    let mut delays = Vec::new();
    for _ in 0..4 {
        h.fake.fail_next("GET", "pods/b6", 500, "InternalError");
        let err = h.reconcile("b6").await.expect_err("fails");
        delays.push(error_policy(obj.clone(), &err, h.ctx.clone()));
    }
    let secs = |s| Requeue::requeue(Duration::from_secs(s));
    assert_eq!(delays, [secs(1), secs(2), secs(4), secs(8)]);
    // A success resets the count.
    h.reconcile("b6").await.expect("reconciles");
    h.fake.fail_next("GET", "pods/b6", 500, "InternalError");
    let err = h.reconcile("b6").await.expect_err("fails");
    assert_eq!(error_policy(obj, &err, h.ctx.clone()), secs(1));
}
