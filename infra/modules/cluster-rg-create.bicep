// The resource group flotilla creates clusters in, when the deployment names
// none: `<app resource group>-clusters`. Deployed at subscription scope from
// main.bicep; azd never deletes it (it deletes only the app's resource group).

targetScope = 'subscription'

param name string
param location string
param tags object

resource clusterResourceGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: name
  location: location
  tags: tags
}
