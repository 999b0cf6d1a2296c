//! The Service Bus–triggered functions: one per subscription of the
//! `flotilla-events` topic (each hands the CloudEvent to the engine), and
//! `submit-queue` (a cluster spec on the `flotilla-jobs` queue).
//!
//! The transport status is the settlement: 2xx completes the message, 500
//! fails the invocation so Service Bus abandons it and redelivers it (and
//! dead-letters it after MaxDeliveryCount). A message on a step subscription
//! that is not a flotilla CloudEvent is refused every time, so it ends in the
//! dead-letter queue (and, on its last delivery, in the named job's
//! `deadLetters`); an invalid spec on `submit-queue` is answered 2xx with a log
//! line saying why.

use super::envelope::{trigger_bytes, Invocation, Reply};
use super::{AppState, MAX_DELIVERY_COUNT};
use axum::http::StatusCode;
use flotilla_core::engine::{settle, CommandError, Delivered, Settlement};
use flotilla_core::spec::ClusterSpec;
use serde_json::Value;

/// The trigger binding's name in every Service Bus function.json.
pub const BINDING: &str = "message";

/// A topic subscription's function: hand the event to the engine and answer
/// with the settlement (see [`settle`]): 2xx completes; 500 abandons, so the
/// broker redelivers and, after the last delivery, dead-letters. The host
/// cannot dead-letter at once, so a message that no delivery can fix is
/// refused every time and noted on its job at the last delivery.
pub async fn event(state: &AppState, function: &str, inv: &Invocation) -> (StatusCode, Reply) {
    let mut reply = Reply::new();
    let Some(value) = inv.binding(BINDING) else {
        reply.log(format!(
            "{function}: poison message dropped: the invocation carries no message"
        ));
        tracing::error!(function, "invocation without a message");
        return (StatusCode::OK, reply);
    };
    let (bytes, encoding) = trigger_bytes(value);
    let id = message_id(inv);
    let delivery = inv.delivery_count().unwrap_or(1);
    let verdict = settle(
        &state.engine,
        Delivered {
            body: &bytes,
            message_id: &id,
            delivery_count: u32::try_from(delivery).unwrap_or(u32::MAX),
            max_delivery_count: MAX_DELIVERY_COUNT as u32,
            can_dead_letter: false,
        },
    )
    .await;
    let last = delivery >= MAX_DELIVERY_COUNT;
    match verdict {
        Settlement::Complete => {
            reply.log(format!("{function}: handled message {id}"));
            (StatusCode::OK, reply)
        }
        Settlement::Poison { reason } => {
            reply.log(format!(
                "{function}: poison message {id} refused (delivery {delivery} of {MAX_DELIVERY_COUNT}; it will be dead-lettered): {reason}"
            ));
            if last {
                reply.log(format!(
                    "{function}: poison message {id} recorded on its job, if any"
                ));
            }
            tracing::error!(function, %id, ?encoding, %reason, delivery, "poison message");
            (StatusCode::INTERNAL_SERVER_ERROR, reply)
        }
        Settlement::Abandon { reason } | Settlement::DeadLetter { reason } => {
            reply.log(format!("{function}: {id}: {reason}"));
            if last {
                reply.log(format!(
                    "{function}: {id} recorded as dead-lettered on its job"
                ));
            }
            tracing::warn!(function, %id, delivery, %reason, "handler failed; the host abandons the message");
            (StatusCode::INTERNAL_SERVER_ERROR, reply)
        }
    }
}

fn message_id(inv: &Invocation) -> String {
    inv.metadata("MessageId")
        .and_then(Value::as_str)
        .map(|s| super::truncate(s, 80))
        .unwrap_or_else(|| "(no MessageId)".into())
}

/// `submit-queue`: a cluster spec from the `flotilla-jobs` queue.
pub async fn submit(state: &AppState, inv: &Invocation) -> (StatusCode, Reply) {
    let mut reply = Reply::new();
    let id = message_id(inv);
    let Some(value) = inv.binding(BINDING) else {
        reply.log(format!(
            "submit-queue: message {id} dropped: the invocation carries no message"
        ));
        return (StatusCode::OK, reply);
    };
    let (bytes, _) = trigger_bytes(value);
    let Ok(text) = std::str::from_utf8(&bytes) else {
        reply.log(format!(
            "submit-queue: message {id} dropped: the spec is not UTF-8 text"
        ));
        return (StatusCode::OK, reply);
    };
    let spec = match ClusterSpec::from_json(text) {
        Ok(s) => s,
        Err(e) => {
            reply.log(format!(
                "submit-queue: message {id} dropped: invalid spec: {}: {}",
                e.field, e.message
            ));
            tracing::warn!(%id, field = %e.field, message = %e.message, "invalid spec on the jobs queue");
            return (StatusCode::OK, reply);
        }
    };
    if let Some(sim) = &state.sim {
        if let Err(e) =
            crate::local::ensure_resource_group(sim, &spec.resource_group, &spec.location).await
        {
            reply.log(format!("submit-queue: simulator resource group: {e}"));
            return (StatusCode::INTERNAL_SERVER_ERROR, reply);
        }
    }
    // The message id is the idempotency key: a redelivered or resent
    // message finds the job it started instead of starting another.
    let key = inv.metadata("MessageId").and_then(Value::as_str);
    match state.engine.submit_with_key(spec, key).await {
        Ok(s) if s.existing => {
            reply.log(format!(
                "submit-queue: message {id} had already started job {}",
                s.job
            ));
            (StatusCode::OK, reply)
        }
        Ok(s) => {
            let job = s.job;
            reply.log(format!("submit-queue: message {id} started job {job}"));
            tracing::info!(%job, %id, "job submitted from the queue");
            (StatusCode::OK, reply)
        }
        Err(CommandError::Invalid(m)) => {
            reply.log(format!(
                "submit-queue: message {id} dropped: invalid spec: {m}"
            ));
            (StatusCode::OK, reply)
        }
        Err(e) => {
            reply.log(format!(
                "submit-queue: message {id}: {e}; the message will be retried"
            ));
            tracing::warn!(%id, error = %e, "submit failed");
            (StatusCode::INTERNAL_SERVER_ERROR, reply)
        }
    }
}
