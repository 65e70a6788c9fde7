//! The lifecycle of backends, end to end: a real `spawner serve`, real processes, real
//! HTTP and WebSocket clients through the proxy.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use spawner_core::{BackendSpec, State};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn ws_connect(
    server: &TestServer,
    id: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://127.0.0.1:{}/p/{id}/ws", server.port);
    let (ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket through the proxy");
    assert_eq!(resp.status(), 101);
    ws
}

async fn next_text<S>(ws: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no text message: {other:?}"),
        }
    }
}

#[tokio::test]
async fn spawn_route_http_and_websocket_then_sweep_when_idle() {
    let server = TestServer::start();
    let client = server.client();
    let id = ready_example(&client, 1).await;
    assert!(backend_running(&id));

    // HTTP through the proxy: the prefix is stripped, the query kept, headers set.
    let body: serde_json::Value = server
        .http()
        .get(format!("{}/p/{id}/request?x=1", server.url()))
        .header("cookie", "session=abc")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["uri"], "/request?x=1");
    assert_eq!(
        body["headers"]["host"],
        format!("127.0.0.1:{}", server.port)
    );
    assert_eq!(body["headers"]["cookie"], "session=abc");
    assert_eq!(body["headers"]["x-forwarded-prefix"], format!("/p/{id}"));
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(body["env"]["SPAWNER_BACKEND_ID"], id.as_str());
    // Each backend is at the root of its own origin, whichever way this request came.
    assert_eq!(body["env"]["SPAWNER_BASE_PATH"], "/");

    // A request body of 8 MiB streams through whole.
    let big = vec![b'a'; 8 << 20];
    let resp: serde_json::Value = server
        .http()
        .post(format!("{}/p/{id}/request", server.url()))
        .body(big)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["body_bytes"], 8 << 20);

    // A WebSocket through the proxy: the shared counter and the echo.
    let mut ws = ws_connect(&server, &id).await;
    assert_eq!(next_text(&mut ws).await, "count 0");
    ws.send(Message::Text("inc".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "count 1");
    ws.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo: hello");
    let record = client.get(&id).await.unwrap();
    assert_eq!(record.live_connections, 1);
    // The closing handshake: the app answers the client's close frame with its own.
    let close = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.send(Message::Close(Some(close))).await.unwrap();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("an answer to the close frame within 5 s");
    assert!(
        matches!(&answer, Some(Ok(Message::Close(Some(f)))) if f.code == tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal),
        "{answer:?}"
    );
    drop(ws);

    // Idle: swept after its grace period, and its process is gone.
    let events = wait_for(&client, &id, |e| e.state.is_terminal()).await;
    let last = events.last().unwrap();
    assert_eq!(last.state, State::Swept, "{events:?}");
    let states: Vec<State> = client
        .get(&id)
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(
        states,
        [
            State::Submitted,
            State::Constructed,
            State::Scheduled,
            State::Running,
            State::Ready,
            State::Terminating,
            State::Swept
        ]
    );
    wait_gone(&id).await;
    let gone = server
        .http()
        .get(format!("{}/p/{id}/", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
}

#[tokio::test]
async fn not_swept_while_a_websocket_is_open() {
    let server = TestServer::start();
    let client = server.client();
    let id = ready_example(&client, 1).await;
    let mut ws = ws_connect(&server, &id).await;
    assert_eq!(next_text(&mut ws).await, "count 0");

    // Three grace periods with the socket open and silent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(client.status(&id).await.unwrap().state, State::Ready);
    ws.send(Message::Text("still here".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo: still here");

    drop(ws);
    wait_state(&client, &id, State::Swept).await;
    wait_gone(&id).await;
}

#[tokio::test]
async fn lifetime_limit_stops_a_busy_backend() {
    let server = TestServer::start();
    let client = server.client();
    let mut spec = example_app();
    spec.lifetime_limit_seconds = Some(2);
    let (resp, _) = client.spawn(&spec).await.unwrap();
    wait_state(&client, &resp.id, State::Ready).await;
    let mut ws = ws_connect(&server, &resp.id).await;
    assert_eq!(next_text(&mut ws).await, "count 0");
    let end = wait_for(&client, &resp.id, |e| e.state.is_terminal()).await;
    let last = end.last().unwrap();
    assert_eq!(last.state, State::Terminated);
    assert_eq!(last.reason.as_deref(), Some("lifetime limit"));
    wait_gone(&resp.id).await;
}

#[tokio::test]
async fn terminate_soft_and_hard() {
    let server = TestServer::start();
    let client = server.client();

    // Soft: SIGTERM, the app shuts down cleanly.
    let id = ready_example(&client, 300).await;
    client.terminate(&id, false).await.unwrap();
    let last = wait_state(&client, &id, State::Terminated).await;
    assert_eq!(last.reason.as_deref(), Some("terminate requested"));
    assert_eq!(last.exit_code, Some(0));
    wait_gone(&id).await;

    // Hard: SIGKILL at once.
    let id = ready_example(&client, 300).await;
    client.terminate(&id, true).await.unwrap();
    let last = wait_state(&client, &id, State::Terminated).await;
    assert_eq!(last.exit_code, None, "killed, no exit code: {last:?}");
    wait_gone(&id).await;

    // Soft on a process that ignores SIGTERM (and never becomes ready): killed after the
    // stop grace (2 s in these tests), and never Ready.
    let (resp, _) = client
        .spawn(&shell("trap '' TERM; sleep 600 & wait; sleep 600"))
        .await
        .unwrap();
    wait_state(&client, &resp.id, State::Running).await;
    client.terminate(&resp.id, false).await.unwrap();
    let events = wait_for(&client, &resp.id, |e| e.state.is_terminal()).await;
    assert_eq!(events.last().unwrap().state, State::Terminated);
    assert!(events.iter().all(|e| e.state != State::Ready));
    wait_gone(&resp.id).await;

    // Terminating an ended backend is a no-op 202.
    client.terminate(&resp.id, false).await.unwrap();
    assert_eq!(
        client.status(&resp.id).await.unwrap().state,
        State::Terminated
    );
}

#[tokio::test]
async fn exit_codes_and_start_failures() {
    let server = TestServer::start();
    let client = server.client();

    let (resp, _) = client.spawn(&shell("echo starting; exit 3")).await.unwrap();
    let last = wait_state(&client, &resp.id, State::Failed).await;
    assert_eq!(last.exit_code, Some(3));
    assert_eq!(
        last.reason.as_deref(),
        Some("exited with code 3 before it became ready")
    );
    assert_eq!(client.get(&resp.id).await.unwrap().exit_code, Some(3));
    assert!(file_contains(
        &server
            .data_dir()
            .join("logs")
            .join(format!("{}.log", resp.id)),
        "starting"
    ));

    let spec =
        spawner_core::BackendSpec::from_command(vec!["/nonexistent/spawner-test-program".into()]);
    let (resp, _) = client.spawn(&spec).await.unwrap();
    let last = wait_state(&client, &resp.id, State::Failed).await;
    let reason = last.reason.unwrap_or_default();
    assert!(
        reason.contains("command not found")
            && reason.contains("/nonexistent/spawner-test-program"),
        "{reason}"
    );

    let mut spec = example_app();
    spec.executable.working_dir = Some("/nonexistent-dir".into());
    let (resp, _) = client.spawn(&spec).await.unwrap();
    let last = wait_state(&client, &resp.id, State::Failed).await;
    assert!(last.reason.unwrap_or_default().contains("working_dir"));

    // Never listening: failed at its startup timeout, and stopped.
    let mut spec = shell("exec sleep 600");
    spec.startup_timeout_seconds = 1;
    let (resp, _) = client.spawn(&spec).await.unwrap();
    let last = wait_state(&client, &resp.id, State::Failed).await;
    assert_eq!(last.reason.as_deref(), Some("startup timeout"));
    wait_gone(&resp.id).await;

    // Exit 0 after Ready is Terminated.
    let mut spec = example_app();
    spec.executable.command = Some(vec![
        "sh".into(),
        "-c".into(),
        format!(
            "{} example-app & pid=$!; sleep 0.5; kill $pid; wait $pid; exit 0",
            SPAWNER
        ),
    ]);
    let (resp, _) = client.spawn(&spec).await.unwrap();
    let events = wait_for(&client, &resp.id, |e| e.state.is_terminal()).await;
    let last = events.last().unwrap();
    assert_eq!(
        (last.state, last.exit_code),
        (State::Terminated, Some(0)),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.state == State::Ready));
}

#[tokio::test]
async fn command_expansion_and_env() {
    let server = TestServer::start();
    let client = server.client();
    let mut spec = shell("echo \"base=$1 mode=$MODE port=$PORT\"; exec sleep 600");
    spec.executable
        .command
        .as_mut()
        .unwrap()
        .extend(["_".into(), "$(SPAWNER_BASE_PATH)".into()]);
    spec.executable.env.insert("MODE".into(), "collab".into());
    spec.executable.port = Some(45678);
    spec.startup_timeout_seconds = 2;
    let (resp, _) = client.spawn(&spec).await.unwrap();
    wait_state(&client, &resp.id, State::Failed).await;
    let log = std::fs::read_to_string(
        server
            .data_dir()
            .join("logs")
            .join(format!("{}.log", resp.id)),
    )
    .unwrap();
    assert!(log.contains("base=/ mode=collab port=45678"), "{log}");
}

#[tokio::test]
async fn spawner_as_the_program_is_the_server_s_own_binary() {
    // The server's PATH has no `spawner` on it (the tests run it by full path), as on a
    // fresh machine where it was started with `cargo run`.
    let server = TestServer::start();
    let client = server.client();
    let spec = BackendSpec::from_command(vec!["spawner".into(), "example-app".into()]);
    let (resp, _) = client.spawn(&spec).await.unwrap();
    wait_state(&client, &resp.id, State::Ready).await;
    let page = server
        .http()
        .get(format!("{}/p/{}/", server.url(), resp.id))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Spawner example"));
}

#[tokio::test]
async fn restart_after_kill9_adopts_running_backends() {
    let mut server = TestServer::start();
    let client = server.client();
    let keep = ready_example(&client, 3).await;
    let lost = ready_example(&client, 300).await;

    server.kill9();
    // The backends outlive Spawner.
    assert!(backend_running(&keep) && backend_running(&lost));
    // One of them dies while Spawner is down.
    for (pid, id) in processes_with_env(&format!("SPAWNER_BACKEND_ID={lost}")) {
        assert_eq!(id, lost);
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_gone(&lost).await;

    server.launch();
    let client = server.client();
    // The survivor is routable again, over HTTP and WebSocket.
    let resp = server
        .http()
        .get(format!("{}/p/{keep}/request", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let url = format!("ws://127.0.0.1:{}/p/{keep}/ws", server.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("count"));
    assert_eq!(client.get(&keep).await.unwrap().live_connections, 1);
    // The dead one is Failed, as lost.
    let st = client.status(&lost).await.unwrap();
    assert_eq!(st.state, State::Failed);
    assert!(st.reason.unwrap_or_default().starts_with("lost"));
    // And the survivor is still swept once idle.
    drop(ws);
    wait_state(&client, &keep, State::Swept).await;
    wait_gone(&keep).await;
    assert!(
        server.backend_pids().is_empty(),
        "orphans: {:?}",
        server.backend_pids()
    );
}

#[tokio::test]
async fn restart_while_stopping_finishes_the_stop() {
    let mut server = TestServer::start();
    let client = server.client();
    let (resp, _) = client
        .spawn(&shell("trap '' TERM; sleep 600 & wait; sleep 600"))
        .await
        .unwrap();
    wait_state(&client, &resp.id, State::Running).await;
    client.terminate(&resp.id, false).await.unwrap();
    wait_state(&client, &resp.id, State::Terminating).await;
    server.kill9();
    server.launch();
    let client = server.client();
    wait_state(&client, &resp.id, State::Terminated).await;
    wait_gone(&resp.id).await;
}

/// The state a crash between starting a process and recording it leaves behind: a
/// `Submitted` record, and a process of this installation nobody recorded. The restarted
/// server must stop the stray processes and start the backend, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_kills_unrecorded_processes_and_starts_unstarted_backends() {
    let mut server = TestServer::start();
    server.kill9();
    let store = spawner_server::store::Store::open(&server.data_dir().join("spawner.db")).unwrap();
    let instance = store
        .instance_id(|| panic!("the instance id exists"))
        .unwrap();
    let id = spawner_core::BackendId::generate().unwrap();
    store
        .insert(id.as_str(), &example_app(), "process")
        .await
        .unwrap();
    drop(store);
    let stray = |backend: &str| {
        std::process::Command::new("sleep")
            .arg("600")
            .env("SPAWNER_INSTANCE", &instance)
            .env("SPAWNER_BACKEND_ID", backend)
            .spawn()
            .unwrap()
    };
    let mut unrecorded = stray(id.as_str());
    let mut unknown = stray("zzzzzzzzzzzzzzzzzzzzzzzzzz");

    server.launch();
    let client = server.client();
    wait_state(&client, id.as_str(), State::Ready).await;
    for child in [&mut unrecorded, &mut unknown] {
        let status = tokio::task::block_in_place(|| child.wait()).unwrap();
        assert!(!status.success(), "the stray process was killed");
    }
    assert_eq!(
        processes_with_env(&format!("SPAWNER_BACKEND_ID={id}")).len(),
        1
    );
    let body = server
        .http()
        .get(format!("{}/p/{id}/request", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
}

/// `Ready` is shown before it is committed (docs/operations.md): a crash in between leaves
/// the backend listening and its record `Running` without the `Ready` event, which is made
/// here by taking the event out while the server is down. The restarted server watches again
/// and records `Ready` under a number the lost one never had, so that a client that saw the
/// lost one and resumes its stream after it still sees what comes next.
#[tokio::test]
async fn a_ready_lost_in_a_crash_is_recorded_again_under_a_new_number() {
    let mut server = TestServer::start();
    let client = server.client();
    let id = ready_example(&client, 300).await;
    let before = client.get(&id).await.unwrap();
    assert_eq!(before.events.len(), 5, "events: {:?}", before.events);

    server.kill9();
    let db = rusqlite::Connection::open(server.data_dir().join("spawner.db")).unwrap();
    db.execute(
        "DELETE FROM events WHERE backend_id = ?1 AND state = 'Ready'",
        [&id],
    )
    .unwrap();
    db.execute("UPDATE backends SET state = 'Running' WHERE id = ?1", [&id])
        .unwrap();
    drop(db);
    server.launch();
    let client = server.client();

    // A client that had seen the lost Ready (event 5) resumes after it.
    let mut resumed = Box::pin(client.status_stream(&id, Some(5)).await.unwrap());
    let (seq, ready) = resumed.next().await.unwrap().unwrap();
    assert_eq!((seq, ready.state), (6, State::Ready));
    let after = client.get(&id).await.unwrap();
    let events: Vec<_> = after
        .events
        .iter()
        .map(|e| (e.state, e.reason.as_deref()))
        .collect();
    assert_eq!(
        events[4..],
        [
            (
                State::Running,
                Some("Spawner restarted; watching again for it to listen")
            ),
            (State::Ready, None),
        ]
    );
    assert_eq!(after.state, State::Ready);
    let resp = server
        .http()
        .get(format!("{}/p/{id}/request", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
