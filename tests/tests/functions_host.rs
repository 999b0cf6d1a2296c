//! The full flow behind a stand-in Functions host on the production adapters:
//! Cosmos DB (cosmosdb-server), Blob (Azurite), Service Bus and ARM (the
//! simulator). Success, a fault at every step, duplicate delivery, a handler
//! restart mid-flow, a poison message, bad input, and no secret anywhere.

#[path = "../host/mod.rs"]
mod host;

use host::{settled, Handler, Pump, World};
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// The example spec with an address space of its own: pre-flight refuses a
/// VNet that overlaps another job's in the same resource group.
fn spec() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut spec = flotilla_core::spec::ClusterSpec::example();
    spec.network = flotilla_core::spec::NetworkSpec::numbered(
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    );
    serde_json::to_string(&spec).unwrap()
}

async fn submit(h: &Handler) -> String {
    let (code, body) = h.http("submit", "POST", json!({}), &spec()).await;
    assert_eq!(code, 202, "{body}");
    body["job"].as_str().unwrap().to_string()
}

fn steps(s: &Value) -> Vec<(String, String)> {
    s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().to_string(),
                x["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_no_secrets(world_secrets: &[String], texts: &[(&str, String)]) {
    for s in world_secrets {
        assert!(s.len() >= 8);
        for (what, text) in texts {
            assert!(!text.contains(s.as_str()), "a secret appears in {what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_succeeds_and_compensates_at_every_step_without_leaks() {
    let world = World::start().await;
    let handler = Handler::start(&world).await;
    let mut pump = Pump::new(&world);

    let job = submit(&handler).await;
    let first_job = job.clone();
    let s = pump.until(&handler, &job, LIMIT, settled).await;
    assert_eq!(s["status"], "Succeeded", "{s:#}");
    assert!(steps(&s).iter().all(|(_, st)| st == "Succeeded"));
    let tagged = world.tagged(&job);
    assert_eq!(
        tagged
            .iter()
            .filter(|i| i.contains("/virtualMachineScaleSets/"))
            .count(),
        2,
        "{tagged:#?}"
    );
    assert!(
        world.staged(&job, "init.sh").await,
        "the init script is in Azurite"
    );
    let vault = flotilla_azure::vault::Vault::new(&world.config).unwrap();
    let outputs_name = format!("{job}-outputs");
    assert_eq!(
        s["outputs"],
        vault.secret_id(&outputs_name),
        "status shows the outputs secret's id"
    );
    let mut texts = vec![("a saga", s.to_string())];

    // Staging refused: a handler whose container does not exist.
    let broken = Handler::start_with(&world, &[("STAGING_CONTAINER", "no-such-container")]).await;
    for (i, step) in ["stage", "prereqs", "keys", "master", "workers", "join"]
        .iter()
        .enumerate()
    {
        world.sim.clear_faults();
        let h = if i == 0 { &broken } else { &handler };
        if i > 0 {
            let fault: flotilla_sim::FaultRule = serde_json::from_value(fault_for(step)).unwrap();
            world.sim.add_fault(fault);
        }
        let job = submit(h).await;
        let s = pump.until(h, &job, LIMIT, settled).await;
        assert_eq!(s["status"], "Compensated", "fault at {step}: {s:#}");
        for (j, (name, st)) in steps(&s).iter().enumerate() {
            let want = if j < i {
                "Compensated"
            } else if j == i {
                "Failed"
            } else {
                "Pending"
            };
            assert_eq!(st, want, "fault at {step}: step {name}");
        }
        assert!(
            world.tagged(&job).is_empty(),
            "leftovers after a fault at {step}: {:#?}",
            world.tagged(&job)
        );
        assert!(
            !world.staged(&job, "init.sh").await && !world.staged(&job, "cluster.json").await,
            "staged blobs left after a fault at {step}"
        );
        texts.push(("a saga", s.to_string()));
    }
    world.sim.clear_faults();

    // No secret value in any log line, saga, event or HTTP answer.
    texts.push(("the handler's log", handler.log()));
    texts.push(("events and function replies", pump.seen.join("\n")));
    assert!(pump.seen.len() > 20);
    let events: Vec<String> = world
        .sim
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    texts.push(("request paths", events.join("\n")));
    let secrets = world.secrets().await;
    // The nodes read staging with the job's node identity: the account key
    // was never read (no listKeys) nor stored in Key Vault.
    assert!(
        vault
            .get(&format!("{first_job}-storage-key"))
            .await
            .unwrap()
            .is_none(),
        "no storage key secret in identity mode"
    );
    assert!(
        !events
            .iter()
            .any(|p| p.to_ascii_lowercase().ends_with("/listkeys")),
        "no listKeys request in identity mode"
    );
    assert!(!secrets.is_empty(), "the scan looks for something");
    assert_no_secrets(&secrets, &texts);
    // The job's outputs are in Key Vault only: their value is in no log,
    // saga, event or answer (only their id), and holds no secret.
    let outputs = vault
        .get(&outputs_name)
        .await
        .unwrap()
        .expect("the job's outputs");
    assert!(outputs.contains("\"kubeconfigSecretId\""), "{outputs}");
    assert_no_secrets(std::slice::from_ref(&outputs), &texts);
    assert_no_secrets(&secrets, &[("the job's outputs", outputs)]);
}

/// A fault rule that refuses `step`'s Azure call with a terminal error.
fn fault_for(step: &str) -> Value {
    let (method, ty, name) = match step {
        "prereqs" => ("PUT", "Microsoft.Network/loadBalancers", "*"),
        // The default spec's nodes read staging with the job's node identity.
        "keys" => (
            "PUT",
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            "*",
        ),
        "master" => (
            "PUT",
            "Microsoft.Compute/virtualMachineScaleSets",
            "*-master",
        ),
        "workers" => (
            "PUT",
            "Microsoft.Compute/virtualMachineScaleSets",
            "*-pool-*",
        ),
        // `join` reads the instance views only while a node is not Ready,
        // which the harness's timing decides: fail its outputs' write.
        _ => ("PUT", "Microsoft.KeyVault/vaults/secrets", "*-outputs"),
    };
    json!({"method": method, "resource_type": ty, "name_pattern": name, "status": 409, "code": "OperationNotAllowed", "message": "injected"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_delivered_twice_gives_one_cluster() {
    let world = World::start().await;
    let handler = Handler::start(&world).await;
    let mut pump = Pump::new(&world);
    pump.twice = true;
    let job = submit(&handler).await;
    let s = pump.until(&handler, &job, LIMIT, settled).await;
    assert_eq!(s["status"], "Succeeded", "{s:#}");
    let tagged = world.tagged(&job);
    let count = |ty: &str| {
        tagged
            .iter()
            .filter(|i| i.contains(&format!("/{ty}/")))
            .count()
    };
    assert_eq!(count("virtualMachineScaleSets"), 2, "{tagged:#?}");
    assert_eq!(count("networkSecurityGroups"), 2);
    assert_eq!(count("virtualNetworks"), 1);
    assert_eq!(count("loadBalancers"), 1);
    assert_eq!(count("publicIPAddresses"), 1);
    // One message per step transition at least (requested, step.succeeded, ...).
    assert!(pump.received >= 6, "{} messages", pump.received);
    assert_eq!(
        pump.delivered,
        2 * pump.received,
        "every message went to the handler twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_restart_mid_flow_finishes_the_job() {
    let world = World::start().await;
    let mut handler = Handler::start(&world).await;
    let mut pump = Pump::new(&world);
    let job = submit(&handler).await;
    // Run until the master step is under way, then recycle the handler.
    pump.until(&handler, &job, LIMIT, |s| {
        s["steps"][3]["status"] != "Pending"
    })
    .await;
    handler.restart().await;
    let s = pump.until(&handler, &job, LIMIT, settled).await;
    assert_eq!(s["status"], "Succeeded", "{s:#}");
    let vmss = world
        .tagged(&job)
        .into_iter()
        .filter(|i| i.contains("/virtualMachineScaleSets/"))
        .count();
    assert_eq!(vmss, 2, "one master and one pool after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_visible_in_status() {
    let world = World::start().await;
    let handler = Handler::start(&world).await;
    let mut pump = Pump::new(&world);
    let job = submit(&handler).await;
    pump.until(&handler, &job, LIMIT, settled).await;

    // A message on the `poll` subscription that names the job but is no flotilla event.
    let poison = json!({"specversion": "1.0", "id": "x", "source": "/elsewhere", "type": "com.example.unknown", "data": {"job": job}});
    let sender = flotilla_cloud::servicebus::ServiceBusBus::new(
        &world.config,
        &world.server.info.servicebus_endpoint,
        &world.topic,
        None,
    )
    .unwrap()
    .with_default_label("poll");
    let msg = flotilla_core::ports::OutMessage {
        id: "poison-1".into(),
        event_type: "com.example.unknown".into(),
        body: poison.to_string().into_bytes(),
        not_before: None,
    };
    flotilla_core::ports::EventBus::send(&sender, &[msg])
        .await
        .unwrap();
    let s = pump
        .until(&handler, &job, LIMIT, |s| {
            !s["deadLetters"]
                .as_array()
                .map(|a| a.is_empty())
                .unwrap_or(true)
        })
        .await;
    assert!(
        s["deadLetters"][0].as_str().unwrap().contains("poison-1"),
        "{s:#}"
    );
    // ... and the broker holds it in the subscription's dead-letter queue.
    let dlq = flotilla_cloud::servicebus::ServiceBusBus::new(
        &world.config,
        &world.server.info.servicebus_endpoint,
        &world.topic,
        Some(&format!("{}/subscriptions/poll", world.topic)),
    )
    .unwrap();
    let dead = flotilla_core::ports::EventBus::dead_letters(&dlq)
        .await
        .unwrap();
    assert!(
        dead.iter()
            .any(|d| d.message_id == "poison-1" && d.delivery_count >= 10),
        "{dead:?}"
    );
    assert_eq!(s["status"], "Succeeded", "the job itself is unharmed");
}
