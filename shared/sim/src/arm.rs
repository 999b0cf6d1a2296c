//! The ARM surface: resource groups, provider resources, role assignments, tag queries,
//! long-running operations and VMSS instance views.
//!
//! Handlers return `Result<Response, Response>`: the error is the finished ARM error
//! response, produced once per request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use crate::model::{self, TypeSpec};
use crate::state::{Boot, OpKind, Operation, Resource, State};
use crate::util::{
    arm_error, empty, json_response, now_ms, parse_tag_filter, retry_after_secs, rfc3339,
    set_header, tags_match, tags_of, Ctx,
};
use crate::{lock, Sim, SUBSCRIPTION_ID};
use axum::response::Response;
use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{json, Value};

const RG_TYPE: &str = "Microsoft.Resources/resourceGroups";
const RA_TYPE: &str = "Microsoft.Authorization/roleAssignments";
const RA_VERSIONS: &[&str] = &["2022-04-01"];
/// Above this many remembered operations, old finished ones are forgotten.
const MAX_OPS: usize = 100_000;

/// A parsed ARM path.
enum ArmPath {
    Subscription,
    ResourceGroups,
    ResourceGroup(String),
    Resources(Option<String>),
    Operation {
        ns: String,
        loc: String,
        id: String,
        results: bool,
    },
    RoleAssignment {
        scope: String,
        name: String,
    },
    Resource {
        rg: String,
        spec: &'static TypeSpec,
        name: String,
        /// `(child collection, child name)` or `(action, "")`.
        sub: Option<(String, String)>,
    },
}

fn not_found_route(ctx: &Ctx) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        &format!(
            "The resource type could not be found for path '{}'.",
            ctx.path
        ),
    )
}

fn parse(ctx: &Ctx) -> Result<ArmPath, Response> {
    let s = &ctx.segs;
    let lc = |i: usize| ctx.seg_lc(i);
    if s.len() < 2 || lc(0) != "subscriptions" {
        return Err(not_found_route(ctx));
    }
    if !s[1].eq_ignore_ascii_case(SUBSCRIPTION_ID) {
        return Err(arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            &format!("The subscription '{}' could not be found.", s[1]),
        ));
    }
    // Role assignments at any scope.
    for i in 2..s.len() {
        if lc(i) == "providers"
            && lc(i + 1) == "microsoft.authorization"
            && lc(i + 2) == "roleassignments"
            && s.len() == i + 4
        {
            return Ok(ArmPath::RoleAssignment {
                scope: format!("/{}", s[..i].join("/")),
                name: s[i + 3].clone(),
            });
        }
    }
    match (s.len(), lc(2).as_str()) {
        (2, _) => Ok(ArmPath::Subscription),
        (3, "resourcegroups") => Ok(ArmPath::ResourceGroups),
        (3, "resources") => Ok(ArmPath::Resources(None)),
        (4, "resourcegroups") => Ok(ArmPath::ResourceGroup(s[3].clone())),
        (5, "resourcegroups") if lc(4) == "resources" => Ok(ArmPath::Resources(Some(s[3].clone()))),
        (8, "providers")
            if lc(4) == "locations"
                && matches!(lc(6).as_str(), "operations" | "operationresults") =>
        {
            Ok(ArmPath::Operation {
                ns: s[3].clone(),
                loc: s[5].clone(),
                id: s[7].clone(),
                results: lc(6) == "operationresults",
            })
        }
        (n, "resourcegroups") if (8..=10).contains(&n) && lc(4) == "providers" => {
            let Some(spec) = model::spec(&s[5], &s[6]) else {
                return Err(arm_error(
                    StatusCode::BAD_REQUEST,
                    "NoRegisteredProviderFound",
                    &format!(
                        "No registered resource provider found for location and resource type '{}/{}'.",
                        s[5], s[6]
                    ),
                ));
            };
            let sub = match n {
                8 => None,
                9 => Some((s[8].clone(), String::new())),
                _ => Some((s[8].clone(), s[9].clone())),
            };
            Ok(ArmPath::Resource {
                rg: s[3].clone(),
                spec,
                name: s[7].clone(),
                sub,
            })
        }
        _ => Err(not_found_route(ctx)),
    }
}

/// The (resource type, name) a request targets, for fault matching.
pub(crate) fn classify(ctx: &Ctx) -> (String, String) {
    match parse(ctx) {
        Ok(ArmPath::Subscription) => ("Microsoft.Resources/subscriptions".into(), String::new()),
        Ok(ArmPath::ResourceGroups) => (RG_TYPE.into(), String::new()),
        Ok(ArmPath::ResourceGroup(rg)) => (RG_TYPE.into(), rg),
        Ok(ArmPath::Resources(_)) => ("Microsoft.Resources/resources".into(), String::new()),
        Ok(ArmPath::Operation { ns, id, .. }) => (format!("{ns}/locations/operations"), id),
        Ok(ArmPath::RoleAssignment { name, .. }) => (RA_TYPE.into(), name),
        Ok(ArmPath::Resource {
            spec, name, sub, ..
        }) => match sub {
            Some((child, cname)) if !cname.is_empty() => {
                (format!("{}/{}", spec.full(), child), cname)
            }
            Some((action, _)) if action.eq_ignore_ascii_case("instanceView") => {
                (format!("{}/instanceView", spec.full()), name)
            }
            _ => (spec.full(), name),
        },
        Err(_) => (String::new(), String::new()),
    }
}

fn rg_key(rg: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION_ID}/resourcegroups/{rg}").to_ascii_lowercase()
}

fn rg_id(rg: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{rg}")
}

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
            (OpKind::Delete, None) => {
                let removed = st.resources.remove(&op.resource_key);
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
            (_, Some(_)) => {
                if let Some(r) = st.resources.get_mut(&op.resource_key) {
                    r.state = "Failed".into();
                    r.op = None;
                }
            }
            (OpKind::Put | OpKind::Patch, None) => {
                let boot = st
                    .resources
                    .get(&op.resource_key)
                    .filter(|r| r.rtype == "Microsoft.Compute/virtualMachineScaleSets")
                    .map(|r| compute_boot(st, r, op.end_ms(), lro_ms));
                if let Some(r) = st.resources.get_mut(&op.resource_key) {
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

/// Decides how the instances of a VMSS boot after its operation completed at `done_ms`:
/// each extension's script URLs are fetched from the blob store with the given key.
fn compute_boot(st: &State, r: &Resource, done_ms: i64, lro_ms: i64) -> Boot {
    let target = r
        .body
        .pointer("/sku/capacity")
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32;
    let booted = match &r.boot {
        Some(b) if done_ms >= b.ready_at_ms => b.target,
        Some(b) => b.booted,
        None => 0,
    }
    .min(target);
    let mut extensions = Vec::new();
    if let Some(Value::Array(exts)) = r
        .body
        .pointer("/properties/virtualMachineProfile/extensionProfile/extensions")
    {
        for e in exts {
            let name = e
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("extension")
                .to_string();
            let Some(p) = e.get("properties") else {
                extensions.push((name, None));
                continue;
            };
            let mut error = None;
            let empty = json!({});
            let prot = p.get("protectedSettings").unwrap_or(&empty);
            let public = p.get("settings").unwrap_or(&empty);
            let uris = prot
                .get("fileUris")
                .or_else(|| public.get("fileUris"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for u in uris {
                let u = u.as_str().unwrap_or("");
                if let Err(e) = crate::blob::fetch_for_vm(st, prot, u) {
                    error = Some(e);
                    break;
                }
            }
            extensions.push((name, error));
        }
    }
    Boot {
        booted,
        target,
        ready_at_ms: done_ms + lro_ms,
        extensions,
    }
}

fn settle_and_persist(sim: &Sim) {
    let changed = {
        let mut st = lock(&sim.inner.state);
        settle(&mut st, sim.lro_ms() as i64)
    };
    if changed {
        sim.persist_now();
    }
}

fn check_version(ctx: &Ctx, allowed: &[&str], what: &str) -> Result<String, Response> {
    let Some(v) = ctx.q("api-version") else {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    if !allowed.is_empty() && !allowed.contains(&v) {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            if what == RG_TYPE {
                "InvalidApiVersionParameter"
            } else {
                "NoRegisteredProviderFound"
            },
            &format!(
                "The api-version '{v}' is not supported for '{what}'. The supported api-versions are '{}'.",
                allowed.join(", ")
            ),
        ));
    }
    Ok(v.to_string())
}

fn parse_body(ctx: &Ctx) -> Result<Value, Response> {
    let v: Value = serde_json::from_slice(&ctx.body).map_err(|e| {
        arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            &format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })?;
    if !v.is_object() {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content must be a JSON object.",
        ));
    }
    Ok(v)
}

fn bad(code: &str, message: &str) -> Response {
    arm_error(StatusCode::BAD_REQUEST, code, message)
}

/// Handles one authenticated, unthrottled ARM request.
pub(crate) fn handle(sim: &Sim, ctx: &Ctx, fault: Option<(u16, String, String)>) -> Response {
    let path = match parse(ctx) {
        Ok(p) => p,
        Err(r) => return r,
    };
    settle_and_persist(sim);
    let result = match path {
        ArmPath::Subscription => check_version(ctx, model::RESOURCES_VERSIONS, RG_TYPE).map(|_| {
            json_response(
                StatusCode::OK,
                &json!({
                    "id": format!("/subscriptions/{SUBSCRIPTION_ID}"),
                    "subscriptionId": SUBSCRIPTION_ID,
                    "tenantId": crate::TENANT_ID,
                    "displayName": "flotilla simulator",
                    "state": "Enabled",
                }),
            )
        }),
        ArmPath::ResourceGroups => check_version(ctx, model::RESOURCES_VERSIONS, RG_TYPE)
            .and_then(|_| list(sim, ctx, None, true)),
        ArmPath::Resources(rg) => check_version(ctx, model::RESOURCES_VERSIONS, RG_TYPE)
            .and_then(|_| list(sim, ctx, rg, false)),
        ArmPath::ResourceGroup(rg) => check_version(ctx, model::RESOURCES_VERSIONS, RG_TYPE)
            .and_then(|v| resource_group(sim, ctx, &rg, &v, fault)),
        ArmPath::Operation {
            ns,
            loc,
            id,
            results,
        } => check_version(ctx, &[], "operations")
            .and_then(|v| operation(sim, ctx, &ns, &loc, &id, results, &v)),
        ArmPath::RoleAssignment { scope, name } => check_version(ctx, RA_VERSIONS, RA_TYPE)
            .and_then(|_| role_assignment(sim, ctx, &scope, &name)),
        ArmPath::Resource {
            rg,
            spec,
            name,
            sub,
        } => check_version(ctx, spec.versions, &spec.full())
            .and_then(|v| resource(sim, ctx, &rg, spec, &name, sub, &v, fault)),
    };
    result.unwrap_or_else(|r| r)
}

fn method_not_allowed(ctx: &Ctx) -> Response {
    arm_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!(
            "The method '{}' is not allowed for '{}'.",
            ctx.method, ctx.path
        ),
    )
}

fn list(sim: &Sim, ctx: &Ctx, rg: Option<String>, groups: bool) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    let filter = match ctx.q("$filter") {
        None => None,
        Some(f) => Some(parse_tag_filter(f).ok_or_else(|| {
            bad(
                "InvalidFilterInQueryString",
                &format!("Invalid $filter '{f}': only \"tagName eq 'k' [and tagValue eq 'v']\" is supported."),
            )
        })?),
    };
    let expand_created = ctx.q("$expand").is_some_and(|e| {
        e.split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("createdTime"))
    });
    let st = lock(&sim.inner.state);
    if let Some(rg) = &rg {
        if !st.resources.contains_key(&rg_key(rg)) {
            return Err(rg_not_found(rg));
        }
    }
    let rg_lc = rg.as_ref().map(|r| r.to_ascii_lowercase());
    let mut value = Vec::new();
    for r in st.resources.values() {
        let is_rg = r.rtype == RG_TYPE;
        if groups != is_rg || r.rtype == RA_TYPE {
            continue;
        }
        if let Some(want) = &rg_lc {
            if &r.rg != want {
                continue;
            }
        }
        let tags = tags_of(&r.body);
        if let Some((name, val)) = &filter {
            if !tags_match(&tags, name, val.as_deref()) {
                continue;
            }
        }
        let mut item = json!({
            "id": r.id,
            "name": r.name,
            "type": r.rtype,
            "location": r.body.get("location").cloned().unwrap_or(Value::Null),
        });
        if is_rg {
            item["properties"] = json!({"provisioningState": r.state});
        }
        for k in ["sku", "kind"] {
            if let Some(v) = r.body.get(k) {
                item[k] = v.clone();
            }
        }
        if filter.is_none() && !tags.is_empty() {
            item["tags"] = json!(tags);
        }
        if expand_created {
            item["createdTime"] = json!(rfc3339(r.created_ms));
        }
        value.push(item);
    }
    Ok(json_response(StatusCode::OK, &json!({"value": value})))
}

fn rg_not_found(rg: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceGroupNotFound",
        &format!("Resource group '{rg}' could not be found."),
    )
}

fn render_rg(r: &Resource) -> Value {
    let mut out = json!({
        "id": r.id,
        "name": r.name,
        "type": RG_TYPE,
        "location": r.body.get("location").cloned().unwrap_or(Value::Null),
        "properties": {"provisioningState": r.state},
    });
    if let Some(t) = r.body.get("tags") {
        out["tags"] = t.clone();
    }
    if let Some(m) = r.body.get("managedBy") {
        out["managedBy"] = m.clone();
    }
    out
}

/// Starts an operation on `key` and records it as the resource's current one.
fn start_op(
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
    if let Some(r) = st.resources.get_mut(key) {
        r.op = Some(id.clone());
    }
    id
}

fn op_urls(ctx: &Ctx, ns: &str, loc: &str, op: &str, version: &str) -> (String, String) {
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

fn lro_headers(sim: &Sim, resp: &mut Response, async_url: Option<&str>, location: Option<&str>) {
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

fn resource_group(
    sim: &Sim,
    ctx: &Ctx,
    rg: &str,
    version: &str,
    fault: Option<(u16, String, String)>,
) -> Result<Response, Response> {
    let key = rg_key(rg);
    match ctx.method {
        Method::GET | Method::HEAD => {
            let st = lock(&sim.inner.state);
            let r = st.resources.get(&key).ok_or_else(|| rg_not_found(rg))?;
            if ctx.method == Method::HEAD {
                return Ok(empty(StatusCode::NO_CONTENT));
            }
            Ok(json_response(StatusCode::OK, &render_rg(r)))
        }
        Method::PUT => {
            let body = parse_body(ctx)?;
            if !model::valid_name(model::NameRule::ResourceGroup, rg) {
                return Err(bad(
                    "InvalidResourceGroupName",
                    &format!("Resource group name '{rg}' is invalid. It can include alphanumeric, underscore, parentheses, hyphen, period (except at end), and Unicode characters that match the allowed characters."),
                ));
            }
            let Some(loc) = body
                .get("location")
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                return Err(bad(
                    "LocationRequired",
                    "The location property is required for this definition.",
                ));
            };
            let mut st = lock(&sim.inner.state);
            let existed = match st.resources.get(&key) {
                Some(r) if r.state == "Deleting" => {
                    return Err(arm_error(
                        StatusCode::CONFLICT,
                        "ResourceGroupBeingDeleted",
                        &format!("The resource group '{rg}' is in deprovisioning state and cannot perform this operation."),
                    ))
                }
                Some(r) => {
                    let old_loc = r.body.get("location").and_then(Value::as_str).unwrap_or("");
                    if !old_loc.eq_ignore_ascii_case(&loc) {
                        return Err(arm_error(
                            StatusCode::CONFLICT,
                            "InvalidResourceGroupLocation",
                            &format!("Invalid resource group location '{loc}'. The Resource group already exists in location '{old_loc}'."),
                        ));
                    }
                    true
                }
                None => false,
            };
            let id = st
                .resources
                .get(&key)
                .map(|r| r.id.clone())
                .unwrap_or_else(|| rg_id(rg));
            let name = id.rsplit('/').next().unwrap_or(rg).to_string();
            let res = Resource {
                id,
                rtype: RG_TYPE.into(),
                name,
                rg: rg.to_ascii_lowercase(),
                body: json!({
                    "location": loc,
                    "tags": body.get("tags").cloned().unwrap_or(json!({})),
                    "managedBy": body.get("managedBy").cloned().unwrap_or(Value::Null),
                }),
                state: "Succeeded".into(),
                op: None,
                etag: uuid::Uuid::new_v4().to_string(),
                keys: vec![],
                boot: None,
                created_ms: st.resources.get(&key).map_or_else(now_ms, |r| r.created_ms),
            };
            let mut out = render_rg(&res);
            if out.get("managedBy").is_some_and(Value::is_null) {
                if let Some(o) = out.as_object_mut() {
                    o.remove("managedBy");
                }
            }
            st.resources.insert(key, res);
            drop(st);
            sim.persist_now();
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(status, &out))
        }
        Method::DELETE => {
            let mut st = lock(&sim.inner.state);
            let Some(r) = st.resources.get(&key) else {
                return Ok(empty(StatusCode::NO_CONTENT));
            };
            let loc = r
                .body
                .get("location")
                .and_then(Value::as_str)
                .unwrap_or("global")
                .to_string();
            let op = start_op(sim, &mut st, OpKind::Delete, &key, fault);
            if let Some(r) = st.resources.get_mut(&key) {
                r.state = "Deleting".into();
            }
            drop(st);
            sim.persist_now();
            let (_, location) = op_urls(ctx, "Microsoft.Resources", &loc, &op, version);
            let mut resp = empty(StatusCode::ACCEPTED);
            lro_headers(sim, &mut resp, None, Some(&location));
            Ok(resp)
        }
        _ => Err(method_not_allowed(ctx)),
    }
}

fn operation(
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

fn role_assignment(sim: &Sim, ctx: &Ctx, scope: &str, name: &str) -> Result<Response, Response> {
    let id = format!("{scope}/providers/{RA_TYPE}/{name}");
    let key = id.to_ascii_lowercase();
    let not_found = || {
        arm_error(
            StatusCode::NOT_FOUND,
            "RoleAssignmentNotFound",
            &format!("The role assignment '{name}' is not found."),
        )
    };
    match ctx.method {
        Method::GET => {
            let st = lock(&sim.inner.state);
            let r = st.resources.get(&key).ok_or_else(not_found)?;
            Ok(json_response(StatusCode::OK, &r.body))
        }
        Method::DELETE => {
            let removed = lock(&sim.inner.state).resources.remove(&key);
            match removed {
                Some(r) => {
                    sim.persist_now();
                    Ok(json_response(StatusCode::OK, &r.body))
                }
                None => Ok(empty(StatusCode::NO_CONTENT)),
            }
        }
        Method::PUT => {
            let body = parse_body(ctx)?;
            if uuid::Uuid::parse_str(name).is_err() {
                return Err(bad(
                    "InvalidRoleAssignmentId",
                    &format!("The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."),
                ));
            }
            let p = body.get("properties").cloned().unwrap_or(json!({}));
            let role = p.get("roleDefinitionId").and_then(Value::as_str);
            let principal = p.get("principalId").and_then(Value::as_str);
            let (Some(role), Some(principal)) = (role, principal) else {
                return Err(bad(
                    "InvalidRequestContent",
                    "properties.roleDefinitionId and properties.principalId are required.",
                ));
            };
            if !role
                .to_ascii_lowercase()
                .contains("/providers/microsoft.authorization/roledefinitions/")
            {
                return Err(bad(
                    "InvalidRoleDefinitionId",
                    &format!("The role definition ID '{role}' is not valid."),
                ));
            }
            let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
            let mut st = lock(&sim.inner.state);
            if segs.len() >= 4 && segs[2].eq_ignore_ascii_case("resourceGroups") {
                if !st.resources.contains_key(&rg_key(segs[3])) {
                    return Err(rg_not_found(segs[3]));
                }
                if segs.len() >= 8 {
                    let res_key = format!("/{}", segs[..8].join("/")).to_ascii_lowercase();
                    if !st.resources.contains_key(&res_key) {
                        return Err(arm_error(
                            StatusCode::NOT_FOUND,
                            "ResourceNotFound",
                            &format!("The scope '{scope}' does not exist."),
                        ));
                    }
                }
            }
            let role_tail = role
                .to_ascii_lowercase()
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            let duplicate = st.resources.iter().any(|(k, r)| {
                k != &key
                    && r.rtype == RA_TYPE
                    && r.body
                        .pointer("/properties/scope")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.eq_ignore_ascii_case(scope))
                    && r.body
                        .pointer("/properties/principalId")
                        .and_then(Value::as_str)
                        == Some(principal)
                    && r.body
                        .pointer("/properties/roleDefinitionId")
                        .and_then(Value::as_str)
                        .is_some_and(|d| d.to_ascii_lowercase().ends_with(&role_tail))
            });
            if duplicate {
                return Err(arm_error(
                    StatusCode::CONFLICT,
                    "RoleAssignmentExists",
                    "The role assignment already exists.",
                ));
            }
            let now = rfc3339(now_ms());
            let existed = st.resources.get(&key).cloned();
            let created_on = existed
                .as_ref()
                .and_then(|e| e.body.pointer("/properties/createdOn").cloned())
                .unwrap_or_else(|| json!(now));
            let mut props = p.clone();
            props["scope"] = json!(scope);
            props["createdOn"] = created_on;
            props["updatedOn"] = json!(now);
            if props.get("principalType").is_none() {
                props["principalType"] = json!("ServicePrincipal");
            }
            let out = json!({
                "id": id,
                "type": RA_TYPE,
                "name": name,
                "properties": props,
            });
            let rg = if segs.len() >= 4 && segs[2].eq_ignore_ascii_case("resourceGroups") {
                segs[3].to_ascii_lowercase()
            } else {
                String::new()
            };
            st.resources.insert(
                key,
                Resource {
                    id,
                    rtype: RA_TYPE.into(),
                    name: name.to_string(),
                    rg,
                    body: out.clone(),
                    state: "Succeeded".into(),
                    op: None,
                    etag: String::new(),
                    keys: vec![],
                    boot: None,
                    created_ms: now_ms(),
                },
            );
            drop(st);
            sim.persist_now();
            let status = if existed.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(status, &out))
        }
        _ => Err(method_not_allowed(ctx)),
    }
}

fn resource_not_found(spec: &TypeSpec, name: &str, rg: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource '{}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            spec.full()
        ),
    )
}

#[allow(clippy::too_many_arguments)]
fn resource(
    sim: &Sim,
    ctx: &Ctx,
    rg: &str,
    spec: &'static TypeSpec,
    name: &str,
    sub: Option<(String, String)>,
    version: &str,
    fault: Option<(u16, String, String)>,
) -> Result<Response, Response> {
    let id = format!(
        "/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{rg}/providers/{}/{}/{name}",
        spec.ns, spec.ty
    );
    let key = id.to_ascii_lowercase();
    if let Some((what, child)) = sub {
        return sub_resource(sim, ctx, rg, spec, name, &key, &what, &child);
    }
    match ctx.method {
        Method::GET => {
            let st = lock(&sim.inner.state);
            if !st.resources.contains_key(&rg_key(rg)) {
                return Err(rg_not_found(rg));
            }
            let r = st
                .resources
                .get(&key)
                .ok_or_else(|| resource_not_found(spec, name, rg))?;
            Ok(json_response(StatusCode::OK, &model::render(r)))
        }
        Method::PUT => put_resource(sim, ctx, rg, spec, name, &id, version, fault),
        Method::PATCH => {
            let patch = parse_body(ctx)?;
            let mut st = lock(&sim.inner.state);
            if !st.resources.contains_key(&rg_key(rg)) {
                return Err(rg_not_found(rg));
            }
            let existing = st
                .resources
                .get(&key)
                .cloned()
                .ok_or_else(|| resource_not_found(spec, name, rg))?;
            let mut body = existing.body.clone();
            model::merge_patch(&mut body, &patch);
            model::prepare(
                &st,
                spec,
                &existing.id,
                &existing.name,
                &mut body,
                Some(&existing),
                &ctx.base,
            )
            .map_err(|(c, m)| bad(c, &m))?;
            let loc = body
                .get("location")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let op = start_op(sim, &mut st, OpKind::Patch, &key, fault);
            let out = match st.resources.get_mut(&key) {
                Some(r) => {
                    r.body = body;
                    r.state = "Updating".into();
                    r.etag = uuid::Uuid::new_v4().to_string();
                    model::render(r)
                }
                None => json!({}),
            };
            drop(st);
            sim.persist_now();
            let (async_url, location) = op_urls(ctx, spec.ns, &loc, &op, version);
            let mut resp = json_response(StatusCode::OK, &out);
            lro_headers(sim, &mut resp, Some(&async_url), Some(&location));
            Ok(resp)
        }
        Method::DELETE => {
            let mut st = lock(&sim.inner.state);
            let Some(r) = st.resources.get(&key).cloned() else {
                return Ok(empty(StatusCode::NO_CONTENT));
            };
            if let Some(resp) = in_use(&st, &r) {
                return Err(resp);
            }
            let loc = r
                .body
                .get("location")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let op = start_op(sim, &mut st, OpKind::Delete, &key, fault);
            if let Some(r) = st.resources.get_mut(&key) {
                r.state = "Deleting".into();
            }
            drop(st);
            sim.persist_now();
            let (async_url, location) = op_urls(ctx, spec.ns, &loc, &op, version);
            let mut resp = empty(StatusCode::ACCEPTED);
            lro_headers(sim, &mut resp, Some(&async_url), Some(&location));
            Ok(resp)
        }
        _ => Err(method_not_allowed(ctx)),
    }
}

/// The 400 Azure answers when deleting `r` while another resource references it.
fn in_use(st: &State, r: &Resource) -> Option<Response> {
    let own = r.id.to_ascii_lowercase();
    for other in st.resources.values() {
        if other.id.eq_ignore_ascii_case(&r.id) || other.rtype == RA_TYPE {
            continue;
        }
        for reference in model::external_refs(&other.id, &other.body) {
            let l = reference.to_ascii_lowercase();
            if l != own && !l.starts_with(&format!("{own}/")) {
                continue;
            }
            let (code, message) = match r.rtype.as_str() {
                "Microsoft.Network/virtualNetworks" => (
                    "InUseSubnetCannotBeDeleted",
                    format!("Subnet {} is in use by {} and cannot be deleted. In order to delete the subnet, delete all the resources within the subnet.", reference, other.id),
                ),
                "Microsoft.Network/networkSecurityGroups" => (
                    "InUseNetworkSecurityGroupCannotBeDeleted",
                    format!("Network security group {} cannot be deleted because it is in use by the following resources: {}.", r.id, other.id),
                ),
                "Microsoft.Network/publicIPAddresses" => (
                    "PublicIPAddressInUse",
                    format!("Public IP address {} can not be deleted since it is still allocated to resource {}.", r.id, other.id),
                ),
                "Microsoft.Network/loadBalancers" => (
                    "LoadBalancerInUseByVirtualMachineScaleSet",
                    format!("Cannot delete load balancer {} since its child resources {} are in use by virtual machine scale set {}.", r.id, reference, other.id),
                ),
                _ => (
                    "ResourceInUse",
                    format!("Resource {} is in use by {}.", r.id, other.id),
                ),
            };
            return Some(bad(code, &message));
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn put_resource(
    sim: &Sim,
    ctx: &Ctx,
    rg: &str,
    spec: &'static TypeSpec,
    name: &str,
    id: &str,
    version: &str,
    fault: Option<(u16, String, String)>,
) -> Result<Response, Response> {
    let mut body = parse_body(ctx)?;
    if !model::valid_name(spec.name_rule, name) {
        return Err(bad(
            "InvalidResourceName",
            &format!("Resource name {name} is invalid. The name can be up to 80 characters long. It must begin with a word character, and it must end with a word character or with '_'. The name may contain word characters or '.', '-', '_'."),
        ));
    }
    let Some(loc) = body
        .get("location")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(bad(
            "LocationRequired",
            "The location property is required for this definition.",
        ));
    };
    if let Some(t) = body.get("tags") {
        let ok = t
            .as_object()
            .is_some_and(|o| o.values().all(Value::is_string));
        if !ok {
            return Err(bad(
                "InvalidTagNameCharacters",
                "Tags must be an object of string values.",
            ));
        }
    }
    let key = id.to_ascii_lowercase();
    let mut st = lock(&sim.inner.state);
    let Some(group) = st.resources.get(&rg_key(rg)) else {
        return Err(rg_not_found(rg));
    };
    if group.state == "Deleting" {
        return Err(arm_error(
            StatusCode::CONFLICT,
            "ResourceGroupBeingDeleted",
            &format!("The resource group '{rg}' is in deprovisioning state and cannot perform this operation."),
        ));
    }
    let existing = st.resources.get(&key).cloned();
    if let Some(e) = &existing {
        if e.state == "Deleting" {
            return Err(arm_error(
                StatusCode::CONFLICT,
                "AnotherOperationInProgress",
                &format!("Operation on resource {id} is not allowed because the resource is being deleted."),
            ));
        }
    }
    let canonical_id = existing
        .as_ref()
        .map(|e| e.id.clone())
        .unwrap_or_else(|| id.to_string());
    let canonical_name = existing
        .as_ref()
        .map(|e| e.name.clone())
        .unwrap_or_else(|| name.to_string());
    model::prepare(
        &st,
        spec,
        &canonical_id,
        &canonical_name,
        &mut body,
        existing.as_ref(),
        &ctx.base,
    )
    .map_err(|(c, m)| bad(c, &m))?;
    let keys = match &existing {
        Some(e) if !e.keys.is_empty() => e.keys.clone(),
        _ if spec.ty == "storageAccounts" => model::new_keys(),
        _ => vec![],
    };
    let res = Resource {
        id: canonical_id,
        rtype: spec.full(),
        name: canonical_name,
        rg: rg.to_ascii_lowercase(),
        body,
        state: if existing.is_some() {
            "Updating"
        } else {
            "Creating"
        }
        .into(),
        op: None,
        etag: uuid::Uuid::new_v4().to_string(),
        keys,
        boot: existing.as_ref().and_then(|e| e.boot.clone()),
        created_ms: existing.as_ref().map_or_else(now_ms, |e| e.created_ms),
    };
    st.resources.insert(key.clone(), res);
    let op = start_op(sim, &mut st, OpKind::Put, &key, fault);
    let out = st
        .resources
        .get(&key)
        .map(model::render)
        .unwrap_or_default();
    drop(st);
    sim.persist_now();
    let (async_url, _) = op_urls(ctx, spec.ns, &loc, &op, version);
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = json_response(status, &out);
    lro_headers(sim, &mut resp, Some(&async_url), None);
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
fn sub_resource(
    sim: &Sim,
    ctx: &Ctx,
    rg: &str,
    spec: &'static TypeSpec,
    name: &str,
    key: &str,
    what: &str,
    child: &str,
) -> Result<Response, Response> {
    let st = lock(&sim.inner.state);
    if !st.resources.contains_key(&rg_key(rg)) {
        return Err(rg_not_found(rg));
    }
    let r = st
        .resources
        .get(key)
        .ok_or_else(|| resource_not_found(spec, name, rg))?;
    let w = what.to_ascii_lowercase();
    if !child.is_empty() {
        if ctx.method != Method::GET {
            return Err(method_not_allowed(ctx));
        }
        let Some(coll) = spec.children.iter().find(|c| c.eq_ignore_ascii_case(what)) else {
            return Err(arm_error(
                StatusCode::NOT_FOUND,
                "InvalidResourceType",
                &format!("'{}' has no child collection '{what}'.", spec.full()),
            ));
        };
        let item = r
            .body
            .pointer(&format!("/properties/{coll}"))
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter().find(|i| {
                    i.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(child))
                })
            })
            .ok_or_else(|| {
                arm_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("Resource {}/{coll}/{child} not found.", r.id),
                )
            })?;
        return Ok(json_response(StatusCode::OK, item));
    }
    match (ctx.method.clone(), spec.ty, w.as_str()) {
        (Method::GET, "virtualMachineScaleSets", "instanceview") => {
            Ok(json_response(StatusCode::OK, &instance_view(r)))
        }
        (Method::POST, "storageAccounts", "listkeys") => {
            let keys: Vec<Value> = r
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    json!({
                        "keyName": format!("key{}", i + 1),
                        "value": k,
                        "permissions": "Full",
                        "creationTime": r.body.pointer("/properties/creationTime").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!({"keys": keys})))
        }
        (Method::POST, "managedClusters", "listclusterusercredential") => {
            let fqdn = r
                .body
                .pointer("/properties/fqdn")
                .and_then(Value::as_str)
                .unwrap_or("cluster.local");
            let kubeconfig = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://{fqdn}:443\n  name: {n}\ncontexts:\n- context:\n    cluster: {n}\n    user: clusterUser_{rg}_{n}\n  name: {n}\ncurrent-context: {n}\nusers:\n- name: clusterUser_{rg}_{n}\n  user:\n    token: {t}\n",
                n = r.name,
                t = crate::util::random_token(24),
            );
            let value = base64::engine::general_purpose::STANDARD.encode(kubeconfig);
            Ok(json_response(
                StatusCode::OK,
                &json!({"kubeconfigs": [{"name": "clusterUser", "value": value}]}),
            ))
        }
        (_, _, "instanceview" | "listkeys" | "listclusterusercredential") => {
            Err(method_not_allowed(ctx))
        }
        _ => Err(arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            &format!("'{}' has no action or child '{what}'.", spec.full()),
        )),
    }
}

/// One extension's instance counts: (name, succeeded, failed, creating, failure message).
type ExtCounts = (String, u32, u32, u32, Option<String>);

/// The VMSS instance view: instance and extension status summaries derived from the boot.
fn instance_view(r: &Resource) -> Value {
    let now = now_ms();
    let capacity = r
        .body
        .pointer("/sku/capacity")
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32;
    let ext_names: Vec<String> = r
        .body
        .pointer("/properties/virtualMachineProfile/extensionProfile/extensions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    e.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("extension")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    let summary = |pairs: Vec<(&str, u32)>| -> Value {
        Value::Array(
            pairs
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(c, n)| json!({"code": c, "count": n}))
                .collect(),
        )
    };
    // (ready, creating) instances, and per extension (name, ok, failed, creating, message).
    let (ready, creating, exts): (u32, u32, Vec<ExtCounts>) = match (&r.boot, r.op.is_some()) {
        (Some(b), false) => {
            let ready = if now >= b.ready_at_ms {
                b.target
            } else {
                b.booted.min(b.target)
            };
            let creating = b.target - ready;
            let exts = b
                .extensions
                .iter()
                .map(|(n, err)| match err {
                    None => (n.clone(), ready, 0, creating, None),
                    Some(e) => (
                        n.clone(),
                        b.booted.min(ready),
                        ready - b.booted.min(ready),
                        creating,
                        Some(e.clone()),
                    ),
                })
                .collect();
            (ready, creating, exts)
        }
        (Some(b), true) => {
            let ready = if now >= b.ready_at_ms {
                b.target
            } else {
                b.booted
            };
            let ready = ready.min(capacity);
            let creating = capacity.saturating_sub(ready);
            let exts = ext_names
                .iter()
                .map(|n| (n.clone(), ready, 0, creating, None))
                .collect();
            (ready, creating, exts)
        }
        (None, _) => (
            0,
            capacity,
            ext_names
                .iter()
                .map(|n| (n.clone(), 0, 0, capacity, None))
                .collect(),
        ),
    };
    let time = rfc3339(now);
    let mut statuses = vec![];
    let failed: Vec<&ExtCounts> = exts.iter().filter(|e| e.2 > 0).collect();
    if creating > 0 {
        statuses.push(json!({"code": "ProvisioningState/creating", "level": "Info", "displayStatus": "Creating", "time": time}));
    } else if let Some(f) = failed.first() {
        statuses.push(json!({
            "code": "ProvisioningState/failed/VMExtensionProvisioningError",
            "level": "Error",
            "displayStatus": "Provisioning failed",
            "message": format!("VM has reported a failure when processing extension '{}'. Error message: \"{}\"", f.0, f.4.clone().unwrap_or_default()),
            "time": time,
        }));
    } else {
        statuses.push(json!({"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": time}));
    }
    let extensions: Vec<Value> = exts
        .iter()
        .map(|(n, ok, bad, creating, _)| {
            json!({
                "name": n,
                "statusesSummary": summary(vec![
                    ("ProvisioningState/succeeded", *ok),
                    ("ProvisioningState/failed", *bad),
                    ("ProvisioningState/creating", *creating),
                ]),
            })
        })
        .collect();
    json!({
        "virtualMachine": {"statusesSummary": summary(vec![
            ("ProvisioningState/succeeded", ready),
            ("ProvisioningState/creating", creating),
        ])},
        "extensions": extensions,
        "statuses": statuses,
        "orchestrationServices": [],
    })
}
