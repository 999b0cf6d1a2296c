//! The cluster spec: what a user asks for, as JSON in Azure's camelCase, and
//! its validation (every error names the field).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// Cluster name: 1–20 lowercase letters, digits and hyphens; it prefixes every resource name.
    pub name: String,
    /// Azure region, e.g. `westeurope`.
    pub location: String,
    /// The resource group the cluster's resources go into (it must exist).
    pub resource_group: String,
    /// OpenSSH public key installed for the admin user on every node.
    pub ssh_public_key: String,
    #[serde(default = "default_admin")]
    pub admin_username: String,
    /// How nodes (kubelets) authenticate.
    pub identity: IdentityMode,
    pub network: NetworkSpec,
    pub master: MasterSpec,
    pub worker_pools: Vec<WorkerPool>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_admin() -> String {
    "flotilla".into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityMode {
    ManagedIdentity,
    ServicePrincipal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    pub vnet_cidr: String,
    pub control_plane_subnet_cidr: String,
    pub worker_subnet_cidr: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskSpec {
    /// `Standard_LRS`, `StandardSSD_LRS`, `Premium_LRS`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub size_gb: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MasterSpec {
    /// 1, 3 or 5 control-plane nodes.
    pub size: u32,
    pub instance_type: String,
    pub disk: DiskSpec,
    #[serde(default)]
    pub allow_workloads: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerPool {
    pub name: String,
    pub instance_type: String,
    pub min: u32,
    pub max: u32,
    pub disk: DiskSpec,
    #[serde(default)]
    pub zones: Vec<String>,
}

/// A spec that cannot be used, with the JSON path of the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

const DISK_TYPES: &[&str] = &[
    "Standard_LRS",
    "StandardSSD_LRS",
    "Premium_LRS",
    "StandardSSD_ZRS",
    "Premium_ZRS",
    "PremiumV2_LRS",
];

/// Parses an IPv4 CIDR into (network address, prefix length).
fn cidr(field: &str, s: &str) -> Result<(u32, u8), SpecError> {
    let bad = || {
        err(
            field,
            format!("'{s}' is not an IPv4 CIDR such as 10.0.0.0/16"),
        )
    };
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&len) {
        return Err(err(
            field,
            format!("prefix length /{len} must be between /8 and /30"),
        ));
    }
    let octets: Vec<u8> = addr
        .split('.')
        .map(|o| o.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if octets.len() != 4 {
        return Err(bad());
    }
    let ip = u32::from_be_bytes([octets[0], octets[1], octets[2], octets[3]]);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    if ip & !mask != 0 {
        return Err(err(field, format!("'{s}' has host bits set")));
    }
    Ok((ip, len))
}

fn contains(outer: (u32, u8), inner: (u32, u8)) -> bool {
    let mask = u32::MAX << (32 - outer.1);
    inner.1 >= outer.1 && (inner.0 & mask) == outer.0
}

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    contains(a, b) || contains(b, a)
}

fn dns_label(field: &str, s: &str, max: usize) -> Result<(), SpecError> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(err(field, format!("'{s}' must be 1-{max} lowercase letters, digits or '-', start with a letter and not end with '-'")))
    }
}

impl ClusterSpec {
    /// Parses and validates a JSON spec.
    pub fn from_json(text: &str) -> Result<ClusterSpec, SpecError> {
        let spec: ClusterSpec = serde_json::from_str(text).map_err(|e| {
            // serde names the field for unknown/missing ones; keep its words.
            err("spec", e.to_string())
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every rule; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        dns_label("name", &self.name, 20)?;
        if self.location.is_empty() || !self.location.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(err(
                "location",
                "must be an Azure region name such as westeurope",
            ));
        }
        let rg = &self.resource_group;
        if rg.is_empty()
            || rg.len() > 90
            || rg.ends_with('.')
            || !rg
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.()".contains(c))
        {
            return Err(err(
                "resourceGroup",
                "must be 1-90 letters, digits, '-', '_', '.', '(' or ')' and not end with '.'",
            ));
        }
        if !(self.ssh_public_key.starts_with("ssh-") || self.ssh_public_key.starts_with("ecdsa-"))
            || self.ssh_public_key.split_whitespace().count() < 2
        {
            return Err(err(
                "sshPublicKey",
                "must be an OpenSSH public key ('ssh-ed25519 AAAA...' or 'ssh-rsa AAAA...')",
            ));
        }
        dns_label("adminUsername", &self.admin_username, 32)?;
        let vnet = cidr("network.vnetCidr", &self.network.vnet_cidr)?;
        let cp = cidr(
            "network.controlPlaneSubnetCidr",
            &self.network.control_plane_subnet_cidr,
        )?;
        let wk = cidr("network.workerSubnetCidr", &self.network.worker_subnet_cidr)?;
        if !contains(vnet, cp) {
            return Err(err(
                "network.controlPlaneSubnetCidr",
                "must lie inside network.vnetCidr",
            ));
        }
        if !contains(vnet, wk) {
            return Err(err(
                "network.workerSubnetCidr",
                "must lie inside network.vnetCidr",
            ));
        }
        if overlaps(cp, wk) {
            return Err(err(
                "network.workerSubnetCidr",
                "must not overlap network.controlPlaneSubnetCidr",
            ));
        }
        if ![1, 3, 5].contains(&self.master.size) {
            return Err(err(
                "master.size",
                format!("must be 1, 3 or 5 (got {})", self.master.size),
            ));
        }
        instance_type("master.instanceType", &self.master.instance_type)?;
        disk("master.disk", &self.master.disk)?;
        if self.worker_pools.is_empty() && !self.master.allow_workloads {
            return Err(err(
                "workerPools",
                "needs at least one pool unless master.allowWorkloads is true",
            ));
        }
        if self.worker_pools.len() > 10 {
            return Err(err("workerPools", "at most 10 pools"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.worker_pools.iter().enumerate() {
            let f = |s: &str| format!("workerPools[{i}].{s}");
            dns_label(&f("name"), &p.name, 12)?;
            if p.name == "master" {
                return Err(err(f("name"), "'master' is reserved"));
            }
            if !names.insert(p.name.clone()) {
                return Err(err(f("name"), format!("duplicate pool name '{}'", p.name)));
            }
            instance_type(&f("instanceType"), &p.instance_type)?;
            if p.min > p.max {
                return Err(err(
                    f("min"),
                    format!("min ({}) must not exceed max ({})", p.min, p.max),
                ));
            }
            if p.max == 0 || p.max > 1000 {
                return Err(err(f("max"), "must be between 1 and 1000"));
            }
            disk(&f("disk"), &p.disk)?;
            for (z, zone) in p.zones.iter().enumerate() {
                if !["1", "2", "3"].contains(&zone.as_str()) {
                    return Err(err(
                        f(&format!("zones[{z}]")),
                        format!("'{zone}' is not an availability zone (1, 2 or 3)"),
                    ));
                }
            }
        }
        for (k, v) in &self.tags {
            if k.is_empty() || k.len() > 512 || k.contains(['<', '>', '%', '&', '\\', '?', '/']) {
                return Err(err(
                    format!("tags.{k}"),
                    "tag names are 1-512 characters without < > % & \\ ? /",
                ));
            }
            if v.len() > 256 {
                return Err(err(
                    format!("tags.{k}"),
                    "tag values are at most 256 characters",
                ));
            }
            if k.eq_ignore_ascii_case(crate::names::TAG_JOB)
                || k.eq_ignore_ascii_case(crate::names::TAG_MANAGED_BY)
            {
                return Err(err(format!("tags.{k}"), "this tag is set by flotilla"));
            }
        }
        Ok(())
    }

    /// The built-in example spec (`flotilla spec`).
    pub fn example() -> ClusterSpec {
        serde_json::from_str(EXAMPLE_SPEC).expect("the built-in spec is valid JSON")
    }
}

fn instance_type(field: &str, s: &str) -> Result<(), SpecError> {
    if s.starts_with("Standard_")
        && s.len() > 9
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(())
    } else {
        Err(err(
            field,
            format!("'{s}' is not a VM size such as Standard_D4s_v5"),
        ))
    }
}

fn disk(field: &str, d: &DiskSpec) -> Result<(), SpecError> {
    if !DISK_TYPES.contains(&d.kind.as_str()) {
        return Err(err(
            format!("{field}.type"),
            format!("'{}' is not one of {}", d.kind, DISK_TYPES.join(", ")),
        ));
    }
    if !(30..=4095).contains(&d.size_gb) {
        return Err(err(
            format!("{field}.sizeGb"),
            "must be between 30 and 4095",
        ));
    }
    Ok(())
}

/// The default spec `flotilla up` runs when no `--spec` is given.
pub const EXAMPLE_SPEC: &str = r#"{
  "name": "demo",
  "location": "westeurope",
  "resourceGroup": "flotilla-demo",
  "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEZsb3RpbGxhRGVtb0tleU9ubHlGb3JUaGVTaW11bGF0 flotilla@demo",
  "adminUsername": "flotilla",
  "identity": "managed-identity",
  "network": {
    "vnetCidr": "10.42.0.0/16",
    "controlPlaneSubnetCidr": "10.42.0.0/24",
    "workerSubnetCidr": "10.42.16.0/20"
  },
  "master": {
    "size": 3,
    "instanceType": "Standard_D4s_v5",
    "disk": { "type": "Premium_LRS", "sizeGb": 128 },
    "allowWorkloads": false
  },
  "workerPools": [
    {
      "name": "general",
      "instanceType": "Standard_D8s_v5",
      "min": 2,
      "max": 10,
      "disk": { "type": "Premium_LRS", "sizeGb": 256 },
      "zones": ["1", "2", "3"]
    }
  ],
  "tags": { "env": "demo" }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut ClusterSpec)) -> Result<(), SpecError> {
        let mut s = ClusterSpec::example();
        f(&mut s);
        s.validate()
    }

    #[test]
    fn example_is_valid() {
        ClusterSpec::example().validate().unwrap();
        ClusterSpec::from_json(EXAMPLE_SPEC).unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            with(|s| s.master.size = 2).unwrap_err().field,
            "master.size"
        );
        assert_eq!(
            with(|s| s.worker_pools[0].min = 11).unwrap_err().field,
            "workerPools[0].min"
        );
        assert_eq!(
            with(|s| s.name = "Bad_Name".into()).unwrap_err().field,
            "name"
        );
        assert_eq!(
            with(|s| s.network.worker_subnet_cidr = "10.42.0.0/25".into())
                .unwrap_err()
                .field,
            "network.workerSubnetCidr"
        );
        assert_eq!(
            with(|s| s.network.vnet_cidr = "10.42.0.1/16".into())
                .unwrap_err()
                .field,
            "network.vnetCidr"
        );
        assert_eq!(
            with(|s| s.worker_pools[0].zones = vec!["4".into()])
                .unwrap_err()
                .field,
            "workerPools[0].zones[0]"
        );
        assert_eq!(
            with(|s| s.master.disk.kind = "Floppy".into())
                .unwrap_err()
                .field,
            "master.disk.type"
        );
        assert_eq!(
            with(|s| s.ssh_public_key = "nope".into())
                .unwrap_err()
                .field,
            "sshPublicKey"
        );
        assert_eq!(
            with(|s| s.resource_group = "rg/x".into())
                .unwrap_err()
                .field,
            "resourceGroup"
        );
        let dup = with(|s| {
            let p = s.worker_pools[0].clone();
            s.worker_pools.push(p)
        });
        assert_eq!(dup.unwrap_err().field, "workerPools[1].name");
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let e = ClusterSpec::from_json(&EXAMPLE_SPEC.replace("\"location\"", "\"locaton\""))
            .unwrap_err();
        assert!(e.message.contains("locaton"), "{e}");
        let e = ClusterSpec::from_json("{").unwrap_err();
        assert_eq!(e.field, "spec");
    }
}
