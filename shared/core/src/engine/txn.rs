//! Loading and saving a saga, and the outbox that travels with it.
//!
//! # Expected flow
//! A handler loads the saga ([`Engine::load`]), changes it through `decide`'s
//! transitions, queues the events that follow in [`Txn::outbox`], and saves
//! ([`Engine::save`]) with the ETag it loaded.
//!
//! # Guarantees
//! The events that follow a saga change are committed with the change, on
//! every store:
//! - a store that publishes in its own transaction (the embedded SQLite store
//!   and bus) takes them with the write;
//! - any other store (Cosmos DB) gets them inside the saga document itself
//!   (`outbox`, one If-Match replace); they are sent after the write with
//!   `MessageId` = event id, then removed from the document by a second
//!   If-Match replace.
//!
//! After a crash at any point the events are not lost: before the write
//! nothing happened; between the write and the send the document holds
//! them; between the send and the removal they are sent again, and the bus's
//! duplicate detection drops the second copy. Every load of a saga that still
//! holds events sends them first, and the sweeper loads every such saga.
//!
//! # Errors
//! A lost ETag race is [`StoreError::PreconditionFailed`]: the caller reloads
//! and decides again. A send that fails leaves the events in the document and
//! returns the bus error, so the triggering message is redelivered.

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

/// How many times a load retries sending a stored outbox after losing a race.
const LOAD_ATTEMPTS: usize = 5;

impl Engine {
    fn parse(&self, job: &str, text: &str) -> Result<Saga, EngineError> {
        serde_json::from_str(text)
            .map_err(|e| EngineError::Store(StoreError::Corrupt(format!("{job}: {e}"))))
    }

    /// The saga of `job`, with any events still waiting in its document sent.
    pub(super) async fn load(&self, job: &str) -> Result<Option<Txn>, EngineError> {
        for _ in 0..LOAD_ATTEMPTS {
            let Some((text, etag)) = self.store.get_text(job).await? else {
                return Ok(None);
            };
            let mut txn = Txn {
                saga: self.parse(job, &text)?,
                etag,
                outbox: vec![],
                progress: true,
            };
            match self.send_stored(&mut txn).await {
                Ok(()) => return Ok(Some(txn)),
                Err(EngineError::Store(StoreError::PreconditionFailed(_))) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::PreconditionFailed(job.into()).into())
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
        if self.store.delivers_outbox() {
            let messages: Vec<OutMessage> = entries.iter().map(message).collect();
            txn.etag = self
                .store
                .replace_text(&txn.saga.id, &txn.saga.to_text(), &txn.etag, &messages)
                .await?;
            self.stats.store_writes.fetch_add(1, Ordering::Relaxed);
            telemetry::record_transition(&txn.saga, entries.iter().map(|e| &e.event));
        } else {
            let written = entries.len();
            txn.saga.outbox.extend(entries);
            txn.etag = self
                .store
                .replace_text(&txn.saga.id, &txn.saga.to_text(), &txn.etag, &[])
                .await?;
            self.stats.store_writes.fetch_add(1, Ordering::Relaxed);
            let first = txn.saga.outbox.len() - written;
            telemetry::record_transition(
                &txn.saga,
                txn.saga.outbox[first..].iter().map(|e| &e.event),
            );
            self.send_stored(txn).await?;
        }
        txn.outbox.clear();
        self.stats.waits.fetch_add(waits as u64, Ordering::Relaxed);
        self.stats.saved(&txn.saga);
        Ok(())
    }

    /// Stores a new saga with its first events (same guarantees as `save`).
    pub(super) async fn create(&self, saga: Saga, first: Emit) -> Result<(), EngineError> {
        let now = self.now();
        let mut saga = saga;
        let first = entry(&first, now);
        saga.wake_at = Some(first.not_before.unwrap_or(now));
        let etag = if self.store.delivers_outbox() {
            self.store
                .create_text(&saga.id, &saga.to_text(), &[message(&first)])
                .await?
        } else {
            saga.outbox.push(first);
            self.store
                .create_text(&saga.id, &saga.to_text(), &[])
                .await?
        };
        self.stats.store_writes.fetch_add(1, Ordering::Relaxed);
        let mut txn = Txn {
            saga,
            etag,
            outbox: vec![],
            progress: true,
        };
        self.send_stored(&mut txn).await
    }

    /// Sends an event again without saving anything: a transition already
    /// recorded whose event may have been lost (the bus drops a repeat).
    pub(super) async fn resend(&self, emit: &Emit) -> Result<(), EngineError> {
        let m = message(&entry(emit, self.now()));
        self.bus.send(&[m]).await?;
        Ok(())
    }

    /// Sends the events held in the document, then removes them from it.
    async fn send_stored(&self, txn: &mut Txn) -> Result<(), EngineError> {
        if txn.saga.outbox.is_empty() {
            return Ok(());
        }
        let messages: Vec<OutMessage> = txn.saga.outbox.iter().map(message).collect();
        self.bus.send(&messages).await?;
        txn.saga.outbox.clear();
        txn.etag = self
            .store
            .replace_text(&txn.saga.id, &txn.saga.to_text(), &txn.etag, &[])
            .await?;
        self.stats.store_writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
                .load(job)
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
