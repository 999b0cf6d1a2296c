//! One job, two `flotilla serve` processes behind the stand-in Functions
//! host, both exporting OTLP/HTTP to a collector in this test: the job is one
//! trace across both processes, with a span per step and per Azure call, every
//! parent present, no secret in any attribute, and the job's metrics.

// The shared host module has helpers this test does not use.
#[allow(dead_code)]
#[path = "../host/mod.rs"]
mod host;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use host::{settled, Handler, Pump, World};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, Metric};
use prost::Message;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One exported span, flattened.
#[derive(Clone, Debug)]
struct Span {
    instance: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    metrics: Vec<Metric>,
}

/// A minimal OTLP/HTTP (protobuf) receiver on a free loopback port.
struct Collector {
    endpoint: String,
    received: Arc<Mutex<Received>>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

async fn traces(State(r): State<Arc<Mutex<Received>>>, body: Bytes) -> &'static [u8] {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut r = r.lock().unwrap();
    for rs in req.resource_spans {
        let resource = rs
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let instance = resource
            .get("service.instance.id")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            resource.get("service.name").map(String::as_str),
            Some("flotilla")
        );
        for ss in rs.scope_spans {
            for s in ss.spans {
                let mut attrs = attributes(&s.attributes);
                // Span events (log lines) are scanned for secrets too.
                for (i, e) in s.events.iter().enumerate() {
                    for (k, v) in attributes(&e.attributes) {
                        attrs.insert(format!("event{i}.{k}"), v);
                    }
                }
                r.spans.push(Span {
                    instance: instance.clone(),
                    name: s.name,
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    parent_span_id: s.parent_span_id,
                    attributes: attrs,
                });
            }
        }
    }
    b""
}

async fn metrics(State(r): State<Arc<Mutex<Received>>>, body: Bytes) -> &'static [u8] {
    let req = ExportMetricsServiceRequest::decode(body).expect("an OTLP metrics export");
    let mut r = r.lock().unwrap();
    for rm in req.resource_metrics {
        for sm in rm.scope_metrics {
            r.metrics.extend(sm.metrics);
        }
    }
    b""
}

impl Collector {
    async fn start() -> Collector {
        let received = Arc::new(Mutex::new(Received::default()));
        let app = axum::Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Collector { endpoint, received }
    }

    fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }

    /// The sum of a counter's data points whose attribute `key` is `value`.
    fn counter(&self, name: &str, key: &str, value: &str) -> i64 {
        let r = self.received.lock().unwrap();
        // Cumulative temporality: the newest export of each process holds the total.
        let mut newest: HashMap<u64, i64> = HashMap::new();
        for m in r.metrics.iter().filter(|m| m.name == name) {
            if let Some(metric::Data::Sum(sum)) = &m.data {
                for p in &sum.data_points {
                    if attributes(&p.attributes).get(key).map(String::as_str) == Some(value) {
                        let v = match p.value {
                            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i)) => i,
                            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(d)) => d as i64,
                            None => 0,
                        };
                        newest.insert(p.start_time_unix_nano, v);
                    }
                }
            }
        }
        newest.values().sum()
    }

    /// The steps that have a `flotilla.step.duration` data point, and the metric's unit.
    fn step_durations(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let r = self.received.lock().unwrap();
        let mut steps = BTreeSet::new();
        let mut units = BTreeSet::new();
        for m in r
            .metrics
            .iter()
            .filter(|m| m.name == "flotilla.step.duration")
        {
            units.insert(m.unit.clone());
            if let Some(metric::Data::Histogram(h)) = &m.data {
                for p in h.data_points.iter().filter(|p| p.count > 0) {
                    if let Some(s) = attributes(&p.attributes).get("flotilla.step") {
                        steps.insert(s.clone());
                    }
                }
            }
        }
        (steps, units)
    }

    fn has_metric(&self, name: &str) -> bool {
        self.received
            .lock()
            .unwrap()
            .metrics
            .iter()
            .any(|m| m.name == name)
    }
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

const STEPS: [&str; 6] = ["stage", "prereqs", "keys", "master", "workers", "join"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_one_trace_across_two_processes_with_its_metrics() {
    let collector = Collector::start().await;
    // Long-running operations that take a while: the job waits on polls, so
    // its messages arrive over several rounds of the host.
    let world = World::start_with_lro(Duration::from_secs(1)).await;
    let otel = |instance: &str| -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300".into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("service.instance.id={instance}"),
            ),
        ]
    };
    let (sa, sb) = (otel("a"), otel("b"));
    let a = Handler::start_with(&world, &as_refs(&sa)).await;
    let b = Handler::start_with(&world, &as_refs(&sb)).await;
    let mut pump = Pump::new(&world);

    let spec = serde_json::to_string(&flotilla_core::spec::ClusterSpec::example()).unwrap();
    let (code, body) = a.http("submit", "POST", json!({}), &spec).await;
    assert_eq!(code, 202, "{body}");
    let job = body["job"].as_str().unwrap().to_string();

    // The host hands each batch of messages to the other process.
    let status = pump
        .until_across(&[&a, &b], &job, Duration::from_secs(120), settled)
        .await;
    assert_eq!(status["status"], "Succeeded", "{status:#}");

    // Wait for the exports: every step's span and the job's final count.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = collector.spans();
        let steps: BTreeSet<&str> = spans
            .iter()
            .filter(|s| s.name == "flotilla.step" || STEPS.contains(&s.name.as_str()))
            .filter(|s| s.attr("flotilla.job") == Some(job.as_str()))
            .filter_map(|s| s.attr("flotilla.step"))
            .collect();
        if steps.len() == STEPS.len()
            && collector.counter("flotilla.jobs", "flotilla.job.status", "succeeded") >= 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the collector did not get the job's telemetry: steps {steps:?}\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the last batches of both processes arrive.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let spans = collector.spans();

    // One trace for the job.
    let trace_ids: BTreeSet<&Vec<u8>> = spans
        .iter()
        .filter(|s| s.attr("flotilla.job") == Some(job.as_str()))
        .map(|s| &s.trace_id)
        .collect();
    assert_eq!(
        trace_ids.len(),
        1,
        "the job's spans are in {} traces",
        trace_ids.len()
    );
    let trace = *trace_ids.iter().next().unwrap();
    let in_trace: Vec<&Span> = spans.iter().filter(|s| &s.trace_id == trace).collect();

    // Parent links intact: one root (the submission), every parent exported.
    let ids: BTreeSet<&Vec<u8>> = in_trace.iter().map(|s| &s.span_id).collect();
    let roots: Vec<&&Span> = in_trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    assert_eq!(roots[0].attr("flotilla.command"), Some("submit"));
    for s in &in_trace {
        assert!(
            s.parent_span_id.is_empty() || ids.contains(&s.parent_span_id),
            "span {} has a parent that was never exported",
            s.name
        );
    }

    // Across both processes.
    let instances: BTreeSet<&str> = in_trace.iter().map(|s| s.instance.as_str()).collect();
    assert_eq!(
        instances,
        BTreeSet::from(["a", "b"]),
        "the trace spans both handlers"
    );

    // The waits show: scheduled polls as `flotilla.wait` spans.
    assert!(
        in_trace
            .iter()
            .any(|s| s.name == "flotilla.wait" && s.attr("flotilla.scheduled") == Some("true")),
        "no scheduled wait in the trace"
    );

    // A span per step, per handled event, per Azure call, per send.
    for step in STEPS {
        assert!(
            in_trace
                .iter()
                .any(|s| s.attr("flotilla.step") == Some(step)),
            "no span for step {step}"
        );
    }
    let handled: Vec<&&Span> = in_trace
        .iter()
        .filter(|s| {
            s.attr("cloudevents.event_type").is_some()
                && s.attr("messaging.operation.type") == Some("process")
        })
        .collect();
    assert!(
        handled.len() >= STEPS.len(),
        "{} handler spans",
        handled.len()
    );
    let azure: Vec<&&Span> = in_trace
        .iter()
        .filter(|s| s.attr("http.request.method").is_some())
        .collect();
    let arm: Vec<&&&Span> = azure
        .iter()
        .filter(|s| {
            s.attr("flotilla.azure.resource_type")
                .is_some_and(|t| t.starts_with("Microsoft.Compute/virtualMachineScaleSets"))
        })
        .collect();
    assert!(!arm.is_empty(), "no span for the scale set calls");
    for s in &arm {
        assert!(
            s.attr("az.service_request_id")
                .is_some_and(|v| !v.is_empty()),
            "{s:#?}"
        );
    }
    for s in &azure {
        for key in ["http.response.status_code", "server.address", "url.full"] {
            assert!(s.attr(key).is_some(), "{key} missing on {s:#?}");
        }
        assert!(
            !s.attr("url.full").unwrap().contains('?'),
            "a query string in url.full: {s:#?}"
        );
    }
    let kinds: BTreeSet<&str> = azure
        .iter()
        .filter_map(|s| s.attr("flotilla.azure.resource_type"))
        .collect();
    for kind in [
        "Microsoft.KeyVault/vaults/secrets",
        "Microsoft.Storage/storageAccounts/blobServices",
    ] {
        assert!(kinds.contains(kind), "no {kind} call in {kinds:#?}");
    }
    let sends: Vec<&&Span> = in_trace
        .iter()
        .filter(|s| s.attr("messaging.operation.type") == Some("send"))
        .collect();
    assert!(!sends.is_empty());
    for s in &sends {
        assert_eq!(s.attr("messaging.system"), Some("servicebus"));
        assert_eq!(
            s.attr("messaging.destination.name"),
            Some(world.topic.as_str())
        );
        assert!(s
            .attr("messaging.message.id")
            .is_some_and(|id| id.starts_with(&job)));
    }

    // No secret in any attribute of any span.
    let secrets = world.secrets().await;
    for s in &spans {
        for (k, v) in &s.attributes {
            for secret in &secrets {
                assert!(
                    !v.contains(secret.as_str()),
                    "a secret in attribute {k} of span {}",
                    s.name
                );
            }
            assert!(
                !v.contains("sig="),
                "a SAS signature in attribute {k} of span {}",
                s.name
            );
        }
    }

    // Metrics, with their stable names and units.
    assert_eq!(
        collector.counter("flotilla.jobs", "flotilla.job.status", "succeeded"),
        1
    );
    let (steps, units) = collector.step_durations();
    assert_eq!(
        steps,
        STEPS.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    );
    assert_eq!(units, BTreeSet::from(["s".to_string()]));
    assert!(collector.has_metric("flotilla.queue.lag"));
}
