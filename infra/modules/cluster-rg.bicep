// Everything that lives in, or is scoped to, the resource group where flotilla
// creates clusters: the custom ARM role (the actions of ARM_ACTIONS in
// shared/azure/src/actions.rs that can work here) assigned to the app
// identity, and the Event Grid system topic that reports resource changes. Its
// subscription to the `events` function is infra/resource-events.bicep,
// deployed once the function exists.
//
// No cluster identity lives here: the scale sets flotilla creates carry their
// own system-assigned identity (one per scale set, so per job), and their
// grants are per job, made by the `workers` step: the custom role `flotilla
// cluster scaler` below, on the job's worker scale sets and worker subnet only
// (docs/deploy.md, "Roles per identity").

targetScope = 'resourceGroup'

param location string
param tags object

@description('Principal id of the Function App\'s user-assigned identity.')
param appPrincipalId string

// The ARM operations flotilla's client performs, and nothing else: ARM_ACTIONS,
// minus the actions scripts/check_infra.py lists in WITHHELD_ACTIONS with the
// reason (none may be granted that could not work), plus the linked-access
// actions ARM checks on a resource a request refers to (`assign/action` on
// the job's node identity, which every scale set of the job attaches).
// Assignable (and assigned) only on this resource group.
resource clusterOperatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'flotilla-cluster-operator')
  properties: {
    roleName: 'flotilla cluster operator (${resourceGroup().name}, ${uniqueString(resourceGroup().id)})'
    description: 'What flotilla\'s ARM client may do in its cluster resource group: networks, load balancer, public IP, NSGs and scale sets of the clusters it provisions.'
    type: 'customRole'
    permissions: [
      {
        actions: [
          // pre-flight: the caller's own permissions on this group. The SKU list and the
          // Compute usages are subscription-scope reads this group-scoped role cannot grant;
          // without a subscription-scope grant pre-flight reports them "not checked" (a warning).
          'Microsoft.Authorization/permissions/read'
          'Microsoft.Compute/locations/usages/read'
          'Microsoft.Compute/skus/read'
          // step `master`, `workers`: create the scale sets; `scale`: resize; `join`: instance view; undo: delete
          'Microsoft.Compute/virtualMachineScaleSets/delete'
          'Microsoft.Compute/virtualMachineScaleSets/instanceView/read'
          'Microsoft.Compute/virtualMachineScaleSets/read'
          // `join`: name a node that never registered and quote its init extension's message
          'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/instanceView/read'
          'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read'
          'Microsoft.Compute/virtualMachineScaleSets/write'
          // step `keys`: the job's node identity (staging.access: identity), read back
          // for its principal id, attached to the job's scale sets (ARM's linked check
          // on the identity); undo: delete
          'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action'
          'Microsoft.ManagedIdentity/userAssignedIdentities/delete'
          'Microsoft.ManagedIdentity/userAssignedIdentities/read'
          'Microsoft.ManagedIdentity/userAssignedIdentities/write'
          // step `prereqs`: API load balancer; `master`: join its backend pool; undo: delete
          'Microsoft.Network/loadBalancers/backendAddressPools/join/action'
          'Microsoft.Network/loadBalancers/delete'
          'Microsoft.Network/loadBalancers/read'
          'Microsoft.Network/loadBalancers/write'
          // step `prereqs`: one NSG per subnet, attached to the subnet; undo: delete
          'Microsoft.Network/networkSecurityGroups/delete'
          'Microsoft.Network/networkSecurityGroups/join/action'
          'Microsoft.Network/networkSecurityGroups/read'
          'Microsoft.Network/networkSecurityGroups/write'
          // step `prereqs`: public IP of the API endpoint, used by the load balancer; undo: delete
          'Microsoft.Network/publicIPAddresses/delete'
          'Microsoft.Network/publicIPAddresses/join/action'
          'Microsoft.Network/publicIPAddresses/read'
          'Microsoft.Network/publicIPAddresses/write'
          // step `prereqs`: VNet with control-plane and worker subnets; `master`, `workers`: place NICs in them; undo: delete
          'Microsoft.Network/virtualNetworks/delete'
          'Microsoft.Network/virtualNetworks/read'
          'Microsoft.Network/virtualNetworks/subnets/join/action'
          // network.existing with attachNsgs: read a subnet, put it back with flotilla's NSG
          'Microsoft.Network/virtualNetworks/subnets/read'
          'Microsoft.Network/virtualNetworks/subnets/write'
          'Microsoft.Network/virtualNetworks/write'
          // step `workers`: the cluster identity's scaler role on its job's worker
          // scale sets and subnet; undo: delete. The assignment below lets flotilla
          // assign and delete that one role only (a delegation condition).
          'Microsoft.Authorization/roleAssignments/delete'
          'Microsoft.Authorization/roleAssignments/write'
          // the check after undo: a recorded assignment must be gone
          'Microsoft.Authorization/roleAssignments/read'
          // orphan sweep and `status`: find resources by the job tag
          'Microsoft.Resources/subscriptions/resourceGroups/read'
          'Microsoft.Resources/subscriptions/resourceGroups/resources/read'
          // Not granted: Microsoft.Storage/storageAccounts/listkeys/action (step `keys`,
          // staging.access: account-key only). The staging account refuses shared keys,
          // so its key would open nothing (docs/deploy.md, "Known limits").
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// What a cluster's own identity may do, assigned per job by the `workers`
// step on the job's worker scale sets and worker subnet (SCALER_ACTIONS in
// shared/core/src/steps/rbac.rs): read them and their instances, change
// their capacity, join the subnet a scale-out adds NICs to.
resource clusterScalerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'flotilla-cluster-scaler')
  properties: {
    roleName: 'flotilla cluster scaler (${resourceGroup().name}, ${uniqueString(resourceGroup().id)})'
    description: 'What a flotilla cluster\'s own identity may do on its job\'s worker scale sets: read them and their instances, change their capacity, join the worker subnet.'
    type: 'customRole'
    permissions: [
      {
        actions: [
          'Microsoft.Compute/virtualMachineScaleSets/instanceView/read'
          'Microsoft.Compute/virtualMachineScaleSets/read'
          'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/instanceView/read'
          'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read'
          'Microsoft.Compute/virtualMachineScaleSets/write'
          'Microsoft.Network/virtualNetworks/subnets/join/action'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// The app identity gets the custom role on this resource group only (not
// Contributor). Its role assignment actions are constrained to the scaler
// role: it cannot assign (or remove) any other role, its own included.
resource clusterOperatorAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, clusterOperatorRole.id, appPrincipalId)
  properties: {
    roleDefinitionId: clusterOperatorRole.id
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    conditionVersion: '2.0'
    condition: '((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/write\'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${clusterScalerRole.name}})) AND ((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/delete\'})) OR (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${clusterScalerRole.name}}))'
  }
}

// Resource events of this resource group (Event Grid system topics for
// resource groups are global). Its identity writes undeliverable events to the
// dead-letter container (role granted in main.bicep).
resource resourceEventsTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: 'evgt-flotilla-${uniqueString(resourceGroup().id)}'
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: resourceGroup().id
    topicType: 'Microsoft.Resources.ResourceGroups'
  }
}

output roleDefinitionId string = clusterOperatorRole.id
output scalerRoleGuid string = clusterScalerRole.name
output resourceEventsTopicName string = resourceEventsTopic.name
output resourceEventsTopicPrincipalId string = resourceEventsTopic.identity.principalId
