//! Group commit: writes that arrive while another write is committing share
//! the next transaction, and each caller is answered once its write is
//! committed.
//!
//! There is no writer thread. A write joins a queue; when nobody is leading,
//! its caller becomes the leader and, on its own thread, runs the queued
//! writes in one `BEGIN IMMEDIATE … COMMIT`, each inside a savepoint so that
//! one failing write leaves the others intact, then answers them all. Writes
//! queued meanwhile form the next batch. A caller that is not leading awaits
//! its answer and leaves its thread free for other tasks, instead of blocking
//! it on the connection's mutex. A leader runs at most [`LEADER_BATCHES`]
//! batches, then hands the lead to the oldest queued write whose caller still
//! waits, so no caller serves others indefinitely; a caller dropped just
//! after it was handed the lead (a cancelled request) runs the queue before
//! it goes.
//!
//! A write whose caller is cancelled is still committed, as a request that
//! reached a server is. Nothing is answered before its batch is committed; if
//! the commit fails, every write of the batch gets the error. What must
//! follow a commit whatever becomes of the caller goes in the write's
//! `then`, which the leader runs right after the commit.

use super::Inner;
use rusqlite::{Connection, TransactionBehavior};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Batches one leader runs before it hands the lead on.
const LEADER_BATCHES: usize = 4;

/// Writes a batch holds at most, so that one commit's answers are not held
/// back by an unbounded queue.
const BATCH_WRITES: usize = 64;

/// Writes waiting for the next batch, and whether some caller is leading.
#[derive(Default)]
pub(crate) struct Queue {
    pending: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    writes: Vec<Box<dyn Write>>,
    leading: bool,
}

/// The commit failed: the batch's writes were rolled back.
#[derive(Debug)]
pub(crate) struct CommitFailed(pub(crate) String);

/// A queued write, with the result type erased.
trait Write: Send {
    /// Runs the write on the open transaction; `alone` when it is the only
    /// write of its batch (and needs no savepoint). Gives what answers the
    /// caller once the commit's outcome is known.
    fn run(self: Box<Self>, conn: &Connection, inner: &Inner, alone: bool) -> Box<dyn Answer>;
    /// Answers the caller with `failed` without running the write.
    fn fail(self: Box<Self>, failed: &CommitFailed);
    /// Hands the lead to this write's caller; false when the caller is gone.
    fn promote(&mut self) -> bool;
}

/// Answers one caller with its result, or with the commit's failure.
trait Answer: Send {
    /// Whether the write failed (and must not be committed when alone).
    fn failed(&self) -> bool;
    fn answer(self: Box<Self>, inner: &Inner, commit: Result<(), &CommitFailed>);
}

/// A write's result on its way to its caller, and what follows its commit.
type Then<R> = Box<dyn FnOnce(&R, &Inner) + Send>;

struct Queued<F, R, E> {
    op: F,
    then: Then<R>,
    answer: oneshot::Sender<Result<R, E>>,
    lead: Option<oneshot::Sender<()>>,
}

impl<F, R, E> Write for Queued<F, R, E>
where
    F: FnOnce(&Connection, &Inner) -> Result<R, E> + Send,
    R: Send + 'static,
    E: From<rusqlite::Error> + From<CommitFailed> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, inner: &Inner, alone: bool) -> Box<dyn Answer> {
        let Queued {
            op, then, answer, ..
        } = *self;
        let mark = inner.schedule().mark();
        let result = if alone {
            op(conn, inner)
        } else {
            in_savepoint(conn, |c| op(c, inner))
        };
        if result.is_err() {
            inner.schedule().undo_to(mark);
        }
        Box::new(Answered {
            then,
            answer,
            result,
        })
    }

    fn fail(self: Box<Self>, failed: &CommitFailed) {
        let _ = self
            .answer
            .send(Err(E::from(CommitFailed(failed.0.clone()))));
    }

    fn promote(&mut self) -> bool {
        self.lead.take().is_some_and(|lead| lead.send(()).is_ok())
    }
}

struct Answered<R, E> {
    then: Then<R>,
    answer: oneshot::Sender<Result<R, E>>,
    result: Result<R, E>,
}

impl<R, E> Answer for Answered<R, E>
where
    R: Send,
    E: From<CommitFailed> + Send,
{
    fn failed(&self) -> bool {
        self.result.is_err()
    }

    fn answer(self: Box<Self>, inner: &Inner, commit: Result<(), &CommitFailed>) {
        let result = match (commit, self.result) {
            (Err(failed), Ok(_)) => Err(E::from(CommitFailed(failed.0.clone()))),
            (Ok(()), Ok(r)) => {
                (self.then)(&r, inner);
                Ok(r)
            }
            (_, Err(e)) => Err(e),
        };
        // A caller that stopped waiting gets nothing; its write stands.
        let _ = self.answer.send(result);
    }
}

/// Runs `op` inside a savepoint, undoing what it wrote if it fails.
fn in_savepoint<R, E: From<rusqlite::Error>>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> Result<R, E>,
) -> Result<R, E> {
    conn.prepare_cached("SAVEPOINT write")?.execute([])?;
    match op(conn) {
        Ok(r) => {
            conn.prepare_cached("RELEASE write")?.execute([])?;
            Ok(r)
        }
        Err(e) => {
            conn.prepare_cached("ROLLBACK TO write")?.execute([])?;
            conn.prepare_cached("RELEASE write")?.execute([])?;
            Err(e)
        }
    }
}

impl Queue {
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A caller's end of the lead hand-off. Dropped (the caller cancelled), it
/// refuses the lead from then on, and uses it if it was handed it before.
struct LeadOffer<'a> {
    inner: &'a Inner,
    offer: oneshot::Receiver<()>,
}

impl Drop for LeadOffer<'_> {
    fn drop(&mut self) {
        self.offer.close();
        if self.offer.try_recv().is_ok() {
            lead(self.inner);
        }
    }
}

impl Inner {
    /// Runs `op` in a write transaction, possibly shared with concurrent
    /// writes, and gives its result once that transaction is committed;
    /// `then` runs right after a successful commit even if the caller has
    /// stopped waiting. `op` must not assume it is alone in the transaction:
    /// what it reads includes earlier writes of the same batch.
    pub(crate) async fn write<R, E>(
        &self,
        op: impl FnOnce(&Connection, &Inner) -> Result<R, E> + Send + 'static,
        then: impl FnOnce(&R, &Inner) + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<rusqlite::Error> + From<CommitFailed> + Send + 'static,
    {
        let (answer, mut answered) = oneshot::channel();
        let (lead_tx, offer) = oneshot::channel();
        let mut offer = LeadOffer { inner: self, offer };
        let leads = {
            let mut waiting = self.queue.waiting();
            waiting.writes.push(Box::new(Queued {
                op,
                then: Box::new(then),
                answer,
                lead: Some(lead_tx),
            }));
            !std::mem::replace(&mut waiting.leading, true)
        };
        if leads {
            lead(self);
        }
        let mut led = false;
        loop {
            tokio::select! {
                biased;
                result = &mut answered => {
                    return result.unwrap_or_else(|_| {
                        Err(E::from(CommitFailed("the write was dropped unanswered".into())))
                    });
                }
                Ok(()) = &mut offer.offer, if !led => {
                    led = true;
                    lead(self);
                }
            }
        }
    }
}

/// Gives the lead up if the leader panics (a write's code did), so that
/// the next write leads instead of every write waiting forever; the queue's
/// schedule, whose changes by the rolled-back batch were not undone, is read
/// from the table again.
struct Leading<'a>(&'a Inner);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.reload_schedule();
            self.0.queue.waiting().leading = false;
        }
    }
}

/// Runs queued batches as the leader, then gives the lead up, or on to the
/// oldest queued write whose caller still waits.
fn lead(inner: &Inner) {
    let _leading = Leading(inner);
    loop {
        for _ in 0..LEADER_BATCHES {
            let batch = {
                let mut waiting = inner.queue.waiting();
                if waiting.writes.is_empty() {
                    waiting.leading = false;
                    return;
                }
                let take = waiting.writes.len().min(BATCH_WRITES);
                waiting.writes.drain(..take).collect::<Vec<_>>()
            };
            commit(inner, batch);
        }
        let mut waiting = inner.queue.waiting();
        if waiting.writes.iter_mut().any(|w| w.promote()) {
            return;
        }
        // Only writes nobody waits for are left (or none): keep leading.
    }
}

/// Runs `batch` in one transaction and answers each write. A write alone
/// in its batch that fails is rolled back with the transaction.
fn commit(inner: &Inner, batch: Vec<Box<dyn Write>>) {
    let alone = batch.len() == 1;
    let (answers, committed) = {
        let mut conn = inner.conn();
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let failed = CommitFailed(e.to_string());
                batch.into_iter().for_each(|w| w.fail(&failed));
                return;
            }
        };
        let start = inner.schedule().mark();
        let answers: Vec<Box<dyn Answer>> = batch
            .into_iter()
            .map(|w| w.run(&tx, inner, alone))
            .collect();
        let outcome = if alone && answers[0].failed() {
            tx.rollback()
        } else {
            tx.commit()
        };
        let mut schedule = inner.schedule();
        if outcome.is_err() {
            schedule.undo_to(start);
        }
        schedule.settle();
        drop(schedule);
        (answers, outcome.map_err(|e| CommitFailed(e.to_string())))
    };
    if committed.is_ok() {
        inner.grouped.fetch_add(answers.len() as u64, Relaxed);
        inner.commits.fetch_add(1, Relaxed);
    }
    if let Err(failed) = &committed {
        tracing::error!(error = %failed.0, "a write transaction failed to commit");
    }
    let commit = committed.as_ref().map(|_| ());
    answers.into_iter().for_each(|a| a.answer(inner, commit));
}

#[cfg(test)]
mod tests {
    use super::super::{BusOptions, Embedded};
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn db() -> Embedded {
        let db = Embedded::in_memory(BusOptions::default()).expect("open");
        db.inner
            .conn()
            .execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .expect("table");
        db
    }

    fn rows(db: &Embedded) -> Vec<i64> {
        let conn = db.inner.conn();
        let mut stmt = conn.prepare("SELECT n FROM t ORDER BY n").expect("select");
        let rows = stmt
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<Vec<i64>, _>>()
            .expect("rows");
        rows
    }

    #[derive(Debug)]
    enum Failed {
        Sql,
        Refused,
    }

    impl From<rusqlite::Error> for Failed {
        fn from(_: rusqlite::Error) -> Self {
            Failed::Sql
        }
    }

    impl From<CommitFailed> for Failed {
        fn from(_: CommitFailed) -> Self {
            Failed::Sql
        }
    }

    /// Queues a write of row `n` on `db` from a task of its own; the row's
    /// write fails after inserting when `n` is negative.
    fn spawn_insert(
        db: &Embedded,
        n: i64,
        ran: &Arc<AtomicUsize>,
    ) -> tokio::task::JoinHandle<Result<i64, Failed>> {
        let (inner, ran) = (db.inner.clone(), ran.clone());
        tokio::spawn(async move {
            inner
                .write(
                    move |tx, inner| {
                        ran.fetch_add(1, Ordering::Relaxed);
                        tx.execute("INSERT INTO t (n) VALUES (?1)", [n.abs()])?;
                        // As a send does: the queue's schedule changes too.
                        inner.schedule().set(n.abs(), 0);
                        if n < 0 {
                            return Err(Failed::Refused);
                        }
                        Ok(n)
                    },
                    |_, _| {},
                )
                .await
        })
    }

    /// Writes of rows `ns`, each from a task of its own, queued behind a
    /// leader busy elsewhere (the test plays it by calling [`lead`]).
    async fn queued_behind_a_leader(
        ns: impl IntoIterator<Item = i64>,
    ) -> (
        Embedded,
        Arc<AtomicUsize>,
        Vec<tokio::task::JoinHandle<Result<i64, Failed>>>,
    ) {
        let db = db();
        let ran = Arc::new(AtomicUsize::new(0));
        db.inner.queue.waiting().leading = true;
        let tasks = ns.into_iter().map(|n| spawn_insert(&db, n, &ran)).collect();
        settle_tasks().await;
        (db, ran, tasks)
    }

    /// Lets every spawned task run until it waits.
    async fn settle_tasks() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn writes_queued_behind_a_leader_run_together_and_a_failed_one_is_undone_alone() {
        let (db, ran, tasks) = queued_behind_a_leader([1, 2, -3, 4]).await;
        assert_eq!(
            ran.load(Ordering::Relaxed),
            0,
            "nothing ran before the lead"
        );
        assert_eq!(db.inner.queue.waiting().writes.len(), 4);

        let changes_before = db.inner.conn().total_changes();
        lead(&db.inner);
        let mut answers = vec![];
        for t in tasks {
            answers.push(t.await.expect("task"));
        }
        assert!(matches!(answers[0], Ok(1)));
        assert!(matches!(answers[1], Ok(2)));
        assert!(matches!(answers[2], Err(Failed::Refused)));
        assert!(matches!(answers[3], Ok(4)));
        assert_eq!(
            rows(&db),
            vec![1, 2, 4],
            "the refused write's row was undone"
        );
        assert_eq!(
            db.inner.schedule().seqs(),
            vec![1, 2, 4],
            "and so was its change to the queue's schedule"
        );
        // Three inserts kept, one undone: nothing else was written.
        assert_eq!(db.inner.conn().total_changes() - changes_before, 4);
        assert!(!db.inner.queue.waiting().leading, "the lead was given up");
    }

    #[tokio::test]
    async fn a_write_that_panics_leaves_the_queue_s_schedule_as_the_table_is() {
        let db = Embedded::in_memory(BusOptions::default()).expect("open");
        let bus = db.bus();
        bus.send(&[crate::conformance::test_message("m")])
            .await
            .expect("send");
        let inner = db.inner.clone();
        let panicked = tokio::spawn(async move {
            inner
                .write(
                    |tx, inner| -> Result<(), Failed> {
                        tx.execute("DELETE FROM messages", [])?;
                        let seqs = inner.schedule().seqs();
                        seqs.into_iter()
                            .for_each(|seq| inner.schedule().remove(seq));
                        panic!("a write's code failed")
                    },
                    |_, _| {},
                )
                .await
        })
        .await;
        assert!(panicked.is_err(), "the write panicked");
        assert_eq!(
            db.inner.schedule().seqs().len(),
            1,
            "the message is due again"
        );
        let d = bus
            .receive(std::time::Duration::ZERO)
            .await
            .expect("receive")
            .expect("the message the rolled-back delete left");
        assert_eq!(d.message_id, "m");
    }

    #[tokio::test]
    async fn the_lead_passes_over_cancelled_callers_to_one_still_waiting() {
        // More writes than one leader runs before it hands the lead on.
        let total = (LEADER_BATCHES * BATCH_WRITES + 40) as i64;
        let (db, ran, tasks) = queued_behind_a_leader(1..=total).await;
        // Every caller past the leader's share is cancelled, except the last.
        let leader_share = LEADER_BATCHES * BATCH_WRITES;
        for t in &tasks[leader_share..tasks.len() - 1] {
            t.abort();
        }
        settle_tasks().await;

        lead(&db.inner);
        assert_eq!(
            ran.load(Ordering::Relaxed),
            leader_share,
            "the leader ran its share, then handed the lead on"
        );
        let last = tasks.into_iter().last().expect("tasks");
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), last)
            .await
            .expect("the lead reached the caller still waiting");
        assert!(matches!(answer.expect("task"), Ok(n) if n == total));
        assert_eq!(
            rows(&db).len(),
            total as usize,
            "cancelled callers' writes are committed too"
        );
        assert!(!db.inner.queue.waiting().leading);
    }

    #[tokio::test]
    async fn a_caller_cancelled_after_it_was_handed_the_lead_runs_the_queue() {
        let total = (LEADER_BATCHES * BATCH_WRITES + 3) as i64;
        let (db, _, tasks) = queued_behind_a_leader(1..=total).await;
        // The leader hands the lead to the first caller past its share...
        lead(&db.inner);
        // ...which is cancelled before it wakes to use it.
        let handed = LEADER_BATCHES * BATCH_WRITES;
        tasks[handed].abort();
        settle_tasks().await;
        assert_eq!(rows(&db).len(), total as usize, "the queue was run");
        assert!(!db.inner.queue.waiting().leading);
        for t in tasks.into_iter().skip(handed + 1) {
            assert!(t.await.expect("task").is_ok());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_concurrent_write_is_committed_and_answered() {
        let db = db();
        let ran = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..8i64)
            .map(|w| {
                let (db, ran) = (db.clone(), ran.clone());
                tokio::spawn(async move {
                    for i in 0..200i64 {
                        let n = 1 + w * 1000 + i;
                        let got = spawn_insert(&db, n, &ran).await.expect("task");
                        assert!(matches!(got, Ok(m) if m == n));
                    }
                })
            })
            .collect();
        for w in writers {
            tokio::time::timeout(std::time::Duration::from_secs(60), w)
                .await
                .expect("every write was answered")
                .expect("writer");
        }
        assert_eq!(rows(&db).len(), 8 * 200);
        assert!(!db.inner.queue.waiting().leading);
    }
}
