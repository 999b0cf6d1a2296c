//! In-process tests of the router (`tower::ServiceExt::oneshot`, no socket):
//! the function list against the folders on disk, and the Service Bus
//! settlement rules with a store that fails on demand.

use super::*;
use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use flotilla_azure::blob::{Staging, StagingAuth};
use flotilla_azure::vault::Vault;
use flotilla_azure::{ArmClient, CredentialConfig, ResourceId, RetryPolicy};
use flotilla_core::decide::{self, Policy};
use flotilla_core::embedded::{BusOptions, Embedded};
use flotilla_core::engine::Azure;
use flotilla_core::ports::{ETag, OutMessage, SagaStore, StoreError, StoredDoc};
use flotilla_core::spec::ClusterSpec;
use flotilla_core::steps::Env;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use tower::ServiceExt;

fn manifest_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Folders under functions/ that hold a function.json.
fn function_folders() -> BTreeSet<String> {
    std::fs::read_dir(manifest_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("function.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_function_list_matches_the_folders_on_disk() {
    let names: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(names.len(), FUNCTIONS.len(), "duplicate function names");
    assert_eq!(names, function_folders());
}

#[test]
fn every_function_json_matches_its_trigger() {
    for f in FUNCTIONS {
        let v: Value = serde_json::from_str(f.function_json).unwrap();
        let b = &v["bindings"][0];
        assert_eq!(b["direction"], "in", "{}", f.name);
        match f.trigger {
            Trigger::Http { method, route } => {
                assert_eq!(b["type"], "httpTrigger", "{}", f.name);
                assert_eq!(b["name"], "req");
                assert_eq!(b["route"], route);
                assert_eq!(b["methods"], json!([method.to_ascii_lowercase()]));
                assert_eq!(
                    v["bindings"][1],
                    json!({"type": "http", "direction": "out", "name": "res"})
                );
            }
            Trigger::Subscription => {
                assert_eq!(b["type"], "serviceBusTrigger");
                assert_eq!(b["name"], queue::BINDING);
                assert_eq!(b["topicName"], EVENTS_TOPIC);
                assert_eq!(b["subscriptionName"], f.name);
                assert_eq!(b["connection"], CONNECTION);
            }
            Trigger::JobsQueue => {
                assert_eq!(b["type"], "serviceBusTrigger");
                assert_eq!(b["name"], queue::BINDING);
                assert_eq!(b["queueName"], JOBS_QUEUE);
                assert_eq!(b["connection"], CONNECTION);
            }
            Trigger::EventGrid => {
                assert_eq!(b["type"], "eventGridTrigger");
                assert_eq!(b["name"], events::BINDING);
            }
            Trigger::Timer => {
                assert_eq!(b["type"], "timerTrigger");
                assert_eq!(b["name"], sweep::BINDING);
            }
        }
    }
}

#[test]
fn host_json_runs_this_binary_as_a_custom_handler() {
    let v: Value = serde_json::from_str(HOST_JSON).unwrap();
    assert_eq!(v["version"], "2.0");
    assert_eq!(
        v["customHandler"]["description"]["defaultExecutablePath"],
        crate::package::EXECUTABLE
    );
    assert_eq!(
        v["customHandler"]["description"]["arguments"],
        json!(["serve"])
    );
    assert_eq!(v["customHandler"]["enableForwardingHttpRequest"], false);
    assert_eq!(v["extensionBundle"]["version"], "[4.*, 5.0.0)");
    assert_eq!(v["extensions"]["http"]["routePrefix"], "api");
    assert_eq!(v["extensions"]["serviceBus"]["autoCompleteMessages"], true);
    let _: Value = serde_json::from_str(LOCAL_SETTINGS_EXAMPLE).unwrap();
}

/// A store that fails every `replace` that records no dead letter while
/// `failing` is set: the handler fails, `record_dead_letter` still works.
struct FailingStore {
    inner: Arc<dyn SagaStore>,
    failing: AtomicBool,
}

#[async_trait]
impl SagaStore for FailingStore {
    async fn create(
        &self,
        id: &str,
        doc: &Value,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        self.inner.create(id, doc, outbox).await
    }
    async fn get(&self, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        self.inner.get(id).await
    }
    async fn replace(
        &self,
        id: &str,
        doc: &Value,
        if_match: &ETag,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        let no_dead_letters = doc["deadLetters"].as_array().is_none_or(|a| a.is_empty());
        if self.failing.load(Ordering::SeqCst) && no_dead_letters {
            return Err(StoreError::Unavailable("injected".into()));
        }
        self.inner.replace(id, doc, if_match, outbox).await
    }
    async fn list(&self) -> Result<Vec<StoredDoc>, StoreError> {
        self.inner.list().await
    }
    fn delivers_outbox(&self) -> bool {
        self.inner.delivers_outbox()
    }
}

struct Fixture {
    _embedded: Embedded,
    store: Arc<FailingStore>,
    state: AppState,
}

/// Azure clients aimed at a closed port: these tests never get that far
/// (every store write that would precede an Azure call fails or is checked).
fn unreachable_azure() -> (Azure, Env) {
    let config = AzureConfig {
        arm_endpoint: url::Url::parse("https://127.0.0.1:9").unwrap(),
        subscription_id: "00000000-0000-0000-0000-000000000000".into(),
        keyvault_url: "https://127.0.0.1:9/vault".into(),
        credential: CredentialConfig::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: "s".into(),
            authority_host: Some("https://127.0.0.1:9".into()),
        },
        retry: RetryPolicy::default(),
        http: flotilla_azure::transport::https_client(None).unwrap(),
    };
    let azure = Azure::from_clients(
        Arc::new(ArmClient::new(&config).unwrap()),
        Vault::new(&config).unwrap(),
        Staging::new(
            &config,
            "https://127.0.0.1:9/acct",
            "staging",
            StagingAuth::Token,
        )
        .unwrap(),
        None,
    );
    let env = Env {
        subscription_id: config.subscription_id.clone(),
        staging_account_id: ResourceId::new(
            &config.subscription_id,
            "rg",
            "Microsoft.Storage",
            "storageAccounts",
            "acct",
        ),
        staging_url: "https://127.0.0.1:9/acct/staging/".into(),
        keyvault_url: config.keyvault_url.clone(),
        sp_client_id: None,
    };
    (azure, env)
}

async fn fixture() -> Fixture {
    // An engine on its own store and bus, with nobody consuming the bus.
    let embedded = Embedded::in_memory(BusOptions::default()).unwrap();
    let store = Arc::new(FailingStore {
        inner: embedded.store(),
        failing: AtomicBool::new(false),
    });
    let (azure, env) = unreachable_azure();
    let engine = Arc::new(Engine::new(
        store.clone(),
        embedded.bus(),
        azure,
        env,
        Policy::default(),
    ));
    Fixture {
        _embedded: embedded,
        store,
        state: AppState::new(engine),
    }
}

async fn post(state: &AppState, function: &str, body: &Value) -> (StatusCode, Value) {
    let req = Request::post(format!("/{function}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = app(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn readiness_answers_get_root() {
    let fx = fixture().await;
    let res = app(fx.state.clone())
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_handler_failure_returns_500_and_the_last_delivery_is_recorded() {
    let fx = fixture().await;
    let engine = fx.state.engine.clone();
    let job = engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = engine.status(&job).await.unwrap().unwrap();
    let event = decide::job_requested_event(&saga).event;
    fx.store.failing.store(true, Ordering::SeqCst);

    // The event as an object, a quoted string and base64: each reaches the engine and fails.
    let text = String::from_utf8(event.to_json()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&text);
    for value in [
        serde_json::from_str::<Value>(&text).unwrap(),
        json!(text),
        json!(b64),
    ] {
        let (status, reply) = post(
            &fx.state,
            "stage",
            &json!({"Data": {"message": value}, "Metadata": {"DeliveryCount": 1, "MessageId": event.id}}),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{reply}");
        assert!(
            reply["Logs"].to_string().contains("handler failed"),
            "{reply}"
        );
    }
    assert!(engine
        .status(&job)
        .await
        .unwrap()
        .unwrap()
        .dead_letters
        .is_empty());

    // The last delivery the broker allows: recorded before the broker dead-letters it.
    let (status, reply) = post(
        &fx.state,
        "stage",
        &json!({"Data": {"message": event}, "Metadata": {"DeliveryCount": "10"}}),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        reply["Logs"].to_string().contains("dead-lettered"),
        "{reply}"
    );
    let saga = engine.status(&job).await.unwrap().unwrap();
    assert_eq!(saga.dead_letters.len(), 1, "{:?}", saga.dead_letters);
    assert!(saga.dead_letters[0].contains(&event.id));
}

#[tokio::test]
async fn a_poison_message_is_refused_until_dead_lettered_and_recorded() {
    let fx = fixture().await;
    let engine = fx.state.engine.clone();
    let job = engine.submit(ClusterSpec::example()).await.unwrap();
    for junk in [
        json!("not json at all"),
        json!({"hello": "world"}),
        json!({"specversion": "1.0", "data": {"job": job}}),
    ] {
        let (status, reply) = post(
            &fx.state,
            "poll",
            &json!({"Data": {"message": junk}, "Metadata": {"MessageId": "m-1", "DeliveryCount": 1}}),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{reply}");
        assert!(
            reply["Logs"].to_string().contains("poison message m-1"),
            "{reply}"
        );
    }
    // Before the last delivery nothing is recorded; on it, the job is told.
    assert!(engine
        .status(&job)
        .await
        .unwrap()
        .unwrap()
        .dead_letters
        .is_empty());
    let junk = json!({"specversion": "1.0", "data": {"job": job}});
    let (status, _) = post(
        &fx.state,
        "poll",
        &json!({"Data": {"message": junk}, "Metadata": {"MessageId": "m-1", "DeliveryCount": 10}}),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let saga = engine.status(&job).await.unwrap().unwrap();
    assert_eq!(saga.dead_letters.len(), 1, "{:?}", saga.dead_letters);
}

#[tokio::test]
async fn unknown_functions_and_junk_envelopes_are_problems() {
    let fx = fixture().await;
    let (status, body) = post(&fx.state, "nope", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], 404);
    let req = Request::post("/submit")
        .body(Body::from("{not json"))
        .unwrap();
    let res = app(fx.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

fn submit_envelope(key: Option<&str>, spec: &str) -> Value {
    let mut headers = json!({"Content-Type": ["application/json"]});
    if let Some(k) = key {
        headers["Idempotency-Key"] = json!([k]);
    }
    json!({"Data": {"req": {
        "Url": "http://localhost:7071/api/clusters",
        "Method": "POST",
        "Query": {},
        "Headers": headers,
        "Params": {},
        "Body": spec,
    }}, "Metadata": {}})
}

#[tokio::test]
async fn submit_with_the_same_idempotency_key_returns_the_same_job() {
    let fx = fixture().await;
    let spec = flotilla_core::spec::EXAMPLE_SPEC;
    let (_, first) = post(&fx.state, "submit", &submit_envelope(Some("k-1"), spec)).await;
    assert_eq!(first["Outputs"]["res"]["StatusCode"], "202", "{first}");
    let (_, again) = post(&fx.state, "submit", &submit_envelope(Some("k-1"), spec)).await;
    assert_eq!(again["Outputs"]["res"]["StatusCode"], "200", "{again}");
    let body = |r: &Value| -> Value {
        serde_json::from_str(r["Outputs"]["res"]["Body"].as_str().unwrap()).unwrap()
    };
    assert_eq!(body(&first)["job"], body(&again)["job"]);
    assert_eq!(body(&again)["statusUrl"], body(&first)["statusUrl"]);
    // Without a key, or with another one, a second job starts.
    let (_, other) = post(&fx.state, "submit", &submit_envelope(None, spec)).await;
    assert_ne!(body(&other)["job"], body(&first)["job"]);
    // A key that is not visible ASCII is refused, naming the header.
    let (_, bad) = post(&fx.state, "submit", &submit_envelope(Some("a key"), spec)).await;
    assert_eq!(bad["Outputs"]["res"]["StatusCode"], "400", "{bad}");
    assert!(bad.to_string().contains("Idempotency-Key"), "{bad}");
    assert_eq!(fx.store.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn submit_queue_uses_the_message_id_as_idempotency_key() {
    let fx = fixture().await;
    let spec = flotilla_core::spec::EXAMPLE_SPEC;
    for delivery in 1..=2 {
        let (status, reply) = post(
            &fx.state,
            "submit-queue",
            &json!({"Data": {"message": spec}, "Metadata": {"MessageId": "order-7", "DeliveryCount": delivery}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    assert_eq!(
        fx.store.list().await.unwrap().len(),
        1,
        "one job per message id"
    );
}

#[tokio::test]
async fn plan_answers_the_operations_and_creates_nothing() {
    let fx = fixture().await;
    let spec = flotilla_core::spec::EXAMPLE_SPEC;
    let mut env = submit_envelope(Some("k-2"), spec);
    env["Data"]["req"]["Url"] = json!("http://localhost:7071/api/clusters/plan");
    let (_, reply) = post(&fx.state, "plan", &env).await;
    assert_eq!(reply["Outputs"]["res"]["StatusCode"], "200", "{reply}");
    let plan: Value =
        serde_json::from_str(reply["Outputs"]["res"]["Body"].as_str().unwrap()).unwrap();
    assert_eq!(plan["steps"].as_array().unwrap().len(), 6, "{plan}");
    assert_eq!(plan["steps"][1]["step"], "prereqs");
    assert!(
        fx.store.list().await.unwrap().is_empty(),
        "no job was stored"
    );
    // The same key submitted names the same job.
    let (_, sub) = post(&fx.state, "submit", &submit_envelope(Some("k-2"), spec)).await;
    let body: Value =
        serde_json::from_str(sub["Outputs"]["res"]["Body"].as_str().unwrap()).unwrap();
    assert_eq!(body["job"], plan["job"]);
    // A bad spec is a 400 naming the field.
    let mut bad = submit_envelope(None, r#"{"name": "x"}"#);
    bad["Data"]["req"]["Url"] = json!("http://localhost:7071/api/clusters/plan");
    let (_, reply) = post(&fx.state, "plan", &bad).await;
    assert_eq!(reply["Outputs"]["res"]["StatusCode"], "400", "{reply}");
}
