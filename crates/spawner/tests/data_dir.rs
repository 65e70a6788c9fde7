//! The data directory (docs/operations.md, "State and data"): one `spawner serve` at a time,
//! the lock released however the server ends, and everything in it private to its user.

mod common;

use common::*;
use spawner_core::State;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

/// `spawner serve` on `dir`, expected to refuse: its stderr.
fn refused_serve(dir: &Path) -> String {
    let out = std::process::Command::new(SPAWNER)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("SPAWNER_TOKEN")
        .output()
        .expect("run serve");
    assert!(!out.status.success(), "a second server started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Where the open descriptors of process `pid` point.
fn open_files(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_second_server_on_the_same_directory_refuses_and_the_first_keeps_working() {
    let mut server = TestServer::start();
    let client = server.client();
    let id = ready_example(&client, 300).await;
    let before = client.get(&id).await.expect("record").events.len();

    let err = refused_serve(&server.data_dir());
    let pid = server.pid().expect("pid");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", server.port)), "{err}");
    assert!(err.contains("--data-dir"), "{err}");

    // The first is untouched: nothing adopted its backend, and it still serves it.
    let record = client.get(&id).await.expect("record");
    assert_eq!(record.events.len(), before, "{:?}", record.events);
    let resp = server
        .http()
        .get(format!("{}/p/{id}/request", server.url()))
        .send()
        .await
        .expect("proxied");
    assert_eq!(resp.status(), 200);
    // No backend holds the lock (nor any file of the data directory).
    let data = server.data_dir().display().to_string();
    for (backend, _) in server.backend_pids() {
        let held: Vec<String> = open_files(backend)
            .into_iter()
            .filter(|f| f.starts_with(&data) && !f.ends_with(".log"))
            .collect();
        assert!(held.is_empty(), "backend {backend} holds {held:?}");
    }

    // Killed, the server leaves the lock to the kernel: a restart takes it and adopts.
    server.kill9();
    server.launch();
    let client = server.client();
    assert_eq!(client.get(&id).await.expect("record").state, State::Ready);
    let err = refused_serve(&server.data_dir());
    assert!(
        err.contains(&format!("pid {}", server.pid().expect("pid"))),
        "{err}"
    );
    client.terminate(&id, true).await.expect("terminate");
    wait_gone(&id).await;
}

#[tokio::test]
async fn the_directory_and_what_spawner_writes_in_it_are_private() {
    // What a usual umask would leave readable by every local user.
    // SAFETY: umask only sets this process's file creation mask (the server inherits it).
    unsafe {
        libc::umask(0o022);
    }
    let mut server = TestServer::start();
    let client = server.client();
    let id = ready_example(&client, 300).await;
    let data = server.data_dir();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("logs")), 0o700);
    for file in [
        "spawner.db".to_string(),
        "spawner.db-wal".to_string(),
        "spawner.db-shm".to_string(),
        "spawner.lock".to_string(),
        format!("logs/{id}.log"),
    ] {
        assert_eq!(mode(&data.join(&file)), 0o600, "{file}");
    }

    // A directory left readable (an older Spawner, a hand-made one) is tightened at start.
    server.kill9();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let log = data.join(format!("logs/{id}.log"));
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(
        data.join("spawner.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    server.launch();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(&data.join("spawner.db")), 0o600);
    assert!(
        server.log().contains("0755 is now 0700"),
        "{}",
        server.log()
    );
    client.terminate(&id, true).await.expect("terminate");
    wait_gone(&id).await;
}
