//! The embedded runner's workers: a step's save also completes the message
//! that started it and takes the worker's next one, one commit a step.

use flotilla_core::decide::Policy;
use flotilla_core::embedded::{BusOptions, Embedded};
use flotilla_core::engine::{run_worker, Engine};
use flotilla_core::saga::JobStatus;
use flotilla_core::spec::ClusterSpec;
use flotilla_core::testing::{fake_azure, fake_env, FakeCloud};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod common;

#[tokio::test]
async fn a_worker_commits_once_a_step() {
    let cloud = Arc::new(FakeCloud::default());
    // Operations done at once: no step waits, so no re-check adds a write.
    cloud.lro_polls.store(0, Ordering::SeqCst);
    let db = Embedded::in_memory(BusOptions::default()).unwrap();
    let policy = Policy {
        join_interval: Duration::from_millis(5),
        ..Policy::default()
    };
    let engine = Arc::new(Engine::new(
        db.store(),
        db.bus(),
        fake_azure(&cloud),
        fake_env(),
        policy,
    ));
    let job = engine
        .submit_checked(ClusterSpec::example(), None)
        .await
        .unwrap()
        .job;
    let writes_before = db.store_writes();
    let (_, before) = db.commits();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(run_worker(engine.clone(), engine.bus.clone(), 10, stop_rx));
    let saga = common::until_settled(
        &engine,
        &job,
        Duration::from_secs(30),
        Duration::from_millis(2),
    )
    .await;
    let (_, after) = db.commits();
    stop.send(true).unwrap();
    worker.await.unwrap();
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    // Six steps, six saves; the worker's first receive, the last step's
    // completion (its save sends nothing the queue keeps), an idle receive
    // or two while the test looks: 9 here. A completion with a receive of
    // its own after each save makes it 15.
    let commits = after - before;
    let writes = db.store_writes() - writes_before;
    assert_eq!(writes, 6, "one save a step");
    assert!(
        (7..=11).contains(&commits),
        "{commits} commits for six steps"
    );
}
