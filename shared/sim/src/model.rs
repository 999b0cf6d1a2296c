//! Per resource type: supported API versions, naming rules, server-computed fields,
//! reference checks and the rendering of stored models into responses.

use crate::state::{Resource, State};
use crate::util::random_key;
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

const NETWORK_VERSIONS: &[&str] = &["2024-05-01", "2024-07-01"];

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
        versions: &["2024-11-01", "2024-07-01"],
        etag: false,
        name_rule: NameRule::Vmss,
        children: &[],
    },
    TypeSpec {
        ns: "Microsoft.Storage",
        ty: "storageAccounts",
        versions: &["2023-05-01", "2023-01-01", "2024-01-01"],
        etag: false,
        name_rule: NameRule::Storage,
        children: &[],
    },
    TypeSpec {
        ns: "Microsoft.ContainerService",
        ty: "managedClusters",
        versions: &["2024-02-01", "2024-05-01", "2024-09-01"],
        etag: false,
        name_rule: NameRule::Aks,
        children: &[],
    },
];

/// API versions accepted for resource groups and resource listing.
pub(crate) const RESOURCES_VERSIONS: &[&str] = &[
    "2021-04-01",
    "2022-09-01",
    "2023-07-01",
    "2024-03-01",
    "2024-07-01",
    "2024-11-01",
    "2025-01-01",
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

fn weak_etag() -> String {
    format!("W/\"{}\"", uuid::Uuid::new_v4())
}

fn props(body: &mut Value) -> &mut Map<String, Value> {
    if !body.get("properties").is_some_and(Value::is_object) {
        body["properties"] = json!({});
    }
    match body.get_mut("properties") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("properties was just made an object"),
    }
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if !m.contains_key(key) {
        m.insert(key.to_string(), v);
    }
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    match v.get_mut(key) {
        Some(Value::Object(m)) => m,
        _ => unreachable!("value was just made an object"),
    }
}

/// Gives each element of the child collection `coll` an id, type, etag and state.
fn fill_children(
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

/// All `"id"` strings found anywhere under `v`.
pub(crate) fn collect_ids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "id" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    collect_ids(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_ids(x, out)),
        _ => {}
    }
}

/// Ids a resource's properties reference outside itself.
pub(crate) fn external_refs(res_id: &str, body: &Value) -> Vec<String> {
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
fn split_id(id: &str) -> Option<IdParts> {
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

/// Looks up an id (a resource or one of its children) in the state.
pub(crate) fn lookup<'a>(st: &'a State, id: &str) -> Option<(&'a Resource, Option<&'a Value>)> {
    let (parent, child, _) = split_id(id)?;
    let res = st.resources.get(&parent)?;
    match child {
        None => Some((res, None)),
        Some((coll, name)) => {
            let p = res.body.get("properties")?.as_object()?;
            let items = p
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&coll))?
                .1
                .as_array()?;
            let item = items.iter().find(|i| {
                i.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(&name))
            })?;
            Some((res, Some(item)))
        }
    }
}

/// Checks that every id the body references, of a type the simulator serves, exists.
fn check_refs(st: &State, own_id: &str, body: &Value) -> Result<(), Reject> {
    for r in external_refs(own_id, body) {
        if split_id(&r).is_none() {
            // Not a type the simulator serves (images, identities, …): not checked.
            continue;
        }
        if lookup(st, &r).is_none() {
            return Err((
                "InvalidResourceReference",
                format!("Resource {r} referenced by resource {own_id} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."),
            ));
        }
    }
    Ok(())
}

fn ipv4_in_prefix(prefix: &str, host: u8) -> Option<String> {
    let addr = prefix.split('/').next()?;
    let mut o: Vec<u8> = addr
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<u8>>>()?;
    if o.len() != 4 {
        return None;
    }
    o[3] = o[3].saturating_add(host);
    Some(format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]))
}

const DEFAULT_RULES: &[(&str, &str, &str, &str, &str, u32, &str)] = &[
    (
        "AllowVnetInBound",
        "Allow inbound traffic from all VMs in VNET",
        "VirtualNetwork",
        "VirtualNetwork",
        "Allow",
        65000,
        "Inbound",
    ),
    (
        "AllowAzureLoadBalancerInBound",
        "Allow inbound traffic from azure load balancer",
        "AzureLoadBalancer",
        "*",
        "Allow",
        65001,
        "Inbound",
    ),
    (
        "DenyAllInBound",
        "Deny all inbound traffic",
        "*",
        "*",
        "Deny",
        65500,
        "Inbound",
    ),
    (
        "AllowVnetOutBound",
        "Allow outbound traffic from all VMs to all VMs in VNET",
        "VirtualNetwork",
        "VirtualNetwork",
        "Allow",
        65000,
        "Outbound",
    ),
    (
        "AllowInternetOutBound",
        "Allow outbound traffic from all VMs to Internet",
        "*",
        "Internet",
        "Allow",
        65001,
        "Outbound",
    ),
    (
        "DenyAllOutBound",
        "Deny all outbound traffic",
        "*",
        "*",
        "Deny",
        65500,
        "Outbound",
    ),
];

/// Validates a PUT body and fills in server-computed fields. `existing` is the stored
/// resource on update (its computed identifiers are kept).
pub(crate) fn prepare(
    st: &State,
    spec: &TypeSpec,
    id: &str,
    name: &str,
    body: &mut Value,
    existing: Option<&Resource>,
    base: &str,
) -> Result<(), Reject> {
    let full = spec.full();
    let old_props = existing.and_then(|e| e.body.get("properties").cloned());
    let keep = |key: &str| -> Value {
        old_props
            .as_ref()
            .and_then(|p| p.get(key).cloned())
            .unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()))
    };
    match spec.ty {
        "networkSecurityGroups" => {
            let guid = keep("resourceGuid");
            let p = props(body);
            set_default(p, "securityRules", json!([]));
            set_default(p, "flushConnection", json!(false));
            p.insert("resourceGuid".into(), guid);
            fill_children(
                p,
                "securityRules",
                id,
                &full,
                true,
                Some(NameRule::Network80),
            )?;
            let defaults: Vec<Value> = DEFAULT_RULES
                .iter()
                .map(|(n, d, src, dst, access, prio, dir)| {
                    json!({
                        "name": n,
                        "id": format!("{id}/defaultSecurityRules/{n}"),
                        "type": format!("{full}/defaultSecurityRules"),
                        "etag": weak_etag(),
                        "properties": {
                            "provisioningState": "Succeeded",
                            "description": d,
                            "protocol": "*",
                            "sourcePortRange": "*",
                            "destinationPortRange": "*",
                            "sourceAddressPrefix": src,
                            "destinationAddressPrefix": dst,
                            "access": access,
                            "priority": prio,
                            "direction": dir,
                        }
                    })
                })
                .collect();
            p.insert("defaultSecurityRules".into(), Value::Array(defaults));
        }
        "virtualNetworks" => {
            let guid = keep("resourceGuid");
            let p = props(body);
            set_default(p, "subnets", json!([]));
            set_default(p, "virtualNetworkPeerings", json!([]));
            set_default(p, "enableDdosProtection", json!(false));
            p.insert("resourceGuid".into(), guid);
            fill_children(p, "subnets", id, &full, true, Some(NameRule::Network80))?;
        }
        "publicIPAddresses" => {
            let guid = keep("resourceGuid");
            let ip = old_props
                .as_ref()
                .and_then(|p| p.get("ipAddress").cloned())
                .unwrap_or_else(|| {
                    json!(format!(
                        "20.{}.{}.{}",
                        rand::random::<u8>(),
                        rand::random::<u8>(),
                        rand::random::<u8>().max(1)
                    ))
                });
            if !body.get("sku").is_some_and(Value::is_object) {
                body["sku"] = json!({"name": "Standard", "tier": "Regional"});
            }
            let standard = body["sku"]
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case("Standard"));
            let p = props(body);
            p.insert("resourceGuid".into(), guid);
            p.insert("ipAddress".into(), ip);
            set_default(p, "publicIPAddressVersion", json!("IPv4"));
            set_default(
                p,
                "publicIPAllocationMethod",
                json!(if standard { "Static" } else { "Dynamic" }),
            );
            set_default(p, "idleTimeoutInMinutes", json!(4));
            set_default(p, "ipTags", json!([]));
        }
        "loadBalancers" => {
            let guid = keep("resourceGuid");
            if !body.get("sku").is_some_and(Value::is_object) {
                body["sku"] = json!({"name": "Basic"});
            }
            let p = props(body);
            p.insert("resourceGuid".into(), guid);
            for c in [
                "frontendIPConfigurations",
                "backendAddressPools",
                "loadBalancingRules",
                "probes",
                "inboundNatRules",
                "inboundNatPools",
            ] {
                set_default(p, c, json!([]));
            }
            for c in spec.children {
                fill_children(p, c, id, &full, true, Some(NameRule::Network80))?;
            }
            // Frontend private addresses.
            if let Some(Value::Array(fes)) = p.get_mut("frontendIPConfigurations") {
                for fe in fes.iter_mut() {
                    let subnet = fe
                        .pointer("/properties/subnet/id")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let fp = obj_mut(fe, "properties");
                    if let Some(sid) = subnet {
                        let prefix = lookup(st, &sid)
                            .and_then(|(_, s)| s.cloned())
                            .and_then(|s| {
                                s.pointer("/properties/addressPrefix")
                                    .and_then(Value::as_str)
                                    .map(str::to_string)
                            })
                            .unwrap_or_else(|| "10.0.1.0/24".into());
                        if !fp.contains_key("privateIPAddress") {
                            let ip =
                                ipv4_in_prefix(&prefix, 4).unwrap_or_else(|| "10.0.1.4".into());
                            fp.insert("privateIPAddress".into(), json!(ip));
                        }
                        set_default(fp, "privateIPAllocationMethod", json!("Dynamic"));
                    }
                }
            }
            if let Some(Value::Array(rules)) = p.get_mut("loadBalancingRules") {
                for r in rules.iter_mut() {
                    set_default(
                        obj_mut(r, "properties"),
                        "disableOutboundSnat",
                        json!(false),
                    );
                }
            }
            // Back-references from frontends, pools and probes to the rules using them.
            let mut backrefs: Vec<(String, &'static str, String)> = Vec::new();
            for (coll, fields) in [
                (
                    "loadBalancingRules",
                    &["frontendIPConfiguration", "backendAddressPool", "probe"][..],
                ),
                ("inboundNatRules", &["frontendIPConfiguration"][..]),
            ] {
                if let Some(Value::Array(items)) = p.get(coll) {
                    for it in items {
                        let rid = it
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        for f in fields {
                            if let Some(target) = it
                                .pointer(&format!("/properties/{f}/id"))
                                .and_then(Value::as_str)
                            {
                                let key: &'static str = if coll == "loadBalancingRules" {
                                    "loadBalancingRules"
                                } else {
                                    "inboundNatRules"
                                };
                                backrefs.push((target.to_ascii_lowercase(), key, rid.clone()));
                            }
                        }
                    }
                }
            }
            for coll in ["frontendIPConfigurations", "backendAddressPools", "probes"] {
                if let Some(Value::Array(items)) = p.get_mut(coll) {
                    for it in items.iter_mut() {
                        let iid = it
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_ascii_lowercase();
                        let ip = obj_mut(it, "properties");
                        for (target, key, rid) in &backrefs {
                            if *target == iid {
                                let arr = ip.entry(key.to_string()).or_insert_with(|| json!([]));
                                if let Some(a) = arr.as_array_mut() {
                                    a.push(json!({"id": rid}));
                                }
                            }
                        }
                    }
                }
            }
        }
        "virtualMachineScaleSets" => {
            let unique = keep("uniqueId");
            let created = old_props
                .as_ref()
                .and_then(|p| p.get("timeCreated").cloned())
                .unwrap_or_else(|| json!(crate::util::rfc3339(crate::util::now_ms())));
            let sku_ok = body.pointer("/sku/name").is_some_and(Value::is_string)
                && body.pointer("/sku/capacity").is_some_and(Value::is_u64);
            if !sku_ok {
                return Err((
                    "InvalidParameter",
                    "Required parameters 'sku.name' and 'sku.capacity' (a non-negative integer) are missing or invalid.".into(),
                ));
            }
            let p = props(body);
            p.insert("uniqueId".into(), unique);
            p.insert("timeCreated".into(), created);
            set_default(p, "singlePlacementGroup", json!(true));
            if let Some(vmp) = p
                .get_mut("virtualMachineProfile")
                .and_then(Value::as_object_mut)
            {
                let windows = vmp
                    .get("storageProfile")
                    .and_then(|s| s.pointer("/imageReference/publisher"))
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.to_ascii_lowercase().contains("windows"));
                if let Some(os) = vmp.get_mut("osProfile").and_then(Value::as_object_mut) {
                    set_default(os, "secrets", json!([]));
                    if !os.contains_key("windowsConfiguration")
                        && !os.contains_key("linuxConfiguration")
                    {
                        if windows {
                            os.insert(
                                "windowsConfiguration".into(),
                                json!({"provisionVMAgent": true, "enableAutomaticUpdates": true}),
                            );
                        } else {
                            let pw = os.contains_key("adminPassword");
                            os.insert(
                                "linuxConfiguration".into(),
                                json!({"disablePasswordAuthentication": !pw, "provisionVMAgent": true}),
                            );
                        }
                    }
                }
                if let Some(Value::Array(nics)) = vmp
                    .get_mut("networkProfile")
                    .and_then(|n| n.get_mut("networkInterfaceConfigurations"))
                {
                    for nic in nics.iter_mut() {
                        let np = obj_mut(nic, "properties");
                        set_default(np, "dnsSettings", json!({"dnsServers": []}));
                        set_default(np, "enableAcceleratedNetworking", json!(false));
                        if let Some(Value::Array(ipcs)) = np.get_mut("ipConfigurations") {
                            for ipc in ipcs.iter_mut() {
                                set_default(
                                    obj_mut(ipc, "properties"),
                                    "privateIPAddressVersion",
                                    json!("IPv4"),
                                );
                            }
                        }
                    }
                }
            }
        }
        "storageAccounts" => {
            let created = old_props
                .as_ref()
                .and_then(|p| p.get("creationTime").cloned())
                .unwrap_or_else(|| json!(crate::util::rfc3339(crate::util::now_ms())));
            let taken = st.resources.values().any(|r| {
                r.rtype.eq_ignore_ascii_case(&full)
                    && r.name.eq_ignore_ascii_case(name)
                    && !r.id.eq_ignore_ascii_case(id)
            });
            if taken {
                return Err((
                    "StorageAccountAlreadyTaken",
                    format!("The storage account named {name} is already taken."),
                ));
            }
            if !body.get("sku").is_some_and(Value::is_object) {
                body["sku"] = json!({"name": "Standard_LRS", "tier": "Standard"});
            }
            if !body.get("kind").is_some_and(Value::is_string) {
                body["kind"] = json!("StorageV2");
            }
            let location = body.get("location").cloned().unwrap_or(json!(""));
            let p = props(body);
            p.insert("creationTime".into(), created);
            p.insert(
                "primaryEndpoints".into(),
                json!({"blob": format!("{base}/blob/{name}/")}),
            );
            p.insert("primaryLocation".into(), location);
            p.insert("statusOfPrimary".into(), json!("available"));
        }
        "managedClusters" => {
            let location = body
                .get("location")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let rg = id.split('/').nth(4).unwrap_or("").to_string();
            let suffix = keep("fqdn");
            let p = props(body);
            set_default(p, "kubernetesVersion", json!("1.30.0"));
            let ver = p
                .get("kubernetesVersion")
                .cloned()
                .unwrap_or(json!("1.30.0"));
            p.insert("currentKubernetesVersion".into(), ver);
            let prefix = p
                .get("dnsPrefix")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_string();
            let fqdn = match suffix.as_str() {
                Some(s) if s.contains(".azmk8s.io") => json!(s),
                _ => json!(format!(
                    "{prefix}-{}.hcp.{location}.azmk8s.io",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                )),
            };
            p.insert("fqdn".into(), fqdn);
            p.insert("powerState".into(), json!({"code": "Running"}));
            set_default(
                p,
                "nodeResourceGroup",
                json!(format!("MC_{rg}_{name}_{location}")),
            );
        }
        _ => {}
    }
    check_refs(st, id, body)
}

/// Storage account keys for a new account.
pub(crate) fn new_keys() -> Vec<String> {
    vec![random_key(64), random_key(64)]
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
    let mut out = res.body.clone();
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
    }

    #[test]
    fn merge() {
        let mut t = json!({"sku": {"name": "a", "capacity": 1}, "tags": {"x": "1"}});
        merge_patch(&mut t, &json!({"sku": {"capacity": 3}, "tags": null}));
        assert_eq!(t, json!({"sku": {"name": "a", "capacity": 3}}));
    }
}
