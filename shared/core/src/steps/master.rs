//! `master`: takes `step.succeeded{keys}`; creates the control-plane scale
//! set (1, 3 or 5 nodes) on the control-plane subnet, behind the API load
//! balancer, with the init extension that fetches the init script with the
//! job's staging credential: the job's node identity, attached to the scale
//! set (`staging.access: identity`), or the storage key (`account-key`, read
//! from Key Vault just before the PUT). Either goes only to ARM, in the
//! extension's protected settings. Emits `step.succeeded{master}`.
//! Undo: delete the scale set.

use super::node::{self, Role};
use super::{rg_id, Detail, Env, Op};
use crate::names;
use crate::saga::Saga;
use crate::spec::{DiskSpec, IdentityMode, StagingAccess};
use flotilla_azure::models::*;
use flotilla_azure::ResourceId;

/// What differs between the master and a worker pool scale set.
pub(crate) struct ScaleSetShape<'a> {
    pub name: String,
    pub role: &'a str,
    pub capacity: u32,
    pub instance_type: &'a str,
    pub disk: &'a DiskSpec,
    pub zones: &'a [String],
    pub subnet: &'a str,
    pub behind_lb: bool,
    /// Which init script its nodes run.
    pub script: Role<'a>,
}

/// The identity block of a scale set of this job: the system-assigned
/// identity in managed-identity mode (the cluster's own identity, which
/// scales the pools), plus the job's node identity when it has one (what
/// the nodes read staging and Key Vault with).
fn scale_set_identity(saga: &Saga, env: &Env) -> Option<Identity> {
    let node = super::keys::has_node_identity(saga).then(|| {
        std::collections::BTreeMap::from([(
            super::keys::node_identity_id(saga, env).to_string(),
            serde_json::json!({}),
        )])
    });
    match (saga.spec.identity, node) {
        (IdentityMode::ManagedIdentity, None) => Some(Identity {
            kind: "SystemAssigned".into(),
            user_assigned_identities: Default::default(),
        }),
        (IdentityMode::ManagedIdentity, Some(node)) => Some(Identity {
            kind: "SystemAssigned, UserAssigned".into(),
            user_assigned_identities: node,
        }),
        (IdentityMode::ServicePrincipal, Some(node)) => Some(Identity {
            kind: "UserAssigned".into(),
            user_assigned_identities: node,
        }),
        (IdentityMode::ServicePrincipal, None) => None,
    }
}

/// The scale set body without its staging credential (the engine adds it
/// with [`node::seal`]).
pub(crate) fn scale_set(
    saga: &Saga,
    env: &Env,
    shape: ScaleSetShape<'_>,
    detail: Detail,
) -> (ResourceId, serde_json::Value) {
    let id = rg_id(
        saga,
        env,
        "Microsoft.Compute",
        "virtualMachineScaleSets",
        &shape.name,
    );
    let body = detail.build(|| scale_set_body(saga, env, shape));
    (id, body)
}

fn scale_set_body(saga: &Saga, env: &Env, shape: ScaleSetShape<'_>) -> serde_json::Value {
    let job = &saga.id;
    let spec = &saga.spec;
    let lb = rg_id(
        saga,
        env,
        "Microsoft.Network",
        "loadBalancers",
        &names::load_balancer(job),
    );
    let mut tags = names::tags(job, spec);
    tags.insert(names::TAG_ROLE.into(), shape.role.into());
    let init_url = format!("{}{}", env.staging_url, shape.script.blob(job));
    let body = VirtualMachineScaleSet {
        location: spec.location.clone(),
        tags,
        sku: Some(Sku {
            name: shape.instance_type.into(),
            tier: Some("Standard".into()),
            capacity: Some(shape.capacity),
        }),
        zones: shape.zones.to_vec(),
        identity: scale_set_identity(saga, env),
        properties: VirtualMachineScaleSetProperties {
            overprovision: false,
            upgrade_policy: UpgradePolicy {
                mode: "Manual".into(),
            },
            virtual_machine_profile: VirtualMachineProfile {
                os_profile: OsProfile {
                    computer_name_prefix: names::computer_prefix(job, shape.role),
                    admin_username: spec.admin_username.clone(),
                    linux_configuration: LinuxConfiguration {
                        disable_password_authentication: true,
                        ssh: SshConfiguration {
                            public_keys: vec![SshPublicKey {
                                path: format!("/home/{}/.ssh/authorized_keys", spec.admin_username),
                                key_data: spec.ssh_public_key.clone(),
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
                            storage_account_type: shape.disk.kind.clone(),
                        },
                        disk_size_gb: shape.disk.size_gb,
                    },
                },
                network_profile: NetworkProfile {
                    network_interface_configurations: vec![Named {
                        name: format!("{}-nic", shape.role),
                        properties: NetworkInterfaceConfigurationProperties {
                            primary: true,
                            ip_configurations: vec![Named {
                                name: "ipconfig".into(),
                                properties: IpConfigurationProperties {
                                    subnet: SubResource::new(super::subnet_id(
                                        saga,
                                        env,
                                        shape.subnet,
                                    )),
                                    load_balancer_backend_address_pools: if shape.behind_lb {
                                        vec![SubResource::new(
                                            lb.child("backendAddressPools", names::LB_POOL),
                                        )]
                                    } else {
                                        vec![]
                                    },
                                },
                            }],
                        },
                    }],
                },
                extension_profile: ExtensionProfile {
                    extensions: vec![Named {
                        name: names::INIT_EXTENSION.into(),
                        properties: ExtensionProperties {
                            publisher: "Microsoft.Azure.Extensions".into(),
                            kind: "CustomScript".into(),
                            type_handler_version: "2.1".into(),
                            protected_settings: Some(match spec.staging.access {
                                StagingAccess::AccountKey => serde_json::json!({
                                    "storageAccountName": env.staging_account_id.name(),
                                    "fileUris": [init_url],
                                    "commandToExecute": node::command(shape.script, job),
                                }),
                                // `managedIdentity` is added by the seal.
                                StagingAccess::Identity => serde_json::json!({
                                    "fileUris": [init_url],
                                    "commandToExecute": node::command(shape.script, job),
                                }),
                            }),
                        },
                    }],
                },
            },
        },
    };
    serde_json::to_value(body).expect("models serialise")
}

pub fn plan(saga: &Saga, env: &Env, detail: Detail) -> Vec<Op> {
    let m = &saga.spec.master;
    let (id, body) = scale_set(
        saga,
        env,
        ScaleSetShape {
            name: names::master_vmss(&saga.id),
            role: "master",
            capacity: m.size,
            instance_type: &m.instance_type,
            disk: &m.disk,
            zones: &[],
            subnet: names::CONTROL_PLANE_SUBNET,
            behind_lb: true,
            script: Role::Master,
        },
        detail,
    );
    vec![Op::ScaleSet { id, body }]
}
