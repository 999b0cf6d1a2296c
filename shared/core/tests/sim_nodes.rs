//! The whole flow against a served simulator whose scale set instances run
//! their rendered init script (scripted boot): `join` succeeds only through
//! the API server the nodes registered with, reached with the kubeconfig the
//! first master published; a first master whose script fails fails `join`
//! with the node's name and the script's own failure line, and compensation
//! leaves nothing behind (the node-written secrets included).

mod common;

use common::Flow;

use flotilla_azure::kube::KubeClient;
use flotilla_azure::vault::Vault;
use flotilla_core::names;
use flotilla_core::saga::{JobStatus, StepName};
use flotilla_core::spec::ClusterSpec;
use flotilla_sim::FaultRule;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_run_their_scripts_and_join_is_answered_by_their_api_server() {
    let f = Flow::start().await;
    let job = f.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");

    // Only a script publishes the join information: the nodes ran theirs.
    let vault = Vault::new(&f.s.config).unwrap();
    let token = vault.get(&names::join_token_secret(&job)).await.unwrap();
    assert!(
        token.is_some_and(|t| t.len() == 23),
        "no join token published"
    );
    // The kubeconfig the first master published reaches its API server.
    let encoded = vault
        .get(&names::kubeconfig_secret(&job))
        .await
        .unwrap()
        .expect("kubeconfig");
    use base64::Engine as _;
    let kubeconfig = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    let nodes = KubeClient::new().nodes(&kubeconfig).await.unwrap();
    assert_eq!(nodes.len(), 5, "{nodes:?}");
    assert!(nodes.iter().all(|n| n.ready));
    let masters = nodes
        .iter()
        .filter(|n| {
            n.labels.get(names::NODE_ROLE_LABEL).map(String::as_str) == Some("control-plane")
        })
        .count();
    let general = nodes
        .iter()
        .filter(|n| n.labels.get(names::NODE_POOL_LABEL).map(String::as_str) == Some("general"))
        .count();
    assert_eq!((masters, general), (3, 2), "{nodes:?}");
    assert!(nodes
        .iter()
        .any(|n| n.name == format!("{}000000", names::computer_prefix(&job, "master"))));

    // Deleting the job removes everything, the secrets the master wrote too.
    f.engine.request_delete(&job).await.unwrap();
    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    assert!(f.tagged(&job).is_empty(), "{:?}", f.tagged(&job));
    // The cluster's API server no longer lists the removed nodes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = KubeClient::new().nodes(&kubeconfig).await.unwrap();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "nodes left: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_master_whose_script_fails_fails_join_with_its_own_words() {
    let f = Flow::start().await;
    // The first master may not write its join token.
    f.s.sim.add_fault(FaultRule {
        method: Some("PUT".into()),
        resource_type: Some("Microsoft.KeyVault/vaults/secrets".into()),
        name_pattern: Some("*-join-token".into()),
        status: 403,
        code: "Forbidden".into(),
        message: None,
        times: None,
        probability: None,
        latency_ms: None,
        asynchronous: false,
    });
    let job = f.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    let join = saga
        .steps
        .iter()
        .find(|s| s.name == StepName::Join)
        .unwrap();
    let err = join.last_error.as_ref().expect("join's error");
    assert_eq!(err.code, "NodeInitFailed", "{err:?}");
    let node = format!("{}000000", names::computer_prefix(&job, "master"));
    assert!(
        err.message.starts_with(&format!(
            "the init script failed on the masters: node {node} ({}_0): [flotilla] activate failed (exit 43): Key Vault refused writing secret {}",
            names::master_vmss(&job),
            names::join_token_secret(&job)
        )),
        "{}",
        err.message
    );
    assert!(f.tagged(&job).is_empty(), "{:?}", f.tagged(&job));
}
