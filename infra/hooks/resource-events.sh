#!/bin/sh
# azd `postdeploy` hook: subscribes the `events` function to the resource events
# of the clusters' resource group (infra/resource-events.bicep). Event Grid checks
# an Azure Function destination when the subscription is created, so this runs
# after the code is deployed. One idempotent `az deployment group create`: no
# nested azd, nothing recorded before it succeeds, safe to re-run by hand.
set -eu
cd "$(dirname "$0")/../.."
value() {
  v="$(azd env get-value "$1" 2>/dev/null || true)"
  if [ -z "$v" ]; then
    echo "resource-events: azd environment value $1 is missing: provision the infrastructure first" >&2
    exit 1
  fi
  printf '%s' "$v"
}
subscription="$(value AZURE_SUBSCRIPTION_ID)"
group="$(value CLUSTER_RESOURCE_GROUP)"
topic="$(value RESOURCE_EVENTS_TOPIC)"
app="$(value FUNCTION_APP_ID)"
account="$(value EVENTGRID_DEADLETTER_ACCOUNT_ID)"
container="$(value EVENTGRID_DEADLETTER_CONTAINER)"
if ! command -v az >/dev/null 2>&1; then
  echo "resource-events: the Azure CLI (az) is needed for this step; install it, run az login, then re-run: azd hooks run postdeploy" >&2
  exit 1
fi
az deployment group create \
  --subscription "$subscription" \
  --resource-group "$group" \
  --name flotilla-resource-events \
  --template-file infra/resource-events.bicep \
  --parameters topicName="$topic" functionAppId="$app" \
               deadLetterAccountId="$account" deadLetterContainer="$container" \
  --only-show-errors --output none
echo "resource-events: Event Grid delivers resource events of $group to the events function"
