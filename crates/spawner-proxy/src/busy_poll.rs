//! Busy polling: after a proxy thread relayed something, it keeps polling its event loop for
//! a short window before it sleeps, so that the next message of a conversation finds it
//! awake.
//!
//! Why: waking a sleeping thread costs 10–20 µs on a virtual machine, and a WebSocket message
//! and its answer cross the proxy twice each. A thread that stays on its CPU also keeps that
//! CPU out of its idle state, which the client and the backend then wake on sooner. HAProxy's
//! `busy-polling` and the kernel's halt-polling do the same.
//!
//! Spinning must not take a CPU from a thread that wants it. While the other threads that want
//! to run (the kernel's count in `/proc/loadavg`, smoothed over the poller's looks) outnumber
//! the CPUs, the poller yields its CPU to the kernel at every turn (`sched_yield`): a waiting
//! thread runs at once, and the poller only gets the time that nobody else wants. It keeps
//! polling rather than sleeping, because on a loaded machine the next message is due soon, and
//! a thread that never sleeps is never woken: no wake-up for the client or the backend to pay
//! in their writes, and no switch back in for the proxy.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Spin iterations between two looks at the machine's load (a system call).
const CHECK_EVERY: u32 = 32;

thread_local! {
    /// Things relayed by this thread: a changing count is activity.
    static ACTIVITY: Cell<u64> = const { Cell::new(0) };
    /// The poller of this thread, while it waits for activity.
    static PARKED: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

/// Notes that this thread relayed something. Cheap: a thread-local count, and a wake-up of
/// the poller only if it went to sleep.
pub(crate) fn note_activity() {
    ACTIVITY.with(|a| a.set(a.get().wrapping_add(1)));
    if let Some(poller) = PARKED.with(|p| p.borrow_mut().take()) {
        poller.wake();
    }
}

fn activity() -> u64 {
    ACTIVITY.with(Cell::get)
}

/// Runs on a proxy thread (a single-threaded runtime) for as long as the runtime does:
/// keeps the event loop polled until `window` has passed without activity.
pub(crate) async fn run(window: Duration) {
    let mut load = Load::open();
    loop {
        let seen = activity();
        poll_fn(|cx| {
            if activity() != seen {
                Poll::Ready(())
            } else {
                PARKED.with(|p| *p.borrow_mut() = Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        spin(window, &mut load).await;
    }
}

/// Yields to the runtime, which then polls the event loop without waiting, until `window`
/// passed without activity; while the machine is crowded, yields the CPU at every turn too.
async fn spin(window: Duration, load: &mut Load) {
    let mut seen = activity();
    let mut last = Instant::now();
    let mut turns = 0u32;
    let mut crowded = false;
    loop {
        if turns.is_multiple_of(CHECK_EVERY) {
            crowded = load.crowded();
        }
        turns = turns.wrapping_add(1);
        if crowded {
            // `sched_yield`: returns at once when no other thread waits for this CPU.
            std::thread::yield_now();
        }
        tokio::task::yield_now().await;
        let now = Instant::now();
        let current = activity();
        if current != seen {
            (seen, last) = (current, now);
        } else if now.duration_since(last) >= window {
            return;
        }
    }
}

/// The machine's runnable threads against its CPUs.
struct Load {
    /// `/proc/loadavg`, kept open: one read per look. `None` where it cannot be read, and
    /// then the machine counts as crowded (the poller always yields its CPU).
    file: Option<File>,
    cpus: f64,
    /// Other threads runnable, a moving average over the looks (an instant's count swings
    /// with every wake-up).
    others: Option<f64>,
}

impl Load {
    fn open() -> Self {
        // The machine's CPUs, as `/proc/loadavg` counts threads over the whole machine.
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
        Load {
            file: File::open("/proc/loadavg").ok(),
            cpus: cpus as f64,
            others: None,
        }
    }

    /// Whether other threads want more CPUs than there are, on average.
    fn crowded(&mut self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut text = [0u8; 128];
        let Some(runnable) = self
            .file
            .as_ref()
            .and_then(|f| f.read_at(&mut text, 0).ok())
            .and_then(|n| runnable(&text[..n]))
        else {
            return true;
        };
        // This thread is running while it looks.
        let now = runnable.saturating_sub(1) as f64;
        let others = match self.others {
            Some(avg) => avg + (now - avg) / 8.0,
            None => now,
        };
        self.others = Some(others);
        others > self.cpus
    }
}

/// The runnable count of `/proc/loadavg` (`0.52 0.58 0.59 3/1046 12345`: 3).
fn runnable(loadavg: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(loadavg).ok()?;
    let field = text.split_ascii_whitespace().nth(3)?;
    field.split_once('/')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_counts() {
        assert_eq!(runnable(b"0.52 0.58 0.59 3/1046 12345\n"), Some(3));
        assert_eq!(runnable(b"0.52 0.58"), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polls_after_activity_and_sleeps_once_quiet() {
        let poller = tokio::spawn(run(Duration::from_millis(20)));
        tokio::task::yield_now().await;
        assert!(
            PARKED.with(|p| p.borrow().is_some()),
            "asleep before any activity"
        );
        note_activity();
        tokio::task::yield_now().await;
        assert!(
            PARKED.with(|p| p.borrow().is_none()),
            "awake after activity"
        );
        // Quiet for longer than the window (crowded or not): asleep again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while PARKED.with(|p| p.borrow().is_none()) {
            assert!(
                Instant::now() < deadline,
                "still polling long after the window"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        poller.abort();
    }
}
