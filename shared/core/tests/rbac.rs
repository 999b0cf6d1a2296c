//! The cluster identity's role assignments on the in-memory world: one per
//! worker pool for the master's identity, named deterministically, retried
//! while Entra has not replicated a new identity, deleted by undo and delete.

use flotilla_azure::AzureError;
use flotilla_core::names;
use flotilla_core::saga::{JobStatus, ResourceKind, Saga};
use flotilla_core::spec::{ClusterSpec, IdentityMode};
use flotilla_core::steps::rbac::{self, VIRTUAL_MACHINE_CONTRIBUTOR};
use flotilla_core::testing::{FakeCloud, World};

const LIMIT: u32 = 600;

/// The cluster identity's assignments (not the node identity's reader role
/// on the staging container).
/// The cluster identity's (scaler) assignments: not the node principal's
/// on the staging container and the vault.
fn assignments(w: &World) -> Vec<String> {
    w.cloud
        .resources()
        .into_iter()
        .filter(|r| r.contains("/providers/Microsoft.Authorization/roleAssignments/"))
        .filter(|r| !r.contains("/blobServices/") && !r.contains("/Microsoft.KeyVault/vaults/"))
        .collect()
}

fn vmss_key(saga: &Saga, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourcegroups/{}/providers/microsoft.compute/virtualmachinescalesets/{}",
        "00000000-0000-0000-0000-000000000000", saga.spec.resource_group, name
    )
    .to_ascii_lowercase()
}

#[tokio::test]
async fn the_master_identity_gets_the_scaler_role_on_each_worker_scale_set_only() {
    let w = World::new();
    let mut spec = ClusterSpec::example();
    let mut second = spec.worker_pools[0].clone();
    second.name = "gpu".into();
    spec.worker_pools.push(second);
    let job = w.engine.submit(spec.clone()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");

    let master = names::master_vmss(&job);
    let principal = saga
        .principals
        .get(&master)
        .expect("master principal recorded");
    assert_eq!(
        principal,
        &FakeCloud::principal_of(&vmss_key(&saga, &master))
    );
    // The master's, the job's node identity (whose reader role `keys` gave),
    // and each pool's scale set (whose create answered with its identity).
    let mut recorded: Vec<&String> = saga.principals.keys().collect();
    recorded.sort();
    let mut expected = vec![master.clone(), names::node_identity(&job)];
    expected.extend(
        spec.worker_pools
            .iter()
            .map(|p| names::pool_vmss(&job, &p.name)),
    );
    expected.sort();
    assert_eq!(recorded, expected.iter().collect::<Vec<_>>());
    let node = saga.principals.get(&names::node_identity(&job)).unwrap();
    assert!(
        !saga.is_cluster_identity(node),
        "the node identity may not scale"
    );
    assert!(saga.is_cluster_identity(principal));
    assert!(saga.is_cluster_identity(&principal.to_ascii_uppercase()));
    assert!(!saga.is_cluster_identity("someone-else"));
    assert!(!saga.is_cluster_identity(""));

    let found = assignments(&w);
    assert_eq!(found.len(), spec.worker_pools.len() + 1, "{found:?}");
    for pool in &spec.worker_pools {
        let scope = format!(
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{}",
            spec.resource_group,
            names::pool_vmss(&job, &pool.name)
        );
        let id = found
            .iter()
            .find(|a| a.starts_with(&format!("{scope}/providers/")))
            .unwrap_or_else(|| panic!("no assignment on {scope}: {found:?}"));
        let name = id.rsplit('/').next().unwrap();
        assert!(uuid::Uuid::parse_str(name).is_ok(), "{name}");
        let body = w.cloud.body(id).unwrap();
        assert_eq!(body["properties"]["principalId"], principal.as_str());
        assert!(body["properties"]["roleDefinitionId"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/roleDefinitions/{VIRTUAL_MACHINE_CONTRIBUTOR}")));
        assert_eq!(body["properties"]["principalType"], "ServicePrincipal");
        // Recorded for undo with the Authorization api-version.
        let record = saga.resources.iter().find(|r| &r.id == id).unwrap();
        assert_eq!(
            record.kind,
            ResourceKind::Arm {
                api_version: "2022-04-01".into()
            }
        );
    }
    // And the worker subnet, which a scale-out joins; nothing on the master,
    // the rest of the network, or the group.
    let subnet = format!(
        "/virtualNetworks/{}/subnets/{}/providers/",
        names::vnet(&job),
        names::WORKER_SUBNET
    );
    assert_eq!(
        found.iter().filter(|a| a.contains(&subnet)).count(),
        1,
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .all(|a| a.contains("-pool-") || a.contains(&subnet)),
        "{found:?}"
    );
}

#[tokio::test]
async fn a_principal_not_yet_replicated_is_retried_and_assigned_once() {
    let w = World::new();
    w.cloud.fail(
        "put",
        "roleassignments",
        AzureError::from_service(
            400,
            "PrincipalNotFound",
            "Principal does not exist in the directory.",
            None,
        ),
        2,
    );
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(assignments(&w).len(), 2);
    assert_eq!(w.cloud.max_creates(), 1, "every resource created once");
    // The first assignment is the node identity's, in `keys`.
    let keys = saga.step(flotilla_core::saga::StepName::Keys);
    assert!(keys.attempts >= 3, "{keys:?}");
}

#[tokio::test]
async fn a_retried_step_puts_the_same_assignment_name() {
    let (a, b) = (World::new(), World::new());
    let spec = ClusterSpec::example();
    let ja = a
        .engine
        .submit_with_key(spec.clone(), Some("same"))
        .await
        .unwrap()
        .job;
    let jb = b
        .engine
        .submit_with_key(spec, Some("same"))
        .await
        .unwrap()
        .job;
    assert_eq!(ja, jb);
    a.run(&ja, LIMIT).await;
    b.run(&jb, LIMIT).await;
    assert_eq!(assignments(&a), assignments(&b));
}

#[tokio::test]
async fn delete_and_compensation_remove_the_assignments() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    w.run(&job, LIMIT).await;
    assert_eq!(assignments(&w).len(), 2);
    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    assert!(assignments(&w).is_empty());
    assert!(w
        .cloud
        .deletes()
        .iter()
        .any(|d| d.contains("/roleAssignments/")));

    // A refused assignment fails `workers`: compensation removes everything.
    let w = World::new();
    w.cloud.fail(
        "put",
        "roleassignments",
        AzureError::from_service(403, "AuthorizationFailed", "no", None),
        1,
    );
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    assert!(w.cloud.resources().is_empty(), "{:?}", w.cloud.resources());
}

#[tokio::test]
async fn a_service_principal_cluster_assigns_its_configured_object_id() {
    let w = World::new();
    let mut spec = ClusterSpec::example();
    spec.identity = IdentityMode::ServicePrincipal;
    let job = w.engine.submit(spec).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    let found = assignments(&w);
    assert_eq!(found.len(), 2);
    for a in &found {
        let body = w.cloud.body(a).unwrap();
        assert_eq!(body["properties"]["principalId"], "cluster-sp-object");
    }
    assert_eq!(
        saga.principals
            .get(rbac::SERVICE_PRINCIPAL_KEY)
            .map(String::as_str),
        Some("cluster-sp-object")
    );
    assert!(saga.is_cluster_identity("cluster-sp-object"));
}

/// The example job's pool scale set, as ARM names it.
fn pool_id(job: &str) -> flotilla_azure::ResourceId {
    flotilla_azure::ResourceId::new(
        "00000000-0000-0000-0000-000000000000",
        &ClusterSpec::example().resource_group,
        "Microsoft.Compute",
        "virtualMachineScaleSets",
        &names::pool_vmss(job, "general"),
    )
}

async fn resize_outside(w: &World, job: &str, count: u32) {
    use flotilla_core::ports::Arm;
    w.cloud
        .patch(
            &pool_id(job),
            "2024-11-01",
            &serde_json::json!({"sku": {"capacity": count}}),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_capacity_changed_on_the_scale_set_is_reconciled_and_set_back_within_bounds() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded);
    assert_eq!(saga.pools["general"], 2);
    let id = pool_id(&job).to_string();

    // Within 2..=10: the saga takes the new count, nothing else happens.
    resize_outside(&w, &job, 4).await;
    assert_eq!(
        w.engine.reconcile_capacity(&id).await.unwrap(),
        Some((job.clone(), 4))
    );
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.pools["general"], 4);
    assert!(saga.warnings.is_empty(), "{:?}", saga.warnings);
    // The same event again changes nothing.
    assert_eq!(w.engine.reconcile_capacity(&id).await.unwrap(), None);

    // Above max: recorded, reported, and scaled back to max through the scale path.
    resize_outside(&w, &job, 14).await;
    assert_eq!(
        w.engine.reconcile_capacity(&id).await.unwrap(),
        Some((job.clone(), 14))
    );
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded);
    assert_eq!(saga.pools["general"], 10, "{saga:#?}");
    assert_eq!(w.cloud.body(&id).unwrap()["sku"]["capacity"], 10);
    assert_eq!(saga.warnings.len(), 1);
    assert!(
        saga.warnings[0].contains("set to 14"),
        "{:?}",
        saga.warnings
    );
    assert!(
        saga.warnings[0].contains("set back to 10"),
        "{:?}",
        saga.warnings
    );
    // flotilla's own scale write that followed is the recorded count: no loop.
    assert_eq!(w.engine.reconcile_capacity(&id).await.unwrap(), None);

    // Below min: back to min.
    resize_outside(&w, &job, 0).await;
    w.engine.reconcile_capacity(&id).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.pools["general"], 2);
    assert_eq!(w.cloud.body(&id).unwrap()["sku"]["capacity"], 2);
    assert_eq!(saga.warnings.len(), 2);

    // Not a job's worker pool: ignored.
    let master = pool_id(&job)
        .to_string()
        .replace("-pool-general", "-master");
    assert_eq!(w.engine.reconcile_capacity(&master).await.unwrap(), None);
    assert_eq!(
        w.engine
            .reconcile_capacity(
                "/subscriptions/x/resourceGroups/y/providers/Microsoft.Network/virtualNetworks/v"
            )
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn the_node_identity_gets_a_role_on_each_of_its_join_secrets_and_nothing_wider() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    let node = saga.principals.get(&names::node_identity(&job)).unwrap();
    let vault = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/staging-rg/providers/Microsoft.KeyVault/vaults/fake";
    let mut scopes: Vec<String> = w
        .cloud
        .resources()
        .into_iter()
        .filter(|r| r.contains("/Microsoft.KeyVault/vaults/"))
        .map(|r| {
            let body = w.cloud.body(&r).unwrap();
            assert_eq!(body["properties"]["principalId"], node.as_str());
            assert!(body["properties"]["roleDefinitionId"]
                .as_str()
                .unwrap()
                .ends_with(flotilla_core::steps::keys::KEY_VAULT_SECRETS_OFFICER));
            r.split("/providers/Microsoft.Authorization/")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    scopes.sort();
    let mut wanted: Vec<String> = names::node_secrets(&job)
        .iter()
        .map(|s| format!("{vault}/secrets/{s}"))
        .collect();
    wanted.sort();
    assert_eq!(
        scopes, wanted,
        "one grant per join secret, none on the vault"
    );
    // The join secrets exist (`keys` created them, the master wrote them).
    for s in names::node_secrets(&job) {
        assert!(w.cloud.secrets().iter().any(|k| k.ends_with(&s)), "{s}");
    }

    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    assert!(!w
        .cloud
        .resources()
        .iter()
        .any(|r| r.contains("/Microsoft.KeyVault/vaults/")));
}

#[tokio::test]
async fn principals_a_put_answer_leaves_out_are_read_back_from_arm() {
    // The same job twice: once with ARM's answers carrying the principal ids
    // of the identities they created, once without them.
    async fn run(omit: bool) -> (Saga, Vec<String>, u64) {
        let w = World::new();
        w.cloud
            .omit_principals
            .store(omit, std::sync::atomic::Ordering::SeqCst);
        let job = w
            .engine
            .submit_with_key(ClusterSpec::example(), Some("principals"))
            .await
            .unwrap()
            .job;
        let saga = w.run(&job, LIMIT).await;
        assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
        (saga, assignments(&w), w.cloud.calls())
    }
    let (answered, answered_assignments, answered_calls) = run(false).await;
    let (read, read_assignments, read_calls) = run(true).await;
    // Only the principals a role assignment needs are read back; an answer
    // records every identity it carries.
    let master = names::master_vmss(&answered.id);
    let node = names::node_identity(&answered.id);
    for key in [&master, &node] {
        assert_eq!(
            answered.principals.get(key),
            read.principals.get(key),
            "{key}"
        );
        assert!(
            read.principals.contains_key(key),
            "{key}: {:?}",
            read.principals
        );
    }
    assert_eq!(read.principals.len(), 2, "{:?}", read.principals);
    assert_eq!(answered_assignments, read_assignments);
    // One read each: the master scale set's identity (for its role), the
    // node identity (for its role) and the pool's scale set (for the outputs).
    assert_eq!(read_calls, answered_calls + 3);
}
