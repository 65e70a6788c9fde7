//! `deploy/systemd/spawner.service` (docs/operations.md, "Running as a service"): the unit is
//! valid for systemd, and what its `KillMode=process` relies on holds: a stop of the service
//! (SIGTERM to `spawner serve` alone) leaves the backends running, and the next start adopts
//! them, so an upgrade loses nobody's session.

mod common;

use common::*;
use spawner_core::State;
use std::path::Path;
use std::process::Command;

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd/spawner.service");
    std::fs::read_to_string(path).expect("deploy/systemd/spawner.service")
}

#[test]
fn the_unit_file_is_valid_for_systemd() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "this test needs systemd-analyze (Debian's systemd package; scripts/test installs it)"
    );
    let text = unit();
    assert!(
        text.contains("KillMode=process"),
        "backends must outlive a stop"
    );
    assert!(text.contains("StateDirectoryMode=0700"));
    let exec = "ExecStart=/usr/local/bin/spawner serve";
    assert!(text.contains(exec), "the unit runs {exec}");
    // Checked with the binary this test was built with where the unit says /usr/local/bin.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spawner.service");
    std::fs::write(&file, text.replace("/usr/local/bin/spawner", SPAWNER)).expect("write");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&file)
        .output()
        .expect("systemd-analyze verify");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[tokio::test]
async fn a_stop_of_the_service_leaves_backends_running_and_the_next_start_adopts_them() {
    let mut server = TestServer::start();
    let client = server.client();
    let id = ready_example(&client, 300).await;
    let before = processes_with_env(&format!("SPAWNER_BACKEND_ID={id}"));
    assert_eq!(before.len(), 1, "{before:?}");

    let status = server.stop();
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
    assert!(backend_running(&id), "the backend outlives the stop");

    server.launch();
    let client = server.client();
    assert_eq!(
        client.status(&id).await.expect("status").state,
        State::Ready
    );
    let resp = server
        .http()
        .get(format!("{}request", server.backend_url(&id)))
        .send()
        .await
        .expect("through the proxy");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        processes_with_env(&format!("SPAWNER_BACKEND_ID={id}")),
        before,
        "the same process, adopted"
    );
    client.terminate(&id, false).await.expect("terminate");
    wait_gone(&id).await;
}
