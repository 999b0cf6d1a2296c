//! `flotilla chaos`: the proof that flotilla finishes what it starts.
//!
//! It runs N cluster jobs through the whole engine, in `flotilla` child
//! processes it kills with SIGKILL and restarts, against the built-in Azure
//! simulator (hosted in this process, over HTTPS) while injecting faults; then
//! it checks every job and everything left in the simulator, and prints one
//! report.
//!
//! Backends:
//! - `embedded`: one `flotilla serve` child on the embedded SQLite store and
//!   bus (its data dir survives the kills); jobs go in and out through the
//!   custom-handler envelope (`submit`, `status`).
//! - `emulators`: Cosmos DB (cosmosdb-server) and the simulator's Service Bus,
//!   a `flotilla serve` child for `submit`/`status`, and `--workers` competing
//!   `flotilla worker` children (the ones that get killed).
//!
//! Faults (`--faults`, all by default):
//! - `arm`: about `--fault-rate` of ARM, Key Vault and Blob calls fail with a
//!   retryable answer: 429 with Retry-After, 500, 503, 504 after a delay, or an
//!   accepted PUT/DELETE whose operation ends Failed;
//! - `token`: the token endpoints answer 503 or 429 with the same rate;
//! - `terminal`: `--terminal-share` of the jobs get a terminal fault at a random
//!   step (a rule matching only that job's resource names);
//! - `duplicates`: every message delivered twice (embedded bus), or a share of
//!   them duplicated and delivered out of order (simulator Service Bus);
//! - `lost-sends` (emulators): sends answered 503, and sends accepted and dropped;
//! - and `--kills` kill -9 + restart at random moments.
//!
//! `--seed` fixes the plan (specs, which jobs get a terminal fault and where,
//! the kill schedule); which calls fail depends on timing.
//!
//! The verdict: no job stalled, nothing orphaned or duplicated, every job
//! whose faults were all retryable Succeeded with exactly the resources its
//! spec asks for, and every job hit by a terminal fault Compensated with
//! nothing left (ARM resources, Key Vault secrets, blobs).

use crate::local::fault_for;
use clap::ValueEnum;
use flotilla::emulators::{
    self, AppSettings, EmulatorError, FlotillaProcess, SimEnvironment, SimOptions,
};
use flotilla_core::embedded::{BusOptions, Embedded};
use flotilla_core::ports::SagaStore;
use flotilla_core::saga::{Saga, StepName};
use flotilla_core::spec::{ClusterSpec, IdentityMode, StagingAccess};
use flotilla_core::steps::{self, Env, Op};
use flotilla_sim::{FaultRule, FiredFault, InventoryItem, ServiceBusFaults};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resource group every campaign cluster goes into.
const CLUSTER_RG: &str = "flotilla-chaos";
const STAGING_RG: &str = "flotilla-staging";
const STAGING_ACCOUNT: &str = "flotillastaging";
const STAGING_CONTAINER: &str = "staging";
const TOPIC: &str = "flotilla-events";
/// Largest campaign (cluster names carry a five-digit index).
const MAX_JOBS: usize = 10_000;
/// Status requests in flight at once.
const CONCURRENCY: usize = 16;

/// Where the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// SQLite store + embedded bus in one `flotilla serve` child.
    Embedded,
    /// Cosmos DB (cosmosdb-server) + the simulator's Service Bus, competing `flotilla worker`s.
    Emulators,
}

/// A kind of fault the campaign injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum FaultKind {
    /// Retryable ARM, Key Vault and Blob failures.
    Arm,
    /// Token endpoint failures.
    Token,
    /// A terminal failure for a share of the jobs.
    Terminal,
    /// Duplicate (and, on Service Bus, reordered) deliveries.
    Duplicates,
    /// Sends refused or silently dropped (Service Bus only).
    LostSends,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// `flotilla chaos` arguments.
#[derive(clap::Args, Debug)]
pub struct ChaosArgs {
    /// Cluster jobs to run.
    #[arg(long, default_value_t = 40)]
    pub jobs: usize,
    /// Share (0–0.9) of Azure calls answered with a retryable fault.
    #[arg(long, default_value_t = 0.2)]
    pub fault_rate: f64,
    /// kill -9 + restart of a flotilla process at random moments.
    #[arg(long, default_value_t = 2)]
    pub kills: usize,
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,
    /// Seed of the plan (random when omitted; the report shows it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Faults to inject [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub faults: Vec<FaultKind>,
    /// Share (0–1) of jobs that get a terminal fault.
    #[arg(long, default_value_t = 0.2)]
    pub terminal_share: f64,
    /// Competing `flotilla worker` processes (emulators backend).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// How long simulated long-running operations take.
    #[arg(long, default_value_t = 0.2)]
    pub lro_seconds: f64,
    /// At most this many unfinished jobs at once; the next is submitted as one settles.
    #[arg(long, default_value_t = 100)]
    pub in_flight: usize,
    /// Booting nodes run their real init scripts (one bash process per node)
    /// instead of registering directly. The campaign tests the engine, and a
    /// script per node on two cores turns a wait for nodes into a queue.
    #[arg(long)]
    pub node_scripts: bool,
    /// A job that makes no progress for this long is reported stalled.
    #[arg(long, default_value_t = 120)]
    pub stall_seconds: u64,
    /// Give up on the whole campaign after this long (unfinished jobs are stalled).
    #[arg(long, default_value_t = 3600)]
    pub timeout_seconds: u64,
    /// Where the child processes keep their data and logs [default: a temporary
    /// directory, kept and named in the report when the campaign fails].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// scripts/emulators with its npm packages (emulators backend) [default: found from the checkout].
    #[arg(long)]
    pub emulators_dir: Option<PathBuf>,
    /// RUST_LOG of the child processes (their logs are in the work dir).
    #[arg(long, default_value = "warn")]
    pub child_log: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Why a campaign could not run (as opposed to a campaign that ran and failed).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A bad argument (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The emulators, the simulator or a child process could not be started.
    #[error(transparent)]
    Setup(#[from] EmulatorError),
    /// Something else went wrong while running.
    #[error("{0}")]
    Run(String),
}

/// The validated campaign settings.
struct Plan {
    jobs: Vec<JobPlan>,
    backend: Backend,
    seed: u64,
    fault_rate: f64,
    faults: BTreeSet<FaultKind>,
    kills: Vec<KillPlan>,
    workers: usize,
    lro: Duration,
    stall: Duration,
    timeout: Duration,
    child_log: String,
    in_flight: usize,
    node_scripts: bool,
}

/// One job of the campaign, decided before it starts.
#[derive(Clone)]
struct JobPlan {
    cluster: String,
    spec: ClusterSpec,
    /// The step whose Azure call is refused for good, if any.
    terminal: Option<StepName>,
}

/// One kill: once this share of the jobs has settled (and after `delay`).
struct KillPlan {
    settled_share: f64,
    delay: Duration,
    /// Which worker (emulators backend), as an index to reduce modulo the count.
    target: usize,
    /// How long the process stays down.
    down: Duration,
}

fn usage(msg: impl Into<String>) -> ChaosError {
    ChaosError::Usage(msg.into())
}

impl ChaosArgs {
    fn plan(&self) -> Result<Plan, ChaosError> {
        if !(1..=MAX_JOBS).contains(&self.jobs) {
            return Err(usage(format!(
                "--jobs must be between 1 and {MAX_JOBS} (got {})",
                self.jobs
            )));
        }
        if !self.fault_rate.is_finite() || !(0.0..=0.9).contains(&self.fault_rate) {
            return Err(usage(format!(
                "--fault-rate must be between 0 and 0.9 (got {})",
                self.fault_rate
            )));
        }
        if !self.terminal_share.is_finite() || !(0.0..=1.0).contains(&self.terminal_share) {
            return Err(usage(format!(
                "--terminal-share must be between 0 and 1 (got {})",
                self.terminal_share
            )));
        }
        if self.kills > 1000 {
            return Err(usage(format!(
                "--kills must be at most 1000 (got {})",
                self.kills
            )));
        }
        if self.in_flight == 0 {
            return Err(usage("--in-flight must be at least 1"));
        }
        if !(1..=16).contains(&self.workers) {
            return Err(usage(format!(
                "--workers must be between 1 and 16 (got {})",
                self.workers
            )));
        }
        if !self.lro_seconds.is_finite() || !(0.0..=60.0).contains(&self.lro_seconds) {
            return Err(usage(format!(
                "--lro-seconds must be between 0 and 60 (got {})",
                self.lro_seconds
            )));
        }
        if self.stall_seconds == 0 || self.timeout_seconds == 0 {
            return Err(usage(
                "--stall-seconds and --timeout-seconds must be positive",
            ));
        }
        let mut faults: BTreeSet<FaultKind> = if self.faults.is_empty() {
            FaultKind::value_variants().iter().copied().collect()
        } else {
            self.faults.iter().copied().collect()
        };
        if self.backend == Backend::Embedded {
            // The embedded store commits the outbox with the saga: no send to lose.
            faults.remove(&FaultKind::LostSends);
        }
        let seed = self.seed.unwrap_or_else(rand::random);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut jobs = Vec::with_capacity(self.jobs);
        for i in 0..self.jobs {
            let terminal = (faults.contains(&FaultKind::Terminal)
                && rng.random_bool(self.terminal_share))
            .then(|| StepName::ALL[rng.random_range(0..StepName::ALL.len())]);
            let spec = job_spec(i, &mut rng)?;
            jobs.push(JobPlan {
                cluster: spec.name.clone(),
                spec,
                terminal,
            });
        }
        let mut kills: Vec<KillPlan> = (0..self.kills)
            .map(|_| KillPlan {
                settled_share: rng.random_range(0.0..0.7),
                delay: Duration::from_millis(rng.random_range(0..2000)),
                target: rng.random_range(0..16),
                down: Duration::from_millis(rng.random_range(0..1000)),
            })
            .collect();
        kills.sort_by(|a, b| a.settled_share.total_cmp(&b.settled_share));
        Ok(Plan {
            jobs,
            backend: self.backend,
            seed,
            fault_rate: self.fault_rate,
            faults,
            kills,
            workers: self.workers,
            lro: Duration::from_secs_f64(self.lro_seconds),
            stall: Duration::from_secs(self.stall_seconds),
            timeout: Duration::from_secs(self.timeout_seconds),
            child_log: self.child_log.clone(),
            in_flight: self.in_flight,
            node_scripts: self.node_scripts,
        })
    }
}

/// A varied but valid spec for job `i`: one to three pools of different
/// sizes, a one- or three-node control plane, either identity mode.
fn job_spec(i: usize, rng: &mut StdRng) -> Result<ClusterSpec, ChaosError> {
    let mut spec = ClusterSpec::example();
    spec.name = cluster_name(i);
    spec.resource_group = CLUSTER_RG.into();
    // Every job its own address space: pre-flight refuses overlapping VNets in one group.
    spec.network = flotilla_core::spec::NetworkSpec::numbered(i as u32);
    spec.identity = if rng.random_bool(0.3) {
        IdentityMode::ServicePrincipal
    } else {
        IdentityMode::ManagedIdentity
    };
    spec.master.size = if rng.random_bool(0.5) { 1 } else { 3 };
    let template = spec
        .worker_pools
        .first()
        .cloned()
        .ok_or_else(|| ChaosError::Run("the example spec has no worker pool".into()))?;
    let pools = rng.random_range(1..=3);
    spec.worker_pools = (0..pools)
        .map(|p| {
            let mut pool = template.clone();
            pool.name = format!("pool{p}");
            pool.min = rng.random_range(1..=2);
            pool.max = pool.min + rng.random_range(0..=4);
            pool
        })
        .collect();
    spec.validate()
        .map_err(|e| ChaosError::Run(format!("generated spec {i} is invalid: {e}")))?;
    Ok(spec)
}

/// Cluster names are unique per job, so a fault rule can target one job.
fn cluster_name(i: usize) -> String {
    format!("chaos-{i:05}")
}

/// The fault rule that refuses `step`'s Azure call for this cluster only.
fn terminal_rule(step: StepName, cluster: &str) -> FaultRule {
    let pattern = match step {
        StepName::Stage => format!("{cluster}-*/init.sh"),
        StepName::Prereqs => format!("{cluster}-*-api-lb"),
        // Chaos specs read staging with the node identity (the default).
        StepName::Keys => format!("{cluster}-*-nodes"),
        StepName::Master => format!("{cluster}-*-master"),
        StepName::Workers => format!("{cluster}-*-pool-*"),
        StepName::Join => format!("{cluster}-*"),
    };
    FaultRule {
        name_pattern: Some(pattern),
        ..fault_for(step, StagingAccess::Identity)
    }
}

/// One retryable fault rule with probability `p`.
fn retryable(resource_type: &str, status: u16, code: &str, p: f64) -> FaultRule {
    FaultRule {
        method: None,
        resource_type: Some(resource_type.into()),
        name_pattern: None,
        status,
        code: code.into(),
        message: None,
        times: None,
        probability: Some(p.clamp(0.0, 1.0)),
        latency_ms: None,
        asynchronous: false,
        principal: None,
    }
}

/// The resource types flotilla's steps call (and so the fault rules cover).
const DATA_TYPES: [&str; 4] = [
    "Microsoft.Network/*",
    "Microsoft.Compute/*",
    "Microsoft.Storage/*",
    "Microsoft.KeyVault/*",
];

/// Token endpoints (client credentials and managed identity).
const TOKEN_TYPES: [&str; 2] = [
    "Microsoft.AAD/oauth2/token",
    "Microsoft.ManagedIdentity/token",
];

/// Retryable rules that fault about `rate` of the calls to `DATA_TYPES`:
/// 35 % throttling, 15 % 500, 20 % 503, 10 % a 504 after 1.5 s, 20 % an
/// accepted ARM write whose operation then fails (reads and data-plane calls
/// skip that rule).
fn retryable_rules(rate: f64) -> Vec<FaultRule> {
    let mut rules = Vec::new();
    for t in DATA_TYPES {
        rules.push(retryable(t, 429, "TooManyRequests", rate * 0.35));
        rules.push(retryable(t, 500, "InternalServerError", rate * 0.15));
        rules.push(retryable(t, 503, "ServiceUnavailable", rate * 0.2));
        rules.push(FaultRule {
            latency_ms: Some(1500),
            ..retryable(t, 504, "GatewayTimeout", rate * 0.1)
        });
        rules.push(FaultRule {
            asynchronous: true,
            principal: None,
            ..retryable(t, 500, "InternalServerError", rate * 0.2)
        });
    }
    rules
}

/// Token endpoint failures at `rate` (`token` matches the client-credentials
/// and the managed-identity endpoints): 2/3 503, 1/3 429.
fn token_rules(rate: f64) -> Vec<FaultRule> {
    vec![
        retryable("token", 503, "ServiceUnavailable", rate * 2.0 / 3.0),
        retryable("token", 429, "TooManyRequests", rate / 3.0),
    ]
}

/// Sends to the topic refused with 503 (the Service Bus entity of a send is
/// the topic itself; receives go to its subscriptions).
fn send_failure_rule(rate: f64) -> FaultRule {
    FaultRule {
        method: Some("POST".into()),
        name_pattern: Some(TOPIC.into()),
        ..retryable(
            "Microsoft.ServiceBus/namespaces/messages",
            503,
            "ServiceUnavailable",
            rate,
        )
    }
}

/// The processes of a campaign and how to reach them.
struct Processes {
    serve: FlotillaProcess,
    workers: Vec<FlotillaProcess>,
    port: u16,
    /// Emulators backend: the Cosmos DB emulator (kept alive) and its endpoint.
    cosmos: Option<emulators::Cosmos>,
    /// Embedded backend: the serve child's data dir.
    data_dir: PathBuf,
}

impl Processes {
    async fn start(
        plan: &Plan,
        env: &SimEnvironment,
        work: &Path,
        emulators_dir: Option<&Path>,
    ) -> Result<Processes, ChaosError> {
        let bin = std::env::current_exe()
            .map_err(|e| ChaosError::Run(format!("cannot find the flotilla binary: {e}")))?;
        let info = env.info();
        let mut settings = env.azure_settings();
        settings
            .set("FLOTILLA_STAGING", "blob")
            .set("STAGING_BLOB_ENDPOINT", env.blob_endpoint(STAGING_ACCOUNT))
            .set("STAGING_CONTAINER", STAGING_CONTAINER)
            .set(
                "STAGING_ACCOUNT_ID",
                format!(
                    "/subscriptions/{}/resourceGroups/{STAGING_RG}/providers/Microsoft.Storage/storageAccounts/{STAGING_ACCOUNT}",
                    info.subscription_id
                ),
            )
            .set("CLUSTER_SP_CLIENT_ID", &info.client_id)
            .set("CLUSTER_SP_CLIENT_SECRET", &info.client_secret)
            .set("SERVICEBUS_QUEUE", TOPIC)
            .set("RUST_LOG", &plan.child_log)
            // The sweeper's timing for short operations (as in `flotilla up`),
            // and the product's own stalled report at the campaign's threshold.
            .set("FLOTILLA_SWEEP_INTERVAL_S", "2")
            .set(
                "FLOTILLA_SWEEP_GRACE_S",
                (plan.lro.as_secs_f64() * 10.0).max(10.0).to_string(),
            )
            .set("FLOTILLA_STALL_AFTER_S", plan.stall.as_secs().to_string());
        let dir = |name: &str| -> Result<PathBuf, ChaosError> {
            let d = work.join(name);
            std::fs::create_dir_all(&d)
                .map_err(|e| ChaosError::Run(format!("{}: {e}", d.display())))?;
            Ok(d)
        };
        let with_dir = |s: &AppSettings, d: &Path| {
            let mut s = s.clone();
            s.set("FLOTILLA_DATA_DIR", d.display().to_string());
            s
        };
        let port = emulators::free_port()?;
        let mut cosmos = None;
        match plan.backend {
            Backend::Embedded => {
                settings
                    .set("FLOTILLA_STORE", "sqlite")
                    .set("FLOTILLA_BUS", "embedded");
                if plan.faults.contains(&FaultKind::Duplicates) {
                    settings.set("FLOTILLA_DELIVER_TWICE", "true");
                }
            }
            Backend::Emulators => {
                let dir = emulators::emulators_dir(emulators_dir)?;
                let c = emulators::start_cosmos(&dir)?;
                settings
                    .set("FLOTILLA_STORE", "cosmos")
                    .set("COSMOS_ENDPOINT", &c.endpoint)
                    .set("COSMOS_DATABASE", "flotilla")
                    .set("COSMOS_CONTAINER", "sagas")
                    .set("FLOTILLA_BUS", "servicebus");
                cosmos = Some(c);
            }
        }
        let data_dir = dir("serve")?;
        let mut serve = FlotillaProcess::new(
            &bin,
            &["serve"],
            with_dir(&settings, &data_dir),
            &work.join("serve.log"),
            Some(port),
        );
        serve.spawn()?;
        serve.wait_ready(Duration::from_secs(60)).await?;
        let mut workers = Vec::new();
        if plan.backend == Backend::Emulators {
            for i in 0..plan.workers {
                // Each process has a data dir of its own: one owner per data dir.
                let d = dir(&format!("worker-{i}"))?;
                let mut w = FlotillaProcess::new(
                    &bin,
                    &["worker"],
                    with_dir(&settings, &d),
                    &work.join(format!("worker-{i}.log")),
                    None,
                );
                w.spawn()?;
                workers.push(w);
            }
        }
        Ok(Processes {
            serve,
            workers,
            port,
            cosmos,
            data_dir,
        })
    }

    /// kill -9 one process (the serve child on the embedded backend, a worker
    /// on the emulators backend), keep it down a moment, start it again.
    async fn kill_and_restart(&mut self, k: &KillPlan) -> Result<String, ChaosError> {
        if self.workers.is_empty() {
            let pid = self.serve.pid().unwrap_or(0);
            self.serve.kill9();
            tokio::time::sleep(k.down / 2).await;
            self.serve.spawn()?;
            self.serve.wait_ready(Duration::from_secs(60)).await?;
            Ok(format!("serve (pid {pid})"))
        } else {
            let i = k.target % self.workers.len();
            let w = &mut self.workers[i];
            let pid = w.pid().unwrap_or(0);
            w.kill9();
            tokio::time::sleep(k.down).await;
            w.spawn()?;
            Ok(format!("worker-{i} (pid {pid})"))
        }
    }

    /// Processes that died on their own (not killed by the campaign).
    fn crashed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(s) = self.serve.exited() {
            out.push(format!("serve exited with {s}"));
        }
        for (i, w) in self.workers.iter_mut().enumerate() {
            if let Some(s) = w.exited() {
                out.push(format!("worker-{i} exited with {s}"));
            }
        }
        out
    }

    fn stop(&mut self) {
        self.serve.kill9();
        for w in &mut self.workers {
            w.kill9();
        }
    }

    /// Every saga in the store (the processes must be stopped).
    async fn all_sagas(&self) -> Result<Vec<Value>, ChaosError> {
        let store: Arc<dyn SagaStore> = match &self.cosmos {
            None => Embedded::open(&self.data_dir.join("flotilla.db"), BusOptions::default())
                .map_err(|e| ChaosError::Run(format!("the campaign's store: {e}")))?
                .store(),
            Some(c) => Arc::new(
                flotilla_cloud::cosmos::CosmosSagaStore::connect(
                    flotilla_cloud::cosmos::CosmosOptions {
                        endpoint: c.endpoint.clone(),
                        database: "flotilla".into(),
                        container: "sagas".into(),
                        auth: flotilla_cloud::cosmos::CosmosAuth::Key(
                            crate::backends::COSMOS_EMULATOR_KEY.into(),
                        ),
                    },
                )
                .await
                .map_err(|e| ChaosError::Run(format!("Cosmos DB: {e}")))?,
            ),
        };
        Ok(store
            .list()
            .await
            .map_err(|e| ChaosError::Run(format!("listing the sagas: {e}")))?
            .into_iter()
            .map(|d| d.doc)
            .collect())
    }
}

/// What the driver knows about one job while it runs.
struct Tracked {
    job: Option<String>,
    last: Option<Value>,
    /// The last [`progress`] fingerprint, when it changed, and when the job
    /// was last seen (a job the driver cannot see is not called stalled).
    progress: Option<Value>,
    changed: Instant,
    observed: Instant,
    settled: bool,
    stalled: Option<String>,
}

/// What counts as progress: the job's status, its steps' states and attempts,
/// its resources' states, its error, and what it waits for. A re-check that
/// finds nothing new (another `join` poll, the same operation still running)
/// is not progress.
fn progress(s: &Value) -> Value {
    let steps: Vec<Value> = s["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|st| json!([st["status"], st["attempts"], st["undoAttempts"]]))
                .collect()
        })
        .unwrap_or_default();
    let resources: Vec<Value> = s["resources"]
        .as_array()
        .map(|a| a.iter().map(|r| json!([r["id"], r["state"]])).collect())
        .unwrap_or_default();
    let mut pending = s["pending"].clone();
    if let Value::Object(p) = &mut pending {
        for volatile in ["checks", "seq", "since", "poll"] {
            p.remove(volatile);
        }
    }
    json!({
        "status": s["status"],
        "steps": steps,
        "resources": resources,
        "error": s["error"],
        "pending": pending,
        "pools": s["pools"],
        "deadLetters": s["deadLetters"],
    })
}

fn status_str(s: &Value) -> &str {
    s["status"].as_str().unwrap_or("")
}

/// Nothing more will happen to this job without a new command.
fn is_settled(s: &Value) -> bool {
    matches!(
        status_str(s),
        "Succeeded" | "Compensated" | "Deleted" | "Failed" | "Degraded" | "Rejected"
    ) && s["pending"].is_null()
}

/// Whether the job's own status says it is stuck (the sweeper's `Stalled`).
fn reports_stalled(s: &Value) -> bool {
    status_str(s) == "Stalled" || s.get("stalled").is_some_and(|v| !v.is_null())
}

/// Submits one job through the custom handler's `submit` function, retrying
/// while the handler is down or answers 5xx (with an `Idempotency-Key`, so a
/// retry after a lost answer must return the same job).
async fn submit(
    http: &reqwest::Client,
    port: u16,
    plan: &JobPlan,
    key: &str,
) -> Result<String, String> {
    let body = serde_json::to_string(&plan.spec).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = String::new();
    while Instant::now() < deadline {
        match emulators::invoke_http(
            http,
            port,
            "submit",
            "POST",
            json!({}),
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", key),
            ],
            &body,
        )
        .await
        {
            Ok(a) if (200..=202).contains(&a.status) => {
                return a.body["job"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("submit answered {} without a job id", a.status));
            }
            Ok(a) if a.status >= 500 => last = format!("{}: {}", a.status, a.body),
            Ok(a) => return Err(format!("submit refused the spec: {} {}", a.status, a.body)),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("submit kept failing for 5 minutes: {last}"))
}

/// The job's saga through the `status` function; `None` when the handler is
/// unreachable or answers anything but 200.
async fn status(http: &reqwest::Client, port: u16, job: &str) -> Option<Value> {
    let a = emulators::invoke_http(http, port, "status", "GET", json!({"id": job}), &[], "")
        .await
        .ok()?;
    (a.status == 200).then_some(a.body)
}

/// A key naming one inventory item or one resource a spec asks for.
fn item_key(i: &InventoryItem) -> String {
    match i.resource_type.as_str() {
        "Microsoft.KeyVault/vaults/secrets" => format!("secret:{}", i.name.to_lowercase()),
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs" => {
            format!("blob:{}", i.name.to_lowercase())
        }
        _ => format!("arm:{}", i.id.to_lowercase()),
    }
}

/// What a succeeded job must have, from its own spec and the steps' plans:
/// the staged blobs, the network, the secrets, the master scale set and one
/// scale set per pool.
fn expected_items(saga: &Saga, env: &Env) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for step in StepName::ALL {
        for op in steps::plan(step, saga, env) {
            match op {
                Op::Arm { id, .. } | Op::ScaleSet { id, .. } => {
                    out.insert(format!("arm:{}", id.to_string().to_lowercase()));
                }
                Op::Secret { name, .. } => {
                    out.insert(format!("secret:{}", name.to_lowercase()));
                }
                Op::Blob { name, .. } => {
                    out.insert(format!("blob:{}", name.to_lowercase()));
                }
                // Chaos specs create their own network: nothing to attach.
                // Role assignments carry no tags: the tagged inventory this
                // is compared with does not list them.
                Op::AttachNsg { .. } | Op::RoleAssignment { .. } | Op::AwaitNodes { .. } => {}
            }
        }
    }
    out
}

/// The job a fired fault belongs to, by the cluster name its resource names start with.
fn fault_owner(f: &FiredFault) -> Option<usize> {
    let rest = f.name.strip_prefix("chaos-")?;
    let digits = rest.get(..5)?;
    if rest.as_bytes().get(5) != Some(&b'-') {
        return None;
    }
    digits.parse().ok()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs the campaign and prints the report; exit 0 only when every invariant held.
pub async fn run(args: ChaosArgs) -> Result<ExitCode, ChaosError> {
    let plan = args.plan()?;
    let text = args.output == OutputFormat::Text;
    let started = Instant::now();
    let (work, temp) = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| usage(format!("--work-dir {}: {e}", d.display())))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("flotilla-chaos")
                .tempdir()
                .map_err(|e| ChaosError::Run(format!("temporary directory: {e}")))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    if text {
        eprintln!(
            "chaos: {} jobs on the {:?} backend, fault rate {}, {} kill(s), seed {} (work dir {})",
            plan.jobs.len(),
            plan.backend,
            plan.fault_rate,
            plan.kills.len(),
            plan.seed,
            work.display()
        );
    }

    // The simulated Azure this process hosts, prepared before any fault is on.
    let env = SimEnvironment::start(SimOptions {
        lro: plan.lro,
        throttle: None,
        servicebus_lock: Duration::from_secs(5),
        node_scripts: plan.node_scripts,
    })
    .await?;
    env.resource_group(CLUSTER_RG, "westeurope").await?;
    let staging_account_id = env.storage_account(STAGING_RG, STAGING_ACCOUNT).await?;
    env.blob_container(STAGING_ACCOUNT, STAGING_CONTAINER)
        .await?;
    let procs = Processes::start(&plan, &env, &work, args.emulators_dir.as_deref()).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ChaosError::Run(format!("HTTP client: {e}")))?;
    let steps_env = Env {
        subscription_id: env.info().subscription_id.clone(),
        staging_account_id,
        staging_url: format!(
            "{}/{STAGING_CONTAINER}/",
            env.blob_endpoint(STAGING_ACCOUNT)
        ),
        keyvault_url: env.info().keyvault_url.clone(),
        keyvault_id: flotilla_azure::ResourceId::parse(&env.info().keyvault_id)
            .map_err(|e| ChaosError::Run(format!("simulator vault: {e}")))?,
        sp_client_id: Some(env.info().client_id.clone()),
        tenant_id: Some(env.info().tenant_id.clone()),
        sp_object_id: Some(env.info().client_id.clone()),
        scaler_role: flotilla_core::steps::rbac::VIRTUAL_MACHINE_CONTRIBUTOR.into(),
    };
    let mut campaign = Campaign {
        tracked: plan
            .jobs
            .iter()
            .map(|_| Tracked {
                job: None,
                last: None,
                progress: None,
                changed: Instant::now(),
                observed: Instant::now(),
                settled: false,
                stalled: None,
            })
            .collect(),
        plan,
        env,
        procs,
        http,
        next_job: 0,
        problems: Vec::new(),
        kills: Kills::default(),
        text,
        started,
    };
    campaign.install_faults();
    campaign.watch().await?;
    let mut report = campaign.finish(steps_env).await?;

    let pass = report.pass();
    report
        .detail
        .insert("verdict".into(), json!(if pass { "pass" } else { "fail" }));
    // Keep the logs of a failed campaign.
    let kept = match temp {
        Some(t) if pass => {
            drop(t);
            None
        }
        Some(t) => Some(t.keep()),
        None => Some(work),
    };
    if let Some(dir) = kept {
        report
            .detail
            .insert("work_dir".into(), json!(dir.display().to_string()));
        // The whole report next to the logs it explains.
        let path = dir.join("report.json");
        if let Err(e) = std::fs::write(&path, report.to_json().to_string()) {
            eprintln!("chaos: cannot write {}: {e}", path.display());
        }
    }
    if text {
        report.print_text();
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json())
                .map_err(|e| ChaosError::Run(e.to_string()))?
        );
    }
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The kills done so far, and the next one's state.
#[derive(Default)]
struct Kills {
    next: usize,
    /// When the next kill's progress threshold was reached.
    armed: Option<Instant>,
    done: Vec<String>,
    /// A process that did not come back fails the campaign (its jobs then
    /// stall), but the campaign still runs to its report.
    failures: Vec<String>,
}

/// A running campaign: the simulator, the processes, and what the driver
/// knows about each job.
struct Campaign {
    plan: Plan,
    env: SimEnvironment,
    procs: Processes,
    http: reqwest::Client,
    tracked: Vec<Tracked>,
    /// The next job to submit.
    next_job: usize,
    problems: Vec<Value>,
    kills: Kills,
    text: bool,
    started: Instant,
}

impl Campaign {
    /// Job-specific terminal rules first, then the random ones.
    fn install_faults(&self) {
        let (plan, sim) = (&self.plan, &self.env.sim);
        for j in &plan.jobs {
            if let Some(step) = j.terminal {
                sim.add_fault(terminal_rule(step, &j.cluster));
            }
        }
        let on = |k| plan.faults.contains(&k);
        if on(FaultKind::Arm) {
            retryable_rules(plan.fault_rate)
                .into_iter()
                .for_each(|r| sim.add_fault(r));
        }
        if on(FaultKind::Token) {
            token_rules(plan.fault_rate)
                .into_iter()
                .for_each(|r| sim.add_fault(r));
        }
        if plan.backend == Backend::Emulators {
            if on(FaultKind::LostSends) {
                sim.add_fault(send_failure_rule(plan.fault_rate / 2.0));
            }
            let rate = |k| if on(k) { plan.fault_rate } else { 0.0 };
            sim.set_servicebus_faults(ServiceBusFaults {
                drop_send: rate(FaultKind::LostSends) / 10.0,
                duplicate: rate(FaultKind::Duplicates),
                reorder: rate(FaultKind::Duplicates),
            });
        }
    }

    /// Submits the next jobs up to `--in-flight` unfinished ones (a few
    /// requests at a time; each retried while the handler is down). A kill
    /// planned for the very start (under 10 % settled) happens while the first
    /// jobs are still being submitted: a lost answer must not make a second job.
    async fn submit_more(&mut self) -> Result<(), ChaosError> {
        let in_flight = self
            .tracked
            .iter()
            .filter(|t| t.job.is_some() && !t.settled && t.stalled.is_none())
            .count();
        let room = self.plan.in_flight.saturating_sub(in_flight);
        let first = self.next_job;
        let batch: Vec<usize> = (first..self.plan.jobs.len()).take(room).collect();
        if batch.is_empty() {
            return Ok(());
        }
        self.next_job += batch.len();
        let mut set = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(8));
        let port = self.procs.port;
        for i in batch {
            let j = &self.plan.jobs[i];
            let (http, sem) = (self.http.clone(), sem.clone());
            let key = format!("chaos-{}-{i}", self.plan.seed);
            let job = j.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                (i, submit(&http, port, &job, &key).await)
            });
        }
        let submitting = Instant::now();
        while !set.is_empty() {
            tokio::select! {
                done = set.join_next() => match done {
                    Some(Ok((i, Ok(job)))) => {
                        let t = &mut self.tracked[i];
                        t.job = Some(job);
                        (t.changed, t.observed) = (Instant::now(), Instant::now());
                    }
                    Some(Ok((i, Err(e)))) => {
                        self.tracked[i].settled = true;
                        self.problems.push(json!({"cluster": self.plan.jobs[i].cluster, "problem": "not submitted", "detail": e}));
                    }
                    Some(Err(e)) => return Err(ChaosError::Run(format!("submit task: {e}"))),
                    None => break,
                },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let early = first == 0 && self
                        .plan
                        .kills
                        .get(self.kills.next)
                        .is_some_and(|k| k.settled_share < 0.1 && submitting.elapsed() >= k.delay);
                    if early {
                        self.kill("while submitting").await;
                    }
                }
            }
        }
        if self.text && first == 0 {
            eprintln!(
                "chaos: {} jobs submitted in {:.1} s",
                self.tracked.iter().filter(|t| t.job.is_some()).count(),
                self.started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// The next planned kill, now.
    async fn kill(&mut self, when: &str) {
        let Some(k) = self.plan.kills.get(self.kills.next) else {
            return;
        };
        match self.procs.kill_and_restart(k).await {
            Ok(what) => {
                if self.text {
                    eprintln!("chaos: kill -9 {what} {when}, restarted");
                }
                self.kills.done.push(what);
            }
            Err(e) => {
                if self.text {
                    eprintln!("chaos: a killed process did not come back: {e}");
                }
                self.kills.failures.push(e.to_string());
            }
        }
        self.kills.next += 1;
        self.kills.armed = None;
    }

    /// Submits jobs as room allows and watches every one until it settles or
    /// stalls; kills at the planned moments.
    async fn watch(&mut self) -> Result<(), ChaosError> {
        let total = self.plan.jobs.len();
        let mut last_report = (0usize, Instant::now());
        loop {
            self.submit_more().await?;
            let pending: Vec<(usize, String)> = self
                .tracked
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.settled && t.stalled.is_none())
                .filter_map(|(i, t)| t.job.clone().map(|j| (i, j)))
                .collect();
            if pending.is_empty() && self.next_job >= total {
                return Ok(());
            }
            self.poll_round(pending).await;
            self.mark_stalled();
            let settled = self.tracked.iter().filter(|t| t.settled).count();
            if let Some(k) = self.plan.kills.get(self.kills.next) {
                if settled as f64 >= k.settled_share * total as f64 {
                    let delay = k.delay;
                    let armed = *self.kills.armed.get_or_insert_with(Instant::now);
                    if armed.elapsed() >= delay {
                        self.kill(&format!("at {settled}/{total} settled")).await;
                    }
                }
            }
            if self.text
                && (settled >= last_report.0 + total.div_ceil(10)
                    || last_report.1.elapsed() > Duration::from_secs(15))
            {
                self.print_progress(settled);
                last_report = (settled, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Reads the status of every pending job (a few requests at a time).
    async fn poll_round(&mut self, pending: Vec<(usize, String)>) {
        let mut set = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let port = self.procs.port;
        for (i, job) in pending {
            let (http, sem) = (self.http.clone(), sem.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                (i, status(&http, port, &job).await)
            });
        }
        while let Some(r) = set.join_next().await {
            let Ok((i, Some(s))) = r else { continue };
            let t = &mut self.tracked[i];
            let p = progress(&s);
            t.observed = Instant::now();
            if t.progress.as_ref() != Some(&p) {
                t.changed = t.observed;
                t.progress = Some(p);
            }
            t.settled = is_settled(&s);
            t.last = Some(s);
        }
    }

    /// Unsettled jobs without progress for `--stall-seconds` (or past the
    /// campaign's timeout) are stalled.
    fn mark_stalled(&mut self) {
        let now = Instant::now();
        let timed_out = self.started.elapsed() > self.plan.timeout;
        let (stall, timeout) = (self.plan.stall, self.plan.timeout);
        for t in self
            .tracked
            .iter_mut()
            .filter(|t| !t.settled && t.stalled.is_none())
        {
            if timed_out {
                t.stalled = Some(format!("campaign timeout ({} s)", timeout.as_secs()));
            } else if t.observed.saturating_duration_since(t.changed) >= stall {
                t.stalled = Some(format!(
                    "no progress for {} s",
                    now.duration_since(t.changed).as_secs()
                ));
            }
        }
    }

    fn print_progress(&self, settled: usize) {
        let count = |st: &str| {
            self.tracked
                .iter()
                .filter(|t| t.settled && t.last.as_ref().is_some_and(|s| status_str(s) == st))
                .count()
        };
        eprintln!(
            "chaos: {settled}/{} settled (succeeded {}, compensated {}, failed {}), {} stalled, {} kill(s), {} fault(s), {:.0} s",
            self.plan.jobs.len(),
            count("Succeeded"),
            count("Compensated"),
            count("Failed"),
            self.tracked.iter().filter(|t| t.stalled.is_some()).count(),
            self.kills.done.len(),
            self.env.sim.faults_fired() + self.env.sim.servicebus_faults_fired().total(),
            self.started.elapsed().as_secs_f64()
        );
    }

    /// A quiet moment for late (duplicate) deliveries, then stops everything
    /// and checks the final truth: the store and the simulator's inventory.
    async fn finish(mut self, steps_env: Env) -> Result<Report, ChaosError> {
        let crashed = self.procs.crashed();
        tokio::time::sleep(Duration::from_secs(2) + self.plan.lro * 2).await;
        self.procs.stop();
        let sim = &self.env.sim;
        sim.clear_faults();
        sim.set_servicebus_faults(ServiceBusFaults::default());
        let sagas = self.procs.all_sagas().await?;
        let inventory = sim.inventory(None);
        let fired = sim.fired_faults();
        let sb_fired = sim.servicebus_faults_fired();
        let mut report = check(
            &self.plan,
            &self.tracked,
            std::mem::take(&mut self.problems),
            &sagas,
            &inventory,
            &fired,
            steps_env,
        );
        // What the children logged about each job with a problem, to tell why.
        let logs: Vec<String> = std::iter::once(&self.procs.serve)
            .chain(&self.procs.workers)
            .map(FlotillaProcess::log)
            .collect();
        attach_log_lines(&mut report, &logs);
        report.set(
            "faults_injected",
            json!(sim.faults_fired() + sb_fired.total()),
        );
        report.set("kills", json!(self.kills.done.len()));
        report.set(
            "seconds",
            json!(round3(self.started.elapsed().as_secs_f64())),
        );
        let deliver_twice = self.plan.backend == Backend::Embedded
            && self.plan.faults.contains(&FaultKind::Duplicates);
        report.detail.insert(
            "faults".into(),
            json!({
                "rules": fault_breakdown(&fired),
                "servicebus": sb_fired,
                "deliver_twice": deliver_twice,
            }),
        );
        report
            .detail
            .insert("killed".into(), json!(self.kills.done));
        if !crashed.is_empty() {
            report.detail.insert("crashed".into(), json!(crashed));
        }
        if !self.kills.failures.is_empty() {
            report
                .detail
                .insert("restart_failures".into(), json!(self.kills.failures));
        }
        drop(self.procs);
        self.env.shutdown().await;
        Ok(report)
    }
}

/// The report: the headline figures in a fixed order, then detail.
struct Report {
    figures: Vec<(&'static str, Value)>,
    detail: serde_json::Map<String, Value>,
}

impl Report {
    fn set(&mut self, name: &'static str, v: Value) {
        match self.figures.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = v,
            None => self.figures.push((name, v)),
        }
    }

    fn figure(&self, name: &str) -> u64 {
        self.figures
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(0)
    }

    fn pass(&self) -> bool {
        let none = |k: &str| {
            self.detail
                .get(k)
                .and_then(Value::as_array)
                .is_none_or(|p| p.is_empty())
        };
        self.figure("stalled") == 0
            && self.figure("orphans") == 0
            && self.figure("duplicates") == 0
            && none("problems")
            && none("crashed")
            && none("restart_failures")
    }

    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.figures {
            m.insert((*k).to_string(), v.clone());
        }
        for (k, v) in &self.detail {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    fn print_text(&self) {
        let line: Vec<String> = self
            .figures
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("{}", line.join(", "));
        if let Some(p) = self.detail["problems"].as_array() {
            for x in p.iter().take(20) {
                println!("  problem: {x}");
            }
            if p.len() > 20 {
                println!("  … and {} more (see --output json)", p.len() - 20);
            }
        }
        for k in ["crashed", "restart_failures"] {
            for x in self
                .detail
                .get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                println!("  {k}: {}", x.as_str().unwrap_or_default());
            }
        }
        if let Some(w) = self.detail.get("work_dir") {
            println!("  logs and data: {}", w.as_str().unwrap_or(""));
        }
        println!("verdict: {}", if self.pass() { "PASS" } else { "FAIL" });
    }
}

/// Counts of fired fault rules by kind and code.
fn fault_breakdown(fired: &[FiredFault]) -> Value {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for f in fired {
        let area = if TOKEN_TYPES.contains(&f.resource_type.as_str()) {
            "token"
        } else if f.resource_type.starts_with("Microsoft.ServiceBus/") {
            "servicebus"
        } else if f.asynchronous {
            "arm-async"
        } else {
            "azure"
        };
        *by.entry(format!("{area} {} {}", f.status, f.code))
            .or_default() += 1;
    }
    json!(by)
}

/// Lines of the children's logs that name a job with a problem (its last
/// few), attached to that problem as `log`.
fn attach_log_lines(report: &mut Report, logs: &[String]) {
    const LINES: usize = 20;
    let Some(Value::Array(problems)) = report.detail.get_mut("problems") else {
        return;
    };
    for p in problems {
        let Some(job) = p["job"].as_str().map(str::to_string) else {
            continue;
        };
        let mut lines: Vec<&str> = logs
            .iter()
            .flat_map(|l| l.lines())
            .filter(|l| l.contains(&job))
            .collect();
        let skip = lines.len().saturating_sub(LINES);
        lines.drain(..skip);
        p["log"] = json!(lines);
    }
}

/// Checks every job and the inventory against what the campaign planned.
fn check(
    plan: &Plan,
    tracked: &[Tracked],
    mut problems: Vec<Value>,
    sagas: &[Value],
    inventory: &[InventoryItem],
    fired: &[FiredFault],
    env: Env,
) -> Report {
    // Faults per job (by resource name), and whether its terminal rule fired.
    let mut faults_of: HashMap<usize, Vec<&FiredFault>> = HashMap::new();
    for f in fired {
        if let Some(i) = fault_owner(f) {
            faults_of.entry(i).or_default().push(f);
        }
    }
    let by_id: HashMap<&str, &Value> = sagas
        .iter()
        .filter_map(|s| Some((s["id"].as_str()?, s)))
        .collect();
    let mut items_of: BTreeMap<String, Vec<&InventoryItem>> = BTreeMap::new();
    for item in inventory {
        if let Some(job) = item.tags.get(flotilla_core::names::TAG_JOB) {
            items_of.entry(job.clone()).or_default().push(item);
        }
    }
    let known: BTreeSet<&str> = tracked.iter().filter_map(|t| t.job.as_deref()).collect();

    let (mut succeeded, mut compensated, mut failed, mut stalled) = (0u64, 0u64, 0u64, 0u64);
    let (mut orphans, mut duplicates, mut dead_letters) = (0u64, 0u64, 0u64);
    let mut terminal_jobs = 0u64;
    let mut orphan_ids: Vec<String> = Vec::new();
    for (i, (t, jp)) in tracked.iter().zip(&plan.jobs).enumerate() {
        let Some(job) = t.job.as_deref() else {
            continue;
        };
        let terminal_code = jp
            .terminal
            .map(|s| fault_for(s, StagingAccess::Identity).code);
        let terminal_fired = terminal_code.as_ref().is_some_and(|code| {
            faults_of
                .get(&i)
                .is_some_and(|fs| fs.iter().any(|f| &f.code == code))
        });
        if terminal_fired {
            terminal_jobs += 1;
        }
        let saga = by_id.get(job).copied().or(t.last.as_ref());
        let status = saga.map(status_str).unwrap_or("unknown").to_string();
        let items = items_of.get(job).map(Vec::as_slice).unwrap_or_default();
        let mut problem = |what: &str, extra: Value| {
            let mut p = json!({
                "job": job,
                "cluster": jp.cluster,
                "problem": what,
                "status": status,
                "terminal_fault": jp.terminal.map(|s| s.as_str()),
                "terminal_fired": terminal_fired,
                "faults": faults_of.get(&i).map(Vec::len).unwrap_or(0),
            });
            if let Some(s) = saga {
                p["error"] = s["error"].clone();
                p["steps"] = json!(s["steps"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .map(|st| json!({"name": st["name"], "status": st["status"], "attempts": st["attempts"], "lastError": st["lastError"]}))
                        .collect::<Vec<_>>())
                    .unwrap_or_default());
                if !s["deadLetters"].as_array().is_none_or(|d| d.is_empty()) {
                    p["deadLetters"] = s["deadLetters"].clone();
                }
            }
            if let (Value::Object(p), Value::Object(e)) = (&mut p, extra) {
                p.extend(e);
            }
            problems.push(p);
        };
        if let Some(s) = saga {
            dead_letters += s["deadLetters"].as_array().map(Vec::len).unwrap_or(0) as u64;
        }
        let final_stall = saga.is_some_and(reports_stalled);
        if t.stalled.is_some() || final_stall || saga.is_some_and(|s| !is_settled(s)) {
            stalled += 1;
            let why = t
                .stalled
                .clone()
                .unwrap_or_else(|| "reported stalled".into());
            // What the simulator holds for it, to tell why.
            let held: Vec<Value> = items
                .iter()
                .map(|x| json!({"id": x.id, "provisioningState": x.provisioning_state}))
                .collect();
            problem(
                "stalled",
                json!({"why": why, "pending": saga.map(|s| s["pending"].clone()), "resources": held}),
            );
            continue;
        }
        match status.as_str() {
            "Succeeded" => succeeded += 1,
            "Compensated" => compensated += 1,
            "Failed" => failed += 1,
            _ => {}
        }
        let leftover_ids = || items.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
        if terminal_fired {
            // A terminal fault: Compensated with nothing left.
            if status != "Compensated" {
                problem(
                    "terminal fault but not Compensated",
                    json!({"leftovers": leftover_ids()}),
                );
            } else if !items.is_empty() {
                problem(
                    "compensated but resources are left",
                    json!({"leftovers": leftover_ids()}),
                );
            }
        } else if status != "Succeeded" {
            problem(
                "only retryable faults but not Succeeded",
                json!({"leftovers": leftover_ids()}),
            );
        } else {
            // Succeeded: exactly what the spec asks for.
            match saga.and_then(|s| serde_json::from_value::<Saga>(s.clone()).ok()) {
                None => problem("the saga cannot be read", json!({})),
                Some(s) => {
                    let expected = expected_items(&s, &env);
                    let actual: BTreeMap<String, &InventoryItem> =
                        items.iter().map(|x| (item_key(x), *x)).collect();
                    let missing: Vec<&String> = expected
                        .iter()
                        .filter(|k| !actual.contains_key(*k))
                        .collect();
                    let extra: Vec<&str> = actual
                        .iter()
                        .filter(|(k, _)| !expected.contains(*k))
                        .map(|(_, x)| x.id.as_str())
                        .collect();
                    // The same thing twice under one key cannot be told apart by
                    // key; count items beyond one per key too.
                    let twice = items.len().saturating_sub(actual.len());
                    if !extra.is_empty() || twice > 0 {
                        duplicates += (extra.len() + twice) as u64;
                        problem(
                            "more resources than the spec asks for",
                            json!({"extra": extra}),
                        );
                    }
                    if !missing.is_empty() {
                        problem(
                            "succeeded but resources are missing",
                            json!({"missing": missing}),
                        );
                    }
                }
            }
        }
        if matches!(status.as_str(), "Compensated" | "Deleted") && !items.is_empty() {
            orphans += items.len() as u64;
            orphan_ids.extend(leftover_ids());
        }
    }

    // Jobs nobody asked for: a second job for one submission (duplicate), and
    // anything tagged with a job the campaign does not know (orphans).
    let mut unknown_jobs: Vec<Value> = Vec::new();
    for s in sagas {
        let Some(id) = s["id"].as_str() else { continue };
        if known.contains(id) {
            continue;
        }
        duplicates += 1;
        unknown_jobs.push(json!({"job": id, "status": s["status"], "cluster": s["spec"]["name"]}));
    }
    for (job, items) in &items_of {
        if !known.contains(job.as_str()) {
            orphans += items.len() as u64;
            orphan_ids.extend(items.iter().map(|x| x.id.clone()));
            if !by_id.contains_key(job.as_str()) {
                unknown_jobs.push(json!({"job": job, "status": null, "cluster": null}));
            }
        }
    }

    let mut detail = serde_json::Map::new();
    detail.insert(
        "backend".into(),
        json!(format!("{:?}", plan.backend).to_lowercase()),
    );
    detail.insert("seed".into(), json!(plan.seed));
    detail.insert("fault_rate".into(), json!(plan.fault_rate));
    detail.insert(
        "fault_kinds".into(),
        json!(plan
            .faults
            .iter()
            .map(|f| f.to_possible_value().map(|v| v.get_name().to_string()))
            .collect::<Vec<_>>()),
    );
    detail.insert("terminal_jobs".into(), json!(terminal_jobs));
    detail.insert("problems".into(), json!(problems));
    detail.insert("orphan_ids".into(), json!(orphan_ids));
    detail.insert("unknown_jobs".into(), json!(unknown_jobs));
    Report {
        figures: vec![
            ("jobs", json!(plan.jobs.len())),
            ("succeeded", json!(succeeded)),
            ("compensated", json!(compensated)),
            ("failed", json!(failed)),
            ("stalled", json!(stalled)),
            ("orphans", json!(orphans)),
            ("duplicates", json!(duplicates)),
            ("deadLetters", json!(dead_letters)),
            ("faults_injected", json!(0)),
            ("kills", json!(0)),
            ("seconds", json!(0)),
        ],
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ChaosArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: ChaosArgs,
        }
        let mut v = vec!["chaos"];
        v.extend_from_slice(extra);
        <P as clap::Parser>::try_parse_from(v).unwrap().a
    }

    #[test]
    fn a_problem_carries_the_last_log_lines_naming_its_job() {
        let mut report = Report {
            figures: vec![],
            detail: serde_json::Map::new(),
        };
        report.detail.insert(
            "problems".into(),
            json!([{"job": "chaos-00005-abc", "problem": "stalled"}, {"problem": "not submitted"}]),
        );
        let mut serve: Vec<String> = (0..30)
            .map(|i| format!(" WARN step error job=chaos-00005-abc n={i}"))
            .collect();
        serve.push("step error job=chaos-00006-def".into());
        let worker = "sweep job=chaos-00005-abc re-armed".to_string();
        attach_log_lines(&mut report, &[serve.join("\n"), worker]);
        let problems = report.detail["problems"].as_array().unwrap();
        let log: Vec<&str> = problems[0]["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(log.len(), 20);
        assert_eq!(log[0], " WARN step error job=chaos-00005-abc n=11");
        assert_eq!(log[19], "sweep job=chaos-00005-abc re-armed");
        assert!(log.iter().all(|l| !l.contains("00006")));
        assert!(problems[1].get("log").is_none());
    }

    #[test]
    fn the_same_seed_makes_the_same_plan() {
        let a = args(&["--seed", "7", "--jobs", "30"]).plan().unwrap();
        let b = args(&["--seed", "7", "--jobs", "30"]).plan().unwrap();
        let c = args(&["--seed", "8", "--jobs", "30"]).plan().unwrap();
        let shape = |p: &Plan| {
            p.jobs
                .iter()
                .map(|j| (serde_json::to_string(&j.spec).unwrap(), j.terminal))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&a), shape(&b));
        assert_ne!(shape(&a), shape(&c));
        assert_eq!(a.kills.len(), 2);
        assert!(a
            .kills
            .iter()
            .all(|k| (0.0..0.7).contains(&k.settled_share)));
    }

    #[test]
    fn specs_vary_and_stay_valid() {
        let p = args(&["--seed", "1", "--jobs", "60", "--terminal-share", "0.5"])
            .plan()
            .unwrap();
        let pools: BTreeSet<usize> = p.jobs.iter().map(|j| j.spec.worker_pools.len()).collect();
        assert_eq!(pools, BTreeSet::from([1, 2, 3]));
        assert!(p
            .jobs
            .iter()
            .any(|j| j.spec.identity == IdentityMode::ServicePrincipal));
        let terminal = p.jobs.iter().filter(|j| j.terminal.is_some()).count();
        assert!((15..=45).contains(&terminal), "{terminal}");
        let names: BTreeSet<&str> = p.jobs.iter().map(|j| j.cluster.as_str()).collect();
        assert_eq!(names.len(), 60);
    }

    #[test]
    fn without_terminal_faults_no_job_gets_one() {
        let p = args(&["--jobs", "50", "--faults", "arm,token"])
            .plan()
            .unwrap();
        assert!(p.jobs.iter().all(|j| j.terminal.is_none()));
        assert_eq!(p.faults, BTreeSet::from([FaultKind::Arm, FaultKind::Token]));
    }

    #[test]
    fn bad_arguments_name_the_flag() {
        for (flags, name) in [
            (vec!["--jobs", "0"], "--jobs"),
            (vec!["--fault-rate", "1.5"], "--fault-rate"),
            (vec!["--fault-rate", "NaN"], "--fault-rate"),
            (vec!["--terminal-share", "1.5"], "--terminal-share"),
            (vec!["--workers", "0"], "--workers"),
            (vec!["--lro-seconds", "100"], "--lro-seconds"),
            (vec!["--stall-seconds", "0"], "--stall-seconds"),
        ] {
            match args(&flags).plan() {
                Err(ChaosError::Usage(m)) => assert!(m.contains(name), "{m}"),
                Err(other) => panic!("{flags:?}: {other}"),
                Ok(_) => panic!("{flags:?} accepted"),
            }
        }
    }

    #[test]
    fn terminal_rules_match_only_their_cluster() {
        let rule = terminal_rule(StepName::Master, "chaos-00012");
        let p = rule.name_pattern.unwrap();
        assert_eq!(p, "chaos-00012-*-master");
        assert_eq!(rule.code, "SkuNotAvailable");
        let rule = terminal_rule(StepName::Stage, "chaos-00001");
        assert_eq!(rule.name_pattern.unwrap(), "chaos-00001-*/init.sh");
    }

    #[test]
    fn faults_are_attributed_by_cluster_prefix() {
        let f = |name: &str| FiredFault {
            method: "PUT".into(),
            resource_type: "x".into(),
            name: name.into(),
            status: 500,
            code: "InternalServerError".into(),
            asynchronous: false,
        };
        assert_eq!(fault_owner(&f("chaos-00012-ab12cd-vnet")), Some(12));
        assert_eq!(fault_owner(&f("chaos-00003-ab12cd/init.sh")), Some(3));
        assert_eq!(fault_owner(&f("chaos-000123-x")), None);
        assert_eq!(fault_owner(&f("a1b2c3d4")), None);
    }

    #[test]
    fn retryable_rules_add_up_to_the_rate_and_are_never_terminal() {
        let rules = retryable_rules(0.2);
        for t in DATA_TYPES {
            let sum: f64 = rules
                .iter()
                .filter(|r| r.resource_type.as_deref() == Some(t))
                .map(|r| r.probability.unwrap())
                .sum();
            assert!((sum - 0.2).abs() < 1e-9, "{t}: {sum}");
        }
        for r in rules.iter().chain(&token_rules(0.2)) {
            let e = flotilla_azure::AzureError::from_service(r.status, &r.code, "", None);
            assert!(e.is_retryable(), "{r:?}");
        }
        for step in StepName::ALL {
            let r = terminal_rule(step, "chaos-00000");
            let e = flotilla_azure::AzureError::from_service(r.status, &r.code, "", None);
            assert!(!e.is_retryable(), "{step}: {r:?}");
        }
    }
}
