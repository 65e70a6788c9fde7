//! Checkpoints of the store's write-ahead log, on a thread and connection of their own.
//!
//! SQLite checkpoints by default inside the commit that grows the log past 1,000 pages: that
//! commit copies the log into the database and syncs both files (10–30 ms on a VM's disk),
//! and every write queued behind it waits as long, a claim's or a `Ready`'s among them (seen
//! as a claim of a warm pool answering in 33 ms instead of 0.3). Here the writing connection
//! leaves that to this thread, which checkpoints passively: in WAL mode that runs beside the
//! writer and the readers, blocking neither. Once the whole log is copied, the writer's next
//! transaction starts the log again from its beginning, so it does not grow.

use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// How often the log is copied into the database. Between two checkpoints the log holds
/// what was written meanwhile: at a storm's thousands of writes a second, a few MiB.
const EVERY: Duration = Duration::from_millis(500);

/// The writing connection's own checkpoint threshold, in pages, instead of SQLite's 1,000:
/// a bound on the log's size for when this thread cannot keep up or has failed.
pub const WRITER_FALLBACK_PAGES: u32 = 20_000;

/// The checkpointing thread; dropping it stops the thread.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` every [`EVERY`].
    pub fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let conn = Connection::open(path).map_err(std::io::Error::other)?;
        // It copies the log's pages into the database: nothing to keep cached.
        conn.execute_batch("PRAGMA cache_size = -256")
            .map_err(std::io::Error::other)?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("spawner-checkpoint".into())
            .spawn(move || run(&conn, &stopped))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, stopped: &mpsc::Receiver<()>) {
    let mut said = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        // With nothing new in the log, this costs a look at it.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(_) => said = false,
            Err(e) if !said => {
                // The writer's own threshold still bounds the log; said once per failure run.
                tracing::warn!(error = %e, "checkpointing the store's log failed; will retry");
                said = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_copied_into_the_database_while_the_writer_does_not_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let writer = Connection::open(&path).expect("open");
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; \
                 CREATE TABLE t (x BLOB)",
            )
            .expect("schema");
        let checkpointer = Checkpointer::start(&path).expect("start");
        for _ in 0..200 {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .expect("insert");
        }
        let frames = |c: &Connection| {
            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .expect("checkpoint")
        };
        // The writer itself never copied the log; the thread does within a tick or two.
        std::thread::sleep(EVERY * 3);
        drop(checkpointer);
        let before = std::fs::metadata(&path).expect("db").len();
        assert!(
            before > 200 * 4000,
            "the database file holds the rows: {before}"
        );
        // And the writer then starts the log again from its beginning.
        writer
            .execute("INSERT INTO t VALUES (zeroblob(10))", [])
            .expect("insert");
        let (log, copied) = frames(&writer);
        assert!(
            log < 10 && copied == log,
            "log {log} frames, copied {copied}"
        );
    }
}
