//! A short scheduler slice for the proxy threads.
//!
//! Why: a proxy thread runs for a few microseconds per message and then waits, or, while it
//! busy polls on a crowded machine, yields its CPU (`crate::busy_poll`). Linux's scheduler
//! (EEVDF, 6.12 and later) lets a thread ask for a shorter slice than its default of a
//! millisecond or more; its deadlines then come sooner, so a proxy thread with a message to
//! relay runs before a thread that uses its CPU for long stretches, instead of after it.
//! Under full load this cut the proxy's p99 by a third (docs/benchmarks.md). The thread gets
//! no more CPU time than before: a shorter slice brings its turns forward, not its share.
//!
//! Older kernels accept the request and ignore it; where it is refused (a seccomp filter),
//! the thread keeps its default slice.

use std::time::Duration;

/// The shortest slice the kernel grants.
pub(crate) const SLICE: Duration = Duration::from_micros(100);

/// Asks for `SLICE` for the calling thread, keeping its policy and nice value.
pub(crate) fn request_short() {
    let mut attr = match get() {
        Ok(attr) => attr,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the proxy thread's scheduling attributes");
            return;
        }
    };
    // Only the fair classes (normal, batch, idle) have slices; a real-time policy set by
    // the operator is left as it is.
    let fair = [libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE];
    if !fair.iter().any(|&p| p as u32 == attr.sched_policy) {
        return;
    }
    attr.sched_runtime = SLICE.as_nanos() as u64;
    // SAFETY: `attr` is a valid `sched_attr` whose `size` says how much of it the kernel may
    // read; pid 0 is the calling thread.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    if set != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "the kernel refused a short slice for a proxy thread");
    }
}

/// The calling thread's scheduling attributes.
fn get() -> std::io::Result<libc::sched_attr> {
    let size = std::mem::size_of::<libc::sched_attr>() as u32;
    let mut attr = libc::sched_attr {
        size,
        sched_policy: 0,
        sched_flags: 0,
        sched_nice: 0,
        sched_priority: 0,
        sched_runtime: 0,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: `attr` is writable for `size` bytes; pid 0 is the calling thread.
    let got = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
    if got == 0 {
        Ok(attr)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_threads_nice_value() {
        std::thread::spawn(|| {
            // SAFETY: nice has no preconditions; it changes the calling thread only.
            unsafe { libc::nice(5) };
            let before = get().expect("sched_getattr");
            request_short();
            let after = get().expect("sched_getattr");
            assert_eq!(after.sched_nice, before.sched_nice);
            assert_eq!(after.sched_policy, before.sched_policy);
            // Kernels with custom slices report the slice; older ones report 0 throughout.
            if before.sched_runtime != 0 {
                assert_eq!(after.sched_runtime, SLICE.as_nanos() as u64);
            }
        })
        .join()
        .expect("the test thread");
    }
}
