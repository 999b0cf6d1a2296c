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
use flotilla_core::engine::{notification, CommandError};
use flotilla_core::events::CloudEvent;
use flotilla_core::spec::ClusterSpec;
use serde_json::Value;

/// The trigger binding's name in every Service Bus function.json.
pub const BINDING: &str = "message";

/// A topic subscription's function: hand the event to the engine.
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
    let event = match CloudEvent::from_json(&bytes) {
        Ok(e) => e,
        Err(reason) => {
            // No retry can fix it, but dropping it would lose it: fail every
            // delivery so Service Bus moves it to the dead-letter queue, and on
            // the last delivery note it on the job it names (visible in status).
            let id = message_id(inv);
            let delivery = inv.delivery_count().unwrap_or(1);
            reply.log(format!(
                "{function}: poison message {id} refused (delivery {delivery} of {MAX_DELIVERY_COUNT}; it will be dead-lettered): {reason}"
            ));
            tracing::error!(function, %id, ?encoding, %reason, delivery, "poison message");
            if delivery >= MAX_DELIVERY_COUNT {
                record_poison(state, &bytes, &id, &reason, &mut reply).await;
            }
            return (StatusCode::INTERNAL_SERVER_ERROR, reply);
        }
    };
    if event.subject != function {
        tracing::debug!(function, subject = %event.subject, "event delivered to another function than its subject");
    }
    match state.engine.handle(&event).await {
        Ok(()) => {
            reply.log(format!(
                "{function}: handled {} ({}) for job {}",
                event.id, event.event_type, event.data.job
            ));
            (StatusCode::OK, reply)
        }
        Err(e) => {
            let delivery = inv.delivery_count().unwrap_or(1);
            let reason =
                format!("handler failed on delivery {delivery} of {MAX_DELIVERY_COUNT}: {e}");
            reply.log(format!(
                "{function}: {} ({}): {reason}",
                event.id, event.event_type
            ));
            tracing::warn!(function, id = %event.id, delivery, error = %e, "handler failed; the host abandons the message");
            if delivery >= MAX_DELIVERY_COUNT {
                // Service Bus dead-letters it after this attempt; say so in the saga.
                match state.engine.record_dead_letter(&event, &reason).await {
                    Ok(()) => reply.log(format!(
                        "{function}: {} recorded as dead-lettered on job {}",
                        event.id, event.data.job
                    )),
                    Err(e) => {
                        tracing::error!(id = %event.id, error = %e, "could not record the dead letter");
                        reply.log(format!("{function}: could not record the dead letter: {e}"));
                    }
                }
            }
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

/// A poison message that still names an existing job is noted on that job's
/// saga (`deadLetters`), so `status` shows it.
async fn record_poison(state: &AppState, bytes: &[u8], id: &str, reason: &str, reply: &mut Reply) {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let Some(job) = v.pointer("/data/job").and_then(Value::as_str) else {
        return;
    };
    if !flotilla_core::names::is_job_id(job) {
        return;
    }
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("unknown");
    let event = notification(job, &super::truncate(ty, 80), &format!("poison/{id}"));
    if let Ok(Some(_)) = state.engine.status(job).await {
        if state
            .engine
            .record_dead_letter(&event, reason)
            .await
            .is_ok()
        {
            reply.log(format!("poison message {id} recorded on job {job}"));
        }
    }
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
    match state.engine.submit(spec).await {
        Ok(job) => {
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
