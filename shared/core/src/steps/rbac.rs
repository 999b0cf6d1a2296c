//! The cluster identity's role assignments, part of `workers` (after the
//! worker scale sets exist, since they are the scopes): the master's identity
//! gets the scaler role on each worker scale set of its own job and on the
//! job's worker subnet, and nothing wider. The identity is the master scale set's system-assigned identity
//! (`managed-identity`; its principal id is read from ARM once the scale set
//! exists and recorded in the saga) or the cluster service principal
//! (`service-principal`; its object id from `CLUSTER_SP_OBJECT_ID`; without
//! it the cluster gets no role and cannot scale itself). Workers get no ARM
//! role: their bootstrap reads only the init script and the join secrets.
//!
//! An assignment's name is a GUID derived from its scope, principal and
//! role, so a retry PUTs the same assignment again instead of a second one.
//! Undo deletes the assignments like any recorded ARM resource.

use super::{rg_id, Env, Op};
use crate::names;
use crate::saga::Saga;
use crate::spec::IdentityMode;
use flotilla_azure::ResourceId;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The built-in role `Virtual Machine Contributor`: the scaler role when no
/// narrower custom role is configured (`CLUSTER_SCALER_ROLE_ID`).
pub const VIRTUAL_MACHINE_CONTRIBUTOR: &str = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c";

/// The role assignment provider and type, as an extension of a scope.
pub const NAMESPACE: &str = "Microsoft.Authorization";
pub const ROLE_ASSIGNMENTS: &str = "roleAssignments";

/// Where the saga records the service principal's object id (beside the
/// scale sets' principal ids, which are keyed by scale set name).
pub const SERVICE_PRINCIPAL_KEY: &str = "service-principal";

/// Whose identity an assignment is for.
#[derive(Clone, Debug, PartialEq)]
pub enum Principal {
    /// The system-assigned identity of this scale set.
    ScaleSet(ResourceId),
    /// The cluster service principal, by object id.
    ServicePrincipal(String),
    /// A user-assigned identity (the job's node identity, see
    /// [`super::keys`]); its principal id is read from ARM once it exists.
    UserAssigned(ResourceId),
}

impl Principal {
    /// The key its principal id is recorded under in `Saga::principals`.
    pub fn key(&self) -> String {
        match self {
            Principal::ScaleSet(id) | Principal::UserAssigned(id) => id.name().to_string(),
            Principal::ServicePrincipal(_) => SERVICE_PRINCIPAL_KEY.into(),
        }
    }

    /// What names it in an assignment's GUID: stable before its principal id is known.
    fn stable_name(&self) -> String {
        match self {
            Principal::ScaleSet(id) => id.to_string().to_ascii_lowercase(),
            Principal::ServicePrincipal(oid) => format!("sp:{}", oid.to_ascii_lowercase()),
            Principal::UserAssigned(id) => format!("uai:{}", id.to_string().to_ascii_lowercase()),
        }
    }
}

/// The deterministic GUID naming the assignment of `role` to `principal` at `scope`.
pub fn assignment_name(scope: &ResourceId, principal: &Principal, role: &str) -> String {
    let text = format!(
        "{}|{}|{}",
        scope.to_string().to_ascii_lowercase(),
        principal.stable_name(),
        role.to_ascii_lowercase()
    );
    let digest = Sha256::digest(text.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The full id of a role definition (a built-in or a custom role's GUID).
pub fn role_definition_id(subscription: &str, role: &str) -> String {
    format!("/subscriptions/{subscription}/providers/{NAMESPACE}/roleDefinitions/{role}")
}

/// The PUT body of an assignment, with its ABAC condition if it has one.
pub fn body(subscription: &str, role: &str, principal_id: &str, condition: Option<&str>) -> Value {
    let mut body = json!({
        "properties": {
            "roleDefinitionId": role_definition_id(subscription, role),
            "principalId": principal_id,
            "principalType": "ServicePrincipal",
        }
    });
    if let Some(condition) = condition {
        body["properties"]["condition"] = json!(condition);
        body["properties"]["conditionVersion"] = json!("2.0");
    }
    body
}

/// The identity the cluster acts as, if it has one flotilla can assign roles to.
pub fn cluster_principal(saga: &Saga, env: &Env) -> Option<Principal> {
    match saga.spec.identity {
        IdentityMode::ManagedIdentity => Some(Principal::ScaleSet(rg_id(
            saga,
            env,
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            &names::master_vmss(&saga.id),
        ))),
        IdentityMode::ServicePrincipal => env.sp_object_id.clone().map(Principal::ServicePrincipal),
    }
}

/// The actions of the narrow custom role `flotilla cluster scaler` that
/// deployments define once (infra/) and name in `CLUSTER_SCALER_ROLE_ID`:
/// read a scale set and its instances, change its capacity, and join the
/// worker subnet (ARM's linked access check when a scale-out adds NICs).
pub const SCALER_ACTIONS: &[&str] = &[
    "Microsoft.Compute/virtualMachineScaleSets/instanceView/read",
    "Microsoft.Compute/virtualMachineScaleSets/read",
    "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/instanceView/read",
    "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
    "Microsoft.Compute/virtualMachineScaleSets/write",
    "Microsoft.Network/virtualNetworks/subnets/join/action",
];

/// The name deployments give the custom scaler role.
pub const SCALER_ROLE_NAME: &str = "flotilla cluster scaler";

/// The PUT body of the custom scaler role, assignable in `scope` (the
/// subscription or the clusters' resource group).
pub fn scaler_role_definition(scope: &str) -> Value {
    json!({
        "properties": {
            "roleName": SCALER_ROLE_NAME,
            "description": "What a flotilla cluster's own identity may do on its job's worker scale sets: read them and their instances, change their capacity, join the worker subnet.",
            "type": "CustomRole",
            "permissions": [{"actions": SCALER_ACTIONS, "notActions": []}],
            "assignableScopes": [scope],
        }
    })
}

/// The master identity's scaler role on each of the job's worker scale
/// sets, and on the job's worker subnet (which a scale-out joins).
pub fn plan(saga: &Saga, env: &Env) -> Vec<Op> {
    let Some(principal) = cluster_principal(saga, env) else {
        return vec![];
    };
    // flotilla's own worker subnet, or the existing network's.
    let subnet = super::subnet_id(saga, env, names::WORKER_SUBNET);
    saga.spec
        .worker_pools
        .iter()
        .map(|p| {
            rg_id(
                saga,
                env,
                "Microsoft.Compute",
                "virtualMachineScaleSets",
                &names::pool_vmss(&saga.id, &p.name),
            )
        })
        .chain([subnet])
        .map(|scope| scaler_assignment(scope, &principal, env))
        .collect()
}

fn scaler_assignment(scope: ResourceId, principal: &Principal, env: &Env) -> Op {
    let name = assignment_name(&scope, principal, &env.scaler_role);
    Op::RoleAssignment {
        id: scope.extension(NAMESPACE, ROLE_ASSIGNMENTS, &name),
        role: env.scaler_role.clone(),
        principal: principal.clone(),
        condition: None,
    }
}

/// The master identity's scaler role on one worker pool's scale set: what a
/// day-2 `pool add` gives its new pool (the same assignment, by the same
/// name, that creation gives each pool), removed with the pool. The worker
/// subnet's assignment exists already.
pub fn pool_plan(saga: &Saga, env: &Env, pool: &str) -> Option<Op> {
    let principal = cluster_principal(saga, env)?;
    let scope = rg_id(
        saga,
        env,
        "Microsoft.Compute",
        "virtualMachineScaleSets",
        &names::pool_vmss(&saga.id, pool),
    );
    Some(scaler_assignment(scope, &principal, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmss(name: &str) -> ResourceId {
        ResourceId::new(
            "s",
            "rg",
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            name,
        )
    }

    #[test]
    fn names_are_guids_that_depend_on_scope_principal_and_role_only() {
        let master = Principal::ScaleSet(vmss("m"));
        let a = assignment_name(&vmss("w1"), &master, VIRTUAL_MACHINE_CONTRIBUTOR);
        assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
        assert_eq!(
            a,
            assignment_name(&vmss("W1"), &master, VIRTUAL_MACHINE_CONTRIBUTOR),
            "case of the scope does not matter"
        );
        assert_ne!(
            a,
            assignment_name(&vmss("w2"), &master, VIRTUAL_MACHINE_CONTRIBUTOR)
        );
        assert_ne!(
            a,
            assignment_name(
                &vmss("w1"),
                &Principal::ScaleSet(vmss("x")),
                VIRTUAL_MACHINE_CONTRIBUTOR
            )
        );
        assert_ne!(a, assignment_name(&vmss("w1"), &master, "other-role"));
    }

    #[test]
    fn the_body_names_the_role_definition_and_principal() {
        let b = body("s", VIRTUAL_MACHINE_CONTRIBUTOR, "p-1", None);
        assert_eq!(
            b["properties"]["roleDefinitionId"],
            format!("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/{VIRTUAL_MACHINE_CONTRIBUTOR}")
        );
        assert_eq!(b["properties"]["principalId"], "p-1");
        assert_eq!(b["properties"]["principalType"], "ServicePrincipal");
        assert!(b["properties"].get("condition").is_none());
        let c = body("s", "r", "p-1", Some("(x)"));
        assert_eq!(c["properties"]["condition"], "(x)");
        assert_eq!(c["properties"]["conditionVersion"], "2.0");
    }
}
