//! The in-process event bus: one Service Bus-like queue in SQLite.

use super::{duration_ms, now_ms, unix_ms, Inner};
use crate::ports::{BusError, DeadLetter, Delivery, EventBus, OutMessage};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Reason recorded when a message is dead-lettered for exceeding the maximum
/// delivery count (the Service Bus wording).
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";

/// Longest a waiting receiver sleeps before looking at the queue again even
/// without a wake-up: a safety net against a wake-up lost.
const POLL_CAP: Duration = Duration::from_secs(1);

/// [`EventBus`] over the embedded database; obtained from
/// [`super::Embedded::bus`].
pub struct EmbeddedBus {
    pub(crate) inner: Arc<Inner>,
}

/// Which receivers to wake after a commit that enqueued messages.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Wake {
    /// Message copies visible at once: wake one waiting receiver for each.
    visible: usize,
    /// Some message is scheduled for later: every waiter re-computes how long
    /// to sleep.
    scheduled: bool,
    /// Messages enqueued (duplicates dropped, copies counted once).
    enqueued: u64,
}

impl Wake {
    /// Wakes receivers and counts the messages, once their write committed.
    pub(crate) fn apply(self, inner: &Inner) {
        inner.enqueued.fetch_add(self.enqueued, Ordering::Relaxed);
        for _ in 0..self.visible {
            inner.notify.notify_one();
        }
        if self.scheduled {
            inner.notify.notify_waiters();
        }
    }
}

fn bus_err(e: rusqlite::Error) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// Inserts `messages` into the queue inside the caller's transaction, dropping
/// ids seen within the duplicate detection window. Used by `send` and by the
/// store's outbox.
pub(crate) fn enqueue(
    conn: &Connection,
    inner: &Inner,
    messages: &[OutMessage],
    now: i64,
) -> rusqlite::Result<Wake> {
    let options = &inner.options;
    let window = duration_ms(options.duplicate_detection_window);
    let copies = if options.deliver_twice { 2 } else { 1 };
    let mut wake = Wake::default();
    let turns = if window > 0 && !messages.is_empty() {
        Some(dedupe_turn(conn, window, now)?)
    } else {
        None
    };
    for m in messages {
        if let Some((current, previous)) = turns {
            if seen_within(conn, current, &m.id, now, window)?
                || seen_within(conn, previous, &m.id, now, window)?
            {
                continue;
            }
            conn.prepare_cached(REMEMBER[current])?
                .execute(params![m.id, now])?;
        }
        let visible_at = m.not_before.map(unix_ms).unwrap_or(now);
        let mut insert = conn.prepare_cached(
            "INSERT INTO messages \
             (message_id, event_type, body, enqueued_at, visible_at, available_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )?;
        for _ in 0..copies {
            insert.execute(params![m.id, m.event_type, m.body, now, visible_at])?;
            inner.schedule().set(conn.last_insert_rowid(), visible_at);
        }
        wake.enqueued += 1;
        if visible_at > now {
            wake.scheduled = true;
        } else {
            wake.visible += copies;
        }
    }
    Ok(wake)
}

/// In the caller's transaction, what a completion and the next receive
/// would do in a transaction of their own: deletes the message locked with
/// `lock_token`, enqueues `messages`, and with `receive` locks the next
/// message for the caller (see `engine::in_hand`). `None`, with nothing
/// done, when no message holds that lock any more.
pub(crate) fn complete_and_take(
    conn: &Connection,
    inner: &Inner,
    lock_token: &str,
    messages: &[OutMessage],
    now: i64,
    receive: bool,
) -> rusqlite::Result<Option<(Wake, Option<Delivery>)>> {
    if !delete_locked_row(conn, inner, lock_token)? {
        return Ok(None);
    }
    let mut wake = enqueue(conn, inner, messages, now)?;
    let next = match receive.then(|| lock_next(conn, inner, now)).transpose()? {
        Some(Attempt::Got(next)) => {
            // One message fewer for the receivers woken: the caller has it.
            wake.visible = wake.visible.saturating_sub(1);
            Some(next)
        }
        _ => None,
    };
    Ok(Some((wake, next)))
}

// Duplicate detection keeps the ids it saw in two tables that take turns
// (`dedupe_0`, `dedupe_1`; `dedupe_turns` says when each one's turn began).
// Ids go into the table whose turn it is. Once that turn is a window old,
// every id in the other table came before it began, so none can match a
// send any more: that table is emptied at once, its pages freed whole, and
// its turn begins. A send therefore writes one page of ids, not also an
// index of times to purge by, and the purge deletes nothing row by row.
const SEEN: [&str; 2] = [
    "SELECT seen_at FROM dedupe_0 WHERE message_id = ?1",
    "SELECT seen_at FROM dedupe_1 WHERE message_id = ?1",
];
const REMEMBER: [&str; 2] = [
    "INSERT INTO dedupe_0 (message_id, seen_at) VALUES (?1, ?2) \
     ON CONFLICT (message_id) DO UPDATE SET seen_at = excluded.seen_at",
    "INSERT INTO dedupe_1 (message_id, seen_at) VALUES (?1, ?2) \
     ON CONFLICT (message_id) DO UPDATE SET seen_at = excluded.seen_at",
];
const FORGET: [&str; 2] = ["DELETE FROM dedupe_0", "DELETE FROM dedupe_1"];

/// The table whose turn it is to take ids, and the other one; a turn a
/// `window` old hands over first (in the caller's transaction).
fn dedupe_turn(conn: &Connection, window: i64, now: i64) -> rusqlite::Result<(usize, usize)> {
    let mut began = [None::<i64>; 2];
    let mut turns = conn.prepare_cached("SELECT slot, started_at FROM dedupe_turns")?;
    for turn in turns.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
        let (slot, at) = turn?;
        if let Some(b) = usize::try_from(slot).ok().and_then(|i| began.get_mut(i)) {
            *b = Some(at);
        }
    }
    let current = usize::from(began[1] > began[0]);
    let other = 1 - current;
    match began[current] {
        Some(at) if now.saturating_sub(at) < window => Ok((current, other)),
        _ => {
            conn.prepare_cached(FORGET[other])?.execute([])?;
            conn.prepare_cached(
                "INSERT INTO dedupe_turns (slot, started_at) VALUES (?1, ?2) \
                 ON CONFLICT (slot) DO UPDATE SET started_at = excluded.started_at",
            )?
            .execute(params![other as i64, now])?;
            Ok((other, current))
        }
    }
}

/// Whether table `slot` saw message `id` less than `window` ago.
fn seen_within(
    conn: &Connection,
    slot: usize,
    id: &str,
    now: i64,
    window: i64,
) -> rusqlite::Result<bool> {
    let seen: Option<i64> = conn
        .prepare_cached(SEEN[slot])?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(matches!(seen, Some(at) if now.saturating_sub(at) < window))
}

/// Moves the message at `seq` to the dead-letter queue. The casts keep the
/// dead-letter queue readable even when the row itself is damaged.
fn move_to_dead_letters(
    conn: &Connection,
    inner: &Inner,
    seq: i64,
    reason: &str,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO dead_letters \
         (message_id, event_type, body, delivery_count, reason, dead_lettered_at) \
         SELECT CAST(message_id AS TEXT), CAST(event_type AS TEXT), CAST(body AS BLOB), \
                MAX(CAST(delivery_count AS INTEGER), 0), ?2, ?3 \
         FROM messages WHERE seq = ?1",
    )?
    .execute(params![seq, reason, now])?;
    conn.prepare_cached("DELETE FROM messages WHERE seq = ?1")?
        .execute([seq])?;
    inner.schedule().remove(seq);
    Ok(())
}

/// Outcome of one non-waiting receive attempt.
enum Attempt {
    Got(Delivery),
    /// Nothing receivable; the earliest instant (unix ms) something becomes
    /// receivable (a scheduled message or an expiring lock), if any.
    Empty(Option<i64>),
}

/// A message row as read for delivery.
struct Row {
    message_id: String,
    event_type: String,
    body: Vec<u8>,
    delivery_count: u32,
}

impl Row {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        let count: i64 = r.get(4)?;
        let delivery_count =
            u32::try_from(count).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(4, count))?;
        Ok(Row {
            message_id: r.get(1)?,
            event_type: r.get(2)?,
            body: r.get(3)?,
            delivery_count,
        })
    }
}

impl From<rusqlite::Error> for BusError {
    fn from(e: rusqlite::Error) -> Self {
        bus_err(e)
    }
}

impl From<super::group::CommitFailed> for BusError {
    fn from(e: super::group::CommitFailed) -> Self {
        BusError::Unavailable(format!("commit failed: {}", e.0))
    }
}

/// Locks the oldest receivable message, dead-lettering on the way any
/// message that has used up its deliveries (or whose row is unreadable).
fn lock_next(tx: &Connection, inner: &Inner, now: i64) -> rusqlite::Result<Attempt> {
    let options = &inner.options;
    loop {
        let head = inner.schedule().head(now);
        let Some(seq) = head else {
            return Ok(Attempt::Empty(inner.schedule().earliest()));
        };
        let row = tx
            .prepare_cached(
                "SELECT seq, message_id, event_type, body, delivery_count FROM messages \
                 WHERE seq = ?1",
            )
            .and_then(|mut s| s.query_row([seq], |r| Ok(Row::read(r))).optional())?;
        let Some(row) = row else {
            // Gone from the table behind this handle's back: forget it.
            inner.schedule().remove(seq);
            continue;
        };
        let row: Row = match row {
            Ok(row) => row,
            Err(e) => {
                tracing::warn!(seq, error = %e, "dead-lettering unreadable message row");
                move_to_dead_letters(tx, inner, seq, &format!("Corrupt: {e}"), now)?;
                continue;
            }
        };
        if row.delivery_count >= options.max_delivery_count {
            move_to_dead_letters(tx, inner, seq, MAX_DELIVERY_COUNT_EXCEEDED, now)?;
            continue;
        }
        let token = lock_token(seq);
        let locked_until = now.saturating_add(duration_ms(options.lock_duration));
        tx.prepare_cached(
            "UPDATE messages SET delivery_count = delivery_count + 1, \
             lock_token = ?1, available_at = ?2 WHERE seq = ?3",
        )
        .and_then(|mut s| s.execute(params![token, locked_until, seq]))?;
        inner.schedule().set(seq, locked_until);
        return Ok(Attempt::Got(Delivery {
            message_id: row.message_id,
            event_type: row.event_type,
            body: row.body,
            delivery_count: row.delivery_count + 1,
            lock_token: token,
        }));
    }
}

/// A new lock token for the message at `seq`: the seq, then a random part
/// that tells this lock from the message's earlier ones.
fn lock_token(seq: i64) -> String {
    format!("{seq}.{}", uuid::Uuid::new_v4())
}

/// The seq a token from [`lock_token`] names; `None` for any other string.
fn locked_seq(token: &str) -> Option<i64> {
    token.split_once('.')?.0.parse().ok()
}

/// Deletes the message locked with `token`; `LockLost` when none is.
fn delete_locked(tx: &Connection, inner: &Inner, token: &str) -> Result<(), BusError> {
    if delete_locked_row(tx, inner, token).map_err(bus_err)? {
        Ok(())
    } else {
        Err(BusError::LockLost(token.to_string()))
    }
}

/// Deletes the message locked with `token`; whether there was one.
fn delete_locked_row(tx: &Connection, inner: &Inner, token: &str) -> rusqlite::Result<bool> {
    let Some(seq) = locked_seq(token) else {
        return Ok(false);
    };
    let deleted = tx
        .prepare_cached("DELETE FROM messages WHERE seq = ?1 AND lock_token = ?2")?
        .execute(params![seq, token])?;
    if deleted > 0 {
        inner.schedule().remove(seq);
    }
    Ok(deleted > 0)
}

impl EmbeddedBus {
    /// Runs `settle` on the message locked by `delivery` in a write;
    /// `LockLost` when no message holds that lock token.
    async fn settle<T: Send + 'static>(
        &self,
        delivery: &Delivery,
        settle: impl FnOnce(&Connection, &Inner, i64, u32, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BusError> {
        let token = delivery.lock_token.clone();
        self.inner
            .write(
                move |tx, inner| {
                    let now = now_ms();
                    let Some(seq) = locked_seq(&token) else {
                        return Err(BusError::LockLost(token));
                    };
                    let locked: Option<i64> = tx
                        .prepare_cached(
                            "SELECT delivery_count FROM messages \
                             WHERE seq = ?1 AND lock_token = ?2",
                        )
                        .and_then(|mut s| {
                            s.query_row(params![seq, &token], |r| r.get(0)).optional()
                        })
                        .map_err(bus_err)?;
                    let Some(count) = locked else {
                        return Err(BusError::LockLost(token));
                    };
                    let count = u32::try_from(count).unwrap_or(u32::MAX);
                    settle(tx, inner, seq, count, now).map_err(bus_err)
                },
                |_, _| {},
            )
            .await
    }
}

#[async_trait]
impl EventBus for EmbeddedBus {
    async fn send(&self, messages: &[OutMessage]) -> Result<(), BusError> {
        if messages.is_empty() {
            return Ok(());
        }
        let messages = messages.to_vec();
        self.inner
            .write(
                move |tx, inner| enqueue(tx, inner, &messages, now_ms()).map_err(bus_err),
                |wake, inner| wake.apply(inner),
            )
            .await?;
        Ok(())
    }

    async fn receive(&self, wait: Duration) -> Result<Option<Delivery>, BusError> {
        let start = Instant::now();
        let deadline = start
            .checked_add(wait)
            .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600));
        loop {
            // Register for wake-ups before looking, so a send that commits
            // between the look and the sleep is not missed.
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_at = match self
                .inner
                .write(
                    |tx, inner| lock_next(tx, inner, now_ms()).map_err(bus_err),
                    |_, _| {},
                )
                .await?
            {
                Attempt::Got(delivery) => return Ok(Some(delivery)),
                Attempt::Empty(next_at) => next_at,
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut until = deadline.min(now + POLL_CAP);
            if let Some(at) = next_at {
                let in_ms = at.saturating_sub(now_ms()).max(0).saturating_add(1);
                until = until.min(now + Duration::from_millis(in_ms.unsigned_abs()));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), BusError> {
        let token = delivery.lock_token.clone();
        self.inner
            .write(move |tx, inner| delete_locked(tx, inner, &token), |_, _| {})
            .await
    }

    /// One transaction (one commit) instead of two: the worker's next
    /// receive rides on this message's completion.
    async fn complete_then_receive(
        &self,
        delivery: &Delivery,
    ) -> Result<Option<Delivery>, BusError> {
        let token = delivery.lock_token.clone();
        let attempt = self
            .inner
            .write(
                move |tx, inner| {
                    delete_locked(tx, inner, &token)?;
                    lock_next(tx, inner, now_ms()).map_err(bus_err)
                },
                |_, _| {},
            )
            .await?;
        Ok(match attempt {
            Attempt::Got(next) => Some(next),
            Attempt::Empty(_) => None,
        })
    }

    async fn abandon(&self, delivery: &Delivery) -> Result<(), BusError> {
        let max = self.inner.options.max_delivery_count;
        let released = self
            .settle(delivery, move |tx, inner, seq, count, now| {
                if count >= max {
                    move_to_dead_letters(tx, inner, seq, MAX_DELIVERY_COUNT_EXCEEDED, now)?;
                    Ok(false)
                } else {
                    let visible_at: i64 = tx
                        .prepare_cached(
                            "UPDATE messages SET lock_token = NULL, available_at = visible_at \
                             WHERE seq = ?1 RETURNING visible_at",
                        )?
                        .query_row([seq], |r| r.get(0))?;
                    inner.schedule().set(seq, visible_at);
                    Ok(true)
                }
            })
            .await?;
        if released {
            self.inner.notify.notify_one();
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BusError> {
        let reason = reason.to_string();
        self.settle(delivery, move |tx, inner, seq, _, now| {
            move_to_dead_letters(tx, inner, seq, &reason, now)
        })
        .await
    }

    async fn backlog_age(&self) -> Result<Option<Duration>, BusError> {
        let now = now_ms();
        let oldest = self.inner.schedule().earliest();
        Ok(Some(match oldest {
            Some(t) if t < now => Duration::from_millis((now - t) as u64),
            _ => Duration::ZERO,
        }))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        let conn = self.inner.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT message_id, event_type, body, delivery_count, reason \
                 FROM dead_letters ORDER BY seq",
            )
            .map_err(bus_err)?;
        let rows = stmt
            .query_map([], |r| {
                let count: i64 = r.get(3)?;
                Ok(DeadLetter {
                    message_id: r.get(0)?,
                    event_type: r.get(1)?,
                    body: r.get(2)?,
                    delivery_count: u32::try_from(count).unwrap_or(0),
                    reason: r.get(4)?,
                })
            })
            .map_err(bus_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(bus_err)?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BusOptions, Embedded};
    use super::*;

    fn rows(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM dedupe_0) + (SELECT COUNT(*) FROM dedupe_1)",
            [],
            |r| r.get(0),
        )
        .expect("count")
    }

    #[test]
    fn ids_take_turns_between_two_tables_and_a_turn_a_window_old_empties_the_other() {
        let db = Embedded::in_memory(BusOptions {
            duplicate_detection_window: Duration::from_secs(10),
            ..BusOptions::default()
        })
        .expect("open");
        let inner = &db.inner;
        let conn = inner.conn();
        let send = |id: &str, at: i64| {
            let m = crate::conformance::test_message(id);
            enqueue(&conn, inner, &[m], 1_000_000 + at)
                .expect("enqueue")
                .enqueued
        };
        assert_eq!(send("a", 0), 1);
        assert_eq!(send("b", 9_000), 1);
        assert_eq!(send("a", 9_999), 0, "a repeat within the window is dropped");
        assert_eq!(send("c", 10_000), 1, "the next turn begins");
        assert_eq!(
            send("b", 15_000),
            0,
            "an id of the turn before is still seen"
        );
        assert_eq!(
            send("a", 19_500),
            1,
            "an id seen a window ago or more is not"
        );
        assert_eq!(rows(&conn), 4, "a twice, in each turn's table");
        assert_eq!(
            send("d", 20_000),
            1,
            "the next turn empties the first one's"
        );
        assert_eq!(rows(&conn), 3);
        assert_eq!(send("a", 21_000), 0, "the id sent again is seen");
        assert_eq!(send("c", 21_000), 1, "the id sent at 10 s, not any more");
    }

    #[test]
    fn with_no_window_nothing_is_a_duplicate_and_nothing_is_kept() {
        let db = Embedded::in_memory(BusOptions {
            duplicate_detection_window: Duration::ZERO,
            ..BusOptions::default()
        })
        .expect("open");
        let conn = db.inner.conn();
        for _ in 0..2 {
            let m = crate::conformance::test_message("a");
            let wake = enqueue(&conn, &db.inner, &[m], now_ms()).expect("enqueue");
            assert_eq!(wake.enqueued, 1);
        }
        assert_eq!(rows(&conn), 0);
    }
}
