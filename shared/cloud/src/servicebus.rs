//! The Service Bus event bus over the REST data plane, on azure_core's pipeline
//! with an Entra ID bearer token (scope `https://servicebus.azure.net/.default`).
//!
//! - send: `POST {endpoint}/{send_entity}/messages`, one request per message,
//!   structured CloudEvent body, `BrokerProperties` `{MessageId, Label,
//!   ScheduledEnqueueTimeUtc}` and the CloudEvents AMQP-binding application
//!   properties `cloudEvents_{id,source,type,specversion,subject}` as headers
//!   (JSON-encoded values, as the REST API expects for custom properties);
//! - receive: peek-lock `POST {endpoint}/{receive_entity}/messages/head?timeout=N`;
//! - complete / abandon: `DELETE` / `PUT` on
//!   `{endpoint}/{receive_entity}/messages/{messageId}/{lockToken}`;
//! - dead_letter: `POST …/{messageId}/{lockToken}/$deadletter` with
//!   `{"DeadLetterReason", "DeadLetterErrorDescription"}`. This is an extension
//!   of the Azure simulator: the Service Bus REST API has no dead-letter verb
//!   (on Azure the Functions host or an AMQP client dead-letters), so against a
//!   real namespace this call fails with `Unavailable`;
//! - dead_letters: peek-locks everything in `{receive_entity}/$deadletterqueue`
//!   and abandons it again.
//!
//! Header names go out lowercase (`cloudevents_type`): azure_core requires
//! lowercase header names and HTTP header names are case-insensitive.

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::Headers;
use azure_core::http::policies::{auth::BearerTokenAuthorizationPolicy, Policy};
use azure_core::http::{Context, Method, Pipeline, PipelineSendOptions, RawResponse, Request};
use flotilla_azure::AzureConfig;
use flotilla_core::ports::{BusError, DeadLetter, Delivery, EventBus, OutMessage};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use url::Url;

/// Entra ID scope of the Service Bus data plane.
pub const SERVICEBUS_SCOPE: &str = "https://servicebus.azure.net/.default";

/// Longest single long-poll; longer waits are split (the transport times out at 60 s).
const MAX_POLL: Duration = Duration::from_secs(50);
/// Most messages one `dead_letters` call collects.
const MAX_DEAD_LETTERS: usize = 1000;

/// An [`EventBus`] on a Service Bus queue or topic subscription, over REST.
pub struct ServiceBusBus {
    pipeline: Pipeline,
    endpoint: String,
    send_entity: String,
    receive_entity: Option<String>,
    default_label: Option<String>,
}

impl std::fmt::Debug for ServiceBusBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusBus")
            .field("endpoint", &self.endpoint)
            .field("send_entity", &self.send_entity)
            .field("receive_entity", &self.receive_entity)
            .finish()
    }
}

/// RFC 1123 date as Service Bus wants `ScheduledEnqueueTimeUtc`.
fn rfc1123(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

fn header(headers: &Headers, name: &'static str) -> Option<String> {
    flotilla_azure::transport::header(headers, name)
}

/// A custom property header value: JSON-decoded when it is a JSON string.
fn property(headers: &Headers, name: &'static str) -> Option<String> {
    let raw = header(headers, name)?;
    match serde_json::from_str::<Value>(&raw) {
        Ok(Value::String(s)) => Some(s),
        _ => Some(raw),
    }
}

/// The `Detail` of a Service Bus XML error body (or the body's start).
fn detail(resp: &RawResponse) -> String {
    let body = String::from_utf8_lossy(resp.body().as_ref()).to_string();
    let text = match (body.find("<Detail>"), body.find("</Detail>")) {
        (Some(a), Some(b)) if b > a => body[a + 8..b].to_string(),
        _ => body,
    };
    text.chars().take(300).collect()
}

impl ServiceBusBus {
    /// A bus that sends to `send_entity` (a queue or topic) and receives from
    /// `receive_entity` (a queue, or `{topic}/subscriptions/{name}`) of the
    /// namespace at `endpoint` (`https://{ns}.servicebus.windows.net`, or the
    /// simulator's `SimInfo::servicebus_endpoint`).
    pub fn new(
        config: &AzureConfig,
        endpoint: &str,
        send_entity: &str,
        receive_entity: Option<&str>,
    ) -> Result<Self, BusError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        Url::parse(&endpoint)
            .map_err(|e| BusError::Unavailable(format!("Service Bus endpoint {endpoint}: {e}")))?;
        let credential: Arc<dyn TokenCredential> = config.token_credential().map_err(|e| {
            BusError::Unavailable(format!("Service Bus credential cannot be built: {e}"))
        })?;
        let auth: Arc<dyn Policy> = Arc::new(BearerTokenAuthorizationPolicy::new(
            credential,
            vec![SERVICEBUS_SCOPE.to_string()],
        ));
        let pipeline = Pipeline::new(
            option_env!("CARGO_PKG_NAME"),
            option_env!("CARGO_PKG_VERSION"),
            config.client_options(),
            Vec::new(),
            vec![auth],
            None,
        );
        let clean = |e: &str| e.trim_matches('/').to_string();
        Ok(ServiceBusBus {
            pipeline,
            endpoint,
            send_entity: clean(send_entity),
            receive_entity: receive_entity.map(clean),
            default_label: None,
        })
    }

    /// The `Label` of messages whose CloudEvent has no `subject` (by default
    /// they go without one). On a topic whose subscriptions filter on the label,
    /// this picks the subscription.
    pub fn with_default_label(mut self, label: impl Into<String>) -> Self {
        self.default_label = Some(label.into());
        self
    }

    fn url(
        &self,
        entity: &str,
        tail: &[&str],
        query: Option<(&str, &str)>,
    ) -> Result<Url, BusError> {
        let mut url = Url::parse(&format!("{}/{entity}/messages", self.endpoint))
            .map_err(|e| BusError::Unavailable(format!("Service Bus URL for {entity}: {e}")))?;
        if !tail.is_empty() {
            url.path_segments_mut()
                .map_err(|_| {
                    BusError::Unavailable("Service Bus endpoint is not a base URL".into())
                })?
                .extend(tail);
        }
        if let Some((k, v)) = query {
            url.query_pairs_mut().append_pair(k, v);
        }
        Ok(url)
    }

    fn receive_entity(&self) -> Result<&str, BusError> {
        self.receive_entity.as_deref().ok_or_else(|| {
            BusError::Unavailable(format!(
                "this Service Bus bus only sends (to {}); it has no receive entity",
                self.send_entity
            ))
        })
    }

    async fn call(&self, mut req: Request, what: &str) -> Result<RawResponse, BusError> {
        let resp = self
            .pipeline
            .send(
                &Context::new(),
                &mut req,
                Some(PipelineSendOptions {
                    skip_checks: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| BusError::Unavailable(format!("Service Bus {what}: {e}")))?;
        let status = u16::from(resp.status());
        match status {
            200..=299 | 404 => Ok(resp),
            401 => Err(BusError::Unavailable(format!(
                "Service Bus {what}: 401 unauthorized — the token was refused (check the credential and that it is issued for https://servicebus.azure.net): {}",
                detail(&resp)
            ))),
            403 => Err(BusError::Unavailable(format!(
                "Service Bus {what}: 403 forbidden — missing a Service Bus data role, quota exceeded or message too large: {}",
                detail(&resp)
            ))),
            410 => Err(BusError::Unavailable(format!(
                "Service Bus {what}: 410 gone — the queue, topic or subscription does not exist: {}",
                detail(&resp)
            ))),
            _ => Err(BusError::Unavailable(format!(
                "Service Bus {what}: HTTP {status}: {}",
                detail(&resp)
            ))),
        }
    }

    /// Peek-locks the next message of `entity`, waiting up to `wait` (whole seconds).
    async fn peek_lock(&self, entity: &str, wait: Duration) -> Result<Option<Locked>, BusError> {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let url = self.url(entity, &["head"], Some(("timeout", &secs.to_string())))?;
        let req = Request::new(url, Method::Post);
        let resp = self.call(req, &format!("receive from {entity}")).await?;
        match u16::from(resp.status()) {
            201 | 200 => Locked::parse(&resp).map(Some),
            204 => Ok(None),
            s => Err(BusError::Unavailable(format!(
                "Service Bus receive from {entity}: HTTP {s}: {}",
                detail(&resp)
            ))),
        }
    }

    /// DELETE (complete), PUT (abandon) or POST `…/$deadletter` on a lock.
    async fn settle(
        &self,
        entity: &str,
        delivery_id: &str,
        lock_token: &str,
        how: Settle<'_>,
    ) -> Result<(), BusError> {
        let (method, mut tail, what) = match how {
            Settle::Complete => (Method::Delete, vec![delivery_id, lock_token], "complete"),
            Settle::Abandon => (Method::Put, vec![delivery_id, lock_token], "abandon"),
            Settle::DeadLetter(_) => (Method::Post, vec![delivery_id, lock_token], "dead-letter"),
        };
        if matches!(how, Settle::DeadLetter(_)) {
            tail.push("$deadletter");
        }
        let url = self.url(entity, &tail, None)?;
        let mut req = Request::new(url, method);
        if let Settle::DeadLetter(reason) = how {
            let body = json!({"DeadLetterReason": reason, "DeadLetterErrorDescription": reason});
            req.insert_header("content-type", "application/json");
            req.set_body(body.to_string().into_bytes());
        } else {
            req.insert_header("content-length", "0");
        }
        let resp = self.call(req, &format!("{what} on {entity}")).await?;
        if u16::from(resp.status()) == 404 {
            return Err(BusError::LockLost(lock_token.to_string()));
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Settle<'a> {
    Complete,
    Abandon,
    DeadLetter(&'a str),
}

/// A peek-locked message as the REST API returns it.
struct Locked {
    message_id: String,
    lock_token: String,
    delivery_count: u32,
    event_type: String,
    dead_letter_reason: Option<String>,
    body: Vec<u8>,
}

impl Locked {
    fn parse(resp: &RawResponse) -> Result<Locked, BusError> {
        let bp: Value = header(resp.headers(), "brokerproperties")
            .and_then(|h| serde_json::from_str(&h).ok())
            .ok_or_else(|| {
                BusError::Unavailable(
                    "Service Bus receive: the answer has no valid BrokerProperties header".into(),
                )
            })?;
        let s = |k: &str| bp.get(k).and_then(Value::as_str).map(str::to_string);
        let body = resp.body().as_ref().to_vec();
        let event_type = property(resp.headers(), "cloudevents_type")
            .or_else(|| property(resp.headers(), "cloudevents:type"))
            .or_else(|| {
                serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
            })
            .unwrap_or_default();
        Ok(Locked {
            message_id: s("MessageId").unwrap_or_default(),
            lock_token: s("LockToken").ok_or_else(|| {
                BusError::Unavailable(
                    "Service Bus receive: BrokerProperties has no LockToken".into(),
                )
            })?,
            delivery_count: bp.get("DeliveryCount").and_then(Value::as_u64).unwrap_or(1) as u32,
            event_type,
            dead_letter_reason: s("DeadLetterReason"),
            body,
        })
    }
}

#[async_trait]
impl EventBus for ServiceBusBus {
    async fn send(&self, messages: &[OutMessage]) -> Result<(), BusError> {
        for m in messages {
            let event: Value = serde_json::from_slice(&m.body).unwrap_or(Value::Null);
            let field = |k: &str| event.get(k).and_then(Value::as_str).map(str::to_string);
            let subject = field("subject");
            let mut bp = json!({ "MessageId": m.id });
            if let Some(label) = subject.clone().or_else(|| self.default_label.clone()) {
                bp["Label"] = json!(label);
            }
            if let Some(t) = m.not_before {
                bp["ScheduledEnqueueTimeUtc"] = json!(rfc1123(t));
            }
            let url = self.url(&self.send_entity, &[], None)?;
            let mut req = Request::new(url, Method::Post);
            req.insert_header(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            );
            req.insert_header("brokerproperties", bp.to_string());
            let props: [(&'static str, Option<String>); 5] = [
                ("cloudevents_id", field("id").or_else(|| Some(m.id.clone()))),
                ("cloudevents_source", field("source")),
                ("cloudevents_type", Some(m.event_type.clone())),
                ("cloudevents_specversion", field("specversion")),
                ("cloudevents_subject", subject),
            ];
            for (name, value) in props {
                if let Some(v) = value {
                    req.insert_header(name, Value::String(v).to_string());
                }
            }
            req.set_body(m.body.clone());
            let resp = self
                .call(req, &format!("send to {}", self.send_entity))
                .await?;
            let status = u16::from(resp.status());
            if status != 201 && status != 200 {
                return Err(BusError::Unavailable(format!(
                    "Service Bus send to {}: HTTP {status}: {}",
                    self.send_entity,
                    detail(&resp)
                )));
            }
        }
        Ok(())
    }

    async fn receive(&self, wait: Duration) -> Result<Option<Delivery>, BusError> {
        let entity = self.receive_entity()?.to_string();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Some(l) = self.peek_lock(&entity, left.min(MAX_POLL)).await? {
                return Ok(Some(Delivery {
                    message_id: l.message_id,
                    event_type: l.event_type,
                    body: l.body,
                    delivery_count: l.delivery_count,
                    lock_token: l.lock_token,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), BusError> {
        let entity = self.receive_entity()?;
        self.settle(
            entity,
            &delivery.message_id,
            &delivery.lock_token,
            Settle::Complete,
        )
        .await
    }

    async fn abandon(&self, delivery: &Delivery) -> Result<(), BusError> {
        let entity = self.receive_entity()?;
        self.settle(
            entity,
            &delivery.message_id,
            &delivery.lock_token,
            Settle::Abandon,
        )
        .await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BusError> {
        let entity = self.receive_entity()?;
        self.settle(
            entity,
            &delivery.message_id,
            &delivery.lock_token,
            Settle::DeadLetter(reason),
        )
        .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        let dlq = format!("{}/$deadletterqueue", self.receive_entity()?);
        let mut locked = Vec::new();
        let mut result = Ok(());
        while locked.len() < MAX_DEAD_LETTERS {
            match self.peek_lock(&dlq, Duration::ZERO).await {
                Ok(Some(l)) => locked.push(l),
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let mut out = Vec::with_capacity(locked.len());
        for l in locked {
            let _ = self
                .settle(&dlq, &l.message_id, &l.lock_token, Settle::Abandon)
                .await;
            out.push(DeadLetter {
                message_id: l.message_id,
                event_type: l.event_type,
                body: l.body,
                delivery_count: l.delivery_count,
                reason: l.dead_letter_reason.unwrap_or_default(),
            });
        }
        result.map(|()| out)
    }
}
