//! The connection monitor of one backend: live connections, the time of last activity and
//! of the last thing a client sent, and the going-away signal its upgraded connections
//! (WebSockets) follow.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Counters of one backend, shared by every request in flight to it. Lock-free on the
/// path of a request: the proxy touches it on every one. The going-away signal is touched
/// only when a tunnel opens or closes, and when the backend is stopped. Small (no channels
/// of its own, one `Notify`): a server holds one for each of thousands of sleeping backends.
#[derive(Debug)]
pub struct Monitor {
    live: AtomicU64,
    last_activity: AtomicI64,
    requests: AtomicU64,
    /// The last request start or client→backend data through a tunnel.
    last_client: AtomicI64,
    /// Set once the backend is being stopped: why, as the close frame's reason.
    going_away: Mutex<Option<&'static str>>,
    /// Open tunnels that have not yet told their client that the backend goes away.
    untold: AtomicU64,
    /// Wakes the waits for `going_away` and `untold` (each looks again at what it waits for).
    changed: Notify,
    /// Open tunnels (upgraded connections), told or not.
    tunnels: AtomicU64,
}

pub(crate) fn now_ms() -> i64 {
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
            last_client: AtomicI64::new(since_ms),
            going_away: Mutex::new(None),
            untold: AtomicU64::new(0),
            changed: Notify::new(),
            tunnels: AtomicU64::new(0),
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

    /// Milliseconds since the epoch of the last request start or data a client sent through
    /// an upgraded connection (for WebSockets: the last data frame's header; pings, pongs
    /// and closes do not count).
    pub fn last_client_activity(&self) -> i64 {
        self.last_client.load(Ordering::Relaxed)
    }

    /// Counts activity now without opening a connection; also restarts the idle clock and
    /// the client clock (e.g. when a backend becomes Ready, or is adopted).
    pub fn touch(&self) {
        let now = now_ms();
        self.last_activity.fetch_max(now, Ordering::Relaxed);
        self.last_client.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts something a client sent through a tunnel. Coarse: the clock is read and the
    /// time stored only when the last store is older than [`CLIENT_CLOCK_STEP`] ms old by a
    /// cheap relaxed load, so that a busy tunnel costs a load per read.
    pub(crate) fn client_sent(&self, now: i64) {
        if now - self.last_client.load(Ordering::Relaxed) >= CLIENT_CLOCK_STEP {
            self.last_client.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Counts one connection until the guard is dropped.
    pub fn open(self: &Arc<Self>) -> ActivityGuard {
        self.live.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
        ActivityGuard(self.clone())
    }

    /// Requests in flight: live connections that are not upgraded ones.
    pub fn requests_in_flight(&self) -> u64 {
        self.live()
            .saturating_sub(self.tunnels.load(Ordering::Relaxed))
    }

    /// Tells every open tunnel (and any opened from now on) that the backend goes away, for
    /// `reason` (the first reason given stays); [`Monitor::all_told`] says when they have.
    pub fn going_away(&self, reason: &'static str) {
        let first = match self.going_away.lock() {
            Ok(mut r) if r.is_none() => {
                *r = Some(reason);
                true
            }
            _ => false,
        };
        if first {
            self.changed.notify_waiters();
        }
    }

    /// The backend runs again after a sleep: tunnels opened from now on are not told it
    /// goes away (those of its last run have all ended with it).
    pub fn back(&self) {
        if let Ok(mut r) = self.going_away.lock() {
            *r = None;
        }
    }

    /// Why the backend goes away, once [`Monitor::going_away`] was called.
    fn reason(&self) -> Option<&'static str> {
        self.going_away.lock().ok().and_then(|r| *r)
    }

    /// Whether [`Monitor::going_away`] was called: the backend is being stopped.
    pub fn is_going_away(&self) -> bool {
        self.reason().is_some()
    }

    /// Resolves once every open tunnel has sent its client a close frame (code 1001, at a
    /// frame boundary) or ended. Callers bound the wait: a backend stalled in the middle of
    /// a frame holds its tunnel's close back.
    pub async fn all_told(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Enabled before the count is read: a tunnel telling in between is not missed.
            changed.as_mut().enable();
            if self.untold.load(Ordering::Acquire) == 0 {
                return;
            }
            changed.await;
        }
    }

    /// [`Monitor::going_away`], then [`Monitor::all_told`].
    pub async fn go_away(&self, reason: &'static str) {
        self.going_away(reason);
        self.all_told().await;
    }

    /// The going-away link of a tunnel that opens now; counted as a tunnel until dropped.
    pub(crate) fn tunnel(self: &Arc<Self>) -> GoingAway {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
        self.untold.fetch_add(1, Ordering::AcqRel);
        GoingAway {
            monitor: self.clone(),
            untold: true,
        }
    }
}

/// How stale the client clock may be: the idle timeout is counted in seconds.
pub const CLIENT_CLOCK_STEP: i64 = 100;

/// A tunnel's link to the going-away signal of its backend.
#[derive(Debug)]
pub(crate) struct GoingAway {
    monitor: Arc<Monitor>,
    untold: bool,
}

impl GoingAway {
    /// The monitor the tunnel reports client activity to.
    pub(crate) fn monitor_arc(&self) -> Arc<Monitor> {
        self.monitor.clone()
    }

    /// Resolves with the reason once the backend goes away (at once if it already does).
    /// Cancel-safe: tunnels ask again on every turn of their loop.
    pub(crate) async fn signalled(&mut self) -> &'static str {
        loop {
            let changed = self.monitor.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(reason) = self.monitor.reason() {
                return reason;
            }
            changed.await;
        }
    }

    /// The tunnel has told its client (or has nothing to tell).
    pub(crate) fn told(&mut self) {
        if std::mem::take(&mut self.untold) {
            let before =
                self.monitor
                    .untold
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        Some(n.saturating_sub(1))
                    });
            if before == Ok(1) {
                self.monitor.changed.notify_waiters();
            }
        }
    }
}

impl Drop for GoingAway {
    fn drop(&mut self) {
        self.told();
        self.monitor.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One live connection or request; the end of it is activity too (not the client's).
#[derive(Debug)]
pub struct ActivityGuard(Arc<Monitor>);

impl ActivityGuard {
    pub(crate) fn monitor(&self) -> &Arc<Monitor> {
        &self.0
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.last_activity.fetch_max(now_ms(), Ordering::Relaxed);
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

    #[tokio::test]
    async fn going_away_waits_for_every_tunnel_to_tell() {
        let m = Arc::new(Monitor::new(0));
        let mut a = m.tunnel();
        let b = m.tunnel();
        let waiting = {
            let m = m.clone();
            tokio::spawn(async move { m.go_away("swept").await })
        };
        assert_eq!(a.signalled().await, "swept");
        a.told();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(b);
        waiting
            .await
            .expect("go_away resolves once every tunnel told");
        // A tunnel opened afterwards learns at once.
        assert_eq!(m.tunnel().signalled().await, "swept");
    }
}
