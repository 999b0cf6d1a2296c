//! One owner per data dir. Every command that opens a data dir for writing
//! (`up`, `resume`, `delete`, `scale`, `sim --data-dir`, `bench`, zero-config
//! `serve`, the embedded store of mixed backends) first takes an exclusive OS
//! file lock on `<data-dir>/lock`, and writes its pid, command line and start
//! time into that file so a second process can say who holds it.
//!
//! The lock is `flock`-style (std's `File::try_lock`): the OS drops it when
//! the process exits, also on `kill -9`, so there is no stale pid file to
//! clean up. The file itself is never deleted (deleting a lock file lets two
//! processes lock two different files); its content is only informative.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "lock";

/// Longest command line written into the lock file.
const MAX_COMMAND: usize = 200;

/// Who holds a data dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// The holder's command line, e.g. `flotilla up --data-dir ./.flotilla`.
    pub command: String,
    /// RFC 3339, UTC, when it took the lock.
    pub started: String,
}

impl Holder {
    /// This process.
    fn current() -> Holder {
        let mut args = std::env::args_os();
        let program = args
            .next()
            .map(|a| {
                Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| a.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "flotilla".into());
        let command = std::iter::once(program)
            .chain(args.map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let command = match command.char_indices().nth(MAX_COMMAND) {
            Some((i, _)) => format!("{}…", &command[..i]),
            None => command,
        };
        let now = time::OffsetDateTime::now_utc();
        let started = now
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Holder {
            pid: std::process::id(),
            command,
            started,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process {} ({}), started {}",
            self.pid, self.command, self.started
        )
    }
}

/// Why a data dir could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it (`holder` is `None` when it has not written
    /// its details yet, or its file is unreadable).
    #[error(
        "data dir {} is in use by {}; wait for it or stop it",
        dir.display(),
        holder.as_ref().map(ToString::to_string).unwrap_or_else(|| "another process".into())
    )]
    InUse {
        dir: PathBuf,
        holder: Option<Holder>,
    },
    /// The dir or its lock file could not be created or locked.
    #[error("cannot lock data dir {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a data dir, released when dropped or when the process ends.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it, or says who holds it. Never waits.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&path),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut line =
            serde_json::to_string(&Holder::current()).map_err(|e| io(std::io::Error::other(e)))?;
        line.push('\n');
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(line.as_bytes()).map_err(io)?;
        Ok(DataDirLock {
            file,
            dir: dir.to_path_buf(),
        })
    }

    /// Whether another process holds `dir`, without creating or writing
    /// anything (for commands that refuse a dir before they would lock it).
    pub fn in_use(dir: &Path) -> Option<LockError> {
        let path = dir.join(LOCK_FILE);
        let file = File::open(&path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(TryLockError::WouldBlock) => Some(LockError::InUse {
                dir: dir.to_path_buf(),
                holder: read_holder(&path),
            }),
            Err(TryLockError::Error(_)) => None,
        }
    }

    /// Locks `dir` for the rest of this process (servers that run until they
    /// exit). A dir this process already holds this way is not locked twice.
    pub fn hold_until_exit(dir: &Path) -> Result<(), LockError> {
        static HELD: Mutex<Vec<DataDirLock>> = Mutex::new(Vec::new());
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        let same = |l: &DataDirLock| same_dir(&l.dir, dir);
        if !held.iter().any(same) {
            held.push(DataDirLock::acquire(dir)?);
        }
        Ok(())
    }
}

impl Drop for DataDirLock {
    /// Clears the holder's details; closing the file releases the lock.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The holder's details. They are written right after the lock is taken, so
/// an empty file is given a moment to fill.
fn read_holder(path: &Path) -> Option<Holder> {
    for _ in 0..10 {
        let mut text = String::new();
        if let Ok(mut f) = File::open(path) {
            let _ = f.read_to_string(&mut text);
        }
        if let Ok(holder) = serde_json::from_str::<Holder>(text.trim()) {
            return Some(holder);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_held_dir_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = DataDirLock::acquire(&dir).expect("first lock");
        assert_eq!(first.dir, dir);

        // A second handle in the same process is a second open file
        // description: the OS refuses it like another process.
        let err = DataDirLock::acquire(&dir).expect_err("second lock must fail");
        let LockError::InUse { dir: shown, holder } = &err else {
            panic!("expected InUse, got {err:?}");
        };
        assert_eq!(shown, &dir);
        let holder = holder.as_ref().expect("holder details are readable");
        assert_eq!(holder.pid, std::process::id());
        assert!(!holder.command.is_empty());
        assert!(
            time::OffsetDateTime::parse(
                &holder.started,
                &time::format_description::well_known::Rfc3339
            )
            .is_ok(),
            "started is RFC 3339: {}",
            holder.started
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "data dir {} is in use by process {}",
                dir.display(),
                std::process::id()
            )),
            "{text}"
        );
        assert!(text.ends_with("; wait for it or stop it"), "{text}");

        assert!(matches!(
            DataDirLock::in_use(&dir),
            Some(LockError::InUse { holder: Some(h), .. }) if h.pid == std::process::id()
        ));
        drop(first);
        assert!(DataDirLock::in_use(&dir).is_none(), "free once dropped");
        assert!(DataDirLock::in_use(&tmp.path().join("never-made")).is_none());
        assert!(
            !tmp.path().join("never-made").exists(),
            "probing creates nothing"
        );
        let again = DataDirLock::acquire(&dir).expect("free again once dropped");
        drop(again);
        assert!(
            dir.join(LOCK_FILE).exists(),
            "the lock file stays; only its lock goes"
        );
    }

    #[test]
    fn holding_until_exit_is_idempotent_and_excludes_others() {
        let tmp = tempfile::tempdir().unwrap();
        DataDirLock::hold_until_exit(tmp.path()).expect("held");
        DataDirLock::hold_until_exit(tmp.path()).expect("held twice by the same process");
        assert!(matches!(
            DataDirLock::acquire(tmp.path()),
            Err(LockError::InUse { .. })
        ));
    }

    #[test]
    fn a_dir_that_cannot_be_created_is_an_io_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = DataDirLock::acquire(&file.join("data")).expect_err("not a dir");
        assert!(matches!(err, LockError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("plain-file"), "{err}");
    }
}
