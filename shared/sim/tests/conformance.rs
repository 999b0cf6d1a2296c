//! The conformance corpus: official azure-rest-api-specs examples (tests/fixtures/conformance,
//! origins in SOURCES.md) replayed against the simulator with their own bodies, parameters
//! and API versions. Each answer must have one of the example's statuses and, where the
//! example shows a body, the fields it shows (top level and `properties`).

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Subscription ids the examples use, all replaced by the simulator's.
const EXAMPLE_SUBS: &[&str] = &[
    "{subscription-id}",
    "00000000-0000-0000-0000-000000000000",
    "00000000-0000-0000-0000-000000000001",
    "291bba3f-e0a5-47bc-a099-3bdcb2a50a05",
    "a925f2f7-5c63-4b7b-8799-25a5f97bc3b2",
    "subid",
    "subID",
];

/// One replayed example.
struct Case {
    /// Fixture path under `conformance/`.
    file: &'static str,
    method: Method,
    /// Path with `{parameter}` placeholders filled from the example's parameters.
    path: &'static str,
    /// The parameter that holds the request body, if any.
    body: Option<&'static str>,
}

fn case(
    file: &'static str,
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
) -> Case {
    Case {
        file,
        method,
        path,
        body,
    }
}

/// The example with every example subscription id replaced by `sub`.
fn load(file: &str, sub: &str) -> Value {
    let mut text = serde_json::to_string(&fixture(&format!("conformance/{file}"))).unwrap();
    for s in EXAMPLE_SUBS {
        text = text.replace(
            &format!("/subscriptions/{s}"),
            &format!("/subscriptions/{sub}"),
        );
        text = text.replace(
            &format!("subscriptions/{s}"),
            &format!("subscriptions/{sub}"),
        );
        text = text.replace(&format!("\"{s}\""), &format!("\"{sub}\""));
    }
    serde_json::from_str(&text).unwrap()
}

/// Fields of `expected` (top level and `properties`) missing from `actual`.
fn missing_fields(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(e), Some(a)) = (expected.as_object(), actual.as_object()) {
        for (k, v) in e {
            match a.get(k) {
                None => out.push(k.clone()),
                Some(av) if k == "properties" => {
                    if let (Some(ep), Some(ap)) = (v.as_object(), av.as_object()) {
                        out.extend(
                            ep.keys()
                                .filter(|pk| !ap.contains_key(*pk))
                                .map(|pk| format!("properties.{pk}")),
                        );
                    }
                }
                Some(_) => {}
            }
        }
    }
    out
}

/// Fields the simulator does not model, by field path: features flotilla and the
/// simulator do not use (NIC ip configurations, DDoS plans, IP tags, DNS settings).
const NOT_MODELLED: &[&str] = &[
    "properties.ipConfiguration",
    "properties.ddosSettings",
    "properties.dhcpOptions",
    "properties.flowTimeoutInMinutes",
    "nextLink",
];

async fn replay(h: &Harness, c: &Case) -> Reply {
    let sub = h.sub().to_string();
    let ex = load(c.file, &sub);
    let params = &ex["parameters"];
    let mut path = c.path.to_string();
    if let Some(map) = params.as_object() {
        for (k, v) in map {
            if let Some(s) = v.as_str() {
                path = path.replace(&format!("{{{k}}}"), s);
            }
        }
    }
    let version = params["api-version"]
        .as_str()
        .expect("api-version")
        .to_string();
    let body = c.body.map(|b| params[b].clone());
    let r = h
        .arm(c.method.clone(), &path, &version, body.as_ref())
        .await;
    let statuses: Vec<u16> = ex["responses"]
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|k| k.parse().ok())
        .collect();
    assert!(
        statuses.contains(&r.status.as_u16()),
        "{}: {} {path}?api-version={version} answered {} (example: {statuses:?}): {}",
        c.file,
        c.method,
        r.status,
        r.text
    );
    let expected = &ex["responses"][r.status.as_str()]["body"];
    if expected.is_object() && r.status != StatusCode::ACCEPTED {
        let missing: Vec<String> = missing_fields(expected, &r.body)
            .into_iter()
            .filter(|m| !NOT_MODELLED.contains(&m.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: missing {missing:?} in {}",
            c.file,
            r.text
        );
        // `name` is not compared: some examples contradict their own id (testDNS-ip vs test-ip).
        for k in ["id", "type"] {
            if let Some(want) = expected.get(k) {
                if c.file.contains("Create") || c.file.contains("Get") || c.file.contains("Update")
                {
                    assert_eq!(&r.body[k], want, "{}: {k}", c.file);
                }
            }
        }
    }
    r
}

async fn setup_put(h: &Harness, path: &str, version: &str, body: Value) {
    h.put_and_wait(path, version, &body).await;
}

#[tokio::test]
async fn official_examples_replay() {
    let h = start_lro(0).await;
    let sub = h.sub().to_string();
    let rg = |name: &str| format!("/subscriptions/{sub}/resourceGroups/{name}");
    let mut replayed = 0;

    // Microsoft.Resources.
    for c in [
        case(
            "resources/CreateResourceGroup.json",
            Method::PUT,
            "/subscriptions/{subscriptionId}/resourcegroups/{resourceGroupName}",
            Some("parameters"),
        ),
        case(
            "resources/GetSubscription.json",
            Method::GET,
            "/subscriptions/{subscriptionId}",
            None,
        ),
        case(
            "resources/ListResourceGroups.json",
            Method::GET,
            "/subscriptions/{subscriptionId}/resourcegroups",
            None,
        ),
        case(
            "resources/ListResources.json",
            Method::GET,
            "/subscriptions/{subscriptionId}/resources",
            None,
        ),
    ] {
        replay(&h, &c).await;
        replayed += 1;
    }
    h.put_rg("rgresources").await;
    for c in [
        case(
            "resources/GetResourceGroups.json",
            Method::GET,
            "/subscriptions/{subscriptionId}/resourcegroups/{resourceGroupName}",
            None,
        ),
        case(
            "resources/UpdateResourceGroups.json",
            Method::PATCH,
            "/subscriptions/{subscriptionId}/resourcegroups/{resourceGroupName}",
            Some("parameters"),
        ),
        case(
            "resources/CheckExistenceResourceGroups.json",
            Method::HEAD,
            "/subscriptions/{subscriptionId}/resourcegroups/{resourceGroupName}",
            None,
        ),
    ] {
        replay(&h, &c).await;
        replayed += 1;
    }

    // Microsoft.Network: security groups and rules.
    h.put_rg("rg1").await;
    for c in [
        case("network/NetworkSecurityGroupCreate.json", Method::PUT, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkSecurityGroups/{networkSecurityGroupName}", Some("parameters")),
        case("network/NetworkSecurityGroupCreateWithRule.json", Method::PUT, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkSecurityGroups/{networkSecurityGroupName}", Some("parameters")),
        case("network/NetworkSecurityGroupGet.json", Method::GET, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkSecurityGroups/{networkSecurityGroupName}", None),
        case("network/NetworkSecurityGroupUpdateTags.json", Method::PATCH, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkSecurityGroups/{networkSecurityGroupName}", Some("parameters")),
    ] {
        replay(&h, &c).await;
        replayed += 1;
    }
    h.put_rg("testrg").await;
    setup_put(
        &h,
        &format!(
            "{}/providers/Microsoft.Network/networkSecurityGroups/nsg1",
            rg("testrg")
        ),
        NET,
        json!({"location": "westus"}),
    )
    .await;
    replay(&h, &case("network/DefaultSecurityRuleGet.json", Method::GET, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkSecurityGroups/{networkSecurityGroupName}/defaultSecurityRules/{defaultSecurityRuleName}", None)).await;
    replayed += 1;

    // Virtual networks and subnets.
    for c in [
        case("network/VirtualNetworkCreate.json", Method::PUT, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}", Some("parameters")),
        case("network/VirtualNetworkUpdateTags.json", Method::PATCH, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}", Some("parameters")),
        case("network/VirtualNetworkList.json", Method::GET, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks", None),
    ] {
        replay(&h, &c).await;
        replayed += 1;
    }
    h.put_rg("subnet-test").await;
    setup_put(&h, &format!("{}/providers/Microsoft.Network/virtualNetworks/vnetname", rg("subnet-test")), NET,
        json!({"location": "westus", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}}})).await;
    for c in [
        case("network/SubnetCreate.json", Method::PUT, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}/subnets/{subnetName}", Some("subnetParameters")),
        case("network/SubnetGet.json", Method::GET, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}/subnets/{subnetName}", None),
        case("network/SubnetList.json", Method::GET, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}/subnets", None),
        case("network/SubnetDelete.json", Method::DELETE, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}/subnets/{subnetName}", None),
    ] {
        replay(&h, &c).await;
        replayed += 1;
    }

    // Public IPs.
    setup_put(
        &h,
        &format!(
            "{}/providers/Microsoft.Network/publicIPAddresses/testDNS-ip",
            rg("rg1")
        ),
        NET,
        json!({"location": "westus"}),
    )
    .await;
    for c in [
        case("network/PublicIpAddressCreateDefaults.json", Method::PUT, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/publicIPAddresses/{publicIpAddressName}", Some("parameters")),
        case("network/PublicIpAddressUpdateTags.json", Method::PATCH, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/publicIPAddresses/{publicIpAddressName}", Some("parameters")),
        case("network/PublicIpAddressGet.json", Method::GET, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/publicIPAddresses/{publicIpAddressName}", None),
        case("network/PublicIpAddressList.json", Method::GET, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/publicIPAddresses", None),
    ] {
        replay(&h, &c).await;
        replayed += 1;
    }

    // Load balancers (the create example's frontend sits on vnetlb/subnetlb).
    setup_put(&h, &format!("{}/providers/Microsoft.Network/virtualNetworks/vnetlb", rg("rg1")), NET,
        json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "subnetlb", "properties": {"addressPrefix": "10.0.1.0/24"}}]}})).await;
    for c in [
        case("network/LoadBalancerCreate.json", Method::PUT, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/loadBalancers/{loadBalancerName}", Some("parameters")),
        case("network/LoadBalancerUpdateTags.json", Method::PATCH, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/loadBalancers/{loadBalancerName}", Some("parameters")),
        case("network/LoadBalancerDelete.json", Method::DELETE, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/loadBalancers/{loadBalancerName}", None),
        case("network/PublicIpAddressDelete.json", Method::DELETE, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/publicIPAddresses/{publicIpAddressName}", None),
        case("network/NetworkSecurityGroupDelete.json", Method::DELETE, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/networkSecurityGroups/{networkSecurityGroupName}", None),
        case("network/VirtualNetworkDelete.json", Method::DELETE, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network/virtualNetworks/{virtualNetworkName}", None),
    ] {
        replay(&h, &c).await;
        replayed += 1;
    }

    // Microsoft.Compute: SKUs, usages, scale sets.
    replay(
        &h,
        &case(
            "compute/ListAvailableResourceSkusForARegion.json",
            Method::GET,
            "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/skus?$filter={$filter}",
            None,
        ),
    )
    .await;
    replayed += 1;
    // The generated usage examples name no real region ("4_.", "_--"): replayed in westus.
    for file in [
        "compute/Usage_List_MaximumSet_Gen.json",
        "compute/Usage_List_MinimumSet_Gen.json",
    ] {
        replay(&h, &case(file, Method::GET, "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/locations/westus/usages", None)).await;
        replayed += 1;
    }
    h.put_rg("myResourceGroup").await;
    setup_put(&h, &format!("{}/providers/Microsoft.Network/virtualNetworks/nsgExistingVnet", rg("myResourceGroup")), NET,
        json!({"location": "westus", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
            "subnets": [{"name": "nsgExistingSubnet", "properties": {"addressPrefix": "10.1.0.0/24"}}]}})).await;
    {
        // The example's placeholders are filled as its own text asks: an existing VNet
        // and subnet, and an admin name and password of the user's choosing.
        let ex = replace_all(
            &load(
                "compute/VirtualMachineScaleSet_Create_WithPasswordAuthentication.2024-11-01.json",
                &sub,
            ),
            &[
                ("{existing-virtual-network-name}", "nsgExistingVnet"),
                ("{existing-subnet-name}", "nsgExistingSubnet"),
                ("{your-username}", "azureuser"),
                ("{your-password}", "Example-Passw0rd"),
            ],
        );
        let path = format!(
            "{}/providers/Microsoft.Compute/virtualMachineScaleSets/%7Bvmss-name%7D",
            rg("myResourceGroup")
        );
        let r = h
            .arm(
                Method::PUT,
                &path,
                ex["parameters"]["api-version"].as_str().unwrap(),
                Some(&ex["parameters"]["parameters"]),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert!(
            missing_fields(&ex["responses"]["201"]["body"], &r.body).is_empty(),
            "{}",
            r.text
        );
        replayed += 1;
    }
    replay(&h, &case("compute/VirtualMachineScaleSet_Delete_Force.2024-11-01.json", Method::DELETE, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmScaleSetName}?forceDeletion={forceDeletion}", None)).await;
    replayed += 1;

    // Microsoft.Storage.
    for (group, account) in [("res418", "sto2220"), ("res4228", "sto2434")] {
        h.put_rg(group).await;
        setup_put(
            &h,
            &format!(
                "{}/providers/Microsoft.Storage/storageAccounts/{account}",
                rg(group)
            ),
            STORAGE,
            json!({"location": "eastus", "sku": {"name": "Standard_GRS"}, "kind": "StorageV2"}),
        )
        .await;
    }
    for c in [
        case("storage/StorageAccountListKeys.2023-05-01.json", Method::POST, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Storage/storageAccounts/{accountName}/listKeys", None),
        case("storage/StorageAccountDelete.json", Method::DELETE, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Storage/storageAccounts/{accountName}", None),
    ] {
        replay(&h, &c).await;
        replayed += 1;
    }

    // Microsoft.Authorization. The examples' role is a custom role of their
    // subscription: defined first.
    h.put_rg("testrg").await;
    let r = h
        .arm(
            Method::PUT,
            &format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/0b5fe924-9a61-425c-96af-cfe6e287ca2d"),
            "2022-04-01",
            Some(&json!({"properties": {"roleName": "example role", "permissions": [{"actions": ["*/read"]}]}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    replay(
        &h,
        &case(
            "authorization/RoleAssignments_CreateForResourceGroup.2022-04-01.json",
            Method::PUT,
            "/{scope}/providers/Microsoft.Authorization/roleAssignments/{roleAssignmentName}",
            Some("parameters"),
        ),
    )
    .await;
    replayed += 1;
    let get = load("authorization/RoleAssignments_Get.json", &sub);
    let ra_path = format!(
        "/{}/providers/Microsoft.Authorization/roleAssignments/{}",
        get["parameters"]["scope"].as_str().unwrap(),
        get["parameters"]["roleAssignmentName"].as_str().unwrap()
    );
    let p = &get["responses"]["200"]["body"]["properties"];
    let r = h.arm(Method::PUT, &ra_path, "2022-04-01", Some(&json!({"properties": {
        "roleDefinitionId": p["roleDefinitionId"], "principalId": p["principalId"], "principalType": p["principalType"]}}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // The Get example carries a preview api-version, which the simulator refuses as
    // Azure does for versions it does not list; at the folder's stable version it answers.
    let r = h
        .arm(
            Method::GET,
            &ra_path,
            get["parameters"]["api-version"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(r.code(), "NoRegisteredProviderFound", "{}", r.text);
    let r = h.arm(Method::GET, &ra_path, "2022-04-01", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        missing_fields(&get["responses"]["200"]["body"], &r.body).is_empty(),
        "{}",
        r.text
    );
    replayed += 1;
    replay(
        &h,
        &case(
            "authorization/RoleAssignments_Delete.json",
            Method::DELETE,
            "/{scope}/providers/Microsoft.Authorization/roleAssignments/{roleAssignmentName}",
            None,
        ),
    )
    .await;
    replayed += 1;
    h.put_rg("rgname").await;
    replay(&h, &case("authorization/GetPermissions.json", Method::GET, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Authorization/permissions", None)).await;
    replayed += 1;

    // Microsoft.ContainerService.
    h.put_rg("rg1").await;
    setup_put(
        &h,
        &format!(
            "{}/providers/Microsoft.ContainerService/managedClusters/clustername1",
            rg("rg1")
        ),
        "2024-02-01",
        json!({"location": "westeurope", "properties": {"dnsPrefix": "c1"}}),
    )
    .await;
    replay(&h, &case("containerservice/ManagedClustersListClusterUserCredentials.2024-02-01.json", Method::POST, "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ContainerService/managedClusters/{resourceName}/listClusterUserCredential", None)).await;
    replayed += 1;

    // Last: the group delete example (deletes what the group holds).
    replay(&h, &case("resources/ForceDeleteVMsInResourceGroup.json", Method::DELETE, "/subscriptions/{subscriptionId}/resourcegroups/{resourceGroupName}?forceDeletionTypes={forceDeletionTypes}", None)).await;
    replayed += 1;

    assert!(replayed >= 40, "replayed {replayed} examples");
    h.server.shutdown().await;
}
