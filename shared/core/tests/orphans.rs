//! The check for leftovers that ends every undo chain, secrets kept by a
//! protected vault, and the orphan sweep — on the in-memory world, with
//! orphans made on purpose: resources planted with flotilla's tags outside
//! any saga, a job whose saga was lost from the store, a compensated job
//! whose undo "missed" something.

use flotilla_azure::{AzureError, ResourceId};
use flotilla_core::engine::{OrphanOptions, RemovalOptions};
use flotilla_core::names;
use flotilla_core::ports::SagaStore;
use flotilla_core::saga::{JobStatus, StepName};
use flotilla_core::spec::ClusterSpec;
use flotilla_core::testing::{FakeCloud, World, SOFT_DELETE_RETENTION};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const LIMIT: u32 = 600;
const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn tags(job: Option<&str>, managed: bool) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    if let Some(j) = job {
        t.insert(names::TAG_JOB.to_string(), j.to_string());
    }
    if managed {
        t.insert(names::TAG_MANAGED_BY.to_string(), "flotilla".to_string());
    }
    t
}

/// Blob metadata as flotilla writes it (C# identifier names).
fn metadata(job: &str) -> BTreeMap<String, String> {
    tags(Some(job), true)
        .into_iter()
        .map(|(k, v)| (names::metadata_name(&k), v))
        .collect()
}

fn arm_id(ty: &str, name: &str) -> String {
    let (ns, kind) = ty.split_once('/').unwrap();
    ResourceId::new(SUB, &ClusterSpec::example().resource_group, ns, kind, name).to_string()
}

fn nsg(name: &str) -> String {
    arm_id("Microsoft.Network/networkSecurityGroups", name)
}

fn lower(v: &[String]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_ascii_lowercase()).collect()
}

/// The example spec with its own address space: pre-flight refuses a VNet
/// that overlaps another job's in the same resource group.
fn example() -> ClusterSpec {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut spec = ClusterSpec::example();
    spec.network = flotilla_core::spec::NetworkSpec::numbered(
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    );
    spec
}

async fn succeeded(w: &World) -> String {
    let job = w.engine.submit(example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    job
}

// ---- delete verifies ----------------------------------------------------------

#[tokio::test]
async fn delete_fails_and_lists_what_is_still_tagged_with_the_job() {
    let w = World::new();
    let job = succeeded(&w).await;
    // Made with the job's tag, but never recorded in its undo log (as the
    // cluster's own elasticity might): the undo chain cannot know it.
    let stray = nsg(&format!("{job}-stray"));
    w.cloud.insert_resource(&stray, &tags(Some(&job), true));
    let stray_secret = format!("{job}-extra");
    w.cloud
        .insert_secret(&stray_secret, &tags(Some(&job), true));

    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Failed, "{saga:#?}");
    let err = saga.error.clone().unwrap();
    assert_eq!(err.code, "LeftoversFound");
    assert_eq!(
        lower(&saga.leftovers),
        lower(&[
            stray.clone(),
            format!("https://fake.vault/secrets/{stray_secret}")
        ])
    );
    // Everything the undo log held is gone all the same.
    assert_eq!(w.cloud.resources(), vec![stray.clone()]);
    assert!(saga.live_resources().next().is_none());

    // Once the leftovers are dealt with, a later delete ends Deleted.
    w.cloud.remove(&stray);
    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Failed, "the secret is still there");
    assert_eq!(saga.leftovers.len(), 1);
    w.cloud
        .insert_secret(&stray_secret, &tags(Some("someone-else"), true));
    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    assert!(saga.leftovers.is_empty());
    assert_eq!(saga.error, None);
}

#[tokio::test]
async fn compensation_checks_for_leftovers_too() {
    let w = World::new();
    w.cloud.fail(
        "put",
        "-pool-",
        AzureError::from_service(409, "OperationNotAllowed", "quota", None),
        1,
    );
    let job = w.engine.submit(example()).await.unwrap();
    w.pump().await;
    let blob = format!("{job}/left-behind.txt");
    w.cloud.insert_blob(&blob, &metadata(&job));
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Failed, "{saga:#?}");
    assert_eq!(
        saga.leftovers,
        vec![format!("https://fake.blob/staging/{blob}")]
    );
    assert_eq!(
        saga.step(StepName::Workers)
            .last_error
            .as_ref()
            .unwrap()
            .code,
        "OperationNotAllowed",
        "the failed step keeps its cause"
    );

    // Without the stray blob the same failure ends Compensated.
    let w = World::new();
    w.cloud.fail(
        "put",
        "-pool-",
        AzureError::from_service(409, "OperationNotAllowed", "quota", None),
        1,
    );
    let job = w.engine.submit(example()).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    assert!(saga.leftovers.is_empty());
}

#[tokio::test]
async fn a_failed_listing_is_retried_and_a_refused_one_fails_the_job() {
    let w = World::new();
    let job = succeeded(&w).await;
    w.cloud.fail(
        "secret.list",
        "",
        AzureError::from_service(503, "ServiceUnavailable", "try later", None),
        2,
    );
    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    assert_eq!(saga.verify_attempts, 0);

    let w = World::new();
    let job = succeeded(&w).await;
    w.cloud.fail(
        "list",
        "",
        AzureError::from_service(403, "AuthorizationFailed", "may not list", None),
        1,
    );
    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Failed, "{saga:#?}");
    let err = saga.error.unwrap();
    assert_eq!(err.code, "VerificationFailed");
    assert!(
        err.message.contains("AuthorizationFailed"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn secrets_are_purged_unless_the_vault_protects_them() {
    let w = World::new();
    let job = succeeded(&w).await;
    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted);
    assert!(saga.soft_deleted.is_empty());
    assert!(w.cloud.soft_deleted().is_empty(), "purged");

    let w = World::with_cloud(FakeCloud::default().with_purge_protection());
    let job = succeeded(&w).await;
    let deleted_at = {
        use flotilla_core::ports::Clock;
        w.clock.now()
    };
    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(
        saga.status,
        JobStatus::Deleted,
        "kept secrets are not leftovers"
    );
    let key = format!(
        "https://fake.vault/secrets/{}",
        names::kubeconfig_secret(&job)
    );
    let kept: Vec<&str> = saga.soft_deleted.iter().map(|s| s.id.as_str()).collect();
    assert!(kept.contains(&key.as_str()), "{kept:?}");
    for s in &saga.soft_deleted {
        let until = s.until.expect("the vault says until when");
        assert!(until >= deleted_at + SOFT_DELETE_RETENTION, "{until}");
    }
    assert_eq!(w.cloud.soft_deleted().len(), saga.soft_deleted.len());
}

// ---- the orphan sweep -----------------------------------------------------------

const GHOST: &str = "ghost-000000";

/// A world with: a live job, a compensated job whose undo "missed" an NSG,
/// a job whose saga was lost, resources planted outside any saga, and
/// things that are not orphans at all.
struct Scene {
    w: World,
    live: String,
    live_resources: Vec<String>,
    lost: String,
    lost_resources: Vec<String>,
    orphans: BTreeSet<String>,
    untouchable: Vec<String>,
    foreign_type: String,
}

async fn scene() -> Scene {
    let w = World::new();
    let live = succeeded(&w).await;
    let live_resources = w.cloud.resources();

    let lost = succeeded(&w).await;
    // Role assignments are untagged extension resources no listing shows:
    // the sweep leaves them (they grant nothing once the scale set, and with
    // it the identity they name, is deleted).
    let lost_resources: Vec<String> = w
        .cloud
        .resources()
        .into_iter()
        .filter(|r| !live_resources.contains(r))
        .filter(|r| !r.contains("/providers/Microsoft.Authorization/roleAssignments/"))
        .collect();
    w.store.remove(&lost);

    w.cloud.fail(
        "put",
        "-master",
        AzureError::from_service(409, "SkuNotAvailable", "no", None),
        1,
    );
    let compensated = w.engine.submit(example()).await.unwrap();
    let saga = w.run(&compensated, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated);
    let missed = nsg(&format!("{compensated}-missed"));
    w.cloud
        .insert_resource(&missed, &tags(Some(&compensated), true));

    let ghost_nsg = nsg("ghost-nsg");
    w.cloud
        .insert_resource(&ghost_nsg, &tags(Some(GHOST), true));
    let no_job = nsg("no-job-nsg");
    w.cloud.insert_resource(&no_job, &tags(None, true));
    let ghost_secret = format!("{GHOST}-storage-key");
    w.cloud
        .insert_secret(&ghost_secret, &tags(Some(GHOST), true));
    let ghost_blob = format!("{GHOST}/init.sh");
    w.cloud.insert_blob(&ghost_blob, &metadata(GHOST));
    let foreign_type = arm_id("Microsoft.Sql/servers", "ghost-sql");
    w.cloud
        .insert_resource(&foreign_type, &tags(Some(GHOST), true));

    // Not orphans: unmanaged, or owned by the live job.
    let unmanaged = nsg("someone-elses");
    w.cloud
        .insert_resource(&unmanaged, &tags(Some(GHOST), false));
    let live_extra = nsg(&format!("{live}-autoscaled"));
    w.cloud
        .insert_resource(&live_extra, &tags(Some(&live), true));
    w.cloud.insert_secret("unrelated", &BTreeMap::new());

    let mut orphans: BTreeSet<String> = lost_resources.iter().cloned().collect();
    orphans.extend([missed, ghost_nsg, no_job, foreign_type.clone()]);
    orphans.insert(format!("https://fake.vault/secrets/{ghost_secret}"));
    orphans.insert(format!("https://fake.blob/staging/{ghost_blob}"));
    let lost_secrets: Vec<String> = w
        .cloud
        .secrets()
        .into_iter()
        .filter(|n| n.starts_with(&lost))
        .collect();
    // What its first master published (its nodes read staging with the
    // job's node identity, an ARM resource among `lost_resources`).
    assert!(lost_secrets.contains(&names::kubeconfig_secret(&lost)));
    assert!(
        lost_resources.iter().any(|r| r.ends_with(&format!(
            "/userAssignedIdentities/{}",
            names::node_identity(&lost)
        ))),
        "{lost_resources:?}"
    );
    for name in lost_secrets {
        orphans.insert(format!("https://fake.vault/secrets/{name}"));
    }
    // The spec and every role's init script.
    let lost_blobs: Vec<String> = w
        .cloud
        .blobs()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{lost}/")))
        .collect();
    for name in [names::spec_blob(&lost), names::init_blob(&lost)] {
        assert!(lost_blobs.contains(&name), "{lost_blobs:?}");
    }
    for name in lost_blobs {
        orphans.insert(format!("https://fake.blob/staging/{name}"));
    }
    let mut untouchable = live_resources.clone();
    untouchable.extend([unmanaged, live_extra]);
    Scene {
        w,
        live,
        live_resources,
        lost,
        lost_resources,
        orphans: orphans.iter().map(|s| s.to_ascii_lowercase()).collect(),
        untouchable,
        foreign_type,
    }
}

#[tokio::test]
async fn the_sweep_lists_exactly_the_orphans_with_why() {
    let s = scene().await;
    let report =
        s.w.engine
            .find_orphans(&OrphanOptions::default())
            .await
            .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        report.resource_groups,
        vec![ClusterSpec::example().resource_group]
    );
    let ids: Vec<String> = report.orphans.iter().map(|o| o.id.clone()).collect();
    assert_eq!(lower(&ids), s.orphans, "{report:#?}");
    for o in &report.orphans {
        let job = o.job.as_deref();
        let want = match job {
            None => "no flotilla-job tag",
            Some(j) if j == GHOST => "unknown to the saga store",
            Some(j) if j == s.lost => "unknown to the saga store",
            Some(_) => "ended Compensated",
        };
        assert!(o.why.contains(want), "{}: {}", o.id, o.why);
        assert!(o.age_seconds.is_some_and(|a| a < 600), "{}", o.id);
    }
    let foreign = report
        .orphans
        .iter()
        .find(|o| o.id == s.foreign_type)
        .unwrap();
    assert!(foreign.why.contains("never creates"), "{}", foreign.why);
    assert!(report
        .orphans
        .iter()
        .all(|o| o.job.as_deref() != Some(s.live.as_str())));
}

#[tokio::test]
async fn the_sweep_reports_only_orphans_older_than_asked() {
    let s = scene().await;
    s.w.clock.advance(Duration::from_secs(7200));
    s.w.cloud
        .insert_resource(&nsg("fresh-ghost"), &tags(Some(GHOST), true));
    let opts = OrphanOptions {
        older_than: Duration::from_secs(3600),
        resource_groups: vec![],
    };
    let report = s.w.engine.find_orphans(&opts).await.unwrap();
    let ids: Vec<String> = report.orphans.iter().map(|o| o.id.clone()).collect();
    assert_eq!(lower(&ids), s.orphans);
    assert_eq!(report.younger, 1);
    assert!(report
        .orphans
        .iter()
        .all(|o| o.age.as_deref() == Some("2h00m")));
}

#[tokio::test]
async fn configured_resource_groups_are_listed_and_nothing_else() {
    let w = World::new();
    let elsewhere = ResourceId::new(
        SUB,
        "other-rg",
        "Microsoft.Network",
        "networkSecurityGroups",
        "x",
    )
    .to_string();
    w.cloud
        .insert_resource(&elsewhere, &tags(Some(GHOST), true));
    let report = w
        .engine
        .find_orphans(&OrphanOptions::default())
        .await
        .unwrap();
    assert!(
        report.orphans.is_empty(),
        "no job names other-rg: {report:#?}"
    );
    let opts = OrphanOptions {
        older_than: Duration::ZERO,
        resource_groups: vec!["other-rg".into()],
    };
    let report = w.engine.find_orphans(&opts).await.unwrap();
    assert_eq!(report.resource_groups, vec!["other-rg".to_string()]);
    assert_eq!(report.orphans.len(), 1);
    assert_eq!(report.orphans[0].id, elsewhere);
}

#[tokio::test(start_paused = true)]
async fn sweep_delete_removes_exactly_the_orphans_dependants_first() {
    let s = scene().await;
    let report =
        s.w.engine
            .find_orphans(&OrphanOptions::default())
            .await
            .unwrap();
    // One transient failure on the way: retried, not given up.
    s.w.cloud.fail(
        "delete",
        "ghost-nsg",
        AzureError::from_service(429, "TooManyRequests", "slow down", None),
        1,
    );
    let before = s.w.cloud.deletes().len();
    let removal =
        s.w.engine
            .remove_orphans(
                &report.orphans,
                &RemovalOptions {
                    max_wait: Duration::from_secs(600),
                },
            )
            .await;
    let mut expected = s.orphans.clone();
    expected.remove(&s.foreign_type.to_ascii_lowercase());
    assert_eq!(lower(&removal.removed), expected, "{removal:#?}");
    assert_eq!(removal.not_removed.len(), 1, "{removal:#?}");
    assert_eq!(removal.not_removed[0].id, s.foreign_type);
    assert!(removal.soft_deleted.is_empty());

    // Dependants first: scale sets, then the LB, the public IP, the VNet, NSGs.
    let rank = |id: &str| {
        let id = id.to_ascii_lowercase();
        [
            "/virtualmachinescalesets/",
            "/loadbalancers/",
            "/publicipaddresses/",
            "/virtualnetworks/",
            "/networksecuritygroups/",
        ]
        .iter()
        .position(|t| id.contains(t))
    };
    let arm_order: Vec<usize> = s.w.cloud.deletes()[before..]
        .iter()
        .filter_map(|d| rank(d))
        .collect();
    assert!(arm_order.len() >= s.lost_resources.len());
    assert!(
        arm_order.windows(2).all(|p| p[0] <= p[1]),
        "{:?}",
        &s.w.cloud.deletes()[before..]
    );

    // Nothing of the live job, nothing unmanaged, was touched.
    let left = s.w.cloud.resources();
    for r in &s.untouchable {
        assert!(left.contains(r), "{r} was deleted");
    }
    assert!(left.contains(&s.foreign_type));
    // Besides those, only the lost job's role assignments (on its pool, its
    // worker subnet and its four join secrets), which the sweep does not see
    // (see `scene`); they grant nothing once their scopes are gone.
    let lost_assignments = left
        .iter()
        .filter(|r| r.contains(&s.lost) && r.contains("/roleAssignments/"))
        .count();
    assert_eq!(lost_assignments, 6, "{left:#?}");
    // And its node identity's reader role on the staging container (named
    // by a GUID; it grants nothing once the sweep deleted the identity).
    let staging_assignments = left
        .iter()
        .filter(|r| r.contains("/blobServices/") && !s.live_resources.contains(r))
        .count();
    assert_eq!(staging_assignments, 1, "{left:#?}");
    assert!(!left
        .iter()
        .any(|r| r.contains(&flotilla_core::names::node_identity(&s.lost))));
    assert_eq!(left.len(), s.untouchable.len() + 8, "{left:#?}");
    assert!(s.w.cloud.secrets().contains(&"unrelated".to_string()));
    let live = s.w.engine.status(&s.live).await.unwrap().unwrap();
    assert_eq!(live.status, JobStatus::Succeeded);
    assert!(s.live_resources.iter().all(|r| left.contains(r)));

    let again =
        s.w.engine
            .find_orphans(&OrphanOptions::default())
            .await
            .unwrap();
    let ids: Vec<&str> = again.orphans.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, vec![s.foreign_type.as_str()]);
}

#[tokio::test(start_paused = true)]
async fn a_job_that_comes_back_keeps_its_resources() {
    let s = scene().await;
    let report =
        s.w.engine
            .find_orphans(&OrphanOptions::default())
            .await
            .unwrap();
    // Between listing and deleting, the lost saga is restored (say, from a backup).
    let lost_job = report
        .orphans
        .iter()
        .find(|o| s.lost_resources.contains(&o.id))
        .and_then(|o| o.job.clone())
        .unwrap();
    let live_doc = s.w.store.get(&s.live).await.unwrap().unwrap().doc;
    let mut restored = live_doc.clone();
    restored["id"] = serde_json::json!(lost_job);
    s.w.store.create(&lost_job, &restored, &[]).await.unwrap();
    let removal =
        s.w.engine
            .remove_orphans(
                &report.orphans,
                &RemovalOptions {
                    max_wait: Duration::from_secs(600),
                },
            )
            .await;
    for r in &s.lost_resources {
        assert!(s.w.cloud.resources().contains(r), "{r} deleted");
        let n = removal.not_removed.iter().find(|n| &n.id == r).unwrap();
        assert!(n.why.contains("Succeeded now"), "{}", n.why);
    }
}

#[tokio::test(start_paused = true)]
async fn a_delete_that_never_finishes_is_reported_not_waited_for_forever() {
    let s = scene().await;
    let report =
        s.w.engine
            .find_orphans(&OrphanOptions::default())
            .await
            .unwrap();
    // Every scale set delete runs (and is polled) far longer than we wait.
    s.w.cloud
        .lro_polls
        .store(10_000, std::sync::atomic::Ordering::SeqCst);
    let removal =
        s.w.engine
            .remove_orphans(
                &report.orphans,
                &RemovalOptions {
                    max_wait: Duration::from_secs(60),
                },
            )
            .await;
    // The lost job's scale sets could not be confirmed deleted, so nothing
    // that may depend on them was attempted.
    let vnet = s
        .lost_resources
        .iter()
        .find(|r| r.contains("/virtualNetworks/"))
        .unwrap();
    assert!(s.w.cloud.resources().contains(vnet));
    let why = &removal
        .not_removed
        .iter()
        .find(|n| &n.id == vnet)
        .unwrap()
        .why;
    assert!(why.contains("not attempted"), "{why}");
    let vmss = s
        .lost_resources
        .iter()
        .find(|r| r.contains("/virtualMachineScaleSets/"))
        .unwrap();
    let why = &removal
        .not_removed
        .iter()
        .find(|n| &n.id == vmss)
        .unwrap()
        .why;
    assert!(why.contains("still being deleted after 1m"), "{why}");
    // Secrets and blobs depend on nothing: they went first.
    assert!(removal.removed.iter().any(|r| r.contains("/secrets/")));
}

#[tokio::test]
async fn a_deleted_thing_that_comes_back_is_deleted_again() {
    let w = World::new();
    // Workers fail for good: compensation.
    w.cloud.fail(
        "put",
        "-pool-",
        AzureError::from_service(409, "OperationNotAllowed", "quota", None),
        1,
    );
    // The seed flow: `keys` writes the storage key secret.
    let mut spec = ClusterSpec::example();
    spec.staging.access = flotilla_core::spec::StagingAccess::AccountKey;
    let job = w.engine.submit(spec).await.unwrap();
    let key = names::storage_key_secret(&job);
    w.cloud
        .comes_back_after_purge(&key, &tags(Some(&job), true));
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    assert!(saga.leftovers.is_empty(), "{:?}", saga.leftovers);
    assert!(!w.cloud.secrets().contains(&key));
    let deleted = w.cloud.deletes().iter().filter(|d| **d == key).count();
    assert_eq!(deleted, 2, "deleted, came back, deleted again");
    let record = saga
        .resources
        .iter()
        .find(|r| r.id.ends_with(&format!("/secrets/{key}")))
        .unwrap();
    assert_eq!(record.reopened, 1);
}

/// Undo reaches `used` after deleting `dependant`; by then a stale handler
/// has put the dependant back, so Azure refuses with `code` ("in use"). The
/// dependant goes again first, and the job still ends Compensated.
async fn a_dependant_that_came_back_goes_first(dependant: &str, used: &str, code: &str) {
    let w = World::new();
    w.cloud.fail(
        "put",
        "-pool-",
        AzureError::from_service(409, "OperationNotAllowed", "quota", None),
        1,
    );
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    w.cloud.comes_back_after_delete(dependant);
    w.cloud.fail(
        "delete",
        used,
        AzureError::from_service(400, code, "in use", None),
        1,
    );
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    assert!(w.cloud.resources().is_empty(), "{:?}", w.cloud.resources());
    let deletes = w.cloud.deletes();
    assert_eq!(
        deletes.iter().filter(|d| d.ends_with(dependant)).count(),
        2,
        "deleted, came back, deleted again first: {deletes:#?}"
    );
    let second = deletes
        .iter()
        .rposition(|d| d.ends_with(dependant))
        .unwrap();
    let first_use = deletes.iter().position(|d| d.ends_with(used)).unwrap();
    assert!(
        second < first_use,
        "{dependant} goes again before {used}: {deletes:#?}"
    );
}

#[tokio::test]
async fn a_dependant_that_came_back_is_deleted_before_what_it_uses() {
    a_dependant_that_came_back_goes_first(
        "-vnet",
        "-wk-nsg",
        "InUseNetworkSecurityGroupCannotBeDeleted",
    )
    .await;
    a_dependant_that_came_back_goes_first("-api-lb", "-api-pip", "PublicIPAddressInUse").await;
}
