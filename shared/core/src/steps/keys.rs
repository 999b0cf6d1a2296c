//! `keys`: takes `step.succeeded{prereqs}`; makes the credentials the nodes
//! need available before any scale set exists. Emits `step.succeeded{keys}`.
//!
//! - **The job's node identity**, a user-assigned managed identity
//!   `{job}-nodes` (tagged with the job), which every scale set of the job
//!   attaches. It exists in `managed-identity` mode and whenever the nodes
//!   read staging with an identity. A system-assigned identity would not do:
//!   it exists only once its scale set does, while the nodes need their
//!   grants at their first boot.
//! - **Staging** (see [`crate::spec::StagingAccess`]): with `identity` (the
//!   default) the node identity gets `Storage Blob Data Reader` on the
//!   staging container with an ABAC condition that limits reads to the job's
//!   own blobs (`{job}/…`); no account key is read or stored. With
//!   `account-key` (the seed flow, explicit) the staging account's key is
//!   read (`listKeys`) into the Key Vault secret `{job}-storage-key`.
//! - **The join secrets** the first master writes and the other nodes read
//!   (join token, CA hash, certificate key, kubeconfig) are created now with
//!   a placeholder value ([`names::PENDING_SECRET`]), so that the node
//!   principal can be given `Key Vault Secrets Officer` on exactly those
//!   secrets (a role assignment's scope is an existing secret): grants per
//!   job and per secret, none vault-wide. The node principal is the node
//!   identity, or in `service-principal` mode the cluster principal (when its
//!   object id is configured; the principal is shared by the deployment's
//!   jobs, so the isolation between jobs is then the deployment's).
//!   Every node of a job shares the one identity, so a worker could rewrite
//!   its own job's join secrets, never another job's.
//!
//! In service-principal mode it also copies the cluster principal's secret
//! into `{job}-sp-secret`. Values never enter saga state, events or logs: the
//! saga records the secret ids. Undo: delete what it created, newest first,
//! so the nodes' access ends with the job.

use super::rbac::{self, Principal};
use super::{rg_id, Detail, Env, Op, SecretSource};
use crate::names;
use crate::saga::Saga;
use crate::spec::{IdentityMode, StagingAccess};
use flotilla_azure::models::{api, UserAssignedIdentity};
use flotilla_azure::ResourceId;

/// The built-in role `Storage Blob Data Reader` (read blobs and list containers).
pub const STORAGE_BLOB_DATA_READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";
/// The built-in role `Key Vault Secrets Officer` (every secret data action):
/// the node principal's role on each of its job's join secrets.
pub const KEY_VAULT_SECRETS_OFFICER: &str = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7";
/// The data action the node identity's condition restricts.
pub const BLOB_READ_ACTION: &str =
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";

pub fn plan(saga: &Saga, env: &Env, detail: Detail) -> Vec<Op> {
    let mut ops = Vec::new();
    if has_node_identity(saga) {
        ops.push(node_identity_op(saga, env, detail));
    }
    ops.push(match saga.spec.staging.access {
        StagingAccess::Identity => staging_reader_op(saga, env),
        StagingAccess::AccountKey => Op::Secret {
            name: names::storage_key_secret(&saga.id),
            source: SecretSource::StorageKey,
        },
    });
    if saga.spec.identity == IdentityMode::ServicePrincipal {
        ops.push(Op::Secret {
            name: names::sp_secret(&saga.id),
            source: SecretSource::ServicePrincipal,
        });
    }
    let node_secrets = names::node_secrets(&saga.id);
    ops.extend(node_secrets.iter().map(|name| Op::Secret {
        name: name.clone(),
        source: SecretSource::Node,
    }));
    if let Some(principal) = node_principal(saga, env) {
        ops.extend(node_secrets.iter().map(|name| {
            let scope = env.keyvault_id.child("secrets", name);
            let name = rbac::assignment_name(&scope, &principal, KEY_VAULT_SECRETS_OFFICER);
            Op::RoleAssignment {
                id: scope.extension(rbac::NAMESPACE, rbac::ROLE_ASSIGNMENTS, &name),
                role: KEY_VAULT_SECRETS_OFFICER.into(),
                principal: principal.clone(),
                condition: None,
            }
        }));
    }
    ops
}

/// Whether the job has a node identity: in `managed-identity` mode always
/// (its nodes reach Key Vault with it), otherwise when staging is read with it.
pub fn has_node_identity(saga: &Saga) -> bool {
    saga.spec.identity == IdentityMode::ManagedIdentity
        || saga.spec.staging.access == StagingAccess::Identity
}

/// Who the job's nodes are to Key Vault: the node identity, or the cluster
/// service principal (when its object id is configured).
pub fn node_principal(saga: &Saga, env: &Env) -> Option<Principal> {
    match saga.spec.identity {
        IdentityMode::ManagedIdentity => Some(Principal::UserAssigned(node_identity_id(saga, env))),
        IdentityMode::ServicePrincipal => env.sp_object_id.clone().map(Principal::ServicePrincipal),
    }
}

/// The ARM id of the job's node identity.
pub fn node_identity_id(saga: &Saga, env: &Env) -> ResourceId {
    rg_id(
        saga,
        env,
        "Microsoft.ManagedIdentity",
        "userAssignedIdentities",
        &names::node_identity(&saga.id),
    )
}

/// The ABAC condition of the node identity's reader role: any action but a
/// blob read is not restricted (the role's container read), and a blob read
/// only under `prefix` (the blob's path inside the container).
pub fn read_condition(prefix: &str) -> String {
    format!(
        "((!(ActionMatches{{'{BLOB_READ_ACTION}'}})) OR (@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path] StringStartsWith '{}'))",
        prefix.replace('\'', "")
    )
}

/// The job's node identity.
fn node_identity_op(saga: &Saga, env: &Env, detail: Detail) -> Op {
    let body = detail.build(|| {
        serde_json::to_value(UserAssignedIdentity {
            location: saga.spec.location.clone(),
            tags: names::tags(&saga.id, &saga.spec),
        })
        .expect("models serialise")
    });
    Op::Arm {
        id: node_identity_id(saga, env),
        api_version: api::MANAGED_IDENTITY,
        body,
    }
}

/// The node identity's reader role on the staging container, limited to the
/// job's blob prefix.
fn staging_reader_op(saga: &Saga, env: &Env) -> Op {
    let principal = Principal::UserAssigned(node_identity_id(saga, env));
    let scope = env.staging_container_id();
    let name = rbac::assignment_name(&scope, &principal, STORAGE_BLOB_DATA_READER);
    Op::RoleAssignment {
        id: scope.extension(rbac::NAMESPACE, rbac::ROLE_ASSIGNMENTS, &name),
        role: STORAGE_BLOB_DATA_READER.into(),
        principal,
        condition: Some(read_condition(&names::blob_prefix(&saga.id))),
    }
}
