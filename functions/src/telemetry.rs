//! Logging and OpenTelemetry export for every `flotilla` command.
//!
//! Logs go to stderr (text, or JSON with `FLOTILLA_LOG_FORMAT=json`) as
//! `RUST_LOG` says; inside a job's work each line carries the span fields
//! `trace_id` and `flotilla.job` when the filter enables those info-level
//! spans (e.g. `RUST_LOG=warn,flotilla_core=info`), so logs and traces correlate.
//!
//! When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, flotilla's spans (level info
//! and above, whatever `RUST_LOG` says) and metrics are exported over
//! OTLP/HTTP (protobuf) to that endpoint; the SDK honours the standard
//! `OTEL_*` variables (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`,
//! `..._TRACES_ENDPOINT`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_RESOURCE_ATTRIBUTES`, ...), and the
//! service name is `OTEL_SERVICE_NAME` or `flotilla`. Without the endpoint no
//! export pipeline is installed: spans cost what a disabled `tracing` span
//! costs, and the metric instruments are no-ops.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The installed providers; dropping it flushes and shuts them down.
pub struct Telemetry {
    providers: Option<(SdkTracerProvider, SdkMeterProvider)>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some((traces, metrics)) = self.providers.take() {
            // Errors here only mean the collector is gone; nothing to do at exit.
            let _ = traces.shutdown();
            let _ = metrics.shutdown();
        }
    }
}

/// Where flotilla's own spans go when exporting: its crates at info and above.
fn exported_targets() -> Targets {
    [
        "flotilla",
        "flotilla_core",
        "flotilla_azure",
        "flotilla_cloud",
    ]
    .into_iter()
    .fold(Targets::new(), |t, target| {
        t.with_target(target, Level::INFO)
    })
}

/// Installs the global subscriber (and the exporters when configured).
pub fn init() -> Telemetry {
    let filter = EnvFilter::try_new(
        flotilla_core::settings::get("RUST_LOG").unwrap_or_else(|| "warn".into()),
    )
    .unwrap_or_else(|_| EnvFilter::new("warn"));
    let json = flotilla_core::settings::get("FLOTILLA_LOG_FORMAT").as_deref() == Some("json");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let providers = match flotilla_core::settings::get("OTEL_EXPORTER_OTLP_ENDPOINT") {
        None => None,
        Some(_) => match otlp_providers() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("warning: OpenTelemetry export is off: {e}");
                None
            }
        },
    };
    let Some((traces, metrics)) = providers else {
        tracing_subscriber::registry().with(logs).init();
        return Telemetry { providers: None };
    };
    opentelemetry::global::set_tracer_provider(traces.clone());
    opentelemetry::global::set_meter_provider(metrics.clone());
    let spans = tracing_opentelemetry::layer()
        .with_tracer(traces.tracer(flotilla_core::telemetry::SCOPE))
        .with_filter(exported_targets());
    tracing_subscriber::registry().with(logs).with(spans).init();
    flotilla_core::telemetry::set_exporting(true);
    Telemetry {
        providers: Some((traces, metrics)),
    }
}

/// The OTLP/HTTP span and metric pipelines, configured by the `OTEL_*` variables.
fn otlp_providers() -> Result<(SdkTracerProvider, SdkMeterProvider), String> {
    let name =
        flotilla_core::settings::get("OTEL_SERVICE_NAME").unwrap_or_else(|| "flotilla".into());
    let resource = Resource::builder().with_service_name(name).build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OTLP span exporter: {e}"))?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OTLP metric exporter: {e}"))?;
    let traces = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let metrics = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource)
        .build();
    Ok((traces, metrics))
}
