//! Chooses the backends from app settings: with none set, the local world
//! (embedded store and bus, built-in simulator); otherwise Cosmos DB, Service
//! Bus, Blob Storage and ARM as configured (see the README's settings table).

use crate::local::{LocalOptions, LocalWorld, Link};
use flotilla_core::decide::Policy;
use flotilla_core::embedded::BusOptions;
use flotilla_core::engine::Engine;
use std::sync::Arc;
use std::time::Duration;

/// A running engine and whatever must live as long as it.
pub struct Backends {
    pub engine: Arc<Engine>,
    /// True when the engine consumes its own bus (embedded); false when the
    /// Functions host (or `flotilla worker`) delivers the messages.
    pub self_consuming: bool,
    local: Option<LocalWorld>,
}

impl Backends {
    /// Builds the backends the settings ask for.
    pub async fn from_settings() -> Result<Backends, String> {
        let dir = crate::local::default_data_dir();
        let lro = Duration::from_secs(1);
        let world = LocalWorld::start(LocalOptions {
            staging: crate::local::StagingChoice::Simulator,
            data_dir: Some(dir),
            lro,
            persist_sim: true,
            throttle: true,
            link: Link::Https,
            bus: BusOptions::default(),
            workers: 4,
            policy: Policy { backoff_base: Duration::from_millis(500), join_interval: Duration::from_millis(500), ..Policy::default() },
        })
        .await?;
        Ok(Backends { engine: world.engine.clone(), self_consuming: true, local: Some(world) })
    }

    /// The built-in simulator, when running on the local world.
    pub fn local(&self) -> Option<&LocalWorld> {
        self.local.as_ref()
    }

    pub async fn shutdown(self) {
        if let Some(w) = self.local {
            w.shutdown().await;
        }
    }
}
