//! The pure heart of the saga: `decide(saga, event)` says what an incoming
//! event means for this job, and the transition functions say how the saga
//! changes when a step's work finishes, fails or must wait. No I/O here.

use crate::events::{handlers, types, CloudEvent, EventData, EventKind};
use crate::saga::{
    ErrorInfo, JobStatus, PendingOp, PendingPurpose, ResourceState, Saga, SoftDeleted, StepName,
    StepStatus,
};
use flotilla_azure::AzureError;
use std::time::Duration;
use time::OffsetDateTime;

/// What to do with an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing to do (a duplicate, a stale poll, a notification); the reason is logged.
    Ignore(&'static str),
    /// The step is already done: emit its `step.succeeded` again and do nothing else.
    Reemit(StepName),
    /// Run (or continue) a forward step.
    Forward(StepName),
    /// Check the pending operation (`saga.pending`).
    Poll,
    /// Run (or continue) the undo chain.
    Undo,
    /// Start scaling a worker pool.
    Scale { pool: String, count: u32 },
    /// Start adding a worker pool (day 2).
    AddPool { pool: crate::spec::WorkerPool },
    /// Start removing a worker pool (day 2).
    RemovePool { pool: String },
}

/// An event to publish, possibly scheduled for later.
#[derive(Clone, Debug, PartialEq)]
pub struct Emit {
    pub event: CloudEvent,
    pub not_before: Option<Duration>,
}

/// Limits for retries and waits.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Forward attempts per step before a retryable error counts as terminal.
    pub max_step_attempts: u32,
    /// Undo attempts per step before compensation gives up (status `Failed`).
    pub max_undo_attempts: u32,
    /// First retry backoff; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry backoff.
    pub backoff_cap: Duration,
    /// How often `join` re-checks the nodes.
    pub join_interval: Duration,
    /// Checks before `join` gives up with `JoinTimeout`.
    pub max_join_checks: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_step_attempts: 5,
            max_undo_attempts: 8,
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
            join_interval: Duration::from_secs(5),
            max_join_checks: 360,
        }
    }
}

impl Policy {
    /// Capped exponential backoff for attempt `n` (1-based), never shorter than `retry_after`.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        exp.min(self.backoff_cap)
            .max(retry_after.unwrap_or_default())
    }
}

fn data(saga: &Saga) -> EventData {
    EventData {
        job: saga.id.clone(),
        ..Default::default()
    }
}

/// Whether `step` can be (re)started now: the job runs, the step is not done
/// and nothing is in flight for it.
fn forward_or_not(saga: &Saga, step: StepName) -> Decision {
    // A finished step re-emits its event whatever the job's state: the last
    // step finishing also ends the job, and its event may still be unsent.
    if saga.step(step).status == StepStatus::Succeeded {
        return Decision::Reemit(step);
    }
    if saga.status != JobStatus::Running {
        return Decision::Ignore("job is not running");
    }
    match saga.step(step).status {
        StepStatus::Pending | StepStatus::Running if saga.pending.is_some() => {
            Decision::Ignore("an operation is in flight")
        }
        StepStatus::Pending | StepStatus::Running => Decision::Forward(step),
        _ => Decision::Ignore("step already failed"),
    }
}

/// What an incoming event means for this saga.
///
/// # Expected flow
/// `job.requested` starts `stage`; each `step.succeeded` starts the next step;
/// `step.retry` re-runs a step after a retryable error; the poll events
/// re-check the operation in `saga.pending`; `step.failed`, `undo.*` and
/// `job.delete-requested` drive the undo chain; `job.scale-requested` scales a
/// pool. Notifications (`job.succeeded`, `compensation.started`, ...) are for
/// observers and change nothing.
///
/// # Guarantees
/// Pure: the same saga and event always give the same decision. Duplicates
/// are harmless: a finished step re-emits its event (`Reemit`), a poll or
/// retry whose `seq` is not the saga's current one is stale (`Ignore`), and
/// nothing starts while an operation is in flight.
///
/// # Assumptions
/// The saga is the latest stored version; the engine saves with its ETag, so
/// a decision taken on a stale copy is retried on the fresh one.
///
/// # Errors
/// None: an event that cannot apply is ignored with a reason the engine logs.
/// Commands carried by events are checked here against the saga (a scale
/// outside the pool's limits is refused), not only at the HTTP edge.
pub fn decide(saga: &Saga, event: &CloudEvent) -> Decision {
    let seq_matches = |seq: Option<u64>| seq.is_some() && seq == Some(saga.seq);
    let Some(kind) = event.kind() else {
        return Decision::Ignore("unknown event type");
    };
    match kind {
        EventKind::JobRequested => forward_or_not(saga, StepName::Stage),
        EventKind::StepSucceeded => {
            let Some(done) = event.data().step else {
                return Decision::Ignore("event names no step");
            };
            if saga.step(done).status != StepStatus::Succeeded {
                return Decision::Ignore("event contradicts the saga");
            }
            match done.next() {
                Some(next) => forward_or_not(saga, next),
                None => Decision::Ignore("last step done"),
            }
        }
        EventKind::StepRetry => {
            let Some(step) = event.data().step else {
                return Decision::Ignore("event names no step");
            };
            if !seq_matches(event.data().seq) {
                return Decision::Ignore("stale retry");
            }
            forward_or_not(saga, step)
        }
        EventKind::StepPoll | EventKind::UndoPoll | EventKind::ScalePoll => match &saga.pending {
            Some(p) if Some(p.seq) == event.data().seq => Decision::Poll,
            Some(_) => Decision::Ignore("stale poll"),
            None => Decision::Ignore("nothing pending"),
        },
        EventKind::StepFailed | EventKind::UndoSucceeded | EventKind::DeleteRequested => {
            undo_or_not(saga)
        }
        EventKind::UndoRetry => {
            if !seq_matches(event.data().seq) {
                return Decision::Ignore("stale retry");
            }
            undo_or_not(saga)
        }
        EventKind::ScaleRequested => {
            if saga.status != JobStatus::Succeeded {
                return Decision::Ignore("job is not in a state to scale");
            }
            if saga.pending.is_some() {
                return Decision::Ignore("an operation is in flight");
            }
            let (Some(pool), Some(count)) = (&event.data().pool, event.data().count) else {
                return Decision::Ignore("scale request without pool or count");
            };
            if !seq_matches(event.data().seq) {
                return Decision::Ignore("stale scale request");
            }
            // A message on the bus is not trusted more than a request: the
            // same limits as `request_scale`, against the saga.
            match check_scale(saga, pool, count) {
                Ok(()) => Decision::Scale {
                    pool: pool.clone(),
                    count,
                },
                Err(_) => Decision::Ignore("scale request outside the pool's limits"),
            }
        }
        EventKind::PoolAddRequested | EventKind::PoolRemoveRequested => {
            decide_pool_change(saga, kind, event.data())
        }
        EventKind::PoolPoll => match &saga.pending {
            Some(p) if Some(p.seq) == event.data().seq => Decision::Poll,
            Some(_) => Decision::Ignore("stale poll"),
            None => Decision::Ignore("nothing pending"),
        },
        EventKind::JobSucceeded
        | EventKind::PoolAdded
        | EventKind::PoolAddFailed
        | EventKind::PoolRemoved
        | EventKind::CompensationStarted
        | EventKind::JobCompensated
        | EventKind::CompensationFailed
        | EventKind::JobDeleted
        | EventKind::JobScaled
        | EventKind::JobDegraded
        | EventKind::JobRejected => Decision::Ignore("notification"),
    }
}

fn undo_or_not(saga: &Saga) -> Decision {
    match saga.status {
        JobStatus::Compensating | JobStatus::Deleting if saga.pending.is_some() => {
            Decision::Ignore("an undo is in flight")
        }
        JobStatus::Compensating | JobStatus::Deleting => Decision::Undo,
        _ => Decision::Ignore("job is not being undone"),
    }
}

// ---- transitions --------------------------------------------------------

/// The `step.succeeded` event of `step` (stable id, so a repeat is dropped).
pub fn step_succeeded_event(saga: &Saga, step: StepName) -> Emit {
    let subject = step.next().map(|s| s.as_str()).unwrap_or(handlers::NONE);
    Emit {
        event: CloudEvent::new(
            types::STEP_SUCCEEDED,
            subject,
            &format!("{step}/succeeded"),
            EventData {
                step: Some(step),
                ..data(saga)
            },
        ),
        not_before: None,
    }
}

/// The event that starts a job.
pub fn job_requested_event(saga: &Saga) -> Emit {
    Emit {
        event: CloudEvent::new(
            types::JOB_REQUESTED,
            StepName::Stage.as_str(),
            "requested",
            data(saga),
        ),
        not_before: None,
    }
}

/// Pre-flight found nothing that would fail: record its warnings; the
/// job's first step goes on.
pub fn preflight_passed(saga: &mut Saga, preflight: crate::preflight::Preflight) {
    saga.preflight = Some(preflight);
}

/// Pre-flight found problems before anything was created: the job ends
/// `Rejected` with every problem in `preflight` and one `PreflightFailed`
/// error listing them. No step ran, so nothing is compensated.
///
/// # Guarantees
/// Only a job that created nothing is rejected (the engine runs pre-flight,
/// and saves a verdict that passes, before the first operation of `stage`);
/// the steps stay `Pending`, and the intents `stage` had recorded ahead,
/// never sent, are dropped.
pub fn reject(
    saga: &mut Saga,
    preflight: crate::preflight::Preflight,
    now: OffsetDateTime,
) -> Vec<Emit> {
    let info = ErrorInfo::terminal("PreflightFailed", preflight.summary());
    saga.preflight = Some(preflight);
    saga.resources.retain(|r| r.state != ResourceState::Planned);
    for s in &mut saga.steps {
        if s.status == StepStatus::Running {
            s.status = StepStatus::Pending;
            s.started_at = None;
        }
    }
    saga.error = Some(info.clone());
    saga.status = JobStatus::Rejected;
    saga.pending = None;
    saga.updated_at = now;
    vec![Emit {
        event: CloudEvent::new(
            types::JOB_REJECTED,
            handlers::NONE,
            "rejected",
            EventData {
                error: Some(info),
                ..data(saga)
            },
        ),
        not_before: None,
    }]
}

/// A resource of a step exists now: record it, and count it as progress
/// (the step's retry budget starts again).
pub fn resource_created(saga: &mut Saga, index: usize) {
    saga.resources[index].state = ResourceState::Created;
    let step = saga.resources[index].step;
    saga.step_mut(step).failures = 0;
}

/// A step begins (or resumes) work.
pub fn start_step(saga: &mut Saga, step: StepName, now: OffsetDateTime) {
    let s = saga.step_mut(step);
    if s.status == StepStatus::Pending {
        s.status = StepStatus::Running;
        s.started_at = Some(now);
    }
    if s.attempts == 0 {
        s.attempts = 1;
    }
}

/// A step finished: mark it, and either emit its event or finish the job.
/// Its intents still `Planned` were recorded ahead but not in the plan that
/// ran (a command changed the job in between): never sent, they are dropped.
pub fn finish_step(saga: &mut Saga, step: StepName, now: OffsetDateTime) -> Vec<Emit> {
    saga.resources
        .retain(|r| !(r.step == step && r.state == ResourceState::Planned));
    let s = saga.step_mut(step);
    s.status = StepStatus::Succeeded;
    s.finished_at = Some(now);
    s.last_error = None;
    saga.pending = None;
    let mut out = vec![step_succeeded_event(saga, step)];
    if step.next().is_none() {
        saga.status = JobStatus::Succeeded;
        out.push(Emit {
            event: CloudEvent::new(
                types::JOB_SUCCEEDED,
                handlers::NONE,
                "succeeded",
                EventData {
                    outputs: saga.outputs_id().map(str::to_string),
                    ..data(saga)
                },
            ),
            not_before: None,
        });
    }
    out
}

/// An operation of `step` (or an undo, or a scale) is running: save it and schedule a re-check.
pub fn wait_for(
    saga: &mut Saga,
    purpose: PendingPurpose,
    poll: Option<flotilla_azure::PollState>,
    after: Duration,
    now: OffsetDateTime,
) -> Emit {
    let checks = match &saga.pending {
        Some(p) if p.purpose == purpose => p.checks + 1,
        _ => 0,
    };
    let seq = saga.next_seq();
    let (ty, subject, step) = match &purpose {
        PendingPurpose::Create { step, .. } => (types::STEP_POLL, handlers::POLL, Some(*step)),
        PendingPurpose::JoinCheck => (types::STEP_POLL, handlers::POLL, Some(StepName::Join)),
        PendingPurpose::Delete { .. } => (types::UNDO_POLL, handlers::COMPENSATE, None),
        PendingPurpose::Scale { .. } | PendingPurpose::ScaleJoinCheck { .. } => {
            (types::SCALE_POLL, handlers::POLL, None)
        }
        PendingPurpose::AddPool { .. } | PendingPurpose::RemovePool { .. } => {
            (types::POOL_POLL, handlers::POLL, None)
        }
    };
    let key = match step {
        Some(s) => format!("{s}/poll/{seq}"),
        None => format!("poll/{seq}"),
    };
    saga.pending = Some(PendingOp {
        purpose,
        poll,
        seq,
        checks,
        since: now,
    });
    Emit {
        event: CloudEvent::new(
            ty,
            subject,
            &key,
            EventData {
                step,
                seq: Some(seq),
                ..data(saga)
            },
        ),
        not_before: Some(after),
    }
}

/// A forward step failed. Retryable errors schedule another attempt until the
/// attempts run out; anything else fails the step and starts compensation.
pub fn fail_step(
    saga: &mut Saga,
    step: StepName,
    error: &AzureError,
    policy: &Policy,
    now: OffsetDateTime,
) -> Vec<Emit> {
    saga.pending = None;
    let attempts = saga.step(step).attempts;
    saga.step_mut(step).failures += 1;
    let failures = saga.step(step).failures;
    saga.step_mut(step).last_error = Some(ErrorInfo::from(error));
    if error.is_retryable() && failures < policy.max_step_attempts {
        saga.step_mut(step).attempts += 1;
        let seq = saga.next_seq();
        let after = policy.backoff(attempts, error.retry_after);
        let event = CloudEvent::new(
            types::STEP_RETRY,
            step.as_str(),
            &format!("{step}/retry/{seq}"),
            EventData {
                step: Some(step),
                seq: Some(seq),
                error: Some(error.into()),
                ..data(saga)
            },
        );
        return vec![Emit {
            event,
            not_before: Some(after),
        }];
    }
    let info = if error.is_retryable() {
        ErrorInfo::terminal(
            "RetriesExhausted",
            format!(
                "{} attempts in a row failed without progress; last: {}: {}",
                failures, error.code, error.message
            ),
        )
    } else {
        ErrorInfo::from(error)
    };
    let s = saga.step_mut(step);
    s.status = StepStatus::Failed;
    s.finished_at = Some(now);
    s.last_error = Some(info.clone());
    saga.error = Some(info.clone());
    saga.status = JobStatus::Compensating;
    vec![
        Emit {
            event: CloudEvent::new(
                types::STEP_FAILED,
                handlers::COMPENSATE,
                &format!("{step}/failed"),
                EventData {
                    step: Some(step),
                    error: Some(info),
                    ..data(saga)
                },
            ),
            not_before: None,
        },
        Emit {
            event: CloudEvent::new(
                types::COMPENSATION_STARTED,
                handlers::NONE,
                "compensation/started",
                data(saga),
            ),
            not_before: None,
        },
    ]
}

/// The next resource to delete: the last one created that may still exist.
/// How often undo deletes a thing again that came back after its delete.
pub const MAX_REOPEN: u32 = 3;

/// Undo's listing found things back that it had deleted: a stale handler
/// (a duplicate delivery, or one that outlived its lock) wrote them after
/// the delete. Their records are opened again so the chain deletes them once
/// more, at most [`MAX_REOPEN`] times each. True when any was.
pub fn reopen_recreated(saga: &mut Saga, found: &[String]) -> bool {
    let mut any = false;
    for id in found {
        if let Some(r) = saga.resources.iter_mut().find(|r| {
            r.id.eq_ignore_ascii_case(id)
                && r.state == ResourceState::Deleted
                && r.reopened < MAX_REOPEN
        }) {
            r.state = ResourceState::Created;
            r.reopened += 1;
            any = true;
        }
    }
    any
}

/// A created resource was found `Failed` (an update after its create
/// failed): its record is opened again for the create to be sent once more
/// (counted in `reopened`, like undo's re-deletes).
pub fn reopen_failed(saga: &mut Saga, index: usize) {
    let r = &mut saga.resources[index];
    r.state = ResourceState::Creating;
    r.reopened += 1;
}

/// Undo is about to delete `resources[index]`: the undo of its step has begun.
pub fn undo_begins(saga: &mut Saga, index: usize, now: OffsetDateTime) {
    let step = saga.resources[index].step;
    let s = saga.step_mut(step);
    s.undo_started_at.get_or_insert(now);
    s.undo_finished_at = None;
}

pub fn next_undo(saga: &Saga) -> Option<usize> {
    saga.resources
        .iter()
        .rposition(|r| r.state != ResourceState::Deleted)
}

/// A resource is gone: record it and mark steps with nothing left as
/// compensated. When nothing is left at all ([`next_undo`] is `None`) the
/// engine checks for leftovers and ends the chain with [`finish_undo`].
pub fn resource_deleted(saga: &mut Saga, index: usize, now: OffsetDateTime) -> Vec<Emit> {
    saga.pending = None;
    let step = saga.resources[index].step;
    saga.resources[index].state = ResourceState::Deleted;
    let mut out = vec![];
    let step_clear = !saga
        .resources
        .iter()
        .any(|r| r.step == step && r.state != ResourceState::Deleted);
    if step_clear {
        let s = saga.step_mut(step);
        s.undo_started_at.get_or_insert(now);
        s.undo_finished_at = Some(now);
        out.extend(step_undone(saga, step, now));
    }
    out
}

/// A step has nothing left: `Compensated` (a `Failed` step stays so), its
/// undo finished at `now` unless it already had. `finished_at` keeps the
/// forward run's end.
fn step_undone(saga: &mut Saga, step: StepName, now: OffsetDateTime) -> Vec<Emit> {
    let s = saga.step_mut(step);
    s.undo_started_at.get_or_insert(now);
    s.undo_finished_at.get_or_insert(now);
    if s.status == StepStatus::Failed || s.status == StepStatus::Compensated {
        return vec![];
    }
    s.status = StepStatus::Compensated;
    vec![Emit {
        event: CloudEvent::new(
            types::UNDO_SUCCEEDED,
            handlers::COMPENSATE,
            &format!("{step}/undone"),
            EventData {
                step: Some(step),
                ..data(saga)
            },
        ),
        not_before: None,
    }]
}

/// The undo log holds nothing that may still exist, and the check that
/// follows (a listing of everything tagged with the job) found `leftovers`.
///
/// # Guarantees
/// Steps with nothing left become `Compensated` either way. With nothing
/// found the job is `Compensated` (or `Deleted` after `delete`). With
/// anything found it is `Failed` with `LeftoversFound`, the ids listed in
/// `leftovers` (`status` shows them) and `compensation.failed` emitted; a
/// later `delete` checks again.
pub fn finish_undo(saga: &mut Saga, leftovers: &[String], now: OffsetDateTime) -> Vec<Emit> {
    saga.pending = None;
    saga.verify_attempts = 0;
    let mut out = vec![];
    for step in StepName::ALL {
        if matches!(
            saga.step(step).status,
            StepStatus::Succeeded | StepStatus::Running | StepStatus::Compensating
        ) {
            out.extend(step_undone(saga, step, now));
        }
    }
    saga.leftovers = leftovers.to_vec();
    if !leftovers.is_empty() {
        let what = if saga.status == JobStatus::Deleting {
            "delete"
        } else {
            "compensation"
        };
        let info = ErrorInfo::terminal(
            "LeftoversFound",
            format!(
                "{what} finished its undo chain but {} thing(s) are still tagged with the job: {}",
                leftovers.len(),
                leftovers.join(", ")
            ),
        );
        saga.error = Some(info.clone());
        saga.status = JobStatus::Failed;
        saga.updated_at = now;
        out.push(Emit {
            event: CloudEvent::new(
                types::COMPENSATION_FAILED,
                handlers::NONE,
                &format!("leftovers/{}", saga.seq),
                EventData {
                    error: Some(info),
                    resources: leftovers.to_vec(),
                    ..data(saga)
                },
            ),
            not_before: None,
        });
        return out;
    }
    let (status, ty, key) = if saga.status == JobStatus::Deleting {
        (JobStatus::Deleted, types::JOB_DELETED, "deleted")
    } else {
        (
            JobStatus::Compensated,
            types::JOB_COMPENSATED,
            "compensated",
        )
    };
    saga.status = status;
    out.push(Emit {
        event: CloudEvent::new(ty, handlers::NONE, key, data(saga)),
        not_before: None,
    });
    out
}

/// An undo failed: retry with backoff while attempts remain, then stop with
/// status `Failed` and the resource still listed (visible in `status`).
pub fn fail_undo(
    saga: &mut Saga,
    index: usize,
    error: &AzureError,
    policy: &Policy,
    now: OffsetDateTime,
) -> Vec<Emit> {
    saga.pending = None;
    let step = saga.resources[index].step;
    let s = saga.step_mut(step);
    s.undo_attempts += 1;
    s.last_error = Some(ErrorInfo::from(error));
    let attempts = s.undo_attempts;
    if error.is_retryable() && attempts < policy.max_undo_attempts {
        let seq = saga.next_seq();
        let after = policy.backoff(attempts, error.retry_after);
        let event = CloudEvent::new(
            types::UNDO_RETRY,
            handlers::COMPENSATE,
            &format!("undo-retry/{seq}"),
            EventData {
                step: Some(step),
                seq: Some(seq),
                error: Some(error.into()),
                ..data(saga)
            },
        );
        return vec![Emit {
            event,
            not_before: Some(after),
        }];
    }
    let info = ErrorInfo::terminal(
        "CompensationFailed",
        format!(
            "could not delete {}: {}: {}",
            saga.resources[index].id, error.code, error.message
        ),
    );
    compensation_failed(saga, info, "compensation-failed", now)
}

/// The check for leftovers after the undo chain could not list what is
/// tagged with the job. A retryable failure checks again after a backoff
/// (an `undo.retry`, which leads back to the check) while attempts remain;
/// otherwise the job is `Failed` with `VerificationFailed`, since nobody can
/// tell whether it left anything behind.
pub fn verify_failed(
    saga: &mut Saga,
    error: &AzureError,
    policy: &Policy,
    now: OffsetDateTime,
) -> Vec<Emit> {
    saga.pending = None;
    saga.verify_attempts += 1;
    let attempts = saga.verify_attempts;
    if error.is_retryable() && attempts < policy.max_undo_attempts {
        let seq = saga.next_seq();
        let after = policy.backoff(attempts, error.retry_after);
        let event = CloudEvent::new(
            types::UNDO_RETRY,
            handlers::COMPENSATE,
            &format!("verify-retry/{seq}"),
            EventData {
                seq: Some(seq),
                error: Some(error.into()),
                ..data(saga)
            },
        );
        return vec![Emit {
            event,
            not_before: Some(after),
        }];
    }
    let info = ErrorInfo::terminal(
        "VerificationFailed",
        format!(
            "the undo chain finished but listing what is still tagged with the job failed ({attempts} attempt(s)); last: {}: {}",
            error.code, error.message
        ),
    );
    compensation_failed(saga, info, "verify-failed", now)
}

/// Undo gave up: the job is `Failed` with `info`, and `compensation.failed`
/// (keyed `{key}/{seq}`) says so.
fn compensation_failed(
    saga: &mut Saga,
    info: ErrorInfo,
    key: &str,
    now: OffsetDateTime,
) -> Vec<Emit> {
    saga.error = Some(info.clone());
    saga.status = JobStatus::Failed;
    saga.updated_at = now;
    vec![Emit {
        event: CloudEvent::new(
            types::COMPENSATION_FAILED,
            handlers::NONE,
            &format!("{key}/{}", saga.seq),
            EventData {
                error: Some(info),
                ..data(saga)
            },
        ),
        not_before: None,
    }]
}

/// A deleted secret the vault keeps (purge protection): recorded once, with
/// when Azure purges it, so `status` can say so.
pub fn secret_retained(saga: &mut Saga, id: &str, until: Option<OffsetDateTime>) {
    saga.soft_deleted.retain(|s| s.id != id);
    saga.soft_deleted.push(SoftDeleted {
        id: id.to_string(),
        until,
    });
}

/// An explicit delete request: turns a finished job into `Deleting`.
/// Returns `Err` with the reason when the job's state forbids it.
pub fn request_delete(saga: &mut Saga) -> Result<Emit, Refusal> {
    let refuse = |m: &str| Err(Refusal::Conflict(m.into()));
    match saga.status {
        JobStatus::Succeeded | JobStatus::Degraded | JobStatus::Failed | JobStatus::Compensated => {
        }
        JobStatus::Deleting | JobStatus::Deleted => {
            return refuse("the job is already deleted or being deleted")
        }
        JobStatus::Running | JobStatus::Compensating => {
            return refuse("the job is still running; wait for it to finish")
        }
        JobStatus::Rejected => {
            return refuse("the job was rejected by pre-flight and created nothing")
        }
    }
    if saga.pending.is_some() {
        return refuse("an operation is in flight; try again when it has finished");
    }
    saga.status = JobStatus::Deleting;
    saga.error = None;
    saga.leftovers.clear();
    saga.verify_attempts = 0;
    for s in &mut saga.steps {
        s.undo_attempts = 0;
    }
    let seq = saga.next_seq();
    Ok(Emit {
        event: CloudEvent::new(
            types::DELETE_REQUESTED,
            handlers::COMPENSATE,
            &format!("delete/{seq}"),
            data(saga),
        ),
        not_before: None,
    })
}

/// Why a command was refused: the request is wrong (`Invalid`) or the job's
/// state forbids it now (`Conflict`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
}

/// The pool exists and `count` is within its `min..=max`.
fn check_scale(saga: &Saga, pool: &str, count: u32) -> Result<(), Refusal> {
    let Some(p) = saga.spec.worker_pools.iter().find(|p| p.name == pool) else {
        return Err(Refusal::Invalid(format!("pool '{pool}' does not exist")));
    };
    if count < p.min || count > p.max {
        return Err(Refusal::Invalid(format!(
            "count must be within {}..={} for pool '{pool}'",
            p.min, p.max
        )));
    }
    Ok(())
}

/// A scale request for a succeeded job; validated against the pool's min..max.
pub fn request_scale(saga: &mut Saga, pool: &str, count: u32) -> Result<Emit, Refusal> {
    check_scale(saga, pool, count)?;
    if saga.status != JobStatus::Succeeded {
        return Err(Refusal::Conflict(format!(
            "the job is {:?}; only a Succeeded job can be scaled",
            saga.status
        )));
    }
    if saga.pending.is_some() {
        return Err(Refusal::Conflict(
            "an operation is in flight; try again when it has finished".into(),
        ));
    }
    saga.error = None;
    let seq = saga.next_seq();
    Ok(Emit {
        event: CloudEvent::new(
            types::SCALE_REQUESTED,
            StepName::Workers.as_str(),
            &format!("scale/{seq}"),
            EventData {
                pool: Some(pool.into()),
                count: Some(count),
                seq: Some(seq),
                ..data(saga)
            },
        ),
        not_before: None,
    })
}

/// The capacity of pool `pool`'s scale set was changed outside flotilla (the
/// cluster's own identity using its scaler role): a count within
/// `min..=max` becomes the saga's count (`Ok(None)`); one outside is recorded,
/// reported in `warnings`, and set back to the nearest bound by a scale
/// command (`Ok(Some(emit))`). Refused (nothing to save) when the count is
/// the recorded one, the job is not `Succeeded`, or an operation is in
/// flight (flotilla's own scale writes the scale set too).
pub fn reconcile_capacity(
    saga: &mut Saga,
    pool: &str,
    capacity: u32,
) -> Result<Option<Emit>, Refusal> {
    let Some(spec) = saga.spec.worker_pools.iter().find(|p| p.name == pool) else {
        return Err(Refusal::Invalid(format!("pool '{pool}' does not exist")));
    };
    let (min, max) = (spec.min, spec.max);
    if saga.status != JobStatus::Succeeded || saga.pending.is_some() {
        return Err(Refusal::Conflict(
            "only a Succeeded job with nothing in flight is reconciled".into(),
        ));
    }
    if saga.pools.get(pool) == Some(&capacity) {
        return Err(Refusal::Conflict("the recorded count already".into()));
    }
    saga.pools.insert(pool.into(), capacity);
    if (min..=max).contains(&capacity) {
        return Ok(None);
    }
    let bound = capacity.clamp(min, max);
    saga.warnings.push(format!(
        "pool '{pool}' was set to {capacity} on its scale set, outside {min}..={max}; set back to {bound}"
    ));
    request_scale(saga, pool, bound).map(Some)
}

/// A scale finished.
pub fn finish_scale(saga: &mut Saga, pool: &str, count: u32) -> Emit {
    saga.pending = None;
    saga.pools.insert(pool.into(), count);
    Emit {
        event: CloudEvent::new(
            types::JOB_SCALED,
            handlers::NONE,
            &format!("scaled/{}", saga.seq),
            EventData {
                pool: Some(pool.into()),
                count: Some(count),
                ..data(saga)
            },
        ),
        not_before: None,
    }
}

/// A resource of a finished cluster was deleted outside flotilla: the job
/// becomes `Degraded` with the id listed in `missing`. `Err` when the event
/// does not concern this job (still running, or the resource is not one of
/// its live resources) or it was already recorded.
pub fn mark_degraded(saga: &mut Saga, resource_id: &str) -> Result<Emit, Refusal> {
    let finished = matches!(saga.status, JobStatus::Succeeded | JobStatus::Degraded);
    let owned = saga
        .resources
        .iter()
        .any(|r| r.state == ResourceState::Created && r.id.eq_ignore_ascii_case(resource_id));
    if !finished || !owned {
        return Err(Refusal::Conflict(
            "the resource is not a live resource of a finished job".into(),
        ));
    }
    if saga
        .missing
        .iter()
        .any(|m| m.eq_ignore_ascii_case(resource_id))
    {
        return Err(Refusal::Conflict("already recorded as missing".into()));
    }
    saga.status = JobStatus::Degraded;
    saga.missing.push(resource_id.to_string());
    Ok(Emit {
        event: CloudEvent::new(
            types::JOB_DEGRADED,
            handlers::NONE,
            &format!("degraded/{}", saga.missing.len()),
            EventData {
                resources: saga.missing.clone(),
                ..data(saga)
            },
        ),
        not_before: None,
    })
}

/// The bus gave up on a message about this job: note it (once per message
/// id) so `status` shows it. Returns false when it was already noted.
pub fn record_dead_letter(saga: &mut Saga, event_id: &str, event_type: &str, reason: &str) -> bool {
    let prefix = format!("{event_id} ({event_type})");
    if saga.dead_letters.iter().any(|d| d.starts_with(&prefix)) {
        return false;
    }
    saga.dead_letters.push(format!("{prefix}: {reason}"));
    true
}

/// The sweeper found the job overdue (its next event never came): the event
/// that puts it back in motion, with a fresh sequence number so any late
/// original is ignored as stale. `None` when the job waits for nothing.
///
/// # Guarantees
/// Re-arming is always safe: the emitted event leads `decide` to the same
/// decision the lost one would have (check the pending operation, continue
/// the current step, continue the undo chain), and every step is idempotent.
pub fn rearm(saga: &mut Saga, now: OffsetDateTime) -> Option<Emit> {
    if let Some(p) = saga.pending.clone() {
        saga.rearms += 1;
        return Some(wait_for(saga, p.purpose, p.poll, Duration::ZERO, now));
    }
    let (ty, subject, step, key) = match saga.status {
        JobStatus::Running => {
            let step = StepName::ALL
                .into_iter()
                .find(|s| saga.step(*s).status != StepStatus::Succeeded)?;
            (
                types::STEP_RETRY,
                step.as_str(),
                Some(step),
                format!("{step}/retry"),
            )
        }
        JobStatus::Compensating | JobStatus::Deleting => (
            types::UNDO_RETRY,
            handlers::COMPENSATE,
            None,
            "undo-retry".to_string(),
        ),
        _ => return None,
    };
    saga.rearms += 1;
    let seq = saga.next_seq();
    Some(Emit {
        event: CloudEvent::new(
            ty,
            subject,
            &format!("{key}/{seq}"),
            EventData {
                step,
                seq: Some(seq),
                ..data(saga)
            },
        ),
        not_before: None,
    })
}

// ---- day-2 pools --------------------------------------------------------

/// A `pool-add-requested` or `pool-remove-requested` from the bus: checked
/// against the saga exactly as [`request_add_pool`] and
/// [`request_remove_pool`] check a request, so a message nobody could have
/// asked for over HTTP changes nothing.
fn decide_pool_change(saga: &Saga, kind: EventKind, data: &EventData) -> Decision {
    if saga.status != JobStatus::Succeeded {
        return Decision::Ignore("job is not in a state to change its pools");
    }
    if saga.pending.is_some() {
        return Decision::Ignore("an operation is in flight");
    }
    if data.seq.is_none() || data.seq != Some(saga.seq) {
        return Decision::Ignore("stale pool request");
    }
    if kind == EventKind::PoolAddRequested {
        let Some(pool) = &data.worker_pool else {
            return Decision::Ignore("pool add request without a pool");
        };
        match check_add_pool(saga, pool) {
            Ok(()) => Decision::AddPool { pool: pool.clone() },
            Err(_) => Decision::Ignore("pool add request the saga refuses"),
        }
    } else {
        let Some(pool) = &data.pool else {
            return Decision::Ignore("pool remove request without a pool name");
        };
        match check_remove_pool(saga, pool) {
            Ok(()) => Decision::RemovePool { pool: pool.clone() },
            Err(_) => Decision::Ignore("pool remove request the saga refuses"),
        }
    }
}

/// The job can take a pool change now: `Succeeded`, nothing in flight.
fn check_pools_changeable(saga: &Saga) -> Result<(), Refusal> {
    if saga.status != JobStatus::Succeeded {
        return Err(Refusal::Conflict(format!(
            "the job is {:?}; only a Succeeded job's pools can change",
            saga.status
        )));
    }
    if saga.pending.is_some() {
        return Err(Refusal::Conflict(
            "an operation is in flight; try again when it has finished".into(),
        ));
    }
    Ok(())
}

/// A new pool is valid for this cluster: every rule the spec with it would
/// meet at creation ([`crate::spec::ClusterSpec::with_pool`]).
pub fn check_add_pool(saga: &Saga, pool: &crate::spec::WorkerPool) -> Result<(), Refusal> {
    saga.spec
        .with_pool(pool)
        .map(|_| ())
        .map_err(|e| Refusal::Invalid(e.to_string()))
}

/// A pool can go: it exists (`Invalid` otherwise), and the spec without it is
/// still valid (the last pool only with `master.allowWorkloads`; `Conflict`
/// otherwise).
pub fn check_remove_pool(saga: &Saga, pool: &str) -> Result<(), Refusal> {
    match saga.spec.without_pool(pool) {
        None => Err(Refusal::Invalid(format!("pool '{pool}' does not exist"))),
        Some(Err(e)) => Err(Refusal::Conflict(format!(
            "pool '{pool}' cannot be removed: {e}"
        ))),
        Some(Ok(_)) => Ok(()),
    }
}

fn pool_request(saga: &mut Saga, ty: &str, key: &str, data: EventData) -> Emit {
    saga.error = None;
    let seq = saga.next_seq();
    Emit {
        event: CloudEvent::new(
            ty,
            StepName::Workers.as_str(),
            &format!("{key}/{seq}"),
            EventData {
                seq: Some(seq),
                ..data
            },
        ),
        not_before: None,
    }
}

/// A request to add `pool` to a succeeded cluster: checked against the saga,
/// then carried by `pool-add-requested` (to the `workers` function).
pub fn request_add_pool(saga: &mut Saga, pool: &crate::spec::WorkerPool) -> Result<Emit, Refusal> {
    check_add_pool(saga, pool)?;
    check_pools_changeable(saga)?;
    let d = EventData {
        pool: Some(pool.name.clone()),
        worker_pool: Some(pool.clone()),
        ..data(saga)
    };
    Ok(pool_request(saga, types::POOL_ADD_REQUESTED, "pool-add", d))
}

/// A request to remove `pool` from a succeeded cluster.
pub fn request_remove_pool(saga: &mut Saga, pool: &str) -> Result<Emit, Refusal> {
    check_remove_pool(saga, pool)?;
    check_pools_changeable(saga)?;
    let d = EventData {
        pool: Some(pool.into()),
        ..data(saga)
    };
    Ok(pool_request(
        saga,
        types::POOL_REMOVE_REQUESTED,
        "pool-remove",
        d,
    ))
}

fn pool_pending(saga: &mut Saga, purpose: PendingPurpose, now: OffsetDateTime) {
    let seq = saga.next_seq();
    saga.pending = Some(PendingOp {
        purpose,
        poll: None,
        seq,
        checks: 0,
        since: now,
    });
}

/// The add begins: the pool joins the spec (so the steps' code plans it and
/// `status` shows it) at its `min`, and the add is in flight until its nodes
/// are Ready or it is undone. No event: the engine goes on in the same
/// invocation, and the sweeper re-arms the pending add if that stops.
pub fn start_add_pool(saga: &mut Saga, pool: &crate::spec::WorkerPool, now: OffsetDateTime) {
    saga.error = None;
    saga.spec.worker_pools.push(pool.clone());
    saga.pools.insert(pool.name.clone(), pool.min);
    pool_pending(
        saga,
        PendingPurpose::AddPool {
            pool: pool.name.clone(),
            resource: None,
        },
        now,
    );
}

/// The new pool's nodes are Ready: the add is done.
pub fn finish_add_pool(saga: &mut Saga, pool: &str) -> Emit {
    saga.pending = None;
    let count = saga.pools.get(pool).copied();
    Emit {
        event: CloudEvent::new(
            types::POOL_ADDED,
            handlers::NONE,
            &format!("pool-added/{}", saga.seq),
            EventData {
                pool: Some(pool.into()),
                count,
                ..data(saga)
            },
        ),
        not_before: None,
    }
}

/// The add failed (`error`, kept in the job's `error` with the pool named):
/// what it created is deleted next ([`PendingPurpose::RemovePool`] with
/// `undo`); the job stays `Succeeded`.
pub fn add_pool_failed(saga: &mut Saga, pool: &str, error: &AzureError, now: OffsetDateTime) {
    saga.error = Some(ErrorInfo {
        code: error.code.clone(),
        message: format!("adding pool '{pool}' failed: {}", error.message),
        retryable: false,
    });
    pool_pending(
        saga,
        PendingPurpose::RemovePool {
            pool: pool.into(),
            resource: None,
            undo: true,
            attempts: 0,
        },
        now,
    );
}

/// An explicit removal begins.
pub fn start_remove_pool(saga: &mut Saga, pool: &str, now: OffsetDateTime) {
    saga.error = None;
    pool_pending(
        saga,
        PendingPurpose::RemovePool {
            pool: pool.into(),
            resource: None,
            undo: false,
            attempts: 0,
        },
        now,
    );
}

/// Everything the pool had (`ids`, the undo log entries of its resources)
/// is deleted and checked gone: the pool leaves the spec, the pool counts
/// and the undo log. Emits `pool-removed`, or `pool-add-failed` (with the
/// add's error) when this undid a failed add.
pub fn finish_remove_pool(saga: &mut Saga, pool: &str, ids: &[String], undo: bool) -> Emit {
    saga.pending = None;
    saga.spec.worker_pools.retain(|p| p.name != pool);
    saga.pools.remove(pool);
    saga.resources.retain(|r| {
        !(r.state == ResourceState::Deleted && ids.iter().any(|id| id.eq_ignore_ascii_case(&r.id)))
    });
    let (ty, key, error) = if undo {
        (
            types::POOL_ADD_FAILED,
            "pool-add-failed",
            saga.error.clone(),
        )
    } else {
        (types::POOL_REMOVED, "pool-removed", None)
    };
    Emit {
        event: CloudEvent::new(
            ty,
            handlers::NONE,
            &format!("{key}/{}", saga.seq),
            EventData {
                pool: Some(pool.into()),
                error,
                ..data(saga)
            },
        ),
        not_before: None,
    }
}

/// A delete of the removal in flight (`saga.pending`, a
/// [`PendingPurpose::RemovePool`]) failed: retry with backoff while attempts
/// remain (`Some(emit)`), otherwise stop with the error in `error` (`None`):
/// the pool stays in the spec with what is left of it, and `pool remove` (or
/// `delete`) can try again.
pub fn pool_delete_failed(
    saga: &mut Saga,
    what: &str,
    error: &AzureError,
    policy: &Policy,
    now: OffsetDateTime,
) -> Option<Emit> {
    let Some(PendingPurpose::RemovePool {
        pool,
        undo,
        attempts,
        ..
    }) = saga.pending.as_ref().map(|p| p.purpose.clone())
    else {
        return None;
    };
    let attempts = attempts + 1;
    if error.is_retryable() && attempts < policy.max_undo_attempts {
        let after = policy.backoff(attempts, error.retry_after);
        return Some(wait_for(
            saga,
            PendingPurpose::RemovePool {
                pool,
                resource: None,
                undo,
                attempts,
            },
            None,
            after,
            now,
        ));
    }
    saga.pending = None;
    let before = match (&saga.error, undo) {
        (Some(e), true) => format!(" (after: {})", e.message),
        _ => String::new(),
    };
    saga.error = Some(ErrorInfo::terminal(
        "PoolRemovalFailed",
        format!(
            "removing pool '{pool}' stopped: could not delete {what}: {}: {}{before}",
            error.code, error.message
        ),
    ));
    None
}
