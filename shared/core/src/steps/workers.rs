//! `workers`: takes `step.succeeded{master}`; creates one scale set per
//! worker pool at the pool's minimum count (instance type, disk, zones) on the
//! worker subnet, then the cluster identity's role assignments on them (see
//! [`super::rbac`]). Emits `step.succeeded{workers}`. Undo: delete the
//! assignments, then the scale sets.
//! Also serves `job.scale-requested` (PATCH `sku.capacity` within min..max),
//! and day-2 pools (`job.pool-add-requested`, `job.pool-remove-requested`):
//! [`day2_plan`] is one pool's share of `stage`, `workers` and `join`.

use super::master::{scale_set, ScaleSetShape};
use super::node::Role;
use super::{Detail, Env, Op};
use crate::names;
use crate::saga::{Saga, StepName};
use crate::spec::WorkerPool;

pub fn plan(saga: &Saga, env: &Env, detail: Detail) -> Vec<Op> {
    let mut ops: Vec<Op> = saga
        .spec
        .worker_pools
        .iter()
        .flat_map(|p| pool_plan(saga, env, p, detail))
        .collect();
    ops.extend(super::rbac::plan(saga, env));
    ops
}

/// What one worker pool needs on top of the cluster: its scale set.
pub fn pool_plan(saga: &Saga, env: &Env, p: &WorkerPool, detail: Detail) -> Vec<Op> {
    let (id, body) = scale_set(
        saga,
        env,
        ScaleSetShape {
            name: names::pool_vmss(&saga.id, &p.name),
            role: &p.name,
            capacity: p.min,
            instance_type: &p.instance_type,
            disk: &p.disk,
            zones: &p.zones,
            subnet: names::WORKER_SUBNET,
            behind_lb: false,
            script: Role::Pool(&p.name),
        },
        detail,
    );
    vec![Op::ScaleSet { id, body }]
}

/// A day-2 pool of a running cluster, with the creation steps' own code:
/// the pool's init script (`stage`), its scale set and the master identity's
/// scaler role on it (`workers`), then the wait for its `min` nodes to be
/// Ready (`join`). Each operation with the
/// step whose resource it records. Removing the pool deletes what the
/// operations before the wait record, newest first.
pub fn day2_plan(saga: &Saga, env: &Env, p: &WorkerPool) -> Vec<(StepName, Op)> {
    let mut ops = vec![(
        StepName::Stage,
        super::stage::script(saga, env, Role::Pool(&p.name), Detail::Full),
    )];
    ops.extend(
        pool_plan(saga, env, p, Detail::Full)
            .into_iter()
            .chain(super::rbac::pool_plan(saga, env, &p.name))
            .map(|op| (StepName::Workers, op)),
    );
    let vmss = super::rg_id(
        saga,
        env,
        "Microsoft.Compute",
        "virtualMachineScaleSets",
        &names::pool_vmss(&saga.id, &p.name),
    );
    ops.push((
        StepName::Join,
        Op::AwaitNodes {
            scale_sets: vec![(vmss, p.min)],
        },
    ));
    ops
}
