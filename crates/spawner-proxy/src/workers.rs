//! The proxy's threads: each runs a single-threaded runtime with its own event loop and
//! its own idle backend connections, and a client connection stays on one of them while
//! the relay serves it.
//!
//! Why not the process's work-stealing runtime: a relayed request is two socket wake-ups,
//! and there each may be handled by another thread than the last, with a futex wake-up to
//! hand the task over, and a pooled backend connection may be polled by one thread while
//! another turns the event loop it is registered with. Thread-local event loops, as nginx
//! and HAProxy have, took about 8 % more requests per second through the proxy at less CPU
//! per request (docs/benchmarks.md).

use crate::pool::Pool;
use crate::relay::BackendConn;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The proxy's threads, which end once this is dropped (every connection placed on one
/// holds it).
pub(crate) struct Workers {
    workers: Vec<Worker>,
    /// Dropped with `Workers`, which ends each thread's runtime.
    _stop: Vec<oneshot::Sender<()>>,
}

struct Worker {
    runtime: Handle,
    /// Idle backend connections, registered with this thread's event loop.
    pool: Pool<BackendConn>,
    /// Client connections on this thread now.
    connections: AtomicUsize,
}

impl Worker {
    fn new(runtime: Handle) -> Self {
        Worker {
            runtime,
            pool: Pool::default(),
            connections: AtomicUsize::new(0),
        }
    }
}

impl Workers {
    /// Starts `threads` threads (at least one), busy polling for `busy_poll` after activity
    /// (`crate::busy_poll`). Should none start, connections are served on the calling
    /// runtime instead, as they would be without these threads.
    pub(crate) async fn start(threads: usize, busy_poll: Option<Duration>) -> Arc<Self> {
        let mut workers = Vec::new();
        let mut stop = Vec::new();
        for i in 0..threads.max(1) {
            match spawn_thread(i, busy_poll).await {
                Ok((runtime, stopper)) => {
                    workers.push(Worker::new(runtime));
                    stop.push(stopper);
                }
                Err(e) => {
                    tracing::warn!(error = %e, started = i, "cannot start a proxy thread");
                    break;
                }
            }
        }
        if workers.is_empty() {
            workers.push(Worker::new(Handle::current()));
        }
        Arc::new(Workers {
            workers,
            _stop: stop,
        })
    }

    /// Places a new connection on the thread with the fewest: connections differ in length
    /// (a WebSocket may stay for hours), so a plain rotation could leave one thread with
    /// most of the open ones.
    pub(crate) fn place(self: &Arc<Self>) -> Placed {
        let index = least_loaded(
            self.workers
                .iter()
                .map(|w| w.connections.load(Ordering::Relaxed)),
        );
        self.workers[index]
            .connections
            .fetch_add(1, Ordering::Relaxed);
        Placed {
            workers: self.clone(),
            index,
        }
    }
}

/// The index of the smallest count, the first of equals.
fn least_loaded(counts: impl Iterator<Item = usize>) -> usize {
    counts
        .enumerate()
        .min_by_key(|&(_, n)| n)
        .map_or(0, |(i, _)| i)
}

/// A connection's place on one thread, counted until dropped.
pub(crate) struct Placed {
    workers: Arc<Workers>,
    index: usize,
}

impl Placed {
    fn worker(&self) -> &Worker {
        &self.workers.workers[self.index]
    }

    /// The idle backend connections that tasks on this thread may use.
    pub(crate) fn pool(&self) -> &Pool<BackendConn> {
        &self.worker().pool
    }

    /// Runs `task`, which gets this place, on its thread.
    pub(crate) fn spawn<F, T>(self, task: F)
    where
        F: FnOnce(Placed) -> T,
        T: Future<Output = ()> + Send + 'static,
    {
        let runtime = self.worker().runtime.clone();
        runtime.spawn(task(self));
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.worker().connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A thread with its own runtime, which runs until the sender returned is dropped.
async fn spawn_thread(
    i: usize,
    busy_poll: Option<Duration>,
) -> std::io::Result<(Handle, oneshot::Sender<()>)> {
    let (stop, stopped) = oneshot::channel::<()>();
    let (started, handle) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("proxy-{i}"))
        .spawn(move || {
            crate::slice::request_short();
            // Built on its own thread: a runtime must not be dropped in an async context,
            // which the caller's is.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started.send(Err(e));
                    return;
                }
            };
            if let Some(window) = busy_poll {
                runtime.spawn(crate::busy_poll::run(window));
            }
            if started.send(Ok(runtime.handle().clone())).is_ok() {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            }
        })?;
    let runtime = handle
        .await
        .map_err(|_| std::io::Error::other("the proxy thread ended while starting"))??;
    Ok((runtime, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_on_the_least_loaded_thread() {
        assert_eq!(least_loaded([3, 1, 2].into_iter()), 1);
        assert_eq!(least_loaded([0, 0].into_iter()), 0);
        assert_eq!(least_loaded([2, 2, 1, 1].into_iter()), 2);
        assert_eq!(least_loaded(std::iter::empty()), 0);
    }

    #[tokio::test]
    async fn a_placed_connection_counts_and_runs_on_its_thread() {
        let workers = Workers::start(2, None).await;
        let a = workers.place();
        let b = workers.place();
        assert_ne!(
            a.index, b.index,
            "the second connection goes to the idle thread"
        );
        let (tx, rx) = oneshot::channel();
        let a_index = a.index;
        a.spawn(|placed| async move {
            let name = std::thread::current().name().map(str::to_string);
            let _ = tx.send((name, placed));
        });
        let (name, _a) = rx.await.expect("the task ran");
        assert_eq!(name.as_deref(), Some(format!("proxy-{a_index}").as_str()));
        drop(b);
        let c = workers.place();
        assert_eq!(c.index, 1 - a_index, "a closed connection frees its place");
    }
}
