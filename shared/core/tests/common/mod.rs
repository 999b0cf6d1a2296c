//! A served simulator with a staging account, shared by the tests that run
//! node scripts against it.

#![allow(dead_code)]

use flotilla_azure::blob::{Staging, StagingAuth};
use flotilla_azure::models::api;
use flotilla_azure::{ArmClient, AzureConfig, ResourceId};
use flotilla_core::steps::Env;
use flotilla_sim::{Sim, SimConfig, SimServer};
use std::time::Duration;

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

    async fn put(&self, id: &ResourceId, version: &str, body: serde_json::Value) {
        let setup = ArmClient::for_environment_setup(&self.config).unwrap();
        if let Some(poll) = setup.put(id, version, &body).await.unwrap().poll {
            setup.wait(&poll, Duration::from_secs(10)).await.unwrap();
        }
    }
}
