//! Giving freed memory back to the system.
//!
//! glibc's `malloc` keeps what the process frees in its arenas for reuse: whole pages of
//! free chunks stay resident between the chunks still in use, and after the first large
//! buffer is freed glibc raises its mmap threshold, so later large buffers (request bodies,
//! specs, list pages) come from the arenas too. A burst of large requests then left the
//! server at its peak long after they ended: bursts of 500 failed spawns of a 64 KiB spec
//! took a server from 30 MiB resident to 49, 54, 57 and 66 MiB, though what it had in use
//! (SQLite's page caches mostly) stayed near 10 MiB.
//! Two things give it back: [`configure`] keeps glibc's thresholds fixed, and [`run`], once
//! a second, looks at how much resident memory is not in use (the resident set less what
//! `malloc` counts as allocated) and, when that grew by [`STEP`] since it last gave memory
//! back, calls `malloc_trim(0)`, which returns every free page of every arena. With steady
//! traffic freed memory is reused and the figure does not grow, so nothing is trimmed.

use std::time::Duration;

/// How often the memory is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Free memory kept resident that is worth giving back; also a 32nd of what is in
/// use, so that a large server does not trim for small change.
const STEP: usize = 1 << 20;

/// Looks at the process's memory every [`EVERY`] and gives back what it freed; never ends.
pub async fn run() {
    let Some(mut floor) = free_resident() else {
        tracing::debug!("no malloc statistics here: freed memory is left to the allocator");
        return;
    };
    loop {
        tokio::time::sleep(EVERY).await;
        let Some(now) = free_resident() else { return };
        if now.free <= floor.free + STEP.max(now.in_use / 32) {
            // Memory reused since is not free any more: a later free counts from here.
            if now.free < floor.free {
                floor = now;
            }
            continue;
        }
        // It takes each arena's lock in turn, for a few milliseconds at most: off the
        // async workers.
        let trimmed = tokio::task::spawn_blocking(|| {
            trim();
            free_resident()
        })
        .await;
        let Ok(Some(after)) = trimmed else { return };
        tracing::debug!(
            resident_free_before = now.free,
            resident_free_after = after.free,
            in_use = after.in_use,
            "gave freed memory back to the system"
        );
        floor = after;
    }
}

/// Resident memory, and how much of it `malloc` counts as in use.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// Resident bytes that are not allocated (never below zero).
    free: usize,
    in_use: usize,
}

fn free_resident() -> Option<Usage> {
    let in_use = allocated()?;
    let resident = resident_bytes()?;
    Some(Usage {
        free: resident.saturating_sub(in_use),
        in_use,
    })
}

/// The resident set, from `/proc/self/statm` (its second field, in pages).
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system setting.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * usize::try_from(page).ok()?)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn allocated() -> Option<usize> {
    // SAFETY: mallinfo2 takes no arguments and returns a struct of counters.
    let info = unsafe { libc::mallinfo2() };
    // Chunks in use in the arenas, and the chunks mapped on their own (in use until freed).
    Some(info.uordblks + info.hblkhd)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn allocated() -> Option<usize> {
    None
}

/// Keeps glibc's thresholds where they start (128 KiB): a buffer that large is mapped on
/// its own and unmapped when freed, and an arena's free top over it is returned at once.
/// By default glibc raises both after the first large buffer is freed (up to 32 MiB and
/// 64 MiB), after which large buffers stay in the arenas, and an arena's top, which
/// `malloc_trim` does not return for the arenas of other threads than the main one, stays
/// resident.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn configure() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets the allocator's tunables.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn configure() {}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_is_counted_and_given_back() {
        let Some(before) = free_resident() else {
            return; // not glibc
        };
        // 64 MiB in 64 KiB pieces, touched, then freed but for every 16th, so that the
        // free pieces lie between pieces in use: what a trim at the top of a heap misses.
        let mut pieces: Vec<Vec<u8>> = (0..1024).map(|_| vec![1u8; 64 * 1024]).collect();
        let kept: Vec<Vec<u8>> = pieces
            .drain(..)
            .enumerate()
            .filter_map(|(i, p)| (i % 16 == 0).then_some(p))
            .collect();
        let freed = free_resident().expect("usage");
        assert!(
            freed.free > before.free + (32 << 20),
            "before {before:?}, after the frees {freed:?}"
        );
        trim();
        let trimmed = free_resident().expect("usage");
        assert!(
            trimmed.free + (32 << 20) < freed.free,
            "after the frees {freed:?}, after the trim {trimmed:?}"
        );
        drop(kept);
    }
}
