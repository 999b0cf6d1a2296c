//! `keys`: takes `step.succeeded{prereqs}`; makes the credentials the nodes
//! need available before any scale set exists. Emits `step.succeeded{keys}`.
//!
//! What the nodes read their init script with depends on `staging.access`
//! (see [`crate::spec::StagingAccess`]):
//! - `identity` (default): creates the job's node identity, a user-assigned
//!   managed identity `{job}-nodes` (tagged with the job), and gives it
//!   `Storage Blob Data Reader` on the staging container with an ABAC
//!   condition that limits reads to the job's own blobs (`{job}/…`). A
//!   system-assigned identity would not do: it exists only once its scale set
//!   does, while the init extension downloads at the instances' first boot.
//!   No account key is read or stored. Undo deletes the assignment, then the
//!   identity, so the nodes' access ends with the job.
//! - `account-key` (the seed flow, explicit): reads the staging account's key
//!   (`listKeys`) into the Key Vault secret `{job}-storage-key`.
//!
//! In service-principal mode it also copies the cluster principal's secret
//! into `{job}-sp-secret`. Values never enter saga state, events or logs: the
//! saga records the secret ids. Undo: delete what it created, newest first.

use super::rbac::{self, Principal};
use super::{rg_id, Env, Op, SecretSource};
use crate::names;
use crate::saga::Saga;
use crate::spec::{IdentityMode, StagingAccess};
use flotilla_azure::models::{api, UserAssignedIdentity};
use flotilla_azure::ResourceId;

/// The built-in role `Storage Blob Data Reader` (read blobs and list containers).
pub const STORAGE_BLOB_DATA_READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";
/// The data action the node identity's condition restricts.
pub const BLOB_READ_ACTION: &str =
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";

pub fn plan(saga: &Saga, env: &Env) -> Vec<Op> {
    let mut ops = match saga.spec.staging.access {
        StagingAccess::Identity => node_identity_ops(saga, env),
        StagingAccess::AccountKey => vec![Op::Secret {
            name: names::storage_key_secret(&saga.id),
            source: SecretSource::StorageKey,
        }],
    };
    if saga.spec.identity == IdentityMode::ServicePrincipal {
        ops.push(Op::Secret {
            name: names::sp_secret(&saga.id),
            source: SecretSource::ServicePrincipal,
        });
    }
    ops
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

/// The node identity, then its reader role on the staging container limited
/// to the job's blob prefix.
fn node_identity_ops(saga: &Saga, env: &Env) -> Vec<Op> {
    let id = node_identity_id(saga, env);
    let body = UserAssignedIdentity {
        location: saga.spec.location.clone(),
        tags: names::tags(&saga.id, &saga.spec),
    };
    let principal = Principal::UserAssigned(id.clone());
    let scope = env.staging_container_id();
    let name = rbac::assignment_name(&scope, &principal, STORAGE_BLOB_DATA_READER);
    vec![
        Op::Arm {
            id,
            api_version: api::MANAGED_IDENTITY,
            body: serde_json::to_value(body).expect("models serialise"),
        },
        Op::RoleAssignment {
            id: scope.extension(rbac::NAMESPACE, rbac::ROLE_ASSIGNMENTS, &name),
            role: STORAGE_BLOB_DATA_READER.into(),
            principal,
            condition: Some(read_condition(&names::blob_prefix(&saga.id))),
        },
    ]
}
