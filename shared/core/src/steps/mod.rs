//! One module per step. Each says, in its module doc, the event it takes,
//! the events it emits, what it creates and how that is undone, and exposes
//! `plan`: the step's resources as an ordered list of idempotent operations.
//! The engine records each operation's intent in the saga before running it
//! (ahead, in the write that ends the step before: `Engine::plan_ahead`), so
//! a plan must name the same resources whenever it is computed, whole or in
//! outline ([`Detail`]).

pub mod join;
pub mod keys;
pub mod master;
pub mod node;
pub mod prereqs;
pub mod rbac;
pub mod stage;
pub mod workers;

use crate::saga::{Saga, StepName};
use flotilla_azure::ResourceId;
use serde_json::Value;

/// Where the steps' inputs live (from configuration, never from events).
#[derive(Clone, Debug)]
pub struct Env {
    pub subscription_id: String,
    /// ARM id of the staging storage account (`keys` lists its keys).
    pub staging_account_id: ResourceId,
    /// Blob URL prefix nodes fetch the init script from (`https://<acct>.blob.../<container>/`).
    pub staging_url: String,
    /// Key Vault URL, for secret references in the init script.
    pub keyvault_url: String,
    /// ARM id of that vault: the scope above the per-secret role assignments
    /// `keys` gives the job's nodes.
    pub keyvault_id: ResourceId,
    /// Service-principal identity mode: the cluster principal's client id.
    pub sp_client_id: Option<String>,
    /// Tenant of the cluster principal (service-principal nodes ask its token endpoint).
    pub tenant_id: Option<String>,
    /// Service-principal identity mode: the cluster principal's object id,
    /// which its role assignments name (without it the cluster gets no role).
    pub sp_object_id: Option<String>,
    /// The role definition (GUID) the master's identity gets on the job's
    /// worker scale sets: deployments define a narrow custom role; the
    /// default is the built-in [`rbac::VIRTUAL_MACHINE_CONTRIBUTOR`].
    pub scaler_role: String,
}

impl Env {
    /// The staging container's name: the last segment of [`Env::staging_url`].
    pub fn staging_container(&self) -> &str {
        self.staging_url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
    }

    /// The staging container as an ARM scope (role assignments on it):
    /// `{account}/blobServices/default/containers/{container}`.
    pub fn staging_container_id(&self) -> ResourceId {
        self.staging_account_id
            .child("blobServices", "default")
            .child("containers", self.staging_container())
    }
}

/// Where a secret's value comes from when `keys` writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `listKeys` on the staging account, first key.
    StorageKey,
    /// The configured service-principal secret.
    ServicePrincipal,
    /// Written by the nodes themselves (the first master's join information
    /// and kubeconfig): created now with the placeholder
    /// [`crate::names::PENDING_SECRET`], so that the nodes can be granted
    /// exactly these secrets, and deleted by undo.
    Node,
    /// The job's outputs, composed by `join` once the cluster is up
    /// ([`join::outputs`]): endpoints, identities, resource ids.
    Outputs,
}

/// Where, in a scale set body, the init extension's protected settings are:
/// the staging credential (the storage key, or the node identity's object
/// id) is added there just before the PUT (and a key is never stored).
pub const PROTECTED_SETTINGS: &str =
    "/properties/virtualMachineProfile/extensionProfile/extensions/0/properties/protectedSettings";

/// The field of the protected settings that carries the storage key.
pub const STORAGE_KEY_FIELD: &str = "storageAccountKey";

/// One idempotent operation of a step.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// ARM create-or-update.
    Arm {
        id: ResourceId,
        api_version: &'static str,
        body: Value,
    },
    /// A scale set whose init extension needs its staging credential (the
    /// storage key read from Key Vault, or the node identity's object id
    /// recorded in the saga) just before the PUT.
    ScaleSet { id: ResourceId, body: Value },
    /// A Key Vault secret.
    Secret { name: String, source: SecretSource },
    /// A staged blob.
    Blob {
        name: String,
        content: Vec<u8>,
        content_type: &'static str,
    },
    /// Put flotilla's NSG on an existing subnet (its other properties as
    /// read just before); undone by putting back the NSG it had.
    AttachNsg { subnet: ResourceId, nsg: ResourceId },
    /// A role assignment for one of the job's identities (its principal id
    /// is resolved, and recorded in the saga, just before the PUT), with an
    /// optional ABAC condition (`conditionVersion` 2.0).
    RoleAssignment {
        id: ResourceId,
        role: String,
        principal: rbac::Principal,
        condition: Option<String>,
    },
    /// Wait until every node of these scale sets has joined.
    AwaitNodes { scale_sets: Vec<(ResourceId, u32)> },
}

/// How much of each operation a plan builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Every operation whole, ready to send.
    Full,
    /// The same operations, naming the same resources, without the request
    /// bodies and blob contents that take work to build (init scripts, scale
    /// set models): what recording intents and pre-flight's list of names
    /// read. Never sent.
    Outline,
}

impl Detail {
    /// `build()` in a full plan; nothing in an outline.
    pub(crate) fn build<T: Default>(self, build: impl FnOnce() -> T) -> T {
        match self {
            Detail::Full => build(),
            Detail::Outline => T::default(),
        }
    }
}

/// The operations of `step` for this saga, in order, ready to send.
pub fn plan(step: StepName, saga: &Saga, env: &Env) -> Vec<Op> {
    plan_with(step, saga, env, Detail::Full)
}

/// The operations of `step` as [`Detail::Outline`]: what they create, not what they send.
pub fn outline(step: StepName, saga: &Saga, env: &Env) -> Vec<Op> {
    plan_with(step, saga, env, Detail::Outline)
}

fn plan_with(step: StepName, saga: &Saga, env: &Env, detail: Detail) -> Vec<Op> {
    match step {
        StepName::Stage => stage::plan(saga, env, detail),
        StepName::Prereqs => prereqs::plan(saga, env, detail),
        StepName::Keys => keys::plan(saga, env, detail),
        StepName::Master => master::plan(saga, env, detail),
        StepName::Workers => workers::plan(saga, env, detail),
        StepName::Join => join::plan(saga, env),
    }
}

/// The subnet a node role goes into: flotilla's own (`names::CONTROL_PLANE_SUBNET`
/// or `names::WORKER_SUBNET` of the job's VNet), or the matching subnet of
/// the spec's existing network.
pub fn subnet_id(saga: &Saga, env: &Env, subnet: &str) -> ResourceId {
    if let Some((vnet, e)) = existing_vnet(saga) {
        let name = if subnet == crate::names::CONTROL_PLANE_SUBNET {
            &e.control_plane_subnet
        } else {
            &e.worker_subnet
        };
        return vnet.child("subnets", name);
    }
    rg_id(
        saga,
        env,
        "Microsoft.Network",
        "virtualNetworks",
        &crate::names::vnet(&saga.id),
    )
    .child("subnets", subnet)
}

/// The spec's existing VNet (its id parsed) and what it names, when it has one.
pub fn existing_vnet(saga: &Saga) -> Option<(ResourceId, &crate::spec::ExistingNetwork)> {
    let e = saga.spec.network.existing.as_ref()?;
    Some((e.vnet()?, e))
}

pub(crate) fn rg_id(saga: &Saga, env: &Env, namespace: &str, kind: &str, name: &str) -> ResourceId {
    ResourceId::new(
        &env.subscription_id,
        &saga.spec.resource_group,
        namespace,
        kind,
        name,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ClusterSpec, ExistingNetwork, IdentityMode, StagingAccess};

    fn env() -> Env {
        let sub = "00000000-0000-0000-0000-000000000000";
        let ops = |ns: &str, kind: &str, name: &str| ResourceId::new(sub, "ops", ns, kind, name);
        Env {
            subscription_id: sub.into(),
            staging_account_id: ops("Microsoft.Storage", "storageAccounts", "staging"),
            staging_url: "https://staging.blob.core.windows.net/staging/".into(),
            keyvault_url: "https://kv.vault.azure.net".into(),
            keyvault_id: ops("Microsoft.KeyVault", "vaults", "kv"),
            sp_client_id: Some("cluster-sp".into()),
            tenant_id: Some("tenant".into()),
            sp_object_id: Some("cluster-sp-object".into()),
            scaler_role: rbac::VIRTUAL_MACHINE_CONTRIBUTOR.into(),
        }
    }

    /// What an operation creates and how, without what it sends.
    fn named(op: &Op) -> String {
        match op {
            Op::Arm {
                id, api_version, ..
            } => format!("arm {id} {api_version}"),
            Op::ScaleSet { id, .. } => format!("scale set {id}"),
            Op::Blob {
                name, content_type, ..
            } => format!("blob {name} {content_type}"),
            other => format!("{other:?}"),
        }
    }

    /// Whether an operation carries a body or content to send.
    fn carries(op: &Op) -> bool {
        match op {
            Op::Arm { body, .. } | Op::ScaleSet { body, .. } => !body.is_null(),
            Op::Blob { content, .. } => !content.is_empty(),
            _ => false,
        }
    }

    #[test]
    fn an_outline_names_what_the_plan_creates_and_sends_nothing() {
        let example = ClusterSpec::example();
        let mut key_and_principal = ClusterSpec::example();
        key_and_principal.identity = IdentityMode::ServicePrincipal;
        key_and_principal.staging.access = StagingAccess::AccountKey;
        let mut existing = ClusterSpec::example();
        existing.network.existing = Some(ExistingNetwork {
            vnet_id: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/shared".into(),
            control_plane_subnet: "cp".into(),
            worker_subnet: "workers".into(),
            attach_nsgs: true,
        });
        for spec in [example, key_and_principal, existing] {
            let saga = Saga::new("job-1".into(), spec, time::OffsetDateTime::UNIX_EPOCH);
            let mut sent = 0;
            for step in StepName::ALL {
                let full = plan(step, &saga, &env());
                let outline = outline(step, &saga, &env());
                assert_eq!(
                    full.iter().map(named).collect::<Vec<_>>(),
                    outline.iter().map(named).collect::<Vec<_>>(),
                    "{step:?}"
                );
                assert!(!outline.iter().any(carries), "{step:?}");
                sent += full.iter().filter(|op| carries(op)).count();
            }
            assert!(sent >= 6, "the full plans send bodies and scripts: {sent}");
        }
    }
}
