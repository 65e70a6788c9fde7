//! The adversarial corpus against Spawner's proxy, through real sockets: a backend that
//! records every byte it receives, and a client that sends each crafted input and then a
//! probe on a new connection that shares the same pooled backend connections.

use spawner_adversary::backend::Arrival;
use spawner_adversary::{cases, proxies, run_case, verdict, Backend, Class};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_of_the_corpus_is_refused_or_forwarded_exactly() {
    let backend = Backend::start().await.expect("backend");
    let proxy = proxies::spawner(backend.addr).await.expect("proxy");
    let cases = cases();
    assert!(cases.len() >= 150, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    let mut classes: BTreeMap<String, usize> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let outcome = run_case(proxy, &backend.log, case, i).await;
        match verdict(case, &outcome) {
            Ok(class) => *classes.entry(format!("{class:?}")).or_default() += 1,
            Err(why) => failures.push(format!("[{}] {}: {why}", case.category, case.name)),
        }
    }
    println!("{} cases: {classes:?}", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The corpus exercises both outcomes in earnest.
    assert!(
        classes.get("Forwarded").copied().unwrap_or(0) >= 50,
        "{classes:?}"
    );
    assert!(
        classes.get("Refused").copied().unwrap_or(0) >= 50,
        "{classes:?}"
    );
}

/// The reported attack, spelled out: `Connection: content-length` with a request in the
/// body. The backend must see one POST whose body is those bytes, and the next client on
/// the same (single) proxy thread must get its own answer, never the smuggled one's.
#[tokio::test]
async fn connection_cannot_turn_a_body_into_a_second_request() {
    let backend = Backend::start().await.expect("backend");
    let proxy = proxies::spawner(backend.addr).await.expect("proxy");
    let smuggled = "GET /p/b1/slow-smuggled?smuggled=1 HTTP/1.1\r\nHost: evil\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    for listing in ["content-length", "keep-alive, Content-Length"] {
        let before = backend.log.len();
        let mut attacker = TcpStream::connect(proxy).await.expect("connect");
        let attack = format!(
            "POST /p/b1/x HTTP/1.1\r\nHost: a\r\nConnection: {listing}\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        );
        attacker.write_all(attack.as_bytes()).await.expect("send");
        let answer = read_answer(&mut attacker).await;
        assert!(
            answer.ends_with(&format!("POST /x {}", smuggled.len())),
            "{answer}"
        );

        let mut victim = TcpStream::connect(proxy).await.expect("connect");
        victim
            .write_all(b"GET /p/b1/mine HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("send");
        let answer = read_answer(&mut victim).await;
        assert!(
            answer.ends_with("GET /mine 0"),
            "{listing}: the victim got {answer:?}"
        );

        let arrivals = backend.log.since(before);
        let seen: Vec<(String, String, usize)> = arrivals
            .iter()
            .map(|a| match a {
                Arrival::Request { request, .. } => (
                    request.method.clone(),
                    request.target.clone(),
                    request.body.len(),
                ),
                Arrival::Invalid { why, .. } => panic!("the backend got something unframed: {why}"),
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("POST".to_string(), "/x".to_string(), smuggled.len()),
                ("GET".to_string(), "/mine".to_string(), 0)
            ],
            "{listing}"
        );
    }
}

/// One response's text, head and body, read until its Content-Length is in.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let spawner_adversary::wire::Parsed::Complete(resp, _) =
            spawner_adversary::wire::response(&buf, false, false)
        {
            return format!("{} {}", resp.status, String::from_utf8_lossy(&resp.body));
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn refusals_are_counted_as_such() {
    // The verdict's classes, on a case refused outright.
    let case = cases()
        .into_iter()
        .find(|c| c.name == "two Host headers")
        .expect("case");
    let outcome = spawner_adversary::run::Outcome {
        responses: Vec::new(),
        unreadable: None,
        cut_short: false,
        arrivals: Vec::new(),
        probe: Ok(()),
    };
    assert_eq!(verdict(&case, &outcome), Ok(Class::Refused));
}
