//! Day-2 worker pools on the in-memory world: a pool added to a succeeded
//! cluster is created by the steps' own operations and waited for like
//! `join`; a failed add is undone; a removal deletes what the pool had; a
//! command on the bus that a request would be refused for changes nothing.

use flotilla_azure::AzureError;
use flotilla_core::engine::CommandError;
use flotilla_core::events::{types, CloudEvent, EventData};
use flotilla_core::names;
use flotilla_core::saga::{JobStatus, Saga};
use flotilla_core::spec::{ClusterSpec, NetworkSpec, WorkerPool};
use flotilla_core::testing::World;

/// Enough simulated seconds for the default 360 join checks.
const LIMIT: u32 = 1_000;

fn new_pool(name: &str, min: u32, max: u32) -> WorkerPool {
    WorkerPool {
        name: name.into(),
        instance_type: "Standard_D4s_v5".into(),
        min,
        max,
        disk: ClusterSpec::example().worker_pools[0].disk.clone(),
        zones: vec![],
    }
}

async fn succeeded(w: &World, spec: ClusterSpec) -> (String, Saga) {
    let job = w.engine.submit(spec).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    (job, saga)
}

fn has_resource(w: &World, suffix: &str) -> bool {
    w.cloud.resources().iter().any(|r| {
        r.to_ascii_lowercase()
            .ends_with(&suffix.to_ascii_lowercase())
    })
}

fn records(saga: &Saga, needle: &str) -> usize {
    saga.resources
        .iter()
        .filter(|r| r.id.contains(needle))
        .count()
}

fn nothing_left(w: &World) {
    assert!(w.cloud.resources().is_empty(), "{:?}", w.cloud.resources());
    assert!(w.cloud.secrets().is_empty(), "{:?}", w.cloud.secrets());
    assert!(w.cloud.blobs().is_empty(), "{:?}", w.cloud.blobs());
}

#[tokio::test]
async fn a_pool_is_added_then_removed_and_the_job_still_deletes_cleanly() {
    let w = World::new();
    let (job, before) = succeeded(&w, ClusterSpec::example()).await;
    let pool = new_pool("gpu", 2, 4);
    let vmss = names::pool_vmss(&job, "gpu");

    w.engine.request_add_pool(&job, &pool).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert!(saga.error.is_none() && saga.pending.is_none(), "{saga:#?}");
    assert_eq!(saga.pools.get("gpu"), Some(&2));
    assert_eq!(saga.spec.worker_pools.last(), Some(&pool));
    assert!(has_resource(&w, &vmss), "{:?}", w.cloud.resources());
    assert!(w
        .cloud
        .blobs()
        .contains(&names::pool_init_blob(&job, "gpu")));
    assert_eq!(
        records(&saga, &vmss),
        2,
        "the scale set and the master identity's scaler role on it are in the undo log"
    );
    // The day-2 pool's scaler role, like a created pool's.
    let role = w
        .cloud
        .resources()
        .into_iter()
        .find(|r| {
            r.contains(&format!(
                "/{vmss}/providers/Microsoft.Authorization/roleAssignments/"
            ))
        })
        .expect("the new pool's scaler role");
    let principal = saga.principals.get(&names::master_vmss(&job)).unwrap();
    assert_eq!(
        w.cloud.body(&role).unwrap()["properties"]["principalId"],
        principal.as_str()
    );
    assert_eq!(
        w.cloud.max_creates(),
        1,
        "nothing of the cluster was created twice"
    );

    // The new pool scales like any other.
    w.engine.request_scale(&job, "gpu", 3).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.pools.get("gpu"), Some(&3), "{saga:#?}");

    w.engine.request_remove_pool(&job, "gpu").await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert!(saga.error.is_none() && saga.pending.is_none(), "{saga:#?}");
    assert!(!has_resource(&w, &vmss), "{:?}", w.cloud.resources());
    assert!(
        !has_resource(&w, &role),
        "the scaler role went with the pool"
    );
    assert!(w.cloud.deletes().contains(&role), "{:?}", w.cloud.deletes());
    assert!(!w
        .cloud
        .blobs()
        .contains(&names::pool_init_blob(&job, "gpu")));
    assert_eq!(saga.spec, before.spec, "the spec is as before the add");
    assert_eq!(saga.pools, before.pools);
    assert_eq!(records(&saga, "gpu"), 0, "{:#?}", saga.resources);
    assert!(has_resource(&w, &names::pool_vmss(&job, "general")));

    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    nothing_left(&w);
}

#[tokio::test]
async fn an_added_pool_goes_with_the_job() {
    let w = World::new();
    let (job, _) = succeeded(&w, ClusterSpec::example()).await;
    w.engine
        .request_add_pool(&job, &new_pool("extra", 1, 2))
        .await
        .unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert!(saga.pools.contains_key("extra"), "{saga:#?}");
    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    nothing_left(&w);
}

#[tokio::test]
async fn an_add_whose_nodes_fail_is_undone_and_the_cluster_stays() {
    let w = World::new();
    let (job, before) = succeeded(&w, ClusterSpec::example()).await;
    let vmss = names::pool_vmss(&job, "gpu");
    let message = "[flotilla] install failed (exit 30): apt-get install kubelet failed";
    w.cloud.fail_init(&vmss, 1, message);
    let resources_before = w.cloud.resources();

    w.engine
        .request_add_pool(&job, &new_pool("gpu", 2, 4))
        .await
        .unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert!(saga.pending.is_none(), "{saga:#?}");
    let err = saga.error.as_ref().expect("the add's error");
    assert_eq!(err.code, "NodeInitFailed", "{err:?}");
    assert!(err.message.contains("adding pool 'gpu'"), "{}", err.message);
    assert!(err.message.contains("apt-get install"), "{}", err.message);
    assert!(
        w.cloud.deletes().iter().any(|d| d.ends_with(&vmss)),
        "the scale set was deleted: {:?}",
        w.cloud.deletes()
    );
    assert_eq!(w.cloud.resources(), resources_before);
    assert!(!w
        .cloud
        .blobs()
        .contains(&names::pool_init_blob(&job, "gpu")));
    assert_eq!(saga.spec, before.spec);
    assert_eq!(saga.pools, before.pools);
    assert_eq!(records(&saga, "gpu"), 0, "{:#?}", saga.resources);
}

#[tokio::test]
async fn an_add_whose_scale_set_is_refused_is_undone() {
    let w = World::new();
    let (job, before) = succeeded(&w, ClusterSpec::example()).await;
    let vmss = names::pool_vmss(&job, "gpu");
    w.cloud.fail(
        "put",
        &vmss,
        AzureError::terminal("SkuNotAvailable", "not in this region"),
        1,
    );
    w.engine
        .request_add_pool(&job, &new_pool("gpu", 1, 2))
        .await
        .unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(
        saga.error.as_ref().map(|e| e.code.as_str()),
        Some("SkuNotAvailable")
    );
    assert!(!has_resource(&w, &vmss));
    assert!(!w
        .cloud
        .blobs()
        .contains(&names::pool_init_blob(&job, "gpu")));
    assert_eq!(saga.spec, before.spec);
    // The same pool can be asked for again and then succeeds.
    w.engine
        .request_add_pool(&job, &new_pool("gpu", 1, 2))
        .await
        .unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert!(saga.error.is_none(), "{saga:#?}");
    assert!(has_resource(&w, &vmss));
}

#[tokio::test]
async fn a_delete_that_keeps_failing_stops_the_removal_and_leaves_the_pool_listed() {
    let w = World::new();
    let (job, _) = succeeded(&w, ClusterSpec::example()).await;
    let vmss = names::pool_vmss(&job, "general");
    w.engine
        .request_add_pool(&job, &new_pool("gpu", 1, 2))
        .await
        .unwrap();
    w.run(&job, LIMIT).await;
    w.cloud.fail(
        "delete",
        &names::pool_vmss(&job, "gpu"),
        AzureError::terminal("AuthorizationFailed", "no"),
        1,
    );
    w.engine.request_remove_pool(&job, "gpu").await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    let err = saga.error.as_ref().expect("the removal's error");
    assert_eq!(err.code, "PoolRemovalFailed", "{err:?}");
    assert!(saga.pending.is_none());
    assert!(saga.pools.contains_key("gpu"), "still listed: {saga:#?}");
    // Asking again finishes it.
    w.engine.request_remove_pool(&job, "gpu").await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert!(saga.error.is_none(), "{saga:#?}");
    assert!(!saga.pools.contains_key("gpu"));
    assert!(has_resource(&w, &vmss), "the other pool stays");
}

#[tokio::test]
async fn requests_the_saga_refuses() {
    let w = World::new();
    let mut spec = ClusterSpec::example();
    spec.network = NetworkSpec::numbered(7); // a /27 worker subnet: 27 nodes
    spec.worker_pools[0].max = 10;
    let job = w.engine.submit(spec).await.unwrap();
    // Still running: no pool change.
    let e = w
        .engine
        .request_add_pool(&job, &new_pool("gpu", 1, 2))
        .await
        .unwrap_err();
    assert!(matches!(e, CommandError::Conflict(_)), "{e}");
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded);

    let invalid = |e: CommandError| match e {
        CommandError::Invalid(m) => m,
        other => panic!("expected Invalid, got {other}"),
    };
    // The pool's own limits, named by field.
    let m = invalid(
        w.engine
            .request_add_pool(&job, &new_pool("gpu", 3, 2))
            .await
            .unwrap_err(),
    );
    assert!(m.starts_with("min:"), "{m}");
    let mut bad_disk = new_pool("gpu", 1, 2);
    bad_disk.disk.size_gb = 5;
    let m = invalid(
        w.engine
            .request_add_pool(&job, &bad_disk)
            .await
            .unwrap_err(),
    );
    assert!(m.starts_with("disk.sizeGb:"), "{m}");
    // The worker subnet's room: 10 + 20 > 27.
    let m = invalid(
        w.engine
            .request_add_pool(&job, &new_pool("gpu", 1, 20))
            .await
            .unwrap_err(),
    );
    assert!(
        m.starts_with("max:") && m.contains("workerSubnetCidr"),
        "{m}"
    );
    // An existing name.
    let m = invalid(
        w.engine
            .request_add_pool(&job, &new_pool("general", 1, 2))
            .await
            .unwrap_err(),
    );
    assert!(m.starts_with("name:"), "{m}");
    // Unknown pool; the last pool without master.allowWorkloads.
    let m = invalid(
        w.engine
            .request_remove_pool(&job, "nosuch")
            .await
            .unwrap_err(),
    );
    assert!(m.contains("does not exist"), "{m}");
    let e = w
        .engine
        .request_remove_pool(&job, "general")
        .await
        .unwrap_err();
    match e {
        CommandError::Conflict(m) => assert!(m.contains("allowWorkloads"), "{m}"),
        other => panic!("expected Conflict, got {other}"),
    }
    let e = w
        .engine
        .request_remove_pool("nosuch-abc123", "general")
        .await
        .unwrap_err();
    assert!(matches!(e, CommandError::NotFound(_)), "{e}");
    let saga = w.engine.status(&job).await.unwrap().unwrap();
    assert_eq!(saga.spec.worker_pools.len(), 1);
    assert!(saga.pending.is_none());
}

#[tokio::test]
async fn the_last_pool_goes_when_the_masters_take_workloads() {
    let w = World::new();
    let mut spec = ClusterSpec::example();
    spec.master.allow_workloads = true;
    let (job, _) = succeeded(&w, spec).await;
    w.engine.request_remove_pool(&job, "general").await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert!(saga.error.is_none(), "{saga:#?}");
    assert!(saga.spec.worker_pools.is_empty() && saga.pools.is_empty());
    assert!(!has_resource(&w, &names::pool_vmss(&job, "general")));
}

/// A command put on the bus by hand, with the saga's current sequence number.
fn forged(saga: &Saga, ty: &str, data: EventData) -> CloudEvent {
    CloudEvent::new(
        ty,
        "workers",
        "forged",
        EventData {
            job: saga.id.clone(),
            seq: Some(saga.seq),
            ..data
        },
    )
}

#[tokio::test]
async fn forged_pool_commands_on_the_bus_change_nothing() {
    let w = World::new();
    let (job, before) = succeeded(&w, ClusterSpec::example()).await;
    let writes = w.cloud.writes();
    let cases = [
        (
            types::POOL_ADD_REQUESTED,
            EventData {
                worker_pool: Some(new_pool("huge", 1, 1000)),
                ..Default::default()
            },
        ),
        (
            types::POOL_ADD_REQUESTED,
            EventData {
                worker_pool: Some(new_pool("general", 1, 2)),
                ..Default::default()
            },
        ),
        (
            types::POOL_ADD_REQUESTED,
            EventData {
                pool: Some("nospec".into()),
                ..Default::default()
            },
        ),
        (
            types::POOL_REMOVE_REQUESTED,
            EventData {
                pool: Some("general".into()),
                ..Default::default()
            },
        ),
        (
            types::POOL_REMOVE_REQUESTED,
            EventData {
                pool: Some("nosuch".into()),
                ..Default::default()
            },
        ),
    ];
    for (ty, data) in cases {
        let event = forged(&before, ty, data);
        w.engine.handle(&event).await.unwrap();
        w.run(&job, LIMIT).await;
    }
    // A valid add with a stale sequence number is ignored too.
    let stale = forged(
        &before,
        types::POOL_ADD_REQUESTED,
        EventData {
            worker_pool: Some(new_pool("gpu", 1, 2)),
            ..Default::default()
        },
    );
    let stale = stale.clone().with_data(EventData {
        seq: Some(before.seq + 5),
        ..stale.data().clone()
    });
    w.engine.handle(&stale).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.spec, before.spec);
    assert_eq!(saga.resources, before.resources);
    assert_eq!(w.cloud.writes(), writes, "nothing reached the cloud");

    // The same message with valid content is what a request sends.
    let ok = forged(
        &before,
        types::POOL_ADD_REQUESTED,
        EventData {
            worker_pool: Some(new_pool("gpu", 1, 2)),
            ..Default::default()
        },
    );
    w.engine.handle(&ok).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert!(saga.pools.contains_key("gpu"), "{saga:#?}");
}
