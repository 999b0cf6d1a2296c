//! Per resource type: supported API versions, naming rules, server-computed fields,
//! reference checks and the rendering of stored models into responses.

use crate::doc::Doc;
use crate::state::{Resource, State};
use serde_json::{json, Map, Value};

/// Naming rule families from the ARM naming documentation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NameRule {
    /// NSG, LB, public IP, subnet, rules: 1–80 of alphanumerics `_ . -`, start alnum, end alnum or `_`.
    Network80,
    /// VNet: 2–64 of the same character set.
    Vnet,
    /// VMSS: 1–64, none of `\/"[]:|<>+=;,?*@&`, not starting with `_`, not ending with `.` or `-`.
    Vmss,
    /// Storage account: 3–24 lowercase alphanumerics.
    Storage,
    /// AKS cluster: 1–63 alphanumerics, `-` and `_`, start and end alphanumeric.
    Aks,
    /// Resource group: 1–90 alphanumerics, `-_.()`, not ending with `.`.
    ResourceGroup,
    /// User-assigned identity: 3–128 alphanumerics, `-` and `_`, starting
    /// with a letter or digit.
    ManagedIdentity,
}

/// A resource type the simulator serves under `…/providers/{ns}/{ty}/{name}`.
pub(crate) struct TypeSpec {
    pub ns: &'static str,
    pub ty: &'static str,
    pub versions: &'static [&'static str],
    /// Network resources carry an `etag`.
    pub etag: bool,
    pub name_rule: NameRule,
    /// Child collections addressable as `…/{name}/{child}/{childName}`.
    pub children: &'static [&'static str],
}

impl TypeSpec {
    pub fn full(&self) -> String {
        format!("{}/{}", self.ns, self.ty)
    }
}

/// Stable api-versions of Microsoft.Network (the specification's `stable/` folders, and
/// the newest ones the current Azure SDK for Python knows), newest first.
pub(crate) const NETWORK_VERSIONS: &[&str] = &[
    "2026-03-01",
    "2026-01-01",
    "2025-09-01",
    "2025-07-01",
    "2025-05-01",
    "2025-03-01",
    "2025-01-01",
    "2024-10-01",
    "2024-07-01",
    "2024-05-01",
    "2024-03-01",
    "2024-01-01",
    "2023-11-01",
    "2023-09-01",
    "2023-06-01",
    "2023-05-01",
    "2023-04-01",
    "2023-02-01",
    "2022-11-01",
    "2022-09-01",
    "2022-07-01",
    "2022-05-01",
    "2022-01-01",
    "2021-08-01",
    "2021-05-01",
    "2021-03-01",
    "2021-02-01",
    "2020-11-01",
    "2020-08-01",
    "2020-07-01",
    "2020-06-01",
    "2020-05-01",
    "2020-04-01",
    "2020-03-01",
    "2019-12-01",
    "2019-11-01",
    "2019-09-01",
    "2019-08-01",
    "2019-07-01",
    "2019-06-01",
    "2019-04-01",
    "2019-02-01",
    "2018-12-01",
    "2018-11-01",
    "2018-10-01",
    "2018-08-01",
    "2018-07-01",
    "2018-06-01",
    "2018-04-01",
    "2018-02-01",
    "2018-01-01",
    "2017-11-01",
    "2017-10-01",
    "2017-09-01",
    "2017-08-01",
    "2017-06-01",
    "2017-03-01",
    "2016-12-01",
    "2016-09-01",
    "2016-06-01",
    "2016-03-30",
    "2015-06-15",
];

/// Stable api-versions of Microsoft.Compute's ComputeRP (scale sets, usages), newest first.
pub(crate) const COMPUTE_VERSIONS: &[&str] = &[
    "2026-04-01",
    "2026-03-01",
    "2025-11-01",
    "2025-04-01",
    "2024-11-01",
    "2024-07-01",
    "2024-03-01",
    "2023-09-01",
    "2023-07-01",
    "2023-03-01",
    "2022-11-01",
    "2022-08-01",
    "2022-03-01",
    "2021-11-01",
    "2021-07-01",
    "2021-04-01",
    "2021-03-01",
    "2020-12-01",
    "2020-06-01",
    "2019-12-01",
    "2019-07-01",
    "2019-03-01",
    "2018-10-01",
    "2018-06-01",
    "2018-04-01",
    "2017-12-01",
    "2017-03-30",
    "2016-03-30",
    "2015-06-15",
];

/// Stable api-versions of the Compute resource SKUs list, newest first.
pub(crate) const SKUS_VERSIONS: &[&str] = &["2021-07-01", "2019-04-01", "2017-09-01"];

/// Stable api-versions of Microsoft.Storage, newest first.
pub(crate) const STORAGE_VERSIONS: &[&str] = &[
    "2026-09-01",
    "2026-06-01",
    "2026-04-01",
    "2025-08-01",
    "2025-06-01",
    "2025-01-01",
    "2024-01-01",
    "2023-05-01",
    "2023-04-01",
    "2023-01-01",
    "2022-09-01",
    "2022-05-01",
    "2021-09-01",
    "2021-08-01",
    "2021-06-01",
    "2021-04-01",
    "2021-02-01",
    "2021-01-01",
    "2019-06-01",
    "2019-04-01",
    "2018-11-01",
    "2018-07-01",
    "2018-02-01",
    "2017-10-01",
    "2017-06-01",
    "2016-12-01",
    "2016-05-01",
    "2016-01-01",
    "2015-06-15",
];

/// Stable api-versions of AKS managed clusters, newest first.
pub(crate) const AKS_VERSIONS: &[&str] = &[
    "2025-02-01",
    "2025-01-01",
    "2024-10-01",
    "2024-09-01",
    "2024-08-01",
    "2024-07-01",
    "2024-06-01",
    "2024-05-01",
    "2024-02-01",
    "2024-01-01",
    "2023-11-01",
    "2023-10-01",
    "2023-09-01",
    "2023-08-01",
    "2023-07-01",
    "2023-06-01",
    "2023-05-01",
    "2023-04-01",
    "2023-03-01",
    "2023-02-01",
    "2023-01-01",
    "2022-11-01",
    "2022-09-01",
    "2022-08-01",
    "2022-07-01",
    "2022-06-01",
    "2022-04-01",
    "2022-03-01",
    "2022-02-01",
    "2022-01-01",
    "2021-10-01",
    "2021-09-01",
    "2021-08-01",
    "2021-07-01",
    "2021-05-01",
    "2021-03-01",
    "2021-02-01",
    "2020-12-01",
    "2020-11-01",
    "2020-09-01",
    "2020-07-01",
    "2020-06-01",
    "2020-04-01",
    "2020-03-01",
    "2020-02-01",
    "2020-01-01",
    "2019-11-01",
    "2019-10-01",
    "2019-08-01",
    "2019-06-01",
    "2019-04-01",
    "2019-02-01",
    "2018-03-31",
    "2017-08-31",
];

/// Stable api-versions of role assignments and permissions, newest first.
pub(crate) const AUTHORIZATION_VERSIONS: &[&str] = &["2022-04-01", "2015-07-01"];

/// Every resource type served (besides resource groups and role assignments).
pub(crate) static TYPES: &[TypeSpec] = &[
    TypeSpec {
        ns: "Microsoft.Network",
        ty: "virtualNetworks",
        versions: NETWORK_VERSIONS,
        etag: true,
        name_rule: NameRule::Vnet,
        children: &["subnets"],
    },
    TypeSpec {
        ns: "Microsoft.Network",
        ty: "networkSecurityGroups",
        versions: NETWORK_VERSIONS,
        etag: true,
        name_rule: NameRule::Network80,
        children: &["securityRules", "defaultSecurityRules"],
    },
    TypeSpec {
        ns: "Microsoft.Network",
        ty: "publicIPAddresses",
        versions: NETWORK_VERSIONS,
        etag: true,
        name_rule: NameRule::Network80,
        children: &[],
    },
    TypeSpec {
        ns: "Microsoft.Network",
        ty: "loadBalancers",
        versions: NETWORK_VERSIONS,
        etag: true,
        name_rule: NameRule::Network80,
        children: &[
            "frontendIPConfigurations",
            "backendAddressPools",
            "loadBalancingRules",
            "probes",
            "inboundNatRules",
            "outboundRules",
        ],
    },
    TypeSpec {
        ns: "Microsoft.Compute",
        ty: "virtualMachineScaleSets",
        versions: COMPUTE_VERSIONS,
        etag: false,
        name_rule: NameRule::Vmss,
        children: &["virtualMachines"],
    },
    TypeSpec {
        ns: "Microsoft.Storage",
        ty: "storageAccounts",
        versions: STORAGE_VERSIONS,
        etag: false,
        name_rule: NameRule::Storage,
        children: &[],
    },
    TypeSpec {
        ns: "Microsoft.ManagedIdentity",
        ty: "userAssignedIdentities",
        versions: crate::arm::identity::VERSIONS,
        etag: false,
        name_rule: NameRule::ManagedIdentity,
        children: &[],
    },
    TypeSpec {
        ns: "Microsoft.ContainerService",
        ty: "managedClusters",
        versions: AKS_VERSIONS,
        etag: false,
        name_rule: NameRule::Aks,
        children: &[],
    },
];

/// API versions accepted for resource groups and resource listing.
pub(crate) const RESOURCES_VERSIONS: &[&str] = &[
    "2025-04-01",
    "2025-03-01",
    "2025-01-01",
    "2024-11-01",
    "2024-07-01",
    "2024-03-01",
    "2023-07-01",
    "2022-09-01",
    "2021-04-01",
    "2021-01-01",
    "2020-10-01",
    "2020-08-01",
    "2020-06-01",
    "2019-10-01",
    "2019-08-01",
    "2019-07-01",
    "2019-05-10",
    "2019-05-01",
    "2019-03-01",
    "2018-05-01",
    "2018-02-01",
    "2017-05-10",
    "2016-09-01",
    "2016-07-01",
    "2016-02-01",
    "2015-11-01",
];

/// Finds a type by namespace and type name (case-insensitive).
pub(crate) fn spec(ns: &str, ty: &str) -> Option<&'static TypeSpec> {
    TYPES
        .iter()
        .find(|s| s.ns.eq_ignore_ascii_case(ns) && s.ty.eq_ignore_ascii_case(ty))
}

/// Finds a type by its full name, e.g. `Microsoft.Network/loadBalancers`.
pub(crate) fn spec_by_full(full: &str) -> Option<&'static TypeSpec> {
    TYPES.iter().find(|s| s.full().eq_ignore_ascii_case(full))
}

/// Whether `name` satisfies `rule`.
pub(crate) fn valid_name(rule: NameRule, name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    let n = chars.len();
    let net_char = |c: &char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let net = |min: usize, max: usize| {
        (min..=max).contains(&n)
            && chars.iter().all(net_char)
            && chars[0].is_ascii_alphanumeric()
            && (chars[n - 1].is_ascii_alphanumeric() || chars[n - 1] == '_')
    };
    match rule {
        NameRule::Network80 => net(1, 80),
        NameRule::Vnet => net(2, 64),
        NameRule::Vmss => {
            (1..=64).contains(&n)
                && !chars
                    .iter()
                    .any(|c| "\\/\"[]:|<>+=;,?*@&#%".contains(*c) || c.is_control())
                && chars[0] != '_'
                && chars[n - 1] != '.'
                && chars[n - 1] != '-'
        }
        NameRule::Storage => {
            (3..=24).contains(&n)
                && chars
                    .iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        }
        NameRule::Aks => {
            (1..=63).contains(&n)
                && chars
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                && chars[0].is_ascii_alphanumeric()
                && chars[n - 1].is_ascii_alphanumeric()
        }
        NameRule::ManagedIdentity => {
            (3..=128).contains(&n)
                && chars
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                && chars[0].is_ascii_alphanumeric()
        }
        NameRule::ResourceGroup => {
            (1..=90).contains(&n)
                && chars
                    .iter()
                    .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
                && chars[n - 1] != '.'
        }
    }
}

/// A 400-class rejection: (code, message).
pub(crate) type Reject = (&'static str, String);

pub(crate) fn weak_etag() -> String {
    format!("W/\"{}\"", uuid::Uuid::new_v4())
}

pub(crate) fn props(body: &mut Value) -> &mut Map<String, Value> {
    if !body.get("properties").is_some_and(Value::is_object) {
        body["properties"] = json!({});
    }
    match body.get_mut("properties") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("properties was just made an object"),
    }
}

pub(crate) fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if !m.contains_key(key) {
        m.insert(key.to_string(), v);
    }
}

pub(crate) fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    match v.get_mut(key) {
        Some(Value::Object(m)) => m,
        _ => unreachable!("value was just made an object"),
    }
}

/// Gives each element of the child collection `coll` an id, type, etag and state.
pub(crate) fn fill_children(
    p: &mut Map<String, Value>,
    coll: &str,
    parent_id: &str,
    parent_type: &str,
    etag: bool,
    rule: Option<NameRule>,
) -> Result<(), Reject> {
    let Some(items) = p.get_mut(coll) else {
        return Ok(());
    };
    let Some(items) = items.as_array_mut() else {
        return Err((
            "InvalidRequestFormat",
            format!("properties.{coll} must be an array."),
        ));
    };
    for item in items.iter_mut() {
        if !item.is_object() {
            return Err((
                "InvalidRequestFormat",
                format!("Each element of properties.{coll} must be an object."),
            ));
        }
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(rule) = rule {
            if !valid_name(rule, &name) {
                return Err((
                    "InvalidResourceName",
                    format!("Resource name '{name}' in properties.{coll} is invalid."),
                ));
            }
        }
        item["id"] = json!(format!("{parent_id}/{coll}/{name}"));
        item["type"] = json!(format!("{parent_type}/{coll}"));
        if etag {
            item["etag"] = json!(weak_etag());
        }
        let ip = obj_mut(item, "properties");
        ip.insert("provisioningState".into(), json!("Succeeded"));
    }
    Ok(())
}

/// What a provider sees when it validates and completes a PUT body.
pub(crate) struct Prep<'a> {
    pub st: &'a State,
    pub spec: &'static TypeSpec,
    /// Canonical id and name of the resource being written.
    pub id: &'a str,
    pub name: &'a str,
    /// The stored resource on update (its computed identifiers are kept).
    pub existing: Option<&'a Resource>,
    /// `https://{host}` the client used.
    pub base: &'a str,
    pub config: &'a crate::SimConfig,
}

impl Prep<'_> {
    /// The stored property `key` on update.
    pub fn kept(&self, key: &str) -> Option<Value> {
        self.existing
            .and_then(|e| e.body.get("properties"))
            .and_then(|p| p.get(key))
            .map(Doc::to_value)
    }

    /// A computed identifier: the stored one on update, a new GUID on create.
    pub fn keep(&self, key: &str) -> Value {
        self.kept(key)
            .unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()))
    }
}

/// Validates a PUT body by the rules of ARM and of the type's provider, then fills in
/// server-computed fields.
pub(crate) fn prepare(p: &Prep<'_>, body: &mut Value) -> Result<(), Reject> {
    crate::arm::rules::check_location(p, body)?;
    match (p.spec.ns, p.spec.ty) {
        (_, "networkSecurityGroups") => crate::arm::network::prepare_nsg(p, body)?,
        (_, "virtualNetworks") => crate::arm::network::prepare_vnet(p, body)?,
        (_, "publicIPAddresses") => crate::arm::network::prepare_public_ip(p, body)?,
        (_, "loadBalancers") => crate::arm::network::prepare_load_balancer(p, body)?,
        (_, "virtualMachineScaleSets") => crate::arm::compute::prepare_vmss(p, body)?,
        (_, "storageAccounts") => crate::arm::storage::prepare_account(p, body)?,
        (_, "managedClusters") => crate::arm::containerservice::prepare_cluster(p, body)?,
        (_, "userAssignedIdentities") => crate::arm::identity::prepare(p, body)?,
        _ => {}
    }
    crate::arm::refs::check_refs(p, body)
}

/// Removes values Azure never returns (passwords, protected settings, custom data).
pub(crate) fn strip_secrets(v: &mut Value) {
    if let Some(os) = v
        .pointer_mut("/properties/virtualMachineProfile/osProfile")
        .and_then(Value::as_object_mut)
    {
        os.remove("adminPassword");
        os.remove("customData");
    }
    if let Some(Value::Array(exts)) =
        v.pointer_mut("/properties/virtualMachineProfile/extensionProfile/extensions")
    {
        for e in exts.iter_mut() {
            if let Some(p) = e.get_mut("properties").and_then(Value::as_object_mut) {
                p.remove("protectedSettings");
                p.remove("protectedSettingsFromKeyVault");
            }
        }
    }
}

/// The response body of a stored resource.
pub(crate) fn render(res: &Resource) -> Value {
    render_with(res, res.body.to_value())
}

/// `res` as [`render`] answers it, its model given as `body`: a write that
/// still holds the model it stored renders its answer from that, after
/// letting go of the state.
pub(crate) fn render_with(res: &Resource, body: Value) -> Value {
    let mut out = body;
    if !out.is_object() {
        out = json!({});
    }
    out["id"] = json!(res.id);
    out["name"] = json!(res.name);
    out["type"] = json!(res.rtype);
    let etag = spec_by_full(&res.rtype).is_some_and(|s| s.etag);
    if etag {
        out["etag"] = json!(format!("W/\"{}\"", res.etag));
    }
    props(&mut out).insert("provisioningState".into(), json!(res.state));
    if res.rtype.eq_ignore_ascii_case(crate::arm::NSG_TYPE) {
        let etag = out["etag"].as_str().unwrap_or_default().to_string();
        let rules = crate::arm::network::default_security_rules(&res.id, &etag);
        props(&mut out).insert("defaultSecurityRules".into(), rules);
    }
    strip_secrets(&mut out);
    out
}

/// A JSON merge patch (RFC 7396): objects merge, `null` removes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(pm) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(tm) = target {
                for (k, v) in pm {
                    if v.is_null() {
                        tm.remove(k);
                    } else {
                        merge_patch(tm.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name(NameRule::Network80, "nsg-a_1"));
        assert!(!valid_name(NameRule::Network80, "-nsg"));
        assert!(!valid_name(NameRule::Network80, "nsg-"));
        assert!(valid_name(NameRule::Network80, "nsg_"));
        assert!(!valid_name(NameRule::Vnet, "v"));
        assert!(valid_name(NameRule::Vmss, "{vmss-name}"));
        assert!(!valid_name(NameRule::Vmss, "bad*name"));
        assert!(!valid_name(NameRule::Vmss, "_x"));
        assert!(valid_name(NameRule::Storage, "sto2220"));
        assert!(!valid_name(NameRule::Storage, "Sto2220"));
        assert!(!valid_name(NameRule::ResourceGroup, "rg."));
        assert!(valid_name(NameRule::ManagedIdentity, "demo-abc123-nodes"));
        assert!(!valid_name(NameRule::ManagedIdentity, "ab"));
        assert!(!valid_name(NameRule::ManagedIdentity, "-nodes"));
        assert!(!valid_name(NameRule::ManagedIdentity, "a.b.c"));
    }

    #[test]
    fn merge() {
        let mut t = json!({"sku": {"name": "a", "capacity": 1}, "tags": {"x": "1"}});
        merge_patch(&mut t, &json!({"sku": {"capacity": 3}, "tags": null}));
        assert_eq!(t, json!({"sku": {"name": "a", "capacity": 3}}));
    }
}
