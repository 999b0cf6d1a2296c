//! A SQLite VFS that hands each commit's WAL frames to the kernel in one
//! write.
//!
//! SQLite appends a WAL frame as two `pwrite`s, its 24-byte header and then
//! its page, so a commit of a saga (its page, two overflow pages, the
//! queue's pages) costs about ten system calls, and on this kind of VM a
//! system call costs about a microsecond before it copies anything. This
//! VFS is the platform's default one (`unix`) with one change, on WAL files
//! only: a write that continues the previous one is kept in memory, and what
//! was kept goes to the file in one write:
//!
//! - as soon as the commit frame's page is kept (the frame whose header
//!   carries the database size: the last of a commit), so the commit is in
//!   the file before SQLite publishes it to other connections (the wal-index
//!   header it writes next) and before the commit is acknowledged;
//! - before any other operation on the file (a read, a size, a sync, a
//!   truncate, a close, a lock), and before a write anywhere else, so every
//!   operation sees the file as SQLite wrote it;
//! - when [`MAX_KEPT`] bytes are kept (a large commit goes in writes of that
//!   size).
//!
//! Frames a transaction spills before its commit may stay in memory until
//! one of those; no other connection reads them (they are past the last
//! commit it can see), and a crash that loses them loses an uncommitted
//! transaction, which recovery would discard anyway. A write that is not a
//! continuation (the WAL's header when it starts over, a frame rewritten in
//! place, the checksums SQLite rewrites after such a rewrite) goes to the file
//! at once, as before. Durability is therefore SQLite's, unchanged: a commit
//! is in the WAL (the kernel's page cache, `synchronous = NORMAL`) before it
//! is acknowledged.
//!
//! Under `strace -c`, `flotilla bench --simulator none` issued about 76
//! `pwrite`s a job before and about 6 after; the gain in jobs a second is in
//! docs/performance-history.md.

use rusqlite::ffi;
use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

/// The name the VFS is registered under.
pub(crate) const NAME: &CStr = c"flotilla-wal";

/// At most this many bytes are kept before they are written: 16 frames of
/// 4 KiB pages. The default VFS writes at most 128 KiB a call (it masks a
/// write's length to 17 bits, and a length that masks to zero fails as a
/// full disk), so a write of what is kept must stay below that.
const MAX_KEPT: usize = 64 << 10;

/// A WAL frame's header: page number, database size (non-zero on the commit
/// frame), salts and checksums.
const FRAME_HEADER: c_int = 24;

/// Registers the VFS (once a process) and answers its name, or why it could
/// not be registered.
pub(crate) fn register() -> Result<&'static CStr, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find initialises SQLite and answers the
            // default VFS, which lives as long as the process. The new VFS
            // is leaked: SQLite keeps a pointer to it for good.
            unsafe {
                let base = ffi::sqlite3_vfs_find(std::ptr::null());
                if base.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let mut vfs = *base;
                vfs.pNext = std::ptr::null_mut();
                vfs.zName = NAME.as_ptr();
                vfs.szOsFile = (REAL_AT + (*base).szOsFile as usize) as c_int;
                vfs.pAppData = base.cast();
                vfs.xOpen = Some(x_open);
                let vfs = Box::leak(Box::new(vfs));
                match ffi::sqlite3_vfs_register(vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("cannot register the {NAME:?} VFS: code {rc}")),
                }
            }
        })
        .clone()
        .map(|()| NAME)
}

/// A WAL file: what it keeps, then (at [`REAL_AT`]) the default VFS's file.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    kept: Vec<u8>,
    /// Where in the file `kept` begins.
    kept_at: i64,
    /// Where the last write ended; -1 when unknown (the next write goes
    /// through).
    end: i64,
    /// The last write was the commit frame's header: its page, the next
    /// write, ends the commit.
    commit_next: bool,
}

/// Where a WAL file's own (the default VFS's) file begins.
const REAL_AT: usize = std::mem::size_of::<WalFile>().next_multiple_of(16);

/// The default VFS, which [`register`] put in `pAppData`.
unsafe fn base_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    (*vfs).pAppData.cast()
}

/// The default VFS's file inside a WAL file.
unsafe fn real(f: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    f.cast::<u8>().add(REAL_AT).cast()
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    f: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = base_vfs(vfs);
    let Some(open) = (*base).xOpen else {
        return ffi::SQLITE_CANTOPEN;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Any other file is the default VFS's own, in the room SQLite gave.
        return open(base, name, f, flags, out_flags);
    }
    let wal = f.cast::<WalFile>();
    std::ptr::write(
        wal,
        WalFile {
            base: ffi::sqlite3_file {
                pMethods: std::ptr::null(),
            },
            kept: Vec::new(),
            kept_at: 0,
            end: -1,
            commit_next: false,
        },
    );
    let inner = real(f);
    (*inner).pMethods = std::ptr::null();
    let rc = open(base, name, inner, flags, out_flags);
    if (*inner).pMethods.is_null() {
        // Nothing to close: SQLite will not call xClose.
        std::ptr::drop_in_place(wal);
        return if rc == ffi::SQLITE_OK {
            ffi::SQLITE_CANTOPEN
        } else {
            rc
        };
    }
    (*wal).base.pMethods = &WAL_METHODS;
    rc
}

/// Writes what `f` keeps; the file's error code if that fails (what was
/// kept is dropped then: SQLite treats the operation as failed).
unsafe fn flush(f: *mut ffi::sqlite3_file) -> c_int {
    let wal = f.cast::<WalFile>();
    if (*wal).kept.is_empty() {
        return ffi::SQLITE_OK;
    }
    let kept = &(*wal).kept;
    let rc = issue(f, kept.as_ptr().cast(), kept.len() as c_int, (*wal).kept_at);
    (*wal).kept.clear();
    if rc != ffi::SQLITE_OK {
        (*wal).end = -1;
    }
    rc
}

/// Writes `amount` bytes at `data` to the default VFS's file at `offset`.
unsafe fn issue(
    f: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let inner = real(f);
    let Some(write) = (*(*inner).pMethods).xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    #[cfg(test)]
    counts::issued();
    write(inner, data, amount, offset)
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let wal = f.cast::<WalFile>();
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    #[cfg(test)]
    counts::asked();
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
    let commit_page = (*wal).commit_next;
    // A frame header with a database size marks the commit frame, whose
    // page comes next.
    (*wal).commit_next = amount == FRAME_HEADER && bytes[4..8] != [0, 0, 0, 0];
    let end = offset.saturating_add(i64::from(amount));
    if offset == (*wal).end && (*wal).kept.len() + len <= MAX_KEPT {
        if (*wal).kept.is_empty() {
            (*wal).kept_at = offset;
        }
        (*wal).kept.extend_from_slice(bytes);
        (*wal).end = end;
        // The commit frame's page ends the commit: to the file with it.
        return if commit_page {
            flush(f)
        } else {
            ffi::SQLITE_OK
        };
    }
    // Not a continuation: what is kept first, then this write, to the file
    // as SQLite wrote them.
    let rc = flush(f);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    let rc = issue(f, data, amount, offset);
    (*wal).end = if rc == ffi::SQLITE_OK { end } else { -1 };
    rc
}

/// Declares an io method that writes what is kept and then does what the
/// default VFS's file does.
macro_rules! after_flush {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            let rc = flush(f);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            let inner = real(f);
            match (*(*inner).pMethods).$method {
                Some(method) => method(inner $(, $arg)*),
                None => $missing,
            }
        }
    };
}

after_flush!(x_read, xRead, (buf: *mut c_void, amount: c_int, offset: i64), ffi::SQLITE_IOERR_READ);
after_flush!(x_sync, xSync, (flags: c_int), ffi::SQLITE_IOERR_FSYNC);
after_flush!(x_file_size, xFileSize, (size: *mut i64), ffi::SQLITE_IOERR_FSTAT);
after_flush!(x_lock, xLock, (level: c_int), ffi::SQLITE_IOERR_LOCK);
after_flush!(x_unlock, xUnlock, (level: c_int), ffi::SQLITE_IOERR_UNLOCK);
after_flush!(x_check_reserved_lock, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
after_flush!(x_file_control, xFileControl, (op: c_int, arg: *mut c_void), ffi::SQLITE_NOTFOUND);
after_flush!(x_shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), ffi::SQLITE_IOERR_SHMMAP);
after_flush!(x_shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int), ffi::SQLITE_IOERR_SHMLOCK);
after_flush!(x_shm_unmap, xShmUnmap, (delete: c_int), ffi::SQLITE_OK);
after_flush!(x_fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void), {
    *out = std::ptr::null_mut();
    ffi::SQLITE_OK
});
after_flush!(x_unfetch, xUnfetch, (offset: i64, page: *mut c_void), ffi::SQLITE_OK);

unsafe extern "C" fn x_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    let rc = flush(f);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    (*f.cast::<WalFile>()).end = -1;
    let inner = real(f);
    match (*(*inner).pMethods).xTruncate {
        Some(truncate) => truncate(inner, size),
        None => ffi::SQLITE_IOERR_TRUNCATE,
    }
}

unsafe extern "C" fn x_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    let inner = real(f);
    (*(*inner).pMethods).xSectorSize.map_or(4096, |m| m(inner))
}

unsafe extern "C" fn x_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    let inner = real(f);
    (*(*inner).pMethods)
        .xDeviceCharacteristics
        .map_or(0, |m| m(inner))
}

unsafe extern "C" fn x_shm_barrier(f: *mut ffi::sqlite3_file) {
    let inner = real(f);
    if let Some(barrier) = (*(*inner).pMethods).xShmBarrier {
        barrier(inner);
    }
}

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    let flushed = flush(f);
    let inner = real(f);
    let closed = (*(*inner).pMethods)
        .xClose
        .map_or(ffi::SQLITE_OK, |close| close(inner));
    std::ptr::drop_in_place(f.cast::<WalFile>());
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

/// Writes SQLite asked of WAL files and writes issued to them, on this
/// thread (tests).
#[cfg(test)]
mod counts {
    use std::cell::Cell;
    thread_local! {
        static ASKED: Cell<u64> = const { Cell::new(0) };
        static ISSUED: Cell<u64> = const { Cell::new(0) };
    }
    pub(super) fn asked() {
        ASKED.with(|c| c.set(c.get() + 1));
    }
    pub(super) fn issued() {
        ISSUED.with(|c| c.set(c.get() + 1));
    }
    /// (asked, issued) so far on this thread.
    pub(super) fn get() -> (u64, u64) {
        (ASKED.with(Cell::get), ISSUED.with(Cell::get))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    /// A new database in WAL mode, written through this VFS: its directory
    /// (removed when dropped), its path and the writer.
    fn fresh() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        register().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), NAME).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, b BLOB);",
        )
        .unwrap();
        (dir, path, conn)
    }

    /// `n`'s row: about three pages, each byte saying which row it is.
    fn row(n: i64) -> Vec<u8> {
        vec![(n % 251) as u8; 10_000]
    }

    fn insert(conn: &Connection, rows: std::ops::Range<i64>) {
        for n in rows {
            conn.execute(
                "INSERT INTO t (n, b) VALUES (?1, ?2)",
                rusqlite::params![n, row(n)],
            )
            .unwrap();
        }
    }

    /// Forgets `writer` (a process that dies closes nothing, so nothing
    /// kept in memory is written by a close) and reopens the database with
    /// the default VFS, checked whole.
    fn after_a_crash_of(writer: Connection, path: &std::path::Path) -> Connection {
        std::mem::forget(writer);
        let after = Connection::open(path).unwrap();
        let check: String = after
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        after
    }

    /// The ids of the rows, each checked against what was inserted.
    fn rows_in(conn: &Connection) -> Vec<i64> {
        let mut statement = conn.prepare("SELECT n, b FROM t ORDER BY n").unwrap();
        let rows = statement
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .unwrap();
        rows.map(|r| {
            let (n, b) = r.unwrap();
            assert_eq!(b, row(n), "row {n} as inserted");
            n
        })
        .collect()
    }

    #[test]
    fn a_commit_of_several_frames_is_one_write() {
        let (_dir, _, conn) = fresh();
        let (asked, issued) = counts::get();
        insert(&conn, 0..20);
        let (asked, issued) = (counts::get().0 - asked, counts::get().1 - issued);
        // Each commit: a frame per page (two writes each), about four pages.
        assert!(asked >= 20 * 6, "{asked} writes asked");
        // One write per commit, and a few more for the WAL's start.
        assert!(issued <= 20 + 3, "{issued} writes issued for 20 commits");
    }

    #[test]
    fn every_commit_is_in_the_file_when_it_returns() {
        let (_dir, path, writer) = fresh();
        let reader = Connection::open(&path).unwrap();
        for n in 0..50 {
            insert(&writer, n..n + 1);
            // Another connection (the default VFS) reads the frames at once.
            let b: Vec<u8> = reader
                .query_row("SELECT b FROM t WHERE n = ?1", [n], |r| r.get(0))
                .unwrap();
            assert_eq!(b, row(n), "row {n} as committed");
        }
        drop(reader);
        let after = after_a_crash_of(writer, &path);
        assert_eq!(rows_in(&after), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_commit_far_larger_than_what_is_kept_is_whole() {
        let (_dir, path, conn) = fresh();
        // One commit of about 100 pages (400 KiB): several writes of what
        // is kept, none of them past what the default VFS writes at once.
        conn.execute_batch("BEGIN").unwrap();
        insert(&conn, 0..40);
        conn.execute_batch("COMMIT").unwrap();
        let after = after_a_crash_of(conn, &path);
        assert_eq!(rows_in(&after), (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn a_rolled_back_transaction_that_spilled_leaves_the_next_commits_whole() {
        let (_dir, path, conn) = fresh();
        // A tiny page cache makes a large transaction spill frames to the WAL
        // before it ends.
        conn.execute_batch("PRAGMA cache_size = 10;").unwrap();
        conn.execute_batch("BEGIN").unwrap();
        insert(&conn, 0..40);
        conn.execute_batch("ROLLBACK").unwrap();
        insert(&conn, 100..110);
        let after = after_a_crash_of(conn, &path);
        assert_eq!(rows_in(&after), (100..110).collect::<Vec<_>>());
    }
}
