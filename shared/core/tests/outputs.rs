//! The job's outputs: once every node is Ready, `join` writes one Key Vault
//! secret per job (`{job}-outputs`) with how to reach and manage the
//! cluster; its id (never its value) is in the saga and the `job.succeeded`
//! event, and `delete` removes it with the rest.

use flotilla_core::decide;
use flotilla_core::events::types;
use flotilla_core::names;
use flotilla_core::ports::Secrets;
use flotilla_core::saga::{JobStatus, ResourceState, StepName, StepStatus};
use flotilla_core::spec::{ClusterSpec, IdentityMode};
use flotilla_core::testing::World;
use serde_json::Value;

const LIMIT: u32 = 1_000;

#[tokio::test]
async fn a_succeeded_job_has_its_outputs_in_one_secret_that_delete_removes() {
    for mode in [
        IdentityMode::ManagedIdentity,
        IdentityMode::ServicePrincipal,
    ] {
        let w = World::new();
        let mut spec = ClusterSpec::example();
        spec.identity = mode;
        let job = w.engine.submit(spec).await.unwrap();
        let saga = w.run(&job, LIMIT).await;
        assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");

        // One secret, named after the job, recorded by `join` for undo.
        let name = names::outputs_secret(&job);
        let id = w.cloud.secret_id(&name);
        assert_eq!(saga.outputs_id(), Some(id.as_str()));
        let record = saga.resources.iter().find(|r| r.id == id).unwrap();
        assert_eq!(
            (record.step, record.state),
            (StepName::Join, ResourceState::Created)
        );
        assert!(w.cloud.secrets().contains(&name));

        // Its value: the endpoint, the identity, every ARM resource; no secret.
        let value = w.cloud.get(&name).await.unwrap().expect("outputs written");
        let outputs: Value = serde_json::from_str(&value).unwrap();
        assert_eq!(outputs["job"], job.as_str());
        assert_eq!(
            outputs["apiServer"],
            format!(
                "https://{}:6443",
                names::api_fqdn(&job, &saga.spec.location)
            )
        );
        assert_eq!(
            outputs["kubeconfigSecretId"],
            w.cloud.secret_id(&names::kubeconfig_secret(&job))
        );
        let listed: Vec<&str> = outputs["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let mut arm = w.cloud.resources();
        // The job's own, and the node identity's reader role on the staging
        // container (outside the job's group, named by a GUID).
        arm.retain(|r| {
            r.contains(&job) || saga.resources.iter().any(|x| x.id.eq_ignore_ascii_case(r))
        });
        assert_eq!(listed.len(), arm.len(), "{listed:?} vs {arm:?}");
        for r in &arm {
            assert!(
                listed.iter().any(|l| l.eq_ignore_ascii_case(r)),
                "{r} missing"
            );
        }
        match mode {
            IdentityMode::ManagedIdentity => {
                assert_eq!(outputs["identity"]["mode"], "managed-identity");
                // The master and the one pool.
                assert_eq!(
                    outputs["identity"]["scaleSets"].as_array().unwrap().len(),
                    2
                );
            }
            IdentityMode::ServicePrincipal => {
                assert_eq!(outputs["identity"]["mode"], "service-principal");
                assert_eq!(outputs["identity"]["clientId"], "cluster-sp");
            }
        }
        for other in w.cloud.secrets().into_iter().filter(|s| *s != name) {
            let secret = w.cloud.get(&other).await.unwrap().unwrap();
            assert!(
                !value.contains(&secret),
                "the value of {other} is in the outputs"
            );
        }
        assert!(!value.contains("cluster-sp-secret-value"));
        // The saga carries the id, never the value.
        let doc = saga.to_json().to_string();
        assert!(
            !doc.contains("kubeconfigSecretId"),
            "the value is in the saga"
        );

        // `job.succeeded` carries the id (the event `join` emitted, again).
        let mut again = saga.clone();
        again.step_mut(StepName::Join).status = StepStatus::Running;
        let emits = decide::finish_step(&mut again, StepName::Join, saga.updated_at);
        let succeeded = emits
            .iter()
            .find(|e| e.event.event_type() == types::JOB_SUCCEEDED)
            .expect("job.succeeded");
        assert_eq!(succeeded.event.data().outputs.as_deref(), Some(id.as_str()));
        let wire = String::from_utf8(succeeded.event.to_json()).unwrap();
        assert!(wire.contains(&id) && !wire.contains("kubeconfigSecretId"));

        // `delete` removes it with everything else.
        w.engine.request_delete(&job).await.unwrap();
        let saga = w.run(&job, LIMIT).await;
        assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
        assert!(!w.cloud.secrets().contains(&name));
        assert_eq!(saga.outputs_id(), None);
        assert!(w.cloud.secrets().is_empty(), "{:?}", w.cloud.secrets());
    }
}

#[tokio::test]
async fn a_refused_outputs_write_fails_join_and_compensation_removes_everything() {
    let w = World::new();
    let job = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let name = names::outputs_secret(&job);
    // Refused for good: `join` fails and the job compensates, outputs included.
    w.cloud.fail(
        "secret.set",
        &name,
        flotilla_azure::AzureError::terminal("Forbidden", "the vault refused the write"),
        1,
    );
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    assert_eq!(saga.step(StepName::Join).status, StepStatus::Failed);
    assert!(w.cloud.secrets().is_empty(), "{:?}", w.cloud.secrets());
    assert!(
        saga.resources
            .iter()
            .any(|r| r.id == w.cloud.secret_id(&name)),
        "the intent was recorded before the write"
    );
}
