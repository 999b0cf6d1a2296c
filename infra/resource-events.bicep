// The Event Grid subscription that delivers resource events of the clusters'
// resource group to the `events` function. Separate from main.bicep because
// Event Grid validates an Azure Function destination when the subscription is
// created: the function must be deployed first. Deployed into the clusters'
// resource group after every code deployment by infra/hooks/resource-events.sh
// (azd `postdeploy`), or by hand (docs/deploy.md); re-running it is harmless.

targetScope = 'resourceGroup'

@description('Name of the Event Grid system topic of this resource group (main.bicep output RESOURCE_EVENTS_TOPIC).')
param topicName string

@description('Resource id of the Function App that hosts the `events` function (output FUNCTION_APP_ID).')
param functionAppId string

@description('Resource id of the storage account that receives undeliverable events (output EVENTGRID_DEADLETTER_ACCOUNT_ID).')
param deadLetterAccountId string

@description('Blob container for undeliverable events (output EVENTGRID_DEADLETTER_CONTAINER).')
param deadLetterContainer string

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: topicName
}

// Function `events` reacts to writes and deletes of the resource types flotilla
// owns (e.g. a scale set deleted outside flotilla).
resource resourceEventsToFunction 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'flotilla-events-function'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/events'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceDeleteSuccess'
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: [
            'Microsoft.Compute/virtualMachineScaleSets/write'
            'Microsoft.Compute/virtualMachineScaleSets/delete'
            'Microsoft.Network/virtualNetworks/write'
            'Microsoft.Network/virtualNetworks/delete'
            'Microsoft.Network/networkSecurityGroups/write'
            'Microsoft.Network/networkSecurityGroups/delete'
            'Microsoft.Network/publicIPAddresses/write'
            'Microsoft.Network/publicIPAddresses/delete'
            'Microsoft.Network/loadBalancers/write'
            'Microsoft.Network/loadBalancers/delete'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    // After 30 attempts or a day, the event is kept as a blob instead of being dropped.
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterAccountId
          blobContainerName: deadLetterContainer
        }
      }
    }
  }
}
