//! How a delivered message is settled, the same for every consumer: the
//! Functions handler (whose reply status is the settlement), `flotilla
//! worker` and the embedded runner (which settle on the bus themselves).

use super::{in_hand, notification, Engine};
use crate::events::CloudEvent;
use crate::ports::{Delivery, EventBus};
use std::sync::Arc;
use std::time::Duration;

/// One delivery of a message, as the consumer received it.
#[derive(Clone, Copy, Debug)]
pub struct Delivered<'a> {
    pub body: &'a [u8],
    /// Service Bus `MessageId` (for poison messages, which have no event id).
    pub message_id: &'a str,
    /// 1 on the first delivery.
    pub delivery_count: u32,
    /// The broker's `MaxDeliveryCount`: the delivery that dead-letters on failure.
    pub max_delivery_count: u32,
    /// Whether the consumer can dead-letter a message itself (a Service Bus
    /// receiver can; the Functions host can only fail the invocation until the
    /// broker dead-letters it after the last delivery).
    pub can_dead_letter: bool,
}

impl<'a> Delivered<'a> {
    /// A message a bus receiver took, which can dead-letter it itself, on a
    /// queue that allows `max_delivery_count` deliveries.
    pub fn from_bus(d: &'a Delivery, max_delivery_count: u32) -> Delivered<'a> {
        Delivered {
            body: &d.body,
            message_id: &d.message_id,
            delivery_count: d.delivery_count,
            max_delivery_count,
            can_dead_letter: true,
        }
    }
}

/// What to do with a delivered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Handled, or nothing to do: complete it.
    Complete,
    /// Failed, and another delivery may succeed: abandon it.
    Abandon { reason: String },
    /// No delivery can succeed (a corrupt saga, a refused event): dead-letter it.
    DeadLetter { reason: String },
    /// Not a flotilla CloudEvent at all: dead-letter it.
    Poison { reason: String },
}

impl Settlement {
    pub fn reason(&self) -> Option<&str> {
        match self {
            Settlement::Complete => None,
            Settlement::Abandon { reason }
            | Settlement::DeadLetter { reason }
            | Settlement::Poison { reason } => Some(reason),
        }
    }
}

/// Handles one delivered message and says how to settle it. A message that
/// is about to leave the queue for good (dead-lettered now, or failing on its
/// last allowed delivery) is first noted on the job it names, so `status`
/// shows it.
pub async fn settle(engine: &Engine, d: Delivered<'_>) -> Settlement {
    settle_in_hand(engine, d, None).await.0
}

/// [`settle`] for a bus consumer holding the message by a lock token (and
/// whether it wants its next message): the handler's save may complete it
/// (see [`in_hand`]), which the answer then says, with the next message
/// that save locked for this consumer, if any.
/// A message completed that way is settled whatever the handler went on to
/// say: its job's next event is sent.
async fn settle_in_hand(
    engine: &Engine,
    d: Delivered<'_>,
    in_hand: Option<(&str, bool)>,
) -> (Settlement, Option<in_hand::Taken>) {
    let last = d.delivery_count >= d.max_delivery_count;
    let event = match CloudEvent::from_json(d.body) {
        Ok(e) => e,
        Err(reason) => {
            let reason = format!("not a flotilla event: {reason}");
            if last || d.can_dead_letter {
                dead_lettered("poison");
                record_poison(engine, d.body, d.message_id, &reason).await;
            }
            return (Settlement::Poison { reason }, None);
        }
    };
    let (handled, taken) = match in_hand {
        Some((token, receive)) => {
            in_hand::handling(&event.data().job, token, receive, engine.handle(&event)).await
        }
        None => (engine.handle(&event).await, None),
    };
    if taken.is_some() {
        if let Err(e) = &handled {
            tracing::warn!(id = %event.id(), error = %e, "the handler failed after saving what follows; its message is completed");
        }
        return (Settlement::Complete, taken);
    }
    let settlement = match handled {
        Ok(()) => Settlement::Complete,
        Err(e) => {
            let retryable = e.is_retryable();
            let reason = format!(
                "handler failed on delivery {} of {} ({}): {e}",
                d.delivery_count,
                d.max_delivery_count,
                if retryable { "retryable" } else { "terminal" }
            );
            if last || (!retryable && d.can_dead_letter) {
                dead_lettered(if retryable {
                    "retries_exhausted"
                } else {
                    "terminal"
                });
                if let Err(err) = engine.record_dead_letter(&event, &reason).await {
                    tracing::error!(id = %event.id(), error = %err, "could not record the dead letter");
                }
            }
            if retryable {
                Settlement::Abandon { reason }
            } else {
                Settlement::DeadLetter { reason }
            }
        }
    };
    (settlement, None)
}

/// Counts a message that leaves the queue for good (`flotilla.dead_letters`).
fn dead_lettered(reason: &'static str) {
    crate::telemetry::metrics().dead_letters.add(
        1,
        &[opentelemetry::KeyValue::new(
            "flotilla.dead_letter.reason",
            reason,
        )],
    );
}

/// A poison message that still names an existing job is noted on that job.
async fn record_poison(engine: &Engine, body: &[u8], message_id: &str, reason: &str) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let Some(job) = v.pointer("/data/job").and_then(|j| j.as_str()) else {
        return;
    };
    if !crate::names::is_job_id(job) {
        return;
    }
    let ty: String = v
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("unknown")
        .chars()
        .take(80)
        .collect();
    let id: String = message_id.chars().take(80).collect();
    let event = notification(job, &ty, &format!("poison/{id}"));
    if let Err(e) = engine.record_dead_letter(&event, reason).await {
        tracing::error!(%job, error = %e, "could not record the poison message");
    }
}

/// Consumes `source` until `stop` turns true, settling each message as
/// [`settle`] says. A completion also takes the next message where the bus
/// can do both at once ([`EventBus::complete_then_receive`]), or where the
/// store did both in the handler's save ([`in_hand`]); a message taken
/// either way is handled even if `stop` turned true meanwhile, so none is
/// left locked behind.
pub async fn run_worker(
    engine: Arc<Engine>,
    source: Arc<dyn EventBus>,
    max_delivery_count: u32,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut next: Option<Delivery> = None;
    loop {
        let delivery: Delivery = match next.take() {
            Some(d) => d,
            None if *stop.borrow() => break,
            None => match source.receive(Duration::from_millis(200)).await {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "bus receive failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let receive = !*stop.borrow();
        let (verdict, taken) = settle_in_hand(
            &engine,
            Delivered::from_bus(&delivery, max_delivery_count),
            Some((&delivery.lock_token, receive)),
        )
        .await;
        if let Some(taken) = taken {
            // Completed with the handler's save, which took this worker's
            // next message too unless it is stopping.
            next = taken.next;
            continue;
        }
        let settled = match &verdict {
            Settlement::Complete if *stop.borrow() => source.complete(&delivery).await,
            Settlement::Complete => source
                .complete_then_receive(&delivery)
                .await
                .map(|taken| next = taken),
            Settlement::Abandon { reason } => {
                tracing::warn!(id = %delivery.message_id, delivery = delivery.delivery_count, %reason, "abandoning");
                source.abandon(&delivery).await
            }
            Settlement::DeadLetter { reason } | Settlement::Poison { reason } => {
                tracing::error!(id = %delivery.message_id, %reason, "dead-lettering");
                source.dead_letter(&delivery, reason).await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(id = %delivery.message_id, error = %e, "settling failed; the lock will expire");
        }
    }
}
