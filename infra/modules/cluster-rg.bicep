// Everything that lives in, or is scoped to, the resource group where flotilla
// creates clusters: the custom ARM role (exactly ARM_ACTIONS from
// shared/azure/src/actions.rs) assigned to the app identity, the cluster
// identity the nodes use, and the Event Grid system topic that reports
// resource changes. Its subscription to the `events` function is
// infra/resource-events.bicep, deployed once the function exists.

targetScope = 'resourceGroup'

param location string
param tags object

@description('Principal id of the Function App\'s user-assigned identity.')
param appPrincipalId string

@description('Name of the user-assigned identity attached to cluster nodes.')
param clusterIdentityName string

// Cluster nodes (VMSS instances created by steps `master` and `workers`) run as
// this identity: they read their secrets from Key Vault and their init script
// from the staging container (roles granted in main.bicep).
resource clusterIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: clusterIdentityName
  location: location
  tags: tags
}

// The ARM operations flotilla's client performs, and nothing else. Kept equal
// to ARM_ACTIONS by scripts/check_infra.py. Assignable (and assigned) only on
// this resource group.
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
          'Microsoft.Network/virtualNetworks/write'
          // orphan sweep and `status`: find resources by the job tag
          'Microsoft.Resources/subscriptions/resourceGroups/read'
          'Microsoft.Resources/subscriptions/resourceGroups/resources/read'
          // step `keys`: read the staging account key for the nodes
          'Microsoft.Storage/storageAccounts/listkeys/action'
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

// The app identity gets the custom role on this resource group only (not Contributor).
resource clusterOperatorAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, clusterOperatorRole.id, appPrincipalId)
  properties: {
    roleDefinitionId: clusterOperatorRole.id
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
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

output clusterIdentityId string = clusterIdentity.id
output clusterIdentityClientId string = clusterIdentity.properties.clientId
output clusterIdentityPrincipalId string = clusterIdentity.properties.principalId
output roleDefinitionId string = clusterOperatorRole.id
output resourceEventsTopicName string = resourceEventsTopic.name
output resourceEventsTopicPrincipalId string = resourceEventsTopic.identity.principalId
