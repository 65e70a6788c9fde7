//! The listen watch on real sockets: waits end when, and only when, something listens where
//! a connection would land.

use futures_util::FutureExt;
use spawner_proxy::readiness::{self, ListenWatch};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpSocket;

/// A port nothing listens on (bound, read, released).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// A port held for the test: bound, so that no other test can take it meanwhile, and not
/// listened on until the test says so (`listen`). `None` where the address family is missing.
fn reserve(ip: impl Into<IpAddr>) -> Option<(TcpSocket, u16)> {
    let ip = ip.into();
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .ok()?;
    socket.bind(SocketAddr::new(ip, 0)).ok()?;
    let port = socket.local_addr().ok()?.port();
    Some((socket, port))
}

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_wait_ends_once_the_port_is_listened_on_and_not_before() {
    let (socket, port) = reserve(Ipv4Addr::LOCALHOST).expect("a port");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let bound = Arc::new(AtomicBool::new(false));
    let flag = bound.clone();
    let listener = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        flag.store(true, Ordering::SeqCst);
        socket.listen(128).expect("listen later")
    });
    tokio::time::timeout(LIMIT, ListenWatch::own().listening(addr))
        .await
        .expect("seen listening");
    assert!(bound.load(Ordering::SeqCst), "ended before the listen");
    let listener = listener.await.expect("listener task");
    // Listening is what a connection needs: one is accepted now.
    std::net::TcpStream::connect(addr).expect("connects");
    drop(listener);
}

#[tokio::test]
async fn many_waits_share_the_watch_and_only_listened_ports_end() {
    let watch = ListenWatch::own();
    // Every other port is listened on later: on loopback, or on all interfaces; the others
    // stay bound, so that nothing else listens there meanwhile.
    let reserved: Vec<(TcpSocket, u16)> = (0..40)
        .map(|i| {
            let ip = if i % 4 == 2 {
                Ipv4Addr::UNSPECIFIED
            } else {
                Ipv4Addr::LOCALHOST
            };
            reserve(ip).expect("a port")
        })
        .collect();
    let ports: Vec<u16> = reserved.iter().map(|(_, p)| *p).collect();
    let mut waits: Vec<_> = ports
        .iter()
        .map(|&p| {
            let watch = watch.clone();
            Box::pin(async move {
                watch
                    .listening(SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
                    .await
            })
        })
        .collect();
    let mut listeners = Vec::new();
    let mut unlistened = Vec::new();
    for (i, (socket, _)) in reserved.into_iter().enumerate() {
        if i % 2 == 0 {
            listeners.push(socket.listen(128).expect("listen"));
        } else {
            unlistened.push(socket);
        }
    }
    for (i, wait) in waits.iter_mut().enumerate().filter(|(i, _)| i % 2 == 0) {
        tokio::time::timeout(LIMIT, wait)
            .await
            .unwrap_or_else(|_| panic!("wait {i} ends"));
    }
    // The others are still waiting, with nothing on their ports.
    for (i, wait) in waits.iter_mut().enumerate().filter(|(i, _)| i % 2 == 1) {
        assert!(wait.now_or_never().is_none(), "wait {i} ended unlistened");
    }
    drop((listeners, unlistened));
}

#[tokio::test]
async fn a_dual_stack_listener_serves_an_ipv4_wait() {
    let Some((socket, port)) = reserve(Ipv6Addr::UNSPECIFIED) else {
        eprintln!("no IPv6 here: nothing to check");
        return;
    };
    let listener = socket.listen(128).expect("listen");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Linux listens dual-stack on `::` unless told otherwise: the IPv4 connect lands there.
    if std::net::TcpStream::connect(addr).is_err() {
        eprintln!("`::` is IPv6-only here: nothing to check");
        return;
    }
    tokio::time::timeout(LIMIT, ListenWatch::own().listening(addr))
        .await
        .expect("seen listening");
    drop(listener);
}

#[tokio::test]
async fn an_abandoned_wait_leaves_the_watch_working() {
    let watch = ListenWatch::own();
    let (held, first) = reserve(Ipv4Addr::LOCALHOST).expect("a port");
    let abandoned = watch.listening(SocketAddr::from((Ipv4Addr::LOCALHOST, first)));
    assert!(tokio::time::timeout(Duration::from_millis(50), abandoned)
        .await
        .is_err());
    let (socket, port) = reserve(Ipv4Addr::LOCALHOST).expect("a port");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = socket.listen(128).expect("listen");
    tokio::time::timeout(LIMIT, watch.listening(addr))
        .await
        .expect("seen listening");
    tokio::time::timeout(LIMIT, readiness::accepting(addr))
        .await
        .expect("accepting too");
    drop((listener, held));
}

#[tokio::test]
async fn the_own_namespace_by_path_is_the_own_watch() {
    let (socket, port) = reserve(Ipv4Addr::LOCALHOST).expect("a port");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = socket.listen(128).expect("listen");
    let watch = ListenWatch::of_namespace(std::path::Path::new("/proc/self/ns/net"));
    tokio::time::timeout(LIMIT, watch.listening_or_accepting(addr))
        .await
        .expect("seen listening");
    // A namespace that is gone: nothing listens there, and the connect probe decides.
    let gone = ListenWatch::of_namespace(std::path::Path::new("/proc/0/ns/net"));
    tokio::time::timeout(LIMIT, gone.listening_or_accepting(addr))
        .await
        .expect("accepting");
    drop(listener);
}

/// A network namespace of its own (a container's, say): a listener there is seen by the
/// watch of that namespace, though nothing of this namespace could connect to it. Needs
/// `unshare` and the right to make and enter namespaces (root); says so and checks nothing
/// without.
#[tokio::test]
async fn a_listener_in_another_namespace_is_seen_by_that_namespace_s_watch() {
    let python = std::process::Command::new("python3")
        .args(["-c", ""])
        .status();
    if !python.is_ok_and(|s| s.success()) {
        eprintln!("no python3 here (the listener): nothing to check");
        return;
    }
    // A process in a new network namespace that listens on loopback there after a moment.
    let port = free_port();
    let script = format!(
        "ip link set lo up 2>/dev/null; sleep 0.3; exec python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\", {port})); s.listen(); time.sleep(60)'"
    );
    let child = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("no unshare here: nothing to check");
        return;
    };
    let ns = std::path::PathBuf::from(format!("/proc/{}/ns/net", child.id()));
    // unshare replaces itself with the shell once the namespace is made.
    std::thread::sleep(Duration::from_millis(100));
    let own = std::fs::read_link("/proc/self/ns/net").ok();
    if child.try_wait().ok().flatten().is_some() || std::fs::read_link(&ns).ok() == own {
        eprintln!("cannot make a network namespace here: nothing to check");
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let seen = tokio::time::timeout(LIMIT, ListenWatch::of_namespace(&ns).listening(addr)).await;
    // In this namespace nothing listens there: the watch saw the other one.
    let here = std::net::TcpStream::connect(addr).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    seen.expect("seen listening in its namespace");
    assert!(!here, "something listens on {addr} in this namespace too");
}
