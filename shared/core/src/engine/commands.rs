//! Saga changes that come from outside a step: submitting a job, the `delete`
//! and `scale` commands, a resource deleted outside flotilla, a message the
//! bus gave up on. Each is decided by a pure function in `decide` and saved
//! through the same transaction and outbox as a step.

use super::{CommandError, Engine, EngineError};
use crate::decide;
use crate::events::CloudEvent;
use crate::names;
use crate::ports::StoreError;
use crate::saga::{ResourceKind, Saga};
use crate::spec::ClusterSpec;
use crate::telemetry;
use flotilla_azure::ResourceId;

/// The root span of a command that starts a trace (`submit`, `delete`, `scale`).
fn command_span(command: &'static str, job: &str) -> tracing::Span {
    tracing::info_span!(
        "flotilla.command",
        otel.name = command,
        flotilla.command = command,
        flotilla.job = %job,
    )
}

/// The job a submission started, or found when the same idempotency key was
/// used before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub job: String,
    /// True when the key had already started this job (nothing new was created).
    pub existing: bool,
}

impl Engine {
    /// Stores a new job and emits `job.requested`. Returns the job id.
    pub async fn submit(&self, spec: ClusterSpec) -> Result<String, CommandError> {
        Ok(self.submit_with_key(spec, None).await?.job)
    }

    /// Submits a job once per idempotency key: the job id derives from the
    /// key, so a second submission with the same key finds the first job
    /// (`existing`), and never starts a second cluster. The same key with a
    /// different spec is refused as a conflict.
    pub async fn submit_with_key(
        &self,
        spec: ClusterSpec,
        key: Option<&str>,
    ) -> Result<Submitted, CommandError> {
        spec.validate()
            .map_err(|e| CommandError::Invalid(e.to_string()))?;
        let id = match key {
            Some(k) => names::job_id_for_key(&spec, k),
            None => self.unused_job_id(|| names::new_job_id(&spec)).await?,
        };
        let span = command_span("submit", &id);
        telemetry::start_trace(span, self.store_job(spec, id.clone(), key, None, None)).await
    }

    /// Submits a job at the edge (HTTP `submit`, `flotilla up`): pre-flight
    /// runs first, and a job with problems is refused with every one of
    /// them ([`CommandError::Rejected`]) before anything is stored or
    /// created; a transient read error is [`CommandError::Unavailable`]. A
    /// job that passes records the verdict, so the engine does not check
    /// again. A repeat of an idempotency key finds its job without a check.
    pub async fn submit_checked(
        &self,
        spec: ClusterSpec,
        key: Option<&str>,
    ) -> Result<Submitted, CommandError> {
        self.submit_checked_as(spec, key, None).await
    }

    /// [`Engine::submit_checked`] for a named caller: the job records
    /// `owner` (the caller's principal id) as its owner.
    pub async fn submit_checked_as(
        &self,
        spec: ClusterSpec,
        key: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Submitted, CommandError> {
        spec.validate()
            .map_err(|e| CommandError::Invalid(e.to_string()))?;
        let id = match key {
            Some(k) => names::job_id_for_key(&spec, k),
            None => self.unused_job_id(|| names::new_job_id(&spec)).await?,
        };
        let span = command_span("submit", &id);
        telemetry::start_trace(span, async {
            if key.is_some() && self.read(&id).await?.is_some() {
                // The same key again: answered by `store_job` (same job or conflict).
                return self.store_job(spec, id, key, None, owner).await;
            }
            let verdict = self
                .preflight(&spec, &id)
                .await
                .map_err(CommandError::Unavailable)?;
            if !verdict.passed() {
                return Err(CommandError::Rejected(verdict));
            }
            self.store_job(spec, id, key, Some(verdict), owner).await
        })
        .await
    }

    /// A job id from `draw` that no stored job has. Ids without an
    /// idempotency key are six random characters after the cluster name, so
    /// among 10,000 jobs of one name two draws are the same about once in
    /// forty runs; the second job would find the first's resources (refused
    /// by pre-flight) or its document (a conflict) instead of starting.
    async fn unused_job_id(
        &self,
        mut draw: impl FnMut() -> String,
    ) -> Result<String, CommandError> {
        const DRAWS: usize = 8;
        for _ in 0..DRAWS {
            let id = draw();
            if self
                .store
                .etag(&id)
                .await
                .map_err(EngineError::from)?
                .is_none()
            {
                return Ok(id);
            }
        }
        Err(CommandError::Conflict(format!(
            "{DRAWS} new job ids in a row were already taken; submit again"
        )))
    }

    async fn store_job(
        &self,
        spec: ClusterSpec,
        id: String,
        key: Option<&str>,
        preflight: Option<crate::preflight::Preflight>,
        owner: Option<&str>,
    ) -> Result<Submitted, CommandError> {
        let mut saga = Saga::new(id.clone(), spec, self.now());
        saga.submission_key = key.map(str::to_string);
        saga.owner = owner.map(str::to_string);
        saga.preflight = preflight;
        self.plan_ahead(&mut saga, crate::saga::StepName::Stage);
        let first = decide::job_requested_event(&saga);
        match self.create(saga.clone(), first).await {
            Ok(()) => Ok(Submitted {
                job: id,
                existing: false,
            }),
            Err(EngineError::Store(StoreError::Conflict(_))) if key.is_some() => {
                let found = self
                    .read(&id)
                    .await?
                    .ok_or_else(|| CommandError::NotFound(id.clone()))?;
                if found.submission_key.as_deref() == key && found.spec == saga.spec {
                    Ok(Submitted {
                        job: id,
                        existing: true,
                    })
                } else {
                    Err(CommandError::Conflict(format!(
                        "the idempotency key already started job {id} with another spec"
                    )))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The saga of a job.
    pub async fn status(&self, job: &str) -> Result<Option<Saga>, EngineError> {
        self.read(job).await
    }

    /// Every job's saga, oldest first (documents that do not read as a saga
    /// are left out).
    pub async fn jobs(&self) -> Result<Vec<Saga>, EngineError> {
        let mut sagas: Vec<Saga> = self
            .store
            .list()
            .await?
            .into_iter()
            .filter_map(|d| serde_json::from_value(d.doc).ok())
            .collect();
        sagas.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(sagas)
    }

    /// Starts the explicit teardown of a finished job.
    pub async fn request_delete(&self, job: &str) -> Result<(), CommandError> {
        let change = self.with_saga(job, true, |saga, out| {
            out.push(decide::request_delete(saga)?);
            Ok(true)
        });
        telemetry::start_trace(command_span("delete", job), change)
            .await
            .map(|_| ())
    }

    /// Starts scaling a worker pool of a succeeded job.
    pub async fn request_scale(
        &self,
        job: &str,
        pool: &str,
        count: u32,
    ) -> Result<(), CommandError> {
        let change = self.with_saga(job, true, |saga, out| {
            out.push(decide::request_scale(saga, pool, count)?);
            Ok(true)
        });
        telemetry::start_trace(command_span("scale", job), change)
            .await
            .map(|_| ())
    }

    /// Records a message the bus gave up on, so `status` shows it.
    pub async fn record_dead_letter(
        &self,
        event: &CloudEvent,
        reason: &str,
    ) -> Result<(), EngineError> {
        let result = self
            .with_saga(&event.data().job, false, |saga, _| {
                Ok(decide::record_dead_letter(
                    saga,
                    event.id(),
                    event.event_type(),
                    reason,
                ))
            })
            .await;
        match result {
            Ok(_) | Err(CommandError::NotFound(_)) => Ok(()),
            Err(CommandError::Engine(e)) => Err(e),
            Err(e) => Err(StoreError::Unavailable(e.to_string()).into()),
        }
    }

    /// A worker pool's scale set was written outside flotilla: reads its
    /// capacity and reconciles the owning job's pool count
    /// ([`decide::reconcile_capacity`]). Returns the job and the count when the
    /// saga changed; `None` for a resource that is no job's worker scale set.
    pub async fn reconcile_capacity(
        &self,
        resource_id: &str,
    ) -> Result<Option<(String, u32)>, EngineError> {
        let Ok(id) = flotilla_azure::ResourceId::parse(resource_id) else {
            return Ok(None);
        };
        if !id
            .resource_type()
            .eq_ignore_ascii_case("Microsoft.Compute/virtualMachineScaleSets")
        {
            return Ok(None);
        }
        for saga in self.sagas_named_in(resource_id).await? {
            let Some(pool) = saga
                .spec
                .worker_pools
                .iter()
                .find(|p| {
                    crate::names::pool_vmss(&saga.id, &p.name).eq_ignore_ascii_case(id.name())
                })
                .map(|p| p.name.clone())
            else {
                continue;
            };
            let owned = saga
                .resources
                .iter()
                .any(|r| r.id.eq_ignore_ascii_case(&id.to_string()));
            if !owned {
                continue;
            }
            let body = self
                .azure
                .arm
                .get(&id, None, flotilla_azure::models::api::COMPUTE)
                .await
                // Unavailable: the event's delivery is retried, as for the store.
                .map_err(|e| StoreError::Unavailable(format!("reading {id}: {e}")))?;
            let Some(capacity) = body
                .as_ref()
                .and_then(|b| b.pointer("/sku/capacity"))
                .and_then(serde_json::Value::as_u64)
                .and_then(|c| u32::try_from(c).ok())
            else {
                return Ok(None);
            };
            let saved = self
                .with_saga(
                    &saga.id,
                    true,
                    |saga, out| match decide::reconcile_capacity(saga, &pool, capacity) {
                        Ok(emit) => {
                            out.extend(emit);
                            Ok(true)
                        }
                        Err(_) => Ok(false),
                    },
                )
                .await;
            return match saved {
                Ok(true) => Ok(Some((saga.id.clone(), capacity))),
                Ok(false) | Err(CommandError::NotFound(_)) => Ok(None),
                Err(CommandError::Engine(e)) => Err(e),
                Err(e) => Err(StoreError::Unavailable(e.to_string()).into()),
            };
        }
        Ok(None)
    }

    /// The sagas an Azure resource event may be about: the jobs its id names
    /// ([`names::jobs_named_in`]), each read on its own; only an id naming
    /// no job (a resource in an existing network, say) costs a read of
    /// every saga.
    async fn sagas_named_in(&self, resource_id: &str) -> Result<Vec<Saga>, EngineError> {
        let jobs = names::jobs_named_in(resource_id);
        let docs = if jobs.is_empty() {
            self.store.list().await?
        } else {
            let mut docs = vec![];
            for job in jobs {
                docs.extend(self.store.get(&job).await?);
            }
            docs
        };
        Ok(docs
            .into_iter()
            .filter_map(|d| serde_json::from_value::<Saga>(d.doc).ok())
            .collect())
    }

    /// An Azure resource event says `resource_id` was deleted: if it is a
    /// live resource of finished jobs, ARM is asked first, and only a
    /// resource that is really gone (GET answers 404) marks those jobs
    /// `Degraded` (listed in `missing`). A resource that still exists (the
    /// event was stale, forged, or the resource came back) changes nothing.
    ///
    /// # Errors
    /// A store or bus failure, or [`EngineError::Azure`] when ARM could not
    /// be read (retryable or not, as the error says); nothing is marked then.
    pub async fn mark_degraded(&self, resource_id: &str) -> Result<DeletedOutside, EngineError> {
        let mut candidates = vec![];
        for saga in self.sagas_named_in(resource_id).await? {
            // A cheap filter on the listed copy; the change itself re-checks.
            if decide::mark_degraded(&mut saga.clone(), resource_id).is_ok() {
                candidates.push(saga);
            }
        }
        let Some(first) = candidates.first() else {
            return Ok(DeletedOutside::NotOurs);
        };
        let api_version = first
            .resources
            .iter()
            .find(|r| r.id.eq_ignore_ascii_case(resource_id))
            .and_then(|r| match &r.kind {
                ResourceKind::Arm { api_version } => Some(api_version.clone()),
                _ => None,
            });
        let (Some(api_version), Ok(id)) = (api_version, ResourceId::parse(resource_id)) else {
            return Ok(DeletedOutside::NotOurs);
        };
        if self
            .azure
            .arm
            .get(&id, None, &api_version)
            .await
            .map_err(EngineError::Azure)?
            .is_some()
        {
            let jobs: Vec<String> = candidates.into_iter().map(|s| s.id).collect();
            tracing::warn!(resource = %resource_id, ?jobs, "a delete event names a resource that still exists; ignored");
            return Ok(DeletedOutside::StillExists(jobs));
        }
        let mut changed = vec![];
        for saga in candidates {
            let saved = self
                .with_saga(&saga.id, true, |saga, out| {
                    match decide::mark_degraded(saga, resource_id) {
                        Ok(emit) => {
                            out.push(emit);
                            Ok(true)
                        }
                        Err(_) => Ok(false),
                    }
                })
                .await;
            match saved {
                Ok(true) => changed.push(saga.id.clone()),
                Ok(false) | Err(CommandError::NotFound(_)) => {}
                Err(CommandError::Engine(e)) => return Err(e),
                Err(e) => return Err(StoreError::Unavailable(e.to_string()).into()),
            }
        }
        Ok(DeletedOutside::Degraded(changed))
    }
}

/// What a resource-deleted event led to ([`Engine::mark_degraded`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeletedOutside {
    /// Not a live resource of any finished job (or already recorded missing).
    NotOurs,
    /// ARM still has the resource: nothing changed (the jobs it belongs to).
    StillExists(Vec<String>),
    /// ARM answered 404: these jobs are now `Degraded`.
    Degraded(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::World;

    #[tokio::test]
    async fn a_drawn_job_id_that_is_taken_is_drawn_again() {
        let w = World::new();
        let taken = w.engine.submit(ClusterSpec::example()).await.unwrap();
        let mut draws = vec!["demo-fresh1".to_string(), taken.clone(), taken.clone()];
        let id = w
            .engine
            .unused_job_id(|| draws.pop().unwrap())
            .await
            .unwrap();
        assert_eq!(id, "demo-fresh1", "the taken id, drawn twice, was skipped");
        assert!(draws.is_empty());

        let refused = w.engine.unused_job_id(|| taken.clone()).await.unwrap_err();
        assert!(matches!(refused, CommandError::Conflict(_)), "{refused}");
    }
}
