//! A cluster in an existing VNet (`network.existing`) on the in-memory
//! world: no VNet is created, the scale sets go into the named subnets,
//! NSGs are attached only when asked and put back as they were by undo and
//! delete, and nothing of the existing network is ever deleted. Pre-flight
//! and the spec name the field of what is wrong.

use flotilla_azure::{AzureError, ResourceId};
use flotilla_core::names;
use flotilla_core::ports::Arm;
use flotilla_core::saga::{JobStatus, ResourceKind, Saga};
use flotilla_core::spec::{ClusterSpec, ExistingNetwork, NetworkSpec};
use flotilla_core::testing::World;
use serde_json::{json, Value};

const LIMIT: u32 = 1_000;
const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn vnet_id() -> ResourceId {
    ResourceId::new(
        SUB,
        "corp-net",
        "Microsoft.Network",
        "virtualNetworks",
        "corp",
    )
}

fn corp_nsg() -> String {
    ResourceId::new(
        SUB,
        "corp-net",
        "Microsoft.Network",
        "networkSecurityGroups",
        "corp-nsg",
    )
    .to_string()
}

/// The corp VNet (10.1.0.0/16) with `cp` (/24, the corp NSG on it) and
/// `nodes` (/22, no NSG), in westeurope.
fn existing_network(w: &World, location: &str) {
    let vnet = vnet_id();
    let cp = json!({"name": "cp", "properties": {"addressPrefix": "10.1.0.0/24",
        "networkSecurityGroup": {"id": corp_nsg()}}});
    let nodes = json!({"name": "nodes", "properties": {"addressPrefix": "10.1.4.0/22"}});
    w.cloud.insert_body(
        &vnet.to_string(),
        json!({"location": location, "properties": {
            "addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
            "subnets": [cp, nodes]}}),
    );
    w.cloud
        .insert_body(&vnet.child("subnets", "cp").to_string(), cp);
    w.cloud
        .insert_body(&vnet.child("subnets", "nodes").to_string(), nodes);
}

fn spec(attach: bool) -> ClusterSpec {
    let mut spec = ClusterSpec::example();
    spec.network = NetworkSpec {
        vnet_cidr: String::new(),
        control_plane_subnet_cidr: String::new(),
        worker_subnet_cidr: String::new(),
        existing: Some(ExistingNetwork {
            vnet_id: vnet_id().to_string(),
            control_plane_subnet: "cp".into(),
            worker_subnet: "nodes".into(),
            attach_nsgs: attach,
        }),
    };
    spec
}

async fn nsg_of(w: &World, subnet: &str) -> Option<String> {
    let body = w
        .cloud
        .get(&vnet_id().child("subnets", subnet), None, "")
        .await
        .unwrap()
        .expect("the subnet exists");
    body.pointer("/properties/networkSecurityGroup/id")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn created_of_type(w: &World, ty: &str) -> Vec<String> {
    w.cloud
        .resources()
        .into_iter()
        .filter(|r| r.contains(&format!("/{ty}/")) && !r.contains("/corp-net/"))
        .collect()
}

fn existing_untouched(w: &World) {
    let vnet = vnet_id().to_string().to_ascii_lowercase();
    let resources: Vec<String> = w
        .cloud
        .resources()
        .into_iter()
        .map(|r| r.to_ascii_lowercase())
        .collect();
    for id in [
        vnet.clone(),
        format!("{vnet}/subnets/cp"),
        format!("{vnet}/subnets/nodes"),
    ] {
        assert!(resources.contains(&id), "{id} is gone: {resources:?}");
    }
    assert!(
        !w.cloud
            .deletes()
            .iter()
            .map(|d| d.to_ascii_lowercase())
            // flotilla's own role assignment on the subnet goes with the job.
            .any(|d| d.starts_with(&vnet) && !d.contains("/providers/microsoft.authorization/")),
        "something of the existing network was deleted: {:?}",
        w.cloud.deletes()
    );
}

async fn master_subnet(w: &World, saga: &Saga) -> String {
    let id = saga
        .resources
        .iter()
        .find(|r| r.id.ends_with(&names::master_vmss(&saga.id)))
        .map(|r| ResourceId::parse(&r.id).unwrap())
        .expect("the master scale set");
    let body = w.cloud.get(&id, None, "").await.unwrap().unwrap();
    body.pointer("/properties/virtualMachineProfile/networkProfile/networkInterfaceConfigurations/0/properties/ipConfigurations/0/properties/subnet/id")
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_cluster_in_an_existing_vnet_creates_no_network_and_deletes_none() {
    let w = World::new();
    existing_network(&w, "westeurope");
    let job = w.engine.submit(spec(false)).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    assert!(created_of_type(&w, "virtualNetworks").is_empty());
    assert!(
        created_of_type(&w, "networkSecurityGroups").is_empty(),
        "no NSG unless attachNsgs"
    );
    assert_eq!(
        master_subnet(&w, &saga).await,
        vnet_id().child("subnets", "cp").to_string()
    );
    assert_eq!(
        nsg_of(&w, "cp").await,
        Some(corp_nsg()),
        "the subnet keeps its NSG"
    );
    // Of the existing network only flotilla's own role assignment on the
    // worker subnet (the cluster identity's) is recorded, never the network.
    assert!(!saga.resources.iter().any(|r| r.id.contains("/corp-net/")
        && !r
            .id
            .contains("/providers/Microsoft.Authorization/roleAssignments/")));

    // The orphan sweep does not count the existing network.
    let report = w
        .engine
        .find_orphans(&flotilla_core::engine::OrphanOptions {
            resource_groups: vec!["corp-net".into(), ClusterSpec::example().resource_group],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!format!("{report:?}").contains("/corp-net/"), "{report:#?}");

    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    existing_untouched(&w);
    assert_eq!(nsg_of(&w, "cp").await, Some(corp_nsg()));
}

#[tokio::test]
async fn attached_nsgs_are_put_back_as_they_were_on_compensation_and_delete() {
    let w = World::new();
    existing_network(&w, "westeurope");
    // First a job that fails in `workers`: compensation restores the subnets.
    w.cloud.fail(
        "put",
        "-pool-general",
        AzureError::terminal("SkuNotAvailable", "not here"),
        1,
    );
    let job = w.engine.submit(spec(true)).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    assert_eq!(nsg_of(&w, "cp").await, Some(corp_nsg()));
    assert_eq!(nsg_of(&w, "nodes").await, None);
    assert!(created_of_type(&w, "networkSecurityGroups").is_empty());
    existing_untouched(&w);

    // Then one that succeeds: flotilla's NSGs on both subnets, the ones
    // before recorded for undo; delete puts them back.
    let job = w.engine.submit(spec(true)).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    let own = |name: String| {
        ResourceId::new(
            SUB,
            &saga.spec.resource_group,
            "Microsoft.Network",
            "networkSecurityGroups",
            &name,
        )
        .to_string()
    };
    assert_eq!(
        nsg_of(&w, "cp").await,
        Some(own(names::control_plane_nsg(&job)))
    );
    assert_eq!(
        nsg_of(&w, "nodes").await,
        Some(own(names::worker_nsg(&job)))
    );
    let previous: Vec<Option<String>> = saga
        .resources
        .iter()
        .filter_map(|r| match &r.kind {
            ResourceKind::SubnetNsg { previous } => Some(previous.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(previous, vec![Some(corp_nsg()), None]);
    // The subnet's other properties survive the attach.
    let cp = w
        .cloud
        .get(&vnet_id().child("subnets", "cp"), None, "")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cp["properties"]["addressPrefix"], "10.1.0.0/24");

    w.engine.request_delete(&job).await.unwrap();
    let saga = w.run(&job, LIMIT).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    assert_eq!(nsg_of(&w, "cp").await, Some(corp_nsg()));
    assert_eq!(nsg_of(&w, "nodes").await, None);
    assert!(created_of_type(&w, "networkSecurityGroups").is_empty());
    existing_untouched(&w);
}

#[tokio::test]
async fn preflight_names_what_is_wrong_with_the_existing_network() {
    let codes = |p: &flotilla_core::preflight::Preflight| -> Vec<(String, String)> {
        p.problems
            .iter()
            .map(|x| (x.field.clone(), x.code.clone()))
            .collect()
    };
    // Not there at all.
    let w = World::new();
    let p = w
        .engine
        .preflight(&spec(false), "demo-abc123")
        .await
        .unwrap();
    assert_eq!(
        codes(&p),
        vec![("network.existing.vnetId".into(), "VNetNotFound".into())]
    );
    // In another region.
    let w = World::new();
    existing_network(&w, "northeurope");
    let p = w
        .engine
        .preflight(&spec(false), "demo-abc123")
        .await
        .unwrap();
    assert_eq!(
        codes(&p),
        vec![("network.existing.vnetId".into(), "VNetInOtherRegion".into())]
    );
    // A subnet that is not there, one too small for the pools at max.
    let w = World::new();
    existing_network(&w, "westeurope");
    let mut s = spec(false);
    s.network.existing.as_mut().unwrap().control_plane_subnet = "nope".into();
    s.worker_pools[0].max = 100;
    s.worker_pools.push({
        let mut p = s.worker_pools[0].clone();
        p.name = "more".into();
        p.max = 100;
        p
    });
    let p = w.engine.preflight(&s, "demo-abc123").await.unwrap();
    let found = codes(&p);
    assert!(
        found.contains(&(
            "network.existing.controlPlaneSubnet".into(),
            "SubnetNotFound".into()
        )),
        "{found:?}"
    );
    // nodes is a /22: 1019 addresses, enough for 200; make it a /25.
    assert!(!found
        .iter()
        .any(|(f, _)| f == "network.existing.workerSubnet"));
    let nodes = json!({"name": "nodes", "properties": {"addressPrefix": "10.1.4.0/25"}});
    w.cloud.insert_body(
        &vnet_id().to_string(),
        json!({"location": "westeurope", "properties": {
            "addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
            "subnets": [nodes]}}),
    );
    let p = w.engine.preflight(&s, "demo-abc123").await.unwrap();
    assert!(
        codes(&p).contains(&(
            "network.existing.workerSubnet".into(),
            "SubnetTooSmall".into()
        )),
        "{:?}",
        p.problems
    );
    // A VNet whose space takes the pod range.
    let w = World::new();
    w.cloud.insert_body(
        &vnet_id().to_string(),
        json!({"location": "westeurope", "properties": {
            "addressSpace": {"addressPrefixes": ["10.0.0.0/8"]},
            "subnets": [{"name": "cp", "properties": {"addressPrefix": "10.1.0.0/24"}},
                        {"name": "nodes", "properties": {"addressPrefix": "10.1.4.0/22"}}]}}),
    );
    let p = w
        .engine
        .preflight(&spec(false), "demo-abc123")
        .await
        .unwrap();
    assert!(
        codes(&p).contains(&(
            "network.existing.vnetId".into(),
            "AddressSpaceOverlap".into()
        )),
        "{:?}",
        p.problems
    );
}

#[test]
fn the_spec_names_the_field_of_a_bad_existing_network() {
    let field = |f: &dyn Fn(&mut ClusterSpec)| {
        let mut s = spec(false);
        f(&mut s);
        s.validate().unwrap_err().field
    };
    assert!(spec(false).validate().is_ok());
    assert_eq!(
        field(&|s| s.network.vnet_cidr = "10.0.0.0/16".into()),
        "network.vnetCidr"
    );
    assert_eq!(
        field(&|s| s.network.existing.as_mut().unwrap().vnet_id = "corp".into()),
        "network.existing.vnetId"
    );
    assert_eq!(
        field(&|s| {
            s.network.existing.as_mut().unwrap().vnet_id =
                vnet_id().child("subnets", "cp").to_string()
        }),
        "network.existing.vnetId"
    );
    assert_eq!(
        field(&|s| s.network.existing.as_mut().unwrap().worker_subnet = "cp".into()),
        "network.existing.workerSubnet"
    );
    assert_eq!(
        field(&|s| s.network.existing.as_mut().unwrap().control_plane_subnet = "-x".into()),
        "network.existing.controlPlaneSubnet"
    );
    // The JSON form, with an unknown field named by its path.
    let mut v = serde_json::to_value(spec(true)).unwrap();
    assert!(v["network"].get("vnetCidr").is_none(), "{v:#}");
    assert_eq!(v["network"]["existing"]["attachNsgs"], true);
    v["network"]["existing"]["subnetId"] = json!("x");
    let e = ClusterSpec::from_json(&v.to_string()).unwrap_err();
    assert_eq!(e.field, "network.existing.subnetId", "{e}");
    // Without `existing`, the CIDRs are required.
    let mut v = serde_json::to_value(ClusterSpec::example()).unwrap();
    v["network"].as_object_mut().unwrap().remove("vnetCidr");
    let e = ClusterSpec::from_json(&v.to_string()).unwrap_err();
    assert_eq!(e.field, "network.vnetCidr", "{e}");
}

#[tokio::test]
async fn plan_shows_what_is_used_and_not_created() {
    let w = World::new();
    let plan = w.engine.plan(spec(true), None);
    assert_eq!(plan.existing.len(), 3, "{:?}", plan.existing);
    assert!(plan.existing[0].ends_with("/virtualNetworks/corp"));
    let ops: Vec<(String, String)> = plan
        .steps
        .iter()
        .flat_map(|s| s.operations.iter())
        .map(|o| (o.method.to_string(), o.target.clone()))
        .collect();
    assert!(!ops
        .iter()
        .any(|(m, t)| m == "PUT" && t.contains("/virtualNetworks/") && !t.contains("/subnets/")));
    // The two NSG attachments (the cluster identity's role assignment on the
    // worker subnet is an extension resource, not a change of the subnet).
    let is_role = |t: &str| t.contains("/providers/Microsoft.Authorization/roleAssignments/");
    let attach = ops
        .iter()
        .filter(|(m, t)| m == "PUT" && t.contains("/corp/subnets/") && !is_role(t))
        .count();
    assert_eq!(attach, 2, "{ops:#?}");
    let plain = w.engine.plan(spec(false), None);
    assert!(!plain
        .steps
        .iter()
        .flat_map(|s| s.operations.iter())
        .any(|o| o.target.contains("networkSecurityGroups")
            || (o.target.contains("/subnets/") && !is_role(&o.target))));
}
