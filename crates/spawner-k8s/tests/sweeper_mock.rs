//! The sweeper against the mocked API server and a stand-in sidecar whose event stream
//! breaks: the sweeper connects again and keeps judging the backend.

mod support;

use spawner_k8s::sweeper::Verdict;
use spawner_proxy::sidecar::Report;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::Fake;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const NODE: &str = "node-a";

/// A stand-in sidecar: connection N gets an event stream whose reports say `requests: N`;
/// the first connection's stream ends after one report (as when a sidecar restarts), the
/// others go on with a report every 100 ms.
async fn breaking_sidecar() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                let ok = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                if stream.write_all(ok.as_bytes()).await.is_err() {
                    return;
                }
                let report = Report {
                    ready: false,
                    live_connections: 0,
                    seconds_since_active: 0.5,
                    requests: n as u64,
                };
                let event = format!(
                    "data: {}\n\n",
                    serde_json::to_string(&report).expect("json")
                );
                loop {
                    if stream.write_all(event.as_bytes()).await.is_err() {
                        return;
                    }
                    if n == 1 {
                        // The stream breaks.
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_broken_event_stream_is_followed_again() {
    let (fake, client) = Fake::start();
    let (addr, accepted) = breaking_sidecar().await;
    let status = support::running_status(NODE, &addr.ip().to_string(), addr.port());
    fake.put(
        "sessionlivedbackends",
        support::slab_json("b1", NODE, "app:1", 60, &status),
    );

    let (mut judged, stop, task) = support::start_sweeper(client, NODE);

    // Reports of the first stream, then, once it broke, of the second.
    let mut seen = Vec::new();
    let reconnected = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(j) = judged.recv().await {
            assert_eq!(j.name, "b1");
            assert_eq!(j.verdict, Verdict::Keep, "not ready: nothing to mark");
            seen.push(j.report.requests);
            if j.report.requests >= 2 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(reconnected, Ok(true), "reports seen: {seen:?}");
    assert_eq!(seen.first(), Some(&1), "{seen:?}");
    assert!(accepted.load(Ordering::SeqCst) >= 2);
    // Nothing to write for a backend that is not ready.
    let writes: Vec<String> = fake
        .take_short_log()
        .into_iter()
        .filter(|l| !l.starts_with("GET"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");

    let _ = stop.send(());
    task.await
        .expect("joins")
        .expect("the sweeper ends cleanly");
}
