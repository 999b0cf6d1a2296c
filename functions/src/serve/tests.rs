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
        keyvault_id: ResourceId::new(
            &config.subscription_id,
            "rg",
            "Microsoft.KeyVault",
            "vaults",
            "kv",
        ),
        sp_client_id: None,
        tenant_id: None,
        sp_object_id: None,
        scaler_role: flotilla_core::steps::rbac::VIRTUAL_MACHINE_CONTRIBUTOR.into(),
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
            &json!({"Data": {"message": value}, "Metadata": {"DeliveryCount": 1, "MessageId": event.id()}}),
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
    assert!(saga.dead_letters[0].contains(event.id()));
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

/// The router on the in-memory world (`flotilla_core::testing`), whose fake
/// cloud answers pre-flight's reads.
fn world_state() -> (flotilla_core::testing::World, AppState) {
    let w = flotilla_core::testing::World::new();
    let state = AppState::new(w.engine.clone());
    (w, state)
}

#[tokio::test]
async fn submit_with_the_same_idempotency_key_returns_the_same_job() {
    let (w, state) = world_state();
    let fx = Fx {
        store: w.store.clone(),
        state,
    };
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

/// The parts of a fixture the submit tests use.
struct Fx {
    store: Arc<flotilla_core::testing::MemoryStore>,
    state: AppState,
}

#[tokio::test]
async fn plan_answers_the_operations_and_creates_nothing() {
    let (w, state) = world_state();
    let fx = Fx {
        store: w.store.clone(),
        state,
    };
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

#[tokio::test]
async fn the_sweep_timer_reports_orphans_older_than_an_hour_and_deletes_nothing() {
    use flotilla_core::names;
    let w = flotilla_core::testing::World::new();
    let state = AppState::new(w.engine.clone());
    // A live job, one whose saga is then lost, and a secret planted outside any saga.
    let mut jobs = vec![];
    for n in 0..2 {
        // Each its own address space: pre-flight refuses overlapping VNets.
        let mut spec = ClusterSpec::example();
        spec.network = flotilla_core::spec::NetworkSpec::numbered(n);
        let job = w.engine.submit(spec).await.unwrap();
        let saga = w.run(&job, 600).await;
        assert_eq!(saga.status, flotilla_core::saga::JobStatus::Succeeded);
        jobs.push(job);
    }
    let job = jobs.pop().unwrap();
    let planted = std::collections::BTreeMap::from([
        (names::TAG_JOB.to_string(), "ghost-000000".to_string()),
        (names::TAG_MANAGED_BY.to_string(), "flotilla".to_string()),
    ]);
    w.cloud.insert_secret("ghost-000000-storage-key", &planted);
    w.store.remove(&job);
    let timer = json!({"Data": {"timer": {"Schedule": {}, "IsPastDue": false}}, "Metadata": {}});

    // Everything is younger than the default FLOTILLA_SWEEP_ORPHAN_AGE_S (an hour).
    let (status, reply) = post(&state, "sweep", &timer).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let found = &reply["ReturnValue"]["orphans"];
    assert_eq!(found["orphans"], json!([]), "{reply}");
    let everything = || {
        let c = &w.cloud;
        let mut all = c.resources();
        all.extend(c.secrets());
        all.extend(c.blobs());
        all
    };
    let before = everything();
    // Role assignments carry no tag: the sweep does not see them.
    let lost = before
        .iter()
        .filter(|i| i.contains(&job) || i.contains("ghost-000000"))
        .filter(|i| !i.contains("/roleAssignments/"))
        .count();
    assert_eq!(found["younger"].as_u64(), Some(lost as u64), "{reply}");

    w.clock.advance(std::time::Duration::from_secs(2 * 3600));
    let (status, reply) = post(&state, "sweep", &timer).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let orphans = reply["ReturnValue"]["orphans"]["orphans"]
        .as_array()
        .unwrap();
    assert_eq!(orphans.len(), lost, "{reply}");
    assert!(orphans
        .iter()
        .all(|o| !o["id"].as_str().unwrap().contains(&jobs[0])));
    assert!(orphans
        .iter()
        .any(|o| o["id"] == "https://fake.vault/secrets/ghost-000000-storage-key"));
    assert!(
        reply["Logs"].to_string().contains("reporting only"),
        "{reply}"
    );
    assert!(reply["ReturnValue"].get("removal").is_none());
    assert_eq!(
        everything(),
        before,
        "the timer only reports unless told to delete"
    );
}

/// The body of an HTTP answer in `Outputs.res`.
fn res_body(reply: &Value) -> Value {
    serde_json::from_str(reply["Outputs"]["res"]["Body"].as_str().unwrap_or("null"))
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn submit_is_refused_with_every_preflight_problem_and_nothing_is_created_in_the_simulator() {
    use crate::local::{LocalOptions, LocalWorld};
    let mut opts = LocalOptions::ephemeral();
    opts.workers = 0;
    // master 3×4 + general 2×8 = 28 DSv5 vCPUs at the pools' min.
    opts.quotas = [("standardDSv5Family".to_string(), 20)].into();
    opts.permissions = Some(flotilla_sim::Permissions {
        actions: vec!["*".into()],
        not_actions: vec!["Microsoft.Network/loadBalancers/write".into()],
    });
    let world = LocalWorld::start(opts).await.unwrap();
    let state = AppState {
        sim: Some(world.config.clone()),
        ..AppState::new(world.engine.clone())
    };
    let mut spec = ClusterSpec::example();
    // The simulator's catalog has no Standard_M8ms in zone 3 of westeurope,
    // and no Standard_D4s_v9 at all.
    let mut memory = spec.worker_pools[0].clone();
    memory.name = "memory".into();
    memory.instance_type = "Standard_M8ms".into();
    memory.min = 1;
    memory.max = 1;
    let mut odd = memory.clone();
    odd.name = "odd".into();
    odd.instance_type = "Standard_D4s_v9".into();
    odd.zones = vec![];
    spec.worker_pools.extend([memory, odd]);
    // Someone else's VNet in the group, overlapping the spec's.
    crate::local::ensure_resource_group(&world.config, &spec.resource_group, &spec.location)
        .await
        .unwrap();
    let setup = ArmClient::for_environment_setup(&world.config).unwrap();
    let legacy = ResourceId::new(
        &world.config.subscription_id,
        &spec.resource_group,
        "Microsoft.Network",
        "virtualNetworks",
        "legacy",
    );
    let started = setup
        .put(
            &legacy,
            flotilla_azure::models::api::NETWORK,
            &json!({"location": "westeurope", "properties": {"addressSpace": {"addressPrefixes": ["10.42.200.0/24"]}}}),
        )
        .await
        .unwrap();
    if let Some(poll) = started.poll {
        setup
            .wait(&poll, std::time::Duration::from_secs(30))
            .await
            .unwrap();
    }
    let before = world.sim.inventory(None).len();
    let writes_before = world
        .sim
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/oauth2/"))
        .count();

    let text = serde_json::to_string(&spec).unwrap();
    let (_, reply) = post(&state, "submit", &submit_envelope(None, &text)).await;
    assert_eq!(reply["Outputs"]["res"]["StatusCode"], "400", "{reply}");
    let body = res_body(&reply);
    assert_eq!(
        body["type"], "urn:flotilla:problem:preflight-failed",
        "{body}"
    );
    let problems: Vec<(String, String)> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["field"].as_str().unwrap().to_string(),
                p["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("workerPools[1].zones", "ZoneNotOffered"),
        ("workerPools[2].instanceType", "SizeNotOffered"),
        ("workerPools[0].min", "QuotaExceeded"),
        ("network.vnetCidr", "AddressSpaceOverlap"),
        ("resourceGroup", "PermissionDenied"),
    ]
    .iter()
    .map(|(f, c)| (f.to_string(), c.to_string()))
    .collect();
    assert_eq!(problems, expected, "{body}");
    assert_eq!(body["field"], "workerPools[1].zones");

    // Nothing was stored, and nothing but reads reached the simulator.
    assert!(world.engine.store.list().await.unwrap().is_empty());
    assert_eq!(world.sim.inventory(None).len(), before);
    let writes: Vec<String> = world
        .sim
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/oauth2/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(writes.len(), writes_before, "{writes:?}");

    // The same spec within the quota, zones and sizes the region offers and
    // its own address space is accepted.
    let mut fine = ClusterSpec::example();
    fine.network = flotilla_core::spec::NetworkSpec::numbered(1);
    fine.worker_pools[0].max = 2;
    let text = serde_json::to_string(&fine).unwrap();
    // Without the denied action.
    drop(state);
    world.shutdown().await;
    let mut opts = LocalOptions::ephemeral();
    opts.workers = 0;
    opts.quotas = [("standardDSv5Family".to_string(), 28)].into();
    let world = LocalWorld::start(opts).await.unwrap();
    let state = AppState {
        sim: Some(world.config.clone()),
        ..AppState::new(world.engine.clone())
    };
    let (_, reply) = post(&state, "submit", &submit_envelope(None, &text)).await;
    assert_eq!(reply["Outputs"]["res"]["StatusCode"], "202", "{reply}");
    let job = res_body(&reply)["job"].as_str().unwrap().to_string();
    let saga = world.engine.status(&job).await.unwrap().unwrap();
    assert!(saga.preflight.unwrap().passed());
    world.shutdown().await;
}
