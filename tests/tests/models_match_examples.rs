//! flotilla's request bodies, as the steps build them, against the official
//! Azure REST API examples (copied into `tests/fixtures/`).

use flotilla_azure::ResourceId;
use flotilla_core::saga::{Saga, StepName};
use flotilla_core::spec::ClusterSpec;
use flotilla_core::steps::{plan, Env, Op};
use serde_json::Value;

/// Keys flotilla sends that the example does not show, by path (array indices
/// written `[]`). Each is a documented field of the official API spec.
const NOT_IN_EXAMPLES: &[&str] = &[
    // All resources: `tags` of the tracked resource (Resource.tags).
    "tags",
    // All resources: availability `zones` and managed `identity` (VMSS.zones, VMSS.identity).
    "zones",
    "identity",
    // NetworkSecurityGroup.properties (NetworkSecurityGroupPropertiesFormat.securityRules);
    // the example creates an empty group.
    "properties",
    // LoadBalancer.sku (LoadBalancerSku): Standard SKU.
    "sku",
    // FrontendIPConfigurationPropertiesFormat.publicIPAddress (the example uses `subnet`).
    "properties.frontendIPConfigurations[].properties.publicIPAddress",
    // ProbePropertiesFormat.requestPath is optional; flotilla probes TCP (none extra).
    // VirtualMachineScaleSetOSProfile.linuxConfiguration (LinuxConfiguration).
    "properties.virtualMachineProfile.osProfile.linuxConfiguration",
    // VirtualMachineScaleSetOSProfile.customData (base64 cloud-init).
    "properties.virtualMachineProfile.osProfile.customData",
    // VirtualMachineScaleSetVMProfile.extensionProfile (VirtualMachineScaleSetExtensionProfile).
    "properties.virtualMachineProfile.extensionProfile",
    // VirtualMachineScaleSetOSDisk.diskSizeGB.
    "properties.virtualMachineProfile.storageProfile.osDisk.diskSizeGB",
    // VirtualMachineScaleSetIPConfigurationProperties.loadBalancerBackendAddressPools.
    "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations[].properties.ipConfigurations[].properties.loadBalancerBackendAddressPools",
    // VirtualMachineScaleSetVMProfile.securityProfile / diagnosticsProfile / priority.
    "properties.virtualMachineProfile.securityProfile",
    "properties.virtualMachineProfile.diagnosticsProfile",
    // VirtualMachineScaleSetProperties.singlePlacementGroup / platformFaultDomainCount.
    "properties.singlePlacementGroup",
    "properties.platformFaultDomainCount",
];

fn example(file: &str) -> Value {
    let path = format!("{}/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_json::from_str(&text).expect("example is JSON");
    doc["parameters"]["parameters"].clone()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Walks `ours`; wherever `theirs` has an object at the same parent path, every
/// key of ours must be in it with the same JSON type. Returns offending paths.
fn compare(ours: &Value, theirs: Option<&Value>, path: &str, pattern: &str, out: &mut Vec<String>) {
    match ours {
        Value::Object(map) => {
            let Some(Value::Object(ex)) = theirs else {
                return;
            };
            for (k, v) in map {
                let p = join(path, k);
                let pat = join(pattern, k);
                match ex.get(k) {
                    None if NOT_IN_EXAMPLES.contains(&pat.as_str()) => {}
                    None => out.push(format!("{p}: not in the example")),
                    Some(e) if kind(e) != kind(v) => out.push(format!(
                        "{p}: flotilla sends {}, the example has {}",
                        kind(v),
                        kind(e)
                    )),
                    Some(e) => compare(v, Some(e), &p, &pat, out),
                }
            }
        }
        Value::Array(items) => {
            let Some(Value::Array(ex)) = theirs else {
                return;
            };
            for (i, v) in items.iter().enumerate() {
                let e = ex.get(i).or_else(|| ex.last());
                compare(v, e, &format!("{path}[{i}]"), &format!("{pattern}[]"), out);
            }
        }
        _ => {}
    }
}

fn check(name: &str, ours: &Value, file: &str) {
    let mut bad = Vec::new();
    compare(ours, Some(&example(file)), "", "", &mut bad);
    assert!(
        bad.is_empty(),
        "{name} differs from {file}:\n{}",
        bad.join("\n")
    );
}

fn saga_and_env() -> (Saga, Env) {
    let spec = ClusterSpec::example();
    let id = flotilla_core::names::new_job_id(&spec);
    let saga = Saga::new(id, spec, time::OffsetDateTime::now_utc());
    let sub = "00000000-0000-0000-0000-000000000000";
    let env = Env {
        subscription_id: sub.into(),
        staging_account_id: ResourceId::new(
            sub,
            "flotilla-env",
            "Microsoft.Storage",
            "storageAccounts",
            "flotillastage",
        ),
        staging_url: "https://flotillastage.blob.core.windows.net/staging/".into(),
        keyvault_url: "https://flotilla-kv.vault.azure.net".into(),
        keyvault_id: ResourceId::new(
            sub,
            "flotilla-env",
            "Microsoft.KeyVault",
            "vaults",
            "flotilla-kv",
        ),
        sp_client_id: None,
        tenant_id: None,
        sp_object_id: None,
        scaler_role: flotilla_core::steps::rbac::VIRTUAL_MACHINE_CONTRIBUTOR.into(),
    };
    (saga, env)
}

fn arm_body(ops: &[Op], kind: &str) -> Value {
    ops.iter()
        .find_map(|op| match op {
            Op::Arm { id, body, .. } if id.resource_type().ends_with(kind) => Some(body.clone()),
            Op::ScaleSet { id, body } if id.resource_type().ends_with(kind) => Some(body.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {kind} in the plan"))
}

#[test]
fn network_security_group_matches_the_example() {
    let (saga, env) = saga_and_env();
    let ops = plan(StepName::Prereqs, &saga, &env);
    let nsg = arm_body(&ops, "/networkSecurityGroups");
    check("NSG", &nsg, "NetworkSecurityGroupCreate.2024-05-01.json");
}

#[test]
fn load_balancer_matches_the_example() {
    let (saga, env) = saga_and_env();
    let ops = plan(StepName::Prereqs, &saga, &env);
    let lb = arm_body(&ops, "/loadBalancers");
    check("load balancer", &lb, "LoadBalancerCreate.2024-07-01.json");
}

#[test]
fn scale_set_matches_the_example() {
    let (saga, env) = saga_and_env();
    let ops = plan(StepName::Master, &saga, &env);
    let vmss = arm_body(&ops, "/virtualMachineScaleSets");
    check(
        "master scale set",
        &vmss,
        "VirtualMachineScaleSet_Create_WithPasswordAuthentication.2024-11-01.json",
    );
}

#[test]
fn the_comparison_catches_a_wrong_type_and_an_unknown_key() {
    let ex = serde_json::json!({"properties": {"port": 80}});
    let mut bad = Vec::new();
    let ours = serde_json::json!({"properties": {"port": "80", "bogus": 1}});
    compare(&ours, Some(&ex), "", "", &mut bad);
    assert_eq!(bad.len(), 2, "{bad:?}");
}
