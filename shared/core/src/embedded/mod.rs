//! Embedded backends behind `flotilla up`: a SQLite saga store and an
//! in-process event bus with Azure Service Bus semantics, both kept in one
//! SQLite database so that a saga write and the messages it emits commit in a
//! single transaction (a transactional outbox).
//!
//! Layout of the database:
//! - `sagas`: one JSON document per saga id, with a version counter that
//!   renders as the ETag, and what its writer said of it to a sweep
//!   (`settled`, `sweep_at`: [`crate::ports::SweepHint`]), so that the
//!   sweeper's listing reads those two columns, not the documents, of the
//!   jobs it will not act on;
//! - `messages`: the queue, one row per message copy, with its peek-lock
//!   (`lock_token`, which starts with the row's `seq`, so that settling by
//!   token is a primary-key lookup and no index of tokens is kept) and the
//!   instant it next becomes receivable (`available_at`: the scheduled
//!   enqueue time while unlocked, the lock expiry while locked), in which
//!   order the handle keeps the queue in memory ([`schedule`]);
//! - `dead_letters`: the dead-letter queue;
//! - `dedupe_0`, `dedupe_1` and `dedupe_turns`: message ids seen recently,
//!   for duplicate detection, in two tables that take turns (`bus`).
//!
//! Every write goes through one connection behind a [`std::sync::Mutex`] that
//! is never held across an `.await`, as a short synchronous piece of a
//! transaction with cached prepared statements; writes that arrive together
//! share one transaction and one commit ([`group`]). On a database file the
//! store's reads (a saga, a page of sagas) go through a second connection:
//! WAL mode shows it every committed write and none in progress, and it never
//! waits for the writer. An ETag check reads nothing: the handle remembers the
//! version of each saga it wrote, being the database's only writer. The WAL
//! is copied back into the database file by a thread of its own
//! ([`checkpoint`]), not by the writer that happens to commit, and the
//! writer hands each commit's WAL frames to the kernel in one write
//! ([`wal_vfs`]).

mod bus;
mod checkpoint;
mod group;
mod schedule;
mod store;
mod wal_vfs;

pub use bus::EmbeddedBus;
pub use store::EmbeddedStore;

use crate::ports::{EventBus, SagaStore, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Broker settings of the embedded bus, mirroring the Service Bus queue
/// properties of the same names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusOptions {
    /// Deliveries after which an abandoned (or lock-expired) message goes to
    /// the dead-letter queue with reason `MaxDeliveryCountExceeded`. Default 10.
    pub max_delivery_count: u32,
    /// How long a received message stays locked to its consumer. Default 30 s.
    pub lock_duration: Duration,
    /// How long a message id is remembered to drop duplicate sends. Default 10 min.
    pub duplicate_detection_window: Duration,
    /// Test mode: every message is enqueued twice (two independent copies with
    /// the same message id), simulating at-least-once duplicate delivery.
    pub deliver_twice: bool,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            max_delivery_count: 10,
            lock_duration: Duration::from_secs(30),
            duplicate_detection_window: Duration::from_secs(600),
            deliver_twice: false,
        }
    }
}

/// One embedded SQLite database holding the saga store and the event bus.
/// Cheap to clone; every clone, store and bus handle shares the connection.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("options", &self.inner.options)
            .field("store_writes", &self.store_writes())
            .finish_non_exhaustive()
    }
}

/// How many sagas' versions a handle remembers before it forgets them all
/// (about 7 MB), so that a long-lived `serve` does not grow with every job
/// it ever ran; an ETag check of a forgotten saga reads the database.
pub(crate) const REMEMBERED_VERSIONS: usize = 100_000;

/// State shared by the store and the bus.
pub(crate) struct Inner {
    conn: Mutex<Connection>,
    /// A second connection for the store's reads, on a database file: in WAL
    /// mode it sees every committed write and never waits for the writer,
    /// so loading a saga does not queue behind another saga's commit.
    reader: Option<Mutex<Connection>>,
    /// A third, for reads of many documents at once (listings, the
    /// sweeper's filtered scan), so that a long one does not hold up the
    /// point reads of running handlers.
    scanner: Option<Mutex<Connection>>,
    pub(crate) options: BusOptions,
    /// Wakes receivers waiting for a message.
    pub(crate) notify: Notify,
    /// Committed create/replace calls.
    pub(crate) writes: AtomicU64,
    /// Writes through the group commit, and the transactions that committed
    /// them ([`Embedded::commits`]).
    pub(crate) grouped: AtomicU64,
    pub(crate) commits: AtomicU64,
    /// Messages enqueued on the bus ([`Embedded::messages_enqueued`]).
    pub(crate) enqueued: AtomicU64,
    /// The version of each saga this handle created or replaced, as of its
    /// last commit, so that an ETag check needs no read. It is exact because
    /// this handle is the database's only writer (the data-dir lock); a saga
    /// it has not written since it opened, or since the map was last emptied
    /// (at [`REMEMBERED_VERSIONS`]), is read from the database.
    pub(crate) versions: Mutex<HashMap<String, i64>>,
    /// Writes waiting to share the next transaction ([`group`]).
    queue: group::Queue,
    /// When each queued message becomes receivable ([`schedule`]); changed
    /// only by writes, with the writer connection held.
    schedule: Mutex<schedule::Schedule>,
}

const SCHEMA: &str = "
-- `settled` is 1 for a settled job that holds no events (NULL otherwise);
-- `sweep_at` the instant (Unix ms) from which a sweep may act: the job's last
-- save, the smallest integer while the document holds events, NULL when the
-- document alone can tell. Both come before `doc`, so reading them reads no
-- overflow page (a database made before them has them after: see
-- `add_sweep_columns`).
CREATE TABLE IF NOT EXISTS sagas (
    id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL,
    settled INTEGER,
    sweep_at INTEGER,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body BLOB NOT NULL,
    enqueued_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    available_at INTEGER NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT
);
-- The order messages are received in is kept in memory ([`schedule`]), not
-- in an index every send, receive and completion would write.
DROP INDEX IF EXISTS messages_available;
-- A lock token names its message's seq, so no index on tokens is kept
-- (one page less written per receive and per completion).
DROP INDEX IF EXISTS messages_lock;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body BLOB NOT NULL,
    delivery_count INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_lettered_at INTEGER NOT NULL
);
-- Message ids seen recently, in two tables that take turns (`bus`): one
-- B-tree each, keyed by message id, and no index of times.
CREATE TABLE IF NOT EXISTS dedupe_0 (
    message_id TEXT PRIMARY KEY NOT NULL,
    seen_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedupe_1 (
    message_id TEXT PRIMARY KEY NOT NULL,
    seen_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedupe_turns (
    slot INTEGER PRIMARY KEY,
    started_at INTEGER NOT NULL
);
";

impl Embedded {
    /// Opens (creating if needed) the database file at `path`.
    ///
    /// Every lock left by a previous process is released: such a delivery
    /// counts as abandoned (the next receive reports `delivery_count + 1`), so
    /// a killed run resumes at once instead of waiting out the lock duration.
    pub fn open(path: &Path, options: BusOptions) -> Result<Embedded, StoreError> {
        // `vfs`: the default one when `None`.
        let open = |vfs: Option<&std::ffi::CStr>| {
            match vfs {
                Some(vfs) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs),
                None => Connection::open(path),
            }
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))
        };
        // The writer hands each commit's WAL frames to the kernel in one
        // write ([`wal_vfs`]); the readers write nothing.
        let vfs = wal_vfs::register().map_err(StoreError::Unavailable)?;
        let mut conn = Self::prepare(open(Some(vfs))?)?;
        checkpoint::move_off_writer(
            path,
            &mut conn,
            checkpoint::SOFT_PAGES,
            checkpoint::HARD_PAGES,
        )?;
        let for_reads = || -> Result<Connection, StoreError> {
            let c = open(None)?;
            c.busy_timeout(Duration::from_secs(5))
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            c.set_prepared_statement_cache_capacity(16);
            Ok(c)
        };
        Self::wrap(conn, Some((for_reads()?, for_reads()?)), options)
    }

    /// Opens an existing database file for reading only: no schema change,
    /// no lock release, no write, so it is safe while another process owns the
    /// file (in WAL mode a reader sees the last committed state and never
    /// blocks the writer). Any write through it fails.
    pub fn open_read_only(path: &Path) -> Result<Embedded, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Self::wrap(conn, None, BusOptions::default())
    }

    /// A private in-memory database (tests, throwaway runs).
    pub fn in_memory(options: BusOptions) -> Result<Embedded, StoreError> {
        let conn = Connection::open_in_memory()
            .map_err(|e| StoreError::Unavailable(format!("cannot open in-memory db: {e}")))?;
        Self::wrap(Self::prepare(conn)?, None, options)
    }

    /// Sets the connection up for the store and the bus: WAL, the schema,
    /// and every lock of a previous process released.
    fn prepare(conn: Connection) -> Result<Connection, StoreError> {
        let unavailable = |e: rusqlite::Error| StoreError::Unavailable(e.to_string());
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(unavailable)?;
        // `journal_mode` answers with a row ("wal", or "memory" in memory).
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(unavailable)?;
        // A commit is durable against a crash of this process once it is in
        // the WAL (`NORMAL`). When the WAL is copied back into the database
        // (every 8,192 pages, by a thread of its own) is [`checkpoint`]'s.
        conn.execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        Self::take_older_dedupe_table(&conn).map_err(unavailable)?;
        Self::add_sweep_columns(&conn).map_err(unavailable)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute(
            "UPDATE messages SET lock_token = NULL, available_at = visible_at \
             WHERE lock_token IS NOT NULL",
            [],
        )
        .map_err(unavailable)?;
        Ok(conn)
    }

    /// A database made before the ids took turns between two tables keeps
    /// them in `dedupe`: they move to a turn that begins now (so each is
    /// kept a whole window more), and the table goes.
    fn take_older_dedupe_table(conn: &Connection) -> rusqlite::Result<()> {
        let older: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'dedupe')",
            [],
            |r| r.get(0),
        )?;
        if older {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 INSERT INTO dedupe_0 (message_id, seen_at) \
                 SELECT message_id, seen_at FROM dedupe WHERE true \
                 ON CONFLICT (message_id) DO UPDATE SET seen_at = excluded.seen_at;
                 DELETE FROM dedupe_1;
                 DELETE FROM dedupe_turns;
                 INSERT INTO dedupe_turns (slot, started_at) VALUES (0, {});
                 DROP TABLE dedupe;
                 COMMIT;",
                now_ms()
            ))?;
        }
        Ok(())
    }

    /// A database made before the sweep's columns gets them, and its settled
    /// jobs are marked once (read from their JSON as the sweep's listing did),
    /// so that sweeps leave them out from now on; the others are marked by
    /// their next save, and until then read by each sweep as before.
    fn add_sweep_columns(conn: &Connection) -> rusqlite::Result<()> {
        let has: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('sagas') WHERE name = 'sweep_at')",
            [],
            |r| r.get(0),
        )?;
        if !has {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 ALTER TABLE sagas ADD COLUMN settled INTEGER;
                 ALTER TABLE sagas ADD COLUMN sweep_at INTEGER;
                 UPDATE sagas SET settled = 1 WHERE json_valid(doc) \
                 AND json_type(doc, '$.outbox') IS NULL AND {};
                 COMMIT;",
                store::settled_in_json()
            ))?;
        }
        Ok(())
    }

    /// `readers`: the point reader and the scanner, on a database file.
    fn wrap(
        conn: Connection,
        readers: Option<(Connection, Connection)>,
        options: BusOptions,
    ) -> Result<Embedded, StoreError> {
        let (reader, scanner) = readers.unzip();
        let schedule = schedule::Schedule::load(&conn)
            .map_err(|e| StoreError::Unavailable(format!("cannot read the queue: {e}")))?;
        Ok(Embedded {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                reader: reader.map(Mutex::new),
                scanner: scanner.map(Mutex::new),
                options,
                notify: Notify::new(),
                writes: AtomicU64::new(0),
                grouped: AtomicU64::new(0),
                commits: AtomicU64::new(0),
                enqueued: AtomicU64::new(0),
                versions: Mutex::new(HashMap::new()),
                queue: group::Queue::default(),
                schedule: Mutex::new(schedule),
            }),
        })
    }

    /// The saga store. Its outbox messages are committed to the bus in the same
    /// transaction as the document (`delivers_outbox() == true`).
    pub fn store(&self) -> Arc<dyn SagaStore> {
        Arc::new(EmbeddedStore {
            inner: self.inner.clone(),
        })
    }

    /// The event bus (one queue).
    pub fn bus(&self) -> Arc<dyn EventBus> {
        Arc::new(EmbeddedBus {
            inner: self.inner.clone(),
        })
    }

    /// Number of committed `create`/`replace` calls since this handle was
    /// opened (reported by the benchmark).
    pub fn store_writes(&self) -> u64 {
        self.inner.writes.load(Ordering::Relaxed)
    }

    /// Writes (saga writes, sends, receives, settlements) and the
    /// transactions that committed them since this handle was opened: how
    /// much the group commit shares (reported by the benchmark).
    pub fn commits(&self) -> (u64, u64) {
        (
            self.inner.grouped.load(Ordering::Relaxed),
            self.inner.commits.load(Ordering::Relaxed),
        )
    }

    /// Messages the bus took since this handle was opened (a duplicate
    /// it dropped is not counted; reported by the benchmark).
    pub fn messages_enqueued(&self) -> u64 {
        self.inner.enqueued.load(Ordering::Relaxed)
    }

    /// Whether the database is a file (what [`Embedded::open`] opens), not
    /// SQLite's memory ([`Embedded::in_memory`], gone with the process).
    pub fn is_file(&self) -> bool {
        self.inner.conn().path().is_some_and(|p| !p.is_empty())
    }

    /// The bus options this database was opened with.
    pub fn options(&self) -> &BusOptions {
        &self.inner.options
    }
}

impl Inner {
    /// Reads the queue's schedule from the table again (after a write
    /// panicked, leaving changes its rolled-back transaction did not make).
    pub(crate) fn reload_schedule(&self) {
        let conn = self.conn();
        match schedule::Schedule::load(&conn) {
            Ok(schedule) => *self.schedule() = schedule,
            Err(e) => tracing::error!(error = %e, "cannot read the queue's schedule again"),
        }
    }

    /// The queue's schedule. Taken after the writer connection, never
    /// before it.
    pub(crate) fn schedule(&self) -> MutexGuard<'_, schedule::Schedule> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection. A panic while it was held cannot leave a transaction
    /// open (dropping a `Transaction` rolls it back), so poisoning is ignored.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The version of saga `id`, if this handle committed it and remembers it.
    pub(crate) fn version(&self, id: &str) -> Option<i64> {
        self.versions().get(id).copied()
    }

    /// Notes that this handle committed `version` of saga `id` (called by
    /// the group commit's leader right after each commit, so in commit order).
    pub(crate) fn committed(&self, id: &str, version: i64) {
        let mut versions = self.versions();
        if let Some(v) = versions.get_mut(id) {
            *v = version;
            return;
        }
        if versions.len() >= REMEMBERED_VERSIONS {
            versions.clear();
        }
        versions.insert(id.to_string(), version);
    }

    fn versions(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection for reads that need no transaction of their own:
    /// the reader where there is one.
    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        self.own_or_writer(&self.reader)
    }

    /// The connection for reads of many documents: the scanner where
    /// there is one.
    pub(crate) fn scanner(&self) -> MutexGuard<'_, Connection> {
        self.own_or_writer(&self.scanner)
    }

    /// A read connection of its own, or the writer's in memory (a private
    /// in-memory database has one connection).
    fn own_or_writer<'a>(
        &'a self,
        own: &'a Option<Mutex<Connection>>,
    ) -> MutexGuard<'a, Connection> {
        match own {
            Some(c) => c.lock().unwrap_or_else(|p| p.into_inner()),
            None => self.conn(),
        }
    }
}

/// Wall-clock now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `t` in whole Unix milliseconds, rounded down.
pub(crate) fn unix_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{ETag, SweepHint};

    #[test]
    fn a_database_says_whether_it_is_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let on_disk = Embedded::open(&dir.path().join("f.db"), BusOptions::default()).unwrap();
        assert!(on_disk.is_file());
        assert!(!Embedded::in_memory(BusOptions::default())
            .unwrap()
            .is_file());
    }

    /// Runs `read` on a thread of its own and gives its result, or `None`
    /// when it is still waiting after 10 s.
    fn on_another_thread<T: Send + 'static>(
        read: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let _ = tx.send(rt.block_on(read));
        });
        rx.recv_timeout(Duration::from_secs(10)).ok()
    }

    #[test]
    fn etag_checks_answer_from_memory_and_after_it_is_emptied_from_the_database() {
        let db = Embedded::in_memory(BusOptions::default()).expect("open");
        let store = db.store();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let first = rt
            .block_on(store.create_text("saga", r#"{"n":1}"#, SweepHint::Unknown, &[]))
            .expect("create");
        let second = rt
            .block_on(store.replace_text("saga", r#"{"n":2}"#, SweepHint::Unknown, &first, &[]))
            .expect("replace");
        assert_eq!(db.inner.version("saga"), Some(2), "remembered");
        for n in 0..REMEMBERED_VERSIONS {
            db.inner.committed(&format!("other-{n}"), 1);
        }
        assert_eq!(db.inner.version("saga"), None, "forgotten once full");
        assert!(db.inner.versions().len() <= REMEMBERED_VERSIONS);
        let tag = rt.block_on(store.etag("saga")).expect("etag");
        assert_eq!(tag, Some(second), "a forgotten saga's ETag is read");
        assert_eq!(rt.block_on(store.etag("missing")).expect("etag"), None);
    }

    #[test]
    fn a_load_neither_waits_for_the_writer_nor_sees_what_it_has_not_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db =
            Embedded::open(&dir.path().join("flotilla.db"), BusOptions::default()).expect("open");
        let store = db.store();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(store.create_text("saga", r#"{"n":1}"#, SweepHint::Unknown, &[]))
            .expect("create");

        // The writer is in the middle of a transaction that changed the saga.
        let mut writer = db.inner.conn();
        let tx = writer.transaction().expect("begin");
        tx.execute("UPDATE sagas SET doc = '{\"n\":2}', version = 2", [])
            .expect("update");
        let s = store.clone();
        let seen = on_another_thread(async move { s.get_text("saga").await })
            .expect("a load waited for the writer's transaction");
        let (text, etag) = seen.expect("read").expect("the saga");
        assert_eq!(text, r#"{"n":1}"#, "a load saw an uncommitted write");
        assert_eq!(etag, ETag("\"1\"".into()));
        let s = store.clone();
        let tag = on_another_thread(async move { s.etag("saga").await })
            .expect("an ETag check waited for the writer's transaction");
        assert_eq!(tag.expect("read"), Some(ETag("\"1\"".into())));

        tx.commit().expect("commit");
        drop(writer);
        let s = store.clone();
        let seen = on_another_thread(async move { s.get_text("saga").await }).expect("load");
        assert_eq!(
            seen.expect("read").expect("the saga").0,
            r#"{"n":2}"#,
            "a load after the commit sees it"
        );
    }
}
