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
    /// Nothing from its clients for `idle_timeout_seconds`, connections or not: ends `Swept`.
    IdleTimeout,
    /// A terminate call: ends `Terminated`.
    Terminate,
    /// Alive longer than `lifetime_limit_seconds`: ends `Terminated`.
    LifetimeLimit,
    /// Not Ready within `startup_timeout_seconds`: ends `Failed`.
    StartupTimeout,
    /// A warm pool's member whose claim hook refused its claim: ends `Terminated`.
    ClaimRefused,
    /// Asleep for `max_sleep_seconds`: ends `Swept`.
    SleptTooLong,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Idle => "idle",
            StopReason::IdleTimeout => "idle timeout",
            StopReason::Terminate => "terminate requested",
            StopReason::LifetimeLimit => "lifetime limit",
            StopReason::StartupTimeout => "startup timeout",
            StopReason::ClaimRefused => "claim refused",
            StopReason::SleptTooLong => "slept for max_sleep_seconds",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            StopReason::Idle,
            StopReason::IdleTimeout,
            StopReason::Terminate,
            StopReason::LifetimeLimit,
            StopReason::StartupTimeout,
            StopReason::ClaimRefused,
            StopReason::SleptTooLong,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// The terminal state a backend stopped for this reason ends in.
    pub fn final_state(self) -> State {
        match self {
            StopReason::Idle | StopReason::IdleTimeout | StopReason::SleptTooLong => State::Swept,
            StopReason::Terminate | StopReason::LifetimeLimit | StopReason::ClaimRefused => {
                State::Terminated
            }
            StopReason::StartupTimeout => State::Failed,
        }
    }

    /// The reason of the WebSocket close frame (code 1001) that open client connections get
    /// before the backend is signalled.
    pub fn going_away(self) -> &'static str {
        match self {
            StopReason::Idle => "swept",
            StopReason::IdleTimeout => "idle timeout",
            StopReason::Terminate => "terminated",
            StopReason::LifetimeLimit => "lifetime limit",
            StopReason::StartupTimeout => "startup timeout",
            StopReason::ClaimRefused => "claim refused",
            StopReason::SleptTooLong => "slept too long",
        }
    }

    /// Whether it is a stop for idleness, which a backend with `idle_action: "sleep"` takes
    /// as a sleep.
    pub fn is_idle(self) -> bool {
        matches!(self, StopReason::Idle | StopReason::IdleTimeout)
    }
}

/// The reason of the WebSocket close frame (code 1001) that open client connections get
/// when their backend goes to sleep.
pub const GOING_TO_SLEEP: &str = "sleeping";

/// The longest `keepalive` a call may ask for; longer ones are refused (a day).
pub const MAX_KEEPALIVE_SECONDS: u64 = 24 * 3600;

/// The timing part of a spec, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub grace_ms: Millis,
    pub lifetime_limit_ms: Option<Millis>,
    pub startup_timeout_ms: Millis,
    /// `idle_timeout_seconds`: swept after this long without client activity.
    pub idle_timeout_ms: Option<Millis>,
    /// `lifetime_warning_seconds`: how long before a stop [`expiring`] announces it.
    pub warning_ms: Millis,
    /// `max_sleep_seconds` of a backend with `idle_action: "sleep"`; `None`: idleness
    /// sweeps it.
    pub max_sleep_ms: Option<Millis>,
}

impl Timing {
    pub fn of(spec: &crate::spec::BackendSpec) -> Self {
        Timing {
            grace_ms: secs(spec.grace_period_seconds),
            lifetime_limit_ms: spec.lifetime_limit_seconds.map(secs),
            startup_timeout_ms: secs(spec.startup_timeout_seconds),
            idle_timeout_ms: spec.idle_timeout_seconds.map(secs),
            warning_ms: secs(spec.lifetime_warning_seconds),
            max_sleep_ms: (spec.idle_action == crate::spec::IdleAction::Sleep)
                .then(|| secs(spec.max_sleep_seconds)),
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
    /// The last thing its clients sent (a request, a WebSocket data frame); at least the
    /// time it became Ready.
    pub last_client_activity: Millis,
    /// Kept from being swept until then (`keepalive`), if it was ever asked.
    pub busy_until: Option<Millis>,
    /// When it entered its state: a sleep's `max_sleep_seconds` and a wake's startup
    /// timeout are counted from here.
    pub since: Millis,
}

/// The sweeper's verdict for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Leave it; look again no later than `recheck_at` (if any deadline is pending).
    Keep {
        recheck_at: Option<Millis>,
    },
    Stop(StopReason),
    /// Idle (for the reason given, [`StopReason::is_idle`]) with `idle_action: "sleep"`:
    /// stop its process and keep it, Sleeping.
    Sleep(StopReason),
}

/// Decides whether a backend must be stopped (or put to sleep) now. Terminal and
/// terminating backends are left alone: their stop is already under way. A backend busy
/// until later (`keepalive`) is swept neither for idleness nor for its idle timeout before
/// then; the lifetime limit and startup timeout still apply. The lifetime limit applies
/// asleep too; a sleeping backend is swept after `max_sleep_seconds`, and a waking one
/// fails if it is not Ready within its startup timeout counted from the wake.
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
    let idle = |reason: StopReason| match timing.max_sleep_ms {
        Some(_) => Decision::Sleep(reason),
        None => Decision::Stop(reason),
    };
    match obs.state {
        State::Sleeping => {
            let max = timing.max_sleep_ms.unwrap_or(0);
            let at = obs.since.saturating_add(max);
            if now >= at {
                return Decision::Stop(StopReason::SleptTooLong);
            }
            deadline(at);
        }
        s if s.is_starting() => {
            let from = if s == State::Waking {
                obs.since
            } else {
                obs.created_at
            };
            let at = from.saturating_add(timing.startup_timeout_ms);
            if now >= at {
                return Decision::Stop(StopReason::StartupTimeout);
            }
            deadline(at);
        }
        _ => {
            if let Some(at) = idle_deadline(timing, obs) {
                if now >= at {
                    return idle(StopReason::Idle);
                }
                deadline(at);
            }
            if let Some(at) = idle_timeout_deadline(timing, obs) {
                if now >= at {
                    return idle(StopReason::IdleTimeout);
                }
                deadline(at);
            }
        }
    }
    Decision::Keep {
        recheck_at: recheck,
    }
}

/// When a Ready backend without connections is swept: its grace period after the last
/// activity, or when it stops being busy, whichever is later. None while connected.
fn idle_deadline(timing: &Timing, obs: &Observed) -> Option<Millis> {
    (obs.live_connections == 0).then(|| {
        let at = obs.last_activity.saturating_add(timing.grace_ms);
        at.max(obs.busy_until.unwrap_or(at))
    })
}

/// When a Ready backend is swept for its idle timeout, connections or not (and not before
/// it stops being busy).
fn idle_timeout_deadline(timing: &Timing, obs: &Observed) -> Option<Millis> {
    timing.idle_timeout_ms.map(|t| {
        let at = obs.last_client_activity.saturating_add(t);
        at.max(obs.busy_until.unwrap_or(at))
    })
}

/// A stop that is due within the warning window (`lifetime_warning_seconds`): the lifetime
/// limit, or a pending idle timeout. The status stream announces it as `expiring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub at: Millis,
    pub reason: StopReason,
}

/// The next stop that is due within the warning window, if any, and otherwise when to look
/// again (when the earliest such stop enters the window). Only the lifetime limit and the
/// idle timeout are announced: they are the stops a user can be warned of in time.
pub fn expiring(timing: &Timing, obs: &Observed, now: Millis) -> (Option<Expiry>, Option<Millis>) {
    if obs.state.is_terminal() || obs.state == State::Terminating || timing.warning_ms == 0 {
        return (None, None);
    }
    let lifetime = timing.lifetime_limit_ms.map(|limit| Expiry {
        at: obs.created_at.saturating_add(limit),
        reason: StopReason::LifetimeLimit,
    });
    let idle = (obs.state == State::Ready)
        .then(|| idle_timeout_deadline(timing, obs))
        .flatten()
        .map(|at| Expiry {
            at,
            reason: StopReason::IdleTimeout,
        });
    let next = [lifetime, idle].into_iter().flatten().min_by_key(|e| e.at);
    match next {
        Some(e) if now >= e.at.saturating_sub(timing.warning_ms) => (Some(e), None),
        Some(e) => (None, Some(e.at.saturating_sub(timing.warning_ms))),
        None => (None, None),
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
    let before_ready = match state {
        State::Waking => " while waking",
        s if s.is_starting() => " before it became ready",
        _ => "",
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
        idle_timeout_ms: None,
        warning_ms: 3_000,
        max_sleep_ms: None,
    };

    fn ready(live: u64, last: Millis) -> Observed {
        Observed {
            state: State::Ready,
            created_at: 0,
            live_connections: live,
            last_activity: last,
            last_client_activity: last,
            busy_until: None,
            since: 0,
        }
    }

    #[test]
    fn busy_outlives_its_grace_and_is_swept_after_busy_until() {
        let busy = Observed {
            busy_until: Some(30_000),
            ..ready(0, 1_000)
        };
        // The grace period ended at 11 s, but it is busy until 30 s.
        assert_eq!(
            decide(&T, &busy, 20_000),
            Decision::Keep {
                recheck_at: Some(30_000)
            }
        );
        assert_eq!(decide(&T, &busy, 30_000), Decision::Stop(StopReason::Idle));
        // A busy_until in the past changes nothing.
        let was_busy = Observed {
            busy_until: Some(500),
            ..ready(0, 1_000)
        };
        assert_eq!(
            decide(&T, &was_busy, 11_000),
            Decision::Stop(StopReason::Idle)
        );
    }

    #[test]
    fn busy_does_not_beat_the_lifetime_limit() {
        let t = Timing {
            lifetime_limit_ms: Some(60_000),
            ..T
        };
        let busy = Observed {
            busy_until: Some(100_000),
            ..ready(0, 0)
        };
        assert_eq!(
            decide(&t, &busy, 60_000),
            Decision::Stop(StopReason::LifetimeLimit)
        );
    }

    #[test]
    fn idle_timeout_applies_with_open_connections() {
        let t = Timing {
            idle_timeout_ms: Some(20_000),
            ..T
        };
        // A WebSocket open (live 1) but its client silent since 1 s.
        let silent = Observed {
            last_activity: 15_000,
            last_client_activity: 1_000,
            ..ready(1, 0)
        };
        assert_eq!(
            decide(&t, &silent, 20_999),
            Decision::Keep {
                recheck_at: Some(21_000)
            }
        );
        assert_eq!(
            decide(&t, &silent, 21_000),
            Decision::Stop(StopReason::IdleTimeout)
        );
        // Busy holds it off until busy_until.
        let busy = Observed {
            busy_until: Some(40_000),
            ..silent
        };
        assert_eq!(
            decide(&t, &busy, 21_000),
            Decision::Keep {
                recheck_at: Some(40_000)
            }
        );
        // Without the field, an open connection keeps it.
        assert_eq!(
            decide(&T, &silent, 1_000_000),
            Decision::Keep { recheck_at: None }
        );
    }

    #[test]
    fn expiring_announces_the_next_stop_within_the_warning() {
        let t = Timing {
            lifetime_limit_ms: Some(60_000),
            idle_timeout_ms: Some(20_000),
            ..T
        };
        let obs = ready(1, 10_000);
        // The idle timeout (30 s) comes before the lifetime limit (60 s); warned 3 s ahead.
        assert_eq!(expiring(&t, &obs, 20_000), (None, Some(27_000)));
        assert_eq!(
            expiring(&t, &obs, 27_000),
            (
                Some(Expiry {
                    at: 30_000,
                    reason: StopReason::IdleTimeout
                }),
                None
            )
        );
        // Activity moves the idle timeout past the lifetime limit.
        let active = ready(1, 50_000);
        assert_eq!(
            expiring(&t, &active, 57_500),
            (
                Some(Expiry {
                    at: 60_000,
                    reason: StopReason::LifetimeLimit
                }),
                None
            )
        );
        // A zero warning announces nothing.
        let quiet = Timing { warning_ms: 0, ..t };
        assert_eq!(expiring(&quiet, &obs, 29_000), (None, None));
        // Before Ready only the lifetime limit counts.
        let starting = Observed {
            state: State::Running,
            ..obs
        };
        assert_eq!(expiring(&t, &starting, 20_000), (None, Some(57_000)));
    }

    #[test]
    fn stop_reasons_round_trip_and_name_their_close() {
        for r in [
            StopReason::Idle,
            StopReason::IdleTimeout,
            StopReason::Terminate,
            StopReason::LifetimeLimit,
            StopReason::StartupTimeout,
        ] {
            assert_eq!(StopReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(StopReason::IdleTimeout.final_state(), State::Swept);
        assert_eq!(StopReason::Idle.going_away(), "swept");
        assert_eq!(StopReason::Terminate.going_away(), "terminated");
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
    fn sleepers_sleep_where_others_are_swept() {
        let t = Timing {
            max_sleep_ms: Some(100_000),
            idle_timeout_ms: Some(20_000),
            ..T
        };
        assert_eq!(
            decide(&t, &ready(0, 1_000), 11_000),
            Decision::Sleep(StopReason::Idle)
        );
        assert_eq!(
            decide(&t, &ready(1, 1_000), 21_000),
            Decision::Sleep(StopReason::IdleTimeout)
        );
        // Asleep since 50 s: swept for good at 150 s, whatever its activity was.
        let asleep = Observed {
            state: State::Sleeping,
            since: 50_000,
            ..ready(0, 1_000)
        };
        assert_eq!(
            decide(&t, &asleep, 149_999),
            Decision::Keep {
                recheck_at: Some(150_000)
            }
        );
        assert_eq!(
            decide(&t, &asleep, 150_000),
            Decision::Stop(StopReason::SleptTooLong)
        );
        assert_eq!(StopReason::SleptTooLong.final_state(), State::Swept);
        // The lifetime limit applies asleep.
        let limited = Timing {
            lifetime_limit_ms: Some(60_000),
            ..t
        };
        assert_eq!(
            decide(&limited, &asleep, 60_000),
            Decision::Stop(StopReason::LifetimeLimit)
        );
    }

    #[test]
    fn a_wake_has_its_startup_timeout_from_the_wake() {
        // Submitted at 0, woken at 100 s: the 5 s startup timeout runs to 105 s.
        let waking = Observed {
            state: State::Waking,
            since: 100_000,
            ..ready(0, 0)
        };
        assert_eq!(
            decide(&T, &waking, 104_999),
            Decision::Keep {
                recheck_at: Some(105_000)
            }
        );
        assert_eq!(
            decide(&T, &waking, 105_000),
            Decision::Stop(StopReason::StartupTimeout)
        );
        // No idle timeout is announced while asleep or waking.
        let t = Timing {
            idle_timeout_ms: Some(1_000),
            ..T
        };
        assert_eq!(expiring(&t, &waking, 200_000), (None, None));
        assert_eq!(
            outcome(State::Waking, None, Exit::Code(2)).1,
            "exited with code 2 while waking"
        );
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
