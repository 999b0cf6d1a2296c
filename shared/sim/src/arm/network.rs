//! Microsoft.Network: virtual networks and subnets, network security groups and their
//! rules, public IPs and load balancers — the rules the Network provider applies to each
//! and the fields it computes.

use super::model::{fill_children, obj_mut, props, set_default, NameRule, Prep, Reject};
use super::refs::lookup;
use super::rules::check_zones;
use crate::doc::{Doc, Json};
use serde_json::{json, Value};

/// An IPv4 or IPv6 prefix in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: u128,
    len: u8,
    v6: bool,
}

impl Cidr {
    fn bits(&self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }
    fn mask(&self) -> u128 {
        let host = u32::from(self.bits() - self.len);
        let all = if self.v6 {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        };
        if host >= 128 {
            0
        } else {
            all & !((1u128 << host) - 1)
        }
    }
    /// Whether `other` lies entirely inside `self`.
    pub fn contains(&self, other: &Cidr) -> bool {
        self.v6 == other.v6 && self.len <= other.len && (other.addr & self.mask()) == self.addr
    }
    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

/// Parses `a.b.c.d/n` (or an IPv6 prefix); host bits must be zero, as the Network
/// provider requires (`InvalidCIDRNotation`).
pub(crate) fn parse_cidr(s: &str) -> Result<Cidr, Reject> {
    let invalid = |should: Option<String>| {
        (
            "InvalidCIDRNotation",
            match should {
                Some(c) => format!("The address prefix {s} has an invalid CIDR notation. For the given prefix length, the address prefix should be {c}."),
                None => format!("The address prefix {s} has an invalid CIDR notation."),
            },
        )
    };
    let (ip, len) = s.split_once('/').ok_or_else(|| invalid(None))?;
    let len: u8 = len.parse().map_err(|_| invalid(None))?;
    let (addr, v6) = if let Ok(a) = ip.parse::<std::net::Ipv4Addr>() {
        (u128::from(u32::from(a)), false)
    } else if let Ok(a) = ip.parse::<std::net::Ipv6Addr>() {
        (u128::from(a), true)
    } else {
        return Err(invalid(None));
    };
    let c = Cidr { addr, len, v6 };
    if len > c.bits() {
        return Err(invalid(None));
    }
    if addr & c.mask() != addr {
        let net = addr & c.mask();
        let shown = if v6 {
            std::net::Ipv6Addr::from(net).to_string()
        } else {
            std::net::Ipv4Addr::from(net as u32).to_string()
        };
        return Err(invalid(Some(format!("{shown}/{len}"))));
    }
    Ok(c)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

fn bad_format(message: String) -> Reject {
    ("InvalidRequestFormat", message)
}

/// A subnet's prefixes (`addressPrefix` or `addressPrefixes`).
fn subnet_prefixes(subnet: &Value) -> Vec<String> {
    let p = subnet.get("properties");
    let mut out = strings(p.and_then(|p| p.get("addressPrefix")));
    out.extend(strings(p.and_then(|p| p.get("addressPrefixes"))));
    out
}

/// VNet rules: address space present and in CIDR notation; each subnet's prefix in CIDR
/// notation, inside the address space (`NetcfgSubnetRangeOutsideVnet`) and not
/// overlapping another subnet (`NetcfgSubnetRangesOverlap`).
pub(crate) fn validate_vnet(name: &str, body: &Value) -> Result<(), Reject> {
    let space = strings(body.pointer("/properties/addressSpace/addressPrefixes"));
    if space.is_empty() {
        return Err(bad_format(format!(
            "Virtual network {name} must have properties.addressSpace.addressPrefixes with at least one prefix."
        )));
    }
    let space: Vec<Cidr> = space
        .iter()
        .map(|s| parse_cidr(s))
        .collect::<Result<_, _>>()?;
    let mut seen: Vec<(String, Cidr)> = Vec::new();
    if let Some(subnets) = body
        .pointer("/properties/subnets")
        .and_then(Value::as_array)
    {
        for s in subnets {
            let sname = s.get("name").and_then(Value::as_str).unwrap_or("");
            validate_subnet(name, sname, s, &space, &seen)?;
            for c in subnet_prefixes(s) {
                seen.push((sname.to_string(), parse_cidr(&c)?));
            }
        }
    }
    Ok(())
}

/// One subnet against its VNet's address space and the subnets already seen.
pub(crate) fn validate_subnet(
    vnet: &str,
    sname: &str,
    subnet: &Value,
    space: &[Cidr],
    others: &[(String, Cidr)],
) -> Result<(), Reject> {
    let prefixes = subnet_prefixes(subnet);
    if prefixes.is_empty() {
        return Err(bad_format(format!(
            "Subnet {sname} in virtual network {vnet} must have properties.addressPrefix."
        )));
    }
    for p in prefixes {
        let c = parse_cidr(&p)?;
        if !space.iter().any(|s| s.contains(&c)) {
            return Err((
                "NetcfgSubnetRangeOutsideVnet",
                format!("Subnet '{sname}' is not valid because its IP address range is outside the IP address range of virtual network '{vnet}'."),
            ));
        }
        if others
            .iter()
            .any(|(n, o)| !n.eq_ignore_ascii_case(sname) && o.overlaps(&c))
        {
            return Err((
                "NetcfgSubnetRangesOverlap",
                format!("Subnet '{sname}' is not valid because its IP address range overlaps with that of an existing subnet in virtual network '{vnet}'."),
            ));
        }
    }
    Ok(())
}

/// The VNet's address space, for a subnet written on its own.
pub(crate) fn vnet_space(vnet: &Value) -> Vec<Cidr> {
    strings(vnet.pointer("/properties/addressSpace/addressPrefixes"))
        .iter()
        .filter_map(|s| parse_cidr(s).ok())
        .collect()
}

/// The VNet's subnets other than `except`, with their prefixes.
pub(crate) fn other_subnets(vnet: &Value, except: &str) -> Vec<(String, Cidr)> {
    let mut out = Vec::new();
    if let Some(subnets) = vnet
        .pointer("/properties/subnets")
        .and_then(Value::as_array)
    {
        for s in subnets {
            let n = s.get("name").and_then(Value::as_str).unwrap_or("");
            if n.eq_ignore_ascii_case(except) {
                continue;
            }
            for c in subnet_prefixes(s) {
                if let Ok(c) = parse_cidr(&c) {
                    out.push((n.to_string(), c));
                }
            }
        }
    }
    out
}

fn one_of(rule: &str, field: &str, v: Option<&Value>, allowed: &[&str]) -> Result<(), Reject> {
    let ok = v
        .and_then(Value::as_str)
        .is_some_and(|s| allowed.iter().any(|a| a.eq_ignore_ascii_case(s)));
    if ok {
        return Ok(());
    }
    Err((
        "SecurityRuleParameterContainsUnsupportedValue",
        format!(
            "Security rule {rule} has invalid value '{}' for {field}. Allowed values are {}.",
            v.map(|x| x.to_string()).unwrap_or_else(|| "null".into()),
            allowed.join(", ")
        ),
    ))
}

fn port_range_ok(s: &str) -> bool {
    let port = |p: &str| p.trim().parse::<u32>().is_ok_and(|n| n <= 65535);
    s == "*"
        || port(s)
        || s.split_once('-').is_some_and(|(a, b)| {
            port(a) && port(b) && a.trim().parse::<u32>().ok() <= b.trim().parse::<u32>().ok()
        })
}

/// One NSG security rule: protocol, access and direction from their enums, priority
/// 100–4096, port ranges `*`, `n` or `n-m` within 0–65535, and an address on each side.
pub(crate) fn validate_security_rule(name: &str, rule: &Value) -> Result<(), Reject> {
    let empty = json!({});
    let p = rule.get("properties").unwrap_or(&empty);
    one_of(
        name,
        "protocol",
        p.get("protocol"),
        &["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"],
    )?;
    one_of(name, "access", p.get("access"), &["Allow", "Deny"])?;
    one_of(
        name,
        "direction",
        p.get("direction"),
        &["Inbound", "Outbound"],
    )?;
    let prio = p.get("priority").and_then(Value::as_i64);
    if !prio.is_some_and(|n| (100..=4096).contains(&n)) {
        return Err((
            "SecurityRuleInvalidPriority",
            format!(
                "Security rule {name} has invalid priority {}. Value provided: {}. Allowed range 100-4096.",
                prio.map(|n| n.to_string()).unwrap_or_else(|| "null".into()),
                p.get("priority").map(|v| v.to_string()).unwrap_or_else(|| "null".into()),
            ),
        ));
    }
    for side in ["source", "destination"] {
        let ports: Vec<String> = strings(p.get(format!("{side}PortRange")))
            .into_iter()
            .chain(strings(p.get(format!("{side}PortRanges"))))
            .collect();
        if ports.is_empty() {
            return Err((
                "SecurityRuleInvalidPortRange",
                format!("Security rule {name} has no {side} port range. Value should be an integer OR integer range with '-' delimiter. Valid range 0-65535."),
            ));
        }
        if let Some(bad) = ports.iter().find(|r| !port_range_ok(r)) {
            return Err((
                "SecurityRuleInvalidPortRange",
                format!("Security rule has invalid Port range. Value provided: {bad}. Value should be an integer OR integer range with '-' delimiter. Valid range 0-65535."),
            ));
        }
        let has_addr = !strings(p.get(format!("{side}AddressPrefix"))).is_empty()
            || !strings(p.get(format!("{side}AddressPrefixes"))).is_empty()
            || p.get(format!("{side}ApplicationSecurityGroups"))
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        if !has_addr {
            return Err((
                "SecurityRuleInvalidAddressPrefix",
                format!("Security rule {name} has no {side} address prefix (properties.{side}AddressPrefix)."),
            ));
        }
    }
    Ok(())
}

fn sku_name<J: Json>(body: &J) -> String {
    body.member("sku")
        .and_then(|s| s.member("name"))
        .and_then(J::text)
        .unwrap_or("")
        .to_string()
}

/// Public IP rules: SKU Basic or Standard; Standard must be Static
/// (`StandardSkuPublicIPAddressesMustBeStatic`); zones only on Standard
/// (`ZonesNotAllowedInBasicSkuResource`) and only those the region offers.
pub(crate) fn validate_public_ip(id: &str, body: &Value) -> Result<(), Reject> {
    let sku = if body.get("sku").is_some() {
        sku_name(body)
    } else {
        "Basic".into()
    };
    if !["Basic", "Standard"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&sku))
    {
        return Err(bad_format(format!(
            "Public IP {id} has an invalid sku.name '{sku}'. Allowed values are Basic, Standard."
        )));
    }
    let standard = sku.eq_ignore_ascii_case("Standard");
    let method = body
        .pointer("/properties/publicIPAllocationMethod")
        .and_then(Value::as_str)
        .unwrap_or(if standard { "Static" } else { "Dynamic" });
    if standard && !method.eq_ignore_ascii_case("Static") {
        return Err((
            "StandardSkuPublicIPAddressesMustBeStatic",
            format!("Standard sku publicIp {id} must have AllocationMethod set to Static."),
        ));
    }
    let zones = check_zones(body, id)?;
    if !standard && !zones.is_empty() {
        return Err((
            "ZonesNotAllowedInBasicSkuResource",
            format!("Request for resource {id} is invalid as it is Basic sku and in an Availability Zone which is a deprecated configuration.  Please change your resource to Standard sku for Availability Zone support."),
        ));
    }
    Ok(())
}

/// Load balancer rules: SKU Basic, Standard or Gateway, and each frontend's public IP of
/// the same SKU (`PublicIPAndLBSkuDoNotMatch`).
pub(crate) fn validate_load_balancer(p: &Prep<'_>, body: &Value) -> Result<(), Reject> {
    let sku = if body.get("sku").is_some() {
        sku_name(body)
    } else {
        "Basic".into()
    };
    if !["Basic", "Standard", "Gateway"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&sku))
    {
        return Err(bad_format(format!(
            "Load balancer {} has an invalid sku.name '{sku}'. Allowed values are Basic, Standard, Gateway.",
            p.id
        )));
    }
    if let Some(fes) = body
        .pointer("/properties/frontendIPConfigurations")
        .and_then(Value::as_array)
    {
        for fe in fes {
            let Some(pip) = fe
                .pointer("/properties/publicIPAddress/id")
                .and_then(Value::as_str)
            else {
                continue;
            };
            let Some((r, _)) = lookup(p.st, pip) else {
                continue; // reported by the reference check
            };
            let pip_sku = if r.body.get("sku").is_some() {
                sku_name(&r.body)
            } else {
                "Basic".into()
            };
            if !pip_sku.eq_ignore_ascii_case(&sku) {
                return Err((
                    "PublicIPAndLBSkuDoNotMatch",
                    format!(
                        "{sku} sku load balancer {} cannot reference {pip_sku} sku publicIP {}.",
                        p.id, r.id
                    ),
                ));
            }
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

/// Network security group: default rules, rule ids.
pub(crate) fn prepare_nsg(p: &Prep<'_>, body: &mut Value) -> Result<(), Reject> {
    let (id, full) = (p.id, p.spec.full());
    if let Some(rules) = body
        .pointer("/properties/securityRules")
        .and_then(Value::as_array)
    {
        for r in rules {
            let n = r.get("name").and_then(Value::as_str).unwrap_or("");
            validate_security_rule(n, r)?;
        }
    }
    let guid = p.keep("resourceGuid");
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
    // Rendered on every read instead (`default_security_rules`): the same
    // six rules for every NSG were most of an NSG's stored bytes.
    p.remove("defaultSecurityRules");
    Ok(())
}

/// The default rules Azure gives every NSG (`id`), as its
/// `defaultSecurityRules`; they share the NSG's `etag`.
pub(crate) fn default_security_rules(id: &str, etag: &str) -> Value {
    let rules = DEFAULT_RULES
        .iter()
        .map(|(n, d, src, dst, access, prio, dir)| {
            json!({
                "name": n,
                "id": format!("{id}/defaultSecurityRules/{n}"),
                "type": format!("{}/defaultSecurityRules", super::NSG_TYPE),
                "etag": etag,
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
                    "sourcePortRanges": [],
                    "destinationPortRanges": [],
                    "sourceAddressPrefixes": [],
                    "destinationAddressPrefixes": [],
                }
            })
        })
        .collect();
    Value::Array(rules)
}

/// Virtual network: subnet ids.
pub(crate) fn prepare_vnet(p: &Prep<'_>, body: &mut Value) -> Result<(), Reject> {
    let (id, full) = (p.id, p.spec.full());
    validate_vnet(p.name, body)?;
    let guid = p.keep("resourceGuid");
    let p = props(body);
    set_default(p, "subnets", json!([]));
    set_default(p, "virtualNetworkPeerings", json!([]));
    set_default(p, "enableDdosProtection", json!(false));
    p.insert("resourceGuid".into(), guid);
    fill_children(p, "subnets", id, &full, true, Some(NameRule::Network80))?;
    Ok(())
}

/// Public IP: address, SKU defaults.
pub(crate) fn prepare_public_ip(p: &Prep<'_>, body: &mut Value) -> Result<(), Reject> {
    validate_public_ip(p.id, body)?;
    let guid = p.keep("resourceGuid");
    let ip = p.kept("ipAddress").unwrap_or_else(|| {
        json!(format!(
            "20.{}.{}.{}",
            rand::random::<u8>(),
            rand::random::<u8>(),
            rand::random::<u8>().max(1)
        ))
    });
    if !body.get("sku").is_some_and(Value::is_object) {
        // The official `PublicIpAddressCreateDefaults` example: Basic, Dynamic.
        body["sku"] = json!({"name": "Basic", "tier": "Regional"});
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
    Ok(())
}

/// Load balancer: child ids, frontend addresses, back-references.
pub(crate) fn prepare_load_balancer(p: &Prep<'_>, body: &mut Value) -> Result<(), Reject> {
    let (st, id, full, children) = (p.st, p.id, p.spec.full(), p.spec.children);
    validate_load_balancer(p, body)?;
    let guid = p.keep("resourceGuid");
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
        "outboundRules",
    ] {
        set_default(p, c, json!([]));
    }
    for c in children {
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
                    .and_then(|(_, s)| s)
                    .and_then(|s| {
                        s.pointer("/properties/addressPrefix")
                            .and_then(Doc::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| "10.0.1.0/24".into());
                if !fp.contains_key("privateIPAddress") {
                    let ip = ipv4_in_prefix(&prefix, 4).unwrap_or_else(|| "10.0.1.4".into());
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
                // Computed afresh on every write (a PATCH re-runs this on stored ones).
                ip.remove("loadBalancingRules");
                ip.remove("inboundNatRules");
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_containment() {
        let net = parse_cidr("10.0.0.0/16").unwrap();
        assert!(net.contains(&parse_cidr("10.0.1.0/24").unwrap()));
        assert!(!net.contains(&parse_cidr("10.1.0.0/24").unwrap()));
        assert!(parse_cidr("10.0.0.0/24")
            .unwrap()
            .overlaps(&parse_cidr("10.0.0.128/25").unwrap()));
        assert!(!parse_cidr("10.0.0.0/25")
            .unwrap()
            .overlaps(&parse_cidr("10.0.0.128/25").unwrap()));
        assert!(parse_cidr("0.0.0.0/0")
            .unwrap()
            .contains(&parse_cidr("192.168.1.0/24").unwrap()));
        let (code, msg) = parse_cidr("10.0.0.1/16").unwrap_err();
        assert_eq!(code, "InvalidCIDRNotation");
        assert!(msg.contains("should be 10.0.0.0/16"), "{msg}");
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "x/8", "10.0.0.0/-1"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        assert!(parse_cidr("fd00::/8")
            .unwrap()
            .contains(&parse_cidr("fd00:1::/64").unwrap()));
        assert!(!parse_cidr("fd00::/8")
            .unwrap()
            .overlaps(&parse_cidr("10.0.0.0/8").unwrap()));
    }

    #[test]
    fn port_ranges() {
        for ok in ["*", "0", "65535", "80-443", "22"] {
            assert!(port_range_ok(ok), "{ok}");
        }
        for bad in ["65536", "80,81", "443-80", "any", "", "-1"] {
            assert!(!port_range_ok(bad), "{bad}");
        }
    }
}
