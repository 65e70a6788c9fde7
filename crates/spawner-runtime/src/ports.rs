//! Ports for process backends whose spec names none.
//!
//! Asking the kernel for a free port (bind to port 0, close, pass the number on) races: the
//! port is free only until the backend binds it, and the kernel hands the same ephemeral
//! ports to every other bind and outgoing connection meanwhile. With many backends starting
//! at once, two could be given one port; the first to bind it would then answer the other's
//! readiness probe and receive its users. So ports come from a range of their own, below the
//! kernel's ephemeral range, taken in turn by a cursor (concurrent allocations never get the
//! same one), skipping ports that a live backend holds or that something listens on now.

use crate::RuntimeError;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};

/// The default range: below Linux's default ephemeral range (32768–60999).
pub const DEFAULT_RANGE: RangeInclusive<u16> = 20000..=29999;

/// Hands out ports from a range, in turn.
#[derive(Debug)]
pub struct PortAllocator {
    first: u16,
    len: u32,
    next: AtomicU32,
}

impl Default for PortAllocator {
    fn default() -> Self {
        Self::new(DEFAULT_RANGE)
    }
}

impl PortAllocator {
    /// An allocator over `range`, starting at a random place in it, so that a restarted
    /// server does not start by offering the ports its predecessor just used.
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let (first, last) = (*range.start(), (*range.end()).max(*range.start()));
        let len = u32::from(last - first) + 1;
        let mut seed = [0u8; 4];
        let start = match getrandom::fill(&mut seed) {
            Ok(()) => u32::from_le_bytes(seed) % len,
            Err(_) => 0,
        };
        PortAllocator {
            first,
            len,
            next: AtomicU32::new(start),
        }
    }

    /// The next port of the range that `held` does not claim (ports of live backends) and
    /// that nothing listens on now, on loopback or on all interfaces.
    pub fn allocate(&self, held: impl Fn(u16) -> bool) -> Result<u16, RuntimeError> {
        for _ in 0..self.len {
            let offset = self.next.fetch_add(1, Ordering::Relaxed) % self.len;
            // `offset < len <= 65536 - first`, so the sum fits in a u16.
            let Ok(port) = u16::try_from(u32::from(self.first) + offset) else {
                continue;
            };
            if !held(port) && bindable(port) {
                return Ok(port);
            }
        }
        Err(RuntimeError::Start(format!(
            "no free port left in {}-{}: every one is held by a backend or in use; \
             give executable.port, or stop some backends",
            self.first,
            u32::from(self.first) + self.len - 1
        )))
    }
}

impl PortAllocator {
    /// `port` again (a backend woken from its sleep asks for the one it had), if no live
    /// backend holds it and nothing listens on it now.
    pub fn reuse(&self, port: u16, held: impl Fn(u16) -> bool) -> Option<u16> {
        (!held(port) && bindable(port)).then_some(port)
    }
}

/// Whether a listener could bind `port` now: binding loopback fails both when another
/// socket listens on loopback and when one listens on all interfaces.
fn bindable(port: u16) -> bool {
    probe(port).is_ok()
}

/// Binds `port` on loopback the way servers do (`SO_REUSEADDR`) and never listens.
///
/// Invariant: the probe is never a listener, and does not keep a listener from binding.
/// A process start on another thread copies this process's descriptors into its child until
/// the child execs, so the probe can outlive its drop by a moment. Were it listening (as a
/// `TcpListener` is), that copy would be seen by the listen watch as the listen of whichever
/// backend waits on this port, and would make the backend given the port fail to bind it
/// (both seen in a storm of spawns). A socket only bound with `SO_REUSEADDR` is in neither
/// way: the listen table holds listeners only, and Linux lets a second `SO_REUSEADDR` socket
/// bind and listen beside one that does not listen. Its bind still fails where it should:
/// when something listens on the port, on loopback or on all interfaces.
fn probe(port: u16) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::TcpListener;
    use std::sync::Arc;

    #[test]
    fn concurrent_allocations_never_share_a_port() {
        let ports = Arc::new(PortAllocator::new(41000..=41999));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let ports = ports.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .map(|_| ports.allocate(|_| false).expect("a port"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<u16> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        let distinct: HashSet<u16> = all.iter().copied().collect();
        assert_eq!(distinct.len(), 800, "a port was handed out twice");
        assert!(all.iter().all(|p| (41000..=41999).contains(p)));
    }

    #[test]
    fn skips_held_ports_and_ports_something_listens_on() {
        // `busy` is listened on (all interfaces); `free` was free a moment ago; every other
        // port of the range between them is held by a backend.
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        let busy = listener.local_addr().expect("addr").port();
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let ports = PortAllocator::new(busy.min(free)..=busy.max(free));
        for _ in 0..3 {
            let port = ports.allocate(|p| p != busy && p != free).expect("a port");
            assert_eq!(port, free, "busy {busy}");
        }
    }

    #[test]
    fn the_probe_is_not_a_listener_and_does_not_stand_in_a_backend_s_way() {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        // Held as a child between its fork and its exec would hold a copy of it.
        let held = probe(port).expect("a free port is bindable");
        let refused = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        assert!(
            refused.is_err(),
            "the probe accepted a connection: it listens"
        );
        let backend = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .expect("the backend given the port binds it while the probe lives");
        // And once the backend listens, the port is no longer offered.
        assert!(probe(port).is_err(), "a listened-on port looked free");
        drop((held, backend));
    }

    #[test]
    fn a_full_range_is_a_clear_error() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let busy = listener.local_addr().expect("addr").port();
        let err = PortAllocator::new(busy..=busy)
            .allocate(|_| false)
            .expect_err("no port");
        assert!(err.to_string().contains("executable.port"), "{err}");
    }
}
