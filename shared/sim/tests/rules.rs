//! Every validation rule of the simulator: each test sends a request Azure refuses and
//! checks the status and the ARM error code (docs/simulator.md lists the rules and where
//! each comes from).

mod common;

use common::*;
use flotilla_sim::{Permissions, SimConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// A valid OpenSSH ed25519 public key line (the key material is a fixed test value).
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEZsb3RpbGxhRGVtb0tleU9ubHlGb3JUaGVTaW11bGF0 test@sim";

fn assert_code(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{code}: {}", r.text);
    assert_eq!(r.code(), code, "{}", r.text);
    assert_eq!(r.header("x-ms-error-code").as_deref(), Some(code));
}

fn vnet_body(space: &str, subnets: &[(&str, &str)]) -> Value {
    let subnets: Vec<Value> = subnets
        .iter()
        .map(|(n, p)| json!({"name": n, "properties": {"addressPrefix": p}}))
        .collect();
    json!({"location": "westeurope", "properties": {
        "addressSpace": {"addressPrefixes": [space]}, "subnets": subnets}})
}

fn nsg_rule(priority: Value, port: &str) -> Value {
    json!({"name": "r1", "properties": {
        "protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": priority,
        "sourcePortRange": "*", "destinationPortRange": port,
        "sourceAddressPrefix": "*", "destinationAddressPrefix": "*"}})
}

/// A scale set body on `subnet` with the given size, capacity and OS profile tweaks.
fn vmss(subnet: &str, size: &str, capacity: u64) -> Value {
    json!({"location": "westeurope", "sku": {"name": size, "tier": "Standard", "capacity": capacity},
        "properties": {"upgradePolicy": {"mode": "Manual"}, "virtualMachineProfile": {
            "osProfile": {"computerNamePrefix": "w", "adminUsername": "azureuser",
                "linuxConfiguration": {"disablePasswordAuthentication": true, "ssh": {"publicKeys": [
                    {"path": "/home/azureuser/.ssh/authorized_keys", "keyData": SSH_KEY}]}}},
            "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
                "osDisk": {"createOption": "FromImage", "diskSizeGB": 64, "managedDisk": {"storageAccountType": "Premium_LRS"}}},
            "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {"primary": true,
                "ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet}}}]}}]}}}})
}

async fn harness_with(cfg: SimConfig) -> Harness {
    let h = start(cfg).await;
    h.put_rg("rg").await;
    h
}

#[tokio::test]
async fn arm_wide_rules() {
    let h = harness_with(config(0)).await;
    let nsg = h.id("rg", "Microsoft.Network/networkSecurityGroups", "n");
    let url = format!("{}{nsg}?api-version={NET}", h.base());

    // 415: a body that is not JSON by its media type.
    let r = h
        .client
        .put(&url)
        .bearer_auth(&h.arm_token)
        .header("content-type", "text/plain")
        .body(r#"{"location":"westeurope"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.headers()["x-ms-error-code"], "UnsupportedMediaType");
    // 413: larger than ARM's 4 MB.
    let big = json!({"location": "westeurope", "tags": {"a": "x".repeat(5 * 1024 * 1024)}});
    let r = h.arm(Method::PUT, &nsg, NET, Some(&big)).await;
    assert_code(&r, StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge");
    // JSON errors.
    let r = h
        .client
        .put(&url)
        .bearer_auth(&h.arm_token)
        .header("content-type", "application/json")
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["x-ms-error-code"], "InvalidRequestContent");

    // Tags: count, name length and characters, value length.
    let many: BTreeMap<String, String> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
    for (tags, code) in [
        (json!(many), "InvalidTags"),
        (json!({"x".repeat(513): "v"}), "InvalidTagName"),
        (json!({"": "v"}), "InvalidTagName"),
        (json!({"a/b": "v"}), "InvalidTagNameCharacters"),
        (json!({"k": "v".repeat(257)}), "InvalidTagValueLength"),
    ] {
        let r = h
            .arm(
                Method::PUT,
                &nsg,
                NET,
                Some(&json!({"location": "westeurope", "tags": tags})),
            )
            .await;
        assert_code(&r, StatusCode::BAD_REQUEST, code);
    }
    // 50 tags of the longest lengths are fine.
    let ok: BTreeMap<String, String> = (0..50)
        .map(|i| (format!("{i:0>512}"), "v".repeat(256)))
        .collect();
    let r = h
        .arm(
            Method::PUT,
            &nsg,
            NET,
            Some(&json!({"location": "westeurope", "tags": ok})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // Locations: required, known, immutable.
    let other = h.id("rg", "Microsoft.Network/networkSecurityGroups", "n2");
    let r = h.arm(Method::PUT, &other, NET, Some(&json!({}))).await;
    assert_code(&r, StatusCode::BAD_REQUEST, "LocationRequired");
    let r = h
        .arm(
            Method::PUT,
            &other,
            NET,
            Some(&json!({"location": "atlantis"})),
        )
        .await;
    assert_code(
        &r,
        StatusCode::BAD_REQUEST,
        "LocationNotAvailableForResourceType",
    );
    let r = h
        .arm(
            Method::PUT,
            &nsg,
            NET,
            Some(&json!({"location": "northeurope"})),
        )
        .await;
    assert_code(&r, StatusCode::CONFLICT, "InvalidResourceLocation");
    // "West Europe" is the same region.
    let r = h
        .arm(
            Method::PUT,
            &nsg,
            NET,
            Some(&json!({"location": "West Europe"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let r = h
        .arm(
            Method::PUT,
            &h.rg_path("far"),
            RES,
            Some(&json!({"location": "atlantis"})),
        )
        .await;
    assert_code(
        &r,
        StatusCode::BAD_REQUEST,
        "LocationNotAvailableForResourceGroup",
    );
    let r = h
        .arm(
            Method::PUT,
            &h.rg_path("rg"),
            RES,
            Some(&json!({"location": "eastus"})),
        )
        .await;
    assert_code(&r, StatusCode::CONFLICT, "InvalidResourceGroupLocation");

    // Ids: fully qualified.
    let r = h.arm(Method::PUT, &h.id("rg", "Microsoft.Network/virtualNetworks", "v1"), NET, Some(&json!({
        "location": "westeurope", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
        "subnets": [{"name": "s", "properties": {"addressPrefix": "10.0.0.0/24", "networkSecurityGroup": {"id": "n"}}}]}}))).await;
    assert_code(&r, StatusCode::BAD_REQUEST, "LinkedInvalidPropertyId");
    h.server.shutdown().await;
}

#[tokio::test]
async fn api_versions() {
    let h = harness_with(config(0)).await;
    let nsg = h.id("rg", "Microsoft.Network/networkSecurityGroups", "n");
    // Every stable version up to the newest is accepted, old and new.
    // The current Azure SDK for Python's default (azure-mgmt-network 33.1.0) among them.
    for v in [
        "2015-06-15",
        "2020-11-01",
        "2024-10-01",
        "2025-05-01",
        "2026-03-01",
    ] {
        let r = h.arm(Method::GET, &nsg, v, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{v}: {}", r.text);
    }
    for v in ["2024-05-01-preview", "2099-01-01", "latest"] {
        let r = h.arm(Method::GET, &nsg, v, None).await;
        assert_code(&r, StatusCode::BAD_REQUEST, "NoRegisteredProviderFound");
        assert!(
            r.text
                .contains("The supported api-versions are '2026-03-01, 2026-01-01"),
            "{}",
            r.text
        );
    }
    let r = h
        .arm(Method::GET, &h.rg_path("rg"), "2021-04-01-preview", None)
        .await;
    assert_code(&r, StatusCode::BAD_REQUEST, "InvalidApiVersionParameter");
    assert!(
        r.text.contains("The supported versions are '2025-04-01,"),
        "{}",
        r.text
    );
    let vmss = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "x");
    assert_eq!(
        h.arm(Method::GET, &vmss, "2026-04-01", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_code(
        &h.arm(Method::GET, &vmss, "2024-11-01-preview", None).await,
        StatusCode::BAD_REQUEST,
        "NoRegisteredProviderFound",
    );
    let sa = h.id("rg", "Microsoft.Storage/storageAccounts", "x");
    assert_eq!(
        h.arm(Method::GET, &sa, "2026-09-01", None).await.status,
        StatusCode::NOT_FOUND
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn network_rules() {
    let h = harness_with(config(0)).await;
    let vnet = h.id("rg", "Microsoft.Network/virtualNetworks", "v1");
    for (body, code) in [
        (vnet_body("10.0.0.0/33", &[]), "InvalidCIDRNotation"),
        (vnet_body("10.0.0.1/16", &[]), "InvalidCIDRNotation"),
        (
            vnet_body("10.0.0.0/16", &[("a", "10.0.1.0/24x")]),
            "InvalidCIDRNotation",
        ),
        (
            vnet_body("10.0.0.0/16", &[("a", "10.1.0.0/24")]),
            "NetcfgSubnetRangeOutsideVnet",
        ),
        (
            vnet_body(
                "10.0.0.0/16",
                &[("a", "10.0.0.0/24"), ("b", "10.0.0.128/25")],
            ),
            "NetcfgSubnetRangesOverlap",
        ),
        (
            json!({"location": "westeurope", "properties": {}}),
            "InvalidRequestFormat",
        ),
    ] {
        let r = h.arm(Method::PUT, &vnet, NET, Some(&body)).await;
        assert_code(&r, StatusCode::BAD_REQUEST, code);
    }
    let r = h
        .arm(
            Method::PUT,
            &vnet,
            NET,
            Some(&vnet_body("10.0.0.1/16", &[])),
        )
        .await;
    assert!(r.text.contains("should be 10.0.0.0/16"), "{}", r.text);

    // NSG rules.
    let nsg = h.id("rg", "Microsoft.Network/networkSecurityGroups", "n");
    for (rule, code) in [
        (nsg_rule(json!(99), "22"), "SecurityRuleInvalidPriority"),
        (nsg_rule(json!(4097), "22"), "SecurityRuleInvalidPriority"),
        (nsg_rule(json!(null), "22"), "SecurityRuleInvalidPriority"),
        (
            nsg_rule(json!(100), "80,81"),
            "SecurityRuleInvalidPortRange",
        ),
        (
            nsg_rule(json!(100), "70000"),
            "SecurityRuleInvalidPortRange",
        ),
        (
            nsg_rule(json!(100), "90-80"),
            "SecurityRuleInvalidPortRange",
        ),
        (
            {
                let mut r = nsg_rule(json!(100), "22");
                r["properties"]["protocol"] = json!("Http");
                r
            },
            "SecurityRuleParameterContainsUnsupportedValue",
        ),
        (
            {
                let mut r = nsg_rule(json!(100), "22");
                r["properties"].as_object_mut().unwrap().remove("access");
                r
            },
            "SecurityRuleParameterContainsUnsupportedValue",
        ),
        (
            {
                let mut r = nsg_rule(json!(100), "22");
                r["properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("sourceAddressPrefix");
                r
            },
            "SecurityRuleInvalidAddressPrefix",
        ),
    ] {
        let r = h
            .arm(
                Method::PUT,
                &nsg,
                NET,
                Some(&json!({"location": "westeurope", "properties": {"securityRules": [rule]}})),
            )
            .await;
        assert_code(&r, StatusCode::BAD_REQUEST, code);
    }

    // Public IPs.
    let pip = h.id("rg", "Microsoft.Network/publicIPAddresses", "p");
    for (body, code) in [
        (
            json!({"location": "westeurope", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Dynamic"}}),
            "StandardSkuPublicIPAddressesMustBeStatic",
        ),
        (
            json!({"location": "westeurope", "sku": {"name": "Basic"}, "zones": ["1"]}),
            "ZonesNotAllowedInBasicSkuResource",
        ),
        (
            json!({"location": "westus", "sku": {"name": "Standard"}, "zones": ["1"]}),
            "InvalidAvailabilityZone",
        ),
        (
            json!({"location": "westeurope", "sku": {"name": "Standard"}, "zones": ["4"]}),
            "InvalidAvailabilityZone",
        ),
        (
            json!({"location": "westeurope", "sku": {"name": "Premium"}}),
            "InvalidRequestFormat",
        ),
    ] {
        let r = h.arm(Method::PUT, &pip, NET, Some(&body)).await;
        assert_code(&r, StatusCode::BAD_REQUEST, code);
    }

    // Load balancer SKU must match its public IP's; references inside the body resolve.
    let basic = h.id("rg", "Microsoft.Network/publicIPAddresses", "basic");
    h.put_and_wait(
        &basic,
        NET,
        &json!({"location": "westeurope", "sku": {"name": "Basic"}}),
    )
    .await;
    let lb = h.id("rg", "Microsoft.Network/loadBalancers", "lb");
    let r = h.arm(Method::PUT, &lb, NET, Some(&json!({"location": "westeurope", "sku": {"name": "Standard"},
        "properties": {"frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {"id": basic}}}]}}))).await;
    assert_code(&r, StatusCode::BAD_REQUEST, "PublicIPAndLBSkuDoNotMatch");
    let r = h.arm(Method::PUT, &lb, NET, Some(&json!({"location": "westeurope", "sku": {"name": "Basic"},
        "properties": {"frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {"id": basic}}}],
            "loadBalancingRules": [{"name": "r", "properties": {"frontendIPConfiguration": {"id": format!("{lb}/frontendIPConfigurations/nope")},
                "protocol": "Tcp", "frontendPort": 80, "backendPort": 80}}]}}))).await;
    assert_code(&r, StatusCode::BAD_REQUEST, "InvalidResourceReference");
    let r = h
        .arm(
            Method::PUT,
            &lb,
            NET,
            Some(&json!({"location": "westeurope", "sku": {"name": "Premium"}})),
        )
        .await;
    assert_code(&r, StatusCode::BAD_REQUEST, "InvalidRequestFormat");
    // A reference of the wrong type.
    let r = h.arm(Method::PUT, &lb, NET, Some(&json!({"location": "westeurope", "sku": {"name": "Basic"},
        "properties": {"frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {"id": vnet}}}]}}))).await;
    assert_code(&r, StatusCode::BAD_REQUEST, "InvalidResourceReference");
    // A referenced resource in another region.
    let far = h.id("rg", "Microsoft.Network/publicIPAddresses", "far");
    h.put_and_wait(
        &far,
        NET,
        &json!({"location": "eastus", "sku": {"name": "Basic"}}),
    )
    .await;
    let r = h.arm(Method::PUT, &lb, NET, Some(&json!({"location": "westeurope", "sku": {"name": "Basic"},
        "properties": {"frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {"id": far}}}]}}))).await;
    assert_code(&r, StatusCode::BAD_REQUEST, "InvalidResourceReference");
    h.server.shutdown().await;
}

/// A VNet with a subnet, returning the subnet id.
async fn subnet(h: &Harness) -> String {
    let vnet = h.id("rg", "Microsoft.Network/virtualNetworks", "v1");
    h.put_and_wait(
        &vnet,
        NET,
        &vnet_body("10.0.0.0/16", &[("s", "10.0.0.0/24")]),
    )
    .await;
    format!("{vnet}/subnets/s")
}

#[tokio::test]
async fn compute_rules() {
    let mut cfg = config(0);
    cfg.quotas.insert("standardDSv5Family".into(), 20);
    let h = harness_with(cfg).await;
    let subnet = subnet(&h).await;
    let id = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "w");
    let ok = vmss(&subnet, "Standard_D2s_v5", 2);
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut b = ok.clone();
        f(&mut b);
        b
    };
    let os = "/properties/virtualMachineProfile/osProfile";
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            vmss(&subnet, "Standard_Nope_v9", 1),
            StatusCode::CONFLICT,
            "SkuNotAvailable",
        ),
        (
            edit(&|b| {
                b["location"] = json!("westus");
                b["sku"]["name"] = json!("Standard_NC6s_v3");
            }),
            StatusCode::CONFLICT,
            "SkuNotAvailable",
        ),
        (
            edit(&|b| {
                b["sku"]["name"] = json!("Standard_M8ms");
                b["zones"] = json!(["3"]);
            }),
            StatusCode::CONFLICT,
            "SkuNotAvailable",
        ),
        (
            edit(&|b| {
                b["zones"] = json!(["5"]);
            }),
            StatusCode::BAD_REQUEST,
            "InvalidAvailabilityZone",
        ),
        (
            edit(&|b| {
                b["sku"]["capacity"] = json!(1001);
                b["properties"]["singlePlacementGroup"] = json!(false);
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b["sku"]["capacity"] = json!(101);
                b["properties"]["singlePlacementGroup"] = json!(true);
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b["sku"]["capacity"] = json!(11);
            }),
            StatusCode::CONFLICT,
            "OperationNotAllowed",
        ),
        (
            edit(&|b| {
                b.pointer_mut(os).unwrap()["adminUsername"] = json!("admin");
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b.pointer_mut(os).unwrap()["adminUsername"] = json!("x".repeat(65));
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b.pointer_mut(os).unwrap()["adminPassword"] = json!("password");
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b.pointer_mut(os).unwrap()["adminPassword"] = json!("P@ssw0rd");
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b.pointer_mut(&format!("{os}/linuxConfiguration/ssh/publicKeys/0"))
                    .unwrap()["keyData"] = json!(
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFlotillaDemoKeyOnlyForTheSimulator x"
                );
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b.pointer_mut(&format!("{os}/linuxConfiguration/ssh/publicKeys/0"))
                    .unwrap()["keyData"] = json!("not a key");
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b.pointer_mut(&format!("{os}/linuxConfiguration/ssh/publicKeys/0"))
                    .unwrap()["path"] = json!("/root/.ssh/authorized_keys");
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b.pointer_mut(&format!("{os}/linuxConfiguration/ssh"))
                    .unwrap()["publicKeys"] = json!([]);
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b.pointer_mut("/properties/virtualMachineProfile/storageProfile/osDisk")
                    .unwrap()["diskSizeGB"] = json!(10);
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b.pointer_mut("/properties/virtualMachineProfile/storageProfile/osDisk")
                    .unwrap()["diskSizeGB"] = json!(5000);
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b.pointer_mut(
                    "/properties/virtualMachineProfile/storageProfile/osDisk/managedDisk",
                )
                .unwrap()["storageAccountType"] = json!("Fast_LRS");
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b["sku"]["name"] = json!("Standard_D2_v5");
            }),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            edit(&|b| {
                b["location"] = json!("northeurope");
            }),
            StatusCode::BAD_REQUEST,
            "InvalidResourceReference",
        ),
    ];
    for (body, status, code) in cases {
        let r = h.arm(Method::PUT, &id, COMPUTE, Some(&body)).await;
        assert_code(&r, status, code);
    }
    // A password that meets the rules, and an RSA key of 2048 bits, are accepted.
    let good = edit(&|b| {
        b.pointer_mut(os).unwrap()["adminPassword"] = json!("Corr3ct-Horse");
    });
    h.put_and_wait(&id, COMPUTE, &good).await;
    // Quota counts what exists: 2 × 2 cores used, 20 allowed; 9 more instances would exceed.
    let other = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "w2");
    let r = h
        .arm(
            Method::PUT,
            &other,
            COMPUTE,
            Some(&vmss(&subnet, "Standard_D2s_v5", 9)),
        )
        .await;
    assert_code(&r, StatusCode::CONFLICT, "OperationNotAllowed");
    assert!(
        r.text.contains("standardDSv5Family") && r.text.contains("Current Usage: 4"),
        "{}",
        r.text
    );
    h.put_and_wait(&other, COMPUTE, &vmss(&subnet, "Standard_D2s_v5", 8))
        .await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn storage_rules_and_semantics() {
    let h = harness_with(config(100)).await;
    let sa = h.id("rg", "Microsoft.Storage/storageAccounts", "stoacct1");
    for (body, code) in [
        (
            json!({"location": "westeurope", "kind": "StorageV2"}),
            "InvalidValuesForRequestParameters",
        ),
        (
            json!({"location": "westeurope", "sku": {"name": "Standard_LRS"}}),
            "InvalidValuesForRequestParameters",
        ),
        (
            json!({"location": "westeurope", "sku": {"name": "Turbo_LRS"}, "kind": "StorageV2"}),
            "InvalidValuesForRequestParameters",
        ),
        (
            json!({"location": "westeurope", "sku": {"name": "Standard_LRS"}, "kind": "Disk"}),
            "InvalidValuesForRequestParameters",
        ),
        (
            json!({"sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}),
            "LocationRequired",
        ),
    ] {
        let r = h.arm(Method::PUT, &sa, STORAGE, Some(&body)).await;
        assert_code(&r, StatusCode::BAD_REQUEST, code);
    }
    let r = h
        .arm(
            Method::PUT,
            &sa,
            STORAGE,
            Some(&json!({"location": "westeurope", "kind": "StorageV2"})),
        )
        .await;
    assert!(
        r.text
            .contains("Values for request parameters are invalid: sku."),
        "{}",
        r.text
    );
    let r = h.arm(Method::PUT, &h.id("rg", "Microsoft.Storage/storageAccounts", "No-Caps"), STORAGE,
        Some(&json!({"location": "westeurope", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}))).await;
    assert_code(&r, StatusCode::BAD_REQUEST, "AccountNameInvalid");

    // Create: 202 with only a Location; polling it answers 202, then 200 with the account.
    let body =
        json!({"location": "westeurope", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"});
    let r = h.arm(Method::PUT, &sa, STORAGE, Some(&body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert!(r.header("azure-asyncoperation").is_none());
    let loc = r.header("location").expect("Location");
    let done = h.poll_location(&loc).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(done.body["properties"]["provisioningState"], "Succeeded");
    // Update (PUT or PATCH) is synchronous.
    let r = h.arm(Method::PUT, &sa, STORAGE, Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["properties"]["provisioningState"], "Succeeded");
    let r = h
        .arm(
            Method::PATCH,
            &sa,
            STORAGE,
            Some(&json!({"tags": {"a": "b"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["tags"]["a"], "b");
    assert!(r.header("location").is_none());
    // Global name uniqueness, across groups.
    h.put_rg("rg2").await;
    let r = h
        .arm(
            Method::PUT,
            &h.id("rg2", "Microsoft.Storage/storageAccounts", "stoacct1"),
            STORAGE,
            Some(&body),
        )
        .await;
    assert_code(&r, StatusCode::CONFLICT, "StorageAccountAlreadyTaken");
    // Delete is synchronous: 200, then 204.
    let r = h.arm(Method::DELETE, &sa, STORAGE, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.arm(Method::DELETE, &sa, STORAGE, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    h.server.shutdown().await;
}

#[tokio::test]
async fn child_resources_as_endpoints() {
    let h = harness_with(config(50)).await;
    let vnet = h.id("rg", "Microsoft.Network/virtualNetworks", "v1");
    h.put_and_wait(
        &vnet,
        NET,
        &vnet_body("10.0.0.0/16", &[("a", "10.0.0.0/24")]),
    )
    .await;
    // PUT a subnet: 201 with the parent's operation.
    let sub = format!("{vnet}/subnets/b");
    let r = h
        .arm(
            Method::PUT,
            &sub,
            NET,
            Some(&json!({"properties": {"addressPrefix": "10.0.1.0/24"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
    assert_eq!(r.body["id"], json!(sub));
    let st = h
        .poll_async(&r.header("azure-asyncoperation").unwrap())
        .await;
    assert_eq!(st["status"], "Succeeded");
    let g = h.arm(Method::GET, &sub, NET, None).await;
    assert_eq!(g.body["properties"]["provisioningState"], "Succeeded");
    let list = h
        .arm(Method::GET, &format!("{vnet}/subnets"), NET, None)
        .await;
    assert_eq!(list.body["value"].as_array().unwrap().len(), 2);
    // Its rules hold for the child too.
    let r = h
        .arm(
            Method::PUT,
            &format!("{vnet}/subnets/c"),
            NET,
            Some(&json!({"properties": {"addressPrefix": "10.0.1.0/25"}})),
        )
        .await;
    assert_code(&r, StatusCode::BAD_REQUEST, "NetcfgSubnetRangesOverlap");
    let r = h
        .arm(
            Method::PUT,
            &format!("{vnet}/subnets/c"),
            NET,
            Some(&json!({"properties": {"addressPrefix": "10.9.0.0/24"}})),
        )
        .await;
    assert_code(&r, StatusCode::BAD_REQUEST, "NetcfgSubnetRangeOutsideVnet");
    // A subnet in use cannot go; an unused one can.
    let pip = h.id("rg", "Microsoft.Network/loadBalancers", "ilb");
    h.put_and_wait(
        &pip,
        NET,
        &json!({"location": "westeurope", "sku": {"name": "Standard"}, "properties": {
        "frontendIPConfigurations": [{"name": "fe", "properties": {"subnet": {"id": sub}}}]}}),
    )
    .await;
    let r = h.arm(Method::DELETE, &sub, NET, None).await;
    assert_code(&r, StatusCode::BAD_REQUEST, "InUseSubnetCannotBeDeleted");
    let a = format!("{vnet}/subnets/a");
    let r = h.arm(Method::DELETE, &a, NET, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let done = h.poll_location(&r.header("location").unwrap()).await;
    assert!(done.status.is_success());
    assert_eq!(
        h.arm(Method::GET, &a, NET, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.arm(Method::DELETE, &a, NET, None).await.status,
        StatusCode::NO_CONTENT
    );

    // Security rules.
    let nsg = h.id("rg", "Microsoft.Network/networkSecurityGroups", "n");
    h.put_and_wait(&nsg, NET, &json!({"location": "westeurope"}))
        .await;
    let rule = format!("{nsg}/securityRules/ssh");
    let r = h
        .arm(
            Method::PUT,
            &rule,
            NET,
            Some(&json!({"properties": nsg_rule(json!(100), "22")["properties"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    h.poll_async(&r.header("azure-asyncoperation").unwrap())
        .await;
    let g = h.arm(Method::GET, &nsg, NET, None).await;
    assert_eq!(g.body["properties"]["securityRules"][0]["name"], "ssh");
    let r = h
        .arm(
            Method::PUT,
            &rule,
            NET,
            Some(&json!({"properties": nsg_rule(json!(5000), "22")["properties"]})),
        )
        .await;
    assert_code(&r, StatusCode::BAD_REQUEST, "SecurityRuleInvalidPriority");
    let r = h.arm(Method::DELETE, &rule, NET, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    h.poll_location(&r.header("location").unwrap()).await;
    assert_eq!(
        h.arm(Method::GET, &rule, NET, None).await.status,
        StatusCode::NOT_FOUND
    );
    // Default rules are read-only.
    let d = format!("{nsg}/defaultSecurityRules/DenyAllInBound");
    assert_eq!(
        h.arm(Method::GET, &d, NET, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.arm(Method::PUT, &d, NET, Some(&json!({}))).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn scale_set_vms_skus_usages_and_permissions() {
    let mut cfg = config(0);
    cfg.quotas.insert("standardDSv5Family".into(), 20);
    cfg.permissions = Permissions {
        actions: vec![
            "Microsoft.Network/*".into(),
            "Microsoft.Compute/*/read".into(),
        ],
        not_actions: vec!["Microsoft.Network/*/delete".into()],
    };
    let h = harness_with(cfg).await;
    let subnet = subnet(&h).await;
    let id = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "w");
    let mut body = vmss(&subnet, "Standard_D2s_v5", 3);
    body["zones"] = json!(["1", "2"]);
    h.put_and_wait(&id, COMPUTE, &body).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    // The scale set's VMs and one VM's instance view.
    let vms = h
        .arm(Method::GET, &format!("{id}/virtualMachines"), COMPUTE, None)
        .await;
    assert_eq!(vms.status, StatusCode::OK, "{}", vms.text);
    let list = vms.body["value"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[1]["instanceId"], "1");
    assert_eq!(list[1]["zones"], json!(["2"]));
    let vm = h
        .arm(
            Method::GET,
            &format!("{id}/virtualMachines/2"),
            COMPUTE,
            None,
        )
        .await;
    assert_eq!(vm.body["id"], json!(format!("{id}/virtualMachines/2")));
    let view = h
        .arm(
            Method::GET,
            &format!("{id}/virtualMachines/0/instanceView"),
            COMPUTE,
            None,
        )
        .await;
    assert_eq!(view.status, StatusCode::OK, "{}", view.text);
    assert_eq!(
        view.body["statuses"][0]["code"],
        "ProvisioningState/succeeded"
    );
    let none = h
        .arm(
            Method::GET,
            &format!("{id}/virtualMachines/7/instanceView"),
            COMPUTE,
            None,
        )
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);

    // SKUs: the official example's shape, with region and zone restrictions.
    let ex = fixture("conformance/compute/ListAvailableResourceSkusForARegion.json");
    let skus = h.arm(Method::GET, &format!("/subscriptions/{}/providers/Microsoft.Compute/skus?$filter=location eq 'westeurope'", h.sub()), "2021-07-01", None).await;
    assert_eq!(skus.status, StatusCode::OK, "{}", skus.text);
    let template = &ex["responses"]["200"]["body"]["value"][0];
    let first = &skus.body["value"][0];
    for k in [
        "resourceType",
        "locations",
        "capabilities",
        "locationInfo",
        "name",
        "tier",
        "size",
        "family",
    ] {
        assert!(first.get(k).is_some() && template.get(k).is_some(), "{k}");
    }
    let all = skus.body["value"].as_array().unwrap();
    assert!(all.iter().all(|s| s["locations"] == json!(["westeurope"])));
    let m8 = all.iter().find(|s| s["name"] == "Standard_M8ms").unwrap();
    assert_eq!(m8["locationInfo"][0]["zones"], json!(["1", "2"]));
    assert_eq!(m8["restrictions"][0]["type"], "Zone");
    let west = h
        .arm(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Compute/skus?$filter=location eq 'westus'",
                h.sub()
            ),
            "2021-07-01",
            None,
        )
        .await;
    let nc = west.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Standard_NC6s_v3")
        .unwrap();
    assert_eq!(nc["restrictions"][0]["type"], "Location");

    // Usages against the configured quota.
    let ex = fixture("conformance/compute/Usage_List_MaximumSet_Gen.json");
    let u = h
        .arm(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Compute/locations/westeurope/usages",
                h.sub()
            ),
            COMPUTE,
            None,
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.text);
    assert_superset(
        &json!({"value": [ex["responses"]["200"]["body"]["value"][0]]}),
        &u.body,
        "usages",
    );
    let fam = u.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"]["value"] == "standardDSv5Family")
        .unwrap();
    assert_eq!(fam["currentValue"], 6);
    assert_eq!(fam["limit"], 20);
    let bad = h
        .arm(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Compute/locations/atlantis/usages",
                h.sub()
            ),
            COMPUTE,
            None,
        )
        .await;
    assert_code(
        &bad,
        StatusCode::BAD_REQUEST,
        "LocationNotAvailableForResourceType",
    );

    // Permissions on the resource group.
    let ex = fixture("conformance/authorization/GetPermissions.json");
    let p = h
        .arm(
            Method::GET,
            &format!(
                "{}/providers/Microsoft.Authorization/permissions",
                h.rg_path("rg")
            ),
            "2022-04-01",
            None,
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_superset(
        &ex["responses"]["200"]["body"]["value"][0],
        &p.body["value"][0],
        "permissions",
    );
    assert_eq!(
        p.body["value"][0]["actions"],
        json!(["Microsoft.Network/*", "Microsoft.Compute/*/read"])
    );
    assert_eq!(
        p.body["value"][0]["notActions"],
        json!(["Microsoft.Network/*/delete"])
    );
    let missing = h
        .arm(
            Method::GET,
            &format!(
                "{}/providers/Microsoft.Authorization/permissions",
                h.rg_path("nope")
            ),
            "2022-04-01",
            None,
        )
        .await;
    assert_code(&missing, StatusCode::NOT_FOUND, "ResourceGroupNotFound");
    h.server.shutdown().await;
}

#[tokio::test]
async fn role_assignments_refuse_bad_names_unknown_roles_and_missing_principals() {
    let h = start_lro(0).await;
    h.put_rg("rbac").await;
    let sub = h.sub().to_string();
    let scope = h.rg_path("rbac");
    let role = |guid: &str| {
        format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}")
    };
    let reader = role("acdd72a7-3385-48ef-bd42-f606fba81ae7");
    let me = h.server.info.client_id.clone();
    let put = |name: &str, role: &str, principal: &str| {
        let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
        let body = json!({"properties": {"roleDefinitionId": role, "principalId": principal, "principalType": "ServicePrincipal"}});
        let h = &h;
        async move { h.arm(Method::PUT, &path, "2022-04-01", Some(&body)).await }
    };
    let guid = "6f1c7a3e-6b0e-4c8e-9a53-1d6f7c2b9a10";
    assert_code(
        &put("not-a-guid", &reader, &me).await,
        StatusCode::BAD_REQUEST,
        "InvalidRoleAssignmentId",
    );
    assert_code(
        &put(guid, &role("00000000-1111-2222-3333-444444444444"), &me).await,
        StatusCode::BAD_REQUEST,
        "RoleDefinitionDoesNotExist",
    );
    assert_code(
        &put(guid, &reader, "99999999-8888-7777-6666-555555555555").await,
        StatusCode::BAD_REQUEST,
        "PrincipalNotFound",
    );
    let ok = put(guid, &reader, &me).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    let again = put(guid, &reader, &me).await;
    assert_eq!(again.status, StatusCode::OK, "the same name is an update");
    // The answer carries the request's properties and the scope; an update
    // keeps the assignment's creation time.
    let (first, second): (Value, Value) = (
        serde_json::from_str(&ok.text).unwrap(),
        serde_json::from_str(&again.text).unwrap(),
    );
    assert_eq!(first["properties"]["principalId"], json!(me));
    assert_eq!(first["properties"]["roleDefinitionId"], json!(reader));
    assert_eq!(first["properties"]["scope"], json!(scope));
    assert!(first["properties"]["createdOn"].is_string(), "{first}");
    assert_eq!(
        second["properties"]["createdOn"],
        first["properties"]["createdOn"]
    );
    assert_code(
        &put("0d3b2a1c-0000-4000-8000-000000000001", &reader, &me).await,
        StatusCode::CONFLICT,
        "RoleAssignmentExists",
    );

    // A custom role: refused without a name or permissions, then assignable.
    let custom = role("5b0c6a55-1f7d-4d1e-8a8e-2f0d9c1e7b33");
    let r = h
        .arm(
            Method::PUT,
            &custom,
            "2022-04-01",
            Some(&json!({"properties": {"roleName": "x"}})),
        )
        .await;
    assert_code(&r, StatusCode::BAD_REQUEST, "InvalidRoleDefinition");
    let r = h
        .arm(
            Method::PUT,
            &custom,
            "2022-04-01",
            Some(&json!({"properties": {"roleName": "scaler", "permissions": [{"actions": ["Microsoft.Compute/virtualMachineScaleSets/read"]}]}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let ok = put("7a6b5c4d-0000-4000-8000-000000000002", &custom, &me).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
}

#[tokio::test]
async fn user_assigned_identities_and_the_scale_sets_that_attach_them() {
    let h = harness_with(config(0)).await;
    const MI: &str = "2023-01-31";
    let ty = "Microsoft.ManagedIdentity/userAssignedIdentities";
    let id = h.id("rg", ty, "job-nodes");
    // Synchronous create, 201 with the computed ids; an update keeps them.
    let body = json!({"location": "westeurope", "tags": {"flotilla-job": "job"}});
    let r = h.arm(Method::PUT, &id, MI, Some(&body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.header("azure-asyncoperation").is_none() && r.header("location").is_none());
    let p = &r.body["properties"];
    for k in ["principalId", "clientId", "tenantId"] {
        assert!(
            p[k].as_str().is_some_and(|v| !v.is_empty()),
            "{k}: {}",
            r.text
        );
    }
    assert_eq!(r.body["type"], ty);
    let again = h.arm(Method::PUT, &id, MI, Some(&body)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["properties"]["principalId"], p["principalId"]);
    assert_eq!(
        h.arm(Method::GET, &id, MI, None).await.body["properties"]["clientId"],
        p["clientId"]
    );
    // Names and api-versions as the provider checks them.
    let bad = h.id("rg", ty, "-x");
    assert_code(
        &h.arm(Method::PUT, &bad, MI, Some(&body)).await,
        StatusCode::BAD_REQUEST,
        "InvalidResourceName",
    );
    let r = h.arm(Method::PUT, &id, "2099-01-01", Some(&body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // A scale set may attach it; one naming a missing identity is refused.
    let subnet = subnet(&h).await;
    let vmss_id = h.id("rg", "Microsoft.Compute/virtualMachineScaleSets", "w");
    let missing = h.id("rg", ty, "no-such-identity");
    let mut b = vmss(&subnet, "Standard_D2s_v5", 1);
    b["identity"] = json!({"type": "SystemAssigned, UserAssigned",
        "userAssignedIdentities": {missing.clone(): {}}});
    let r = h.arm(Method::PUT, &vmss_id, "2024-11-01", Some(&b)).await;
    assert_code(&r, StatusCode::BAD_REQUEST, "FailedIdentityOperation");
    assert!(r.text.contains("was not found"), "{}", r.text);
    b["identity"]["userAssignedIdentities"] = json!({id.clone(): {}});
    let got = h.put_and_wait(&vmss_id, "2024-11-01", &b).await;
    let attached = &got["identity"]["userAssignedIdentities"][&id];
    assert_eq!(attached["principalId"], p["principalId"], "{got:#}");
    assert_eq!(attached["clientId"], p["clientId"], "{got:#}");
    assert!(
        got["identity"]["principalId"].is_string(),
        "the system-assigned one too"
    );

    // A role assignment may name it; a synchronous delete, then 204.
    let ra = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{}",
        h.rg_path("rg"),
        uuid::Uuid::new_v4()
    );
    let rb = json!({"properties": {
        "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", h.sub()),
        "principalId": p["principalId"], "principalType": "ServicePrincipal"}});
    let r = h.arm(Method::PUT, &ra, "2022-04-01", Some(&rb)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        h.arm(Method::DELETE, &id, MI, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.arm(Method::DELETE, &id, MI, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.arm(Method::GET, &id, MI, None).await.status,
        StatusCode::NOT_FOUND
    );
}
