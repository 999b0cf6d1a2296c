//! Day-2 worker pools: adding a pool to a succeeded cluster and removing
//! one, through the saga with the creation steps' own operations
//! ([`steps::workers::day2_plan`]).
//!
//! # Expected flow
//! `pool-add-requested` (checked by `decide` against the saga) puts the pool
//! in the spec and runs its operations like a step: the init script, the
//! scale set (intent recorded before each, a long-running create re-checked
//! by `pool-poll`), then the `join` check for its `min` nodes. Any failure
//! undoes the add: what it created is deleted, newest first, and the pool
//! leaves the spec again; the job stays `Succeeded` with the error in
//! `error`. `pool-remove-requested` deletes the pool's resources the same
//! way. A removal ends with the check undo ends with (what is still tagged
//! with the job): anything of the pool found again is deleted again.
//!
//! # Guarantees
//! The pool change is `pending` from its first write to its last, so no
//! scale, delete or second pool change starts meanwhile, and the sweeper
//! re-arms it if its handler stops. Every operation is idempotent, as in
//! the steps.

use super::forward::Ran;
use super::txn::Txn;
use super::undo::Deleted;
use super::{CommandError, Engine, EngineError};
use crate::decide;
use crate::saga::{PendingPurpose, ResourceState};
use crate::spec::WorkerPool;
use crate::steps::{self, Op};
use flotilla_azure::arm::PollOutcome;
use flotilla_azure::AzureError;

impl Engine {
    /// Starts adding worker pool `pool` to a succeeded job.
    pub async fn request_add_pool(&self, job: &str, pool: &WorkerPool) -> Result<(), CommandError> {
        self.with_saga(job, true, |saga, out| {
            out.push(decide::request_add_pool(saga, pool)?);
            Ok(true)
        })
        .await
        .map(|_| ())
    }

    /// Starts removing worker pool `pool` from a succeeded job.
    pub async fn request_remove_pool(&self, job: &str, pool: &str) -> Result<(), CommandError> {
        self.with_saga(job, true, |saga, out| {
            out.push(decide::request_remove_pool(saga, pool)?);
            Ok(true)
        })
        .await
        .map(|_| ())
    }

    /// `decide` accepted a pool add.
    pub(super) async fn add_pool(
        &self,
        txn: &mut Txn,
        pool: WorkerPool,
    ) -> Result<(), EngineError> {
        decide::start_add_pool(&mut txn.saga, &pool, self.now());
        self.continue_add(txn, &pool.name).await
    }

    /// `decide` accepted a pool removal.
    pub(super) async fn remove_pool(&self, txn: &mut Txn, pool: &str) -> Result<(), EngineError> {
        decide::start_remove_pool(&mut txn.saga, pool, self.now());
        self.continue_remove(txn).await
    }

    /// The pool's operations (see [`steps::workers::day2_plan`]); empty when
    /// the pool is not in the spec.
    fn day2_ops(&self, txn: &Txn, pool: &str) -> Vec<(crate::saga::StepName, Op)> {
        txn.saga
            .spec
            .worker_pools
            .iter()
            .find(|p| p.name == pool)
            .map(|p| steps::workers::day2_plan(&txn.saga, &self.env, p))
            .unwrap_or_default()
    }

    /// The undo log ids of what the pool's operations create.
    fn day2_ids(&self, txn: &Txn, pool: &str) -> Vec<String> {
        self.day2_ops(txn, pool)
            .iter()
            .filter_map(|(_, op)| self.intent(op).map(|(id, _)| id))
            .collect()
    }

    /// A pool change's re-check came (`pool-poll`, or the sweeper's re-arm).
    pub(super) async fn poll_pool_change(&self, txn: &mut Txn) -> Result<(), EngineError> {
        let Some(pending) = txn.saga.pending.clone() else {
            return Ok(());
        };
        let (is_add, pool, resource) = match &pending.purpose {
            PendingPurpose::AddPool { pool, resource } => (true, pool.clone(), *resource),
            PendingPurpose::RemovePool { pool, resource, .. } => (false, pool.clone(), *resource),
            _ => return Ok(()),
        };
        let (Some(index), Some(poll)) = (resource, pending.poll.as_ref()) else {
            // Nothing in flight at Azure: go on from where the saga says.
            return if is_add {
                self.continue_add(txn, &pool).await
            } else {
                self.continue_remove(txn).await
            };
        };
        match self.azure.arm.poll(poll).await {
            Ok(PollOutcome::Pending { retry_after }) => {
                let emit = decide::wait_for(
                    &mut txn.saga,
                    pending.purpose.clone(),
                    Some(poll.clone()),
                    retry_after,
                    self.now(),
                );
                txn.outbox.push(emit);
                self.save(txn).await
            }
            Ok(PollOutcome::Succeeded) if is_add => {
                decide::resource_created(&mut txn.saga, index);
                self.continue_add(txn, &pool).await
            }
            Ok(PollOutcome::Succeeded) => {
                txn.saga.resources[index].state = ResourceState::Deleted;
                self.continue_remove(txn).await
            }
            Ok(PollOutcome::Failed(e)) | Err(e) if is_add => self.add_failed(txn, &pool, &e).await,
            Ok(PollOutcome::Failed(e)) | Err(e) => {
                let what = txn.saga.resources[index].id.clone();
                self.pool_delete_failed(txn, &what, &e).await
            }
        }
    }

    /// Runs the add from its first unfinished operation to the node check.
    async fn continue_add(&self, txn: &mut Txn, pool: &str) -> Result<(), EngineError> {
        let ops = self.day2_ops(txn, pool);
        match self.run_ops(txn, ops).await? {
            Ran::Done => {}
            Ran::AwaitNodes { scale_sets, .. } => {
                return self.check_added(txn, pool, &scale_sets).await
            }
            Ran::Waiting { poll, resource, .. } => {
                let after = poll.retry_after();
                let emit = decide::wait_for(
                    &mut txn.saga,
                    PendingPurpose::AddPool {
                        pool: pool.into(),
                        resource: Some(resource),
                    },
                    Some(poll),
                    after,
                    self.now(),
                );
                txn.outbox.push(emit);
                return self.save(txn).await;
            }
            Ran::Failed { error, .. } => return self.add_failed(txn, pool, &error).await,
        }
        // The pool is gone from the spec (nothing to do) or the plan had no
        // node check: the add ends here.
        let emit = decide::finish_add_pool(&mut txn.saga, pool);
        txn.outbox.push(emit);
        self.save(txn).await
    }

    /// `join`'s check for the new pool's nodes only.
    async fn check_added(
        &self,
        txn: &mut Txn,
        pool: &str,
        scale_sets: &[(flotilla_azure::ResourceId, u32)],
    ) -> Result<(), EngineError> {
        let purpose = PendingPurpose::AddPool {
            pool: pool.into(),
            resource: None,
        };
        let checks = match &txn.saga.pending {
            Some(p) if p.purpose == purpose => p.checks,
            _ => 0,
        };
        let last = checks >= self.policy.max_join_checks;
        let ports = self.join_ports();
        match steps::join::check(&txn.saga, scale_sets, &ports, last, checks).await {
            steps::join::Verdict::Joined => {
                let emit = decide::finish_add_pool(&mut txn.saga, pool);
                txn.outbox.push(emit);
                self.save(txn).await
            }
            steps::join::Verdict::Failed(e) => self.add_failed(txn, pool, &e).await,
            // The new scale set is Failed: the add is undone (and may be asked again).
            steps::join::Verdict::Repair(id) => {
                let e = AzureError::terminal("ScaleSetFailed", format!("{id} is Failed"));
                self.add_failed(txn, pool, &e).await
            }
            steps::join::Verdict::Waiting(why) => {
                tracing::debug!(job = %txn.saga.id, pool, checks, %why, "new pool's nodes not Ready yet");
                self.check_again(txn, purpose);
                self.save(txn).await
            }
        }
    }

    async fn add_failed(
        &self,
        txn: &mut Txn,
        pool: &str,
        e: &AzureError,
    ) -> Result<(), EngineError> {
        tracing::warn!(job = %txn.saga.id, pool, code = %e.code, "adding a pool failed; undoing it");
        decide::add_pool_failed(&mut txn.saga, pool, e, self.now());
        self.continue_remove(txn).await
    }

    async fn pool_delete_failed(
        &self,
        txn: &mut Txn,
        what: &str,
        e: &AzureError,
    ) -> Result<(), EngineError> {
        tracing::warn!(job = %txn.saga.id, resource = what, code = %e.code, "deleting a pool's resource failed");
        if let Some(emit) =
            decide::pool_delete_failed(&mut txn.saga, what, e, &self.policy, self.now())
        {
            txn.outbox.push(emit);
        }
        self.save(txn).await
    }

    /// Deletes the pool's resources newest first (a 404 is gone), checks that
    /// none is still there, then takes the pool out of the saga.
    async fn continue_remove(&self, txn: &mut Txn) -> Result<(), EngineError> {
        let Some(PendingPurpose::RemovePool { pool, undo, .. }) =
            txn.saga.pending.as_ref().map(|p| p.purpose.clone())
        else {
            return self.save(txn).await;
        };
        let ids = self.day2_ids(txn, &pool);
        let mine =
            |r: &crate::saga::ResourceRecord| ids.iter().any(|id| id.eq_ignore_ascii_case(&r.id));
        loop {
            let next = txn
                .saga
                .resources
                .iter()
                .rposition(|r| mine(r) && r.state != ResourceState::Deleted);
            let Some(index) = next else {
                // The check undo ends with, for the pool's things only.
                let found = match self.leftovers(&txn.saga).await {
                    Ok(found) => found,
                    Err(e) => {
                        return self
                            .pool_delete_failed(txn, "(the check that follows)", &e)
                            .await
                    }
                };
                let back: Vec<String> = found
                    .into_iter()
                    .filter(|f| ids.iter().any(|id| id.eq_ignore_ascii_case(f)))
                    .collect();
                if back.is_empty() {
                    let emit = decide::finish_remove_pool(&mut txn.saga, &pool, &ids, undo);
                    txn.outbox.push(emit);
                    return self.save(txn).await;
                }
                if decide::reopen_recreated(&mut txn.saga, &back) {
                    tracing::warn!(job = %txn.saga.id, pool, "a deleted resource of the pool came back; deleting it again");
                    continue;
                }
                let e = AzureError::terminal(
                    "StillExists",
                    format!("still there after {} deletes", decide::MAX_REOPEN + 1),
                );
                return self.pool_delete_failed(txn, &back.join(", "), &e).await;
            };
            let record = txn.saga.resources[index].clone();
            match self.start_delete(&record.id, &record.kind).await {
                Ok(Deleted::Gone) => txn.saga.resources[index].state = ResourceState::Deleted,
                Ok(Deleted::Retained(until)) => {
                    decide::secret_retained(&mut txn.saga, &record.id, until);
                    txn.saga.resources[index].state = ResourceState::Deleted;
                }
                Ok(Deleted::Pending(poll)) => {
                    if poll.retry_after_s == 0 {
                        if let Ok(PollOutcome::Succeeded) = self.azure.arm.poll(&poll).await {
                            txn.saga.resources[index].state = ResourceState::Deleted;
                            continue;
                        }
                    }
                    txn.saga.resources[index].state = ResourceState::Deleting;
                    let attempts = match txn.saga.pending.as_ref().map(|p| &p.purpose) {
                        Some(PendingPurpose::RemovePool { attempts, .. }) => *attempts,
                        _ => 0,
                    };
                    let after = poll.retry_after();
                    let emit = decide::wait_for(
                        &mut txn.saga,
                        PendingPurpose::RemovePool {
                            pool: pool.clone(),
                            resource: Some(index),
                            undo,
                            attempts,
                        },
                        Some(poll),
                        after,
                        self.now(),
                    );
                    txn.outbox.push(emit);
                    return self.save(txn).await;
                }
                Err(e) => return self.pool_delete_failed(txn, &record.id, &e).await,
            }
        }
    }
}
