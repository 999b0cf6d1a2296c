//! Rough throughput of the embedded store + bus under a saga-like load.
//! Ignored by default (timing depends on the machine); run with
//! `cargo test -p flotilla-core --release --test embedded_throughput -- --ignored --nocapture`.

use flotilla_core::embedded::{BusOptions, Embedded};
use flotilla_core::ports::OutMessage;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SAGAS: usize = 200;
const STEPS: u64 = 6;
const WORKERS: usize = 32;

fn step_message(saga: &str, step: u64) -> OutMessage {
    let body = json!({ "specversion": "1.0", "id": format!("{saga}-{step}"), "subject": saga,
                       "type": "flotilla.step", "data": { "step": step } });
    OutMessage {
        id: format!("{saga}-{step}"),
        event_type: "flotilla.step".into(),
        body: serde_json::to_vec(&body).unwrap_or_default(),
        not_before: None,
    }
}

async fn run(db: Embedded) -> f64 {
    let (store, bus) = (db.store(), db.bus());
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (store, bus, done) = (store.clone(), bus.clone(), done.clone());
        tasks.spawn(async move {
            // Each worker starts its share of the sagas, then serves the bus.
            for i in (w..SAGAS).step_by(WORKERS) {
                let id = format!("saga-{i}");
                let doc = json!({ "id": id, "step": 0, "log": ["created"] });
                store
                    .create(&id, &doc, &[step_message(&id, 1)])
                    .await
                    .expect("create");
            }
            while done.load(Ordering::Relaxed) < SAGAS {
                let Some(d) = bus
                    .receive(Duration::from_millis(100))
                    .await
                    .expect("receive")
                else {
                    continue;
                };
                let body: serde_json::Value = serde_json::from_slice(&d.body).expect("body");
                let saga = body["subject"].as_str().expect("subject").to_string();
                let step = body["data"]["step"].as_u64().expect("step");
                let current = store.get(&saga).await.expect("get").expect("saga");
                let mut doc = current.doc.clone();
                doc["step"] = json!(step);
                let outbox = if step < STEPS {
                    vec![step_message(&saga, step + 1)]
                } else {
                    vec![]
                };
                store
                    .replace(&saga, &doc, &current.etag, &outbox)
                    .await
                    .expect("replace");
                bus.complete(&d).await.expect("complete");
                if step == STEPS {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = SAGAS as u64 * (1 + 4 * STEPS);
    println!(
        "{SAGAS} sagas x {STEPS} steps in {elapsed:.2}s: {:.0} sagas/s, {:.0} store+bus ops/s, {} store writes",
        SAGAS as f64 / elapsed,
        ops as f64 / elapsed,
        db.store_writes()
    );
    SAGAS as f64 / elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing; run explicitly"]
async fn throughput_in_memory() {
    let rate = run(Embedded::in_memory(BusOptions::default()).expect("open")).await;
    assert!(rate >= 100.0, "{rate:.0} sagas/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing; run explicitly"]
async fn throughput_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Embedded::open(&dir.path().join("bench.db"), BusOptions::default()).expect("open");
    let rate = run(db).await;
    assert!(rate >= 100.0, "{rate:.0} sagas/s");
}
