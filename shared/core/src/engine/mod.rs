//! The engine: loads a saga, asks `decide` what an event means, performs the
//! step's I/O through the Azure ports, and saves the saga with its ETag
//! together with the events that follow.
//!
//! - [`txn`]: load and save, the outbox on every store;
//! - [`kept`]: the sagas this engine last wrote, kept parsed for their next load;
//! - [`commands`]: submit, delete, scale, and the other saga changes that come
//!   from outside a step (degraded marking, dead letters);
//! - [`forward`]: a step's operations, long-running-operation polls and `join`;
//! - [`undo`]: the compensation / deletion chain, and scaling;
//! - [`worker`]: one settlement function for every consumer (the Functions
//!   handler, `flotilla worker`, the embedded runner);
//! - [`in_hand`]: the message a bus consumer is handling, which a store that
//!   holds the queue completes with the save that continues it;
//! - [`sweep`]: the sweeper that re-arms what is overdue and reports what is stalled;
//! - [`orphans`]: the orphan sweep, listing (and deleting) what carries
//!   `managed-by: flotilla` but belongs to no live job.

mod commands;
mod forward;
pub(crate) mod in_hand;
mod kept;
mod orphans;
mod pools;
mod subnet;
mod sweep;
mod txn;
mod undo;
mod worker;

pub use commands::{DeletedOutside, Submitted};
pub use orphans::{
    parse_resource_groups, NotRemoved, OrphanOptions, OrphanReport, Removal, RemovalOptions,
};
pub use sweep::{run_sweeper, stalled_reason, Stalled, SweepOptions, SweepReport};
pub use worker::{run_worker, settle, Delivered, Settlement};

use crate::decide::Policy;
use crate::events::{CloudEvent, EventData};
use crate::ports::{
    Arm, Blobs, BusError, Clock, EventBus, KubeApi, SagaStore, Secrets, StoreError, SystemClock,
};
use crate::steps::Env;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The Azure planes a step uses, behind their ports.
pub struct Azure {
    pub arm: Arc<dyn Arm>,
    pub secrets: Arc<dyn Secrets>,
    pub blobs: Arc<dyn Blobs>,
    /// The cluster's API server (`join` counts Ready nodes there).
    pub kube: Arc<dyn KubeApi>,
    /// Service-principal identity mode: the secret to hand to the cluster.
    pub sp_client_secret: Option<String>,
}

impl Azure {
    /// The ports on the production clients (the API server is reached
    /// directly at the kubeconfig's address).
    pub fn from_clients(
        arm: Arc<flotilla_azure::ArmClient>,
        vault: flotilla_azure::vault::Vault,
        staging: flotilla_azure::blob::Staging,
        sp_client_secret: Option<String>,
    ) -> Azure {
        Azure {
            arm,
            secrets: Arc::new(vault),
            blobs: Arc::new(staging),
            kube: Arc::new(flotilla_azure::kube::KubeClient::new()),
            sp_client_secret,
        }
    }
}

/// Why handling an event failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("saga store: {0}")]
    Store(#[from] StoreError),
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
    #[error("unreadable event: {0}")]
    BadEvent(String),
    /// An Azure read the engine needed before deciding failed.
    #[error("azure: {}: {}", .0.code, .0.message)]
    Azure(flotilla_azure::AzureError),
}

impl EngineError {
    /// Whether delivering the same message again can succeed: a store or bus
    /// that is unavailable or a lost ETag race can; a corrupt saga document
    /// or an unreadable event cannot, so the message is dead-lettered at once.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Store(StoreError::Corrupt(_)) => false,
            EngineError::Store(_) | EngineError::Bus(_) => true,
            EngineError::BadEvent(_) => false,
            EngineError::Azure(e) => e.is_retryable(),
        }
    }
}

/// Why a command (submit, delete, scale) was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("job {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Pre-flight found problems; nothing was stored or created.
    #[error("pre-flight refused the job: {}", .0.summary())]
    Rejected(crate::preflight::Preflight),
    /// A pre-flight read failed for now (throttled, unavailable): try again.
    #[error("pre-flight could not read Azure now: {0}")]
    Unavailable(flotilla_azure::AzureError),
}

impl From<crate::decide::Refusal> for CommandError {
    fn from(r: crate::decide::Refusal) -> Self {
        match r {
            crate::decide::Refusal::Invalid(m) => CommandError::Invalid(m),
            crate::decide::Refusal::Conflict(m) => CommandError::Conflict(m),
        }
    }
}

/// Counters for the benchmark and `status`.
#[derive(Default)]
pub struct Stats {
    pub store_writes: AtomicU64,
    /// Re-checks scheduled by saves: an operation or the nodes not done yet.
    pub waits: AtomicU64,
    pub handled: AtomicU64,
    /// Loads answered by the copy this engine kept when it last wrote the
    /// saga (`kept`), without reading the store.
    pub kept_loads: AtomicU64,
    /// Milliseconds each handled event took, by the handler it went to (the
    /// event's subject: a step's name, `poll`, `compensate`, `notify`).
    timings_ms: Mutex<std::collections::BTreeMap<String, Vec<f64>>>,
    /// Where saves announce the jobs they settled, once someone watches.
    settled: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl Stats {
    /// How long each handled event took, in milliseconds, by handler.
    pub fn timings_ms(&self) -> std::collections::BTreeMap<String, Vec<f64>> {
        self.timings_ms
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Notes that an event for `handler` took `ms` (the first million only).
    pub(super) fn timed(&self, handler: &str, ms: f64) {
        if self.handled.fetch_add(1, Ordering::Relaxed) >= 1_000_000 {
            return;
        }
        if let Ok(mut t) = self.timings_ms.lock() {
            match t.get_mut(handler) {
                Some(v) => v.push(ms),
                None => {
                    t.insert(handler.to_string(), vec![ms]);
                }
            }
        }
    }

    /// The ids of the jobs this engine's saves settle (see
    /// [`crate::saga::Saga::is_settled`]), from now on; a job can be named
    /// more than once. One watcher per engine: later calls get `None`.
    /// For waiting on many jobs without reading each again and again.
    pub fn watch_settled(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.settled.set(tx).ok().map(|()| rx)
    }

    /// Announces that a save left `saga` settled, if anyone watches.
    pub(super) fn saved(&self, saga: &crate::saga::Saga) {
        if saga.is_settled() {
            if let Some(tx) = self.settled.get() {
                let _ = tx.send(saga.id.clone());
            }
        }
    }
}

pub struct Engine {
    pub store: Arc<dyn SagaStore>,
    pub bus: Arc<dyn EventBus>,
    pub azure: Azure,
    pub env: Env,
    pub policy: Policy,
    pub clock: Arc<dyn Clock>,
    pub stats: Stats,
    /// Pre-flight's VM-size catalogs, kept a while (`preflight::SkuCache`).
    pub skus: crate::preflight::SkuCache,
    /// Pre-flight's VNet listings, shared a while (`preflight::VnetCache`).
    pub vnets: crate::preflight::VnetCache,
    /// Pre-flight's group and permission checks that passed, shared a while
    /// (`preflight::GroupCache`).
    pub groups: crate::preflight::GroupCache,
    /// The sagas this engine last wrote, for their next load (`kept`).
    kept: kept::Kept,
}

impl Engine {
    /// An engine on these ports, with the wall clock.
    pub fn new(
        store: Arc<dyn SagaStore>,
        bus: Arc<dyn EventBus>,
        azure: Azure,
        env: Env,
        policy: Policy,
    ) -> Engine {
        let keep = if store.etag_is_local() {
            kept::KEPT_SAGAS
        } else {
            0
        };
        Engine {
            kept: kept::Kept::new(keep),
            store,
            bus,
            azure,
            env,
            policy,
            clock: Arc::new(SystemClock),
            stats: Stats::default(),
            skus: Default::default(),
            vnets: Default::default(),
            groups: Default::default(),
        }
    }

    /// The same engine with another clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Engine {
        self.clock = clock;
        self
    }

    fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }
}

/// A new event about a job that nobody handles (for tests and tools).
pub fn notification(job: &str, event_type: &str, key: &str) -> CloudEvent {
    CloudEvent::new(
        event_type,
        crate::events::handlers::NONE,
        key,
        EventData {
            job: job.into(),
            ..Default::default()
        },
    )
}
