#!/bin/sh
# azd `postdown` hook: the Key Vault just deleted with the resource group keeps
# its name reserved for its soft-delete retention (purge protection forbids a
# purge). Bump the vault name generation so the next `azd up` in this
# environment creates a vault with a fresh name (main.bicep keyVaultGeneration).
set -eu
current="$(azd env get-value FLOTILLA_VAULT_GENERATION 2>/dev/null || true)"
case "$current" in
  ''|*[!0-9]*) current=1 ;;
esac
next=$((current + 1))
azd env set FLOTILLA_VAULT_GENERATION "$next"
echo "Key Vault name generation is now $next: the next deployment gets a new vault name."
echo "Clusters and their resource group (output CLUSTER_RESOURCE_GROUP) were left alone; see docs/deploy.md, 'Tear down'."
