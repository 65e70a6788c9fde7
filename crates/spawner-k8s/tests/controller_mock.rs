//! The controller against a mocked Kubernetes API: the exact requests of a whole lifecycle,
//! a controller restarted mid-way, objects that already exist or are gone, lost races.

mod support;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::Reporter;
use serde_json::{json, Value};
use spawner_core::time::Millis;
use spawner_core::{BackendSpec, State};
use spawner_k8s::controller::{error_policy, reconcile, Context, ControllerConfig, Error};
use spawner_k8s::naming::Urls;
use spawner_k8s::pod::{build_pod, build_service, PodConfig};
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
        },
        retention: Duration::from_secs(60),
        resync: Duration::from_secs(300),
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

    fn at(&self, ms: Millis) {
        self.clock.store(ms, Ordering::SeqCst);
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

fn event_reasons(log: &[support::Logged]) -> Vec<String> {
    log.iter()
        .filter(|l| l.path.ends_with("/events"))
        .map(|l| {
            l.body.as_ref().map_or(String::new(), |b| {
                b["reason"].as_str().unwrap_or_default().to_string()
            })
        })
        .collect()
}

fn body_of<'a>(log: &'a [support::Logged], short: &str) -> &'a Value {
    log.iter()
        .find(|l| l.short() == short)
        .and_then(|l| l.body.as_ref())
        .unwrap_or_else(|| {
            panic!(
                "no {short} in {:?}",
                log.iter().map(|l| l.short()).collect::<Vec<_>>()
            )
        })
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
async fn a_whole_lifecycle_with_a_restart_mid_way() {
    let mut h = Harness::new();
    let obj = create(&h.fake, "b1");
    h.fake.take_log();

    // 1. First sight: Pod and Service created, Submitted and Constructed recorded.
    h.at(T0 + 50);
    let requeue = h.reconcile("b1").await.expect("reconciles");
    assert_eq!(
        requeue,
        Requeue::requeue(Duration::from_millis(300_000 - 50)),
        "startup timeout is the next deadline"
    );
    let log = h.fake.take_log();
    let short: Vec<String> = log.iter().map(|l| l.short()).collect();
    assert_eq!(
        short,
        [
            "GET pods/b1",
            "GET services/b1",
            "POST pods",
            "POST services",
            "PATCH slabs/b1/status",
            "POST events",
            "POST events",
        ]
    );
    let expected_pod =
        serde_json::to_value(build_pod(&obj, &config().pod).expect("pod")).expect("json");
    assert_eq!(body_of(&log, "POST pods"), &expected_pod);
    let pod: Pod = serde_json::from_value(expected_pod).expect("the sent Pod is a valid Pod");
    assert_eq!(
        pod.spec
            .as_ref()
            .and_then(|s| s.containers[0].command.clone()),
        Some(vec!["serve".into(), "/p/b1/".into()])
    );
    let expected_svc =
        serde_json::to_value(build_service(&obj, &config().pod).expect("svc")).expect("json");
    assert_eq!(body_of(&log, "POST services"), &expected_svc);
    let _: Service =
        serde_json::from_value(expected_svc).expect("the sent Service is a valid Service");
    let patch = body_of(&log, "PATCH slabs/b1/status");
    assert_eq!(
        patch["metadata"]["resourceVersion"],
        obj.metadata.resource_version.clone().expect("rv")
    );
    assert_eq!(patch["status"]["state"], "Constructed");
    assert_eq!(
        patch["status"]["history"],
        json!([
            {"seq": 1, "state": "Submitted", "time": "2023-11-14T22:13:20.000Z"},
            {"seq": 2, "state": "Constructed", "time": "2023-11-14T22:13:20.050Z"},
        ])
    );
    assert_eq!(event_reasons(&log), ["Submitted", "Constructed"]);
    let event = log
        .iter()
        .find(|l| l.path.ends_with("/events"))
        .and_then(|l| l.body.clone())
        .expect("event");
    assert_eq!(event["regarding"]["kind"], "SessionLivedBackend");
    assert_eq!(event["regarding"]["name"], "b1");
    assert_eq!(event["reportingController"], "spawner-controller");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["action"], "Lifecycle");
    assert_eq!(
        log.iter()
            .find(|l| l.short() == "POST events")
            .map(|l| l.path.as_str()),
        Some("/apis/events.k8s.io/v1/namespaces/default/events")
    );

    // 2. Scheduled and running: node, URL and IP recorded, then the node label.
    run_pod(
        &h.fake,
        "b1",
        json!({"running": {"startedAt": support::NOW}}),
    );
    h.at(T0 + 2_000);
    h.reconcile("b1").await.expect("reconciles");
    let log = h.fake.take_log();
    let short: Vec<String> = log.iter().map(|l| l.short()).collect();
    assert_eq!(
        short,
        [
            "GET pods/b1",
            "GET services/b1",
            "PATCH slabs/b1/status",
            "POST events",
            "POST events",
            "PATCH slabs/b1"
        ]
    );
    assert_eq!(event_reasons(&log), ["Scheduled", "Running"]);
    assert_eq!(
        body_of(&log, "PATCH slabs/b1"),
        &json!({"metadata": {"labels": {"spawner.dev/node": "node-a"}}})
    );
    let now = h.object("b1");
    let st = status(&now);
    assert_eq!(
        (
            st.node_name.as_deref(),
            st.ip.as_deref(),
            st.url.as_deref(),
            st.port
        ),
        (
            Some("node-a"),
            Some("10.1.2.3"),
            Some("http://spawner.test/p/b1/"),
            Some(9090)
        )
    );
    assert!(st.submitted && st.constructed && st.scheduled && st.running);

    // 3. The controller restarts; the sweeper marks Ready meanwhile. Nothing to do: reads only.
    h.restart();
    h.fake.update(SLABS, "b1", |o| {
        let mut st: SessionLivedBackendStatus =
            serde_json::from_value(o["status"].clone()).expect("status");
        st.enter(State::Ready, T0 + 3_000, None, None);
        o["status"] = serde_json::to_value(st).expect("json");
    });
    h.at(T0 + 4_000);
    h.reconcile("b1").await.expect("reconciles");
    assert_eq!(h.fake.take_short_log(), ["GET pods/b1", "GET services/b1"]);

    // 4. A terminate call: Terminating recorded, the Pod deleted with the stop grace.
    h.fake.update(SLABS, "b1", |o| {
        o["metadata"]["annotations"] = json!({"spawner.dev/stop": "terminate requested"})
    });
    h.reconcile("b1").await.expect("reconciles");
    let log = h.fake.take_log();
    let short: Vec<String> = log.iter().map(|l| l.short()).collect();
    assert_eq!(
        short,
        [
            "GET pods/b1",
            "GET services/b1",
            "PATCH slabs/b1/status",
            "POST events",
            "DELETE pods/b1"
        ]
    );
    let del = log
        .iter()
        .find(|l| l.short() == "DELETE pods/b1")
        .expect("delete");
    assert_eq!(
        del.body.as_ref().map(|b| (
            b["gracePeriodSeconds"].clone(),
            b["preconditions"]["uid"].is_string()
        )),
        Some((json!(10), true))
    );
    assert_eq!(
        status(&h.object("b1")).stop_reason.as_deref(),
        Some("terminate requested")
    );

    // 5. Pod gone (the fake deletes at once): Terminated, and the object kept for retention.
    h.at(T0 + 5_000);
    let requeue = h.reconcile("b1").await.expect("reconciles");
    let log = h.fake.take_log();
    assert_eq!(
        log.iter().map(|l| l.short()).collect::<Vec<_>>(),
        [
            "GET pods/b1",
            "GET services/b1",
            "PATCH slabs/b1/status",
            "POST events"
        ]
    );
    assert_eq!(event_reasons(&log), ["Terminated"]);
    assert_eq!(requeue, Requeue::requeue(Duration::from_secs(300)));
    let done = h.object("b1");
    assert_eq!(
        history(&done),
        [
            State::Submitted,
            State::Constructed,
            State::Scheduled,
            State::Running,
            State::Ready,
            State::Terminating,
            State::Terminated
        ]
    );
    assert_eq!(status(&done).reason.as_deref(), Some("terminate requested"));

    // 6. After the retention the object is deleted (uid precondition); a second delete of
    //    an object already gone is fine.
    h.at(T0 + 65_000);
    assert_eq!(
        h.reconcile_obj(done.clone()).await.expect("reconciles"),
        Requeue::await_change()
    );
    let log = h.fake.take_log();
    assert_eq!(
        log.iter().map(|l| l.short()).collect::<Vec<_>>(),
        ["GET pods/b1", "GET services/b1", "DELETE slabs/b1"]
    );
    assert_eq!(
        log[2]
            .body
            .as_ref()
            .map(|b| b["preconditions"]["uid"].clone()),
        Some(json!(done.metadata.uid))
    );
    assert!(h.fake.get(SLABS, "b1").is_none());
    h.reconcile_obj(done)
        .await
        .expect("deleting what is gone is fine");
}

#[tokio::test]
async fn failing_app_records_its_exit_code_and_a_warning() {
    let h = Harness::new();
    create(&h.fake, "b2");
    h.reconcile("b2").await.expect("constructs");
    run_pod(
        &h.fake,
        "b2",
        json!({"terminated": {"exitCode": 3, "reason": "Error"}}),
    );
    h.fake.take_log();
    h.reconcile("b2").await.expect("reconciles");
    let log = h.fake.take_log();
    assert_eq!(event_reasons(&log), ["Scheduled", "Failed"]);
    let warning = log
        .iter()
        .filter(|l| l.path.ends_with("/events"))
        .nth(1)
        .and_then(|l| l.body.clone())
        .expect("event");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["note"], "exited with code 3 before it became ready");
    assert!(log.iter().any(|l| l.short() == "DELETE pods/b2"));
    let st = status(&h.object("b2"));
    assert_eq!(
        (st.state, st.exit_code, st.failed),
        (Some(State::Failed), Some(3), true)
    );
}

#[tokio::test]
async fn restart_between_creating_the_pod_and_recording_it() {
    let mut h = Harness::new();
    create(&h.fake, "b3");
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
        [
            "GET pods/b3",
            "GET services/b3",
            "PATCH slabs/b3/status",
            "POST events",
            "POST events"
        ]
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
    let obj = Arc::new(create(&h.fake, "b6"));
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

#[tokio::test]
async fn sweeper_marked_swept_stops_the_pod_then_deletes_the_object() {
    let h = Harness::new();
    create(&h.fake, "b7");
    h.reconcile("b7").await.expect("constructs");
    run_pod(&h.fake, "b7", json!({"running": {}}));
    h.reconcile("b7").await.expect("runs");
    h.fake.update(SLABS, "b7", |o| {
        let mut st: SessionLivedBackendStatus =
            serde_json::from_value(o["status"].clone()).expect("status");
        st.enter(State::Ready, T0 + 1_000, None, None);
        st.enter(State::Swept, T0 + 2_000, Some("idle".into()), None);
        o["status"] = serde_json::to_value(st).expect("json");
    });
    h.fake.take_log();
    h.at(T0 + 3_000);
    h.reconcile("b7").await.expect("reconciles");
    assert_eq!(
        h.fake.take_short_log(),
        ["GET pods/b7", "GET services/b7", "DELETE pods/b7"]
    );
    h.at(T0 + 62_000);
    h.reconcile("b7").await.expect("reconciles");
    assert_eq!(
        h.fake.take_short_log(),
        ["GET pods/b7", "GET services/b7", "DELETE slabs/b7"]
    );
}

#[tokio::test]
async fn the_lifetime_limit_stops_a_ready_backend_and_ends_it_terminated() {
    let h = Harness::new();
    let mut limited = spec();
    limited.lifetime_limit_seconds = Some(30);
    let obj = SessionLivedBackend::from_backend_spec("b8", &limited).expect("converts");
    h.fake.put(SLABS, serde_json::to_value(&obj).expect("json"));
    h.reconcile("b8").await.expect("constructs");
    run_pod(&h.fake, "b8", json!({"running": {}}));
    h.reconcile("b8").await.expect("runs");
    h.fake.update(SLABS, "b8", |o| {
        let mut st: SessionLivedBackendStatus =
            serde_json::from_value(o["status"].clone()).expect("status");
        st.enter(State::Ready, T0 + 1_000, None, None);
        o["status"] = serde_json::to_value(st).expect("json");
    });

    // Before the limit, a busy backend is left alone.
    h.fake.take_log();
    h.at(T0 + 29_000);
    h.reconcile("b8").await.expect("reconciles");
    assert_eq!(h.fake.take_short_log(), ["GET pods/b8", "GET services/b8"]);

    // Past it: Terminating with the reason, its Event, the Pod deleted with the stop grace.
    h.at(T0 + 30_500);
    h.reconcile("b8").await.expect("reconciles");
    let log = h.fake.take_log();
    assert_eq!(
        log.iter().map(|l| l.short()).collect::<Vec<_>>(),
        [
            "GET pods/b8",
            "GET services/b8",
            "PATCH slabs/b8/status",
            "POST events",
            "DELETE pods/b8"
        ]
    );
    assert_eq!(event_reasons(&log), ["Terminating"]);
    assert_eq!(
        body_of(&log, "DELETE pods/b8")["gracePeriodSeconds"],
        json!(10)
    );
    let stopping = status(&h.object("b8"));
    assert_eq!(stopping.state, Some(State::Terminating));
    assert_eq!(stopping.stop_reason.as_deref(), Some("lifetime limit"));

    // The Pod gone: Terminated, for the lifetime limit.
    h.at(T0 + 31_000);
    h.reconcile("b8").await.expect("reconciles");
    let log = h.fake.take_log();
    assert_eq!(event_reasons(&log), ["Terminated"]);
    let done = h.object("b8");
    assert_eq!(
        history(&done)[4..],
        [State::Ready, State::Terminating, State::Terminated]
    );
    assert_eq!(status(&done).reason.as_deref(), Some("lifetime limit"));
}
