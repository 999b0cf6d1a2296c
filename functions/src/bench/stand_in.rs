//! The world of `flotilla bench --simulator none`: the engine, its workers
//! and sweeper on the embedded store and bus in a data dir, as in every
//! bench, but with the Azure ports answered by the tests' in-memory fake
//! cloud instead of the simulator. Each Azure call is then a map lookup,
//! as each checkpoint's work is in the peers' jobs (`scripts/bench-peers.sh`):
//! what is measured is the engine's own cost, durability included.

use crate::local::Consumers;
use flotilla_core::decide::Policy;
use flotilla_core::embedded::{BusOptions, Embedded};
use flotilla_core::engine::{Engine, SweepOptions};
use flotilla_core::testing::{fake_azure, fake_env, FakeCloud};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct StandInWorld {
    pub cloud: Arc<FakeCloud>,
    pub engine: Arc<Engine>,
    pub embedded: Embedded,
    pub(super) consumers: Consumers,
}

impl StandInWorld {
    /// Starts `workers` workers (at least one) and a sweeper on a store in `dir`
    /// (in memory when `None`), against a fake cloud whose operations finish
    /// at once and whose quotas are `quotas`.
    pub fn start(
        dir: Option<&Path>,
        workers: usize,
        policy: Policy,
        sweep: SweepOptions,
        quotas: &std::collections::BTreeMap<String, u64>,
    ) -> Result<StandInWorld, crate::error::Error> {
        let bus = BusOptions::default();
        let max_delivery = bus.max_delivery_count;
        let embedded = match dir {
            Some(dir) => Embedded::open(&dir.join("flotilla.db"), bus),
            None => Embedded::in_memory(bus),
        }
        .map_err(|e| format!("store: {e}"))?;
        let cloud = Arc::new(FakeCloud::default());
        // Zero-length operations, as the simulator's in the other benches.
        cloud.lro_polls.store(0, Ordering::SeqCst);
        for (name, limit) in quotas {
            cloud.set_quota(name, i64::try_from(*limit).unwrap_or(i64::MAX));
        }
        let engine = Arc::new(Engine::new(
            embedded.store(),
            embedded.bus(),
            fake_azure(&cloud),
            fake_env(),
            policy,
        ));
        let consumers = Consumers::start(&engine, workers.max(1), max_delivery, sweep)?;
        Ok(StandInWorld {
            cloud,
            engine,
            embedded,
            consumers,
        })
    }

    pub async fn shutdown(mut self) {
        self.consumers.stop().await;
    }
}
