//! Queries: resource and group listings with tag filters, the Compute resource SKUs
//! list and core usages.

use super::request::bad;
use super::{compute, method_not_allowed, rg_key, rg_not_found, RA_TYPE, RG_TYPE};
use crate::util::{json_response, parse_tag_filter, tags_match, tags_of, Ctx};
use crate::{lock, Sim};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};

pub(crate) fn list(
    sim: &Sim,
    ctx: &Ctx,
    rg: Option<String>,
    groups: bool,
) -> Result<Response, Response> {
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
        value.push(item);
    }
    Ok(json_response(StatusCode::OK, &json!({"value": value})))
}

/// `GET [/resourceGroups/{rg}]/providers/{ns}/{type}`: the resources of one type, as
/// their GET shows them.
pub(crate) fn list_type(
    sim: &Sim,
    ctx: &Ctx,
    rg: Option<&str>,
    spec: &super::model::TypeSpec,
) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    let st = lock(&sim.inner.state);
    if let Some(rg) = rg {
        if !st.resources.contains_key(&rg_key(rg)) {
            return Err(rg_not_found(rg));
        }
    }
    let full = spec.full();
    let rg_lc = rg.map(str::to_ascii_lowercase);
    let value: Vec<Value> = st
        .resources
        .values()
        .filter(|r| r.rtype == full && rg_lc.as_ref().is_none_or(|g| &r.rg == g))
        .map(super::model::render)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"value": value})))
}

/// `GET …/providers/Microsoft.Compute/skus[?$filter=location eq 'x']`.
pub(crate) fn skus(ctx: &Ctx) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    let location = match ctx.q("$filter") {
        None => None,
        Some(f) => {
            let l = f.to_ascii_lowercase();
            let loc = l
                .strip_prefix("location eq '")
                .and_then(|r| r.strip_suffix('\''))
                .ok_or_else(|| {
                    bad(
                        "InvalidFilterInQueryString",
                        &format!("Invalid $filter '{f}': only \"location eq '{{location}}'\" is supported."),
                    )
                })?;
            Some(loc.to_string())
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &compute::skus(location.as_deref()),
    ))
}

/// `GET …/providers/Microsoft.Compute/locations/{loc}/usages`.
pub(crate) fn usages(sim: &Sim, ctx: &Ctx, location: &str) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    if super::regions::zones(location).is_none() {
        return Err(bad(
            "LocationNotAvailableForResourceType",
            &format!(
                "The provided location '{location}' is not available for resource type 'Microsoft.Compute/locations/usages'. List of available regions for the resource type is '{}'.",
                super::regions::all()
            ),
        ));
    }
    let st = lock(&sim.inner.state);
    Ok(json_response(
        StatusCode::OK,
        &compute::usages(&st, &sim.inner.config, location),
    ))
}
