//! The durable state of the embedded server: every backend, its spec and its events, in
//! one SQLite file in WAL mode. Every write runs on one connection, owned by the writer
//! thread (`crate::writer`), which is also what makes get-or-create by key atomic; writes
//! waiting together share one commit, and a write is answered once it is committed. Reads
//! go to connections of their own, so they never wait for a write.

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use spawner_core::time::{now_millis, Millis};
use spawner_core::{BackendSpec, Event, State};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

mod checkpoint;
pub mod grants;
pub mod pools;
use crate::writer::Writer;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the disk of the data directory is full ({0})")]
    Full(rusqlite::Error),
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
    #[error("record {id} cannot be stored: {what}")]
    Corrupt { id: String, what: String },
    #[error("the database lock was poisoned by a panic")]
    Poisoned,
    #[error("the store's writer thread has stopped")]
    Stopped,
    #[error(
        "the database was written by a newer Spawner (schema {found}; this one knows up to \
         {SCHEMA_VERSION}): run that version, or restore a backup made by this one \
         (docs/operations.md, Upgrades)"
    )]
    Newer { found: u32 },
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl From<rusqlite::Error> for StoreError {
    /// A write refused for want of space is told apart: the API answers it with 503
    /// `storage_full`, and it passes once space is freed.
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e),
            _ => StoreError::Sql(e),
        }
    }
}

impl StoreError {
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full(_))
    }

    /// The same failure again, for each write of a batch whose commit failed.
    pub(crate) fn duplicate(&self) -> StoreError {
        fn copy(e: &rusqlite::Error) -> rusqlite::Error {
            match e {
                rusqlite::Error::SqliteFailure(code, msg) => {
                    rusqlite::Error::SqliteFailure(*code, msg.clone())
                }
                other => rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                    Some(other.to_string()),
                ),
            }
        }
        match self {
            StoreError::Full(e) => StoreError::Full(copy(e)),
            StoreError::Sql(e) => StoreError::Sql(copy(e)),
            StoreError::Corrupt { id, what } => StoreError::Corrupt {
                id: id.clone(),
                what: what.clone(),
            },
            StoreError::Poisoned => StoreError::Poisoned,
            StoreError::Stopped => StoreError::Stopped,
            StoreError::Newer { found } => StoreError::Newer { found: *found },
        }
    }
}

/// One backend as stored.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub key: Option<String>,
    pub spec: BackendSpec,
    pub state: State,
    pub created_at: Millis,
    pub runtime: String,
    pub handle: Option<serde_json::Value>,
    pub address: Option<String>,
    pub exit_code: Option<i32>,
    /// Why a stop was asked for, and whether hard: kept so that a restart finishes it. Or
    /// a sleep pending ([`SLEEP_PENDING`] and its reason), which a restart finishes too.
    pub stop_reason: Option<String>,
    pub stop_hard: bool,
    /// The reason of its last event, if it has one.
    pub reason: Option<String>,
    /// The warm pool it was started for, and when a claim took it (`pool_members`).
    pub pool: Option<String>,
    pub claimed_at: Option<Millis>,
}

/// Where a backend stands in the lists' order: newest first, then by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub created_at: Millis,
    pub id: String,
}

impl Row {
    pub fn position(&self) -> Position {
        Position {
            created_at: self.created_at,
            id: self.id.clone(),
        }
    }
}

/// The outcome of an insert with a key.
pub enum Inserted {
    New(Row),
    Existing(Row),
}

pub struct Store {
    /// The one connection that writes, on its thread.
    writer: Writer,
    /// Connections that only read: in WAL mode they see every committed write and never
    /// wait for a write in progress, so reading a record does not queue behind a storm of
    /// spawns.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Copies the log into the database beside the writer (last: the last connection
    /// closed checkpoints what is left).
    _checkpointer: checkpoint::Checkpointer,
}

/// Reading connections; a read finds one free or waits for one.
const READERS: usize = 2;

/// The page cache of each connection, in KiB, instead of SQLite's 2,000: the memory the
/// store holds stays small and steady (about 2 MiB for its four connections). In WAL mode a
/// reader empties its cache whenever it begins reading after a write, so a larger one
/// serves a single read; the writer's holds the tables' inner pages, and a page it misses
/// is read from the operating system's cache of the file. With the default, what the
/// caches held after bursts of writes and reads went from 1 to 9 MiB and back.
const CACHE_KIB: u32 = 512;

/// How a sleep pending starts in the stop's column ([`Store::sleep_pending`]).
pub const SLEEP_PENDING: &str = "sleep pending: ";

/// The schema this build writes. It changes by additions made at open (tables, indexes,
/// `IF NOT EXISTS`), never by rewriting what older releases wrote, so a database of any
/// earlier release opens and is brought forward; its number is kept in `meta` so that an
/// older release refuses a newer database instead of misreading it (and killing the
/// processes of backends it does not know). 1: every release before the number was kept;
/// 2: the lists' index with state, terminal and key; 3: the access grants.
pub const SCHEMA_VERSION: u32 = 3;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
PRAGMA temp_store = MEMORY;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS backends (
    id TEXT PRIMARY KEY,
    key TEXT,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    terminal INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    runtime TEXT NOT NULL,
    handle TEXT,
    address TEXT,
    exit_code INTEGER,
    stop_reason TEXT,
    stop_hard INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS backends_live_key ON backends(key) WHERE key IS NOT NULL AND terminal = 0;
CREATE INDEX IF NOT EXISTS backends_live ON backends(terminal);
-- /metrics counts backends by state: from this index alone, not a scan and sort of every record.
CREATE INDEX IF NOT EXISTS backends_state ON backends(state);
-- Lists, newest first, a page at a time: read in this order from the index, never sorted
-- (a sort of every record carries every spec with it), and filtered on the index's own
-- columns (a record's state is stored after its spec: read from the record, a filter
-- follows every spec's overflow pages to it, 60 ms instead of 0.4 for 3,000 of 64 KiB).
CREATE INDEX IF NOT EXISTS backends_list ON backends(created_at DESC, id, state, terminal, key);
CREATE TABLE IF NOT EXISTS events (
    backend_id TEXT NOT NULL REFERENCES backends(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    time INTEGER NOT NULL,
    reason TEXT,
    exit_code INTEGER,
    PRIMARY KEY (backend_id, seq)
) WITHOUT ROWID;
";

const COLUMNS: &str = "id, key, spec, state, created_at, runtime, handle, address, exit_code, stop_reason, stop_hard, \
     (SELECT reason FROM events WHERE backend_id = backends.id ORDER BY seq DESC LIMIT 1), \
     (SELECT pool FROM pool_members WHERE backend_id = backends.id), \
     (SELECT claimed_at FROM pool_members WHERE backend_id = backends.id)";

/// A column whose text does not parse as what it should hold.
fn corrupt(col: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let spec: String = r.get(2)?;
    let state: String = r.get(3)?;
    let handle: Option<String> = r.get(6)?;
    Ok(Row {
        id: r.get(0)?,
        key: r.get(1)?,
        spec: serde_json::from_str(&spec).map_err(|e| corrupt(2, e))?,
        state: state.parse().map_err(|e| corrupt(3, e))?,
        created_at: r.get(4)?,
        runtime: r.get(5)?,
        handle: handle
            .map(|h| serde_json::from_str(&h))
            .transpose()
            .map_err(|e| corrupt(6, e))?,
        address: r.get(7)?,
        exit_code: r.get(8)?,
        stop_reason: r.get(9)?,
        stop_hard: r.get::<_, i64>(10)? != 0,
        reason: r.get(11)?,
        pool: r.get(12)?,
        claimed_at: r.get(13)?,
    })
}

fn event_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let state: String = r.get(1)?;
    Ok(Event {
        seq: r.get(0)?,
        state: state.parse().map_err(|e| corrupt(1, e))?,
        time: r.get(2)?,
        reason: r.get(3)?,
        exit_code: r.get(4)?,
    })
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Read before anything is written: a newer database is left exactly as it was.
        let found = schema_version(&conn)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Newer { found });
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(pools::SCHEMA)?;
        conn.execute_batch(KEEPALIVE_SCHEMA)?;
        conn.execute_batch(grants::SCHEMA)?;
        if found < SCHEMA_VERSION {
            if found > 0 || has_backends(&conn)? {
                tracing::info!(
                    from = found.max(1),
                    to = SCHEMA_VERSION,
                    "database schema brought forward"
                );
            }
            conn.execute(
                "INSERT INTO meta (name, value) VALUES ('schema', ?1) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [SCHEMA_VERSION.to_string()],
            )?;
        }
        // Checkpoints are the checkpointer's; this threshold only bounds the log if it fails.
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {}",
            checkpoint::WRITER_FALLBACK_PAGES
        ))?;
        // Every statement of the write path is prepared once and kept.
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(&format!("PRAGMA cache_size = -{CACHE_KIB}"))?;
        let readers = (0..READERS)
            .map(|_| {
                let r = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                r.busy_timeout(std::time::Duration::from_secs(5))?;
                r.execute_batch(&format!("PRAGMA cache_size = -{CACHE_KIB}"))?;
                Ok(Mutex::new(r))
            })
            .collect::<Result<Vec<_>>>()?;
        let thread_failed = |what: &str, e: std::io::Error| {
            StoreError::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                Some(format!("starting the {what} thread: {e}")),
            ))
        };
        let writer = Writer::start(conn).map_err(|e| thread_failed("writer", e))?;
        let checkpointer =
            checkpoint::Checkpointer::start(path).map_err(|e| thread_failed("checkpoint", e))?;
        Ok(Store {
            writer,
            readers,
            next_reader: AtomicUsize::new(0),
            _checkpointer: checkpointer,
        })
    }

    /// Runs `f` on the writing connection (its own transactions), blocking the calling
    /// thread until it is done: for start-up and rare writes.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        self.writer.with(f)
    }

    /// Runs `f` in the writer's next transaction, shared with the other writes waiting
    /// then; answers once that has committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.write(f).await
    }

    /// Runs a read on a reading connection: a free one if any, else the next in turn.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Ok(conn) = self.readers[(start + i) % self.readers.len()].try_lock() {
                return f(&conn);
            }
        }
        let conn = self.readers[start % self.readers.len()]
            .lock()
            .map_err(|_| StoreError::Poisoned)?;
        f(&conn)
    }

    /// This installation's id, made on first use: marks its processes and containers.
    pub fn instance_id(&self, fresh: impl FnOnce() -> String) -> Result<String> {
        self.with(|c| {
            let found: Option<String> = c
                .query_row("SELECT value FROM meta WHERE name = 'instance'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(id) = found {
                return Ok(id);
            }
            let id = fresh();
            c.prepare_cached("INSERT INTO meta (name, value) VALUES ('instance', ?1)")?
                .execute([&id])?;
            Ok(id)
        })
    }

    /// Records a new backend in `Submitted`, or returns the live one with the same key.
    pub async fn insert(
        &self,
        id: &str,
        spec: &BackendSpec,
        runtime: &'static str,
    ) -> Result<Inserted> {
        let spec_json = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt {
            id: id.to_string(),
            what: e.to_string(),
        })?;
        let (id, spec) = (id.to_string(), spec.clone());
        self.write(move |tx| {
            if let Some(row) = live_with_key(tx, spec.key.as_deref())? {
                return Ok(Inserted::Existing(row));
            }
            Ok(Inserted::New(insert_submitted(
                tx, id, spec, &spec_json, runtime,
            )?))
        })
        .await
    }

    /// Moves a backend through `states` in order, skipping any the lifecycle rules refuse,
    /// in one transaction. Returns the events recorded.
    pub async fn transition(
        &self,
        id: &str,
        states: &[(State, Option<String>)],
        exit_code: Option<i32>,
    ) -> Result<Vec<Event>> {
        let (id, states) = (id.to_string(), states.to_vec());
        self.write(move |tx| transition_in(tx, &id, &states, exit_code, now_millis()))
            .await
    }

    /// Queues the move of a backend to `Ready`, stamped `time` (when it was seen listening),
    /// without waiting: it is committed in order with the writes queued before and after it,
    /// and the returned future tells the events recorded (none if the lifecycle refused it).
    pub fn ready(
        &self,
        id: &str,
        time: Millis,
    ) -> Result<impl std::future::Future<Output = Result<Vec<Event>>>> {
        let id = id.to_string();
        self.writer
            .submit(move |tx| transition_in(tx, &id, &[(State::Ready, None)], None, time))
    }

    /// Records where a started backend runs and moves it through `states`, in one
    /// transaction (one commit per start instead of two).
    pub async fn started(
        &self,
        id: &str,
        handle: &serde_json::Value,
        address: &str,
        states: &[(State, Option<String>)],
    ) -> Result<Vec<Event>> {
        let (id, handle, address) = (id.to_string(), handle.to_string(), address.to_string());
        let states = states.to_vec();
        self.write(move |tx| {
            tx.prepare_cached("UPDATE backends SET handle = ?2, address = ?3 WHERE id = ?1")?
                .execute(params![id, handle, address])?;
            transition_in(tx, &id, &states, None, now_millis())
        })
        .await
    }

    /// Records that a backend's process has stopped for its sleep: `Sleeping`, its handle
    /// and address cleared (a restart adopts nothing and starts nothing for it), in one
    /// transaction.
    pub async fn slept(&self, id: &str, reason: &str) -> Result<Vec<Event>> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.write(move |tx| {
            let events = transition_in(
                tx,
                &id,
                &[(State::Sleeping, Some(reason))],
                None,
                now_millis(),
            )?;
            if !events.is_empty() {
                tx.prepare_cached(
                    "UPDATE backends SET handle = NULL, address = NULL, \
                     stop_reason = CASE WHEN stop_reason LIKE 'sleep pending: %' THEN NULL ELSE stop_reason END \
                     WHERE id = ?1",
                )?
                .execute([&id])?;
            }
            Ok(events)
        })
        .await
    }

    /// Records an event in the backend's current state, for a long step within it (an image
    /// pull while Submitted); nothing for a terminal backend.
    pub async fn note(&self, id: &str, reason: &str) -> Result<Option<Event>> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.write(move |tx| note_in(tx, &id, reason)).await
    }

    /// Records where a woken backend runs now, with a note in its state (`Waking`), in one
    /// transaction.
    pub async fn started_again(
        &self,
        id: &str,
        handle: &serde_json::Value,
        address: &str,
        note: &str,
    ) -> Result<Option<Event>> {
        let (id, handle, address) = (id.to_string(), handle.to_string(), address.to_string());
        let note = note.to_string();
        self.write(move |tx| {
            tx.prepare_cached("UPDATE backends SET handle = ?2, address = ?3 WHERE id = ?1")?
                .execute(params![id, handle, address])?;
            note_in(tx, &id, note)
        })
        .await
    }

    /// Records a stop request; a hard one overrides a soft one, never the reverse. It
    /// replaces a sleep pending ([`Store::sleep_pending`]): a stop is for good.
    pub async fn set_stop(&self, id: &str, reason: &'static str, hard: bool) -> Result<()> {
        let id = id.to_string();
        self.write(move |c| {
            c.prepare_cached("UPDATE backends SET stop_reason = CASE WHEN stop_reason IS NULL OR stop_reason LIKE 'sleep pending: %' THEN ?2 ELSE stop_reason END, stop_hard = MAX(stop_hard, ?3) WHERE id = ?1 AND terminal = 0")?.execute(params![id, reason, hard])?;
            Ok(())
        })
        .await
    }

    /// Records that the backend's process is being stopped for it to sleep (for `reason`,
    /// idleness), before it is signalled: a restart that finds the process gone then
    /// records the backend `Sleeping` instead of lost, and one that finds it running puts
    /// it to sleep. `Sleeping` recorded clears it; a stop replaces it. In the stop's column
    /// ([`SLEEP_PENDING`] and the reason), which a stop reason never starts with.
    pub async fn sleep_pending(&self, id: &str, reason: &'static str) -> Result<()> {
        let (id, pending) = (id.to_string(), format!("{SLEEP_PENDING}{reason}"));
        self.write(move |c| {
            c.prepare_cached("UPDATE backends SET stop_reason = ?2 WHERE id = ?1 AND terminal = 0 AND stop_reason IS NULL")?.execute(params![id, pending])?;
            Ok(())
        })
        .await
    }

    pub fn get(&self, id: &str) -> Result<Option<Row>> {
        self.read(|c| {
            Ok(c.query_row(
                &format!("SELECT {COLUMNS} FROM backends WHERE id = ?1"),
                [id],
                row_of,
            )
            .optional()?)
        })
    }

    /// Events after `after` (a sequence number), oldest first.
    pub fn events(&self, id: &str, after: u64) -> Result<Vec<Event>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, state, time, reason, exit_code FROM events WHERE backend_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let events = stmt
                .query_map(params![id, after], event_of)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(events)
        })
    }

    /// The last event of a backend.
    pub fn last_event(&self, id: &str) -> Result<Option<Event>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT seq, state, time, reason, exit_code FROM events WHERE backend_id = ?1 ORDER BY seq DESC LIMIT 1",
                [id],
                event_of,
            )
            .optional()?)
        })
    }

    /// Up to `count` backends after `after` in the lists' order (newest first, then by
    /// id), with `key` (any without): with `states`, those stored in one of them (the
    /// caller asks for the states a backend it wants may still be stored in, and tells).
    pub fn list_page(
        &self,
        states: Option<(State, Option<State>)>,
        key: Option<&str>,
        after: Option<&Position>,
        count: usize,
    ) -> Result<Vec<Row>> {
        let rows = self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM backends WHERE (?1 IS NULL OR state = ?1 OR state = ?6) AND (?2 IS NULL OR key = ?2) \
                 AND (?3 IS NULL OR (created_at <= ?3 AND (created_at < ?3 OR id > ?4))) \
                 ORDER BY created_at DESC, id LIMIT ?5"
            ))?;
            let raw = stmt
                .query_map(
                    params![
                        states.map(|(s, _)| s.as_str()),
                        key,
                        after.map(|a| a.created_at),
                        after.map(|a| a.id.as_str()),
                        i64::try_from(count).unwrap_or(i64::MAX),
                        states.and_then(|(_, also)| also).map(|s| s.as_str()),
                    ],
                    row_of,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(raw)
        })?;
        Ok(rows)
    }

    /// Every backend not yet in a terminal state: what a restart adopts.
    pub fn live(&self) -> Result<Vec<Row>> {
        let rows = self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM backends WHERE terminal = 0"
            ))?;
            let raw = stmt
                .query_map([], row_of)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(raw)
        })?;
        Ok(rows)
    }

    /// The backends that ended before `before` (the time of their last event).
    pub fn ended_before(&self, before: Millis) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id FROM backends WHERE terminal = 1 AND (SELECT MAX(time) FROM events WHERE backend_id = backends.id) < ?1",
            )?;
            let ids = stmt
                .query_map([before], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
        })
    }

    /// Deletes an ended backend and its events; a live one is left alone.
    pub async fn forget(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM backends WHERE id = ?1 AND terminal = 1")?
                .execute([id])?;
            Ok(())
        })
        .await
    }

    /// How many backends are in each state (for /metrics).
    pub fn count_by_state(&self) -> Result<Vec<(String, i64)>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT state, COUNT(*) FROM backends GROUP BY state")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// A cheap query proving the database answers (for /healthz).
    pub fn ping(&self) -> Result<()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

/// The schema number kept in `meta`; 0 for a database without one (a new one, or one of a
/// release before the number was kept).
fn schema_version(conn: &Connection) -> Result<u32> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(0);
    }
    let value: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match value {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| StoreError::Corrupt {
            id: "meta".into(),
            what: format!("schema is {v:?}, not a number"),
        }),
    }
}

fn has_backends(conn: &Connection) -> Result<bool> {
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM backends)", [], |r| r.get(0))?)
}

/// The live backend with `key`, read in `tx` (none without a key).
fn live_with_key(tx: &Connection, key: Option<&str>) -> Result<Option<Row>> {
    let Some(key) = key else {
        return Ok(None);
    };
    Ok(tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM backends WHERE key = ?1 AND terminal = 0"
        ))?
        .query_row([key], row_of)
        .optional()?)
}

/// Each backend's keepalive token (the secret of its `SPAWNER_KEEPALIVE_URL`) and the time
/// it is busy until: a table of its own, made on first open of an older database too.
const KEEPALIVE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keepalive (
    backend_id TEXT PRIMARY KEY REFERENCES backends(id) ON DELETE CASCADE,
    token TEXT NOT NULL,
    busy_until INTEGER
) WITHOUT ROWID;
";

/// A backend's keepalive row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keepalive {
    pub token: String,
    pub busy_until: Option<Millis>,
}

impl Store {
    /// The backend's keepalive token: `fresh`, kept if it has none yet, or the one it has.
    pub async fn keepalive_token(&self, id: &str, fresh: String) -> Result<String> {
        let id = id.to_string();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO keepalive (backend_id, token) VALUES (?1, ?2)",
            )?
            .execute(params![id, fresh])?;
            Ok(
                c.prepare_cached("SELECT token FROM keepalive WHERE backend_id = ?1")?
                    .query_row([id], |r| r.get(0))?,
            )
        })
        .await
    }

    /// Records that the backend is busy until `until`.
    pub async fn set_busy_until(&self, id: &str, until: Millis) -> Result<()> {
        let id = id.to_string();
        self.write(move |c| {
            c.prepare_cached("UPDATE keepalive SET busy_until = ?2 WHERE backend_id = ?1")?
                .execute(params![id, until])?;
            Ok(())
        })
        .await
    }

    pub fn keepalive(&self, id: &str) -> Result<Option<Keepalive>> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT token, busy_until FROM keepalive WHERE backend_id = ?1")?
                    .query_row([id], |r| {
                        Ok(Keepalive {
                            token: r.get(0)?,
                            busy_until: r.get(1)?,
                        })
                    })
                    .optional()?,
            )
        })
    }
}

/// Records a new backend in `Submitted` within `tx`: its row and its first event.
fn insert_submitted(
    tx: &Connection,
    id: String,
    spec: BackendSpec,
    spec_json: &str,
    runtime: &str,
) -> Result<Row> {
    let now = now_millis();
    tx.prepare_cached("INSERT INTO backends (id, key, spec, state, created_at, runtime) VALUES (?1, ?2, ?3, 'Submitted', ?4, ?5)")?.execute(params![id, spec.key, spec_json, now, runtime])?;
    tx.prepare_cached(
        "INSERT INTO events (backend_id, seq, state, time) VALUES (?1, 1, 'Submitted', ?2)",
    )?
    .execute(params![id, now])?;
    Ok(Row {
        id,
        key: spec.key.clone(),
        spec,
        state: State::Submitted,
        created_at: now,
        runtime: runtime.to_string(),
        handle: None,
        address: None,
        exit_code: None,
        stop_reason: None,
        stop_hard: false,
        reason: None,
        pool: None,
        claimed_at: None,
    })
}

/// [`Store::note`] within the writer's transaction.
fn note_in(tx: &Connection, id: &str, reason: String) -> Result<Option<Event>> {
    let Some((state, seq)) = current(tx, id)?.filter(|(s, _)| !s.is_terminal()) else {
        return Ok(None);
    };
    let now = now_millis();
    tx.prepare_cached("INSERT INTO events (backend_id, seq, state, time, reason, exit_code) VALUES (?1, ?2, ?3, ?4, ?5, NULL)")?.execute(params![id, seq + 1, state.as_str(), now, reason])?;
    Ok(Some(Event {
        seq: seq + 1,
        state,
        time: now,
        reason: Some(reason),
        exit_code: None,
    }))
}

/// [`Store::transition`] within the writer's transaction.
fn transition_in(
    tx: &Connection,
    id: &str,
    states: &[(State, Option<String>)],
    exit_code: Option<i32>,
    now: Millis,
) -> Result<Vec<Event>> {
    let Some((mut state, mut seq)) = current(tx, id)? else {
        return Ok(Vec::new());
    };
    let mut recorded = Vec::new();
    for (to, reason) in states {
        if !state.can_enter(*to) {
            continue;
        }
        seq += 1;
        let code = if to.is_terminal() { exit_code } else { None };
        tx.prepare_cached("INSERT INTO events (backend_id, seq, state, time, reason, exit_code) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![id, seq, to.as_str(), now, reason, code])?;
        state = *to;
        recorded.push(Event {
            seq,
            state: *to,
            time: now,
            reason: reason.clone(),
            exit_code: code,
        });
    }
    if !recorded.is_empty() {
        let code = if state.is_terminal() { exit_code } else { None };
        tx.prepare_cached("UPDATE backends SET state = ?2, terminal = ?3, exit_code = COALESCE(?4, exit_code) WHERE id = ?1")?
            .execute(params![id, state.as_str(), state.is_terminal(), code])?;
    }
    Ok(recorded)
}

/// A backend's state and the sequence number of its newest event, read in `tx`.
fn current(tx: &Connection, id: &str) -> Result<Option<(State, u64)>> {
    let row: Option<(String, u64)> = tx
        .prepare_cached(
            "SELECT b.state, (SELECT COALESCE(MAX(seq), 0) FROM events WHERE backend_id = b.id) FROM backends b WHERE b.id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(state, seq)| {
        let state: State = state.parse().map_err(|e| StoreError::Corrupt {
            id: id.to_string(),
            what: format!("{e}"),
        })?;
        Ok((state, seq))
    })
    .transpose()
}
