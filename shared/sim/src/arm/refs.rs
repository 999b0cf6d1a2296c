//! References between resources: parsing ids, looking them up, and the rules ARM and the
//! providers apply to every `{"id": …}` in a body — fully qualified, of the type the
//! property expects, existing (also when it points into the same body) and, for the
//! regional providers, in the same region.

use super::model::{spec, Prep, Reject, TypeSpec};
use super::regions;
use crate::doc::{Doc, Json};
use crate::state::{Resource, State};
use serde_json::Value;

/// All `"id"` strings found anywhere under `v`.
pub(crate) fn collect_ids(v: &Doc, out: &mut Vec<String>) {
    match v {
        Doc::Object(entries) => {
            for (k, x) in entries.iter() {
                if &**k == "id" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    collect_ids(x, out);
                }
            }
        }
        Doc::Array(items) => items.iter().for_each(|x| collect_ids(x, out)),
        _ => {}
    }
}

/// Ids a resource's properties reference outside itself.
pub(crate) fn external_refs(res_id: &str, body: &Doc) -> Vec<String> {
    let mut ids = Vec::new();
    if let Some(p) = body.get("properties") {
        collect_ids(p, &mut ids);
    }
    let own = res_id.to_ascii_lowercase();
    ids.retain(|i| {
        let l = i.to_ascii_lowercase();
        l.starts_with("/subscriptions/") && l != own && !l.starts_with(&format!("{own}/"))
    });
    ids
}

/// (lowercase parent key, optional (child collection, child name), parent type).
type IdParts = (String, Option<(String, String)>, &'static TypeSpec);

/// Splits `/subscriptions/s/resourceGroups/rg/providers/ns/ty/name[/child/childName]`.
pub(crate) fn split_id(id: &str) -> Option<IdParts> {
    let segs: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    if segs.len() < 8
        || !segs[0].eq_ignore_ascii_case("subscriptions")
        || !segs[2].eq_ignore_ascii_case("resourceGroups")
        || !segs[4].eq_ignore_ascii_case("providers")
    {
        return None;
    }
    let spec = spec(segs[5], segs[6])?;
    let parent = format!("/{}", segs[..8].join("/")).to_ascii_lowercase();
    let child = match segs.len() {
        8 => None,
        10 => Some((segs[8].to_string(), segs[9].to_string())),
        _ => return None,
    };
    Some((parent, child, spec))
}

/// The full type an id names: `Microsoft.Network/virtualNetworks/subnets` for a subnet.
fn type_of(id: &str) -> Option<String> {
    let segs: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    let p = segs
        .iter()
        .position(|s| s.eq_ignore_ascii_case("providers"))?;
    let rest = &segs[p + 1..];
    if rest.len() < 3 || rest.len().is_multiple_of(2) {
        return None;
    }
    let mut t = format!("{}/{}", rest[0], rest[1]);
    let mut i = 3;
    while i < rest.len() {
        t.push('/');
        t.push_str(rest[i]);
        i += 2;
    }
    Some(t)
}

/// Finds the element named `name` in the child collection `coll` of `props`.
pub(crate) fn child_in<'a, J: Json>(props: &'a J, coll: &str, name: &str) -> Option<&'a J> {
    let (_, items) = props
        .members()
        .find(|(k, _)| k.eq_ignore_ascii_case(coll))?;
    items.items().iter().find(|i| {
        i.member("name")
            .and_then(J::text)
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

/// Looks up an id (a resource or one of its children) in the state.
pub(crate) fn lookup<'a>(st: &'a State, id: &str) -> Option<(&'a Resource, Option<&'a Doc>)> {
    let (parent, child, _) = split_id(id)?;
    let res = st.resources.get(&parent)?;
    match child {
        None => Some((res, None)),
        Some((coll, name)) => {
            let item = child_in(res.body.get("properties")?, &coll, &name)?;
            Some((res, Some(item)))
        }
    }
}

/// The type each reference property must point at, by the JSON key that holds it.
const EXPECTED: &[(&str, &str)] = &[
    (
        "networkSecurityGroup",
        "Microsoft.Network/networkSecurityGroups",
    ),
    ("publicIPAddress", "Microsoft.Network/publicIPAddresses"),
    ("subnet", "Microsoft.Network/virtualNetworks/subnets"),
    (
        "loadBalancerBackendAddressPools",
        "Microsoft.Network/loadBalancers/backendAddressPools",
    ),
    (
        "backendAddressPool",
        "Microsoft.Network/loadBalancers/backendAddressPools",
    ),
    (
        "frontendIPConfiguration",
        "Microsoft.Network/loadBalancers/frontendIPConfigurations",
    ),
    ("probe", "Microsoft.Network/loadBalancers/probes"),
    (
        "loadBalancerInboundNatPools",
        "Microsoft.Network/loadBalancers/inboundNatPools",
    ),
];

/// Every `(path, holding key, id)` under `v`, whose own path is `path`; the
/// holding key of an array element is the array's key. `path` is one buffer
/// that each level extends and cuts back, so only a found id costs a copy.
fn refs_with_paths(
    v: &Value,
    path: &mut String,
    key: &str,
    out: &mut Vec<(String, String, String)>,
) {
    use std::fmt::Write as _;
    let len = path.len();
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "id" {
                    if let Some(s) = x.as_str() {
                        out.push((path.clone(), key.to_string(), s.to_string()));
                    }
                } else {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    refs_with_paths(x, path, k, out);
                    path.truncate(len);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let _ = write!(path, "[{i}]");
                refs_with_paths(x, path, key, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn not_found(r: &str, own: &str) -> Reject {
    (
        "InvalidResourceReference",
        format!("Resource {r} referenced by resource {own} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."),
    )
}

/// ARM's and the providers' reference rules for the body of `p`.
pub(crate) fn check_refs(p: &Prep<'_>, body: &Value) -> Result<(), Reject> {
    let own = p.id;
    let own_lc = own.to_ascii_lowercase();
    let own_loc = body
        .get("location")
        .and_then(Value::as_str)
        .map(regions::normalize);
    let mut found = Vec::new();
    if let Some(props) = body.get("properties") {
        refs_with_paths(
            props,
            &mut "properties".to_string(),
            "properties",
            &mut found,
        );
    }
    for (path, key, id) in found {
        let expected = EXPECTED.iter().find(|(k, _)| *k == key).map(|(_, t)| *t);
        let lc = id.to_ascii_lowercase();
        let inside = lc == own_lc || lc.starts_with(&format!("{own_lc}/"));
        // The body's own child elements carry their ids; only references are checked.
        if inside && expected.is_none() {
            continue;
        }
        if !lc.starts_with("/subscriptions/") && !lc.starts_with("/providers/") {
            return Err((
                "LinkedInvalidPropertyId",
                format!("Property id '{id}' at path '{path}.id' is invalid. Expect fully qualified resource Id that start with '/subscriptions/{{subscriptionId}}' or '/providers/{{resourceProviderNamespace}}/'."),
            ));
        }
        if let Some(want) = expected {
            let got = type_of(&id).unwrap_or_default();
            if !got.eq_ignore_ascii_case(want) {
                return Err((
                    "InvalidResourceReference",
                    format!("Resource {id} referenced by resource {own} at path '{path}.id' is of type '{got}', but the property expects a '{want}'."),
                ));
            }
        }
        if inside {
            // A reference into this same body (a load-balancing rule to its frontend).
            let Some((_, Some((coll, name)), _)) = split_id(&id) else {
                return Err(not_found(&id, own));
            };
            let exists = body
                .get("properties")
                .and_then(|pr| child_in(pr, &coll, &name))
                .is_some();
            if !exists {
                return Err(not_found(&id, own));
            }
            continue;
        }
        if split_id(&id).is_none() {
            // Not a type the simulator serves (images, identities, …): not checked.
            continue;
        }
        let Some((target, _)) = lookup(p.st, &id) else {
            return Err(not_found(&id, own));
        };
        let target_loc = target
            .body
            .get("location")
            .and_then(Doc::as_str)
            .map(regions::normalize);
        if let (Some(a), Some(b)) = (&own_loc, &target_loc) {
            if a != b {
                return Err(not_found(&id, own));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_reference_is_found_with_its_path_and_holding_key() {
        let props = json!({
            "subnets": [
                {"name": "a", "properties": {"networkSecurityGroup": {"id": "/n1"}}},
                {"name": "b", "properties": {"routeTable": {"id": "/r"}, "nsg": [{"id": "/n2"}]}}
            ],
            "publicIPAddress": {"id": "/ip"}
        });
        let mut found = vec![];
        refs_with_paths(
            &props,
            &mut "properties".to_string(),
            "properties",
            &mut found,
        );
        let found: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|(p, k, i)| (p.as_str(), k.as_str(), i.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("properties.publicIPAddress", "publicIPAddress", "/ip"),
                (
                    "properties.subnets[0].properties.networkSecurityGroup",
                    "networkSecurityGroup",
                    "/n1"
                ),
                ("properties.subnets[1].properties.nsg[0]", "nsg", "/n2"),
                (
                    "properties.subnets[1].properties.routeTable",
                    "routeTable",
                    "/r"
                ),
            ]
        );
    }
}
