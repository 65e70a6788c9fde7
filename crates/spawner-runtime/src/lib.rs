//! Runtimes: the parts that start, watch and stop a backend on this machine. The
//! reconciler (in `spawner-server`) drives them through the [`Runtime`] trait and owns
//! every lifecycle decision; a runtime only does what it is told and reports what it saw.

pub mod docker;
pub mod ports;
pub mod process;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use spawner_core::lifecycle::Exit;
use spawner_core::{BackendId, BackendSpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use docker::{DockerOptions, DockerRuntime};
pub use ports::PortAllocator;
pub use process::ProcessRuntime;

/// The mode of the files a runtime writes (a backend's log): private to Spawner's user,
/// as everything in its data directory.
pub const LOG_FILE_MODE: u32 = 0o600;

/// What a runtime needs to start one backend.
#[derive(Debug, Clone)]
pub struct Launch {
    pub id: BackendId,
    pub spec: BackendSpec,
    /// The port the backend listens on; also in `env` as `PORT`.
    pub port: u16,
    /// The whole environment Spawner adds (`PORT`, `SPAWNER_*`, the spec's `env`).
    pub env: BTreeMap<String, String>,
    /// The command with `$(VAR)` references already expanded, if the spec has one.
    pub command: Option<Vec<String>>,
    /// Where the backend's stdout and stderr go (the logs route reads this file).
    pub log_path: PathBuf,
    /// This Spawner installation's id: marks what it started, so that a restart finds its
    /// own backends and only those.
    pub instance: String,
    /// Where the runtime says what a long start is doing ("pulling image …"), so that it
    /// shows in the backend's events instead of looking like a hang.
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// A runtime's own identity of a started backend (a pid and its start time, a container
/// id), stored with the backend so that a restarted Spawner can adopt it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Handle(pub serde_json::Value);

/// A started backend.
pub struct Started {
    pub handle: Handle,
    /// Where the proxy and the readiness probe reach it.
    pub address: SocketAddr,
    /// The network namespace it listens in (`/proc/PID/ns/net`), when not Spawner's own:
    /// readiness is watched there.
    pub netns: Option<PathBuf>,
    /// Resolves once it has exited.
    pub exited: BoxFuture<'static, Exit>,
    /// Said in the `Constructed` event (e.g. how long an image pull took).
    pub note: Option<String>,
}

/// Something a runtime finds of this installation's, by its marks (environment, labels).
#[derive(Debug, Clone)]
pub struct Owned {
    pub id: String,
    pub handle: Handle,
    /// A human-readable description for logs ("pid 1234", "container 3f2a…").
    pub describe: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The backend cannot be started as specified (missing program, bad working dir,
    /// image not found): the backend fails with this message as its reason.
    #[error("{0}")]
    Start(String),
    /// The runtime itself is unavailable or misbehaved.
    #[error("{0}")]
    Unavailable(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// How a backend is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: ask it to shut down.
    Term,
    /// SIGKILL: end it now.
    Kill,
}

#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `process` or `docker`: stored with each backend, shown in its record.
    fn name(&self) -> &'static str;

    /// Starts the backend. An `Err(RuntimeError::Start)` fails the backend with its message.
    async fn start(&self, launch: &Launch) -> Result<Started, RuntimeError>;

    /// Re-attaches to a backend started before a restart: `Some(exit)` if it still runs, or
    /// if it has ended and the runtime still knows how (the future then resolves at once);
    /// `None` if it is gone without a trace.
    async fn adopt(
        &self,
        id: &BackendId,
        handle: &Handle,
    ) -> Result<Option<BoxFuture<'static, Exit>>, RuntimeError>;

    /// Sends the signal to the backend (its whole process group or container).
    async fn signal(&self, handle: &Handle, signal: Signal) -> Result<(), RuntimeError>;

    /// Removes whatever is left once the backend has exited (stray processes of its group,
    /// the container). Idempotent.
    async fn cleanup(&self, handle: &Handle) -> Result<(), RuntimeError>;

    /// Everything of this installation's that the runtime can find, so that a restart can
    /// stop what the store does not know (nothing is left orphaned).
    async fn list_owned(&self, instance: &str) -> Result<Vec<Owned>, RuntimeError>;

    /// Removes what a backend with `idle_action: "sleep"` keeps across its sleeps (a
    /// container's named volume), once it has ended for good. Idempotent.
    async fn forget(&self, _instance: &str, _id: &BackendId) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// What this installation keeps across sleeps (named volumes), by backend id, so that
    /// a restart removes what no live backend needs. `handle` names the kept thing.
    async fn list_kept(&self, _instance: &str) -> Result<Vec<Owned>, RuntimeError> {
        Ok(Vec::new())
    }
}
