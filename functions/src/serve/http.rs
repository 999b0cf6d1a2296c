//! The HTTP-triggered functions: `submit`, `plan`, `list`, `status`,
//! `delete`, `scale`, `pool-add`, `pool-remove`, and the progress pages
//! `view` and `view-list` (see [`super::view`]). Every answer goes back in
//! `Outputs.res`; the invocation itself succeeds (a 4xx for the client is
//! not a failed invocation).
//!
//! Every request is authenticated first ([`caller::authenticate`]: 401 when
//! authentication is required and no caller is named), and every route that
//! reads or changes a job gets it through [`job_for`], the one place that
//! applies the access rule ([`caller::may_access`]).

use super::caller::{self, Action, Caller};
use super::envelope::{HttpRequest, HttpResponse, Invocation, Reply};
use super::problem::{Kind, Problem};
use super::{AppState, Function, Trigger, MAX_BODY};
use flotilla_core::engine::{stalled_reason, CommandError, SweepOptions};
use flotilla_core::names;
use flotilla_core::saga::Saga;
use flotilla_core::spec::ClusterSpec;
use serde_json::{json, Value};

pub async fn invoke(state: &AppState, f: &Function, inv: &Invocation) -> Reply {
    let mut reply = Reply::new();
    let res = match answer(state, f, inv, &mut reply).await {
        Ok(res) => res,
        Err(p) => {
            reply.log(format!("{}: {} {}", f.name, p.kind.status(), p.detail));
            p.response()
        }
    };
    reply.http(res)
}

async fn answer(
    state: &AppState,
    f: &Function,
    inv: &Invocation,
    reply: &mut Reply,
) -> Result<HttpResponse, Problem> {
    let value = inv
        .binding("req")
        .ok_or_else(|| Problem::new(Kind::InvalidRequest, "the invocation has no Data.req"))?;
    let req = HttpRequest::from_value(value).map_err(|e| Problem::new(Kind::InvalidRequest, e))?;
    if let Trigger::Http { method, .. } = f.trigger {
        if !req.method.is_empty() && req.method != method {
            return Err(Problem::new(
                Kind::MethodNotAllowed,
                format!(
                    "{} accepts {method}, not {}",
                    f.name,
                    super::truncate(&req.method, 16)
                ),
            ));
        }
    }
    if req.body.as_ref().is_some_and(|b| b.len() > MAX_BODY) {
        return Err(Problem::new(
            Kind::TooLarge,
            format!("the body exceeds {MAX_BODY} bytes"),
        ));
    }
    let who = caller::authenticate(&state.auth, &req)?;
    match f.name {
        "submit" => submit(state, &req, who.as_ref(), reply).await,
        "plan" => plan(state, &req, who.as_ref()),
        "list" => list(state, who.as_ref()).await,
        "status" => status(state, &req).await,
        "delete" => delete(state, &req, reply).await,
        "scale" => scale(state, &req, reply).await,
        "view" => super::view::job(state, &req).await,
        "view-list" => super::view::list(state, &req).await,
        "pool-add" => pool_add(state, &req, reply).await,
        "pool-remove" => pool_remove(state, &req, reply).await,
        other => Err(Problem::new(
            Kind::Internal,
            format!("no HTTP handler for {other}"),
        )),
    }
}

fn status_url(job: &str) -> String {
    format!("/api/clusters/{job}")
}

/// The job id from the route; a malformed id cannot name a job (404).
fn job_param(req: &HttpRequest) -> Result<String, Problem> {
    let id = req.param("id").unwrap_or_default();
    if names::is_job_id(&id) {
        Ok(id)
    } else {
        Err(Problem::new(
            Kind::NotFound,
            format!("'{}' is not a job id", super::truncate(&id, 40)),
        ))
    }
}

/// The job the route names, if the caller may see it: THE access check of
/// every route that reads or changes a job (status, delete, scale, and
/// anything built on `status`). It authenticates the request itself, so a
/// route cannot reach a job without it.
///
/// # Errors
/// 400/401 from [`caller::authenticate`]; 404 for a malformed id, an
/// unknown job and a job the caller may not touch alike (no existence
/// leak); 500 when the store fails.
pub(super) async fn job_for(
    state: &AppState,
    req: &HttpRequest,
    action: Action,
) -> Result<(String, Saga), Problem> {
    let who = caller::authenticate(&state.auth, req)?;
    let job = job_param(req)?;
    match state.engine.status(&job).await {
        Ok(Some(saga)) if caller::may(&state.auth, who.as_ref(), &saga, action) => Ok((job, saga)),
        Ok(Some(_)) => {
            tracing::info!(%job, caller = who.as_ref().map(|c| c.principal_id.as_str()), "job hidden from a caller who is neither its owner nor an admin");
            Err(Problem::new(Kind::NotFound, format!("job {job} not found")))
        }
        Ok(None) => Err(Problem::new(Kind::NotFound, format!("job {job} not found"))),
        Err(e) => Err(command_problem(CommandError::Engine(e))),
    }
}

/// The body as JSON, requiring a JSON content type.
fn json_body(req: &HttpRequest) -> Result<(String, Value), Problem> {
    let ct = req.header("content-type").unwrap_or("");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/json"
        && !(media.starts_with("application/") && media.ends_with("+json"))
    {
        return Err(Problem::new(
            Kind::UnsupportedMediaType,
            format!(
                "the body must be application/json (got '{}')",
                super::truncate(ct, 60)
            ),
        ));
    }
    let bytes = req.body.as_deref().unwrap_or_default();
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Problem::new(Kind::MalformedJson, "the body is not UTF-8"))?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Problem::new(
            Kind::MalformedJson,
            format!("line {}, column {}: {}", e.line(), e.column(), classify(&e)),
        )
    })?;
    Ok((text.to_string(), value))
}

fn classify(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Data => "unexpected value",
    }
}

fn command_problem(e: CommandError) -> Problem {
    match e {
        CommandError::NotFound(job) => Problem::new(Kind::NotFound, format!("job {job} not found")),
        CommandError::Conflict(m) => Problem::new(Kind::Conflict, m),
        CommandError::Invalid(m) => Problem::new(Kind::InvalidRequest, m),
        CommandError::Engine(e) => {
            tracing::error!(error = %e, "command failed");
            Problem::new(Kind::Internal, "the job store or bus failed; try again")
        }
        CommandError::Rejected(verdict) => preflight_problem(&verdict),
        CommandError::Unavailable(e) => {
            tracing::warn!(code = %e.code, "pre-flight read failed; the client may retry");
            Problem::new(
                Kind::AzureUnavailable,
                format!(
                    "pre-flight could not read Azure now ({}); try again",
                    e.code
                ),
            )
        }
    }
}

/// A pre-flight refusal: 400 with every problem (`field`, `code`, `message`)
/// in `problems`, the warnings in `warnings`, and the first problem's field
/// as the document's `field`.
fn preflight_problem(verdict: &flotilla_core::preflight::Preflight) -> Problem {
    let mut p = Problem::new(
        Kind::PreflightFailed,
        format!(
            "{} problem(s): {}",
            verdict.problems.len(),
            verdict.summary()
        ),
    )
    .with("problems", json!(verdict.problems))
    .with("warnings", json!(verdict.warnings));
    if let Some(first) = verdict.problems.first() {
        p = p.field(first.field.clone());
    }
    p
}

async fn submit(
    state: &AppState,
    req: &HttpRequest,
    who: Option<&Caller>,
    reply: &mut Reply,
) -> Result<HttpResponse, Problem> {
    let (text, _) = json_body(req)?;
    let spec = ClusterSpec::from_json(&text).map_err(|e| {
        Problem::new(Kind::InvalidSpec, format!("{}: {}", e.field, e.message)).field(e.field)
    })?;
    if let Some(sim) = &state.sim {
        crate::local::ensure_resource_group(sim, &spec.resource_group, &spec.location)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "simulator resource group");
                Problem::new(
                    Kind::Internal,
                    "the built-in simulator refused the resource group",
                )
            })?;
    }
    let key = caller::scoped_key(who, idempotency_key(req)?);
    let owner = who.map(|c| c.principal_id.as_str());
    let submitted = state
        .engine
        .submit_checked_as(spec, key.as_deref(), owner)
        .await
        .map_err(|e| match e {
            CommandError::Invalid(m) => Problem::new(Kind::InvalidSpec, m),
            other => command_problem(other),
        })?;
    let job = submitted.job;
    let url = status_url(&job);
    if submitted.existing {
        // The same key again: the same job, never a second cluster.
        reply.log(format!("submit: idempotency key already started job {job}"));
        let status = match state.engine.status(&job).await {
            Ok(Some(saga)) => format!("{:?}", saga.status),
            _ => "Unknown".into(),
        };
        return Ok(HttpResponse::json(
            200,
            &json!({"job": job, "statusUrl": url, "status": status}),
        )
        .with_header("Location", &url));
    }
    reply.log(format!("submit: job {job} accepted"));
    tracing::info!(%job, "job submitted over HTTP");
    Ok(HttpResponse::json(
        202,
        &json!({"job": job, "statusUrl": url, "status": "Running"}),
    )
    .with_header("Location", &url))
}

/// `plan`: what a submission of this spec would send, step by step with the
/// undo of each (secrets redacted); nothing is sent to Azure.
fn plan(
    state: &AppState,
    req: &HttpRequest,
    who: Option<&Caller>,
) -> Result<HttpResponse, Problem> {
    let (text, _) = json_body(req)?;
    let spec = ClusterSpec::from_json(&text).map_err(|e| {
        Problem::new(Kind::InvalidSpec, format!("{}: {}", e.field, e.message)).field(e.field)
    })?;
    let key = caller::scoped_key(who, idempotency_key(req)?);
    let plan = state.engine.plan(spec, key.as_deref());
    Ok(HttpResponse::json(
        200,
        &serde_json::to_value(&plan).unwrap_or_default(),
    ))
}

/// The optional `Idempotency-Key` header: 1–255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<&str>, Problem> {
    let Some(key) = req.header("idempotency-key") else {
        return Ok(None);
    };
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::new(
            Kind::InvalidRequest,
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )
        .field("Idempotency-Key"));
    }
    Ok(Some(key))
}

/// `list`: the jobs the caller may see (its own; every job for an admin or
/// the local operator), oldest first.
async fn list(state: &AppState, who: Option<&Caller>) -> Result<HttpResponse, Problem> {
    let sagas = state
        .engine
        .jobs()
        .await
        .map_err(|e| command_problem(CommandError::Engine(e)))?;
    let jobs: Vec<Value> = sagas
        .iter()
        .filter(|s| caller::may_access(&state.auth, who, s))
        .map(|s| {
            json!({
                "job": s.id,
                "status": s.status,
                "createdAt": s.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "owner": s.owner,
                "statusUrl": status_url(&s.id),
            })
        })
        .collect();
    Ok(HttpResponse::json(200, &json!({ "jobs": jobs })))
}

/// `status`: the saga as JSON. The progress pages read every job through
/// this too, so whatever it refuses they do not show.
pub(super) async fn status(state: &AppState, req: &HttpRequest) -> Result<HttpResponse, Problem> {
    let (_, saga) = job_for(state, req, Action::Read).await?;
    Ok(HttpResponse::json(200, &status_json(&saga)))
}

/// The saga as `status` shows it, with `stalled` (why) when it makes no progress.
fn status_json(saga: &flotilla_core::saga::Saga) -> Value {
    let mut v = saga.to_json();
    if let Some(wait) = saga.wait() {
        v["wait"] = serde_json::to_value(wait).unwrap_or_default();
    }
    if let Some(id) = saga.outputs_id() {
        v["outputs"] = Value::String(id.to_string());
    }
    let sweep = SweepOptions::from_settings(SweepOptions::default()).unwrap_or_default();
    if let Some(why) = stalled_reason(saga, time::OffsetDateTime::now_utc(), sweep.stall_after) {
        v["stalled"] = Value::String(why);
    }
    v
}

async fn delete(
    state: &AppState,
    req: &HttpRequest,
    reply: &mut Reply,
) -> Result<HttpResponse, Problem> {
    let (job, _) = job_for(state, req, Action::Manage).await?;
    state
        .engine
        .request_delete(&job)
        .await
        .map_err(command_problem)?;
    reply.log(format!("delete: job {job} teardown requested"));
    let url = status_url(&job);
    Ok(HttpResponse::json(
        202,
        &json!({"job": job, "statusUrl": url, "status": "Deleting"}),
    )
    .with_header("Location", &url))
}

async fn scale(
    state: &AppState,
    req: &HttpRequest,
    reply: &mut Reply,
) -> Result<HttpResponse, Problem> {
    let pool = req.param("pool").unwrap_or_default();
    if pool.is_empty() || pool.len() > 64 {
        return Err(
            Problem::new(Kind::InvalidRequest, "the pool name is missing or too long")
                .field("pool"),
        );
    }
    let (_, body) = json_body(req)?;
    let count = body
        .get("count")
        .and_then(Value::as_u64)
        .and_then(|c| u32::try_from(c).ok())
        .ok_or_else(|| {
            Problem::new(
                Kind::InvalidRequest,
                "the body must be {\"count\": N} with N a whole number",
            )
            .field("count")
        })?;
    // After the body checks, which say the same for every job.
    let (job, _) = job_for(state, req, Action::Scale).await?;
    state
        .engine
        .request_scale(&job, &pool, count)
        .await
        .map_err(|e| match e {
            CommandError::Invalid(m) => {
                let field = if m.contains("does not exist") {
                    "pool"
                } else {
                    "count"
                };
                Problem::new(Kind::InvalidRequest, m).field(field)
            }
            other => command_problem(other),
        })?;
    reply.log(format!("scale: job {job} pool {pool} to {count} requested"));
    let url = status_url(&job);
    Ok(HttpResponse::json(
        202,
        &json!({"job": job, "pool": pool, "count": count, "statusUrl": url}),
    )
    .with_header("Location", &url))
}

/// `pool-add`: the body is one worker pool (as an element of the spec's
/// `workerPools`). 400 names the field (`max`, `disk.sizeGb`) of a pool the
/// cluster could not have been created with; 404 for an unknown job; 409
/// when the job is not `Succeeded` or an operation is in flight.
async fn pool_add(
    state: &AppState,
    req: &HttpRequest,
    reply: &mut Reply,
) -> Result<HttpResponse, Problem> {
    job_param(req)?;
    let (text, _) = json_body(req)?;
    let invalid = |e: flotilla_core::spec::SpecError| {
        Problem::new(Kind::InvalidRequest, format!("{}: {}", e.field, e.message)).field(e.field)
    };
    let pool = flotilla_core::spec::WorkerPool::from_json(&text).map_err(invalid)?;
    let (job, saga) = job_for(state, req, Action::Manage).await?;
    saga.spec.with_pool(&pool).map_err(invalid)?;
    state
        .engine
        .request_add_pool(&job, &pool)
        .await
        .map_err(command_problem)?;
    reply.log(format!("pool-add: job {job} pool {} requested", pool.name));
    let url = status_url(&job);
    Ok(HttpResponse::json(
        202,
        &json!({"job": job, "pool": pool.name, "statusUrl": url}),
    )
    .with_header("Location", &url))
}

/// `pool-remove`: 404 for an unknown job or pool; 409 when the job is not
/// `Succeeded`, an operation is in flight, or it is the last pool of a
/// cluster whose masters take no workloads.
async fn pool_remove(
    state: &AppState,
    req: &HttpRequest,
    reply: &mut Reply,
) -> Result<HttpResponse, Problem> {
    job_param(req)?;
    let pool = req.param("pool").unwrap_or_default();
    if pool.is_empty() || pool.len() > 64 {
        return Err(
            Problem::new(Kind::InvalidRequest, "the pool name is missing or too long")
                .field("pool"),
        );
    }
    let (job, _) = job_for(state, req, Action::Manage).await?;
    state
        .engine
        .request_remove_pool(&job, &pool)
        .await
        .map_err(|e| match e {
            CommandError::Invalid(m) => Problem::new(Kind::NotFound, m).field("pool"),
            other => command_problem(other),
        })?;
    reply.log(format!("pool-remove: job {job} pool {pool} requested"));
    let url = status_url(&job);
    Ok(
        HttpResponse::json(202, &json!({"job": job, "pool": pool, "statusUrl": url}))
            .with_header("Location", &url),
    )
}
