//! A served simulator with a staging account, shared by the tests that run
//! node scripts against it.

#![allow(dead_code)]

use flotilla_azure::blob::{Staging, StagingAuth};
use flotilla_azure::models::api;
use flotilla_azure::vault::Vault;
use flotilla_azure::{ArmClient, AzureConfig, ResourceId};
use flotilla_core::decide::Policy;
use flotilla_core::embedded::{BusOptions, Embedded};
use flotilla_core::engine::{run_worker, Azure, Engine};
use flotilla_core::names;
use flotilla_core::saga::Saga;
use flotilla_core::spec::ClusterSpec;
use flotilla_core::steps::Env;
use flotilla_sim::{Sim, SimConfig, SimServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const ACCOUNT: &str = "flotillastaging";
/// The custom scaler role the simulated deployment defines.
pub const SCALER_ROLE: &str = "0c9a1e52-7d4b-4f3e-8a61-5b2c7d9e0f14";

/// The simulator, its server, clients for it, the staging container and the
/// steps' environment pointing at it.
pub struct Simulated {
    pub sim: Sim,
    pub server: SimServer,
    pub config: AzureConfig,
    pub staging: Staging,
    pub env: Env,
}

impl Simulated {
    /// A simulator on a loopback port whose operations take `lro`.
    pub async fn start(lro: Duration) -> Simulated {
        let sim = Sim::new(SimConfig {
            data_dir: None,
            lro,
            throttle: None,
            ..SimConfig::default()
        })
        .expect("simulator");
        let server = sim.serve(0).await.expect("serve");
        let info = server.info.clone();
        let http = flotilla_harness::sim_https(&sim).unwrap();
        let config = flotilla_harness::sim_client_config(&info, http, None).unwrap();
        let account = ResourceId::new(
            &info.subscription_id,
            "staging-rg",
            "Microsoft.Storage",
            "storageAccounts",
            ACCOUNT,
        );
        let s = Simulated {
            staging: Staging::new(
                &config,
                &format!("{}/{ACCOUNT}", info.blob_endpoint),
                "staging",
                StagingAuth::Token,
            )
            .unwrap(),
            env: Env {
                subscription_id: info.subscription_id.clone(),
                staging_account_id: account.clone(),
                staging_url: format!("{}/{ACCOUNT}/staging/", info.blob_endpoint),
                keyvault_url: info.keyvault_url.clone(),
                keyvault_id: ResourceId::parse(&info.keyvault_id).unwrap(),
                sp_client_id: Some(info.client_id.clone()),
                tenant_id: Some(info.tenant_id.clone()),
                sp_object_id: Some(info.client_id.clone()),
                scaler_role: SCALER_ROLE.into(),
            },
            sim,
            server,
            config,
        };
        s.resource_group("staging-rg").await;
        s.put(
            &account,
            api::STORAGE,
            serde_json::json!({"location": "westeurope", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
        )
        .await;
        s.staging.ensure_container().await.unwrap();
        let subscription = format!("/subscriptions/{}", s.server.info.subscription_id);
        let role = ResourceId::parse(&format!(
            "{subscription}/providers/Microsoft.Authorization/roleDefinitions/{SCALER_ROLE}"
        ))
        .unwrap();
        s.put(
            &role,
            api::AUTHORIZATION,
            flotilla_core::steps::rbac::scaler_role_definition(&subscription),
        )
        .await;
        s
    }

    /// Does what step `keys` does for `saga` (its own plan, performed here
    /// without the engine): the node identity, the staging grant, the
    /// placeholder join secrets and the node principal's grants on them.
    pub async fn keys(&self, saga: &Saga) {
        keys(&self.config, &self.env, saga).await
    }

    /// Creates a resource group in `westeurope`.
    pub async fn resource_group(&self, name: &str) {
        let rg = ResourceId::resource_group(&self.server.info.subscription_id, name);
        self.put(
            &rg,
            api::RESOURCES,
            serde_json::json!({"location": "westeurope"}),
        )
        .await;
    }

    /// PUTs a resource as the environment's set-up would, waiting for it.
    pub async fn put(&self, id: &ResourceId, version: &str, body: serde_json::Value) {
        put(&self.config, id, version, body).await
    }
}

/// PUTs a resource as the environment's set-up would, waiting for it.
pub async fn put(config: &AzureConfig, id: &ResourceId, version: &str, body: serde_json::Value) {
    let setup = ArmClient::for_environment_setup(config).unwrap();
    if let Some(poll) = setup.put(id, version, &body).await.unwrap().poll {
        setup.wait(&poll, Duration::from_secs(10)).await.unwrap();
    }
}

/// [`Simulated::keys`] with the simulator's clients and the steps' environment.
pub async fn keys(config: &AzureConfig, env: &Env, saga: &Saga) {
    use flotilla_core::saga::StepName;
    use flotilla_core::steps::{self, rbac, Op, SecretSource};
    let arm = ArmClient::new(config).unwrap();
    let vault = Vault::new(config).unwrap();
    for op in steps::plan(StepName::Keys, saga, env) {
        match op {
            Op::Arm {
                id,
                api_version,
                body,
            } => put(config, &id, api_version, body).await,
            Op::Secret {
                name,
                source: SecretSource::Node,
            } => {
                vault
                    .set(&name, names::PENDING_SECRET, &Default::default())
                    .await
                    .unwrap();
            }
            Op::Secret { .. } => {}
            Op::RoleAssignment {
                id,
                role,
                principal,
                condition,
            } => {
                let principal_id = match &principal {
                    rbac::Principal::UserAssigned(uai) => arm
                        .get(uai, api::MANAGED_IDENTITY)
                        .await
                        .unwrap()
                        .expect("the node identity exists")
                        .pointer("/properties/principalId")
                        .and_then(|v| v.as_str())
                        .unwrap()
                        .to_string(),
                    rbac::Principal::ServicePrincipal(oid) => oid.clone(),
                    rbac::Principal::ScaleSet(_) => unreachable!("keys grants no scale set"),
                };
                let body = rbac::body(
                    &env.subscription_id,
                    &role,
                    &principal_id,
                    condition.as_deref(),
                );
                put(config, &id, api::AUTHORIZATION, body).await;
            }
            other => panic!("keys planned {other:?}"),
        }
    }
}

/// An engine with two workers on the served simulator, its cluster
/// resource group created.
pub struct Flow {
    pub s: Simulated,
    pub engine: Arc<Engine>,
    stop: tokio::sync::watch::Sender<bool>,
    _embedded: Embedded,
}

impl Flow {
    pub async fn start() -> Flow {
        let s = Simulated::start(Duration::from_millis(100)).await;
        s.resource_group(&ClusterSpec::example().resource_group)
            .await;
        let embedded = Embedded::in_memory(BusOptions::default()).unwrap();
        let azure = Azure::from_clients(
            Arc::new(ArmClient::new(&s.config).unwrap()),
            Vault::new(&s.config).unwrap(),
            s.staging.clone(),
            Some(s.server.info.client_secret.clone()),
        );
        let policy = Policy {
            backoff_base: Duration::from_millis(200),
            join_interval: Duration::from_millis(250),
            ..Policy::default()
        };
        let engine = Arc::new(Engine::new(
            embedded.store(),
            embedded.bus(),
            azure,
            s.env.clone(),
            policy,
        ));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        for _ in 0..2 {
            tokio::spawn(run_worker(
                engine.clone(),
                engine.bus.clone(),
                10,
                stop_rx.clone(),
            ));
        }
        Flow {
            s,
            engine,
            stop,
            _embedded: embedded,
        }
    }

    pub async fn until_done(&self, job: &str) -> Saga {
        until_settled(
            &self.engine,
            job,
            Duration::from_secs(150),
            Duration::from_millis(200),
        )
        .await
    }

    /// Everything the simulator holds that is tagged with the job.
    pub fn tagged(&self, job: &str) -> Vec<String> {
        self.s
            .sim
            .inventory(Some((names::TAG_JOB, job)))
            .into_iter()
            .map(|i| i.id)
            .collect()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Reads `job` every `every` until it is settled; fails the test after `within`.
pub async fn until_settled(engine: &Engine, job: &str, within: Duration, every: Duration) -> Saga {
    let deadline = Instant::now() + within;
    loop {
        let saga = engine.status(job).await.unwrap().expect("job");
        if saga.is_settled() {
            return saga;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish: {saga:#?}"
        );
        tokio::time::sleep(every).await;
    }
}
