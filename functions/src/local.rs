//! The local world behind `flotilla up`, `resume`, `delete`, `scale` and
//! `bench`: the built-in Azure simulator, the embedded store and bus, and an
//! engine with workers, all in this process. A world on disk owns its data
//! dir ([`DataDirLock`]) for as long as it runs.

use crate::data_dir::DataDirLock;
use flotilla_azure::blob::{Staging, StagingAuth, DEV_STORAGE_ACCOUNT, DEV_STORAGE_KEY};
use flotilla_azure::models::api;
use flotilla_azure::transport::{https_client_trusting_only, LoopbackTransport, RouterTransport};
use flotilla_azure::vault::Vault;
use flotilla_azure::{ArmClient, AzureConfig, ResourceId};
use flotilla_core::decide::Policy;
use flotilla_core::embedded::{BusOptions, Embedded};
use flotilla_core::engine::{run_sweeper, run_worker, Azure, Engine, SweepOptions};
use flotilla_core::saga::StepName;
use flotilla_core::spec::StagingAccess;
use flotilla_core::steps::Env;
use flotilla_sim::{FaultRule, Sim, SimConfig, SimServer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The resource group and account that stand in for flotilla's own staging storage.
pub const STAGING_RG: &str = "flotilla-staging";
pub const STAGING_ACCOUNT: &str = "flotillastaging";
pub const STAGING_CONTAINER: &str = "staging";
/// The GUID of the custom scaler role the simulated deployment defines (as
/// infra/ does on Azure): the role the cluster identities get.
pub const LOCAL_SCALER_ROLE: &str = "3f6c2d4e-5a7b-4c8d-9e0f-1a2b3c4d5e6f";

/// How the local world reaches its simulator.
pub enum Link {
    /// HTTPS on a loopback port (what `up` uses: the real TLS + token path).
    Https,
    /// In-process router, no socket (the benchmark).
    InProcess,
    /// A simulator in another process, over plain HTTP on loopback `port`
    /// (`bench --simulator apart`, so this process's memory is flotilla's
    /// alone); `info` is what that simulator printed. The world's own `sim`
    /// is then an idle stand-in.
    Apart {
        port: u16,
        info: Box<flotilla_sim::SimInfo>,
    },
}

/// Where the stage step writes.
#[derive(Clone, Debug)]
pub enum StagingChoice {
    /// The simulator's own blob service.
    Simulator,
    /// An Azurite blob endpoint (`http://127.0.0.1:10000/devstoreaccount1`),
    /// authorised with an account SAS from the public development key.
    Azurite { endpoint: String },
}

pub struct LocalOptions {
    pub staging: StagingChoice,
    pub data_dir: Option<PathBuf>,
    pub lro: Duration,
    /// Keep the simulator's state in the data dir (so `resume` sees the same cloud).
    pub persist_sim: bool,
    pub throttle: bool,
    pub link: Link,
    pub bus: BusOptions,
    /// Workers consuming the bus; 0 runs no jobs (and no sweeper) at all.
    pub workers: usize,
    pub policy: Policy,
    /// The sweeper's timing (overridable by the `FLOTILLA_SWEEP_*` settings).
    pub sweep: SweepOptions,
    /// The simulator's quota limits (`up --quota`); empty: its defaults.
    pub quotas: std::collections::BTreeMap<String, u64>,
    /// What the simulator's `Microsoft.Authorization/permissions` answers;
    /// `None`: everything (`*`).
    pub permissions: Option<flotilla_sim::Permissions>,
    /// Open the data dir's store read-only and without its lock (a viewer
    /// beside the process that owns the dir); every write fails.
    pub read_only: bool,
}

impl LocalOptions {
    /// The local world of `up`, `resume`, `delete`, `scale` and zero-config
    /// `serve`: state in `data_dir`, HTTPS to the simulator, ARM's throttle.
    pub fn on_disk(data_dir: PathBuf, lro: Duration, deliver_twice: bool) -> LocalOptions {
        LocalOptions {
            staging: StagingChoice::Simulator,
            data_dir: Some(data_dir),
            lro,
            persist_sim: true,
            throttle: true,
            link: Link::Https,
            bus: BusOptions {
                deliver_twice,
                ..BusOptions::default()
            },
            // Handlers spend their time waiting on Azure (a throttled or
            // slow call holds one for seconds): 16 at once keep a backlog of
            // many jobs moving, as the Functions host's concurrency would.
            workers: 16,
            policy: Policy {
                backoff_base: Duration::from_millis(500),
                join_interval: (lro / 2).max(Duration::from_millis(100)),
                ..Policy::default()
            },
            sweep: local_sweep(lro),
            quotas: Default::default(),
            permissions: None,
            read_only: false,
        }
    }
}

impl LocalOptions {
    /// A throwaway world in memory, for commands that only need the
    /// engine's configuration (`plan`): nothing on disk, no socket.
    pub fn ephemeral() -> LocalOptions {
        LocalOptions {
            staging: StagingChoice::Simulator,
            data_dir: None,
            lro: Duration::ZERO,
            persist_sim: false,
            throttle: false,
            link: Link::InProcess,
            bus: BusOptions::default(),
            workers: 1,
            policy: Policy::default(),
            sweep: local_sweep(Duration::ZERO),
            quotas: Default::default(),
            permissions: None,
            read_only: false,
        }
    }
}

impl LocalOptions {
    /// A viewer of `data_dir` (`status --web`): its store read-only and
    /// unlocked, so it works while `up` or `serve` owns the dir; no workers,
    /// and a throwaway in-memory simulator that nothing calls.
    pub fn viewer(data_dir: PathBuf) -> LocalOptions {
        LocalOptions {
            data_dir: Some(data_dir),
            workers: 0,
            read_only: true,
            ..LocalOptions::ephemeral()
        }
    }
}

/// The sweeper's timing for a local world whose operations take `lro`:
/// frequent sweeps, a grace of ten operations, stalled after five minutes.
pub fn local_sweep(lro: Duration) -> SweepOptions {
    SweepOptions {
        interval: Duration::from_secs(2),
        grace: (lro * 10).max(Duration::from_secs(10)),
        stall_after: Duration::from_secs(300),
    }
}

pub struct LocalWorld {
    pub sim: Sim,
    pub engine: Arc<Engine>,
    /// The engine's ARM client (its request counter is the benchmark's).
    pub arm: Arc<ArmClient>,
    /// The engine's store and bus (their commit counters are the benchmark's).
    pub embedded: Embedded,
    pub config: AzureConfig,
    server: Option<SimServer>,
    pub(crate) consumers: Consumers,
    /// Held until the world is dropped (after `shutdown`) or the process ends.
    _lock: Option<DataDirLock>,
}

/// An engine's workers on its bus and its sweeper, running until [`Consumers::stop`].
pub struct Consumers {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Consumers {
    /// Starts `workers` workers and, when there is at least one, the sweeper
    /// (its timing `sweep`, overridable by the `FLOTILLA_SWEEP_*` settings).
    pub fn start(
        engine: &Arc<Engine>,
        workers: usize,
        max_delivery: u32,
        sweep: SweepOptions,
    ) -> Result<Consumers, crate::error::Error> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks: Vec<_> = (0..workers)
            .map(|_| {
                tokio::spawn(run_worker(
                    engine.clone(),
                    engine.bus.clone(),
                    max_delivery,
                    stop_rx.clone(),
                ))
            })
            .collect();
        if workers > 0 {
            let sweep = SweepOptions::from_settings(sweep)?;
            tasks.push(tokio::spawn(run_sweeper(engine.clone(), sweep, stop_rx)));
        }
        Ok(Consumers { stop, tasks })
    }

    /// Stops them and waits until each has finished (a handler under way
    /// ends first); a second call has nothing left to wait for.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

/// The step whose Azure call `--fail-at` makes the simulator refuse, as a
/// fault rule, for a job whose nodes read staging with `access` (`keys`
/// creates the node identity, or writes the storage key secret).
pub fn fault_for(step: StepName, access: StagingAccess) -> FaultRule {
    let (method, resource_type, name, status, code, message) = match step {
        StepName::Stage => (
            "PUT",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs",
            "*init.sh",
            403,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        ),
        StepName::Prereqs => (
            "PUT",
            "Microsoft.Network/loadBalancers",
            "*",
            400,
            "InvalidParameter",
            "Injected failure: the load balancer definition was refused.",
        ),
        StepName::Keys if access == StagingAccess::Identity => (
            "PUT",
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            "*-nodes",
            403,
            "AuthorizationFailed",
            "Injected failure: the client may not create the node identity.",
        ),
        StepName::Keys => (
            "PUT",
            "Microsoft.KeyVault/vaults/secrets",
            "*",
            403,
            "Forbidden",
            "Injected failure: the caller may not set secrets.",
        ),
        StepName::Master => (
            "PUT",
            "Microsoft.Compute/virtualMachineScaleSets",
            "*-master",
            409,
            "SkuNotAvailable",
            "The requested size for resource is currently not available in this location.",
        ),
        StepName::Workers => (
            "PUT",
            "Microsoft.Compute/virtualMachineScaleSets",
            "*-pool-*",
            409,
            "OperationNotAllowed",
            "Operation results in exceeding quota limits of Core.",
        ),
        // Not an instance view: `join` reads them only while a node is not
        // Ready, which the simulated boot's timing decides.
        StepName::Join => (
            "PUT",
            "Microsoft.KeyVault/vaults/secrets",
            "*-outputs",
            403,
            "Forbidden",
            "Injected failure: the caller may not write the job's outputs.",
        ),
    };
    FaultRule {
        method: Some(method.into()),
        resource_type: Some(resource_type.into()),
        name_pattern: Some(name.into()),
        status,
        code: code.into(),
        message: Some(message.into()),
        times: None,
        probability: None,
        latency_ms: None,
        asynchronous: false,
        principal: None,
    }
}

impl LocalWorld {
    /// Starts the world. With a data dir, first locks it (creating it if
    /// needed): a dir another process holds is refused before anything in it
    /// is read or written, with an error naming that process.
    pub async fn start(opts: LocalOptions) -> Result<LocalWorld, crate::error::Error> {
        let max_delivery = opts.bus.max_delivery_count;
        let lock = match &opts.data_dir {
            Some(dir) if !opts.read_only => {
                Some(DataDirLock::acquire(dir).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let sim = Sim::new(SimConfig {
            data_dir: opts
                .data_dir
                .as_ref()
                .filter(|_| opts.persist_sim)
                .map(|d| d.join("sim")),
            lro: opts.lro,
            throttle: opts.throttle.then(Default::default),
            quotas: opts.quotas.clone(),
            permissions: opts.permissions.clone().unwrap_or_default(),
            ..SimConfig::default()
        })
        .map_err(|e| format!("simulator: {e}"))?;
        let (info, server, http) = match opts.link {
            Link::Https => {
                // Reuse the last port so saved polling URLs stay valid after a restart.
                let port_file = opts.data_dir.as_ref().map(|d| d.join("sim-port"));
                let last_port = port_file
                    .as_ref()
                    .and_then(|f| std::fs::read_to_string(f).ok())
                    .and_then(|p| p.trim().parse::<u16>().ok());
                let server = match last_port {
                    Some(p) => match sim.serve(p).await {
                        Ok(s) => s,
                        Err(_) => sim.serve(0).await.map_err(|e| format!("simulator: {e}"))?,
                    },
                    None => sim.serve(0).await.map_err(|e| format!("simulator: {e}"))?,
                };
                if let (Some(f), Some(port)) = (
                    &port_file,
                    url::Url::parse(&server.base_url)
                        .ok()
                        .and_then(|u| u.port()),
                ) {
                    let _ = std::fs::write(f, port.to_string());
                }
                // Every HTTPS endpoint of this world is the simulator (Azurite
                // staging is plain http): its CA is the only one to trust.
                let http = https_client_trusting_only(sim.ca_cert_pem().as_bytes())?;
                (server.info.clone(), Some(server), http)
            }
            Link::InProcess => {
                let transport: Arc<dyn azure_core::http::HttpClient> =
                    RouterTransport::new(sim.router());
                (sim.info("https://sim.local"), None, transport)
            }
            Link::Apart { port, ref info } => {
                let transport: Arc<dyn azure_core::http::HttpClient> =
                    LoopbackTransport::new(port)?;
                ((**info).clone(), None, transport)
            }
        };
        let config =
            flotilla_harness::sim_client_config(&info, http, None).map_err(|e| e.to_string())?;
        let (account, account_endpoint, auth) = match &opts.staging {
            StagingChoice::Simulator => (
                STAGING_ACCOUNT.to_string(),
                format!(
                    "{}/{STAGING_ACCOUNT}",
                    info.blob_endpoint.trim_end_matches('/')
                ),
                StagingAuth::Token,
            ),
            StagingChoice::Azurite { endpoint } => (
                DEV_STORAGE_ACCOUNT.to_string(),
                endpoint.trim_end_matches('/').to_string(),
                StagingAuth::SharedKey {
                    account: DEV_STORAGE_ACCOUNT.into(),
                    key: DEV_STORAGE_KEY.into(),
                },
            ),
        };
        let staging = Staging::new(&config, &account_endpoint, STAGING_CONTAINER, auth)
            .map_err(|e| e.to_string())?;
        // The simulated storage account whose keys `keys` lists (named like the
        // emulator's account when staging goes to Azurite).
        let staging_account_id = ResourceId::new(
            &info.subscription_id,
            STAGING_RG,
            "Microsoft.Storage",
            "storageAccounts",
            &account,
        );
        // The environment stands before any job does (infra/ deploys it on
        // Azure): its set-up is not simulated work, so its operations finish
        // at once and `serve` is ready without waiting a simulated LRO.
        sim.set_lro(std::time::Duration::ZERO);
        let prepared = prepare_environment(&config, &staging, &staging_account_id).await;
        sim.set_lro(opts.lro);
        prepared?;
        let embedded = match &opts.data_dir {
            Some(dir) if opts.read_only => Embedded::open_read_only(&dir.join("flotilla.db")),
            Some(dir) => Embedded::open(&dir.join("flotilla.db"), opts.bus),
            None => Embedded::in_memory(opts.bus),
        }
        .map_err(|e| format!("store: {e}"))?;
        let arm = Arc::new(ArmClient::new(&config).map_err(|e| e.to_string())?);
        let mut azure = Azure::from_clients(
            arm.clone(),
            Vault::new(&config).map_err(|e| e.to_string())?,
            staging,
            Some(info.client_secret.clone()),
        );
        if matches!(opts.link, Link::InProcess | Link::Apart { .. }) {
            // The simulated API servers answer through the same transport.
            azure.kube = Arc::new(flotilla_azure::kube::KubeClient::with_transport(
                config.http.clone(),
            ));
        }
        let env = Env {
            subscription_id: info.subscription_id.clone(),
            staging_account_id,
            staging_url: format!("{account_endpoint}/{STAGING_CONTAINER}/"),
            keyvault_url: info.keyvault_url.clone(),
            keyvault_id: ResourceId::parse(&info.keyvault_id)
                .map_err(|e| format!("simulator vault: {e}"))?,
            sp_client_id: Some(info.client_id.clone()),
            tenant_id: Some(info.tenant_id.clone()),
            sp_object_id: Some(info.client_id.clone()),
            scaler_role: LOCAL_SCALER_ROLE.into(),
        };
        let engine = Arc::new(Engine::new(
            embedded.store(),
            embedded.bus(),
            azure,
            env,
            opts.policy,
        ));
        let consumers = Consumers::start(&engine, opts.workers, max_delivery, opts.sweep)?;
        Ok(LocalWorld {
            sim,
            engine,
            arm,
            embedded,
            config,
            server,
            consumers,
            _lock: lock,
        })
    }

    /// ARM ids tagged with this job that exist in the simulator now.
    pub fn arm_resources(&self, job: &str) -> Vec<String> {
        self.sim
            .inventory(Some((flotilla_core::names::TAG_JOB, job)))
            .into_iter()
            .filter(|i| i.id.starts_with("/subscriptions/"))
            .map(|i| i.id)
            .collect()
    }

    /// Everything (ARM, secrets, blobs) tagged with this job.
    pub fn all_resources(&self, job: &str) -> Vec<String> {
        self.sim
            .inventory(Some((flotilla_core::names::TAG_JOB, job)))
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    pub async fn shutdown(mut self) {
        self.consumers.stop().await;
        if let Some(server) = self.server {
            server.shutdown().await;
        }
    }
}

/// Creates what flotilla expects to exist before a job: the cluster's
/// resource group is created per job spec by `ensure_resource_group`; this
/// makes the staging account, its container and resource group, and the
/// custom scaler role.
async fn prepare_environment(
    config: &AzureConfig,
    staging: &Staging,
    account: &ResourceId,
) -> Result<(), crate::error::Error> {
    let setup = ArmClient::for_environment_setup(config).map_err(|e| e.to_string())?;
    let rg = ResourceId::resource_group(&config.subscription_id, STAGING_RG);
    put_and_wait(
        &setup,
        &rg,
        api::RESOURCES,
        serde_json::json!({"location": "westeurope"}),
    )
    .await?;
    if setup
        .get(account, api::STORAGE)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        let body = serde_json::json!({
            "location": "westeurope",
            "kind": "StorageV2",
            "sku": {"name": "Standard_LRS"},
            "properties": {"minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": false}
        });
        put_and_wait(&setup, account, api::STORAGE, body).await?;
    }
    staging
        .ensure_container()
        .await
        .map_err(|e| format!("staging container: {e}"))?;
    let subscription = format!("/subscriptions/{}", config.subscription_id);
    let role = ResourceId::parse(&format!(
        "{subscription}/providers/Microsoft.Authorization/roleDefinitions/{LOCAL_SCALER_ROLE}"
    ))
    .map_err(|e| format!("scaler role: {e}"))?;
    put_and_wait(
        &setup,
        &role,
        api::AUTHORIZATION,
        flotilla_core::steps::rbac::scaler_role_definition(&subscription),
    )
    .await?;
    Ok(())
}

/// Creates the resource group a spec names, if missing (a user's job on Azure).
pub async fn ensure_resource_group(
    config: &AzureConfig,
    rg: &str,
    location: &str,
) -> Result<(), crate::error::Error> {
    let setup = ArmClient::for_environment_setup(config).map_err(|e| e.to_string())?;
    let id = ResourceId::resource_group(&config.subscription_id, rg);
    if setup
        .get(&id, api::RESOURCES)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        put_and_wait(
            &setup,
            &id,
            api::RESOURCES,
            serde_json::json!({"location": location}),
        )
        .await?;
    }
    Ok(())
}

async fn put_and_wait(
    arm: &ArmClient,
    id: &ResourceId,
    api_version: &str,
    body: serde_json::Value,
) -> Result<(), crate::error::Error> {
    let start = arm
        .put(id, api_version, &body)
        .await
        .map_err(|e| format!("{id}: {e}"))?;
    if let Some(poll) = start.poll {
        arm.wait(&poll, Duration::from_secs(120))
            .await
            .map_err(|e| format!("{id}: {e}"))?;
    }
    Ok(())
}

/// The embedded store and bus in the default data dir, for backends that mix
/// them with cloud ones; the dir stays locked until the process exits.
pub fn open_default_embedded(bus: BusOptions) -> Result<Embedded, crate::error::Error> {
    let dir = default_data_dir();
    DataDirLock::hold_until_exit(&dir).map_err(|e| e.to_string())?;
    Embedded::open(&dir.join("flotilla.db"), bus).map_err(|e| format!("store: {e}").into())
}

/// The default data dir.
pub fn default_data_dir() -> PathBuf {
    flotilla_core::settings::get("FLOTILLA_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(".flotilla").to_path_buf())
}
