//! The engine: loads a saga, asks `decide` what an event means, performs the
//! step's I/O through the Azure clients, and saves the saga with its ETag
//! together with the events that follow. The intent to create a resource is
//! saved before the create; a long-running operation is saved and re-checked
//! by a scheduled event, never waited for.

use crate::decide::{self, Decision, Emit, Policy};
use crate::events::{CloudEvent, EventData};
use crate::names;
use crate::ports::{ETag, EventBus, OutMessage, SagaStore, StoreError};
use crate::saga::{
    ErrorInfo, JobStatus, PendingPurpose, ResourceKind, ResourceRecord, ResourceState, Saga,
    StepName,
};
use crate::spec::ClusterSpec;
use crate::steps::{self, Env, Op, SecretSource};
use flotilla_azure::arm::{DeleteStart, PollOutcome};
use flotilla_azure::blob::Staging;
use flotilla_azure::models::{api, InstanceView, StorageKeys};
use flotilla_azure::vault::Vault;
use flotilla_azure::{ArmClient, AzureError, ResourceId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The Azure clients a step uses.
pub struct Azure {
    pub arm: ArmClient,
    pub vault: Vault,
    pub staging: Staging,
    /// Service-principal identity mode: the secret to hand to the cluster.
    pub sp_client_secret: Option<String>,
}

/// Why handling an event failed. All of these are "try again later": the
/// message is abandoned and redelivered (and dead-lettered past the limit).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("saga store: {0}")]
    Store(#[from] StoreError),
    #[error("event bus: {0}")]
    Bus(#[from] crate::ports::BusError),
    #[error("unreadable event: {0}")]
    BadEvent(String),
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
}

/// Counters for the benchmark and `status`.
#[derive(Default)]
pub struct Stats {
    pub store_writes: AtomicU64,
    pub handled: AtomicU64,
    timings_ms: Mutex<Vec<f64>>,
}

impl Stats {
    pub fn timings_ms(&self) -> Vec<f64> {
        self.timings_ms
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }
}

pub struct Engine {
    pub store: Arc<dyn SagaStore>,
    pub bus: Arc<dyn EventBus>,
    pub azure: Arc<Azure>,
    pub env: Env,
    pub policy: Policy,
    pub stats: Stats,
}

/// A saga loaded for one handler run, with the events its next save publishes.
struct Txn {
    saga: Saga,
    etag: ETag,
    outbox: Vec<Emit>,
}

fn to_message(e: &Emit, now: OffsetDateTime) -> OutMessage {
    OutMessage {
        id: e.event.id.clone(),
        event_type: e.event.event_type.clone(),
        body: e.event.to_json(),
        not_before: e.not_before.map(|d| now + d),
    }
}

fn secret_id_of(vault: &Vault, name: &str) -> String {
    vault.secret_id(name)
}

impl Engine {
    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// Saves the saga and hands over its pending events (same transaction when
    /// the store carries an outbox; otherwise sent right after the write).
    async fn save(&self, txn: &mut Txn) -> Result<(), EngineError> {
        let now = Self::now();
        txn.saga.updated_at = now;
        let messages: Vec<OutMessage> = txn.outbox.iter().map(|e| to_message(e, now)).collect();
        let outbox: &[OutMessage] = if self.store.delivers_outbox() {
            &messages
        } else {
            &[]
        };
        txn.etag = self
            .store
            .replace(&txn.saga.id, &txn.saga.to_json(), &txn.etag, outbox)
            .await?;
        self.stats.store_writes.fetch_add(1, Ordering::Relaxed);
        if !self.store.delivers_outbox() && !messages.is_empty() {
            self.bus.send(&messages).await?;
        }
        txn.outbox.clear();
        Ok(())
    }

    async fn load(&self, job: &str) -> Result<Option<Txn>, EngineError> {
        let Some(doc) = self.store.get(job).await? else {
            return Ok(None);
        };
        let saga: Saga = serde_json::from_value(doc.doc)
            .map_err(|e| StoreError::Corrupt(format!("{job}: {e}")))?;
        Ok(Some(Txn {
            saga,
            etag: doc.etag,
            outbox: vec![],
        }))
    }

    /// Stores a new job and emits `job.requested`. Returns the job id.
    pub async fn submit(&self, spec: ClusterSpec) -> Result<String, CommandError> {
        spec.validate()
            .map_err(|e| CommandError::Invalid(e.to_string()))?;
        let id = names::new_job_id(&spec);
        let saga = Saga::new(id.clone(), spec, Self::now());
        let emit = decide::job_requested_event(&saga);
        let msg = to_message(&emit, Self::now());
        let outbox = if self.store.delivers_outbox() {
            vec![msg.clone()]
        } else {
            vec![]
        };
        self.store
            .create(&id, &saga.to_json(), &outbox)
            .await
            .map_err(EngineError::from)?;
        self.stats.store_writes.fetch_add(1, Ordering::Relaxed);
        if !self.store.delivers_outbox() {
            self.bus.send(&[msg]).await.map_err(EngineError::from)?;
        }
        Ok(id)
    }

    /// The saga of a job.
    pub async fn status(&self, job: &str) -> Result<Option<Saga>, EngineError> {
        Ok(self.load(job).await?.map(|t| t.saga))
    }

    /// Starts the explicit teardown of a finished job.
    pub async fn request_delete(&self, job: &str) -> Result<(), CommandError> {
        self.command(job, |saga| {
            decide::request_delete(saga).map_err(|m| CommandError::Conflict(m.into()))
        })
        .await
    }

    /// Starts scaling a worker pool of a succeeded job.
    pub async fn request_scale(
        &self,
        job: &str,
        pool: &str,
        count: u32,
    ) -> Result<(), CommandError> {
        self.command(job, |saga| {
            decide::request_scale(saga, pool, count).map_err(|m| {
                if m.contains("within") || m.contains("does not exist") {
                    CommandError::Invalid(m)
                } else {
                    CommandError::Conflict(m)
                }
            })
        })
        .await
    }

    async fn command(
        &self,
        job: &str,
        f: impl Fn(&mut Saga) -> Result<Emit, CommandError>,
    ) -> Result<(), CommandError> {
        for _ in 0..5 {
            let mut txn = self
                .load(job)
                .await?
                .ok_or_else(|| CommandError::NotFound(job.into()))?;
            let emit = f(&mut txn.saga)?;
            txn.outbox.push(emit);
            match self.save(&mut txn).await {
                Err(EngineError::Store(StoreError::PreconditionFailed(_))) => continue,
                other => return other.map_err(CommandError::from),
            }
        }
        Err(CommandError::Conflict(
            "the job changed repeatedly; try again".into(),
        ))
    }

    /// Records a message the bus gave up on, so `status` shows it.
    pub async fn record_dead_letter(
        &self,
        event: &CloudEvent,
        reason: &str,
    ) -> Result<(), EngineError> {
        for _ in 0..5 {
            let Some(mut txn) = self.load(&event.data.job).await? else {
                return Ok(());
            };
            txn.saga
                .dead_letters
                .push(format!("{} ({}): {reason}", event.id, event.event_type));
            match self.save(&mut txn).await {
                Err(EngineError::Store(StoreError::PreconditionFailed(_))) => continue,
                other => return other,
            }
        }
        Ok(())
    }

    /// Handles one delivered event. `Ok` means settle (complete) the message;
    /// `Err` means abandon it so it is delivered again.
    pub async fn handle(&self, event: &CloudEvent) -> Result<(), EngineError> {
        let started = Instant::now();
        let mut result = Ok(());
        for _ in 0..8 {
            result = self.handle_once(event).await;
            match &result {
                Err(EngineError::Store(StoreError::PreconditionFailed(_))) => continue,
                _ => break,
            }
        }
        self.stats.handled.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = self.stats.timings_ms.lock() {
            if t.len() < 1_000_000 {
                t.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        result
    }

    async fn handle_once(&self, event: &CloudEvent) -> Result<(), EngineError> {
        let Some(mut txn) = self.load(&event.data.job).await? else {
            tracing::warn!(job = %event.data.job, id = %event.id, "event for an unknown job ignored");
            return Ok(());
        };
        let decision = decide::decide(&txn.saga, event);
        tracing::debug!(job = %txn.saga.id, event = %event.event_type, ?decision, "decided");
        match decision {
            Decision::Ignore(why) => {
                tracing::debug!(job = %txn.saga.id, id = %event.id, why, "ignored");
                Ok(())
            }
            Decision::Reemit(step) => {
                // Nothing changes but the event: send it again (the bus drops a repeat).
                let msg = to_message(&decide::step_succeeded_event(&txn.saga, step), Self::now());
                self.bus.send(&[msg]).await?;
                Ok(())
            }
            Decision::Forward(step) => self.forward(&mut txn, step).await,
            Decision::Poll => self.poll(&mut txn).await,
            Decision::Undo => self.undo(&mut txn).await,
            Decision::Scale { pool, count } => self.scale(&mut txn, &pool, count).await,
        }
    }

    /// Runs (or continues) a forward step from its first unfinished operation.
    async fn forward(&self, txn: &mut Txn, step: StepName) -> Result<(), EngineError> {
        decide::start_step(&mut txn.saga, step, Self::now());
        for op in steps::plan(step, &txn.saga, &self.env) {
            let (id, kind) = match &op {
                Op::Arm {
                    id, api_version, ..
                } => (
                    id.to_string(),
                    ResourceKind::Arm {
                        api_version: api_version.to_string(),
                    },
                ),
                Op::ScaleSet { id, .. } => (
                    id.to_string(),
                    ResourceKind::Arm {
                        api_version: api::COMPUTE.into(),
                    },
                ),
                Op::Secret { name, .. } => (
                    secret_id_of(&self.azure.vault, name),
                    ResourceKind::Secret { name: name.clone() },
                ),
                Op::Blob { name, .. } => (
                    self.azure.staging.blob_url(name),
                    ResourceKind::Blob { name: name.clone() },
                ),
                Op::AwaitNodes { scale_sets } => return self.check_nodes(txn, scale_sets).await,
            };
            let index = match txn.saga.resource_index(&id) {
                Some(i) if txn.saga.resources[i].state == ResourceState::Created => continue,
                Some(i) => i,
                None => {
                    // Record the intent before the side effect.
                    txn.saga.resources.push(ResourceRecord {
                        id: id.clone(),
                        step,
                        kind,
                        state: ResourceState::Creating,
                    });
                    self.save(txn).await?;
                    txn.saga.resources.len() - 1
                }
            };
            match self.create(txn, &op).await {
                Ok(None) => txn.saga.resources[index].state = ResourceState::Created,
                Ok(Some(poll)) => {
                    // `Retry-After: 0` means "check now": one immediate check
                    // instead of a scheduled event; anything else is scheduled.
                    if poll.retry_after_s == 0 {
                        match self.azure.arm.poll(&poll).await {
                            Ok(PollOutcome::Succeeded) => {
                                txn.saga.resources[index].state = ResourceState::Created;
                                continue;
                            }
                            Ok(PollOutcome::Failed(e)) => {
                                return self.step_failed(txn, step, &e).await
                            }
                            _ => {}
                        }
                    }
                    let after = poll.retry_after();
                    let emit = decide::wait_for(
                        &mut txn.saga,
                        PendingPurpose::Create {
                            step,
                            resource: index,
                        },
                        Some(poll),
                        after,
                        Self::now(),
                    );
                    txn.outbox.push(emit);
                    return self.save(txn).await;
                }
                Err(e) => return self.step_failed(txn, step, &e).await,
            }
        }
        let emits = decide::finish_step(&mut txn.saga, step, Self::now());
        txn.outbox.extend(emits);
        self.save(txn).await
    }

    async fn step_failed(
        &self,
        txn: &mut Txn,
        step: StepName,
        e: &AzureError,
    ) -> Result<(), EngineError> {
        tracing::warn!(job = %txn.saga.id, %step, code = %e.code, retryable = e.is_retryable(), "step error");
        let emits = decide::fail_step(&mut txn.saga, step, e, &self.policy, Self::now());
        txn.outbox.extend(emits);
        self.save(txn).await
    }

    /// Performs one create; `Some(poll)` when Azure is still working on it.
    async fn create(
        &self,
        txn: &Txn,
        op: &Op,
    ) -> Result<Option<flotilla_azure::PollState>, AzureError> {
        let job = &txn.saga.id;
        let tags = names::tags(job, &txn.saga.spec);
        match op {
            Op::Arm {
                id,
                api_version,
                body,
            } => Ok(self.azure.arm.put(id, api_version, body).await?.poll),
            Op::ScaleSet { id, body } => {
                let key = self
                    .azure
                    .vault
                    .get(&names::storage_key_secret(job))
                    .await?
                    .ok_or_else(|| {
                        AzureError::terminal(
                            "SecretNotFound",
                            format!(
                                "{} is missing; was `keys` undone?",
                                names::storage_key_secret(job)
                            ),
                        )
                    })?;
                let mut body = body.clone();
                if let Some(ext) = body.pointer_mut("/properties/virtualMachineProfile/extensionProfile/extensions/0/properties/protectedSettings") {
                    ext["storageAccountKey"] = serde_json::Value::String(key);
                }
                Ok(self.azure.arm.put(id, api::COMPUTE, &body).await?.poll)
            }
            Op::Secret { name, source } => {
                let value = match source {
                    SecretSource::StorageKey => {
                        let keys = self.azure.arm.post_action(&self.env.staging_account_id, "listKeys", api::STORAGE, None).await?;
                        let keys: StorageKeys = serde_json::from_value(keys)
                            .map_err(|e| AzureError::terminal("UnexpectedResponse", format!("listKeys: {e}")))?;
                        keys.keys.into_iter().next().map(|k| k.value).ok_or_else(|| AzureError::terminal("NoStorageKey", "listKeys returned no key"))?
                    }
                    SecretSource::ServicePrincipal => self.azure.sp_client_secret.clone().ok_or_else(|| {
                        AzureError::terminal("ServicePrincipalNotConfigured", "identity is service-principal but CLUSTER_SP_CLIENT_SECRET is not set")
                    })?,
                };
                self.azure.vault.set(name, &value, &tags).await?;
                Ok(None)
            }
            Op::Blob {
                name,
                content,
                content_type,
            } => {
                // Blob metadata names are C# identifiers: `flotilla-job` becomes `flotilla_job`.
                let metadata = tags
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
                            v.clone(),
                        )
                    })
                    .collect();
                self.azure
                    .staging
                    .put(name, content.clone(), content_type, &metadata)
                    .await?;
                Ok(None)
            }
            Op::AwaitNodes { .. } => Ok(None),
        }
    }

    /// `join`: have all nodes of these scale sets run their init script?
    async fn check_nodes(
        &self,
        txn: &mut Txn,
        scale_sets: &[(ResourceId, u32)],
    ) -> Result<(), EngineError> {
        let mut all_joined = true;
        for (id, expected) in scale_sets {
            let view = match self
                .azure
                .arm
                .get_sub(id, Some("instanceView"), api::COMPUTE)
                .await
            {
                Ok(Some(v)) => serde_json::from_value::<InstanceView>(v).unwrap_or_default(),
                Ok(None) => {
                    let e = AzureError::terminal("ScaleSetMissing", format!("{id} does not exist"));
                    return self.step_failed(txn, StepName::Join, &e).await;
                }
                Err(e) => return self.step_failed(txn, StepName::Join, &e).await,
            };
            let (ok, failed) = view.extension_counts(names::INIT_EXTENSION);
            if failed > 0 {
                let e = AzureError::terminal(
                    "NodeInitFailed",
                    format!(
                        "{failed} node(s) of {} failed to run the init script",
                        id.name()
                    ),
                );
                return self.step_failed(txn, StepName::Join, &e).await;
            }
            if ok < *expected {
                all_joined = false;
            }
        }
        if all_joined {
            let emits = decide::finish_step(&mut txn.saga, StepName::Join, Self::now());
            txn.outbox.extend(emits);
            return self.save(txn).await;
        }
        let checks = txn.saga.pending.as_ref().map(|p| p.checks).unwrap_or(0);
        if checks >= self.policy.max_join_checks {
            let e = AzureError::terminal(
                "JoinTimeout",
                format!("nodes did not join after {checks} checks"),
            );
            return self.step_failed(txn, StepName::Join, &e).await;
        }
        let emit = decide::wait_for(
            &mut txn.saga,
            PendingPurpose::JoinCheck,
            None,
            self.policy.join_interval,
            Self::now(),
        );
        txn.outbox.push(emit);
        self.save(txn).await
    }

    /// Re-checks the pending operation and carries on from it.
    async fn poll(&self, txn: &mut Txn) -> Result<(), EngineError> {
        let Some(pending) = txn.saga.pending.clone() else {
            return Ok(());
        };
        if pending.purpose == PendingPurpose::JoinCheck {
            return self.forward(txn, StepName::Join).await;
        }
        let Some(poll) = &pending.poll else {
            return Ok(());
        };
        let outcome = self.azure.arm.poll(poll).await;
        match (pending.purpose.clone(), outcome) {
            (purpose, Ok(PollOutcome::Pending { retry_after })) => {
                let emit = decide::wait_for(
                    &mut txn.saga,
                    purpose,
                    Some(poll.clone()),
                    retry_after,
                    Self::now(),
                );
                txn.outbox.push(emit);
                self.save(txn).await
            }
            (PendingPurpose::Create { step, resource }, Ok(PollOutcome::Succeeded)) => {
                txn.saga.resources[resource].state = ResourceState::Created;
                txn.saga.pending = None;
                self.forward(txn, step).await
            }
            (PendingPurpose::Create { step, .. }, Ok(PollOutcome::Failed(e)) | Err(e)) => {
                self.step_failed(txn, step, &e).await
            }
            (PendingPurpose::Delete { resource }, Ok(PollOutcome::Succeeded)) => {
                let emits = decide::resource_deleted(&mut txn.saga, resource, Self::now());
                txn.outbox.extend(emits);
                self.undo(txn).await
            }
            (PendingPurpose::Delete { resource }, Ok(PollOutcome::Failed(e)) | Err(e)) => {
                let emits =
                    decide::fail_undo(&mut txn.saga, resource, &e, &self.policy, Self::now());
                txn.outbox.extend(emits);
                self.save(txn).await
            }
            (PendingPurpose::Scale { pool, count }, Ok(PollOutcome::Succeeded)) => {
                let emit = decide::finish_scale(&mut txn.saga, &pool, count);
                txn.outbox.push(emit);
                self.save(txn).await
            }
            (PendingPurpose::Scale { .. }, Ok(PollOutcome::Failed(e)) | Err(e)) => {
                txn.saga.pending = None;
                txn.saga.error = Some(ErrorInfo::from(&e));
                self.save(txn).await
            }
            (PendingPurpose::JoinCheck, _) => Ok(()),
        }
    }

    /// Deletes recorded resources, newest first, until none is left.
    async fn undo(&self, txn: &mut Txn) -> Result<(), EngineError> {
        loop {
            if !matches!(
                txn.saga.status,
                JobStatus::Compensating | JobStatus::Deleting
            ) {
                return self.save(txn).await;
            }
            let Some(index) = decide::next_undo(&txn.saga) else {
                let emits = decide::finish_undo(&mut txn.saga, Self::now());
                txn.outbox.extend(emits);
                return self.save(txn).await;
            };
            let record = txn.saga.resources[index].clone();
            let result = match &record.kind {
                ResourceKind::Arm { api_version } => match ResourceId::parse(&record.id) {
                    Ok(id) => self.azure.arm.delete(&id, api_version).await,
                    Err(e) => Err(AzureError::terminal("InvalidResourceId", e)),
                },
                ResourceKind::Secret { name } => self
                    .azure
                    .vault
                    .delete(name)
                    .await
                    .map(|_| DeleteStart::Gone),
                ResourceKind::Blob { name } => self
                    .azure
                    .staging
                    .delete(name)
                    .await
                    .map(|_| DeleteStart::Gone),
            };
            match result {
                Ok(DeleteStart::Gone) => {
                    let emits = decide::resource_deleted(&mut txn.saga, index, Self::now());
                    txn.outbox.extend(emits);
                }
                Ok(DeleteStart::Pending(poll)) => {
                    if poll.retry_after_s == 0 {
                        if let Ok(PollOutcome::Succeeded) = self.azure.arm.poll(&poll).await {
                            let emits = decide::resource_deleted(&mut txn.saga, index, Self::now());
                            txn.outbox.extend(emits);
                            continue;
                        }
                    }
                    txn.saga.resources[index].state = ResourceState::Deleting;
                    let after = poll.retry_after();
                    let emit = decide::wait_for(
                        &mut txn.saga,
                        PendingPurpose::Delete { resource: index },
                        Some(poll),
                        after,
                        Self::now(),
                    );
                    txn.outbox.push(emit);
                    return self.save(txn).await;
                }
                Err(e) => {
                    tracing::warn!(job = %txn.saga.id, resource = %record.id, code = %e.code, "undo failed");
                    let emits =
                        decide::fail_undo(&mut txn.saga, index, &e, &self.policy, Self::now());
                    txn.outbox.extend(emits);
                    return self.save(txn).await;
                }
            }
        }
    }

    async fn scale(&self, txn: &mut Txn, pool: &str, count: u32) -> Result<(), EngineError> {
        let id = steps::rg_id(
            &txn.saga,
            &self.env,
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            &names::pool_vmss(&txn.saga.id, pool),
        );
        let body = serde_json::json!({ "sku": { "capacity": count } });
        match self.azure.arm.patch(&id, api::COMPUTE, &body).await {
            Ok(start) => match start.poll {
                Some(poll) => {
                    let after = poll.retry_after();
                    let emit = decide::wait_for(
                        &mut txn.saga,
                        PendingPurpose::Scale {
                            pool: pool.into(),
                            count,
                        },
                        Some(poll),
                        after,
                        Self::now(),
                    );
                    txn.outbox.push(emit);
                    self.save(txn).await
                }
                None => {
                    let emit = decide::finish_scale(&mut txn.saga, pool, count);
                    txn.outbox.push(emit);
                    self.save(txn).await
                }
            },
            Err(e) => {
                txn.saga.error = Some(ErrorInfo::from(&e));
                self.save(txn).await
            }
        }
    }
}

/// Consumes `source` until `stop` turns true: each message is handled, then
/// completed; a handler error abandons it (redelivery). On the last allowed
/// delivery the failure is first recorded in the saga (`deadLetters`), so the
/// job's status shows the message the bus is about to dead-letter.
pub async fn run_worker(
    engine: Arc<Engine>,
    source: Arc<dyn EventBus>,
    max_delivery_count: u32,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let delivery = match source.receive(Duration::from_millis(200)).await {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "bus receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let event = match CloudEvent::from_json(&delivery.body) {
            Ok(e) => e,
            Err(reason) => {
                tracing::error!(id = %delivery.message_id, %reason, "poison message");
                let _ = source.dead_letter(&delivery, &reason).await;
                continue;
            }
        };
        match engine.handle(&event).await {
            Ok(()) => {
                if let Err(e) = source.complete(&delivery).await {
                    tracing::warn!(error = %e, "complete failed");
                }
            }
            Err(e) => {
                tracing::warn!(id = %event.id, error = %e, delivery = delivery.delivery_count, "handler failed; abandoning");
                if delivery.delivery_count >= max_delivery_count {
                    let _ = engine.record_dead_letter(&event, &e.to_string()).await;
                }
                let _ = source.abandon(&delivery).await;
            }
        }
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
