//! The states of a backend, in the only order they may be entered.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A backend's lifecycle state. The declaration order is the lifecycle order: a backend
/// may skip states but never go back, and the three terminal states end it. The one loop
/// is sleep and wake (`idle_action: "sleep"`): `Ready → Sleeping → Waking → Ready`, and
/// only along those edges ([`State::can_enter`]).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum State {
    Submitted,
    Constructed,
    Scheduled,
    Running,
    Ready,
    /// Stopped for idleness with its files kept; the next request wakes it.
    Sleeping,
    /// Being started again from its spec after a sleep.
    Waking,
    Terminating,
    Swept,
    Failed,
    Terminated,
}

impl State {
    pub const ALL: [State; 11] = [
        State::Submitted,
        State::Constructed,
        State::Scheduled,
        State::Running,
        State::Ready,
        State::Sleeping,
        State::Waking,
        State::Terminating,
        State::Swept,
        State::Failed,
        State::Terminated,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Swept | State::Failed | State::Terminated)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Submitted => "Submitted",
            State::Constructed => "Constructed",
            State::Scheduled => "Scheduled",
            State::Running => "Running",
            State::Ready => "Ready",
            State::Sleeping => "Sleeping",
            State::Waking => "Waking",
            State::Terminating => "Terminating",
            State::Swept => "Swept",
            State::Failed => "Failed",
            State::Terminated => "Terminated",
        }
    }

    /// Whether it is on its way to Ready: starting for the first time, or waking.
    pub fn is_starting(self) -> bool {
        self < State::Ready || self == State::Waking
    }

    /// Whether a backend in `self` may enter `to`: only forward, never out of a terminal
    /// state; Sleeping only from Ready, Waking only from Sleeping, and a waking backend
    /// goes on to Ready (or stops).
    pub fn can_enter(self, to: State) -> bool {
        if self.is_terminal() {
            return false;
        }
        match (self, to) {
            (State::Ready, State::Sleeping) | (State::Sleeping, State::Waking) => true,
            (_, State::Sleeping | State::Waking) => false,
            (State::Waking, State::Ready) => true,
            _ => to > self,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a state name that is not one of [`State::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown state {0:?}: expected one of Submitted, Constructed, Scheduled, Running, Ready, Sleeping, Waking, Terminating, Swept, Failed, Terminated")]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_only_and_skipping_allowed() {
        assert!(State::Submitted.can_enter(State::Constructed));
        assert!(State::Submitted.can_enter(State::Ready));
        assert!(State::Submitted.can_enter(State::Failed));
        assert!(State::Ready.can_enter(State::Terminating));
        assert!(State::Terminating.can_enter(State::Swept));
        assert!(State::Terminating.can_enter(State::Terminated));
        assert!(!State::Ready.can_enter(State::Running));
        assert!(!State::Ready.can_enter(State::Ready));
    }

    #[test]
    fn sleep_and_wake_loop_only_along_its_edges() {
        assert!(State::Ready.can_enter(State::Sleeping));
        assert!(State::Sleeping.can_enter(State::Waking));
        assert!(State::Waking.can_enter(State::Ready));
        for stop in [
            State::Terminating,
            State::Swept,
            State::Failed,
            State::Terminated,
        ] {
            assert!(State::Sleeping.can_enter(stop), "Sleeping -> {stop}");
            assert!(State::Waking.can_enter(stop), "Waking -> {stop}");
        }
        assert!(!State::Running.can_enter(State::Sleeping));
        assert!(!State::Ready.can_enter(State::Waking));
        assert!(!State::Sleeping.can_enter(State::Ready));
        assert!(!State::Waking.can_enter(State::Sleeping));
        assert!(!State::Waking.can_enter(State::Running));
        assert!(!State::Terminating.can_enter(State::Sleeping));
        assert!(State::Waking.is_starting());
        assert!(State::Running.is_starting());
        assert!(!State::Sleeping.is_starting());
        assert!(!State::Ready.is_starting());
    }

    #[test]
    fn terminal_states_are_final() {
        for t in [State::Swept, State::Failed, State::Terminated] {
            assert!(t.is_terminal());
            for to in State::ALL {
                assert!(!t.can_enter(to), "{t} -> {to} must be refused");
            }
        }
        assert!(!State::Terminating.is_terminal());
    }

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("ready".parse::<State>().is_err());
    }
}
