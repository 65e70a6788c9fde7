//! Who holds access to each token-mode backend (`spawner_proxy::access::Grants` in memory),
//! kept so that a restart keeps every user's cookie working. Rows go with their backend.

use super::{Result, Store};
use rusqlite::{params, OptionalExtension};
use spawner_core::time::Millis;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS access_grants (
    backend_id TEXT NOT NULL REFERENCES backends(id) ON DELETE CASCADE,
    user TEXT NOT NULL,
    generation INTEGER NOT NULL,
    user_data TEXT,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (backend_id, user)
) WITHOUT ROWID;
";

/// One stored grant.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredGrant {
    pub user: String,
    pub generation: u64,
    pub user_data: Option<serde_json::Value>,
    pub granted_at: Millis,
}

impl Store {
    /// Records `user`'s grant unless they hold one; the grant they hold either way (a
    /// concurrent first connect of the same user gets the same generation).
    pub async fn grant(&self, backend: &str, fresh: StoredGrant) -> Result<StoredGrant> {
        let backend = backend.to_string();
        self.write(move |c| {
            let data = fresh.user_data.as_ref().map(|d| d.to_string());
            c.prepare_cached(
                "INSERT OR IGNORE INTO access_grants (backend_id, user, generation, user_data, granted_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                backend,
                fresh.user,
                fresh.generation as i64,
                data,
                fresh.granted_at
            ])?;
            Ok(c.prepare_cached(
                "SELECT user, generation, user_data, granted_at FROM access_grants \
                 WHERE backend_id = ?1 AND user = ?2",
            )?
            .query_row(params![backend, fresh.user], grant_of)?)
        })
        .await
    }

    /// Removes `user`'s grant; whether there was one.
    pub async fn revoke(&self, backend: &str, user: &str) -> Result<bool> {
        let (backend, user) = (backend.to_string(), user.to_string());
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM access_grants WHERE backend_id = ?1 AND user = ?2")?
                .execute(params![backend, user])?;
            Ok(n > 0)
        })
        .await
    }

    /// Every grant of a backend.
    pub fn grants(&self, backend: &str) -> Result<Vec<StoredGrant>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT user, generation, user_data, granted_at FROM access_grants \
                 WHERE backend_id = ?1 ORDER BY user",
            )?;
            let rows = stmt.query_map([backend], grant_of)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Whether `user` holds a grant of `backend`.
    pub fn has_grant(&self, backend: &str, user: &str) -> Result<bool> {
        self.read(|c| {
            Ok(
                c.prepare_cached(
                    "SELECT 1 FROM access_grants WHERE backend_id = ?1 AND user = ?2",
                )?
                .query_row(params![backend, user], |_| Ok(()))
                .optional()?
                .is_some(),
            )
        })
    }
}

fn grant_of(r: &rusqlite::Row) -> rusqlite::Result<StoredGrant> {
    let data: Option<String> = r.get(2)?;
    Ok(StoredGrant {
        user: r.get(0)?,
        generation: r.get::<_, i64>(1)? as u64,
        user_data: data.and_then(|d| serde_json::from_str(&d).ok()),
        granted_at: r.get(3)?,
    })
}
