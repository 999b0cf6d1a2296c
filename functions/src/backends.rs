//! Chooses the backends from app settings: with none set, the local world
//! (embedded store and bus, built-in simulator); otherwise Cosmos DB, Service
//! Bus, Blob Storage, ARM and Key Vault as configured (README settings table).

use crate::local::{LocalOptions, LocalWorld};
use flotilla_azure::blob::{Staging, StagingAuth, DEV_STORAGE_ACCOUNT, DEV_STORAGE_KEY};
use flotilla_azure::transport::https_client;
use flotilla_azure::vault::Vault;
use flotilla_azure::{ArmClient, AzureConfig, CredentialConfig, ResourceId, RetryPolicy};
use flotilla_core::decide::Policy;
use flotilla_core::embedded::BusOptions;
use flotilla_core::engine::{run_sweeper, run_worker, Azure, Engine, SweepOptions};
use flotilla_core::ports::{EventBus, SagaStore};
use flotilla_core::settings::get;
use flotilla_core::steps::Env;
use std::sync::Arc;
use std::time::Duration;

/// A running engine and whatever must live as long as it.
pub struct Backends {
    pub engine: Arc<Engine>,
    /// True when the engine consumes its own bus (embedded); false when the
    /// Functions host (or `flotilla worker`) delivers the messages.
    pub self_consuming: bool,
    /// Settings used to build per-entity receivers (`flotilla worker`).
    pub azure: Option<AzureConfig>,
    local: Option<LocalWorld>,
    /// An embedded bus outside the local world: its workers and sweeper, and their stop switch.
    workers: Vec<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

/// Test mode (FLOTILLA_DELIVER_TWICE): the embedded bus delivers every message twice.
fn bus_options() -> BusOptions {
    BusOptions {
        deliver_twice: get("FLOTILLA_DELIVER_TWICE").as_deref() == Some("true"),
        ..BusOptions::default()
    }
}

fn required(name: &str) -> Result<String, crate::error::Error> {
    get(name).ok_or_else(|| crate::error::Error::Setting {
        name: name.into(),
        why: "required by the configured backends".into(),
    })
}

/// The HTTPS client every Azure call goes through: the platform's roots plus
/// `AZURE_CA_CERT` when set.
pub fn azure_http() -> Result<Arc<dyn azure_core::http::HttpClient>, crate::error::Error> {
    let ca = match get("AZURE_CA_CERT") {
        Some(path) => Some(std::fs::read(&path).map_err(|e| format!("AZURE_CA_CERT {path}: {e}"))?),
        None => None,
    };
    Ok(https_client(ca.as_deref())?)
}

/// The Azure configuration from app settings.
pub fn azure_config() -> Result<AzureConfig, crate::error::Error> {
    let arm = get("ARM_ENDPOINT").unwrap_or_else(|| "https://management.azure.com".into());
    let credential = match get("AZURE_CREDENTIAL")
        .as_deref()
        .unwrap_or("managed-identity")
    {
        "managed-identity" => CredentialConfig::ManagedIdentity {
            client_id: get("AZURE_CLIENT_ID"),
        },
        "client-secret" => CredentialConfig::ClientSecret {
            tenant_id: required("AZURE_TENANT_ID")?,
            client_id: required("AZURE_CLIENT_ID")?,
            secret: required("AZURE_CLIENT_SECRET")?,
            authority_host: get("AZURE_AUTHORITY_HOST"),
        },
        "azure-cli" => CredentialConfig::AzureCli,
        other => {
            return Err(format!(
            "AZURE_CREDENTIAL must be managed-identity, client-secret or azure-cli (got '{other}')"
        )
            .into())
        }
    };
    Ok(AzureConfig {
        arm_endpoint: url::Url::parse(&arm).map_err(|e| format!("ARM_ENDPOINT: {e}"))?,
        subscription_id: required("AZURE_SUBSCRIPTION_ID")?,
        keyvault_url: required("KEYVAULT_URL")?,
        credential,
        retry: RetryPolicy::default(),
        http: azure_http()?,
    })
}

impl Backends {
    /// Builds the backends the settings ask for.
    pub async fn from_settings() -> Result<Backends, crate::error::Error> {
        let store_kind = get("FLOTILLA_STORE").unwrap_or_else(|| "sqlite".into());
        let bus_kind = get("FLOTILLA_BUS").unwrap_or_else(|| "embedded".into());
        if store_kind == "sqlite"
            && bus_kind == "embedded"
            && get("ARM_ENDPOINT").is_none()
            && get("AZURE_SUBSCRIPTION_ID").is_none()
        {
            return Self::start_local().await;
        }
        let config = azure_config()?;
        let embedded = if store_kind == "sqlite" || bus_kind == "embedded" {
            Some(crate::local::open_default_embedded(bus_options())?)
        } else {
            None
        };
        let store: Arc<dyn SagaStore> = match store_kind.as_str() {
            "sqlite" => embedded
                .as_ref()
                .map(|e| e.store())
                .ok_or("embedded store unavailable")?,
            "cosmos" => Arc::new(
                flotilla_cloud::cosmos::CosmosSagaStore::connect(
                    flotilla_cloud::cosmos::CosmosOptions {
                        endpoint: required("COSMOS_ENDPOINT")?,
                        database: get("COSMOS_DATABASE").unwrap_or_else(|| "flotilla".into()),
                        container: get("COSMOS_CONTAINER").unwrap_or_else(|| "sagas".into()),
                        auth: cosmos_auth(&config)?,
                    },
                )
                .await
                .map_err(|e| format!("Cosmos DB: {e}"))?,
            ),
            other => {
                return Err(
                    format!("FLOTILLA_STORE must be sqlite or cosmos (got '{other}')").into(),
                )
            }
        };
        let (bus, self_consuming): (Arc<dyn EventBus>, bool) = match bus_kind.as_str() {
            "embedded" => (
                embedded
                    .as_ref()
                    .map(|e| e.bus())
                    .ok_or("embedded bus unavailable")?,
                true,
            ),
            "servicebus" => (
                Arc::new(
                    flotilla_cloud::servicebus::ServiceBusBus::new(
                        &config,
                        &required("SERVICEBUS_ENDPOINT")?,
                        &topic(),
                        None,
                    )
                    .map_err(|e| format!("Service Bus: {e}"))?,
                ),
                false,
            ),
            other => {
                return Err(
                    format!("FLOTILLA_BUS must be embedded or servicebus (got '{other}')").into(),
                )
            }
        };
        if let Some(kind) = get("FLOTILLA_STAGING").filter(|k| k != "blob") {
            return Err(format!("FLOTILLA_STAGING must be blob (got '{kind}')").into());
        }
        let endpoint = required("STAGING_BLOB_ENDPOINT")?;
        let auth = if endpoint.contains(DEV_STORAGE_ACCOUNT) {
            // Azurite: its development key is public.
            StagingAuth::SharedKey {
                account: DEV_STORAGE_ACCOUNT.into(),
                key: DEV_STORAGE_KEY.into(),
            }
        } else {
            StagingAuth::Token
        };
        let container = get("STAGING_CONTAINER").unwrap_or_else(|| "staging".into());
        let staging =
            Staging::new(&config, &endpoint, &container, auth).map_err(|e| e.to_string())?;
        let staging_account_id = ResourceId::parse(&required("STAGING_ACCOUNT_ID")?)
            .map_err(|e| format!("STAGING_ACCOUNT_ID: {e}"))?;
        let env = Env {
            subscription_id: config.subscription_id.clone(),
            staging_account_id,
            staging_url: format!("{}/{container}/", endpoint.trim_end_matches('/')),
            keyvault_url: config.keyvault_url.clone(),
            keyvault_id: ResourceId::parse(&required("KEYVAULT_ID")?)
                .map_err(|e| format!("KEYVAULT_ID: {e}"))?,
            sp_client_id: get("CLUSTER_SP_CLIENT_ID"),
            tenant_id: get("AZURE_TENANT_ID"),
            sp_object_id: get("CLUSTER_SP_OBJECT_ID"),
            scaler_role: get("CLUSTER_SCALER_ROLE_ID")
                .unwrap_or_else(|| flotilla_core::steps::rbac::VIRTUAL_MACHINE_CONTRIBUTOR.into()),
        };
        let azure = Azure::from_clients(
            Arc::new(ArmClient::new(&config).map_err(|e| e.to_string())?),
            Vault::new(&config).map_err(|e| e.to_string())?,
            staging,
            get("CLUSTER_SP_CLIENT_SECRET"),
        );
        let engine = Arc::new(Engine::new(store, bus, azure, env, Policy::default()));
        // An embedded bus has no other consumer here: this process is its
        // embedded runner, with workers and a sweeper of its own.
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        if let (Some(e), true) = (&embedded, self_consuming) {
            let max = e.options().max_delivery_count;
            for _ in 0..4 {
                let (engine, bus) = (engine.clone(), engine.bus.clone());
                workers.push(tokio::spawn(run_worker(engine, bus, max, stop_rx.clone())));
            }
            let sweep = SweepOptions::from_settings(SweepOptions::default())?;
            workers.push(tokio::spawn(run_sweeper(engine.clone(), sweep, stop_rx)));
        }
        Ok(Backends {
            engine,
            self_consuming,
            azure: Some(config),
            local: None,
            workers,
            stop: Some(stop),
        })
    }

    async fn start_local() -> Result<Backends, crate::error::Error> {
        let world = LocalWorld::start(LocalOptions::on_disk(
            crate::local::default_data_dir(),
            Duration::from_secs(1),
            bus_options().deliver_twice,
        ))
        .await?;
        Ok(Backends {
            engine: world.engine.clone(),
            self_consuming: true,
            azure: None,
            local: Some(world),
            workers: Vec::new(),
            stop: None,
        })
    }

    /// The built-in simulator, when running on the local world.
    pub fn local(&self) -> Option<&LocalWorld> {
        self.local.as_ref()
    }

    pub async fn shutdown(self) {
        if let Some(stop) = &self.stop {
            let _ = stop.send(true);
        }
        for w in self.workers {
            let _ = w.await;
        }
        if let Some(w) = self.local {
            w.shutdown().await;
        }
    }
}

/// Entra ID on Azure; the emulator's public key for a loopback endpoint
/// (an emulator, as the Cosmos SDK itself treats such hosts).
fn cosmos_auth(
    config: &AzureConfig,
) -> Result<flotilla_cloud::cosmos::CosmosAuth, crate::error::Error> {
    let endpoint = required("COSMOS_ENDPOINT")?;
    let host = url::Url::parse(&endpoint)
        .map_err(|e| format!("COSMOS_ENDPOINT: {e}"))?
        .host_str()
        .unwrap_or("")
        .to_string();
    if matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
        return Ok(flotilla_cloud::cosmos::CosmosAuth::Key(
            COSMOS_EMULATOR_KEY.into(),
        ));
    }
    Ok(flotilla_cloud::cosmos::CosmosAuth::Token(
        config.token_credential().map_err(|e| e.to_string())?,
    ))
}

/// The Cosmos DB emulator's published account key (not a secret).
pub(crate) const COSMOS_EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU9DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

/// The Service Bus topic (or queue) flotilla sends its events to.
pub fn topic() -> String {
    get("SERVICEBUS_QUEUE").unwrap_or_else(|| "flotilla-events".into())
}
