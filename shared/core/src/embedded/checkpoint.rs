//! Copies the WAL back into the database file away from the writer.
//!
//! SQLite's own auto-checkpoint runs on the connection that committed, right
//! after the commit that crosses its threshold: it copies every page of the
//! WAL into the database file and syncs both files there and then. Here that
//! connection is the group commit's leader, a tokio worker thread, so the
//! copy and the waits for the disk stalled every task queued on that worker.
//!
//! Instead the writer's WAL hook nudges a thread of its own each time the
//! WAL grows by [`SOFT_PAGES`] pages (32 MB instead of SQLite's 1,000 pages,
//! so that a saga rewritten a dozen times in a job is mostly copied back
//! once; the writer's auto-checkpoint used the same interval before), and
//! that thread checkpoints through its own connection in `PASSIVE` mode,
//! which never waits for (or blocks) the writer or the readers. Under a steady stream of commits a passive checkpoint rarely
//! finds the WAL quiet enough for the writer to start it over from its
//! beginning, so at [`HARD_PAGES`] (128 MB) the writer waits for the thread's
//! checkpoint to end and copies the rest itself: the next write then starts
//! the WAL over. The WAL file keeps its largest size, up to `HARD_PAGES`
//! pages, between runs.
//!
//! Six pairs of 1,000-job benchmarks against the writer's own checkpoints:
//! a few per cent more sagas a second and a step's p99 18 → 15 ms.
//!
//! Durability is SQLite's and unchanged: a commit is in the WAL before it is
//! acknowledged, and a checkpoint (from any connection) syncs what it copies.

use crate::ports::StoreError;
use rusqlite::wal::CheckpointMode;
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};

/// The checkpoint turn; nothing it guards can be left half-done by a panic.
fn lock(turn: &Mutex<()>) -> MutexGuard<'_, ()> {
    turn.lock().unwrap_or_else(|p| p.into_inner())
}

/// WAL growth, in pages, after which the checkpoint thread is nudged (32 MB).
pub(crate) const SOFT_PAGES: i32 = 8192;
/// WAL size, in pages, at which the writer checkpoints itself (128 MB).
pub(crate) const HARD_PAGES: i32 = 32768;

/// Hands `writer`'s checkpoints (a connection on the database file at `path`)
/// to a thread of their own, as the module doc says. The thread ends when the
/// writer connection is closed.
pub(crate) fn move_off_writer(
    path: &Path,
    writer: &mut Connection,
    soft_pages: i32,
    hard_pages: i32,
) -> Result<(), StoreError> {
    let unavailable = |e: rusqlite::Error| StoreError::Unavailable(e.to_string());
    let own = Connection::open(path).map_err(unavailable)?;
    // A checkpoint waits for nobody; the busy timeout only covers opening.
    own.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(unavailable)?;
    // A connection finds the database in WAL mode when it first reads it;
    // until then its checkpoints do nothing.
    own.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(unavailable)?;
    // Capacity one: nudges that arrive during a checkpoint make one more.
    let (nudge, nudged) = sync_channel::<()>(1);
    // Held by whichever of the thread and the writer checkpoints.
    let turn = Arc::new(Mutex::new(()));
    let thread_turn = turn.clone();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || checkpoint_when_nudged(&own, &nudged, &thread_turn))
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
    // The hook replaces SQLite's auto-checkpoint on this connection. It
    // nudges once per `soft_pages` the WAL grows by, and at `hard_pages`
    // waits for the thread's checkpoint to finish and copies what is left:
    // with every frame copied, the next write starts the WAL over (unless a
    // reader still reads from it; then a later one does). Passive, as
    // SQLite's own: a reader in another process never stalls the writer.
    let mut nudged_at = 0;
    writer
        .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
            let level = pages / soft_pages;
            if pages >= hard_pages {
                // SQLite answers busy at once while another connection
                // checkpoints, so wait for the thread's checkpoint here.
                let _turn = lock(&turn);
                if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                    report(
                        &e,
                        "the writer's checkpoint failed; the next commit tries again",
                    );
                }
            } else if level > nudged_at {
                if let Err(TrySendError::Disconnected(())) = nudge.try_send(()) {
                    tracing::warn!(
                        pages,
                        "the checkpoint thread has stopped; the writer checkpoints alone"
                    );
                }
            }
            // Back to zero once the WAL starts over.
            nudged_at = level;
            // An error here would fail the statement whose commit already happened.
            Ok(())
        }))
        .map_err(unavailable)
}

/// The checkpoint thread: one passive checkpoint per nudge, until the writer
/// (the nudge's sender) is gone.
fn checkpoint_when_nudged(conn: &Connection, nudged: &Receiver<()>, turn: &Mutex<()>) {
    while nudged.recv().is_ok() {
        let _turn = lock(turn);
        if let Err(e) = conn.wal_checkpoint_v2(Some("main"), CheckpointMode::PASSIVE) {
            report(
                &e,
                "a background checkpoint failed; the writer checkpoints at its limit",
            );
        }
    }
}

/// Logs a failed checkpoint. Busy is a lock held a moment (the writer
/// starting the WAL over, another process's checkpoint): a later checkpoint
/// copies the same pages, so it is not worth a warning.
fn report(e: &rusqlite::Error, what: &'static str) {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) {
        tracing::debug!(error = %e, "{what}");
    } else {
        tracing::warn!(error = %e, "{what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn file_size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    fn writer(path: &Path, soft: i32, hard: i32) -> Connection {
        let mut conn = Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; CREATE TABLE t (n INTEGER PRIMARY KEY, b BLOB);",
        )
        .unwrap();
        move_off_writer(path, &mut conn, soft, hard).unwrap();
        conn
    }

    /// Commits `rows` rows of about one page each, one commit per row.
    fn write_pages(conn: &Connection, from: i64, rows: i64) {
        for n in from..from + rows {
            conn.execute(
                "INSERT INTO t (n, b) VALUES (?1, zeroblob(3500))",
                rusqlite::params![n],
            )
            .unwrap();
        }
    }

    #[test]
    fn the_thread_copies_the_wal_into_the_database_past_the_soft_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = writer(&path, 64, 1_000_000);
        let before = file_size(&path);
        write_pages(&conn, 0, 200);
        // Nothing but the thread copies pages back: the writer's own limit is
        // never reached and the connection stays open.
        let deadline = Instant::now() + Duration::from_secs(10);
        while file_size(&path) < before + 150 * 3500 {
            assert!(
                Instant::now() < deadline,
                "the database file stayed at {} bytes",
                file_size(&path)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 200);
    }

    #[test]
    fn the_wal_stays_near_the_hard_limit_under_a_steady_stream_of_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = writer(&path, 32, 128);
        let wal = dir.path().join("db.sqlite-wal");
        let mut largest = 0;
        for round in 0..20 {
            write_pages(&conn, round * 50, 50);
            largest = largest.max(file_size(&wal));
        }
        // 1,000 pages written; without the writer's own checkpoints the WAL
        // would hold all of them (over 4 MB).
        assert!(largest < 3 * 128 * 4096, "the WAL grew to {largest} bytes");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1000);
    }
}
