//! The saga document: one per job, the single record of what was asked, what
//! exists, what is running and how to undo it. Stored as JSON with an ETag.

use crate::spec::ClusterSpec;
use flotilla_azure::PollState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The six forward steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepName {
    Stage,
    Prereqs,
    Keys,
    Master,
    Workers,
    Join,
}

impl StepName {
    pub const ALL: [StepName; 6] = [
        StepName::Stage,
        StepName::Prereqs,
        StepName::Keys,
        StepName::Master,
        StepName::Workers,
        StepName::Join,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Stage => "stage",
            StepName::Prereqs => "prereqs",
            StepName::Keys => "keys",
            StepName::Master => "master",
            StepName::Workers => "workers",
            StepName::Join => "join",
        }
    }

    pub fn parse(s: &str) -> Option<StepName> {
        StepName::ALL.into_iter().find(|n| n.as_str() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn next(self) -> Option<StepName> {
        StepName::ALL.get(self.index() + 1).copied()
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    Running,
    Succeeded,
    /// A step failed for good; its own and earlier steps' resources are being deleted.
    Compensating,
    Compensated,
    /// An explicit `delete` is tearing the cluster down.
    Deleting,
    Deleted,
    /// Compensation or deletion could not finish; see `error` and `resources`.
    Failed,
    /// A resource of a live cluster was deleted outside flotilla.
    Degraded,
    /// Pre-flight refused the job before anything was created (the problems
    /// are in `preflight` and `error`); nothing to compensate or delete.
    Rejected,
}

impl JobStatus {
    /// The statuses after which no further work happens without a new command.
    pub const TERMINAL: [JobStatus; 6] = [
        JobStatus::Succeeded,
        JobStatus::Compensated,
        JobStatus::Deleted,
        JobStatus::Failed,
        JobStatus::Degraded,
        JobStatus::Rejected,
    ];

    /// No further work will happen without a new command.
    pub fn is_terminal(self) -> bool {
        JobStatus::TERMINAL.contains(&self)
    }

    /// The terminal statuses as a document stores them, each quoted for a
    /// query's `IN (…)` list (`'Succeeded', 'Compensated', …`): for stores
    /// that leave settled jobs out of the sweeper's listing.
    pub fn terminal_in_list() -> String {
        JobStatus::TERMINAL
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .filter_map(|v| v.as_str().map(|s| format!("'{s}'")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Compensating,
    Compensated,
}

/// A failure as recorded: code and message from Azure (never a secret), and
/// the class the engine gave it (retried, or terminal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    /// True when the engine treated the failure as transient and tried again.
    #[serde(default)]
    pub retryable: bool,
}

impl ErrorInfo {
    /// A failure that no retry can fix.
    pub fn terminal(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorInfo {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }
}

impl From<&flotilla_azure::AzureError> for ErrorInfo {
    fn from(e: &flotilla_azure::AzureError) -> Self {
        ErrorInfo {
            code: e.code.clone(),
            message: e.message.clone(),
            retryable: e.is_retryable(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepState {
    pub name: StepName,
    pub status: StepStatus,
    /// Forward attempts (1 on the first run; + 1 per retry after a retryable error).
    pub attempts: u32,
    /// Undo attempts that failed and were retried.
    #[serde(default)]
    pub undo_attempts: u32,
    /// Forward attempts that failed since the step last made progress (a
    /// resource of it was created): the retry budget counts these, so a long
    /// step is not failed by scattered transient errors it got past.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_error: Option<ErrorInfo>,
    /// When undo began deleting what this step created (compensation or
    /// `delete`); `None` before any undo of it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub undo_started_at: Option<OffsetDateTime>,
    /// When nothing this step created was left (its undo finished).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub undo_finished_at: Option<OffsetDateTime>,
}

/// What kind of thing a recorded resource is, so undo knows how to delete it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ResourceKind {
    /// An ARM resource; `apiVersion` is the one to DELETE it with.
    Arm { api_version: String },
    /// A Key Vault secret (by name).
    Secret { name: String },
    /// A staged blob (by name in the staging container).
    Blob { name: String },
    /// flotilla's NSG on a subnet of an existing network (the record's id is
    /// the subnet's): undo puts `previous` back (`None`: no NSG) and never
    /// deletes the subnet.
    SubnetNsg {
        #[serde(default)]
        previous: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceState {
    /// Recorded ahead, by the write that ended the step before (or created
    /// the job): no handler of its own step has saved since, so nobody has
    /// claimed it. Its step's first handler sends it without a write of its
    /// own; until that handler saves, the create may have reached Azure (a
    /// handler that crashed after sending), so undo deletes it like `Creating`.
    Planned,
    /// Intent recorded: the create may or may not have reached Azure.
    Creating,
    Created,
    Deleting,
    Deleted,
}

/// One entry of the undo log. `id` is the ARM id, secret id or blob URL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRecord {
    pub id: String,
    pub step: StepName,
    #[serde(flatten)]
    pub kind: ResourceKind,
    pub state: ResourceState,
    /// Times it was opened again: undo found it back after deleting it (a
    /// late write of a stale handler re-created it), or `join` found it
    /// `Failed` after its create and sent the create once more.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reopened: u32,
}

/// What the pending operation is doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "purpose")]
pub enum PendingPurpose {
    /// Creating the resource at `resource` (index into `resources`).
    Create { step: StepName, resource: usize },
    /// `join` waiting for nodes; no Azure operation, just a re-check.
    JoinCheck,
    /// Deleting `resources[resource]`.
    Delete { resource: usize },
    /// Scaling a worker pool.
    Scale { pool: String, count: u32 },
    /// A scaled pool's scale set is done; waiting for its nodes to be Ready
    /// (the same check as `join`), no Azure operation in flight.
    ScaleJoinCheck { pool: String, count: u32 },
    /// Adding worker pool `pool` (already in the spec) to a succeeded
    /// cluster: creating `resources[resource]` (its operation in `poll`), or,
    /// with no `resource`, creating the next one or waiting for the pool's
    /// nodes to be Ready (the same check as `join`).
    AddPool {
        pool: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<usize>,
    },
    /// Removing worker pool `pool`: deleting its resources newest first
    /// (`resources[resource]` while an ARM delete runs). `undo` when the
    /// pool's add failed and is being undone (its error is in `error`);
    /// `attempts` counts failed deletes, retried with backoff.
    RemovePool {
        pool: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<usize>,
        undo: bool,
        #[serde(default)]
        attempts: u32,
    },
}

/// A long-running operation in flight; re-checked by a scheduled event with `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingOp {
    #[serde(flatten)]
    pub purpose: PendingPurpose,
    /// `None` for a join re-check.
    pub poll: Option<PollState>,
    pub seq: u64,
    /// Checks so far (join gives up after a limit).
    #[serde(default)]
    pub checks: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

impl PendingPurpose {
    /// What the job waits for, in words (`status`, the progress page, the
    /// sweeper's stall report).
    pub fn describe(&self, saga: &Saga) -> String {
        let resource = |i: &usize| saga.resources.get(*i).map_or("?", |r| r.id.as_str());
        match self {
            PendingPurpose::Create { step, resource: i } => {
                format!("step {step} waits for the creation of {}", resource(i))
            }
            PendingPurpose::JoinCheck => "step join waits for nodes to join".into(),
            PendingPurpose::Delete { resource: i } => {
                format!("undo waits for the deletion of {}", resource(i))
            }
            PendingPurpose::ScaleJoinCheck { pool, count } => {
                format!("pool {pool} waits for its {count} node(s) to be Ready")
            }
            PendingPurpose::Scale { pool, count } => {
                format!("scaling pool {pool} to {count} is in flight")
            }
            PendingPurpose::AddPool { pool, .. } => {
                format!("adding pool {pool} waits for its scale set or its nodes")
            }
            PendingPurpose::RemovePool { pool, .. } => {
                format!("removing pool {pool} waits for its deletes")
            }
        }
    }
}

/// What a job waits for now and why: an operation in flight, or a retry
/// after a failure. Shown by `status` (`wait`) and the progress page.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wait {
    /// The step waited on, when the wait belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<StepName>,
    /// What is awaited, in words.
    pub why: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Checks made so far (polls of the operation, node counts).
    pub checks: u32,
    /// When the next event is due at the latest.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<OffsetDateTime>,
}

/// The saga document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saga {
    /// The job id (also the Cosmos partition key).
    pub id: String,
    pub spec: ClusterSpec,
    pub status: JobStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub steps: Vec<StepState>,
    /// The undo log, in creation order.
    pub resources: Vec<ResourceRecord>,
    pub pending: Option<PendingOp>,
    /// Last sequence number handed to a scheduled event.
    pub seq: u64,
    /// The error that stopped the job (forward failure or failed undo).
    pub error: Option<ErrorInfo>,
    /// Current instance count per worker pool.
    #[serde(default)]
    pub pools: BTreeMap<String, u32>,
    /// Resources deleted outside flotilla (status `Degraded`).
    #[serde(default)]
    pub missing: Vec<String>,
    /// Messages that could not be processed and were dead-lettered.
    #[serde(default)]
    pub dead_letters: Vec<String>,
    /// Events committed with this version of the saga (only on stores
    /// without a transactional outbox): they stay here until a later load
    /// knows they reached the bus, or the sweeper sends them again; see
    /// `engine::txn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<OutboxEntry>,
    /// When the job's next event is due at the latest (the end of the
    /// longest delay among the events of the last save): the sweeper re-arms
    /// a job whose due time has long passed without a save.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub wake_at: Option<OffsetDateTime>,
    /// Times the sweeper re-armed the job since its last progress.
    #[serde(default)]
    pub rearms: u32,
    /// The caller's idempotency key (HTTP `Idempotency-Key`, Service Bus
    /// `MessageId`) the job was submitted with; the job id derives from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_key: Option<String>,
    /// What the check after the undo chain still found tagged with the job
    /// (ARM ids, secret ids, blob URLs); the job is then `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<String>,
    /// Secrets the undo chain deleted that the vault keeps recoverable
    /// (purge protection) until Azure purges them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub soft_deleted: Vec<SoftDeleted>,
    /// Failed attempts of the check after the undo chain (retried like an undo).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub verify_attempts: u32,
    /// The pre-flight's verdict once it ran (at the edge, or as the job's
    /// first action): its problems (the job is then `Rejected`) and warnings
    /// (quota short for every pool at `max`, a check it could not make).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<crate::preflight::Preflight>,
    /// The principal (Entra object id) that submitted the job, as App Service
    /// Authentication named it; only it (or an admin) may read, scale or
    /// delete the job over HTTP. `null` when no caller was named (no
    /// authentication configured, a job from the queue).
    #[serde(default)]
    pub owner: Option<String>,
    /// The principal ids of the cluster's identities that hold role
    /// assignments: by scale set name (its system-assigned identity, read
    /// from ARM), or `service-principal` (the configured object id).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub principals: BTreeMap<String, String>,
    /// What flotilla corrected on its own, for `status`: a pool count set
    /// outside `min..max` on the scale set and set back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A deleted secret the vault keeps: recoverable, and purged by Azure at `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SoftDeleted {
    /// The secret id (URL without version).
    pub id: String,
    /// When Azure purges it (its `scheduledPurgeDate`), when the vault says.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
}

/// An event waiting in the saga document to be sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    pub event: crate::events::CloudEvent,
    /// Scheduled enqueue time, for delayed events (polls, retries).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
}

impl Saga {
    pub fn new(id: String, spec: ClusterSpec, now: OffsetDateTime) -> Saga {
        let pools = spec
            .worker_pools
            .iter()
            .map(|p| (p.name.clone(), p.min))
            .collect();
        Saga {
            id,
            spec,
            status: JobStatus::Running,
            created_at: now,
            updated_at: now,
            steps: StepName::ALL
                .iter()
                .map(|&name| StepState {
                    name,
                    status: StepStatus::Pending,
                    attempts: 0,
                    undo_attempts: 0,
                    failures: 0,
                    started_at: None,
                    finished_at: None,
                    last_error: None,
                    undo_started_at: None,
                    undo_finished_at: None,
                })
                .collect(),
            resources: vec![],
            pending: None,
            seq: 0,
            error: None,
            pools,
            missing: vec![],
            dead_letters: vec![],
            outbox: vec![],
            wake_at: None,
            rearms: 0,
            submission_key: None,
            leftovers: vec![],
            soft_deleted: vec![],
            verify_attempts: 0,
            preflight: None,
            owner: None,
            principals: BTreeMap::new(),
            warnings: vec![],
        }
    }

    pub fn step(&self, name: StepName) -> &StepState {
        &self.steps[name.index()]
    }

    pub fn step_mut(&mut self, name: StepName) -> &mut StepState {
        &mut self.steps[name.index()]
    }

    /// The next sequence number for a scheduled event.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Index of the recorded resource with this id.
    pub fn resource_index(&self, id: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.id.eq_ignore_ascii_case(id))
    }

    /// Nothing more will happen to this job without a new command: its
    /// status is terminal and no operation is in flight.
    pub fn is_settled(&self) -> bool {
        self.status.is_terminal() && self.pending.is_none()
    }

    /// What this saga, as written, says to a sweep: the same as
    /// [`SweepHint::of_doc`] reads from its JSON.
    ///
    /// [`SweepHint::of_doc`]: crate::ports::SweepHint::of_doc
    pub fn sweep_hint(&self) -> crate::ports::SweepHint {
        use crate::ports::SweepHint;
        if !self.outbox.is_empty() {
            SweepHint::Holding
        } else if self.is_settled() {
            SweepHint::Settled
        } else {
            SweepHint::SavedAt(self.updated_at)
        }
    }

    /// Resources that may exist (not known to be deleted).
    pub fn live_resources(&self) -> impl Iterator<Item = &ResourceRecord> {
        self.resources
            .iter()
            .filter(|r| r.state != ResourceState::Deleted)
    }

    /// What the job waits for now, if anything: the pending operation, or
    /// the retry of a step (its forward run, or its undo) after a retryable
    /// error.
    pub fn wait(&self) -> Option<Wait> {
        if self.is_settled() {
            return None;
        }
        if let Some(p) = &self.pending {
            let step = match &p.purpose {
                PendingPurpose::Create { step, .. } => Some(*step),
                PendingPurpose::JoinCheck => Some(StepName::Join),
                PendingPurpose::Delete { resource } => {
                    self.resources.get(*resource).map(|r| r.step)
                }
                PendingPurpose::Scale { .. }
                | PendingPurpose::ScaleJoinCheck { .. }
                | PendingPurpose::AddPool { .. }
                | PendingPurpose::RemovePool { .. } => None,
            };
            return Some(Wait {
                step,
                why: p.purpose.describe(self),
                since: p.since,
                checks: p.checks,
                until: self.wake_at,
            });
        }
        let retrying = |s: &&StepState| {
            let running = match self.status {
                JobStatus::Running => s.status == StepStatus::Running,
                _ => s.undo_started_at.is_some() && s.undo_finished_at.is_none(),
            };
            running && s.last_error.as_ref().is_some_and(|e| e.retryable)
        };
        let s = self.steps.iter().find(retrying)?;
        let e = s.last_error.as_ref()?;
        let (what, tries) = if self.status == JobStatus::Running {
            ("step", s.attempts)
        } else {
            ("undo of step", s.undo_attempts + 1)
        };
        Some(Wait {
            step: Some(s.name),
            why: format!(
                "{what} {} retries (attempt {tries}) after {}: {}",
                s.name, e.code, e.message
            ),
            since: self.updated_at,
            checks: 0,
            until: self.wake_at,
        })
    }

    /// The id of the job's outputs secret (`{job}-outputs`), once `join`
    /// wrote it and until it is deleted.
    pub fn outputs_id(&self) -> Option<&str> {
        let name = crate::names::outputs_secret(&self.id);
        self.resources
            .iter()
            .find(|r| {
                r.state == ResourceState::Created
                    && matches!(&r.kind, ResourceKind::Secret { name: n } if *n == name)
            })
            .map(|r| r.id.as_str())
    }

    /// Whether `principal_id` is this job's cluster identity: the master's
    /// identity that holds the scaler role on the job's worker pools (so it
    /// may ask for this job's pools to be scaled, and no other job's).
    pub fn is_cluster_identity(&self, principal_id: &str) -> bool {
        let principal_id = principal_id.trim();
        !principal_id.is_empty()
            && [
                crate::names::master_vmss(&self.id).as_str(),
                crate::steps::rbac::SERVICE_PRINCIPAL_KEY,
            ]
            .iter()
            .filter_map(|k| self.principals.get(*k))
            .any(|p| p.eq_ignore_ascii_case(principal_id))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("sagas serialise")
    }

    /// The saga's JSON text, as stores keep it.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("sagas serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saga() -> Saga {
        let spec = ClusterSpec::example();
        Saga::new("demo-abc123".into(), spec, OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn a_saga_s_sweep_hint_is_what_its_json_says_to_a_sweep() {
        use crate::ports::SweepHint;
        let hint_of_json = |s: &Saga| SweepHint::of_doc(&serde_json::to_value(s).unwrap());
        let later = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(1_234_567);
        let mut s = saga();
        s.updated_at = later;
        assert_eq!(s.sweep_hint(), SweepHint::SavedAt(later));
        s.status = JobStatus::Succeeded;
        assert_eq!(s.sweep_hint(), SweepHint::Settled);
        s.pending = Some(PendingOp {
            purpose: PendingPurpose::JoinCheck,
            poll: None,
            seq: 1,
            checks: 0,
            since: later,
        });
        assert_eq!(
            s.sweep_hint(),
            SweepHint::SavedAt(later),
            "an operation in flight"
        );
        let both = s.sweep_hint();
        assert_eq!(hint_of_json(&s), both);
        s.pending = None;
        assert_eq!(hint_of_json(&s), SweepHint::Settled);
        s.outbox.push(OutboxEntry {
            event: crate::events::CloudEvent::new(
                "flotilla.job.succeeded",
                "notify",
                "succeeded",
                crate::events::EventData {
                    job: s.id.clone(),
                    ..Default::default()
                },
            ),
            not_before: None,
        });
        assert_eq!(
            s.sweep_hint(),
            SweepHint::Holding,
            "a settled job's last events"
        );
        assert_eq!(hint_of_json(&s), SweepHint::Holding);
        s.outbox.clear();
        s.status = JobStatus::Running;
        assert_eq!(hint_of_json(&s), SweepHint::SavedAt(later));
        let mut unreadable = serde_json::to_value(&s).unwrap();
        unreadable["updatedAt"] = serde_json::json!("yesterday");
        assert_eq!(SweepHint::of_doc(&unreadable), SweepHint::Unknown);
        assert_eq!(
            SweepHint::of_doc(&serde_json::json!("text")),
            SweepHint::Unknown
        );
    }

    #[test]
    fn the_cluster_identity_is_the_recorded_master_or_service_principal() {
        let mut s = saga();
        assert!(!s.is_cluster_identity("p-master"), "nothing recorded yet");
        s.principals
            .insert(crate::names::master_vmss(&s.id), "p-master".into());
        s.principals
            .insert(crate::names::pool_vmss(&s.id, "general"), "p-worker".into());
        assert!(s.is_cluster_identity("p-master"));
        assert!(s.is_cluster_identity(" P-MASTER "));
        assert!(
            !s.is_cluster_identity("p-worker"),
            "a worker is not the cluster identity"
        );
        assert!(!s.is_cluster_identity(""));
        s.principals.insert(
            crate::steps::rbac::SERVICE_PRINCIPAL_KEY.into(),
            "sp-object".into(),
        );
        assert!(s.is_cluster_identity("sp-object"));
    }

    #[test]
    fn a_saga_without_principals_reads_and_writes_as_before() {
        let s = saga();
        let json = s.to_json();
        assert!(json.get("principals").is_none());
        let back: Saga = serde_json::from_value(json).unwrap();
        assert!(back.principals.is_empty());
    }
}
