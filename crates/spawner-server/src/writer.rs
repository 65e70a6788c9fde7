//! The store's one writing connection, on a thread of its own, with group commit.
//!
//! Every write is a job sent to this thread. The thread takes whatever jobs are waiting,
//! runs them in one transaction (each under a savepoint of its own, so that a job that
//! fails leaves no half of itself and does not undo the others), commits once, and only
//! then answers each job's caller. A storm of spawns then costs one commit (one WAL append)
//! per batch instead of one per write, and no async worker ever blocks on a lock or a
//! commit: the callers await their answer. An answer still means what it meant with one
//! commit per write: the change is committed to the WAL (`synchronous = NORMAL`).
//!
//! The connection stays behind a mutex: a rare write that manages its own transactions
//! can still take it on the caller's thread ([`Writer::with`]), between two batches.

use crate::store::{Result, StoreError};
use rusqlite::Connection;
use std::sync::{mpsc, Arc, Mutex};

/// At most this many jobs share a transaction, so that the first of a batch is not kept
/// waiting long for the commit.
const MAX_BATCH: usize = 512;

/// A write to run in the batch's transaction, answered after the commit.
trait Write: Send {
    /// Runs the write; `false` when it failed (its savepoint is then rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Tells the caller how it went: its own result if the batch committed, else why not.
    fn answer(self: Box<Self>, committed: Result<()>);
}

/// One caller's write and where its answer goes.
struct Pending<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: tokio::sync::oneshot::Sender<Result<T>>,
}

impl<T, F> Write for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<()>) {
        let answer = match (self.result, committed) {
            // Its own failure first: it was rolled back whatever became of the batch.
            (Some(Err(e)), _) => Err(e),
            (_, Err(e)) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (None, Ok(())) => Err(StoreError::Stopped),
        };
        // A caller that stopped waiting (its request was dropped) needs no answer.
        let _ = self.reply.send(answer);
    }
}

/// The handle to the writer thread; dropping it lets the thread finish what is queued,
/// close the connection and end.
pub struct Writer {
    conn: Arc<Mutex<Connection>>,
    jobs: Option<mpsc::Sender<Box<dyn Write>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread that writes on `conn` from now on.
    pub fn start(conn: Connection) -> std::io::Result<Writer> {
        let conn = Arc::new(Mutex::new(conn));
        let (jobs, rx) = mpsc::channel();
        let shared = conn.clone();
        let thread = std::thread::Builder::new()
            .name("spawner-store".into())
            .spawn(move || run(&shared, rx))?;
        Ok(Writer {
            conn,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `work` in the next batch's transaction and answers once that has committed.
    /// The write happens (and is committed) even if the caller stops waiting.
    pub async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(work)?.await
    }

    /// Queues `work` now, on the calling thread, behind every write queued before it and
    /// ahead of every write queued after it; the returned future is its answer. For a
    /// caller that must not wait for the commit but needs its write in order.
    pub fn submit<T, F>(&self, work: F) -> Result<impl std::future::Future<Output = Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Box<dyn Write> = Box::new(Pending {
            work: Some(work),
            result: None,
            reply,
        });
        self.jobs
            .as_ref()
            .ok_or(StoreError::Stopped)?
            .send(job)
            .map_err(|_| StoreError::Stopped)?;
        Ok(async move { answer.await.map_err(|_| StoreError::Stopped)? })
    }

    /// Runs `f` on the writing connection on the calling thread, between two batches,
    /// blocking it meanwhile: for start-up and rare writes with transactions of their own.
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut conn)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has run what was sent before.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: batches until the queue is closed.
fn run(conn: &Mutex<Connection>, rx: mpsc::Receiver<Box<dyn Write>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        match conn.lock() {
            Ok(conn) => commit_batch(&conn, batch),
            Err(_) => {
                for w in batch {
                    w.answer(Err(StoreError::Poisoned));
                }
            }
        }
    }
}

/// Runs `batch` in one transaction, each job under its own savepoint, commits, answers.
fn commit_batch(conn: &Connection, mut batch: Vec<Box<dyn Write>>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = StoreError::from(e);
        for w in batch {
            w.answer(Err(e.duplicate()));
        }
        return;
    }
    for w in &mut batch {
        let ok = savepoint(conn, "SAVEPOINT job").is_ok() && w.run(conn);
        let undone = ok || savepoint(conn, "ROLLBACK TO job").is_ok();
        if !undone || savepoint(conn, "RELEASE job").is_err() {
            // The transaction is in an unknown state: nothing of it is kept.
            let _ = conn.execute_batch("ROLLBACK");
            let e = StoreError::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                Some("a savepoint of the batch could not be undone or released".into()),
            ));
            for w in batch {
                w.answer(Err(e.duplicate()));
            }
            return;
        }
    }
    let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for w in batch {
        w.answer(match &committed {
            Ok(()) => Ok(()),
            Err(e) => Err(e.duplicate()),
        });
    }
}

fn savepoint(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job for [`commit_batch`] and where its answer arrives.
    fn job<T: Send + 'static>(
        work: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> (Box<dyn Write>, tokio::sync::oneshot::Receiver<Result<T>>) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Box::new(Pending {
            work: Some(work),
            result: None,
            reply,
        });
        (job, answer)
    }

    fn insert(c: &Connection, x: i64) -> Result<()> {
        c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
        Ok(())
    }

    #[test]
    fn a_failed_write_is_undone_alone_and_the_rest_of_its_batch_is_committed() {
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .expect("schema");
        let (first, mut first_answer) = job(|c| insert(c, 1));
        // Writes 2, then fails on 1 (taken): neither of its rows may stay.
        let (failing, mut failing_answer) = job(|c| {
            insert(c, 2)?;
            insert(c, 1)
        });
        let (last, mut last_answer) = job(|c| insert(c, 3).map(|()| "three"));
        commit_batch(&conn, vec![first, failing, last]);

        assert!(matches!(first_answer.try_recv(), Ok(Ok(()))));
        assert!(matches!(
            failing_answer.try_recv(),
            Ok(Err(StoreError::Sql(_)))
        ));
        assert!(matches!(last_answer.try_recv(), Ok(Ok("three"))));
        let rows: Vec<i64> = conn
            .prepare("SELECT x FROM t ORDER BY x")
            .expect("select")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(rows, vec![1, 3]);
        assert!(conn.is_autocommit(), "the batch's transaction is closed");
    }

    #[tokio::test]
    async fn writes_are_answered_after_their_commit_and_seen_by_other_connections() {
        let path = std::env::temp_dir().join(format!(
            "spawner-writer-test-{}-{}.db",
            std::process::id(),
            now_nanos()
        ));
        let conn = Connection::open(&path).expect("sqlite");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .expect("schema");
        let writer = Writer::start(conn).expect("writer thread");
        let writes = (0..100).map(|x| writer.write(move |c| insert(c, x)));
        for answer in futures_util::future::join_all(writes).await {
            answer.expect("committed");
        }
        let reader = Connection::open(&path).expect("reader");
        let n: i64 = reader
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 100);
        drop(writer);
        drop(reader);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    fn now_nanos() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    }
}
