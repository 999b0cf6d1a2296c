//! How nodes read their init script, against a served simulator whose scale
//! set instances boot by downloading it with their extension's protected
//! settings: by default with the job's node identity (no account key read or
//! stored; the identity and its conditioned reader role go with the job),
//! refused when that identity has lost its role (the job compensates), and
//! with the account key when the spec asks for the seed flow.

mod common;

use common::Flow;

use flotilla_azure::models::api;
use flotilla_azure::vault::Vault;
use flotilla_azure::{ArmClient, ResourceId};
use flotilla_core::names;
use flotilla_core::saga::{JobStatus, Saga, StepName};
use flotilla_core::spec::{ClusterSpec, StagingAccess};
use flotilla_core::steps::keys::STORAGE_BLOB_DATA_READER;
use flotilla_sim::FaultRule;
use std::time::{Duration, Instant};

fn list_keys_requests(f: &Flow) -> usize {
    f.s.sim
        .requests()
        .iter()
        .filter(|r| r.path.to_ascii_lowercase().ends_with("/listkeys"))
        .count()
}

/// The role assignment `keys` recorded on the staging container.
fn reader_assignment(saga: &Saga) -> ResourceId {
    let record = saga
        .resources
        .iter()
        .find(|r| r.step == StepName::Keys && r.id.contains("/roleAssignments/"))
        .expect("keys recorded the node identity's assignment");
    ResourceId::parse(&record.id).unwrap()
}

async fn get(f: &Flow, id: &ResourceId, version: &str) -> Option<serde_json::Value> {
    ArmClient::for_environment_setup(&f.s.config)
        .unwrap()
        .get(id, version)
        .await
        .unwrap()
}

fn node_identity(f: &Flow, saga: &Saga) -> ResourceId {
    ResourceId::new(
        &f.s.server.info.subscription_id,
        &saga.spec.resource_group,
        "Microsoft.ManagedIdentity",
        "userAssignedIdentities",
        &names::node_identity(&saga.id),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_mode_reads_no_account_key_and_access_ends_with_the_job() {
    let f = Flow::start().await;
    let spec = ClusterSpec::example();
    assert_eq!(spec.staging.access, StagingAccess::Identity, "the default");
    let job = f.engine.submit(spec).await.unwrap();
    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");

    // No account key was read, none is in Key Vault.
    assert_eq!(list_keys_requests(&f), 0, "no listKeys in identity mode");
    // The node identity's principal id came with its create's answer: the
    // identity was not read back before its role assignments.
    let identity = format!(
        "/userassignedidentities/{}",
        names::node_identity(&job).to_ascii_lowercase()
    );
    let read_back =
        f.s.sim
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.to_ascii_lowercase().ends_with(&identity))
            .count();
    assert_eq!(read_back, 0, "the node identity was read back");
    let vault = Vault::new(&f.s.config).unwrap();
    assert!(vault
        .get(&names::storage_key_secret(&job))
        .await
        .unwrap()
        .is_none());

    // The node identity exists, tagged with the job, and is attached to
    // every scale set of the job.
    let uai = node_identity(&f, &saga);
    let identity = get(&f, &uai, api::MANAGED_IDENTITY)
        .await
        .expect("node identity");
    let principal = identity["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(identity["tags"]["flotilla-job"], job.as_str());
    assert_eq!(
        saga.principals.get(&names::node_identity(&job)),
        Some(&principal)
    );
    for vmss in [names::master_vmss(&job), names::pool_vmss(&job, "general")] {
        let id = ResourceId::new(
            &f.s.server.info.subscription_id,
            &saga.spec.resource_group,
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            &vmss,
        );
        let body = get(&f, &id, api::COMPUTE).await.unwrap();
        assert_eq!(
            body["identity"]["type"], "SystemAssigned, UserAssigned",
            "{vmss}"
        );
        let attached = body["identity"]["userAssignedIdentities"]
            .as_object()
            .unwrap();
        assert!(
            attached
                .keys()
                .any(|k| k.eq_ignore_ascii_case(&uai.to_string())),
            "{vmss}: {attached:?}"
        );
    }
    // Its reader role is on the staging container, limited to the job's blobs.
    let ra = reader_assignment(&saga);
    assert!(
        ra.to_string()
            .contains("/blobServices/default/containers/staging/providers/"),
        "{ra}"
    );
    let body = get(&f, &ra, api::AUTHORIZATION).await.expect("assignment");
    let p = &body["properties"];
    assert_eq!(p["principalId"], principal.as_str());
    assert!(p["roleDefinitionId"]
        .as_str()
        .unwrap()
        .ends_with(STORAGE_BLOB_DATA_READER));
    assert_eq!(p["conditionVersion"], "2.0");
    assert!(
        p["condition"]
            .as_str()
            .unwrap()
            .contains(&format!("StringStartsWith '{job}/'")),
        "{p:#}"
    );

    // Deleting the job revokes it: the assignment and the identity are gone.
    f.engine.request_delete(&job).await.unwrap();
    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    assert!(saga.leftovers.is_empty(), "{saga:#?}");
    assert!(f.tagged(&job).is_empty(), "{:?}", f.tagged(&job));
    assert!(get(&f, &ra, api::AUTHORIZATION).await.is_none());
    assert!(get(&f, &uai, api::MANAGED_IDENTITY).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_identity_without_its_role_fails_to_boot_and_compensates() {
    let f = Flow::start().await;
    // Hold the master's scale set back (one retryable answer after a
    // second), so the assignment can be taken away after `keys` made it and
    // before any node boots.
    f.s.sim.add_fault(FaultRule {
        method: Some("PUT".into()),
        resource_type: Some("Microsoft.Compute/virtualMachineScaleSets".into()),
        name_pattern: Some("*-master".into()),
        status: 503,
        code: "ServiceUnavailable".into(),
        message: None,
        times: Some(1),
        probability: None,
        latency_ms: Some(1500),
        asynchronous: false,
        principal: None,
    });
    let job = f.engine.submit(ClusterSpec::example()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ra = loop {
        let saga = f.engine.status(&job).await.unwrap().unwrap();
        if saga.step(StepName::Keys).status == flotilla_core::saga::StepStatus::Succeeded {
            break reader_assignment(&saga);
        }
        assert!(Instant::now() < deadline, "keys never finished: {saga:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ArmClient::for_environment_setup(&f.s.config)
        .unwrap()
        .delete(&ra, api::AUTHORIZATION)
        .await
        .unwrap();

    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    let join = saga.step(StepName::Join);
    let err = join.last_error.as_ref().expect("join's error");
    assert_eq!(err.code, "NodeInitFailed", "{err:?}");
    assert!(
        err.message.contains("AuthorizationPermissionMismatch"),
        "{}",
        err.message
    );
    // Compensation removed everything, the identity included.
    assert!(f.tagged(&job).is_empty(), "{:?}", f.tagged(&job));
    assert!(get(&f, &node_identity(&f, &saga), api::MANAGED_IDENTITY)
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_key_mode_still_reads_the_key_into_key_vault() {
    let f = Flow::start().await;
    let mut spec = ClusterSpec::example();
    spec.staging.access = StagingAccess::AccountKey;
    let job = f.engine.submit(spec).await.unwrap();
    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert_eq!(list_keys_requests(&f), 1);
    let vault = Vault::new(&f.s.config).unwrap();
    assert!(vault
        .get(&names::storage_key_secret(&job))
        .await
        .unwrap()
        .is_some());
    // The node identity (what the nodes reach Key Vault with) holds no
    // grant on the staging container: the key opened the script.
    assert!(get(&f, &node_identity(&f, &saga), api::MANAGED_IDENTITY)
        .await
        .is_some());
    let keys_grants: Vec<&str> = saga
        .resources
        .iter()
        .filter(|r| r.step == StepName::Keys && r.id.contains("/roleAssignments/"))
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        keys_grants.len(),
        names::node_secrets(&job).len(),
        "{keys_grants:?}"
    );
    assert!(keys_grants
        .iter()
        .all(|id| id.contains("/Microsoft.KeyVault/vaults/")));

    f.engine.request_delete(&job).await.unwrap();
    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    assert!(f.tagged(&job).is_empty(), "{:?}", f.tagged(&job));
}
