//! The list stream (`GET /v1/backends/stream`): the list's first page once, then each
//! backend whose record changed, so that a dashboard stays current without asking again.
//! Live backends are read from memory; a backend is read from the store only once more,
//! when it ends.

use super::backends::{live_record, record};
use super::ApiError;
use crate::app::App;
use futures_util::StreamExt;
use spawner_api::parse::ListFilter;
use spawner_api::ListWatch;
use spawner_core::BackendRecord;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often live connection counts and activity times are looked at: they change with
/// every request, so they are sampled rather than announced.
const SAMPLE: Duration = Duration::from_secs(1);

/// The list's first page, and the records that change from then on.
pub(super) async fn watch(app: &Arc<App>, filter: &ListFilter) -> Result<ListWatch, ApiError> {
    // Subscribe before the snapshot, so that no change falls between the two.
    let changes = app.registry.subscribe();
    let (retired, _) = app.registry.retired_since(u64::MAX);
    // The first page only: the client reads the others with `GET /v1/backends?after=`,
    // and is sent each live backend not in it at the stream's first look (within a second).
    let list = super::backends::page(app, filter)?;
    let sent: HashMap<String, Seen> = list
        .backends
        .iter()
        .filter(|b| !b.state.is_terminal())
        .map(|b| {
            (
                b.id.clone(),
                Seen::of(b, app.pools.claimed_spec(&b.id).is_some()),
            )
        })
        .collect();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(
        app.clone(),
        filter.clone(),
        sent,
        retired,
        changes,
        tx,
    ));
    Ok(ListWatch {
        snapshot: list,
        changes: tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
    })
}

/// What a client was last told about a live backend.
#[derive(PartialEq)]
struct Seen {
    state: spawner_core::State,
    reason: Option<String>,
    connections: u64,
    /// Activity to the second: finer would send a record per request.
    activity_s: i64,
    /// A pooled backend's claim changes its key and labels.
    claimed: bool,
}

impl Seen {
    fn of(b: &BackendRecord, claimed: bool) -> Self {
        Seen {
            state: b.state,
            reason: b.reason.clone(),
            connections: b.live_connections,
            activity_s: b.last_activity.unwrap_or(0) / 1000,
            claimed,
        }
    }
}

/// Sends the records that changed, at every change of the registry and every [`SAMPLE`],
/// until the client goes away.
async fn follow(
    app: Arc<App>,
    filter: ListFilter,
    mut sent: HashMap<String, Seen>,
    mut retired: u64,
    mut changes: tokio::sync::watch::Receiver<u64>,
    tx: mpsc::Sender<BackendRecord>,
) {
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(SAMPLE) => {}
        }
        let live = app.registry.all();
        let now_live: HashSet<&str> = live.iter().map(|l| l.id.as_str()).collect();
        let mut out = Vec::new();
        for l in &live {
            let claimed = app.pools.claimed_spec(&l.id);
            let spec = claimed.as_deref().unwrap_or(&l.spec);
            if !wanted(&filter, l.state(), spec.key.as_deref(), &spec.labels) {
                continue;
            }
            // Compared before a record is built: most backends have not changed.
            let seen = Seen {
                state: l.state(),
                reason: l.reason(),
                connections: l.monitor.live(),
                activity_s: l.monitor.last_activity() / 1000,
                claimed: claimed.is_some(),
            };
            if sent.get(&l.id) != Some(&seen) {
                sent.insert(l.id.clone(), seen);
                out.push(live_record(&app, l));
            }
        }
        // Those no longer live have ended: their final record, once; with those that started
        // and ended between two looks.
        let (last, lately) = app.registry.retired_since(retired);
        retired = last;
        let ended: HashSet<String> = sent
            .keys()
            .filter(|id| !now_live.contains(id.as_str()))
            .cloned()
            .chain(lately)
            .collect();
        for id in ended {
            sent.remove(&id);
            match app.store.get(&id) {
                Ok(Some(row)) => {
                    if let Ok(rec) = record(&app, row, false) {
                        if wanted(&filter, rec.state, rec.key.as_deref(), &rec.spec.labels) {
                            out.push(rec);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(backend = %id, error = %e, "list stream: reading an ended backend")
                }
            }
        }
        for rec in out {
            if tx.send(rec).await.is_err() {
                return;
            }
        }
    }
}

fn wanted(
    filter: &ListFilter,
    state: spawner_core::State,
    key: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> bool {
    filter.state.is_none_or(|s| s == state)
        && filter.key.as_deref().is_none_or(|k| key == Some(k))
        && filter.labels_match(labels)
}
