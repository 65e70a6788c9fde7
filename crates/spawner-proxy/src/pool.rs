//! Idle keep-alive connections to backends, by backend `host:port`.
//!
//! Spawner's own rather than a general-purpose client's: one lock and one short-key lookup
//! per request, and a connection goes back as soon as the response it carried was read in
//! full.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections kept per backend, and for how long: less than the time after which a
/// Spawner proxy closes a quiet client connection (`forward::CLIENT_IDLE_TIMEOUT`), so the
/// Kubernetes router never sends a request on a connection that its sidecar is closing.
const MAX_IDLE_PER_BACKEND: usize = 1024;
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// A connection that can tell, without waiting, that its backend closed it.
pub trait Reusable {
    fn is_closed(&self) -> bool;
}

/// One backend's idle connections, each with the time it went idle; the most recently
/// used last.
type IdleList<C> = VecDeque<(C, Instant)>;

struct Idle<C> {
    by_backend: HashMap<String, IdleList<C>, BuildHasherDefault<Fnv>>,
    puts: u64,
}

pub struct Pool<C> {
    idle: Mutex<Idle<C>>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Pool {
            idle: Mutex::new(Idle {
                by_backend: HashMap::default(),
                puts: 0,
            }),
        }
    }
}

impl<C> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl<C: Reusable> Pool<C> {
    /// The most recently idled open connection to `key`, if any.
    pub fn take(&self, key: &str) -> Option<C> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.by_backend.get_mut(key)?;
        while let Some((conn, since)) = list.pop_back() {
            if !conn.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    pub fn put(&self, key: &str, conn: C) {
        if conn.is_closed() {
            return;
        }
        let now = Instant::now();
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.puts += 1;
        if idle.puts % 4096 == 0 {
            // Now and then, forget backends whose connections all closed (ended backends).
            idle.by_backend.retain(|_, list| {
                list.retain(|(c, since)| {
                    !c.is_closed() && now.duration_since(*since) < IDLE_TIMEOUT
                });
                !list.is_empty()
            });
        }
        if !idle.by_backend.contains_key(key) {
            idle.by_backend.insert(key.to_string(), VecDeque::new());
        }
        let Some(list) = idle.by_backend.get_mut(key) else {
            return;
        };
        while list
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
        {
            list.pop_front();
        }
        if list.len() < MAX_IDLE_PER_BACKEND {
            list.push_back((conn, now));
        }
    }
}

/// FNV-1a: the pool's keys are short `host:port` strings of our own making, so a fast
/// hash is enough.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Conn(u32, Cell<bool>);
    impl Reusable for Conn {
        fn is_closed(&self) -> bool {
            self.1.get()
        }
    }

    #[test]
    fn hands_out_the_newest_open_connection() {
        let pool = Pool::default();
        pool.put("a:1", Conn(1, Cell::new(false)));
        pool.put("a:1", Conn(2, Cell::new(false)));
        pool.put("b:1", Conn(3, Cell::new(false)));
        let two = pool.take("a:1").expect("a connection");
        assert_eq!(two.0, 2);
        two.1.set(true);
        pool.put("a:1", two);
        assert_eq!(pool.take("a:1").map(|c| c.0), Some(1));
        assert!(pool.take("a:1").is_none());
        assert!(pool.take("c:1").is_none());
    }
}
