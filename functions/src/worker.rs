//! `flotilla worker`: the standalone worker for hosts other than Azure
//! Functions. It receives from every step subscription of the Service Bus
//! topic itself (peek-lock), hands each message to the engine, completes it,
//! or abandons it so Service Bus redelivers and finally dead-letters it. A
//! sweeper runs beside the receivers (`FLOTILLA_SWEEP_*` settings).

use crate::backends::{topic, Backends};
use crate::serve::{Trigger, FUNCTIONS, MAX_DELIVERY_COUNT};
use flotilla_core::engine::{run_sweeper, run_worker, SweepOptions};
use flotilla_core::ports::EventBus;
use std::sync::Arc;

/// Runs until Ctrl-C or SIGTERM.
pub async fn run() -> Result<(), crate::error::Error> {
    let backends = Backends::from_settings().await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if backends.self_consuming {
        eprintln!("flotilla worker: embedded bus, consumed by the built-in workers");
    } else {
        let config = backends
            .azure
            .clone()
            .ok_or("Service Bus needs the Azure settings")?;
        let endpoint = flotilla_core::settings::get("SERVICEBUS_ENDPOINT")
            .ok_or("SERVICEBUS_ENDPOINT is required")?;
        let topic = topic();
        for f in FUNCTIONS
            .iter()
            .filter(|f| matches!(f.trigger, Trigger::Subscription))
        {
            let entity = format!("{topic}/subscriptions/{}", f.name);
            let source: Arc<dyn EventBus> = Arc::new(
                flotilla_cloud::servicebus::ServiceBusBus::new(
                    &config,
                    &endpoint,
                    &topic,
                    Some(&entity),
                )
                .map_err(|e| format!("Service Bus {entity}: {e}"))?,
            );
            tasks.push(tokio::spawn(run_worker(
                backends.engine.clone(),
                source,
                MAX_DELIVERY_COUNT as u32,
                stop_rx.clone(),
            )));
        }
        eprintln!(
            "flotilla worker: receiving from {} subscriptions of {topic}",
            tasks.len()
        );
        let sweep = SweepOptions::from_settings(SweepOptions::default())?;
        tasks.push(tokio::spawn(run_sweeper(
            backends.engine.clone(),
            sweep,
            stop_rx.clone(),
        )));
    }
    crate::signals::stop_requested().await;
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    backends.shutdown().await;
    Ok(())
}
