//! `events`: Azure resource events from Event Grid (Event Grid schema; the
//! CloudEvents schema's `type` is read too). A `ResourceDeleteSuccess` for a
//! resource a finished job created marks that job `Degraded` and lists the
//! resource in `saga.missing`; a `ResourceWriteSuccess` for a job's worker
//! pool scale set reconciles the saga's pool count with the scale set's
//! capacity (the cluster's own identity may change it; a count outside
//! `min..max` is set back and reported); everything else is ignored. The webhook
//! validation handshake is answered if it reaches us as an event.

use super::envelope::{trigger_bytes, Invocation, Reply};
use super::str_field;
use super::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_core::engine::{Engine, EngineError};
use serde_json::{json, Value};

pub const BINDING: &str = "eventGridEvent";
pub const VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
pub const DELETE_SUCCESS: &str = "Microsoft.Resources.ResourceDeleteSuccess";
pub const WRITE_SUCCESS: &str = "Microsoft.Resources.ResourceWriteSuccess";

/// What one event led to.
enum Outcome {
    Validation(String),
    Degraded(Vec<String>),
    Reconciled(String, u32),
    Ignored,
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
        _ => return (StatusCode::BAD_REQUEST, "not an array of Event Grid events").into_response(),
    };
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
            Some(id) => Ok(Outcome::Degraded(engine.mark_degraded(&id).await?)),
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
