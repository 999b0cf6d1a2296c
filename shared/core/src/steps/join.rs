//! `join`: takes `step.succeeded{workers}`; re-checks, on a schedule, the
//! instance view of every scale set until each node's init extension reports
//! success (the node fetched the init script with its key and joined).
//! A node whose init failed fails the step (`NodeInitFailed`); so does running
//! out of checks (`JoinTimeout`). Emits `step.succeeded{join}` and
//! `job.succeeded`. Creates nothing; undo has nothing of its own.

use super::{rg_id, Env, Op};
use crate::names;
use crate::saga::Saga;

pub fn plan(saga: &Saga, env: &Env) -> Vec<Op> {
    let vmss = |name: String| {
        rg_id(
            saga,
            env,
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            &name,
        )
    };
    let mut sets = vec![(vmss(names::master_vmss(&saga.id)), saga.spec.master.size)];
    for p in &saga.spec.worker_pools {
        let count = saga.pools.get(&p.name).copied().unwrap_or(p.min);
        sets.push((vmss(names::pool_vmss(&saga.id, &p.name)), count));
    }
    vec![Op::AwaitNodes { scale_sets: sets }]
}
