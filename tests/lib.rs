//! Integration test helpers: a simulator on real HTTPS and a client configured for it.

use std::time::Duration;

use flotilla_azure::{ArmClient, AzureConfig, ResourceId};
use flotilla_sim::{Sim, SimConfig, SimServer, ThrottleConfig};
use serde_json::{json, Value};

/// One simulator served on a loopback port, plus a client configuration for it.
pub struct Harness {
    pub sim: Sim,
    pub server: SimServer,
    pub config: AzureConfig,
}

impl Harness {
    /// Starts a simulator (100 ms operations) and builds the client configuration.
    pub async fn start(throttle: Option<ThrottleConfig>) -> Harness {
        let sim = Sim::new(SimConfig {
            data_dir: None,
            lro: Duration::from_millis(100),
            throttle,
            ..SimConfig::default()
        })
        .expect("simulator starts");
        let server = sim.serve(0).await.expect("simulator serves");
        let config = config_for(&sim, &server, None);
        Harness {
            sim,
            server,
            config,
        }
    }

    pub fn sub(&self) -> &str {
        &self.server.info.subscription_id
    }

    /// The restricted client flotilla uses.
    pub fn arm(&self) -> ArmClient {
        ArmClient::new(&self.config).expect("client builds")
    }

    /// The unrestricted client environment setup uses.
    pub fn setup_arm(&self) -> ArmClient {
        ArmClient::for_environment_setup(&self.config).expect("client builds")
    }

    pub fn id(&self, rg: &str, namespace: &str, kind: &str, name: &str) -> ResourceId {
        ResourceId::new(self.sub(), rg, namespace, kind, name)
    }

    /// Creates a resource group (synchronous in the simulator).
    pub async fn resource_group(&self, rg: &str) {
        let id = ResourceId::resource_group(self.sub(), rg);
        let started = self
            .setup_arm()
            .put(&id, "2021-04-01", &json!({"location": "westeurope"}))
            .await
            .expect("resource group created");
        assert!(started.poll.is_none(), "resource groups are synchronous");
    }

    /// Creates a storage account and returns its id and first key.
    pub async fn storage_account(&self, rg: &str, name: &str) -> (ResourceId, String) {
        let arm = self.setup_arm();
        let id = self.id(rg, "Microsoft.Storage", "storageAccounts", name);
        let body = json!({
            "location": "westeurope",
            "sku": {"name": "Standard_LRS"},
            "kind": "StorageV2",
            "properties": {}
        });
        let started = arm
            .put(&id, "2023-05-01", &body)
            .await
            .expect("storage account PUT");
        if let Some(poll) = started.poll {
            arm.wait(&poll, Duration::from_secs(10))
                .await
                .expect("storage account created");
        }
        let keys = arm
            .post_action(&id, "listKeys", "2023-05-01", None)
            .await
            .expect("listKeys");
        let key = keys
            .pointer("/keys/0/value")
            .and_then(Value::as_str)
            .expect("a key")
            .to_string();
        (id, key)
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// A client configuration for `sim`; `secret` overrides the client secret.
pub fn config_for(sim: &Sim, server: &SimServer, secret: Option<&str>) -> AzureConfig {
    let http = flotilla::emulators::sim_https(sim).expect("https client");
    flotilla::emulators::sim_client_config(&server.info, http, secret).expect("client config")
}
