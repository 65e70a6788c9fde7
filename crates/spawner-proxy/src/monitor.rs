//! The connection monitor of one backend: live connections and the time of last activity.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Counters of one backend, shared by every request in flight to it. Lock-free: the proxy
/// touches it on every request.
#[derive(Debug)]
pub struct Monitor {
    live: AtomicU64,
    last_activity: AtomicI64,
    requests: AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Monitor {
    /// A monitor whose idle clock starts at `since_ms` (when the backend became Ready, or
    /// when a restarted Spawner adopted it).
    pub fn new(since_ms: i64) -> Self {
        Monitor {
            live: AtomicU64::new(0),
            last_activity: AtomicI64::new(since_ms),
            requests: AtomicU64::new(0),
        }
    }

    /// Connections open now: upgraded connections and requests whose response is not done.
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Milliseconds since the epoch of the last request start or connection end.
    pub fn last_activity(&self) -> i64 {
        self.last_activity.load(Ordering::Relaxed)
    }

    /// Requests forwarded since the monitor was made.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Counts activity now without opening a connection; also restarts the idle clock
    /// (e.g. when a backend becomes Ready).
    pub fn touch(&self) {
        self.last_activity.fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// Counts one connection until the guard is dropped.
    pub fn open(self: &Arc<Self>) -> ActivityGuard {
        self.live.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
        ActivityGuard(self.clone())
    }
}

/// One live connection or request; the end of it is activity too.
#[derive(Debug)]
pub struct ActivityGuard(Arc<Monitor>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_and_touch() {
        let m = Arc::new(Monitor::new(0));
        assert_eq!(m.live(), 0);
        let a = m.open();
        let b = m.open();
        assert_eq!(m.live(), 2);
        assert!(m.last_activity() > 0);
        drop(a);
        drop(b);
        assert_eq!(m.live(), 0);
        assert_eq!(m.requests(), 2);
    }
}
