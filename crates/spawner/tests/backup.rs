//! Backup and restore (docs/operations.md): `spawner backup DIR` copies a running server's
//! state; restoring it (stop, put the files back, start) brings back every backend it holds,
//! adopting those still running, and stops the processes of backends started after it,
//! which the restored database does not know.

mod common;

use common::*;
use spawner_core::State;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn backup(data: &Path, out: &Path) -> std::process::Output {
    Command::new(SPAWNER)
        .args(["backup"])
        .arg(out)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("spawner backup")
}

#[tokio::test]
async fn a_backup_taken_while_running_restores_its_backends_and_stops_later_ones() {
    let mut server = TestServer::start();
    let client = server.client();
    let kept = ready_example(&client, 300).await;
    let data = server.dir.path().join("data");
    let copy = server.dir.path().join("backup");

    let out = backup(&data, &copy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("To restore"));
    assert_eq!(mode(&copy), 0o700);
    assert_eq!(mode(&copy.join("spawner.db")), 0o600);
    assert_eq!(mode(&copy.join("token")), 0o600);
    // Into a directory that holds something: refused, nothing overwritten.
    let again = backup(&data, &copy);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));

    let later = ready_example(&client, 300).await;
    let kept_pid = processes_with_env(&format!("SPAWNER_BACKEND_ID={kept}"));
    assert!(server.stop().success());

    // The restore: the copy's files in place of the data directory's.
    for name in ["spawner.db", "spawner.db-wal", "spawner.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    for name in ["spawner.db", "token"] {
        std::fs::copy(copy.join(name), data.join(name)).expect("restore");
    }
    server.launch();
    let client = server.client();
    // The backend of the backup: the same process, Ready, routed.
    assert_eq!(
        client.status(&kept).await.expect("status").state,
        State::Ready
    );
    assert_eq!(
        processes_with_env(&format!("SPAWNER_BACKEND_ID={kept}")),
        kept_pid
    );
    let resp = server
        .http()
        .get(format!("{}request", server.backend_url(&kept)))
        .send()
        .await
        .expect("proxied");
    assert_eq!(resp.status(), 200);
    // The one started after the backup is unknown to the restored database: stopped.
    wait_gone(&later).await;
    assert!(client.get(&later).await.is_err());

    client.terminate(&kept, false).await.expect("terminate");
    wait_gone(&kept).await;
}

#[test]
fn a_backup_of_a_directory_without_a_database_says_what_to_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = backup(dir.path(), &dir.path().join("copy"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no database") && err.contains("--data-dir"),
        "{err}"
    );
    assert!(!dir.path().join("copy").exists());
}
