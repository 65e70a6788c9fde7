//! Warm pools in the store: each pool's spec, and which backends belong to which pool and
//! when they were claimed. A claim is one transaction on the writing connection, which is
//! what makes concurrent claims of one key give one backend.

use super::{live_with_key, row_of, Result, Row, Store, StoreError, COLUMNS};
use rusqlite::{params, OptionalExtension};
use spawner_core::pool::{ClaimRequest, PoolSize, PoolSpec};
use spawner_core::time::{now_millis, Millis};
use spawner_core::BackendSpec;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pools (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pool_members (
    backend_id TEXT PRIMARY KEY REFERENCES backends(id) ON DELETE CASCADE,
    pool TEXT NOT NULL,
    claimed_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pool_members_unclaimed ON pool_members(pool) WHERE claimed_at IS NULL;
";

/// One live backend of a pool, as stored.
#[derive(Debug, Clone)]
pub struct Member {
    pub backend_id: String,
    pub pool: String,
    pub claimed_at: Option<Millis>,
    /// Its spec (the claimed one once claimed).
    pub spec: BackendSpec,
}

/// The outcome of a claim.
pub enum Claim {
    /// The live backend with the claim's key (claimed or not).
    Existing(Row),
    /// A Ready backend of the pool, now the claim's, at this time.
    Claimed(Row, Millis),
    /// The pool has no Ready unclaimed backend.
    NoneReady,
}

fn corrupt(name: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        id: name.to_string(),
        what: e.to_string(),
    }
}

impl Store {
    /// Records a new pool; `false` if one has this name.
    pub fn create_pool(&self, spec: &PoolSpec) -> Result<bool> {
        let json = serde_json::to_string(spec).map_err(|e| corrupt(&spec.name, e))?;
        self.with(|c| {
            let n = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO pools (name, spec, created_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![spec.name, json, now_millis()])?;
            Ok(n == 1)
        })
    }

    /// Every pool, by name.
    pub fn pools(&self) -> Result<Vec<PoolSpec>> {
        let raw: Vec<(String, String)> = self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT name, spec FROM pools ORDER BY name")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        raw.into_iter()
            .map(|(name, json)| serde_json::from_str(&json).map_err(|e| corrupt(&name, e)))
            .collect()
    }

    /// Sets a pool's sizes; the pool as it is now, or `None` if there is no such pool.
    pub fn resize_pool(&self, name: &str, size: PoolSize) -> Result<Option<PoolSpec>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let json: Option<String> = tx
                .prepare_cached("SELECT spec FROM pools WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?;
            let Some(json) = json else {
                return Ok(None);
            };
            let mut spec: PoolSpec = serde_json::from_str(&json).map_err(|e| corrupt(name, e))?;
            spec.min_ready = size.min_ready;
            spec.max = size.max;
            let json = serde_json::to_string(&spec).map_err(|e| corrupt(name, e))?;
            tx.prepare_cached("UPDATE pools SET spec = ?2 WHERE name = ?1")?
                .execute(params![name, json])?;
            tx.commit()?;
            Ok(Some(spec))
        })
    }

    /// Removes a pool and records a stop of each of its unclaimed live backends, in one
    /// transaction; the ids to stop, or `None` if there is no such pool. Claimed backends
    /// are their users' and keep running.
    pub fn drain_pool(&self, name: &str, reason: &str) -> Result<Option<Vec<String>>> {
        self.with(|c| {
            let tx = c.transaction()?;
            if tx
                .prepare_cached("DELETE FROM pools WHERE name = ?1")?
                .execute([name])?
                == 0
            {
                return Ok(None);
            }
            let ids = tx
                .prepare_cached(
                    "SELECT m.backend_id FROM pool_members m JOIN backends b ON b.id = m.backend_id \
                     WHERE m.pool = ?1 AND m.claimed_at IS NULL AND b.terminal = 0 AND b.stop_reason IS NULL",
                )?
                .query_map([name], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for id in &ids {
                tx.prepare_cached("UPDATE backends SET stop_reason = COALESCE(stop_reason, ?2) WHERE id = ?1")?
                    .execute(params![id, reason])?;
            }
            tx.commit()?;
            Ok(Some(ids))
        })
    }

    /// Records a new backend of `pool` in `Submitted`, with no key (it gets one when claimed).
    pub fn insert_member(
        &self,
        id: &str,
        pool: &str,
        spec: &BackendSpec,
        runtime: &str,
    ) -> Result<Row> {
        let json = serde_json::to_string(spec).map_err(|e| corrupt(id, e))?;
        self.with(|c| {
            let tx = c.transaction()?;
            let mut spec = spec.clone();
            spec.key = None;
            let mut row = super::insert_submitted(&tx, id.to_string(), spec, &json, runtime)?;
            row.pool = Some(pool.to_string());
            tx.prepare_cached("INSERT INTO pool_members (backend_id, pool) VALUES (?1, ?2)")?
                .execute(params![id, pool])?;
            tx.commit()?;
            Ok(row)
        })
    }

    /// Claims the oldest Ready unclaimed backend of `pool` for `claim`, in one transaction:
    /// with a key that a live backend already has, that backend instead.
    pub fn claim(&self, claim: &ClaimRequest) -> Result<Claim> {
        self.with(|c| {
            let tx = c.transaction()?;
            if let Some(row) = live_with_key(&tx, claim.key.as_deref())? {
                return Ok(Claim::Existing(row));
            }
            let found = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM backends WHERE id = (\
                     SELECT m.backend_id FROM pool_members m JOIN backends b ON b.id = m.backend_id \
                     WHERE m.pool = ?1 AND m.claimed_at IS NULL AND b.state = 'Ready' AND b.stop_reason IS NULL \
                     ORDER BY b.created_at, b.id LIMIT 1)"
                ))?
                .query_row([&claim.pool], row_of)
                .optional()?;
            let Some(mut row) = found else {
                return Ok(Claim::NoneReady);
            };
            let now = now_millis();
            row.spec = claim.claimed_spec(&row.spec);
            row.key = claim.key.clone();
            row.claimed_at = Some(now);
            let json = serde_json::to_string(&row.spec).map_err(|e| corrupt(&row.id, e))?;
            tx.prepare_cached("UPDATE backends SET key = ?2, spec = ?3 WHERE id = ?1")?
                .execute(params![row.id, row.key, json])?;
            tx.prepare_cached("UPDATE pool_members SET claimed_at = ?2 WHERE backend_id = ?1")?
                .execute(params![row.id, now])?;
            tx.commit()?;
            Ok(Claim::Claimed(row, now))
        })
    }

    /// A claimed backend whose claim hook refused: its key is freed for another claim and
    /// its stop recorded, in one transaction.
    pub fn refuse_claim(&self, id: &str, reason: &str) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("UPDATE backends SET key = NULL, stop_reason = COALESCE(stop_reason, ?2) WHERE id = ?1")?
                .execute(params![id, reason])?;
            Ok(())
        })
    }

    /// Every live backend that belongs to a pool (what a restart gives back to its pool).
    pub fn members(&self) -> Result<Vec<Member>> {
        let raw: Vec<(String, String, Option<Millis>, String)> = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT m.backend_id, m.pool, m.claimed_at, b.spec FROM pool_members m \
                 JOIN backends b ON b.id = m.backend_id WHERE b.terminal = 0",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        raw.into_iter()
            .map(|(backend_id, pool, claimed_at, spec)| {
                Ok(Member {
                    spec: serde_json::from_str(&spec).map_err(|e| corrupt(&backend_id, e))?,
                    backend_id,
                    pool,
                    claimed_at,
                })
            })
            .collect()
    }
}
