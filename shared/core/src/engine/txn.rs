//! Loading and saving a saga, and the outbox that travels with it.
//!
//! # Expected flow
//! A handler loads the saga ([`Engine::load`], naming the event it handles),
//! changes it through `decide`'s transitions, queues the events that follow
//! in [`Txn::outbox`], and saves ([`Engine::save`]) with the ETag it loaded.
//!
//! # Guarantees
//! The events that follow a saga change are committed with the change, on
//! every store, in one write:
//! - a store that publishes in its own transaction (the embedded SQLite store
//!   and bus) takes them with the write;
//! - any other store (Cosmos DB) gets them inside the saga document itself
//!   (`outbox`, one If-Match replace); they are sent after the write with
//!   `MessageId` = event id and stay in the document until a later load
//!   knows they reached the bus: the event it handles arrived, and it sends
//!   any other one itself before it changes the saga. That load's own save
//!   leaves them out, so a step costs one replace, not two. The events of a
//!   save that leaves the job settled, which no later step's save follows,
//!   are removed by a second replace once sent (as every save's were before);
//!   events that stay in a document past the grace period are sent again and
//!   removed by the sweeper ([`Engine::flush`]).
//!
//! After a crash at any point the events are not lost: before the write
//! nothing happened; after it the document holds them until they are known
//! sent, and a repeat is dropped by the bus's duplicate detection (or, past
//! its window, ignored as stale by `decide`).
//!
//! # Errors
//! A lost ETag race is [`StoreError::PreconditionFailed`]: the caller reloads
//! and decides again. A send that fails leaves the events in the document and
//! returns the bus error, so the triggering message is redelivered and its
//! load sends them.

use super::{Engine, EngineError};
use crate::decide::Emit;
use crate::ports::{ETag, OutMessage, StoreError};
use crate::saga::{OutboxEntry, Saga};
use crate::telemetry;
use std::sync::atomic::Ordering;
use time::OffsetDateTime;

/// A saga loaded for one handler run, with the events its next save publishes.
pub(super) struct Txn {
    pub saga: Saga,
    pub etag: ETag,
    pub outbox: Vec<Emit>,
    /// False for housekeeping saves (sending a stored outbox, a sweeper
    /// re-arm): they leave `updatedAt`, so a job that only gets swept still
    /// shows how long it has made no progress.
    pub progress: bool,
    /// The document held events when this run loaded it; the load made sure
    /// they are on the bus, and the next save leaves them out (see the
    /// module doc).
    pub held: bool,
}

fn message(entry: &OutboxEntry) -> OutMessage {
    OutMessage {
        id: entry.event.id().to_string(),
        event_type: entry.event.event_type().to_string(),
        body: entry.event.to_json(),
        not_before: entry.not_before,
    }
}

/// The outbox entry of an emitted event, stamped with the current trace
/// context (kept with the event in the document until it is sent).
fn entry(e: &Emit, now: OffsetDateTime) -> OutboxEntry {
    OutboxEntry {
        event: e.event.clone().with_current_trace(),
        not_before: e.not_before.map(|d| now + d),
    }
}

/// How many times [`Engine::flush`] reloads after losing a race.
const FLUSH_ATTEMPTS: usize = 5;

impl Engine {
    fn parse(&self, job: &str, text: &str) -> Result<Saga, EngineError> {
        serde_json::from_str(text)
            .map_err(|e| EngineError::Store(StoreError::Corrupt(format!("{job}: {e}"))))
    }

    /// The saga of `job` as stored, for reading only: nothing is sent or written.
    pub(super) async fn read(&self, job: &str) -> Result<Option<Saga>, EngineError> {
        match self.store.get_text(job).await? {
            Some((text, _)) => Ok(Some(self.parse(job, &text)?)),
            None => Ok(None),
        }
    }

    /// The copy of `job`'s saga this engine kept when it last wrote it, if
    /// the document has not changed since (see `kept`).
    async fn kept_copy(&self, job: &str) -> Result<Option<(Saga, ETag)>, EngineError> {
        let Some((etag, saga)) = self.kept.take(job) else {
            return Ok(None);
        };
        if self.store.etag(job).await?.as_ref() != Some(&etag) {
            return Ok(None);
        }
        self.stats.kept_loads.fetch_add(1, Ordering::Relaxed);
        Ok(Some((saga, etag)))
    }

    /// Notes a successful write of `saga`, which now carries `etag`: counted,
    /// and kept for its next load.
    fn wrote(&self, saga: &Saga, etag: &ETag) {
        self.stats.store_writes.fetch_add(1, Ordering::Relaxed);
        self.kept.wrote(saga, etag);
    }

    /// The saga of `job`, ready to change. The events its document still
    /// holds are known to be on the bus afterwards: `handling` (the id of the
    /// event being handled) arrived, and any other is sent here (the bus
    /// drops a repeat); the next save leaves them out.
    pub(super) async fn load(
        &self,
        job: &str,
        handling: Option<&str>,
    ) -> Result<Option<Txn>, EngineError> {
        let (mut saga, etag) = match self.kept_copy(job).await? {
            Some(kept) => kept,
            None => {
                let Some((text, etag)) = self.store.get_text(job).await? else {
                    return Ok(None);
                };
                (self.parse(job, &text)?, etag)
            }
        };
        let held = !saga.outbox.is_empty();
        saga.outbox.retain(|e| Some(e.event.id()) != handling);
        if !saga.outbox.is_empty() {
            let messages: Vec<OutMessage> = saga.outbox.iter().map(message).collect();
            self.bus.send(&messages).await?;
            saga.outbox.clear();
        }
        Ok(Some(Txn {
            saga,
            etag,
            outbox: vec![],
            progress: true,
            held,
        }))
    }

    /// Saves the saga and hands over its queued events (see the module doc).
    pub(super) async fn save(&self, txn: &mut Txn) -> Result<(), EngineError> {
        let now = self.now();
        if txn.progress {
            txn.saga.updated_at = now;
            txn.saga.rearms = 0;
        }
        let entries: Vec<OutboxEntry> = txn.outbox.iter().map(|e| entry(e, now)).collect();
        let waits = entries
            .iter()
            .filter(|e| e.event.event_type() == crate::events::types::STEP_POLL)
            .count();
        if let Some(due) = entries.iter().map(|e| e.not_before.unwrap_or(now)).max() {
            txn.saga.wake_at = Some(due);
        }
        let messages: Vec<OutMessage> = if self.store.delivers_outbox() {
            // The store's own bus is one queue that nobody observes: an
            // event addressed to no handler would only be received and
            // completed (on Azure's topic no subscription takes it either).
            entries
                .iter()
                .filter(|e| e.event.has_handler())
                .map(message)
                .collect()
        } else {
            // The load and every send of this run emptied the document's
            // copy: it now holds exactly these events.
            txn.saga.outbox.extend(entries.iter().cloned());
            vec![]
        };
        txn.etag = self.replace(txn, &messages).await?;
        self.wrote(&txn.saga, &txn.etag);
        telemetry::record_transition(&txn.saga, entries.iter().map(|e| &e.event));
        txn.outbox.clear();
        self.stats.waits.fetch_add(waits as u64, Ordering::Relaxed);
        if txn.progress {
            self.stats.saved(&txn.saga);
        }
        self.send_held(txn).await?;
        if !entries.is_empty() && txn.saga.is_settled() && !self.store.delivers_outbox() {
            self.forget_sent(txn).await;
        }
        Ok(())
    }

    /// Replaces the stored saga with `txn`'s, if it still carries `txn`'s
    /// ETag, committing `messages` with it; the new ETag.
    async fn replace(&self, txn: &Txn, messages: &[OutMessage]) -> Result<ETag, StoreError> {
        self.store
            .replace_text(
                &txn.saga.id,
                &txn.saga.to_text(),
                txn.saga.sweep_hint(),
                &txn.etag,
                messages,
            )
            .await
    }

    /// Removes from the document the events a save that left the job
    /// settled stored and sent: no later step's save would. A newer save
    /// removed them already (its load sent them again); any other failure
    /// leaves them to the sweeper.
    async fn forget_sent(&self, txn: &mut Txn) {
        match self.replace(txn, &[]).await {
            Ok(etag) => {
                txn.etag = etag;
                self.wrote(&txn.saga, &txn.etag);
            }
            Err(StoreError::PreconditionFailed(_)) => {}
            Err(e) => {
                tracing::warn!(job = %txn.saga.id, error = %e, "a settled job's sent events stay in its document until the sweeper removes them");
            }
        }
    }

    /// Stores a new saga with its first events (same guarantees as `save`).
    pub(super) async fn create(&self, saga: Saga, first: Emit) -> Result<(), EngineError> {
        let now = self.now();
        let mut saga = saga;
        let first = entry(&first, now);
        saga.wake_at = Some(first.not_before.unwrap_or(now));
        let messages = if self.store.delivers_outbox() {
            vec![message(&first)]
        } else {
            saga.outbox.push(first);
            vec![]
        };
        let etag = self
            .store
            .create_text(&saga.id, &saga.to_text(), saga.sweep_hint(), &messages)
            .await?;
        self.wrote(&saga, &etag);
        let mut txn = Txn {
            saga,
            etag,
            outbox: vec![],
            progress: true,
            held: false,
        };
        self.send_held(&mut txn).await
    }

    /// Sends an event again without saving anything: a transition already
    /// recorded whose event may have been lost (the bus drops a repeat).
    pub(super) async fn resend(&self, emit: &Emit) -> Result<(), EngineError> {
        let m = message(&entry(emit, self.now()));
        self.bus.send(&[m]).await?;
        Ok(())
    }

    /// Sends the events the save just stored in the document. They stay in
    /// the document (a later load or [`Engine::flush`] knows them sent) and
    /// leave this run's copy, so a second save of the same run drops them.
    async fn send_held(&self, txn: &mut Txn) -> Result<(), EngineError> {
        if txn.saga.outbox.is_empty() {
            return Ok(());
        }
        let messages: Vec<OutMessage> = txn.saga.outbox.iter().map(message).collect();
        self.bus.send(&messages).await?;
        txn.saga.outbox.clear();
        Ok(())
    }

    /// Sends the events `job`'s document holds and removes them with one
    /// housekeeping write; false when it held none. For the sweeper: events
    /// nobody received within the grace period.
    pub(super) async fn flush(&self, job: &str) -> Result<bool, EngineError> {
        for _ in 0..FLUSH_ATTEMPTS {
            let Some(mut txn) = self.load(job, None).await? else {
                return Ok(false);
            };
            if !txn.held {
                return Ok(false);
            }
            // They are due now: a re-arm waits another grace period for them.
            txn.saga.wake_at = Some(self.now());
            txn.progress = false;
            match self.save(&mut txn).await {
                Err(EngineError::Store(StoreError::PreconditionFailed(_))) => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(true),
            }
        }
        Err(StoreError::PreconditionFailed(job.into()).into())
    }

    /// Runs `change` on the freshly loaded saga and saves it, reloading on a
    /// lost ETag race. `change` queues the events that follow and returns
    /// whether there is anything to save; so does `with_saga`.
    pub(super) async fn with_saga(
        &self,
        job: &str,
        progress: bool,
        mut change: impl FnMut(&mut Saga, &mut Vec<Emit>) -> Result<bool, super::CommandError>,
    ) -> Result<bool, super::CommandError> {
        for _ in 0..8 {
            let mut txn = self
                .load(job, None)
                .await?
                .ok_or_else(|| super::CommandError::NotFound(job.into()))?;
            txn.progress = progress;
            if !change(&mut txn.saga, &mut txn.outbox)? {
                return Ok(false);
            }
            match self.save(&mut txn).await {
                Err(EngineError::Store(StoreError::PreconditionFailed(_))) => continue,
                Err(e) => return Err(e.into()),
                Ok(()) => return Ok(true),
            }
        }
        Err(super::CommandError::Conflict(
            "the job changed repeatedly; try again".into(),
        ))
    }
}
