//! Long-running operations: starting them, their status and result URLs, applying them
//! when their time comes, and the status endpoints.

use super::{compute, method_not_allowed, model, RG_TYPE};
use crate::state::{OpKind, Operation, State};
use crate::util::{
    arm_error, empty, json_response, now_ms, retry_after_secs, rfc3339, set_header, Ctx,
};
use crate::{lock, Sim, SUBSCRIPTION_ID};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::json;

/// Above this many remembered operations, old finished ones are forgotten.
const MAX_OPS: usize = 100_000;

/// Applies every operation whose time has come. Returns whether anything changed.
pub(crate) fn settle(st: &mut State, lro_ms: i64) -> bool {
    let now = now_ms();
    let mut changed = false;
    while let Some((end, id)) = st.pending.first().cloned() {
        if end > now {
            break;
        }
        st.pending.remove(&(end, id.clone()));
        changed = true;
        let Some(op) = st.ops.get_mut(&id) else {
            continue;
        };
        op.applied = true;
        let op = op.clone();
        let current = st
            .resources
            .get(&op.resource_key)
            .is_some_and(|r| r.op.as_deref() == Some(op.id.as_str()));
        if !current {
            continue;
        }
        match (op.kind, &op.fail) {
            (OpKind::Delete, None) => remove_resource(st, &op.resource_key),
            (_, Some(_)) => {
                if let Some(mut r) = st.resources.edit(&op.resource_key) {
                    r.state = "Failed".into();
                    r.op = None;
                }
            }
            (OpKind::Put | OpKind::Patch, None) => {
                let boot = st
                    .resources
                    .get(&op.resource_key)
                    .filter(|r| r.rtype == "Microsoft.Compute/virtualMachineScaleSets")
                    .map(|r| compute::compute_boot(st, r, op.end_ms(), lro_ms));
                if let Some(mut r) = st.resources.edit(&op.resource_key) {
                    r.state = "Succeeded".into();
                    r.op = None;
                    if boot.is_some() {
                        r.boot = boot;
                    }
                }
            }
        }
    }
    changed
}

/// Starts an operation on `key` and records it as the resource's current one.
pub(crate) fn start_op(
    sim: &Sim,
    st: &mut State,
    kind: OpKind,
    key: &str,
    fail: Option<(u16, String, String)>,
) -> String {
    if st.ops.len() > MAX_OPS {
        // Forget finished operations older than an hour (long benchmark runs).
        let horizon = now_ms() - 3_600_000;
        st.ops.retain(|_, o| !o.applied || o.end_ms() > horizon);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let op = Operation {
        id: id.clone(),
        kind,
        resource_key: key.to_string(),
        start_ms: now_ms(),
        duration_ms: sim.lro_ms() as i64,
        fail,
        applied: false,
    };
    st.pending.insert((op.end_ms(), id.clone()));
    st.ops.insert(id.clone(), op);
    if let Some(mut r) = st.resources.edit(key) {
        r.op = Some(id.clone());
    }
    id
}

pub(crate) fn op_urls(ctx: &Ctx, ns: &str, loc: &str, op: &str, version: &str) -> (String, String) {
    let loc = loc.replace(' ', "").to_ascii_lowercase();
    let loc = if loc.is_empty() { "global".into() } else { loc };
    let base = format!(
        "{}/subscriptions/{SUBSCRIPTION_ID}/providers/{ns}/locations/{loc}",
        ctx.base
    );
    (
        format!("{base}/operations/{op}?api-version={version}"),
        format!("{base}/operationResults/{op}?api-version={version}"),
    )
}

pub(crate) fn lro_headers(
    sim: &Sim,
    resp: &mut Response,
    async_url: Option<&str>,
    location: Option<&str>,
) {
    if let Some(u) = async_url {
        set_header(resp, "azure-asyncoperation", u);
    }
    if let Some(u) = location {
        set_header(resp, "location", u);
    }
    set_header(
        resp,
        "retry-after",
        &retry_after_secs(sim.lro_ms()).to_string(),
    );
}

pub(crate) fn operation(
    sim: &Sim,
    ctx: &Ctx,
    ns: &str,
    loc: &str,
    id: &str,
    results: bool,
    version: &str,
) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    let st = lock(&sim.inner.state);
    let Some(op) = st.ops.get(id).cloned() else {
        return Err(arm_error(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            &format!("The operation '{id}' could not be found."),
        ));
    };
    let now = now_ms();
    let done = op.done(now);
    if !results {
        let status = match (&op.fail, done) {
            (_, false) => "InProgress",
            (Some(_), true) => "Failed",
            (None, true) => "Succeeded",
        };
        let mut body = json!({
            "id": format!("/subscriptions/{SUBSCRIPTION_ID}/providers/{ns}/locations/{loc}/operations/{id}"),
            "name": id,
            "status": status,
            "startTime": rfc3339(op.start_ms),
        });
        if done {
            body["endTime"] = json!(rfc3339(op.end_ms()));
            body["percentComplete"] = json!(100);
        }
        if let (Some((_, code, message)), true) = (&op.fail, done) {
            body["error"] = json!({"code": code, "message": message});
        }
        let mut resp = json_response(StatusCode::OK, &body);
        if !done {
            set_header(
                &mut resp,
                "retry-after",
                &retry_after_secs(sim.lro_ms()).to_string(),
            );
        }
        return Ok(resp);
    }
    if !done {
        let (_, location) = op_urls(ctx, ns, loc, id, version);
        let mut resp = empty(StatusCode::ACCEPTED);
        lro_headers(sim, &mut resp, None, Some(&location));
        return Ok(resp);
    }
    if let Some((status, code, message)) = &op.fail {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(arm_error(status, code, message));
    }
    match op.kind {
        OpKind::Delete => Ok(empty(StatusCode::NO_CONTENT)),
        OpKind::Put | OpKind::Patch => match st.resources.get(&op.resource_key) {
            Some(r) => Ok(json_response(StatusCode::OK, &model::render(r))),
            None => Ok(empty(StatusCode::NO_CONTENT)),
        },
    }
}

/// Removes a resource; a group takes everything in it, an account its blob containers.
pub(crate) fn remove_resource(st: &mut State, key: &str) {
    let removed = st.resources.remove(key);
    if let Some(r) = removed
        .as_ref()
        .filter(|r| r.rtype == "Microsoft.Compute/virtualMachineScaleSets")
    {
        st.deleted_scale_sets.insert(r.name.to_ascii_lowercase());
    }
    if let Some(r) = removed.filter(|r| r.rtype == RG_TYPE) {
        let prefix = format!("{}/", r.id.to_ascii_lowercase());
        st.resources.retain(|k, _| !k.starts_with(&prefix));
    }
    // Blob containers go with their storage account.
    let accounts: std::collections::HashSet<String> = st
        .resources
        .values()
        .filter(|r| r.rtype == "Microsoft.Storage/storageAccounts")
        .map(|r| r.name.to_ascii_lowercase())
        .collect();
    st.containers
        .retain(|k, _| accounts.contains(k.split('/').next().unwrap_or("")));
}
