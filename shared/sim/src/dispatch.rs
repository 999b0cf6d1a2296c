//! The single entry point: parses every request, authenticates it, applies fault rules and
//! throttling, hands it to the area's handler and records it.

use crate::util::{arm_error, percent_decode, set_header, Ctx};
use crate::{lock, Buckets, FaultRule, RequestRecord, Sim, REQUEST_LOG_CAPACITY};
use axum::extract::Request;
use axum::response::Response;
use http::{Method, StatusCode};
use std::time::{Duration, Instant};

/// Which part of the simulated Azure a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Area {
    Control,
    Token,
    Msi,
    Imds,
    Kube,
    KeyVault,
    Blob,
    ServiceBus,
    Arm,
    Unknown,
}

/// Token audiences the simulator issues.
pub(crate) const ARM_AUDIENCE: &str = "https://management.azure.com";
pub(crate) const VAULT_AUDIENCE: &str = "https://vault.azure.net";
pub(crate) const STORAGE_AUDIENCE: &str = "https://storage.azure.com";
pub(crate) const SERVICEBUS_AUDIENCE: &str = "https://servicebus.azure.net";
/// Azure Monitor ingestion (Application Insights with Entra authentication);
/// the simulator issues such tokens but serves no ingestion endpoint.
pub(crate) const MONITOR_AUDIENCE: &str = "https://monitor.azure.com";

/// What a request targets, for routing and fault matching.
pub(crate) struct Target {
    pub area: Area,
    pub resource_type: String,
    pub name: String,
}

/// Fault-rule `resource_type` that matches both token endpoints (client
/// credentials and managed identity).
pub(crate) const TOKEN_ENDPOINTS: &str = "token";

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Builds the router: every path goes through [`handle`].
pub(crate) fn router(sim: Sim) -> axum::Router {
    axum::Router::new().fallback(move |req: Request| {
        let sim = sim.clone();
        async move { handle(sim, req).await }
    })
}

fn classify(ctx: &Ctx) -> Target {
    let s0 = ctx.seg_lc(0);
    let t = |area, rt: &str, name: &str| Target {
        area,
        resource_type: rt.to_string(),
        name: name.to_string(),
    };
    let name_at = |i: usize| ctx.segs.get(i).cloned().unwrap_or_default();
    match s0.as_str() {
        "_sim" => t(Area::Control, "", ""),
        "msi" if ctx.segs.len() == 2 && ctx.seg_lc(1) == "token" => {
            t(Area::Msi, "Microsoft.ManagedIdentity/token", "msi")
        }
        "kube" if ctx.segs.len() >= 2 => t(Area::Kube, "Microsoft.Kubernetes/nodes", &name_at(1)),
        "imds" if ctx.segs.len() >= 3 => t(
            Area::Imds,
            "Microsoft.Compute/instanceMetadata",
            &name_at(1),
        ),
        "secrets" | "deletedsecrets" => t(
            Area::KeyVault,
            "Microsoft.KeyVault/vaults/secrets",
            &name_at(1),
        ),
        "blob" => {
            if ctx.segs.len() >= 4 {
                t(
                    Area::Blob,
                    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs",
                    &ctx.segs[3..].join("/"),
                )
            } else {
                t(
                    Area::Blob,
                    "Microsoft.Storage/storageAccounts/blobServices/containers",
                    &name_at(2),
                )
            }
        }
        "servicebus" => t(
            Area::ServiceBus,
            crate::servicebus::RESOURCE_TYPE,
            &crate::servicebus::entity_name(ctx),
        ),
        "subscriptions" => {
            let (rt, name) = crate::arm::classify(ctx);
            Target {
                area: Area::Arm,
                resource_type: rt,
                name,
            }
        }
        _ if ctx.segs.len() == 4
            && ctx.seg_lc(1) == "oauth2"
            && ctx.seg_lc(2) == "v2.0"
            && ctx.seg_lc(3) == "token" =>
        {
            t(Area::Token, "Microsoft.AAD/oauth2/token", &name_at(0))
        }
        _ => t(Area::Unknown, "", ""),
    }
}

fn base_of(req: &Request) -> String {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".to_string());
    format!("https://{host}")
}

async fn handle(sim: Sim, req: Request) -> Response {
    let started = Instant::now();
    let base = base_of(&req);
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                "The request body could not be read.",
            )
        }
    };
    let path = parts.uri.path().to_string();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let ctx = Ctx {
        method: parts.method.clone(),
        path: path.clone(),
        segs,
        query,
        headers: parts.headers,
        body,
        base,
    };
    let target = classify(&ctx);
    crate::boot::start(&sim, &ctx.base, false);
    if target.area == Area::Control {
        return crate::control::handle(&sim, &ctx);
    }
    let (mut resp, principal) = handle_area(&sim, &ctx, &target).await;
    let request_id = uuid::Uuid::new_v4().to_string();
    set_header(&mut resp, "x-ms-request-id", &request_id);
    if target.area == Area::Arm {
        set_header(&mut resp, "x-ms-correlation-request-id", &request_id);
    }
    let record = RequestRecord {
        method: ctx.method.to_string(),
        path,
        status: resp.status().as_u16(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        principal,
    };
    {
        let mut log = lock(&sim.inner.requests);
        if log.len() >= REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record);
    }
    resp
}

/// Authenticates, applies faults and throttling, then runs the handler.
async fn handle_area(sim: &Sim, ctx: &Ctx, target: &Target) -> (Response, Option<String>) {
    let audience = match target.area {
        Area::Arm => Some(ARM_AUDIENCE),
        Area::KeyVault => Some(VAULT_AUDIENCE),
        Area::Blob => Some(STORAGE_AUDIENCE),
        Area::ServiceBus => Some(SERVICEBUS_AUDIENCE),
        _ => None,
    };
    let principal = match audience {
        Some(aud) => match crate::auth::authenticate(sim, ctx, target.area, aud) {
            Ok(p) => Some(p),
            Err(resp) => return (resp, None),
        },
        None => None,
    };
    // A deleted VM sends nothing: a node script still finishing after its
    // scale set's delete completed (the boot agent stops it on its next
    // tick) must not leave secrets or blobs behind that undo already removed.
    if let Some(caller) = principal.as_deref().and_then(crate::imds::VmCaller::of) {
        if crate::imds::vm_gone(sim, caller.vm) {
            let message = format!(
                "The identity of VM {} no longer exists: the VM was deleted.",
                caller.vm
            );
            return (
                arm_error(StatusCode::FORBIDDEN, "Forbidden", &message),
                principal,
            );
        }
        let checked = match target.area {
            Area::Arm => crate::rbac::authorize(sim, ctx, &caller),
            Area::KeyVault => crate::kv::authorize(sim, ctx, &caller),
            Area::Blob => crate::blob::authorize(sim, ctx, &caller),
            _ => Ok(()),
        };
        if let Err(resp) = checked {
            return (resp, principal);
        }
    }

    let can_async = target.area == Area::Arm
        && matches!(ctx.method, Method::PUT | Method::PATCH | Method::DELETE);
    let mut async_fault = None;
    if let Some(rule) = take_fault(sim, &ctx.method, target, can_async, principal.as_deref()) {
        if let Some(ms) = rule.latency_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let message = rule.message.clone().unwrap_or_else(|| {
            format!(
                "Injected fault {} for {} {}.",
                rule.code, ctx.method, target.name
            )
        });
        if rule.asynchronous {
            async_fault = Some((rule.status, rule.code.clone(), message));
        } else {
            let status =
                StatusCode::from_u16(rule.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // A token endpoint fails in its own error shape, so the client
            // library reads it the way it reads the real one.
            let mut resp = match target.area {
                Area::Token => crate::auth::token_fault(status, &rule.code, &message),
                Area::Msi => crate::auth::msi_fault(status, &message),
                _ => arm_error(status, &rule.code, &message),
            };
            if status.as_u16() == 429 || status.is_server_error() {
                set_header(&mut resp, "retry-after", "1");
            }
            return (resp, principal);
        }
    }

    let resp = match target.area {
        Area::Token => crate::auth::token_endpoint(sim, ctx),
        Area::Msi => crate::auth::msi_endpoint(sim, ctx),
        Area::Imds => crate::imds::handle(sim, ctx),
        Area::Kube => crate::kube::handle(sim, ctx),
        Area::KeyVault => crate::kv::handle(sim, ctx),
        Area::Blob => crate::blob::handle(sim, ctx),
        Area::ServiceBus => crate::servicebus::handle(sim, ctx).await,
        Area::Arm => {
            let p = principal.clone().unwrap_or_default();
            let (remaining, limited) = throttle(sim, &p, &ctx.method);
            let mut resp = match limited {
                Some(wait) => {
                    let mut r = arm_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "The request is being throttled as the limit has been reached for operation type. Please retry after the time given in Retry-After.",
                    );
                    set_header(&mut r, "retry-after", &wait.to_string());
                    r
                }
                None => crate::arm::handle(sim, ctx, async_fault),
            };
            set_header(
                &mut resp,
                "x-ms-ratelimit-remaining-subscription-reads",
                &remaining.0.to_string(),
            );
            set_header(
                &mut resp,
                "x-ms-ratelimit-remaining-subscription-writes",
                &remaining.1.to_string(),
            );
            resp
        }
        Area::Unknown | Area::Control => arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("No route for {} {}.", ctx.method, ctx.path),
        ),
    };
    (resp, principal)
}

/// Finds the first rule matching the request and consumes one use of it.
fn take_fault(
    sim: &Sim,
    method: &Method,
    target: &Target,
    can_async: bool,
    principal: Option<&str>,
) -> Option<FaultRule> {
    let mut rules = lock(&sim.inner.faults);
    let idx = rules.iter().position(|r| {
        if r.asynchronous && !can_async {
            return false;
        }
        if let Some(p) = &r.principal {
            if !principal.is_some_and(|who| crate::util::glob_match(p, who)) {
                return false;
            }
        }
        if let Some(m) = &r.method {
            if !m.eq_ignore_ascii_case(method.as_str()) {
                return false;
            }
        }
        if let Some(t) = &r.resource_type {
            let any_token_endpoint = t.eq_ignore_ascii_case(TOKEN_ENDPOINTS)
                && matches!(target.area, Area::Token | Area::Msi);
            if !any_token_endpoint && !crate::util::glob_match(t, &target.resource_type) {
                return false;
            }
        }
        if let Some(p) = &r.name_pattern {
            if !crate::util::glob_match(p, &target.name) {
                return false;
            }
        }
        let p = r.probability.unwrap_or(1.0);
        if p <= 0.0 {
            return false;
        }
        p >= 1.0 || rand::random::<f64>() < p
    })?;
    let rule = rules[idx].clone();
    if let Some(n) = rules[idx].times.as_mut() {
        *n = n.saturating_sub(1);
        if *n == 0 {
            rules.remove(idx);
        }
    }
    drop(rules);
    lock(&sim.inner.fired).push(crate::FiredFault {
        method: method.to_string(),
        resource_type: target.resource_type.clone(),
        name: target.name.clone(),
        status: rule.status,
        code: rule.code.clone(),
        asynchronous: rule.asynchronous,
    });
    Some(rule)
}

/// Takes one token from the principal's read or write bucket. Returns the remaining
/// (reads, writes) and, when the bucket is empty, the seconds to wait.
fn throttle(sim: &Sim, principal: &str, method: &Method) -> ((u64, u64), Option<u64>) {
    let Some(cfg) = sim.inner.config.throttle.clone() else {
        let d = crate::ThrottleConfig::default();
        return ((d.read_burst as u64, d.write_burst as u64), None);
    };
    let mut all = lock(&sim.inner.buckets);
    let now = Instant::now();
    let b = all.entry(principal.to_string()).or_insert(Buckets {
        reads: cfg.read_burst as f64,
        writes: cfg.write_burst as f64,
        last: now,
    });
    let dt = now.duration_since(b.last).as_secs_f64();
    b.last = now;
    b.reads = (b.reads + dt * cfg.read_refill_per_s).min(cfg.read_burst as f64);
    b.writes = (b.writes + dt * cfg.write_refill_per_s).min(cfg.write_burst as f64);
    let read = matches!(*method, Method::GET | Method::HEAD);
    let (tokens, refill) = if read {
        (&mut b.reads, cfg.read_refill_per_s)
    } else {
        (&mut b.writes, cfg.write_refill_per_s)
    };
    let limited = if *tokens >= 1.0 {
        *tokens -= 1.0;
        None
    } else {
        let wait = if refill > 0.0 {
            ((1.0 - *tokens) / refill).ceil().max(1.0) as u64
        } else {
            60
        };
        Some(wait)
    };
    ((b.reads.floor() as u64, b.writes.floor() as u64), limited)
}
