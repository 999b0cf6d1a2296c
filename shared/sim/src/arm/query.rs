//! Queries: resource and group listings with tag filters, the Compute resource SKUs
//! list and core usages.

use super::request::bad;
use super::{compute, method_not_allowed, rg_key, rg_not_found, RA_TYPE, RG_TYPE};
use crate::doc::Doc;
use crate::state::contains_ignoring_case;
use crate::util::{json_response, parse_tag_filter, rfc3339, tags_match, tags_of, Ctx};
use crate::{lock, Sim};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};

/// `substringof('s', name)`: the name fragment, lower-cased (ARM compares
/// names without regard to case).
fn parse_name_filter(filter: &str) -> Option<String> {
    let rest = filter.trim().strip_prefix("substringof(")?.trim_start();
    let rest = rest.strip_prefix('\'')?;
    let end = rest.find('\'')?;
    let tail = rest[end + 1..].trim_start().strip_prefix(',')?.trim();
    (tail.strip_suffix(')')?.trim().eq_ignore_ascii_case("name"))
        .then(|| rest[..end].to_ascii_lowercase())
}

pub(crate) fn list(
    sim: &Sim,
    ctx: &Ctx,
    rg: Option<String>,
    groups: bool,
) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    let name_part = ctx.q("$filter").and_then(parse_name_filter);
    let filter = match ctx.q("$filter") {
        None => None,
        Some(_) if name_part.is_some() => None,
        Some(f) => Some(parse_tag_filter(f).ok_or_else(|| {
            bad(
                "InvalidFilterInQueryString",
                &format!("Invalid $filter '{f}': only \"tagName eq 'k' [and tagValue eq 'v']\" or \"substringof('s', name)\" is supported."),
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
    // A group's range holds only its own resources; a listing of groups
    // checks each one.
    let rg_lc = rg
        .as_ref()
        .filter(|_| groups)
        .map(|r| r.to_ascii_lowercase());
    // A group's resources sit below its key, groups in their type's index,
    // names in the name index: a listing reads those, not every resource of
    // every group.
    let named = name_part
        .as_deref()
        .filter(|_| !groups)
        .and_then(|part| st.resources.named_like(part));
    let candidates: Box<dyn Iterator<Item = &crate::state::Resource>> = match (&rg, named) {
        _ if groups => Box::new(st.of_type(RG_TYPE)),
        (rg, Some(named)) => {
            let below = rg.as_ref().map(|rg| format!("{}/", rg_key(rg)));
            Box::new(
                named
                    .into_iter()
                    .filter(move |(k, _)| below.as_ref().is_none_or(|b| k.starts_with(b)))
                    .map(|(_, r)| r),
            )
        }
        (Some(rg), None) => Box::new(
            st.resources
                .with_prefix(format!("{}/", rg_key(rg)))
                .map(|(_, r)| r),
        ),
        (None, None) => Box::new(st.resources.values()),
    };
    let mut value = Vec::new();
    for r in candidates {
        let is_rg = r.rtype == RG_TYPE;
        if groups != is_rg || r.rtype == RA_TYPE {
            continue;
        }
        if let Some(want) = &rg_lc {
            if &r.rg != want {
                continue;
            }
        }
        if let Some(part) = &name_part {
            if !contains_ignoring_case(&r.name, part) {
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
            "location": r.body.get("location").map(Doc::to_value),
        });
        if is_rg {
            item["properties"] = json!({"provisioningState": r.state});
        }
        for k in ["sku", "kind"] {
            if let Some(v) = r.body.get(k) {
                item[k] = v.to_value();
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
        .of_type(&full)
        .filter(|r| rg_lc.as_ref().is_none_or(|g| &r.rg == g))
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

#[cfg(test)]
mod name_filter_tests {
    use super::parse_name_filter;

    #[test]
    fn substringof_name_is_read_and_anything_else_is_not() {
        assert_eq!(
            parse_name_filter("substringof('Demo-x1', name)").as_deref(),
            Some("demo-x1")
        );
        assert_eq!(
            parse_name_filter(" substringof( 'a' ,name ) ").as_deref(),
            Some("a")
        );
        assert_eq!(parse_name_filter("substringof('a', type)"), None);
        assert_eq!(parse_name_filter("tagName eq 'a'"), None);
        assert_eq!(parse_name_filter("substringof('a'"), None);
    }
}
