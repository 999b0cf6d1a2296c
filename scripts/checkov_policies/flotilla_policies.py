"""flotilla's own checkov policies for infra/ (Bicep).

checkov's built-in Bicep checks do not cover some settings flotilla depends on
(anonymous blob access, shared keys, SAS on Service Bus, Cosmos keys, vault
mode, Application Insights local auth, Event Grid dead letters). These make
them failures. Loaded by scripts/check_infra.py with
`checkov --external-checks-dir scripts/checkov_policies`.
"""

from __future__ import annotations

from typing import Any

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


class _PropertyEquals(BaseResourceCheck):
    """Fails unless every `properties.<key>` named in `expected` is present and equal."""

    expected: dict[str, Any] = {}

    def __init__(self, id: str, name: str, resources: tuple[str, ...], expected: dict[str, Any]) -> None:
        self.expected = expected
        super().__init__(name=name, id=id, categories=(CheckCategories.GENERAL_SECURITY,),
                         supported_resources=resources)

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        props = conf.get("properties")
        if not isinstance(props, dict):
            return CheckResult.FAILED
        self.evaluated_keys = [f"properties/{k}" for k in self.expected]
        for key, want in self.expected.items():
            got = props.get(key)
            if isinstance(got, str) and isinstance(want, str):
                if got.lower() != want.lower():
                    return CheckResult.FAILED
            elif got != want:
                return CheckResult.FAILED
        return CheckResult.PASSED


STORAGE = ("Microsoft.Storage/storageAccounts",)

storage_no_public_blobs = _PropertyEquals(
    "CKV_FLT_1", "Storage account forbids anonymous blob access (allowBlobPublicAccess: false)",
    STORAGE, {"allowBlobPublicAccess": False})
storage_no_shared_key = _PropertyEquals(
    "CKV_FLT_2", "Storage account disables shared key access (allowSharedKeyAccess: false)",
    STORAGE, {"allowSharedKeyAccess": False})
storage_tls12_https = _PropertyEquals(
    "CKV_FLT_3", "Storage account requires HTTPS and TLS 1.2",
    STORAGE, {"minimumTlsVersion": "TLS1_2", "supportsHttpsTrafficOnly": True})
servicebus_no_sas = _PropertyEquals(
    "CKV_FLT_4", "Service Bus namespace disables local (SAS) authentication",
    ("Microsoft.ServiceBus/namespaces",), {"disableLocalAuth": True})
cosmos_no_keys = _PropertyEquals(
    "CKV_FLT_5", "Cosmos DB account disables key authentication",
    ("Microsoft.DocumentDB/databaseAccounts",), {"disableLocalAuth": True})
vault_rbac_purge = _PropertyEquals(
    "CKV_FLT_6", "Key Vault uses RBAC, soft delete and purge protection",
    ("Microsoft.KeyVault/vaults",),
    {"enableRbacAuthorization": True, "enableSoftDelete": True, "enablePurgeProtection": True})
container_private = _PropertyEquals(
    "CKV_FLT_7", "Blob container is private (publicAccess: None)",
    ("Microsoft.Storage/storageAccounts/blobServices/containers",), {"publicAccess": "None"})
appinsights_no_local_auth = _PropertyEquals(
    "CKV_FLT_8", "Application Insights refuses key-only ingestion (DisableLocalAuth: true)",
    ("Microsoft.Insights/components",), {"DisableLocalAuth": True})


class _EventSubscriptionDeadLetters(BaseResourceCheck):
    """Fails unless an Event Grid subscription keeps what it cannot deliver."""

    def __init__(self) -> None:
        super().__init__(name="Event Grid subscription has a dead-letter destination",
                         id="CKV_FLT_9", categories=(CheckCategories.GENERAL_SECURITY,),
                         supported_resources=("Microsoft.EventGrid/systemTopics/eventSubscriptions",
                                              "Microsoft.EventGrid/eventSubscriptions"))

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        props = conf.get("properties")
        if not isinstance(props, dict):
            return CheckResult.FAILED
        self.evaluated_keys = ["properties/deadLetterWithResourceIdentity", "properties/deadLetterDestination"]
        for key in ("deadLetterWithResourceIdentity", "deadLetterDestination"):
            if isinstance(props.get(key), dict) and props[key]:
                return CheckResult.PASSED
        return CheckResult.FAILED


eventgrid_dead_letters = _EventSubscriptionDeadLetters()
