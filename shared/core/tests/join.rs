//! `join` asks the cluster: on the in-memory world, the step succeeds only
//! when the API server lists every expected node Ready, waits while the API
//! server is not answering yet, and fails naming the node and its init
//! extension's message when a node never registers or its script failed.

use flotilla_azure::AzureError;
use flotilla_core::names;
use flotilla_core::saga::{JobStatus, Saga, StepName, StepStatus};
use flotilla_core::spec::ClusterSpec;
use flotilla_core::testing::World;

/// Enough simulated seconds for the default 360 join checks.
const LIMIT: u32 = 1_000;

fn join_step(saga: &Saga) -> &flotilla_core::saga::StepState {
    saga.steps
        .iter()
        .find(|s| s.name == StepName::Join)
        .expect("join step")
}

fn nothing_left(w: &World) {
    assert!(w.cloud.resources().is_empty(), "{:?}", w.cloud.resources());
    assert!(w.cloud.secrets().is_empty(), "{:?}", w.cloud.secrets());
    assert!(w.cloud.blobs().is_empty(), "{:?}", w.cloud.blobs());
}

#[tokio::test]
async fn join_succeeds_when_the_api_server_lists_every_node_ready() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    // The API server does not answer for the first checks (still starting).
    w.cloud.fail(
        "kube.nodes",
        "",
        AzureError::transport("connection refused"),
        4,
    );
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(join_step(&saga).status, StepStatus::Succeeded);
    // `keys` created the secrets the first master writes, so undo finds them.
    for s in names::node_secrets(&job) {
        let id = format!("https://fake.vault/secrets/{s}");
        assert!(
            saga.resources
                .iter()
                .any(|r| r.id == id && r.step == StepName::Keys),
            "{s} is not in the undo log"
        );
    }
    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    nothing_left(&w);
}

#[tokio::test]
async fn a_check_that_finds_every_node_ready_reads_no_instance_view() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let job = w.engine.submit(spec.clone()).await.unwrap();
    // Any read of a scale set's instance view would fail the step.
    let refused = AzureError::terminal("ReadRefused", "the test refuses instance views");
    w.cloud.fail(
        "get",
        &format!("{}/instanceView", names::master_vmss(&job)),
        refused.clone(),
        1_000,
    );
    for pool in &spec.worker_pools {
        w.cloud.fail(
            "get",
            &format!("{}/instanceView", names::pool_vmss(&job, &pool.name)),
            refused.clone(),
            1_000,
        );
    }
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(join_step(&saga).attempts, 1, "{saga:#?}");
}

#[tokio::test]
async fn a_cluster_counts_only_its_own_nodes() {
    // Two clusters with a pool of the same name: the first one's Ready
    // nodes never make up for the second one's node that did not register.
    let w = World::new();
    let spec = ClusterSpec::example();
    let pool = &spec.worker_pools[0].name;
    let first = w.engine.submit(spec.clone()).await.unwrap();
    assert_eq!(w.run(&first, LIMIT).await.status, JobStatus::Succeeded);
    let second = ClusterSpec {
        network: flotilla_core::spec::NetworkSpec::numbered(1),
        ..spec.clone()
    };
    let job = w.engine.submit(second).await.unwrap();
    w.cloud
        .never_register(&names::pool_vmss(&job, pool), 1, "never came up");
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    let err = join_step(&saga).last_error.clone().expect("join's error");
    assert_eq!(err.code, "JoinTimeout");
}

#[tokio::test]
async fn a_node_that_never_registers_fails_join_with_its_name_and_message() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let job = w.engine.submit(spec.clone()).await.unwrap();
    let pool = &spec.worker_pools[0].name;
    let message = "Enable failed: command terminated with exit status=44\n[stderr]\n[flotilla] activate failed (exit 44): the join information did not appear in Key Vault after 1800 s; is the first master up?";
    w.cloud
        .never_register(&names::pool_vmss(&job, pool), 1, message);
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    let step = join_step(&saga);
    assert_eq!(step.status, StepStatus::Failed);
    let err = step.last_error.as_ref().expect("join's error");
    assert_eq!(err.code, "JoinTimeout");
    // The pool's second instance (id 1) is the one that never registered.
    let node = format!("{}000001", names::computer_prefix(&job, pool));
    assert!(
        err.message
            .contains(&format!("pool {pool} never registered; node {node}")),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains(&format!("({}_1)", names::pool_vmss(&job, pool))),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("[flotilla] activate failed (exit 44): the join information did not appear"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(&format!("pool {pool} 1/2 Ready")),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("the masters 3/3 Ready"),
        "{}",
        err.message
    );
    nothing_left(&w);
}

#[tokio::test]
async fn a_failed_init_script_fails_join_at_once_quoting_the_script() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let message = "Enable failed: failed to execute command: command terminated with exit status=21\n[stdout]\n[flotilla] job x: run\n[stderr]\n[flotilla] identity failed (exit 21): no Key Vault token from the instance metadata endpoint (HTTP 400)";
    w.cloud.fail_init(&names::master_vmss(&job), 1, message);
    let saga = w.run(&job, 60).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    let err = join_step(&saga).last_error.clone().expect("join's error");
    assert_eq!(err.code, "NodeInitFailed");
    let node = format!("{}000002", names::computer_prefix(&job, "master"));
    assert_eq!(
        err.message,
        format!(
            "the init script failed on the masters: node {node} ({}_2): [flotilla] identity failed (exit 21): no Key Vault token from the instance metadata endpoint (HTTP 400)",
            names::master_vmss(&job)
        )
    );
    assert!(
        join_step(&saga).attempts <= 2,
        "a failed script is not waited for: {saga:#?}"
    );
    nothing_left(&w);
}

#[tokio::test]
async fn an_api_server_that_refuses_the_kubeconfig_fails_join() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    w.cloud.fail(
        "kube.nodes",
        "",
        AzureError::terminal(
            "KubeApiUnauthorized",
            "the API server refused the kubeconfig's credential (HTTP 401)",
        ),
        1,
    );
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    let err = join_step(&saga).last_error.clone().expect("join's error");
    assert_eq!(err.code, "KubeApiUnauthorized");
    nothing_left(&w);
}

#[tokio::test]
async fn a_scale_finishes_only_when_the_new_nodes_are_ready() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let job = w.engine.submit(spec.clone()).await.unwrap();
    let pool = spec.worker_pools[0].clone();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    let vmss = names::pool_vmss(&job, &pool.name);

    // The API server lists no node for a while: the scale set is done, the
    // scale is not.
    w.cloud.fail(
        "kube.nodes",
        "",
        AzureError::transport("connection refused"),
        3,
    );
    w.engine
        .request_scale(&job, &pool.name, pool.min + 1)
        .await
        .unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(
        saga.pools.get(&pool.name),
        Some(&(pool.min + 1)),
        "{saga:#?}"
    );
    assert!(saga.pending.is_none() && saga.error.is_none(), "{saga:#?}");

    // A new node whose init script fails: the scale fails naming it, the
    // job keeps running with its recorded size.
    let message = "Enable failed: command terminated with exit status=30\n[stderr]\n[flotilla] install failed (exit 30): apt-get install kubelet failed";
    w.cloud.fail_init(&vmss, 1, message);
    w.engine
        .request_scale(&job, &pool.name, pool.min + 2)
        .await
        .unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(
        saga.pools.get(&pool.name),
        Some(&(pool.min + 1)),
        "{saga:#?}"
    );
    assert!(saga.pending.is_none(), "{saga:#?}");
    let err = saga.error.as_ref().expect("the scale's error");
    assert_eq!(err.code, "NodeInitFailed", "{err:?}");
    assert!(
        err.message.contains("apt-get install kubelet failed"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_scale_set_left_failed_after_its_create_is_sent_again_and_the_job_succeeds() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let job = w.engine.submit(spec.clone()).await.unwrap();
    let vmss = names::pool_vmss(&job, &spec.worker_pools[0].name);
    w.cloud.fail_after_writes(&vmss, 1);
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    let record = saga
        .resources
        .iter()
        .find(|r| r.id.ends_with(&format!("/{vmss}")))
        .expect("the pool's scale set is recorded");
    assert_eq!(record.reopened, 1, "{record:?}");
    // Sent again as an update: still one create per resource.
    assert_eq!(w.cloud.max_creates(), 1);
}

#[tokio::test]
async fn a_scale_set_that_stays_failed_fails_join_after_the_repairs_and_is_undone() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let job = w.engine.submit(spec.clone()).await.unwrap();
    let vmss = names::pool_vmss(&job, &spec.worker_pools[0].name);
    w.cloud.fail_after_writes(&vmss, 100);
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    let err = join_step(&saga).last_error.clone().expect("join's error");
    assert_eq!(err.code, "ScaleSetFailed", "{err:?}");
    assert!(err.message.contains(&vmss), "{}", err.message);
    nothing_left(&w);
}
