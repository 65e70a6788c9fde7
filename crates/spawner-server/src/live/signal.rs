//! What waits on one backend, and how it is told: its supervisor waits for a stop to be
//! asked; status streams, held requests, claims, wakes and terminates wait for its next
//! event.
//!
//! Held in its record, with one [`Notify`] for both, because every backend has them, asleep
//! ones included: a tokio `watch` channel allocates about 360 bytes apart (eight `Notify`s,
//! for receivers spread over many tasks), and there were two per backend. Waiters here are
//! few and each looks again at what it waits for when woken.

use super::StopRequest;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

pub(crate) struct Signals {
    /// Counts the changes of its newest event (whose number may repeat, or settle on
    /// another once stored): a waiter compares it with what it saw.
    events: AtomicU32,
    /// The stop asked for; it only goes from none to soft to hard.
    stop: Mutex<Option<StopRequest>>,
    changed: Notify,
}

impl Signals {
    pub(crate) fn new() -> Self {
        Signals {
            events: AtomicU32::new(0),
            stop: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    /// Tells the waiters for its next event that there is one.
    pub(crate) fn event(&self) {
        self.events.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    fn events(&self) -> u32 {
        self.events.load(Ordering::Acquire)
    }

    pub(crate) fn stop(&self) -> Option<StopRequest> {
        self.stop.lock().map(|s| *s).unwrap_or(None)
    }

    /// Asks for a stop (a later hard one escalates a soft one): whether it changed what
    /// was asked.
    pub(crate) fn ask_stop(&self, req: StopRequest) -> bool {
        let changed = match self.stop.lock() {
            Ok(mut cur) => match &mut *cur {
                None => {
                    *cur = Some(req);
                    true
                }
                Some(c) if req.hard && !c.hard => {
                    c.hard = true;
                    true
                }
                Some(_) => false,
            },
            Err(_) => false,
        };
        if changed {
            self.changed.notify_waiters();
        }
        changed
    }

    /// Resolves once `done` holds, looked at now and after each change.
    async fn until(&self, mut done: impl FnMut(&Self) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Enabled before looking: a change in between is not missed.
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }
}

/// One waiter's view of a value of [`Signals`]: what it saw last, so that
/// [`Follow::changed`] resolves only for what it has not seen.
pub struct Follow<'a, T> {
    signals: &'a Signals,
    read: fn(&Signals) -> T,
    seen: T,
}

impl<'a, T: Copy + PartialEq> Follow<'a, T> {
    fn new(signals: &'a Signals, read: fn(&Signals) -> T) -> Self {
        Follow {
            seen: read(signals),
            signals,
            read,
        }
    }

    /// The value now, without marking it seen.
    pub fn borrow(&self) -> T {
        (self.read)(self.signals)
    }

    /// The value now, marked seen.
    pub fn borrow_and_update(&mut self) -> T {
        self.seen = self.borrow();
        self.seen
    }

    /// Resolves once the value is other than the one seen last, and marks it seen.
    pub async fn changed(&mut self) {
        let (read, seen) = (self.read, self.seen);
        self.signals.until(|s| read(s) != seen).await;
        self.borrow_and_update();
    }

    /// Resolves once `done` holds for the value, and marks it seen.
    pub async fn wait_for(&mut self, done: impl Fn(T) -> bool) -> T {
        let read = self.read;
        self.signals.until(|s| done(read(s))).await;
        self.borrow_and_update()
    }
}

/// Follows a backend's events: [`Follow::changed`] resolves at its next one.
pub type Events<'a> = Follow<'a, u32>;
/// Follows the stop asked of a backend.
pub type Stop<'a> = Follow<'a, Option<StopRequest>>;

impl Signals {
    pub(crate) fn follow_events(&self) -> Events<'_> {
        Follow::new(self, Signals::events)
    }

    pub(crate) fn follow_stop(&self) -> Stop<'_> {
        Follow::new(self, Signals::stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spawner_core::lifecycle::StopReason;
    use std::time::Duration;

    fn soft() -> StopRequest {
        StopRequest {
            reason: StopReason::Terminate,
            hard: false,
        }
    }

    #[test]
    fn a_stop_only_escalates() {
        let s = Signals::new();
        assert!(s.ask_stop(soft()));
        assert!(!s.ask_stop(soft()));
        assert!(s.ask_stop(StopRequest {
            hard: true,
            ..soft()
        }));
        assert!(!s.ask_stop(soft()));
        assert_eq!(s.stop().map(|r| r.hard), Some(true));
    }

    #[tokio::test]
    async fn a_follower_wakes_for_what_it_has_not_seen() {
        let s = std::sync::Arc::new(Signals::new());
        let mut events = s.follow_events();
        // Seen: nothing to wait for.
        let early = tokio::time::timeout(Duration::from_millis(20), events.changed()).await;
        assert!(early.is_err());
        // Changed before the wait began: not missed.
        s.event();
        tokio::time::timeout(Duration::from_secs(1), events.changed())
            .await
            .expect("an event before the wait");
        // Changed while waiting.
        let s2 = s.clone();
        let waker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            s2.event();
        });
        tokio::time::timeout(Duration::from_secs(1), events.changed())
            .await
            .expect("an event during the wait");
        waker.await.expect("waker");
        // A stop is not an event, and an event is not a stop.
        let mut stop = s.follow_stop();
        s.event();
        let early = tokio::time::timeout(Duration::from_millis(20), stop.changed()).await;
        assert!(early.is_err());
        s.ask_stop(soft());
        let asked = tokio::time::timeout(Duration::from_secs(1), stop.wait_for(|r| r.is_some()))
            .await
            .expect("the stop");
        assert_eq!(asked, Some(soft()));
    }
}
