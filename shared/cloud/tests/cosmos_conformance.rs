//! The Cosmos DB saga store against the local emulator `@vercel/cosmosdb-server`.
//!
//! Each test starts its own emulator (`scripts/emulators/cosmos.js`) over
//! HTTPS on 127.0.0.1, on a port the OS picks, with a throwaway certificate
//! in a temporary directory (the shared harness, `flotilla_harness`), and
//! stops it when done (a guard kills it on drop, also when a test panics).
//!
//! These tests never skip: without node or the npm packages they fail and say
//! to run `npm ci --prefix scripts/emulators`.

use flotilla_cloud::cosmos::{CosmosAuth, CosmosOptions, CosmosSagaStore, SYSTEM_PROPERTIES};
use flotilla_core::conformance::saga_store_suite;
use flotilla_core::ports::{ETag, SagaStore, StoreError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The emulator accepts any key; this one is only a placeholder.
const EMULATOR_KEY: &str = "ZW11bGF0b3Ita2V5LWlnbm9yZWQtYnktY29zbW9zZGItc2VydmVy";
const DATABASE: &str = "flotilla";
const CONTAINER: &str = "sagas";

fn emulators_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/emulators")
}

/// A running emulator (`flotilla_harness::start_cosmos`); killed, and its
/// certificate deleted, on drop.
struct Emulator {
    cosmos: flotilla_harness::Cosmos,
    endpoint: String,
}

impl Emulator {
    fn start() -> Emulator {
        let cosmos = flotilla_harness::start_cosmos(&emulators_dir()).unwrap_or_else(|e| {
            panic!("{e} (the Cosmos DB tests need node and `npm ci --prefix scripts/emulators`)")
        });
        let endpoint = cosmos.endpoint.clone();
        Emulator { cosmos, endpoint }
    }

    fn options(&self) -> CosmosOptions {
        CosmosOptions {
            endpoint: self.endpoint.clone(),
            database: DATABASE.to_string(),
            container: CONTAINER.to_string(),
            auth: CosmosAuth::Key(EMULATOR_KEY.to_string()),
        }
    }

    async fn store(&self) -> Arc<CosmosSagaStore> {
        Arc::new(
            CosmosSagaStore::connect(self.options())
                .await
                .expect("connect to the emulator"),
        )
    }

    /// A raw GET of an item, bypassing the store (trusting exactly the
    /// emulator's certificate): the status and the JSON body.
    async fn raw_item(&self, id: &str) -> (u16, Value) {
        let cert = reqwest::Certificate::from_pem(&self.cosmos.certificate_pem())
            .expect("emulator certificate");
        let client = reqwest::Client::builder()
            .tls_certs_merge([cert])
            .build()
            .expect("reqwest client");
        let url = format!(
            "{}dbs/{DATABASE}/colls/{CONTAINER}/docs/{id}",
            self.endpoint
        );
        let response = client
            .get(url)
            .header("x-ms-documentdb-partitionkey", json!([id]).to_string())
            .send()
            .await
            .expect("raw GET of an item");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

fn unique(what: &str) -> String {
    format!("cosmos-{what}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_runs_twice_on_one_database() {
    let started = Instant::now();
    let emulator = Emulator::start();
    let store = emulator.store().await;
    saga_store_suite(store.clone()).await;
    // A second store on the same account finds the database and container
    // already there; the suite's unique ids let it run again on the same data.
    let again = emulator.store().await;
    saga_store_suite(again).await;
    assert!(
        !store.delivers_outbox(),
        "Cosmos DB does not deliver the outbox"
    );
    eprintln!("conformance x2 took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_item_is_none_despite_the_emulators_500() {
    let emulator = Emulator::start();
    let store = emulator.store().await;
    let id = unique("missing");
    // The emulator really answers 500 here (if it ever answers 404, the
    // mapping is simply not exercised any more, and this says so).
    let (status, _) = emulator.raw_item(&id).await;
    assert_eq!(
        status, 500,
        "cosmosdb-server's point read of a missing item"
    );
    assert!(
        matches!(store.get(&id).await, Ok(None)),
        "get of a missing id is Ok(None)"
    );
    // Sharing a partition with nothing and a prefix with an existing item
    // changes nothing.
    let present = unique("present");
    store
        .create(&present, &json!({"id": present, "n": 1}), &[])
        .await
        .expect("create");
    assert!(matches!(store.get(&format!("{present}x")).await, Ok(None)));
    assert!(matches!(store.get(&present).await, Ok(Some(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_fields_are_stripped_and_the_etag_is_the_items() {
    let emulator = Emulator::start();
    let store = emulator.store().await;
    let id = unique("fields");
    let doc = json!({"id": id, "status": "Running", "nested": {"a": [1, 2]}});
    let etag = store.create(&id, &doc, &[]).await.expect("create");

    let (status, raw) = emulator.raw_item(&id).await;
    assert_eq!(status, 200, "raw read of an existing item");
    for field in SYSTEM_PROPERTIES {
        if field != "_attachments" {
            assert!(raw.get(field).is_some(), "the emulator stores {field}");
        }
    }
    assert_eq!(
        raw["_etag"].as_str(),
        Some(etag.0.as_str()),
        "the store's ETag is the item's _etag"
    );

    let got = store.get(&id).await.expect("get").expect("present");
    assert_eq!(got.doc, doc, "get strips the system fields");
    assert_eq!(got.etag, etag);
    let listed = store.list().await.expect("list");
    let mine = listed.iter().find(|d| d.id == id).expect("listed");
    assert_eq!(mine.doc, doc, "list strips the system fields");
    assert_eq!(mine.etag, etag);
    for d in &listed {
        for field in SYSTEM_PROPERTIES {
            assert!(d.doc.get(field).is_none(), "{field} left in {}", d.id);
        }
    }

    // A document without an id is stored under the job id; one naming
    // another job is refused.
    let bare = unique("bare");
    store
        .create(&bare, &json!({"n": 1}), &[])
        .await
        .expect("create without id");
    let got = store.get(&bare).await.expect("get").expect("present");
    assert_eq!(got.doc, json!({"id": bare, "n": 1}));
    let other = store
        .create(&unique("x"), &json!({"id": "someone-else"}), &[])
        .await;
    assert!(matches!(other, Err(StoreError::Corrupt(_))), "{other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_etag_is_precondition_failed_and_the_doc_is_unchanged() {
    let emulator = Emulator::start();
    let store = emulator.store().await;
    let id = unique("stale");
    let e1 = store
        .create(&id, &json!({"id": id, "n": 1}), &[])
        .await
        .expect("create");
    let current = json!({"id": id, "n": 2});
    let e2 = store
        .replace(&id, &current, &e1, &[])
        .await
        .expect("replace");
    assert_ne!(e1, e2);
    let stale = store
        .replace(&id, &json!({"id": id, "n": 3}), &e1, &[])
        .await;
    assert!(
        matches!(stale, Err(StoreError::PreconditionFailed(_))),
        "stale ETag: {stale:?}"
    );
    let got = store.get(&id).await.expect("get").expect("present");
    assert_eq!(
        (got.doc, got.etag),
        (current, e2),
        "the refused replace changed nothing"
    );

    let gone = store
        .replace(&unique("gone"), &json!({"n": 1}), &ETag("x".into()), &[])
        .await;
    assert!(matches!(gone, Err(StoreError::NotFound(_))), "{gone:?}");
    let dup = store.create(&id, &json!({"id": id}), &[]).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_account_is_unavailable() {
    // Bind and release a port so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let options = CosmosOptions {
        endpoint: format!("https://127.0.0.1:{port}/"),
        database: DATABASE.into(),
        container: CONTAINER.into(),
        auth: CosmosAuth::Key(EMULATOR_KEY.into()),
    };
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(120), CosmosSagaStore::connect(options))
        .await
        .expect("connect to a closed port gives up within 120 s");
    match result {
        Err(StoreError::Unavailable(message)) => {
            assert!(!message.contains(EMULATOR_KEY), "the key leaked: {message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    eprintln!("closed port: gave up after {:?}", started.elapsed());
}
