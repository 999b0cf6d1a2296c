//! When each queued message becomes receivable, kept in memory.
//!
//! The bus receives the message with the earliest `available_at` (then the
//! lowest `seq`). An index of the `messages` table on those columns answered
//! that, at the price of its pages in every transaction that sends, locks,
//! releases or deletes a message: about a quarter of the WAL frames a job
//! wrote. This handle is the database's only writer (the data-dir lock), so
//! it keeps the same order in memory instead, loaded from the table when the
//! database opens and changed by the writes that change the table.
//!
//! A write changes the schedule as it runs, so that the writes after it in
//! the same transaction see its messages (two receives never take the same
//! one). Each change is logged until its transaction's outcome is known: a
//! write that fails is undone in the schedule as in its savepoint, and a
//! transaction that fails to commit undoes its whole batch.

use rusqlite::Connection;
use std::collections::{BTreeSet, HashMap};

/// The queue's messages by the instant (unix ms) each becomes receivable.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    by_time: BTreeSet<(i64, i64)>,
    at: HashMap<i64, i64>,
    /// How to undo the changes of the transaction in progress, oldest first.
    undo: Vec<Undo>,
}

#[derive(Debug)]
enum Undo {
    /// The message was absent before.
    Remove(i64),
    /// The message was receivable at this instant before.
    Restore(i64, i64),
}

/// A point in the log of changes to undo back to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark(usize);

impl Schedule {
    /// The schedule of the messages in `conn`'s `messages` table. A row
    /// whose time is not a number is due at once, so that the next receive
    /// reads it (and dead-letters it if the rest of it is unreadable too)
    /// instead of the database failing to open.
    pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Schedule> {
        let mut schedule = Schedule::default();
        let mut stmt = conn.prepare("SELECT seq, available_at FROM messages")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1).unwrap_or(0)))
        })?;
        for row in rows {
            let (seq, at) = row?;
            schedule.place(seq, at);
        }
        Ok(schedule)
    }

    /// The message receivable first, if it is receivable at `now`.
    pub(crate) fn head(&self, now: i64) -> Option<i64> {
        self.by_time
            .first()
            .filter(|(at, _)| *at <= now)
            .map(|&(_, seq)| seq)
    }

    /// When the message receivable first becomes receivable.
    pub(crate) fn earliest(&self) -> Option<i64> {
        self.by_time.first().map(|&(at, _)| at)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.at.len()
    }

    /// The messages in the order they are received.
    #[cfg(test)]
    pub(crate) fn seqs(&self) -> Vec<i64> {
        self.by_time.iter().map(|&(_, seq)| seq).collect()
    }

    /// Makes message `seq` receivable at `at` (a new message, a lock taken
    /// or released).
    pub(crate) fn set(&mut self, seq: i64, at: i64) {
        let before = self.place(seq, at);
        self.undo.push(match before {
            Some(was) => Undo::Restore(seq, was),
            None => Undo::Remove(seq),
        });
    }

    /// Takes message `seq` off the queue (completed or dead-lettered).
    pub(crate) fn remove(&mut self, seq: i64) {
        if let Some(was) = self.take(seq) {
            self.undo.push(Undo::Restore(seq, was));
        }
    }

    /// The point the changes made from now on can be undone back to.
    pub(crate) fn mark(&self) -> Mark {
        Mark(self.undo.len())
    }

    /// Undoes the changes made since `mark`.
    pub(crate) fn undo_to(&mut self, mark: Mark) {
        while self.undo.len() > mark.0 {
            match self.undo.pop() {
                Some(Undo::Remove(seq)) => {
                    self.take(seq);
                }
                Some(Undo::Restore(seq, at)) => {
                    self.place(seq, at);
                }
                None => break,
            }
        }
    }

    /// The transaction's outcome is known: its changes stand.
    pub(crate) fn settle(&mut self) {
        self.undo.clear();
    }

    fn place(&mut self, seq: i64, at: i64) -> Option<i64> {
        let before = self.take(seq);
        self.at.insert(seq, at);
        self.by_time.insert((at, seq));
        before
    }

    fn take(&mut self, seq: i64) -> Option<i64> {
        let at = self.at.remove(&seq)?;
        self.by_time.remove(&(at, seq));
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_the_earliest_then_the_lowest_seq_once_it_is_due() {
        let mut s = Schedule::default();
        s.set(3, 100);
        s.set(1, 200);
        s.set(2, 100);
        assert_eq!(s.head(99), None);
        assert_eq!(s.head(100), Some(2));
        assert_eq!(s.earliest(), Some(100));
        s.set(2, 300);
        s.remove(3);
        assert_eq!(s.head(250), Some(1));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn undoing_to_a_mark_restores_the_schedule_as_it_was_there() {
        let mut s = Schedule::default();
        s.set(1, 10);
        s.set(2, 20);
        s.settle();
        let before = format!("{:?}", (&s.by_time, s.len()));
        let mark = s.mark();
        s.set(3, 5);
        s.set(1, 50);
        s.remove(2);
        s.remove(9);
        s.set(3, 7);
        assert_eq!(s.head(100), Some(3));
        s.undo_to(mark);
        assert_eq!(format!("{:?}", (&s.by_time, s.len())), before);
        assert_eq!(s.head(100), Some(1));
        // A later write's changes go back alone.
        s.set(4, 1);
        let later = s.mark();
        s.remove(4);
        s.undo_to(later);
        assert_eq!(s.head(100), Some(4));
    }
}
