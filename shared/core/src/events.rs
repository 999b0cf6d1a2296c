//! CloudEvents 1.0 (structured JSON) for every saga transition.
//!
//! Types live under `io.flotilla.`; `source` is `/flotilla/jobs/{job}`;
//! `id` is derived from the job and the transition (`{job}/{step}/succeeded`,
//! `{job}/{step}/poll/{n}`), so a second emission of the same transition has
//! the same id and the bus drops it. `subject` names the function that
//! handles the event (the Service Bus subscription filter).

use crate::saga::StepName;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// Every event type flotilla emits.
pub mod types {
    pub const JOB_REQUESTED: &str = "io.flotilla.job.requested";
    pub const STEP_SUCCEEDED: &str = "io.flotilla.step.succeeded";
    pub const STEP_POLL: &str = "io.flotilla.step.poll";
    pub const STEP_RETRY: &str = "io.flotilla.step.retry";
    pub const STEP_FAILED: &str = "io.flotilla.step.failed";
    pub const JOB_SUCCEEDED: &str = "io.flotilla.job.succeeded";
    pub const COMPENSATION_STARTED: &str = "io.flotilla.compensation.started";
    pub const UNDO_SUCCEEDED: &str = "io.flotilla.undo.succeeded";
    pub const UNDO_POLL: &str = "io.flotilla.undo.poll";
    pub const UNDO_RETRY: &str = "io.flotilla.undo.retry";
    pub const JOB_COMPENSATED: &str = "io.flotilla.job.compensated";
    pub const COMPENSATION_FAILED: &str = "io.flotilla.compensation.failed";
    pub const DELETE_REQUESTED: &str = "io.flotilla.job.delete-requested";
    pub const JOB_DELETED: &str = "io.flotilla.job.deleted";
    pub const JOB_REJECTED: &str = "io.flotilla.job.rejected";
    pub const SCALE_REQUESTED: &str = "io.flotilla.job.scale-requested";
    pub const SCALE_POLL: &str = "io.flotilla.job.scale-poll";
    pub const JOB_SCALED: &str = "io.flotilla.job.scaled";
    pub const JOB_DEGRADED: &str = "io.flotilla.job.degraded";
    pub const POOL_ADD_REQUESTED: &str = "io.flotilla.job.pool-add-requested";
    pub const POOL_REMOVE_REQUESTED: &str = "io.flotilla.job.pool-remove-requested";
    pub const POOL_POLL: &str = "io.flotilla.job.pool-poll";
    pub const POOL_ADDED: &str = "io.flotilla.job.pool-added";
    pub const POOL_ADD_FAILED: &str = "io.flotilla.job.pool-add-failed";
    pub const POOL_REMOVED: &str = "io.flotilla.job.pool-removed";

    /// All types, for documentation and routing tests.
    pub const ALL: &[&str] = &[
        JOB_REQUESTED,
        STEP_SUCCEEDED,
        STEP_POLL,
        STEP_RETRY,
        STEP_FAILED,
        JOB_SUCCEEDED,
        COMPENSATION_STARTED,
        UNDO_SUCCEEDED,
        UNDO_POLL,
        UNDO_RETRY,
        JOB_COMPENSATED,
        COMPENSATION_FAILED,
        DELETE_REQUESTED,
        JOB_DELETED,
        JOB_REJECTED,
        SCALE_REQUESTED,
        SCALE_POLL,
        JOB_SCALED,
        JOB_DEGRADED,
        POOL_ADD_REQUESTED,
        POOL_REMOVE_REQUESTED,
        POOL_POLL,
        POOL_ADDED,
        POOL_ADD_FAILED,
        POOL_REMOVED,
    ];
}

/// An event type parsed once, so `decide` matches on a closed set and a new
/// type cannot fall silently into a catch-all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    JobRequested,
    StepSucceeded,
    StepPoll,
    StepRetry,
    StepFailed,
    JobSucceeded,
    CompensationStarted,
    UndoSucceeded,
    UndoPoll,
    UndoRetry,
    JobCompensated,
    CompensationFailed,
    DeleteRequested,
    JobDeleted,
    JobRejected,
    ScaleRequested,
    ScalePoll,
    JobScaled,
    JobDegraded,
    PoolAddRequested,
    PoolRemoveRequested,
    PoolPoll,
    PoolAdded,
    PoolAddFailed,
    PoolRemoved,
}

impl EventKind {
    pub const ALL: [EventKind; 25] = [
        EventKind::JobRequested,
        EventKind::StepSucceeded,
        EventKind::StepPoll,
        EventKind::StepRetry,
        EventKind::StepFailed,
        EventKind::JobSucceeded,
        EventKind::CompensationStarted,
        EventKind::UndoSucceeded,
        EventKind::UndoPoll,
        EventKind::UndoRetry,
        EventKind::JobCompensated,
        EventKind::CompensationFailed,
        EventKind::DeleteRequested,
        EventKind::JobDeleted,
        EventKind::JobRejected,
        EventKind::ScaleRequested,
        EventKind::ScalePoll,
        EventKind::JobScaled,
        EventKind::JobDegraded,
        EventKind::PoolAddRequested,
        EventKind::PoolRemoveRequested,
        EventKind::PoolPoll,
        EventKind::PoolAdded,
        EventKind::PoolAddFailed,
        EventKind::PoolRemoved,
    ];

    /// The CloudEvent `type` of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::JobRequested => types::JOB_REQUESTED,
            EventKind::StepSucceeded => types::STEP_SUCCEEDED,
            EventKind::StepPoll => types::STEP_POLL,
            EventKind::StepRetry => types::STEP_RETRY,
            EventKind::StepFailed => types::STEP_FAILED,
            EventKind::JobSucceeded => types::JOB_SUCCEEDED,
            EventKind::CompensationStarted => types::COMPENSATION_STARTED,
            EventKind::UndoSucceeded => types::UNDO_SUCCEEDED,
            EventKind::UndoPoll => types::UNDO_POLL,
            EventKind::UndoRetry => types::UNDO_RETRY,
            EventKind::JobCompensated => types::JOB_COMPENSATED,
            EventKind::CompensationFailed => types::COMPENSATION_FAILED,
            EventKind::DeleteRequested => types::DELETE_REQUESTED,
            EventKind::JobDeleted => types::JOB_DELETED,
            EventKind::JobRejected => types::JOB_REJECTED,
            EventKind::ScaleRequested => types::SCALE_REQUESTED,
            EventKind::ScalePoll => types::SCALE_POLL,
            EventKind::JobScaled => types::JOB_SCALED,
            EventKind::JobDegraded => types::JOB_DEGRADED,
            EventKind::PoolAddRequested => types::POOL_ADD_REQUESTED,
            EventKind::PoolRemoveRequested => types::POOL_REMOVE_REQUESTED,
            EventKind::PoolPoll => types::POOL_POLL,
            EventKind::PoolAdded => types::POOL_ADDED,
            EventKind::PoolAddFailed => types::POOL_ADD_FAILED,
            EventKind::PoolRemoved => types::POOL_REMOVED,
        }
    }

    /// The kind of a CloudEvent `type`; `None` for a type flotilla does not emit.
    pub fn parse(ty: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == ty)
    }
}

/// Handler names (Service Bus subscriptions / Functions) an event can go to.
pub mod handlers {
    pub const POLL: &str = "poll";
    pub const COMPENSATE: &str = "compensate";
    /// Events nobody acts on (notifications for observers).
    pub const NONE: &str = "notify";
}

/// A structured-mode CloudEvent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub datacontenttype: String,
    pub data: EventData,
    /// W3C trace context of the work that emitted the event (CloudEvents
    /// distributed-tracing extension); the handler continues this trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// The data every flotilla event carries: the job and, where it applies, the
/// step and a sequence number. Never a secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepName>,
    /// Poll / retry sequence number this event answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::saga::ErrorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The worker pool a `pool-add-requested` adds (its spec, as in
    /// `workerPools[]`); `decide` checks it against the saga again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_pool: Option<crate::spec::WorkerPool>,
    /// Resource ids (for `degraded`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// `job.succeeded`: the id of the Key Vault secret holding the job's
    /// outputs (its id only, never its value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<String>,
}

impl CloudEvent {
    /// The parsed `type`; `None` for a type flotilla does not emit.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.event_type)
    }

    /// A new event of `event_type` for `job`, handled by `subject`, with the transition key `key`.
    pub fn new(event_type: &str, subject: &str, key: &str, data: EventData) -> Self {
        CloudEvent {
            specversion: "1.0".into(),
            id: format!("{}/{key}", data.job),
            source: format!("/flotilla/jobs/{}", data.job),
            event_type: event_type.into(),
            subject: subject.into(),
            time: OffsetDateTime::now_utc(),
            datacontenttype: "application/json".into(),
            data,
            traceparent: None,
            tracestate: None,
        }
    }

    /// The trace this event belongs to, when it carries a valid context.
    pub fn trace_context(&self) -> Option<crate::telemetry::TraceContext> {
        crate::telemetry::TraceContext::parse(
            self.traceparent.as_deref()?,
            self.tracestate.as_deref(),
        )
    }

    /// Stamps the context of the work emitting the event, unless it already
    /// carries one (an event sent again keeps the context it was stored with).
    pub fn with_current_trace(mut self) -> Self {
        if self.traceparent.is_none() {
            if let Some(cx) = crate::telemetry::current() {
                self.traceparent = Some(cx.traceparent);
                self.tracestate = cx.tracestate;
            }
        }
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events serialise")
    }

    /// Parses a structured CloudEvent; the error says what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if v.get("specversion").and_then(Value::as_str) != Some("1.0") {
            return Err("not a CloudEvents 1.0 event (specversion)".into());
        }
        serde_json::from_value(v).map_err(|e| format!("not a flotilla event: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_emitted_type_has_exactly_one_kind() {
        assert_eq!(types::ALL.len(), EventKind::ALL.len());
        for ty in types::ALL {
            let kind = EventKind::parse(ty).unwrap_or_else(|| panic!("{ty} has no kind"));
            assert_eq!(kind.as_str(), *ty);
        }
        assert_eq!(EventKind::parse("io.flotilla.nope"), None);
    }

    #[test]
    fn the_trace_context_travels_as_extension_attributes() {
        let data = EventData {
            job: "j".into(),
            ..Default::default()
        };
        let plain = CloudEvent::new(types::JOB_REQUESTED, handlers::NONE, "requested", data);
        let json: Value = serde_json::from_slice(&plain.to_json()).unwrap();
        assert!(
            json.get("traceparent").is_none(),
            "no context, no attribute: {json}"
        );
        assert_eq!(plain.trace_context(), None);

        let mut traced = plain.clone();
        traced.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        traced.tracestate = Some("congo=t61rcWkgMzE".into());
        let json: Value = serde_json::from_slice(&traced.to_json()).unwrap();
        assert_eq!(
            json["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(json["tracestate"], "congo=t61rcWkgMzE");
        let back = CloudEvent::from_json(&traced.to_json()).unwrap();
        assert_eq!(back, traced);
        assert_eq!(
            back.trace_context().unwrap().trace_id(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        // A stamped event keeps its context when stamped again.
        assert_eq!(back.clone().with_current_trace(), back);

        let mut bad = plain;
        bad.traceparent = Some("not-a-context".into());
        assert_eq!(
            bad.trace_context(),
            None,
            "an invalid context starts a new trace"
        );
    }
}
