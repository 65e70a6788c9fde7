//! Which runtimes this server has, and which one a spec asks for.

use spawner_core::BackendSpec;
pub use spawner_runtime::{DockerOptions, DockerRuntime, ProcessRuntime, Runtime};
use std::sync::Arc;

/// The runtimes of one embedded server. A runtime that could not be set up is kept with
/// the reason, so that `serve` can say why and a spawn that needs it gets a clear 4xx.
pub struct Runtimes {
    pub process: Arc<dyn Runtime>,
    pub docker: Result<Arc<dyn Runtime>, String>,
}

impl Runtimes {
    /// `process`, and the Docker runtime if `docker` is given.
    pub fn new(process: ProcessRuntime, docker: Result<Arc<dyn Runtime>, String>) -> Self {
        Runtimes {
            process: Arc::new(process),
            docker,
        }
    }

    /// An image runs in a container; a command alone runs as a local process.
    pub fn for_spec(&self, spec: &BackendSpec) -> Result<Arc<dyn Runtime>, String> {
        if spec.executable.image.is_some() {
            self.docker.clone().map_err(|why| {
                format!("executable.image needs the Docker runtime, which is unavailable: {why}")
            })
        } else {
            Ok(self.process.clone())
        }
    }

    /// The runtime a stored backend was started with.
    pub fn by_name(&self, name: &str) -> Option<Arc<dyn Runtime>> {
        match name {
            "process" => Some(self.process.clone()),
            "docker" => self.docker.as_ref().ok().cloned(),
            _ => None,
        }
    }

    /// One line per runtime for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        vec![
            "runtime process: available".to_string(),
            match &self.docker {
                Ok(_) => "runtime docker: available".to_string(),
                Err(why) => format!("runtime docker: unavailable ({why})"),
            },
        ]
    }
}
