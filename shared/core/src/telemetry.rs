//! One distributed trace per job, and the job's metrics.
//!
//! # Trace context
//! Every event carries the W3C trace context (`traceparent`, `tracestate`) of
//! the work that emitted it, as CloudEvents distributed-tracing extension
//! attributes. Submitting a job starts a trace; each handler continues the
//! trace of the event it consumes ([`continue_trace`]), and the events it
//! emits carry its own context ([`current`]), so a job is one trace however
//! many processes and queues it crosses.
//!
//! With an OpenTelemetry layer installed (the binary's `telemetry` module),
//! the context is the current `tracing` span's. Without one nothing is
//! recorded, and the consumed event's context is handed on unchanged (a task
//! local), so the trace id still follows the job: two random numbers per
//! submission is all it costs.
//!
//! # Metrics
//! [`metrics`] holds the instruments, on the global meter provider: no-ops
//! until the binary installs one. Names and units are stable (README,
//! "Telemetry").

use crate::events::{CloudEvent, EventKind};
use crate::saga::Saga;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::KeyValue;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use time::OffsetDateTime;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The instrumentation scope of every flotilla span and metric.
pub const SCOPE: &str = "flotilla";

/// A W3C trace context as events carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-{trace id}-{parent span id}-{flags}`.
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// A valid `traceparent` (version 00, non-zero ids, lowercase hex) with
    /// its `tracestate`; `None` for anything else, which then starts a new trace.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let sc = span_context(traceparent, tracestate)?;
        sc.is_valid().then(|| TraceContext {
            traceparent: traceparent.to_string(),
            tracestate: tracestate.filter(|s| !s.is_empty()).map(str::to_string),
        })
    }

    /// A new trace (random ids, sampled).
    pub fn root() -> TraceContext {
        let trace = loop {
            let t: u128 = rand::random();
            if t != 0 {
                break t;
            }
        };
        let span = loop {
            let s: u64 = rand::random();
            if s != 0 {
                break s;
            }
        };
        TraceContext {
            traceparent: format!("00-{trace:032x}-{span:016x}-01"),
            tracestate: None,
        }
    }

    /// The 32 hex digits of the trace id (log correlation).
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    fn from_span_context(sc: &SpanContext) -> TraceContext {
        let state = sc.trace_state().header();
        TraceContext {
            traceparent: format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            ),
            tracestate: (!state.is_empty()).then_some(state),
        }
    }

    /// The OpenTelemetry context whose remote parent this is.
    pub fn otel_context(&self) -> opentelemetry::Context {
        match span_context(&self.traceparent, self.tracestate.as_deref()) {
            Some(sc) => opentelemetry::Context::new().with_remote_span_context(sc),
            None => opentelemetry::Context::new(),
        }
    }
}

fn span_context(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || version != "00"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
        || ![trace, span, flags].into_iter().all(hex)
    {
        return None;
    }
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        state,
    ))
}

tokio::task_local! {
    /// The context of the event being handled, when no span records one.
    static INHERITED: TraceContext;
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Says that an OpenTelemetry pipeline is installed (the binary calls this
/// once it set the providers), so the spans that only exporting needs
/// (the queue waits) are built.
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The context the events emitted now carry: the current span's when
/// OpenTelemetry records spans, else the one this task continues.
pub fn current() -> Option<TraceContext> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        return Some(TraceContext::from_span_context(sc));
    }
    INHERITED.try_with(Clone::clone).ok()
}

/// Runs `work` inside `span`, continuing `parent`: the span's parent is the
/// remote context, and events emitted inside carry the span's context (or
/// `parent` itself when nothing records spans).
pub async fn continue_trace<F: Future>(
    parent: TraceContext,
    span: tracing::Span,
    work: F,
) -> F::Output {
    if !span.is_disabled() {
        // Fails only when no OpenTelemetry layer is installed: nothing to link then.
        let _ = span.set_parent(parent.otel_context());
        record_trace_id(&span, &parent);
    }
    INHERITED.scope(parent, work.instrument(span)).await
}

/// Writes the trace id into the span's `trace_id` field (if it has one), so
/// log lines inside it name their trace.
fn record_trace_id(span: &tracing::Span, fallback: &TraceContext) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    } else {
        span.record("trace_id", fallback.trace_id());
    }
}

/// Runs `work` inside `span` as the start of a new trace (a command: submit,
/// delete, scale; or an event that carries no context).
pub async fn start_trace<F: Future>(span: tracing::Span, work: F) -> F::Output {
    let root = TraceContext::root();
    if !span.is_disabled() {
        record_trace_id(&span, &root);
    }
    INHERITED.scope(root, work.instrument(span)).await
}

/// Records how long `event` waited between being emitted and being handled
/// (a scheduled poll's delay, a retry's back-off, or queue lag): the
/// `flotilla.queue.lag` histogram and, when exporting, a `flotilla.wait` span
/// that covers the wait, so a job that waits shows it in its trace.
pub fn record_wait(event: &CloudEvent, parent: &TraceContext, now: OffsetDateTime) {
    if !exporting() {
        // No meter or tracer provider: nothing would be recorded.
        return;
    }
    let waited = (now - event.time()).as_seconds_f64().max(0.0);
    let scheduled = matches!(
        event.kind(),
        Some(
            EventKind::StepPoll
                | EventKind::StepRetry
                | EventKind::UndoPoll
                | EventKind::UndoRetry
                | EventKind::ScalePoll
        )
    );
    metrics().queue_lag.record(
        waited,
        &[
            KeyValue::new("cloudevents.event_type", event.event_type().to_string()),
            KeyValue::new("flotilla.scheduled", scheduled),
        ],
    );
    let tracer = opentelemetry::global::tracer(SCOPE);
    let start = std::time::SystemTime::from(event.time());
    let mut span = tracer
        .span_builder("flotilla.wait")
        .with_kind(opentelemetry::trace::SpanKind::Internal)
        .with_start_time(start)
        .with_attributes([
            KeyValue::new("flotilla.job", event.data().job.clone()),
            KeyValue::new("cloudevents.event_type", event.event_type().to_string()),
            KeyValue::new("cloudevents.event_id", event.id().to_string()),
            KeyValue::new("flotilla.scheduled", scheduled),
            KeyValue::new("flotilla.wait.seconds", waited),
        ])
        .start_with_context(&tracer, &parent.otel_context());
    opentelemetry::trace::Span::end_with_timestamp(&mut span, std::time::SystemTime::from(now));
}

/// flotilla's instruments (see the module doc).
pub struct Metrics {
    /// `flotilla.jobs`: jobs that reached a final status, by `flotilla.job.status`.
    pub jobs: Counter<u64>,
    /// `flotilla.step.duration` (s): a forward step from start to success or
    /// failure, by `flotilla.step` and `flotilla.step.outcome`.
    pub step_duration: Histogram<f64>,
    /// `flotilla.undo`: undo outcomes, by `flotilla.undo.outcome`.
    pub undo: Counter<u64>,
    /// `flotilla.dead_letters`: messages that left the queue for good.
    pub dead_letters: Counter<u64>,
    /// `flotilla.queue.lag` (s): from an event's time to its handling.
    pub queue_lag: Histogram<f64>,
}

/// The instruments, created on first use from the global meter provider.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
        let meter = opentelemetry::global::meter(SCOPE);
        Metrics {
            jobs: meter
                .u64_counter("flotilla.jobs")
                .with_unit("{job}")
                .with_description("Jobs that reached a final status")
                .build(),
            step_duration: meter
                .f64_histogram("flotilla.step.duration")
                .with_unit("s")
                .with_description("Forward step duration, start to success or failure")
                .build(),
            undo: meter
                .u64_counter("flotilla.undo")
                .with_unit("{undo}")
                .with_description("Undo outcomes of resources")
                .build(),
            dead_letters: meter
                .u64_counter("flotilla.dead_letters")
                .with_unit("{message}")
                .with_description("Messages dead-lettered (poison or failed on their last delivery)")
                .build(),
            queue_lag: meter
                .f64_histogram("flotilla.queue.lag")
                .with_unit("s")
                .with_description("Time from an event's emission to its handling (scheduled waits included, see flotilla.scheduled)")
                .build(),
        }
    });
    &METRICS
}

/// Counts what the events of a saved transition mean: a final job status,
/// a step's duration, an undo outcome. Called once per successful write.
pub fn record_transition<'a>(saga: &Saga, events: impl IntoIterator<Item = &'a CloudEvent>) {
    let m = metrics();
    for event in events {
        let Some(kind) = event.kind() else { continue };
        let status = match kind {
            EventKind::JobSucceeded => Some("succeeded"),
            EventKind::JobCompensated => Some("compensated"),
            EventKind::CompensationFailed => Some("compensation_failed"),
            EventKind::JobDeleted => Some("deleted"),
            EventKind::JobRejected => Some("rejected"),
            _ => None,
        };
        if let Some(status) = status {
            m.jobs
                .add(1, &[KeyValue::new("flotilla.job.status", status)]);
        }
        let undo = match kind {
            EventKind::UndoSucceeded => Some("succeeded"),
            EventKind::UndoRetry => Some("retry"),
            EventKind::CompensationFailed => Some("failed"),
            _ => None,
        };
        if let Some(outcome) = undo {
            m.undo
                .add(1, &[KeyValue::new("flotilla.undo.outcome", outcome)]);
        }
        let outcome = match kind {
            EventKind::StepSucceeded => "succeeded",
            EventKind::StepFailed => "failed",
            _ => continue,
        };
        let Some(step) = event.data().step else {
            continue;
        };
        let Some(state) = saga.steps.iter().find(|s| s.name == step) else {
            continue;
        };
        if let Some(start) = state.started_at {
            let end = state.finished_at.unwrap_or(event.time());
            m.step_duration.record(
                (end - start).as_seconds_f64().max(0.0),
                &[
                    KeyValue::new("flotilla.step", step.as_str()),
                    KeyValue::new("flotilla.step.outcome", outcome),
                ],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_checked_and_a_root_is_valid() {
        let root = TraceContext::root();
        assert!(TraceContext::parse(&root.traceparent, None).is_some());
        assert_eq!(root.trace_id().len(), 32);
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parsed = TraceContext::parse(good, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(parsed.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(parsed.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
        ] {
            assert!(TraceContext::parse(bad, None).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn without_a_layer_the_consumed_context_is_handed_on() {
        assert_eq!(current(), None);
        let parent = TraceContext::root();
        let seen = continue_trace(parent.clone(), tracing::info_span!("t"), async {
            current()
        })
        .await;
        assert_eq!(seen, Some(parent));
    }
}
