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

/// Forgets finished operations older than an hour once more than `max` are
/// remembered (long benchmark runs). When too few are that old, the next try
/// waits until a tenth of `max` more have started: a run past the limit
/// within the hour would otherwise walk every operation on each start.
fn forget_old_ops(st: &mut State, max: usize, now: i64) {
    if st.ops.len() <= max.max(st.ops_forget_at) {
        return;
    }
    let horizon = now - 3_600_000;
    st.ops.retain(|_, o| !o.applied || o.end_ms() > horizon);
    st.ops_forget_at = st.ops.len() + max / 10;
}

/// Starts an operation on `key` and records it as the resource's current one.
pub(crate) fn start_op(
    sim: &Sim,
    st: &mut State,
    kind: OpKind,
    key: &str,
    fail: Option<(u16, String, String)>,
) -> String {
    forget_old_ops(st, MAX_OPS, now_ms());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(st: &mut State, id: &str, start_ms: i64) {
        st.ops.insert(
            id.into(),
            Operation {
                id: id.into(),
                kind: OpKind::Put,
                resource_key: "/r".into(),
                start_ms,
                duration_ms: 0,
                fail: None,
                applied: true,
            },
        );
    }

    #[test]
    fn old_finished_operations_are_forgotten_and_a_failed_try_waits_for_a_tenth_more() {
        let now = 10_000_000;
        let mut st = State::fresh();
        for i in 0..11 {
            finished(&mut st, &format!("young-{i}"), now);
        }
        forget_old_ops(&mut st, 10, now);
        assert_eq!(st.ops.len(), 11, "none is an hour old");
        // Now they are, but the next try waits until one more has started.
        let later = now + 3_600_001;
        forget_old_ops(&mut st, 10, later);
        assert_eq!(st.ops.len(), 11);
        finished(&mut st, "new-a", later);
        forget_old_ops(&mut st, 10, later);
        assert_eq!(st.ops.len(), 12);
        finished(&mut st, "new-b", later);
        forget_old_ops(&mut st, 10, later);
        let left: Vec<String> = st.ops.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(left, ["new-a", "new-b"]);
    }
}
