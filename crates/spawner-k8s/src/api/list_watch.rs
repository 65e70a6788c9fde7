//! The list stream of `spawner api` (`GET /v1/backends/stream`): the list's first page,
//! then the record of each object the watch sees change, so that a dashboard stays current
//! without asking for the list again (it polled every 2 s before).

use crate::api::{ApiState, Error};
use crate::model::crd::SessionLivedBackend;
use futures_util::StreamExt;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use spawner_api::parse::ListFilter;
use spawner_api::ListWatch;
use spawner_core::BackendRecord;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// The list's first page, and the records of the objects that change from then on.
pub async fn watch(state: &Arc<ApiState>, filter: &ListFilter) -> Result<ListWatch, Error> {
    let slabs = state.slabs();
    // The collection's version before the snapshot: the watch starts there, so that no
    // change falls between the two (one seen twice is harmless).
    let version = collection_version(&slabs).await?;
    let snapshot = crate::api::list(state, filter).await?;
    let (tx, rx) = mpsc::channel(64);
    let selector = filter.label_selector();
    tokio::spawn(follow(state.clone(), slabs, selector, version, tx));
    Ok(ListWatch {
        snapshot,
        changes: tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
    })
}

async fn collection_version(slabs: &Api<SessionLivedBackend>) -> Result<String, kube::Error> {
    let list = slabs.list_metadata(&ListParams::default().limit(1)).await?;
    Ok(list.metadata.resource_version.unwrap_or_default())
}

/// Sends the record of every object added or changed, until the client goes away. A watch
/// that cannot resume (its version expired) starts again from the current version, having
/// sent every object as it is then.
async fn follow(
    state: Arc<ApiState>,
    slabs: Api<SessionLivedBackend>,
    selector: String,
    mut version: String,
    tx: mpsc::Sender<BackendRecord>,
) {
    loop {
        let wp = WatchParams::default().labels(&selector).timeout(290);
        let watch = tokio::select! {
            _ = tx.closed() => return,
            w = slabs.watch(&wp, &version) => w,
        };
        let mut watch = match watch {
            Ok(w) => w.boxed(),
            Err(e) => {
                warn!(error = %e, "list stream: watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                n = watch.next() => n,
            };
            match next {
                Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                    if let Some(v) = o.metadata.resource_version.clone() {
                        version = v;
                    }
                    if tx.send(state.record(&o, false)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(WatchEvent::Deleted(o))) => {
                    if let Some(v) = o.metadata.resource_version.clone() {
                        version = v;
                    }
                }
                Some(Ok(WatchEvent::Bookmark(b))) => version = b.metadata.resource_version,
                // Too old a version (410 Gone) or a broken stream: everything as it is now.
                Some(Ok(WatchEvent::Error(_)) | Err(_)) => {
                    match resend_all(&state, &slabs, &selector, &tx).await {
                        Ok(Some(v)) => version = v,
                        Ok(None) => return,
                        Err(e) => {
                            warn!(error = %e, "list stream: listing again failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    break;
                }
                // The watch timed out: watch again from the last version seen.
                None => break,
            }
        }
    }
}

/// Sends every object's record; the list's version, or `None` once the client has gone.
async fn resend_all(
    state: &ApiState,
    slabs: &Api<SessionLivedBackend>,
    selector: &str,
    tx: &mpsc::Sender<BackendRecord>,
) -> Result<Option<String>, kube::Error> {
    let list = slabs.list(&ListParams::default().labels(selector)).await?;
    for o in &list.items {
        if tx.send(state.record(o, false)).await.is_err() {
            return Ok(None);
        }
    }
    Ok(Some(list.metadata.resource_version.unwrap_or_default()))
}
