"""Drives `flotilla sim` with the official Azure SDK for Python at the SDK's own
default api-versions: proof that the simulator answers what real clients send
and parse. Reads the simulator's endpoint JSON (as `flotilla sim` prints it) on
stdin; prints one line per operation; exits 1 on the first failure.
"""

import json
import sys
import time
import urllib.parse
import urllib.request
import ssl

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as cm
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network import models as nm
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.resources import models as rm
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage import models as sm

RG = "sdk-python"
LOCATION = "eastus"
SSH_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl sdk@check"
)


class SimCredential:
    """Client-credentials tokens from the simulator's token endpoint (MSAL would
    first ask for OpenID metadata, which is not what this check is about)."""

    def __init__(self, info, context):
        self.info = info
        self.context = context

    def get_token(self, *scopes, **_kwargs):
        body = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self.info["client_id"],
                "client_secret": self.info["client_secret"],
                "scope": " ".join(scopes),
            }
        ).encode()
        with urllib.request.urlopen(self.info["token_endpoint"], body, context=self.context) as r:
            token = json.load(r)
        return AccessToken(token["access_token"], int(time.time()) + int(token["expires_in"]))


API_VERSIONS = set()


def record_api_version(request):
    """Notes each provider's api-version as the SDK sends it."""
    url = urllib.parse.urlparse(request.http_request.url)
    version = urllib.parse.parse_qs(url.query).get("api-version", ["?"])[0]
    parts = url.path.split("/providers/")
    provider = parts[-1].split("/")[0] if len(parts) > 1 else "Microsoft.Resources"
    API_VERSIONS.add(f"{provider} {version}")


def rule(name, priority, port):
    """An inbound TCP allow rule."""
    return nm.SecurityRule(
        name=name,
        protocol="Tcp",
        access="Allow",
        direction="Inbound",
        priority=priority,
        source_address_prefix="*",
        source_port_range="*",
        destination_address_prefix="*",
        destination_port_range=port,
    )


def step(what, fn):
    try:
        out = fn()
    except HttpResponseError as e:
        print(f"FAIL {what}: HTTP {e.status_code} {e.error.code if e.error else ''} {e.message}")
        sys.exit(1)
    print(f"ok   {what}")
    return out


def main():
    info = json.loads(sys.stdin.readline())
    ca = info["ca_cert"]
    context = ssl.create_default_context(cafile=ca)
    cred = SimCredential(info, context)
    sub = info["subscription_id"]
    kw = {
        "base_url": info["arm_endpoint"],
        "credential_scopes": ["https://management.azure.com/.default"],
        "connection_verify": ca,
        "polling_interval": 0.05,
        "raw_request_hook": record_api_version,
    }
    res = ResourceManagementClient(cred, sub, **kw)
    net = NetworkManagementClient(cred, sub, **kw)
    cmp = ComputeManagementClient(cred, sub, **kw)
    sto = StorageManagementClient(cred, sub, **kw)
    step("resource group", lambda: res.resource_groups.create_or_update(RG, rm.ResourceGroup(location=LOCATION)))
    nsg = step(
        "NSG with a rule",
        lambda: net.network_security_groups.begin_create_or_update(
            RG, "nsg", nm.NetworkSecurityGroup(location=LOCATION, security_rules=[rule("ssh", 100, "22")])
        ).result(),
    )
    assert [r.name for r in nsg.security_rules or []] == ["ssh"], nsg.as_dict()
    vnet = step(
        "VNet whose subnet references the NSG",
        lambda: net.virtual_networks.begin_create_or_update(
            RG,
            "vnet",
            nm.VirtualNetwork(
                location=LOCATION,
                address_space=nm.AddressSpace(address_prefixes=["10.10.0.0/16"]),
                subnets=[
                    nm.Subnet(
                        name="nodes",
                        address_prefix="10.10.1.0/24",
                        network_security_group=nm.NetworkSecurityGroup(id=nsg.id),
                    )
                ],
            ),
        ).result(),
    )
    assert [s.name for s in vnet.subnets or []] == ["nodes"], vnet.as_dict()
    subnet_id = vnet.subnets[0].id
    step(
        "subnet as its own resource",
        lambda: net.subnets.begin_create_or_update(
            RG, "vnet", "extra", nm.Subnet(address_prefix="10.10.2.0/24")
        ).result(),
    )
    subnets = step("subnets list", lambda: sorted(s.name for s in net.subnets.list(RG, "vnet")))
    assert subnets == ["extra", "nodes"], subnets
    step(
        "security rule as its own resource",
        lambda: net.security_rules.begin_create_or_update(RG, "nsg", "https", rule(None, 110, "443")).result(),
    )
    rules = step("security rules list", lambda: sorted(r.name for r in net.security_rules.list(RG, "nsg")))
    assert rules == ["https", "ssh"], rules
    pip = step(
        "Standard public IP",
        lambda: net.public_ip_addresses.begin_create_or_update(
            RG,
            "pip",
            nm.PublicIPAddress(
                location=LOCATION,
                sku=nm.PublicIPAddressSku(name="Standard"),
                public_ip_allocation_method="Static",
            ),
        ).result(),
    )
    assert pip.sku.name == "Standard", pip.as_dict()
    bad = None
    try:
        net.virtual_networks.begin_create_or_update(
            RG,
            "bad",
            nm.VirtualNetwork(
                location=LOCATION,
                address_space=nm.AddressSpace(address_prefixes=["10.20.0.0/16"]),
                subnets=[nm.Subnet(name="out", address_prefix="10.99.0.0/24")],
            ),
        ).result()
    except HttpResponseError as e:
        bad = e
    assert bad is not None and bad.status_code == 400, "a subnet outside the address space was accepted"
    print(f"ok   refused as Azure does: {bad.error.code}")

    account = "sdkpython%d" % (int(time.time()) % 100000)
    step(
        "storage account (begin_create)",
        lambda: sto.storage_accounts.begin_create(
            RG,
            account,
            sm.StorageAccountCreateParameters(
                location=LOCATION, sku=sm.Sku(name="Standard_LRS"), kind="StorageV2"
            ),
        ).result(),
    )
    # (The model is also a mapping, so its `keys` field is reached as an item.)
    keys = step("storage keys", lambda: sto.storage_accounts.list_keys(RG, account).as_dict()["keys"])
    assert keys and keys[0]["value"], "no key"

    skus = step(
        "resource SKUs of a region",
        lambda: list(cmp.resource_skus.list(filter=f"location eq '{LOCATION}'")),
    )
    assert any(s.name == "Standard_D2s_v5" for s in skus), "Standard_D2s_v5 not offered"
    usages = step("usages of a region", lambda: list(cmp.usage.list(LOCATION)))
    assert any(u.name.value == "cores" for u in usages), "no cores usage"

    vmss = step(
        "scale set",
        lambda: cmp.virtual_machine_scale_sets.begin_create_or_update(
            RG,
            "vmss",
            cm.VirtualMachineScaleSet(
                location=LOCATION,
                sku=cm.Sku(name="Standard_D2s_v5", tier="Standard", capacity=2),
                upgrade_policy=cm.UpgradePolicy(mode="Manual"),
                virtual_machine_profile=cm.VirtualMachineScaleSetVMProfile(
                    os_profile=cm.VirtualMachineScaleSetOSProfile(
                        computer_name_prefix="node",
                        admin_username="azureuser",
                        linux_configuration=cm.LinuxConfiguration(
                            disable_password_authentication=True,
                            ssh=cm.SshConfiguration(
                                public_keys=[
                                    cm.SshPublicKey(
                                        path="/home/azureuser/.ssh/authorized_keys",
                                        key_data=SSH_KEY,
                                    )
                                ]
                            ),
                        ),
                    ),
                    storage_profile=cm.VirtualMachineScaleSetStorageProfile(
                        image_reference=cm.ImageReference(
                            publisher="Canonical",
                            offer="ubuntu-24_04-lts",
                            sku="server",
                            version="latest",
                        ),
                        os_disk=cm.VirtualMachineScaleSetOSDisk(
                            create_option="FromImage",
                            managed_disk=cm.VirtualMachineScaleSetManagedDiskParameters(
                                storage_account_type="Standard_LRS"
                            ),
                        ),
                    ),
                    network_profile=cm.VirtualMachineScaleSetNetworkProfile(
                        network_interface_configurations=[
                            cm.VirtualMachineScaleSetNetworkConfiguration(
                                name="nic",
                                primary=True,
                                ip_configurations=[
                                    cm.VirtualMachineScaleSetIPConfiguration(
                                        name="ip", subnet=cm.ApiEntityReference(id=subnet_id)
                                    )
                                ],
                            )
                        ]
                    ),
                ),
            ),
        ).result(),
    )
    assert vmss.sku.capacity == 2, vmss.as_dict()
    vms = step("scale set VMs", lambda: list(cmp.virtual_machine_scale_set_vms.list(RG, "vmss")))
    assert len(vms) == 2, vms
    step(
        "a VM's instance view",
        lambda: cmp.virtual_machine_scale_set_vms.get_instance_view(RG, "vmss", vms[0].instance_id),
    )
    step("scale set instance view", lambda: cmp.virtual_machine_scale_sets.get_instance_view(RG, "vmss"))

    step("delete scale set", lambda: cmp.virtual_machine_scale_sets.begin_delete(RG, "vmss").result())
    step("delete storage account", lambda: sto.storage_accounts.delete(RG, account))
    step("delete public IP", lambda: net.public_ip_addresses.begin_delete(RG, "pip").result())
    step("delete VNet", lambda: net.virtual_networks.begin_delete(RG, "vnet").result())
    step("delete NSG", lambda: net.network_security_groups.begin_delete(RG, "nsg").result())
    left = [r.id for r in res.resources.list_by_resource_group(RG)]
    assert not left, f"left behind: {left}"
    step("delete resource group", lambda: res.resource_groups.begin_delete(RG).result())
    print("api-versions sent: " + ", ".join(sorted(API_VERSIONS)))
    print("sdk-python: all passed")


if __name__ == "__main__":
    main()
