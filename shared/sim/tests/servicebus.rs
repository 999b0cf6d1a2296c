//! The simulator's Service Bus REST surface over real HTTPS: send, peek-lock, settle,
//! scheduled enqueue, duplicate detection, delivery counts, dead-letter queues, lock
//! expiry, topic routing by Label and authentication.

mod common;

use common::{client_for, config, token};
use flotilla_sim::{FaultRule, Sim, SimServer};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Sb {
    sim: Sim,
    server: SimServer,
    client: Client,
    token: String,
}

async fn start() -> Sb {
    let sim = Sim::new(config(0)).expect("sim starts");
    let server = sim.serve(0).await.expect("sim serves");
    let client = client_for(&sim);
    let token = token(
        &client,
        &server.info,
        "https://servicebus.azure.net/.default",
    )
    .await;
    Sb {
        sim,
        server,
        client,
        token,
    }
}

fn unique(what: &str) -> String {
    format!("{what}-{}", uuid_like())
}

fn uuid_like() -> String {
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!("{n:x}")
}

impl Sb {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.server.info.servicebus_endpoint)
    }

    async fn send(&self, entity: &str, body: &str, bp: Value, props: &[(&str, &str)]) -> Response {
        let mut req = self
            .client
            .post(self.url(&format!("{entity}/messages")))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("BrokerProperties", bp.to_string())
            .body(body.to_string());
        for (k, v) in props {
            req = req.header(*k, *v);
        }
        req.send().await.expect("send")
    }

    async fn sent(&self, entity: &str, id: &str, bp: Value) {
        let mut bp = bp;
        bp["MessageId"] = json!(id);
        let r = self
            .send(entity, &format!("{{\"id\":\"{id}\"}}"), bp, &[])
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "send {id}");
    }

    /// Peek-lock; `None` on 204.
    async fn receive(&self, entity: &str, timeout_s: u64) -> Option<Received> {
        let r = self
            .client
            .post(self.url(&format!("{entity}/messages/head?timeout={timeout_s}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("receive");
        match r.status() {
            StatusCode::NO_CONTENT => None,
            StatusCode::CREATED => {
                let headers = r.headers().clone();
                let bp: Value = serde_json::from_str(
                    headers
                        .get("brokerproperties")
                        .expect("BrokerProperties header")
                        .to_str()
                        .unwrap(),
                )
                .expect("BrokerProperties is JSON");
                let location = headers
                    .get("location")
                    .expect("Location header")
                    .to_str()
                    .unwrap()
                    .to_string();
                let body = r.text().await.unwrap();
                Some(Received {
                    headers,
                    bp,
                    location,
                    body,
                })
            }
            s => panic!(
                "receive: unexpected {s}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }

    async fn settle(&self, method: reqwest::Method, uri: &str) -> StatusCode {
        self.client
            .request(method, uri)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("settle")
            .status()
    }
}

struct Received {
    headers: reqwest::header::HeaderMap,
    bp: Value,
    location: String,
    body: String,
}

impl Received {
    fn id(&self) -> &str {
        self.bp["MessageId"].as_str().unwrap()
    }
    fn count(&self) -> u64 {
        self.bp["DeliveryCount"].as_u64().unwrap()
    }
}

#[tokio::test]
async fn send_receive_complete_and_broker_properties() {
    let sb = start().await;
    let q = unique("q");
    let r = sb
        .send(
            &q,
            "{\"hello\":1}",
            json!({"MessageId": "m1", "Label": "stage", "CorrelationId": "c1"}),
            &[("cloudEvents_type", "\"flotilla.x\"")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = sb.receive(&q, 5).await.expect("a message");
    assert_eq!(got.body, "{\"hello\":1}");
    assert_eq!(got.id(), "m1");
    assert_eq!(got.bp["Label"], "stage");
    assert_eq!(got.bp["CorrelationId"], "c1");
    assert_eq!(got.count(), 1);
    assert!(got.bp["SequenceNumber"].as_i64().is_some());
    assert!(got.bp["EnqueuedTimeUtc"]
        .as_str()
        .unwrap()
        .ends_with(" GMT"));
    let token = got.bp["LockToken"].as_str().unwrap().to_string();
    assert!(
        got.location.ends_with(&format!("/{token}")),
        "{}",
        got.location
    );
    assert!(got.location.starts_with(&format!(
        "{}/{q}/messages/",
        sb.server.info.servicebus_endpoint
    )));
    assert_eq!(
        got.headers
            .get("cloudevents_type")
            .unwrap()
            .to_str()
            .unwrap(),
        "\"flotilla.x\"",
        "application properties come back as headers"
    );
    assert_eq!(
        got.headers.get("content-type").unwrap().to_str().unwrap(),
        "application/json"
    );
    assert_eq!(
        sb.settle(reqwest::Method::DELETE, &got.location).await,
        StatusCode::OK
    );
    assert_eq!(
        sb.settle(reqwest::Method::DELETE, &got.location).await,
        StatusCode::NOT_FOUND,
        "a settled message's lock is gone"
    );
    // The message id form of the lock URI works too.
    sb.sent(&q, "m2", json!({})).await;
    let got = sb.receive(&q, 5).await.unwrap();
    let token = got.bp["LockToken"].as_str().unwrap();
    let by_id = sb.url(&format!("{q}/messages/m2/{token}"));
    assert_eq!(
        sb.settle(reqwest::Method::POST, &by_id).await,
        StatusCode::OK,
        "renew"
    );
    assert_eq!(
        sb.settle(reqwest::Method::DELETE, &by_id).await,
        StatusCode::OK
    );
    assert!(sb.receive(&q, 0).await.is_none());
    // Requests are logged.
    assert!(sb
        .sim
        .requests()
        .iter()
        .any(|r| r.path.ends_with(&format!("{q}/messages/head")) && r.status == 201));
}

#[tokio::test]
async fn empty_queue_answers_204_after_the_timeout() {
    let sb = start().await;
    let started = Instant::now();
    assert!(sb.receive(&unique("empty"), 1).await.is_none());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "waited {took:?}");
    assert!(took < Duration::from_secs(5), "waited {took:?}");
}

#[tokio::test]
async fn long_poll_wakes_on_send() {
    let sb = start().await;
    let q = unique("wake");
    let started = Instant::now();
    let (got, _) = tokio::join!(sb.receive(&q, 30), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sb.sent(&q, "w1", json!({})).await;
    });
    assert_eq!(got.expect("woken").id(), "w1");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn scheduled_enqueue_is_invisible_until_due() {
    let sb = start().await;
    let q = unique("sched");
    let at = time::OffsetDateTime::now_utc() + Duration::from_secs(3);
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at_s = at.format(&fmt).unwrap();
    sb.sent(&q, "s1", json!({"ScheduledEnqueueTimeUtc": at_s}))
        .await;
    assert!(sb.receive(&q, 1).await.is_none(), "not visible yet");
    let got = sb.receive(&q, 10).await.expect("due message");
    assert_eq!(got.id(), "s1");
    assert!(time::OffsetDateTime::now_utc() >= at - Duration::from_secs(1));
    assert_eq!(got.bp["ScheduledEnqueueTimeUtc"], at_s);
    // A malformed date is refused.
    let r = sb
        .send(
            &q,
            "{}",
            json!({"ScheduledEnqueueTimeUtc": "tomorrow"}),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn duplicate_message_id_is_dropped() {
    let sb = start().await;
    let q = unique("dup");
    sb.sent(&q, "d1", json!({})).await;
    let r = sb.send(&q, "second", json!({"MessageId": "d1"}), &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED, "a duplicate is accepted");
    let got = sb.receive(&q, 2).await.unwrap();
    assert_eq!(got.body, "{\"id\":\"d1\"}", "the first send is kept");
    sb.settle(reqwest::Method::DELETE, &got.location).await;
    assert!(
        sb.receive(&q, 1).await.is_none(),
        "the duplicate was dropped"
    );
}

#[tokio::test]
async fn abandon_redelivers_and_max_delivery_dead_letters() {
    let sb = start().await;
    sb.sim.set_servicebus_max_delivery_count(3);
    let q = unique("poison");
    sb.sent(&q, "p1", json!({})).await;
    let first = sb.receive(&q, 2).await.unwrap();
    assert_eq!(first.count(), 1);
    assert_eq!(
        sb.settle(reqwest::Method::PUT, &first.location).await,
        StatusCode::OK
    );
    let second = sb.receive(&q, 2).await.unwrap();
    assert_eq!(second.count(), 2, "abandon raises the delivery count");
    assert_ne!(second.bp["LockToken"], first.bp["LockToken"]);
    sb.settle(reqwest::Method::PUT, &second.location).await;
    let third = sb.receive(&q, 2).await.unwrap();
    assert_eq!(third.count(), 3);
    sb.settle(reqwest::Method::PUT, &third.location).await;
    assert!(
        sb.receive(&q, 1).await.is_none(),
        "no delivery past the max"
    );
    let dl = sb
        .receive(&format!("{q}/$deadletterqueue"), 2)
        .await
        .expect("dead-lettered");
    assert_eq!(dl.id(), "p1");
    assert_eq!(dl.bp["DeadLetterReason"], "MaxDeliveryCountExceeded");
    assert_eq!(dl.count(), 3);
    assert_eq!(
        sb.settle(reqwest::Method::DELETE, &dl.location).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn explicit_dead_letter_extension() {
    let sb = start().await;
    let q = unique("dl");
    sb.sent(&q, "x1", json!({})).await;
    let got = sb.receive(&q, 2).await.unwrap();
    let r = sb
        .client
        .post(format!("{}/$deadletter", got.location))
        .bearer_auth(&sb.token)
        .json(&json!({"DeadLetterReason": "poison", "DeadLetterErrorDescription": "bad"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(sb.receive(&q, 0).await.is_none());
    let dl = sb
        .receive(&format!("{q}/$deadletterqueue"), 2)
        .await
        .unwrap();
    assert_eq!(dl.bp["DeadLetterReason"], "poison");
    assert_eq!(dl.bp["DeadLetterErrorDescription"], "bad");
    assert_eq!(dl.count(), 1);
    assert_eq!(
        sb.settle(reqwest::Method::DELETE, &got.location).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn expired_lock_redelivers() {
    let sb = start().await;
    sb.sim
        .set_servicebus_lock_duration(Duration::from_millis(1500));
    let q = unique("expiry");
    sb.sent(&q, "e1", json!({})).await;
    let first = sb.receive(&q, 2).await.unwrap();
    let locked = Instant::now();
    let second = sb.receive(&q, 10).await.expect("redelivered after expiry");
    assert!(locked.elapsed() >= Duration::from_millis(1400));
    assert_eq!(second.count(), 2);
    assert_eq!(
        sb.settle(reqwest::Method::DELETE, &first.location).await,
        StatusCode::NOT_FOUND,
        "the expired lock no longer settles"
    );
    assert_eq!(
        sb.settle(reqwest::Method::DELETE, &second.location).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn topic_routes_by_label_to_subscriptions() {
    let sb = start().await;
    let t = unique("events");
    sb.sent(&t, "to-a", json!({"Label": "a"})).await;
    sb.sent(&t, "to-b", json!({"Label": "b"})).await;
    sb.sent(&t, "to-later", json!({"Label": "later"})).await;
    let a = sb
        .receive(&format!("{t}/subscriptions/a"), 2)
        .await
        .unwrap();
    assert_eq!(a.id(), "to-a");
    assert!(a
        .location
        .contains(&format!("/{t}/subscriptions/a/messages/")));
    assert_eq!(
        sb.settle(reqwest::Method::DELETE, &a.location).await,
        StatusCode::OK
    );
    assert!(sb
        .receive(&format!("{t}/subscriptions/a"), 0)
        .await
        .is_none());
    let b = sb
        .receive(&format!("{t}/subscriptions/b"), 2)
        .await
        .unwrap();
    assert_eq!(b.id(), "to-b");
    let later = sb
        .receive(&format!("{t}/subscriptions/later"), 2)
        .await
        .unwrap();
    assert_eq!(later.id(), "to-later");
    // A subscription's dead-letter queue.
    sb.client
        .post(format!("{}/$deadletter", b.location))
        .bearer_auth(&sb.token)
        .json(&json!({"DeadLetterReason": "r"}))
        .send()
        .await
        .unwrap();
    let dl = sb
        .receive(&format!("{t}/subscriptions/b/$deadletterqueue"), 2)
        .await
        .unwrap();
    assert_eq!(dl.id(), "to-b");
    assert_eq!(dl.bp["DeadLetterReason"], "r");
    // Sending to a subscription is refused.
    let r = sb
        .send(&format!("{t}/subscriptions/a"), "{}", json!({}), &[])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn needs_a_service_bus_token() {
    let sb = start().await;
    let q = unique("auth");
    let r = sb
        .client
        .post(sb.url(&format!("{q}/messages")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let arm = token(
        &sb.client,
        &sb.server.info,
        "https://management.azure.com/.default",
    )
    .await;
    let r = sb
        .client
        .post(sb.url(&format!("{q}/messages/head?timeout=0")))
        .bearer_auth(arm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "wrong audience");
}

#[tokio::test]
async fn fault_rules_apply() {
    let sb = start().await;
    let q = unique("fault");
    sb.sim.add_fault(FaultRule {
        method: Some("POST".into()),
        resource_type: Some("Microsoft.ServiceBus/namespaces/messages".into()),
        name_pattern: Some(format!("{q}*")),
        status: 503,
        code: "ServerBusy".into(),
        message: None,
        times: Some(1),
        probability: None,
        latency_ms: None,
        asynchronous: false,
        principal: None,
    });
    let r = sb.send(&q, "{}", json!({}), &[]).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = sb.send(&q, "{}", json!({}), &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}
