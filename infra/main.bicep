// flotilla on Azure: the Function App (custom handler), its identity, and every
// backend it talks to. Deploy with `azd up` or
// `az deployment group create -g <rg> -f infra/main.bicep -p infra/main.parameters.json`.
//
// Rules this template keeps (checked by scripts/check_infra.py):
// - the app settings are exactly the settings registered with `deployed: true`
//   in shared/core/src/settings.rs, no secrets, identity-based connections;
// - the ARM custom role grants exactly ARM_ACTIONS (shared/azure/src/actions.rs);
// - every checkov suppression is listed with its reason in README.md.

targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
@description('azd environment name; used to derive resource names and tags.')
param environmentName string

@description('Region of every regional resource.')
param location string = resourceGroup().location

@description('Resource group where flotilla creates clusters. Empty = this resource group. It must already exist.')
param clusterResourceGroupName string = ''

@description('SKU of the dedicated Linux App Service plan that hosts the Function App (see docs/deploy.md for the plan choice).')
@allowed([
  'B1'
  'B2'
  'B3'
  'S1'
  'P0v3'
  'P1v3'
  'P2v3'
])
param appServicePlanSku string = 'B1'

@description('Create the Event Grid subscription that delivers resource events to the `events` function. Event Grid validates an Azure Function destination when the subscription is created, so this must stay false until the code has been deployed once (azd does the second pass in its postdeploy hook).')
param enableResourceEvents bool = false

@description('Log filter and format are code defaults; this only picks JSON logs for Application Insights.')
@allowed([
  'json'
  'text'
])
param logFormat string = 'json'

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
  'managed-by': 'flotilla-infra'
}
var clusterRgName = empty(clusterResourceGroupName) ? resourceGroup().name : clusterResourceGroupName

var appIdentityName = 'id-flotilla-app-${token}'
var clusterIdentityName = 'id-flotilla-cluster-${token}'
var logAnalyticsName = 'log-flotilla-${token}'
var appInsightsName = 'appi-flotilla-${token}'
var hostStorageName = 'stfh${token}'
var stagingStorageName = 'stfs${token}'
var serviceBusName = 'sb-flotilla-${token}'
var cosmosName = 'cosmos-flotilla-${token}'
var keyVaultName = 'kv-flotilla-${take(token, 12)}'
var planName = 'plan-flotilla-${token}'
var functionAppName = 'func-flotilla-${token}'

// Names the code also knows (defaults in settings.rs).
var eventsTopicName = 'flotilla-events'
var jobsQueueName = 'flotilla-jobs'
var cosmosDatabaseName = 'flotilla'
var cosmosContainerName = 'sagas'
var stagingContainerName = 'staging'

// One topic subscription per consuming function; each receives only the
// messages whose Subject (Label) is its own name.
var stepSubscriptions = [
  'stage'
  'prereqs'
  'keys'
  'master'
  'workers'
  'join'
  'poll'
  'compensate'
]

// Built-in role definition ids (the same in every tenant).
var roles = {
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}
// Cosmos DB data-plane role "Cosmos DB Built-in Data Contributor".
var cosmosDataContributorId = '00000000-0000-0000-0000-000000000002'

// ---------------------------------------------------------------------------
// Identities
// ---------------------------------------------------------------------------

// The Function App's identity: used by the Functions host (storage, Service Bus
// triggers) and by flotilla's own clients (AZURE_CREDENTIAL=managed-identity).
resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: appIdentityName
  location: location
  tags: tags
}

// ---------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
  }
}

// ---------------------------------------------------------------------------
// Storage: host storage (AzureWebJobsStorage) and the staging account
// ---------------------------------------------------------------------------

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_43: the name is 'stfh' + uniqueString() = 17 lowercase alphanumerics, valid; checkov cannot evaluate the expression
  // checkov:skip=CKV_AZURE_35: the Functions host reaches its storage over the public endpoint (no VNet integration in this deployment); access needs an Entra token, shared keys are disabled
  // checkov:skip=CKV_AZURE_59: same as CKV_AZURE_35, public network access is needed without private endpoints; shared keys and anonymous access are disabled
  // checkov:skip=CKV_AZURE_206: host storage holds only leases and keys the host recreates; locally redundant storage is enough
  name: hostStorageName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource stagingStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_43: the name is 'stfs' + uniqueString() = 17 lowercase alphanumerics, valid; checkov cannot evaluate the expression
  // checkov:skip=CKV_AZURE_35: cluster nodes download their init script over the public endpoint with an Entra token (the cluster VNets are created per job, so no static network rule fits); shared keys and anonymous access are disabled
  // checkov:skip=CKV_AZURE_59: same as CKV_AZURE_35, the nodes and the Function App reach the account without private endpoints
  // checkov:skip=CKV_AZURE_206: staged blobs are rebuilt by the stage step from the job spec; locally redundant storage is enough
  name: stagingStorageName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource stagingBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: stagingStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource stagingContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: stagingBlobService
  name: stagingContainerName
  properties: {
    publicAccess: 'None'
  }
}

// ---------------------------------------------------------------------------
// Service Bus: topic flotilla-events (one subscription per step) + queue flotilla-jobs
// ---------------------------------------------------------------------------

resource serviceBus 'Microsoft.ServiceBus/namespaces@2021-11-01' = {
  name: serviceBusName
  location: location
  tags: tags
  // Standard: topics, scheduled messages and duplicate detection (Basic has no topics).
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource eventsTopic 'Microsoft.ServiceBus/namespaces/topics@2021-11-01' = {
  parent: serviceBus
  name: eventsTopicName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    defaultMessageTimeToLive: 'P14D'
    enableBatchedOperations: true
    maxSizeInMegabytes: 1024
    supportOrdering: false
  }
}

resource stepSubscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2021-11-01' = [for step in stepSubscriptions: {
  parent: eventsTopic
  name: step
  properties: {
    maxDeliveryCount: 10
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: true
    deadLetteringOnFilterEvaluationExceptions: true
    enableBatchedOperations: true
    requiresSession: false
  }
}]

// Replaces the subscription's default match-all rule ($Default), so each
// subscription only gets the messages addressed to its function.
resource stepFilter 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2021-11-01' = [for (step, i) in stepSubscriptions: {
  parent: stepSubscription[i]
  name: '$Default'
  properties: {
    filterType: 'CorrelationFilter'
    correlationFilter: {
      label: step
      requiresPreprocessing: false
    }
  }
}]

resource jobsQueue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = {
  parent: serviceBus
  name: jobsQueueName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    maxDeliveryCount: 10
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
    enableBatchedOperations: true
    maxSizeInMegabytes: 1024
  }
}

// ---------------------------------------------------------------------------
// Cosmos DB (serverless): saga store
// ---------------------------------------------------------------------------

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  // checkov:skip=CKV_AZURE_99: no IP or VNet filter: the Function App's outbound addresses are shared and change with the plan; key auth is disabled, every request needs an Entra token with a data-plane role
  // checkov:skip=CKV_AZURE_101: the Function App reaches Cosmos DB over the public endpoint (no private endpoint in this deployment); key auth is disabled, every request needs an Entra token with a data-plane role
  name: cosmosName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
    enableAutomaticFailover: false
    backupPolicy: {
      type: 'Continuous'
      continuousModeProperties: {
        tier: 'Continuous7Days'
      }
    }
  }
}

resource cosmosDatabase 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: cosmos
  name: cosmosDatabaseName
  properties: {
    resource: {
      id: cosmosDatabaseName
    }
  }
}

resource cosmosContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: cosmosDatabase
  name: cosmosContainerName
  properties: {
    resource: {
      id: cosmosContainerName
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Key Vault (RBAC mode): per-job secrets written by step `keys`
// ---------------------------------------------------------------------------

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: the Function App and the cluster nodes (in per-job VNets) reach the vault over its public endpoint; every call needs an Entra token and an RBAC data role
  // checkov:skip=CKV_AZURE_189: same as CKV_AZURE_109, public network access is needed without private endpoints
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// ---------------------------------------------------------------------------
// Function App: dedicated Linux plan, custom handler
// ---------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy needs a Premium v3 plan with three instances; out of scope for the default deployment
  name: planName
  location: location
  tags: tags
  kind: 'linux'
  sku: {
    name: appServicePlanSku
  }
  properties: {
    reserved: true
  }
}

var serviceBusHost = split(split(serviceBus.properties.serviceBusEndpoint, '/')[2], ':')[0]

resource functionApp 'Microsoft.Web/sites@2023-12-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers resource events and users submit jobs over the public HTTPS endpoint (function keys, HTTPS only, TLS 1.2)
  // checkov:skip=CKV_AZURE_212: one instance is enough for the event-driven steps (each invocation lasts milliseconds, Service Bus redelivers on failure); scale out the plan for production
  // checkov:skip=CKV_AZURE_213: a health check only takes instances out of rotation when there are two or more; the default plan runs one
  // checkov:skip=CKV_AZURE_17: Event Grid and the Service Bus-triggered host do not present client certificates; HTTP functions are protected by function keys
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'flotilla'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${appIdentity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: appIdentity.id
    siteConfig: {
      // Custom handler on Linux: no language stack image.
      linuxFxVersion: ''
      // Service Bus triggers on a dedicated plan only fire while the host runs.
      alwaysOn: true
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      remoteDebuggingEnabled: false
      use32BitWorkerProcess: false
      appSettings: [
        // Functions host
        {
          name: 'FUNCTIONS_WORKER_RUNTIME'
          value: 'custom'
        }
        {
          name: 'FUNCTIONS_EXTENSION_VERSION'
          value: '~4'
        }
        {
          name: 'AzureWebJobsStorage__accountName'
          value: hostStorage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: appIdentity.properties.clientId
        }
        {
          name: 'ServiceBusConnection__fullyQualifiedNamespace'
          value: serviceBusHost
        }
        {
          name: 'ServiceBusConnection__credential'
          value: 'managedidentity'
        }
        {
          name: 'ServiceBusConnection__clientId'
          value: appIdentity.properties.clientId
        }
        {
          // Not a secret: an ingestion endpoint and key that only allow writing telemetry.
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        // Backends
        {
          name: 'FLOTILLA_STORE'
          value: 'cosmos'
        }
        {
          name: 'FLOTILLA_BUS'
          value: 'servicebus'
        }
        {
          name: 'FLOTILLA_STAGING'
          value: 'blob'
        }
        {
          name: 'COSMOS_ENDPOINT'
          value: cosmos.properties.documentEndpoint
        }
        {
          name: 'COSMOS_DATABASE'
          value: cosmosDatabaseName
        }
        {
          name: 'COSMOS_CONTAINER'
          value: cosmosContainerName
        }
        {
          name: 'SERVICEBUS_ENDPOINT'
          value: 'https://${serviceBusHost}'
        }
        {
          // The entity flotilla sends its CloudEvents to: the topic.
          name: 'SERVICEBUS_QUEUE'
          value: eventsTopicName
        }
        {
          name: 'STAGING_BLOB_ENDPOINT'
          value: 'https://${stagingStorage.name}.blob.${environment().suffixes.storage}'
        }
        {
          name: 'STAGING_CONTAINER'
          value: stagingContainerName
        }
        {
          name: 'STAGING_ACCOUNT_ID'
          value: stagingStorage.id
        }
        // Azure control plane and identity
        {
          name: 'AZURE_SUBSCRIPTION_ID'
          value: subscription().subscriptionId
        }
        {
          name: 'AZURE_TENANT_ID'
          value: tenant().tenantId
        }
        {
          name: 'KEYVAULT_URL'
          value: 'https://${keyVault.name}${environment().suffixes.keyvaultDns}'
        }
        {
          name: 'AZURE_CREDENTIAL'
          value: 'managed-identity'
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: appIdentity.properties.clientId
        }
        // Operations
        {
          name: 'FLOTILLA_LOG_FORMAT'
          value: logFormat
        }
      ]
    }
  }
}

resource functionAppFtp 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource functionAppScm 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  // Deployments (azd deploy, az functionapp deployment source config-zip) authenticate with Entra ID.
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// ---------------------------------------------------------------------------
// Role assignments in this resource group (least privilege)
// ---------------------------------------------------------------------------

// Functions host, identity-based AzureWebJobsStorage: blob leases, host keys,
// container creation (Storage Blob Data Owner is the documented minimum).
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, appIdentity.id, roles.storageBlobDataOwner)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Functions host: diagnostic events are written to table storage on AzureWebJobsStorage.
resource hostTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, appIdentity.id, roles.storageTableDataContributor)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Every step emits the next CloudEvent (and schedules poll messages) on the topic.
resource busSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, appIdentity.id, roles.serviceBusDataSender)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The Service Bus triggers of every step (topic subscriptions) and submit-queue (flotilla-jobs) receive and settle.
resource busReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, appIdentity.id, roles.serviceBusDataReceiver)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Saga store: every step reads and writes its saga document (Cosmos DB data plane RBAC).
resource cosmosDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: cosmos
  name: guid(cosmos.id, appIdentity.id, cosmosDataContributorId)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributorId}'
    principalId: appIdentity.properties.principalId
    scope: cosmos.id
  }
}

// Step `stage` writes the cluster spec and init script; its undo deletes them.
resource stagingBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stagingContainer.id, appIdentity.id, roles.storageBlobDataContributor)
  scope: stagingContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Step `keys` writes the per-job secrets; its undo deletes them.
resource vaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, appIdentity.id, roles.keyVaultSecretsOfficer)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Cluster identity (created in the cluster resource group by the module below).
var clusterIdentityId = resourceId(subscription().subscriptionId, clusterRgName, 'Microsoft.ManagedIdentity/userAssignedIdentities', clusterIdentityName)

// Cluster nodes (steps `master`, `workers`, checked by `join`) read their per-job secrets.
resource clusterVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, clusterIdentityId, roles.keyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: clusterRg.outputs.clusterIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Cluster nodes download the init script that step `stage` wrote.
resource clusterStagingReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stagingContainer.id, clusterIdentityId, roles.storageBlobDataReader)
  scope: stagingContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: clusterRg.outputs.clusterIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------
// The cluster resource group: custom ARM role, cluster identity, resource events
// ---------------------------------------------------------------------------

module clusterRg 'modules/cluster-rg.bicep' = {
  name: 'flotilla-cluster-rg-${token}'
  scope: resourceGroup(clusterRgName)
  params: {
    location: location
    tags: tags
    appPrincipalId: appIdentity.properties.principalId
    clusterIdentityName: clusterIdentityName
    functionAppId: functionApp.id
    enableResourceEvents: enableResourceEvents
  }
}

// ---------------------------------------------------------------------------
// Outputs (azd stores them in the environment)
// ---------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output FUNCTION_APP_NAME string = functionApp.name
output FUNCTION_APP_URL string = 'https://${functionApp.properties.defaultHostName}'
output APP_IDENTITY_CLIENT_ID string = appIdentity.properties.clientId
output CLUSTER_RESOURCE_GROUP string = clusterRgName
output CLUSTER_IDENTITY_ID string = clusterRg.outputs.clusterIdentityId
output CLUSTER_IDENTITY_CLIENT_ID string = clusterRg.outputs.clusterIdentityClientId
output ARM_ROLE_DEFINITION_ID string = clusterRg.outputs.roleDefinitionId
output KEYVAULT_NAME string = keyVault.name
output SERVICEBUS_NAMESPACE string = serviceBus.name
output COSMOS_ACCOUNT string = cosmos.name
output STAGING_ACCOUNT string = stagingStorage.name
