//! The cluster spec: what a user asks for, as JSON in Azure's camelCase, and
//! its validation (every error names the field by its JSON path).
//!
//! Each rule mirrors a limit Azure enforces, so that a spec Azure would refuse
//! is refused here, before anything is created, instead of failing at the
//! first Azure call and compensating. The few rules that are flotilla's own
//! choices say so in their constant's doc comment.

use crate::names;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
    /// How the nodes read their init script from the staging container.
    #[serde(default)]
    pub staging: StagingSpec,
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

/// How the nodes authenticate to the staging container when their init
/// extension downloads `init.sh` (`staging.access`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagingSpec {
    #[serde(default)]
    pub access: StagingAccess,
}

/// The credential a node's init extension reads the staged script with.
///
/// `identity` (the default): a per-job user-assigned managed identity that
/// holds `Storage Blob Data Reader` on the staging container only, with an
/// ABAC condition limiting it to the job's own blob prefix (`{job}/`); it is
/// created by `keys` before any scale set and attached to every scale set of
/// the job, and undo deletes the assignment and the identity, so access ends
/// with the job. No account key is read or stored, and the staging account
/// can keep shared keys disabled. `account-key`: the seed flow, explicit —
/// `keys` reads the account key (`listKeys`) into Key Vault and the
/// extension gets it in its protected settings (a key opens every job's
/// blobs and outlives the job; it works only while the account allows
/// shared keys).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StagingAccess {
    #[default]
    Identity,
    AccountKey,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    /// The VNet flotilla creates (omitted with `existing`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vnet_cidr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub control_plane_subnet_cidr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker_subnet_cidr: String,
    /// An existing VNet and two of its subnets, used instead of creating a
    /// VNet (then the three CIDRs are omitted). flotilla never deletes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<ExistingNetwork>,
}

/// A VNet that exists already (say, a hub's spoke), and the two subnets of it
/// the control plane and the workers go into.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExistingNetwork {
    /// ARM id of the VNet, in the job's subscription and region (any resource group).
    pub vnet_id: String,
    /// Name of the subnet the masters go into.
    pub control_plane_subnet: String,
    /// Name of the subnet the worker pools go into (not the masters' one).
    pub worker_subnet: String,
    /// Attach flotilla's NSGs to the two subnets: each subnet's
    /// `networkSecurityGroup` is replaced by flotilla's, and undo or delete
    /// puts back what it was. Off by default: the subnets keep their own
    /// NSG (or none) and flotilla creates no NSG.
    #[serde(default)]
    pub attach_nsgs: bool,
}

impl ExistingNetwork {
    /// The VNet's id (validated by the spec).
    pub fn vnet(&self) -> Option<flotilla_azure::ResourceId> {
        flotilla_azure::ResourceId::parse(&self.vnet_id).ok()
    }
}

impl NetworkSpec {
    /// The `n`-th of many small, disjoint address spaces in `10.0.0.0/8`
    /// (a /26 VNet: control plane /28, workers /27, enough for 5 masters and
    /// 27 workers), for running many clusters side by side in one resource
    /// group (`bench`, `chaos`, tests): pre-flight refuses a VNet that
    /// overlaps another one in the group. `n` below 262 144.
    pub fn numbered(n: u32) -> NetworkSpec {
        let base = (10u32 << 24) | ((n % (1 << 18)) << 6);
        let ip = |a: u32| std::net::Ipv4Addr::from(a).to_string();
        NetworkSpec {
            vnet_cidr: format!("{}/26", ip(base)),
            control_plane_subnet_cidr: format!("{}/28", ip(base)),
            worker_subnet_cidr: format!("{}/27", ip(base + 32)),
            existing: None,
        }
    }
}

/// A node's OS disk (managed disk created from the image).
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

/// A spec that cannot be used, with the JSON path of the offending field
/// (`name`, `workerPools[1].max`, `tags.env`; `spec` when the document as a
/// whole is unreadable).
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

// ---------------------------------------------------------------------------
// The limits
// ---------------------------------------------------------------------------

/// Longest cluster name: `{name}-{6}` is the job id, and the longest resource
/// name built from it (`{job}-pool-{pool}`, 45 characters) stays within every
/// Azure name limit it appears in.
pub const NAME_MAX: usize = 20;
/// Longest region name accepted (Azure's longest today is under 25 characters).
/// The region must also exist, which only Azure (or the simulator) can tell.
pub const LOCATION_MAX: usize = 40;
/// Azure: resource group names are 1–90 characters.
pub const RESOURCE_GROUP_MAX: usize = 90;
/// Linux user names (`useradd`) are at most 32 characters; Azure allows 64.
pub const ADMIN_USERNAME_MAX: usize = 32;
/// Admin user names Azure refuses (`osProfile.adminUsername` "disallowed
/// values"), and the built-in system users of the Ubuntu and CentOS images
/// ("Selecting user names for Linux on Azure": provisioning fails for them).
pub const RESERVED_ADMIN_USERNAMES: &[&str] = &[
    // Azure's disallowed values
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
    // Built-in system users of the Linux images
    "abrt",
    "audio",
    "bin",
    "cdrom",
    "cgred",
    "crontab",
    "daemon",
    "dbus",
    "dialout",
    "dip",
    "disk",
    "fax",
    "floppy",
    "ftp",
    "fuse",
    "games",
    "gnats",
    "gopher",
    "haldaemon",
    "halt",
    "irc",
    "kmem",
    "landscape",
    "libuuid",
    "list",
    "lock",
    "lp",
    "mail",
    "man",
    "mem",
    "messagebus",
    "mlocate",
    "netdev",
    "news",
    "nfsnobody",
    "nobody",
    "nogroup",
    "ntp",
    "operator",
    "oprofile",
    "plugdev",
    "postdrop",
    "postfix",
    "proxy",
    "qpidd",
    "rpc",
    "rpcuser",
    "sasl",
    "saslauth",
    "shadow",
    "shutdown",
    "slocate",
    "src",
    "ssh",
    "sshd",
    "staff",
    "stapdev",
    "stapusr",
    "sudo",
    "sync",
    "syslog",
    "tape",
    "tcpdump",
    "tty",
    "users",
    "utempter",
    "utmp",
    "uucp",
    "vcsa",
    "video",
    "voice",
    "wheel",
    "whoopsie",
    "www-data",
];

/// Azure Resource Manager: at most 50 tags per resource.
pub const ARM_MAX_TAGS: usize = 50;
/// Key Vault: at most 15 tags per secret. Every job secret carries the
/// user's tags too, so this is the limit that binds.
pub const KEYVAULT_MAX_TAGS: usize = 15;
/// Tags a user may give: what is left of the tighter of the two limits once
/// flotilla's own tags are added (ARM: 50 − 3, Key Vault: 15 − 2 → 13).
pub const MAX_USER_TAGS: usize = min(
    ARM_MAX_TAGS - names::MAX_OWN_TAGS_PER_RESOURCE,
    KEYVAULT_MAX_TAGS - names::OWN_TAGS.len(),
);
/// Azure: a tag name is at most 512 characters.
pub const TAG_NAME_MAX: usize = 512;
/// Azure: a tag value is at most 256 characters.
pub const TAG_VALUE_MAX: usize = 256;
/// Characters Azure refuses in tag names.
pub const TAG_NAME_FORBIDDEN: &[char] = &['<', '>', '%', '&', '\\', '?', '/'];
/// Tag name prefixes Azure reserves for itself (case-insensitive).
pub const RESERVED_TAG_PREFIXES: &[&str] = &["microsoft", "azure", "windows"];
/// Blob Storage: all metadata of a blob together is at most 8 KiB; the staged
/// blobs carry every tag as metadata.
pub const BLOB_METADATA_MAX: usize = 8 * 1024;

/// At most this many worker pools (flotilla's choice, not an Azure limit):
/// each pool is a scale set that `workers` creates in one invocation and
/// compensation deletes one by one; more distinct node shapes than this
/// belong in a second cluster.
pub const MAX_POOLS: usize = 10;
/// Longest pool name: it ends the scale set name `{job}-pool-{pool}`.
pub const POOL_NAME_MAX: usize = 12;
/// Largest pool: the scale sets are created with Azure's default single
/// placement group, which holds at most 100 VMs (1000 would need
/// `singlePlacementGroup: false`).
pub const MAX_POOL_NODES: u32 = 100;
/// Azure: a managed OS disk is at most 4095 GiB; the Ubuntu image needs 30.
pub const OS_DISK_GB: std::ops::RangeInclusive<u32> = 30..=4095;
/// Disk types Azure accepts for an OS disk (Premium SSD v2 and Ultra Disk are
/// data disks only).
pub const DISK_TYPES: &[&str] = &[
    "Standard_LRS",
    "StandardSSD_LRS",
    "Premium_LRS",
    "StandardSSD_ZRS",
    "Premium_ZRS",
];
/// Azure: the smallest subnet is a /29; the largest prefix flotilla takes is /8.
pub const CIDR_PREFIX: std::ops::RangeInclusive<u8> = 8..=29;
/// Azure keeps 5 addresses of every subnet for itself.
pub const SUBNET_RESERVED_ADDRESSES: u64 = 5;
/// Azure: RSA keys need at least 2048 bits; OpenSSH makes none above 16384.
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=16384;
/// Longest `sshPublicKey` line (a 16384-bit RSA key is about 2.8 KB).
pub const SSH_KEY_MAX: usize = 8 * 1024;

const fn min(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}

/// At most `n` characters of user input, for messages.
fn quote(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------
// Field rules
// ---------------------------------------------------------------------------

/// Parses an IPv4 CIDR into (network address, prefix length).
fn cidr(field: &str, s: &str) -> Result<(u32, u8), SpecError> {
    let bad = || {
        err(
            field,
            format!("'{}' is not an IPv4 CIDR such as 10.0.0.0/16", quote(s, 40)),
        )
    };
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let octets: Vec<u8> = addr
        .split('.')
        .map(|o| o.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if octets.len() != 4 {
        return Err(bad());
    }
    if !CIDR_PREFIX.contains(&len) {
        return Err(err(
            field,
            format!(
                "prefix length /{len} must be between /{} and /{} (Azure's smallest subnet)",
                CIDR_PREFIX.start(),
                CIDR_PREFIX.end()
            ),
        ));
    }
    let ip = u32::from_be_bytes([octets[0], octets[1], octets[2], octets[3]]);
    let mask = u32::MAX << (32 - len);
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

/// Addresses of a subnet that Azure lets VMs use.
fn usable(subnet: (u32, u8)) -> u64 {
    (1u64 << (32 - subnet.1)).saturating_sub(SUBNET_RESERVED_ADDRESSES)
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
        Err(err(
            field,
            format!(
                "'{}' must be 1-{max} lowercase letters, digits or '-', start with a letter and not end with '-'",
                quote(s, 40)
            ),
        ))
    }
}

fn location(s: &str) -> Result<(), SpecError> {
    let ok = !s.is_empty()
        && s.len() <= LOCATION_MAX
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(err(
            "location",
            format!(
                "'{}' is not an Azure region name such as westeurope (1-{LOCATION_MAX} lowercase letters and digits)",
                quote(s, 40)
            ),
        ))
    }
}

fn resource_group(s: &str) -> Result<(), SpecError> {
    let n = s.chars().count();
    let ok = n > 0
        && n <= RESOURCE_GROUP_MAX
        && !s.ends_with('.')
        && s.chars()
            .all(|c| c.is_alphanumeric() || "-_.()".contains(c));
    if ok {
        Ok(())
    } else {
        Err(err(
            "resourceGroup",
            format!("'{}' must be 1-{RESOURCE_GROUP_MAX} letters, digits, '-', '_', '.', '(' or ')' and not end with '.'", quote(s, 40)),
        ))
    }
}

fn admin_username(s: &str) -> Result<(), SpecError> {
    const FIELD: &str = "adminUsername";
    let ok = !s.is_empty()
        && s.len() <= ADMIN_USERNAME_MAX
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(err(
            FIELD,
            format!(
                "'{}' must be 1-{ADMIN_USERNAME_MAX} lowercase letters, digits, '-' or '_' and start with a letter",
                quote(s, 40)
            ),
        ));
    }
    if RESERVED_ADMIN_USERNAMES.contains(&s) {
        return Err(err(
            FIELD,
            format!("'{s}' is a reserved or built-in user name on Azure Linux VMs"),
        ));
    }
    Ok(())
}

fn instance_type(field: &str, s: &str) -> Result<(), SpecError> {
    if s.starts_with("Standard_")
        && s.len() > 9
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(())
    } else {
        Err(err(
            field,
            format!(
                "'{}' is not a VM size such as Standard_D4s_v5",
                quote(s, 40)
            ),
        ))
    }
}

fn disk(field: &str, d: &DiskSpec) -> Result<(), SpecError> {
    if !DISK_TYPES.contains(&d.kind.as_str()) {
        return Err(err(
            format!("{field}.type"),
            format!(
                "'{}' is not an OS disk type ({})",
                quote(&d.kind, 40),
                DISK_TYPES.join(", ")
            ),
        ));
    }
    if !OS_DISK_GB.contains(&d.size_gb) {
        return Err(err(
            format!("{field}.sizeGb"),
            format!(
                "{} GiB is outside {}-{} GiB (Azure's OS disk limit; the image needs {})",
                d.size_gb,
                OS_DISK_GB.start(),
                OS_DISK_GB.end(),
                OS_DISK_GB.start()
            ),
        ));
    }
    Ok(())
}

/// The user's tags, against Azure Resource Manager's, Key Vault's and Blob
/// Storage's rules (every tag also lands on the job's secrets and, as
/// metadata, on its staged blobs).
fn tags(spec: &ClusterSpec) -> Result<(), SpecError> {
    if spec.tags.len() > MAX_USER_TAGS {
        return Err(err(
            "tags",
            format!(
                "{} tags given; at most {MAX_USER_TAGS} (Key Vault allows {KEYVAULT_MAX_TAGS} per secret and flotilla adds {})",
                spec.tags.len(),
                names::OWN_TAGS.join(", ")
            ),
        ));
    }
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for own in names::OWN_TAGS.iter().chain([&names::TAG_ROLE]) {
        seen.insert(names::blob_metadata_name(own).to_ascii_lowercase(), own);
    }
    for (k, v) in &spec.tags {
        let field = format!("tags.{}", quote(k, 64));
        let chars = k.chars().count();
        if chars == 0 || chars > TAG_NAME_MAX {
            return Err(err(
                field,
                format!("tag names are 1-{TAG_NAME_MAX} characters (this one has {chars})"),
            ));
        }
        if k.contains(TAG_NAME_FORBIDDEN) || k.chars().any(char::is_control) {
            return Err(err(
                field,
                "tag names cannot contain < > % & \\ ? / or control characters",
            ));
        }
        let lower = k.to_lowercase();
        if let Some(p) = RESERVED_TAG_PREFIXES.iter().find(|p| lower.starts_with(*p)) {
            return Err(err(
                field,
                format!("tag names starting with '{p}' are reserved by Azure"),
            ));
        }
        if names::OWN_TAGS
            .iter()
            .chain([&names::TAG_ROLE])
            .any(|own| own.eq_ignore_ascii_case(k))
        {
            return Err(err(field, "this tag is set by flotilla"));
        }
        if k.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(err(
                field,
                "tag names cannot start with a digit (they are staged as blob metadata, whose names are C# identifiers)",
            ));
        }
        if let Some(other) = seen.insert(names::blob_metadata_name(k).to_ascii_lowercase(), k) {
            return Err(err(
                field,
                format!(
                    "collides with tag '{}': tag names are case-insensitive, and blob metadata turns every character but letters and digits into '_'",
                    quote(other, 64)
                ),
            ));
        }
        let value_chars = v.chars().count();
        if value_chars > TAG_VALUE_MAX {
            return Err(err(
                field,
                format!("tag values are at most {TAG_VALUE_MAX} characters (this one has {value_chars})"),
            ));
        }
        if !v.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            return Err(err(
                field,
                "tag values must be printable ASCII (they are sent as blob metadata headers)",
            ));
        }
    }
    // The staged blobs carry every tag, flotilla's included, as metadata.
    let job = format!("{}-{}", spec.name, "x".repeat(6));
    let metadata: usize = names::tags(&job, spec)
        .iter()
        .map(|(k, v)| names::blob_metadata_name(k).len() + v.len())
        .sum();
    if metadata > BLOB_METADATA_MAX {
        return Err(err(
            "tags",
            format!(
                "names and values add up to {metadata} bytes with flotilla's own; blob metadata holds at most {BLOB_METADATA_MAX}"
            ),
        ));
    }
    Ok(())
}

/// An OpenSSH public key line, `<type> <base64> [comment]`, as Azure takes it
/// for Linux VMs: `ssh-ed25519`, or `ssh-rsa` of 2048-16384 bits.
fn ssh_public_key(key: &str) -> Result<(), SpecError> {
    const FIELD: &str = "sshPublicKey";
    if key.len() > SSH_KEY_MAX {
        return Err(err(
            FIELD,
            format!("{} characters; at most {SSH_KEY_MAX}", key.len()),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(err(
            FIELD,
            "must be one line without control characters (it becomes a line of authorized_keys)",
        ));
    }
    let mut parts = key.split(' ').filter(|p| !p.is_empty());
    let kind = parts.next().unwrap_or("");
    match kind {
        "ssh-ed25519" | "ssh-rsa" => {}
        "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" => {
            return Err(err(
                FIELD,
                "Azure does not support ECDSA keys for Linux VMs; use ssh-ed25519 or ssh-rsa (at least 2048 bits)",
            ))
        }
        "" => {
            return Err(err(
                FIELD,
                "is empty; give an OpenSSH public key ('ssh-ed25519 AAAA...' or 'ssh-rsa AAAA...')",
            ))
        }
        other => {
            return Err(err(
                FIELD,
                format!(
                    "'{}' is not a key type Azure takes (ssh-ed25519 or ssh-rsa); give an OpenSSH public key line",
                    quote(other, 24)
                ),
            ))
        }
    }
    let data = parts
        .next()
        .ok_or_else(|| err(FIELD, format!("has no key data after '{kind}'")))?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| err(FIELD, "the key data is not valid base64"))?;
    let mut r = Wire(&blob);
    let bad = || {
        err(
            FIELD,
            format!("the key data is not a well-formed {kind} key"),
        )
    };
    let inner = r.string().ok_or_else(bad)?;
    if inner != kind.as_bytes() {
        return Err(err(
            FIELD,
            format!(
                "the line says '{kind}' but the key data holds a '{}' key",
                quote(&String::from_utf8_lossy(inner), 24)
            ),
        ));
    }
    match kind {
        "ssh-ed25519" => {
            let pk = r.string().ok_or_else(bad)?;
            if pk.len() != 32 {
                return Err(err(
                    FIELD,
                    format!("ED25519 key is {} bytes; it must be 32", pk.len()),
                ));
            }
        }
        _ => {
            let e = r.mpint().ok_or_else(bad)?;
            let n = r.mpint().ok_or_else(bad)?;
            if e.is_empty() || e.last().is_some_and(|b| b & 1 == 0) {
                return Err(err(FIELD, "RSA key has an invalid public exponent"));
            }
            let bits = bit_length(n);
            if bits < *RSA_BITS.start() {
                return Err(err(
                    FIELD,
                    format!(
                        "RSA key is {bits} bits; Azure needs at least {}",
                        RSA_BITS.start()
                    ),
                ));
            }
            if bits > *RSA_BITS.end() {
                return Err(err(
                    FIELD,
                    format!("RSA key is {bits} bits; at most {}", RSA_BITS.end()),
                ));
            }
        }
    }
    if !r.0.is_empty() {
        return Err(bad());
    }
    Ok(())
}

/// Reads the SSH wire encoding (RFC 4251): length-prefixed strings and mpints.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let s = self.0.get(4..4usize.checked_add(len)?)?;
        self.0 = &self.0[4 + len..];
        Some(s)
    }

    /// A non-negative mpint's magnitude, leading zero bytes removed.
    fn mpint(&mut self) -> Option<&'a [u8]> {
        let s = self.string()?;
        if s.first().is_some_and(|b| b & 0x80 != 0) {
            return None; // negative
        }
        let start = s.iter().position(|&b| b != 0).unwrap_or(s.len());
        Some(&s[start..])
    }
}

/// Bits of a big-endian magnitude without leading zero bytes.
fn bit_length(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

/// Azure: subnet names are 1-80 letters, digits, `_`, `.`, `-`, starting
/// with a letter or digit and ending with a letter, digit or `_`.
pub const SUBNET_NAME_MAX: usize = 80;

fn subnet_name(field: &str, s: &str) -> Result<(), SpecError> {
    let ok = !s.is_empty()
        && s.len() <= SUBNET_NAME_MAX
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(err(
            field,
            format!(
                "'{}' is not a subnet name (1-{SUBNET_NAME_MAX} letters, digits, '_', '.', '-')",
                quote(s, 40)
            ),
        ))
    }
}

/// An existing network: named by a VNet id and two distinct subnet names,
/// with no CIDRs (the subnets' room for the nodes is checked by pre-flight,
/// which reads them).
fn existing_network(n: &NetworkSpec, e: &ExistingNetwork) -> Result<(), SpecError> {
    for (field, v) in [
        ("network.vnetCidr", &n.vnet_cidr),
        (
            "network.controlPlaneSubnetCidr",
            &n.control_plane_subnet_cidr,
        ),
        ("network.workerSubnetCidr", &n.worker_subnet_cidr),
    ] {
        if !v.is_empty() {
            return Err(err(
                field,
                "must be omitted with network.existing (the existing subnets' ranges are used)",
            ));
        }
    }
    let id = flotilla_azure::ResourceId::parse(&e.vnet_id)
        .map_err(|m| err("network.existing.vnetId", quote(&m, 300)))?;
    if !id
        .resource_type()
        .eq_ignore_ascii_case("Microsoft.Network/virtualNetworks")
        || id.group().is_none()
    {
        return Err(err(
            "network.existing.vnetId",
            format!(
                "must name a virtual network (/subscriptions/…/resourceGroups/…/providers/Microsoft.Network/virtualNetworks/NAME), not a {}",
                id.resource_type()
            ),
        ));
    }
    subnet_name(
        "network.existing.controlPlaneSubnet",
        &e.control_plane_subnet,
    )?;
    subnet_name("network.existing.workerSubnet", &e.worker_subnet)?;
    if e.control_plane_subnet
        .eq_ignore_ascii_case(&e.worker_subnet)
    {
        return Err(err(
            "network.existing.workerSubnet",
            "must differ from network.existing.controlPlaneSubnet",
        ));
    }
    Ok(())
}

fn network(spec: &ClusterSpec) -> Result<(), SpecError> {
    let n = &spec.network;
    if let Some(e) = &n.existing {
        return existing_network(n, e);
    }
    let vnet = cidr("network.vnetCidr", &n.vnet_cidr)?;
    let cp = cidr(
        "network.controlPlaneSubnetCidr",
        &n.control_plane_subnet_cidr,
    )?;
    let wk = cidr("network.workerSubnetCidr", &n.worker_subnet_cidr)?;
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
    if u64::from(spec.master.size) > usable(cp) {
        return Err(err(
            "network.controlPlaneSubnetCidr",
            format!(
                "/{} leaves {} addresses (Azure keeps {SUBNET_RESERVED_ADDRESSES}); master.size needs {}",
                cp.1,
                usable(cp),
                spec.master.size
            ),
        ));
    }
    let workers: u64 = spec.worker_pools.iter().map(|p| u64::from(p.max)).sum();
    if workers > usable(wk) {
        return Err(err(
            "network.workerSubnetCidr",
            format!(
                "/{} leaves {} addresses (Azure keeps {SUBNET_RESERVED_ADDRESSES}); the pools' max add up to {workers}",
                wk.1,
                usable(wk)
            ),
        ));
    }
    Ok(())
}

fn pools(spec: &ClusterSpec) -> Result<(), SpecError> {
    if spec.worker_pools.is_empty() && !spec.master.allow_workloads {
        return Err(err(
            "workerPools",
            "needs at least one pool unless master.allowWorkloads is true",
        ));
    }
    if spec.worker_pools.len() > MAX_POOLS {
        return Err(err(
            "workerPools",
            format!(
                "{} pools given; at most {MAX_POOLS}",
                spec.worker_pools.len()
            ),
        ));
    }
    // Nodes are named after the job suffix and the first letters of their
    // role; two roles with the same prefix would give nodes the same names.
    let job = format!("{}-{}", spec.name, "x".repeat(6));
    let mut names_seen = BTreeSet::new();
    let mut prefixes = BTreeMap::from([(names::computer_prefix(&job, "master"), "master")]);
    for (i, p) in spec.worker_pools.iter().enumerate() {
        let f = |s: &str| format!("workerPools[{i}].{s}");
        dns_label(&f("name"), &p.name, POOL_NAME_MAX)?;
        if p.name == "master" {
            return Err(err(f("name"), "'master' is reserved"));
        }
        if !names_seen.insert(p.name.as_str()) {
            return Err(err(f("name"), format!("duplicate pool name '{}'", p.name)));
        }
        if let Some(other) = prefixes.insert(names::computer_prefix(&job, &p.name), &p.name) {
            return Err(err(
                f("name"),
                format!(
                    "'{}' and '{other}' share their first 7 letters and digits, which prefix the nodes' host names",
                    p.name
                ),
            ));
        }
        instance_type(&f("instanceType"), &p.instance_type)?;
        if p.max == 0 || p.max > MAX_POOL_NODES {
            return Err(err(
                f("max"),
                format!(
                    "{} is outside 1-{MAX_POOL_NODES} (a scale set with one placement group holds {MAX_POOL_NODES} VMs)",
                    p.max
                ),
            ));
        }
        if p.min > p.max {
            return Err(err(
                f("min"),
                format!("min ({}) must not exceed max ({})", p.min, p.max),
            ));
        }
        disk(&f("disk"), &p.disk)?;
        let mut zones = BTreeSet::new();
        for (z, zone) in p.zones.iter().enumerate() {
            if !["1", "2", "3"].contains(&zone.as_str()) {
                return Err(err(
                    f(&format!("zones[{z}]")),
                    format!(
                        "'{}' is not an availability zone (1, 2 or 3)",
                        quote(zone, 8)
                    ),
                ));
            }
            if !zones.insert(zone) {
                return Err(err(
                    f(&format!("zones[{z}]")),
                    format!("zone {zone} is listed twice"),
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// A serde error as a [`SpecError`] naming the field it happened at.
fn serde_error(path: &serde_path_to_error::Path, e: serde_json::Error) -> SpecError {
    let message = quote(&e.to_string(), 300);
    if e.is_syntax() || e.is_eof() || e.is_io() {
        return err("spec", message);
    }
    let path = path.to_string();
    let parent = (path != ".").then_some(path);
    // serde reports a missing field at its parent; name the field itself.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_string());
    let field = match (parent, missing) {
        (Some(p), Some(m)) => format!("{p}.{m}"),
        (None, Some(m)) => m,
        (Some(p), None) => p,
        (None, None) => "spec".into(),
    };
    err(field, message)
}

impl WorkerPool {
    /// Parses one worker pool document (as an element of `workerPools`); a
    /// type error, a missing or unknown field is reported at its path
    /// (`disk.sizeGb`). Its limits are checked against the cluster it joins
    /// ([`ClusterSpec::with_pool`]).
    pub fn from_json(text: &str) -> Result<WorkerPool, SpecError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let pool: WorkerPool = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().clone();
            serde_error(&path, e.into_inner())
        })?;
        de.end()
            .map_err(|e| err("spec", quote(&e.to_string(), 300)))?;
        Ok(pool)
    }
}

impl ClusterSpec {
    /// Parses and validates a JSON spec. A type error, a missing or unknown
    /// field is reported at its JSON path (`workerPools[0].min`); a document
    /// that is not JSON at all at `spec`.
    pub fn from_json(text: &str) -> Result<ClusterSpec, SpecError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let spec: ClusterSpec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().clone();
            serde_error(&path, e.into_inner())
        })?;
        de.end()
            .map_err(|e| err("spec", quote(&e.to_string(), 300)))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every rule; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        dns_label("name", &self.name, NAME_MAX)?;
        location(&self.location)?;
        resource_group(&self.resource_group)?;
        ssh_public_key(&self.ssh_public_key)?;
        admin_username(&self.admin_username)?;
        if ![1, 3, 5].contains(&self.master.size) {
            return Err(err(
                "master.size",
                format!("must be 1, 3 or 5 (got {})", self.master.size),
            ));
        }
        instance_type("master.instanceType", &self.master.instance_type)?;
        disk("master.disk", &self.master.disk)?;
        pools(self)?;
        network(self)?;
        tags(self)?;
        Ok(())
    }

    /// This spec with one more worker pool (a day-2 `pool add`), checked by
    /// every rule a spec with that pool would meet at creation (the pool's
    /// own limits, the pool count, unique names and host name prefixes, the
    /// worker subnet's room for every pool at `max`). A problem of the new
    /// pool itself names its field as in the pool document (`max`,
    /// `disk.sizeGb`); the worker subnet running out of room is reported at
    /// `max`; anything else keeps its spec path.
    pub fn with_pool(&self, pool: &WorkerPool) -> Result<ClusterSpec, SpecError> {
        let mut next = self.clone();
        next.worker_pools.push(pool.clone());
        let prefix = format!("workerPools[{}].", next.worker_pools.len() - 1);
        next.validate().map_err(|e| {
            if let Some(field) = e.field.strip_prefix(&prefix) {
                err(field, e.message)
            } else if e.field == "network.workerSubnetCidr" {
                err("max", format!("network.workerSubnetCidr {}", e.message))
            } else {
                e
            }
        })?;
        Ok(next)
    }

    /// This spec without worker pool `name` (a day-2 `pool remove`); `None`
    /// when there is no such pool. The result is checked like any spec, so
    /// the last pool goes only when `master.allowWorkloads` is true.
    pub fn without_pool(&self, name: &str) -> Option<Result<ClusterSpec, SpecError>> {
        let at = self.worker_pools.iter().position(|p| p.name == name)?;
        let mut next = self.clone();
        next.worker_pools.remove(at);
        Some(next.validate().map(|()| next))
    }

    /// The built-in example spec (`flotilla spec`).
    pub fn example() -> ClusterSpec {
        serde_json::from_str(EXAMPLE_SPEC).expect("the built-in spec is valid JSON")
    }
}

/// The default spec `flotilla up` runs when no `--spec` is given.
pub const EXAMPLE_SPEC: &str = r#"{
  "name": "demo",
  "location": "westeurope",
  "resourceGroup": "flotilla-demo",
  "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJkG9wwqWInpXG0sGOFeTEA6SwHTXXI1YQejyIxCuieq flotilla@demo",
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
  "tags": { "env": "demo" },
  "staging": { "access": "identity" }
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
    fn numbered_networks_are_valid_and_disjoint() {
        let mut s = ClusterSpec::example();
        for n in [0, 1, 2, 1000, (1 << 18) - 1] {
            s.network = NetworkSpec::numbered(n);
            s.validate().unwrap();
        }
        assert_eq!(NetworkSpec::numbered(1).vnet_cidr, "10.0.0.64/26");
        assert_ne!(NetworkSpec::numbered(7), NetworkSpec::numbered(8));
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
    fn staging_access_defaults_to_identity_and_names_its_field() {
        let without = EXAMPLE_SPEC.replace(",\n  \"staging\": { \"access\": \"identity\" }", "");
        assert!(!without.contains("staging"), "{without}");
        let spec = ClusterSpec::from_json(&without).unwrap();
        assert_eq!(spec.staging.access, StagingAccess::Identity);
        let key = EXAMPLE_SPEC.replace("\"access\": \"identity\"", "\"access\": \"account-key\"");
        assert_eq!(
            ClusterSpec::from_json(&key).unwrap().staging.access,
            StagingAccess::AccountKey
        );
        let e = ClusterSpec::from_json(
            &EXAMPLE_SPEC.replace("\"access\": \"identity\"", "\"access\": \"sas\""),
        )
        .unwrap_err();
        assert_eq!(e.field, "staging.access", "{e}");
        assert!(
            e.message.contains("identity") && e.message.contains("account-key"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let e = ClusterSpec::from_json(&EXAMPLE_SPEC.replace("\"location\"", "\"locaton\""))
            .unwrap_err();
        assert_eq!(e.field, "locaton", "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
        let e = ClusterSpec::from_json("{").unwrap_err();
        assert_eq!(e.field, "spec");
    }

    #[test]
    fn wire_strings_and_mpints() {
        let mut w = Wire(&[0, 0, 0, 2, 0, 0x81, 0, 0, 0, 1, 0x80]);
        assert_eq!(w.mpint(), Some(&[0x81][..]));
        assert_eq!(w.mpint(), None, "high bit without a zero byte is negative");
        assert_eq!(Wire(&[0, 0, 0, 5, 1]).string(), None, "length past the end");
        assert_eq!(Wire(&[0xff, 0xff, 0xff, 0xff]).string(), None);
        assert_eq!(bit_length(&[0x01, 0x00]), 9);
        assert_eq!(bit_length(&[0x80]), 8);
        assert_eq!(bit_length(&[]), 0);
    }
}
