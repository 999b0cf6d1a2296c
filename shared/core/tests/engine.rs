//! The engine's behaviour on the in-memory world (`flotilla_core::testing`):
//! a store without a transactional outbox (as Cosmos DB), a bus whose sends
//! can be refused or lost, a cloud whose calls can fail, and a clock that only
//! moves when the test moves it.

use flotilla_azure::AzureError;
use flotilla_core::engine::{CommandError, DeletedOutside, SweepOptions};
use flotilla_core::events::{types, CloudEvent, EventData};
use flotilla_core::ports::{Clock, EventBus, OutMessage, SagaStore};
use flotilla_core::saga::{JobStatus, ResourceState, Saga, StepName, StepStatus};
use flotilla_core::spec::ClusterSpec;
use flotilla_core::testing::World;
use std::sync::atomic::Ordering;
use std::time::Duration;

const LIMIT: u32 = 600;

fn sweep_opts() -> SweepOptions {
    SweepOptions {
        interval: Duration::from_secs(5),
        grace: Duration::from_secs(30),
        stall_after: Duration::from_secs(600),
    }
}

/// Everything a job of the example spec leaves in the cloud when it succeeded:
/// VNet, 2 NSGs, public IP, LB, master, per pool a scale set and the
/// master identity's role assignment on it, and its assignment on the worker subnet.
fn expected_arm(spec: &ClusterSpec) -> usize {
    // NSGs, VNet, IP, LB, the node identity, its reader role and its roles on
    // the four join secrets, the master's scale set and the worker subnet's
    // scaler role; per pool a scale set and its scaler role.
    13 + 2 * spec.worker_pools.len()
}

fn nothing_left(w: &World) {
    assert!(w.cloud.resources().is_empty(), "{:?}", w.cloud.resources());
    assert!(w.cloud.secrets().is_empty(), "{:?}", w.cloud.secrets());
    assert!(w.cloud.blobs().is_empty(), "{:?}", w.cloud.blobs());
}

#[tokio::test]
async fn a_job_succeeds_on_a_store_without_a_transactional_outbox() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let job = w.engine.submit(spec.clone()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert!(saga.outbox.is_empty(), "sent events leave the document");
    assert_eq!(w.cloud.resources().len(), expected_arm(&spec));
    assert_eq!(w.cloud.max_creates(), 1, "every resource created once");
    let stored = w.store.get(&job).await.unwrap().unwrap();
    assert!(stored.doc.get("outbox").is_none(), "{}", stored.doc);
}

#[tokio::test]
async fn a_step_takes_the_saga_its_engine_kept_unless_the_document_changed_since() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let kept = || w.engine.stats.kept_loads.load(Ordering::Relaxed);
    // `stage` loads what the submission wrote: nobody changed it since.
    assert!(w.deliver_one().await);
    assert_eq!(kept(), 1, "the submission's own write was kept");
    // A change behind the engine's back (another engine, an operator's
    // edit): the next load must read it, not the copy.
    let mut doc = w.store.get(&job).await.unwrap().unwrap().doc;
    doc["warnings"] = serde_json::json!(["edited behind the engine"]);
    w.store.overwrite(&job, doc);
    assert!(w.deliver_one().await);
    assert_eq!(
        kept(),
        1,
        "a changed document is read, not taken from memory"
    );
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(
        saga.warnings,
        ["edited behind the engine"],
        "the edit survived"
    );
    assert!(kept() >= 5, "every later step took its copy: {}", kept());
    // Every copy was what the store holds: the job ends as a job that never
    // kept anything would.
    assert_eq!(
        w.cloud.resources().len(),
        expected_arm(&ClusterSpec::example())
    );
    assert_eq!(w.cloud.max_creates(), 1, "every resource created once");
}

#[tokio::test]
async fn the_save_that_settles_a_job_announces_it_to_the_one_watcher() {
    let w = World::new();
    let mut settled = w.engine.stats.watch_settled().expect("the first watcher");
    assert!(
        w.engine.stats.watch_settled().is_none(),
        "one watcher per engine"
    );
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    assert!(settled.try_recv().is_err(), "nothing settled yet");
    let saga = w.run(&job, LIMIT).await;
    assert!(saga.is_settled(), "{saga:#?}");
    let mut heard = vec![];
    while let Ok(id) = settled.try_recv() {
        heard.push(id);
    }
    assert!(heard.contains(&job), "{heard:?}");
    assert!(heard.iter().all(|id| id == &job), "{heard:?}");
}

#[tokio::test]
async fn every_event_of_a_job_carries_the_trace_its_submission_started() {
    // No OpenTelemetry layer here: the consumed context is handed on.
    let w = World::new();
    let first = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let mut other = ClusterSpec::example();
    other.network = flotilla_core::spec::NetworkSpec::numbered(1);
    let second = w.engine.submit(other).await.unwrap();
    // (The fake cloud has one scale-set name space, so the second job
    // compensates: its undo events must carry its trace too.)
    for job in [&first, &second] {
        assert!(w.run(job, LIMIT).await.status.is_terminal());
    }
    let events = w.bus.sent_events();
    let trace_of = |job: &str| {
        let traces: std::collections::BTreeSet<String> = events
            .iter()
            .filter(|e| e.data().job == job)
            .map(|e| {
                let cx = e
                    .trace_context()
                    .unwrap_or_else(|| panic!("{} has no traceparent", e.id()));
                cx.trace_id().to_string()
            })
            .collect();
        assert_eq!(traces.len(), 1, "{job}: {traces:?}");
        traces.into_iter().next().unwrap()
    };
    assert!(events.iter().filter(|e| e.data().job == first).count() > 6);
    assert_ne!(
        trace_of(&first),
        trace_of(&second),
        "each job is its own trace"
    );
}

#[tokio::test]
async fn a_refused_send_after_the_first_write_leaves_the_event_in_the_document() {
    let w = World::new();
    w.bus.refuse_sends.store(1, Ordering::SeqCst);
    let err = w.engine.submit(ClusterSpec::example()).await.unwrap_err();
    assert!(matches!(err, CommandError::Engine(_)), "{err}");
    // The job exists and its first event waits inside the document.
    let docs = w.store.list().await.unwrap();
    assert_eq!(docs.len(), 1);
    let job = docs[0].id.clone();
    let outbox = docs[0].doc["outbox"].as_array().unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0]["event"]["type"], types::JOB_REQUESTED);
    assert_eq!(w.bus.pending(), 0, "nothing reached the bus");
    // Reading the job's status sends nothing.
    assert!(w.engine.status(&job).await.unwrap().is_some());
    assert_eq!(w.bus.pending(), 0, "a status read sent the event");
    // Within the grace period the event may be in flight: the sweeper leaves it.
    let report = w.engine.sweep(&sweep_opts()).await.unwrap();
    assert!(report.sent.is_empty(), "{report:?}");
    // After it, the sweeper sends it and removes it; the job then runs to the end.
    w.clock.advance(sweep_opts().grace + Duration::from_secs(1));
    let report = w.engine.sweep(&sweep_opts()).await.unwrap();
    assert_eq!(report.sent, vec![job.clone()]);
    let stored = w.store.get(&job).await.unwrap().unwrap();
    assert!(stored.doc.get("outbox").is_none(), "{}", stored.doc);
    assert_eq!(w.bus.pending(), 1);
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(w.cloud.max_creates(), 1);
}

#[tokio::test]
async fn refused_sends_in_the_middle_of_a_job_are_repaired_by_redelivery() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    w.pump().await;
    // The next three sends fail: each handler run saves, fails to send, and
    // its trigger is redelivered; the next load sends what the document holds.
    w.bus.refuse_sends.store(3, Ordering::SeqCst);
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(w.bus.refuse_sends.load(Ordering::SeqCst), 0);
    assert_eq!(w.cloud.max_creates(), 1);
}

#[tokio::test]
async fn a_lost_send_is_sent_again_then_rearmed_by_the_sweeper() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    w.pump().await;
    // The broker accepts the next send and loses it, and the one after:
    // nothing is in flight.
    w.bus.lose_sends.store(2, Ordering::SeqCst);
    for _ in 0..5 {
        w.pump().await;
        w.clock.advance(Duration::from_secs(1));
    }
    let stuck = w.engine.status(&job).await.unwrap().unwrap();
    assert_eq!(stuck.status, JobStatus::Running);
    assert_eq!(w.bus.pending(), 0, "the event was lost");
    assert_eq!(stuck.outbox.len(), 1, "the document still holds it");
    // Within the grace period the sweeper leaves it alone ...
    let report = w.engine.sweep(&sweep_opts()).await.unwrap();
    assert!(
        report.sent.is_empty() && report.rearmed.is_empty(),
        "{report:?}"
    );
    // ... after it, it sends what the document holds (lost again) ...
    w.clock.advance(Duration::from_secs(60));
    let report = w.engine.sweep(&sweep_opts()).await.unwrap();
    assert_eq!(report.sent, vec![job.clone()]);
    assert!(report.rearmed.is_empty(), "{report:?}");
    assert_eq!(w.bus.pending(), 0, "the second send was lost too");
    // ... and once that is overdue too, it re-arms the job, which then finishes.
    w.clock.advance(Duration::from_secs(60));
    let report = w.engine.sweep(&sweep_opts()).await.unwrap();
    assert!(report.sent.is_empty(), "{report:?}");
    assert_eq!(report.rearmed, vec![job.clone()]);
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(w.cloud.max_creates(), 1, "a re-arm never creates twice");
}

#[tokio::test]
async fn a_job_whose_event_waits_behind_a_backlog_is_not_rearmed() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    // Nobody receives for two minutes: the job's next event is overdue
    // but still queued, behind a backlog as old as the wait.
    w.clock.advance(Duration::from_secs(120));
    assert_eq!(
        w.bus.backlog_age().await.unwrap(),
        Some(Duration::from_secs(120))
    );
    let report = w.engine.sweep(&sweep_opts()).await.unwrap();
    assert!(report.rearmed.is_empty(), "{report:?}");
    assert_eq!(w.bus.pending(), 1, "no second event was sent");
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
}

#[tokio::test]
async fn delete_and_scale_commands_survive_a_refused_send() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let pool = spec.worker_pools[0].clone();
    let job = w.engine.submit(spec).await.unwrap();
    assert_eq!(w.run(&job, LIMIT).await.status, JobStatus::Succeeded);

    w.bus.refuse_sends.store(1, Ordering::SeqCst);
    let err = w
        .engine
        .request_scale(&job, &pool.name, pool.min + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::Engine(_)), "{err}");
    // The sweeper sends what the document holds once the grace period is over.
    w.clock.advance(sweep_opts().grace + Duration::from_secs(1));
    w.engine.sweep(&sweep_opts()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.pools[&pool.name], pool.min + 1, "{saga:#?}");

    w.bus.refuse_sends.store(1, Ordering::SeqCst);
    assert!(w.engine.request_delete(&job).await.is_err());
    assert_eq!(
        w.engine.status(&job).await.unwrap().unwrap().status,
        JobStatus::Deleting
    );
    w.clock.advance(sweep_opts().grace + Duration::from_secs(1));
    w.engine.sweep(&sweep_opts()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    nothing_left(&w);
}

#[tokio::test]
async fn a_job_that_cannot_move_is_reported_stalled_with_why() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    w.pump().await;
    // Every send from now on is lost: re-arms do not help.
    w.bus.lose_sends.store(u64::MAX, Ordering::SeqCst);
    for _ in 0..12 {
        w.pump().await;
        w.clock.advance(Duration::from_secs(60));
        w.engine.sweep(&sweep_opts()).await.unwrap();
    }
    let report = w.engine.sweep(&sweep_opts()).await.unwrap();
    assert_eq!(report.stalled.len(), 1, "{report:?}");
    let why = &report.stalled[0].why;
    assert!(why.contains("no progress since"), "{why}");
    assert!(why.contains("re-armed"), "{why}");
    let saga = w.engine.status(&job).await.unwrap().unwrap();
    assert!(saga.rearms >= 2, "{}", saga.rearms);
    // A job that moves again is no longer stalled.
    w.bus.lose_sends.store(0, Ordering::SeqCst);
    w.clock.advance(Duration::from_secs(60));
    w.engine.sweep(&sweep_opts()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded);
    assert!(
        flotilla_core::engine::stalled_reason(&saga, w.clock.now(), sweep_opts().stall_after)
            .is_none()
    );
}

#[tokio::test]
async fn transient_token_failures_are_retried_not_compensated() {
    let w = World::new();
    let transient = AzureError::from_service(
        503,
        "CredentialUnavailable",
        "token endpoint answered 503",
        None,
    );
    assert!(transient.is_retryable());
    w.cloud.fail("put", "-vnet", transient.clone(), 2);
    w.cloud.fail("delete", "-pool-", transient, 2);
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(saga.step(StepName::Prereqs).attempts, 3);
    // Undo retries the same way.
    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    nothing_left(&w);
}

/// A join secret's placeholder whose write is retried after the secret was
/// written (by the first master) leaves that value. In the race a chaos
/// campaign hit, the late retry was an inline one of a handler whose claim
/// another had taken (`client_sim` tests that one); here it is the step's own.
#[tokio::test]
async fn a_placeholder_never_replaces_what_the_first_master_published() {
    use flotilla_core::ports::Secrets;
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let kubeconfig = flotilla_core::names::kubeconfig_secret(&job);
    let unavailable = AzureError::from_service(503, "ServiceUnavailable", "try again", None);
    w.cloud.fail("secret.set", &kubeconfig, unavailable, 1);
    // Until the placeholder's write has failed once and waits for its retry.
    for _ in 0..LIMIT {
        w.pump().await;
        let saga = w.engine.status(&job).await.unwrap().unwrap();
        if saga.step(StepName::Keys).last_error.is_some() {
            break;
        }
        w.clock.advance(Duration::from_secs(1));
    }
    let saga = w.engine.status(&job).await.unwrap().unwrap();
    assert_eq!(saga.step(StepName::Keys).status, StepStatus::Running);
    // The first master publishes meanwhile; from now on any write of that
    // secret by the engine is a terminal error, so the job would compensate.
    w.cloud
        .set(&kubeconfig, "published", &Default::default())
        .await
        .unwrap();
    let overwrite = AzureError::from_service(409, "Overwritten", "the placeholder came back", None);
    w.cloud.fail("secret.set", &kubeconfig, overwrite, 1);
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(saga.step(StepName::Keys).attempts, 2);
}

#[tokio::test]
async fn a_terminal_error_compensates_and_records_its_class() {
    let w = World::new();
    w.cloud.fail(
        "put",
        "-master",
        AzureError::from_service(409, "SkuNotAvailable", "no such size here", None),
        1,
    );
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    let err = saga.error.clone().unwrap();
    assert_eq!(err.code, "SkuNotAvailable");
    assert!(!err.retryable);
    assert_eq!(saga.step(StepName::Master).status, StepStatus::Failed);
    nothing_left(&w);
}

fn forged(job: &str, event_type: &str, data: EventData) -> OutMessage {
    let event = CloudEvent::new(
        event_type,
        "workers",
        &format!("forged/{}", rand_key()),
        EventData {
            job: job.into(),
            ..data
        },
    );
    OutMessage {
        id: event.id().to_string(),
        event_type: event.event_type().to_string(),
        body: event.to_json(),
        not_before: None,
    }
}

fn rand_key() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[tokio::test]
async fn a_scale_message_outside_the_pools_limits_is_refused_where_it_is_decided() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let pool = spec.worker_pools[0].clone();
    let job = w.engine.submit(spec).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded);
    let calls = w.cloud.calls();
    for (name, count) in [(pool.name.as_str(), pool.max + 1000), ("nope", 1)] {
        // Forged with the saga's current sequence number: only the limits stop it.
        w.bus.inject(forged(
            &job,
            types::SCALE_REQUESTED,
            EventData {
                pool: Some(name.into()),
                count: Some(count),
                seq: Some(saga.seq),
                ..Default::default()
            },
        ));
        w.pump().await;
    }
    assert_eq!(w.cloud.calls(), calls, "no Azure call was made");
    let after = w.engine.status(&job).await.unwrap().unwrap();
    assert_eq!(after.pools, saga.pools);
    assert_eq!(after.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_corrupt_saga_dead_letters_its_message_at_once() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    w.store
        .overwrite(&job, serde_json::json!({"id": job, "status": 42}));
    w.pump().await;
    let dead = w.bus.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].delivery_count, 1, "not retried ten times");
    assert!(dead[0].reason.contains("terminal"), "{}", dead[0].reason);
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_job() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let first = w
        .engine
        .submit_with_key(spec.clone(), Some("order-42"))
        .await
        .unwrap();
    assert!(!first.existing);
    let again = w
        .engine
        .submit_with_key(spec.clone(), Some("order-42"))
        .await
        .unwrap();
    assert_eq!(again.job, first.job);
    assert!(again.existing);
    let other = w
        .engine
        .submit_with_key(spec.clone(), Some("order-43"))
        .await
        .unwrap();
    assert_ne!(other.job, first.job);
    let mut changed = spec.clone();
    changed.worker_pools[0].max += 1;
    let err = w
        .engine
        .submit_with_key(changed, Some("order-42"))
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::Conflict(_)), "{err}");
    assert_eq!(w.store.list().await.unwrap().len(), 2, "two jobs, not four");
}

#[tokio::test]
async fn degraded_marking_goes_through_decide_and_the_outbox() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    assert_eq!(w.run(&job, LIMIT).await.status, JobStatus::Succeeded);
    let vnet = w
        .cloud
        .resources()
        .into_iter()
        .find(|r| r.ends_with("-vnet"))
        .unwrap();
    // While ARM still has it, a delete event changes nothing.
    let sent = w.bus.sent.load(Ordering::SeqCst);
    let lists = w.store.lists.load(Ordering::SeqCst);
    assert_eq!(
        w.engine.mark_degraded(&vnet).await.unwrap(),
        DeletedOutside::StillExists(vec![job.clone()])
    );
    let saga = w.engine.status(&job).await.unwrap().unwrap();
    assert_eq!(saga.status, JobStatus::Succeeded);
    assert_eq!(w.bus.sent.load(Ordering::SeqCst), sent, "nothing sent");
    w.cloud.remove(&vnet);
    assert_eq!(
        w.engine.mark_degraded(&vnet).await.unwrap(),
        DeletedOutside::Degraded(vec![job.clone()])
    );
    let saga = w.engine.status(&job).await.unwrap().unwrap();
    assert_eq!(saga.status, JobStatus::Degraded);
    assert_eq!(saga.missing, vec![vnet.clone()]);
    assert_eq!(
        w.bus.sent.load(Ordering::SeqCst),
        sent + 1,
        "job.degraded sent"
    );
    // A repeat changes nothing; an unknown resource concerns no job.
    assert_eq!(
        w.engine.mark_degraded(&vnet).await.unwrap(),
        DeletedOutside::NotOurs
    );
    assert_eq!(
        w.store.lists.load(Ordering::SeqCst),
        lists,
        "the job came from the resource's name, not from a scan of every saga"
    );
    assert_eq!(
        w.engine
            .mark_degraded("/subscriptions/x/resourceGroups/y/providers/A.B/c/d")
            .await
            .unwrap(),
        DeletedOutside::NotOurs
    );
    assert_eq!(
        w.store.lists.load(Ordering::SeqCst),
        lists + 1,
        "an id naming no job is looked for in every saga"
    );
}

#[tokio::test]
async fn plan_lists_exactly_what_the_job_then_creates_and_sends_nothing() {
    let w = World::new();
    let mut spec = ClusterSpec::example();
    spec.identity = flotilla_core::spec::IdentityMode::ServicePrincipal;
    let plan = w.engine.plan(spec.clone(), Some("k-9"));
    assert_eq!(w.cloud.calls(), 0, "plan sends nothing");
    let steps: Vec<StepName> = plan.steps.iter().map(|s| s.step).collect();
    assert_eq!(steps, StepName::ALL.to_vec());
    let text = serde_json::to_string(&plan).unwrap();
    for secret in ["fake-storage-key", "cluster-sp-secret-value"] {
        assert!(!text.contains(secret), "a secret value in the plan");
    }
    assert!(text.contains(flotilla_core::plan::REDACTED));
    let planned_puts: std::collections::BTreeSet<String> = plan
        .steps
        .iter()
        .flat_map(|s| &s.operations)
        .filter(|o| o.kind == "arm" && o.method == "PUT")
        .map(|o| o.target.to_ascii_lowercase())
        .collect();
    for op in plan.steps.iter().flat_map(|s| &s.operations) {
        let writes = op.method == "PUT";
        assert_eq!(
            op.undo.is_some(),
            writes,
            "every write has its undo: {op:?}"
        );
    }

    let submitted = w.engine.submit_with_key(spec, Some("k-9")).await.unwrap();
    assert_eq!(submitted.job, plan.job, "the same key names the same job");
    let saga = w.run(&submitted.job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded);
    let created: std::collections::BTreeSet<String> = w
        .cloud
        .resources()
        .into_iter()
        .map(|r| r.to_ascii_lowercase())
        .collect();
    assert_eq!(planned_puts, created);

    // What a delete would remove: everything, newest first.
    let removal = flotilla_core::plan::removal(&saga);
    assert_eq!(removal.len(), saga.resources.len());
    assert_eq!(removal[0].target, saga.resources.last().unwrap().id);
    assert!(removal.iter().all(|o| o.method == "DELETE"));
}

#[tokio::test]
async fn the_retry_budget_counts_failures_without_progress() {
    let w = World::new();
    let busy = AzureError::from_service(429, "TooManyRequests", "slow down", None);
    // Four failures on the first NSG, then four on the VNet: eight in all,
    // but the step makes progress in between, so it never runs out.
    w.cloud.fail("put", "-cp-nsg", busy.clone(), 4);
    w.cloud.fail("put", "-vnet", busy, 4);
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(saga.step(StepName::Prereqs).attempts, 9);
}

/// Delivers messages until the next one would start `step`; returns that
/// message's event without handling it.
async fn run_until_the_trigger_of(w: &World, job: &str, step: StepName) -> CloudEvent {
    loop {
        let saga = w.engine.status(job).await.unwrap().unwrap();
        let before = step.index().checked_sub(1).map(|i| saga.steps[i].status);
        if before.is_none_or(|s| s == StepStatus::Succeeded) {
            let d = w
                .bus
                .receive(Duration::ZERO)
                .await
                .unwrap()
                .expect("a trigger");
            w.bus.abandon(&d).await.unwrap();
            return CloudEvent::from_json(&d.body).unwrap();
        }
        if !w.deliver_one().await {
            w.clock.advance(Duration::from_secs(1));
        }
    }
}

/// Submits `spec` through the edge's pre-flight, as `up` and HTTP do.
async fn submit_checked(w: &World, spec: &ClusterSpec) -> String {
    w.engine
        .submit_checked(spec.clone(), None)
        .await
        .unwrap()
        .job
}

/// The job ran to `Succeeded` with every resource of `spec` created once,
/// and its undo log holds nothing but created resources.
fn succeeded_creating_each_once(w: &World, spec: &ClusterSpec, saga: &Saga) {
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(w.cloud.resources().len(), expected_arm(spec));
    assert_eq!(w.cloud.max_creates(), 1, "every resource created once");
    assert!(
        saga.resources
            .iter()
            .all(|r| r.state == ResourceState::Created),
        "{:?}",
        saga.resources
    );
}

#[tokio::test]
async fn a_step_costs_one_write_the_one_that_ends_it() {
    // The intents of a step are recorded by the write that ends the step
    // before (the job's creation for `stage`), so no step writes before
    // its first create. On this store (no transactional outbox, as Cosmos
    // DB) the events a write publishes stay in the document until the next
    // step's load knows them delivered, so that step's write drops them:
    // one replace per step, and one more for the settled job's last event.
    let w = World::new();
    let spec = ClusterSpec::example();
    let job = submit_checked(&w, &spec).await;
    let saga = w.run(&job, LIMIT).await;
    succeeded_creating_each_once(&w, &spec, &saga);
    let waits = w
        .bus
        .sent_events()
        .iter()
        .filter(|e| e.event_type() == types::STEP_POLL)
        .count() as u64;
    assert_eq!(
        w.engine.stats.store_writes.load(Ordering::Relaxed),
        1 + saga.steps.len() as u64 + waits + 1,
        "the job's creation, one write per step and one per wait ({waits}), \
         the removal of the last event, nothing else"
    );
    let stored = w.store.get(&job).await.unwrap().unwrap();
    assert!(stored.doc.get("outbox").is_none(), "{}", stored.doc);
}

#[tokio::test]
async fn a_step_whose_handler_died_after_its_sends_is_finished_by_the_redelivery() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let job = submit_checked(&w, &spec).await;
    let trigger = run_until_the_trigger_of(&w, &job, StepName::Prereqs).await;
    let saga = w.engine.status(&job).await.unwrap().unwrap();
    let planned: Vec<_> = saga
        .resources
        .iter()
        .filter(|r| r.step == StepName::Prereqs)
        .collect();
    assert!(!planned.is_empty());
    assert!(planned.iter().all(|r| r.state == ResourceState::Planned));
    // The handler sends every create, then its one write fails: as a
    // handler that died before saving.
    w.store.fail_replaces.store(1, Ordering::SeqCst);
    assert!(w.engine.handle(&trigger).await.is_err());
    let sent = w.cloud.resources().len();
    assert!(sent >= planned.len() - 1, "the creates went out: {sent}");
    let saga = w.engine.status(&job).await.unwrap().unwrap();
    assert_eq!(saga.step(StepName::Prereqs).status, StepStatus::Pending);
    // The redelivery sends them again (the same PUTs) and ends the step.
    let saga = w.run(&job, LIMIT).await;
    succeeded_creating_each_once(&w, &spec, &saga);
}

#[tokio::test]
async fn two_deliveries_of_one_event_at_once_create_every_resource_once() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let job = submit_checked(&w, &spec).await;
    let trigger = run_until_the_trigger_of(&w, &job, StepName::Keys).await;
    // A lost lock: the same event handled twice at the same time. Both may
    // send the step's creates; one save wins and the other handler stops.
    let (a, b) = tokio::join!(w.engine.handle(&trigger), w.engine.handle(&trigger));
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    let saga = w.run(&job, LIMIT).await;
    succeeded_creating_each_once(&w, &spec, &saga);
}

#[tokio::test]
async fn an_event_addressed_to_no_handler_is_complete_without_reading_the_saga() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded);
    // A document nobody can read: any handler that loads it fails.
    w.store
        .overwrite(&job, serde_json::json!({"id": job, "not": "a saga"}));
    let notice = flotilla_core::engine::notification(&job, types::JOB_SUCCEEDED, "again");
    assert!(w.engine.handle(&notice).await.is_ok());
    let poll =
        CloudEvent::from_json(&forged(&job, types::STEP_POLL, EventData::default()).body).unwrap();
    assert!(
        w.engine.handle(&poll).await.is_err(),
        "an event a handler takes reads the saga"
    );
}

/// A job on the embedded store whose next event a consumer took and never
/// handled is re-armed once it is overdue: the store lists it from what its
/// last save said (saved at a time on the engine's clock), not from its JSON;
/// an unreadable document beside it is reported, not a stop.
#[tokio::test]
async fn on_the_embedded_store_a_lost_event_is_rearmed_once_overdue() {
    use flotilla_core::engine::{settle, Delivered, Engine, Settlement};
    use flotilla_core::testing::{fake_azure, fake_env};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flotilla.db");
    let db = flotilla_core::embedded::Embedded::open(&path, Default::default()).unwrap();
    let (store, bus) = (db.store(), db.bus());
    // The in-memory world's cloud and clock, under an engine of its own.
    let w = World::new();
    let (cloud, clock) = (w.cloud.clone(), w.clock.clone());
    let policy = flotilla_core::decide::Policy {
        backoff_base: Duration::from_secs(1),
        join_interval: Duration::from_secs(1),
        ..Default::default()
    };
    let engine = Engine::new(store, bus.clone(), fake_azure(&cloud), fake_env(), policy)
        .with_clock(clock.clone());
    // Handles what is receivable now; `lose` of them are taken and dropped.
    let pump = |mut lose: usize| {
        let (engine, bus) = (&engine, bus.clone());
        async move {
            while let Ok(Some(d)) = bus.receive(Duration::ZERO).await {
                if lose > 0 {
                    lose -= 1;
                    bus.complete(&d).await.unwrap();
                    continue;
                }
                let verdict = settle(engine, Delivered::from_bus(&d, 10)).await;
                assert!(matches!(verdict, Settlement::Complete), "{verdict:?}");
                bus.complete(&d).await.unwrap();
            }
        }
    };
    let job = engine.submit(ClusterSpec::example()).await.unwrap();
    pump(0).await;
    pump(1).await;
    let stuck = engine.status(&job).await.unwrap().unwrap();
    assert_eq!(stuck.status, JobStatus::Running, "{stuck:#?}");
    let report = engine.sweep(&sweep_opts()).await.unwrap();
    assert!(
        report.rearmed.is_empty(),
        "within the grace period: {report:?}"
    );
    // A document nobody can read, written behind the store's back, is
    // reported and does not stop the sweep of the others.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO sagas (id, version, doc) VALUES ('aaa-unreadable', 1, '{not json')",
            [],
        )
        .unwrap();
    clock.advance(Duration::from_secs(120));
    let report = engine.sweep(&sweep_opts()).await.unwrap();
    assert_eq!(report.rearmed, vec![job.clone()], "{report:?}");
    assert_eq!(report.corrupt, ["aaa-unreadable"], "{report:?}");
    // Not re-armed twice (the re-arm's event is scheduled on the engine's
    // clock, which the bus does not follow, so it is not handled here).
    let rearmed = engine.status(&job).await.unwrap().unwrap();
    assert_eq!(rearmed.rearms, 1, "{rearmed:#?}");
    let report = engine.sweep(&sweep_opts()).await.unwrap();
    assert!(report.rearmed.is_empty(), "{report:?}");
}
