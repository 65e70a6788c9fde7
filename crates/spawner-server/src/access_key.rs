//! The master key of per-user access (`spawner_proxy::access`): 32 random bytes in the data
//! directory's `access.key` (0600, hex), made at the first start as the control token is, so
//! that access cookies and connect URLs outlive a restart. Replacing the file (and
//! restarting) invalidates every cookie and connect URL at once (docs/operations.md).

use spawner_proxy::access::MasterKey;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The key's file in the data directory.
pub const KEY_FILE: &str = "access.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the access key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the access key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the access key in {path} is not 64 hex digits: delete the file to have a new one made (every access cookie and connect URL then stops working)")]
    Malformed { path: PathBuf },
    #[error("no randomness for the access key")]
    Random,
}

/// The key in `data_dir`, made (0600) if there is none yet; a file others may read is made
/// private again, with a warning.
pub fn load_or_create(data_dir: &Path) -> Result<MasterKey, KeyError> {
    let path = data_dir.join(KEY_FILE);
    if let Some(key) = read(&path)? {
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o600);
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"),
                "the access key was readable by others: made private (0600); if someone read it, replace it (docs/operations.md, \"Per-user access\")");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| KeyError::Write {
                    path: path.clone(),
                    source,
                },
            )?;
        }
        return Ok(key);
    }
    let bytes = MasterKey::generate_bytes().map_err(|_| KeyError::Random)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let write = |path: &Path| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        writeln!(file, "{hex}")?;
        file.sync_all()
    };
    match write(&path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "made the access key");
            MasterKey::from_bytes(&bytes).map_err(|_| KeyError::Malformed { path })
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(&path)?.ok_or(KeyError::Malformed { path })
        }
        Err(source) => Err(KeyError::Write { path, source }),
    }
}

fn read(path: &Path) -> Result<Option<MasterKey>, KeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let malformed = || KeyError::Malformed {
        path: path.to_path_buf(),
    };
    let hex = text.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(malformed());
    }
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| malformed())?;
    MasterKey::from_bytes(&bytes)
        .map(Some)
        .map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_kept_and_a_bad_one_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let first = load_or_create(dir.path()).expect("made");
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(dir.path()).expect("read");
        let cookie = first.backend_key("abc").mint_cookie("u", 1);
        assert!(again
            .backend_key("abc")
            .verify_cookie(cookie.as_bytes())
            .is_some());
        std::fs::write(&path, "zz\n").expect("write");
        assert!(matches!(
            load_or_create(dir.path()),
            Err(KeyError::Malformed { .. })
        ));
    }
}
