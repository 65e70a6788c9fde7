//! A SessionLivedBackend's status: its state, where it runs, and the history of its state
//! changes (the replay source of the status stream). Transitions go through
//! [`SessionLivedBackendStatus::enter`], which applies spawner-core's ordering rule, so the
//! controller and the sweeper cannot move a backend backwards between them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use spawner_core::time::{rfc3339, Millis};
use spawner_core::{Event, State};

/// The lifecycle as the API server stores it. The per-state flags are the seed's; a flag
/// is set when its state is entered and stays set, except `sleeping` and `waking`: the
/// sleep loop (Ready → Sleeping → Waking → Ready) enters them again and again, so they say
/// whether the backend is in that state now (the history says how often it was).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionLivedBackendStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "state_schema")]
    pub state: Option<State>,
    #[serde(default)]
    pub submitted: bool,
    #[serde(default)]
    pub constructed: bool,
    #[serde(default)]
    pub scheduled: bool,
    #[serde(default)]
    pub running: bool,
    #[serde(default)]
    pub ready: bool,
    /// In Sleeping now (not "ever", as the other flags).
    #[serde(default)]
    pub sleeping: bool,
    /// In Waking now (not "ever", as the other flags).
    #[serde(default)]
    pub waking: bool,
    #[serde(default)]
    pub terminating: bool,
    #[serde(default)]
    pub swept: bool,
    #[serde(default)]
    pub failed: bool,
    #[serde(default)]
    pub terminated: bool,
    /// The node the Pod was scheduled on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The Pod's IP, once running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The sidecar's port on the Pod and the Service: where the router and the sweeper connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The public URL browsers use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The application container's exit code, once it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the last state was entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why a stop is under way (a `StopReason` name); decides the terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Open connections through the sidecar, as its sweeper last saw them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_connections: Option<u64>,
    /// The sidecar's last request or connection end (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
    /// The last thing a client sent (a request, a WebSocket data frame; RFC 3339), as its
    /// sweeper last saw it: what `idleTimeoutSeconds` counts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_client_activity: Option<String>,
    /// Kept from being swept until then (RFC 3339): set by a keepalive, through the API or
    /// the backend's sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_until: Option<String>,
    /// Every state entered, in order, numbered from 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// One state change, numbered; the status stream's SSE ids are these numbers.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub seq: u64,
    #[schemars(schema_with = "state_schema")]
    pub state: State,
    /// RFC 3339 with milliseconds, UTC.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

fn state_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
    schemars::json_schema!({"type": "string", "enum": names})
}

impl HistoryEntry {
    /// The contract's event. A time that does not parse (only possible if someone edited
    /// the status by hand) reads as the epoch rather than failing the whole record.
    pub fn to_event(&self) -> Event {
        let time = chrono::DateTime::parse_from_rfc3339(&self.time)
            .map(|t| t.timestamp_millis())
            .unwrap_or(0);
        Event {
            seq: self.seq,
            state: self.state,
            time,
            reason: self.reason.clone(),
            exit_code: self.exit_code,
        }
    }
}

impl SessionLivedBackendStatus {
    /// Enters `to` if the lifecycle allows it (forward only, never out of a terminal state),
    /// setting its flag and appending to the history. Returns whether it did.
    pub fn enter(
        &mut self,
        to: State,
        time: Millis,
        reason: Option<String>,
        exit_code: Option<i32>,
    ) -> bool {
        if let Some(current) = self.state {
            if !current.can_enter(to) {
                return false;
            }
        }
        self.state = Some(to);
        self.sleeping = to == State::Sleeping;
        self.waking = to == State::Waking;
        if let Some(flag) = self.flag(to) {
            *flag = true;
        }
        self.reason.clone_from(&reason);
        if exit_code.is_some() {
            self.exit_code = exit_code;
        }
        let seq = self.history.last().map_or(1, |h| h.seq + 1);
        self.history.push(HistoryEntry {
            seq,
            state: to,
            time: rfc3339(time),
            reason,
            exit_code,
        });
        true
    }

    /// Records a step within the current state (a claim) as an event of that state, as the
    /// embedded server's notes; nothing before the first state or after a terminal one.
    /// Returns whether it did.
    pub fn note(&mut self, time: Millis, reason: String) -> bool {
        let Some(state) = self.state.filter(|s| !s.is_terminal()) else {
            return false;
        };
        self.reason = Some(reason.clone());
        let seq = self.history.last().map_or(1, |h| h.seq + 1);
        self.history.push(HistoryEntry {
            seq,
            state,
            time: rfc3339(time),
            reason: Some(reason),
            exit_code: None,
        });
        true
    }

    /// Takes in `entry`, an event written elsewhere than the status (a claim's, in an
    /// annotation, see [`crate::model::read::status`]): appended when it is the history's next
    /// number, as if [`note`](Self::note) had added it; nothing when the history has it already.
    pub fn fold(&mut self, entry: HistoryEntry) {
        let next = self.history.last().map_or(1, |h| h.seq + 1);
        if entry.seq != next || self.state != Some(entry.state) {
            return;
        }
        self.reason.clone_from(&entry.reason);
        self.history.push(entry);
    }

    /// The "entered once" flag of `state`; none for the loop's states (see the struct).
    fn flag(&mut self, state: State) -> Option<&mut bool> {
        Some(match state {
            State::Submitted => &mut self.submitted,
            State::Constructed => &mut self.constructed,
            State::Scheduled => &mut self.scheduled,
            State::Running => &mut self.running,
            State::Ready => &mut self.ready,
            State::Sleeping | State::Waking => return None,
            State::Terminating => &mut self.terminating,
            State::Swept => &mut self.swept,
            State::Failed => &mut self.failed,
            State::Terminated => &mut self.terminated,
        })
    }

    pub fn events(&self) -> Vec<Event> {
        self.history.iter().map(HistoryEntry::to_event).collect()
    }

    /// When the current state was entered, from the history.
    pub fn entered_at(&self) -> Option<Millis> {
        self.history.last().map(|h| h.to_event().time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_moves_forward_only_and_numbers_the_history() {
        let mut s = SessionLivedBackendStatus::default();
        assert!(s.enter(State::Submitted, 1_000, None, None));
        assert!(s.enter(State::Scheduled, 2_000, Some("on node-a".into()), None));
        assert!(
            !s.enter(State::Constructed, 3_000, None, None),
            "no going back"
        );
        assert!(s.enter(
            State::Failed,
            4_000,
            Some("exited with code 3".into()),
            Some(3)
        ));
        assert!(
            !s.enter(State::Terminated, 5_000, None, None),
            "terminal is final"
        );
        assert_eq!(s.state, Some(State::Failed));
        assert!(s.submitted && s.scheduled && s.failed && !s.constructed && !s.running);
        assert_eq!(s.exit_code, Some(3));
        let seqs: Vec<u64> = s.history.iter().map(|h| h.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(s.history[1].time, "1970-01-01T00:00:02.000Z");
        assert_eq!(s.events()[2].time, 4_000);
        assert_eq!(s.entered_at(), Some(4_000));
    }

    #[test]
    fn a_note_is_an_event_of_the_current_state() {
        let mut s = SessionLivedBackendStatus::default();
        assert!(!s.note(1, "claimed".into()), "no state yet");
        s.enter(State::Submitted, 1_000, None, None);
        s.enter(State::Ready, 2_000, None, None);
        assert!(s.note(3_000, "claimed with key k".into()));
        assert_eq!(s.state, Some(State::Ready));
        let last = &s.events()[2];
        assert_eq!((last.seq, last.state), (3, State::Ready));
        assert_eq!(last.reason.as_deref(), Some("claimed with key k"));
        s.enter(State::Terminated, 4_000, None, None);
        assert!(!s.note(5_000, "late".into()), "nothing after the end");
    }

    #[test]
    fn an_event_written_elsewhere_is_taken_in_once_and_only_as_the_next() {
        let mut s = SessionLivedBackendStatus::default();
        s.enter(State::Submitted, 1_000, None, None);
        s.enter(State::Ready, 2_000, None, None);
        let mut claimed = s.clone();
        claimed.note(3_000, "claimed".into());
        let entry = claimed.history[2].clone();
        let mut folded = s.clone();
        folded.fold(entry.clone());
        assert_eq!(folded, claimed);
        folded.fold(entry.clone());
        assert_eq!(folded, claimed, "once");
        // A status written without it (the number taken by another event) keeps its own.
        let mut moved_on = s.clone();
        moved_on.enter(State::Terminating, 4_000, None, None);
        let before = moved_on.clone();
        moved_on.fold(entry);
        assert_eq!(moved_on, before);
    }

    #[test]
    fn the_sleep_flags_say_the_state_now_and_the_history_every_entry() {
        let mut s = SessionLivedBackendStatus::default();
        s.enter(State::Submitted, 0, None, None);
        s.enter(State::Ready, 1_000, None, None);
        for round in 0..2 {
            assert!(s.enter(State::Sleeping, 2_000 + round, Some("idle".into()), None));
            assert!(s.sleeping && !s.waking && s.ready);
            assert!(s.enter(State::Waking, 3_000 + round, None, None));
            assert!(!s.sleeping && s.waking);
            assert!(s.enter(State::Ready, 4_000 + round, None, None));
            assert!(!s.sleeping && !s.waking);
        }
        let states: Vec<State> = s.history.iter().map(|h| h.state).collect();
        assert_eq!(
            states,
            [
                State::Submitted,
                State::Ready,
                State::Sleeping,
                State::Waking,
                State::Ready,
                State::Sleeping,
                State::Waking,
                State::Ready
            ]
        );
        assert!(s.enter(State::Sleeping, 9_000, None, None));
        assert!(s.enter(State::Swept, 10_000, None, None));
        assert!(!s.sleeping && s.swept);
    }

    #[test]
    fn status_json_is_camel_case_with_the_seed_flags() {
        let mut s = SessionLivedBackendStatus::default();
        s.enter(State::Submitted, 0, None, None);
        s.node_name = Some("n1".into());
        s.exit_code = Some(0);
        let json = serde_json::to_value(&s).expect("serializes");
        assert_eq!(json["state"], "Submitted");
        assert_eq!(json["submitted"], true);
        assert_eq!(json["swept"], false);
        assert_eq!(json["nodeName"], "n1");
        assert_eq!(json["exitCode"], 0);
        assert_eq!(json["history"][0]["seq"], 1);
        let back: SessionLivedBackendStatus = serde_json::from_value(json).expect("parses");
        assert_eq!(back, s);
    }
}
