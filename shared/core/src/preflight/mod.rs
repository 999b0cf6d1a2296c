//! Pre-flight: before anything is created, check with reads only everything
//! that can be known to fail later, and refuse the job with every problem at
//! once.
//!
//! # Expected flow
//! [`Engine::preflight`] makes two reads of its own, whatever the spec or
//! the group holds: the Compute usages of the spec's region and the group's
//! resources named after the job; and four reads that jobs following each
//! other closely share (the `cache` module): the region's resource SKUs
//! list, the group's VNets with their address spaces, the resource group
//! (while it was found) and the caller's permissions on the group (while
//! they allowed everything). It hands what it read to the pure rules below:
//! - [`check_sizes`]: each VM size is offered in the region and in every
//!   zone its pool asks for (the SKU list and its `Location`/`Zone` restrictions);
//! - [`check_quota`]: enough free cores per VM family and in the region for
//!   the master plus every pool at `min` (a problem), and at `max` (a warning);
//! - [`check_names`]: no name the job will create exists already unless it
//!   carries this job's tag;
//! - [`check_vnets`]: no other VNet of the group overlaps the spec's VNet;
//! - [`check_existing_network`]: with `network.existing` (one more read, the
//!   VNet), the VNet and both subnets exist, the VNet is in the job's
//!   region, each subnet has room for its nodes, and the VNet's address
//!   space leaves the cluster's pod and service ranges free;
//! - [`denied_actions`]: the caller may do every action the flow performs on
//!   the group (`flotilla_azure::actions::resource_group_actions`).
//!
//! It runs in two places with this same code: at the edge (HTTP `submit`,
//! `flotilla up`) to answer 400 / exit 2 with nothing stored, and as the
//! job's first action in the engine (`stage`, before its first write) for
//! jobs that skipped the edge (Service Bus, Event Grid): problems end the
//! job `Rejected`, with nothing created and nothing to compensate.
//!
//! # Guarantees
//! Reads only: nothing is written to Azure, and at the edge nothing is
//! stored. Every problem found is reported, not only the first. The rules
//! are pure, so the same reads always give the same verdict. A shared read
//! may be a few seconds old (see the `cache` module for what that can let
//! pass); a VNet overlap refuses a job only on a listing made for it.
//!
//! # Errors
//! A retryable read error (429, 5xx, timeout) is returned as is: the edge
//! answers 500 and the engine retries the step through its usual backoff; a
//! job is never rejected on a transient error. A terminal read error (say a
//! role without the subscription-scope `Microsoft.Compute/skus/read`) does
//! not refuse the job either: that check becomes a `NotChecked` warning.

mod cache;

use cache::GroupCheck;
pub use cache::{
    GroupCache, SkuCache, VnetCache, GROUP_CHECK_TTL, PASSED_VNET_TTL, SKU_CATALOG_TTL,
    VNET_LISTING_TTL,
};

use crate::engine::Engine;
use crate::names;
use crate::ports::{Listed, Permission, ResourceSku, Usage};
use crate::saga::{Saga, StepName};
use crate::spec::ClusterSpec;
use crate::steps::{self, Op};
use flotilla_azure::models::api;
use flotilla_azure::{AzureError, ResourceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One finding, naming the spec field it is about (`workerPools[1].instanceType`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON path in the spec (`resourceGroup`, `master.size`, `network.vnetCidr`).
    pub field: String,
    /// Stable code: `SizeNotOffered`, `ZoneNotOffered`, `QuotaExceeded`,
    /// `ResourceGroupNotFound`, `NameTaken`, `AddressSpaceOverlap`,
    /// `PermissionDenied`; warnings `QuotaShortAtMax`, `NotChecked`.
    pub code: String,
    pub message: String,
}

impl Problem {
    fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Problem {
        Problem {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The verdict: the job may start when `problems` is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preflight {
    /// Each reason the job would fail; any refuses it.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// Worth knowing, never a refusal.
    #[serde(default)]
    pub warnings: Vec<Problem>,
}

impl Preflight {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// Every problem on one line: `field: message; field: message`.
    pub fn summary(&self) -> String {
        self.problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One group of identical VMs the spec asks for.
struct Group {
    /// `master` or `workerPools[i]`.
    path: String,
    /// The field that sets its count (`master.size`, `workerPools[i].min`).
    min_field: String,
    max_field: String,
    size: String,
    zones: Vec<String>,
    min: u32,
    max: u32,
}

fn groups(spec: &ClusterSpec) -> Vec<Group> {
    let mut out = vec![Group {
        path: "master".into(),
        min_field: "master.size".into(),
        max_field: "master.size".into(),
        size: spec.master.instance_type.clone(),
        zones: vec![],
        min: spec.master.size,
        max: spec.master.size,
    }];
    for (i, p) in spec.worker_pools.iter().enumerate() {
        out.push(Group {
            path: format!("workerPools[{i}]"),
            min_field: format!("workerPools[{i}].min"),
            max_field: format!("workerPools[{i}].max"),
            size: p.instance_type.clone(),
            zones: p.zones.clone(),
            min: p.min,
            max: p.max,
        });
    }
    out
}

/// The VM size `name` as listed for `location` (any case).
fn find_sku<'a>(skus: &'a [ResourceSku], name: &str, location: &str) -> Option<&'a ResourceSku> {
    skus.iter().find(|s| {
        s.resource_type.eq_ignore_ascii_case("virtualMachines")
            && s.name.eq_ignore_ascii_case(name)
            && (s.locations.is_empty()
                || s.locations.iter().any(|l| l.eq_ignore_ascii_case(location)))
    })
}

fn restricted_in_location(sku: &ResourceSku, location: &str) -> bool {
    sku.restrictions.iter().any(|r| {
        r.kind.eq_ignore_ascii_case("Location")
            && (r.values.iter().any(|v| v.eq_ignore_ascii_case(location))
                || r.restriction_info
                    .locations
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case(location)))
    })
}

/// Zones of `location` the size is offered in: listed in `locationInfo` and
/// not named by a `Zone` restriction.
fn offered_zones(sku: &ResourceSku, location: &str) -> Vec<String> {
    let restricted: Vec<&String> = sku
        .restrictions
        .iter()
        .filter(|r| r.kind.eq_ignore_ascii_case("Zone"))
        .flat_map(|r| r.restriction_info.zones.iter())
        .collect();
    sku.location_info
        .iter()
        .filter(|l| l.location.eq_ignore_ascii_case(location))
        .flat_map(|l| l.zones.iter())
        .filter(|z| !restricted.contains(z))
        .cloned()
        .collect()
}

/// Rule: each VM size is offered in the region, and in every zone asked for.
pub fn check_sizes(spec: &ClusterSpec, skus: &[ResourceSku]) -> Vec<Problem> {
    let loc = &spec.location;
    let mut out = vec![];
    for g in groups(spec) {
        let field = format!("{}.instanceType", g.path);
        let Some(sku) = find_sku(skus, &g.size, loc) else {
            out.push(Problem::new(
                field,
                "SizeNotOffered",
                format!("VM size {} is not offered in {loc}", g.size),
            ));
            continue;
        };
        if restricted_in_location(sku, loc) {
            out.push(Problem::new(
                field,
                "SizeNotOffered",
                format!(
                    "VM size {} is not available to this subscription in {loc}",
                    g.size
                ),
            ));
            continue;
        }
        let offered = offered_zones(sku, loc);
        let missing: Vec<&str> = g
            .zones
            .iter()
            .filter(|z| !offered.contains(z))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            out.push(Problem::new(
                format!("{}.zones", g.path),
                "ZoneNotOffered",
                format!(
                    "VM size {} is not offered in zone(s) {} of {loc} (offered: {})",
                    g.size,
                    missing.join(", "),
                    if offered.is_empty() {
                        "none".into()
                    } else {
                        offered.join(", ")
                    }
                ),
            ));
        }
    }
    out
}

/// Rule: free cores per VM family and in the region (`cores`) cover the
/// master plus every pool at `min`, else a `QuotaExceeded` problem naming the
/// count field of the group (master, then pools in order) that passes the
/// free cores; at `max`, else a `QuotaShortAtMax` warning naming that pool's
/// `max`. Sizes not offered in the region are left to [`check_sizes`]; a
/// usage the list does not report is not checked.
///
/// Returns (problems, warnings).
pub fn check_quota(
    spec: &ClusterSpec,
    skus: &[ResourceSku],
    usages: &[Usage],
) -> (Vec<Problem>, Vec<Problem>) {
    #[derive(Default)]
    struct Need {
        at_min: i64,
        at_max: i64,
        /// The field whose count first passes the free cores, at min and at max.
        over_min: Option<String>,
        over_max: Option<String>,
        parts: Vec<String>,
    }
    let free = |name: &str| {
        usages
            .iter()
            .find(|u| u.name.value.eq_ignore_ascii_case(name))
            .map(|u| ((u.limit - u.current_value).max(0), u))
    };
    let mut needs: BTreeMap<String, Need> = BTreeMap::new();
    for g in groups(spec) {
        let Some(sku) = find_sku(skus, &g.size, &spec.location)
            .filter(|s| !restricted_in_location(s, &spec.location))
        else {
            continue;
        };
        let vcpus: i64 = sku
            .capability("vCPUs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let Some(family) = sku.family.clone() else {
            continue;
        };
        for name in [family, "cores".to_string()] {
            let Some((available, _)) = free(&name) else {
                continue;
            };
            let n = needs.entry(name).or_default();
            n.at_min += i64::from(g.min) * vcpus;
            n.at_max += i64::from(g.max) * vcpus;
            n.parts.push(format!("{} {}×{vcpus}", g.path, g.min));
            if n.at_min > available && n.over_min.is_none() {
                n.over_min = Some(g.min_field.clone());
            }
            if n.at_max > available && n.over_max.is_none() {
                n.over_max = Some(g.max_field.clone());
            }
        }
    }
    let (mut problems, mut warnings) = (vec![], vec![]);
    for (name, need) in &needs {
        let Some((available, u)) = free(name) else {
            continue;
        };
        let label = if name == "cores" {
            format!("total regional vCPUs in {}", spec.location)
        } else {
            format!("{name} vCPUs in {}", spec.location)
        };
        if let Some(field) = &need.over_min {
            problems.push(Problem::new(
                field.clone(),
                "QuotaExceeded",
                format!(
                    "needs {} {label} at the pools' min ({}), {available} free (limit {}, in use {})",
                    need.at_min,
                    need.parts.join(" + "),
                    u.limit,
                    u.current_value
                ),
            ));
        } else if let Some(field) = &need.over_max {
            warnings.push(Problem::new(
                field.clone(),
                "QuotaShortAtMax",
                format!(
                    "every pool at its max needs {} {label}, {available} free (limit {}, in use {}): scale-out will stop short",
                    need.at_max, u.limit, u.current_value
                ),
            ));
        }
    }
    (problems, warnings)
}

/// Whether an action pattern (`*`, `Microsoft.Network/*`, `*/read`) matches
/// `action`, as Azure RBAC compares them: case-insensitive, `*` any text.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let mut rest = a.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

/// Rule: the actions of `required` that no permission entry allows (an entry
/// allows an action matching one of its `actions` and none of its `notActions`).
pub fn denied_actions<'a>(
    permissions: &[Permission],
    required: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    required
        .into_iter()
        .filter(|action| {
            !permissions.iter().any(|p| {
                p.actions.iter().any(|a| action_matches(a, action))
                    && !p.not_actions.iter().any(|n| action_matches(n, action))
            })
        })
        .collect()
}

/// An IPv4 CIDR as (first address, last address); `None` if unreadable.
pub fn cidr_range(cidr: &str) -> Option<(u32, u32)> {
    let (addr, len) = cidr.trim().split_once('/')?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let ip: std::net::Ipv4Addr = addr.parse().ok()?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let first = u32::from(ip) & mask;
    Some((first, first | !mask))
}

/// Whether two IPv4 CIDRs share an address (unreadable ones never do).
pub fn cidrs_overlap(a: &str, b: &str) -> bool {
    match (cidr_range(a), cidr_range(b)) {
        (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 && b0 <= a1,
        _ => false,
    }
}

/// Addresses of a subnet prefix that Azure lets VMs use.
fn usable(prefix: &str) -> Option<u64> {
    let (_, len) = prefix.split_once('/')?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((1u64 << (32 - len)).saturating_sub(crate::spec::SUBNET_RESERVED_ADDRESSES))
}

/// Rule (`network.existing`): `vnet` is the existing VNet as ARM returns
/// it (`None`: not found). It must be in the spec's region and hold both
/// subnets; the control-plane subnet must have room for `master.size`, the
/// worker subnet for every pool at `max`; its address space must not
/// overlap the pod and service ranges the nodes will use.
pub fn check_existing_network(
    spec: &ClusterSpec,
    vnet: Option<&serde_json::Value>,
) -> Vec<Problem> {
    let Some(e) = &spec.network.existing else {
        return vec![];
    };
    let field = |f: &str| format!("network.existing.{f}");
    let Some(vnet) = vnet else {
        return vec![Problem::new(
            field("vnetId"),
            "VNetNotFound",
            format!("{} does not exist", e.vnet_id),
        )];
    };
    let mut out = vec![];
    let location = vnet.get("location").and_then(|l| l.as_str()).unwrap_or("");
    let norm = |s: &str| s.replace(' ', "").to_ascii_lowercase();
    if norm(location) != norm(&spec.location) {
        out.push(Problem::new(
            field("vnetId"),
            "VNetInOtherRegion",
            format!(
                "the VNet is in {location}, the job in {} (a scale set joins only a VNet of its own region)",
                spec.location
            ),
        ));
    }
    let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let space = strings(vnet.pointer("/properties/addressSpace/addressPrefixes"));
    let (pods, services) = steps::node::cluster_ranges(&spec.network.vnet_cidr);
    for range in [pods, services] {
        if let Some(p) = space.iter().find(|p| cidrs_overlap(p, range)) {
            out.push(Problem::new(
                field("vnetId"),
                "AddressSpaceOverlap",
                format!("the VNet's {p} overlaps {range}, which the cluster uses for its pods or services"),
            ));
        }
    }
    let subnets = vnet
        .pointer("/properties/subnets")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    let pools: u64 = spec.worker_pools.iter().map(|p| u64::from(p.max)).sum();
    for (f, name, need, what) in [
        (
            "controlPlaneSubnet",
            &e.control_plane_subnet,
            u64::from(spec.master.size),
            "master.size",
        ),
        ("workerSubnet", &e.worker_subnet, pools, "the pools' max"),
    ] {
        let Some(subnet) = subnets
            .iter()
            .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name.as_str()))
        else {
            out.push(Problem::new(
                field(f),
                "SubnetNotFound",
                format!("the VNet has no subnet '{name}'"),
            ));
            continue;
        };
        let mut prefixes = strings(subnet.pointer("/properties/addressPrefixes"));
        if let Some(p) = subnet
            .pointer("/properties/addressPrefix")
            .and_then(|p| p.as_str())
        {
            prefixes.push(p.to_string());
        }
        let room: u64 = prefixes.iter().filter_map(|p| usable(p)).sum();
        if room < need {
            out.push(Problem::new(
                field(f),
                "SubnetTooSmall",
                format!(
                    "subnet '{name}' ({}) leaves {room} addresses (Azure keeps {}); {what} needs {need}",
                    prefixes.join(", "),
                    crate::spec::SUBNET_RESERVED_ADDRESSES
                ),
            ));
        }
    }
    out
}

/// Rule: no name the job will create exists unless it carries this job's tag.
/// `planned` are the ARM ids the steps would PUT, `listed` the group's resources.
pub fn check_names(job: &str, planned: &[ResourceId], listed: &[Listed]) -> Vec<Problem> {
    let mut out = vec![];
    for id in planned {
        let id_text = id.to_string();
        let Some(found) = listed.iter().find(|l| l.id.eq_ignore_ascii_case(&id_text)) else {
            continue;
        };
        let owner = found
            .tags
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(names::TAG_JOB))
            .map(|(_, v)| v.as_str());
        if owner == Some(job) {
            continue;
        }
        let whose = match owner {
            Some(other) => format!("job {other}"),
            None => "something outside flotilla".into(),
        };
        out.push(Problem::new(
            "name",
            "NameTaken",
            format!(
                "{} {} already exists in resource group {} and belongs to {whose}",
                found.resource_type.as_deref().unwrap_or("resource"),
                id.name(),
                id.group().unwrap_or_default()
            ),
        ));
    }
    out
}

/// Rule: no other VNet of the group (`(id, address prefixes)`) overlaps the
/// spec's VNet. The job's own VNet (`own`) is skipped.
pub fn check_vnets(
    spec: &ClusterSpec,
    own: &ResourceId,
    vnets: &[(String, Vec<String>)],
) -> Vec<Problem> {
    let own = own.to_string();
    let mut out = vec![];
    for (id, prefixes) in vnets {
        if id.eq_ignore_ascii_case(&own) {
            continue;
        }
        for prefix in prefixes {
            if cidrs_overlap(&spec.network.vnet_cidr, prefix) {
                out.push(Problem::new(
                    "network.vnetCidr",
                    "AddressSpaceOverlap",
                    format!(
                        "{} overlaps {prefix} of VNet {} in resource group {}",
                        spec.network.vnet_cidr,
                        id.rsplit('/').next().unwrap_or(id),
                        spec.resource_group
                    ),
                ));
            }
        }
    }
    out
}

/// A read's outcome: a retryable error stops pre-flight (retry later); a
/// terminal one turns that check into a `NotChecked` warning.
fn read<T>(
    result: Result<T, AzureError>,
    what: &str,
    field: &str,
    warnings: &mut Vec<Problem>,
) -> Result<Option<T>, AzureError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => {
            warnings.push(Problem::new(
                field,
                "NotChecked",
                format!("{what} was not checked: {}: {}", e.code, e.message),
            ));
            Ok(None)
        }
    }
}

impl Engine {
    /// Pre-flight of a job `job` for `spec`, reads only (see the module doc).
    ///
    /// # Errors
    /// Only a retryable read error; try again later.
    pub async fn preflight(&self, spec: &ClusterSpec, job: &str) -> Result<Preflight, AzureError> {
        let arm = &self.azure.arm;
        let mut out = Preflight::default();
        let warnings = &mut out.warnings;

        let skus = read(
            self.resource_skus(&spec.location).await,
            "VM size availability",
            "location",
            warnings,
        )?;
        let usages = read(
            arm.compute_usages(&spec.location).await,
            "core quota",
            "location",
            warnings,
        )?;
        if let Some(skus) = &skus {
            out.problems.extend(check_sizes(spec, skus));
            if let Some(usages) = &usages {
                let (p, w) = check_quota(spec, skus, usages);
                out.problems.extend(p);
                out.warnings.extend(w);
            }
        }

        let rg = ResourceId::resource_group(&self.env.subscription_id, &spec.resource_group);
        let rg_key = spec.resource_group.to_ascii_lowercase();
        let now = self.clock.now();
        // A group found present a moment ago is taken as present.
        if !self.groups.passed(&rg_key, now, GroupCheck::Present) {
            let group = read(
                arm.get(&rg, None, api::RESOURCES).await,
                "the resource group",
                "resourceGroup",
                &mut out.warnings,
            )?;
            match group {
                Some(None) => {
                    out.problems.push(Problem::new(
                        "resourceGroup",
                        "ResourceGroupNotFound",
                        format!(
                            "resource group {} does not exist (flotilla never creates it)",
                            spec.resource_group
                        ),
                    ));
                    // Names, VNets and permissions live in the group: nothing more to read.
                    return Ok(out);
                }
                Some(Some(_)) => self.groups.pass(&rg_key, now, GroupCheck::Present),
                // Not readable: a warning, and read again next time.
                None => {}
            }
        }

        let saga = Saga::new(job.to_string(), spec.clone(), self.clock.now());
        let planned: Vec<ResourceId> = StepName::ALL
            .into_iter()
            .flat_map(|step| steps::outline(step, &saga, &self.env))
            .filter_map(|op| match op {
                Op::Arm { id, .. } | Op::ScaleSet { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        let own_vnet = planned
            .iter()
            .find(|id| id.name() == names::vnet(job))
            .cloned()
            .unwrap_or_else(|| {
                ResourceId::new(
                    &self.env.subscription_id,
                    &spec.resource_group,
                    "Microsoft.Network",
                    "virtualNetworks",
                    &names::vnet(job),
                )
            });
        if let Some(listed) = read(
            // Every planned name holds the job id: ARM lists only those.
            arm.list_named(&spec.resource_group, job).await,
            "the names the job will use",
            "resourceGroup",
            &mut out.warnings,
        )? {
            out.problems.extend(check_names(job, &planned, &listed));
        }
        if let Some((vnet, _)) = spec
            .network
            .existing
            .as_ref()
            .and_then(|e| Some((e.vnet()?, e)))
        {
            if let Some(found) = read(
                arm.get(&vnet, None, api::NETWORK).await,
                "the existing VNet",
                "network.existing.vnetId",
                &mut out.warnings,
            )? {
                out.problems
                    .extend(check_existing_network(spec, found.as_ref()));
            }
        }
        // A VNet flotilla does not create cannot overlap its own.
        if spec.network.existing.is_none() {
            if let Some(problems) = read(
                self.vnet_problems(spec, &own_vnet).await,
                "VNet address spaces",
                "network.vnetCidr",
                &mut out.warnings,
            )? {
                out.problems.extend(problems);
            }
        }

        // Permissions that allowed everything a moment ago are taken as such.
        let permissions = if self.groups.passed(&rg_key, now, GroupCheck::Permitted) {
            None
        } else {
            read(
                arm.permissions(&spec.resource_group).await,
                "the caller's permissions",
                "resourceGroup",
                &mut out.warnings,
            )?
        };
        if let Some(perms) = permissions {
            let perms = perms.unwrap_or_default();
            let denied = denied_actions(&perms, flotilla_azure::actions::resource_group_actions());
            if denied.is_empty() {
                self.groups.pass(&rg_key, now, GroupCheck::Permitted);
            } else {
                out.problems.push(Problem::new(
                    "resourceGroup",
                    "PermissionDenied",
                    format!(
                        "the identity flotilla runs as may not do {} on resource group {}",
                        denied.join(", "),
                        spec.resource_group
                    ),
                ));
            }
        }
        if out.passed() && spec.network.existing.is_none() {
            self.vnet_passed(spec, &own_vnet);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_azure::models::{SkuCapability, SkuLocationInfo, SkuRestriction, UsageName};

    fn sku(name: &str, vcpus: u32, family: &str) -> ResourceSku {
        ResourceSku {
            resource_type: "virtualMachines".into(),
            name: name.into(),
            family: Some(family.into()),
            locations: vec!["westeurope".into()],
            location_info: vec![SkuLocationInfo {
                location: "westeurope".into(),
                zones: vec!["1".into(), "2".into(), "3".into()],
            }],
            capabilities: vec![SkuCapability {
                name: "vCPUs".into(),
                value: vcpus.to_string(),
            }],
            restrictions: vec![],
        }
    }

    fn catalog() -> Vec<ResourceSku> {
        vec![
            sku("Standard_D4s_v5", 4, "standardDSv5Family"),
            sku("Standard_D8s_v5", 8, "standardDSv5Family"),
        ]
    }

    fn usage(name: &str, current: i64, limit: i64) -> Usage {
        Usage {
            name: UsageName {
                value: name.into(),
                localized_value: name.into(),
            },
            current_value: current,
            limit,
            unit: "Count".into(),
        }
    }

    #[test]
    fn example_passes_every_rule() {
        let spec = ClusterSpec::example();
        assert!(check_sizes(&spec, &catalog()).is_empty());
        let (p, w) = check_quota(&spec, &catalog(), &[usage("cores", 0, 1000)]);
        assert!(p.is_empty() && w.is_empty());
    }

    #[test]
    fn unknown_size_names_its_field() {
        let mut spec = ClusterSpec::example();
        spec.worker_pools[0].instance_type = "Standard_Q9_v9".into();
        let p = check_sizes(&spec, &catalog());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field, "workerPools[0].instanceType");
        assert_eq!(p[0].code, "SizeNotOffered");
    }

    #[test]
    fn location_restriction_refuses_the_size() {
        let mut skus = catalog();
        skus[0].restrictions.push(SkuRestriction {
            kind: "Location".into(),
            values: vec!["westeurope".into()],
            ..Default::default()
        });
        let p = check_sizes(&ClusterSpec::example(), &skus);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field, "master.instanceType");
    }

    #[test]
    fn zone_restriction_refuses_that_zone_only() {
        let mut skus = catalog();
        skus[1].restrictions.push(SkuRestriction {
            kind: "Zone".into(),
            values: vec!["westeurope".into()],
            restriction_info: flotilla_azure::models::SkuRestrictionInfo {
                locations: vec!["westeurope".into()],
                zones: vec!["3".into()],
            },
            reason_code: Some("NotAvailableForSubscription".into()),
        });
        let p = check_sizes(&ClusterSpec::example(), &skus);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field, "workerPools[0].zones");
        assert_eq!(p[0].code, "ZoneNotOffered");
        assert!(p[0].message.contains("zone(s) 3"), "{}", p[0].message);
        let mut spec = ClusterSpec::example();
        spec.worker_pools[0].zones = vec!["1".into(), "2".into()];
        assert!(check_sizes(&spec, &skus).is_empty());
    }

    #[test]
    fn quota_at_min_is_a_problem_at_max_a_warning() {
        // example: master 3×4 + general 2×8 = 28 at min, 3×4 + 10×8 = 92 at max.
        let spec = ClusterSpec::example();
        let (p, w) = check_quota(&spec, &catalog(), &[usage("standardDSv5Family", 0, 27)]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].code, "QuotaExceeded");
        // The master's 12 fit; the pool's 16 more pass the limit.
        assert_eq!(p[0].field, "workerPools[0].min");
        assert!(p[0].message.contains("needs 28"), "{}", p[0].message);
        assert!(w.is_empty());

        let (p, w) = check_quota(&spec, &catalog(), &[usage("standardDSv5Family", 0, 28)]);
        assert!(p.is_empty());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].code, "QuotaShortAtMax");
        assert_eq!(w[0].field, "workerPools[0].max");

        // What is in use counts against the limit.
        let (p, _) = check_quota(&spec, &catalog(), &[usage("cores", 80, 100)]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field, "workerPools[0].min");
        let (p, _) = check_quota(&spec, &catalog(), &[usage("cores", 90, 100)]);
        assert_eq!(p[0].field, "master.size", "the master alone does not fit");
        assert!(p[0].message.contains("total regional"), "{}", p[0].message);

        let (p, w) = check_quota(&spec, &catalog(), &[usage("standardDSv5Family", 0, 92)]);
        assert!(p.is_empty() && w.is_empty());
    }

    #[test]
    fn wildcards_match_as_rbac_does() {
        assert!(action_matches("*", "Microsoft.Compute/skus/read"));
        assert!(action_matches(
            "microsoft.network/*",
            "Microsoft.Network/virtualNetworks/write"
        ));
        assert!(action_matches(
            "*/read",
            "Microsoft.Network/virtualNetworks/read"
        ));
        assert!(!action_matches(
            "*/read",
            "Microsoft.Network/virtualNetworks/write"
        ));
        assert!(action_matches(
            "Microsoft.Network/*/delete",
            "Microsoft.Network/loadBalancers/delete"
        ));
        assert!(!action_matches(
            "Microsoft.Compute/*",
            "Microsoft.Network/x/read"
        ));
        let perms = [Permission {
            actions: vec!["*".into()],
            not_actions: vec!["Microsoft.Compute/virtualMachineScaleSets/write".into()],
        }];
        let required = [
            "Microsoft.Compute/virtualMachineScaleSets/write",
            "Microsoft.Network/virtualNetworks/write",
        ];
        assert_eq!(
            denied_actions(&perms, required),
            vec!["Microsoft.Compute/virtualMachineScaleSets/write"]
        );
        assert_eq!(denied_actions(&[], required).len(), 2);
    }

    #[test]
    fn cidr_overlap() {
        assert!(cidrs_overlap("10.42.0.0/16", "10.42.128.0/24"));
        assert!(cidrs_overlap("10.0.0.0/8", "10.42.0.0/16"));
        assert!(!cidrs_overlap("10.42.0.0/16", "10.43.0.0/16"));
        assert!(!cidrs_overlap("10.42.0.0/16", "not a cidr"));
        assert_eq!(cidr_range("10.42.0.0/16"), Some((0x0a2a_0000, 0x0a2a_ffff)));
    }

    #[test]
    fn names_taken_unless_the_jobs_own() {
        let spec = ClusterSpec::example();
        let id = ResourceId::new(
            "s",
            &spec.resource_group,
            "Microsoft.Network",
            "virtualNetworks",
            "demo-abc123-vnet",
        );
        let listed = |job: Option<&str>| Listed {
            id: id.to_string(),
            name: id.name().into(),
            resource_type: Some("Microsoft.Network/virtualNetworks".into()),
            tags: job
                .map(|j| BTreeMap::from([(names::TAG_JOB.to_string(), j.to_string())]))
                .unwrap_or_default(),
            created: None,
        };
        let planned = [id.clone()];
        assert!(check_names("demo-abc123", &planned, &[listed(Some("demo-abc123"))]).is_empty());
        let p = check_names("demo-abc123", &planned, &[listed(Some("demo-zzz999"))]);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("job demo-zzz999"), "{}", p[0].message);
        assert_eq!(
            check_names("demo-abc123", &planned, &[listed(None)]).len(),
            1
        );
        assert!(check_names("demo-abc123", &planned, &[]).is_empty());

        let other = vec![(
            "/x/virtualNetworks/legacy".to_string(),
            vec!["10.42.5.0/24".to_string()],
        )];
        let p = check_vnets(&spec, &id, &other);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field, "network.vnetCidr");
        let own = vec![(id.to_string(), vec!["10.42.0.0/16".to_string()])];
        assert!(check_vnets(&spec, &id, &own).is_empty());
    }
}
