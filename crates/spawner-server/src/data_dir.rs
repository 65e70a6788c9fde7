//! The data directory: private to the user Spawner runs as (every spec's environment and
//! every backend's keepalive secret are in it), and used by one `spawner serve` at a time.
//!
//! Two servers on one directory would each adopt the other's backends and write events
//! onto them, and a terminate answered by one would leave the backend to the other. The
//! lock is an advisory `flock` on `spawner.lock` in the directory, which also says who holds
//! it (pid and listen address). The kernel releases it when its holder exits, however it
//! exits (a `kill -9` included), and it is not inherited by backends: the file is opened
//! close-on-exec.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of the directory and of the directories in it.
const DIR_MODE: u32 = 0o700;
/// The mode of every file Spawner writes in it.
const FILE_MODE: u32 = 0o600;
const LOCK_FILE: &str = "spawner.lock";
/// The database and SQLite's files beside it (created with the database's own mode).
const DATABASE_FILES: [&str; 3] = ["spawner.db", "spawner.db-wal", "spawner.db-shm"];

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "the data directory {dir} is in use by another `spawner serve` ({holder}): stop that one first, \
         or give this one a directory of its own with --data-dir (or SPAWNER_DATA_DIR)"
    )]
    InUse { dir: PathBuf, holder: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
    let path = path.to_path_buf();
    move |source| DataDirError::Io { what, path, source }
}

/// The data directory, locked for as long as this lives.
#[derive(Debug)]
pub struct DataDir {
    _lock: File,
}

/// Who holds the lock, as written in the lock file.
#[derive(serde::Serialize, serde::Deserialize)]
struct Holder {
    pid: u32,
    listen: String,
}

impl DataDir {
    /// Makes `dir` (and `dir/logs`) private, creating it if need be, and takes its lock
    /// for this server, listening on `listen`; fails naming the server that holds it.
    pub fn open(dir: &Path, listen: SocketAddr) -> Result<DataDir, DataDirError> {
        private_dir(dir)?;
        let lock = lock(dir, listen)?;
        private_dir(&dir.join("logs"))?;
        // The database made private before SQLite opens it: its log and shared memory
        // files are created with its mode.
        for name in DATABASE_FILES {
            let path = dir.join(name);
            if name == "spawner.db" {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(FILE_MODE)
                    .open(&path)
                    .map_err(io("creating the database", &path))?;
            }
            private_file(&path)?;
        }
        let logs = dir.join("logs");
        let mut tightened = 0usize;
        for entry in std::fs::read_dir(&logs)
            .map_err(io("reading", &logs))?
            .flatten()
        {
            if private_file(&entry.path())? {
                tightened += 1;
            }
        }
        if tightened > 0 {
            tracing::warn!(
                "made {tightened} log files in {} private to their owner (mode 0600)",
                logs.display()
            );
        }
        Ok(DataDir { _lock: lock })
    }
}

/// Creates `dir` with mode 0700 (its parents as the system makes them), or tightens an
/// existing one that others can read.
fn private_dir(dir: &Path) -> Result<(), DataDirError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("creating the data directory", dir)(e)),
    }
    let meta = std::fs::metadata(dir).map_err(io("reading", dir))?;
    if !meta.is_dir() {
        return Err(io("the data directory must be a directory:", dir)(
            std::io::Error::from(std::io::ErrorKind::NotADirectory),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(io("making private (mode 0700)", dir))?;
        tracing::warn!(
            "made {} private to its owner: mode {mode:04o} is now 0700 (it holds every spec's environment and every backend's keepalive secret)",
            dir.display()
        );
    }
    Ok(())
}

/// Sets an existing file's mode to 0600 if others could read it; whether it did.
fn private_file(path: &Path) -> Result<bool, DataDirError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("reading", path)(e)),
    };
    if !meta.is_file() || meta.mode() & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
        .map_err(io("making private (mode 0600)", path))?;
    Ok(true)
}

/// Takes the directory's lock and writes who holds it, or says who does.
fn lock(dir: &Path, listen: SocketAddr) -> Result<File, DataDirError> {
    let path = dir.join(LOCK_FILE);
    // Close-on-exec (std opens every file so): a backend never holds the lock.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io("opening the lock file", &path))?;
    private_file(&path)?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io("locking", &path)(e));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let holder = serde_json::from_str::<Holder>(&text).map_or_else(
            |_| "its pid and address are not written yet".to_string(),
            |h| format!("pid {}, listening on {}", h.pid, h.listen),
        );
        return Err(DataDirError::InUse {
            dir: dir.to_path_buf(),
            holder,
        });
    }
    let holder = Holder {
        pid: std::process::id(),
        listen: listen.to_string(),
    };
    let text = serde_json::to_string(&holder).unwrap_or_default();
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(format!("{text}\n").as_bytes()))
        .and_then(|()| file.flush())
        .map_err(io("writing the lock file", &path))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn one_holder_at_a_time_named_to_the_next() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let first = DataDir::open(&dir, addr(8080)).expect("first");
        let err = DataDir::open(&dir, addr(8081)).expect_err("second");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id()))
                && text.contains("127.0.0.1:8080"),
            "{text}"
        );
        drop(first);
        DataDir::open(&dir, addr(8081)).expect("free again");
    }

    #[test]
    fn the_directory_and_its_files_are_made_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("logs")).expect("dirs");
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.join("logs/a.log"), "x").expect("log");
        std::fs::set_permissions(dir.join("logs/a.log"), Permissions::from_mode(0o644))
            .expect("chmod");
        let _held = DataDir::open(&dir, addr(1)).expect("open");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("logs")), 0o700);
        for f in ["logs/a.log", "spawner.db", "spawner.lock"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
    }
}
