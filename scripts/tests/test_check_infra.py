"""Tests for scripts/check_infra.py: each check passes on the real tree and
fails, naming the problem, on a temporary copy broken on purpose.

Run: python3 -m unittest discover -s scripts/tests   (from the repo root)
The checkov-based tests are skipped only when checkov is not installed;
scripts/infra_checks.sh installs it, so they always run there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

import check_infra  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ALL_PLANS = "var appSettingsAllPlans = [\n"

CHECKOV = check_infra.find_checkov(None, REPO)
needs_checkov = unittest.skipIf(CHECKOV is None, "checkov is not installed (scripts/infra_checks.sh installs it)")


class Tree:
    """A temporary copy of the files the checks read."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="check_infra_")
        self.root = Path(self._tmp.name)
        shutil.copytree(REPO / "infra", self.root / "infra")
        shutil.copy2(REPO / "README.md", self.root / "README.md")
        shutil.copy2(REPO / "azure.yaml", self.root / "azure.yaml")
        shutil.copy2(REPO / "host.json", self.root / "host.json")
        (self.root / "docs").mkdir()
        shutil.copy2(REPO / "docs" / "deploy.md", self.root / "docs" / "deploy.md")
        for rel in (check_infra.SETTINGS_RS, check_infra.ACTIONS_RS):
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, self.root / rel)
        # The scale set bodies (which identity the steps attach).
        shutil.copytree(REPO / check_infra.STEPS_DIR, self.root / check_infra.STEPS_DIR)
        # A minimal code tree that reads the environment the right way.
        self.write("functions/src/main.rs", 'fn main() { let _ = flotilla_core::settings::get("RUST_LOG"); }\n')
        self.write("shared/core/src/lib.rs", "pub mod settings;\n// std::env::var in a comment is fine\n")

    def path(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str) -> str:
        return self.path(rel).read_text(encoding="utf-8")

    def write(self, rel: str, text: str) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")

    def edit(self, rel: str, old: str, new: str, count: int = 1) -> None:
        text = self.read(rel)
        if old not in text:
            raise AssertionError(f"{old!r} not in {rel}")
        self.write(rel, text.replace(old, new, count))

    def cleanup(self) -> None:
        self._tmp.cleanup()


def remove_app_setting(text: str, name: str) -> str:
    pattern = re.compile(r"\n\s*\{\s*(?://[^\n]*\s*)?name: '" + re.escape(name) + r"'\s*value: [^\n]*\s*\}", re.S)
    new, n = pattern.subn("", text)
    assert n == 1, f"app setting {name} not found exactly once"
    return new


class TreeCase(unittest.TestCase):
    def setUp(self) -> None:
        self.tree = Tree()
        self.addCleanup(self.tree.cleanup)

    def assertProblem(self, problems: list[str], *needles: str) -> None:
        for p in problems:
            if all(n in p for n in needles):
                return
        self.fail(f"no problem mentions {needles!r}; got:\n  " + "\n  ".join(problems or ["(none)"]))


class HappyPath(unittest.TestCase):
    def test_real_tree_passes_every_check(self) -> None:
        only = "security,settings,roles,schema,deploy" if CHECKOV else "settings,roles,schema,deploy"
        proc = subprocess.run([sys.executable, str(SCRIPTS / "check_infra.py"), str(REPO), "--only", only],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)

    def test_copy_passes_settings_and_roles(self) -> None:
        tree = Tree()
        self.addCleanup(tree.cleanup)
        self.assertEqual(check_infra.check_settings(tree.root), [])
        self.assertEqual(check_infra.check_roles(tree.root), [])
        self.assertEqual(check_infra.check_schema(tree.root), [])
        self.assertEqual(check_infra.check_deploy(tree.root), [])

    def test_readme_settings_table_is_up_to_date(self) -> None:
        tree = Tree()
        self.addCleanup(tree.cleanup)
        check_infra.write_readme_settings(tree.root)
        self.assertEqual(tree.read("README.md"), (REPO / "README.md").read_text(encoding="utf-8"),
                         "README settings table is stale: run scripts/check_infra.py --write-readme-settings")


class SettingsCheck(TreeCase):
    def test_setting_missing_from_bicep(self) -> None:
        self.tree.write("infra/main.bicep", remove_app_setting(self.tree.read("infra/main.bicep"), "KEYVAULT_URL"))
        self.assertProblem(check_infra.check_settings(self.tree.root),
                           "setting KEYVAULT_URL is read by the code but not set in infra/main.bicep")

    def test_host_setting_missing_from_bicep(self) -> None:
        self.tree.write("infra/main.bicep",
                        remove_app_setting(self.tree.read("infra/main.bicep"), "ServiceBusConnection__clientId"))
        self.assertProblem(check_infra.check_settings(self.tree.root),
                           "ServiceBusConnection__clientId", "Functions host", "not set")

    def test_unregistered_setting_in_bicep(self) -> None:
        self.tree.edit("infra/main.bicep", ALL_PLANS,
                       ALL_PLANS + "  {\n    name: 'SOME_SECRET'\n    value: 'x'\n  }\n")
        self.assertProblem(check_infra.check_settings(self.tree.root), "SOME_SECRET", "not registered")

    def test_platform_setting_in_bicep(self) -> None:
        self.tree.edit("infra/main.bicep", ALL_PLANS,
                       ALL_PLANS + "  {\n    name: 'IDENTITY_HEADER'\n    value: 'x'\n  }\n")
        self.assertProblem(check_infra.check_settings(self.tree.root), "IDENTITY_HEADER", "platform")

    def test_undeployed_setting_in_bicep(self) -> None:
        self.tree.edit("infra/main.bicep", ALL_PLANS,
                       ALL_PLANS + "  {\n    name: 'AZURE_CA_CERT'\n    value: 'x'\n  }\n")
        self.assertProblem(check_infra.check_settings(self.tree.root), "AZURE_CA_CERT", "deployed: false")

    def test_new_registry_entry_without_bicep_and_readme(self) -> None:
        self.tree.edit(str(check_infra.SETTINGS_RS), '    // Operations\n',
                       '    // Operations\n    s("FLOTILLA_NEW_KNOB", Flotilla, true, "A new knob."),\n')
        problems = check_infra.check_settings(self.tree.root)
        self.assertProblem(problems, "setting FLOTILLA_NEW_KNOB is read by the code but not set in infra/main.bicep")
        self.assertProblem(problems, "FLOTILLA_NEW_KNOB", "missing from the settings table")

    def test_flex_consumption_refuses_worker_runtime_app_setting(self) -> None:
        # Moving FUNCTIONS_WORKER_RUNTIME to the settings every plan gets sets it on Flex Consumption.
        text = remove_app_setting(self.tree.read("infra/main.bicep"), "FUNCTIONS_WORKER_RUNTIME")
        self.tree.write("infra/main.bicep", text.replace(
            ALL_PLANS, ALL_PLANS + "  {\n    name: 'FUNCTIONS_WORKER_RUNTIME'\n    value: 'custom'\n  }\n"))
        problems = check_infra.check_settings(self.tree.root)
        self.assertProblem(problems, "FUNCTIONS_WORKER_RUNTIME", "appSettingsAllPlans", "Flex Consumption refuses")
        self.assertProblem(problems, "FUNCTIONS_WORKER_RUNTIME", "Dedicated plan but not set")

    def test_site_must_pick_settings_by_plan(self) -> None:
        self.tree.edit("infra/main.bicep",
                       "appSettings: isFlex ? appSettingsAllPlans : concat(appSettingsDedicatedOnly, appSettingsAllPlans)",
                       "appSettings: concat(appSettingsDedicatedOnly, appSettingsAllPlans)")
        self.assertProblem(check_infra.check_settings(self.tree.root), "must be `isFlex ? appSettingsAllPlans")

    def test_dedicated_setting_outside_registry_list(self) -> None:
        self.tree.edit(str(check_infra.SETTINGS_RS), '&["FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"]',
                       '&["FUNCTIONS_WORKER_RUNTIME"]')
        problems = check_infra.check_settings(self.tree.root)
        self.assertProblem(problems, "FUNCTIONS_EXTENSION_VERSION", "appSettingsDedicatedOnly", "not in DEDICATED_PLAN_ONLY")
        self.assertProblem(problems, "FUNCTIONS_EXTENSION_VERSION", "not set in infra/main.bicep (appSettingsAllPlans)")

    def test_readme_lists_unknown_setting(self) -> None:
        self.tree.edit("README.md", "<!-- settings:end -->", "| `NOT_A_SETTING` | flotilla | no | ? |\n<!-- settings:end -->")
        self.assertProblem(check_infra.check_settings(self.tree.root), "NOT_A_SETTING", "not registered")

    def test_readme_missing_setting(self) -> None:
        text = self.tree.read("README.md")
        text = re.sub(r"\n\| `RUST_LOG` \|[^\n]*", "", text)
        self.tree.write("README.md", text)
        self.assertProblem(check_infra.check_settings(self.tree.root), "RUST_LOG", "missing from the settings table")

    def test_direct_env_read_in_code(self) -> None:
        self.tree.write("shared/azure/src/sneaky.rs", 'pub fn f() -> Option<String> { std::env::var("X").ok() }\n')
        self.tree.write("functions/src/other.rs", 'pub fn g() { let _ = std::env::var_os("Y"); }\n')
        problems = check_infra.check_settings(self.tree.root)
        self.assertProblem(problems, "shared/azure/src/sneaky.rs:1", "reads the environment directly")
        self.assertProblem(problems, "functions/src/other.rs:1", "reads the environment directly")

    def test_passing_path_to_a_child_is_not_configuration(self) -> None:
        self.tree.write("functions/src/child.rs",
                        'pub fn f() { let _ = std::env::var_os("PATH"); let _ = std::env::var_os("HOME"); }\n')
        problems = [p for p in check_infra.check_settings(self.tree.root) if "child.rs" in p]
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("reads the environment directly", problems[0])


class RolesCheck(TreeCase):
    def test_scaler_role_must_match_scaler_actions(self) -> None:
        text = self.tree.read("infra/modules/cluster-rg.bicep")
        self.assertEqual(text.count("'Microsoft.Compute/virtualMachineScaleSets/write'"), 2)
        # The scaler role is the second definition: drop its subnet join.
        start = text.index("resource clusterScalerRole")
        head, tail = text[:start], text[start:]
        self.tree.write("infra/modules/cluster-rg.bicep",
                        head + tail.replace("          'Microsoft.Network/virtualNetworks/subnets/join/action'\n", "", 1))
        self.assertProblem(check_infra.check_roles(self.tree.root),
                           "cluster scaler role lacks Microsoft.Network/virtualNetworks/subnets/join/action")
        self.tree.write("infra/modules/cluster-rg.bicep",
                        head + tail.replace("          'Microsoft.Compute/virtualMachineScaleSets/read'\n",
                                            "          'Microsoft.Compute/virtualMachineScaleSets/read'\n          'Microsoft.Compute/virtualMachineScaleSets/delete'\n", 1))
        self.assertProblem(check_infra.check_roles(self.tree.root),
                           "cluster scaler role grants Microsoft.Compute/virtualMachineScaleSets/delete")

    def test_action_missing_from_role(self) -> None:
        self.tree.edit("infra/modules/cluster-rg.bicep", "          'Microsoft.Network/loadBalancers/delete'\n", "")
        self.assertProblem(check_infra.check_roles(self.tree.root),
                           "ARM action Microsoft.Network/loadBalancers/delete is called by the client but not granted by the flotilla custom role")

    def test_extra_action_in_role(self) -> None:
        self.tree.edit("infra/modules/cluster-rg.bicep", "          'Microsoft.Network/loadBalancers/delete'\n",
                       "          'Microsoft.Network/loadBalancers/delete'\n          'Microsoft.Compute/virtualMachines/write'\n")
        self.assertProblem(check_infra.check_roles(self.tree.root),
                           "Microsoft.Compute/virtualMachines/write", "never calls it")

    def test_new_client_action(self) -> None:
        self.tree.edit(str(check_infra.ACTIONS_RS), "pub const ARM_ACTIONS: &[&str] = &[\n",
                       'pub const ARM_ACTIONS: &[&str] = &[\n    "Microsoft.Compute/virtualMachines/write",\n')
        self.assertProblem(check_infra.check_roles(self.tree.root),
                           "ARM action Microsoft.Compute/virtualMachines/write is called by the client")

    def test_listkeys_grant_on_accounts_that_refuse_keys(self) -> None:
        self.tree.edit("infra/modules/cluster-rg.bicep", "          'Microsoft.Network/loadBalancers/delete'\n",
                       "          'Microsoft.Network/loadBalancers/delete'\n"
                       "          'Microsoft.Storage/storageAccounts/listkeys/action'\n")
        self.assertProblem(check_infra.check_roles(self.tree.root), "listkeys/action", "refuses shared keys")

    def test_withheld_action_must_be_a_known_limit(self) -> None:
        text = self.tree.read("docs/deploy.md").replace("Microsoft.Storage/storageAccounts/listkeys/action", "the key action")
        self.tree.write("docs/deploy.md", text)
        self.assertProblem(check_infra.check_roles(self.tree.root), "withheld", "Known limits")

    def test_listkeys_is_withheld_only_while_keys_are_refused(self) -> None:
        self.tree.edit("infra/main.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true")
        self.assertProblem(check_infra.check_roles(self.tree.root),
                           "ARM action Microsoft.Storage/storageAccounts/listkeys/action is called by the client but not granted")

    def test_user_assigned_scale_set_identity_needs_assign_action(self) -> None:
        # The scale sets attach the job's node identity: the role must let ARM's linked check pass.
        self.assertIn('kind: "SystemAssigned, UserAssigned".into()', self.tree.read("shared/core/src/steps/master.rs"))
        self.tree.edit("infra/modules/cluster-rg.bicep",
                       "          'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action'\n", "")
        self.assertProblem(check_infra.check_roles(self.tree.root), "userAssignedIdentities/assign/action",
                           "LinkedAuthorizationFailed")

    def test_assign_action_without_a_user_assigned_identity(self) -> None:
        # Steps that attach only system-assigned identities, and a client that does not list
        # the action: granting it anyway is a grant nothing uses.
        for kind in ('"SystemAssigned, UserAssigned"', '"UserAssigned"'):
            self.tree.edit("shared/core/src/steps/master.rs", f"kind: {kind}.into()", 'kind: "SystemAssigned".into()')
        self.tree.edit(str(check_infra.ACTIONS_RS),
                       '    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",\n', "")
        self.assertProblem(check_infra.check_roles(self.tree.root), "assign/action", "never calls it")

    def test_vault_wide_grant_to_a_shared_node_identity(self) -> None:
        # What the template once did: one cluster identity, Key Vault Secrets User on the whole vault.
        self.tree.edit("infra/main.bicep", "// Telemetry: the host sends", """resource nodes 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-nodes'
  location: location
}
resource clusterVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, nodes.id, '4633458b-17de-408a-b874-0445c86b69e6')
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: nodes.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry: the host sends""")
        self.assertProblem(check_infra.check_roles(self.tree.root), "clusterVaultSecretsUser", "keyVault",
                           "nodes.properties.principalId", "every job")

    def test_container_wide_grant_to_a_shared_node_identity(self) -> None:
        self.tree.edit("infra/main.bicep", "// Telemetry: the host sends", """resource clusterStagingReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stagingContainer.id, 'nodes')
  scope: stagingContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: clusterRg.outputs.resourceEventsTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry: the host sends""")
        self.assertProblem(check_infra.check_roles(self.tree.root), "clusterStagingReader", "stagingContainer")

    def test_wildcard_role(self) -> None:
        self.tree.edit("infra/modules/cluster-rg.bicep", "          'Microsoft.Network/loadBalancers/delete'\n",
                       "          'Microsoft.Network/loadBalancers/delete'\n          '*'\n")
        self.assertProblem(check_infra.check_roles(self.tree.root), "wildcard")


class SchemaCheck(TreeCase):
    def test_property_the_api_version_lacks_is_reported(self) -> None:
        # The original template: minimumTlsVersion and publicNetworkAccess on Service Bus 2021-11-01.
        old = json.loads((FIXTURES / "servicebus-namespaces-2021-11-01.json").read_text(encoding="utf-8"))
        table_path = self.tree.path(str(check_infra.SCHEMA_TABLE))
        table = json.loads(table_path.read_text(encoding="utf-8"))
        table["types"]["Microsoft.ServiceBus/namespaces@2021-11-01"] = {"schema": old["schema"], "paths": old["paths"]}
        table_path.write_text(json.dumps(table), encoding="utf-8")
        self.tree.edit("infra/main.bicep", "'Microsoft.ServiceBus/namespaces@2024-01-01'",
                       "'Microsoft.ServiceBus/namespaces@2021-11-01'")
        problems = check_infra.check_schema(self.tree.root)
        self.assertProblem(problems, "serviceBus sets properties.minimumTlsVersion", "@2021-11-01 does not have")
        self.assertProblem(problems, "serviceBus sets properties.publicNetworkAccess")
        self.assertEqual(len(problems), 2, problems)

    def test_unknown_property_is_reported(self) -> None:
        self.tree.edit("infra/main.bicep", "    disableLocalAuth: true\n    disableKeyBasedMetadataWriteAccess: true\n",
                       "    disableLocalAuth: true\n    disableKeyBasedMetadataWriteAccess: true\n    enableKeyRotation: true\n")
        self.assertProblem(check_infra.check_schema(self.tree.root), "cosmos sets properties.enableKeyRotation")

    def test_property_in_marked_variable_is_checked(self) -> None:
        self.tree.edit("infra/main.bicep", "    name: 'custom'\n    version: '1.0'\n",
                       "    name: 'custom'\n    version: '1.0'\n    flavour: 'rust'\n")
        self.assertProblem(check_infra.check_schema(self.tree.root),
                           "functionApp (var flexFunctionAppConfig) sets properties.functionAppConfig.runtime.flavour")

    def test_api_version_missing_from_table(self) -> None:
        self.tree.edit("infra/main.bicep", "'Microsoft.KeyVault/vaults@2023-07-01'", "'Microsoft.KeyVault/vaults@2099-01-01'")
        self.assertProblem(check_infra.check_schema(self.tree.root), "Microsoft.KeyVault/vaults@2099-01-01", "not in")

    def test_walker_reads_loops_conditions_and_ternaries(self) -> None:
        text = ("resource a 'X/y@1' = if (c) {\n  sku: c ? {\n    name: 'a'\n  } : {\n    tier: 'b'\n  }\n"
                "  properties: {\n    list: [for i in range(0, c ? 1 : 0): {\n      k: i\n    }]\n"
                "    tags: union(t, {\n      'x.y': '${z}'\n    })\n  }\n}\n")
        out: list[str] = []
        start = check_infra.resource_body_start(text, text.index("=") + 1)
        check_infra.object_paths(text, start, "", out)
        self.assertEqual(out, ["sku", "sku.name", "sku.tier", "properties", "properties.list",
                               "properties.list[].k", "properties.tags", "properties.tags.x_y"])


class DeployCheck(TreeCase):
    def test_alpha_switch_must_be_documented(self) -> None:
        text = self.tree.read("docs/deploy.md").replace(check_infra.ALPHA_CUSTOM_SWITCH, "switch it on")
        self.tree.write("docs/deploy.md", text)
        self.assertProblem(check_infra.check_deploy(self.tree.root), "docs/deploy.md", "alpha.language.custom")

    def test_minimum_azd_version(self) -> None:
        self.tree.edit("azure.yaml", 'azd: ">= 1.20.0"', 'azd: ">= 1.10.0"')
        self.assertProblem(check_infra.check_deploy(self.tree.root), "requiredVersions.azd")

    def test_dist_must_be_the_packaged_zip(self) -> None:
        self.tree.edit("azure.yaml", "dist: dist/functionapp.zip", "dist: dist/functionapp")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "dist must be the zip", "execute bit")

    def test_package_hook_checks_linkage(self) -> None:
        self.tree.edit("infra/hooks/package.sh", "--require-static", "", count=-1)
        self.assertProblem(check_infra.check_deploy(self.tree.root), "--require-static", "never start")
        # The glibc-version check alone is accepted too.
        self.tree.edit("infra/hooks/package.sh", '--out "$OUT"', '--out "$OUT" --max-glibc 2.31')
        self.assertEqual([p for p in check_infra.check_deploy(self.tree.root) if "never start" in p], [])

    def test_no_nested_azd_in_hooks(self) -> None:
        self.tree.write("infra/hooks/resource-events.sh",
                        "#!/bin/sh\nazd env set FLOTILLA_RESOURCE_EVENTS true\nazd provision --no-prompt\n")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "resource-events.sh", "`azd provision`")

    def test_vault_name_must_change_after_down(self) -> None:
        self.tree.edit("infra/main.bicep", "take(uniqueString(token, keyVaultGeneration), 11)", "take(token, 11)")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "purge protection", "keyVaultGeneration")
        self.tree.edit("infra/hooks/postdown.sh", "azd env set FLOTILLA_VAULT_GENERATION", "echo")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "no postdown hook")

    def test_clusters_default_to_their_own_group(self) -> None:
        self.tree.edit("infra/main.bicep", "'${resourceGroup().name}-clusters'", "resourceGroup().name")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "own resource group")

    def test_parameters_file_is_azd_only(self) -> None:
        self.tree.edit("docs/deploy.md", "## Without azd\n",
                       "## Without azd\n\naz deployment group create -g rg -f infra/main.bicep -p infra/main.parameters.json\n")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "docs/deploy.md:", "only azd resolves")

    def test_parameters_file_long_flag(self) -> None:
        self.tree.edit("docs/deploy.md", "## Without azd\n",
                       "## Without azd\n\naz deployment group create -g rg -f infra/main.bicep "
                       "--parameters @infra/main.parameters.json\n")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "docs/deploy.md:", "only azd resolves")

    def test_app_insights_without_local_auth_needs_entra_ingestion(self) -> None:
        main = self.tree.read("infra/main.bicep")
        start = main.index("resource appInsightsPublisher ")
        end = main.index("\n}\n", start) + 3
        self.tree.write("infra/main.bicep", main[:start] + main[end:])
        self.assertProblem(check_infra.check_deploy(self.tree.root), "appInsights", "Monitoring Metrics Publisher")
        self.tree.edit("infra/main.bicep", ";Authorization=AAD'", "'")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                           "without a token")

    def test_service_bus_concurrency_is_explained(self) -> None:
        self.tree.edit("host.json", '"maxConcurrentCalls": 4', '"maxConcurrentCalls": 16')
        self.assertProblem(check_infra.check_deploy(self.tree.root), "maxConcurrentCalls = 16", "docs/deploy.md")

    def test_flex_consumption_is_the_default(self) -> None:
        self.tree.edit("infra/main.bicep", "param hostingPlan string = 'FlexConsumption'",
                       "param hostingPlan string = 'Dedicated'")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "hostingPlan", "serverless first")

    def test_flex_package_read_with_the_app_identity(self) -> None:
        self.tree.edit("infra/main.bicep", "type: 'UserAssignedIdentity'", "type: 'StorageAccountConnectionString'")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "StorageAccountConnectionString", "shared keys")

    def test_flex_runtime_and_scale_parameters(self) -> None:
        self.tree.edit("infra/main.bicep", "maximumInstanceCount: maximumInstanceCount", "maximumInstanceCount: 40")
        self.tree.edit("infra/main.bicep", "    name: 'custom'\n    version: '1.0'", "    name: 'python'\n    version: '3.11'")
        problems = check_infra.check_deploy(self.tree.root)
        self.assertProblem(problems, "maximumInstanceCount must be a parameter")
        self.assertProblem(problems, "runtime.name must be 'custom'")

    def test_every_data_plane_has_diagnostics(self) -> None:
        self.tree.edit("infra/main.bicep", "  scope: keyVault\n  properties: {\n    workspaceId",
                       "  scope: appInsights\n  properties: {\n    workspaceId")
        self.assertProblem(check_infra.check_deploy(self.tree.root), "keyVault (Microsoft.KeyVault/vaults)", "diagnostic")


class SuppressionDocs(TreeCase):
    """The README <-> inline suppression cross-check needs no checkov."""

    @staticmethod
    def doc_problems(root: Path) -> list[str]:
        return [p for p in check_infra.check_security(root, None) if "not installed" not in p]

    def test_real_copy_is_consistent(self) -> None:
        self.assertEqual(self.doc_problems(self.tree.root), [])

    def test_undocumented_suppression(self) -> None:
        self.tree.edit("infra/main.bicep", "resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {\n",
                       "resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {\n  // checkov:skip=CKV_AZURE_110: testing\n")
        self.assertProblem(self.doc_problems(self.tree.root), "CKV_AZURE_110", "keyVault", "not listed")

    def test_readme_lists_stale_suppression(self) -> None:
        self.tree.edit("README.md", "| Check | Resource | Reason |\n| --- | --- | --- |\n",
                       "| Check | Resource | Reason |\n| --- | --- | --- |\n| `CKV_AZURE_999` | `cosmos` | old |\n")
        self.assertProblem(self.doc_problems(self.tree.root), "CKV_AZURE_999", "no such inline skip")


@needs_checkov
class SecurityScan(TreeCase):
    def test_public_blob_access_fails(self) -> None:
        self.tree.edit("infra/main.bicep", "allowBlobPublicAccess: false", "allowBlobPublicAccess: true")
        self.assertProblem(check_infra.check_security(self.tree.root, CHECKOV), "checkov", "failed on", "hostStorage")

    def test_key_vault_without_purge_protection_fails(self) -> None:
        self.tree.edit("infra/main.bicep", "enablePurgeProtection: true", "enablePurgeProtection: false")
        self.assertProblem(check_infra.check_security(self.tree.root, CHECKOV), "checkov", "failed on", "keyVault")

    def test_app_insights_key_ingestion_and_lost_events_fail(self) -> None:
        self.tree.edit("infra/main.bicep", "DisableLocalAuth: true", "DisableLocalAuth: false")
        text = self.tree.read("infra/resource-events.bicep")
        start = text.index("    // After 30 attempts")
        end = text.index("\n  }\n}\n", start)
        self.tree.write("infra/resource-events.bicep", text[:start] + text[end + 1 :])
        problems = check_infra.check_security(self.tree.root, CHECKOV)
        self.assertProblem(problems, "CKV_FLT_8", "appInsights")
        self.assertProblem(problems, "CKV_FLT_9", "resourceEventsToFunction")

    def test_unparsable_bicep_fails(self) -> None:
        self.tree.write("infra/modules/broken.bicep", "resource x 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'a'\n  properties: {\n")
        self.assertProblem(check_infra.check_security(self.tree.root, CHECKOV), "broken.bicep")


if __name__ == "__main__":
    unittest.main()
