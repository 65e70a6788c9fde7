//! The control token of an embedded server, when `--token` gives none: made at the first
//! start and kept in the data directory's `token` file, readable by its owner alone, where
//! the CLI of the same user finds it. So no configuration leaves the control routes open
//! but the explicit `--no-token`.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The token's file in the data directory.
pub const TOKEN_FILE: &str = "token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the token {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the token {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token in {path} is not a token (at least 16 characters without spaces): delete the file to have a new one made")]
    Malformed { path: PathBuf },
    #[error("no randomness for a token: {0}")]
    Random(getrandom::Error),
}

/// The token in `data_dir`, made (0600) if there is none yet. A file others may read is
/// made private again, with a warning: whoever read it may drive the server.
pub fn load_or_create(data_dir: &Path) -> Result<String, TokenError> {
    let path = data_dir.join(TOKEN_FILE);
    match read(data_dir) {
        Ok(Some(token)) => {
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0o600);
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the token file was readable by others: made private (0600); if someone read it, delete it and restart to have a new token made"
                );
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                    |source| TokenError::Write {
                        path: path.clone(),
                        source,
                    },
                )?;
            }
            return Ok(token);
        }
        Ok(None) => {}
        Err(e) => return Err(e),
    }
    let token = spawner_api::login::generate_token().map_err(TokenError::Random)?;
    let write = |path: &Path| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        writeln!(file, "{token}")?;
        file.sync_all()
    };
    match write(&path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "made the control token");
            Ok(token)
        }
        // Made by another start at the same moment: that one is the token.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(data_dir)?.ok_or(TokenError::Malformed { path })
        }
        Err(source) => Err(TokenError::Write { path, source }),
    }
}

/// The token in `data_dir`, if there is one.
pub fn read(data_dir: &Path) -> Result<Option<String>, TokenError> {
    let path = data_dir.join(TOKEN_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TokenError::Read { path, source }),
    };
    let token = text.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenError::Malformed { path });
    }
    Ok(Some(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_read_again() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(read(dir.path()).expect("read").is_none());
        let token = load_or_create(dir.path()).expect("made");
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(dir.path()).expect("again"), token);
        assert_eq!(read(dir.path()).expect("read"), Some(token));
    }

    #[test]
    fn a_readable_file_is_made_private_a_bad_one_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(TOKEN_FILE);
        std::fs::write(&path, "0123456789abcdef0123\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(
            load_or_create(dir.path()).expect("token"),
            "0123456789abcdef0123"
        );
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "short\n").expect("write");
        assert!(matches!(
            load_or_create(dir.path()),
            Err(TokenError::Malformed { .. })
        ));
    }
}
