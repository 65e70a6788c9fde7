//! The lifecycle rules the reconciler and the sweepers apply: given what was asked (the
//! spec's timings) and what is observed (state, connections, activity), what to do next.
//! Both modes call these functions; their I/O lives elsewhere.

use crate::state::State;
use crate::time::Millis;

/// Why a backend is being stopped. Decides the terminal state it ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Idle for its whole grace period: ends `Swept`.
    Idle,
    /// A terminate call: ends `Terminated`.
    Terminate,
    /// Alive longer than `lifetime_limit_seconds`: ends `Terminated`.
    LifetimeLimit,
    /// Not Ready within `startup_timeout_seconds`: ends `Failed`.
    StartupTimeout,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Idle => "idle",
            StopReason::Terminate => "terminate requested",
            StopReason::LifetimeLimit => "lifetime limit",
            StopReason::StartupTimeout => "startup timeout",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            StopReason::Idle,
            StopReason::Terminate,
            StopReason::LifetimeLimit,
            StopReason::StartupTimeout,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// The terminal state a backend stopped for this reason ends in.
    pub fn final_state(self) -> State {
        match self {
            StopReason::Idle => State::Swept,
            StopReason::Terminate | StopReason::LifetimeLimit => State::Terminated,
            StopReason::StartupTimeout => State::Failed,
        }
    }
}

/// The timing part of a spec, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub grace_ms: Millis,
    pub lifetime_limit_ms: Option<Millis>,
    pub startup_timeout_ms: Millis,
}

impl Timing {
    pub fn of(spec: &crate::spec::BackendSpec) -> Self {
        Timing {
            grace_ms: secs(spec.grace_period_seconds),
            lifetime_limit_ms: spec.lifetime_limit_seconds.map(secs),
            startup_timeout_ms: secs(spec.startup_timeout_seconds),
        }
    }
}

fn secs(s: u64) -> Millis {
    Millis::try_from(s.saturating_mul(1000)).unwrap_or(Millis::MAX)
}

/// What the reconciler observes of a live backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub state: State,
    /// When it was submitted: the lifetime and startup clocks start here.
    pub created_at: Millis,
    /// Open connections through the proxy (upgraded connections and in-flight requests).
    pub live_connections: u64,
    /// The last request or connection end; at least the time it became Ready.
    pub last_activity: Millis,
}

/// The sweeper's verdict for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Leave it; look again no later than `recheck_at` (if any deadline is pending).
    Keep {
        recheck_at: Option<Millis>,
    },
    Stop(StopReason),
}

/// Decides whether a backend must be stopped now. Terminal and terminating backends are
/// left alone: their stop is already under way.
pub fn decide(timing: &Timing, obs: &Observed, now: Millis) -> Decision {
    if obs.state.is_terminal() || obs.state == State::Terminating {
        return Decision::Keep { recheck_at: None };
    }
    let mut recheck: Option<Millis> = None;
    let mut deadline = |at: Millis| recheck = Some(recheck.map_or(at, |r| r.min(at)));

    if let Some(limit) = timing.lifetime_limit_ms {
        let at = obs.created_at.saturating_add(limit);
        if now >= at {
            return Decision::Stop(StopReason::LifetimeLimit);
        }
        deadline(at);
    }
    if obs.state < State::Ready {
        let at = obs.created_at.saturating_add(timing.startup_timeout_ms);
        if now >= at {
            return Decision::Stop(StopReason::StartupTimeout);
        }
        deadline(at);
    } else if obs.live_connections == 0 {
        let at = obs.last_activity.saturating_add(timing.grace_ms);
        if now >= at {
            return Decision::Stop(StopReason::Idle);
        }
        deadline(at);
    }
    Decision::Keep {
        recheck_at: recheck,
    }
}

/// How a backend's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Killed at its memory limit (a container's OOM kill); the exit code if one was reported.
    OutOfMemory(Option<i32>),
    /// It ended while nobody could wait for it (e.g. while Spawner was down).
    Unknown,
}

/// The terminal state, reason and exit code a backend ends with, given the state it was
/// in, why it was being stopped (if it was), and how it exited.
pub fn outcome(
    state: State,
    stopping: Option<StopReason>,
    exit: Exit,
) -> (State, String, Option<i32>) {
    let code = match exit {
        Exit::Code(c) | Exit::OutOfMemory(Some(c)) => Some(c),
        _ => None,
    };
    if let Some(reason) = stopping {
        return (reason.final_state(), reason.as_str().to_string(), code);
    }
    let before_ready = if state < State::Ready {
        " before it became ready"
    } else {
        ""
    };
    match exit {
        Exit::Code(0) => (
            State::Terminated,
            format!("exited with code 0{before_ready}"),
            code,
        ),
        Exit::Code(c) => (
            State::Failed,
            format!("exited with code {c}{before_ready}"),
            code,
        ),
        Exit::Signal(s) => (
            State::Failed,
            format!("killed by signal {s}{before_ready}"),
            None,
        ),
        Exit::OutOfMemory(code) => (
            State::Failed,
            format!("out of memory: killed at its memory limit{before_ready}"),
            code,
        ),
        Exit::Unknown => (
            State::Failed,
            "lost: it exited while Spawner was not watching; exit code unknown".to_string(),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        grace_ms: 10_000,
        lifetime_limit_ms: None,
        startup_timeout_ms: 5_000,
    };

    fn ready(live: u64, last: Millis) -> Observed {
        Observed {
            state: State::Ready,
            created_at: 0,
            live_connections: live,
            last_activity: last,
        }
    }

    #[test]
    fn idle_for_the_grace_period_is_swept() {
        assert_eq!(
            decide(&T, &ready(0, 1_000), 10_999),
            Decision::Keep {
                recheck_at: Some(11_000)
            }
        );
        assert_eq!(
            decide(&T, &ready(0, 1_000), 11_000),
            Decision::Stop(StopReason::Idle)
        );
    }

    #[test]
    fn never_swept_with_a_live_connection() {
        assert_eq!(
            decide(&T, &ready(1, 0), 1_000_000),
            Decision::Keep { recheck_at: None }
        );
    }

    #[test]
    fn startup_timeout_applies_only_before_ready() {
        let starting = Observed {
            state: State::Running,
            ..ready(0, 0)
        };
        assert_eq!(
            decide(&T, &starting, 4_999),
            Decision::Keep {
                recheck_at: Some(5_000)
            }
        );
        assert_eq!(
            decide(&T, &starting, 5_000),
            Decision::Stop(StopReason::StartupTimeout)
        );
        // Ready: the startup timeout no longer matters, only idleness.
        assert_eq!(
            decide(&T, &ready(0, 5_000), 6_000),
            Decision::Keep {
                recheck_at: Some(15_000)
            }
        );
    }

    #[test]
    fn lifetime_limit_wins_even_with_connections() {
        let t = Timing {
            lifetime_limit_ms: Some(60_000),
            ..T
        };
        assert_eq!(
            decide(&t, &ready(3, 59_000), 59_999),
            Decision::Keep {
                recheck_at: Some(60_000)
            }
        );
        assert_eq!(
            decide(&t, &ready(3, 59_000), 60_000),
            Decision::Stop(StopReason::LifetimeLimit)
        );
    }

    #[test]
    fn stopping_and_terminal_backends_are_left_alone() {
        for state in [
            State::Terminating,
            State::Swept,
            State::Failed,
            State::Terminated,
        ] {
            let obs = Observed {
                state,
                ..ready(0, 0)
            };
            assert_eq!(
                decide(&T, &obs, i64::MAX),
                Decision::Keep { recheck_at: None }
            );
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            outcome(State::Ready, None, Exit::Code(3)),
            (State::Failed, "exited with code 3".into(), Some(3))
        );
        assert_eq!(
            outcome(State::Running, None, Exit::Code(0)).0,
            State::Terminated
        );
        assert_eq!(
            outcome(State::Running, None, Exit::Code(1)).1,
            "exited with code 1 before it became ready"
        );
        assert_eq!(
            outcome(State::Terminating, Some(StopReason::Idle), Exit::Signal(15)).0,
            State::Swept
        );
        assert_eq!(
            outcome(
                State::Terminating,
                Some(StopReason::Terminate),
                Exit::Code(143)
            ),
            (State::Terminated, "terminate requested".into(), Some(143))
        );
        assert_eq!(
            outcome(
                State::Running,
                Some(StopReason::StartupTimeout),
                Exit::Signal(9)
            )
            .0,
            State::Failed
        );
        assert_eq!(outcome(State::Ready, None, Exit::Unknown).0, State::Failed);
    }
}
