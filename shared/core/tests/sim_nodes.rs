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
use flotilla_core::saga::{JobStatus, Saga, StepName};
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
    // The first master may not write its join token (flotilla's own
    // placeholder write in `keys` goes through).
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
        principal: Some("vm:*".into()),
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

/// The master's identity, as its VM sees it: an ARM token from the VM's IMDS,
/// then ARM requests with it.
struct AsMaster {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AsMaster {
    async fn of(f: &Flow, job: &str) -> AsMaster {
        let ca = reqwest::Certificate::from_pem(f.s.sim.ca_cert_pem().as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap();
        let base = f.s.server.info.arm_endpoint.clone();
        let vm = format!("{}_0", names::master_vmss(job));
        let r = http
            .get(format!(
                "{base}/imds/{vm}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/"
            ))
            .header("Metadata", "true")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let body: serde_json::Value = r.json().await.unwrap();
        AsMaster {
            http,
            base,
            token: body["access_token"].as_str().unwrap().to_string(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        id: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .request(method, format!("{}{id}?api-version=2024-11-01", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    async fn capacity(&self, id: &str) -> u64 {
        let (status, body) = self.send(reqwest::Method::GET, id, None).await;
        assert_eq!(status, 200, "{body}");
        body["sku"]["capacity"].as_u64().unwrap()
    }
}

fn vmss_id(f: &Flow, saga: &Saga, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}",
        f.s.server.info.subscription_id, saga.spec.resource_group
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_identity_scales_its_own_pools_and_nothing_else() {
    let f = Flow::start().await;
    let mut other_spec = ClusterSpec::example();
    other_spec.name = "other".into();
    let job = f.engine.submit(ClusterSpec::example()).await.unwrap();
    let other = f.engine.submit(other_spec).await.unwrap();
    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    let other_saga = f.until_done(&other).await;
    assert_eq!(other_saga.status, JobStatus::Succeeded, "{other_saga:#?}");

    let master = AsMaster::of(&f, &job).await;
    let pool = &saga.spec.worker_pools[0];
    let own = vmss_id(&f, &saga, &names::pool_vmss(&job, &pool.name));
    let start = master.capacity(&own).await;
    assert_eq!(start, u64::from(pool.min));

    // Out and back in, on its own pool.
    for count in [start + 1, start] {
        let (status, body) = master
            .send(
                reqwest::Method::PATCH,
                &own,
                Some(serde_json::json!({"sku": {"capacity": count}})),
            )
            .await;
        assert!(status == 200 || status == 202, "{status} {body}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while master.capacity(&own).await != count {
            assert!(Instant::now() < deadline, "capacity never reached {count}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Refused: another job's pool, its own master, the network.
    let others = [
        vmss_id(
            &f,
            &other_saga,
            &names::pool_vmss(&other, &other_saga.spec.worker_pools[0].name),
        ),
        vmss_id(&f, &saga, &names::master_vmss(&job)),
    ];
    for id in &others {
        let (status, body) = master
            .send(
                reqwest::Method::PATCH,
                id,
                Some(serde_json::json!({"sku": {"capacity": 3}})),
            )
            .await;
        assert_eq!(status, 403, "{id}: {body}");
        assert_eq!(body["error"]["code"], "AuthorizationFailed", "{body}");
        let (status, _) = master.send(reqwest::Method::GET, id, None).await;
        assert_eq!(status, 403, "{id} readable");
    }
    let vnet = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{}",
        f.s.server.info.subscription_id,
        saga.spec.resource_group,
        names::vnet(&job)
    );
    let (status, _) = master.send(reqwest::Method::DELETE, &vnet, None).await;
    assert_eq!(status, 403);

    // Deleting the jobs removes their role assignments with them.
    f.engine.request_delete(&other).await.unwrap();
    f.engine.request_delete(&job).await.unwrap();
    let gone = f.until_done(&job).await;
    assert_eq!(gone.status, JobStatus::Deleted, "{gone:#?}");
    f.until_done(&other).await;
    let left: Vec<String> =
        f.s.sim
            .inventory(None)
            .into_iter()
            .map(|i| i.id)
            .filter(|id| id.contains("roleAssignments"))
            .collect();
    assert!(left.is_empty(), "{left:?}");
}
