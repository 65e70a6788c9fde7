//! The backends this server is running now, in memory: what the proxy looks up on every
//! request and the sweeper reads on every tick. SQLite stays the source of truth; this is
//! rebuilt from it at start-up.

use http::uri::Authority;
use spawner_core::access::AccessMode;
use spawner_core::lifecycle::{Observed, StopReason, Timing};
use spawner_core::time::Millis;
use spawner_core::{BackendSpec, Event, State};
use spawner_proxy::access::{BackendKey, Grants, MasterKey};
use spawner_proxy::Monitor;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::{watch, Notify};

mod signal;
use signal::Signals;
pub use signal::{Events, Follow, Stop};

/// A stop that was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequest {
    pub reason: StopReason,
    pub hard: bool,
}

/// One backend that is not terminal yet.
pub struct Live {
    pub id: String,
    pub spec: BackendSpec,
    pub timing: Timing,
    pub created_at: Millis,
    pub runtime: &'static str,
    state: AtomicU8,
    /// When it entered its state (a sleep's and a wake's clocks start here).
    since: AtomicI64,
    /// The sequence number of its newest event.
    seq: AtomicU64,
    /// Its next event and a stop asked for, waited on ([`Live::events`], [`Live::stop`]).
    signals: Signals,
    /// The reason of its newest event, for lists.
    reason: RwLock<Option<String>>,
    /// Events shown before they are committed (`Ready`, see [`crate::app::App::ready`]),
    /// until the writer has committed them: readers of events add them to the store's.
    unstored: Mutex<Vec<Event>>,
    /// Where the proxy reaches it: set at each start (a wake may change it), hidden while
    /// it goes to sleep.
    authority: RwLock<Option<Authority>>,
    /// The port it holds in the [`Registry`] (0: none), and the last one it was reached on
    /// (a wake asks for it again).
    held_port: AtomicU16,
    last_port: AtomicU16,
    /// Why a sleep was asked for ([`Live::request_sleep`]; 0: none), and whether a wake
    /// was: what its supervisor waits for besides a stop, nudged by `nudge`.
    sleep_asked: AtomicU8,
    wake_asked: AtomicBool,
    nudge: Notify,
    /// Nothing watches it (it sleeps): whoever asks it to stop or wake has it roused
    /// ([`Live::request_stop`]).
    dormant: AtomicBool,
    pub monitor: Arc<Monitor>,
    /// Kept from being swept until then (`keepalive`); [`NOT_BUSY`] if never asked.
    busy_until: AtomicI64,
    /// The secret of its `SPAWNER_KEEPALIVE_URL`, once made (at start) or read (adopted).
    keepalive_token: OnceLock<String>,
    /// Its key and who holds access, for a token-mode backend ([`Live::access`]).
    /// Boxed: most backends are open, and an open one (asleep, say) then costs a pointer.
    access: OnceLock<Box<LiveAccess>>,
}

/// A token-mode backend's key and grants: what the proxy checks a request against.
pub struct LiveAccess {
    pub key: BackendKey,
    pub grants: Grants,
}

const NOT_BUSY: i64 = i64::MIN;

impl Live {
    pub fn new(
        id: String,
        spec: BackendSpec,
        created_at: Millis,
        runtime: &'static str,
        state: State,
        seq: u64,
    ) -> Self {
        Live {
            id,
            timing: Timing::of(&spec),
            spec,
            created_at,
            runtime,
            state: AtomicU8::new(state as u8),
            since: AtomicI64::new(created_at),
            seq: AtomicU64::new(seq),
            signals: Signals::new(),
            reason: RwLock::new(None),
            unstored: Mutex::new(Vec::new()),
            authority: RwLock::new(None),
            held_port: AtomicU16::new(0),
            last_port: AtomicU16::new(0),
            sleep_asked: AtomicU8::new(0),
            wake_asked: AtomicBool::new(false),
            nudge: Notify::new(),
            dormant: AtomicBool::new(false),
            monitor: Arc::new(Monitor::new(created_at)),
            busy_until: AtomicI64::new(NOT_BUSY),
            keepalive_token: OnceLock::new(),
            access: OnceLock::new(),
        }
    }

    /// Its key and grants if it is a token-mode backend (its key derived from `master` at
    /// the first ask); `None` for an open one.
    pub fn access(&self, master: &MasterKey) -> Option<&LiveAccess> {
        (self.spec.access_mode() == AccessMode::Token).then(|| {
            &**self.access.get_or_init(|| {
                Box::new(LiveAccess {
                    key: master.backend_key(&self.id),
                    grants: Grants::default(),
                })
            })
        })
    }

    /// What the lifecycle rules judge it by, now.
    pub fn observed(&self) -> Observed {
        Observed {
            state: self.state(),
            created_at: self.created_at,
            live_connections: self.monitor.live(),
            last_activity: self.monitor.last_activity(),
            last_client_activity: self.monitor.last_client_activity(),
            busy_until: self.busy_until(),
            since: self.since.load(Ordering::Relaxed),
        }
    }

    /// Until when a `keepalive` keeps it from being swept, if one was ever asked for.
    pub fn busy_until(&self) -> Option<Millis> {
        Some(self.busy_until.load(Ordering::Relaxed)).filter(|&t| t != NOT_BUSY)
    }

    pub(crate) fn set_busy_until(&self, until: Millis) {
        self.busy_until.store(until, Ordering::Relaxed);
    }

    pub fn keepalive_token(&self) -> Option<&str> {
        self.keepalive_token.get().map(String::as_str)
    }

    pub(crate) fn set_keepalive_token(&self, token: String) {
        let _ = self.keepalive_token.set(token);
    }

    /// Sets when it entered its state, as the store recorded it (a backend adopted after a
    /// restart).
    pub(crate) fn set_since(&self, at: Millis) {
        self.since.store(at, Ordering::Relaxed);
    }

    pub fn state(&self) -> State {
        State::ALL[self.state.load(Ordering::Acquire) as usize]
    }

    pub(crate) fn set_state(&self, state: State, seq: u64, reason: Option<&str>) {
        if let Ok(mut r) = self.reason.write() {
            *r = reason.map(str::to_string);
        }
        if self.state() != state {
            self.since
                .store(spawner_core::time::now_millis(), Ordering::Relaxed);
        }
        self.state.store(state as u8, Ordering::Release);
        self.seq.store(seq, Ordering::Release);
        self.signals.event();
    }

    /// The sequence number of its newest event, stored or not.
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Follows its events (state changes, notes): [`Follow::changed`] resolves at the next.
    pub fn events(&self) -> Events<'_> {
        self.signals.follow_events()
    }

    /// Shows `event` (its newest) before it is committed: state, reason, status streams.
    pub(crate) fn announce(&self, event: &Event) {
        if let Ok(mut u) = self.unstored.lock() {
            u.push(event.clone());
        }
        self.set_state(event.state, event.seq, event.reason.as_deref());
    }

    /// The writer has committed (or given up on) the announced event `announced`, stored
    /// as `stored` (another sequence number when a write queued earlier took its number).
    pub(crate) fn settled(&self, announced: u64, stored: Option<u64>) {
        if let Ok(mut u) = self.unstored.lock() {
            u.retain(|e| e.seq != announced);
        }
        if let Some(stored) = stored {
            if self.seq.fetch_max(stored, Ordering::AcqRel) < stored {
                self.signals.event();
            }
        }
    }

    /// Announced events not committed yet with a sequence number above `after`.
    pub fn unstored_after(&self, after: u64) -> Vec<Event> {
        self.unstored
            .lock()
            .map(|u| u.iter().filter(|e| e.seq > after).cloned().collect())
            .unwrap_or_default()
    }

    /// The reason of its newest event, if it has one.
    pub fn reason(&self) -> Option<String> {
        self.reason.read().ok().and_then(|r| r.clone())
    }

    /// Sets the reason of its newest event as read from the store (after a restart).
    pub(crate) fn set_reason(&self, reason: Option<String>) {
        if let Ok(mut r) = self.reason.write() {
            *r = reason;
        }
    }

    /// Where the proxy reaches it now: set when it starts (or is adopted), none while it
    /// goes to sleep and sleeps.
    pub fn authority(&self) -> Option<Authority> {
        self.authority.read().ok().and_then(|a| a.clone())
    }

    /// Stops the proxy routing to it (it is going to sleep); its port stays held until
    /// [`Registry::release_port`].
    pub(crate) fn hide_authority(&self) {
        if let Ok(mut a) = self.authority.write() {
            *a = None;
        }
    }

    /// The port it was last reached on, if any (0 never).
    pub fn last_port(&self) -> Option<u16> {
        Some(self.last_port.load(Ordering::Relaxed)).filter(|&p| p != 0)
    }

    /// Asks its supervisor to put it to sleep for `reason` (idleness: [`StopReason::is_idle`]).
    pub fn request_sleep(&self, reason: StopReason) {
        let code = if reason == StopReason::IdleTimeout {
            2
        } else {
            1
        };
        if self.sleep_asked.swap(code, Ordering::AcqRel) == 0 {
            self.nudge.notify_waiters();
        }
    }

    /// Takes a sleep asked for, if any.
    pub(crate) fn take_sleep(&self) -> Option<StopReason> {
        match self.sleep_asked.swap(0, Ordering::AcqRel) {
            0 => None,
            2 => Some(StopReason::IdleTimeout),
            _ => Some(StopReason::Idle),
        }
    }

    /// Asks its supervisor to wake it (a no-op unless it sleeps: the supervisor forgets
    /// the ask when it next goes to sleep). `true` if it is dormant: the caller has it
    /// roused (`reconciler::wake` does both).
    #[must_use = "a dormant backend must be roused"]
    pub(crate) fn request_wake(&self) -> bool {
        if !self.wake_asked.swap(true, Ordering::SeqCst) {
            self.nudge.notify_waiters();
        }
        self.take_dormancy()
    }

    pub(crate) fn take_wake(&self) -> bool {
        self.wake_asked.swap(false, Ordering::SeqCst)
    }

    /// Resolves at the next [`Live::request_sleep`] or [`Live::request_wake`]; enable it
    /// before looking at the asks, so that none made in between is missed.
    pub(crate) fn nudged(&self) -> tokio::sync::futures::Notified<'_> {
        self.nudge.notified()
    }

    /// Asks the backend's supervisor to stop it. A later hard request escalates a soft one.
    /// `true` if it is dormant: the caller has it roused (`reconciler::stop` does both).
    #[must_use = "a dormant backend must be roused"]
    pub(crate) fn request_stop(&self, req: StopRequest) -> bool {
        self.signals.ask_stop(req);
        self.take_dormancy()
    }

    /// The stop asked for, if any.
    pub fn stop_asked(&self) -> Option<StopRequest> {
        self.signals.stop()
    }

    /// Follows the stop asked for: what its supervisor waits on.
    pub fn stop(&self) -> Stop<'_> {
        self.signals.follow_stop()
    }

    /// Leaves it with nothing watching it (it sleeps; no task waits for it, which is what
    /// makes a sleeping backend cheap). `true` if a stop or wake was asked meanwhile: then
    /// it is not dormant after all, and the caller goes on with it.
    ///
    /// Each ask is made before its asker looks at `dormant`, and `dormant` set before the
    /// asks are looked at here, with a sequentially consistent fence between on both sides:
    /// of an ask racing this, one side sees the other, and the swap lets only one go on.
    pub(crate) fn go_dormant(&self) -> bool {
        self.dormant.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let asked = self.signals.stop().is_some() || self.wake_asked.load(Ordering::SeqCst);
        asked && self.take_dormancy()
    }

    /// Whether it was dormant, no more from now on.
    fn take_dormancy(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.dormant.swap(false, Ordering::SeqCst)
    }
}

/// All live backends by id.
pub struct Registry {
    map: RwLock<HashMap<String, Arc<Live>>>,
    /// Counts changes of any backend (new, state, ended): list streams wait on it.
    changes: watch::Sender<u64>,
    /// The backends retired lately, numbered: a list stream learns from it of a backend that
    /// started and ended between two of its looks.
    retired: Mutex<Retired>,
    /// The ports live backends are reached on, with how many: a start allocating a port
    /// asks here instead of looking at every live backend (thousands wait in a storm).
    held: Mutex<HashMap<u16, usize>>,
}

/// The last [`RETIRED_KEPT`] retirements, in a ring allocated once: an entry holds its id
/// in place, so that a burst of backends ending leaves no small allocations behind it,
/// scattered among the memory the burst freed (where they would keep whole pages from
/// being given back to the system).
struct Retired {
    last: u64,
    ids: VecDeque<(u64, RetiredId)>,
}

impl Default for Retired {
    fn default() -> Self {
        Retired {
            last: 0,
            ids: VecDeque::with_capacity(RETIRED_KEPT + 1),
        }
    }
}

/// A backend id (at most 40 bytes, [`spawner_core::BackendId`]) held in place.
#[derive(Clone, Copy)]
struct RetiredId {
    len: u8,
    bytes: [u8; 40],
}

impl RetiredId {
    fn new(id: &str) -> Option<Self> {
        let mut bytes = [0u8; 40];
        bytes.get_mut(..id.len())?.copy_from_slice(id.as_bytes());
        Some(RetiredId {
            len: u8::try_from(id.len()).ok()?,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// How many retirements are remembered; list streams look at least once a second.
const RETIRED_KEPT: usize = 4096;

impl Default for Registry {
    fn default() -> Self {
        Registry {
            map: RwLock::default(),
            changes: watch::channel(0).0,
            retired: Mutex::default(),
            held: Mutex::default(),
        }
    }
}

impl Registry {
    /// Wakes the list streams.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.map.read().ok()?.get(id).cloned()
    }

    pub fn insert(&self, live: Arc<Live>) {
        if let Ok(mut m) = self.map.write() {
            m.insert(live.id.clone(), live);
        }
        self.changed();
    }

    pub fn remove(&self, id: &str) {
        let removed = self.map.write().ok().and_then(|mut m| m.remove(id));
        // Its end revokes every user's access.
        if let Some(access) = removed.as_ref().and_then(|l| l.access.get()) {
            access.grants.revoke_all();
        }
        if let Some(live) = removed {
            self.release_port(&live);
        }
        if let (Ok(mut r), Some(retired)) = (self.retired.lock(), RetiredId::new(id)) {
            r.last += 1;
            let n = r.last;
            if r.ids.len() == RETIRED_KEPT {
                r.ids.pop_front();
            }
            r.ids.push_back((n, retired));
        }
        self.changed();
    }

    /// The number of the last retirement, and the ids retired after `after`.
    pub fn retired_since(&self, after: u64) -> (u64, Vec<String>) {
        match self.retired.lock() {
            Ok(r) => (
                r.last,
                r.ids
                    .iter()
                    .filter(|(n, _)| *n > after)
                    .map(|(_, id)| id.as_str().to_string())
                    .collect(),
            ),
            Err(_) => (after, Vec::new()),
        }
    }

    pub fn all(&self) -> Vec<Arc<Live>> {
        self.map
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The ports live backends are reached on.
    pub fn ports(&self) -> HashSet<u16> {
        self.map
            .read()
            .map(|m| {
                m.values()
                    .filter_map(|l| l.authority().and_then(|a| a.port_u16()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a live backend is reached on `port`.
    pub fn holds_port(&self, port: u16) -> bool {
        self.held.lock().is_ok_and(|h| h.contains_key(&port))
    }

    /// Sets where a live backend of this registry is reached (at each start: a wake may
    /// change it), and holds its port until it is removed or goes to sleep.
    pub fn set_authority(&self, live: &Live, address: &str) {
        let Ok(authority) = Authority::try_from(address) else {
            return;
        };
        let port = authority.port_u16().unwrap_or(0);
        if live.held_port.load(Ordering::Relaxed) != port {
            self.let_go(live);
            if port != 0 {
                live.held_port.store(port, Ordering::Relaxed);
                live.last_port.store(port, Ordering::Relaxed);
                if let Ok(mut held) = self.held.lock() {
                    *held.entry(port).or_insert(0) += 1;
                }
            }
        }
        if let Ok(mut a) = live.authority.write() {
            *a = Some(authority);
        }
    }

    /// Lets go of the port a live backend held (it has stopped: asleep, or ended), and of
    /// where it was reached.
    pub fn release_port(&self, live: &Live) {
        live.hide_authority();
        self.let_go(live);
    }

    fn let_go(&self, live: &Live) {
        let port = live.held_port.swap(0, Ordering::Relaxed);
        if port == 0 {
            return;
        }
        if let Ok(mut held) = self.held.lock() {
            if let Some(n) = held.get_mut(&port) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.remove(&port);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retirements_are_numbered_and_read_after_a_mark() {
        let registry = Registry::default();
        let (mark, none) = registry.retired_since(u64::MAX);
        assert!(none.is_empty());
        for id in ["a", "b"] {
            let spec = BackendSpec::from_command(vec!["true".into()]);
            registry.insert(Arc::new(Live::new(
                id.into(),
                spec,
                0,
                "process",
                State::Submitted,
                1,
            )));
        }
        registry.remove("a");
        let (mark2, ids) = registry.retired_since(mark);
        assert_eq!(ids, vec!["a".to_string()]);
        registry.remove("b");
        assert_eq!(registry.retired_since(mark2).1, vec!["b".to_string()]);
        assert_eq!(registry.retired_since(mark).1.len(), 2);
        assert!(registry.is_empty());
    }

    #[test]
    fn a_live_backend_holds_its_port_until_it_is_removed() {
        let registry = Registry::default();
        let spec = BackendSpec::from_command(vec!["true".into()]);
        let live = Arc::new(Live::new(
            "a".into(),
            spec,
            0,
            "process",
            State::Submitted,
            1,
        ));
        registry.insert(live.clone());
        assert!(!registry.holds_port(20001));
        registry.set_authority(&live, "127.0.0.1:20001");
        assert!(registry.holds_port(20001));
        assert_eq!(registry.ports(), HashSet::from([20001]));
        // Asleep: the port is let go, and remembered for the wake.
        registry.release_port(&live);
        assert!(!registry.holds_port(20001));
        assert!(live.authority().is_none());
        assert_eq!(live.last_port(), Some(20001));
        // Woken elsewhere: the new port is held.
        registry.set_authority(&live, "127.0.0.1:20002");
        assert!(!registry.holds_port(20001));
        assert!(registry.holds_port(20002));
        registry.remove("a");
        assert!(!registry.holds_port(20002));
    }
}

#[cfg(test)]
mod footprint {
    use super::*;

    /// Bytes `malloc` counts as in use now.
    fn in_use() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.uordblks
    }

    /// What one sleeping backend of `spec` costs the server, on average over many: its
    /// [`Live`] in the registry (id, spec, monitor, signals, keepalive token, reason), as
    /// `malloc`'s count of bytes in use, so that what other tests allocate meanwhile is
    /// lost in the average.
    fn per_sleeping_backend(spec: &BackendSpec) -> usize {
        const N: usize = 20_000;
        let registry = Registry::default();
        let ids: Vec<String> = (0..N).map(|i| format!("{i:026}")).collect();
        let before = in_use();
        for id in &ids {
            let live = Arc::new(Live::new(
                id.clone(),
                spec.clone(),
                0,
                "process",
                State::Sleeping,
                9,
            ));
            live.set_keepalive_token("k".repeat(26));
            live.set_reason(Some("idle".into()));
            registry.insert(live);
        }
        let per = in_use().saturating_sub(before) / N;
        assert_eq!(registry.len(), N);
        per
    }

    /// A sleeping backend's record in the registry (what the proxy finds it by) stays under
    /// 1.5 KiB, within the 2 KiB a sleeping backend may cost the whole server. Its spec's
    /// own size comes on top (each non-empty map of `env` or `labels` is a B-tree node of
    /// about 550 bytes), so the spec here is a plain one: a command, a key. What the whole
    /// server spends per sleeping backend (this and the store's caches; it has no task) is
    /// the bench's to measure (`scripts/bench --phases sleep`).
    #[test]
    fn a_sleeping_backends_record_stays_under_1_5_kib() {
        let mut spec =
            BackendSpec::from_command(vec!["/usr/local/bin/spawner".into(), "example-app".into()]);
        spec.idle_action = spawner_core::spec::IdleAction::Sleep;
        spec.key = Some("document-4711".into());
        let per = per_sleeping_backend(&spec);
        println!(
            "a sleeping backend: {per} bytes (Live {} inline, Monitor {})",
            std::mem::size_of::<Live>(),
            std::mem::size_of::<Monitor>()
        );
        assert!(per < 1536, "{per} bytes per sleeping backend");
    }
}
