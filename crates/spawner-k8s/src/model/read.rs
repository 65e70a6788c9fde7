//! What the programs read off a backend's object (and its Pod): its state, its times, where
//! its sidecar listens, its secret. The controller, the API, the sweeper and the router all
//! need these, so they live here rather than in one program that the others would reach into.

use crate::model::crd::SessionLivedBackend;
use crate::model::pool_crd::ANNOTATION_CLAIM_EVENT;
use crate::model::status::{HistoryEntry, SessionLivedBackendStatus};
use http::uri::Authority;
use k8s_openapi::api::core::v1::Pod;
use spawner_core::time::Millis;
use spawner_core::State;
use std::net::{IpAddr, SocketAddr};

/// The sidecar container's name; the router and sweepers reach it on the Service.
pub const SIDECAR_CONTAINER: &str = "spawner-sidecar";
/// The variable of the sidecar container holding the backend's own secret.
pub const SIDECAR_TOKEN_ENV: &str = "SPAWNER_SIDECAR_TOKEN";

/// The state, counting an object the controller has not seen yet as Submitted: it is
/// durably recorded, which is what Submitted means.
pub fn state_of(obj: &SessionLivedBackend) -> State {
    obj.status
        .as_ref()
        .and_then(|s| s.state)
        .unwrap_or(State::Submitted)
}

/// The status as it stands, with the claim's event taken in: a claim writes its event in
/// the [`ANNOTATION_CLAIM_EVENT`] annotation, within the claim's own write (a status write
/// more would double a claim's time), and whoever writes the status next carries it into
/// the history. So every program reads and writes the status through this, never
/// `obj.status` as stored.
pub fn status(obj: &SessionLivedBackend) -> SessionLivedBackendStatus {
    let mut status = obj.status.clone().unwrap_or_default();
    if let Some(entry) = claim_event(obj) {
        status.fold(entry);
    }
    status
}

/// The claim's event held in the object's annotation, if it holds one that parses.
fn claim_event(obj: &SessionLivedBackend) -> Option<HistoryEntry> {
    let json = obj
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_CLAIM_EVENT)?;
    serde_json::from_str(json).ok()
}

/// Milliseconds since the epoch of an RFC 3339 time of the status.
pub fn millis_of(t: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Where the backend's sidecar serves its events, once the controller recorded the Pod's
/// IP and the sidecar's port.
pub fn events_addr(obj: &SessionLivedBackend) -> Option<SocketAddr> {
    let status = obj.status.as_ref()?;
    let ip: IpAddr = status.ip.as_deref()?.parse().ok()?;
    Some(SocketAddr::new(ip, status.port?))
}

/// Why a known backend cannot take requests now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    Starting,
    /// Sleeping or waking (`idleAction: sleep`): a request wakes it and waits.
    Asleep,
    Stopping,
    Ended,
    /// The status holds an address that does not parse (edited by hand).
    BadAddress,
}

/// The sidecar of a Ready backend (Pod IP and sidecar port), or why there is none. Pure.
pub fn target_of(obj: &SessionLivedBackend) -> Result<Authority, Unavailable> {
    let status = obj.status.as_ref();
    let state = status.and_then(|s| s.state).unwrap_or(State::Submitted);
    if state.is_terminal() {
        return Err(Unavailable::Ended);
    }
    let addr = status.and_then(|s| {
        let ip: IpAddr = s.ip.as_deref()?.parse().ok()?;
        Some(SocketAddr::new(ip, s.port?))
    });
    match (state, addr) {
        (State::Ready, Some(addr)) => {
            Authority::try_from(addr.to_string()).map_err(|_| Unavailable::BadAddress)
        }
        (State::Terminating, _) => Err(Unavailable::Stopping),
        (State::Sleeping | State::Waking, _) => Err(Unavailable::Asleep),
        _ => Err(Unavailable::Starting),
    }
}

/// The backend's own secret, as the controller put it into the Pod
/// (`add_secret`).
pub fn secret_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == SIDECAR_CONTAINER)?
        .env
        .iter()
        .flatten()
        .find(|e| e.name == SIDECAR_TOKEN_ENV)?
        .value
        .clone()
}
