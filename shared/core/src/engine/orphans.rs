//! The orphan sweep: finds what carries `managed-by: flotilla` but belongs
//! to no live job (the rules are in [`crate::orphans`]) and, when asked,
//! deletes it.
//!
//! # Expected flow
//! [`Engine::find_orphans`] reads every saga, then lists, with reads only:
//! the resources of every resource group a known job uses plus the
//! configured ones (`FLOTILLA_SWEEP_RESOURCE_GROUPS`), the vault's secrets
//! and the staging container's blobs. Resource groups are listed one at a
//! time and never the subscription: flotilla's role is granted on the
//! clusters' resource groups only (least privilege), so a group that no
//! known job uses and nobody configured is not swept. Whatever is tagged
//! `managed-by: flotilla` (blob metadata `managed_by`) is judged by
//! [`orphans::why_orphan`]; orphans older than `older_than` are reported.
//!
//! [`Engine::remove_orphans`] deletes them with the undo chain's own
//! deletion (`start_delete`: a 404 is done, a secret is purged where the
//! vault allows it), dependants first (the reverse of the order the steps
//! create ARM types), polling long-running deletes and retrying retryable
//! failures with the undo chain's backoff and attempt limit, for at most
//! `max_wait`.
//!
//! # Guarantees
//! Nothing a live job owns is deleted: just before each deletion the job its
//! tag names is read again from the store, and a job that is now known and
//! live keeps it. A job the store does not know when the listing starts is
//! looked up again before it is reported (a job submitted meanwhile is not
//! an orphan). Sweeping twice, or from two places at once, is safe: every
//! delete treats a 404 as done.
//!
//! # Caveats
//! Only the configured vault and staging container are listed. Something
//! whose creation time the plane does not give is too young to report
//! unless `older_than` is zero. A type flotilla never creates is reported
//! but not deleted.

use super::undo::Deleted;
use super::{Engine, EngineError};
use crate::names;
use crate::orphans::{self, Known, Orphan};
use crate::saga::{ResourceKind, Saga, SoftDeleted, StepName};
use crate::settings;
use crate::spec::ClusterSpec;
use crate::steps::{self, Op};
use flotilla_azure::arm::PollOutcome;
use flotilla_azure::models::api;
use flotilla_azure::{AzureError, Listed, PollState};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// What the orphan sweep looks at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrphanOptions {
    /// Only report orphans at least this old.
    pub older_than: Duration,
    /// Resource groups to list besides those of the known jobs.
    pub resource_groups: Vec<String>,
}

/// Azure's rule for resource group names.
fn valid_resource_group(rg: &str) -> bool {
    !rg.is_empty()
        && rg.len() <= 90
        && !rg.ends_with('.')
        && rg
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.()".contains(c))
}

/// Comma-separated resource group names; a bad one is an error naming `field`.
pub fn parse_resource_groups(field: &str, text: &str) -> Result<Vec<String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|g| {
            if valid_resource_group(g) {
                Ok(g.to_string())
            } else {
                Err(format!(
                    "{field}: '{g}' is not a resource group name (1-90 letters, digits, '-', '_', '.', '(' or ')', not ending with '.')"
                ))
            }
        })
        .collect()
}

impl OrphanOptions {
    /// `defaults`, overridden by `FLOTILLA_SWEEP_RESOURCE_GROUPS` (added to
    /// the defaults' groups) and `FLOTILLA_SWEEP_ORPHAN_AGE_S`.
    pub fn from_settings(defaults: OrphanOptions) -> Result<OrphanOptions, String> {
        let mut out = defaults;
        if let Some(v) = settings::get("FLOTILLA_SWEEP_RESOURCE_GROUPS") {
            out.resource_groups
                .extend(parse_resource_groups("FLOTILLA_SWEEP_RESOURCE_GROUPS", &v)?);
        }
        if let Some(v) = settings::get("FLOTILLA_SWEEP_ORPHAN_AGE_S") {
            out.older_than = v.parse::<u64>().map(Duration::from_secs).map_err(|_| {
                format!("FLOTILLA_SWEEP_ORPHAN_AGE_S must be a whole number of seconds (got '{v}')")
            })?;
        }
        Ok(out)
    }
}

/// What one orphan sweep found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrphanReport {
    /// The resource groups listed.
    pub resource_groups: Vec<String>,
    /// Orphans, in the order they would be deleted.
    pub orphans: Vec<Orphan>,
    /// Orphans not reported because they are younger than `older_than`.
    pub younger: usize,
    /// What could not be listed (the sweep goes on with the rest).
    pub errors: Vec<String>,
}

/// How long removing orphans may take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RemovalOptions {
    /// Stop waiting for deletes after this long (the next sweep finds what is left).
    pub max_wait: Duration,
}

/// What removing orphans did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    /// Deleted (and, for secrets, purged).
    pub removed: Vec<String>,
    /// Secrets deleted that the vault keeps until Azure purges them.
    pub soft_deleted: Vec<SoftDeleted>,
    /// Left in place, with why.
    pub not_removed: Vec<NotRemoved>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotRemoved {
    pub id: String,
    pub why: String,
}

/// Where one deletion is.
enum Progress {
    /// Start (or retry) the delete at this instant.
    Due(Instant),
    /// Check the running delete at this instant.
    Polling(PollState, Instant),
    Done,
}

struct Work<'a> {
    orphan: &'a Orphan,
    kind: &'a ResourceKind,
    attempts: u32,
    progress: Progress,
}

/// What plane a listed thing comes from, and the tag names it uses there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plane {
    Arm,
    Secret,
    Blob,
}

impl Plane {
    fn kind(self) -> &'static str {
        match self {
            Plane::Arm => "arm",
            Plane::Secret => "secret",
            Plane::Blob => "blob",
        }
    }

    /// Tags on ARM and Key Vault; C#-identifier metadata names on blobs.
    fn tag_name(self, tag: &str) -> String {
        match self {
            Plane::Blob => names::metadata_name(tag),
            _ => tag.to_string(),
        }
    }
}

fn parse_saga(doc: serde_json::Value) -> Option<Saga> {
    serde_json::from_value(doc).ok()
}

impl Engine {
    /// The ARM types the steps create, in creation order, each with the API
    /// version it is created (and deleted) with — computed by the steps' own
    /// plans for the example spec, so it cannot drift from the flow.
    fn arm_types(&self) -> Vec<(String, String)> {
        let spec = ClusterSpec::example();
        let job = names::job_id_for_key(&spec, "sweep");
        let saga = Saga::new(job, spec, self.now());
        let mut out: Vec<(String, String)> = vec![];
        for step in StepName::ALL {
            for op in steps::outline(step, &saga, &self.env) {
                let (ty, api_version) = match &op {
                    Op::Arm {
                        id, api_version, ..
                    } => (id.resource_type(), api_version.to_string()),
                    Op::ScaleSet { id, .. } => (id.resource_type(), api::COMPUTE.to_string()),
                    _ => continue,
                };
                if !out.iter().any(|(t, _)| t.eq_ignore_ascii_case(&ty)) {
                    out.push((ty, api_version));
                }
            }
        }
        out
    }

    /// What the store says about `job` now.
    async fn known(&self, job: &str) -> Result<Option<Option<Saga>>, EngineError> {
        Ok(self.store.get(job).await?.map(|d| parse_saga(d.doc)))
    }

    /// Finds the orphans (see the module doc). Only reads.
    pub async fn find_orphans(&self, opts: &OrphanOptions) -> Result<OrphanReport, EngineError> {
        let mut report = OrphanReport::default();
        let mut sagas: HashMap<String, Option<Saga>> = HashMap::new();
        let mut groups: BTreeMap<String, String> = BTreeMap::new();
        for doc in self.store.list().await? {
            let saga = parse_saga(doc.doc);
            if let Some(s) = &saga {
                groups
                    .entry(s.spec.resource_group.to_ascii_lowercase())
                    .or_insert_with(|| s.spec.resource_group.clone());
            }
            sagas.insert(doc.id, saga);
        }
        for g in &opts.resource_groups {
            groups
                .entry(g.to_ascii_lowercase())
                .or_insert_with(|| g.clone());
        }
        let mut found: Vec<(Listed, Plane)> = vec![];
        let failed = |what: &str, e: AzureError| format!("{what}: {}: {}", e.code, e.message);
        for rg in groups.values() {
            match self.azure.arm.list_resources(rg, None).await {
                Ok(items) => found.extend(items.into_iter().map(|i| (i, Plane::Arm))),
                Err(e) => report
                    .errors
                    .push(failed(&format!("resource group {rg}"), e)),
            }
        }
        report.resource_groups = groups.into_values().collect();
        match self.azure.secrets.list().await {
            Ok(items) => found.extend(items.into_iter().map(|i| (i, Plane::Secret))),
            Err(e) => report.errors.push(failed("Key Vault secrets", e)),
        }
        match self.azure.blobs.list(None).await {
            Ok(items) => found.extend(items.into_iter().map(|i| (i, Plane::Blob))),
            Err(e) => report.errors.push(failed("staged blobs", e)),
        }

        let types = self.arm_types();
        let creation: Vec<String> = types.iter().map(|(t, _)| t.clone()).collect();
        let now = self.now();
        for (item, plane) in found {
            if item.tag(&plane.tag_name(names::TAG_MANAGED_BY)) != Some("flotilla") {
                continue;
            }
            let job = item
                .tag(&plane.tag_name(names::TAG_JOB))
                .map(str::to_string);
            // A job unknown when the store was listed may have been submitted
            // since: look it up again before calling its resources orphans.
            if let Some(j) = &job {
                if !sagas.contains_key(j) {
                    if let Some(fresh) = self.known(j).await? {
                        sagas.insert(j.clone(), fresh);
                    }
                }
            }
            let known = match job.as_deref().map(|j| sagas.get(j)) {
                None | Some(None) => Known::Unknown,
                Some(Some(None)) => Known::Unreadable,
                Some(Some(Some(s))) => Known::Saga(s),
            };
            let Some(mut why) = orphans::why_orphan(job.as_deref(), known) else {
                continue;
            };
            let age = item
                .created
                .map(|c| Duration::try_from(now - c).unwrap_or_default());
            let old_enough = opts.older_than.is_zero() || age.is_some_and(|a| a >= opts.older_than);
            if !old_enough {
                report.younger += 1;
                continue;
            }
            let delete = match plane {
                Plane::Arm => types
                    .iter()
                    .find(|(t, _)| {
                        item.resource_type
                            .as_deref()
                            .is_some_and(|ty| t.eq_ignore_ascii_case(ty))
                    })
                    .map(|(_, v)| ResourceKind::Arm {
                        api_version: v.clone(),
                    }),
                Plane::Secret => Some(ResourceKind::Secret {
                    name: item.name.clone(),
                }),
                Plane::Blob => Some(ResourceKind::Blob {
                    name: item.name.clone(),
                }),
            };
            if delete.is_none() {
                why.push_str("; flotilla never creates this type, so the sweep does not delete it");
            }
            report.orphans.push(Orphan {
                id: item.id,
                kind: plane.kind(),
                resource_type: item.resource_type,
                job,
                created: item.created,
                age: age.map(orphans::format_age),
                age_seconds: age.map(|a| a.as_secs()),
                why,
                delete,
            });
        }
        report.orphans.sort_by_key(|o| {
            let rank = orphans::removal_rank(o.resource_type.as_deref(), &creation);
            (rank.unwrap_or(usize::MAX), o.id.to_ascii_lowercase())
        });
        Ok(report)
    }

    /// Why a live job owns what carries its tag now, if it does.
    async fn owned_now(&self, job: &str) -> Result<Option<String>, EngineError> {
        let known = self.known(job).await?;
        let k = match &known {
            None => Known::Unknown,
            Some(None) => Known::Unreadable,
            Some(Some(s)) => Known::Saga(s),
        };
        Ok(match (orphans::why_orphan(Some(job), k), &known) {
            (Some(_), _) => None,
            (None, Some(Some(s))) => Some(format!("job {job} is {:?} now and owns it", s.status)),
            (None, _) => Some(format!("job {job}'s saga is unreadable; left alone")),
        })
    }

    /// Deletes orphans (see the module doc) and says what happened to each.
    pub async fn remove_orphans(&self, found: &[Orphan], opts: &RemovalOptions) -> Removal {
        let mut out = Removal::default();
        let deadline = Instant::now() + opts.max_wait;
        let creation: Vec<String> = self.arm_types().into_iter().map(|(t, _)| t).collect();
        let mut tiers: BTreeMap<usize, Vec<Work<'_>>> = BTreeMap::new();
        let not_removed = |out: &mut Removal, id: &str, why: String| {
            out.not_removed.push(NotRemoved { id: id.into(), why });
        };
        for o in found {
            let Some(kind) = &o.delete else {
                not_removed(&mut out, &o.id, "flotilla never creates this type".into());
                continue;
            };
            if let Some(job) = &o.job {
                match self.owned_now(job).await {
                    Ok(None) => {}
                    Ok(Some(why)) => {
                        not_removed(&mut out, &o.id, why);
                        continue;
                    }
                    Err(e) => {
                        not_removed(&mut out, &o.id, format!("could not read job {job}: {e}"));
                        continue;
                    }
                }
            }
            let rank = orphans::removal_rank(o.resource_type.as_deref(), &creation).unwrap_or(0);
            tiers.entry(rank).or_default().push(Work {
                orphan: o,
                kind,
                attempts: 0,
                progress: Progress::Due(Instant::now()),
            });
        }
        let mut timed_out = false;
        for (_, mut work) in tiers {
            if timed_out {
                for w in &work {
                    not_removed(
                        &mut out,
                        &w.orphan.id,
                        "not attempted: what it may depend on was still being deleted".into(),
                    );
                }
                continue;
            }
            loop {
                let now = Instant::now();
                for w in work.iter_mut() {
                    match &w.progress {
                        Progress::Due(at) if *at <= now => {
                            match self.start_delete(&w.orphan.id, w.kind).await {
                                Ok(Deleted::Gone) => {
                                    out.removed.push(w.orphan.id.clone());
                                    w.progress = Progress::Done;
                                }
                                Ok(Deleted::Retained(until)) => {
                                    out.soft_deleted.push(SoftDeleted {
                                        id: w.orphan.id.clone(),
                                        until,
                                    });
                                    w.progress = Progress::Done;
                                }
                                Ok(Deleted::Pending(poll)) => {
                                    let at = now + poll.retry_after();
                                    w.progress = Progress::Polling(poll, at);
                                }
                                Err(e) => self.retry_or_give_up(w, &e, now, &mut out),
                            }
                        }
                        Progress::Polling(poll, at) if *at <= now => {
                            match self.azure.arm.poll(poll).await {
                                Ok(PollOutcome::Succeeded) => {
                                    out.removed.push(w.orphan.id.clone());
                                    w.progress = Progress::Done;
                                }
                                Ok(PollOutcome::Pending { retry_after }) => {
                                    w.progress = Progress::Polling(poll.clone(), now + retry_after);
                                }
                                Ok(PollOutcome::Failed(e)) | Err(e) => {
                                    self.retry_or_give_up(w, &e, now, &mut out)
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let next = work
                    .iter()
                    .filter_map(|w| match &w.progress {
                        Progress::Due(at) | Progress::Polling(_, at) => Some(*at),
                        Progress::Done => None,
                    })
                    .min();
                let Some(next) = next else { break };
                if next > deadline {
                    timed_out = true;
                    for w in work
                        .iter()
                        .filter(|w| !matches!(w.progress, Progress::Done))
                    {
                        not_removed(
                            &mut out,
                            &w.orphan.id,
                            format!(
                                "still being deleted after {}; the next sweep finds it again",
                                orphans::format_age(opts.max_wait)
                            ),
                        );
                    }
                    break;
                }
                tokio::time::sleep_until(next).await;
            }
        }
        out
    }

    /// A delete failed: retry after the undo backoff while it is retryable
    /// and attempts remain, else give up on this orphan.
    fn retry_or_give_up(&self, w: &mut Work<'_>, e: &AzureError, now: Instant, out: &mut Removal) {
        w.attempts += 1;
        if e.is_retryable() && w.attempts < self.policy.max_undo_attempts {
            let after = self.policy.backoff(w.attempts, e.retry_after);
            tracing::warn!(id = %w.orphan.id, code = %e.code, attempt = w.attempts, "orphan delete failed; retrying");
            w.progress = Progress::Due(now + after);
            return;
        }
        tracing::warn!(id = %w.orphan.id, code = %e.code, "orphan delete failed");
        out.not_removed.push(NotRemoved {
            id: w.orphan.id.clone(),
            why: format!(
                "delete failed after {} attempt(s): {}: {}",
                w.attempts, e.code, e.message
            ),
        });
        w.progress = Progress::Done;
    }
}
