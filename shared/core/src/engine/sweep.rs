//! The sweeper: nothing can be stuck silently.
//!
//! # Expected flow
//! On a timer (the `sweep` function on Azure, a loop in `flotilla worker` and
//! in the embedded runner) [`Engine::sweep`] reads every saga that still
//! holds events, or is not settled and was not saved within the grace period
//! (`SagaStore::list_sweepable_after`; a store that cannot filter gives
//! more, up to every one) and:
//! 1. sends the events a saga document still holds past the grace period
//!    (a send lost after the write, or a settled job's last events whose
//!    removal failed) and removes them ([`Engine::flush`]); within the grace
//!    period they are in flight, and the load that handles the next one
//!    leaves them out (`engine::txn`);
//! 2. re-arms a job that is waiting for something and whose next event is
//!    overdue by more than the grace period (`wakeAt` + grace, and no save in
//!    the grace period): `decide::rearm` emits the event that puts it back in
//!    motion, with a fresh sequence number. The grace period stretches by the
//!    bus's backlog (`EventBus::backlog_age`, where the bus can tell): an event
//!    queued behind others is late, not lost, and a second one would only
//!    lengthen the queue;
//! 3. reports a job that made no progress for `stall_after` as stalled, with
//!    why, which `status` shows too ([`stalled_reason`]).
//!
//! # Guarantees
//! Sweeping is always safe, also while handlers run and with several
//! sweepers at once: every change goes through the ETag-checked save, a
//! re-arm leads to the decision the lost event would have led to, and a
//! late original event is ignored as stale.
//!
//! # Caveats
//! A re-arm is housekeeping, not progress: it leaves `updatedAt` alone, so a
//! job whose handler fails every time still turns up as stalled.

use super::{CommandError, Engine, EngineError};
use crate::decide;
use crate::saga::{JobStatus, Saga, StepStatus};
use crate::settings;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// How many sagas a sweep reads at once.
const SWEEP_PAGE: usize = 100;

/// When the sweeper acts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SweepOptions {
    /// How often the sweep loop runs.
    pub interval: Duration,
    /// How long past its due time a job may go without a save before it is re-armed.
    pub grace: Duration,
    /// How long without progress before a job is reported stalled.
    pub stall_after: Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            interval: Duration::from_secs(30),
            grace: Duration::from_secs(60),
            stall_after: Duration::from_secs(15 * 60),
        }
    }
}

fn seconds(name: &str, default: Duration) -> Result<Duration, String> {
    match settings::get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("{name} must be a positive number of seconds (got '{v}')")),
    }
}

impl SweepOptions {
    /// The defaults, overridden by `FLOTILLA_SWEEP_INTERVAL_S`,
    /// `FLOTILLA_SWEEP_GRACE_S` and `FLOTILLA_STALL_AFTER_S`.
    pub fn from_settings(defaults: SweepOptions) -> Result<SweepOptions, String> {
        Ok(SweepOptions {
            interval: seconds("FLOTILLA_SWEEP_INTERVAL_S", defaults.interval)?,
            grace: seconds("FLOTILLA_SWEEP_GRACE_S", defaults.grace)?,
            stall_after: seconds("FLOTILLA_STALL_AFTER_S", defaults.stall_after)?,
        })
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Documents read.
    pub scanned: usize,
    /// Jobs whose stored events were sent.
    pub sent: Vec<String>,
    /// Jobs re-armed.
    pub rearmed: Vec<String>,
    /// Jobs without progress for too long, with why.
    pub stalled: Vec<Stalled>,
    /// Documents that are not readable sagas.
    pub corrupt: Vec<String>,
    /// Jobs the sweep could not act on this time (store or bus errors).
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stalled {
    pub job: String,
    pub why: String,
}

/// When the job's next event was due at the latest: the events of its last
/// save, or the save itself.
fn due(saga: &Saga) -> OffsetDateTime {
    saga.wake_at.unwrap_or(saga.updated_at).max(saga.updated_at)
}

fn overdue(saga: &Saga, now: OffsetDateTime, grace: Duration) -> bool {
    !saga.is_settled() && now > due(saga) + grace
}

/// Why the job counts as stalled at `now`, or `None` while it makes progress.
pub fn stalled_reason(saga: &Saga, now: OffsetDateTime, stall_after: Duration) -> Option<String> {
    if saga.is_settled() || now - saga.updated_at <= stall_after {
        return None;
    }
    let since = saga
        .updated_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let what = match &saga.pending {
        Some(p) => p.purpose.describe(saga),
        None => match saga.status {
            JobStatus::Compensating | JobStatus::Deleting => "the undo chain has not moved".into(),
            _ => saga
                .steps
                .iter()
                .find(|s| s.status != StepStatus::Succeeded)
                .map(|s| format!("step {} has not moved", s.name))
                .unwrap_or_else(|| "nothing has moved".into()),
        },
    };
    let last = saga
        .steps
        .iter()
        .filter_map(|s| s.last_error.as_ref())
        .next_back()
        .map(|e| format!("; last error {}: {}", e.code, e.message))
        .unwrap_or_default();
    Some(format!(
        "no progress since {since}: {what}; re-armed {} time(s) by the sweeper{last}",
        saga.rearms
    ))
}

impl Engine {
    /// One sweep over every saga (see the module doc).
    pub async fn sweep(&self, opts: &SweepOptions) -> Result<SweepReport, EngineError> {
        let mut report = SweepReport::default();
        // A job's next event waiting behind a backlog is late, not lost:
        // the grace period stretches by the queue's lag.
        let lag = self
            .bus
            .backlog_age()
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let grace = opts.grace + lag;
        // A job saved since then is neither overdue nor stalled.
        let quiet_before = self.now() - grace.min(opts.stall_after);
        // A page at a time: a sweep holds SWEEP_PAGE sagas, not every one.
        let mut after: Option<String> = None;
        loop {
            let docs = self
                .store
                .list_sweepable_after(after.as_deref(), SWEEP_PAGE, quiet_before)
                .await?;
            let Some(last) = docs.last() else { break };
            after = Some(last.id.clone());
            report.scanned += docs.len();
            for doc in docs {
                self.sweep_one(doc, opts, grace, &mut report).await;
            }
        }
        Ok(report)
    }

    /// Sweeps one stored saga (see the module doc), noting what it did in `report`.
    async fn sweep_one(
        &self,
        doc: crate::ports::StoredDoc,
        opts: &SweepOptions,
        grace: Duration,
        report: &mut SweepReport,
    ) {
        let Ok(saga) = serde_json::from_value::<Saga>(doc.doc) else {
            report.corrupt.push(doc.id);
            return;
        };
        let now = self.now();
        let mut flushed = false;
        if !saga.outbox.is_empty() && now > due(&saga) + grace {
            match self.flush(&saga.id).await {
                Ok(true) => {
                    flushed = true;
                    report.sent.push(saga.id.clone());
                }
                Ok(false) => {}
                Err(e) => report.errors.push(format!("{}: {e}", saga.id)),
            }
        }
        // Flushed events are the ones the job waits for: no re-arm on top.
        if !flushed && overdue(&saga, now, grace) {
            let rearmed = self
                .with_saga(&saga.id, false, |s, out| {
                    if !overdue(s, now, grace) {
                        return Ok(false);
                    }
                    match decide::rearm(s, now) {
                        Some(emit) => {
                            out.push(emit);
                            Ok(true)
                        }
                        None => Ok(false),
                    }
                })
                .await;
            match rearmed {
                Ok(true) => {
                    tracing::warn!(job = %saga.id, "overdue job re-armed by the sweeper");
                    report.rearmed.push(saga.id.clone());
                }
                Ok(false) | Err(CommandError::NotFound(_)) => {}
                Err(e) => report.errors.push(format!("{}: {e}", saga.id)),
            }
        }
        if let Some(why) = stalled_reason(&saga, now, opts.stall_after) {
            tracing::warn!(job = %saga.id, %why, "job stalled");
            report.stalled.push(Stalled {
                job: saga.id.clone(),
                why,
            });
        }
    }
}

/// Sweeps every `opts.interval` until `stop` turns true.
pub async fn run_sweeper(
    engine: Arc<Engine>,
    opts: SweepOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(opts.interval) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        match engine.sweep(&opts).await {
            Ok(r) if !(r.sent.is_empty() && r.rearmed.is_empty() && r.errors.is_empty()) => {
                tracing::info!(
                    sent = r.sent.len(),
                    rearmed = r.rearmed.len(),
                    stalled = r.stalled.len(),
                    errors = r.errors.len(),
                    "sweep"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }
}
