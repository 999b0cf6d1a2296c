//! `stage`: takes `io.flotilla.job.requested`; writes the cluster spec and the
//! node init scripts to the staging container: `{job}/init.sh` for the
//! control-plane nodes and `{job}/init-{pool}.sh` per worker pool, each the
//! bootstrap template rendered for the job and that role (see
//! [`super::node`]). Emits `step.succeeded{stage}`.
//! Undo: delete the blobs (a missing blob counts as deleted).

use super::node::{self, Role};
use super::{Detail, Env, Op};
use crate::names;
use crate::saga::Saga;

pub fn plan(saga: &Saga, env: &Env, detail: Detail) -> Vec<Op> {
    let mut ops = vec![Op::Blob {
        name: names::spec_blob(&saga.id),
        content: detail.build(|| serde_json::to_vec_pretty(&saga.spec).expect("specs serialise")),
        content_type: "application/json",
    }];
    for role in node::roles(saga) {
        ops.push(script(saga, env, role, detail));
    }
    ops
}

/// The staged init script of one role (also what a day-2 `pool add` stages
/// for its new pool).
pub fn script(saga: &Saga, env: &Env, role: Role<'_>, detail: Detail) -> Op {
    Op::Blob {
        name: role.blob(&saga.id),
        content: detail.build(|| init_script(saga, env, role).into_bytes()),
        content_type: "text/x-shellscript",
    }
}

/// The script the nodes of `role` run at boot. It carries references (secret
/// names, blob and vault URLs), never secret values.
pub fn init_script(saga: &Saga, env: &Env, role: Role<'_>) -> String {
    node::render(saga, env, role)
}
