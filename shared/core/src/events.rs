//! CloudEvents 1.0 (structured JSON) for every saga transition, built and
//! parsed with the CloudEvents SDK (`cloudevents::Event`).
//!
//! Types live under `io.flotilla.`; `source` is `/flotilla/jobs/{job}`;
//! `id` is derived from the job and the transition (`{job}/{step}/succeeded`,
//! `{job}/{step}/poll/{n}`), so a second emission of the same transition has
//! the same id and the bus drops it. `subject` names the function that
//! handles the event (the Service Bus subscription filter).

use crate::saga::StepName;
use cloudevents::event::{ExtensionValue, SpecVersion};
use cloudevents::{AttributesReader, AttributesWriter, Data, Event, EventBuilder, EventBuilderV10};
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use serde_json::Value;
use std::time::SystemTime;
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

/// A flotilla event: a CloudEvents 1.0 [`cloudevents::Event`] that has the
/// attributes flotilla relies on (`subject`, `time`, JSON `data` holding
/// [`EventData`]), with that data parsed once.
///
/// The SDK checks the spec (required attributes, `specversion`, `time` as
/// RFC 3339, extension values) and writes the structured JSON form; this type
/// only adds flotilla's own requirements and typed accessors. Values are built
/// by [`CloudEvent::new`] or parsed ([`CloudEvent::from_json`], serde), so the
/// typed data always equals the event's `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudEvent {
    event: Event,
    data: EventData,
}

/// The W3C trace context extension attributes (CloudEvents distributed tracing).
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Why bytes are not a flotilla event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The CloudEvents SDK refused it (a required attribute missing or of the
    /// wrong type, an unknown `specversion`, a `time` that is not RFC 3339, …).
    #[error("not a CloudEvents 1.0 event: {0}")]
    NotCloudEvent(String),
    /// A valid CloudEvent without what flotilla needs (a `subject`, a `time`,
    /// `data` that is a JSON object of [`EventData`]).
    #[error("the CloudEvent {0}")]
    NotFlotilla(String),
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
    /// A new event of `event_type` for `job`, handled by `subject`, with the transition key `key`.
    pub fn new(event_type: &str, subject: &str, key: &str, data: EventData) -> Self {
        let mut event = EventBuilderV10::new()
            .id(format!("{}/{key}", data.job))
            .source(format!("/flotilla/jobs/{}", data.job))
            .ty(event_type)
            .subject(subject)
            .data(JSON, data_value(&data))
            .build()
            .expect("id, type and a non-empty source are set");
        event.set_time(Some(SystemTime::now()));
        CloudEvent { event, data }
    }

    /// The event as the CloudEvents SDK holds it.
    pub fn as_event(&self) -> &Event {
        &self.event
    }

    pub fn id(&self) -> &str {
        self.event.id()
    }

    /// The CloudEvent `type`.
    pub fn event_type(&self) -> &str {
        self.event.ty()
    }

    /// The parsed `type`; `None` for a type flotilla does not emit.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::parse(self.event_type())
    }

    pub fn source(&self) -> &str {
        self.event.source()
    }

    /// The function that handles the event (always present).
    pub fn subject(&self) -> &str {
        self.event.subject().unwrap_or_default()
    }

    /// Whether some handler takes the event: not a notification, nor the
    /// last step's success ([`handlers::NONE`]), which nothing acts on.
    pub fn has_handler(&self) -> bool {
        self.subject() != handlers::NONE
    }

    /// When the event was emitted (always present).
    pub fn time(&self) -> OffsetDateTime {
        self.event
            .time()
            .map(|t| OffsetDateTime::from(SystemTime::from(*t)))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn data(&self) -> &EventData {
        &self.data
    }

    /// The same event with other data (the `id` and `source` stay).
    pub fn with_data(mut self, data: EventData) -> Self {
        self.event.set_data(JSON, data_value(&data));
        self.data = data;
        self
    }

    /// The trace this event belongs to, when it carries a valid context.
    pub fn trace_context(&self) -> Option<crate::telemetry::TraceContext> {
        crate::telemetry::TraceContext::parse(
            self.extension(TRACEPARENT)?,
            self.extension(TRACESTATE),
        )
    }

    /// The same event carrying the trace context `cx` (replacing any it had).
    pub fn with_trace(mut self, cx: crate::telemetry::TraceContext) -> Self {
        self.event.set_extension(TRACEPARENT, cx.traceparent);
        match cx.tracestate {
            Some(state) => self.event.set_extension(TRACESTATE, state),
            None => {
                self.event.remove_extension(TRACESTATE);
            }
        }
        self
    }

    /// Stamps the context of the work emitting the event, unless it already
    /// carries one (an event sent again keeps the context it was stored with).
    pub fn with_current_trace(self) -> Self {
        if self.event.extension(TRACEPARENT).is_some() {
            return self;
        }
        match crate::telemetry::current() {
            Some(cx) => self.with_trace(cx),
            None => self,
        }
    }

    /// A string extension attribute.
    fn extension(&self, name: &str) -> Option<&str> {
        match self.event.extension(name)? {
            ExtensionValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The structured JSON form (`application/cloudevents+json`).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.event).expect("events serialise")
    }

    /// Parses a structured CloudEvent; the error says what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        let event: Event = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            Category::Data => EventError::NotCloudEvent(e.to_string()),
            _ => EventError::NotJson(e),
        })?;
        CloudEvent::try_from(event)
    }
}

/// `datacontenttype` of every flotilla event.
const JSON: &str = "application/json";

fn data_value(data: &EventData) -> Value {
    serde_json::to_value(data).expect("event data serialises")
}

impl TryFrom<Event> for CloudEvent {
    type Error = EventError;

    /// Checks what flotilla needs beyond the spec: CloudEvents 1.0, a
    /// `subject` and a `time`, and `data` a JSON object of [`EventData`].
    fn try_from(event: Event) -> Result<Self, EventError> {
        let missing = |what: &str| EventError::NotFlotilla(format!("has no {what}"));
        if event.specversion() != SpecVersion::V10 {
            return Err(EventError::NotCloudEvent(format!(
                "specversion {} (flotilla reads 1.0)",
                event.specversion()
            )));
        }
        event.subject().ok_or_else(|| missing("subject"))?;
        event.time().ok_or_else(|| missing("time"))?;
        let data = match event.data().ok_or_else(|| missing("data"))? {
            Data::Json(v @ Value::Object(_)) => serde_json::from_value(v.clone()).map_err(|e| {
                EventError::NotFlotilla(format!("has data flotilla cannot read: {e}"))
            })?,
            _ => {
                return Err(EventError::NotFlotilla(
                    "has data that is not a JSON object".into(),
                ))
            }
        };
        Ok(CloudEvent { event, data })
    }
}

impl Serialize for CloudEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.event.serialize(s)
    }
}

impl<'de> Deserialize<'de> for CloudEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let event = Event::deserialize(d)?;
        CloudEvent::try_from(event).map_err(serde::de::Error::custom)
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

    fn data(job: &str) -> EventData {
        EventData {
            job: job.into(),
            ..Default::default()
        }
    }

    fn context(traceparent: &str, tracestate: Option<&str>) -> crate::telemetry::TraceContext {
        crate::telemetry::TraceContext {
            traceparent: traceparent.into(),
            tracestate: tracestate.map(Into::into),
        }
    }

    const TRACEPARENT_00: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn the_trace_context_travels_as_extension_attributes() {
        let plain = CloudEvent::new(types::JOB_REQUESTED, handlers::NONE, "requested", data("j"));
        let json: Value = serde_json::from_slice(&plain.to_json()).unwrap();
        assert!(
            json.get("traceparent").is_none(),
            "no context, no attribute: {json}"
        );
        assert_eq!(plain.trace_context(), None);

        let traced = plain
            .clone()
            .with_trace(context(TRACEPARENT_00, Some("congo=t61rcWkgMzE")));
        let json: Value = serde_json::from_slice(&traced.to_json()).unwrap();
        assert_eq!(json["traceparent"], TRACEPARENT_00);
        assert_eq!(json["tracestate"], "congo=t61rcWkgMzE");
        let back = CloudEvent::from_json(&traced.to_json()).unwrap();
        assert_eq!(back, traced);
        assert_eq!(
            back.trace_context().unwrap().trace_id(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        // A stamped event keeps its context when stamped again.
        assert_eq!(back.clone().with_current_trace(), back);
        // A new context without a state drops the old state.
        let restamped = back.with_trace(context(TRACEPARENT_00, None));
        assert_eq!(restamped.as_event().extension("tracestate"), None);

        let bad = plain.with_trace(context("not-a-context", None));
        assert_eq!(
            bad.trace_context(),
            None,
            "an invalid context starts a new trace"
        );
    }

    #[test]
    fn an_event_round_trips_through_structured_json_with_its_extensions() {
        let event = CloudEvent::new(
            types::STEP_RETRY,
            "master",
            "master/retry/3",
            EventData {
                job: "demo-x1y2z3".into(),
                step: Some(StepName::Master),
                seq: Some(3),
                resources: vec!["/subscriptions/s/resourceGroups/rg".into()],
                ..Default::default()
            },
        )
        .with_trace(context(TRACEPARENT_00, Some("congo=t61rcWkgMzE")));
        let json: Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], "demo-x1y2z3/master/retry/3");
        assert_eq!(json["source"], "/flotilla/jobs/demo-x1y2z3");
        assert_eq!(json["type"], "io.flotilla.step.retry");
        assert_eq!(json["subject"], "master");
        assert_eq!(json["datacontenttype"], "application/json");
        assert!(json["time"].as_str().unwrap().ends_with('Z'), "{json}");
        assert_eq!(
            json["data"],
            serde_json::json!({"job": "demo-x1y2z3", "step": "master", "seq": 3,
                "resources": ["/subscriptions/s/resourceGroups/rg"]})
        );

        let back = CloudEvent::from_json(&event.to_json()).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.kind(), Some(EventKind::StepRetry));
        assert_eq!(back.data().step, Some(StepName::Master));
        assert_eq!(back.time(), event.time());
        assert_eq!(back.trace_context(), event.trace_context());
        // serde (the saga document's outbox) writes and reads the same form.
        let via_serde: CloudEvent =
            serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
        assert_eq!(via_serde, event);
        assert_eq!(serde_json::to_value(&event).unwrap(), json);
    }

    /// Events as the hand-written struct before the SDK wrote them (and as
    /// saga documents, the embedded bus and Service Bus may still hold them).
    #[test]
    fn events_in_the_old_format_still_parse() {
        let untraced = br#"{"specversion":"1.0","id":"demo-x1y2z3/master/poll/4","source":"/flotilla/jobs/demo-x1y2z3","type":"io.flotilla.step.poll","subject":"poll","time":"2026-11-30T17:04:05.123456789Z","datacontenttype":"application/json","data":{"job":"demo-x1y2z3","step":"master","seq":4}}"#;
        let e = CloudEvent::from_json(untraced).unwrap();
        assert_eq!(e.id(), "demo-x1y2z3/master/poll/4");
        assert_eq!(e.source(), "/flotilla/jobs/demo-x1y2z3");
        assert_eq!(e.kind(), Some(EventKind::StepPoll));
        assert_eq!(e.subject(), handlers::POLL);
        assert_eq!(
            e.time(),
            time::macros::datetime!(2026-11-30 17:04:05.123456789 UTC)
        );
        assert_eq!(
            e.data(),
            &EventData {
                job: "demo-x1y2z3".into(),
                step: Some(StepName::Master),
                seq: Some(4),
                ..Default::default()
            }
        );
        assert_eq!(e.trace_context(), None);

        let traced = br#"{"specversion":"1.0","id":"demo-x1y2z3/requested","source":"/flotilla/jobs/demo-x1y2z3","type":"io.flotilla.job.requested","subject":"stage","time":"2026-11-30T17:04:05Z","datacontenttype":"application/json","data":{"job":"demo-x1y2z3"},"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"congo=t61rcWkgMzE"}"#;
        let e = CloudEvent::from_json(traced).unwrap();
        assert_eq!(e.kind(), Some(EventKind::JobRequested));
        assert_eq!(e.data().job, "demo-x1y2z3");
        let cx = e.trace_context().unwrap();
        assert_eq!(cx.traceparent, TRACEPARENT_00);
        assert_eq!(cx.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        // Written again, it is the same event.
        assert_eq!(CloudEvent::from_json(&e.to_json()).unwrap(), e);

        // Inside a stored saga document's outbox (serde).
        let entry: crate::saga::OutboxEntry = serde_json::from_str(&format!(
            r#"{{"event":{},"notBefore":"2026-11-30T17:05:05Z"}}"#,
            std::str::from_utf8(traced).unwrap()
        ))
        .unwrap();
        assert_eq!(entry.event, e);
    }

    #[test]
    fn what_is_not_a_flotilla_event_is_refused_with_the_reason() {
        let good = serde_json::json!({
            "specversion": "1.0", "id": "j/requested", "source": "/flotilla/jobs/j",
            "type": "io.flotilla.job.requested", "subject": "stage",
            "time": "2026-11-30T17:04:05Z", "datacontenttype": "application/json",
            "data": {"job": "j"}
        });
        CloudEvent::from_json(good.to_string().as_bytes()).unwrap();
        let without = |key: &str| {
            let mut v = good.clone();
            v.as_object_mut().unwrap().remove(key);
            v
        };
        let with = |key: &str, value: Value| {
            let mut v = good.clone();
            v[key] = value;
            v
        };
        let err = |v: Value| {
            CloudEvent::from_json(v.to_string().as_bytes())
                .unwrap_err()
                .to_string()
        };

        // Required by the spec: the SDK says which attribute is missing.
        for attr in ["id", "source", "type", "specversion"] {
            let e = err(without(attr));
            assert!(
                e.starts_with("not a CloudEvents 1.0 event: ") && e.contains(attr),
                "{attr}: {e}"
            );
        }
        let e = err(with("specversion", "0.3".into()));
        assert!(e.contains("specversion 0.3"), "{e}");
        let e = err(with("time", "yesterday".into()));
        assert!(e.starts_with("not a CloudEvents 1.0 event: "), "{e}");
        // Required by flotilla.
        assert_eq!(err(without("subject")), "the CloudEvent has no subject");
        assert_eq!(err(without("time")), "the CloudEvent has no time");
        assert_eq!(err(without("data")), "the CloudEvent has no data");
        assert_eq!(
            err(with("data", "text".into())),
            "the CloudEvent has data that is not a JSON object"
        );
        let e = err(with("data", serde_json::json!({"step": "stage"})));
        assert!(e.contains("missing field `job`"), "{e}");
        let e = CloudEvent::from_json(b"{oops").unwrap_err();
        assert!(matches!(e, EventError::NotJson(_)), "{e}");

        // Building one: the SDK's builder refuses a missing required attribute.
        let e = EventBuilderV10::new()
            .source("/flotilla/jobs/j")
            .ty(types::JOB_REQUESTED)
            .build()
            .unwrap_err();
        assert_eq!(e.to_string(), "Missing required attribute id");
        // And a CloudEvent without a subject is not a flotilla event.
        let sdk = EventBuilderV10::new()
            .id("j/requested")
            .source("/flotilla/jobs/j")
            .ty(types::JOB_REQUESTED)
            .data(JSON, serde_json::json!({"job": "j"}))
            .build()
            .unwrap();
        let e = CloudEvent::try_from(sdk).unwrap_err();
        assert_eq!(e.to_string(), "the CloudEvent has no subject");
    }
}
