//! The Service Bus adapter against the Azure simulator over HTTPS: the bus
//! conformance suite on a queue and on a topic subscription, plus the wire
//! format of a sent message (Label, `cloudEvents_*` properties).

use flotilla_azure::{AzureConfig, CredentialConfig};
use flotilla_cloud::servicebus::ServiceBusBus;
use flotilla_core::conformance::{event_bus_suite, BusProfile};
use flotilla_core::ports::{EventBus, OutMessage};
use flotilla_sim::{Sim, SimConfig, SimServer};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const LOCK: Duration = Duration::from_secs(4);
const MAX_DELIVERY: u32 = 4;

async fn start() -> (Sim, SimServer, AzureConfig) {
    let sim = Sim::new(SimConfig {
        data_dir: None,
        lro: Duration::ZERO,
        throttle: None,
        ..SimConfig::default()
    })
    .expect("sim starts");
    sim.set_servicebus_lock_duration(LOCK);
    sim.set_servicebus_max_delivery_count(MAX_DELIVERY);
    let server = sim.serve(0).await.expect("sim serves");
    let info = &server.info;
    let http = flotilla_harness::sim_https(&sim).expect("HTTPS client");
    let config = flotilla_harness::sim_client_config(info, http, None).expect("client config");
    (sim, server, config)
}

fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_a_queue() {
    let (_sim, server, config) = start().await;
    let queue = unique("jobs");
    let bus = ServiceBusBus::new(
        &config,
        &server.info.servicebus_endpoint,
        &queue,
        Some(&queue),
    )
    .expect("bus");
    event_bus_suite(Arc::new(bus), &BusProfile::for_remote(MAX_DELIVERY, LOCK)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_a_topic_subscription() {
    let (_sim, server, config) = start().await;
    let topic = unique("flotilla-events");
    // The suite's messages carry no CloudEvent subject: the default label
    // routes them to the "stage" subscription.
    let bus = ServiceBusBus::new(
        &config,
        &server.info.servicebus_endpoint,
        &topic,
        Some(&format!("{topic}/subscriptions/stage")),
    )
    .expect("bus")
    .with_default_label("stage");
    event_bus_suite(Arc::new(bus), &BusProfile::for_remote(MAX_DELIVERY, LOCK)).await;
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn cloud_event(id: &str, subject: &str) -> OutMessage {
    let body = json!({
        "specversion": "1.0",
        "id": id,
        "source": "/flotilla/jobs/j1",
        "type": "flotilla.stage.requested",
        "subject": subject,
        "datacontenttype": "application/json",
        "data": {"job": "j1"},
        "traceparent": TRACEPARENT,
    });
    OutMessage {
        id: id.to_string(),
        event_type: "flotilla.stage.requested".to_string(),
        body: serde_json::to_vec(&body).unwrap(),
        not_before: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_routes_by_subject_and_carries_cloudevents_properties() {
    let (sim, server, config) = start().await;
    let endpoint = server.info.servicebus_endpoint.clone();
    let topic = unique("flotilla-events");
    let stage = ServiceBusBus::new(
        &config,
        &endpoint,
        &topic,
        Some(&format!("{topic}/subscriptions/stage")),
    )
    .unwrap();
    let other = ServiceBusBus::new(
        &config,
        &endpoint,
        &topic,
        Some(&format!("{topic}/subscriptions/other")),
    )
    .unwrap();
    let (a, b) = (unique("a"), unique("b"));
    stage
        .send(&[cloud_event(&a, "stage"), cloud_event(&b, "other")])
        .await
        .expect("send");
    let d = stage
        .receive(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("stage gets its message");
    assert_eq!(d.message_id, a);
    assert_eq!(d.event_type, "flotilla.stage.requested");
    stage.complete(&d).await.unwrap();
    assert!(stage
        .receive(Duration::from_secs(1))
        .await
        .unwrap()
        .is_none());
    let d = other
        .receive(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("other gets its message");
    assert_eq!(d.message_id, b);
    other.complete(&d).await.unwrap();

    // The wire format, read with a plain HTTPS client.
    let queue = unique("wire");
    let bus = ServiceBusBus::new(&config, &endpoint, &queue, None).unwrap();
    let id = unique("wire-msg");
    let mut m = cloud_event(&id, "stage");
    m.not_before = Some(time::OffsetDateTime::now_utc() - Duration::from_secs(1));
    bus.send(&[m.clone()]).await.expect("send");
    let ca = reqwest::Certificate::from_pem(sim.ca_cert_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let token: Value = client
        .post(&server.info.token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", server.info.client_id.as_str()),
            ("client_secret", server.info.client_secret.as_str()),
            ("scope", "https://servicebus.azure.net/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = client
        .post(format!("{endpoint}/{queue}/messages/head?timeout=5"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .unwrap_or_else(|| panic!("header {n}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let bp: Value = serde_json::from_str(&h("brokerproperties")).unwrap();
    assert_eq!(bp["MessageId"], id.as_str());
    assert_eq!(bp["Label"], "stage", "Label = the CloudEvent subject");
    assert!(bp["ScheduledEnqueueTimeUtc"]
        .as_str()
        .unwrap()
        .ends_with(" GMT"));
    assert_eq!(h("cloudEvents_id"), format!("\"{id}\""));
    assert_eq!(h("cloudEvents_source"), "\"/flotilla/jobs/j1\"");
    assert_eq!(h("cloudEvents_type"), "\"flotilla.stage.requested\"");
    assert_eq!(h("cloudEvents_specversion"), "\"1.0\"");
    assert_eq!(h("cloudEvents_subject"), "\"stage\"");
    assert_eq!(
        h("Diagnostic-Id"),
        format!("\"{TRACEPARENT}\""),
        "the event's traceparent is the message's Diagnostic-Id"
    );
    assert_eq!(
        h("content-type"),
        "application/cloudevents+json; charset=utf-8"
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.as_ref(), m.body.as_slice());
}

#[tokio::test]
async fn refused_token_is_unavailable() {
    let (_sim, server, mut config) = start().await;
    if let CredentialConfig::ClientSecret { secret, .. } = &mut config.credential {
        *secret = "wrong".to_string();
    }
    let q = unique("denied");
    let bus = ServiceBusBus::new(&config, &server.info.servicebus_endpoint, &q, Some(&q)).unwrap();
    let err = bus
        .send(&[cloud_event(&unique("x"), "stage")])
        .await
        .expect_err("a bad credential fails");
    assert!(
        matches!(err, flotilla_core::ports::BusError::Unavailable(_)),
        "{err:?}"
    );
    assert!(!err.to_string().contains("wrong"), "no secret in errors");
}
