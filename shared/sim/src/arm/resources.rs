//! PUT, GET, PATCH and DELETE of a provider resource, with the operation semantics of its
//! provider: Network, Compute and AKS answer writes with an asynchronous operation; Storage
//! creates with 202 + `Location` and updates and deletes synchronously.

use super::lro::{lro_headers, op_urls, remove_resource, start_op};
use super::model::{self, Prep, TypeSpec};
use super::refs::external_refs;
use super::request::{bad, parse_body, reject};
use super::{children, method_not_allowed, resource_not_found, rg_key, rg_not_found, RA_TYPE};
use crate::doc::Doc;
use crate::state::{OpKind, Resource, State};
use crate::util::{arm_error, empty, json_response, now_ms, Ctx};
use crate::{lock, Sim, SUBSCRIPTION_ID};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};

/// An injected asynchronous fault: (status, code, message).
pub(crate) type Fault = Option<(u16, String, String)>;

/// Whether the type's provider answers updates and deletes synchronously
/// (Storage; Managed Identity, which answers creates synchronously too).
fn synchronous(spec: &TypeSpec) -> bool {
    spec.ty == "storageAccounts" || fully_synchronous(spec)
}

/// Whether the provider answers a create synchronously, with the resource
/// (Managed Identity: 201 with its computed ids, no operation to poll).
fn fully_synchronous(spec: &TypeSpec) -> bool {
    spec.ty == "userAssignedIdentities"
}

/// Serves `…/providers/{ns}/{type}/{name}[/…]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resource(
    sim: &Sim,
    ctx: &Ctx,
    rg: &str,
    spec: &'static TypeSpec,
    name: &str,
    sub: Vec<String>,
    version: &str,
    fault: Fault,
) -> Result<Response, Response> {
    let id = format!(
        "/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{rg}/providers/{}/{}/{name}",
        spec.ns, spec.ty
    );
    let key = id.to_ascii_lowercase();
    if !sub.is_empty() {
        return children::sub_resource(sim, ctx, rg, spec, name, &key, &sub, version, fault);
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
        Method::PATCH => patch_resource(sim, ctx, rg, spec, name, &key, version, fault),
        Method::DELETE => delete_resource(sim, ctx, spec, &key, version, fault),
        _ => Err(method_not_allowed(ctx)),
    }
}

#[allow(clippy::too_many_arguments)]
fn patch_resource(
    sim: &Sim,
    ctx: &Ctx,
    rg: &str,
    spec: &'static TypeSpec,
    name: &str,
    key: &str,
    version: &str,
    fault: Fault,
) -> Result<Response, Response> {
    let patch = parse_body(ctx)?;
    let mut st = lock(&sim.inner.state);
    if !st.resources.contains_key(&rg_key(rg)) {
        return Err(rg_not_found(rg));
    }
    let existing = st
        .resources
        .get(key)
        .cloned()
        .ok_or_else(|| resource_not_found(spec, name, rg))?;
    if existing.state == "Deleting" {
        return Err(being_deleted(&existing.id));
    }
    let mut body = existing.body.to_value();
    model::merge_patch(&mut body, &patch);
    let prep = Prep {
        st: &st,
        spec,
        id: &existing.id,
        name: &existing.name,
        existing: Some(&existing),
        base: &ctx.base,
        config: &sim.inner.config,
    };
    model::prepare(&prep, &mut body).map_err(reject)?;
    let loc = body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if synchronous(spec) {
        let out = match st.resources.edit(key) {
            Some(mut r) => {
                r.body = body.into();
                r.state = "Succeeded".into();
                r.etag = uuid::Uuid::new_v4().to_string();
                model::render(&r)
            }
            None => json!({}),
        };
        drop(st);
        sim.persist_now();
        return Ok(json_response(StatusCode::OK, &out));
    }
    let op = start_op(sim, &mut st, OpKind::Patch, key, fault);
    let out = match st.resources.edit(key) {
        Some(mut r) => {
            r.body = body.into();
            r.state = "Updating".into();
            r.etag = uuid::Uuid::new_v4().to_string();
            model::render(&r)
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

fn delete_resource(
    sim: &Sim,
    ctx: &Ctx,
    spec: &'static TypeSpec,
    key: &str,
    version: &str,
    fault: Fault,
) -> Result<Response, Response> {
    let mut st = lock(&sim.inner.state);
    let Some(r) = st.resources.get(key).cloned() else {
        return Ok(empty(StatusCode::NO_CONTENT));
    };
    if let Some(resp) = in_use(&st, &r) {
        return Err(resp);
    }
    if synchronous(spec) {
        if let Some((status, code, message)) = fault {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT);
            return Err(arm_error(status, &code, &message));
        }
        remove_resource(&mut st, key);
        drop(st);
        sim.persist_now();
        return Ok(empty(StatusCode::OK));
    }
    let loc = r
        .body
        .get("location")
        .and_then(Doc::as_str)
        .unwrap_or("")
        .to_string();
    let op = start_op(sim, &mut st, OpKind::Delete, key, fault);
    if let Some(mut r) = st.resources.edit(key) {
        r.state = "Deleting".into();
    }
    drop(st);
    sim.persist_now();
    let (async_url, location) = op_urls(ctx, spec.ns, &loc, &op, version);
    let mut resp = empty(StatusCode::ACCEPTED);
    lro_headers(sim, &mut resp, Some(&async_url), Some(&location));
    Ok(resp)
}

fn being_deleted(id: &str) -> Response {
    arm_error(
        StatusCode::CONFLICT,
        "AnotherOperationInProgress",
        &format!(
            "Operation on resource {id} is not allowed because the resource is being deleted."
        ),
    )
}

/// The 400 Azure answers when deleting `r` while another resource references it.
pub(crate) fn in_use(st: &State, r: &Resource) -> Option<Response> {
    let own = r.id.to_ascii_lowercase();
    for other in st.resources.values() {
        if other.id.eq_ignore_ascii_case(&r.id) || other.rtype == RA_TYPE {
            continue;
        }
        for reference in external_refs(&other.id, &other.body) {
            let l = reference.to_ascii_lowercase();
            if l != own && !l.starts_with(&format!("{own}/")) {
                continue;
            }
            return Some(in_use_error(r, &reference, &other.id));
        }
    }
    None
}

/// The provider's in-use error for deleting `r` (or its child `reference`) while `user`
/// references it.
pub(crate) fn in_use_error(r: &Resource, reference: &str, user: &str) -> Response {
    let (code, message) = match r.rtype.as_str() {
        "Microsoft.Network/virtualNetworks" => (
            "InUseSubnetCannotBeDeleted",
            format!("Subnet {reference} is in use by {user} and cannot be deleted. In order to delete the subnet, delete all the resources within the subnet."),
        ),
        "Microsoft.Network/networkSecurityGroups" => (
            "InUseNetworkSecurityGroupCannotBeDeleted",
            format!("Network security group {} cannot be deleted because it is in use by the following resources: {user}.", r.id),
        ),
        "Microsoft.Network/publicIPAddresses" => (
            "PublicIPAddressInUse",
            format!("Public IP address {} can not be deleted since it is still allocated to resource {user}.", r.id),
        ),
        "Microsoft.Network/loadBalancers" => (
            "LoadBalancerInUseByVirtualMachineScaleSet",
            format!("Cannot delete load balancer {} since its child resources {reference} are in use by virtual machine scale set {user}.", r.id),
        ),
        _ => (
            "ResourceInUse",
            format!("Resource {} is in use by {user}.", r.id),
        ),
    };
    bad(code, &message)
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
    fault: Fault,
) -> Result<Response, Response> {
    let mut body = parse_body(ctx)?;
    if !model::valid_name(spec.name_rule, name) {
        if spec.ty == "storageAccounts" {
            return Err(reject(super::storage::invalid_name(name)));
        }
        return Err(bad(
            "InvalidResourceName",
            &format!("Resource name {name} is invalid. The name can be up to 80 characters long. It must begin with a word character, and it must end with a word character or with '_'. The name may contain word characters or '.', '-', '_'."),
        ));
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
            return Err(being_deleted(id));
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
    let prep = Prep {
        st: &st,
        spec,
        id: &canonical_id,
        name: &canonical_name,
        existing: existing.as_ref(),
        base: &ctx.base,
        config: &sim.inner.config,
    };
    model::prepare(&prep, &mut body).map_err(reject)?;
    let loc = body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let keys = match &existing {
        Some(e) if !e.keys.is_empty() => e.keys.clone(),
        _ if spec.ty == "storageAccounts" => super::storage::new_keys(),
        _ => vec![],
    };
    let sync_update = synchronous(spec) && (existing.is_some() || fully_synchronous(spec));
    if fully_synchronous(spec) {
        if let Some((status, code, message)) = fault {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT);
            return Err(arm_error(status, &code, &message));
        }
    }
    // The answer is rendered from `body` once the state is let go; `head`
    // is the stored resource without its model.
    let mut res = Resource {
        id: canonical_id,
        rtype: spec.full(),
        name: canonical_name,
        rg: rg.to_ascii_lowercase(),
        body: Doc::Null,
        state: match (&existing, sync_update) {
            (_, true) => "Succeeded",
            (Some(_), false) => "Updating",
            (None, _) => "Creating",
        }
        .into(),
        op: None,
        etag: uuid::Uuid::new_v4().to_string(),
        keys,
        boot: existing.as_ref().and_then(|e| e.boot.clone()),
        created_ms: existing.as_ref().map_or_else(now_ms, |e| e.created_ms),
    };
    let head = res.clone();
    res.body = Doc::from(&body);
    st.resources.insert(key.clone(), res);
    if sync_update {
        drop(st);
        let out = model::render_with(&head, body);
        sim.persist_now();
        let status = if existing.is_none() {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok(json_response(status, &out));
    }
    let op = start_op(sim, &mut st, OpKind::Put, &key, fault);
    drop(st);
    let out = model::render_with(&head, body);
    sim.persist_now();
    let (async_url, location) = op_urls(ctx, spec.ns, &loc, &op, version);
    if synchronous(spec) {
        // Storage: 202 Accepted with only a Location to poll.
        let mut resp = empty(StatusCode::ACCEPTED);
        lro_headers(sim, &mut resp, None, Some(&location));
        return Ok(resp);
    }
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = json_response(status, &out);
    lro_headers(sim, &mut resp, Some(&async_url), None);
    Ok(resp)
}
