//! Forward steps: a step's operations in order (intent recorded before each
//! create, most of them by the write that ended the step before),
//! long-running operations saved and re-checked by scheduled events, `join`'s
//! node checks, and a step's failure handed to `decide`.

use super::txn::Txn;
use super::{Engine, EngineError};
use crate::decide::{self, Decision};
use crate::events::CloudEvent;
use crate::names;
use crate::ports::StoreError;
use crate::saga::{
    ErrorInfo, PendingPurpose, ResourceKind, ResourceRecord, ResourceState, StepName,
};
use crate::spec::{IdentityMode, StagingAccess};
use crate::steps::node::StagingCredential;
use crate::steps::{self, Op, SecretSource};
use crate::telemetry;
use flotilla_azure::arm::PollOutcome;
use flotilla_azure::models::{api, StorageKeys};
use flotilla_azure::{AzureError, PutStart, ResourceId};
use std::time::Instant;
use tracing::Instrument;

/// The span of one run of a forward step (a step that waits runs again after
/// each poll, so a step may have several).
fn step_span(job: &str, step: StepName) -> tracing::Span {
    tracing::info_span!(
        "flotilla.step",
        otel.name = step.as_str(),
        flotilla.job = %job,
        flotilla.step = step.as_str(),
    )
}

/// Records the principal id a create answered with (a scale set's
/// system-assigned identity, a user-assigned identity's own), so that
/// neither a role assignment nor the job's outputs read the resource again.
fn record_principal(saga: &mut crate::saga::Saga, id: &ResourceId, answered: &PutStart) {
    if let Some(principal) = &answered.principal_id {
        saga.principals
            .insert(id.name().to_string(), principal.clone());
    }
}

/// How far [`Engine::run_ops`] got.
pub(super) enum Ran {
    /// Every operation's resource exists.
    Done,
    /// The node check comes next (the caller runs it), then `rest`.
    AwaitNodes {
        scale_sets: Vec<(ResourceId, u32)>,
        rest: Vec<(StepName, Op)>,
    },
    /// Azure is still working on `resources[resource]` of `step`; re-check with `poll`.
    Waiting {
        step: StepName,
        poll: flotilla_azure::PollState,
        resource: usize,
    },
    /// An operation of `step` failed.
    Failed { step: StepName, error: AzureError },
}

impl Engine {
    /// Handles one delivered event. `Ok` means settle (complete) the message;
    /// `Err` means abandon it so it is delivered again.
    pub async fn handle(&self, event: &CloudEvent) -> Result<(), EngineError> {
        let span = tracing::info_span!(
            "flotilla.handle",
            otel.name = %event.event_type(),
            otel.kind = "consumer",
            flotilla.job = %event.data().job,
            cloudevents.event_id = %event.id(),
            cloudevents.event_type = %event.event_type(),
            messaging.system = "servicebus",
            messaging.operation.type = "process",
            messaging.message.id = %event.id(),
            trace_id = tracing::field::Empty,
        );
        match event.trace_context() {
            Some(parent) => {
                telemetry::record_wait(event, &parent, self.now());
                telemetry::continue_trace(parent, span, self.handle_traced(event)).await
            }
            None => telemetry::start_trace(span, self.handle_traced(event)).await,
        }
    }

    async fn handle_traced(&self, event: &CloudEvent) -> Result<(), EngineError> {
        let started = Instant::now();
        let mut result = Ok(());
        for _ in 0..8 {
            result = self.handle_once(event).await;
            match &result {
                Err(EngineError::Store(StoreError::PreconditionFailed(_))) => continue,
                _ => break,
            }
        }
        self.stats
            .timed(event.subject(), started.elapsed().as_secs_f64() * 1000.0);
        result
    }

    async fn handle_once(&self, event: &CloudEvent) -> Result<(), EngineError> {
        // Addressed to no handler (a notification, the last step's success):
        // `decide` ignores it whatever the saga says, so the saga is not
        // read. On Azure no subscription takes these; a single queue
        // (the embedded bus, `flotilla worker`) hands them to every consumer.
        if !event.has_handler() {
            tracing::debug!(job = %event.data().job, id = %event.id(), "a notification: nothing to do");
            return Ok(());
        }
        let Some(mut txn) = self.load(&event.data().job, Some(event.id())).await? else {
            tracing::warn!(job = %event.data().job, id = %event.id(), "event for an unknown job ignored");
            return Ok(());
        };
        let decision = decide::decide(&txn.saga, event);
        tracing::debug!(job = %txn.saga.id, event = %event.event_type(), ?decision, "decided");
        match decision {
            Decision::Ignore(why) => {
                tracing::debug!(job = %txn.saga.id, id = %event.id(), why, "ignored");
                Ok(())
            }
            Decision::Reemit(step) => {
                // Nothing changes but the event: send it again (the bus drops a repeat).
                self.resend(&decide::step_succeeded_event(&txn.saga, step))
                    .await
            }
            Decision::Forward(step) => {
                let span = step_span(&txn.saga.id, step);
                self.forward(&mut txn, step).instrument(span).await
            }
            Decision::Poll => {
                let span = tracing::info_span!(
                    "flotilla.poll",
                    flotilla.job = %txn.saga.id,
                    flotilla.pending = ?txn.saga.pending.as_ref().map(|p| &p.purpose),
                );
                self.poll(&mut txn).instrument(span).await
            }
            Decision::Undo => {
                let span = tracing::info_span!("flotilla.compensate", flotilla.job = %txn.saga.id);
                self.undo(&mut txn).instrument(span).await
            }
            Decision::Scale { pool, count } => {
                let span = tracing::info_span!(
                    "flotilla.scale",
                    flotilla.job = %txn.saga.id,
                    flotilla.pool = %pool,
                    flotilla.count = count,
                );
                self.scale(&mut txn, &pool, count).instrument(span).await
            }
            Decision::AddPool { pool } => {
                let span = tracing::info_span!("flotilla.pool_add", flotilla.job = %txn.saga.id, flotilla.pool = %pool.name);
                self.add_pool(&mut txn, pool).instrument(span).await
            }
            Decision::RemovePool { pool } => {
                let span = tracing::info_span!("flotilla.pool_remove", flotilla.job = %txn.saga.id, flotilla.pool = %pool);
                self.remove_pool(&mut txn, &pool).instrument(span).await
            }
        }
    }

    /// Runs (or continues) a forward step from its first unfinished operation.
    async fn forward(&self, txn: &mut Txn, step: StepName) -> Result<(), EngineError> {
        decide::start_step(&mut txn.saga, step, self.now());
        // Pre-flight is the job's first action, before `stage` writes
        // anything (unless the edge ran it already). A transient read error
        // retries the step like any other; problems reject the job.
        if step == StepName::Stage
            && txn.saga.preflight.is_none()
            && txn
                .saga
                .resources
                .iter()
                .all(|r| r.state == ResourceState::Planned)
        {
            match self.preflight(&txn.saga.spec, &txn.saga.id).await {
                Ok(verdict) if verdict.passed() => {
                    // Saved before any side effect: a crash before this
                    // write only runs pre-flight again, and after it the
                    // job is never rejected (it may have created something).
                    // Jobs checked at the edge (HTTP, `up`) skip this write.
                    decide::preflight_passed(&mut txn.saga, verdict);
                    self.save(txn).await?;
                }
                Ok(verdict) => {
                    tracing::warn!(job = %txn.saga.id, problems = %verdict.summary(), "pre-flight rejected the job");
                    let emits = decide::reject(&mut txn.saga, verdict, self.now());
                    txn.outbox.extend(emits);
                    return self.save(txn).await;
                }
                Err(e) => return self.step_failed(txn, step, &e).await,
            }
        }
        let mut ops: Vec<(StepName, Op)> = steps::plan(step, &txn.saga, &self.env)
            .into_iter()
            .map(|op| (step, op))
            .collect();
        loop {
            match self.run_ops(txn, ops).await? {
                Ran::Done => break,
                Ran::AwaitNodes { scale_sets, rest } => {
                    if !self.check_nodes(txn, &scale_sets).await? {
                        return Ok(());
                    }
                    ops = rest;
                    continue;
                }
                Ran::Waiting {
                    step,
                    poll,
                    resource,
                } => {
                    let after = poll.retry_after();
                    let emit = decide::wait_for(
                        &mut txn.saga,
                        PendingPurpose::Create { step, resource },
                        Some(poll),
                        after,
                        self.now(),
                    );
                    txn.outbox.push(emit);
                    return self.save(txn).await;
                }
                Ran::Failed { step, error } => return self.step_failed(txn, step, &error).await,
            }
        }
        let emits = decide::finish_step(&mut txn.saga, step, self.now());
        if let Some(next) = step.next() {
            self.plan_ahead(&mut txn.saga, next);
        }
        txn.outbox.extend(emits);
        self.save(txn).await
    }

    /// The resource an operation records, and how undo finds it (`None` for `AwaitNodes`).
    pub(super) fn intent(&self, op: &Op) -> Option<(String, ResourceKind)> {
        Some(match op {
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
                self.azure.secrets.secret_id(name),
                ResourceKind::Secret { name: name.clone() },
            ),
            Op::Blob { name, .. } => (
                self.azure.blobs.blob_url(name),
                ResourceKind::Blob { name: name.clone() },
            ),
            Op::RoleAssignment { id, .. } => (
                id.to_string(),
                ResourceKind::Arm {
                    api_version: api::AUTHORIZATION.into(),
                },
            ),
            Op::AttachNsg { subnet, .. } => (
                subnet.to_string(),
                ResourceKind::SubnetNsg { previous: None },
            ),
            Op::AwaitNodes { .. } => return None,
        })
    }

    /// Records the intents of `step`'s creates as [`ResourceState::Planned`]
    /// in `saga`, for the write under way (the one that ends the step before,
    /// or creates the job) to carry: the step's first handler then has
    /// nothing to write before its first send, and a step costs one write.
    /// An existing subnet's NSG attachment is left to its step, because its
    /// intent needs a read (the NSG the subnet has).
    pub(super) fn plan_ahead(&self, saga: &mut crate::saga::Saga, step: StepName) {
        for op in steps::outline(step, saga, &self.env) {
            if matches!(op, Op::AttachNsg { .. }) {
                continue;
            }
            let Some((id, kind)) = self.intent(&op) else {
                continue;
            };
            if saga.resource_index(&id).is_none() {
                saga.resources.push(ResourceRecord {
                    id,
                    step,
                    kind,
                    state: ResourceState::Planned,
                    reopened: 0,
                });
            }
        }
    }

    /// Runs create operations in order, each recorded under its step, until
    /// one must wait, fails, or is the node check (which the caller runs).
    ///
    /// Every operation's intent is durable before its first send: recorded
    /// ahead ([`Engine::plan_ahead`]), or, for those not yet recorded, in one
    /// write before any side effect. A handler whose saga changed after it
    /// loaded or wrote it (a duplicate delivery that went ahead) must not
    /// send them too, so before each further send the saga is checked to be
    /// unchanged. Two deliveries of one event running at once (possible only
    /// once a bus lock is lost) may both send a step's first create: it is
    /// the same idempotent PUT, and whichever handler saves first is the one
    /// whose operation the saga tracks. An existing subnet's NSG records,
    /// with its intent, the NSG the subnet had, so undo can put it back.
    pub(super) async fn run_ops(
        &self,
        txn: &mut Txn,
        ops: Vec<(StepName, Op)>,
    ) -> Result<Ran, EngineError> {
        // This handler's own intents, not sent yet: recorded ahead, or now.
        let mut unsent = vec![];
        let mut recorded = false;
        for (step, op) in &ops {
            let Some((id, kind)) = self.intent(op) else {
                continue;
            };
            if let Some(index) = txn.saga.resource_index(&id) {
                // Recorded ahead and sent by nobody who saved: this
                // handler's own, with no write needed first.
                let r = &mut txn.saga.resources[index];
                if r.state == ResourceState::Planned {
                    r.state = ResourceState::Creating;
                    unsent.push(index);
                }
            } else {
                let kind = match op {
                    Op::AttachNsg { subnet, .. } => match self.subnet_nsg(subnet).await {
                        Ok(previous) => ResourceKind::SubnetNsg { previous },
                        Err(error) => return Ok(Ran::Failed { step: *step, error }),
                    },
                    _ => kind,
                };
                txn.saga.resources.push(ResourceRecord {
                    id,
                    step: *step,
                    kind,
                    state: ResourceState::Creating,
                    reopened: 0,
                });
                unsent.push(txn.saga.resources.len() - 1);
                recorded = true;
            }
        }
        if recorded {
            self.save(txn).await?;
        }
        // When it stops before some of them (a wait, a failure, the node
        // check), the write it stops with records those as `Planned` again,
        // so whoever goes on sends them without a claim write of its own.
        let ran = self.send_ops(txn, ops, &mut unsent).await?;
        if !matches!(ran, Ran::Done) {
            for i in unsent {
                txn.saga.resources[i].state = ResourceState::Planned;
            }
        }
        Ok(ran)
    }

    /// [`Engine::run_ops`]'s sends, in order. `unsent` are this handler's
    /// own intents, which it sends without a claim write; each one sent
    /// leaves it.
    async fn send_ops(
        &self,
        txn: &mut Txn,
        ops: Vec<(StepName, Op)>,
        unsent: &mut Vec<usize>,
    ) -> Result<Ran, EngineError> {
        let mut sent = false;
        let mut ops = ops.into_iter();
        while let Some((step, op)) = ops.next() {
            let Some((id, _)) = self.intent(&op) else {
                if let Op::AwaitNodes { scale_sets } = op {
                    return Ok(Ran::AwaitNodes {
                        scale_sets,
                        rest: ops.collect(),
                    });
                }
                continue;
            };
            let Some(index) = txn.saga.resource_index(&id) else {
                continue;
            };
            if txn.saga.resources[index].state == ResourceState::Created {
                continue;
            }
            if !unsent.contains(&index) {
                // Sent before (a retry, a crash, a duplicate delivery):
                // claim it with a write first, so of two handlers the one
                // whose write lost never sends, and the operation the
                // saga goes on to track is always the newest one sent.
                self.save(txn).await?;
            } else if sent && !self.unchanged(txn).await? {
                return Err(StoreError::PreconditionFailed(txn.saga.id.clone()).into());
            }
            sent = true;
            if let Op::RoleAssignment { principal, .. } = &op {
                if let Err(error) = self.resolve_principal(txn, principal).await {
                    return Ok(Ran::Failed { step, error });
                }
            }
            unsent.retain(|&i| i != index);
            match self.run_op(txn, &op).await {
                Ok(None) => decide::resource_created(&mut txn.saga, index),
                Ok(Some(poll)) => {
                    // `Retry-After: 0` means "check now": one immediate check
                    // instead of a scheduled event; anything else is scheduled.
                    if poll.retry_after_s == 0 {
                        match self.azure.arm.poll(&poll).await {
                            Ok(PollOutcome::Succeeded) => {
                                decide::resource_created(&mut txn.saga, index);
                                continue;
                            }
                            Ok(PollOutcome::Failed(error)) => {
                                return Ok(Ran::Failed { step, error })
                            }
                            _ => {}
                        }
                    }
                    return Ok(Ran::Waiting {
                        step,
                        poll,
                        resource: index,
                    });
                }
                Err(error) => return Ok(Ran::Failed { step, error }),
            }
        }
        Ok(Ran::Done)
    }

    /// Whether the saga is still as this handler last saved or loaded it.
    async fn unchanged(&self, txn: &Txn) -> Result<bool, EngineError> {
        Ok(self.store.etag(&txn.saga.id).await?.as_ref() == Some(&txn.etag))
    }

    async fn step_failed(
        &self,
        txn: &mut Txn,
        step: StepName,
        e: &AzureError,
    ) -> Result<(), EngineError> {
        tracing::warn!(job = %txn.saga.id, %step, code = %e.code, retryable = e.is_retryable(), "step error");
        let emits = decide::fail_step(&mut txn.saga, step, e, &self.policy, self.now());
        txn.outbox.extend(emits);
        self.save(txn).await
    }

    /// The value of a secret step `keys` wrote; its absence is terminal.
    async fn secret_from_keys(&self, name: &str) -> Result<String, AzureError> {
        self.azure.secrets.get(name).await?.ok_or_else(|| {
            AzureError::terminal(
                "SecretNotFound",
                format!("{name} is missing; was `keys` undone?"),
            )
        })
    }

    /// Records the principal id of a role assignment's identity in the saga
    /// (saved with the step's next write), reading a scale set's
    /// system-assigned identity from ARM the first time.
    async fn resolve_principal(
        &self,
        txn: &mut Txn,
        principal: &steps::rbac::Principal,
    ) -> Result<(), AzureError> {
        let key = principal.key();
        if txn.saga.principals.contains_key(&key) {
            return Ok(());
        }
        let (id, api_version, pointer, missing) = match principal {
            steps::rbac::Principal::ServicePrincipal(object_id) => {
                txn.saga.principals.insert(key, object_id.clone());
                return Ok(());
            }
            steps::rbac::Principal::ScaleSet(id) => (
                id,
                api::COMPUTE,
                "/identity/principalId",
                "has no system-assigned identity to give a role to",
            ),
            steps::rbac::Principal::UserAssigned(id) => (
                id,
                api::MANAGED_IDENTITY,
                "/properties/principalId",
                "does not exist or has no principal id",
            ),
        };
        let body = self.azure.arm.get(id, None, api_version).await?;
        let principal_id = body
            .as_ref()
            .and_then(|b| b.pointer(pointer))
            .and_then(|p| p.as_str())
            .map(str::to_string)
            .ok_or_else(|| AzureError::terminal("IdentityNotFound", format!("{id} {missing}")))?;
        txn.saga.principals.insert(key, principal_id);
        Ok(())
    }

    /// Performs one create; `Some(poll)` when Azure is still working on it.
    async fn run_op(
        &self,
        txn: &mut Txn,
        op: &Op,
    ) -> Result<Option<flotilla_azure::PollState>, AzureError> {
        let job = txn.saga.id.clone();
        // The tags secrets and blobs carry (ARM bodies carry their own).
        let tags = || names::tags(&job, &txn.saga.spec);
        match op {
            Op::Arm {
                id,
                api_version,
                body,
            } => {
                let started = self.azure.arm.put(id, api_version, body).await?;
                record_principal(&mut txn.saga, id, &started);
                Ok(started.poll)
            }
            Op::ScaleSet { id, body } => {
                let key;
                let credential = match txn.saga.spec.staging.access {
                    StagingAccess::AccountKey => {
                        key = self
                            .secret_from_keys(&names::storage_key_secret(&job))
                            .await?;
                        StagingCredential::AccountKey(&key)
                    }
                    StagingAccess::Identity => {
                        let node = names::node_identity(&job);
                        let object_id = txn.saga.principals.get(&node).ok_or_else(|| {
                            AzureError::terminal(
                                "IdentityNotFound",
                                format!(
                                    "the node identity {node} was not created; was `keys` undone?"
                                ),
                            )
                        })?;
                        StagingCredential::NodeIdentity { object_id }
                    }
                };
                let sp_secret = match txn.saga.spec.identity {
                    IdentityMode::ServicePrincipal => {
                        Some(self.secret_from_keys(&names::sp_secret(&job)).await?)
                    }
                    IdentityMode::ManagedIdentity => None,
                };
                let mut body = body.clone();
                steps::node::seal(&mut body, credential, sp_secret.as_deref());
                let started = self.azure.arm.put(id, api::COMPUTE, &body).await?;
                record_principal(&mut txn.saga, id, &started);
                Ok(started.poll)
            }
            Op::RoleAssignment {
                id,
                role,
                principal,
                condition,
            } => {
                let principal_id = txn.saga.principals.get(&principal.key()).ok_or_else(|| {
                    AzureError::terminal("IdentityNotFound", "principal not resolved")
                })?;
                let body = steps::rbac::body(
                    &self.env.subscription_id,
                    role,
                    principal_id,
                    condition.as_deref(),
                );
                match self.azure.arm.put(id, api::AUTHORIZATION, &body).await {
                    // The same role for the same principal at the same scope
                    // under another name (given outside flotilla): what this
                    // step wants holds already.
                    Err(e) if e.code == "RoleAssignmentExists" => Ok(None),
                    other => Ok(other?.poll),
                }
            }
            Op::Secret { name, source } => {
                let value = match source {
                    // Written by the nodes (whose scale sets `keys` precedes);
                    // a placeholder until then, created only where there is
                    // none: a handler that lost its claim may still be
                    // retrying this write after the first master published.
                    SecretSource::Node => {
                        self.azure
                            .secrets
                            .create_if_absent(name, names::PENDING_SECRET, &tags())
                            .await?;
                        return Ok(None);
                    }
                    SecretSource::StorageKey => {
                        let keys = self.azure.arm.action(&self.env.staging_account_id, "listKeys", api::STORAGE).await?;
                        let keys: StorageKeys = serde_json::from_value(keys)
                            .map_err(|e| AzureError::terminal("UnexpectedResponse", format!("listKeys: {e}")))?;
                        keys.keys.into_iter().next().map(|k| k.value).ok_or_else(|| AzureError::terminal("NoStorageKey", "listKeys returned no key"))?
                    }
                    SecretSource::ServicePrincipal => self.azure.sp_client_secret.clone().ok_or_else(|| {
                        AzureError::terminal("ServicePrincipalNotConfigured", "identity is service-principal but CLUSTER_SP_CLIENT_SECRET is not set")
                    })?,
                    SecretSource::Outputs => {
                        steps::join::outputs(&txn.saga, &self.env, &self.join_ports()).await?.to_string()
                    }
                };
                self.azure.secrets.set(name, &value, &tags()).await?;
                Ok(None)
            }
            Op::Blob {
                name,
                content,
                content_type,
            } => {
                // Blob metadata names are C# identifiers: `flotilla-job` becomes `flotilla_job`.
                let metadata = tags()
                    .iter()
                    .map(|(k, v)| (names::blob_metadata_name(k), v.clone()))
                    .collect();
                self.azure
                    .blobs
                    .put(name, content.clone(), content_type, &metadata)
                    .await?;
                Ok(None)
            }
            Op::AttachNsg { subnet, nsg } => {
                self.set_subnet_nsg(subnet, Some(&nsg.to_string()), false)
                    .await
            }
            Op::AwaitNodes { .. } => Ok(None),
        }
    }

    /// What `steps::join::check` reads through.
    pub(super) fn join_ports(&self) -> steps::join::Ports<'_> {
        steps::join::Ports {
            arm: &*self.azure.arm,
            secrets: &*self.azure.secrets,
            kube: &*self.azure.kube,
        }
    }

    /// `join`: one check of the expected nodes (see `steps::join::check`).
    /// `true` when every node is Ready (the step goes on to its next
    /// operation); otherwise the step is failed, or checked again after
    /// `join_interval`, and saved.
    async fn check_nodes(
        &self,
        txn: &mut Txn,
        scale_sets: &[(ResourceId, u32)],
    ) -> Result<bool, EngineError> {
        let checks = txn.saga.pending.as_ref().map(|p| p.checks).unwrap_or(0);
        let ports = self.join_ports();
        let last = checks >= self.policy.max_join_checks;
        match steps::join::check(&txn.saga, scale_sets, &ports, last, checks).await {
            steps::join::Verdict::Joined => {
                // The re-check that found them is done with.
                txn.saga.pending = None;
                Ok(true)
            }
            steps::join::Verdict::Failed(e) => {
                self.step_failed(txn, StepName::Join, &e).await?;
                Ok(false)
            }
            steps::join::Verdict::Repair(id) => {
                self.repair(txn, &id).await?;
                Ok(false)
            }
            steps::join::Verdict::Waiting(why) => {
                tracing::debug!(job = %txn.saga.id, checks, %why, "nodes not joined yet");
                self.check_again(txn, PendingPurpose::JoinCheck);
                self.save(txn).await?;
                Ok(false)
            }
        }
    }

    /// Schedules the next node check (`purpose`) after `join_interval`.
    pub(super) fn check_again(&self, txn: &mut Txn, purpose: PendingPurpose) {
        let emit = decide::wait_for(
            &mut txn.saga,
            purpose,
            None,
            self.policy.join_interval,
            self.now(),
        );
        txn.outbox.push(emit);
    }

    /// `join` found a scale set `Failed` behind its recorded create: the
    /// create is sent again (claimed with a write first, like any re-send),
    /// at most [`decide::MAX_REOPEN`] times, and the checks go on after it.
    async fn repair(&self, txn: &mut Txn, id: &ResourceId) -> Result<(), EngineError> {
        let key = id.to_string();
        let found = txn
            .saga
            .resource_index(&key)
            .filter(|&i| txn.saga.resources[i].reopened < decide::MAX_REOPEN)
            .and_then(|i| {
                let owner = txn.saga.resources[i].step;
                steps::plan(owner, &txn.saga, &self.env)
                    .into_iter()
                    .find(|op| matches!(op, Op::ScaleSet { id: o, .. } | Op::Arm { id: o, .. } if o == id))
                    .map(|op| (i, op))
            });
        let Some((index, op)) = found else {
            let e = AzureError::terminal(
                "ScaleSetFailed",
                format!("{id} is Failed and sending its create again did not repair it"),
            );
            return self.step_failed(txn, StepName::Join, &e).await;
        };
        tracing::warn!(job = %txn.saga.id, %id, "scale set Failed behind its recorded create; sending the create again");
        decide::reopen_failed(&mut txn.saga, index);
        self.save(txn).await?;
        match self.run_op(txn, &op).await {
            Ok(None) => {
                decide::resource_created(&mut txn.saga, index);
                self.check_again(txn, PendingPurpose::JoinCheck);
                self.save(txn).await
            }
            Ok(Some(poll)) => {
                let after = poll.retry_after();
                let purpose = PendingPurpose::Create {
                    step: StepName::Join,
                    resource: index,
                };
                let emit = decide::wait_for(&mut txn.saga, purpose, Some(poll), after, self.now());
                txn.outbox.push(emit);
                self.save(txn).await
            }
            Err(e) => self.step_failed(txn, StepName::Join, &e).await,
        }
    }

    /// After a pool's scale set reached `count`: the same check as `join`, for
    /// that pool only; the scale is finished once `count` of its nodes are
    /// Ready, and fails (the job keeps running, with the error in `status`)
    /// when a node's init script failed or the checks run out.
    async fn check_scaled(&self, txn: &mut Txn, pool: &str, count: u32) -> Result<(), EngineError> {
        let purpose = PendingPurpose::ScaleJoinCheck {
            pool: pool.to_string(),
            count,
        };
        let checks = match &txn.saga.pending {
            Some(p) if p.purpose == purpose => p.checks + 1,
            _ => 0,
        };
        let id = steps::rg_id(
            &txn.saga,
            &self.env,
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            &names::pool_vmss(&txn.saga.id, pool),
        );
        let ports = self.join_ports();
        let last = checks >= self.policy.max_join_checks;
        match steps::join::check(&txn.saga, &[(id, count)], &ports, last, checks).await {
            steps::join::Verdict::Joined => {
                let emit = decide::finish_scale(&mut txn.saga, pool, count);
                txn.outbox.push(emit);
            }
            steps::join::Verdict::Failed(e) => {
                txn.saga.pending = None;
                txn.saga.error = Some(ErrorInfo::from(&e));
            }
            steps::join::Verdict::Repair(id) => {
                txn.saga.pending = None;
                txn.saga.error = Some(ErrorInfo::from(&AzureError::terminal(
                    "ScaleSetFailed",
                    format!("{id} is Failed; scale it again to repair it"),
                )));
            }
            steps::join::Verdict::Waiting(why) => {
                tracing::debug!(job = %txn.saga.id, pool, checks, %why, "scaled nodes not Ready yet");
                self.check_again(txn, purpose);
            }
        }
        self.save(txn).await
    }

    /// Re-checks the pending operation and carries on from it.
    async fn poll(&self, txn: &mut Txn) -> Result<(), EngineError> {
        let Some(pending) = txn.saga.pending.clone() else {
            return Ok(());
        };
        if pending.purpose == PendingPurpose::JoinCheck {
            let span = step_span(&txn.saga.id, StepName::Join);
            return self.forward(txn, StepName::Join).instrument(span).await;
        }
        if let PendingPurpose::ScaleJoinCheck { pool, count } = &pending.purpose {
            return self.check_scaled(txn, pool, *count).await;
        }
        if matches!(
            pending.purpose,
            PendingPurpose::AddPool { .. } | PendingPurpose::RemovePool { .. }
        ) {
            return self.poll_pool_change(txn).await;
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
                    self.now(),
                );
                txn.outbox.push(emit);
                self.save(txn).await
            }
            (PendingPurpose::Create { step, resource }, Ok(PollOutcome::Succeeded)) => {
                decide::resource_created(&mut txn.saga, resource);
                txn.saga.pending = None;
                let span = step_span(&txn.saga.id, step);
                self.forward(txn, step).instrument(span).await
            }
            (PendingPurpose::Create { step, .. }, Ok(PollOutcome::Failed(e)) | Err(e)) => {
                self.step_failed(txn, step, &e).await
            }
            (PendingPurpose::Delete { resource }, Ok(PollOutcome::Succeeded)) => {
                let emits = decide::resource_deleted(&mut txn.saga, resource, self.now());
                txn.outbox.extend(emits);
                self.undo(txn).await
            }
            (PendingPurpose::Delete { resource }, Ok(PollOutcome::Failed(e)) | Err(e)) => {
                let emits =
                    decide::fail_undo(&mut txn.saga, resource, &e, &self.policy, self.now());
                txn.outbox.extend(emits);
                self.save(txn).await
            }
            (PendingPurpose::Scale { pool, count }, Ok(PollOutcome::Succeeded)) => {
                self.check_scaled(txn, &pool, count).await
            }
            (PendingPurpose::Scale { .. }, Ok(PollOutcome::Failed(e)) | Err(e)) => {
                txn.saga.pending = None;
                txn.saga.error = Some(ErrorInfo::from(&e));
                self.save(txn).await
            }
            (
                PendingPurpose::JoinCheck
                | PendingPurpose::ScaleJoinCheck { .. }
                | PendingPurpose::AddPool { .. }
                | PendingPurpose::RemovePool { .. },
                _,
            ) => Ok(()),
        }
    }
}
