//! The Docker runtime against the real Docker engine of this machine, through the
//! `Runtime` trait, with images built locally by `scripts/build-test-images.sh` (there is no
//! registry to pull from).
//!
//! Without an engine these tests fail, saying that Docker is required, unless
//! `SPAWNER_SKIP_DOCKER=1` is set: then each one prints that it was skipped.

use bollard::Docker;
use futures_util::future::{join_all, BoxFuture};
use spawner_core::lifecycle::Exit;
use spawner_core::spec::{PullPolicy, Resources};
use spawner_core::{BackendId, BackendSpec};
use spawner_runtime::docker::{LABEL_BACKEND_ID, LABEL_INSTANCE, LABEL_KEY};
use spawner_runtime::{
    DockerOptions, DockerRuntime, Launch, Runtime, RuntimeError, Signal, Started,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IMAGE: &str = "spawner-test/busybox:1";
const NETWORK: &str = "spawner-test";
/// Upper bound for anything a test waits for; reaching it is a failure.
const PATIENCE: Duration = Duration::from_secs(30);

/// The runtime under test, or `None` (after saying so) when Docker tests are skipped.
async fn runtime() -> Option<DockerRuntime> {
    runtime_with(DockerOptions {
        network: NETWORK.into(),
        ..DockerOptions::default()
    })
    .await
}

async fn runtime_with(options: DockerOptions) -> Option<DockerRuntime> {
    if std::env::var("SPAWNER_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("SKIPPED: Docker runtime test not run because SPAWNER_SKIP_DOCKER=1");
        return None;
    }
    let rt = match DockerRuntime::connect(options).await {
        Ok(rt) => rt,
        Err(why) => panic!(
            "the Docker runtime tests need a Docker engine, and there is none: {why}. \
             Start one, or set SPAWNER_SKIP_DOCKER=1 to skip these tests."
        ),
    };
    build_images();
    Some(rt)
}

/// Builds the test images once per test process (the script is quick when they exist).
fn build_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-images.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .expect("run scripts/build-test-images.sh");
        assert!(
            out.status.success(),
            "scripts/build-test-images.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A direct engine client, to look at what the runtime made.
async fn engine() -> Docker {
    Docker::connect_with_local_defaults()
        .expect("engine client")
        .negotiate_version()
        .await
        .expect("engine version")
}

/// A unique installation id per test, and the removal of whatever it left behind.
struct Instance(String);

impl Instance {
    fn new() -> Self {
        Instance(format!("test-{}", BackendId::generate().expect("id")))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Only matters when a test failed half-way: the passing path cleans up itself.
        let filter = format!("label={LABEL_INSTANCE}={}", self.0);
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn launch(instance: &Instance, dir: &Path, spec: BackendSpec, command: Option<&[&str]>) -> Launch {
    let id = BackendId::generate().expect("id");
    let port = spec.executable.port.unwrap_or(8080);
    let env = BTreeMap::from([
        ("PORT".to_string(), port.to_string()),
        ("SPAWNER_BACKEND_ID".to_string(), id.to_string()),
        ("GREETING".to_string(), "hi there".to_string()),
    ]);
    Launch {
        log_path: dir.join(format!("{id}.log")),
        id,
        spec,
        port,
        env,
        command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
        instance: instance.0.clone(),
        progress: None,
    }
}

/// The reason a start fails with; a start that succeeds, or fails otherwise, fails the test.
async fn start_error(rt: &DockerRuntime, l: &Launch) -> String {
    match tokio::time::timeout(PATIENCE, rt.start(l))
        .await
        .expect("in time")
    {
        Err(RuntimeError::Start(msg)) => msg,
        Err(e) => panic!("not a start error: {e}"),
        Ok(_) => panic!("started although it should not have"),
    }
}

fn image_spec(image: &str) -> BackendSpec {
    let mut spec = BackendSpec::from_command(vec![]);
    spec.executable.command = None;
    spec.executable.image = Some(image.to_string());
    spec
}

fn sh(script: &str) -> [&str; 3] {
    ["/bin/sh", "-c", script]
}

/// True once a TCP connection to `addr` is accepted.
async fn accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

async fn wait_accepts(addr: SocketAddr) -> Duration {
    let t0 = Instant::now();
    while !accepts(addr).await {
        assert!(
            t0.elapsed() < PATIENCE,
            "{addr} never accepted a connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut out = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    out
}

async fn wait_exit(exited: BoxFuture<'static, Exit>) -> Exit {
    tokio::time::timeout(PATIENCE, exited)
        .await
        .expect("the container exits in time")
}

async fn wait_for_log(path: &Path, needle: &str) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            t0.elapsed() < PATIENCE,
            "{} never contained {needle:?}; it has:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn container_of(started: &Started) -> String {
    started.handle.0["container"]
        .as_str()
        .expect("container id in the handle")
        .to_string()
}

async fn is_gone(docker: &Docker, container: &str) -> bool {
    matches!(
        docker.inspect_container(container, None).await,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        })
    )
}

#[tokio::test]
async fn a_missing_engine_is_reported_with_the_reason() {
    let err = DockerRuntime::connect(DockerOptions {
        host: Some("unix:///nonexistent/docker.sock".into()),
        ..DockerOptions::default()
    })
    .await
    .expect_err("no engine there");
    assert!(
        err.contains("no Docker engine socket at /nonexistent/docker.sock"),
        "{err}"
    );
    let err = DockerRuntime::connect(DockerOptions {
        host: Some("ssh://somewhere".into()),
        ..DockerOptions::default()
    })
    .await
    .expect_err("unsupported scheme");
    assert!(err.contains("not supported"), "{err}");
}

#[tokio::test]
async fn start_serve_term_exit_cleanup() {
    let Some(rt) = runtime().await else { return };
    let instance = Instance::new();
    let dir = tempfile::tempdir().expect("dir");
    let docker = engine().await;
    let mut spec = image_spec(IMAGE);
    spec.key = Some("doc-42".into());
    spec.executable.working_dir = Some("/www".into());
    // Listens only after a second: until then a connect must be refused (no proxy in between).
    let script =
        "echo \"out $GREETING on $PORT in $(pwd) as $SPAWNER_INSTANCE\"; echo to-stderr >&2; \
                  sleep 1; exec httpd -f -p \"$PORT\" -h /www";
    let l = launch(&instance, dir.path(), spec, Some(&sh(script)));
    let started = rt.start(&l).await.expect("start");
    let container = container_of(&started);
    let addr = started.address;
    assert!(
        !addr.ip().is_loopback() && !addr.ip().is_unspecified(),
        "{addr}"
    );
    assert_eq!(addr.port(), 8080);
    let note = started.note.clone().unwrap_or_default();
    assert!(note.contains(&format!("image {IMAGE} present")), "{note}");
    assert!(note.contains("network spawner-test"), "{note}");
    assert!(!accepts(addr).await, "accepted before the app listened");
    let waited = wait_accepts(addr).await;
    assert!(
        waited >= Duration::from_millis(500),
        "ready too early: {waited:?}"
    );
    let page = http_get(addr, "/index.html").await;
    assert!(page.contains("hello from spawner-test/busybox"), "{page}");

    let log = wait_for_log(&l.log_path, "to-stderr").await;
    assert!(
        log.contains(&format!("out hi there on 8080 in /www as {}", instance.0)),
        "{log}"
    );

    let info = docker
        .inspect_container(&container, None)
        .await
        .expect("inspect");
    let labels = info
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    assert_eq!(labels.get(LABEL_INSTANCE), Some(&instance.0));
    assert_eq!(
        labels.get(LABEL_BACKEND_ID).map(String::as_str),
        Some(l.id.as_str())
    );
    assert_eq!(labels.get(LABEL_KEY).map(String::as_str), Some("doc-42"));
    let hc = info.host_config.clone().unwrap_or_default();
    assert!(
        hc.port_bindings.unwrap_or_default().is_empty(),
        "nothing is published"
    );
    assert_eq!(hc.init, Some(true));

    rt.signal(&started.handle, Signal::Term)
        .await
        .expect("term");
    let exit = wait_exit(started.exited).await;
    // httpd ended by SIGTERM under the engine's init: 128 + 15.
    assert_eq!(exit, Exit::Code(143));
    assert!(!accepts(addr).await);
    rt.cleanup(&started.handle).await.expect("cleanup");
    assert!(is_gone(&docker, &container).await, "container removed");
    rt.cleanup(&started.handle)
        .await
        .expect("cleanup is idempotent");
    rt.signal(&started.handle, Signal::Kill)
        .await
        .expect("signalling a removed container is harmless");
}

#[tokio::test]
async fn the_image_entrypoint_and_exit_codes() {
    let Some(rt) = runtime().await else { return };
    let instance = Instance::new();
    let dir = tempfile::tempdir().expect("dir");
    // No command: the image's own CMD (httpd on $PORT) runs.
    let mut spec = image_spec(IMAGE);
    spec.executable.port = Some(9000);
    let l = launch(&instance, dir.path(), spec, None);
    let started = rt.start(&l).await.expect("start");
    assert_eq!(started.address.port(), 9000);
    wait_accepts(started.address).await;
    rt.signal(&started.handle, Signal::Kill)
        .await
        .expect("kill");
    assert_eq!(wait_exit(started.exited).await, Exit::Code(137));
    rt.cleanup(&started.handle).await.expect("cleanup");

    // An exit code of its own.
    let l = launch(
        &instance,
        dir.path(),
        image_spec(IMAGE),
        Some(&sh("sleep 0.5; exit 3")),
    );
    let started = rt.start(&l).await.expect("start");
    assert_eq!(wait_exit(started.exited).await, Exit::Code(3));
    rt.cleanup(&started.handle).await.expect("cleanup");

    // One that fails at once: a start error carrying the exit, its output in the log.
    let l = launch(
        &instance,
        dir.path(),
        image_spec(IMAGE),
        Some(&sh("echo bad config; exit 2")),
    );
    match rt.start(&l).await {
        Err(RuntimeError::Start(msg)) => assert!(msg.contains("exit code 2"), "{msg}"),
        Ok(started) => {
            // Slow engines may still see it running: then the exit says the same.
            assert_eq!(wait_exit(started.exited).await, Exit::Code(2));
            rt.cleanup(&started.handle).await.expect("cleanup");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
    wait_for_log(&l.log_path, "bad config").await;

    // A program that is not in the image.
    let l = launch(
        &instance,
        dir.path(),
        image_spec(IMAGE),
        Some(&["/bin/no-such-program"]),
    );
    // The engine's init runs and cannot execute it: exit code 127, the reason in the output.
    match rt.start(&l).await {
        Err(RuntimeError::Start(msg)) => {
            assert!(msg.contains("exit code 127"), "{msg}");
            assert!(msg.contains("/bin/no-such-program"), "{msg}");
        }
        Ok(started) => {
            assert_eq!(wait_exit(started.exited).await, Exit::Code(127));
            rt.cleanup(&started.handle).await.expect("cleanup");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
    wait_for_log(&l.log_path, "/bin/no-such-program").await;
    assert!(
        rt.list_owned(&instance.0).await.expect("list").is_empty(),
        "nothing left"
    );
}

#[tokio::test]
async fn memory_limit_is_applied_and_oom_is_reported() {
    let Some(rt) = runtime().await else { return };
    let instance = Instance::new();
    let dir = tempfile::tempdir().expect("dir");
    let docker = engine().await;
    let mut spec = image_spec(IMAGE);
    spec.resources = Some(Resources {
        memory_mb: Some(16),
        cpu_millis: Some(500),
    });
    // dd fills a 64 MiB buffer: four times the limit.
    let l = launch(
        &instance,
        dir.path(),
        spec,
        Some(&sh(
            "sleep 0.5; echo allocating; exec dd if=/dev/zero of=/dev/null bs=64M count=1",
        )),
    );
    let started = rt.start(&l).await.expect("start");
    let container = container_of(&started);
    let hc = docker
        .inspect_container(&container, None)
        .await
        .expect("inspect")
        .host_config
        .unwrap_or_default();
    assert_eq!(hc.memory, Some(16 * 1024 * 1024));
    assert_eq!(hc.memory_swap, Some(16 * 1024 * 1024));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    let exit = wait_exit(started.exited).await;
    assert!(matches!(exit, Exit::OutOfMemory(Some(_))), "{exit:?}");
    let log = std::fs::read_to_string(&l.log_path).unwrap_or_default();
    assert!(
        log.contains("allocating") && !log.contains("survived"),
        "{log}"
    );
    rt.cleanup(&started.handle).await.expect("cleanup");
    assert!(is_gone(&docker, &container).await);
}

#[tokio::test]
async fn pull_policies_never_always_if_not_present_and_unreachable_registries() {
    let Some(rt) = runtime().await else { return };
    let instance = Instance::new();
    let dir = tempfile::tempdir().expect("dir");

    let mut spec = image_spec("spawner-test/not-built:1");
    spec.executable.pull_policy = Some(PullPolicy::Never);
    let l = launch(&instance, dir.path(), spec, None);
    match rt.start(&l).await {
        Err(RuntimeError::Start(msg)) => {
            assert!(msg.contains("spawner-test/not-built:1"), "{msg}");
            assert!(msg.contains("pull_policy is Never"), "{msg}");
        }
        Err(e) => panic!("not a start error: {e}"),
        Ok(_) => panic!("started a missing image"),
    }

    // A present image is used as it is under Never.
    let mut spec = image_spec(IMAGE);
    spec.executable.pull_policy = Some(PullPolicy::Never);
    let l = launch(&instance, dir.path(), spec, None);
    let started = rt.start(&l).await.expect("present image under Never");
    rt.signal(&started.handle, Signal::Kill)
        .await
        .expect("kill");
    wait_exit(started.exited).await;
    rt.cleanup(&started.handle).await.expect("cleanup");

    // A pull from a registry nobody serves (port 1 on loopback) fails fast, with the reason.
    let mut spec = image_spec("127.0.0.1:1/spawner-test/missing:1");
    spec.executable.pull_policy = Some(PullPolicy::IfNotPresent);
    let l = launch(&instance, dir.path(), spec, None);
    let msg = start_error(&rt, &l).await;
    assert!(
        msg.contains("pulling image 127.0.0.1:1/spawner-test/missing:1 failed"),
        "{msg}"
    );

    // Always pulls even an image the engine has: tagged for a registry nobody serves, it
    // fails to start; IfNotPresent starts the same image as it is.
    let tagged = "127.0.0.1:1/spawner-test/present:always";
    let tag = std::process::Command::new("docker")
        .args(["tag", IMAGE, tagged])
        .status()
        .expect("docker tag");
    assert!(tag.success(), "docker tag {IMAGE} {tagged}");
    let mut spec = image_spec(tagged);
    spec.executable.pull_policy = Some(PullPolicy::Always);
    let l = launch(&instance, dir.path(), spec, None);
    let msg = start_error(&rt, &l).await;
    assert!(
        msg.contains(&format!("pulling image {tagged} failed")),
        "{msg}"
    );
    let mut spec = image_spec(tagged);
    spec.executable.pull_policy = Some(PullPolicy::IfNotPresent);
    let l = launch(&instance, dir.path(), spec, None);
    let started = rt
        .start(&l)
        .await
        .expect("present image under IfNotPresent");
    rt.signal(&started.handle, Signal::Kill)
        .await
        .expect("kill");
    wait_exit(started.exited).await;
    rt.cleanup(&started.handle).await.expect("cleanup");
    let _ = std::process::Command::new("docker")
        .args(["rmi", tagged])
        .output();

    // A pull secret that does not exist is the spec's problem, said before any pull.
    let secrets = tempfile::tempdir().expect("dir");
    let rt2 = runtime_with(DockerOptions {
        network: NETWORK.into(),
        pull_secrets_dir: Some(secrets.path().to_path_buf()),
        ..DockerOptions::default()
    })
    .await
    .expect("runtime");
    let mut spec = image_spec("127.0.0.1:1/spawner-test/missing:1");
    spec.executable.image_pull_secret = Some("regcred".into());
    let l = launch(&instance, dir.path(), spec, None);
    match rt2.start(&l).await {
        Err(RuntimeError::Start(msg)) => assert!(msg.contains("regcred"), "{msg}"),
        Err(e) => panic!("not a start error: {e}"),
        Ok(_) => panic!("started without its pull secret"),
    }
    assert!(rt.list_owned(&instance.0).await.expect("list").is_empty());
}

#[tokio::test]
async fn adopt_after_the_runtime_is_dropped_resumes_logs_without_duplicates() {
    let Some(rt) = runtime().await else { return };
    let instance = Instance::new();
    let dir = tempfile::tempdir().expect("dir");
    let docker = engine().await;
    let counter = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done";
    let l = launch(&instance, dir.path(), image_spec(IMAGE), Some(&sh(counter)));
    let started = rt.start(&l).await.expect("start");
    let container = container_of(&started);
    let handle = started.handle.clone();
    wait_for_log(&l.log_path, "line 5\n").await;

    // Spawner goes away: the runtime and the exit future with it. The container goes on.
    drop(started.exited);
    drop(rt);
    tokio::time::sleep(Duration::from_millis(700)).await;

    let rt = runtime().await.expect("runtime");
    let exited = rt
        .adopt(&l.id, &handle)
        .await
        .expect("adopt")
        .expect("still running");
    let before = std::fs::read_to_string(&l.log_path).unwrap_or_default();
    let last_before = before.lines().count();
    wait_for_log(&l.log_path, &format!("line {}\n", last_before + 10)).await;
    rt.signal(&handle, Signal::Term).await.expect("term");
    assert_eq!(wait_exit(exited).await, Exit::Code(143));

    let log = std::fs::read_to_string(&l.log_path).expect("log");
    let numbers: Vec<u64> = log
        .lines()
        .map(|line| {
            line.strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected log line {line:?}"))
        })
        .collect();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "every line exactly once, in order");

    // An exited container is adopted with the exit it ended with; a removed one is gone.
    let ended = rt
        .adopt(&l.id, &handle)
        .await
        .expect("adopt")
        .expect("its exit is known");
    assert_eq!(wait_exit(ended).await, Exit::Code(143));
    rt.cleanup(&handle).await.expect("cleanup");
    assert!(is_gone(&docker, &container).await);
    assert!(rt.adopt(&l.id, &handle).await.expect("adopt").is_none());
}

#[tokio::test]
async fn list_owned_finds_this_instance_s_containers_running_or_exited() {
    let Some(rt) = runtime().await else { return };
    let mine = Instance::new();
    let other = Instance::new();
    let dir = tempfile::tempdir().expect("dir");
    let forever = sh("exec sleep 600");
    let l_a = launch(&mine, dir.path(), image_spec(IMAGE), Some(&forever));
    let a_id = l_a.id.to_string();
    let a = rt.start(&l_a).await.expect("a");
    let l_b = launch(
        &mine,
        dir.path(),
        image_spec(IMAGE),
        Some(&sh("sleep 0.5; exit 0")),
    );
    let b_id = l_b.id.to_string();
    let b = rt.start(&l_b).await.expect("b");
    assert_eq!(wait_exit(b.exited).await, Exit::Code(0));
    let c = rt
        .start(&launch(
            &other,
            dir.path(),
            image_spec(IMAGE),
            Some(&forever),
        ))
        .await
        .expect("c");

    let owned = rt.list_owned(&mine.0).await.expect("list");
    let a_owned = owned
        .iter()
        .find(|o| o.handle == a.handle)
        .expect("a is listed with its handle");
    assert_eq!(a_owned.id, a_id);
    assert!(a_owned.describe.contains("running"), "{}", a_owned.describe);
    let b_owned = owned
        .iter()
        .find(|o| o.handle == b.handle)
        .expect("b is listed although it exited");
    assert_eq!(b_owned.id, b_id);
    assert!(b_owned.describe.contains("exited"), "{}", b_owned.describe);
    let mut found: Vec<&str> = owned.iter().map(|o| o.id.as_str()).collect();
    found.sort();
    let mut expected = vec![a_id.as_str(), b_id.as_str()];
    expected.sort();
    assert_eq!(found, expected, "this instance's, not the other's");
    let theirs = rt.list_owned(&other.0).await.expect("list");
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].handle, c.handle);

    for h in [a.handle, b.handle, c.handle] {
        rt.signal(&h, Signal::Kill).await.expect("kill");
        rt.cleanup(&h).await.expect("cleanup");
    }
    assert!(rt.list_owned(&mine.0).await.expect("list").is_empty());
    assert!(rt.list_owned(&other.0).await.expect("list").is_empty());
}

#[tokio::test]
async fn kept_containers_stay_stopped_after_cleanup() {
    let Some(rt) = runtime_with(DockerOptions {
        network: NETWORK.into(),
        keep_containers: true,
        ..DockerOptions::default()
    })
    .await
    else {
        return;
    };
    let instance = Instance::new();
    let dir = tempfile::tempdir().expect("dir");
    let docker = engine().await;
    let l = launch(
        &instance,
        dir.path(),
        image_spec(IMAGE),
        Some(&sh("exec sleep 600")),
    );
    let started = rt.start(&l).await.expect("start");
    let container = container_of(&started);
    rt.cleanup(&started.handle).await.expect("cleanup");
    assert_eq!(wait_exit(started.exited).await, Exit::Code(137));
    let state = docker
        .inspect_container(&container, None)
        .await
        .expect("kept")
        .state
        .unwrap_or_default();
    assert_eq!(state.running, Some(false));
    // The Instance guard removes it.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_containers_start_concurrently() {
    let Some(rt) = runtime().await else { return };
    let instance = Instance::new();
    let dir = tempfile::tempdir().expect("dir");
    let launches: Vec<Launch> = (0..20)
        .map(|_| launch(&instance, dir.path(), image_spec(IMAGE), None))
        .collect();
    let t0 = Instant::now();
    let results = join_all(launches.iter().map(|l| {
        let rt = rt.clone();
        async move {
            let started = rt.start(l).await?;
            wait_accepts(started.address).await;
            Ok::<_, RuntimeError>((started, t0.elapsed()))
        }
    }))
    .await;
    let mut started = Vec::new();
    let mut times = Vec::new();
    for r in results {
        let (s, t) = r.expect("every start succeeds");
        started.push(s);
        times.push(t);
    }
    times.sort();
    eprintln!(
        "20 concurrent starts: first accepting after {:?}, median {:?}, last {:?}",
        times[0], times[10], times[19]
    );
    let mut addrs: Vec<SocketAddr> = started.iter().map(|s| s.address).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20, "each container has its own address");
    for s in &started {
        let page = http_get(s.address, "/").await;
        assert!(page.contains("hello from spawner-test/busybox"), "{page}");
    }
    assert_eq!(rt.list_owned(&instance.0).await.expect("list").len(), 20);
    let exits = join_all(started.into_iter().map(|s| {
        let rt = rt.clone();
        async move {
            rt.signal(&s.handle, Signal::Term).await.expect("term");
            let exit = wait_exit(s.exited).await;
            rt.cleanup(&s.handle).await.expect("cleanup");
            exit
        }
    }))
    .await;
    assert!(exits.iter().all(|e| *e == Exit::Code(143)), "{exits:?}");
    assert!(rt.list_owned(&instance.0).await.expect("list").is_empty());
}
