// flotilla on Azure: the Function App (custom handler), its identity, and every
// backend it talks to. Deploy with `azd up`, or without azd with
// `az deployment group create -g <rg> -f infra/main.bicep -p environmentName=<name>`
// (infra/main.parameters.json holds azd `${VAR}` substitutions: azd only).
//
// Hosting: Flex Consumption (FC1, Linux, scale to zero) by default; a dedicated
// App Service plan with `hostingPlan=Dedicated` (docs/deploy.md has the choice).
//
// Rules this template keeps (checked by scripts/check_infra.py):
// - the app settings are exactly the settings registered with `deployed: true`
//   in shared/core/src/settings.rs (minus DEDICATED_PLAN_ONLY on Flex
//   Consumption), no secrets, identity-based connections;
// - every property exists at the api-version used (infra/schema/);
// - the ARM custom role grants exactly ARM_ACTIONS (shared/azure/src/actions.rs);
// - every checkov suppression is listed with its reason in README.md.

targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
@description('azd environment name; used to derive resource names and tags.')
param environmentName string

@description('Region of every regional resource.')
param location string = resourceGroup().location

@description('Resource group where flotilla creates clusters. Empty (default) = `<this resource group>-clusters`, created by this template and left alone by `azd down`, so live clusters survive a teardown of the app. A name given here must already exist.')
param clusterResourceGroupName string = ''

@description('Hosting plan: FlexConsumption (default: pay per execution, scales to zero and out per function) or Dedicated (a fixed-price App Service plan, see appServicePlanSku).')
@allowed([
  'FlexConsumption'
  'Dedicated'
])
param hostingPlan string = 'FlexConsumption'

@description('Flex Consumption: most instances the app scales out to (per-function scaling shares this cap).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: memory per instance in MB (CPU and network scale with it).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Flex Consumption: always-ready instances for the HTTP functions (submit, list, status, delete, scale, plan); 0 = scale to zero, first request after idle waits for a cold start.')
@minValue(0)
@maxValue(20)
param httpAlwaysReady int = 0

@description('Flex Consumption: concurrent HTTP requests per instance before the platform adds one.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Dedicated plan only: SKU of the Linux App Service plan.')
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

@description('Key Vault name generation. Purge protection keeps a deleted vault\'s name reserved for its retention period, so the azd `postdown` hook bumps this (FLOTILLA_VAULT_GENERATION) and the next deployment gets a fresh vault name.')
@minLength(1)
@maxLength(8)
param keyVaultGeneration string = '1'

@description('Application (client) id of the Entra app registration that App Service Authentication accepts tokens for (docs/deploy.md, "Who may call"). Callers sign in for this app; its app role `Flotilla.Admin` may touch every job.')
@minLength(36)
@maxLength(36)
param authClientId string

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
var isFlex = hostingPlan == 'FlexConsumption'
// Clusters live in their own resource group by default: `azd down` deletes only
// this (the app's) resource group, never live clusters.
var createClusterRg = empty(clusterResourceGroupName)
var clusterRgName = createClusterRg ? '${resourceGroup().name}-clusters' : clusterResourceGroupName

var appIdentityName = 'id-flotilla-app-${token}'
var logAnalyticsName = 'log-flotilla-${token}'
var appInsightsName = 'appi-flotilla-${token}'
var hostStorageName = 'stfh${token}'
var stagingStorageName = 'stfs${token}'
var serviceBusName = 'sb-flotilla-${token}'
var cosmosName = 'cosmos-flotilla-${token}'
var keyVaultName = 'kv-flotilla-${take(uniqueString(token, keyVaultGeneration), 11)}'
var planName = 'plan-flotilla-${token}'
var functionAppName = 'func-flotilla-${token}'

// Names the code also knows (defaults in settings.rs).
var eventsTopicName = 'flotilla-events'
var jobsQueueName = 'flotilla-jobs'
var cosmosDatabaseName = 'flotilla'
var cosmosContainerName = 'sagas'
var stagingContainerName = 'staging'
// Flex Consumption: the deployment package (azd / `az functionapp deployment` upload it here).
var deploymentContainerName = 'app-package'
// Event Grid writes resource events it could not deliver here.
var eventGridDeadLetterContainerName = 'eventgrid-deadletter'

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
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  roleBasedAccessControlAdministrator: 'f58310d9-a9f6-439a-9e8d-f62e7b41a168'
  // Not granted here: what step `keys` gives each job's node identity, per job.
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
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
    // Ingestion needs an Entra token (APPLICATIONINSIGHTS_AUTHENTICATION_STRING), not the key alone.
    DisableLocalAuth: true
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

resource hostBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

// Flex Consumption runs the app from the package in this container, read with the app identity.
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource eventGridDeadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobService
  name: eventGridDeadLetterContainerName
  properties: {
    publicAccess: 'None'
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

resource serviceBus 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
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

resource eventsTopic 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = {
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

resource stepSubscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = [for step in stepSubscriptions: {
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
resource stepFilter 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2024-01-01' = [for (step, i) in stepSubscriptions: {
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

resource jobsQueue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
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
// Function App: custom handler on Flex Consumption (default) or a dedicated plan
// ---------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy needs a Premium v3 plan with three instances (or a Flex Consumption zone-redundant plan); out of scope for the default deployment
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'linux'
  sku: isFlex ? {
    name: 'FC1'
    tier: 'FlexConsumption'
  } : {
    name: appServicePlanSku
  }
  properties: {
    reserved: true
  }
}

var serviceBusHost = split(split(serviceBus.properties.serviceBusEndpoint, '/')[2], ':')[0]

// App settings on every plan: exactly the registry's `deployed: true` settings
// minus DEDICATED_PLAN_ONLY (checked by scripts/check_infra.py).
// schema: functionApp properties.siteConfig.appSettings
var appSettingsAllPlans = [
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
    // Not a secret: where to send telemetry; local auth is off, so ingestion also needs the token below.
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${appIdentity.properties.clientId};Authorization=AAD'
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
    name: 'KEYVAULT_ID'
    value: keyVault.id
  }
  {
    name: 'AZURE_CREDENTIAL'
    value: 'managed-identity'
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: appIdentity.properties.clientId
  }
  // Who may call (App Service Authentication below) and what Event Grid may deliver
  {
    name: 'FLOTILLA_AUTH'
    value: 'required'
  }
  {
    name: 'FLOTILLA_EVENTGRID_TOPIC'
    value: '/subscriptions/${subscription().subscriptionId}/resourceGroups/${clusterRgName}'
  }
  // The role each cluster's own identity gets on its job's worker scale sets.
  {
    name: 'CLUSTER_SCALER_ROLE_ID'
    value: clusterRg.outputs.scalerRoleGuid
  }
  // Operations
  {
    name: 'FLOTILLA_LOG_FORMAT'
    value: logFormat
  }
]

// Dedicated plan only (settings.rs DEDICATED_PLAN_ONLY): Flex Consumption takes the
// runtime from functionAppConfig.runtime and sets the host version itself.
// schema: functionApp properties.siteConfig.appSettings
var appSettingsDedicatedOnly = [
  {
    name: 'FUNCTIONS_WORKER_RUNTIME'
    value: 'custom'
  }
  {
    name: 'FUNCTIONS_EXTENSION_VERSION'
    value: '~4'
  }
]

// Flex Consumption: runtime, deployment package and scaling. The Service Bus
// triggers' per-instance concurrency is host.json's
// extensions.serviceBus.maxConcurrentCalls (docs/deploy.md explains the value).
// schema: functionApp properties.functionAppConfig
var flexFunctionAppConfig = {
  runtime: {
    name: 'custom'
    version: '1.0'
  }
  deployment: {
    storage: {
      type: 'blobContainer'
      value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
      authentication: {
        type: 'UserAssignedIdentity'
        userAssignedIdentityResourceId: appIdentity.id
      }
    }
  }
  scaleAndConcurrency: {
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    alwaysReady: [for i in range(0, httpAlwaysReady > 0 ? 1 : 0): {
      name: 'http'
      instanceCount: httpAlwaysReady
    }]
    triggers: {
      http: {
        perInstanceConcurrency: httpPerInstanceConcurrency
      }
    }
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers resource events and users submit jobs over the public HTTPS endpoint (Entra ID through App Service Authentication, function keys, HTTPS only, TLS 1.2)
  // checkov:skip=CKV_AZURE_212: Flex Consumption adds instances per function as load grows (maximumInstanceCount); on the dedicated plan one instance is enough for the event-driven steps (Service Bus redelivers on failure)
  // checkov:skip=CKV_AZURE_213: the platform replaces unhealthy Flex Consumption instances itself; a health check only takes dedicated-plan instances out of rotation when there are two or more
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
    functionAppConfig: isFlex ? flexFunctionAppConfig : null
    siteConfig: {
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      remoteDebuggingEnabled: false
      // Dedicated plan only; Flex Consumption refuses these site properties (null = not sent).
      // Custom handler on Linux: no language stack image.
      linuxFxVersion: isFlex ? null : ''
      // Service Bus triggers on a dedicated plan only fire while the host runs.
      alwaysOn: isFlex ? null : true
      use32BitWorkerProcess: isFlex ? null : false
      appSettings: isFlex ? appSettingsAllPlans : concat(appSettingsDedicatedOnly, appSettingsAllPlans)
    }
  }
  dependsOn: [
    // The host reads its package and storage with these roles from the first start.
    hostBlobOwner
    deploymentContainer
  ]
}

// App Service Authentication (Easy Auth) with Entra ID in front of every HTTP
// function: a request without a valid token for the app registration gets 401
// before it reaches flotilla, and an authenticated one reaches it with the
// caller in X-MS-CLIENT-PRINCIPAL* headers (which the platform strips from
// what clients send); flotilla records the caller as the job's owner
// (FLOTILLA_AUTH=required above). Event Grid's delivery endpoint is excluded:
// it authenticates with the Event Grid system key, and `events` checks the topic.
resource functionAppAuth 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: this resource is the App Service Authentication setting itself (authsettingsV2: Entra ID, authentication required, 401); checkov reads only the legacy `authsettings` shape
  // checkov:skip=CKV_AZURE_63: checkov applies its site-config checks to every Microsoft.Web/sites/config; this one holds only authsettingsV2 (the site's logs go to Log Analytics through its diagnostic setting)
  // checkov:skip=CKV_AZURE_65: checkov applies its site-config checks to every Microsoft.Web/sites/config; this one holds only authsettingsV2 (detailed error pages are a site setting, off by default)
  // checkov:skip=CKV_AZURE_66: checkov applies its site-config checks to every Microsoft.Web/sites/config; this one holds only authsettingsV2 (failed request tracing is a site setting)
  // checkov:skip=CKV_AZURE_80: checkov applies its site-config checks to every Microsoft.Web/sites/config; this one holds only authsettingsV2, and the app runs a Rust custom handler, no .NET Framework
  // checkov:skip=CKV_AZURE_88: checkov applies its site-config checks to every Microsoft.Web/sites/config; this one holds only authsettingsV2 (the app mounts no storage)
  // checkov:skip=CKV_AZURE_222: checkov applies its site checks to every Microsoft.Web/sites/config; this one holds only authsettingsV2, and public access is the site's (see `functionApp`)
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/runtime/webhooks/eventgrid'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${authClientId}'
            authClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

resource functionAppFtp 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource functionAppScm 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
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

// Step `keys` gives each job's node identity Storage Blob Data Reader on the
// `staging` container, conditioned on the job's blob prefix; undo removes it.
// The app may assign (and remove) that one role on this container only: a
// delegation condition, as on the clusters' group.
resource stagingReaderDelegation 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stagingContainer.id, appIdentity.id, roles.roleBasedAccessControlAdministrator)
  scope: stagingContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.roleBasedAccessControlAdministrator)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    conditionVersion: '2.0'
    condition: '((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/write\'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${roles.storageBlobDataReader}})) AND ((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/delete\'})) OR (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${roles.storageBlobDataReader}}))'
  }
}

// Step `keys` gives each job's node principal Key Vault Secrets Officer on
// exactly the job's join secrets (a role assignment per secret); undo removes
// them. The app may assign (and remove) that one role in this vault only.
resource vaultOfficerDelegation 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, appIdentity.id, roles.roleBasedAccessControlAdministrator)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.roleBasedAccessControlAdministrator)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    conditionVersion: '2.0'
    condition: '((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/write\'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${roles.keyVaultSecretsOfficer}})) AND ((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/delete\'})) OR (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${roles.keyVaultSecretsOfficer}}))'
  }
}

// Cluster nodes get nothing here. A grant on the whole vault or the whole
// `staging` container to one shared node identity would let any node read
// every job's secrets and scripts; the steps grant per job once the job's
// identity exists (its blobs and its join secrets, above).
// scripts/check_infra.py refuses a data role on the vault or the staging
// storage to any principal but the app's.

// Telemetry: the host sends its logs, and flotilla its traces and metrics, with the app identity (Application Insights local auth is off).
resource appInsightsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appIdentity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Event Grid (the system topic's own identity) writes undeliverable resource events here.
resource eventGridDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventGridDeadLetterContainer.id, clusterRgName, roles.storageBlobDataContributor)
  scope: eventGridDeadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: clusterRg.outputs.resourceEventsTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------
// Diagnostic settings: audit and operation logs and metrics to Log Analytics
// ---------------------------------------------------------------------------

resource keyVaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: keyVault
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        // AuditEvent: every secret read and write, with the caller's identity.
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

resource serviceBusDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: serviceBus
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

resource cosmosDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: cosmos
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Requests'
        enabled: true
      }
    ]
  }
}

resource hostBlobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: hostBlobService
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource stagingBlobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: stagingBlobService
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource functionAppDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: functionApp
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        // FunctionAppLogs: the host's and flotilla's log lines per invocation.
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

// ---------------------------------------------------------------------------
// The cluster resource group: custom ARM role, cluster identity, resource events topic
// ---------------------------------------------------------------------------

// Created at subscription scope when no existing group is named. For a template
// scoped to a resource group, as this one is, `azd down` deletes that resource
// group only, so the clusters' group and every cluster in it stay
// (docs/deploy.md, "Tear down").
module clusterRgCreate 'modules/cluster-rg-create.bicep' = if (createClusterRg) {
  name: 'flotilla-cluster-rg-create-${token}'
  scope: subscription()
  params: {
    name: clusterRgName
    location: location
    // No azd-env-name tag: azd must never mistake this group for the app's.
    tags: {
      'managed-by': 'flotilla-infra'
      'flotilla-app-resource-group': resourceGroup().name
    }
  }
}

module clusterRg 'modules/cluster-rg.bicep' = {
  name: 'flotilla-cluster-rg-${token}'
  scope: resourceGroup(clusterRgName)
  params: {
    location: location
    tags: tags
    appPrincipalId: appIdentity.properties.principalId
  }
  dependsOn: [
    clusterRgCreate
  ]
}

// ---------------------------------------------------------------------------
// Outputs (azd stores them in the environment; infra/hooks read them)
// ---------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output FLOTILLA_HOSTING_PLAN string = hostingPlan
output FUNCTION_APP_NAME string = functionApp.name
output FUNCTION_APP_ID string = functionApp.id
output FUNCTION_APP_URL string = 'https://${functionApp.properties.defaultHostName}'
output APP_IDENTITY_CLIENT_ID string = appIdentity.properties.clientId
output CLUSTER_RESOURCE_GROUP string = clusterRgName
output ARM_ROLE_DEFINITION_ID string = clusterRg.outputs.roleDefinitionId
output RESOURCE_EVENTS_TOPIC string = clusterRg.outputs.resourceEventsTopicName
output EVENTGRID_DEADLETTER_ACCOUNT_ID string = hostStorage.id
output EVENTGRID_DEADLETTER_CONTAINER string = eventGridDeadLetterContainerName
output KEYVAULT_NAME string = keyVault.name
output SERVICEBUS_NAMESPACE string = serviceBus.name
output COSMOS_ACCOUNT string = cosmos.name
output STAGING_ACCOUNT string = stagingStorage.name
