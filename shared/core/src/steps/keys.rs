//! `keys`: takes `step.succeeded{prereqs}`; reads the staging account's key
//! (`listKeys`) and, in service-principal mode, the cluster principal's
//! secret, and writes them as Key Vault secrets for the nodes. Values never
//! enter saga state, events or logs: the saga records the secret ids.
//! Emits `step.succeeded{keys}`. Undo: delete the secrets.

use super::{Op, SecretSource};
use crate::names;
use crate::saga::Saga;
use crate::spec::IdentityMode;

pub fn plan(saga: &Saga) -> Vec<Op> {
    let mut ops = vec![Op::Secret {
        name: names::storage_key_secret(&saga.id),
        source: SecretSource::StorageKey,
    }];
    if saga.spec.identity == IdentityMode::ServicePrincipal {
        ops.push(Op::Secret {
            name: names::sp_secret(&saga.id),
            source: SecretSource::ServicePrincipal,
        });
    }
    ops
}
