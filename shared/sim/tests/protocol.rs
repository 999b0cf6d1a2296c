//! Protocol-level tests over real HTTPS against `Sim::serve(0)`, trusting only the
//! simulator's CA.

mod common;

use common::*;
use flotilla_sim::{FaultRule, Sim, SimConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn fault(status: u16, code: &str) -> FaultRule {
    FaultRule {
        method: None,
        resource_type: None,
        name_pattern: None,
        status,
        code: code.to_string(),
        message: None,
        times: None,
        probability: None,
        latency_ms: None,
        asynchronous: false,
        principal: None,
    }
}

#[tokio::test]
async fn token_flows() {
    let h = start_lro(0).await;
    let info = &h.server.info;
    assert!(info.token_endpoint.starts_with(&h.server.base_url));
    assert!(std::path::Path::new(&info.ca_cert).exists());

    // Client credentials: shape of the Entra response.
    let r = h
        .client
        .post(&info.token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            ("client_secret", info.client_secret.as_str()),
            ("scope", "https://vault.azure.net/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);
    assert!(v["ext_expires_in"].is_number());
    let vault_token = v["access_token"].as_str().unwrap().to_string();

    // Wrong secret: 401 with an AADSTS error.
    let r = h
        .client
        .post(&info.token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            ("client_secret", "nope"),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS"));

    // Managed identity (App Service protocol).
    let url = format!(
        "{}?resource=https://management.azure.com/&api-version=2019-08-01",
        info.managed_identity_endpoint
    );
    let r = h
        .client
        .get(&url)
        .header("X-IDENTITY-HEADER", &info.identity_header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["expires_on"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(v["resource"], "https://management.azure.com/");
    assert!(v["client_id"].is_string());
    let msi_token = v["access_token"].as_str().unwrap().to_string();
    let r = h
        .client
        .get(&url)
        .header("X-IDENTITY-HEADER", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let rgs = format!(
        "{}/subscriptions/{}/resourcegroups?api-version={RES}",
        h.base(),
        h.sub()
    );
    // The MSI token works for ARM.
    let r = send(&h.client, Method::GET, &rgs, Some(&msi_token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // No token.
    let r = send(&h.client, Method::GET, &rgs, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "AuthenticationFailed");
    // Wrong audience.
    let r = send(&h.client, Method::GET, &rgs, Some(&vault_token), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "InvalidAuthenticationToken");
    // Garbage token.
    let r = send(&h.client, Method::GET, &rgs, Some("garbage"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // ARM token against Key Vault and Blob: 401 too.
    let kv = format!("{}/secrets/x?api-version=7.5", h.base());
    let r = send(&h.client, Method::GET, &kv, Some(&h.arm_token), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let b = format!("{}/blob/acct/c/b", h.base());
    let r = send(&h.client, Method::GET, &b, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("x-ms-error-code").as_deref(),
        Some("NoAuthenticationInformation")
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn resource_group_and_nsg_lifecycle() {
    let h = start_lro(150).await;
    let rg = h.rg_path("rg1");
    let r = h
        .arm(
            Method::PUT,
            &rg,
            RES,
            Some(&json!({"location": "westeurope", "tags": {"a": "b"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["properties"]["provisioningState"], "Succeeded");
    let r = h
        .arm(
            Method::PUT,
            &rg,
            RES,
            Some(&json!({"location": "westeurope"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Case-insensitive path segments.
    let lower = format!("/subscriptions/{}/resourcegroups/RG1", h.sub());
    let r = h.arm(Method::GET, &lower, RES, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .header("x-ms-ratelimit-remaining-subscription-reads")
        .is_some());
    assert!(r
        .header("x-ms-ratelimit-remaining-subscription-writes")
        .is_some());

    let ex = fixture("NetworkSecurityGroupCreate.2024-05-01.json");
    let nsg = h.id("rg1", "Microsoft.Network/networkSecurityGroups", "testnsg");
    let r = h
        .arm(
            Method::PUT,
            &nsg,
            NET,
            Some(&ex["parameters"]["parameters"]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["properties"]["provisioningState"], "Creating");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    let op_url = r
        .header("azure-asyncoperation")
        .expect("Azure-AsyncOperation");
    assert!(op_url.starts_with(h.base()), "absolute URL: {op_url}");
    // In progress first, by wall clock.
    let first = send(&h.client, Method::GET, &op_url, Some(&h.arm_token), None).await;
    assert_eq!(first.body["status"], "InProgress");
    assert!(first.body["startTime"].is_string());
    let done = h.poll_async(&op_url).await;
    assert_eq!(done["status"], "Succeeded");
    assert!(done["endTime"].is_string());
    let g = h.arm(Method::GET, &nsg, NET, None).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body["properties"]["provisioningState"], "Succeeded");
    assert_superset(&ex["responses"]["200"]["body"], &g.body, "NSG GET");
    assert_superset(&ex["responses"]["201"]["body"], &r.body, "NSG PUT");

    // Update answers 200.
    let r2 = h
        .arm(
            Method::PUT,
            &nsg,
            NET,
            Some(&ex["parameters"]["parameters"]),
        )
        .await;
    assert_eq!(r2.status, StatusCode::OK);
    assert_eq!(r2.body["properties"]["provisioningState"], "Updating");
    h.poll_async(&r2.header("azure-asyncoperation").unwrap())
        .await;

    let d = h.arm(Method::DELETE, &nsg, NET, None).await;
    assert_eq!(d.status, StatusCode::ACCEPTED);
    let loc = d.header("location").expect("Location");
    let running = send(&h.client, Method::GET, &loc, Some(&h.arm_token), None).await;
    assert_eq!(running.status, StatusCode::ACCEPTED);
    let fin = h.poll_location(&loc).await;
    assert!(fin.status == StatusCode::OK || fin.status == StatusCode::NO_CONTENT);
    let g = h.arm(Method::GET, &nsg, NET, None).await;
    assert_eq!(g.status, StatusCode::NOT_FOUND);
    assert_eq!(g.code(), "ResourceNotFound");
    // DELETE of a missing resource: 204.
    let d = h.arm(Method::DELETE, &nsg, NET, None).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);

    // Deleting the RG.
    h.delete_and_wait(&rg, RES).await;
    let g = h.arm(Method::GET, &rg, RES, None).await;
    assert_eq!(g.status, StatusCode::NOT_FOUND);
    assert_eq!(g.code(), "ResourceGroupNotFound");
    h.server.shutdown().await;
}

#[tokio::test]
async fn request_validation() {
    let h = start_lro(0).await;
    let nsg = h.id("nope", "Microsoft.Network/networkSecurityGroups", "n1");
    // api-version missing.
    let r = h.arm(Method::GET, &nsg, "", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "MissingApiVersionParameter");
    // Missing RG.
    let r = h
        .arm(
            Method::PUT,
            &nsg,
            NET,
            Some(&json!({"location": "westeurope"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "ResourceGroupNotFound");
    h.put_rg("rg").await;
    // Malformed JSON.
    let url = format!(
        "{}{}?api-version={NET}",
        h.base(),
        h.id("rg", "Microsoft.Network/networkSecurityGroups", "n1")
    );
    let r = h
        .client
        .put(&url)
        .bearer_auth(&h.arm_token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "InvalidRequestContent");
    // Naming rules.
    for (ty, bad) in [
        ("Microsoft.Network/networkSecurityGroups", "-bad"),
        ("Microsoft.Network/virtualNetworks", "v"),
        ("Microsoft.Compute/virtualMachineScaleSets", "bad*name"),
    ] {
        let ver = if ty.contains("Network") {
            NET
        } else if ty.contains("Compute") {
            COMPUTE
        } else {
            STORAGE
        };
        let r = h
            .arm(
                Method::PUT,
                &h.id("rg", ty, bad),
                ver,
                Some(&json!({"location": "westeurope", "sku": {"name": "x", "capacity": 0}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{ty}/{bad}: {}", r.text);
        assert_eq!(r.code(), "InvalidResourceName");
    }
    // GET of a missing resource.
    let r = h
        .arm(
            Method::GET,
            &h.id("rg", "Microsoft.Network/loadBalancers", "x"),
            NET,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "ResourceNotFound");
    // Unknown route.
    let r = h
        .arm(
            Method::GET,
            &format!("/subscriptions/{}/whatever/x", h.sub()),
            RES,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    h.server.shutdown().await;
}

#[tokio::test]
async fn official_examples_are_accepted() {
    let h = start_lro(0).await;
    let sub = h.sub().to_string();
    h.put_rg("rg1").await;

    // Load balancer: needs vnetlb/subnetlb.
    let vnet = h.id("rg1", "Microsoft.Network/virtualNetworks", "vnetlb");
    h.put_and_wait(
        &vnet,
        NET,
        &json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "subnetlb", "properties": {"addressPrefix": "10.0.1.0/24"}}]}}),
    )
    .await;
    let ex = fixture("LoadBalancerCreate.2024-07-01.json");
    let body = replace_all(
        &ex["parameters"]["parameters"],
        &[("/subscriptions/subid/", &format!("/subscriptions/{sub}/"))],
    );
    let lb = h.id("rg1", "Microsoft.Network/loadBalancers", "lb");
    let r = h.arm(Method::PUT, &lb, "2024-07-01", Some(&body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_superset(&ex["responses"]["201"]["body"], &r.body, "LB PUT");
    let g = h.arm(Method::GET, &lb, "2024-07-01", None).await;
    assert_superset(&ex["responses"]["200"]["body"], &g.body, "LB GET");
    assert_eq!(
        g.body["properties"]["frontendIPConfigurations"][0]["properties"]["privateIPAddress"],
        "10.0.1.4"
    );
    let subnet = h
        .arm(Method::GET, &format!("{vnet}/subnets/subnetlb"), NET, None)
        .await;
    assert_eq!(subnet.status, StatusCode::OK);
    assert_eq!(subnet.body["name"], "subnetlb");

    // VMSS with password authentication.
    let ex = fixture("VirtualMachineScaleSet_Create_WithPasswordAuthentication.2024-11-01.json");
    h.put_rg("myResourceGroup").await;
    let vnet2 = h.id(
        "myResourceGroup",
        "Microsoft.Network/virtualNetworks",
        "nsgExistingVnet",
    );
    h.put_and_wait(
        &vnet2,
        NET,
        &json!({"location": "westus", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
            "subnets": [{"name": "nsgExistingSubnet", "properties": {"addressPrefix": "10.1.0.0/24"}}]}}),
    )
    .await;
    let body = replace_all(
        &ex["parameters"]["parameters"],
        &[
            ("{subscription-id}", &sub),
            ("{existing-virtual-network-name}", "nsgExistingVnet"),
            ("{existing-subnet-name}", "nsgExistingSubnet"),
            // Placeholders Azure itself would refuse by its own password rules.
            ("{your-username}", "azureuser"),
            ("{your-password}", "Example-Passw0rd"),
        ],
    );
    let vmss = h.id(
        "myResourceGroup",
        "Microsoft.Compute/virtualMachineScaleSets",
        "%7Bvmss-name%7D",
    );
    let r = h.arm(Method::PUT, &vmss, COMPUTE, Some(&body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_superset(&ex["responses"]["201"]["body"], &r.body, "VMSS PUT");
    assert_eq!(r.body["name"], "{vmss-name}");
    assert_eq!(r.body["properties"]["provisioningState"], "Creating");
    assert!(!r.text.contains("Example-Passw0rd"), "password echoed");
    let g = h.arm(Method::GET, &vmss, COMPUTE, None).await;
    assert_superset(&ex["responses"]["200"]["body"], &g.body, "VMSS GET");
    assert!(g.body["properties"]["virtualMachineProfile"]["osProfile"]
        .get("adminPassword")
        .is_none());

    // Role assignment at resource-group scope.
    let ex = fixture("RoleAssignments_CreateForResourceGroup.2022-04-01.json");
    let ex = replace_all(&ex, &[("a925f2f7-5c63-4b7b-8799-25a5f97bc3b2", &sub)]);
    h.put_rg("testrg").await;
    // The example's role is a custom role of its subscription: defined first.
    let role = format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/0b5fe924-9a61-425c-96af-cfe6e287ca2d");
    let r = h
        .arm(
            Method::PUT,
            &role,
            "2022-04-01",
            Some(&json!({"properties": {"roleName": "example role", "permissions": [{"actions": ["*/read"]}]}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let path = format!(
        "/{}/providers/Microsoft.Authorization/roleAssignments/{}",
        ex["parameters"]["scope"].as_str().unwrap(),
        ex["parameters"]["roleAssignmentName"].as_str().unwrap()
    );
    let r = h
        .arm(
            Method::PUT,
            &path,
            "2022-04-01",
            Some(&ex["parameters"]["parameters"]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_superset(&ex["responses"]["201"]["body"], &r.body, "role assignment");
    let r = h
        .arm(
            Method::PUT,
            &path,
            "2022-04-01",
            Some(&ex["parameters"]["parameters"]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_superset(
        &ex["responses"]["200"]["body"],
        &r.body,
        "role assignment 200",
    );
    let r = h.arm(Method::GET, &path, "2022-04-01", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.arm(Method::DELETE, &path, "2022-04-01", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.arm(Method::GET, &path, "2022-04-01", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Storage listKeys.
    let ex = fixture("StorageAccountListKeys.2023-05-01.json");
    h.put_rg("res418").await;
    let sa = h.id("res418", "Microsoft.Storage/storageAccounts", "sto2220");
    h.put_and_wait(
        &sa,
        STORAGE,
        &json!({"location": "westeurope", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}),
    )
    .await;
    let r = h
        .arm(Method::POST, &format!("{sa}/listKeys"), STORAGE, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_superset(&ex["responses"]["200"]["body"], &r.body, "listKeys");
    assert_ne!(r.body["keys"][0]["value"], r.body["keys"][1]["value"]);

    // AKS user credentials.
    let ex = fixture("ManagedClustersListClusterUserCredentials.2024-02-01.json");
    let aks = h.id(
        "rg1",
        "Microsoft.ContainerService/managedClusters",
        "clustername1",
    );
    h.put_and_wait(
        &aks,
        "2024-02-01",
        &json!({"location": "westeurope", "properties": {"dnsPrefix": "c1"}}),
    )
    .await;
    let r = h
        .arm(
            Method::POST,
            &format!("{aks}/listClusterUserCredential"),
            "2024-02-01",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_superset(&ex["responses"]["200"]["body"], &r.body, "AKS credentials");
    use base64::Engine;
    let kc = base64::engine::general_purpose::STANDARD
        .decode(r.body["kubeconfigs"][0]["value"].as_str().unwrap())
        .unwrap();
    assert!(String::from_utf8(kc).unwrap().contains("kind: Config"));

    // VMSS delete (the forced-deletion example's query parameter is accepted).
    let d = h
        .arm(
            Method::DELETE,
            &format!("{vmss}?forceDeletion=true"),
            COMPUTE,
            None,
        )
        .await;
    assert_eq!(d.status, StatusCode::ACCEPTED);
    assert!(d.header("location").is_some());

    // Key Vault: set and delete secret examples.
    let kv_token = token(
        &h.client,
        &h.server.info,
        "https://vault.azure.net/.default",
    )
    .await;
    let ex = fixture("KeyVault_SetSecret.7.4.json");
    let url = format!(
        "{}/secrets/crpsecret?api-version=7.4",
        h.server.info.keyvault_url
    );
    let r = send(
        &h.client,
        Method::PUT,
        &url,
        Some(&kv_token),
        Some(&ex["parameters"]["parameters"]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_superset(&ex["responses"]["200"]["body"], &r.body, "SetSecret");
    assert!(r.body["id"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}/secrets/crpsecret/", h.base())));
    let ex = fixture("KeyVault_DeleteSecret.7.4.json");
    let r = send(&h.client, Method::DELETE, &url, Some(&kv_token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_superset(&ex["responses"]["200"]["body"], &r.body, "DeleteSecret");
    h.server.shutdown().await;
}

#[tokio::test]
async fn operation_status_matches_reference_shapes() {
    let h = start_lro(100).await;
    h.put_rg("rg").await;
    let refs = fixture("arm_async_operation_status_examples.json");
    let nsg = h.id("rg", "Microsoft.Network/networkSecurityGroups", "ok");
    let r = h
        .arm(
            Method::PUT,
            &nsg,
            NET,
            Some(&json!({"location": "westeurope"})),
        )
        .await;
    let url = r.header("azure-asyncoperation").unwrap();
    let first = send(&h.client, Method::GET, &url, Some(&h.arm_token), None).await;
    assert_superset(
        &refs["inProgress_compute"],
        &first.body,
        "InProgress status",
    );
    h.sim.add_fault(FaultRule {
        asynchronous: true,
        principal: None,
        name_pattern: Some("bad".into()),
        ..fault(400, "BadArgument")
    });
    let r = h
        .arm(
            Method::PUT,
            &h.id("rg", "Microsoft.Network/networkSecurityGroups", "bad"),
            NET,
            Some(&json!({"location": "westeurope"})),
        )
        .await;
    let failed = h
        .poll_async(&r.header("azure-asyncoperation").unwrap())
        .await;
    assert_superset(&refs["failed_shape"], &failed, "Failed status");
    h.server.shutdown().await;
}

#[tokio::test]
async fn reference_checks_and_in_use_deletes() {
    let h = start_lro(0).await;
    h.put_rg("rg").await;
    let missing_nsg = h.id("rg", "Microsoft.Network/networkSecurityGroups", "missing");
    let r = h
        .arm(Method::PUT, &h.id("rg", "Microsoft.Network/virtualNetworks", "v1"), NET, Some(&json!({"location": "westeurope",
            "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "s", "properties": {"addressPrefix": "10.0.0.0/24", "networkSecurityGroup": {"id": missing_nsg}}}]}})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "InvalidResourceReference");

    let nsg = h.id("rg", "Microsoft.Network/networkSecurityGroups", "nsg");
    h.put_and_wait(&nsg, NET, &json!({"location": "westeurope"}))
        .await;
    let vnet = h.vnet("rg", "vnet", Some(&nsg)).await;
    let subnet = format!("{vnet}/subnets/default");

    // LB with a missing public IP.
    let pip = h.id("rg", "Microsoft.Network/publicIPAddresses", "pip");
    let lb_body = json!({"location": "westeurope", "sku": {"name": "Standard"}, "properties": {
        "frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {"id": pip}}}],
        "backendAddressPools": [{"name": "pool"}]}});
    let lb = h.id("rg", "Microsoft.Network/loadBalancers", "lb");
    let r = h.arm(Method::PUT, &lb, NET, Some(&lb_body)).await;
    assert_eq!(r.code(), "InvalidResourceReference", "{}", r.text);
    let p = h
        .put_and_wait(
            &pip,
            NET,
            &json!({"location": "westeurope", "sku": {"name": "Standard"}}),
        )
        .await;
    assert!(p["properties"]["ipAddress"].is_string());
    h.put_and_wait(&lb, NET, &lb_body).await;

    let vmss_body = |pool: &str| {
        json!({"location": "westeurope", "sku": {"name": "Standard_D2s_v5", "capacity": 1}, "properties": {
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "osProfile": {"computerNamePrefix": "w", "adminUsername": "azureuser"},
                "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {"primary": true,
                    "ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet},
                        "loadBalancerBackendAddressPools": [{"id": format!("{lb}/backendAddressPools/{pool}")}]}}]}}]}}}})
    };
    let vmss = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "workers");
    let r = h
        .arm(Method::PUT, &vmss, COMPUTE, Some(&vmss_body("nopool")))
        .await;
    assert_eq!(r.code(), "InvalidResourceReference", "{}", r.text);
    let bad_subnet = vmss_body("pool")
        .to_string()
        .replace("subnets/default", "subnets/other");
    let r = h
        .arm(
            Method::PUT,
            &vmss,
            COMPUTE,
            Some(&serde_json::from_str(&bad_subnet).unwrap()),
        )
        .await;
    assert_eq!(r.code(), "InvalidResourceReference", "{}", r.text);
    h.put_and_wait(&vmss, COMPUTE, &vmss_body("pool")).await;

    let r = h.arm(Method::DELETE, &vnet, NET, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "InUseSubnetCannotBeDeleted");
    let r = h.arm(Method::DELETE, &lb, NET, None).await;
    assert_eq!(r.code(), "LoadBalancerInUseByVirtualMachineScaleSet");
    let r = h.arm(Method::DELETE, &pip, NET, None).await;
    assert_eq!(r.code(), "PublicIPAddressInUse");
    let r = h.arm(Method::DELETE, &nsg, NET, None).await;
    assert_eq!(r.code(), "InUseNetworkSecurityGroupCannotBeDeleted");

    // Reverse order works.
    for (id, v) in [
        (&vmss, COMPUTE),
        (&lb, NET),
        (&pip, NET),
        (&vnet, NET),
        (&nsg, NET),
    ] {
        h.delete_and_wait(id, v).await;
    }
    assert!(h
        .sim
        .inventory(None)
        .iter()
        .all(|i| i.resource_type == "Microsoft.Resources/resourceGroups"));
    h.server.shutdown().await;
}

#[tokio::test]
async fn throttling_answers_429() {
    let mut cfg = config(0);
    cfg.throttle = Some(small_throttle());
    let h = start(cfg).await;
    let url = format!("/subscriptions/{}/resourcegroups", h.sub());
    let mut saw = None;
    for _ in 0..6 {
        let r = h.arm(Method::GET, &url, RES, None).await;
        assert!(r
            .header("x-ms-ratelimit-remaining-subscription-reads")
            .is_some());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            saw = Some(r);
            break;
        }
    }
    let r = saw.expect("a 429 within the burst");
    assert_eq!(r.code(), "TooManyRequests");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(wait >= 1);
    // Writes have their own bucket.
    let w = h
        .arm(
            Method::PUT,
            &h.rg_path("rg"),
            RES,
            Some(&json!({"location": "westeurope"})),
        )
        .await;
    assert_eq!(w.status, StatusCode::CREATED);
    h.server.shutdown().await;
}

#[tokio::test]
async fn fault_rules() {
    let h = start_lro(50).await;
    h.put_rg("rg").await;
    let nsg = |n: &str| h.id("rg", "Microsoft.Network/networkSecurityGroups", n);
    let body = json!({"location": "westeurope"});

    // times: fires twice, then the rule is gone.
    h.sim.add_fault(FaultRule {
        method: Some("put".into()),
        resource_type: Some("Microsoft.Network/networkSecurityGroups".into()),
        name_pattern: Some("flaky-*".into()),
        times: Some(2),
        ..fault(503, "ServiceUnavailable")
    });
    for _ in 0..2 {
        let r = h.arm(Method::PUT, &nsg("flaky-1"), NET, Some(&body)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.code(), "ServiceUnavailable");
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    }
    let r = h.arm(Method::PUT, &nsg("flaky-1"), NET, Some(&body)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Other names were never affected.
    let r = h.arm(Method::PUT, &nsg("steady"), NET, Some(&body)).await;
    assert_eq!(r.status, StatusCode::CREATED);

    // probability 0 never fires.
    h.sim.add_fault(FaultRule {
        probability: Some(0.0),
        ..fault(500, "InternalServerError")
    });
    for _ in 0..10 {
        let r = h.arm(Method::GET, &nsg("steady"), NET, None).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    h.sim.clear_faults();

    // latency.
    h.sim.add_fault(FaultRule {
        method: Some("GET".into()),
        latency_ms: Some(300),
        times: Some(1),
        ..fault(429, "TooManyRequests")
    });
    let t = Instant::now();
    let r = h.arm(Method::GET, &nsg("steady"), NET, None).await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);

    // asynchronous: the PUT is accepted, the operation fails.
    h.sim.add_fault(FaultRule {
        resource_type: Some("Microsoft.Compute/virtualMachineScaleSets".into()),
        message: Some("The requested size is not available.".into()),
        asynchronous: true,
        principal: None,
        times: Some(1),
        ..fault(409, "SkuNotAvailable")
    });
    // An asynchronous rule never fires on a request without an operation.
    let r = h.arm(Method::GET, &nsg("steady"), NET, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let vnet = h.vnet("rg", "vnet", None).await;
    let vmss = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "big");
    let r = h
        .arm(Method::PUT, &vmss, COMPUTE, Some(&json!({"location": "westeurope", "sku": {"name": "Standard_HB176rs_v4", "capacity": 1},
            "properties": {"virtualMachineProfile": {"networkProfile": {"networkInterfaceConfigurations": [{"name": "n", "properties": {
                "ipConfigurations": [{"name": "i", "properties": {"subnet": {"id": format!("{vnet}/subnets/default")}}}]}}]}}}})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let st = h
        .poll_async(&r.header("azure-asyncoperation").unwrap())
        .await;
    assert_eq!(st["status"], "Failed");
    assert_eq!(st["error"]["code"], "SkuNotAvailable");
    assert_eq!(
        st["error"]["message"],
        "The requested size is not available."
    );
    let g = h.arm(Method::GET, &vmss, COMPUTE, None).await;
    assert_eq!(g.body["properties"]["provisioningState"], "Failed");

    // Over HTTP: bad JSON is a 400 problem, a good rule is honoured, DELETE clears.
    let faults = format!("{}/_sim/faults", h.base());
    let r = h.client.post(&faults).body("{").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("problem+json"));
    let r = h
        .client
        .post(&faults)
        .json(&json!({"resource_type": "Microsoft.KeyVault/vaults/secrets", "status": 500, "code": "InternalError", "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let kv_token = token(
        &h.client,
        &h.server.info,
        "https://vault.azure.net/.default",
    )
    .await;
    let url = format!("{}/secrets/s1?api-version=7.5", h.base());
    let r = send(
        &h.client,
        Method::PUT,
        &url,
        Some(&kv_token),
        Some(&json!({"value": "v"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let r = send(
        &h.client,
        Method::PUT,
        &url,
        Some(&kv_token),
        Some(&json!({"value": "v"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    h.client
        .post(&faults)
        .json(&fault(500, "X"))
        .send()
        .await
        .unwrap();
    let r = h.client.delete(&faults).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = h.arm(Method::GET, &nsg("steady"), NET, None).await;
    assert_eq!(r.status, StatusCode::OK);

    // The request log saw the traffic, without query strings.
    let log: Value = h
        .client
        .get(format!("{}/_sim/requests", h.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reqs = log["requests"].as_array().unwrap();
    assert!(reqs.iter().any(|r| r["status"] == 503));
    assert!(reqs
        .iter()
        .all(|r| !r["path"].as_str().unwrap().contains('?')));
    assert!(reqs
        .iter()
        .any(|r| r["principal"] == h.server.info.client_id.as_str()));
    h.server.shutdown().await;
}

/// Creates a storage account, a container and the init script blob; returns (key1, script URL).
async fn stage_script(h: &Harness) -> (String, String) {
    let sa = h.id("rg", "Microsoft.Storage/storageAccounts", "flotillastage");
    h.put_and_wait(
        &sa,
        STORAGE,
        &json!({"location": "westeurope", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}),
    )
    .await;
    let keys = h
        .arm(Method::POST, &format!("{sa}/listKeys"), STORAGE, None)
        .await;
    let key1 = keys.body["keys"][0]["value"].as_str().unwrap().to_string();
    let st = token(
        &h.client,
        &h.server.info,
        "https://storage.azure.com/.default",
    )
    .await;
    let acct = format!("{}/flotillastage", h.server.info.blob_endpoint);
    let r = h
        .client
        .put(format!("{acct}/staging?restype=container"))
        .bearer_auth(&st)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let url = format!("{acct}/staging/job-1/init.sh");
    let r = h
        .client
        .put(&url)
        .bearer_auth(&st)
        .header("x-ms-blob-type", "BlockBlob")
        .header("x-ms-version", "2025-01-05")
        .header("content-type", "text/x-shellscript")
        .header("x-ms-meta-job", "j1")
        .body("#!/bin/sh\necho hi\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for hname in ["etag", "last-modified", "x-ms-request-id", "x-ms-version"] {
        assert!(r.headers().contains_key(hname), "{hname}");
    }
    (key1, url)
}

fn vmss_with_script(subnet: &str, capacity: u64, key: &str, url: &str) -> Value {
    json!({"location": "westeurope", "tags": {"job": "j1"}, "sku": {"name": "Standard_D2s_v5", "capacity": capacity},
        "properties": {"upgradePolicy": {"mode": "Manual"}, "virtualMachineProfile": {
            "osProfile": {"computerNamePrefix": "w", "adminUsername": "azureuser", "adminPassword": "S3cret-Passw0rd!"},
            "networkProfile": {"networkInterfaceConfigurations": [{"name": "n", "properties": {"primary": true,
                "ipConfigurations": [{"name": "i", "properties": {"subnet": {"id": subnet}}}]}}]},
            "extensionProfile": {"extensions": [{"name": "init", "properties": {
                "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
                "protectedSettings": {"storageAccountName": "flotillastage", "storageAccountKey": key,
                    "fileUris": [url], "commandToExecute": "sh init.sh"}}}]}}}})
}

fn summary_count(v: &Value, code: &str) -> u64 {
    v.as_array()
        .and_then(|a| a.iter().find(|s| s["code"] == code))
        .and_then(|s| s["count"].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn vmss_instances_boot_with_the_storage_key() {
    let h = start_lro(150).await;
    h.put_rg("rg").await;
    let (key1, url) = stage_script(&h).await;
    let vnet = h.vnet("rg", "vnet", None).await;
    let subnet = format!("{vnet}/subnets/default");

    let good = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "good");
    let r = h
        .arm(
            Method::PUT,
            &good,
            COMPUTE,
            Some(&vmss_with_script(&subnet, 2, &key1, &url)),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(!r.text.contains(&key1), "key echoed in PUT response");
    assert!(!r.text.contains("S3cret-Passw0rd!"), "password echoed");
    assert!(!r.text.contains("protectedSettings"));
    let iv = h
        .arm(Method::GET, &format!("{good}/instanceView"), COMPUTE, None)
        .await;
    assert_eq!(iv.status, StatusCode::OK);
    assert_eq!(
        summary_count(
            &iv.body["virtualMachine"]["statusesSummary"],
            "ProvisioningState/creating"
        ),
        2
    );
    h.poll_async(&r.header("azure-asyncoperation").unwrap())
        .await;
    // Instances now boot for `lro`.
    let iv = h
        .arm(Method::GET, &format!("{good}/instanceView"), COMPUTE, None)
        .await;
    assert_eq!(
        summary_count(
            &iv.body["virtualMachine"]["statusesSummary"],
            "ProvisioningState/creating"
        ),
        2,
        "{}",
        iv.text
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let iv = h
        .arm(Method::GET, &format!("{good}/instanceView"), COMPUTE, None)
        .await;
    assert_eq!(
        summary_count(
            &iv.body["virtualMachine"]["statusesSummary"],
            "ProvisioningState/succeeded"
        ),
        2,
        "{}",
        iv.text
    );
    assert_eq!(iv.body["extensions"][0]["name"], "init");
    assert_eq!(
        summary_count(
            &iv.body["extensions"][0]["statusesSummary"],
            "ProvisioningState/succeeded"
        ),
        2
    );
    assert_eq!(
        iv.body["statuses"][0]["code"],
        "ProvisioningState/succeeded"
    );
    let g = h.arm(Method::GET, &good, COMPUTE, None).await;
    assert!(
        !g.text.contains(&key1)
            && !g.text.contains("protectedSettings")
            && !g.text.contains("S3cret")
    );

    // Scale out by PATCH: the new instances boot too.
    let p = h
        .arm(
            Method::PATCH,
            &good,
            COMPUTE,
            Some(&json!({"sku": {"capacity": 3}})),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(p.body["sku"]["capacity"], 3);
    h.poll_async(&p.header("azure-asyncoperation").unwrap())
        .await;
    let iv = h
        .arm(Method::GET, &format!("{good}/instanceView"), COMPUTE, None)
        .await;
    assert_eq!(
        summary_count(
            &iv.body["virtualMachine"]["statusesSummary"],
            "ProvisioningState/succeeded"
        ),
        2,
        "{}",
        iv.text
    );
    assert_eq!(
        summary_count(
            &iv.body["virtualMachine"]["statusesSummary"],
            "ProvisioningState/creating"
        ),
        1
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let iv = h
        .arm(Method::GET, &format!("{good}/instanceView"), COMPUTE, None)
        .await;
    assert_eq!(
        summary_count(
            &iv.body["extensions"][0]["statusesSummary"],
            "ProvisioningState/succeeded"
        ),
        3
    );

    // A wrong key: the extension fails, and the message does not carry the key.
    let bad = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "bad");
    let wrong = "d3JvbmcKd3JvbmcKd3JvbmcK";
    let r = h
        .arm(
            Method::PUT,
            &bad,
            COMPUTE,
            Some(&vmss_with_script(&subnet, 1, wrong, &url)),
        )
        .await;
    h.poll_async(&r.header("azure-asyncoperation").unwrap())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let iv = h
        .arm(Method::GET, &format!("{bad}/instanceView"), COMPUTE, None)
        .await;
    assert_eq!(
        summary_count(
            &iv.body["extensions"][0]["statusesSummary"],
            "ProvisioningState/failed"
        ),
        1,
        "{}",
        iv.text
    );
    assert!(iv.body["statuses"][0]["code"]
        .as_str()
        .unwrap()
        .starts_with("ProvisioningState/failed"));
    assert!(!iv.text.contains(wrong));

    // A missing blob fails too (Azure-style URL mapped onto the simulator's store).
    let missing = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "missing");
    let r = h
        .arm(
            Method::PUT,
            &missing,
            COMPUTE,
            Some(&vmss_with_script(
                &subnet,
                1,
                &key1,
                "https://flotillastage.blob.core.windows.net/staging/nope.sh",
            )),
        )
        .await;
    h.poll_async(&r.header("azure-asyncoperation").unwrap())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let iv = h
        .arm(
            Method::GET,
            &format!("{missing}/instanceView"),
            COMPUTE,
            None,
        )
        .await;
    assert_eq!(
        summary_count(
            &iv.body["extensions"][0]["statusesSummary"],
            "ProvisioningState/failed"
        ),
        1
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn key_vault_and_blob_data_planes() {
    let h = start_lro(0).await;
    let info = h.server.info.clone();
    // Challenge first, as SecretClient expects.
    let url = format!("{}/secrets/db-password?api-version=7.5", info.keyvault_url);
    let r = send(&h.client, Method::GET, &url, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let challenge = r.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer "));
    assert!(challenge.contains("resource=\"https://vault.azure.net\""));
    assert!(challenge.contains(&format!(
        "authorization=\"{}/{}\"",
        h.base(),
        info.tenant_id
    )));

    let t = token(&h.client, &info, "https://vault.azure.net/.default").await;
    let r = send(&h.client, Method::GET, &url, Some(&t), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "SecretNotFound");
    assert_eq!(
        r.header("x-ms-error-code").as_deref(),
        Some("SecretNotFound")
    );
    let r = send(
        &h.client,
        Method::PUT,
        &url,
        Some(&t),
        Some(&json!({"value": "v1", "tags": {"job": "j1"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v1 = r.body["id"].as_str().unwrap().to_string();
    let r = send(
        &h.client,
        Method::PUT,
        &url,
        Some(&t),
        Some(&json!({"value": "v2", "tags": {"job": "j1"}})),
    )
    .await;
    assert_ne!(r.body["id"], v1.as_str());
    let r = send(&h.client, Method::GET, &url, Some(&t), None).await;
    assert_eq!(r.body["value"], "v2");
    let r = send(
        &h.client,
        Method::GET,
        &format!("{v1}?api-version=7.5"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(r.body["value"], "v1");
    let r = send(
        &h.client,
        Method::PUT,
        &format!("{}/secrets/bad_name?api-version=7.5", h.base()),
        Some(&t),
        Some(&json!({"value": "x"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send(
        &h.client,
        Method::GET,
        &format!("{}/secrets/db-password", h.base()),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "api-version required");
    // Delete, then the name is taken until purged.
    let r = send(&h.client, Method::DELETE, &url, Some(&t), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["recoveryId"]
        .as_str()
        .unwrap()
        .ends_with("/deletedsecrets/db-password"));
    let r = send(
        &h.client,
        Method::PUT,
        &url,
        Some(&t),
        Some(&json!({"value": "v3"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let purge = format!("{}/deletedsecrets/db-password?api-version=7.5", h.base());
    let r = send(&h.client, Method::DELETE, &purge, Some(&t), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = send(
        &h.client,
        Method::PUT,
        &url,
        Some(&t),
        Some(&json!({"value": "v3"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // Blob: account must exist in ARM.
    let st = token(&h.client, &info, "https://storage.azure.com/.default").await;
    let r = h
        .client
        .put(format!("{}/nosuch/c?restype=container", info.blob_endpoint))
        .bearer_auth(&st)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    h.put_rg("rg").await;
    let (_, blob) = stage_script(&h).await;
    let r = h.client.get(&blob).bearer_auth(&st).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ms-blob-type"], "BlockBlob");
    assert_eq!(r.headers()["content-type"], "text/x-shellscript");
    assert_eq!(r.headers()["x-ms-meta-job"], "j1");
    assert!(r.headers().contains_key("etag") && r.headers().contains_key("last-modified"));
    assert_eq!(r.text().await.unwrap(), "#!/bin/sh\necho hi\n");
    let r = h
        .client
        .get(&blob)
        .bearer_auth(&st)
        .header("x-ms-range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 0-3/18");
    assert_eq!(r.text().await.unwrap(), "#!/b");
    let r = h.client.head(&blob).bearer_auth(&st).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "18");
    // Inventory: blob and secret by tag.
    let items = h.sim.inventory(Some(("job", "j1")));
    assert!(items
        .iter()
        .any(|i| i.resource_type.ends_with("/blobs") && i.name == "job-1/init.sh"));
    // The secret was recreated without tags, so it is not part of job j1.
    assert!(!items.iter().any(|i| i.name == "db-password"));
    let r = h
        .client
        .delete(&blob)
        .bearer_auth(&st)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = h
        .client
        .delete(&blob)
        .bearer_auth(&st)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["x-ms-error-code"], "BlobNotFound");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("<Error><Code>BlobNotFound</Code><Message>"),
        "{text}"
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_name_filter_lists_exactly_the_names_that_contain_it() {
    // Pre-flight's listing of a job's names: what contains the fragment,
    // ignoring case, in the group asked for and no other.
    let h = start_lro(0).await;
    h.put_rg("rg").await;
    h.put_rg("rg2").await;
    let body = json!({"location": "westeurope"});
    let nsg = "Microsoft.Network/networkSecurityGroups";
    for name in [
        "demo-abc123-nsg",
        "Demo-ABC123",
        "xdemo-abc123x",
        "demo-abc124-nsg",
        "demoabc123",
        "abc123-demo",
    ] {
        h.put_and_wait(&h.id("rg", nsg, name), NET, &body).await;
    }
    h.put_and_wait(&h.id("rg2", nsg, "demo-abc123-other"), NET, &body)
        .await;
    let listed_in = |scope: String, fragment: &'static str| {
        let h = &h;
        async move {
            let path = format!("{scope}/resources?$filter=substringof('{fragment}', name)");
            let r = h.arm(Method::GET, &path, RES, None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let mut names: Vec<String> = r.body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        }
    };
    let listed = |fragment: &'static str| listed_in(h.rg_path("rg"), fragment);
    assert_eq!(
        listed("DEMO-abc123").await,
        ["Demo-ABC123", "demo-abc123-nsg", "xdemo-abc123x"]
    );
    assert_eq!(
        listed("abc12").await,
        [
            "Demo-ABC123",
            "abc123-demo",
            "demo-abc123-nsg",
            "demo-abc124-nsg",
            "demoabc123",
            "xdemo-abc123x"
        ]
    );
    assert_eq!(listed("o-abc124").await, ["demo-abc124-nsg"]);
    assert!(listed("demo-zzz999").await.is_empty());
    // A subscription's listing holds every group's names.
    let subscription = format!("/subscriptions/{}", h.sub());
    assert_eq!(
        listed_in(subscription, "demo-ABC123").await,
        [
            "Demo-ABC123",
            "demo-abc123-nsg",
            "demo-abc123-other",
            "xdemo-abc123x"
        ]
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn inventory_by_tag() {
    let h = start_lro(0).await;
    h.put_rg("rg").await;
    let tagged =
        json!({"location": "westeurope", "tags": {"flotilla-job": "j1", "managed-by": "flotilla"}});
    h.put_and_wait(
        &h.id("rg", "Microsoft.Network/networkSecurityGroups", "a"),
        NET,
        &tagged,
    )
    .await;
    h.put_and_wait(
        &h.id("rg", "Microsoft.Network/publicIPAddresses", "b"),
        NET,
        &tagged,
    )
    .await;
    h.put_and_wait(
        &h.id("rg", "Microsoft.Network/networkSecurityGroups", "other"),
        NET,
        &json!({"location": "westeurope", "tags": {"flotilla-job": "j2"}}),
    )
    .await;
    let kv = token(
        &h.client,
        &h.server.info,
        "https://vault.azure.net/.default",
    )
    .await;
    let url = format!("{}/secrets/j1-key?api-version=7.5", h.base());
    send(
        &h.client,
        Method::PUT,
        &url,
        Some(&kv),
        Some(&json!({"value": "s", "tags": {"flotilla-job": "j1"}})),
    )
    .await;

    let v: Value = h
        .client
        .get(format!(
            "{}/_sim/inventory?tagName=flotilla-job&tagValue=j1",
            h.base()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = v["resources"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(items.len(), 3, "{names:?}");
    assert!(names.contains(&"a") && names.contains(&"b") && names.contains(&"j1-key"));
    let secret = items.iter().find(|i| i["name"] == "j1-key").unwrap();
    assert_eq!(secret["id"], format!("{}/secrets/j1-key", h.base()));
    assert_eq!(h.sim.inventory(Some(("flotilla-job", "j1"))).len(), 3);

    // ARM tag query: tags omitted from results.
    let r = h
        .arm(Method::GET, &format!("/subscriptions/{}/resources?$filter=tagName eq 'flotilla-job' and tagValue eq 'j1'", h.sub()), RES, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let value = r.body["value"].as_array().unwrap();
    assert_eq!(value.len(), 2);
    assert!(value
        .iter()
        .all(|i| i.get("tags").is_none() && i["id"].is_string() && i["type"].is_string()));
    let r = h
        .arm(
            Method::GET,
            &format!(
                "{}/resources?$filter=tagName eq 'flotilla-job'",
                h.rg_path("rg")
            ),
            RES,
            None,
        )
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 3);
    h.server.shutdown().await;
}

#[tokio::test]
async fn state_survives_restart_and_operations_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig {
        data_dir: Some(dir.path().to_path_buf()),
        lro: Duration::from_millis(700),
        throttle: None,
        ..SimConfig::default()
    };
    let h = start(cfg.clone()).await;
    h.put_rg("rg").await;
    let nsg = h.id("rg", "Microsoft.Network/networkSecurityGroups", "n1");
    let r = h
        .arm(
            Method::PUT,
            &nsg,
            NET,
            Some(&json!({"location": "westeurope"})),
        )
        .await;
    let op_url = r.header("azure-asyncoperation").unwrap();
    let op_path = op_url.trim_start_matches(h.base()).to_string();
    let info = h.server.info.clone();
    let token_before = h.arm_token.clone();
    h.server.shutdown().await;
    drop(h.sim);
    assert!(dir.path().join("state.db").exists());

    let sim = Sim::new(cfg).unwrap();
    let server = sim.serve(0).await.unwrap();
    assert_eq!(server.info.client_id, info.client_id);
    assert_eq!(server.info.client_secret, info.client_secret);
    assert_eq!(
        sim.ca_cert_pem(),
        std::fs::read_to_string(&info.ca_cert).unwrap()
    );
    let client = client_for(&sim);
    let url = format!("{}{op_path}", server.base_url);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = send(&client, Method::GET, &url, Some(&token_before), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        if r.body["status"] == "Succeeded" {
            break;
        }
        assert_eq!(r.body["status"], "InProgress");
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let g = send(
        &client,
        Method::GET,
        &format!("{}{nsg}?api-version={NET}", server.base_url),
        Some(&token_before),
        None,
    )
    .await;
    assert_eq!(g.body["properties"]["provisioningState"], "Succeeded");
    server.shutdown().await;
}

#[tokio::test]
async fn in_process_router() {
    use tower::ServiceExt;
    let sim = Sim::new(config(0)).unwrap();
    let info = sim.info("https://sim.local");
    assert_eq!(
        info.managed_identity_endpoint,
        "https://sim.local/msi/token"
    );
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
        info.client_id, info.client_secret
    );
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(&info.token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(body))
        .unwrap();
    let resp = sim.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let token = v["access_token"].as_str().unwrap();
    let req = axum::http::Request::builder()
        .method("PUT")
        .uri(format!(
            "https://sim.local/subscriptions/{}/resourceGroups/rg?api-version=2021-04-01",
            info.subscription_id
        ))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(r#"{"location":"westeurope"}"#))
        .unwrap();
    let resp = sim.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(sim.requests().len(), 2);
}

#[tokio::test]
async fn an_older_state_json_is_migrated_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let rg = format!(
        "/subscriptions/{}/resourceGroups/old",
        flotilla_sim::SUBSCRIPTION_ID
    );
    let legacy = json!({
        "creds": {"client_id": "legacy-client", "client_secret": "legacy-secret",
            "identity_header": "legacy-header", "msi_client_id": "legacy-msi"},
        "resources": {rg.to_ascii_lowercase(): {
            "id": rg, "rtype": "Microsoft.Resources/resourceGroups", "name": "old", "rg": "old",
            "body": {"location": "westeurope", "tags": {"from": "json"}}, "state": "Succeeded",
            "op": null, "etag": "e1"}},
        "ops": {}, "secrets": {}, "containers": {}, "tokens": {}, "generation": 7
    });
    std::fs::write(dir.path().join("state.json"), legacy.to_string()).unwrap();
    let cfg = SimConfig {
        data_dir: Some(dir.path().to_path_buf()),
        lro: Duration::ZERO,
        throttle: None,
        ..SimConfig::default()
    };
    let h = start(cfg.clone()).await;
    assert_eq!(h.server.info.client_id, "legacy-client");
    let r = h.arm(Method::GET, &h.rg_path("old"), RES, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["tags"]["from"], "json");
    h.server.shutdown().await;
    drop(h.sim);
    // The database now holds it: a restart without the JSON file still sees the group.
    std::fs::remove_file(dir.path().join("state.json")).unwrap();
    let h = start(cfg).await;
    assert_eq!(h.server.info.client_id, "legacy-client");
    let r = h.arm(Method::GET, &h.rg_path("old"), RES, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("state.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    h.server.shutdown().await;
}

#[tokio::test]
async fn blobs_are_saved_one_row_each_and_go_with_their_account() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig {
        data_dir: Some(dir.path().to_path_buf()),
        lro: Duration::ZERO,
        throttle: None,
        ..SimConfig::default()
    };
    let h = start(cfg.clone()).await;
    h.put_rg("rg").await;
    let (_, url) = stage_script(&h).await;
    let path = url.trim_start_matches(h.base()).to_string();
    h.server.shutdown().await;
    drop(h.sim);

    // After a restart the blob is read back from the database.
    let h = start(cfg.clone()).await;
    let st = token(
        &h.client,
        &h.server.info,
        "https://storage.azure.com/.default",
    )
    .await;
    let r = h
        .client
        .get(format!("{}{path}", h.base()))
        .bearer_auth(&st)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "#!/bin/sh\necho hi\n");
    let blob_rows = || {
        let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
        conn.query_row(
            "SELECT count(*) FROM entries WHERE kind = 'blob'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    assert_eq!(blob_rows(), 1);
    // Deleting the account deletes its containers and their blob rows.
    let sa = h.id("rg", "Microsoft.Storage/storageAccounts", "flotillastage");
    let d = h.arm(Method::DELETE, &sa, STORAGE, None).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text);
    assert_eq!(blob_rows(), 0);
    h.server.shutdown().await;
}

/// A managed-identity token of VM `{scaleSet}_{n}` from its metadata endpoint.
async fn vm_token(h: &Harness, vm: &str) -> Value {
    let (status, body) = vm_token_for(h, vm, "https://vault.azure.net", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Asks VM `vm`'s metadata endpoint for a token for `resource`, with extra
/// query parameters (which identity).
async fn vm_token_for(
    h: &Harness,
    vm: &str,
    resource: &str,
    query: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut url = format!(
        "{}/imds/{vm}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}",
        h.base()
    );
    for (k, v) in query {
        url.push_str(&format!("&{k}={v}"));
    }
    let r = h
        .client
        .get(url)
        .header("metadata", "true")
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Gives `principal` role `role` (a built-in GUID) at `scope`.
async fn assign(h: &Harness, scope: &str, principal: &str, role: &str) -> reqwest::StatusCode {
    let id = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let body = json!({"properties": {
        "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role}", h.sub()),
        "principalId": principal,
        "principalType": "ServicePrincipal"}});
    h.arm(Method::PUT, &id, "2022-04-01", Some(&body))
        .await
        .status
}

const SECRETS_OFFICER: &str = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7";

async fn put_secret_as(h: &Harness, token: &str, name: &str) -> StatusCode {
    let url = format!(
        "{}/secrets/{name}?api-version=7.5",
        h.server.info.keyvault_url
    );
    h.client
        .put(url)
        .bearer_auth(token)
        .json(&json!({"value": "v"}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_deleted_vm_writes_nothing_with_its_identity() {
    let h = start_lro(50).await;
    h.put_rg("rg").await;
    let (key1, url) = stage_script(&h).await;
    let vnet = h.vnet("rg", "vnet", None).await;
    let mut body = vmss_with_script(&format!("{vnet}/subnets/default"), 2, &key1, &url);
    body["identity"] = json!({"type": "SystemAssigned"});
    let set = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "nodes");
    let created = h.put_and_wait(&set, COMPUTE, &body).await;
    // Its identity may write the vault's secrets.
    let principal = created["identity"]["principalId"].as_str().unwrap();
    let vault = h.server.info.keyvault_id.clone();
    assert!(assign(&h, &vault, principal, SECRETS_OFFICER)
        .await
        .is_success());
    // Its instances boot (for another `lro`) and run their init extension.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let iv = h
            .arm(Method::GET, &format!("{set}/instanceView"), COMPUTE, None)
            .await;
        let booted = summary_count(
            &iv.body["virtualMachine"]["statusesSummary"],
            "ProvisioningState/succeeded",
        );
        if booted == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", iv.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let t0 = vm_token(&h, "nodes_0").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let t1 = vm_token(&h, "nodes_1").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(put_secret_as(&h, &t1, "from-node-1").await, StatusCode::OK);

    // Scale in to one instance: instance 1 is gone, instance 0 still writes.
    let r = h
        .arm(
            Method::PATCH,
            &set,
            COMPUTE,
            Some(&json!({"sku": {"name": "Standard_D2s_v5", "capacity": 1}})),
        )
        .await;
    h.poll_async(&r.header("azure-asyncoperation").unwrap())
        .await;
    assert_eq!(
        put_secret_as(&h, &t1, "from-node-1").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(put_secret_as(&h, &t0, "from-node-0").await, StatusCode::OK);

    // Deleted: nothing more from its VMs, even with a token still unexpired.
    h.delete_and_wait(&set, COMPUTE).await;
    assert_eq!(
        put_secret_as(&h, &t0, "from-node-0").await,
        StatusCode::FORBIDDEN
    );
}

/// Key Vault with Azure RBAC, for the identities of VMs: a node's token is
/// for the user-assigned identity it names (attached to its scale set) or
/// its system-assigned one, and opens exactly the secrets that identity was
/// given a role on; the vault's list and other secrets stay closed.
#[tokio::test]
async fn a_vm_identity_reaches_only_the_secrets_it_was_granted() {
    let h = start_lro(0).await;
    h.put_rg("rg").await;
    let (key1, url) = stage_script(&h).await;
    let vnet = h.vnet("rg", "vnet", None).await;
    let uai = |name: &str| {
        h.id(
            "rg",
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            name,
        )
    };
    let (a, b) = (uai("job-a-nodes"), uai("job-b-nodes"));
    let mut principals = vec![];
    for id in [&a, &b] {
        let r = h
            .arm(
                Method::PUT,
                id,
                "2023-01-31",
                Some(&json!({"location": "westeurope"})),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.text);
        principals.push(
            r.body["properties"]["principalId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut body = vmss_with_script(&format!("{vnet}/subnets/default"), 1, &key1, &url);
    body["identity"] =
        json!({"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {a.clone(): {}}});
    let set = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "job-a-w");
    h.put_and_wait(&set, COMPUTE, &body).await;

    let vault = h.server.info.keyvault_id.clone();
    // A role on a secret that does not exist has no scope.
    assert_eq!(
        assign(
            &h,
            &format!("{vault}/secrets/job-a-join-token"),
            &principals[0],
            SECRETS_OFFICER
        )
        .await,
        StatusCode::NOT_FOUND
    );
    let kv = |name: &str| {
        format!(
            "{}/secrets/{name}?api-version=7.5",
            h.server.info.keyvault_url
        )
    };
    let own = token(
        &h.client,
        &h.server.info,
        "https://vault.azure.net/.default",
    )
    .await;
    for name in ["job-a-join-token", "job-b-join-token"] {
        let r = h
            .client
            .put(kv(name))
            .bearer_auth(&own)
            .json(&json!({"value": "pending"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert!(assign(
        &h,
        &format!("{vault}/secrets/job-a-join-token"),
        &principals[0],
        SECRETS_OFFICER
    )
    .await
    .is_success());
    assert!(assign(
        &h,
        &format!("{vault}/secrets/job-b-join-token"),
        &principals[1],
        SECRETS_OFFICER
    )
    .await
    .is_success());

    let (status, t) = vm_token_for(
        &h,
        "job-a-w_0",
        "https://vault.azure.net",
        &[("msi_res_id", &a)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let node_a = t["access_token"].as_str().unwrap().to_string();
    let get = |token: String, name: &'static str| {
        let c = h.client.clone();
        let u = kv(name);
        async move { c.get(u).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(
        get(node_a.clone(), "job-a-join-token").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        put_secret_as(&h, &node_a, "job-a-join-token").await,
        StatusCode::OK
    );
    let refused = get(node_a.clone(), "job-b-join-token").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("Microsoft.KeyVault/vaults/secrets/getSecret/action"),
        "{text}"
    );
    assert_eq!(
        put_secret_as(&h, &node_a, "job-b-join-token").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put_secret_as(&h, &node_a, "something-new").await,
        StatusCode::FORBIDDEN
    );
    let list = h
        .client
        .get(format!(
            "{}/secrets?api-version=7.5",
            h.server.info.keyvault_url
        ))
        .bearer_auth(&node_a)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::FORBIDDEN);

    // Another job's identity is not attached to this scale set.
    let (status, t) = vm_token_for(
        &h,
        "job-a-w_0",
        "https://vault.azure.net",
        &[("msi_res_id", &b)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{t}");
    assert_eq!(t["error_description"], "Identity not found");
    // Its client id names the same identity as its resource id.
    let client = h.arm(Method::GET, &a, "2023-01-31", None).await.body["properties"]["clientId"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = vm_token_for(
        &h,
        "job-a-w_0",
        "https://vault.azure.net",
        &[("client_id", &client)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The system-assigned identity holds no grant.
    let system = vm_token(&h, "job-a-w_0").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(system, "job-a-join-token").await.status(),
        StatusCode::FORBIDDEN
    );

    // A blob needs its own grant: the node identity reads no staged blob.
    let (_, st) = vm_token_for(
        &h,
        "job-a-w_0",
        "https://storage.azure.com/",
        &[("msi_res_id", &a)],
    )
    .await;
    let r = h
        .client
        .get(&url)
        .bearer_auth(st["access_token"].as_str().unwrap())
        .header("x-ms-version", "2025-01-05")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_write_answers_with_what_a_read_then_returns() {
    // Operations outlast the test: the read sees the state the write left.
    let h = start_lro(60_000).await;
    h.put_rg("rg").await;
    let nsg = h.id("rg", "Microsoft.Network/networkSecurityGroups", "n1");
    let body = json!({"location": "westeurope", "tags": {"a": "1"},
        "properties": {"securityRules": [{"name": "ssh", "properties": {"protocol": "Tcp",
            "sourcePortRange": "*", "destinationPortRange": "22", "sourceAddressPrefix": "*",
            "destinationAddressPrefix": "*", "access": "Allow", "priority": 100, "direction": "Inbound"}}]}});
    let put = h.arm(Method::PUT, &nsg, NET, Some(&body)).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text);
    let get = h.arm(Method::GET, &nsg, NET, None).await;
    assert_eq!(put.body, get.body);
    assert_eq!(put.body["properties"]["provisioningState"], "Creating");
    assert!(put.body["etag"].is_string());
    assert!(put.body["properties"]["defaultSecurityRules"].is_array());
    // An update of a resource still being created answers its new model too.
    let mut body = body;
    body["tags"]["a"] = json!("2");
    let put = h.arm(Method::PUT, &nsg, NET, Some(&body)).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let get = h.arm(Method::GET, &nsg, NET, None).await;
    assert_eq!(put.body, get.body);
    assert_eq!(get.body["tags"]["a"], "2");
    h.server.shutdown().await;
}
