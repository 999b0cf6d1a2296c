//! The undo chain (compensation and explicit deletion, newest resource
//! first, a 404 counting as deleted) and pool scaling.

use super::txn::Txn;
use super::{Engine, EngineError};
use crate::decide;
use crate::names;
use crate::saga::{ErrorInfo, JobStatus, PendingPurpose, ResourceKind, ResourceState};
use crate::steps;
use flotilla_azure::arm::{DeleteStart, PollOutcome};
use flotilla_azure::models::api;
use flotilla_azure::{AzureError, ResourceId};

impl Engine {
    /// Deletes recorded resources, newest first, until none is left.
    pub(super) async fn undo(&self, txn: &mut Txn) -> Result<(), EngineError> {
        loop {
            if !matches!(
                txn.saga.status,
                JobStatus::Compensating | JobStatus::Deleting
            ) {
                return self.save(txn).await;
            }
            let Some(index) = decide::next_undo(&txn.saga) else {
                let emits = decide::finish_undo(&mut txn.saga, self.now());
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
                    .secrets
                    .delete(name)
                    .await
                    .map(|_| DeleteStart::Gone),
                ResourceKind::Blob { name } => self
                    .azure
                    .blobs
                    .delete(name)
                    .await
                    .map(|_| DeleteStart::Gone),
            };
            match result {
                Ok(DeleteStart::Gone) => {
                    let emits = decide::resource_deleted(&mut txn.saga, index, self.now());
                    txn.outbox.extend(emits);
                }
                Ok(DeleteStart::Pending(poll)) => {
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
