//! What a backend with `idle_action: "sleep"` keeps across its sleeps, so that the files it
//! wrote are there when it wakes: a process's working directory (its spec's, or one made for
//! it in the data directory), a container's named volume (the Docker runtime's). Told to
//! the backend as `SPAWNER_DATA_DIR`; removed once the backend has ended for good (what its
//! spec named is the user's, and stays).

use crate::app::App;
use crate::live::Live;
use spawner_core::spec::IdleAction;
use spawner_core::{BackendId, BackendSpec};
use spawner_runtime::RuntimeError;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

/// Whether the backend sleeps when idle (by its claim's spec, for a claimed pool member).
pub fn sleeps(app: &App, live: &Live) -> bool {
    let action = app
        .pools
        .claimed_spec(&live.id)
        .map_or(live.spec.idle_action, |s| s.idle_action);
    action == IdleAction::Sleep
}

/// The directory made for a sleeping process backend whose spec names no `working_dir`.
fn made_dir(app: &App, id: &str) -> PathBuf {
    app.config.data_dir.join("files").join(id)
}

/// Where the backend's kept files are, as `SPAWNER_DATA_DIR` tells it (`None` for one that
/// does not sleep); a process without a `working_dir` of its own gets one made here, set
/// in `spec` (the launch's copy).
pub fn data_dir(
    app: &App,
    live: &Live,
    spec: &mut BackendSpec,
) -> Result<Option<String>, RuntimeError> {
    if !sleeps(app, live) {
        return Ok(None);
    }
    if live.runtime != "process" {
        return Ok(Some(spawner_runtime::docker::data_mount(spec).to_string()));
    }
    let dir = match &spec.executable.working_dir {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = made_dir(app, &live.id);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| RuntimeError::Io {
                    context: format!("making its data directory {}", dir.display()),
                    source,
                })?;
            dir
        }
    };
    let dir = std::path::absolute(&dir).map_err(|source| RuntimeError::Io {
        context: format!("resolving its working directory {}", dir.display()),
        source,
    })?;
    let text = dir.to_string_lossy().into_owned();
    if spec.executable.working_dir.is_none() {
        spec.executable.working_dir = Some(text.clone());
    }
    Ok(Some(text))
}

/// Removes what an ended backend kept: its volume, or the directory made for it.
pub async fn forget(app: &App, live: &Live) {
    if !sleeps(app, live) {
        return;
    }
    if live.runtime == "process" {
        let dir = made_dir(app, &live.id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(backend = %live.id, error = %e, dir = %dir.display(), "could not remove its data directory")
            }
        }
        return;
    }
    let (Some(runtime), Ok(id)) = (
        app.runtimes.by_name(live.runtime),
        BackendId::parse(&live.id),
    ) else {
        return;
    };
    if let Err(e) = runtime.forget(&app.instance, &id).await {
        tracing::warn!(backend = %live.id, error = %e, "could not remove what it kept");
    }
}

/// Removes the directories made for process backends that are no longer live (they ended
/// while Spawner was down, before it could): at start-up.
pub fn forget_stale_dirs(app: &App, live_ids: &std::collections::HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(app.config.data_dir.join("files")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str() else { continue };
        if live_ids.contains(id) || BackendId::parse(id).is_err() {
            continue;
        }
        tracing::warn!(backend = %id, "removing the data directory of a backend that is not live");
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(backend = %id, error = %e, "could not remove it");
        }
    }
}
