//! flotilla's Azure client against flotilla's Azure simulator, over real HTTPS.
//! Every test starts its own simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use flotilla_azure::arm::PollVia;
use flotilla_azure::blob::{Staging, StagingAuth};
use flotilla_azure::models::*;
use flotilla_azure::vault::Vault;
use flotilla_azure::{ArmClient, DeleteStart, PollOutcome, ResourceId, Retry};
use flotilla_sim::{FaultRule, ThrottleConfig};
use flotilla_tests::{config_for, Harness};
use serde_json::{json, Value};

const RG: &str = "rg-test";
const NET: &str = "Microsoft.Network";
const WAIT: Duration = Duration::from_secs(20);

fn body<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("models serialise")
}

fn resource<P>(tags: &Tags, properties: P) -> Resource<P> {
    Resource {
        location: "westeurope".into(),
        tags: tags.clone(),
        sku: None,
        zones: vec![],
        identity: None,
        properties,
    }
}

fn job_tags(job: &str) -> Tags {
    BTreeMap::from([("flotilla-job".to_string(), job.to_string())])
}

fn nsg_body(tags: &Tags) -> Value {
    body(resource(
        tags,
        NetworkSecurityGroupProperties {
            security_rules: vec![Named {
                name: "ssh".into(),
                properties: SecurityRuleProperties {
                    protocol: "Tcp".into(),
                    source_port_range: "*".into(),
                    destination_port_range: "22".into(),
                    source_address_prefix: "*".into(),
                    destination_address_prefix: "*".into(),
                    access: "Allow".into(),
                    priority: 100,
                    direction: "Inbound".into(),
                },
            }],
        },
    ))
}

fn vnet_body(cp_nsg: &ResourceId, wk_nsg: &ResourceId) -> Value {
    let subnet = |name: &str, prefix: &str, nsg: &ResourceId| Named {
        name: name.into(),
        properties: SubnetProperties {
            address_prefix: prefix.into(),
            network_security_group: Some(SubResource::new(nsg)),
        },
    };
    body(resource(
        &Tags::new(),
        VirtualNetworkProperties {
            address_space: AddressSpace {
                address_prefixes: vec!["10.0.0.0/16".into()],
            },
            subnets: vec![
                subnet("cp", "10.0.0.0/24", cp_nsg),
                subnet("wk", "10.0.1.0/24", wk_nsg),
            ],
        },
    ))
}

fn pip_body() -> Value {
    let mut r = resource(
        &Tags::new(),
        PublicIpAddressProperties {
            allocation_method: "Static".into(),
            version: "IPv4".into(),
            dns_settings: None,
        },
    );
    r.sku = Some(Sku {
        name: "Standard".into(),
        tier: None,
        capacity: None,
    });
    body(r)
}

fn lb_body(lb: &ResourceId, pip: &ResourceId) -> Value {
    let mut r = resource(
        &Tags::new(),
        LoadBalancerProperties {
            frontend_ip_configurations: vec![Named {
                name: "fe".into(),
                properties: FrontendIpConfigurationProperties {
                    public_ip_address: SubResource::new(pip),
                },
            }],
            backend_address_pools: vec![Named {
                name: "be".into(),
                properties: Empty {},
            }],
            probes: vec![Named {
                name: "api".into(),
                properties: ProbeProperties {
                    protocol: "Tcp".into(),
                    port: 6443,
                    interval_in_seconds: 5,
                    number_of_probes: 2,
                },
            }],
            load_balancing_rules: vec![Named {
                name: "api".into(),
                properties: LoadBalancingRuleProperties {
                    frontend_ip_configuration: SubResource::new(
                        lb.child("frontendIPConfigurations", "fe"),
                    ),
                    backend_address_pool: SubResource::new(lb.child("backendAddressPools", "be")),
                    probe: SubResource::new(lb.child("probes", "api")),
                    protocol: "Tcp".into(),
                    frontend_port: 6443,
                    backend_port: 6443,
                    idle_timeout_in_minutes: 4,
                    enable_tcp_reset: true,
                },
            }],
        },
    );
    r.sku = Some(Sku {
        name: "Standard".into(),
        tier: None,
        capacity: None,
    });
    body(r)
}

fn vmss_body(
    subnet: &ResourceId,
    pools: Vec<SubResource>,
    extensions: Vec<Named<ExtensionProperties>>,
) -> Value {
    let mut r = resource(
        &Tags::new(),
        VirtualMachineScaleSetProperties {
            overprovision: false,
            upgrade_policy: UpgradePolicy {
                mode: "Manual".into(),
            },
            virtual_machine_profile: VirtualMachineProfile {
                os_profile: OsProfile {
                    computer_name_prefix: "node".into(),
                    admin_username: "flotilla".into(),
                    linux_configuration: LinuxConfiguration {
                        disable_password_authentication: true,
                        ssh: SshConfiguration {
                            public_keys: vec![SshPublicKey {
                                path: "/home/flotilla/.ssh/authorized_keys".into(),
                                key_data: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEZsb3RpbGxhRGVtb0tleU9ubHlGb3JUaGVTaW11bGF0 test".into(),
                            }],
                        },
                    },
                },
                storage_profile: StorageProfile {
                    image_reference: ImageReference {
                        publisher: "Canonical".into(),
                        offer: "ubuntu-24_04-lts".into(),
                        sku: "server".into(),
                        version: "latest".into(),
                    },
                    os_disk: OsDisk {
                        create_option: "FromImage".into(),
                        caching: "ReadWrite".into(),
                        managed_disk: ManagedDisk {
                            storage_account_type: "Premium_LRS".into(),
                        },
                        disk_size_gb: 64,
                    },
                },
                network_profile: NetworkProfile {
                    network_interface_configurations: vec![Named {
                        name: "nic".into(),
                        properties: NetworkInterfaceConfigurationProperties {
                            primary: true,
                            ip_configurations: vec![Named {
                                name: "ip".into(),
                                properties: IpConfigurationProperties {
                                    subnet: SubResource::new(subnet),
                                    load_balancer_backend_address_pools: pools,
                                },
                            }],
                        },
                    }],
                },
                extension_profile: ExtensionProfile { extensions },
            },
        },
    );
    r.sku = Some(Sku {
        name: "Standard_D2s_v5".into(),
        tier: Some("Standard".into()),
        capacity: Some(2),
    });
    body(r)
}

/// PUT, expect an Azure-AsyncOperation poll state, wait, GET shows Succeeded.
async fn create(arm: &ArmClient, id: &ResourceId, api: &str, body: &Value) -> Value {
    let started = arm
        .put(id, api, body)
        .await
        .unwrap_or_else(|e| panic!("PUT {id}: {e}"));
    let poll = started
        .poll
        .unwrap_or_else(|| panic!("PUT {id} answered without an operation"));
    assert_eq!(poll.via, PollVia::AsyncOperation, "{id}");
    arm.wait(&poll, WAIT)
        .await
        .unwrap_or_else(|e| panic!("waiting for {id}: {e}"));
    let got = arm
        .get(id, api)
        .await
        .unwrap_or_else(|e| panic!("GET {id}: {e}"))
        .unwrap_or_else(|| panic!("{id} missing after create"));
    assert_eq!(
        got.pointer("/properties/provisioningState"),
        Some(&json!("Succeeded")),
        "{id}: {got}"
    );
    got
}

/// DELETE, wait, GET is None, DELETE again is Gone.
async fn delete(arm: &ArmClient, id: &ResourceId, api: &str) {
    match arm
        .delete(id, api)
        .await
        .unwrap_or_else(|e| panic!("DELETE {id}: {e}"))
    {
        DeleteStart::Pending(poll) => arm
            .wait(&poll, WAIT)
            .await
            .unwrap_or_else(|e| panic!("waiting for delete of {id}: {e}")),
        DeleteStart::Gone => panic!("DELETE {id} of an existing resource answered Gone"),
    }
    assert_eq!(
        arm.get(id, api).await.expect("GET after delete"),
        None,
        "{id}"
    );
    assert_eq!(
        arm.delete(id, api).await.expect("second DELETE"),
        DeleteStart::Gone,
        "{id}"
    );
}

fn requests_to(h: &Harness, path_part: &str) -> Vec<u16> {
    h.sim
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(path_part))
        .map(|r| r.status)
        .collect()
}

fn fault(status: u16, code: &str) -> FaultRule {
    FaultRule {
        method: None,
        resource_type: None,
        name_pattern: None,
        status,
        code: code.into(),
        message: None,
        times: None,
        probability: None,
        latency_ms: None,
        asynchronous: false,
        principal: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_type_creates_reads_and_deletes() {
    let h = Harness::start(None).await;
    h.resource_group(RG).await;
    let (account_id, key) = h.storage_account(RG, "flotillastage").await;
    let arm = h.arm();
    let api = api::NETWORK;

    // Blob staging (token auth) of the init script.
    let staging = Staging::new(
        &h.config,
        &format!("{}/{}", h.server.info.blob_endpoint, account_id.name()),
        "staging",
        StagingAuth::Token,
    )
    .expect("staging");
    staging.ensure_container().await.expect("container");
    staging.ensure_container().await.expect("container again");
    let script_url = staging
        .put(
            "init.sh",
            b"#!/bin/sh\necho hi\n".to_vec(),
            "text/x-shellscript",
            // Metadata names are C# identifiers: `-` is refused, as on Azure.
            &BTreeMap::from([("flotilla_job".to_string(), "j".to_string())]),
        )
        .await
        .expect("blob put");
    let refused = staging
        .put(
            "bad.sh",
            b"x".to_vec(),
            "text/plain",
            &BTreeMap::from([("flotilla-job".to_string(), "j".to_string())]),
        )
        .await
        .expect_err("a metadata name with '-' is invalid");
    assert_eq!(refused.code, "InvalidMetadata");
    assert!(
        h.sim
            .inventory(Some(("flotilla-job", "j")))
            .iter()
            .any(|i| i.name == "init.sh"),
        "a tag filter a-b matches blob metadata a_b"
    );
    assert_eq!(script_url, staging.blob_url("init.sh"));
    assert!(
        h.sim
            .inventory(None)
            .iter()
            .any(|i| i.name.ends_with("init.sh")),
        "blob missing from inventory"
    );

    // Key Vault secret.
    let vault = Vault::new(&h.config).expect("vault");
    let secret_id = vault
        .set("node-token", "s3cret", &job_tags("j"))
        .await
        .expect("secret set");
    assert_eq!(secret_id, vault.secret_id("node-token"));
    assert_eq!(
        vault.get("node-token").await.expect("secret get"),
        Some("s3cret".to_string())
    );

    // Network.
    let cp_nsg = h.id(RG, NET, "networkSecurityGroups", "nsg-cp");
    let wk_nsg = h.id(RG, NET, "networkSecurityGroups", "nsg-wk");
    create(&arm, &cp_nsg, api, &nsg_body(&Tags::new())).await;
    create(&arm, &wk_nsg, api, &nsg_body(&Tags::new())).await;
    let vnet = h.id(RG, NET, "virtualNetworks", "vnet");
    let got = create(&arm, &vnet, api, &vnet_body(&cp_nsg, &wk_nsg)).await;
    assert_eq!(
        got.pointer("/properties/subnets")
            .and_then(Value::as_array)
            .map(Vec::len),
        Some(2)
    );
    let pip = h.id(RG, NET, "publicIPAddresses", "pip");
    create(&arm, &pip, api, &pip_body()).await;
    let lb = h.id(RG, NET, "loadBalancers", "lb");
    create(&arm, &lb, api, &lb_body(&lb, &pip)).await;

    // Scale set with the CustomScript extension fetching the staged blob.
    let extension = Named {
        name: "init".into(),
        properties: ExtensionProperties {
            publisher: "Microsoft.Azure.Extensions".into(),
            kind: "CustomScript".into(),
            type_handler_version: "2.1".into(),
            protected_settings: Some(json!({
                "storageAccountName": account_id.name(),
                "storageAccountKey": key,
                "fileUris": [script_url],
                "commandToExecute": "sh init.sh",
            })),
        },
    };
    let vmss = h.id(RG, "Microsoft.Compute", "virtualMachineScaleSets", "vmss");
    let got = create(
        &arm,
        &vmss,
        api::COMPUTE,
        &vmss_body(
            &vnet.child("subnets", "wk"),
            vec![SubResource::new(lb.child("backendAddressPools", "be"))],
            vec![extension],
        ),
    )
    .await;
    assert!(
        !got.to_string().contains(&key),
        "protectedSettings returned by GET"
    );

    // Tear down in reverse dependency order.
    delete(&arm, &vmss, api::COMPUTE).await;
    delete(&arm, &lb, api).await;
    delete(&arm, &pip, api).await;
    delete(&arm, &vnet, api).await;
    delete(&arm, &cp_nsg, api).await;
    delete(&arm, &wk_nsg, api).await;

    vault.delete("node-token").await.expect("secret delete");
    assert_eq!(vault.get("node-token").await.expect("get deleted"), None);

    staging.delete("init.sh").await.expect("blob delete");
    staging
        .delete("init.sh")
        .await
        .expect("blob delete is idempotent");
    assert!(
        !h.sim
            .inventory(None)
            .iter()
            .any(|i| i.name.ends_with("init.sh")),
        "blob still in inventory"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_fault_ends_the_operation_failed() {
    let h = Harness::start(None).await;
    h.resource_group(RG).await;
    h.sim.add_fault(FaultRule {
        method: Some("PUT".into()),
        resource_type: Some("Microsoft.Network/networkSecurityGroups".into()),
        asynchronous: true,
        principal: None,
        ..fault(200, "AllocationFailed")
    });
    let arm = h.arm();
    let id = h.id(RG, NET, "networkSecurityGroups", "nsg");
    let started = arm
        .put(&id, api::NETWORK, &nsg_body(&Tags::new()))
        .await
        .expect("asynchronous faults accept the PUT");
    let poll = started.poll.expect("an operation to poll");
    let deadline = Instant::now() + WAIT;
    let err = loop {
        match arm.poll(&poll).await.expect("poll") {
            PollOutcome::Failed(e) => break e,
            PollOutcome::Succeeded => panic!("operation succeeded despite the fault"),
            PollOutcome::Pending { .. } => {
                assert!(Instant::now() < deadline, "operation never ended");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(err.code, "AllocationFailed", "{err:?}");
    assert!(err.is_retryable(), "AllocationFailed is retryable: {err:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_get_401() {
    let h = Harness::start(None).await;
    let http = reqwest::Client::builder()
        .tls_certs_merge([
            reqwest::Certificate::from_pem(h.sim.ca_cert_pem().as_bytes()).expect("CA"),
        ])
        .build()
        .expect("client");
    let url = format!(
        "{}/subscriptions/{}/resourceGroups/{RG}?api-version=2021-04-01",
        h.server.info.arm_endpoint.trim_end_matches('/'),
        h.sub()
    );
    let resp = http.get(&url).send().await.expect("request");
    assert_eq!(resp.status().as_u16(), 401);

    let bad = config_for(&h.sim, &h.server, Some("not-the-secret"));
    let arm = ArmClient::new(&bad).expect("client builds");
    let err = arm
        .get(&ResourceId::resource_group(h.sub(), RG), api::RESOURCES)
        .await
        .expect_err("a wrong secret gets no token");
    assert!(
        !err.is_retryable(),
        "wrong secret must be terminal: {err:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_burst_is_throttled_and_the_client_waits() {
    let h = Harness::start(Some(ThrottleConfig {
        write_burst: 3,
        write_refill_per_s: 2.0,
        ..ThrottleConfig::default()
    }))
    .await;
    h.resource_group(RG).await;
    let arm = h.arm();
    for i in 0..8 {
        let id = h.id(RG, NET, "networkSecurityGroups", &format!("nsg-{i}"));
        arm.put(&id, api::NETWORK, &nsg_body(&Tags::new()))
            .await
            .unwrap_or_else(|e| panic!("PUT nsg-{i}: {e:?}"));
    }
    let statuses = requests_to(&h, "/networkSecurityGroups/");
    assert!(statuses.contains(&429), "no 429 in {statuses:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rule_fields_reach_the_client() {
    let h = Harness::start(None).await;
    h.resource_group(RG).await;
    let arm = h.arm();
    let nsg = |name: &str| h.id(RG, NET, "networkSecurityGroups", name);
    let put = |name: &str| {
        let id = nsg(name);
        let arm = &arm;
        async move { arm.put(&id, api::NETWORK, &nsg_body(&Tags::new())).await }
    };

    // status + code, terminal classification, name_pattern.
    h.sim.add_fault(FaultRule {
        method: Some("put".into()),
        resource_type: Some("microsoft.network/networksecuritygroups".into()),
        name_pattern: Some("sku-*".into()),
        ..fault(409, "SkuNotAvailable")
    });
    let err = put("sku-1").await.expect_err("faulted");
    assert_eq!(err.code, "SkuNotAvailable");
    assert_eq!(err.status, Some(409));
    assert_eq!(err.retry, Retry::Terminal);
    assert_eq!(requests_to(&h, "/sku-1"), vec![409], "terminal: no retry");
    put("other")
        .await
        .expect("name_pattern leaves other names alone");

    // 503 that fires once: retryable, retried inline, then succeeds.
    h.sim.add_fault(FaultRule {
        name_pattern: Some("flaky".into()),
        times: Some(1),
        ..fault(503, "ServiceUnavailable")
    });
    put("flaky").await.expect("retried past a one-time 503");
    assert_eq!(requests_to(&h, "/flaky"), vec![503, 201]);
    put("flaky").await.expect("the rule is gone");

    // A persistent 503 surfaces as a retryable error after the inline retries.
    h.sim.add_fault(FaultRule {
        name_pattern: Some("down".into()),
        ..fault(503, "ServiceUnavailable")
    });
    let err = put("down").await.expect_err("always 503");
    assert_eq!(err.code, "ServiceUnavailable");
    assert_eq!(err.status, Some(503));
    assert_eq!(err.retry, Retry::Retryable);
    assert_eq!(
        requests_to(&h, "/down").len(),
        1 + flotilla_azure::RetryPolicy::default().max_inline_retries as usize
    );

    // latency_ms delays the answer.
    h.sim.add_fault(FaultRule {
        name_pattern: Some("slow".into()),
        latency_ms: Some(700),
        ..fault(409, "SkuNotAvailable")
    });
    let t = Instant::now();
    let err = put("slow").await.expect_err("faulted");
    assert_eq!(err.code, "SkuNotAvailable");
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    h.shutdown().await;
}

/// A placeholder (`create_if_absent`) whose write failed and is retried
/// inline after someone else wrote the secret leaves that value: each
/// attempt reads first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_retried_after_another_write_leaves_that_write() {
    let h = Harness::start(None).await;
    let vault = Vault::new(&h.config).expect("vault");
    h.sim.add_fault(FaultRule {
        method: Some("put".into()),
        name_pattern: Some("j-kubeconfig".into()),
        times: Some(1),
        latency_ms: Some(300),
        ..fault(503, "ServiceUnavailable")
    });
    let placeholder = {
        let vault = Vault::new(&h.config).expect("vault");
        tokio::spawn(async move {
            vault
                .create_if_absent("j-kubeconfig", "pending", &job_tags("j"))
                .await
        })
    };
    // The placeholder's first write is refused (503, Retry-After: 1); the
    // first master publishes before its retry.
    let deadline = Instant::now() + WAIT;
    while h.sim.fired_faults().is_empty() {
        assert!(Instant::now() < deadline, "the fault never fired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    vault
        .set("j-kubeconfig", "published", &job_tags("j"))
        .await
        .expect("the master's write");
    placeholder
        .await
        .unwrap()
        .expect("the placeholder's retry succeeds");
    assert_eq!(
        vault.get("j-kubeconfig").await.unwrap().as_deref(),
        Some("published")
    );
    // (A 401 is the vault's authentication challenge, answered before the
    // first request of each client is sent again with a token.)
    let writes: Vec<u16> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/secrets/j-kubeconfig") && r.method == "PUT")
        .map(|r| r.status)
        .filter(|s| *s != 401)
        .collect();
    assert_eq!(
        writes.len(),
        2,
        "the refused placeholder and the master's write: {writes:?}"
    );
    assert!(writes.contains(&503), "{writes:?}");

    // A secret that exists is read, never written.
    vault
        .create_if_absent("j-kubeconfig", "pending", &job_tags("j"))
        .await
        .unwrap();
    assert_eq!(
        vault.get("j-kubeconfig").await.unwrap().as_deref(),
        Some("published")
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_are_checked() {
    let h = Harness::start(None).await;
    h.resource_group(RG).await;
    let arm = h.arm();
    let vnet = h.id(RG, NET, "virtualNetworks", "vnet");
    let vmss = h.id(RG, "Microsoft.Compute", "virtualMachineScaleSets", "vmss");

    let err = arm
        .put(
            &vmss,
            api::COMPUTE,
            &vmss_body(&vnet.child("subnets", "wk"), vec![], vec![]),
        )
        .await
        .expect_err("the subnet does not exist");
    assert_eq!(err.code, "InvalidResourceReference", "{err:?}");
    assert_eq!(err.retry, Retry::Terminal);

    let cp_nsg = h.id(RG, NET, "networkSecurityGroups", "nsg-cp");
    let wk_nsg = h.id(RG, NET, "networkSecurityGroups", "nsg-wk");
    create(&arm, &cp_nsg, api::NETWORK, &nsg_body(&Tags::new())).await;
    create(&arm, &wk_nsg, api::NETWORK, &nsg_body(&Tags::new())).await;
    create(&arm, &vnet, api::NETWORK, &vnet_body(&cp_nsg, &wk_nsg)).await;
    create(
        &arm,
        &vmss,
        api::COMPUTE,
        &vmss_body(&vnet.child("subnets", "wk"), vec![], vec![]),
    )
    .await;
    let err = arm
        .delete(&vnet, api::NETWORK)
        .await
        .expect_err("a scale set uses the subnet");
    assert_eq!(err.code, "InUseSubnetCannotBeDeleted", "{err:?}");
    assert!(arm.get(&vnet, api::NETWORK).await.expect("GET").is_some());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_by_tag() {
    let h = Harness::start(None).await;
    h.resource_group(RG).await;
    let arm = h.arm();
    let mut j1 = BTreeSet::new();
    for (name, job) in [("a", "j1"), ("b", "j1"), ("c", "j2"), ("d", "j2")] {
        let id = h.id(RG, NET, "networkSecurityGroups", name);
        create(&arm, &id, api::NETWORK, &nsg_body(&job_tags(job))).await;
        if job == "j1" {
            j1.insert(id.to_string().to_ascii_lowercase());
        }
    }
    let listed: BTreeSet<String> = arm
        .list_by_tag(RG, "flotilla-job", "j1")
        .await
        .expect("list")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_ascii_lowercase())
        .collect();
    assert_eq!(listed, j1);
    let inventory: BTreeSet<String> = h
        .sim
        .inventory(Some(("flotilla-job", "j1")))
        .into_iter()
        .map(|i| i.id.to_ascii_lowercase())
        .collect();
    assert_eq!(inventory, j1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_allow_list_refuses_before_sending() {
    let h = Harness::start(None).await;
    let arm = h.arm();
    let before = h.sim.requests().len();
    let err = arm
        .put(
            &ResourceId::resource_group(h.sub(), RG),
            api::RESOURCES,
            &json!({"location": "westeurope"}),
        )
        .await
        .expect_err("resource groups are not flotilla's to write");
    assert_eq!(err.code, "ActionNotGranted");
    assert_eq!(err.retry, Retry::Terminal);
    assert_eq!(h.sim.requests().len(), before, "a request was sent");
    assert_eq!(arm.request_count(), 0);
    h.shutdown().await;
}
