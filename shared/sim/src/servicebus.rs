//! The Service Bus data plane over REST, under `/servicebus/`: send, peek-lock receive
//! (long-polling), complete, abandon, renew, dead-letter queues, scheduled enqueue and
//! duplicate detection. Queues and topics are created on first use. A topic routes each
//! message to the subscription named by its `Label` (flotilla's correlation filters).
//!
//! State is kept in memory only (it is not part of `state.json`).

use crate::util::{empty, http_date, now_ms, set_header, Ctx};
use crate::{lock, Sim};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Fault-rule resource type of every Service Bus request.
pub(crate) const RESOURCE_TYPE: &str = "Microsoft.ServiceBus/namespaces/messages";
/// Dead-letter reason after too many deliveries (as Service Bus records it).
const MAX_DELIVERY_REASON: &str = "MaxDeliveryCountExceeded";
const DLQ: &str = "$deadletterqueue";
/// Longest long-poll a receive may ask for.
const MAX_TIMEOUT_S: u64 = 60;
/// Largest message body (Standard tier).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Duplicate detection history window.
const DUP_WINDOW_MS: i64 = 10 * 60 * 1000;

/// One message in an entity.
#[derive(Clone, Debug)]
struct Msg {
    seq: i64,
    message_id: String,
    label: Option<String>,
    content_type: Option<String>,
    body: Bytes,
    /// BrokerProperties passed through as sent (CorrelationId, SessionId, ReplyTo, ...).
    passthrough: Map<String, Value>,
    /// Application properties: header name (lowercase) → raw header value.
    props: Vec<(String, String)>,
    enqueued_ms: i64,
    /// Invisible before this instant (scheduled enqueue).
    visible_ms: i64,
    scheduled_ms: Option<i64>,
    /// Deliveries so far (the current one included while locked).
    delivery_count: u32,
    /// (lock token, locked until ms).
    lock: Option<(String, i64)>,
    /// Subscription the current/last delivery went through (for the dead-letter path).
    via: Option<String>,
    dead_letter: Option<(String, String)>,
    dead_letter_source: Option<String>,
}

#[derive(Default)]
struct Entity {
    msgs: Vec<Msg>,
    /// MessageId → time seen (ms).
    seen: HashMap<String, i64>,
    notify: Arc<Notify>,
}

/// Fault modes of the Service Bus data plane, for chaos testing (all off by default).
/// Each is a chance from 0 to 1, drawn per message. They never touch dead-letter queues.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceBusFaults {
    /// A lost send: the send is answered 201 but the message is dropped. Its
    /// `MessageId` is not remembered, so sending it again goes through.
    #[serde(default)]
    pub drop_send: f64,
    /// A duplicate delivery: an accepted message is stored as two copies with the
    /// same `MessageId`, each delivered (and settled) on its own.
    #[serde(default)]
    pub duplicate: f64,
    /// A reordered delivery: a receive takes a random visible message of the
    /// entity instead of the oldest one.
    #[serde(default)]
    pub reorder: f64,
}

/// How often each Service Bus fault mode has fired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceBusFaultsFired {
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

impl ServiceBusFaultsFired {
    /// All fault modes together.
    pub fn total(&self) -> u64 {
        self.dropped + self.duplicated + self.reordered
    }
}

/// The Service Bus namespace: every entity, keyed by lowercase path (`q`,
/// `q/$deadletterqueue`, `t/subscriptions/s/$deadletterqueue`).
pub(crate) struct Bus {
    entities: Mutex<HashMap<String, Entity>>,
    seq: AtomicI64,
    lock_ms: AtomicU64,
    max_delivery: AtomicU32,
    faults: Mutex<(ServiceBusFaults, ServiceBusFaultsFired)>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            entities: Mutex::new(HashMap::new()),
            seq: AtomicI64::new(1),
            lock_ms: AtomicU64::new(30_000),
            max_delivery: AtomicU32::new(10),
            faults: Mutex::new(Default::default()),
        }
    }
}

/// Which fault mode to draw for.
#[derive(Clone, Copy)]
enum Mode {
    Drop,
    Duplicate,
    Reorder,
}

impl Bus {
    /// Draws whether fault mode `mode` fires now, counting it when it does.
    fn draw(&self, mode: Mode) -> bool {
        let mut f = lock(&self.faults);
        let p = match mode {
            Mode::Drop => f.0.drop_send,
            Mode::Duplicate => f.0.duplicate,
            Mode::Reorder => f.0.reorder,
        };
        if p <= 0.0 || (p < 1.0 && rand::random::<f64>() >= p) {
            return false;
        }
        match mode {
            Mode::Drop => f.1.dropped += 1,
            Mode::Duplicate => f.1.duplicated += 1,
            Mode::Reorder => f.1.reordered += 1,
        }
        true
    }
}

impl Sim {
    /// Sets the peek-lock duration of every Service Bus entity (default 30 s).
    pub fn set_servicebus_lock_duration(&self, d: Duration) {
        self.inner
            .servicebus
            .lock_ms
            .store(d.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Turns the Service Bus fault modes on (or off with the default). Chances
    /// outside 0..=1 are clamped.
    pub fn set_servicebus_faults(&self, faults: ServiceBusFaults) {
        let clamp = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        let faults = ServiceBusFaults {
            drop_send: clamp(faults.drop_send),
            duplicate: clamp(faults.duplicate),
            reorder: clamp(faults.reorder),
        };
        lock(&self.inner.servicebus.faults).0 = faults;
    }

    /// How often each Service Bus fault mode has fired since the simulator started.
    pub fn servicebus_faults_fired(&self) -> ServiceBusFaultsFired {
        lock(&self.inner.servicebus.faults).1
    }

    /// Sets the maximum delivery count of every Service Bus entity (default 10).
    pub fn set_servicebus_max_delivery_count(&self, n: u32) {
        self.inner
            .servicebus
            .max_delivery
            .store(n.max(1), Ordering::Relaxed);
    }
}

/// Where a request points: the entity store, the subscription filter, and what follows
/// `messages`.
struct Addr {
    /// Path as the client wrote it (for Location URIs).
    path: String,
    /// Key of the entity holding the messages.
    store: String,
    /// Subscription name: only messages with this Label.
    sub: Option<String>,
    is_dlq: bool,
    /// Segments after `messages`.
    rest: Vec<String>,
}

/// Entity path (for fault rules): the segments between `servicebus` and `messages`.
pub(crate) fn entity_name(ctx: &Ctx) -> String {
    let segs = &ctx.segs[1.min(ctx.segs.len())..];
    let end = segs
        .iter()
        .position(|s| s.eq_ignore_ascii_case("messages"))
        .unwrap_or(segs.len());
    segs[..end].join("/")
}

fn parse_addr(ctx: &Ctx) -> Option<Addr> {
    let segs = ctx.segs.get(1..)?;
    let i = segs
        .iter()
        .position(|s| s.eq_ignore_ascii_case("messages"))?;
    if i == 0 {
        return None;
    }
    let ent = &segs[..i];
    let rest = segs[i + 1..].to_vec();
    let path = ent.join("/");
    let lc: Vec<String> = ent.iter().map(|s| s.to_ascii_lowercase()).collect();
    let is_dlq = lc.last().map(String::as_str) == Some(DLQ);
    let base = if is_dlq { &lc[..lc.len() - 1] } else { &lc[..] };
    if base.is_empty() {
        return None;
    }
    let sub_at = base.iter().rposition(|s| s == "subscriptions");
    let (store, sub) = match sub_at {
        Some(k) if k > 0 && k + 2 == base.len() && !is_dlq => {
            (base[..k].join("/"), Some(base[k + 1].clone()))
        }
        _ if is_dlq => (lc.join("/"), None),
        _ => (base.join("/"), None),
    };
    Some(Addr {
        path,
        store,
        sub,
        is_dlq,
        rest,
    })
}

/// A Service Bus REST error: `<Error><Code>status</Code><Detail>…</Detail></Error>`.
fn sb_error(status: StatusCode, detail: &str) -> Response {
    let detail = detail
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<Error><Code>{}</Code><Detail>{detail} TrackingId:{}, TimeStamp:{}</Detail></Error>",
        status.as_u16(),
        uuid::Uuid::new_v4(),
        http_date(now_ms()),
    );
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    r
}

/// Parses an RFC 1123 date (`Sun, 22 Nov 2026 01:02:03 GMT`) to epoch ms.
fn parse_rfc1123(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(s.trim(), &fmt).ok()?;
    Some((t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Headers that are part of HTTP or of the REST protocol, not application properties.
fn is_protocol_header(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "content-type"
            | "content-length"
            | "host"
            | "brokerproperties"
            | "accept"
            | "accept-encoding"
            | "user-agent"
            | "connection"
            | "transfer-encoding"
            | "expect"
            | "te"
            | "traceparent"
            | "tracestate"
    ) || name.starts_with("x-ms-")
}

/// Handles everything under `/servicebus/`.
pub(crate) async fn handle(sim: &Sim, ctx: &Ctx) -> Response {
    let Some(addr) = parse_addr(ctx) else {
        return sb_error(
            StatusCode::NOT_FOUND,
            &format!("No Service Bus operation for {} {}.", ctx.method, ctx.path),
        );
    };
    let rest: Vec<String> = addr.rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match (&ctx.method, rest.as_slice()) {
        (&Method::POST, []) => send(sim, ctx, &addr),
        (&Method::POST, ["head"]) => receive(sim, ctx, &addr, true).await,
        (&Method::DELETE, ["head"]) => receive(sim, ctx, &addr, false).await,
        (&Method::DELETE, [_, _]) => settle(sim, ctx, &addr, Settle::Complete),
        (&Method::PUT, [_, _]) => settle(sim, ctx, &addr, Settle::Abandon),
        (&Method::POST, [_, _]) => settle(sim, ctx, &addr, Settle::Renew),
        (&Method::POST, [_, _, "$deadletter"]) => settle(sim, ctx, &addr, Settle::DeadLetter),
        _ => sb_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} is not supported on {}.", ctx.method, ctx.path),
        ),
    }
}

fn send(sim: &Sim, ctx: &Ctx, addr: &Addr) -> Response {
    if addr.sub.is_some() || addr.is_dlq {
        return sb_error(
            StatusCode::BAD_REQUEST,
            "Messages can only be sent to a queue or a topic, not to a subscription or a dead-letter queue.",
        );
    }
    if ctx.body.len() > MAX_MESSAGE_BYTES {
        return sb_error(
            StatusCode::FORBIDDEN,
            &format!(
                "The message size {} exceeds the limit of {MAX_MESSAGE_BYTES} bytes.",
                ctx.body.len()
            ),
        );
    }
    let mut bp = match ctx.header("brokerproperties") {
        None => Map::new(),
        Some(h) => match serde_json::from_str::<Value>(h) {
            Ok(Value::Object(m)) => m,
            _ => {
                return sb_error(
                    StatusCode::BAD_REQUEST,
                    "The BrokerProperties header is not a JSON object.",
                )
            }
        },
    };
    let str_prop = |bp: &mut Map<String, Value>, k: &str| match bp.remove(k) {
        Some(Value::String(s)) => Ok(Some(s)),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(format!("BrokerProperties.{k} must be a string.")),
    };
    let strings = (
        str_prop(&mut bp, "MessageId"),
        str_prop(&mut bp, "Label"),
        str_prop(&mut bp, "ScheduledEnqueueTimeUtc"),
    );
    let (message_id, label, scheduled) = match strings {
        (Ok(id), Ok(label), Ok(sched)) => (
            id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            label,
            sched,
        ),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return sb_error(StatusCode::BAD_REQUEST, &e)
        }
    };
    let scheduled = match scheduled {
        None => None,
        Some(s) => match parse_rfc1123(&s) {
            Some(ms) => Some(ms),
            None => {
                return sb_error(
                    StatusCode::BAD_REQUEST,
                    &format!("ScheduledEnqueueTimeUtc '{s}' is not an RFC 1123 date."),
                )
            }
        },
    };
    for k in [
        "LockToken",
        "SequenceNumber",
        "DeliveryCount",
        "EnqueuedTimeUtc",
        "LockedUntilUtc",
    ] {
        bp.remove(k);
    }
    let props: Vec<(String, String)> = ctx
        .headers
        .iter()
        .filter(|(n, _)| !is_protocol_header(n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let now = now_ms();
    let bus = &sim.inner.servicebus;
    if bus.draw(Mode::Drop) {
        return empty(StatusCode::CREATED);
    }
    let notify = {
        let mut all = lock(&bus.entities);
        let e = all.entry(addr.store.clone()).or_default();
        if e.seen.len() > 10_000 {
            e.seen.retain(|_, t| now - *t < DUP_WINDOW_MS);
        }
        match e.seen.get(&message_id) {
            Some(t) if now - *t < DUP_WINDOW_MS => return empty(StatusCode::CREATED),
            _ => {}
        }
        e.seen.insert(message_id.clone(), now);
        let copies = if bus.draw(Mode::Duplicate) { 2 } else { 1 };
        let msg = Msg {
            seq: bus.seq.fetch_add(1, Ordering::Relaxed),
            message_id,
            label,
            content_type: ctx.header("content-type").map(str::to_string),
            body: ctx.body.clone(),
            passthrough: bp,
            props,
            enqueued_ms: now,
            visible_ms: scheduled.unwrap_or(now).max(now),
            scheduled_ms: scheduled,
            delivery_count: 0,
            lock: None,
            via: None,
            dead_letter: None,
            dead_letter_source: None,
        };
        let twin = (copies > 1).then(|| Msg {
            seq: bus.seq.fetch_add(1, Ordering::Relaxed),
            ..msg.clone()
        });
        e.msgs.push(msg);
        e.msgs.extend(twin);
        e.notify.clone()
    };
    notify.notify_waiters();
    empty(StatusCode::CREATED)
}

/// The dead-letter queue key of a message stored in `store` that went through `via`.
fn dlq_key(store: &str, via: Option<&str>) -> String {
    match via {
        Some(sub) => format!("{store}/subscriptions/{sub}/{DLQ}"),
        None => format!("{store}/{DLQ}"),
    }
}

/// Moves a message to its dead-letter queue; returns the queue's waiters to wake.
fn move_to_dlq(
    all: &mut HashMap<String, Entity>,
    store: &str,
    mut m: Msg,
    reason: String,
    description: String,
) -> Arc<Notify> {
    let key = dlq_key(store, m.via.as_deref());
    m.lock = None;
    m.dead_letter = Some((reason, description));
    m.dead_letter_source = Some(match &m.via {
        Some(sub) => format!("{store}/subscriptions/{sub}"),
        None => store.to_string(),
    });
    let e = all.entry(key).or_default();
    e.msgs.push(m);
    e.notify.clone()
}

/// Releases expired locks in `store` (dead-lettering messages that used up their
/// deliveries). Returns the waiters to wake.
fn sweep(all: &mut HashMap<String, Entity>, store: &str, max: u32, now: i64) -> Vec<Arc<Notify>> {
    let is_dlq = store.ends_with(DLQ);
    let Some(e) = all.get_mut(store) else {
        return Vec::new();
    };
    let mut wake = Vec::new();
    let mut dead = Vec::new();
    let mut i = 0;
    while i < e.msgs.len() {
        let expired = matches!(e.msgs[i].lock, Some((_, until)) if until <= now);
        if expired {
            e.msgs[i].lock = None;
            if !is_dlq && e.msgs[i].delivery_count >= max {
                dead.push(e.msgs.remove(i));
                continue;
            }
            if wake.is_empty() {
                wake.push(e.notify.clone());
            }
        }
        i += 1;
    }
    for m in dead {
        wake.push(move_to_dlq(
            all,
            store,
            m,
            MAX_DELIVERY_REASON.to_string(),
            "Message could not be consumed after the maximum number of delivery attempts."
                .to_string(),
        ));
    }
    wake
}

fn matches_sub(m: &Msg, sub: Option<&str>) -> bool {
    match sub {
        None => true,
        Some(s) => m
            .label
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(s)),
    }
}

enum Take {
    Got(Box<Msg>),
    /// Nothing now; something may change at this instant (lock expiry, schedule).
    Later(Option<i64>),
}

fn try_take(sim: &Sim, addr: &Addr, peek_lock: bool) -> (Take, Vec<Arc<Notify>>) {
    let bus = &sim.inner.servicebus;
    let max = bus.max_delivery.load(Ordering::Relaxed);
    let lock_ms = bus.lock_ms.load(Ordering::Relaxed) as i64;
    let now = now_ms();
    let mut all = lock(&bus.entities);
    let wake = sweep(&mut all, &addr.store, max, now);
    let e = all.entry(addr.store.clone()).or_default();
    let sub = addr.sub.as_deref();
    let ready = |m: &Msg| m.lock.is_none() && m.visible_ms <= now && matches_sub(m, sub);
    let mut pos = e.msgs.iter().position(ready);
    if let Some(first) = pos.filter(|_| !addr.is_dlq) {
        let others = e.msgs[first + 1..].iter().filter(|m| ready(m)).count();
        if others > 0 && bus.draw(Mode::Reorder) {
            let pick = rand::random_range(0..others);
            pos = e
                .msgs
                .iter()
                .enumerate()
                .skip(first + 1)
                .filter(|(_, m)| ready(m))
                .nth(pick)
                .map(|(i, _)| i);
        }
    }
    let Some(pos) = pos else {
        let next = e
            .msgs
            .iter()
            .filter(|m| matches_sub(m, sub))
            .filter_map(|m| match &m.lock {
                Some((_, until)) => Some(*until),
                None if m.visible_ms > now => Some(m.visible_ms),
                None => None,
            })
            .min();
        return (Take::Later(next), wake);
    };
    if !peek_lock {
        let mut m = e.msgs.remove(pos);
        m.delivery_count += 1;
        return (Take::Got(Box::new(m)), wake);
    }
    let m = &mut e.msgs[pos];
    // Deliveries from a dead-letter queue do not count (the message keeps the count it
    // was dead-lettered with).
    if !addr.is_dlq {
        m.delivery_count += 1;
        m.via = addr.sub.clone();
    }
    m.lock = Some((uuid::Uuid::new_v4().to_string(), now + lock_ms));
    (Take::Got(Box::new(m.clone())), wake)
}

async fn receive(sim: &Sim, ctx: &Ctx, addr: &Addr, peek_lock: bool) -> Response {
    let timeout_s = match ctx.q("timeout") {
        None => MAX_TIMEOUT_S,
        Some(t) => match t.trim().parse::<u64>() {
            Ok(n) => n.min(MAX_TIMEOUT_S),
            Err(_) => {
                return sb_error(
                    StatusCode::BAD_REQUEST,
                    &format!("timeout '{t}' is not a whole number of seconds."),
                )
            }
        },
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
    let notify = {
        let mut all = lock(&sim.inner.servicebus.entities);
        all.entry(addr.store.clone()).or_default().notify.clone()
    };
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (take, wake) = try_take(sim, addr, peek_lock);
        for n in wake {
            n.notify_waiters();
        }
        let next = match take {
            Take::Got(m) => return delivered(ctx, addr, &m, peek_lock),
            Take::Later(next) => next,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return empty(StatusCode::NO_CONTENT);
        }
        let mut until = deadline;
        if let Some(at) = next {
            let wait = Duration::from_millis((at - now_ms()).max(0) as u64 + 1);
            until = until.min(now + wait);
        }
        let _ = tokio::time::timeout_at(until, notified).await;
    }
}

fn broker_properties(m: &Msg, lock_ms: Option<(&str, i64)>) -> Value {
    let mut bp = m.passthrough.clone();
    bp.insert("DeliveryCount".into(), json!(m.delivery_count));
    bp.insert("EnqueuedSequenceNumber".into(), json!(m.seq));
    bp.insert("SequenceNumber".into(), json!(m.seq));
    bp.insert("EnqueuedTimeUtc".into(), json!(http_date(m.enqueued_ms)));
    bp.insert("MessageId".into(), json!(m.message_id));
    bp.insert("State".into(), json!("Active"));
    if let Some(l) = &m.label {
        bp.insert("Label".into(), json!(l));
    }
    if let Some(s) = m.scheduled_ms {
        bp.insert("ScheduledEnqueueTimeUtc".into(), json!(http_date(s)));
    }
    if let Some((token, until)) = lock_ms {
        bp.insert("LockToken".into(), json!(token));
        bp.insert("LockedUntilUtc".into(), json!(http_date(until)));
    }
    if let Some((reason, description)) = &m.dead_letter {
        bp.insert("DeadLetterReason".into(), json!(reason));
        bp.insert("DeadLetterErrorDescription".into(), json!(description));
    }
    if let Some(src) = &m.dead_letter_source {
        bp.insert("DeadLetterSource".into(), json!(src));
    }
    Value::Object(bp)
}

fn delivered(ctx: &Ctx, addr: &Addr, m: &Msg, peek_lock: bool) -> Response {
    let lock = if peek_lock {
        m.lock.as_ref().map(|(t, u)| (t.as_str(), *u))
    } else {
        None
    };
    let mut r = Response::new(Body::from(m.body.clone()));
    *r.status_mut() = if peek_lock {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    for (name, value) in &m.props {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            r.headers_mut().insert(n, v);
        }
    }
    if let Some(ct) = &m.content_type {
        set_header(&mut r, "content-type", ct);
    }
    let bp = broker_properties(m, lock);
    set_header(&mut r, "brokerproperties", &bp.to_string());
    if let Some((token, _)) = lock {
        let loc = format!(
            "{}/servicebus/{}/messages/{}/{token}",
            ctx.base, addr.path, m.seq
        );
        set_header(&mut r, "location", &loc);
    }
    r
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Settle {
    Complete,
    Abandon,
    Renew,
    DeadLetter,
}

fn settle(sim: &Sim, ctx: &Ctx, addr: &Addr, how: Settle) -> Response {
    let id = addr.rest[0].as_str();
    let token = addr.rest[1].as_str();
    if how == Settle::DeadLetter && addr.is_dlq {
        return sb_error(
            StatusCode::BAD_REQUEST,
            "A message in a dead-letter queue cannot be dead-lettered again.",
        );
    }
    let (reason, description) = if how == Settle::DeadLetter {
        let body: Value = if ctx.body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&ctx.body) {
                Ok(v) => v,
                Err(_) => {
                    return sb_error(
                        StatusCode::BAD_REQUEST,
                        "The dead-letter body must be JSON {\"DeadLetterReason\", \"DeadLetterErrorDescription\"}.",
                    )
                }
            }
        };
        let get = |k: &str, q: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .or_else(|| ctx.q(q))
                .unwrap_or("")
                .to_string()
        };
        (
            get("DeadLetterReason", "reason"),
            get("DeadLetterErrorDescription", "description"),
        )
    } else {
        (String::new(), String::new())
    };
    let bus = &sim.inner.servicebus;
    let max = bus.max_delivery.load(Ordering::Relaxed);
    let lock_ms = bus.lock_ms.load(Ordering::Relaxed) as i64;
    let now = now_ms();
    let mut wake;
    let result = {
        let mut all = lock(&bus.entities);
        wake = sweep(&mut all, &addr.store, max, now);
        let e = all.entry(addr.store.clone()).or_default();
        let pos = e.msgs.iter().position(|m| {
            matches!(&m.lock, Some((t, _)) if t.eq_ignore_ascii_case(token))
                && (m.message_id == id || m.seq.to_string() == id)
                && matches_sub(m, addr.sub.as_deref())
        });
        match pos {
            None => None,
            Some(pos) => Some(match how {
                Settle::Complete => {
                    e.msgs.remove(pos);
                    empty(StatusCode::OK)
                }
                Settle::Renew => {
                    let until = now + lock_ms;
                    if let Some(l) = e.msgs[pos].lock.as_mut() {
                        l.1 = until;
                    }
                    let mut r = empty(StatusCode::OK);
                    let bp = json!({"LockedUntilUtc": http_date(until)});
                    set_header(&mut r, "brokerproperties", &bp.to_string());
                    r
                }
                Settle::Abandon => {
                    let m = &mut e.msgs[pos];
                    m.lock = None;
                    if !addr.is_dlq && m.delivery_count >= max {
                        let m = e.msgs.remove(pos);
                        wake.push(move_to_dlq(
                            &mut all,
                            &addr.store,
                            m,
                            MAX_DELIVERY_REASON.to_string(),
                            "Message could not be consumed after the maximum number of delivery attempts.".to_string(),
                        ));
                    } else {
                        wake.push(e.notify.clone());
                    }
                    empty(StatusCode::OK)
                }
                Settle::DeadLetter => {
                    let m = e.msgs.remove(pos);
                    wake.push(move_to_dlq(&mut all, &addr.store, m, reason, description));
                    empty(StatusCode::OK)
                }
            }),
        }
    };
    for n in wake {
        n.notify_waiters();
    }
    result.unwrap_or_else(|| {
        sb_error(
            StatusCode::NOT_FOUND,
            &format!(
                "No message was found with the specified MessageId or LockToken ({id}); the lock may have expired or the message was settled already."
            ),
        )
    })
}
