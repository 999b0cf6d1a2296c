//! Microsoft.Compute: virtual machine scale sets (validation, computed fields, instance
//! boot and views, their VMs), the VM size catalog behind the resource SKUs list, and core
//! usage against the configured quota.

use super::model::{obj_mut, props, set_default, Prep, Reject};
use super::regions;
use super::rules::check_zones;
use crate::doc::Doc;
use crate::state::{usage_total, Boot, Resource, State};
use crate::util::{now_ms, rfc3339};
use serde_json::{json, Value};

/// One VM size of the catalog: (name, vCPUs, memory GB, quota family, premium IO).
pub(crate) struct VmSize {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_gb: f64,
    pub family: &'static str,
    pub premium_io: bool,
    /// Regions where the size is not offered at all.
    pub not_in: &'static [&'static str],
    /// (region, zone) pairs where the size is not offered.
    pub not_in_zones: &'static [(&'static str, &'static str)],
}

const fn size(
    name: &'static str,
    vcpus: u32,
    memory_gb: f64,
    family: &'static str,
    premium_io: bool,
) -> VmSize {
    VmSize {
        name,
        vcpus,
        memory_gb,
        family,
        premium_io,
        not_in: &[],
        not_in_zones: &[],
    }
}

/// The simulator's VM size catalog. Sizes, vCPUs, memory and quota families are Azure's;
/// the restrictions are the simulator's own fixed examples of the two kinds Azure has
/// (a size missing from a region, a size missing from one zone of a region).
pub(crate) static VM_SIZES: &[VmSize] = &[
    size("Standard_B1s", 1, 1.0, "standardBSFamily", true),
    size("Standard_B2s", 2, 4.0, "standardBSFamily", true),
    size("Standard_B2ms", 2, 8.0, "standardBSFamily", true),
    size("Standard_A1_v2", 1, 2.0, "standardAv2Family", false),
    size("Standard_A2_v2", 2, 4.0, "standardAv2Family", false),
    size("Standard_D1_v2", 1, 3.5, "standardDv2Family", false),
    size("Standard_D2_v2", 2, 7.0, "standardDv2Family", false),
    size("Standard_DS1_v2", 1, 3.5, "standardDSv2Family", true),
    size("Standard_DS2_v2", 2, 7.0, "standardDSv2Family", true),
    size("Standard_D2s_v3", 2, 8.0, "standardDSv3Family", true),
    size("Standard_D4s_v3", 4, 16.0, "standardDSv3Family", true),
    size("Standard_D8s_v3", 8, 32.0, "standardDSv3Family", true),
    size("Standard_D16s_v3", 16, 64.0, "standardDSv3Family", true),
    size("Standard_D2_v5", 2, 8.0, "standardDv5Family", false),
    size("Standard_D4_v5", 4, 16.0, "standardDv5Family", false),
    size("Standard_D2s_v5", 2, 8.0, "standardDSv5Family", true),
    size("Standard_D4s_v5", 4, 16.0, "standardDSv5Family", true),
    size("Standard_D8s_v5", 8, 32.0, "standardDSv5Family", true),
    size("Standard_D16s_v5", 16, 64.0, "standardDSv5Family", true),
    size("Standard_D32s_v5", 32, 128.0, "standardDSv5Family", true),
    size("Standard_D2as_v5", 2, 8.0, "standardDASv5Family", true),
    size("Standard_D4as_v5", 4, 16.0, "standardDASv5Family", true),
    size("Standard_D8as_v5", 8, 32.0, "standardDASv5Family", true),
    size("Standard_E2s_v5", 2, 16.0, "standardESv5Family", true),
    size("Standard_E4s_v5", 4, 32.0, "standardESv5Family", true),
    size("Standard_E8s_v5", 8, 64.0, "standardESv5Family", true),
    size("Standard_F2s_v2", 2, 4.0, "standardFSv2Family", true),
    size("Standard_F4s_v2", 4, 8.0, "standardFSv2Family", true),
    size("Standard_F8s_v2", 8, 16.0, "standardFSv2Family", true),
    size(
        "Standard_HB176rs_v4",
        176,
        768.0,
        "standardHBv4Family",
        true,
    ),
    VmSize {
        name: "Standard_NC6s_v3",
        vcpus: 6,
        memory_gb: 112.0,
        family: "standardNCSv3Family",
        premium_io: true,
        not_in: &["westus", "northcentralus", "francecentral", "swedencentral"],
        not_in_zones: &[],
    },
    VmSize {
        name: "Standard_M8ms",
        vcpus: 8,
        memory_gb: 218.75,
        family: "standardMSFamily",
        premium_io: true,
        not_in: &[],
        not_in_zones: &[("westeurope", "3"), ("eastus", "3")],
    },
];

/// Finds a size by name (case-insensitive).
pub(crate) fn vm_size(name: &str) -> Option<&'static VmSize> {
    VM_SIZES.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// The zones of `location` where `size` is offered; `None` when it is not offered there.
pub(crate) fn offered_zones(size: &VmSize, location: &str) -> Option<Vec<&'static str>> {
    let loc = regions::normalize(location);
    if size.not_in.contains(&loc.as_str()) {
        return None;
    }
    let zones = regions::zones(&loc)?;
    Some(
        zones
            .iter()
            .copied()
            .filter(|z| !size.not_in_zones.contains(&(loc.as_str(), z)))
            .collect(),
    )
}

/// Largest instance count of a scale set.
const MAX_CAPACITY: u64 = 1000;
/// Largest instance count of a scale set in a single placement group.
const MAX_SINGLE_PLACEMENT: u64 = 100;
/// OS disk size range (GB) for a marketplace Linux image.
const DISK_GB: (u64, u64) = (30, 4095);
/// Admin user names Azure refuses (the Compute spec's `osProfile.adminUsername`).
const RESERVED_USERS: &[&str] = &[
    "administrator",
    "admin",
    "user",
    "user1",
    "test",
    "user2",
    "test1",
    "user3",
    "admin1",
    "1",
    "123",
    "a",
    "actuser",
    "adm",
    "admin2",
    "aspnet",
    "backup",
    "console",
    "david",
    "guest",
    "john",
    "owner",
    "root",
    "server",
    "sql",
    "support",
    "support_388945a0",
    "sys",
    "test2",
    "test3",
    "user4",
    "user5",
];
/// Passwords Azure refuses (the Compute spec's `osProfile.adminPassword`).
const RESERVED_PASSWORDS: &[&str] = &[
    "abc@123",
    "P@$$w0rd",
    "P@ssw0rd",
    "P@ssword123",
    "Pa$$word",
    "pass@word1",
    "Password!",
    "Password1",
    "Password22",
    "iloveyou!",
];

/// Compute's answer to a bad parameter; the message names the parameter.
fn invalid(message: String) -> Reject {
    ("InvalidParameter", message)
}

/// Whether `key` is an OpenSSH public key line Azure accepts: `ssh-rsa` (at least 2048
/// bits), `ssh-ed25519` or `ecdsa-sha2-nistp256/384/521`, whose base64 blob names the
/// same type.
pub(crate) fn ssh_key_ok(key: &str) -> bool {
    use base64::Engine;
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(blob) else {
        return false;
    };
    let mut fields = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + n {
            return false;
        }
        fields.push(&rest[4..4 + n]);
        rest = &rest[4 + n..];
    }
    if !rest.is_empty() || fields.first().copied() != Some(kind.as_bytes()) {
        return false;
    }
    match kind {
        "ssh-ed25519" => fields.len() == 2 && fields[1].len() == 32,
        "ssh-rsa" => {
            fields.len() == 3 && {
                let n = fields[2];
                let n = if n.first() == Some(&0) { &n[1..] } else { n };
                n.len() * 8 >= 2048
            }
        }
        "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" => fields.len() == 3,
        _ => false,
    }
}

fn password_ok(pw: &str) -> bool {
    let n = pw.chars().count();
    if !(6..=72).contains(&n)
        || pw.chars().any(char::is_control)
        || RESERVED_PASSWORDS.contains(&pw)
    {
        return false;
    }
    let classes = [
        pw.chars().any(|c| c.is_uppercase()),
        pw.chars().any(|c| c.is_lowercase()),
        pw.chars().any(|c| c.is_ascii_digit()),
        pw.chars().any(|c| !c.is_alphanumeric()),
    ];
    classes.iter().filter(|x| **x).count() >= 3
}

/// Scale set rules: a size from the catalog offered in the region and zones
/// (`SkuNotAvailable`), capacity within limits, the OS profile (admin name, password,
/// SSH keys and their path), the OS disk, and the core quota (`OperationNotAllowed`).
pub(crate) fn validate_vmss(p: &Prep<'_>, body: &Value) -> Result<(), Reject> {
    let loc = body.get("location").and_then(Value::as_str).unwrap_or("");
    let Some(sku) = body.pointer("/sku/name").and_then(Value::as_str) else {
        return Err(invalid(
            "Required parameter 'sku.name' is missing (null).".into(),
        ));
    };
    let Some(capacity) = body.pointer("/sku/capacity").and_then(Value::as_u64) else {
        return Err(invalid(
            "Required parameter 'sku.capacity' (a non-negative integer) is missing or invalid."
                .into(),
        ));
    };
    let zones = check_zones(body, p.id)?;
    let offered = vm_size(sku).and_then(|s| offered_zones(s, loc));
    let zone_ok = |o: &Vec<&str>| zones.iter().all(|z| o.contains(&z.as_str()));
    if !offered.as_ref().is_some_and(zone_ok) {
        return Err((
            "SkuNotAvailable",
            format!(
                "The requested size for resource '{}' is currently not available in location '{loc}' zones '{}' for subscription '{}'. Please try another size or deploy to a different location or zones. See https://aka.ms/azureskunotavailable for details.",
                p.id,
                zones.join(","),
                crate::SUBSCRIPTION_ID
            ),
        ));
    }
    if capacity > MAX_CAPACITY {
        return Err(invalid(format!("The value {capacity} of parameter 'sku.capacity' is out of range. The value must be between 0 and {MAX_CAPACITY}, inclusive."),
        ));
    }
    let single = body
        .pointer("/properties/singlePlacementGroup")
        .and_then(Value::as_bool)
        .unwrap_or(capacity <= MAX_SINGLE_PLACEMENT);
    if single && capacity > MAX_SINGLE_PLACEMENT {
        return Err(invalid(format!("The value {capacity} of parameter 'sku.capacity' is out of range for a scale set in a single placement group. The value must be between 0 and {MAX_SINGLE_PLACEMENT}, inclusive; set properties.singlePlacementGroup to false for more."),
        ));
    }
    let vmp = body.pointer("/properties/virtualMachineProfile");
    if let Some(os) = vmp.and_then(|v| v.get("osProfile")) {
        validate_os_profile(os)?;
    }
    if let Some(disk) = vmp.and_then(|v| v.pointer("/storageProfile/osDisk")) {
        if let Some(gb) = disk.get("diskSizeGB") {
            let gb = gb.as_u64().unwrap_or(0);
            if gb < DISK_GB.0 {
                return Err(invalid(format!("The specified disk size {gb} GB is smaller than the size of the corresponding disk in the VM image: {} GB. This is not allowed. Please choose equal or greater size or do not specify an explicit size.", DISK_GB.0),
                ));
            }
            if gb > DISK_GB.1 {
                return Err(invalid(format!("The value {gb} of parameter 'osDisk.diskSizeGB' is out of range. The value must be between 1 and {}, inclusive.", DISK_GB.1),
                ));
            }
        }
        if let Some(kind) = disk
            .pointer("/managedDisk/storageAccountType")
            .and_then(Value::as_str)
        {
            const KINDS: &[&str] = &[
                "Standard_LRS",
                "Premium_LRS",
                "StandardSSD_LRS",
                "UltraSSD_LRS",
                "Premium_ZRS",
                "StandardSSD_ZRS",
                "PremiumV2_LRS",
            ];
            if !KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
                return Err(invalid(format!("The value '{kind}' of parameter 'osDisk.managedDisk.storageAccountType' is not valid. Allowed values are {}.", KINDS.join(", ")),
                ));
            }
            let premium = kind.to_ascii_lowercase().starts_with("premium");
            if premium && !vm_size(sku).is_some_and(|s| s.premium_io) {
                return Err(invalid(format!("Requested operation cannot be performed because the VM size {sku} does not support the storage account type {kind} of disk 'osDisk'. Consider updating the VM to a size that supports Premium storage."),
                ));
            }
        }
    }
    check_quota(p, body, sku, capacity)
}

/// Admin name, password and SSH key rules of a Linux OS profile.
fn validate_os_profile(os: &Value) -> Result<(), Reject> {
    let user = os
        .get("adminUsername")
        .and_then(Value::as_str)
        .unwrap_or("");
    let user_ok = (1..=64).contains(&user.chars().count())
        && !RESERVED_USERS.iter().any(|r| r.eq_ignore_ascii_case(user));
    if !user_ok {
        return Err(invalid(
            "The Admin Username specified is not allowed.".into(),
        ));
    }
    if let Some(pw) = os.get("adminPassword") {
        if !pw.as_str().is_some_and(password_ok) {
            return Err(invalid("The supplied password must be between 6-72 characters long and must satisfy at least 3 of password complexity requirements from the following: 1) Contains an uppercase character 2) Contains a lowercase character 3) Contains a numeric digit 4) Contains a special character 5) Control characters are not allowed".into(),
            ));
        }
    }
    let linux = os.get("linuxConfiguration");
    let keys = linux
        .and_then(|l| l.pointer("/ssh/publicKeys"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let no_password = linux
        .and_then(|l| l.get("disablePasswordAuthentication"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if no_password && keys.is_empty() {
        return Err(invalid("Authentication using either SSH or by user name and password must be enabled in Linux profile.".into(),
        ));
    }
    if !no_password && linux.is_some() && os.get("adminPassword").is_none() && keys.is_empty() {
        return Err(invalid(
            "Required parameter 'adminPassword' is missing (null).".into(),
        ));
    }
    for k in &keys {
        let data = k.get("keyData").and_then(Value::as_str).unwrap_or("");
        if !ssh_key_ok(data) {
            return Err(invalid(
                "The value of parameter linuxConfiguration.ssh.publicKeys.keyData is invalid."
                    .into(),
            ));
        }
        let path = k.get("path").and_then(Value::as_str).unwrap_or("");
        let want = format!("/home/{user}/.ssh/authorized_keys");
        if path != want {
            return Err(invalid(format!("Destination path for SSH public keys is currently limited to its default value {want} due to a known issue in Linux provisioning agent."),
            ));
        }
    }
    Ok(())
}

/// What one scale set adds to its location's usage: (normalized location,
/// quota name → amount); `None` for anything else and for a scale set being
/// deleted.
pub(crate) fn usage_of(r: &Resource) -> Option<(String, Vec<(String, u64)>)> {
    if r.state == "Deleting" || !r.rtype.eq_ignore_ascii_case(super::VMSS_TYPE) {
        return None;
    }
    let loc = regions::normalize(r.body.get("location").and_then(Doc::as_str).unwrap_or(""));
    let sku = r
        .body
        .pointer("/sku/name")
        .and_then(Doc::as_str)
        .unwrap_or("");
    let n = r
        .body
        .pointer("/sku/capacity")
        .and_then(Doc::as_u64)
        .unwrap_or(0);
    let mut out = vec![
        ("virtualMachineScaleSets".to_string(), 1),
        ("virtualMachines".to_string(), n),
    ];
    if let Some(s) = vm_size(sku) {
        out.push((s.family.to_string(), n * u64::from(s.vcpus)));
        out.push(("cores".to_string(), n * u64::from(s.vcpus)));
    }
    Some((loc, out))
}

/// How much of usage `name` (`cores`, a VM family, `virtualMachines`,
/// `virtualMachineScaleSets`) the scale sets in `location` use, not counting
/// `except`.
pub(crate) fn in_use(st: &State, location: &str, name: &str, except: Option<&str>) -> u64 {
    let loc = regions::normalize(location);
    let total = st.resources.total(&usage_total(&loc, name));
    let excepted = except
        .and_then(|id| st.resources.get(&id.to_ascii_lowercase()))
        .filter(|r| r.rtype.eq_ignore_ascii_case(super::VMSS_TYPE))
        .and_then(usage_of)
        .filter(|(l, _)| *l == loc)
        .and_then(|(_, amounts)| amounts.into_iter().find(|(n, _)| n == name))
        .map_or(0, |(_, n)| n);
    total.saturating_sub(excepted)
}

/// The limit of quota `name` (a family, `cores`, `virtualMachines`, …).
pub(crate) fn quota_limit(config: &crate::SimConfig, name: &str) -> u64 {
    config
        .quotas
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .unwrap_or(config.default_quota)
}

fn check_quota(p: &Prep<'_>, body: &Value, sku: &str, capacity: u64) -> Result<(), Reject> {
    let Some(size) = vm_size(sku) else {
        return Ok(());
    };
    let loc = body.get("location").and_then(Value::as_str).unwrap_or("");
    let need = capacity * u64::from(size.vcpus);
    for (name, label) in [
        (size.family, size.family.to_string()),
        ("cores", "Total Regional Cores".to_string()),
    ] {
        let limit = quota_limit(p.config, name);
        let current = in_use(p.st, loc, name, Some(p.id));
        if current + need > limit {
            return Err((
                "OperationNotAllowed",
                format!(
                    "Operation could not be completed as it results in exceeding approved {label} quota. Additional details - Deployment Model: Resource Manager, Location: {}, Current Limit: {limit}, Current Usage: {current}, Additional Required: {need}, (Minimum) New Limit Required: {}. Submit a request for Quota increase at https://aka.ms/ProdportalCRP/#blade/Microsoft_Azure_Capacity/UsageAndQuota.ReactView by specifying parameters listed in the ‘Details’ section for deployment to succeed.",
                    regions::normalize(loc),
                    current + need
                ),
            ));
        }
    }
    Ok(())
}

/// `GET /subscriptions/{sub}/providers/Microsoft.Compute/skus`: the catalog as the
/// resource SKUs list (`$filter=location eq '…'` narrows it to one region).
pub(crate) fn skus(filter_location: Option<&str>) -> Value {
    let mut value = Vec::new();
    for s in VM_SIZES {
        for (loc, _) in regions::REGIONS {
            if filter_location.is_some_and(|f| regions::normalize(f) != *loc) {
                continue;
            }
            let mut restrictions = Vec::new();
            let offered = offered_zones(s, loc);
            match &offered {
                None => restrictions.push(json!({
                    "type": "Location",
                    "values": [loc],
                    "restrictionInfo": {"locations": [loc]},
                    "reasonCode": "NotAvailableForSubscription",
                })),
                Some(z) => {
                    let all = regions::zones(loc).unwrap_or(&[]);
                    let missing: Vec<&str> =
                        all.iter().copied().filter(|x| !z.contains(x)).collect();
                    if !missing.is_empty() {
                        restrictions.push(json!({
                            "type": "Zone",
                            "values": [loc],
                            "restrictionInfo": {"locations": [loc], "zones": missing},
                            "reasonCode": "NotAvailableForSubscription",
                        }));
                    }
                }
            }
            let zones: Vec<&str> = offered.clone().unwrap_or_default();
            let (tier, short) = s.name.split_once('_').unwrap_or(("Standard", s.name));
            value.push(json!({
                "resourceType": "virtualMachines",
                "name": s.name,
                "tier": tier,
                "size": short,
                "family": s.family,
                "locations": [loc],
                "locationInfo": [{"location": loc, "zones": zones, "zoneDetails": []}],
                "capabilities": [
                    {"name": "vCPUs", "value": s.vcpus.to_string()},
                    {"name": "vCPUsAvailable", "value": s.vcpus.to_string()},
                    {"name": "MemoryGB", "value": s.memory_gb.to_string()},
                    {"name": "PremiumIO", "value": if s.premium_io { "True" } else { "False" }},
                    {"name": "HyperVGenerations", "value": "V1,V2"},
                    {"name": "OSVhdSizeMB", "value": "1047552"},
                    {"name": "LowPriorityCapable", "value": "True"},
                ],
                "restrictions": restrictions,
            }));
        }
    }
    json!({"value": value})
}

/// `GET …/providers/Microsoft.Compute/locations/{loc}/usages`: cores per family and in
/// total, scale sets and VMs, against the configured quota.
pub(crate) fn usages(st: &State, config: &crate::SimConfig, location: &str) -> Value {
    let mut names: Vec<(String, String)> = vec![
        ("cores".into(), "Total Regional vCPUs".into()),
        ("virtualMachines".into(), "Virtual Machines".into()),
        (
            "virtualMachineScaleSets".into(),
            "Virtual Machine Scale Sets".into(),
        ),
    ];
    let mut families: Vec<&str> = VM_SIZES.iter().map(|s| s.family).collect();
    families.sort_unstable();
    families.dedup();
    for f in families {
        names.push((f.to_string(), format!("{f} vCPUs")));
    }
    let value: Vec<Value> = names
        .into_iter()
        .map(|(n, label)| {
            json!({
                "unit": "Count",
                "currentValue": in_use(st, location, &n, None),
                "limit": quota_limit(config, &n),
                "name": {"value": n, "localizedValue": label},
            })
        })
        .collect();
    json!({"value": value})
}

/// A UUID derived from `text` (the same text gives the same UUID).
fn stable_uuid(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut halves = [0u64; 2];
    for (i, h) in halves.iter_mut().enumerate() {
        let mut s = std::collections::hash_map::DefaultHasher::new();
        (i, text).hash(&mut s);
        *h = s.finish();
    }
    uuid::Uuid::from_u64_pair(halves[0], halves[1]).to_string()
}

/// The instances of a scale set as `virtualMachines` child resources (`GET …/virtualMachines`).
pub(crate) fn vms(r: &Resource) -> Vec<Value> {
    let capacity = r
        .body
        .pointer("/sku/capacity")
        .and_then(Doc::as_u64)
        .unwrap_or(0);
    let zones: Vec<Value> = r
        .body
        .get("zones")
        .and_then(Doc::as_array)
        .map(|z| z.iter().map(Doc::to_value).collect())
        .unwrap_or_default();
    (0..capacity)
        .map(|i| {
            let mut vm = json!({
                "id": format!("{}/virtualMachines/{i}", r.id),
                "name": format!("{}_{i}", r.name),
                "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
                "location": r.body.get("location").map(Doc::to_value),
                "instanceId": i.to_string(),
                "sku": r.body.get("sku").map(Doc::to_value),
                "properties": {
                    "latestModelApplied": true,
                    "vmId": stable_uuid(&format!("{}/{i}", r.id)),
                    "provisioningState": r.state,
                    "hardwareProfile": {"vmSize": r.body.pointer("/sku/name").map(Doc::to_value)},
                    "osProfile": {
                        "computerName": format!("{}{}", r.body.pointer("/properties/virtualMachineProfile/osProfile/computerNamePrefix").and_then(Doc::as_str).unwrap_or("vm"), crate::kube::base36(i)),
                        "adminUsername": r.body.pointer("/properties/virtualMachineProfile/osProfile/adminUsername").map(Doc::to_value),
                    },
                },
            });
            if !zones.is_empty() {
                vm["zones"] = json!([zones[(i as usize) % zones.len()]]);
            }
            vm
        })
        .collect()
}

/// One instance's view (`GET …/virtualMachines/{id}/instanceView`), from the scale set's boot.
pub(crate) fn vm_instance_view(r: &Resource, index: u64) -> Value {
    let view = instance_view(r);
    let ready = view
        .pointer("/virtualMachine/statusesSummary")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|s| s["code"] == "ProvisioningState/succeeded")
        })
        .and_then(|s| s["count"].as_u64())
        .unwrap_or(0);
    let time = rfc3339(now_ms());
    let booted = index < ready;
    let statuses = if booted {
        json!([
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": time},
            {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"},
        ])
    } else {
        json!([{"code": "ProvisioningState/creating", "level": "Info", "displayStatus": "Creating", "time": time}])
    };
    let extensions: Vec<Value> = view
        .get("extensions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let failed = e["statusesSummary"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|x| x["code"] == "ProvisioningState/failed"));
                    let code = if !booted {
                        "ProvisioningState/creating"
                    } else if failed {
                        "ProvisioningState/failed"
                    } else {
                        "ProvisioningState/succeeded"
                    };
                    json!({"name": e["name"], "statuses": [{"code": code, "level": if failed { "Error" } else { "Info" }}]})
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "platformUpdateDomain": index % 5,
        "platformFaultDomain": index % 2,
        "computerName": format!("{}{}", r.body.pointer("/properties/virtualMachineProfile/osProfile/computerNamePrefix").and_then(Doc::as_str).unwrap_or("vm"), crate::kube::base36(index)),
        "osName": "ubuntu",
        "osVersion": "24.04",
        "vmAgent": {"vmAgentVersion": "2.2.53", "statuses": []},
        "extensions": extensions,
        "statuses": statuses,
    })
}

/// A system-assigned identity gets its principal id (a new GUID, kept across
/// updates while the scale set keeps the identity) and the tenant; each
/// user-assigned identity must exist and gets its ids.
fn set_identity(p: &Prep<'_>, body: &mut Value) -> Result<(), Reject> {
    if let Some(identity) = body.get_mut("identity") {
        super::identity::attach(p.st, p.id, identity)?;
    }
    let Some(identity) = body.get_mut("identity").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let system = identity
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.contains("SystemAssigned"));
    if !system {
        identity.remove("principalId");
        identity.remove("tenantId");
        return Ok(());
    }
    let kept = p
        .existing
        .and_then(|e| e.body.pointer("/identity/principalId").map(Doc::to_value));
    identity.insert(
        "principalId".into(),
        kept.unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string())),
    );
    identity.insert("tenantId".into(), json!(crate::TENANT_ID));
    Ok(())
}

/// The principal id of the system-assigned identity of scale set `vmss` (by name).
pub(crate) fn principal_of_scale_set(st: &State, vmss: &str) -> Option<String> {
    st.scale_set(vmss)
        .and_then(|r| r.body.pointer("/identity/principalId"))
        .and_then(Doc::as_str)
        .map(str::to_string)
}

/// Scale set: unique id, identity, OS profile and NIC defaults.
pub(crate) fn prepare_vmss(p: &Prep<'_>, body: &mut Value) -> Result<(), Reject> {
    validate_vmss(p, body)?;
    let unique = p.keep("uniqueId");
    let created = p
        .kept("timeCreated")
        .unwrap_or_else(|| json!(crate::util::rfc3339(crate::util::now_ms())));
    let sku_ok = body.pointer("/sku/name").is_some_and(Value::is_string)
        && body.pointer("/sku/capacity").is_some_and(Value::is_u64);
    if !sku_ok {
        return Err((
            "InvalidParameter",
            "Required parameters 'sku.name' and 'sku.capacity' (a non-negative integer) are missing or invalid.".into(),
        ));
    }
    set_identity(p, body)?;
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
            if !os.contains_key("windowsConfiguration") && !os.contains_key("linuxConfiguration") {
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
    Ok(())
}

/// Decides how the instances of a VMSS boot after its operation completed at `done_ms`:
/// each extension's script URLs are fetched from the blob store with the given
/// credential (the account key, or a managed identity and its role assignments).
pub(crate) fn compute_boot(st: &State, r: &Resource, done_ms: i64, lro_ms: i64) -> Boot {
    let target = r
        .body
        .pointer("/sku/capacity")
        .and_then(Doc::as_u64)
        .unwrap_or(0) as u32;
    let booted = match &r.boot {
        Some(b) if done_ms >= b.ready_at_ms => b.target,
        Some(b) => b.booted,
        None => 0,
    }
    .min(target);
    let mut extensions = Vec::new();
    let identity = r
        .body
        .get("identity")
        .map(Doc::to_value)
        .unwrap_or_default();
    if let Some(Value::Array(exts)) = r
        .body
        .pointer("/properties/virtualMachineProfile/extensionProfile/extensions")
        .map(Doc::to_value)
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
                if let Err(e) = crate::blob::fetch_for_vm(st, &identity, prot, u) {
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

/// One extension's instance counts: (name, succeeded, failed, creating, failure message).
type ExtCounts = (String, u32, u32, u32, Option<String>);

/// The VMSS instance view: instance and extension status summaries derived from the boot.
pub(crate) fn instance_view(r: &Resource) -> Value {
    let now = now_ms();
    let capacity = r
        .body
        .pointer("/sku/capacity")
        .and_then(Doc::as_u64)
        .unwrap_or(0) as u32;
    let ext_names: Vec<String> = r
        .body
        .pointer("/properties/virtualMachineProfile/extensionProfile/extensions")
        .and_then(Doc::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    e.get("name")
                        .and_then(Doc::as_str)
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn blob(fields: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    #[test]
    fn ssh_keys() {
        let ed = blob(&[b"ssh-ed25519", &[7u8; 32]]);
        assert!(ssh_key_ok(&format!("ssh-ed25519 {ed} me@host")));
        assert!(ssh_key_ok(&format!("ssh-ed25519 {ed}")));
        // Wrong type name inside the blob, short key, trailing garbage, not base64.
        assert!(!ssh_key_ok(&format!("ssh-rsa {ed}")));
        assert!(!ssh_key_ok(&format!(
            "ssh-ed25519 {}",
            blob(&[b"ssh-ed25519", &[7u8; 31]])
        )));
        assert!(!ssh_key_ok(&format!("ssh-ed25519 {ed}AAAA")));
        assert!(!ssh_key_ok("ssh-ed25519 not-base64!"));
        assert!(!ssh_key_ok(""));
        // RSA: at least 2048 bits.
        let mut n = vec![0u8];
        n.extend_from_slice(&[0xC5u8; 256]);
        assert!(ssh_key_ok(&format!(
            "ssh-rsa {}",
            blob(&[b"ssh-rsa", &[1, 0, 1], &n])
        )));
        assert!(!ssh_key_ok(&format!(
            "ssh-rsa {}",
            blob(&[b"ssh-rsa", &[1, 0, 1], &[0xC5u8; 128]])
        )));
    }

    #[test]
    fn passwords() {
        assert!(password_ok("Corr3ct-Horse"));
        assert!(password_ok("abc_DEF"));
        for bad in [
            "Ab1",
            "password",
            "PASSWORD1",
            "P@ssw0rd",
            &"Aa1!".repeat(19),
        ] {
            assert!(!password_ok(bad), "{bad}");
        }
    }

    #[test]
    fn catalog_restrictions() {
        let m8 = vm_size("standard_m8ms").unwrap();
        assert_eq!(offered_zones(m8, "West Europe").unwrap(), vec!["1", "2"]);
        assert!(offered_zones(vm_size("Standard_NC6s_v3").unwrap(), "westus").is_none());
        assert_eq!(
            offered_zones(vm_size("Standard_D2s_v5").unwrap(), "westus").unwrap(),
            Vec::<&str>::new()
        );
        assert!(offered_zones(vm_size("Standard_D2s_v5").unwrap(), "atlantis").is_none());
    }
}
