//! Resource groups: synchronous create, asynchronous delete of everything inside.

use super::lro::{lro_headers, op_urls, start_op};
use super::request::{bad, parse_body};
use super::{method_not_allowed, model, rg_id, rg_key, rg_not_found, RG_TYPE};
use crate::doc::Doc;
use crate::state::{OpKind, Resource};
use crate::util::{arm_error, empty, json_response, now_ms, Ctx};
use crate::{lock, Sim};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};

fn render_rg(r: &Resource) -> Value {
    let mut out = json!({
        "id": r.id,
        "name": r.name,
        "type": RG_TYPE,
        "location": r.body.get("location").map(Doc::to_value),
        "properties": {"provisioningState": r.state},
    });
    if let Some(t) = r.body.get("tags") {
        out["tags"] = t.to_value();
    }
    if let Some(m) = r.body.get("managedBy") {
        out["managedBy"] = m.to_value();
    }
    out
}

pub(crate) fn resource_group(
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
            if super::regions::zones(&loc).is_none() {
                return Err(bad(
                    "LocationNotAvailableForResourceGroup",
                    &format!(
                        "The provided location '{loc}' is not available for resource group. List of available regions is '{}'.",
                        super::regions::all()
                    ),
                ));
            }
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
                    let old_loc = r.body.get("location").and_then(Doc::as_str).unwrap_or("");
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
                })
                .into(),
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
        Method::PATCH => {
            let patch = parse_body(ctx)?;
            let mut st = lock(&sim.inner.state);
            let mut r = st.resources.edit(&key).ok_or_else(|| rg_not_found(rg))?;
            let mut body = r.body.to_value();
            if let Some(tags) = patch.get("tags") {
                body["tags"] = tags.clone();
            }
            if let Some(m) = patch.get("managedBy") {
                body["managedBy"] = m.clone();
            }
            r.body = body.into();
            let out = render_rg(&r);
            drop(r);
            drop(st);
            sim.persist_now();
            Ok(json_response(StatusCode::OK, &out))
        }
        Method::DELETE => {
            let mut st = lock(&sim.inner.state);
            let Some(r) = st.resources.get(&key) else {
                return Ok(empty(StatusCode::NO_CONTENT));
            };
            let loc = r
                .body
                .get("location")
                .and_then(Doc::as_str)
                .unwrap_or("global")
                .to_string();
            let op = start_op(sim, &mut st, OpKind::Delete, &key, fault);
            if let Some(mut r) = st.resources.edit(&key) {
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
