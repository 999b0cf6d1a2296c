//! Forward steps: a step's operations in order (intent recorded before each
//! create), long-running operations saved and re-checked by scheduled
//! events, `join`'s node checks, and a step's failure handed to `decide`.

use super::txn::Txn;
use super::{Engine, EngineError};
use crate::decide::{self, Decision};
use crate::events::CloudEvent;
use crate::names;
use crate::ports::StoreError;
use crate::saga::{
    ErrorInfo, PendingPurpose, ResourceKind, ResourceRecord, ResourceState, StepName,
};
use crate::spec::IdentityMode;
use crate::steps::{self, Op, SecretSource};
use flotilla_azure::arm::PollOutcome;
use flotilla_azure::models::{api, StorageKeys};
use flotilla_azure::{AzureError, ResourceId};
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Engine {
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
                self.resend(&decide::step_succeeded_event(&txn.saga, step))
                    .await
            }
            Decision::Forward(step) => self.forward(&mut txn, step).await,
            Decision::Poll => self.poll(&mut txn).await,
            Decision::Undo => self.undo(&mut txn).await,
            Decision::Scale { pool, count } => self.scale(&mut txn, &pool, count).await,
        }
    }

    /// Runs (or continues) a forward step from its first unfinished operation.
    async fn forward(&self, txn: &mut Txn, step: StepName) -> Result<(), EngineError> {
        decide::start_step(&mut txn.saga, step, self.now());
        // Pre-flight is the job's first action, before `stage` writes
        // anything (unless the edge ran it already). A transient read error
        // retries the step like any other; problems reject the job.
        if step == StepName::Stage && txn.saga.preflight.is_none() && txn.saga.resources.is_empty()
        {
            match self.preflight(&txn.saga.spec, &txn.saga.id).await {
                Ok(verdict) if verdict.passed() => {
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
                Op::RoleAssignment { id, .. } => (
                    id.to_string(),
                    ResourceKind::Arm {
                        api_version: api::AUTHORIZATION.into(),
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
                Op::AwaitNodes { scale_sets } => return self.check_nodes(txn, scale_sets).await,
            };
            let index = match txn.saga.resource_index(&id) {
                Some(i) if txn.saga.resources[i].state == ResourceState::Created => continue,
                Some(i) => {
                    // Sent before (a retry, a crash, a duplicate delivery):
                    // claim it with a write first, so of two handlers the one
                    // whose write lost never sends, and the operation the
                    // saga goes on to track is always the newest one sent.
                    self.save(txn).await?;
                    i
                }
                None => {
                    // Record the intent before the side effect.
                    txn.saga.resources.push(ResourceRecord {
                        id: id.clone(),
                        step,
                        kind,
                        state: ResourceState::Creating,
                        reopened: 0,
                    });
                    self.save(txn).await?;
                    txn.saga.resources.len() - 1
                }
            };
            if let Op::RoleAssignment { principal, .. } = &op {
                if let Err(e) = self.resolve_principal(txn, principal).await {
                    return self.step_failed(txn, step, &e).await;
                }
            }
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
                        self.now(),
                    );
                    txn.outbox.push(emit);
                    return self.save(txn).await;
                }
                Err(e) => return self.step_failed(txn, step, &e).await,
            }
        }
        let emits = decide::finish_step(&mut txn.saga, step, self.now());
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
        let emits = decide::fail_step(&mut txn.saga, step, e, &self.policy, self.now());
        txn.outbox.extend(emits);
        self.save(txn).await
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
        let principal_id = match principal {
            steps::rbac::Principal::ServicePrincipal(object_id) => object_id.clone(),
            steps::rbac::Principal::ScaleSet(id) => {
                let body = self.azure.arm.get(id, None, api::COMPUTE).await?;
                body.as_ref()
                    .and_then(|b| b.pointer("/identity/principalId"))
                    .and_then(|p| p.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        AzureError::terminal(
                            "IdentityNotFound",
                            format!("{id} has no system-assigned identity to give a role to"),
                        )
                    })?
            }
        };
        txn.saga.principals.insert(key, principal_id);
        Ok(())
    }

    /// Performs one create; `Some(poll)` when Azure is still working on it.
    async fn run_op(
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
            } => Ok(self.azure.arm.put(id, api_version, body).await?),
            Op::ScaleSet { id, body } => {
                let key = self
                    .azure
                    .secrets
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
                let sp_secret = match txn.saga.spec.identity {
                    IdentityMode::ServicePrincipal => Some(
                        self.azure
                            .secrets
                            .get(&names::sp_secret(job))
                            .await?
                            .ok_or_else(|| {
                                AzureError::terminal(
                                    "SecretNotFound",
                                    format!(
                                        "{} is missing; was `keys` undone?",
                                        names::sp_secret(job)
                                    ),
                                )
                            })?,
                    ),
                    IdentityMode::ManagedIdentity => None,
                };
                let mut body = body.clone();
                steps::node::seal(&mut body, &key, sp_secret.as_deref());
                Ok(self.azure.arm.put(id, api::COMPUTE, &body).await?)
            }
            Op::RoleAssignment {
                id,
                role,
                principal,
            } => {
                let principal_id = txn.saga.principals.get(&principal.key()).ok_or_else(|| {
                    AzureError::terminal("IdentityNotFound", "principal not resolved")
                })?;
                let body = steps::rbac::body(&self.env.subscription_id, role, principal_id);
                match self.azure.arm.put(id, api::AUTHORIZATION, &body).await {
                    // The same role for the same principal at the same scope
                    // under another name (given outside flotilla): what this
                    // step wants holds already.
                    Err(e) if e.code == "RoleAssignmentExists" => Ok(None),
                    other => other,
                }
            }
            Op::Secret { name, source } => {
                let value = match source {
                    // Written by the nodes; only recorded for undo.
                    SecretSource::Node => return Ok(None),
                    SecretSource::StorageKey => {
                        let keys = self.azure.arm.action(&self.env.staging_account_id, "listKeys", api::STORAGE).await?;
                        let keys: StorageKeys = serde_json::from_value(keys)
                            .map_err(|e| AzureError::terminal("UnexpectedResponse", format!("listKeys: {e}")))?;
                        keys.keys.into_iter().next().map(|k| k.value).ok_or_else(|| AzureError::terminal("NoStorageKey", "listKeys returned no key"))?
                    }
                    SecretSource::ServicePrincipal => self.azure.sp_client_secret.clone().ok_or_else(|| {
                        AzureError::terminal("ServicePrincipalNotConfigured", "identity is service-principal but CLUSTER_SP_CLIENT_SECRET is not set")
                    })?,
                };
                self.azure.secrets.set(name, &value, &tags).await?;
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
                    .map(|(k, v)| (names::blob_metadata_name(k), v.clone()))
                    .collect();
                self.azure
                    .blobs
                    .put(name, content.clone(), content_type, &metadata)
                    .await?;
                Ok(None)
            }
            Op::AwaitNodes { .. } => Ok(None),
        }
    }

    /// What `steps::join::check` reads through.
    fn join_ports(&self) -> steps::join::Ports<'_> {
        steps::join::Ports {
            arm: &*self.azure.arm,
            secrets: &*self.azure.secrets,
            kube: &*self.azure.kube,
        }
    }

    /// `join`: one check of the expected nodes (see `steps::join::check`),
    /// then finish, fail, or check again after `join_interval`.
    async fn check_nodes(
        &self,
        txn: &mut Txn,
        scale_sets: &[(ResourceId, u32)],
    ) -> Result<(), EngineError> {
        let checks = txn.saga.pending.as_ref().map(|p| p.checks).unwrap_or(0);
        let ports = self.join_ports();
        let last = checks >= self.policy.max_join_checks;
        match steps::join::check(&txn.saga, scale_sets, &ports, last, checks).await {
            steps::join::Verdict::Joined => {
                let emits = decide::finish_step(&mut txn.saga, StepName::Join, self.now());
                txn.outbox.extend(emits);
                self.save(txn).await
            }
            steps::join::Verdict::Failed(e) => self.step_failed(txn, StepName::Join, &e).await,
            steps::join::Verdict::Waiting(why) => {
                tracing::debug!(job = %txn.saga.id, checks, %why, "nodes not joined yet");
                let emit = decide::wait_for(
                    &mut txn.saga,
                    PendingPurpose::JoinCheck,
                    None,
                    self.policy.join_interval,
                    self.now(),
                );
                txn.outbox.push(emit);
                self.save(txn).await
            }
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
            steps::join::Verdict::Waiting(why) => {
                tracing::debug!(job = %txn.saga.id, pool, checks, %why, "scaled nodes not Ready yet");
                let emit = decide::wait_for(
                    &mut txn.saga,
                    purpose,
                    None,
                    self.policy.join_interval,
                    self.now(),
                );
                txn.outbox.push(emit);
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
            return self.forward(txn, StepName::Join).await;
        }
        if let PendingPurpose::ScaleJoinCheck { pool, count } = &pending.purpose {
            return self.check_scaled(txn, pool, *count).await;
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
                self.forward(txn, step).await
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
            (PendingPurpose::JoinCheck | PendingPurpose::ScaleJoinCheck { .. }, _) => Ok(()),
        }
    }
}
