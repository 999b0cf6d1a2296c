//! The undo chain (compensation and explicit deletion, newest resource
//! first, a 404 counting as deleted), the check for leftovers that ends it,
//! and pool scaling.
//!
//! # Expected flow
//! Each recorded resource is deleted newest first; a secret is deleted, then
//! purged where the vault allows it. When the undo log holds nothing that may
//! still exist, the engine lists everything still tagged with the job (the
//! job's resource group, the vault, the job's staged blobs) and hands what it
//! found to `decide::finish_undo`: nothing, and the job is compensated or
//! deleted; anything, and it is `Failed` with the leftovers listed.
//!
//! # Guarantees
//! A crash anywhere repeats at most one delete (a 404 is success) or the
//! check itself (a read). A failed check is retried like a failed delete
//! (`decide::verify_failed`).

use super::txn::Txn;
use super::{Engine, EngineError};
use crate::decide;
use crate::names;
use crate::saga::{ErrorInfo, JobStatus, PendingPurpose, ResourceKind, ResourceState, Saga};
use crate::steps;
use flotilla_azure::arm::{DeleteStart, PollOutcome};
use flotilla_azure::models::api;
use flotilla_azure::{AzureError, Purge, ResourceId};
use tracing::Instrument;

/// What starting the deletion of one thing gave.
pub(super) enum Deleted {
    /// Gone (or never there).
    Gone,
    /// A secret that is deleted but kept by the vault until `until`.
    Retained(Option<time::OffsetDateTime>),
    /// An ARM delete that is still running.
    Pending(flotilla_azure::PollState),
}

impl Engine {
    /// Starts deleting one thing: an ARM DELETE (a 404 is gone), or a secret
    /// deleted then purged where the vault allows it, or a blob. The undo
    /// chain and the orphan sweep both delete through this.
    pub(super) async fn start_delete(
        &self,
        id: &str,
        kind: &ResourceKind,
    ) -> Result<Deleted, AzureError> {
        let (kind_name, resource) = match kind {
            ResourceKind::Arm { .. } => ("arm", id),
            ResourceKind::Secret { name } => ("secret", name.as_str()),
            ResourceKind::Blob { name } => ("blob", name.as_str()),
            ResourceKind::SubnetNsg { .. } => ("subnet-nsg", id),
        };
        let span = tracing::info_span!(
            "flotilla.undo",
            flotilla.resource.kind = kind_name,
            flotilla.resource = %resource,
            flotilla.undo.outcome = tracing::field::Empty,
        );
        let started = self.delete_started(id, kind).instrument(span.clone()).await;
        span.record(
            "flotilla.undo.outcome",
            match &started {
                Ok(Deleted::Gone) => "gone",
                Ok(Deleted::Retained(_)) => "retained",
                Ok(Deleted::Pending(_)) => "pending",
                Err(_) => "error",
            },
        );
        started
    }

    async fn delete_started(&self, id: &str, kind: &ResourceKind) -> Result<Deleted, AzureError> {
        match kind {
            ResourceKind::Arm { api_version } => {
                let id = ResourceId::parse(id)
                    .map_err(|e| AzureError::terminal("InvalidResourceId", e))?;
                Ok(match self.azure.arm.delete(&id, api_version).await? {
                    DeleteStart::Gone => Deleted::Gone,
                    DeleteStart::Pending(poll) => Deleted::Pending(poll),
                })
            }
            ResourceKind::Secret { name } => {
                self.azure.secrets.delete(name).await?;
                Ok(match self.azure.secrets.purge(name).await? {
                    Purge::Gone => Deleted::Gone,
                    Purge::Retained { until } => Deleted::Retained(until),
                })
            }
            ResourceKind::Blob { name } => {
                self.azure.blobs.delete(name).await?;
                Ok(Deleted::Gone)
            }
            // Not flotilla's to delete: only its NSG goes, the one it had comes back.
            ResourceKind::SubnetNsg { previous } => {
                let id = ResourceId::parse(id)
                    .map_err(|e| AzureError::terminal("InvalidResourceId", e))?;
                Ok(
                    match self.set_subnet_nsg(&id, previous.as_deref(), true).await? {
                        None => Deleted::Gone,
                        Some(poll) => Deleted::Pending(poll),
                    },
                )
            }
        }
    }

    /// Everything still tagged with the job: ARM resources of its resource
    /// group, Key Vault secrets and its staged blobs; and the role
    /// assignments its undo log names that still exist (assignments carry no
    /// tags, and the node identity's is on the staging container, outside the
    /// job's group). Ids, sorted.
    pub(super) async fn leftovers(&self, saga: &Saga) -> Result<Vec<String>, AzureError> {
        let job = saga.id.as_str();
        let mut out: Vec<String> = vec![];
        for r in &saga.resources {
            let Ok(id) = ResourceId::parse(&r.id) else {
                continue;
            };
            if !id
                .resource_type()
                .eq_ignore_ascii_case("Microsoft.Authorization/roleAssignments")
            {
                continue;
            }
            if self
                .azure
                .arm
                .get(&id, None, api::AUTHORIZATION)
                .await?
                .is_some()
            {
                out.push(r.id.clone());
            }
        }
        out.extend(
            self.azure
                .arm
                .list_resources(&saga.spec.resource_group, Some((names::TAG_JOB, job)))
                .await?
                .into_iter()
                .map(|r| r.id),
        );
        out.extend(
            self.azure
                .secrets
                .list()
                .await?
                .into_iter()
                .filter(|s| s.tag(names::TAG_JOB) == Some(job))
                .map(|s| s.id),
        );
        let meta = names::metadata_name(names::TAG_JOB);
        out.extend(
            self.azure
                .blobs
                .list(Some(&names::blob_prefix(job)))
                .await?
                .into_iter()
                .filter(|b| b.tag(&meta) == Some(job))
                .map(|b| b.id),
        );
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The undo log is done: check for leftovers and end the chain.
    async fn verify(
        &self,
        txn: &mut Txn,
        found: Result<Vec<String>, AzureError>,
    ) -> Result<(), EngineError> {
        let emits = match found {
            Ok(found) => {
                if !found.is_empty() {
                    tracing::warn!(job = %txn.saga.id, leftovers = found.len(), "still tagged with the job after its undo chain");
                }
                decide::finish_undo(&mut txn.saga, &found, self.now())
            }
            Err(e) => {
                tracing::warn!(job = %txn.saga.id, code = %e.code, "checking for leftovers failed");
                decide::verify_failed(&mut txn.saga, &e, &self.policy, self.now())
            }
        };
        txn.outbox.extend(emits);
        self.save(txn).await
    }

    /// Deletes recorded resources, newest first, until none is left; then checks for leftovers.
    pub(super) async fn undo(&self, txn: &mut Txn) -> Result<(), EngineError> {
        loop {
            if !matches!(
                txn.saga.status,
                JobStatus::Compensating | JobStatus::Deleting
            ) {
                return self.save(txn).await;
            }
            let Some(index) = decide::next_undo(&txn.saga) else {
                let found = self.leftovers(&txn.saga).await;
                if let Ok(found) = &found {
                    if decide::reopen_recreated(&mut txn.saga, found) {
                        tracing::warn!(job = %txn.saga.id, "deleted resources came back; deleting them again");
                        continue;
                    }
                }
                return self.verify(txn, found).await;
            };
            let record = txn.saga.resources[index].clone();
            decide::undo_begins(&mut txn.saga, index, self.now());
            match self.start_delete(&record.id, &record.kind).await {
                Ok(Deleted::Gone) => {
                    let emits = decide::resource_deleted(&mut txn.saga, index, self.now());
                    txn.outbox.extend(emits);
                }
                Ok(Deleted::Retained(until)) => {
                    decide::secret_retained(&mut txn.saga, &record.id, until);
                    let emits = decide::resource_deleted(&mut txn.saga, index, self.now());
                    txn.outbox.extend(emits);
                }
                Ok(Deleted::Pending(poll)) => {
                    if poll.retry_after_s == 0 {
                        if let Ok(PollOutcome::Succeeded) = self.azure.arm.poll(&poll).await {
                            let emits = decide::resource_deleted(&mut txn.saga, index, self.now());
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
                        self.now(),
                    );
                    txn.outbox.push(emit);
                    return self.save(txn).await;
                }
                Err(e) => {
                    // "In use" (`InUseSubnetCannotBeDeleted`,
                    // `PublicIPAddressInUse`, …) by something undo already
                    // deleted: it came back (a stale handler's late write);
                    // delete it first.
                    if e.code.contains("InUse") {
                        if let Ok(found) = self.leftovers(&txn.saga).await {
                            if decide::reopen_recreated(&mut txn.saga, &found) {
                                tracing::warn!(job = %txn.saga.id, resource = %record.id, "a dependant came back; deleting it again first");
                                continue;
                            }
                        }
                    }
                    tracing::warn!(job = %txn.saga.id, resource = %record.id, code = %e.code, "undo failed");
                    let emits =
                        decide::fail_undo(&mut txn.saga, index, &e, &self.policy, self.now());
                    txn.outbox.extend(emits);
                    return self.save(txn).await;
                }
            }
        }
    }

    pub(super) async fn scale(
        &self,
        txn: &mut Txn,
        pool: &str,
        count: u32,
    ) -> Result<(), EngineError> {
        let id = steps::rg_id(
            &txn.saga,
            &self.env,
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            &names::pool_vmss(&txn.saga.id, pool),
        );
        let body = serde_json::json!({ "sku": { "capacity": count } });
        match self.azure.arm.patch(&id, api::COMPUTE, &body).await {
            Ok(start) => match start {
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
                        self.now(),
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
