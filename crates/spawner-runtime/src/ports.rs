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
use std::net::{Ipv4Addr, TcpListener};
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

/// Whether a listener could bind `port` now: binding loopback fails both when another
/// socket listens on loopback and when one listens on all interfaces.
fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
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
    fn a_full_range_is_a_clear_error() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let busy = listener.local_addr().expect("addr").port();
        let err = PortAllocator::new(busy..=busy)
            .allocate(|_| false)
            .expect_err("no port");
        assert!(err.to_string().contains("executable.port"), "{err}");
    }
}
