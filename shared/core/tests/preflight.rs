//! Pre-flight on the in-memory world: each refusal ends the job `Rejected`
//! with every problem listed at once and nothing written to the cloud; a
//! quota short only at `max` is a warning on a job that succeeds; transient
//! read errors are retried, never a reason to reject.

use flotilla_azure::models::api;
use flotilla_azure::{AzureError, ResourceId};
use flotilla_core::engine::CommandError;
use flotilla_core::names;
use flotilla_core::ports::{Arm, SagaStore};
use flotilla_core::saga::{JobStatus, Saga, StepStatus};
use flotilla_core::spec::ClusterSpec;
use flotilla_core::testing::World;
use serde_json::json;
use std::collections::BTreeMap;

const LIMIT: u32 = 600;
const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn codes(saga: &Saga) -> Vec<(String, String)> {
    saga.preflight
        .as_ref()
        .expect("pre-flight ran")
        .problems
        .iter()
        .map(|p| (p.field.clone(), p.code.clone()))
        .collect()
}

/// Rejected, nothing written anywhere, no step run, nothing to compensate.
fn rejected_with_nothing_created(w: &World, saga: &Saga) {
    assert_eq!(saga.status, JobStatus::Rejected, "{saga:#?}");
    assert_eq!(w.cloud.writes(), 0, "pre-flight must not write");
    assert!(w.cloud.resources().is_empty(), "{:?}", w.cloud.resources());
    assert!(w.cloud.secrets().is_empty(), "{:?}", w.cloud.secrets());
    assert!(w.cloud.blobs().is_empty(), "{:?}", w.cloud.blobs());
    assert!(w.cloud.deletes().is_empty(), "nothing to compensate");
    assert!(saga.resources.is_empty());
    assert!(
        saga.steps.iter().all(|s| s.status == StepStatus::Pending),
        "{:?}",
        saga.steps
    );
    assert_eq!(saga.error.as_ref().unwrap().code, "PreflightFailed");
}

/// A spec with one pool of an unknown size and one whose size is not offered
/// in one of its zones.
fn spec_with_bad_pools() -> ClusterSpec {
    let mut spec = ClusterSpec::example();
    let mut unknown = spec.worker_pools[0].clone();
    unknown.name = "gpu".into();
    unknown.instance_type = "Standard_ND96_v9".into();
    let mut zonal = spec.worker_pools[0].clone();
    zonal.name = "memory".into();
    zonal.instance_type = "Standard_E4s_v5".into();
    zonal.min = 1;
    zonal.max = 1;
    spec.worker_pools.push(unknown);
    spec.worker_pools.push(zonal);
    spec
}

#[tokio::test]
async fn every_problem_is_listed_at_once_and_nothing_is_created() {
    let w = World::new();
    let spec = spec_with_bad_pools();
    w.cloud.withhold_zone("Standard_E4s_v5", "3");
    // master 3×4 + general 2×8 = 28 DSv5 vCPUs at min.
    w.cloud.set_quota("standardDSv5Family", 20);
    w.cloud
        .deny_action("Microsoft.Compute/virtualMachineScaleSets/write");
    // A name the job will use, held by another job, and an overlapping VNet.
    let key = "every-problem";
    let job_id = names::job_id_for_key(&spec, key);
    let taken = ResourceId::new(
        SUB,
        &spec.resource_group,
        "Microsoft.Network",
        "publicIPAddresses",
        &names::public_ip(&job_id),
    );
    w.cloud.insert_resource(
        &taken.to_string(),
        &BTreeMap::from([(names::TAG_JOB.to_string(), "other-abc123".to_string())]),
    );
    let legacy = ResourceId::new(
        SUB,
        &spec.resource_group,
        "Microsoft.Network",
        "virtualNetworks",
        "legacy-vnet",
    );
    w.cloud
        .put(
            &legacy,
            api::NETWORK,
            &json!({"location": "westeurope", "properties": {"addressSpace": {"addressPrefixes": ["10.42.128.0/24"]}}}),
        )
        .await
        .unwrap();
    let writes_before = w.cloud.writes();

    let submitted = w.engine.submit_with_key(spec, Some(key)).await.unwrap();
    let saga = w.run(&submitted.job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Rejected, "{saga:#?}");
    assert_eq!(w.cloud.writes(), writes_before, "pre-flight must not write");
    assert!(saga.resources.is_empty());
    assert!(w.cloud.blobs().is_empty() && w.cloud.secrets().is_empty());
    let found = codes(&saga);
    for expected in [
        ("workerPools[1].instanceType", "SizeNotOffered"),
        ("workerPools[2].zones", "ZoneNotOffered"),
        ("workerPools[0].min", "QuotaExceeded"),
        ("name", "NameTaken"),
        ("network.vnetCidr", "AddressSpaceOverlap"),
        ("resourceGroup", "PermissionDenied"),
    ] {
        assert!(
            found.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} missing from {found:?}"
        );
    }
    assert_eq!(found.len(), 6, "{found:?}");
    let error = saga.error.unwrap();
    assert_eq!(error.code, "PreflightFailed");
    assert!(
        error.message.contains("workerPools[2].zones"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn an_unknown_size_is_rejected() {
    let w = World::new();
    let mut spec = ClusterSpec::example();
    spec.master.instance_type = "Standard_Z8s_v5".into();
    let job = w.engine.submit(spec).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    rejected_with_nothing_created(&w, &saga);
    assert_eq!(
        codes(&saga),
        vec![(
            "master.instanceType".to_string(),
            "SizeNotOffered".to_string()
        )]
    );
}

#[tokio::test]
async fn a_size_withheld_in_the_region_is_rejected() {
    let w = World::new();
    w.cloud.withhold_size("Standard_D8s_v5");
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    rejected_with_nothing_created(&w, &saga);
    assert_eq!(
        codes(&saga),
        vec![(
            "workerPools[0].instanceType".to_string(),
            "SizeNotOffered".to_string()
        )]
    );
}

#[tokio::test]
async fn a_size_restricted_in_a_requested_zone_is_rejected() {
    let w = World::new();
    w.cloud.withhold_zone("Standard_D8s_v5", "2");
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    rejected_with_nothing_created(&w, &saga);
    assert_eq!(
        codes(&saga),
        vec![(
            "workerPools[0].zones".to_string(),
            "ZoneNotOffered".to_string()
        )]
    );
}

#[tokio::test]
async fn quota_short_at_min_is_rejected() {
    let w = World::new();
    w.cloud.set_quota("cores", 27);
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    rejected_with_nothing_created(&w, &saga);
    assert_eq!(
        codes(&saga),
        vec![(
            "workerPools[0].min".to_string(),
            "QuotaExceeded".to_string()
        )]
    );
}

#[tokio::test]
async fn quota_short_only_at_max_is_a_warning_and_the_job_succeeds() {
    let w = World::new();
    // 28 vCPUs at min, 92 at max.
    w.cloud.set_quota("standardDSv5Family", 40);
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    let verdict = saga.preflight.expect("pre-flight ran");
    assert!(verdict.problems.is_empty());
    assert_eq!(verdict.warnings.len(), 1, "{:?}", verdict.warnings);
    assert_eq!(verdict.warnings[0].code, "QuotaShortAtMax");
    assert_eq!(verdict.warnings[0].field, "workerPools[0].max");
}

#[tokio::test]
async fn a_missing_resource_group_is_rejected() {
    let w = World::new();
    let spec = ClusterSpec::example();
    w.cloud.drop_group(&spec.resource_group);
    let job = w.engine.submit(spec).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    rejected_with_nothing_created(&w, &saga);
    assert_eq!(
        codes(&saga),
        vec![(
            "resourceGroup".to_string(),
            "ResourceGroupNotFound".to_string()
        )]
    );
}

#[tokio::test]
async fn a_name_held_by_another_job_is_rejected_but_the_jobs_own_is_not() {
    let w = World::new();
    let spec = ClusterSpec::example();
    let job = names::job_id_for_key(&spec, "k1");
    let vmss = ResourceId::new(
        SUB,
        &spec.resource_group,
        "Microsoft.Compute",
        "virtualMachineScaleSets",
        &names::master_vmss(&job),
    );
    w.cloud.insert_resource(
        &vmss.to_string(),
        &BTreeMap::from([(names::TAG_JOB.to_string(), "someone-zzz999".to_string())]),
    );
    let s = w
        .engine
        .submit_with_key(spec.clone(), Some("k1"))
        .await
        .unwrap();
    let saga = w.run(&s.job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Rejected, "{saga:#?}");
    assert_eq!(
        codes(&saga),
        vec![("name".to_string(), "NameTaken".to_string())]
    );
    assert!(saga.error.unwrap().message.contains("someone-zzz999"));

    // Tagged with the job itself (a re-run): not a problem.
    let w = World::new();
    w.cloud.insert_resource(
        &vmss.to_string(),
        &BTreeMap::from([(names::TAG_JOB.to_string(), job.clone())]),
    );
    let s = w.engine.submit_with_key(spec, Some("k1")).await.unwrap();
    let saga = w.run(&s.job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
}

#[tokio::test]
async fn an_overlapping_vnet_in_the_group_is_rejected() {
    let w = World::new();
    let first = w.engine.submit(ClusterSpec::example()).await.unwrap();
    assert_eq!(w.run(&first, LIMIT).await.status, JobStatus::Succeeded);
    let writes = w.cloud.writes();
    let resources = w.cloud.resources();

    // The same address space again in the same group.
    let second = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&second, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Rejected, "{saga:#?}");
    assert_eq!(
        codes(&saga),
        vec![(
            "network.vnetCidr".to_string(),
            "AddressSpaceOverlap".to_string()
        )]
    );
    assert_eq!(w.cloud.writes(), writes, "the second job wrote nothing");
    assert_eq!(w.cloud.resources(), resources);

    // A disjoint one is fine.
    let mut spec = ClusterSpec::example();
    spec.network = flotilla_core::spec::NetworkSpec::numbered(3);
    let third = w.engine.submit(spec).await.unwrap();
    assert_eq!(w.run(&third, LIMIT).await.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_missing_permission_is_found_before_the_first_put() {
    let w = World::new();
    w.cloud.deny_action("Microsoft.Network/*/write");
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    rejected_with_nothing_created(&w, &saga);
    assert_eq!(
        codes(&saga),
        vec![("resourceGroup".to_string(), "PermissionDenied".to_string())]
    );
    let message = &saga.preflight.unwrap().problems[0].message;
    assert!(
        message.contains("Microsoft.Network/virtualNetworks/write"),
        "{message}"
    );
    assert!(!message.contains("Microsoft.Compute"), "{message}");
}

#[tokio::test]
async fn a_transient_read_error_is_retried_never_a_rejection() {
    let w = World::new();
    w.cloud.fail(
        "usages",
        "westeurope",
        AzureError::from_service(503, "ServiceUnavailable", "try later", None),
        2,
    );
    w.cloud.fail(
        "permissions",
        "",
        AzureError::from_service(429, "TooManyRequests", "slow down", None),
        1,
    );
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    let stage = &saga.steps[0];
    assert_eq!(
        stage.attempts, 4,
        "three retried pre-flights, then one that passed"
    );
    assert!(saga.preflight.unwrap().warnings.is_empty());
}

#[tokio::test]
async fn a_check_that_cannot_be_read_is_a_warning_not_a_refusal() {
    let w = World::new();
    w.cloud.fail(
        "skus",
        "westeurope",
        AzureError::from_service(
            403,
            "AuthorizationFailed",
            "no skus/read at the subscription",
            None,
        ),
        1,
    );
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    let warnings = saga.preflight.unwrap().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].code, "NotChecked");
    assert!(warnings[0].message.contains("AuthorizationFailed"));
}

#[tokio::test]
async fn at_the_edge_a_refusal_stores_nothing_and_a_pass_is_not_checked_twice() {
    let w = World::new();
    w.cloud.withhold_size("Standard_D4s_v5");
    w.cloud.set_quota("cores", 1);
    let err = w
        .engine
        .submit_checked(ClusterSpec::example(), None)
        .await
        .unwrap_err();
    let CommandError::Rejected(verdict) = err else {
        panic!("expected a rejection, got {err}");
    };
    let fields: Vec<&str> = verdict.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, vec!["master.instanceType", "workerPools[0].min"]);
    assert!(w.store.list().await.unwrap().is_empty(), "nothing stored");
    assert_eq!(w.cloud.writes(), 0);

    // A transient read error at the edge is "try again", not a refusal.
    let w = World::new();
    w.cloud.fail(
        "skus",
        "",
        AzureError::from_service(503, "ServiceUnavailable", "later", None),
        1,
    );
    let err = w
        .engine
        .submit_checked(ClusterSpec::example(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::Unavailable(_)), "{err}");
    assert!(w.store.list().await.unwrap().is_empty());

    // Passed at the edge: recorded, and the engine does not read again.
    let s = w
        .engine
        .submit_checked(ClusterSpec::example(), None)
        .await
        .unwrap();
    w.cloud.withhold_size("Standard_D4s_v5");
    let saga = w.run(&s.job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
}

#[tokio::test]
async fn a_rejected_job_cannot_be_deleted_and_is_not_resumed() {
    let w = World::new();
    w.cloud.withhold_size("Standard_D8s_v5");
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Rejected);
    assert!(saga.status.is_terminal());
    let err = w.engine.request_delete(&job).await.unwrap_err();
    assert!(matches!(err, CommandError::Conflict(_)), "{err}");
    assert!(flotilla_core::orphans::ended(JobStatus::Rejected));
}

#[tokio::test]
async fn jobs_share_one_size_catalog_for_ten_minutes() {
    let w = World::new();
    let first = w.engine.submit(ClusterSpec::example()).await.unwrap();
    assert_eq!(w.run(&first, LIMIT).await.status, JobStatus::Succeeded);
    // Withdrawn after the first job read the catalog: a job submitted soon
    // after passes pre-flight on the catalog already read.
    w.cloud.withhold_size("Standard_D8s_v5");
    let mut spec = ClusterSpec::example();
    spec.name = "second".into();
    spec.network = flotilla_core::spec::NetworkSpec::numbered(1);
    let second = w.engine.submit(spec.clone()).await.unwrap();
    let saga = w.run(&second, LIMIT).await;
    assert!(
        saga.preflight.as_ref().unwrap().problems.is_empty(),
        "{:?}",
        saga.preflight
    );
    // Ten minutes on, the catalog is read again and the size is refused.
    w.clock
        .advance(flotilla_core::preflight::SKU_CATALOG_TTL.unsigned_abs());
    spec.name = "third".into();
    spec.network = flotilla_core::spec::NetworkSpec::numbered(2);
    let third = w.engine.submit(spec).await.unwrap();
    let saga = w.run(&third, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Rejected);
    assert_eq!(
        codes(&saga),
        vec![(
            "workerPools[0].instanceType".to_string(),
            "SizeNotOffered".to_string()
        )]
    );
}

#[tokio::test]
async fn pre_flights_share_a_vnet_listing_and_refuse_only_on_a_fresh_one() {
    use flotilla_core::preflight::{Preflight, VNET_LISTING_TTL};
    use flotilla_core::spec::NetworkSpec;
    let w = World::new();
    let rg = ClusterSpec::example().resource_group;
    let spec = |n: u32| {
        let mut spec = ClusterSpec::example();
        spec.network = NetworkSpec::numbered(n);
        spec
    };
    let vnet_id =
        |name: &str| ResourceId::new(SUB, &rg, "Microsoft.Network", "virtualNetworks", name);
    let put_vnet = |name: &str, cidr: String| {
        let (id, cloud) = (vnet_id(name), w.cloud.clone());
        async move {
            let body = json!({"location": "westeurope", "properties": {"addressSpace": {"addressPrefixes": [cidr]}}});
            cloud.put(&id, api::NETWORK, &body).await.unwrap();
        }
    };
    let problems = |p: &Preflight| -> Vec<(String, String)> {
        p.problems
            .iter()
            .map(|p| (p.field.clone(), p.code.clone()))
            .collect()
    };
    let overlap = vec![(
        "network.vnetCidr".to_string(),
        "AddressSpaceOverlap".to_string(),
    )];
    let preflight = |n: u32, job: &'static str| {
        let (engine, spec) = (w.engine.clone(), spec(n));
        async move { engine.preflight(&spec, job).await.unwrap() }
    };
    let counted = |n: u32, job: &'static str| {
        let cloud = w.cloud.clone();
        let run = preflight(n, job);
        async move {
            let before = cloud.calls();
            let verdict = run.await;
            (verdict, cloud.calls() - before)
        }
    };

    // The first pre-flight lists the group (old-vnet is over job 5's range).
    put_vnet("old-vnet", spec(5).network.vnet_cidr).await;
    assert!(preflight(1, "one-aaaaaa").await.passed());
    // A VNet made outside flotilla over the ranges of jobs 2 and 3: a
    // pre-flight within the listing's time shares it (no read of its own)
    // and does not see it…
    assert_eq!(spec(2).network.vnet_cidr, "10.0.0.128/26");
    assert_eq!(spec(3).network.vnet_cidr, "10.0.0.192/26");
    put_vnet("outside-vnet", "10.0.0.128/25".into()).await;
    let (verdict, shared_reads) = counted(2, "two-aaaaaa").await;
    assert!(verdict.passed(), "{verdict:?}");
    // …one after it lists the group again (one read more) and is refused.
    w.clock.advance(VNET_LISTING_TTL.unsigned_abs());
    let (verdict, reads) = counted(3, "three-aaaaaa").await;
    assert_eq!(problems(&verdict), overlap);
    assert_eq!(reads, shared_reads + 1, "one listing of the group");

    // A VNet deleted since the listing refuses nothing: the shared listing
    // shows it, so the group is listed again before judging.
    w.cloud.remove(&vnet_id("old-vnet").to_string());
    let (verdict, reads) = counted(5, "five-aaaaaa").await;
    assert!(verdict.passed(), "{verdict:?}");
    assert_eq!(reads, shared_reads + 1);

    // A job that passed here counts at once, whatever listing is shared: a
    // job over its range is judged on a listing of its own, which refuses
    // it once the first job's VNet exists.
    let (verdict, reads) = counted(1, "six-aaaaaa").await;
    assert!(
        verdict.passed(),
        "one's VNet does not exist yet: {verdict:?}"
    );
    assert_eq!(reads, shared_reads + 1);
    put_vnet(&names::vnet("one-aaaaaa"), spec(1).network.vnet_cidr).await;
    assert_eq!(problems(&preflight(1, "six-bbbbbb").await), overlap);
}

#[tokio::test]
async fn pre_flights_share_a_group_and_permissions_that_passed_and_refuse_only_on_a_fresh_read() {
    use flotilla_core::preflight::GROUP_CHECK_TTL;
    use flotilla_core::spec::NetworkSpec;
    let w = World::new();
    let spec = |n: u32| {
        let mut spec = ClusterSpec::example();
        spec.network = NetworkSpec::numbered(n);
        spec
    };
    let codes_of = |p: &flotilla_core::preflight::Preflight| -> Vec<(String, String)> {
        p.problems
            .iter()
            .map(|p| (p.field.clone(), p.code.clone()))
            .collect()
    };
    let denied = vec![("resourceGroup".to_string(), "PermissionDenied".to_string())];
    let missing = vec![(
        "resourceGroup".to_string(),
        "ResourceGroupNotFound".to_string(),
    )];

    assert!(w
        .engine
        .preflight(&spec(1), "one-aaaaaa")
        .await
        .unwrap()
        .passed());
    // A permission taken away and the group deleted since: a pre-flight
    // within the time shares what the first found and passes…
    w.cloud.deny_action("Microsoft.Network/*/write");
    w.cloud.drop_group(&spec(2).resource_group);
    let verdict = w.engine.preflight(&spec(2), "two-aaaaaa").await.unwrap();
    assert!(verdict.passed(), "{verdict:?}");
    // …one after it reads both again and is refused.
    w.clock.advance(GROUP_CHECK_TTL.unsigned_abs());
    let verdict = w.engine.preflight(&spec(3), "three-aaaaaa").await.unwrap();
    assert_eq!(codes_of(&verdict), missing);

    // A refusal is not shared: the group back, the next pre-flight reads it
    // and the permissions afresh (and is refused for those)…
    w.cloud.restore_group(&spec(4).resource_group);
    let verdict = w.engine.preflight(&spec(4), "four-aaaaaa").await.unwrap();
    assert_eq!(codes_of(&verdict), denied);
    // …and the permissions given back, the next one passes at once.
    w.cloud.allow_every_action();
    let verdict = w.engine.preflight(&spec(5), "five-aaaaaa").await.unwrap();
    assert!(verdict.passed(), "{verdict:?}");
}
