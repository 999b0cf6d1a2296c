//! A cluster in an existing VNet against the served simulator (its ARM
//! validation of subnets, NSG references and scale sets): NSGs attached on
//! request, put back as they were by delete, the VNet left in place.

mod common;

use common::Flow;
use flotilla_azure::arm::ArmClient;
use flotilla_azure::models::api;
use flotilla_azure::ResourceId;
use flotilla_core::names;
use flotilla_core::saga::JobStatus;
use flotilla_core::spec::{ClusterSpec, ExistingNetwork, NetworkSpec};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_in_an_existing_vnet_attaches_its_nsgs_and_delete_puts_them_back() {
    let f = Flow::start().await;
    let sub = f.s.server.info.subscription_id.clone();
    f.s.resource_group("corp-net").await;
    let corp_nsg = ResourceId::new(
        &sub,
        "corp-net",
        "Microsoft.Network",
        "networkSecurityGroups",
        "corp-nsg",
    );
    f.s.put(
        &corp_nsg,
        api::NETWORK,
        json!({"location": "westeurope", "properties": {}}),
    )
    .await;
    let vnet = ResourceId::new(
        &sub,
        "corp-net",
        "Microsoft.Network",
        "virtualNetworks",
        "corp",
    );
    f.s.put(
        &vnet,
        api::NETWORK,
        json!({"location": "westeurope", "properties": {
            "addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
            "subnets": [
                {"name": "cp", "properties": {"addressPrefix": "10.1.0.0/24",
                    "networkSecurityGroup": {"id": corp_nsg.to_string()}}},
                {"name": "nodes", "properties": {"addressPrefix": "10.1.4.0/22"}}]}}),
    )
    .await;
    let mut spec = ClusterSpec::example();
    spec.network = NetworkSpec {
        vnet_cidr: String::new(),
        control_plane_subnet_cidr: String::new(),
        worker_subnet_cidr: String::new(),
        existing: Some(ExistingNetwork {
            vnet_id: vnet.to_string(),
            control_plane_subnet: "cp".into(),
            worker_subnet: "nodes".into(),
            attach_nsgs: true,
        }),
    };
    let verdict = f.engine.preflight(&spec, "demo-abc123").await.unwrap();
    assert!(verdict.passed(), "{verdict:?}");
    let arm = ArmClient::new(&f.s.config).unwrap();
    let nsg_of = |subnet: &'static str| {
        let arm = &arm;
        let id = vnet.child("subnets", subnet);
        async move {
            let body = arm.get(&id, api::NETWORK).await.unwrap().expect("subnet");
            body.pointer("/properties/networkSecurityGroup/id")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
        }
    };

    let job = f.engine.submit(spec).await.unwrap();
    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Succeeded, "{saga:#?}");
    let own = |name: String| {
        ResourceId::new(
            &sub,
            &saga.spec.resource_group,
            "Microsoft.Network",
            "networkSecurityGroups",
            &name,
        )
        .to_string()
        .to_ascii_lowercase()
    };
    assert_eq!(
        nsg_of("cp").await,
        Some(own(names::control_plane_nsg(&job)))
    );
    assert_eq!(nsg_of("nodes").await, Some(own(names::worker_nsg(&job))));
    assert!(
        !f.tagged(&job)
            .iter()
            .any(|id| id.contains("/virtualNetworks/")),
        "{:?}",
        f.tagged(&job)
    );

    f.engine.request_delete(&job).await.unwrap();
    let saga = f.until_done(&job).await;
    assert_eq!(saga.status, JobStatus::Deleted, "{saga:#?}");
    assert!(f.tagged(&job).is_empty(), "{:?}", f.tagged(&job));
    assert_eq!(
        nsg_of("cp").await,
        Some(corp_nsg.to_string().to_ascii_lowercase())
    );
    assert_eq!(nsg_of("nodes").await, None);
    let body = arm.get(&vnet, api::NETWORK).await.unwrap();
    assert!(body.is_some(), "the existing VNet stays");
}
