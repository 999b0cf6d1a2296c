//! What `flotilla chaos` relies on in the simulator: fired fault rules are
//! counted and recorded, a rule's resource type can be a glob, and the Service
//! Bus fault modes (lost sends, duplicate and reordered deliveries) do what
//! they say and are counted.

mod common;

use common::{client_for, config, token};
use flotilla_sim::{FaultRule, ServiceBusFaults, Sim, SimServer};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

struct World {
    sim: Sim,
    server: SimServer,
    client: Client,
    sb_token: String,
    vault_token: String,
}

async fn start() -> World {
    let sim = Sim::new(config(0)).expect("sim starts");
    let server = sim.serve(0).await.expect("sim serves");
    let client = client_for(&sim);
    let sb_token = token(
        &client,
        &server.info,
        "https://servicebus.azure.net/.default",
    )
    .await;
    let vault_token = token(&client, &server.info, "https://vault.azure.net/.default").await;
    World {
        sim,
        server,
        client,
        sb_token,
        vault_token,
    }
}

fn rule(resource_type: &str, status: u16, code: &str) -> FaultRule {
    FaultRule {
        method: None,
        resource_type: Some(resource_type.into()),
        name_pattern: None,
        status,
        code: code.into(),
        message: None,
        times: None,
        probability: None,
        latency_ms: None,
        asynchronous: false,
        principal: None,
    }
}

impl World {
    async fn set_secret(&self, name: &str) -> StatusCode {
        self.client
            .put(format!(
                "{}/secrets/{name}?api-version=7.4",
                self.server.info.keyvault_url
            ))
            .bearer_auth(&self.vault_token)
            .json(&json!({"value": "v"}))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn send(&self, entity: &str, id: &str) -> StatusCode {
        self.client
            .post(format!(
                "{}/{entity}/messages",
                self.server.info.servicebus_endpoint
            ))
            .bearer_auth(&self.sb_token)
            .header("BrokerProperties", json!({"MessageId": id}).to_string())
            .body(format!("{{\"id\":\"{id}\"}}"))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Receive-and-delete; the message id, or `None` when nothing is there.
    async fn take(&self, entity: &str) -> Option<String> {
        let r = self
            .client
            .delete(format!(
                "{}/{entity}/messages/head?timeout=0",
                self.server.info.servicebus_endpoint
            ))
            .bearer_auth(&self.sb_token)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::NO_CONTENT {
            return None;
        }
        assert_eq!(r.status(), StatusCode::OK);
        let bp: Value =
            serde_json::from_str(r.headers()["brokerproperties"].to_str().unwrap()).unwrap();
        Some(bp["MessageId"].as_str().unwrap().to_string())
    }
}

#[tokio::test]
async fn fired_rules_are_counted_and_recorded_and_types_match_as_globs() {
    let w = start().await;
    assert_eq!(w.sim.faults_fired(), 0);
    w.sim.add_fault(FaultRule {
        times: Some(2),
        name_pattern: Some("chaos-*".into()),
        ..rule("Microsoft.KeyVault/*", 503, "ServiceUnavailable")
    });
    assert_eq!(
        w.set_secret("chaos-a").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        w.set_secret("other").await,
        StatusCode::OK,
        "name does not match"
    );
    assert_eq!(
        w.set_secret("chaos-b").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(w.set_secret("chaos-c").await, StatusCode::OK, "used up");
    assert_eq!(w.sim.faults_fired(), 2);
    let fired = w.sim.fired_faults();
    assert_eq!(
        fired.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["chaos-a", "chaos-b"]
    );
    assert!(fired.iter().all(|f| f.code == "ServiceUnavailable"
        && f.status == 503
        && f.method == "PUT"
        && f.resource_type == "Microsoft.KeyVault/vaults/secrets"
        && !f.asynchronous));
    // A glob that names another namespace does not match.
    w.sim
        .add_fault(rule("Microsoft.Network/*", 500, "InternalServerError"));
    assert_eq!(w.set_secret("chaos-d").await, StatusCode::OK);
    let listed: Value = w
        .client
        .get(format!("{}/_sim/faults", w.server.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["fired"], 2);
    assert_eq!(listed["servicebus"]["dropped"], 0);
}

#[tokio::test]
async fn a_dropped_send_is_acknowledged_lost_and_not_remembered() {
    let w = start().await;
    w.sim.set_servicebus_faults(ServiceBusFaults {
        drop_send: 1.0,
        ..Default::default()
    });
    assert_eq!(w.send("q", "m1").await, StatusCode::CREATED);
    assert_eq!(w.take("q").await, None, "the message is gone");
    assert_eq!(w.sim.servicebus_faults_fired().dropped, 1);
    // Its id was not remembered: sending it again delivers it.
    w.sim.set_servicebus_faults(ServiceBusFaults::default());
    assert_eq!(w.send("q", "m1").await, StatusCode::CREATED);
    assert_eq!(w.take("q").await.as_deref(), Some("m1"));
    assert_eq!(w.take("q").await, None);
    assert_eq!(w.sim.servicebus_faults_fired().total(), 1);
}

#[tokio::test]
async fn a_duplicated_message_is_delivered_twice() {
    let w = start().await;
    w.sim.set_servicebus_faults(ServiceBusFaults {
        duplicate: 1.0,
        ..Default::default()
    });
    assert_eq!(w.send("q", "m1").await, StatusCode::CREATED);
    // Duplicate detection still drops a second send of the same id.
    assert_eq!(w.send("q", "m1").await, StatusCode::CREATED);
    assert_eq!(w.take("q").await.as_deref(), Some("m1"));
    assert_eq!(w.take("q").await.as_deref(), Some("m1"));
    assert_eq!(w.take("q").await, None);
    assert_eq!(w.sim.servicebus_faults_fired().duplicated, 1);
}

#[tokio::test]
async fn reordered_receives_take_a_later_message_first() {
    let w = start().await;
    for id in ["a", "b", "c"] {
        assert_eq!(w.send("q", id).await, StatusCode::CREATED);
    }
    w.sim.set_servicebus_faults(ServiceBusFaults {
        reorder: 1.0,
        ..Default::default()
    });
    let first = w.take("q").await.unwrap();
    assert_ne!(first, "a", "a later message comes first");
    let second = w.take("q").await.unwrap();
    let third = w.take("q").await.unwrap();
    let mut all = vec![first, second, third];
    all.sort();
    assert_eq!(all, ["a", "b", "c"], "nothing lost or repeated");
    // With one message left there is nothing to reorder; two receives reordered.
    assert_eq!(w.sim.servicebus_faults_fired().reordered, 2);
    // Out-of-range chances are clamped rather than refused.
    w.sim.set_servicebus_faults(ServiceBusFaults {
        drop_send: 7.0,
        duplicate: f64::NAN,
        reorder: -1.0,
    });
    assert_eq!(w.send("q", "d").await, StatusCode::CREATED);
    assert_eq!(w.take("q").await, None, "drop_send 7 acts as 1");
    assert_eq!(w.sim.servicebus_faults_fired().dropped, 1);
}
