//! `events`: Azure resource events from Event Grid (Event Grid schema; the
//! CloudEvents schema's `type` is read too). A `ResourceDeleteSuccess` for a
//! resource a finished job created marks that job `Degraded` and lists the
//! resource in `saga.missing`; everything else is ignored. The webhook
//! validation handshake is answered if it reaches us as an event.

use super::envelope::{trigger_bytes, Invocation, Reply};
use super::str_field;
use super::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_core::engine::Engine;
use flotilla_core::events::{handlers, types, CloudEvent, EventData};
use flotilla_core::ports::{OutMessage, StoreError};
use flotilla_core::saga::{JobStatus, ResourceState, Saga};
use serde_json::{json, Value};

pub const BINDING: &str = "eventGridEvent";
pub const VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
pub const DELETE_SUCCESS: &str = "Microsoft.Resources.ResourceDeleteSuccess";

/// What one event led to.
enum Outcome {
    Validation(String),
    Degraded(Vec<String>),
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

async fn one(engine: &Engine, ev: &Value) -> Result<Outcome, StoreError> {
    match event_type(ev) {
        Some(VALIDATION) => Ok(ev
            .get("data")
            .and_then(|d| str_field(d, "validationCode"))
            .map(|c| Outcome::Validation(c.to_string()))
            .unwrap_or(Outcome::Ignored)),
        Some(DELETE_SUCCESS) => match resource_of(ev) {
            Some(id) => Ok(Outcome::Degraded(mark_degraded(engine, &id).await?)),
            None => Ok(Outcome::Ignored),
        },
        _ => Ok(Outcome::Ignored),
    }
}

/// A finished cluster the resource belongs to: Succeeded (or already
/// Degraded), with the resource recorded as Created. Jobs still running,
/// compensating or deleting are left alone: their own deletes raise these
/// events too, and a running saga notices a missing dependency by itself.
fn affected(saga: &Saga, resource_id: &str) -> bool {
    matches!(saga.status, JobStatus::Succeeded | JobStatus::Degraded)
        && saga
            .resources
            .iter()
            .any(|r| r.state == ResourceState::Created && r.id.eq_ignore_ascii_case(resource_id))
}

/// Marks every live job that recorded `resource_id` as Created `Degraded`,
/// with the id in `saga.missing` (ETag-checked; re-read on a conflict).
/// Returns the jobs changed.
pub async fn mark_degraded(engine: &Engine, resource_id: &str) -> Result<Vec<String>, StoreError> {
    let mut changed = vec![];
    for doc in engine.store.list().await? {
        let Ok(saga) = serde_json::from_value::<Saga>(doc.doc) else {
            continue;
        };
        if !affected(&saga, resource_id) {
            continue;
        }
        let job = saga.id.clone();
        let (mut saga, mut etag) = (saga, doc.etag);
        for attempt in 0..8 {
            if attempt > 0 {
                let Some(fresh) = engine.store.get(&job).await? else {
                    break;
                };
                let Ok(s) = serde_json::from_value::<Saga>(fresh.doc) else {
                    break;
                };
                if !affected(&s, resource_id) {
                    break;
                }
                saga = s;
                etag = fresh.etag;
            }
            let already = saga.status == JobStatus::Degraded
                && saga
                    .missing
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(resource_id));
            if already {
                break;
            }
            saga.status = JobStatus::Degraded;
            if !saga
                .missing
                .iter()
                .any(|m| m.eq_ignore_ascii_case(resource_id))
            {
                saga.missing.push(resource_id.to_string());
            }
            saga.updated_at = time::OffsetDateTime::now_utc();
            let event = CloudEvent::new(
                types::JOB_DEGRADED,
                handlers::NONE,
                &format!("degraded/{}", saga.missing.len()),
                EventData {
                    job: job.clone(),
                    resources: saga.missing.clone(),
                    ..Default::default()
                },
            );
            let msg = OutMessage {
                id: event.id.clone(),
                event_type: event.event_type.clone(),
                body: event.to_json(),
                not_before: None,
            };
            let outbox = if engine.store.delivers_outbox() {
                vec![msg.clone()]
            } else {
                vec![]
            };
            match engine
                .store
                .replace(&job, &saga.to_json(), &etag, &outbox)
                .await
            {
                Ok(_) => {
                    if !engine.store.delivers_outbox() {
                        if let Err(e) = engine.bus.send(&[msg]).await {
                            tracing::warn!(%job, error = %e, "degraded notification not sent");
                        }
                    }
                    changed.push(job.clone());
                    break;
                }
                Err(StoreError::PreconditionFailed(_)) => continue,
                Err(StoreError::NotFound(_)) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(changed)
}
