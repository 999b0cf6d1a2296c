//! `flotilla serve`: the Azure Functions custom handler.
//!
//! The Functions host starts this binary (host.json `customHandler`), pings
//! `GET /` until it answers, then POSTs every invocation to `/{functionName}`
//! with the envelope of [`envelope`]. Each function of [`FUNCTIONS`] has a
//! folder `functions/<name>/function.json` with its bindings; `flotilla
//! package` copies those folders, and a test keeps the three in step.

pub mod caller;
pub mod envelope;
mod events;
mod front;
mod http;
mod problem;
mod queue;
mod sweep;
mod view;

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
use std::time::Duration;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod limit_tests;

#[cfg(test)]
mod view_tests;

#[cfg(test)]
mod auth_tests;

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
/// Largest request body `submit`, `scale` and `pool-add` accept (a valid spec is a few
/// KiB; see `flotilla_core::spec` for its limits).
pub const MAX_BODY: usize = 256 * 1024;
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
    function!("list", http("GET", "clusters")),
    function!("status", http("GET", "clusters/{id}")),
    function!("delete", http("DELETE", "clusters/{id}")),
    function!("scale", http("PATCH", "clusters/{id}/pools/{pool}")),
    function!("pool-add", http("POST", "clusters/{id}/pools")),
    function!("pool-remove", http("DELETE", "clusters/{id}/pools/{pool}")),
    function!("view", http("GET", "clusters/{id}/view")),
    function!("view-list", http("GET", "view")),
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
    /// Who may call, and who may touch a job (`FLOTILLA_AUTH`, `FLOTILLA_ADMIN_ROLE`).
    pub auth: caller::AuthPolicy,
    /// The Event Grid topic `events` accepts deliveries from
    /// (`FLOTILLA_EVENTGRID_TOPIC`); `None` accepts any (local runs).
    pub event_topic: Option<String>,
}

impl AppState {
    /// The state with authentication off and any Event Grid topic accepted.
    pub fn new(engine: Arc<Engine>) -> AppState {
        AppState {
            engine,
            sim: None,
            auth: caller::AuthPolicy::default(),
            event_topic: None,
        }
    }
}

/// The custom handler's router: `GET /` (readiness), `POST /{function}`,
/// and `GET /api/...` for the read-only HTTP functions (see [`front`]).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(ready))
        .route("/api/{*route}", get(front::get))
        .route("/{function}", axum::routing::post(invoke))
        // Room for a MAX_BODY body escaped inside the envelope; MAX_BODY
        // itself is enforced per function with a problem-details answer.
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(state)
}

/// Only the browser front door (`GET /api/...`: `status` and the progress
/// pages), for the local page server of `status --web` and `up --open`.
pub fn pages(state: AppState) -> Router {
    Router::new()
        .route("/api/{*route}", get(front::get))
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
pub fn port(arg: Option<u16>) -> Result<u16, crate::error::Error> {
    if let Some(p) = arg {
        return Ok(p);
    }
    match flotilla_core::settings::get("FUNCTIONS_CUSTOMHANDLER_PORT") {
        Some(p) => p.trim().parse().map_err(|_| crate::error::Error::Setting {
            name: "FUNCTIONS_CUSTOMHANDLER_PORT".into(),
            why: format!("not a port number: '{p}'"),
        }),
        None => Ok(DEFAULT_PORT),
    }
}

/// `flotilla serve`: builds the backends and serves until Ctrl-C / SIGTERM.
pub async fn run(port_arg: Option<u16>) -> Result<(), crate::error::Error> {
    let port = port(port_arg)?;
    let limits = Limits::from_settings()?;
    let auth = caller::AuthPolicy::from_settings()?;
    let event_topic = events::topic_from_settings()?;
    let backends = crate::backends::Backends::from_settings().await?;
    let state = AppState {
        sim: backends.local().map(|w| w.config.clone()),
        auth,
        event_topic,
        ..AppState::new(backends.engine.clone())
    };
    if state.auth.mode == caller::AuthMode::Off {
        tracing::warn!("FLOTILLA_AUTH is off: a request without a caller may touch every job");
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    tracing::info!(
        port,
        self_consuming = backends.self_consuming,
        ?limits,
        "custom handler listening"
    );
    eprintln!("flotilla serve: listening on http://127.0.0.1:{port}");
    serve(
        listener,
        app(state),
        limits,
        crate::signals::stop_requested(),
    )
    .await;
    backends.shutdown().await;
    Ok(())
}

/// How `flotilla serve` protects itself from slow clients, stuck handlers and
/// too many connections (the FLOTILLA_SERVE_* settings).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Time to send a request's headers (and the longest a keep-alive
    /// connection may sit idle); after it the connection is closed.
    pub header_timeout: Duration,
    /// Time to send the whole request body; after it, 408 and close.
    pub body_timeout: Duration,
    /// Time for a whole request, handler included; after it, 503.
    pub request_timeout: Duration,
    /// Connections served at once; further ones wait in the accept backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            // Under host.json's functionTimeout (5 min): the host gets an
            // answer (and redelivers) instead of timing the invocation out.
            request_timeout: Duration::from_secs(280),
            max_connections: 256,
        }
    }
}

impl Limits {
    /// The limits from the FLOTILLA_SERVE_* settings, each defaulting when
    /// unset; a malformed value is an error naming the setting.
    pub fn from_settings() -> Result<Limits, crate::error::Error> {
        let d = Limits::default();
        let seconds = |name: &str, default: Duration| -> Result<Duration, crate::error::Error> {
            let Some(v) = flotilla_core::settings::get(name) else {
                return Ok(default);
            };
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| crate::error::Error::Setting {
                    name: name.into(),
                    why: format!(
                        "must be a number of seconds between 0 and 86400 (got '{}')",
                        truncate(&v, 40)
                    ),
                })
        };
        let max_connections = match flotilla_core::settings::get("FLOTILLA_SERVE_MAX_CONNECTIONS") {
            None => d.max_connections,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=65_536).contains(n))
                .ok_or_else(|| crate::error::Error::Setting {
                    name: "FLOTILLA_SERVE_MAX_CONNECTIONS".into(),
                    why: format!(
                        "must be a whole number from 1 to 65536 (got '{}')",
                        truncate(&v, 40)
                    ),
                })?,
        };
        Ok(Limits {
            header_timeout: seconds("FLOTILLA_SERVE_HEADER_TIMEOUT", d.header_timeout)?,
            body_timeout: seconds("FLOTILLA_SERVE_BODY_TIMEOUT", d.body_timeout)?,
            request_timeout: seconds("FLOTILLA_SERVE_REQUEST_TIMEOUT", d.request_timeout)?,
            max_connections,
        })
    }
}

/// Serves `app` over HTTP/1.1 on `listener` within `limits` until `shutdown`
/// resolves, then lets the requests in flight finish (for at most the
/// request timeout).
///
/// Guarantees: a connection that does not complete its headers within
/// `header_timeout` is closed (hyper's header read timeout, which also ends
/// idle keep-alive connections); a body not received within `body_timeout`
/// is answered 408 and the connection closed; a request still running after
/// `request_timeout` is answered 503 (the handler's future is dropped, as in
/// a crash: every step is safe to run again); at most `max_connections` are
/// open, the next one is accepted when one closes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper_util::service::TowerToHyperService::new(guarded(app, limits));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    // Answers leave at once rather than behind the client's delayed ACK.
                    let _ = stream.set_nodelay(true);
                    stream
                }
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.request_timeout) => {
            tracing::warn!("requests still running at shutdown were cut off");
        }
    }
}

/// After a failed accept: a client that gave up is nothing; anything else
/// (e.g. out of file descriptors) is logged and waited out briefly.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Largest request the listener reads: room for a [`MAX_BODY`] body escaped
/// inside the envelope.
pub const MAX_REQUEST: usize = 8 * MAX_BODY;

/// `app` behind the per-request limits of [`guard`].
pub fn guarded(app: Router, limits: Limits) -> Router {
    app.layer(axum::middleware::from_fn_with_state(limits, guard))
}

/// The per-request limits: reads the whole body within `body_timeout` (408)
/// and [`MAX_REQUEST`] (413), then runs the handler within what is left of
/// `request_timeout` (503).
async fn guard(
    State(limits): State<Limits>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(limits.body_timeout, read_body(body, MAX_REQUEST)).await {
        Ok(Ok(body)) => body,
        Ok(Err(p)) => return closing(transport_problem(p)),
        Err(_) => {
            tracing::warn!(path = %parts.uri.path(), "request body timed out");
            return closing(transport_problem(problem::Problem::new(
                problem::Kind::RequestTimeout,
                format!(
                    "the request body did not arrive within {:.1} s",
                    limits.body_timeout.as_secs_f64()
                ),
            )));
        }
    };
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(body));
    let path = req.uri().path().to_string();
    match tokio::time::timeout_at(deadline, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::error!(%path, "request timed out in its handler");
            transport_problem(problem::Problem::new(
                problem::Kind::HandlerTimeout,
                format!(
                    "the request did not finish within {:.1} s; it is safe to send again",
                    limits.request_timeout.as_secs_f64()
                ),
            ))
        }
    }
}

/// The whole body, or a 413 problem past `max` bytes (400 if it breaks off).
async fn read_body(mut body: axum::body::Body, max: usize) -> Result<Bytes, problem::Problem> {
    use axum::body::HttpBody;
    let too_large = || {
        problem::Problem::new(
            problem::Kind::TooLarge,
            format!("the request exceeds {max} bytes"),
        )
    };
    if body.size_hint().lower() > max as u64 {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| {
            problem::Problem::new(
                problem::Kind::InvalidRequest,
                format!("the request body could not be read: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// Marks an answer as the connection's last (its body may be left unread).
fn closing(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// A JSON value's string field, for event bodies.
fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}
