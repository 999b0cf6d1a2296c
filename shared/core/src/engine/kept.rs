//! The sagas this engine last wrote, kept parsed until their next event.
//!
//! A job's events come one after another, each to a handler that loads the
//! saga its previous handler saved: a read of the whole document and a parse
//! of its JSON, each time. Where the store can say a document's current ETag
//! without a read ([`SagaStore::etag_is_local`]: the embedded store, the
//! database's only writer), the engine keeps a copy of each saga it writes
//! and the next load takes that copy instead, once the store confirms the
//! document still carries the ETag the copy was written with. A document
//! changed by anyone else (another engine on the same store, a command) has
//! moved on to another ETag, and the copy is dropped unread.
//!
//! The copy is made when the write succeeds, from the saga exactly as it was
//! written, and taken (not shared) by the next load, so a handler that
//! changes its saga and then fails leaves nothing behind that the store does
//! not hold. Settled jobs are not kept: nothing follows their last write.
//!
//! At most [`KEPT_SAGAS`] are held (about 5 MB at the example spec's size); a
//! write finding the cache full drops another job's copy, whose next load
//! reads the store as before.
//!
//! [`SagaStore::etag_is_local`]: crate::ports::SagaStore::etag_is_local

use crate::ports::ETag;
use crate::saga::Saga;
use std::collections::HashMap;
use std::sync::Mutex;

/// How many sagas an engine keeps at most.
pub(crate) const KEPT_SAGAS: usize = 1024;

/// Sagas as last written by this engine, by job id, with their ETags.
pub(crate) struct Kept {
    sagas: Mutex<HashMap<String, (ETag, Saga)>>,
    /// 0 turns keeping off (a store whose ETag check costs a read).
    capacity: usize,
}

impl Kept {
    pub(crate) fn new(capacity: usize) -> Kept {
        Kept {
            sagas: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn sagas(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ETag, Saga)>> {
        self.sagas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `saga` was written and now carries `etag`.
    pub(crate) fn wrote(&self, saga: &Saga, etag: &ETag) {
        if self.capacity == 0 {
            return;
        }
        if saga.is_settled() {
            self.sagas().remove(&saga.id);
            return;
        }
        let copy = (etag.clone(), saga.clone());
        let mut sagas = self.sagas();
        if sagas.len() >= self.capacity && !sagas.contains_key(&saga.id) {
            // Any other: a copy whose job gets no more events here (settled
            // by another writer, its event dead-lettered) must not hold the
            // room for good.
            if let Some(other) = sagas.keys().next().cloned() {
                sagas.remove(&other);
            }
        }
        sagas.insert(saga.id.clone(), copy);
    }

    /// The kept copy of `job`'s saga, taken out, with the ETag it was written with.
    pub(crate) fn take(&self, job: &str) -> Option<(ETag, Saga)> {
        if self.capacity == 0 {
            return None;
        }
        self.sagas().remove(job)
    }

    /// How many sagas are kept (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sagas().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::JobStatus;
    use crate::spec::ClusterSpec;

    fn saga(id: &str) -> Saga {
        let mut saga = Saga::new(
            id.into(),
            ClusterSpec::example(),
            time::OffsetDateTime::UNIX_EPOCH,
        );
        saga.status = JobStatus::Running;
        saga
    }

    #[test]
    fn a_written_saga_is_taken_once_with_its_etag() {
        let kept = Kept::new(4);
        let mut a = saga("a");
        kept.wrote(&a, &ETag("\"1\"".into()));
        a.seq = 7;
        kept.wrote(&a, &ETag("\"2\"".into()));
        let (etag, copy) = kept.take("a").expect("kept");
        assert_eq!(etag, ETag("\"2\"".into()), "the latest write's");
        assert_eq!(copy.seq, 7);
        assert!(kept.take("a").is_none(), "taken, not shared");
        assert!(kept.take("b").is_none());
    }

    #[test]
    fn a_full_cache_drops_another_copy_for_the_newest_write() {
        let kept = Kept::new(2);
        for id in ["a", "b", "c"] {
            kept.wrote(&saga(id), &ETag("\"1\"".into()));
        }
        assert_eq!(kept.len(), 2, "never more than its capacity");
        assert!(kept.take("c").is_some(), "the newest write is kept");
        let left: Vec<bool> = ["a", "b"]
            .iter()
            .map(|id| kept.take(id).is_some())
            .collect();
        assert_eq!(
            left.iter().filter(|k| **k).count(),
            1,
            "one older copy made room: {left:?}"
        );
        // Rewriting a job it holds takes no one's room.
        kept.wrote(&saga("a"), &ETag("\"1\"".into()));
        kept.wrote(&saga("b"), &ETag("\"1\"".into()));
        let mut a = saga("a");
        a.seq = 3;
        kept.wrote(&a, &ETag("\"2\"".into()));
        assert_eq!(kept.len(), 2);
        assert_eq!(kept.take("a").map(|(_, s)| s.seq), Some(3));
        assert!(kept.take("b").is_some());
    }

    #[test]
    fn a_settled_saga_is_dropped_and_keeping_can_be_off() {
        let kept = Kept::new(4);
        let mut a = saga("a");
        kept.wrote(&a, &ETag("\"1\"".into()));
        a.status = JobStatus::Succeeded;
        kept.wrote(&a, &ETag("\"2\"".into()));
        assert!(
            kept.take("a").is_none(),
            "nothing follows a settled job's write"
        );
        let off = Kept::new(0);
        off.wrote(&saga("a"), &ETag("\"1\"".into()));
        assert!(off.take("a").is_none());
    }
}
