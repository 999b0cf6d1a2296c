//! Logging and OpenTelemetry export for every `flotilla` command.
//!
//! Logs go to stderr (text, or JSON with `FLOTILLA_LOG_FORMAT=json`) as
//! `RUST_LOG` says; inside a job's work each line carries the span fields
//! `trace_id` and `flotilla.job` when the filter enables those info-level
//! spans (e.g. `RUST_LOG=warn,flotilla_core=info`), so logs and traces correlate.
//!
//! Two export destinations, each used when its setting is set, both when
//! both are (each gets every span and metric):
//! - **OTLP**: with `OTEL_EXPORTER_OTLP_ENDPOINT`, spans and metrics go over
//!   OTLP/HTTP (protobuf) to that endpoint; the SDK honours the standard
//!   `OTEL_*` variables (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`,
//!   `..._TRACES_ENDPOINT`, ...).
//! - **Application Insights**: with `APPLICATIONINSIGHTS_CONNECTION_STRING`,
//!   spans and metrics go to that resource, with an Entra token of the managed
//!   identity when `APPLICATIONINSIGHTS_AUTHENTICATION_STRING` says
//!   `Authorization=AAD` ([`app_insights`]).
//!
//! Exported are flotilla's spans at level info and above, whatever `RUST_LOG`
//! says. Both honour `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_METRIC_EXPORT_INTERVAL`
//! and `OTEL_RESOURCE_ATTRIBUTES`; the service name is `OTEL_SERVICE_NAME` or
//! `flotilla`. A destination that cannot be set up is reported on stderr and
//! left out. Without any, no export pipeline is installed: spans cost what a
//! disabled `tracing` span costs, and the metric instruments are no-ops.

mod app_insights;

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
    /// Runs the Application Insights uploads; dropped after the providers'
    /// final flush (fields drop after [`Drop::drop`]).
    _uploads: Option<tokio::runtime::Runtime>,
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

/// Whether log lines carry terminal colour codes: only when stderr is a
/// terminal and `NO_COLOR` is unset or empty. A file, a pipe, the Functions
/// host's log capture or a chaos child's log gets plain text.
fn colours() -> bool {
    use std::io::IsTerminal;
    flotilla_core::settings::get("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// Installs the global subscriber (and the exporters when configured).
pub fn init() -> Telemetry {
    let filter = EnvFilter::try_new(
        flotilla_core::settings::get("RUST_LOG").unwrap_or_else(|| "warn".into()),
    )
    .unwrap_or_else(|_| EnvFilter::new("warn"));
    let json = flotilla_core::settings::get("FLOTILLA_LOG_FORMAT").as_deref() == Some("json");
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colours());
    let logs = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let Some(Providers {
        traces,
        metrics,
        uploads,
    }) = providers()
    else {
        tracing_subscriber::registry().with(logs).init();
        return Telemetry {
            providers: None,
            _uploads: None,
        };
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
        _uploads: uploads,
    }
}

/// The span and metric pipelines to every configured destination.
struct Providers {
    traces: SdkTracerProvider,
    metrics: SdkMeterProvider,
    uploads: Option<tokio::runtime::Runtime>,
}

/// Builds the pipelines the settings ask for; `None` when none is configured
/// (or none could be set up).
fn providers() -> Option<Providers> {
    let otlp = flotilla_core::settings::get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    let app_insights = flotilla_core::settings::get("APPLICATIONINSIGHTS_CONNECTION_STRING");
    if !otlp && app_insights.is_none() {
        return None;
    }
    let name =
        flotilla_core::settings::get("OTEL_SERVICE_NAME").unwrap_or_else(|| "flotilla".into());
    let resource = Resource::builder().with_service_name(name).build();
    let mut traces = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut metrics = SdkMeterProvider::builder().with_resource(resource);
    let mut exporting = false;
    if otlp {
        match otlp_exporters() {
            Ok((spans, points)) => {
                traces = traces.with_batch_exporter(spans);
                metrics = metrics.with_periodic_exporter(points);
                exporting = true;
            }
            Err(e) => eprintln!("warning: OTLP export is off: {e}"),
        }
    }
    let mut uploads = None;
    if let Some(connection_string) = app_insights {
        match app_insights_exporter(&connection_string) {
            Ok((exporter, runtime)) => {
                traces = traces.with_batch_exporter(exporter.clone());
                metrics = metrics.with_periodic_exporter(exporter);
                uploads = Some(runtime);
                exporting = true;
            }
            Err(e) => eprintln!("warning: Application Insights export is off: {e}"),
        }
    }
    exporting.then(|| Providers {
        traces: traces.build(),
        metrics: metrics.build(),
        uploads,
    })
}

/// The OTLP/HTTP span and metric exporters, configured by the `OTEL_*` variables.
fn otlp_exporters() -> Result<
    (
        opentelemetry_otlp::SpanExporter,
        opentelemetry_otlp::MetricExporter,
    ),
    String,
> {
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OTLP span exporter: {e}"))?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OTLP metric exporter: {e}"))?;
    Ok((spans, metrics))
}

/// The Application Insights exporter and the runtime its uploads run on (one
/// worker thread: the SDK's export threads are not async, the token and HTTPS
/// calls are).
fn app_insights_exporter(
    connection_string: &str,
) -> Result<
    (
        opentelemetry_application_insights::Exporter<app_insights::IngestionClient>,
        tokio::runtime::Runtime,
    ),
    String,
> {
    let auth = app_insights::Auth::parse(
        flotilla_core::settings::get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING").as_deref(),
    )?;
    let http = crate::backends::azure_http().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("flotilla-telemetry")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the upload runtime: {e}"))?;
    let exporter =
        app_insights::exporter(connection_string, &auth, http, runtime.handle().clone())?;
    Ok((exporter, runtime))
}
