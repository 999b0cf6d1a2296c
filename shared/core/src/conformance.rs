//! Conformance suites every adapter of a port must pass.
//!
//! Each backend's tests call these with their own adapter: the embedded SQLite
//! store and bus (`tests/embedded_conformance.rs`), and later the Cosmos DB
//! store and the Service Bus bus from their crates. Every check uses fresh,
//! unique ids, and the bus checks ignore (and hand back) messages that are not
//! theirs, so a shared backend (an emulator, a real namespace) can run the
//! suites repeatedly and alongside other traffic. The suites panic, with a
//! message naming the check, on the first violation.
//!
//! Use a multi-threaded Tokio runtime: the concurrency checks spawn tasks.

use crate::embedded::BusOptions;
use crate::ports::{BusError, Delivery, ETag, EventBus, OutMessage, SagaStore, StoreError};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The dead-letter reason Service Bus (and the embedded bus) records when a
/// message exceeded the maximum delivery count.
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";

/// What the bus suite needs to know about the bus under test: its broker
/// settings and how patient to be with it.
#[derive(Clone, Debug)]
pub struct BusProfile {
    /// The queue's maximum delivery count.
    pub max_delivery_count: u32,
    /// The queue's lock duration. Must comfortably exceed the time to receive
    /// a few dozen messages (the concurrent-receivers check holds its locks
    /// until every message has arrived).
    pub lock_duration: Duration,
    /// How far ahead the scheduled-message check schedules its message.
    pub schedule_delay: Duration,
    /// How long to wait for a message that should arrive.
    pub arrival_timeout: Duration,
    /// How long to listen before concluding that no (further) message of a
    /// check will arrive.
    pub quiet_period: Duration,
}

impl BusProfile {
    /// A profile for a bus configured with `options` (the embedded bus):
    /// short waits, since it is in-process.
    pub fn for_embedded(options: &BusOptions) -> BusProfile {
        BusProfile {
            max_delivery_count: options.max_delivery_count,
            lock_duration: options.lock_duration,
            schedule_delay: Duration::from_millis(400),
            arrival_timeout: Duration::from_secs(5),
            quiet_period: Duration::from_millis(150),
        }
    }

    /// A profile for a remote broker (Service Bus, its emulator) with the given
    /// queue settings: waits measured in seconds.
    pub fn for_remote(max_delivery_count: u32, lock_duration: Duration) -> BusProfile {
        BusProfile {
            max_delivery_count,
            lock_duration,
            schedule_delay: Duration::from_secs(5),
            arrival_timeout: Duration::from_secs(30),
            quiet_period: Duration::from_secs(3),
        }
    }
}

/// A fresh id for one check, unique across runs and processes.
fn unique(check: &str) -> String {
    format!("conformance-{check}-{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------- saga store

/// Runs every saga store check against `store`.
pub async fn saga_store_suite(store: Arc<dyn SagaStore>) {
    store_round_trip(store.as_ref()).await;
    store_distinct_etags(store.as_ref()).await;
    store_create_conflict(store.as_ref()).await;
    store_stale_etag(store.as_ref()).await;
    store_replace_missing(store.as_ref()).await;
    store_concurrent_replace(store.clone()).await;
    store_unsettled_listing(store.as_ref()).await;
}

fn sample_doc(id: &str, n: i64) -> Value {
    json!({
        "id": id,
        "n": n,
        "status": "Running",
        "nested": { "list": [1, 2.5, null, true], "text": "ünïcødé ✓ \"quoted\"" },
    })
}

async fn must_get(store: &dyn SagaStore, id: &str) -> (Value, ETag) {
    match store.get(id).await {
        Ok(Some(d)) => {
            assert_eq!(d.id, id, "get({id}) returned another id");
            (d.doc, d.etag)
        }
        other => panic!("get({id}) after a write: expected the document, got {other:?}"),
    }
}

/// create → get → replace → get → list, and get of a missing id.
async fn store_round_trip(store: &dyn SagaStore) {
    let a = unique("store-a");
    let b = unique("store-b");
    let doc1 = sample_doc(&a, 1);
    let e1 = store.create(&a, &doc1, &[]).await.expect("create a");
    let (got, etag) = must_get(store, &a).await;
    assert_eq!(got, doc1, "round trip: get returns the created document");
    assert_eq!(etag, e1, "round trip: get returns the ETag create returned");
    assert_eq!(
        store.etag(&a).await.expect("etag a"),
        Some(e1.clone()),
        "round trip: etag returns the ETag create returned"
    );

    let doc2 = sample_doc(&a, 2);
    let e2 = store.replace(&a, &doc2, &e1, &[]).await.expect("replace a");
    assert_ne!(e2, e1, "round trip: replace issues a new ETag");
    let (got, etag) = must_get(store, &a).await;
    assert_eq!(got, doc2, "round trip: get returns the replaced document");
    assert_eq!(
        etag, e2,
        "round trip: get returns the ETag replace returned"
    );
    assert_eq!(
        store.etag(&a).await.expect("etag a"),
        Some(e2.clone()),
        "round trip: etag returns the ETag replace returned"
    );
    assert_eq!(
        store.etag(&b).await.expect("etag of a missing id"),
        None,
        "round trip: etag of a missing id is None"
    );

    let doc_b = sample_doc(&b, 7);
    let eb = store.create(&b, &doc_b, &[]).await.expect("create b");
    let listed: HashMap<String, (Value, ETag)> = store
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|d| (d.id, (d.doc, d.etag)))
        .collect();
    assert_eq!(
        listed.get(&a),
        Some(&(doc2, e2.clone())),
        "list holds a's current state"
    );
    assert_eq!(listed.get(&b), Some(&(doc_b, eb.clone())), "list holds b");

    // A scan one page at a time meets every document once, in its current state.
    let mut paged: HashMap<String, ETag> = HashMap::new();
    let mut after: Option<String> = None;
    for _ in 0..100_000 {
        let page = store
            .list_after(after.as_deref(), 1)
            .await
            .expect("list_after");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for d in page {
            let id = d.id.clone();
            assert!(
                paged.insert(d.id, d.etag).is_none(),
                "paged scan met {id} twice"
            );
        }
    }
    assert_eq!(
        paged.get(&a),
        Some(&e2),
        "paged scan holds a's current state"
    );
    assert_eq!(paged.get(&b), Some(&eb), "paged scan holds b");

    let missing = unique("store-missing");
    assert!(
        matches!(store.get(&missing).await, Ok(None)),
        "get of a missing id is Ok(None)"
    );
}

/// Every successful write yields an ETag never seen before for that document.
async fn store_distinct_etags(store: &dyn SagaStore) {
    let id = unique("store-etags");
    let mut etag = store
        .create(&id, &sample_doc(&id, 0), &[])
        .await
        .expect("create");
    let mut seen = HashSet::from([etag.clone()]);
    for n in 1..=5 {
        etag = store
            .replace(&id, &sample_doc(&id, n), &etag, &[])
            .await
            .expect("replace with the current ETag");
        assert!(seen.insert(etag.clone()), "ETag {etag} was issued twice");
    }
}

async fn store_create_conflict(store: &dyn SagaStore) {
    let id = unique("store-conflict");
    let first = sample_doc(&id, 1);
    let etag = store.create(&id, &first, &[]).await.expect("first create");
    let second = store.create(&id, &sample_doc(&id, 2), &[]).await;
    assert!(
        matches!(second, Err(StoreError::Conflict(_))),
        "second create of {id}: expected Conflict, got {second:?}"
    );
    assert_eq!(
        must_get(store, &id).await,
        (first, etag),
        "a refused create leaves the document unchanged"
    );
}

async fn store_stale_etag(store: &dyn SagaStore) {
    let id = unique("store-stale");
    let e1 = store
        .create(&id, &sample_doc(&id, 1), &[])
        .await
        .expect("create");
    let current = sample_doc(&id, 2);
    let e2 = store
        .replace(&id, &current, &e1, &[])
        .await
        .expect("replace with the current ETag");
    let stale = store.replace(&id, &sample_doc(&id, 3), &e1, &[]).await;
    assert!(
        matches!(stale, Err(StoreError::PreconditionFailed(_))),
        "replace with a stale ETag: expected PreconditionFailed, got {stale:?}"
    );
    let bogus = ETag("\"not-an-etag-this-store-issued\"".into());
    let bogus = store.replace(&id, &sample_doc(&id, 4), &bogus, &[]).await;
    assert!(
        matches!(bogus, Err(StoreError::PreconditionFailed(_))),
        "replace with a made-up ETag: expected PreconditionFailed, got {bogus:?}"
    );
    assert_eq!(
        must_get(store, &id).await,
        (current, e2),
        "a refused replace leaves the document unchanged"
    );
}

async fn store_replace_missing(store: &dyn SagaStore) {
    let id = unique("store-missing");
    let r = store
        .replace(&id, &sample_doc(&id, 1), &ETag("\"1\"".into()), &[])
        .await;
    assert!(
        matches!(r, Err(StoreError::NotFound(_))),
        "replace of a missing document: expected NotFound, got {r:?}"
    );
    assert!(
        matches!(store.get(&id).await, Ok(None)),
        "a refused replace does not create the document"
    );
}

/// Several writers replace with the same ETag at once: exactly one wins.
async fn store_concurrent_replace(store: Arc<dyn SagaStore>) {
    const WRITERS: i64 = 8;
    let id = unique("store-race");
    let etag = store
        .create(&id, &sample_doc(&id, 0), &[])
        .await
        .expect("create");
    let start = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=WRITERS {
        let (store, id, etag, start) = (store.clone(), id.clone(), etag.clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            let doc = sample_doc(&id, n);
            (doc.clone(), store.replace(&id, &doc, &etag, &[]).await)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (doc, result) = joined.expect("writer task panicked");
        match result {
            Ok(new_etag) => winners.push((doc, new_etag)),
            Err(StoreError::PreconditionFailed(_)) => {}
            Err(e) => panic!("concurrent replace: expected Ok or PreconditionFailed, got {e:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "concurrent replaces with one ETag: exactly one must win"
    );
    let winner = winners.remove(0);
    assert_eq!(
        must_get(store.as_ref(), &id).await,
        winner,
        "the winner's write is the one stored"
    );
}

/// The ids of every document [`SagaStore::list_sweepable_after`] lists for a
/// sweep at `quiet_before`, read `page` at a time as the sweeper reads them.
pub async fn sweepable_ids(
    store: &dyn SagaStore,
    page: usize,
    quiet_before: time::OffsetDateTime,
) -> Vec<String> {
    let (mut ids, mut after) = (vec![], None::<String>);
    loop {
        let docs = store
            .list_sweepable_after(after.as_deref(), page, quiet_before)
            .await
            .expect("the sweeper's listing");
        let Some(last) = docs.last() else { break };
        after = Some(last.id.clone());
        ids.extend(docs.into_iter().map(|d| d.id));
    }
    ids
}

/// The sweeper's listing leaves out exactly the settled jobs that hold no
/// events, page after page.
async fn store_unsettled_listing(store: &dyn SagaStore) {
    let run = unique("sweep");
    let event = json!([{"event": {"id": "e1"}, "notBefore": null}]);
    let docs = [
        // (what, document, listed for the sweeper)
        (
            "done",
            json!({"status": "Succeeded", "pending": null}),
            false,
        ),
        (
            "rejected",
            json!({"status": "Rejected", "pending": null}),
            false,
        ),
        (
            "done-holding",
            json!({"status": "Succeeded", "pending": null, "outbox": event}),
            true,
        ),
        (
            "running",
            json!({"status": "Running", "pending": null}),
            true,
        ),
        (
            "failed-pending",
            json!({"status": "Failed", "pending": {"seq": 3}}),
            true,
        ),
        (
            "compensating",
            json!({"status": "Compensating", "pending": null}),
            true,
        ),
        ("no-status", json!({"n": 1}), true),
        (
            "status-not-text",
            json!({"status": 7, "pending": null}),
            true,
        ),
    ];
    let mut want = vec![];
    for (what, mut doc, listed) in docs {
        let id = format!("{run}-{what}");
        doc["id"] = json!(id);
        store.create(&id, &doc, &[]).await.expect("create");
        if listed {
            want.push(id);
        }
    }
    // Every job counts as quiet: only settledness and events decide.
    let far_future = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let mut got = sweepable_ids(store, 3, far_future).await;
    // Other checks' documents share the store.
    got.retain(|id| id.starts_with(&run));
    got.sort();
    want.sort();
    assert_eq!(got, want, "the sweeper's listing");
}

// ----------------------------------------------------------------- event bus

/// Runs every event bus check against `bus`, configured as `profile` says.
pub async fn event_bus_suite(bus: Arc<dyn EventBus>, profile: &BusProfile) {
    bus_send_receive_complete(bus.as_ref(), profile).await;
    bus_duplicate_dropped(bus.as_ref(), profile).await;
    bus_receive_wakes_on_send(bus.as_ref(), profile).await;
    bus_scheduled(bus.as_ref(), profile).await;
    bus_abandon_redelivers(bus.as_ref(), profile).await;
    bus_max_delivery_dead_letters(bus.as_ref(), profile).await;
    bus_explicit_dead_letter(bus.as_ref(), profile).await;
    bus_wrong_lock_token(bus.as_ref(), profile).await;
    bus_complete_then_receive(bus.as_ref(), profile).await;
    bus_lock_expiry(bus.as_ref(), profile).await;
    bus_concurrent_receivers(bus.clone(), profile).await;
}

/// A test message; its body is a small JSON CloudEvent-like object.
pub fn test_message(id: &str) -> OutMessage {
    OutMessage {
        id: id.to_string(),
        event_type: "flotilla.conformance.probe".to_string(),
        body: serde_json::to_vec(&json!({ "id": id, "data": "probe ✓" })).unwrap_or_default(),
        not_before: None,
    }
}

/// Receives on behalf of one check: returns that check's messages and holds
/// everybody else's (locked, so they are not handed out again during the
/// check) until [`Probe::release`] abandons them.
struct Probe<'a> {
    bus: &'a dyn EventBus,
    foreign: Vec<Delivery>,
}

impl<'a> Probe<'a> {
    fn new(bus: &'a dyn EventBus) -> Self {
        Probe {
            bus,
            foreign: Vec::new(),
        }
    }

    /// The next delivery of one of `ids`, or `None` after `timeout`.
    async fn next_of(&mut self, ids: &[&str], timeout: Duration) -> Option<Delivery> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.bus.receive(left).await.expect("receive") {
                Some(d) if ids.contains(&d.message_id.as_str()) => return Some(d),
                Some(d) => self.foreign.push(d),
                None => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Asserts that no message of `ids` arrives within `quiet`.
    async fn assert_quiet(&mut self, ids: &[&str], quiet: Duration, what: &str) {
        if let Some(d) = self.next_of(ids, quiet).await {
            panic!("{what}: unexpected delivery {d:?}");
        }
    }

    /// Hands back the messages of others.
    async fn release(self) {
        for d in self.foreign {
            let _ = self.bus.abandon(&d).await;
        }
    }
}

async fn bus_send_receive_complete(bus: &dyn EventBus, p: &BusProfile) {
    let id = unique("bus-basic");
    let sent = test_message(&id);
    bus.send(std::slice::from_ref(&sent)).await.expect("send");
    let mut probe = Probe::new(bus);
    let d = probe
        .next_of(&[&id], p.arrival_timeout)
        .await
        .expect("send/receive: the sent message is delivered");
    assert_eq!(d.message_id, sent.id, "message id survives the trip");
    assert_eq!(
        d.event_type, sent.event_type,
        "event type survives the trip"
    );
    assert_eq!(d.body, sent.body, "body survives the trip");
    assert_eq!(d.delivery_count, 1, "first delivery has delivery_count 1");
    assert!(!d.lock_token.is_empty(), "a delivery carries a lock token");
    bus.complete(&d).await.expect("complete");
    let again = bus.complete(&d).await;
    assert!(
        matches!(again, Err(BusError::LockLost(_))),
        "completing a settled message: expected LockLost, got {again:?}"
    );
    probe
        .assert_quiet(&[&id], p.quiet_period, "a completed message is gone")
        .await;
    probe.release().await;
}

async fn bus_duplicate_dropped(bus: &dyn EventBus, p: &BusProfile) {
    let id = unique("bus-dup");
    let first = test_message(&id);
    let mut second = test_message(&id);
    second.body = b"{\"second\":true}".to_vec();
    bus.send(std::slice::from_ref(&first)).await.expect("send");
    bus.send(&[second]).await.expect("send duplicate");
    let mut probe = Probe::new(bus);
    let d = probe
        .next_of(&[&id], p.arrival_timeout)
        .await
        .expect("duplicate detection: the first send is delivered");
    assert_eq!(d.body, first.body, "the first of two sends is the one kept");
    bus.complete(&d).await.expect("complete");
    probe
        .assert_quiet(&[&id], p.quiet_period, "a duplicate message id is dropped")
        .await;
    probe.release().await;
}

/// A receiver already waiting gets a message sent during its wait, well before
/// the wait is over.
async fn bus_receive_wakes_on_send(bus: &dyn EventBus, p: &BusProfile) {
    let id = unique("bus-wake");
    let long_wait = p.arrival_timeout * 4;
    let mut probe = Probe::new(bus);
    let started = Instant::now();
    let ids = [id.as_str()];
    let (got, sent) = tokio::join!(probe.next_of(&ids, long_wait), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bus.send(&[test_message(&id)]).await
    });
    sent.expect("send");
    let d = got.expect("a waiting receiver gets a message sent during its wait");
    assert!(
        started.elapsed() < p.arrival_timeout * 2,
        "a waiting receiver is woken by a send (took {:?} of a {long_wait:?} wait)",
        started.elapsed()
    );
    bus.complete(&d).await.expect("complete");
    probe.release().await;
}

async fn bus_scheduled(bus: &dyn EventBus, p: &BusProfile) {
    let id = unique("bus-scheduled");
    let not_before = OffsetDateTime::now_utc() + p.schedule_delay;
    let mut m = test_message(&id);
    m.not_before = Some(not_before);
    bus.send(&[m]).await.expect("send scheduled");
    let mut probe = Probe::new(bus);
    probe
        .assert_quiet(
            &[&id],
            p.schedule_delay / 2,
            "a scheduled message is invisible before its time",
        )
        .await;
    let d = probe
        .next_of(&[&id], p.schedule_delay + p.arrival_timeout)
        .await
        .expect("a scheduled message is delivered once due");
    let tolerance = p.schedule_delay / 4;
    assert!(
        OffsetDateTime::now_utc() >= not_before - tolerance,
        "a scheduled message is not delivered early"
    );
    assert_eq!(d.delivery_count, 1, "scheduled message: first delivery");
    bus.complete(&d).await.expect("complete");
    probe.release().await;
}

async fn bus_abandon_redelivers(bus: &dyn EventBus, p: &BusProfile) {
    let id = unique("bus-abandon");
    bus.send(&[test_message(&id)]).await.expect("send");
    let mut probe = Probe::new(bus);
    let d1 = probe
        .next_of(&[&id], p.arrival_timeout)
        .await
        .expect("first delivery");
    assert_eq!(d1.delivery_count, 1);
    bus.abandon(&d1).await.expect("abandon");
    let d2 = probe
        .next_of(&[&id], p.arrival_timeout)
        .await
        .expect("an abandoned message is delivered again");
    assert_eq!(d2.delivery_count, 2, "redelivery after abandon counts 2");
    assert_ne!(
        d2.lock_token, d1.lock_token,
        "each delivery has its own lock"
    );
    bus.complete(&d2).await.expect("complete");
    probe.release().await;
}

async fn bus_max_delivery_dead_letters(bus: &dyn EventBus, p: &BusProfile) {
    let id = unique("bus-poison");
    bus.send(&[test_message(&id)]).await.expect("send");
    let mut probe = Probe::new(bus);
    for n in 1..=p.max_delivery_count {
        let d = probe
            .next_of(&[&id], p.arrival_timeout)
            .await
            .unwrap_or_else(|| panic!("delivery {n} of {} is made", p.max_delivery_count));
        assert_eq!(d.delivery_count, n, "delivery count increases by one");
        bus.abandon(&d).await.expect("abandon");
    }
    probe
        .assert_quiet(
            &[&id],
            p.quiet_period,
            "no delivery past the maximum delivery count",
        )
        .await;
    probe.release().await;
    let dl = await_dead_letter(bus, &id, p.arrival_timeout).await;
    assert_eq!(
        dl.reason, MAX_DELIVERY_COUNT_EXCEEDED,
        "dead-letter reason after too many deliveries"
    );
    assert!(
        dl.delivery_count >= p.max_delivery_count,
        "dead-lettered after {} deliveries, expected at least {}",
        dl.delivery_count,
        p.max_delivery_count
    );
}

async fn await_dead_letter(
    bus: &dyn EventBus,
    id: &str,
    timeout: Duration,
) -> crate::ports::DeadLetter {
    let deadline = Instant::now() + timeout;
    loop {
        let found = bus
            .dead_letters()
            .await
            .expect("dead_letters")
            .into_iter()
            .find(|d| d.message_id == id);
        if let Some(found) = found {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "message {id} reaches the dead-letter queue"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn bus_explicit_dead_letter(bus: &dyn EventBus, p: &BusProfile) {
    let id = unique("bus-deadletter");
    let sent = test_message(&id);
    bus.send(std::slice::from_ref(&sent)).await.expect("send");
    let mut probe = Probe::new(bus);
    let d = probe
        .next_of(&[&id], p.arrival_timeout)
        .await
        .expect("delivery");
    let reason = "conformance: poison message";
    bus.dead_letter(&d, reason).await.expect("dead_letter");
    probe
        .assert_quiet(&[&id], p.quiet_period, "a dead-lettered message is gone")
        .await;
    probe.release().await;
    let dl = await_dead_letter(bus, &id, p.arrival_timeout).await;
    assert_eq!(dl.reason, reason, "the given dead-letter reason is kept");
    assert_eq!(dl.event_type, sent.event_type);
    assert_eq!(dl.body, sent.body, "the dead-lettered body is kept");
    assert_eq!(dl.delivery_count, 1);
    let again = bus.complete(&d).await;
    assert!(
        matches!(again, Err(BusError::LockLost(_))),
        "completing a dead-lettered message: expected LockLost, got {again:?}"
    );
}

async fn bus_wrong_lock_token(bus: &dyn EventBus, p: &BusProfile) {
    let id = unique("bus-token");
    bus.send(&[test_message(&id)]).await.expect("send");
    let mut probe = Probe::new(bus);
    let d = probe
        .next_of(&[&id], p.arrival_timeout)
        .await
        .expect("delivery");
    let forged = Delivery {
        lock_token: uuid::Uuid::new_v4().to_string(),
        ..d.clone()
    };
    let r = bus.complete(&forged).await;
    assert!(
        matches!(r, Err(BusError::LockLost(_))),
        "complete with a wrong lock token: expected LockLost, got {r:?}"
    );
    let r = bus.abandon(&forged).await;
    assert!(
        matches!(r, Err(BusError::LockLost(_))),
        "abandon with a wrong lock token: expected LockLost, got {r:?}"
    );
    let r = bus.dead_letter(&forged, "forged").await;
    assert!(
        matches!(r, Err(BusError::LockLost(_))),
        "dead_letter with a wrong lock token: expected LockLost, got {r:?}"
    );
    bus.complete(&d)
        .await
        .expect("the real lock still completes the message");
    probe.release().await;
}

/// Completing with the next receive in the same call removes the message
/// for good and hands out the next one exactly once (here or to a later
/// receive); with a lost lock it fails and takes nothing.
async fn bus_complete_then_receive(bus: &dyn EventBus, p: &BusProfile) {
    let first = unique("bus-ctr-first");
    let second = unique("bus-ctr-second");
    bus.send(&[test_message(&first)]).await.expect("send");
    let mut probe = Probe::new(bus);
    let d = probe
        .next_of(&[&first], p.arrival_timeout)
        .await
        .expect("delivery");
    bus.send(&[test_message(&second)]).await.expect("send");
    let forged = Delivery {
        lock_token: uuid::Uuid::new_v4().to_string(),
        ..d.clone()
    };
    let r = bus.complete_then_receive(&forged).await;
    assert!(
        matches!(r, Err(BusError::LockLost(_))),
        "complete_then_receive with a wrong lock token: expected LockLost, got {r:?}"
    );
    let mut taken = bus
        .complete_then_receive(&d)
        .await
        .expect("complete_then_receive");
    // Messages of others that came along are held like the probe's.
    while let Some(t) = taken.take() {
        if t.message_id == second {
            taken = Some(t);
            break;
        }
        probe.foreign.push(t);
    }
    let got = match taken {
        Some(t) => t,
        None => probe
            .next_of(&[&second], p.arrival_timeout)
            .await
            .expect("the next message is still delivered after a lost lock and a completion"),
    };
    assert_eq!(got.delivery_count, 1, "the next message was taken once");
    bus.complete(&got).await.expect("complete the next message");
    probe
        .assert_quiet(
            &[&first, &second],
            p.quiet_period,
            "completed by complete_then_receive, nothing comes back",
        )
        .await;
    probe.release().await;
}

async fn bus_lock_expiry(bus: &dyn EventBus, p: &BusProfile) {
    let id = unique("bus-expiry");
    bus.send(&[test_message(&id)]).await.expect("send");
    let mut probe = Probe::new(bus);
    let d1 = probe
        .next_of(&[&id], p.arrival_timeout)
        .await
        .expect("first delivery");
    let locked_at = Instant::now();
    probe
        .assert_quiet(
            &[&id],
            p.lock_duration / 3,
            "a locked message is not delivered to anyone else",
        )
        .await;
    let d2 = probe
        .next_of(&[&id], p.lock_duration * 2 + p.arrival_timeout)
        .await
        .expect("a message whose lock expired is delivered again");
    assert!(
        locked_at.elapsed() + Duration::from_millis(50) >= p.lock_duration,
        "redelivered only after the lock expired (after {:?})",
        locked_at.elapsed()
    );
    assert_eq!(
        d2.delivery_count, 2,
        "redelivery after lock expiry counts 2"
    );
    assert_ne!(d2.lock_token, d1.lock_token);
    let stale = bus.complete(&d1).await;
    assert!(
        matches!(stale, Err(BusError::LockLost(_))),
        "complete with a lock taken over by another consumer: expected LockLost, got {stale:?}"
    );
    bus.complete(&d2).await.expect("complete the redelivery");
    probe.release().await;
}

/// Receivers running at once each get different messages.
async fn bus_concurrent_receivers(bus: Arc<dyn EventBus>, p: &BusProfile) {
    const MESSAGES: usize = 24;
    const RECEIVERS: usize = 6;
    let ids: Vec<String> = (0..MESSAGES)
        .map(|i| unique(&format!("bus-fanout{i}")))
        .collect();
    let messages: Vec<OutMessage> = ids.iter().map(|id| test_message(id)).collect();
    bus.send(&messages).await.expect("send batch");
    let ours: Arc<HashSet<String>> = Arc::new(ids.iter().cloned().collect());
    let received = Arc::new(Mutex::new(Vec::<Delivery>::new()));
    let deadline = Instant::now() + p.arrival_timeout;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..RECEIVERS {
        let (bus, ours, received) = (bus.clone(), ours.clone(), received.clone());
        let wait = p.quiet_period;
        tasks.spawn(async move {
            let mut foreign = Vec::new();
            // Locks are held (not completed) until the end, so a bus that
            // hands one message to two receivers shows a duplicate.
            while received.lock().await.len() < MESSAGES && Instant::now() < deadline {
                match bus.receive(wait).await.expect("receive") {
                    Some(d) if ours.contains(&d.message_id) => received.lock().await.push(d),
                    Some(d) => foreign.push(d),
                    None => {}
                }
            }
            for d in foreign {
                let _ = bus.abandon(&d).await;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("receiver task panicked");
    }
    let received = std::mem::take(&mut *received.lock().await);
    let mut seen = HashSet::new();
    for d in &received {
        assert!(
            seen.insert(d.message_id.clone()),
            "concurrent receivers: {} was delivered twice",
            d.message_id
        );
        assert_eq!(
            d.delivery_count, 1,
            "concurrent receivers: first deliveries"
        );
    }
    assert_eq!(
        seen.len(),
        MESSAGES,
        "concurrent receivers: every message is delivered"
    );
    for d in &received {
        bus.complete(d).await.expect("complete");
    }
}

// ------------------------------------------------------------------- outbox

/// Checks a store that delivers its outbox (`delivers_outbox() == true`) on
/// the bus it publishes to: messages of a successful write arrive, those of a
/// refused write never do. Does nothing for a store that does not deliver.
pub async fn outbox_suite(store: Arc<dyn SagaStore>, bus: Arc<dyn EventBus>, p: &BusProfile) {
    if !store.delivers_outbox() {
        return;
    }
    let bus = bus.as_ref();
    let id = unique("outbox");
    let (m_create, m_refused, m_replace) = (
        unique("outbox-create"),
        unique("outbox-refused"),
        unique("outbox-replace"),
    );
    let ids = [m_create.as_str(), m_refused.as_str(), m_replace.as_str()];
    let e1 = store
        .create(&id, &sample_doc(&id, 1), &[test_message(&m_create)])
        .await
        .expect("create with outbox");
    let mut probe = Probe::new(bus);
    let d = probe
        .next_of(&ids, p.arrival_timeout)
        .await
        .expect("outbox: create publishes its messages");
    assert_eq!(d.message_id, m_create);
    bus.complete(&d).await.expect("complete");

    let e2 = store
        .replace(&id, &sample_doc(&id, 2), &e1, &[])
        .await
        .expect("replace");
    let refused = store
        .replace(&id, &sample_doc(&id, 3), &e1, &[test_message(&m_refused)])
        .await;
    assert!(
        matches!(refused, Err(StoreError::PreconditionFailed(_))),
        "stale replace: expected PreconditionFailed, got {refused:?}"
    );
    store
        .replace(&id, &sample_doc(&id, 4), &e2, &[test_message(&m_replace)])
        .await
        .expect("replace with outbox");
    let d = probe
        .next_of(&ids, p.arrival_timeout)
        .await
        .expect("outbox: replace publishes its messages");
    assert_eq!(
        d.message_id, m_replace,
        "outbox: a refused replace publishes nothing"
    );
    bus.complete(&d).await.expect("complete");
    probe
        .assert_quiet(
            &ids,
            p.quiet_period,
            "outbox: a refused replace publishes nothing",
        )
        .await;
    probe.release().await;
}
