//! `workers`: takes `step.succeeded{master}`; creates one scale set per
//! worker pool at the pool's minimum count (instance type, disk, zones) on the
//! worker subnet, then the cluster identity's role assignments on them (see
//! [`super::rbac`]). Emits `step.succeeded{workers}`. Undo: delete the
//! assignments, then the scale sets.
//! Also serves `job.scale-requested` (PATCH `sku.capacity` within min..max).

use super::master::{scale_set, ScaleSetShape};
use super::node::Role;
use super::{Env, Op};
use crate::names;
use crate::saga::Saga;

pub fn plan(saga: &Saga, env: &Env) -> Vec<Op> {
    let mut ops: Vec<Op> = saga
        .spec
        .worker_pools
        .iter()
        .map(|p| {
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
            );
            Op::ScaleSet { id, body }
        })
        .collect();
    ops.extend(super::rbac::plan(saga, env));
    ops
}
