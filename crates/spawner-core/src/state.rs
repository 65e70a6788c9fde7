//! The states of a backend, in the only order they may be entered.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A backend's lifecycle state. The declaration order is the lifecycle order: a backend
/// may skip states but never go back, and the three terminal states end it.
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
    Terminating,
    Swept,
    Failed,
    Terminated,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Submitted,
        State::Constructed,
        State::Scheduled,
        State::Running,
        State::Ready,
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
            State::Terminating => "Terminating",
            State::Swept => "Swept",
            State::Failed => "Failed",
            State::Terminated => "Terminated",
        }
    }

    /// Whether a backend in `self` may enter `to`: only forward, never out of a terminal state.
    pub fn can_enter(self, to: State) -> bool {
        !self.is_terminal() && to > self
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a state name that is not one of [`State::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown state {0:?}: expected one of Submitted, Constructed, Scheduled, Running, Ready, Terminating, Swept, Failed, Terminated")]
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
