//! `prereqs`: takes `step.succeeded{stage}`; creates one NSG per subnet, the
//! VNet with its control-plane and worker subnets, a public IP and a load
//! balancer for the API endpoint; emits `step.succeeded{prereqs}`.
//! Undo (reverse order): load balancer, public IP, VNet, NSGs.
//!
//! With an existing network (`network.existing`) no VNet is created: the
//! scale sets go into the named subnets. With `attachNsgs` the two NSGs are
//! created and put on those subnets (each subnet read, then PUT with only
//! its `networkSecurityGroup` changed; undo puts back the NSG it had, and
//! never deletes the subnet); without it no NSG is created at all.

use super::{rg_id, Detail, Env, Op};
use crate::names;
use crate::saga::Saga;
use flotilla_azure::models::*;

const NET: &str = "Microsoft.Network";

fn rule(name: &str, port: &str, source: &str, priority: u32) -> Named<SecurityRuleProperties> {
    Named {
        name: name.into(),
        properties: SecurityRuleProperties {
            protocol: "Tcp".into(),
            source_port_range: "*".into(),
            destination_port_range: port.into(),
            source_address_prefix: source.into(),
            destination_address_prefix: "*".into(),
            access: "Allow".into(),
            priority,
            direction: "Inbound".into(),
        },
    }
}

fn body<T: serde::Serialize>(detail: Detail, v: &T) -> serde_json::Value {
    detail.build(|| serde_json::to_value(v).expect("models serialise"))
}

pub fn plan(saga: &Saga, env: &Env, detail: Detail) -> Vec<Op> {
    let job = &saga.id;
    let spec = &saga.spec;
    let tags = names::tags(job, spec);
    fn resource<P>(location: &str, tags: &Tags, properties: P) -> Resource<P> {
        Resource {
            location: location.into(),
            tags: tags.clone(),
            sku: None,
            zones: vec![],
            identity: None,
            properties,
        }
    }
    let cp_nsg = rg_id(
        saga,
        env,
        NET,
        "networkSecurityGroups",
        &names::control_plane_nsg(job),
    );
    let wk_nsg = rg_id(
        saga,
        env,
        NET,
        "networkSecurityGroups",
        &names::worker_nsg(job),
    );
    let vnet = rg_id(saga, env, NET, "virtualNetworks", &names::vnet(job));
    let pip = rg_id(saga, env, NET, "publicIPAddresses", &names::public_ip(job));
    let lb = rg_id(saga, env, NET, "loadBalancers", &names::load_balancer(job));
    let lb_child = |kind: &str, name: &str| SubResource::new(lb.child(kind, name));

    let cp_nsg_body = resource(
        &spec.location,
        &tags,
        NetworkSecurityGroupProperties {
            security_rules: vec![
                rule("allow-apiserver", "6443", "Internet", 100),
                rule("allow-ssh-vnet", "22", "VirtualNetwork", 110),
            ],
        },
    );
    let wk_nsg_body = resource(
        &spec.location,
        &tags,
        NetworkSecurityGroupProperties {
            security_rules: vec![rule("allow-vnet", "*", "VirtualNetwork", 100)],
        },
    );
    let subnet = |name: &str, cidr: &str, nsg: &flotilla_azure::ResourceId| Named {
        name: name.into(),
        properties: SubnetProperties {
            address_prefix: cidr.into(),
            network_security_group: Some(SubResource::new(nsg)),
        },
    };
    let vnet_body = resource(
        &spec.location,
        &tags,
        VirtualNetworkProperties {
            address_space: AddressSpace {
                address_prefixes: vec![spec.network.vnet_cidr.clone()],
            },
            subnets: vec![
                subnet(
                    names::CONTROL_PLANE_SUBNET,
                    &spec.network.control_plane_subnet_cidr,
                    &cp_nsg,
                ),
                subnet(
                    names::WORKER_SUBNET,
                    &spec.network.worker_subnet_cidr,
                    &wk_nsg,
                ),
            ],
        },
    );
    let mut pip_body = resource(
        &spec.location,
        &tags,
        PublicIpAddressProperties {
            allocation_method: "Static".into(),
            version: "IPv4".into(),
            // The API server's name (`names::api_fqdn`), known before the IP.
            dns_settings: Some(PublicIpDnsSettings {
                domain_name_label: job.clone(),
            }),
        },
    );
    pip_body.sku = Some(Sku {
        name: "Standard".into(),
        tier: Some("Regional".into()),
        capacity: None,
    });
    let mut lb_body = resource(
        &spec.location,
        &tags,
        LoadBalancerProperties {
            frontend_ip_configurations: vec![Named {
                name: names::LB_FRONTEND.into(),
                properties: FrontendIpConfigurationProperties {
                    public_ip_address: SubResource::new(&pip),
                },
            }],
            backend_address_pools: vec![Named {
                name: names::LB_POOL.into(),
                properties: Empty {},
            }],
            probes: vec![Named {
                name: names::LB_PROBE.into(),
                properties: ProbeProperties {
                    protocol: "Tcp".into(),
                    port: 6443,
                    interval_in_seconds: 15,
                    number_of_probes: 2,
                },
            }],
            load_balancing_rules: vec![Named {
                name: "apiserver".into(),
                properties: LoadBalancingRuleProperties {
                    frontend_ip_configuration: lb_child(
                        "frontendIPConfigurations",
                        names::LB_FRONTEND,
                    ),
                    backend_address_pool: lb_child("backendAddressPools", names::LB_POOL),
                    probe: lb_child("probes", names::LB_PROBE),
                    protocol: "Tcp".into(),
                    frontend_port: 6443,
                    backend_port: 6443,
                    idle_timeout_in_minutes: 4,
                    enable_tcp_reset: true,
                },
            }],
        },
    );
    lb_body.sku = Some(Sku {
        name: "Standard".into(),
        tier: Some("Regional".into()),
        capacity: None,
    });

    let nsgs = vec![
        Op::Arm {
            id: cp_nsg.clone(),
            api_version: api::NETWORK,
            body: body(detail, &cp_nsg_body),
        },
        Op::Arm {
            id: wk_nsg.clone(),
            api_version: api::NETWORK,
            body: body(detail, &wk_nsg_body),
        },
    ];
    let network = match super::existing_vnet(saga) {
        None => {
            let mut ops = nsgs;
            ops.push(Op::Arm {
                id: vnet,
                api_version: api::NETWORK,
                body: body(detail, &vnet_body),
            });
            ops
        }
        Some((_, e)) if e.attach_nsgs => {
            let mut ops = nsgs;
            for (subnet, nsg) in [
                (names::CONTROL_PLANE_SUBNET, cp_nsg),
                (names::WORKER_SUBNET, wk_nsg),
            ] {
                ops.push(Op::AttachNsg {
                    subnet: super::subnet_id(saga, env, subnet),
                    nsg,
                });
            }
            ops
        }
        Some(_) => vec![],
    };
    network
        .into_iter()
        .chain([
            Op::Arm {
                id: pip,
                api_version: api::NETWORK,
                body: body(detail, &pip_body),
            },
            Op::Arm {
                id: lb,
                api_version: api::NETWORK,
                body: body(detail, &lb_body),
            },
        ])
        .collect()
}
