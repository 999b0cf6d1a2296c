//! `events`: Azure resource events from Event Grid (Event Grid schema; the
//! CloudEvents schema's `type` and `source` are read too).
//!
//! - Only deliveries from the configured topic are accepted
//!   (`FLOTILLA_EVENTGRID_TOPIC`: the clusters' resource group, the source of
//!   the system topic): a delivery holding any event with another `topic` is
//!   refused as a whole with problem details and nothing of it is applied (a
//!   400 to a bare webhook delivery, which Event Grid dead-letters instead of
//!   retrying; a logged refusal to the Functions host, which must not retry it).
//! - The webhook validation handshake (`SubscriptionValidationEvent`) is
//!   answered with `{"validationResponse": code}` if it reaches us.
//! - A `ResourceDeleteSuccess` for a resource a finished job created is
//!   checked against ARM: only a resource ARM no longer has marks that job
//!   `Degraded` (listed in `saga.missing`); one that still exists is logged
//!   and ignored. Everything else is ignored.
//! - A `ResourceWriteSuccess` for a job's worker pool scale set reconciles
//!   the saga's pool count with the scale set's capacity (the cluster's own
//!   identity may change it; a count outside `min..max` is set back and
//!   reported).

use super::envelope::{trigger_bytes, Invocation, Reply};
use super::problem::{Kind, Problem};
use super::str_field;
use super::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_core::engine::{DeletedOutside, Engine, EngineError};
use serde_json::{json, Value};

pub const BINDING: &str = "eventGridEvent";
pub const VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
pub const DELETE_SUCCESS: &str = "Microsoft.Resources.ResourceDeleteSuccess";
pub const WRITE_SUCCESS: &str = "Microsoft.Resources.ResourceWriteSuccess";

/// What one event led to.
enum Outcome {
    Validation(String),
    Degraded(Vec<String>),
    /// A delete event for a resource ARM still has.
    StillExists(Vec<String>),
    /// ARM could not be asked, for good (e.g. the read was refused).
    Unverified(String),
    Reconciled(String, u32),
    Ignored,
}

/// `FLOTILLA_EVENTGRID_TOPIC`: a resource id (`/subscriptions/…`); `None` when unset.
pub fn topic_from_settings() -> Result<Option<String>, crate::error::Error> {
    let Some(v) = flotilla_core::settings::get("FLOTILLA_EVENTGRID_TOPIC") else {
        return Ok(None);
    };
    let v = v.trim().trim_end_matches('/');
    if !v.to_ascii_lowercase().starts_with("/subscriptions/") || v.chars().any(char::is_whitespace)
    {
        return Err(crate::error::Error::Setting {
            name: "FLOTILLA_EVENTGRID_TOPIC".into(),
            why: format!(
                "must be a resource id such as /subscriptions/{{s}}/resourceGroups/{{rg}} (got '{}')",
                super::truncate(v, 80)
            ),
        });
    }
    Ok(Some(v.to_string()))
}

/// The topic an event says it comes from: `topic` (Event Grid schema) or
/// `source` (CloudEvents schema).
fn topic_of(ev: &Value) -> Option<&str> {
    str_field(ev, "topic").or_else(|| str_field(ev, "source"))
}

/// Refuses the delivery unless every event comes from `expected` (ids
/// compare ignoring case and a trailing `/`); `None` accepts any topic.
fn check_topics(expected: Option<&str>, events: &[Value]) -> Result<(), Problem> {
    let Some(expected) = expected else {
        return Ok(());
    };
    for ev in events {
        let topic = topic_of(ev).unwrap_or("");
        if !topic
            .trim_end_matches('/')
            .eq_ignore_ascii_case(expected.trim_end_matches('/'))
        {
            return Err(Problem::new(
                Kind::InvalidRequest,
                format!(
                    "the event's topic '{}' is not the configured Event Grid topic; the delivery was not applied",
                    super::truncate(topic, 200)
                ),
            )
            .field("topic"));
        }
    }
    Ok(())
}

/// The Functions invocation (`Data.eventGridEvent`: one event, or an array).
pub async fn invoke(state: &AppState, inv: &Invocation) -> (StatusCode, Reply) {
    let mut reply = Reply::new();
    let Some(value) = inv.binding(BINDING) else {
        reply.log("events: the invocation carries no event; ignored");
        return (StatusCode::OK, reply);
    };
    let (bytes, _) = trigger_bytes(value);
    let events = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Array(a)) => a,
        Ok(v @ Value::Object(_)) => vec![v],
        _ => {
            reply.log("events: the event is not a JSON object; ignored");
            return (StatusCode::OK, reply);
        }
    };
    if let Err(p) = check_topics(state.event_topic.as_deref(), &events) {
        // Answered, not failed: a redelivery would be refused again.
        tracing::warn!(detail = %p.detail, "Event Grid delivery refused");
        reply.log(format!("events: refused: {}", p.detail));
        reply.return_value = p.to_value();
        return (StatusCode::OK, reply);
    }
    match process(&state.engine, &events, &mut reply.logs).await {
        Ok(Some(code)) => {
            reply.return_value = json!({ "validationResponse": code });
            (StatusCode::OK, reply)
        }
        Ok(None) => (StatusCode::OK, reply),
        // Store trouble: fail the invocation so the delivery is retried.
        Err(e) => {
            reply.log(format!("events: {e}; the delivery will be retried"));
            (StatusCode::INTERNAL_SERVER_ERROR, reply)
        }
    }
}

/// A bare Event Grid delivery (an array of events, as Event Grid POSTs to a
/// webhook): answered as Event Grid expects, `{"validationResponse"}` or 200.
pub async fn raw(state: &AppState, body: &[u8]) -> Response {
    let events = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(a)) => a,
        _ => {
            return super::transport_problem(Problem::new(
                Kind::InvalidRequest,
                "the body is not an array of Event Grid events",
            ))
        }
    };
    if let Err(p) = check_topics(state.event_topic.as_deref(), &events) {
        tracing::warn!(detail = %p.detail, "Event Grid delivery refused");
        return super::transport_problem(p);
    }
    let mut logs = vec![];
    let result = process(&state.engine, &events, &mut logs).await;
    for l in &logs {
        tracing::info!("{l}");
    }
    match result {
        Ok(Some(code)) => {
            let mut res = json!({ "validationResponse": code })
                .to_string()
                .into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Ok(None) => StatusCode::OK.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Handles each event; the validation code if one was a handshake.
async fn process(
    engine: &Engine,
    events: &[Value],
    logs: &mut Vec<String>,
) -> Result<Option<String>, String> {
    let mut validation = None;
    for ev in events {
        match one(engine, ev).await.map_err(|e| e.to_string())? {
            Outcome::Validation(code) => {
                logs.push("events: answered the subscription validation handshake".into());
                validation = Some(code);
            }
            Outcome::Degraded(jobs) if !jobs.is_empty() => {
                let id = resource_of(ev).unwrap_or_default();
                for job in jobs {
                    logs.push(format!(
                        "events: {id} was deleted outside flotilla; job {job} is Degraded"
                    ));
                    tracing::warn!(%job, resource = %id, "resource deleted outside flotilla; job degraded");
                }
            }
            Outcome::StillExists(jobs) => {
                let id = resource_of(ev).unwrap_or_default();
                logs.push(format!(
                    "events: {id} is reported deleted but still exists; ignored (jobs {})",
                    jobs.join(", ")
                ));
            }
            Outcome::Unverified(why) => {
                let id = resource_of(ev).unwrap_or_default();
                logs.push(format!(
                    "events: {id} is reported deleted but ARM could not confirm it ({why}); ignored"
                ));
                tracing::warn!(resource = %id, %why, "delete event not verified; ignored");
            }
            Outcome::Reconciled(job, count) => {
                let id = resource_of(ev).unwrap_or_default();
                logs.push(format!(
                    "events: {id} was resized to {count} outside flotilla; job {job} reconciled"
                ));
            }
            Outcome::Degraded(_) | Outcome::Ignored => {
                let ty = event_type(ev).unwrap_or("(no type)");
                logs.push(format!("events: {} ignored", super::truncate(ty, 80)));
            }
        }
    }
    Ok(validation)
}

fn event_type(ev: &Value) -> Option<&str> {
    str_field(ev, "eventType").or_else(|| str_field(ev, "type"))
}

/// The resource an event is about: its subject, else `data.resourceUri`.
fn resource_of(ev: &Value) -> Option<String> {
    str_field(ev, "subject")
        .filter(|s| s.starts_with('/'))
        .or_else(|| ev.get("data").and_then(|d| str_field(d, "resourceUri")))
        .map(str::to_string)
}

async fn one(engine: &Engine, ev: &Value) -> Result<Outcome, EngineError> {
    match event_type(ev) {
        Some(VALIDATION) => Ok(ev
            .get("data")
            .and_then(|d| str_field(d, "validationCode"))
            .map(|c| Outcome::Validation(c.to_string()))
            .unwrap_or(Outcome::Ignored)),
        Some(DELETE_SUCCESS) => match resource_of(ev) {
            Some(id) => match engine.mark_degraded(&id).await {
                Ok(DeletedOutside::Degraded(jobs)) => Ok(Outcome::Degraded(jobs)),
                Ok(DeletedOutside::StillExists(jobs)) => Ok(Outcome::StillExists(jobs)),
                Ok(DeletedOutside::NotOurs) => Ok(Outcome::Ignored),
                Err(EngineError::Azure(e)) if !e.is_retryable() => {
                    Ok(Outcome::Unverified(format!("{}: {}", e.code, e.message)))
                }
                Err(e) => Err(e),
            },
            None => Ok(Outcome::Ignored),
        },
        Some(WRITE_SUCCESS) => match resource_of(ev) {
            Some(id) => Ok(match engine.reconcile_capacity(&id).await? {
                Some((job, count)) => Outcome::Reconciled(job, count),
                None => Outcome::Ignored,
            }),
            None => Ok(Outcome::Ignored),
        },
        _ => Ok(Outcome::Ignored),
    }
}
