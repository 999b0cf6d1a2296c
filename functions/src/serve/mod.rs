//! `flotilla serve`: the Azure Functions custom handler.
//!
//! The Functions host starts this binary (host.json `customHandler`), pings
//! `GET /` until it answers, then POSTs every invocation to `/{functionName}`
//! with the envelope of [`envelope`]. Each function of [`FUNCTIONS`] has a
//! folder `functions/<name>/function.json` with its bindings; `flotilla
//! package` copies those folders, and a test keeps the three in step.

pub mod envelope;
mod events;
mod http;
mod problem;
mod queue;
mod sweep;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use envelope::{Invocation, Reply};
use flotilla_azure::AzureConfig;
use flotilla_core::engine::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

#[cfg(test)]
mod tests;

/// What triggers a function (and so what its `function.json` holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// HTTP trigger on `route` for `method` (route prefix `api`).
    Http {
        method: &'static str,
        route: &'static str,
    },
    /// Service Bus topic `flotilla-events`, subscription = the function name.
    Subscription,
    /// Service Bus queue `flotilla-jobs`.
    JobsQueue,
    /// Event Grid (Azure resource events).
    EventGrid,
    /// A timer (NCRONTAB schedule in its function.json).
    Timer,
}

/// One function of the app.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    pub name: &'static str,
    pub trigger: Trigger,
    /// `functions/<name>/function.json`, compiled in for `flotilla package`.
    pub function_json: &'static str,
}

/// Service Bus topic every flotilla CloudEvent goes to.
pub const EVENTS_TOPIC: &str = "flotilla-events";
/// Service Bus queue of submitted specs.
pub const JOBS_QUEUE: &str = "flotilla-jobs";
/// The Service Bus connection setting prefix the triggers use.
pub const CONNECTION: &str = "ServiceBusConnection";
/// The queue/subscription MaxDeliveryCount (Service Bus default, set in infra).
pub const MAX_DELIVERY_COUNT: u64 = 10;
/// Largest request body `submit` and `scale` accept.
pub const MAX_BODY: usize = 1024 * 1024;
/// Port when neither `--port` nor FUNCTIONS_CUSTOMHANDLER_PORT is given
/// (7071 is the Functions host's own port under `func start`).
pub const DEFAULT_PORT: u16 = 7072;

macro_rules! function {
    ($name:literal, $trigger:expr) => {
        Function {
            name: $name,
            trigger: $trigger,
            function_json: include_str!(concat!("../../", $name, "/function.json")),
        }
    };
}

const fn http(method: &'static str, route: &'static str) -> Trigger {
    Trigger::Http { method, route }
}

/// Every function the router serves; each has `functions/<name>/function.json`.
pub const FUNCTIONS: &[Function] = &[
    function!("submit", http("POST", "clusters")),
    function!("plan", http("POST", "clusters/plan")),
    function!("status", http("GET", "clusters/{id}")),
    function!("delete", http("DELETE", "clusters/{id}")),
    function!("scale", http("PATCH", "clusters/{id}/pools/{pool}")),
    function!("stage", Trigger::Subscription),
    function!("prereqs", Trigger::Subscription),
    function!("keys", Trigger::Subscription),
    function!("master", Trigger::Subscription),
    function!("workers", Trigger::Subscription),
    function!("join", Trigger::Subscription),
    function!("poll", Trigger::Subscription),
    function!("compensate", Trigger::Subscription),
    function!("submit-queue", Trigger::JobsQueue),
    function!("events", Trigger::EventGrid),
    function!("sweep", Trigger::Timer),
];

/// host.json, compiled in for `flotilla package`.
pub const HOST_JSON: &str = include_str!("../../../host.json");
/// local.settings.example.json, written next to a package for `func start`.
pub const LOCAL_SETTINGS_EXAMPLE: &str = include_str!("../../../local.settings.example.json");

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// Local world only: the built-in simulator's config, so `submit` can
    /// create the spec's resource group there (on Azure it must exist).
    pub sim: Option<AzureConfig>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>) -> AppState {
        AppState { engine, sim: None }
    }
}

/// The custom handler's router: `GET /` (readiness) and `POST /{function}`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(ready))
        .route("/{function}", axum::routing::post(invoke))
        // Room for a 1 MiB body escaped inside the envelope; the 1 MiB limit
        // itself is enforced per function with a problem-details answer.
        .layer(DefaultBodyLimit::max(8 * MAX_BODY))
        .with_state(state)
}

impl Function {
    /// The function and its trigger, for the readiness answer.
    pub fn describe(&self) -> Value {
        match self.trigger {
            Trigger::Http { method, route } => {
                json!({"name": self.name, "trigger": "http", "method": method, "route": format!("api/{route}")})
            }
            Trigger::Subscription => {
                json!({"name": self.name, "trigger": "serviceBus", "topic": EVENTS_TOPIC, "subscription": self.name, "connection": CONNECTION})
            }
            Trigger::JobsQueue => {
                json!({"name": self.name, "trigger": "serviceBus", "queue": JOBS_QUEUE, "connection": CONNECTION})
            }
            Trigger::EventGrid => json!({"name": self.name, "trigger": "eventGrid"}),
            Trigger::Timer => json!({"name": self.name, "trigger": "timer"}),
        }
    }
}

/// Readiness (the host's `GET /` ping): the functions served.
async fn ready() -> Response {
    let names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
    let details: Vec<Value> = FUNCTIONS.iter().map(Function::describe).collect();
    axum::Json(json!({"status": "ready", "functions": names, "bindings": details})).into_response()
}

/// A reply to the host: the envelope as JSON with the given transport status.
fn reply(status: StatusCode, reply: &Reply) -> Response {
    let mut res = (status, reply.to_value().to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A transport-level problem (the request never was a usable invocation).
fn transport_problem(p: problem::Problem) -> Response {
    let status = StatusCode::from_u16(p.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut res = (status, p.to_value().to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

async fn invoke(
    State(state): State<AppState>,
    Path(function): Path<String>,
    body: Bytes,
) -> Response {
    let Some(f) = FUNCTIONS.iter().find(|f| f.name == function) else {
        return transport_problem(problem::Problem::new(
            problem::Kind::NotFound,
            format!("no function named '{}'", truncate(&function, 64)),
        ));
    };
    // Event Grid's own webhook shape (a bare array of events), e.g. a
    // delivery straight to this handler: answer it in kind.
    if f.trigger == Trigger::EventGrid
        && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
    {
        return events::raw(&state, &body).await;
    }
    let inv = match Invocation::parse(&body) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(function = f.name, error = %e, "unreadable invocation");
            return transport_problem(problem::Problem::new(problem::Kind::MalformedJson, e));
        }
    };
    let (status, r) = match f.trigger {
        Trigger::Http { .. } => (StatusCode::OK, http::invoke(&state, f, &inv).await),
        Trigger::Subscription => queue::event(&state, f.name, &inv).await,
        Trigger::JobsQueue => queue::submit(&state, &inv).await,
        Trigger::EventGrid => events::invoke(&state, &inv).await,
        Trigger::Timer => sweep::invoke(&state).await,
    };
    reply(status, &r)
}

/// At most `n` characters of untrusted text, for logs and messages.
pub fn truncate(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

/// The port to listen on: `--port`, else FUNCTIONS_CUSTOMHANDLER_PORT, else 7072.
pub fn port(arg: Option<u16>) -> Result<u16, String> {
    if let Some(p) = arg {
        return Ok(p);
    }
    match flotilla_core::settings::get("FUNCTIONS_CUSTOMHANDLER_PORT") {
        Some(p) => p
            .trim()
            .parse()
            .map_err(|_| format!("FUNCTIONS_CUSTOMHANDLER_PORT is not a port number: '{p}'")),
        None => Ok(DEFAULT_PORT),
    }
}

/// `flotilla serve`: builds the backends and serves until Ctrl-C / SIGTERM.
pub async fn run(port_arg: Option<u16>) -> Result<(), String> {
    let port = port(port_arg)?;
    let backends = crate::backends::Backends::from_settings().await?;
    let state = AppState {
        sim: backends.local().map(|w| w.config.clone()),
        ..AppState::new(backends.engine.clone())
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    tracing::info!(
        port,
        self_consuming = backends.self_consuming,
        "custom handler listening"
    );
    eprintln!("flotilla serve: listening on http://127.0.0.1:{port}");
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    backends.shutdown().await;
    served.map_err(|e| format!("server: {e}"))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A JSON value's string field, for event bodies.
fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}
