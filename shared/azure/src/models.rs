//! Typed ARM request bodies for exactly the resources flotilla creates, in the
//! shapes of the official REST examples (camelCase, `properties` envelopes).
//! Only the fields flotilla sets are modelled.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API versions flotilla speaks, one per resource provider.
pub mod api {
    pub const NETWORK: &str = "2024-05-01";
    pub const COMPUTE: &str = "2024-11-01";
    pub const STORAGE: &str = "2023-05-01";
    pub const RESOURCES: &str = "2021-04-01";
    pub const AUTHORIZATION: &str = "2022-04-01";
    /// `Microsoft.ManagedIdentity/userAssignedIdentities`.
    pub const MANAGED_IDENTITY: &str = "2023-01-31";
    /// `Microsoft.Compute/skus` (the resource SKUs list).
    pub const SKUS: &str = "2021-07-01";
}

pub type Tags = BTreeMap<String, String>;

/// `{"id": "..."}` reference to another resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubResource {
    pub id: String,
}

impl SubResource {
    pub fn new(id: impl ToString) -> Self {
        SubResource { id: id.to_string() }
    }
}

/// A `{name, properties}` child item (subnets, rules, pools, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Named<P> {
    pub name: String,
    pub properties: P,
}

/// A top-level tracked resource: `{location, tags, sku?, zones?, identity?, properties}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource<P> {
    pub location: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    pub properties: P,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sku {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "type")]
    pub kind: String,
    /// `{"<identity ARM id>": {}}` for `UserAssigned` (and
    /// `SystemAssigned, UserAssigned`); ARM fills in each one's ids.
    #[serde(
        default,
        rename = "userAssignedIdentities",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub user_assigned_identities: BTreeMap<String, serde_json::Value>,
}

/// `Microsoft.ManagedIdentity/userAssignedIdentities`: a tracked resource
/// with nothing to set but its location and tags (ARM computes
/// `principalId`, `clientId` and `tenantId`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserAssignedIdentity {
    pub location: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

// ---- Network -------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRuleProperties {
    pub protocol: String,
    pub source_port_range: String,
    pub destination_port_range: String,
    pub source_address_prefix: String,
    pub destination_address_prefix: String,
    pub access: String,
    pub priority: u32,
    pub direction: String,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSecurityGroupProperties {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_rules: Vec<Named<SecurityRuleProperties>>,
}
pub type NetworkSecurityGroup = Resource<NetworkSecurityGroupProperties>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressSpace {
    pub address_prefixes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetProperties {
    pub address_prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_security_group: Option<SubResource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNetworkProperties {
    pub address_space: AddressSpace,
    pub subnets: Vec<Named<SubnetProperties>>,
}
pub type VirtualNetwork = Resource<VirtualNetworkProperties>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublicIpAddressProperties {
    #[serde(rename = "publicIPAllocationMethod")]
    pub allocation_method: String,
    #[serde(rename = "publicIPAddressVersion")]
    pub version: String,
    /// The DNS name `{domainNameLabel}.{region}.cloudapp.azure.com`.
    #[serde(
        rename = "dnsSettings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dns_settings: Option<PublicIpDnsSettings>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicIpDnsSettings {
    pub domain_name_label: String,
}
pub type PublicIpAddress = Resource<PublicIpAddressProperties>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendIpConfigurationProperties {
    #[serde(rename = "publicIPAddress")]
    pub public_ip_address: SubResource,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeProperties {
    pub protocol: String,
    pub port: u16,
    pub interval_in_seconds: u32,
    pub number_of_probes: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancingRuleProperties {
    #[serde(rename = "frontendIPConfiguration")]
    pub frontend_ip_configuration: SubResource,
    pub backend_address_pool: SubResource,
    pub probe: SubResource,
    pub protocol: String,
    pub frontend_port: u16,
    pub backend_port: u16,
    pub idle_timeout_in_minutes: u32,
    pub enable_tcp_reset: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerProperties {
    #[serde(rename = "frontendIPConfigurations")]
    pub frontend_ip_configurations: Vec<Named<FrontendIpConfigurationProperties>>,
    pub backend_address_pools: Vec<Named<Empty>>,
    pub probes: Vec<Named<ProbeProperties>>,
    pub load_balancing_rules: Vec<Named<LoadBalancingRuleProperties>>,
}
pub type LoadBalancer = Resource<LoadBalancerProperties>;

// ---- Compute -------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReference {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDisk {
    pub storage_account_type: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsDisk {
    pub create_option: String,
    pub caching: String,
    pub managed_disk: ManagedDisk,
    #[serde(rename = "diskSizeGB")]
    pub disk_size_gb: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfile {
    pub image_reference: ImageReference,
    pub os_disk: OsDisk,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshPublicKey {
    pub path: String,
    pub key_data: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshConfiguration {
    pub public_keys: Vec<SshPublicKey>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxConfiguration {
    pub disable_password_authentication: bool,
    pub ssh: SshConfiguration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsProfile {
    pub computer_name_prefix: String,
    pub admin_username: String,
    pub linux_configuration: LinuxConfiguration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfigurationProperties {
    pub subnet: SubResource,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_backend_address_pools: Vec<SubResource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterfaceConfigurationProperties {
    pub primary: bool,
    pub ip_configurations: Vec<Named<IpConfigurationProperties>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProfile {
    pub network_interface_configurations: Vec<Named<NetworkInterfaceConfigurationProperties>>,
}

/// The CustomScript extension that runs the node init script. Its
/// `protectedSettings` carry the storage key: ARM never returns them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProperties {
    pub publisher: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub type_handler_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected_settings: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProfile {
    pub extensions: Vec<Named<ExtensionProperties>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineProfile {
    pub os_profile: OsProfile,
    pub storage_profile: StorageProfile,
    pub network_profile: NetworkProfile,
    pub extension_profile: ExtensionProfile,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePolicy {
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineScaleSetProperties {
    pub overprovision: bool,
    pub upgrade_policy: UpgradePolicy,
    pub virtual_machine_profile: VirtualMachineProfile,
}
pub type VirtualMachineScaleSet = Resource<VirtualMachineScaleSetProperties>;

/// The one field of a scale set's instance view that `join` reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    #[serde(default)]
    pub extensions: Vec<ExtensionSummary>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionSummary {
    pub name: String,
    #[serde(default)]
    pub statuses_summary: Vec<StatusCount>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct StatusCount {
    pub code: String,
    pub count: u32,
}

impl InstanceView {
    /// `(succeeded, failed)` instance counts of the named extension.
    pub fn extension_counts(&self, name: &str) -> (u32, u32) {
        let mut ok = 0;
        let mut failed = 0;
        for ext in self.extensions.iter().filter(|e| e.name == name) {
            for s in &ext.statuses_summary {
                match s.code.to_ascii_lowercase().as_str() {
                    "provisioningstate/succeeded" => ok += s.count,
                    "provisioningstate/failed" => failed += s.count,
                    _ => {}
                }
            }
        }
        (ok, failed)
    }
}

// ---- Storage, resource groups -------------------------------------------

/// `listKeys` answer; only the first key's value is used.
#[derive(Clone, Debug, Deserialize)]
pub struct StorageKeys {
    pub keys: Vec<StorageKey>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageKey {
    pub key_name: String,
    pub value: String,
}

impl std::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageKey")
            .field("key_name", &self.key_name)
            .field("value", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceGroup {
    pub location: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

// ---- answers of the pre-flight reads --------------------------------------

/// One entry of the Compute resource SKUs list
/// (`GET /subscriptions/{sub}/providers/Microsoft.Compute/skus`). Only what
/// pre-flight compares is modelled; unknown fields are ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceSku {
    /// `virtualMachines` for VM sizes.
    pub resource_type: String,
    /// The size, e.g. `Standard_D4s_v5`.
    pub name: String,
    /// The quota family, e.g. `standardDSv5Family`.
    pub family: Option<String>,
    pub locations: Vec<String>,
    pub location_info: Vec<SkuLocationInfo>,
    pub capabilities: Vec<SkuCapability>,
    pub restrictions: Vec<SkuRestriction>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SkuLocationInfo {
    pub location: String,
    /// Zones the size is offered in.
    pub zones: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SkuCapability {
    pub name: String,
    pub value: String,
}

/// Why a size is not offered: `type` `Location` (not in the region) or `Zone`
/// (not in `restrictionInfo.zones`), e.g. `NotAvailableForSubscription`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SkuRestriction {
    #[serde(rename = "type")]
    pub kind: String,
    pub values: Vec<String>,
    pub restriction_info: SkuRestrictionInfo,
    pub reason_code: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SkuRestrictionInfo {
    pub locations: Vec<String>,
    pub zones: Vec<String>,
}

impl ResourceSku {
    /// A capability's value, e.g. `vCPUs`.
    pub fn capability(&self, name: &str) -> Option<&str> {
        self.capabilities
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .map(|c| c.value.as_str())
    }
}

/// One entry of the Compute usages list
/// (`GET …/providers/Microsoft.Compute/locations/{loc}/usages`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Usage {
    pub name: UsageName,
    pub current_value: i64,
    pub limit: i64,
    pub unit: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageName {
    /// `cores`, or a family such as `standardDSv5Family`.
    pub value: String,
    pub localized_value: String,
}

/// One entry of `Microsoft.Authorization/permissions` on a scope: the caller
/// may do an action when it matches one of `actions` and none of the same
/// entry's `notActions` (`*` is a wildcard).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Permission {
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
}
