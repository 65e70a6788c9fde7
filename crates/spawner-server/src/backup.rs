//! `spawner backup`: a consistent copy of a data directory's state, taken while the server
//! runs. The database is copied by SQLite itself (`VACUUM INTO`, in one read transaction, so
//! the copy is a committed state, never half a write), and the secrets beside it (the token,
//! the access key) as they are. Backends' logs are not copied: they are output, not state.
//!
//! Restoring is the operator's: stop the server, put the copy's files in the data
//! directory, start it (docs/operations.md, "Backup and restore").

use rusqlite::{Connection, OpenFlags};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The files of a data directory besides the database that a restore needs.
const SECRETS: &[&str] = &["token", "access.key"];

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no database at {0}: is this the data directory of `spawner serve` (--data-dir)?")]
    NoDatabase(PathBuf),
    #[error("{0} exists and is not empty: back up into a new directory")]
    NotEmpty(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("copying the database: {0}")]
    Sql(#[from] rusqlite::Error),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io { what, path, source }
}

/// Copies `data_dir`'s state into `out` (made 0700; it must not exist or be empty); the
/// names of the files written.
pub fn backup(data_dir: &Path, out: &Path) -> Result<Vec<String>, BackupError> {
    let db = data_dir.join("spawner.db");
    if !db.exists() {
        return Err(BackupError::NoDatabase(db));
    }
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(io("reading", out))?;
        if entries.next().is_some() {
            return Err(BackupError::NotEmpty(out.to_path_buf()));
        }
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out)
            .map_err(io("creating", out))?;
    }
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))
        .map_err(io("restricting", out))?;

    let copy = out.join("spawner.db");
    // Made empty and 0600 before SQLite writes into it (it takes an empty file): the copy
    // holds every spec's env.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&copy)
        .map_err(io("creating", &copy))?;
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let target = copy.to_string_lossy().to_string();
    conn.execute("VACUUM INTO ?1", [target])?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600))
        .map_err(io("restricting", &copy))?;
    let mut written = vec!["spawner.db".to_string()];

    for name in SECRETS {
        let from = data_dir.join(name);
        if !from.exists() {
            continue;
        }
        let to = out.join(name);
        let bytes = std::fs::read(&from).map_err(io("reading", &from))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&to)
            .map_err(io("creating", &to))?;
        std::io::Write::write_all(&mut file, &bytes).map_err(io("writing", &to))?;
        written.push((*name).to_string());
    }
    Ok(written)
}
