//! Child resources and actions below a resource: subnets and security rules as their own
//! endpoints (PUT/GET/DELETE, answered with the parent's operation), read-only children
//! (load balancer parts, default rules), a scale set's instance view and its VMs, and the
//! `listKeys` / `listClusterUserCredential` actions.

use super::lro::{lro_headers, op_urls, start_op};
use super::model::{self, Prep, TypeSpec};
use super::refs::{child_in, external_refs};
use super::request::{bad, parse_body, reject};
use super::resources::{in_use_error, Fault};
use super::{
    compute, containerservice, method_not_allowed, network, resource_not_found, rg_key,
    rg_not_found, storage, RA_TYPE,
};
use crate::doc::Doc;
use crate::state::OpKind;
use crate::util::{arm_error, empty, json_response, Ctx};
use crate::{lock, Sim};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};

/// Child collections that are writable endpoints of their own.
const WRITABLE: &[(&str, &str)] = &[
    ("virtualNetworks", "subnets"),
    ("networkSecurityGroups", "securityRules"),
];

fn child_not_found(parent: &str, coll: &str, child: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("Resource {parent}/{coll}/{child} not found."),
    )
}

/// Serves everything below `…/{type}/{name}/`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sub_resource(
    sim: &Sim,
    ctx: &Ctx,
    rg: &str,
    spec: &'static TypeSpec,
    name: &str,
    key: &str,
    sub: &[String],
    version: &str,
    fault: Fault,
) -> Result<Response, Response> {
    {
        let st = lock(&sim.inner.state);
        if !st.resources.contains_key(&rg_key(rg)) {
            return Err(rg_not_found(rg));
        }
        if !st.resources.contains_key(key) {
            return Err(resource_not_found(spec, name, rg));
        }
    }
    let first = sub[0].to_ascii_lowercase();
    let coll = spec
        .children
        .iter()
        .find(|c| c.eq_ignore_ascii_case(&sub[0]))
        .copied();
    match (sub.len(), coll) {
        (1, Some(coll)) => list_children(sim, ctx, key, coll),
        (2, Some(coll)) => {
            let writable = WRITABLE.contains(&(spec.ty, coll));
            match ctx.method {
                Method::GET => get_child(sim, key, coll, &sub[1]),
                Method::PUT | Method::DELETE if writable => {
                    write_child(sim, ctx, spec, key, coll, &sub[1], version, fault)
                }
                _ => Err(method_not_allowed(ctx)),
            }
        }
        (3, Some("virtualMachines")) if sub[2].eq_ignore_ascii_case("instanceView") => {
            if ctx.method != Method::GET {
                return Err(method_not_allowed(ctx));
            }
            let st = lock(&sim.inner.state);
            let r = st
                .resources
                .get(key)
                .ok_or_else(|| resource_not_found(spec, name, rg))?;
            let cap = r
                .body
                .pointer("/sku/capacity")
                .and_then(Doc::as_u64)
                .unwrap_or(0);
            match sub[1].parse::<u64>() {
                Ok(i) if i < cap => {
                    let mut view = compute::vm_instance_view(r, i);
                    drop(st);
                    crate::kube::overlay_instance_view(sim, key, i, &mut view);
                    Ok(json_response(StatusCode::OK, &view))
                }
                _ => Err(child_not_found(&r.id, "virtualMachines", &sub[1])),
            }
        }
        (1, None) => action(sim, ctx, rg, spec, key, &first),
        _ => Err(arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            &format!(
                "'{}' has no action or child '{}'.",
                spec.full(),
                sub.join("/")
            ),
        )),
    }
}

fn action(
    sim: &Sim,
    ctx: &Ctx,
    rg: &str,
    spec: &TypeSpec,
    key: &str,
    what: &str,
) -> Result<Response, Response> {
    let st = lock(&sim.inner.state);
    let Some(r) = st.resources.get(key) else {
        return Err(empty(StatusCode::NOT_FOUND));
    };
    match (ctx.method.clone(), spec.ty, what) {
        (Method::GET, "virtualMachineScaleSets", "instanceview") => {
            Ok(json_response(StatusCode::OK, &compute::instance_view(r)))
        }
        (Method::POST, "storageAccounts", "listkeys") => {
            Ok(json_response(StatusCode::OK, &storage::list_keys(r)))
        }
        (Method::POST, "managedClusters", "listclusterusercredential") => Ok(json_response(
            StatusCode::OK,
            &containerservice::user_credential(r, rg),
        )),
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

/// A child element as its own resource; while the parent's operation runs, the child
/// reports the parent's provisioning state.
fn child_view(item: &Value, parent_state: &str) -> Value {
    let mut out = item.clone();
    if parent_state != "Succeeded" {
        if let Some(p) = out.get_mut("properties").and_then(Value::as_object_mut) {
            p.insert("provisioningState".into(), json!(parent_state));
        }
    }
    out
}

fn list_children(sim: &Sim, ctx: &Ctx, key: &str, coll: &str) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    let st = lock(&sim.inner.state);
    let Some(r) = st.resources.get(key) else {
        return Err(empty(StatusCode::NOT_FOUND));
    };
    let value: Vec<Value> = if coll == "virtualMachines" {
        compute::vms(r)
    } else {
        // As the parent reads: children the simulator renders (an NSG's
        // default rules) are there too.
        crate::model::render(r)
            .pointer(&format!("/properties/{coll}"))
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|i| child_view(i, &r.state)).collect())
            .unwrap_or_default()
    };
    Ok(json_response(StatusCode::OK, &json!({"value": value})))
}

fn get_child(sim: &Sim, key: &str, coll: &str, child: &str) -> Result<Response, Response> {
    let st = lock(&sim.inner.state);
    let Some(r) = st.resources.get(key) else {
        return Err(empty(StatusCode::NOT_FOUND));
    };
    if coll == "virtualMachines" {
        return compute::vms(r)
            .into_iter()
            .find(|v| v["instanceId"] == json!(child))
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(|| child_not_found(&r.id, coll, child));
    }
    let body = crate::model::render(r);
    let props = body.get("properties").cloned().unwrap_or(json!({}));
    let item = child_in(&props, coll, child).ok_or_else(|| child_not_found(&r.id, coll, child))?;
    Ok(json_response(StatusCode::OK, &child_view(item, &r.state)))
}

/// PUT or DELETE of a subnet or security rule: the parent is rewritten with the child
/// added, replaced or removed, validated as a whole, and updated by one operation whose
/// URLs the answer carries.
#[allow(clippy::too_many_arguments)]
fn write_child(
    sim: &Sim,
    ctx: &Ctx,
    spec: &'static TypeSpec,
    key: &str,
    coll: &str,
    child: &str,
    version: &str,
    fault: Fault,
) -> Result<Response, Response> {
    let put = ctx.method == Method::PUT;
    let item = if put { Some(parse_body(ctx)?) } else { None };
    let mut st = lock(&sim.inner.state);
    let Some(parent) = st.resources.get(key).cloned() else {
        return Err(empty(StatusCode::NOT_FOUND));
    };
    if parent.state == "Deleting" {
        return Err(arm_error(
            StatusCode::CONFLICT,
            "AnotherOperationInProgress",
            &format!(
                "Operation on resource {} is not allowed because the resource is being deleted.",
                parent.id
            ),
        ));
    }
    let child_id = format!("{}/{coll}/{child}", parent.id);
    let existed = parent
        .body
        .get("properties")
        .and_then(|p| child_in(p, coll, child))
        .is_some();
    let mut body = parent.body.to_value();
    if let Some(item) = &item {
        if !model::valid_name(model::NameRule::Network80, child) {
            return Err(bad(
                "InvalidResourceName",
                &format!("Resource name '{child}' in {coll} is invalid."),
            ));
        }
        let mut named = item.clone();
        named["name"] = json!(child);
        match coll {
            "securityRules" => network::validate_security_rule(child, &named).map_err(reject)?,
            _ => network::validate_subnet(
                &parent.name,
                child,
                &named,
                &network::vnet_space(&body),
                &network::other_subnets(&body, child),
            )
            .map_err(reject)?,
        }
    } else {
        if !existed {
            return Ok(empty(StatusCode::NO_CONTENT));
        }
        let own = child_id.to_ascii_lowercase();
        for other in st.resources.values() {
            if other.id.eq_ignore_ascii_case(&parent.id) || other.rtype == RA_TYPE {
                continue;
            }
            if external_refs(&other.id, &other.body).iter().any(|r| {
                r.eq_ignore_ascii_case(&own)
                    || r.to_ascii_lowercase().starts_with(&format!("{own}/"))
            }) {
                return Err(in_use_error(&parent, &child_id, &other.id));
            }
        }
    }
    let items = body
        .pointer_mut(&format!("/properties/{coll}"))
        .and_then(Value::as_array_mut);
    let mut list: Vec<Value> = items.map(std::mem::take).unwrap_or_default();
    list.retain(|i| {
        !i.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.eq_ignore_ascii_case(child))
    });
    if let Some(item) = item {
        let mut new = json!({"name": child});
        if let Some(p) = item.get("properties") {
            new["properties"] = p.clone();
        }
        list.push(new);
    }
    model::props(&mut body).insert(coll.to_string(), Value::Array(list));
    let prep = Prep {
        st: &st,
        spec,
        id: &parent.id,
        name: &parent.name,
        existing: Some(&parent),
        base: &ctx.base,
        config: &sim.inner.config,
    };
    model::prepare(&prep, &mut body).map_err(reject)?;
    let loc = body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let op = start_op(sim, &mut st, OpKind::Put, key, fault);
    let view = body
        .get("properties")
        .and_then(|p| child_in(p, coll, child))
        .map(|i| child_view(i, "Updating"));
    let out = match st.resources.edit(key) {
        Some(mut r) => {
            r.body = body.into();
            r.state = "Updating".into();
            r.etag = uuid::Uuid::new_v4().to_string();
            view
        }
        None => None,
    };
    drop(st);
    sim.persist_now();
    let (async_url, location) = op_urls(ctx, spec.ns, &loc, &op, version);
    let mut resp = match out {
        Some(v) => json_response(
            if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            &v,
        ),
        None => empty(StatusCode::ACCEPTED),
    };
    let loc_header = if put { None } else { Some(location.as_str()) };
    lro_headers(sim, &mut resp, Some(&async_url), loc_header);
    Ok(resp)
}
