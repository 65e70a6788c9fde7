//! Upgrades (docs/operations.md, "Upgrades"): a database written by the previous release
//! opens in this one, its records, events, keys and pools intact, and is brought forward; a
//! database of a newer schema is refused at start, naming what to do, and left as it was.
//!
//! `fixtures/spawner-c04ade8.db` was written by `spawner serve` built at c04ade8 (the last
//! release before the schema number was kept): a backend that failed (exit 3), one ended by a
//! terminate, one Ready with key `doc-1` and label `owner=alice` whose process was then
//! killed with the server stopped, and a pool `warm`.

mod common;

use common::*;
use spawner_core::State;
use std::path::Path;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/spawner-c04ade8.db"
);
const FAILED: &str = "o6rjrsoc2227napj3k6i3oyabk";
const KEYED: &str = "psym6fq2bmrqq3g3n3tgerlxui";
const TERMINATED: &str = "qbswi6jxcck5r2dabhsst5np7d";

fn previous_release(data: &Path) {
    std::fs::copy(FIXTURE, data.join("spawner.db")).expect("copy the fixture");
}

fn schema_of(data: &Path) -> Option<String> {
    let db = rusqlite::Connection::open(data.join("spawner.db")).expect("open");
    db.query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| {
        r.get(0)
    })
    .ok()
}

#[tokio::test]
async fn a_database_of_the_previous_release_opens_with_everything_in_it() {
    let mut server = TestServer::start_on(previous_release);
    let client = server.client();

    let failed = client.get(FAILED).await.expect("the failed backend");
    assert_eq!(failed.state, State::Failed);
    assert_eq!(failed.exit_code, Some(3));
    let ended = client
        .get(TERMINATED)
        .await
        .expect("the terminated backend");
    assert_eq!(ended.state, State::Terminated);
    assert!(ended.events.len() >= 4, "{:?}", ended.events);
    // Ready when the old server stopped, its process gone since: lost, as after any restart.
    let keyed = client.get(KEYED).await.expect("the keyed backend");
    assert_eq!(keyed.state, State::Failed, "{:?}", keyed.events);
    assert!(keyed.reason.unwrap_or_default().starts_with("lost"));
    assert_eq!(keyed.spec.key.as_deref(), Some("doc-1"));
    assert_eq!(
        keyed.spec.labels.get("owner").map(String::as_str),
        Some("alice")
    );
    let listed = client.list(&[]).await.expect("list");
    assert_eq!(listed.len(), 3, "{listed:?}");
    let owned = client
        .list(&[("label", "owner=alice")])
        .await
        .expect("a filtered list, from the index made at open");
    assert_eq!(owned.len(), 1);
    let pool = server
        .api()
        .get(format!("{}/v1/pools/warm", server.url()))
        .send()
        .await
        .expect("the pool");
    assert_eq!(pool.status(), 200);

    // And it works as a database of this release: the key is free again, a spawn goes on.
    let mut spec = example_app();
    spec.key = Some("doc-1".into());
    let (fresh, _) = client.spawn(&spec).await.expect("spawn");
    assert_ne!(fresh.id, KEYED);
    wait_state(&client, &fresh.id, State::Ready).await;
    let data = server.dir.path().join("data");
    assert_eq!(
        schema_of(&data).as_deref(),
        Some(spawner_server::store::SCHEMA_VERSION.to_string().as_str())
    );
    assert!(server.log().contains("database schema brought forward"));
    client.terminate(&fresh.id, false).await.expect("terminate");
    wait_gone(&fresh.id).await;
    server.stop();
}

#[test]
fn a_database_of_a_newer_schema_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    previous_release(&data);
    {
        let db = rusqlite::Connection::open(data.join("spawner.db")).expect("open");
        db.execute(
            "INSERT INTO meta (name, value) VALUES ('schema', '999')",
            [],
        )
        .expect("a newer schema");
    }
    let before = std::fs::read(data.join("spawner.db")).expect("read");
    let out = std::process::Command::new(SPAWNER)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("newer Spawner (schema 999") && err.contains("restore a backup"),
        "{err}"
    );
    assert_eq!(schema_of(&data).as_deref(), Some("999"));
    let db = rusqlite::Connection::open(data.join("spawner.db")).expect("open");
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM backends", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 3);
    drop(db);
    assert!(
        std::fs::read(data.join("spawner.db")).expect("read") == before,
        "the refused database was changed"
    );
}
