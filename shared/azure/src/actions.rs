//! The ARM authorization actions flotilla's client may perform.
//!
//! Every ARM request the client sends is mapped to its action
//! ([`action_for`]) and refused unless the action is listed here, so this list
//! is exactly what the code can call. `infra/` grants a custom role with these
//! actions on the clusters' resource group; `scripts/check_infra.py` fails when
//! the two differ.

/// Actions the client performs, one per line, sorted. One is not a request
/// of its own: `userAssignedIdentities/assign/action` is ARM's linked check
/// on the job's node identity when a scale set write attaches it.
pub const ARM_ACTIONS: &[&str] = &[
    "Microsoft.Authorization/permissions/read",
    "Microsoft.Authorization/roleAssignments/delete",
    "Microsoft.Authorization/roleAssignments/read",
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Compute/locations/usages/read",
    "Microsoft.Compute/skus/read",
    "Microsoft.Compute/virtualMachineScaleSets/delete",
    "Microsoft.Compute/virtualMachineScaleSets/instanceView/read",
    "Microsoft.Compute/virtualMachineScaleSets/read",
    "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/instanceView/read",
    "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
    "Microsoft.Compute/virtualMachineScaleSets/write",
    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
    "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
    "Microsoft.ManagedIdentity/userAssignedIdentities/read",
    "Microsoft.ManagedIdentity/userAssignedIdentities/write",
    "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
    "Microsoft.Network/loadBalancers/delete",
    "Microsoft.Network/loadBalancers/read",
    "Microsoft.Network/loadBalancers/write",
    "Microsoft.Network/networkSecurityGroups/delete",
    "Microsoft.Network/networkSecurityGroups/join/action",
    "Microsoft.Network/networkSecurityGroups/read",
    "Microsoft.Network/networkSecurityGroups/write",
    "Microsoft.Network/publicIPAddresses/delete",
    "Microsoft.Network/publicIPAddresses/join/action",
    "Microsoft.Network/publicIPAddresses/read",
    "Microsoft.Network/publicIPAddresses/write",
    "Microsoft.Network/virtualNetworks/delete",
    "Microsoft.Network/virtualNetworks/read",
    "Microsoft.Network/virtualNetworks/subnets/join/action",
    "Microsoft.Network/virtualNetworks/subnets/read",
    "Microsoft.Network/virtualNetworks/subnets/write",
    "Microsoft.Network/virtualNetworks/write",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
    "Microsoft.Storage/storageAccounts/listkeys/action",
];

/// The actions of [`ARM_ACTIONS`] that are not performed on the clusters'
/// resource group: pre-flight's subscription-scope reads (the resource SKUs
/// list and Compute usages), its own permission read, and `listKeys` on the
/// staging account (in the app's resource group). Pre-flight checks every
/// other action against the caller's permissions on the cluster's group
/// ([`resource_group_actions`]).
pub const NOT_ON_CLUSTER_GROUP: &[&str] = &[
    "Microsoft.Authorization/permissions/read",
    "Microsoft.Compute/locations/usages/read",
    "Microsoft.Compute/skus/read",
    "Microsoft.Storage/storageAccounts/listkeys/action",
];

/// The actions the flow performs on the cluster's resource group.
pub fn resource_group_actions() -> impl Iterator<Item = &'static str> {
    ARM_ACTIONS
        .iter()
        .copied()
        .filter(|a| !NOT_ON_CLUSTER_GROUP.contains(a))
}
