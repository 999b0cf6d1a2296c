//! Unit tests for the pure saga logic in `flotilla_core::decide`: what every
//! incoming event means for every step (`decide`), and how the transition
//! functions change the saga and which events they emit. Fixtures are built by
//! hand; nothing here does I/O.

use flotilla_azure::arm::PollVia;
use flotilla_azure::{AzureError, PollState};
use flotilla_core::decide::{self, decide, Decision, Emit, Policy};
use flotilla_core::events::{handlers, types, CloudEvent, EventData};
use flotilla_core::saga::{
    ErrorInfo, JobStatus, PendingPurpose, ResourceKind, ResourceRecord, ResourceState, Saga,
    StepName, StepStatus,
};
use flotilla_core::spec::ClusterSpec;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use time::OffsetDateTime;

const JOB: &str = "job-7f3a";
const RG: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/flotilla-demo/providers";

// ---- fixtures -------------------------------------------------------------

fn t(n: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + n).unwrap()
}

fn fresh() -> Saga {
    Saga::new(JOB.into(), ClusterSpec::example(), t(0))
}

/// What each step records in the undo log (join creates nothing).
fn records(step: StepName, state: ResourceState) -> Vec<ResourceRecord> {
    let arm = |ty: &str, name: &str| ResourceRecord {
        id: format!("{RG}/{ty}/{name}"),
        step,
        kind: ResourceKind::Arm {
            api_version: "2024-03-01".into(),
        },
        state,
        reopened: 0,
    };
    let blob = |name: &str| ResourceRecord {
        id: format!("https://flotillastaging.blob.core.windows.net/staging/{JOB}/{name}"),
        step,
        kind: ResourceKind::Blob {
            name: format!("{JOB}/{name}"),
        },
        state,
        reopened: 0,
    };
    let secret = |name: &str| ResourceRecord {
        id: format!("https://flotilla-kv.vault.azure.net/secrets/{name}"),
        step,
        kind: ResourceKind::Secret { name: name.into() },
        state,
        reopened: 0,
    };
    match step {
        StepName::Stage => vec![
            blob("cloud-init-master.yaml"),
            blob("cloud-init-worker.yaml"),
        ],
        StepName::Prereqs => vec![
            arm("Microsoft.Network/virtualNetworks", "demo-vnet"),
            arm("Microsoft.Network/networkSecurityGroups", "demo-nsg"),
            arm(
                "Microsoft.ManagedIdentity/userAssignedIdentities",
                "demo-id",
            ),
        ],
        StepName::Keys => vec![secret("demo-join-token"), secret("demo-ca-key")],
        StepName::Master => vec![
            arm("Microsoft.Network/loadBalancers", "demo-lb"),
            arm("Microsoft.Compute/virtualMachineScaleSets", "demo-master"),
        ],
        StepName::Workers => vec![arm(
            "Microsoft.Compute/virtualMachineScaleSets",
            "demo-general",
        )],
        StepName::Join => vec![],
    }
}

/// A saga whose first `k` steps succeeded (with their resources recorded);
/// the job is `Succeeded` when all six did, `Running` otherwise.
fn saga_after(k: usize) -> Saga {
    let mut saga = fresh();
    for step in StepName::ALL.into_iter().take(k) {
        let s = saga.step_mut(step);
        s.status = StepStatus::Succeeded;
        s.attempts = 1;
        s.started_at = Some(t(1));
        s.finished_at = Some(t(2));
        saga.resources.extend(records(step, ResourceState::Created));
    }
    if k == StepName::ALL.len() {
        saga.status = JobStatus::Succeeded;
    }
    saga
}

/// A running saga in which `step` has started (all earlier steps succeeded).
fn running(step: StepName) -> Saga {
    let mut saga = saga_after(step.index());
    decide::start_step(&mut saga, step, t(3));
    saga
}

/// Records the first resource of `step` as being created and returns what the
/// pending operation is for (`JoinCheck` for join, which creates nothing).
fn begin_create(saga: &mut Saga, step: StepName) -> PendingPurpose {
    match records(step, ResourceState::Creating).into_iter().next() {
        Some(r) => {
            saga.resources.push(r);
            PendingPurpose::Create {
                step,
                resource: saga.resources.len() - 1,
            }
        }
        None => PendingPurpose::JoinCheck,
    }
}

fn poll_state(purpose: &PendingPurpose) -> Option<PollState> {
    match purpose {
        PendingPurpose::JoinCheck => None,
        _ => Some(PollState {
            url: "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Compute/locations/westeurope/operations/op-1?api-version=2024-03-01".into(),
            via: PollVia::AsyncOperation,
            retry_after_s: 15,
        }),
    }
}

/// Puts an operation of `step` in flight and returns the scheduled poll.
fn in_flight(saga: &mut Saga, step: StepName) -> Emit {
    let purpose = begin_create(saga, step);
    let poll = poll_state(&purpose);
    decide::wait_for(saga, purpose, poll, Duration::from_secs(15), t(4))
}

/// A saga whose step `failed` failed for good and is being compensated; the
/// failed step's newest resource was only recorded as intent (`Creating`).
fn compensating(failed: StepName) -> Saga {
    let mut saga = saga_after(failed.index());
    let info = ErrorInfo::terminal("SkuNotAvailable", "not available");
    let s = saga.step_mut(failed);
    s.status = StepStatus::Failed;
    s.attempts = 1;
    s.started_at = Some(t(3));
    s.finished_at = Some(t(4));
    s.last_error = Some(info.clone());
    let mut recs = records(failed, ResourceState::Created);
    if let Some(last) = recs.last_mut() {
        last.state = ResourceState::Creating;
    }
    saga.resources.extend(recs);
    saga.status = JobStatus::Compensating;
    saga.error = Some(info);
    saga
}

/// The event that makes `step` run: `job.requested` for stage, the previous
/// step's `step.succeeded` otherwise.
fn trigger(saga: &Saga, step: StepName) -> CloudEvent {
    match step.index() {
        0 => decide::job_requested_event(saga).event,
        i => decide::step_succeeded_event(saga, StepName::ALL[i - 1]).event,
    }
}

fn throttled(secs: u64) -> AzureError {
    let e = AzureError::from_service(
        429,
        "TooManyRequests",
        "Rate limit exceeded",
        Some(Duration::from_secs(secs)),
    );
    assert!(
        e.is_retryable(),
        "fixture: 429 TooManyRequests must be retryable"
    );
    e
}

fn busy() -> AzureError {
    let e = AzureError::from_service(
        409,
        "AnotherOperationInProgress",
        "Another operation is in progress",
        None,
    );
    assert!(
        e.is_retryable(),
        "fixture: AnotherOperationInProgress must be retryable"
    );
    e
}

fn sku() -> AzureError {
    let e = AzureError::from_service(
        409,
        "SkuNotAvailable",
        "Standard_D8s_v5 is not available in westeurope",
        None,
    );
    assert!(
        !e.is_retryable(),
        "fixture: SkuNotAvailable must be terminal"
    );
    e
}

fn forbidden() -> AzureError {
    let e = AzureError::from_service(403, "AuthorizationFailed", "no permission to delete", None);
    assert!(
        !e.is_retryable(),
        "fixture: AuthorizationFailed must be terminal"
    );
    e
}

fn kinds(emits: &[Emit]) -> Vec<&str> {
    emits.iter().map(|e| e.event.event_type()).collect()
}

fn is_ignore(d: &Decision) -> bool {
    matches!(d, Decision::Ignore(_))
}

/// Index of the newest resource not known to be deleted, computed independently of `next_undo`.
fn newest_live(saga: &Saga) -> Option<usize> {
    let mut found = None;
    for (i, r) in saga.resources.iter().enumerate() {
        if r.state != ResourceState::Deleted {
            found = Some(i);
        }
    }
    found
}

// ---- decide: forward steps ------------------------------------------------

#[test]
fn first_delivery_forwards_every_step() {
    for step in StepName::ALL {
        let saga = saga_after(step.index());
        let event = trigger(&saga, step);
        assert_eq!(
            decide(&saga, &event),
            Decision::Forward(step),
            "{step}: first delivery of {}",
            event.event_type()
        );

        // The step has started but nothing is in flight (e.g. a crash before
        // the first create): a redelivery resumes it.
        let started = running(step);
        assert_eq!(started.step(step).status, StepStatus::Running, "{step}");
        assert_eq!(started.step(step).attempts, 1, "{step}");
        assert_eq!(started.step(step).started_at, Some(t(3)), "{step}");
        assert_eq!(
            decide(&started, &event),
            Decision::Forward(step),
            "{step}: redelivery before any operation"
        );
    }
}

#[test]
fn start_step_is_idempotent() {
    for step in StepName::ALL {
        let mut saga = running(step);
        let once = saga.clone();
        decide::start_step(&mut saga, step, t(99));
        assert_eq!(
            saga, once,
            "{step}: a second start changes nothing (started_at, attempts)"
        );
    }
}

/// Steps that are already done answer a duplicate trigger with `Reemit`. The
/// fixture is reached the way the engine reaches it: `start_step` then
/// `finish_step` — for join that also finishes the job.
#[test]
fn duplicate_trigger_after_success_reemits_every_step_without_state_change() {
    let mut wrong = vec![];
    for step in StepName::ALL {
        let mut saga = running(step);
        let emitted = decide::finish_step(&mut saga, step, t(5));
        let event = trigger(&saga, step);
        let before = saga.clone();
        let d = decide(&saga, &event);
        assert_eq!(saga, before, "{step}: decide must not change the saga");
        if d != Decision::Reemit(step) {
            wrong.push(format!("{step}: got {d:?} (job status {:?})", saga.status));
            continue;
        }
        // What the engine sends for Reemit is the very event finish_step sent.
        let again = decide::step_succeeded_event(&saga, step);
        assert_eq!(again.event.id(), emitted[0].event.id(), "{step}");
        assert_eq!(again.event.event_type(), types::STEP_SUCCEEDED);
        assert_eq!(saga, before, "{step}: re-emitting must not change the saga");
    }
    assert!(
        wrong.is_empty(),
        "duplicate trigger after the step succeeded must give Reemit(step): {wrong:#?}"
    );
}

#[test]
fn duplicate_trigger_of_a_done_step_reemits_even_while_later_work_is_in_flight() {
    // Steps 0..k succeeded; step k has an operation in flight. A duplicate of
    // any earlier trigger re-emits that earlier step's event.
    let k = StepName::Master.index();
    let mut saga = running(StepName::Master);
    in_flight(&mut saga, StepName::Master);
    for step in StepName::ALL.into_iter().take(k) {
        let event = trigger(&saga, step);
        assert_eq!(decide(&saga, &event), Decision::Reemit(step), "{step}");
    }
}

#[test]
fn duplicate_trigger_while_operation_in_flight_is_ignored() {
    for step in StepName::ALL {
        let mut saga = running(step);
        let poll = in_flight(&mut saga, step);
        assert!(saga.pending.is_some());
        let event = trigger(&saga, step);
        let d = decide(&saga, &event);
        assert!(
            is_ignore(&d),
            "{step}: duplicate while in flight must be ignored, got {d:?}"
        );
        // ...while the scheduled poll still goes through.
        assert_eq!(decide(&saga, &poll.event), Decision::Poll, "{step}");
    }
}

#[test]
fn triggers_for_a_job_that_is_not_running_are_ignored() {
    for step in StepName::ALL {
        let mut saga = saga_after(step.index());
        saga.status = JobStatus::Compensating;
        let d = decide(&saga, &trigger(&saga, step));
        assert!(is_ignore(&d), "{step}: {d:?}");
    }
    // A step that failed is not run again by a late duplicate.
    let saga = compensating(StepName::Keys);
    let d = decide(&saga, &trigger(&saga, StepName::Keys));
    assert!(is_ignore(&d), "{d:?}");
}

#[test]
fn step_succeeded_that_contradicts_the_saga_is_ignored() {
    // `prereqs/succeeded` arrives, but the saga says prereqs has not succeeded.
    let saga = running(StepName::Prereqs);
    let mut done = saga.clone();
    done.step_mut(StepName::Prereqs).status = StepStatus::Succeeded;
    let event = decide::step_succeeded_event(&done, StepName::Prereqs).event;
    assert!(is_ignore(&decide(&saga, &event)));

    let no_step = event.clone().with_data(EventData {
        step: None,
        ..event.data().clone()
    });
    assert!(is_ignore(&decide(&done, &no_step)));

    // The last step's success is a notification only.
    let mut all = saga_after(6);
    all.status = JobStatus::Running;
    let last = decide::step_succeeded_event(&all, StepName::Join).event;
    assert!(is_ignore(&decide(&all, &last)));
}

#[test]
fn notifications_are_ignored() {
    let saga = running(StepName::Keys);
    for ty in [
        types::JOB_SUCCEEDED,
        types::COMPENSATION_STARTED,
        types::JOB_COMPENSATED,
        types::JOB_DELETED,
        types::JOB_SCALED,
        types::COMPENSATION_FAILED,
        types::JOB_DEGRADED,
        "io.example.unknown",
    ] {
        let requested = decide::job_requested_event(&saga).event;
        let event = CloudEvent::new(ty, requested.subject(), "x", requested.data().clone());
        assert!(is_ignore(&decide(&saga, &event)), "{ty}");
    }
}

// ---- forward failures ----------------------------------------------------

#[test]
fn retryable_error_schedules_exactly_one_delayed_retry_for_every_step() {
    let policy = Policy::default();
    for step in StepName::ALL {
        let mut saga = running(step);
        let poll = in_flight(&mut saga, step);
        let seq_before = saga.seq;

        let err = throttled(45);
        let emits = decide::fail_step(&mut saga, step, &err, &policy, t(6));
        assert_eq!(
            kinds(&emits),
            vec![types::STEP_RETRY],
            "{step}: exactly one retry emit"
        );
        let retry = &emits[0];
        assert_eq!(
            retry.event.subject(),
            step.as_str(),
            "{step}: the retry goes back to the step's handler"
        );
        assert_eq!(retry.event.data().step, Some(step));
        assert!(saga.seq > seq_before, "{step}: a retry takes a new seq");
        assert_eq!(retry.event.data().seq, Some(saga.seq), "{step}");
        assert_eq!(
            retry.event.data().error.as_ref().map(|e| e.code.as_str()),
            Some("TooManyRequests")
        );
        let delay = retry
            .not_before
            .expect("a retry is scheduled, not immediate");
        assert!(
            delay >= Duration::from_secs(45),
            "{step}: delay {delay:?} shorter than Retry-After"
        );

        let s = saga.step(step);
        assert_eq!(s.status, StepStatus::Running, "{step}");
        assert_eq!(s.attempts, 2, "{step}");
        assert_eq!(
            s.last_error.as_ref().map(|e| e.code.as_str()),
            Some("TooManyRequests")
        );
        assert_eq!(saga.status, JobStatus::Running, "{step}");
        assert!(saga.error.is_none(), "{step}: a retry is not a job error");
        assert!(
            saga.pending.is_none(),
            "{step}: the failed operation is no longer in flight"
        );

        // The retry runs the step again; the abandoned poll is now meaningless.
        assert_eq!(
            decide(&saga, &retry.event),
            Decision::Forward(step),
            "{step}"
        );
        assert!(
            is_ignore(&decide(&saga, &poll.event)),
            "{step}: poll of the failed operation"
        );

        // A second retryable failure: attempts 3, backoff grows, the first retry is stale.
        let emits2 = decide::fail_step(&mut saga, step, &busy(), &policy, t(7));
        assert_eq!(kinds(&emits2), vec![types::STEP_RETRY], "{step}");
        assert_eq!(saga.step(step).attempts, 3);
        assert_eq!(emits2[0].not_before, Some(policy.backoff(2, None)));
        assert!(emits2[0].not_before >= Some(policy.backoff_base), "{step}");
        assert_ne!(
            emits2[0].event.id(),
            retry.event.id(),
            "{step}: each retry is its own transition"
        );
        assert!(
            is_ignore(&decide(&saga, &retry.event)),
            "{step}: stale retry"
        );
        assert_eq!(
            decide(&saga, &emits2[0].event),
            Decision::Forward(step),
            "{step}"
        );
    }
}

#[test]
fn retry_after_longer_than_the_backoff_cap_is_honoured() {
    let policy = Policy::default();
    let mut saga = running(StepName::Master);
    let emits = decide::fail_step(&mut saga, StepName::Master, &throttled(900), &policy, t(6));
    assert!(emits[0].not_before.unwrap() >= Duration::from_secs(900));
}

#[test]
fn backoff_doubles_and_is_capped() {
    let p = Policy::default();
    assert_eq!(p.backoff(1, None), p.backoff_base);
    assert_eq!(p.backoff(2, None), p.backoff_base * 2);
    assert_eq!(p.backoff(3, None), p.backoff_base * 4);
    assert_eq!(p.backoff(40, None), p.backoff_cap);
    assert_eq!(
        p.backoff(1, Some(Duration::from_secs(30))),
        Duration::from_secs(30)
    );
    assert_eq!(p.backoff(40, Some(p.backoff_cap * 2)), p.backoff_cap * 2);
}

#[test]
fn retryable_error_after_max_attempts_fails_the_step_with_retries_exhausted() {
    for policy in [
        Policy::default(),
        Policy {
            max_step_attempts: 3,
            ..Policy::default()
        },
    ] {
        for step in StepName::ALL {
            let mut saga = running(step);
            let mut retries = 0;
            let emits = loop {
                let emits = decide::fail_step(&mut saga, step, &busy(), &policy, t(8));
                if saga.step(step).status == StepStatus::Failed {
                    break emits;
                }
                assert_eq!(kinds(&emits), vec![types::STEP_RETRY], "{step}");
                assert_eq!(saga.status, JobStatus::Running);
                retries += 1;
                assert!(
                    retries <= policy.max_step_attempts,
                    "{step}: never gives up"
                );
            };
            assert_eq!(
                retries,
                policy.max_step_attempts - 1,
                "{step}: attempts allowed by the policy"
            );
            assert_eq!(saga.step(step).attempts, policy.max_step_attempts, "{step}");
            let s = saga.step(step);
            assert_eq!(
                s.last_error.as_ref().unwrap().code,
                "RetriesExhausted",
                "{step}"
            );
            assert_eq!(s.finished_at, Some(t(8)));
            assert_eq!(
                saga.error.as_ref().unwrap().code,
                "RetriesExhausted",
                "{step}"
            );
            assert!(
                saga.error
                    .as_ref()
                    .unwrap()
                    .message
                    .contains("AnotherOperationInProgress"),
                "{step}: last cause kept"
            );
            assert_eq!(
                saga.status,
                JobStatus::Compensating,
                "{step}: compensation started"
            );
            assert_eq!(
                kinds(&emits),
                vec![types::STEP_FAILED, types::COMPENSATION_STARTED],
                "{step}"
            );
            assert_eq!(emits[0].event.subject(), handlers::COMPENSATE);
            assert_eq!(
                emits[0].event.data().error.as_ref().unwrap().code,
                "RetriesExhausted"
            );
            assert!(
                emits.iter().all(|e| e.not_before.is_none()),
                "{step}: failure events are immediate"
            );
            assert_eq!(decide(&saga, &emits[0].event), Decision::Undo, "{step}");
        }
    }
}

#[test]
fn terminal_error_fails_the_step_and_starts_compensation() {
    let policy = Policy::default();
    for step in StepName::ALL {
        let mut saga = running(step);
        let poll = in_flight(&mut saga, step);
        let emits = decide::fail_step(&mut saga, step, &sku(), &policy, t(9));

        let s = saga.step(step);
        assert_eq!(s.status, StepStatus::Failed, "{step}");
        assert_eq!(s.attempts, 1, "{step}: no retry for a terminal error");
        assert_eq!(s.finished_at, Some(t(9)));
        assert_eq!(
            s.last_error.as_ref().unwrap().code,
            "SkuNotAvailable",
            "{step}"
        );
        assert_eq!(saga.status, JobStatus::Compensating, "{step}");
        assert_eq!(
            saga.error.as_ref().unwrap().code,
            "SkuNotAvailable",
            "{step}"
        );
        assert!(saga.pending.is_none(), "{step}");

        assert_eq!(
            kinds(&emits),
            vec![types::STEP_FAILED, types::COMPENSATION_STARTED],
            "{step}"
        );
        let failed = &emits[0].event;
        assert_eq!(failed.subject(), handlers::COMPENSATE, "{step}");
        assert_eq!(failed.data().step, Some(step));
        assert_eq!(failed.data().job, JOB);
        assert_eq!(
            failed.data().error.as_ref().unwrap().code,
            "SkuNotAvailable"
        );
        assert_eq!(emits[1].event.subject(), handlers::NONE);

        assert_eq!(decide(&saga, failed), Decision::Undo, "{step}");
        assert!(
            is_ignore(&decide(&saga, &poll.event)),
            "{step}: poll after the failure"
        );
        let d = decide(&saga, &trigger(&saga, step));
        assert!(
            is_ignore(&d),
            "{step}: a duplicate trigger after failure: {d:?}"
        );
    }
}

// ---- polling ---------------------------------------------------------------

#[test]
fn pending_operation_is_polled_with_its_own_seq_and_stale_polls_are_ignored() {
    for step in StepName::ALL {
        let mut saga = running(step);
        let first = in_flight(&mut saga, step);
        let pending = saga
            .pending
            .clone()
            .expect("wait_for records the operation");
        assert_eq!(pending.seq, saga.seq, "{step}");
        assert_eq!(pending.checks, 0, "{step}");
        assert_eq!(pending.since, t(4));
        assert_eq!(first.event.event_type(), types::STEP_POLL, "{step}");
        assert_eq!(first.event.subject(), handlers::POLL, "{step}");
        assert_eq!(first.event.data().step, Some(step), "{step}");
        assert_eq!(first.event.data().seq, Some(pending.seq), "{step}");
        assert_eq!(first.not_before, Some(Duration::from_secs(15)), "{step}");
        if step == StepName::Join {
            assert_eq!(pending.purpose, PendingPurpose::JoinCheck);
            assert!(pending.poll.is_none());
        } else {
            assert!(matches!(pending.purpose, PendingPurpose::Create { step: s, .. } if s == step));
            assert!(pending.poll.is_some());
        }
        assert_eq!(decide(&saga, &first.event), Decision::Poll, "{step}");

        // Still running: a new check with a new seq; the old poll is stale.
        let purpose = pending.purpose.clone();
        let second = decide::wait_for(
            &mut saga,
            purpose.clone(),
            poll_state(&purpose),
            Duration::from_secs(30),
            t(5),
        );
        let now = saga.pending.clone().unwrap();
        assert!(now.seq > pending.seq, "{step}: new seq");
        assert_eq!(now.checks, 1, "{step}");
        assert_eq!(second.event.data().seq, Some(now.seq), "{step}");
        assert_ne!(second.event.id(), first.event.id(), "{step}");
        assert_eq!(second.not_before, Some(Duration::from_secs(30)));
        assert!(
            is_ignore(&decide(&saga, &first.event)),
            "{step}: stale poll"
        );
        assert_eq!(decide(&saga, &second.event), Decision::Poll, "{step}");

        // Done: nothing is pending, so even the latest poll is ignored.
        decide::finish_step(&mut saga, step, t(6));
        assert!(
            is_ignore(&decide(&saga, &second.event)),
            "{step}: poll after completion"
        );
    }
}

#[test]
fn poll_without_seq_is_ignored() {
    let mut saga = running(StepName::Master);
    let poll = in_flight(&mut saga, StepName::Master).event;
    let poll = poll.clone().with_data(EventData {
        seq: None,
        ..poll.data().clone()
    });
    assert!(is_ignore(&decide(&saga, &poll)));
}

#[test]
fn finishing_a_step_hands_over_to_the_next_one() {
    for step in StepName::ALL {
        let mut saga = running(step);
        in_flight(&mut saga, step);
        saga.step_mut(step).last_error = Some(ErrorInfo {
            code: "TooManyRequests".into(),
            message: "earlier".into(),
            retryable: true,
        });
        let emits = decide::finish_step(&mut saga, step, t(7));

        let s = saga.step(step);
        assert_eq!(s.status, StepStatus::Succeeded, "{step}");
        assert_eq!(s.finished_at, Some(t(7)));
        assert!(
            s.last_error.is_none(),
            "{step}: a success clears the last error"
        );
        assert!(saga.pending.is_none(), "{step}");

        let done = &emits[0];
        assert_eq!(done.event.event_type(), types::STEP_SUCCEEDED, "{step}");
        assert_eq!(done.event.data().step, Some(step));
        assert!(done.not_before.is_none());
        match step.next() {
            Some(next) => {
                assert_eq!(kinds(&emits), vec![types::STEP_SUCCEEDED], "{step}");
                assert_eq!(
                    done.event.subject(),
                    next.as_str(),
                    "{step}: the next step handles it"
                );
                assert_eq!(saga.status, JobStatus::Running, "{step}");
                assert_eq!(
                    decide(&saga, &done.event),
                    Decision::Forward(next),
                    "{step}"
                );
            }
            None => {
                assert_eq!(
                    kinds(&emits),
                    vec![types::STEP_SUCCEEDED, types::JOB_SUCCEEDED]
                );
                assert_eq!(done.event.subject(), handlers::NONE);
                assert_eq!(emits[1].event.subject(), handlers::NONE);
                assert_eq!(saga.status, JobStatus::Succeeded);
                assert!(saga.status.is_terminal());
                assert!(is_ignore(&decide(&saga, &done.event)));
            }
        }
    }
}

#[test]
fn the_whole_forward_chain_runs_through_decide() {
    let mut saga = fresh();
    let mut event = decide::job_requested_event(&saga).event;
    let mut order = vec![];
    while let Decision::Forward(step) = decide(&saga, &event) {
        order.push(step);
        decide::start_step(&mut saga, step, t(1));
        let poll = in_flight(&mut saga, step);
        assert_eq!(decide(&saga, &poll.event), Decision::Poll);
        let emits = decide::finish_step(&mut saga, step, t(2));
        event = emits[0].event.clone();
    }
    assert_eq!(order, StepName::ALL.to_vec());
    assert_eq!(saga.status, JobStatus::Succeeded);
}

// ---- undo ------------------------------------------------------------------

#[test]
fn undo_deletes_newest_first_and_compensates_each_step_for_every_failed_step() {
    for failed in StepName::ALL {
        let mut saga = compensating(failed);
        let total = saga.resources.len();
        let error = saga.error.clone();
        let mut order = vec![];
        let mut emitted = vec![];
        while let Some(index) = decide::next_undo(&saga) {
            assert_eq!(
                Some(index),
                newest_live(&saga),
                "failed {failed}: next_undo must pick the newest live resource"
            );
            order.push(index);
            let step = saga.resources[index].step;
            let status_before = saga.step(step).status;
            let forward_end = saga.step(step).finished_at;
            decide::undo_begins(&mut saga, index, t(9));
            let emits = decide::resource_deleted(&mut saga, index, t(10));
            assert_eq!(
                saga.step(step).finished_at,
                forward_end,
                "failed {failed}: undo keeps the forward run's end"
            );
            assert!(
                saga.step(step).undo_started_at.is_some_and(|at| at <= t(9)),
                "failed {failed}: {step}'s undo began"
            );
            assert_eq!(
                saga.resources[index].state,
                ResourceState::Deleted,
                "failed {failed}"
            );
            assert!(saga.pending.is_none());
            let undone: Vec<&Emit> = emits
                .iter()
                .filter(|e| {
                    e.event.event_type() == types::UNDO_SUCCEEDED
                        && e.event.data().step == Some(step)
                })
                .collect();
            let left = saga
                .resources
                .iter()
                .any(|r| r.step == step && r.state != ResourceState::Deleted);
            if left {
                assert_eq!(
                    saga.step(step).status,
                    status_before,
                    "failed {failed}: {step} still has resources"
                );
                assert!(undone.is_empty(), "failed {failed}: {step} not undone yet");
            } else if step == failed {
                assert_eq!(
                    saga.step(step).status,
                    StepStatus::Failed,
                    "the failed step {step} stays Failed"
                );
                assert!(
                    undone.is_empty(),
                    "failed {failed}: no undo.succeeded for the failed step"
                );
            } else {
                assert_eq!(
                    saga.step(step).status,
                    StepStatus::Compensated,
                    "failed {failed}: {step} has nothing left"
                );
                assert_eq!(saga.step(step).undo_finished_at, Some(t(10)));
                assert_eq!(
                    undone.len(),
                    1,
                    "failed {failed}: one undo.succeeded for {step}"
                );
                assert_eq!(undone[0].event.subject(), handlers::COMPENSATE);
                if saga.status == JobStatus::Compensating {
                    assert_eq!(
                        decide(&saga, &undone[0].event),
                        Decision::Undo,
                        "undo.succeeded continues the chain"
                    );
                }
            }
            emitted.extend(emits);
        }
        assert_eq!(
            saga.status,
            JobStatus::Compensating,
            "failed {failed}: the chain ends only after the check for leftovers"
        );
        emitted.extend(decide::finish_undo(&mut saga, &[], t(10)));
        assert_eq!(
            order,
            (0..total).rev().collect::<Vec<_>>(),
            "failed {failed}: newest first, each once"
        );
        assert_eq!(saga.status, JobStatus::Compensated, "failed {failed}");
        assert_eq!(
            saga.error, error,
            "failed {failed}: the cause stays visible"
        );
        assert_eq!(saga.resources.len(), total, "the undo log is kept");
        let last = emitted.last().expect("job.compensated");
        assert_eq!(
            last.event.event_type(),
            types::JOB_COMPENSATED,
            "failed {failed}"
        );
        assert_eq!(last.event.subject(), handlers::NONE);
        assert_eq!(
            kinds(&emitted)
                .iter()
                .filter(|k| **k == types::JOB_COMPENSATED)
                .count(),
            1
        );
        for step in StepName::ALL {
            let want = match step.cmp(&failed) {
                std::cmp::Ordering::Less => StepStatus::Compensated,
                std::cmp::Ordering::Equal => StepStatus::Failed,
                std::cmp::Ordering::Greater => StepStatus::Pending,
            };
            assert_eq!(saga.step(step).status, want, "failed {failed}: {step}");
        }
        let undone_steps: Vec<StepName> = emitted
            .iter()
            .filter(|e| e.event.event_type() == types::UNDO_SUCCEEDED)
            .filter_map(|e| e.event.data().step)
            .collect();
        let mut expected: Vec<StepName> =
            StepName::ALL.into_iter().filter(|s| *s < failed).collect();
        expected.reverse();
        assert_eq!(
            undone_steps, expected,
            "failed {failed}: one undo.succeeded per compensated step, newest first"
        );
        // Late undo events after the end are ignored.
        for e in &emitted {
            assert!(
                is_ignore(&decide(&saga, &e.event)),
                "failed {failed}: {} after compensation",
                e.event.event_type()
            );
        }
    }
}

#[test]
fn resource_already_gone_gives_the_same_outcome() {
    for failed in StepName::ALL {
        // The failed step's newest record is only intent (Creating); one in the
        // middle was being deleted. Deleting them (or finding them gone)
        // must end exactly like deleting created ones.
        let mut odd = compensating(failed);
        if let Some(first) = odd.resources.first_mut() {
            first.state = ResourceState::Deleting;
        }
        let mut plain = odd.clone();
        for r in &mut plain.resources {
            r.state = ResourceState::Created;
        }
        while let Some(i) = decide::next_undo(&plain) {
            assert_eq!(decide::next_undo(&odd), Some(i), "failed {failed}");
            let a = decide::resource_deleted(&mut plain, i, t(11));
            let b = decide::resource_deleted(&mut odd, i, t(11));
            let ids = |v: &[Emit]| {
                v.iter()
                    .map(|e| e.event.id().to_string())
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(&a), ids(&b), "failed {failed}");
            assert_eq!(kinds(&a), kinds(&b), "failed {failed}");
        }
        assert!(decide::next_undo(&odd).is_none());
        decide::finish_undo(&mut plain, &[], t(11));
        decide::finish_undo(&mut odd, &[], t(11));
        assert_eq!(plain, odd, "failed {failed}");
        assert_eq!(odd.status, JobStatus::Compensated);
    }
}

#[test]
fn resources_recorded_as_deleted_are_skipped() {
    let mut saga = compensating(StepName::Master);
    let last = saga.resources.len() - 1;
    saga.resources[last].state = ResourceState::Deleted;
    assert_eq!(decide::next_undo(&saga), Some(last - 1));
    // Master's other resource goes: master has nothing left, but it is the failed step.
    let emits = decide::resource_deleted(&mut saga, last - 1, t(12));
    assert!(emits.is_empty(), "{:?}", kinds(&emits));
    assert_eq!(saga.step(StepName::Master).status, StepStatus::Failed);
    assert_eq!(saga.status, JobStatus::Compensating);
    // Keys' newest secret is next.
    let next = decide::next_undo(&saga).unwrap();
    assert_eq!(saga.resources[next].step, StepName::Keys);
    assert_eq!(
        saga.resources[next].kind,
        ResourceKind::Secret {
            name: "demo-ca-key".into()
        }
    );
}

#[test]
fn all_resources_already_gone_finishes_compensation() {
    for failed in StepName::ALL {
        let mut saga = compensating(failed);
        for r in &mut saga.resources {
            r.state = ResourceState::Deleted;
        }
        assert_eq!(decide::next_undo(&saga), None);
        let emits = decide::finish_undo(&mut saga, &[], t(13));
        assert_eq!(saga.status, JobStatus::Compensated, "failed {failed}");
        assert_eq!(
            emits.last().unwrap().event.event_type(),
            types::JOB_COMPENSATED
        );
        for step in StepName::ALL {
            let want = match step.cmp(&failed) {
                std::cmp::Ordering::Less => StepStatus::Compensated,
                std::cmp::Ordering::Equal => StepStatus::Failed,
                std::cmp::Ordering::Greater => StepStatus::Pending,
            };
            assert_eq!(saga.step(step).status, want, "failed {failed}: {step}");
        }
        let undone = emits
            .iter()
            .filter(|e| e.event.event_type() == types::UNDO_SUCCEEDED)
            .count();
        assert_eq!(undone, failed.index(), "failed {failed}");
    }
    // Failed before creating anything at all.
    let mut saga = compensating(StepName::Stage);
    saga.resources.clear();
    let emits = decide::finish_undo(&mut saga, &[], t(13));
    assert_eq!(kinds(&emits), vec![types::JOB_COMPENSATED]);
    assert_eq!(saga.step(StepName::Stage).status, StepStatus::Failed);
}

#[test]
fn deleting_a_succeeded_job_removes_everything_and_ends_deleted() {
    let mut saga = saga_after(6);
    let total = saga.resources.len();
    let request = decide::request_delete(&mut saga).expect("a succeeded job can be deleted");
    assert_eq!(saga.status, JobStatus::Deleting);
    assert_eq!(request.event.event_type(), types::DELETE_REQUESTED);
    assert_eq!(request.event.subject(), handlers::COMPENSATE);
    assert_eq!(decide(&saga, &request.event), Decision::Undo);

    let mut emitted = vec![];
    let mut order = vec![];
    while let Some(i) = decide::next_undo(&saga) {
        assert_eq!(Some(i), newest_live(&saga));
        order.push(i);
        emitted.extend(decide::resource_deleted(&mut saga, i, t(14)));
    }
    emitted.extend(decide::finish_undo(&mut saga, &[], t(14)));
    assert_eq!(order, (0..total).rev().collect::<Vec<_>>());
    assert_eq!(saga.status, JobStatus::Deleted);
    let last = emitted.last().unwrap();
    assert_eq!(last.event.event_type(), types::JOB_DELETED);
    assert!(!kinds(&emitted).contains(&types::JOB_COMPENSATED));
    for step in StepName::ALL {
        assert_eq!(saga.step(step).status, StepStatus::Compensated, "{step}");
    }
    let undone: HashSet<StepName> = emitted
        .iter()
        .filter(|e| e.event.event_type() == types::UNDO_SUCCEEDED)
        .filter_map(|e| e.event.data().step)
        .collect();
    assert_eq!(
        undone.len(),
        6,
        "every step, join included, reports its undo"
    );
    assert!(
        is_ignore(&decide(&saga, &request.event)),
        "a repeated delete request after the end"
    );
}

#[test]
fn deleting_a_compensated_job_ends_deleted() {
    let mut saga = compensating(StepName::Workers);
    while let Some(i) = decide::next_undo(&saga) {
        decide::resource_deleted(&mut saga, i, t(15));
    }
    decide::finish_undo(&mut saga, &[], t(15));
    assert_eq!(saga.status, JobStatus::Compensated);
    let request = decide::request_delete(&mut saga).unwrap();
    assert_eq!(decide(&saga, &request.event), Decision::Undo);
    assert_eq!(decide::next_undo(&saga), None);
    let emits = decide::finish_undo(&mut saga, &[], t(16));
    assert_eq!(kinds(&emits), vec![types::JOB_DELETED]);
    assert_eq!(saga.status, JobStatus::Deleted);
    assert_eq!(saga.step(StepName::Workers).status, StepStatus::Failed);
}

// ---- failed undo -------------------------------------------------------------

#[test]
fn retryable_undo_failure_schedules_an_undo_retry_for_every_undo() {
    let policy = Policy::default();
    for step in StepName::ALL
        .into_iter()
        .filter(|s| !records(*s, ResourceState::Created).is_empty())
    {
        for deleting in [false, true] {
            let mut saga = if deleting {
                let mut s = saga_after(step.index() + 1);
                s.status = JobStatus::Succeeded;
                decide::request_delete(&mut s).unwrap();
                s
            } else {
                compensating(step)
            };
            let status = saga.status;
            let index = decide::next_undo(&saga).unwrap();
            assert_eq!(saga.resources[index].step, step);
            let resource = saga.resources[index].clone();
            let seq_before = saga.seq;

            let emits = decide::fail_undo(&mut saga, index, &throttled(20), &policy, t(17));
            assert_eq!(kinds(&emits), vec![types::UNDO_RETRY], "{step}");
            let retry = &emits[0];
            assert_eq!(retry.event.subject(), handlers::COMPENSATE);
            assert_eq!(retry.event.data().step, Some(step));
            assert!(saga.seq > seq_before);
            assert_eq!(retry.event.data().seq, Some(saga.seq));
            assert!(
                retry.not_before.unwrap() >= Duration::from_secs(20),
                "{step}: shorter than Retry-After"
            );
            assert_eq!(saga.status, status, "{step}: still undoing");
            assert_eq!(saga.step(step).undo_attempts, 1);
            assert_eq!(
                saga.resources[index], resource,
                "{step}: the resource is untouched"
            );
            assert!(saga.pending.is_none());
            assert_eq!(decide(&saga, &retry.event), Decision::Undo, "{step}");

            let emits2 = decide::fail_undo(&mut saga, index, &busy(), &policy, t(18));
            assert_eq!(kinds(&emits2), vec![types::UNDO_RETRY]);
            assert_eq!(saga.step(step).undo_attempts, 2);
            assert_ne!(emits2[0].event.id(), retry.event.id());
            assert!(
                is_ignore(&decide(&saga, &retry.event)),
                "{step}: stale undo retry"
            );
            assert_eq!(decide(&saga, &emits2[0].event), Decision::Undo);
        }
    }
}

fn assert_compensation_failed(saga: &Saga, index: usize, emits: &[Emit], what: &str) {
    assert_eq!(saga.status, JobStatus::Failed, "{what}");
    let error = saga.error.as_ref().expect("error recorded");
    assert_eq!(error.code, "CompensationFailed", "{what}");
    assert!(
        error.message.contains(&saga.resources[index].id),
        "{what}: names the resource: {}",
        error.message
    );
    assert_ne!(
        saga.resources[index].state,
        ResourceState::Deleted,
        "{what}"
    );
    assert!(
        saga.live_resources()
            .any(|r| r.id == saga.resources[index].id),
        "{what}: still listed"
    );
    assert_eq!(decide::next_undo(saga), Some(index), "{what}");
    assert_eq!(kinds(emits), vec![types::COMPENSATION_FAILED], "{what}");
    assert_eq!(
        emits[0].event.data().error.as_ref().unwrap().code,
        "CompensationFailed"
    );
    assert!(emits[0].not_before.is_none());
    assert!(saga.status.is_terminal());
}

#[test]
fn terminal_undo_failure_fails_the_job_with_the_resource_still_listed() {
    let policy = Policy::default();
    for step in StepName::ALL
        .into_iter()
        .filter(|s| !records(*s, ResourceState::Created).is_empty())
    {
        let mut saga = compensating(step);
        let index = decide::next_undo(&saga).unwrap();
        let emits = decide::fail_undo(&mut saga, index, &forbidden(), &policy, t(19));
        assert_compensation_failed(&saga, index, &emits, step.as_str());
        assert!(saga
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("AuthorizationFailed"));
        // Nothing more happens by itself...
        let d = decide(&saga, &emits[0].event);
        assert!(is_ignore(&d), "{step}: {d:?}");
        // ...but an explicit delete may try again.
        let request = decide::request_delete(&mut saga).expect("a failed job can be deleted");
        assert_eq!(saga.status, JobStatus::Deleting);
        assert!(saga.error.is_none());
        assert_eq!(saga.step(step).undo_attempts, 0, "undo attempts start over");
        assert_eq!(decide(&saga, &request.event), Decision::Undo);
        assert_eq!(decide::next_undo(&saga), Some(index));
    }
}

#[test]
fn exhausted_undo_retries_fail_the_job_with_the_resource_still_listed() {
    for policy in [
        Policy::default(),
        Policy {
            max_undo_attempts: 2,
            ..Policy::default()
        },
    ] {
        for step in StepName::ALL
            .into_iter()
            .filter(|s| !records(*s, ResourceState::Created).is_empty())
        {
            let mut saga = compensating(step);
            let index = decide::next_undo(&saga).unwrap();
            let mut retries = 0;
            let emits = loop {
                let emits = decide::fail_undo(&mut saga, index, &busy(), &policy, t(20));
                if saga.status == JobStatus::Failed {
                    break emits;
                }
                assert_eq!(kinds(&emits), vec![types::UNDO_RETRY]);
                retries += 1;
                assert!(
                    retries <= policy.max_undo_attempts,
                    "{step}: never gives up"
                );
            };
            assert_eq!(retries, policy.max_undo_attempts - 1, "{step}");
            assert_compensation_failed(&saga, index, &emits, step.as_str());
        }
    }
}

// ---- commands ----------------------------------------------------------------

#[test]
fn request_delete_refuses_unfinished_jobs() {
    let refused = |mut saga: Saga, why: &str| {
        let before = saga.clone();
        assert!(decide::request_delete(&mut saga).is_err(), "{why}");
        assert_eq!(saga, before, "{why}: a refused request changes nothing");
    };
    refused(fresh(), "fresh job");
    refused(running(StepName::Master), "running job");
    refused(compensating(StepName::Keys), "compensating job");
    let mut deleting = saga_after(6);
    decide::request_delete(&mut deleting).unwrap();
    refused(deleting.clone(), "deleting job");
    deleting.status = JobStatus::Deleted;
    refused(deleting, "deleted job");
    let mut scaling = saga_after(6);
    decide::request_scale(&mut scaling, "general", 4).unwrap();
    let purpose = PendingPurpose::Scale {
        pool: "general".into(),
        count: 4,
    };
    let poll = poll_state(&purpose);
    decide::wait_for(&mut scaling, purpose, poll, Duration::from_secs(10), t(21));
    refused(scaling, "job with a scale in flight");

    for status in [
        JobStatus::Succeeded,
        JobStatus::Degraded,
        JobStatus::Failed,
        JobStatus::Compensated,
    ] {
        let mut saga = saga_after(6);
        saga.status = status;
        saga.step_mut(StepName::Master).undo_attempts = 3;
        let seq = saga.seq;
        let emit = decide::request_delete(&mut saga).unwrap_or_else(|e| panic!("{status:?}: {e}"));
        assert_eq!(saga.status, JobStatus::Deleting);
        assert_eq!(saga.step(StepName::Master).undo_attempts, 0);
        assert_eq!(saga.seq, seq + 1);
        assert_eq!(emit.event.event_type(), types::DELETE_REQUESTED);
    }
}

#[test]
fn request_scale_validates_pool_and_count() {
    let spec = ClusterSpec::example();
    let pool = &spec.worker_pools[0];
    assert_eq!(
        (pool.name.as_str(), pool.min, pool.max),
        ("general", 2, 10),
        "fixture"
    );

    let mut not_done = running(StepName::Join);
    assert!(
        decide::request_scale(&mut not_done, "general", 4).is_err(),
        "a running job cannot be scaled"
    );

    let mut saga = saga_after(6);
    let before = saga.clone();
    for (p, count) in [
        ("general", 0),
        ("general", 1),
        ("general", 11),
        ("general", u32::MAX),
        ("gpu", 4),
        ("", 4),
    ] {
        let err = match decide::request_scale(&mut saga, p, count) {
            Ok(_) => panic!("{p} x{count} must be refused"),
            Err(e) => e,
        };
        let decide::Refusal::Invalid(err) = err else {
            panic!("{p} x{count}: a bad pool or count is invalid, not a conflict: {err}");
        };
        if p == "general" {
            assert!(err.contains("2..=10"), "{err}");
        } else {
            assert!(err.contains("does not exist"), "{err}");
        }
        assert_eq!(saga, before, "a refused scale changes nothing");
    }

    for count in [2, 5, 10] {
        let mut saga = saga_after(6);
        let emit = decide::request_scale(&mut saga, "general", count).unwrap();
        assert_eq!(emit.event.event_type(), types::SCALE_REQUESTED);
        assert_eq!(emit.event.subject(), StepName::Workers.as_str());
        assert_eq!(emit.event.data().pool.as_deref(), Some("general"));
        assert_eq!(emit.event.data().count, Some(count));
        assert_eq!(emit.event.data().seq, Some(saga.seq));
        assert_eq!(
            decide(&saga, &emit.event),
            Decision::Scale {
                pool: "general".into(),
                count
            }
        );

        // A newer request makes this one stale.
        let newer = decide::request_scale(&mut saga, "general", 3).unwrap();
        assert!(
            is_ignore(&decide(&saga, &emit.event)),
            "stale scale request"
        );
        assert_eq!(
            decide(&saga, &newer.event),
            Decision::Scale {
                pool: "general".into(),
                count: 3
            }
        );

        // In flight: polled, and a new request is refused.
        let purpose = PendingPurpose::Scale {
            pool: "general".into(),
            count: 3,
        };
        let poll = poll_state(&purpose);
        let wait = decide::wait_for(&mut saga, purpose, poll, Duration::from_secs(10), t(22));
        assert_eq!(wait.event.event_type(), types::SCALE_POLL);
        assert_eq!(decide(&saga, &wait.event), Decision::Poll);
        assert!(is_ignore(&decide(&saga, &newer.event)));
        assert!(decide::request_scale(&mut saga, "general", 4).is_err());

        let done = decide::finish_scale(&mut saga, "general", 3);
        assert_eq!(done.event.event_type(), types::JOB_SCALED);
        assert_eq!(saga.pools.get("general"), Some(&3));
        assert!(saga.pending.is_none());
        assert_eq!(saga.status, JobStatus::Succeeded);
    }
}

// ---- events: ids and contents ----------------------------------------------

#[test]
fn step_succeeded_ids_are_stable_per_step_and_distinct_across_steps() {
    let saga = saga_after(6);
    let mut seen = HashSet::new();
    for step in StepName::ALL {
        let a = decide::step_succeeded_event(&saga, step).event;
        let b = decide::step_succeeded_event(&saga, step).event;
        assert_eq!(a.id(), b.id(), "{step}: same transition, same id");
        assert_eq!(a.source(), format!("/flotilla/jobs/{JOB}"));
        assert!(a.id().starts_with(JOB), "{}", a.id());
        assert!(
            seen.insert(a.id().to_string()),
            "{step}: id shared with another step"
        );
    }
    // The id a re-delivery re-emits is the one finish_step emitted.
    let mut saga = running(StepName::Keys);
    let emitted = decide::finish_step(&mut saga, StepName::Keys, t(1));
    assert_eq!(
        emitted[0].event.id(),
        decide::step_succeeded_event(&saga, StepName::Keys)
            .event
            .id()
    );
    // And jobs do not share ids.
    let mut other = saga.clone();
    other.id = "job-other".into();
    assert_ne!(
        decide::step_succeeded_event(&other, StepName::Keys)
            .event
            .id(),
        decide::step_succeeded_event(&saga, StepName::Keys)
            .event
            .id()
    );
    assert_eq!(
        decide::job_requested_event(&saga).event.id(),
        decide::job_requested_event(&saga).event.id()
    );
}

/// Every event of a busy life: a job that retries and polls on every step,
/// scales twice and is deleted with an undo retry and an undo poll.
fn happy_life() -> Vec<Emit> {
    let policy = Policy::default();
    let mut saga = fresh();
    let mut out = vec![decide::job_requested_event(&saga)];
    for step in StepName::ALL {
        decide::start_step(&mut saga, step, t(1));
        out.push(in_flight(&mut saga, step));
        let purpose = saga.pending.clone().unwrap().purpose;
        out.push(decide::wait_for(
            &mut saga,
            purpose.clone(),
            poll_state(&purpose),
            Duration::from_secs(5),
            t(2),
        ));
        out.extend(decide::fail_step(
            &mut saga,
            step,
            &throttled(3),
            &policy,
            t(3),
        ));
        out.push(decide::wait_for(
            &mut saga,
            purpose.clone(),
            poll_state(&purpose),
            Duration::from_secs(5),
            t(4),
        ));
        out.extend(decide::finish_step(&mut saga, step, t(5)));
    }
    assert_eq!(saga.status, JobStatus::Succeeded);
    for count in [5, 3] {
        out.push(decide::request_scale(&mut saga, "general", count).unwrap());
        let purpose = PendingPurpose::Scale {
            pool: "general".into(),
            count,
        };
        out.push(decide::wait_for(
            &mut saga,
            purpose.clone(),
            poll_state(&purpose),
            Duration::from_secs(5),
            t(6),
        ));
        out.push(decide::finish_scale(&mut saga, "general", count));
    }
    out.push(decide::request_delete(&mut saga).unwrap());
    let mut first = true;
    while let Some(i) = decide::next_undo(&saga) {
        if first {
            out.extend(decide::fail_undo(&mut saga, i, &busy(), &policy, t(7)));
            let purpose = PendingPurpose::Delete { resource: i };
            out.push(decide::wait_for(
                &mut saga,
                purpose.clone(),
                poll_state(&purpose),
                Duration::from_secs(5),
                t(8),
            ));
            first = false;
        }
        out.extend(decide::resource_deleted(&mut saga, i, t(9)));
    }
    out.extend(decide::finish_undo(&mut saga, &[], t(9)));
    assert_eq!(saga.status, JobStatus::Deleted);
    out
}

/// A job whose master fails for good, whose compensation fails, and which is
/// then deleted.
fn failed_life() -> Vec<Emit> {
    let policy = Policy::default();
    let mut saga = fresh();
    let mut out = vec![decide::job_requested_event(&saga)];
    for step in [StepName::Stage, StepName::Prereqs, StepName::Keys] {
        decide::start_step(&mut saga, step, t(1));
        saga.resources.extend(records(step, ResourceState::Created));
        out.extend(decide::finish_step(&mut saga, step, t(2)));
    }
    decide::start_step(&mut saga, StepName::Master, t(3));
    out.push(in_flight(&mut saga, StepName::Master));
    out.extend(decide::fail_step(
        &mut saga,
        StepName::Master,
        &throttled(1),
        &policy,
        t(4),
    ));
    out.extend(decide::fail_step(
        &mut saga,
        StepName::Master,
        &sku(),
        &policy,
        t(5),
    ));
    let i = decide::next_undo(&saga).unwrap();
    out.extend(decide::resource_deleted(&mut saga, i, t(6)));
    let i = decide::next_undo(&saga).unwrap();
    out.extend(decide::fail_undo(&mut saga, i, &busy(), &policy, t(7)));
    out.extend(decide::fail_undo(&mut saga, i, &forbidden(), &policy, t(8)));
    assert_eq!(saga.status, JobStatus::Failed);
    out.push(decide::request_delete(&mut saga).unwrap());
    out.extend(decide::fail_undo(&mut saga, i, &forbidden(), &policy, t(9)));
    assert_eq!(saga.status, JobStatus::Failed);
    out.push(decide::request_delete(&mut saga).unwrap());
    while let Some(i) = decide::next_undo(&saga) {
        out.extend(decide::resource_deleted(&mut saga, i, t(10)));
    }
    out.extend(decide::finish_undo(&mut saga, &[], t(10)));
    assert_eq!(saga.status, JobStatus::Deleted);
    out
}

#[test]
fn every_transition_of_a_life_has_its_own_event_id() {
    for (name, life) in [("happy", happy_life()), ("failed", failed_life())] {
        let mut seen = HashSet::new();
        for e in &life {
            assert!(
                seen.insert(e.event.id().to_string()),
                "{name}: id {} ({}) used by two transitions",
                e.event.id(),
                e.event.event_type()
            );
        }
        assert!(
            life.len() > 15,
            "{name}: the fixture exercises many transitions"
        );
    }
}

fn forbidden_keys(v: &Value, path: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let lower = k.to_ascii_lowercase();
                if ["value", "key", "secret", "password", "token"].contains(&lower.as_str())
                    || lower.contains("secret")
                {
                    found.push(format!("{path}.{k}"));
                }
                forbidden_keys(v, &format!("{path}.{k}"), found);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                forbidden_keys(v, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn events_are_cloudevents_without_secrets() {
    let mut seen_types = HashSet::new();
    for e in happy_life().into_iter().chain(failed_life()) {
        let bytes = e.event.to_json();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let mut found = vec![];
        forbidden_keys(&v, "$", &mut found);
        assert!(
            found.is_empty(),
            "{}: secret-looking fields {found:?} in {v}",
            e.event.event_type()
        );
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["source"], format!("/flotilla/jobs/{JOB}"));
        assert_eq!(v["data"]["job"], JOB);
        assert!(
            types::ALL.contains(&e.event.event_type()),
            "{}",
            e.event.event_type()
        );
        assert!(
            [handlers::POLL, handlers::COMPENSATE, handlers::NONE].contains(&e.event.subject())
                || StepName::parse(e.event.subject()).is_some(),
            "{}: unknown subject {}",
            e.event.event_type(),
            e.event.subject()
        );
        let back = CloudEvent::from_json(&bytes).unwrap();
        assert_eq!(back, e.event);
        seen_types.insert(e.event.event_type().to_string());
    }
    assert!(seen_types.len() >= 15, "types covered: {seen_types:?}");
}

// ---- the check for leftovers that ends the undo chain ------------------------

/// A compensation (or, with `delete`, a deletion) whose undo log is done.
fn undone(failed: StepName, delete: bool) -> Saga {
    let mut saga = compensating(failed);
    while let Some(i) = decide::next_undo(&saga) {
        decide::resource_deleted(&mut saga, i, t(20));
    }
    if delete {
        decide::finish_undo(&mut saga, &[], t(20));
        decide::request_delete(&mut saga).unwrap();
    }
    saga
}

#[test]
fn leftovers_found_after_the_undo_chain_fail_the_job_and_list_them() {
    let left = vec![
        format!("{RG}/Microsoft.Network/networkSecurityGroups/stray"),
        "https://flotilla-kv.vault.azure.net/secrets/stray".to_string(),
    ];
    for delete in [false, true] {
        let mut saga = undone(StepName::Workers, delete);
        let emits = decide::finish_undo(&mut saga, &left, t(21));
        assert_eq!(saga.status, JobStatus::Failed, "delete {delete}");
        assert_eq!(saga.leftovers, left);
        let err = saga.error.clone().unwrap();
        assert_eq!(err.code, "LeftoversFound");
        assert!(!err.retryable);
        for id in &left {
            assert!(err.message.contains(id.as_str()), "{}", err.message);
        }
        let last = emits.last().unwrap();
        assert_eq!(last.event.event_type(), types::COMPENSATION_FAILED);
        assert_eq!(last.event.data().resources, left);
        assert!(!kinds(&emits).contains(&types::JOB_COMPENSATED));
        assert!(!kinds(&emits).contains(&types::JOB_DELETED));
        // Every step with nothing left in the log is still marked undone.
        for step in StepName::ALL.into_iter().filter(|s| *s < StepName::Workers) {
            assert_eq!(saga.step(step).status, StepStatus::Compensated, "{step}");
        }
        assert!(decide::next_undo(&saga).is_none());

        // A later delete checks again, and ends Deleted when nothing is left.
        let request = decide::request_delete(&mut saga).expect("a Failed job can be deleted");
        assert!(
            saga.leftovers.is_empty(),
            "a new delete clears the old findings"
        );
        assert_eq!(saga.error, None);
        assert_eq!(decide(&saga, &request.event), Decision::Undo);
        let emits = decide::finish_undo(&mut saga, &[], t(22));
        assert_eq!(saga.status, JobStatus::Deleted);
        assert_eq!(kinds(&emits).last(), Some(&types::JOB_DELETED));
    }
}

#[test]
fn a_failed_check_is_retried_like_an_undo_then_fails_the_job() {
    let policy = Policy::default();
    let mut saga = undone(StepName::Master, false);
    let mut ids = HashSet::new();
    for attempt in 1..policy.max_undo_attempts {
        let emits = decide::verify_failed(&mut saga, &busy(), &policy, t(30));
        assert_eq!(saga.status, JobStatus::Compensating, "attempt {attempt}");
        assert_eq!(saga.verify_attempts, attempt);
        assert_eq!(emits.len(), 1);
        let e = &emits[0];
        assert_eq!(e.event.event_type(), types::UNDO_RETRY);
        assert_eq!(e.event.subject(), handlers::COMPENSATE);
        assert_eq!(e.not_before, Some(policy.backoff(attempt, None)));
        assert!(
            ids.insert(e.event.id().to_string()),
            "a fresh id per attempt"
        );
        assert_eq!(
            decide(&saga, &e.event),
            Decision::Undo,
            "the retry checks again"
        );
    }
    let emits = decide::verify_failed(&mut saga, &busy(), &policy, t(31));
    assert_eq!(saga.status, JobStatus::Failed);
    assert_eq!(saga.error.as_ref().unwrap().code, "VerificationFailed");
    assert_eq!(kinds(&emits), vec![types::COMPENSATION_FAILED]);

    // A terminal failure (no right to list) fails at once; a success resets the count.
    let mut saga = undone(StepName::Master, true);
    decide::verify_failed(&mut saga, &busy(), &policy, t(32));
    assert_eq!(saga.verify_attempts, 1);
    decide::finish_undo(&mut saga, &[], t(33));
    assert_eq!(saga.verify_attempts, 0);
    assert_eq!(saga.status, JobStatus::Deleted);
    let mut saga = undone(StepName::Master, true);
    let emits = decide::verify_failed(&mut saga, &forbidden(), &policy, t(34));
    assert_eq!(saga.status, JobStatus::Failed);
    assert_eq!(kinds(&emits), vec![types::COMPENSATION_FAILED]);
}

#[test]
fn a_secret_the_vault_keeps_is_recorded_once_with_its_purge_date() {
    let mut saga = fresh();
    let id = "https://flotilla-kv.vault.azure.net/secrets/job-7f3a-storage-key";
    decide::secret_retained(&mut saga, id, Some(t(90)));
    decide::secret_retained(&mut saga, id, Some(t(91)));
    assert_eq!(saga.soft_deleted.len(), 1);
    assert_eq!(saga.soft_deleted[0].until, Some(t(91)));
    let json = saga.to_json();
    assert_eq!(json["softDeleted"][0]["id"], id);
    assert!(json["softDeleted"][0]["until"].is_string(), "{json}");
    let back: Saga = serde_json::from_value(json).unwrap();
    assert_eq!(back, saga);
    assert!(
        fresh().to_json().get("leftovers").is_none(),
        "empty findings stay out of the document"
    );
}

// ---- what status shows: undo times and the current wait -------------------

#[test]
fn a_stored_saga_without_undo_times_still_loads() {
    let mut doc = compensating(StepName::Master).to_json();
    for s in doc["steps"].as_array_mut().unwrap() {
        let s = s.as_object_mut().unwrap();
        assert!(!s.contains_key("undoStartedAt"), "none before undo");
        s.remove("undoFinishedAt");
    }
    let saga: Saga = serde_json::from_value(doc).unwrap();
    assert!(saga.steps.iter().all(|s| s.undo_started_at.is_none()));
}

#[test]
fn undo_times_are_rfc3339_in_the_document() {
    let mut saga = compensating(StepName::Workers);
    let index = decide::next_undo(&saga).unwrap();
    let step = saga.resources[index].step;
    decide::undo_begins(&mut saga, index, t(20));
    decide::undo_begins(&mut saga, index, t(21));
    assert_eq!(
        saga.step(step).undo_started_at,
        Some(t(20)),
        "the first start counts"
    );
    decide::resource_deleted(&mut saga, index, t(22));
    let doc = saga.to_json();
    let s = &doc["steps"][step.index()];
    assert_eq!(s["undoStartedAt"], "2023-11-14T22:13:40Z");
    assert!(s["finishedAt"].is_string());
}

#[test]
fn the_wait_says_what_is_awaited_and_since_when() {
    let mut saga = running(StepName::Master);
    in_flight(&mut saga, StepName::Master);
    let wait = saga.wait().expect("an operation in flight");
    assert_eq!(wait.step, Some(StepName::Master));
    assert_eq!(wait.since, t(4));
    assert!(
        wait.why
            .starts_with("step master waits for the creation of ")
            && wait.why.contains("demo-lb"),
        "{}",
        wait.why
    );

    // A retry after a retryable error: the wait says which error.
    let mut saga = running(StepName::Prereqs);
    let busy = AzureError::from_service(429, "TooManyRequests", "slow down", None);
    decide::fail_step(
        &mut saga,
        StepName::Prereqs,
        &busy,
        &Policy::default(),
        t(5),
    );
    let wait = saga.wait().expect("a retry is awaited");
    assert_eq!(wait.step, Some(StepName::Prereqs));
    assert!(
        wait.why.contains("TooManyRequests: slow down"),
        "{}",
        wait.why
    );

    // A job that ended waits for nothing.
    let mut saga = compensating(StepName::Master);
    saga.status = JobStatus::Compensated;
    assert!(saga.wait().is_none());
}

#[test]
fn intents_recorded_ahead_are_undone_like_creates_in_flight() {
    // A handler may have sent a planned create and died before saving, so
    // undo deletes what was planned too, newest first.
    let mut saga = saga_after(2);
    saga.resources
        .extend(records(StepName::Keys, ResourceState::Planned));
    let last = saga.resources.len() - 1;
    assert_eq!(decide::next_undo(&saga), Some(last));
    assert_eq!(saga.live_resources().count(), saga.resources.len());
}
