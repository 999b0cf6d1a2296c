//! One job, two `flotilla serve` processes behind the stand-in Functions host,
//! both exporting to Application Insights: a stand-in ingestion endpoint in
//! this test (HTTPS on loopback) receives their envelopes. Process `a` has
//! `APPLICATIONINSIGHTS_AUTHENTICATION_STRING` (`Authorization=AAD`), so every
//! upload of its carries an Entra token the simulator issued to the named
//! client for Azure Monitor, to the `v2.1/track` API; process `b` has none and
//! sends with its instrumentation key alone. The job is one operation across
//! both, with a dependency per step and per Azure call, a request per handled
//! event, every parent present, its metrics, and no secret in any envelope.

// The shared host module has helpers this test does not use.
#[allow(dead_code)]
#[path = "../host/mod.rs"]
mod host;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::Json;
use host::{settled, Handler, Pump, World};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Instrumentation keys of the two processes (not secrets: they name the resource).
const KEY_AAD: &str = "11111111-1111-4111-8111-111111111111";
const KEY_PLAIN: &str = "22222222-2222-4222-8222-222222222222";
/// The client id in process `a`'s authentication string.
const CLIENT_ID: &str = "33333333-3333-4333-8333-333333333333";

const STEPS: [&str; 6] = ["stage", "prereqs", "keys", "master", "workers", "join"];

/// One POST to the ingestion endpoint.
#[derive(Clone, Debug)]
struct Upload {
    path: String,
    authorization: Option<String>,
    envelopes: Vec<Value>,
}

/// The stand-in ingestion endpoint: HTTPS on a free loopback port, with a
/// certificate of its own CA.
struct Ingestion {
    endpoint: String,
    /// The simulator's CA and this endpoint's, for `AZURE_CA_CERT`.
    ca_bundle: std::path::PathBuf,
    uploads: Arc<Mutex<Vec<Upload>>>,
}

async fn track(
    State(uploads): State<Arc<Mutex<Vec<Upload>>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let gzip = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        == Some("gzip");
    let mut text = String::new();
    if gzip {
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .expect("a gzipped body");
    } else {
        text = String::from_utf8(body.to_vec()).expect("a UTF-8 body");
    }
    let envelopes: Vec<Value> = serde_json::from_str(&text).expect("a JSON array of envelopes");
    let n = envelopes.len();
    uploads.lock().unwrap().push(Upload {
        path: uri.path().to_string(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        envelopes,
    });
    Json(json!({"itemsReceived": n, "itemsAccepted": n, "errors": []}))
}

impl Ingestion {
    async fn start(world: &World) -> Ingestion {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test ingestion CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca_bundle = world.dir.path().join("ca-bundle.pem");
        std::fs::write(
            &ca_bundle,
            format!("{}\n{}", world.sim.ca_cert_pem(), ca_cert.pem()),
        )
        .unwrap();

        flotilla_azure::transport::use_ring_for_tls();
        let config = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.pem().into_bytes(),
            key.serialize_pem().into_bytes(),
        )
        .await
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("https://{}/", listener.local_addr().unwrap());
        let uploads = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(axum::routing::post(track))
            .with_state(uploads.clone());
        let server = axum_server::from_tcp_rustls(listener, config).unwrap();
        tokio::spawn(async move { server.serve(app.into_make_service()).await.unwrap() });
        Ingestion {
            endpoint,
            ca_bundle,
            uploads,
        }
    }

    fn uploads(&self) -> Vec<Upload> {
        self.uploads.lock().unwrap().clone()
    }

    fn envelopes(&self) -> Vec<Value> {
        self.uploads()
            .into_iter()
            .flat_map(|u| u.envelopes)
            .collect()
    }
}

fn prop<'a>(e: &'a Value, key: &str) -> Option<&'a str> {
    e["data"]["baseData"]["properties"][key].as_str()
}

fn tag<'a>(e: &'a Value, key: &str) -> Option<&'a str> {
    e["tags"][key].as_str()
}

fn is(e: &Value, kind: &str) -> bool {
    e["name"].as_str() == Some(&format!("Microsoft.ApplicationInsights.{kind}"))
}

/// The names of the metrics in the metric envelopes.
fn metric_names(envelopes: &[Value]) -> BTreeSet<String> {
    envelopes
        .iter()
        .filter(|e| is(e, "Metric"))
        .flat_map(|e| e["data"]["baseData"]["metrics"].as_array().cloned())
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_one_operation_in_application_insights_with_entra_uploads() {
    let world = World::start_with_lro(Duration::from_millis(300)).await;
    let ingestion = Ingestion::start(&world).await;
    let settings = |instance: &str, key: &str, aad: bool| -> Vec<(&'static str, String)> {
        let mut s = vec![
            (
                "APPLICATIONINSIGHTS_CONNECTION_STRING",
                format!(
                    "InstrumentationKey={key};IngestionEndpoint={};ApplicationId=test",
                    ingestion.endpoint
                ),
            ),
            ("AZURE_CA_CERT", ingestion.ca_bundle.display().to_string()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300".into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("service.instance.id={instance}"),
            ),
        ];
        if aad {
            s.push((
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                format!("ClientId={CLIENT_ID};Authorization=AAD"),
            ));
        }
        s
    };
    let (sa, sb) = (
        settings("a", KEY_AAD, true),
        settings("b", KEY_PLAIN, false),
    );
    let a = Handler::start_with(&world, &as_refs(&sa)).await;
    let b = Handler::start_with(&world, &as_refs(&sb)).await;
    let mut pump = Pump::new(&world);

    let spec = serde_json::to_string(&flotilla_core::spec::ClusterSpec::example()).unwrap();
    let (code, body) = a.http("submit", "POST", json!({}), &spec).await;
    assert_eq!(code, 202, "{body}");
    let job = body["job"].as_str().unwrap().to_string();

    // The host hands each batch of messages to the other process.
    let status = pump
        .until_across(&[&a, &b], &job, Duration::from_secs(60), settled)
        .await;
    assert_eq!(status["status"], "Succeeded", "{status:#}");

    // Wait for the uploads: every step's dependency and the job's count.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let envelopes = ingestion.envelopes();
        let steps: BTreeSet<&str> = envelopes
            .iter()
            .filter(|e| prop(e, "flotilla.job") == Some(job.as_str()))
            .filter_map(|e| prop(e, "flotilla.step"))
            .collect();
        if steps.len() == STEPS.len() && metric_names(&envelopes).contains("flotilla.jobs") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ingestion endpoint did not get the job's telemetry: steps {steps:?}\n{}\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the last batches of both processes arrive.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let uploads = ingestion.uploads();
    let envelopes = ingestion.envelopes();

    // Authentication: Entra uploads carry a token the simulator issued to the
    // configured client for Azure Monitor; key uploads carry none.
    let mut tokens = BTreeSet::new();
    for u in &uploads {
        let keys: BTreeSet<&str> = u
            .envelopes
            .iter()
            .filter_map(|e| e["iKey"].as_str())
            .collect();
        assert_eq!(keys.len(), 1, "one process per upload: {keys:?}");
        match *keys.iter().next().unwrap() {
            KEY_AAD => {
                assert_eq!(u.path, "/v2.1/track");
                let token = u
                    .authorization
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .expect("an Entra upload carries a bearer token");
                assert_eq!(
                    world.sim.token_holder(token),
                    Some((
                        CLIENT_ID.to_string(),
                        "https://monitor.azure.com".to_string()
                    )),
                    "the token is the simulator's, for Azure Monitor, of the configured client"
                );
                tokens.insert(token.to_string());
            }
            KEY_PLAIN => {
                assert_eq!(u.path, "/v2/track");
                assert_eq!(u.authorization, None, "a key upload carries no token");
            }
            other => panic!("an upload with instrumentation key {other}"),
        }
    }
    assert!(!tokens.is_empty(), "no Entra upload");

    // One operation for the job, across both processes.
    let operations: BTreeSet<&str> = envelopes
        .iter()
        .filter(|e| prop(e, "flotilla.job") == Some(job.as_str()))
        .filter_map(|e| tag(e, "ai.operation.id"))
        .collect();
    assert_eq!(operations.len(), 1, "the job's operations: {operations:?}");
    let operation = *operations.iter().next().unwrap();
    assert_eq!(operation.len(), 32, "a W3C trace id: {operation}");
    let in_op: Vec<&Value> = envelopes
        .iter()
        .filter(|e| tag(e, "ai.operation.id") == Some(operation))
        .filter(|e| is(e, "Request") || is(e, "RemoteDependency"))
        .collect();
    let instances: BTreeSet<&str> = in_op
        .iter()
        .filter_map(|e| tag(e, "ai.cloud.roleInstance"))
        .collect();
    assert_eq!(instances, BTreeSet::from(["a", "b"]), "both processes");
    for e in &in_op {
        assert_eq!(tag(e, "ai.cloud.role"), Some("flotilla"));
    }

    // Parent links intact: one root (the submission), every parent exported.
    let ids: BTreeSet<&str> = in_op
        .iter()
        .filter_map(|e| e["data"]["baseData"]["id"].as_str())
        .collect();
    let roots: Vec<&&Value> = in_op
        .iter()
        .filter(|e| tag(e, "ai.operation.parentId").is_none())
        .collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    assert_eq!(prop(roots[0], "flotilla.command"), Some("submit"));
    for e in &in_op {
        if let Some(parent) = tag(e, "ai.operation.parentId") {
            assert!(ids.contains(parent), "a parent never exported: {e:#}");
        }
    }

    // A dependency per step, a request per handled event, a dependency per Azure call.
    for step in STEPS {
        assert!(
            in_op
                .iter()
                .any(|e| is(e, "RemoteDependency") && prop(e, "flotilla.step") == Some(step)),
            "no dependency for step {step}"
        );
    }
    let handled = in_op
        .iter()
        .filter(|e| is(e, "Request") && prop(e, "messaging.operation.type") == Some("process"))
        .count();
    assert!(
        handled >= STEPS.len(),
        "{handled} requests for handled events"
    );
    let azure: Vec<&&Value> = in_op
        .iter()
        .filter(|e| is(e, "RemoteDependency") && prop(e, "http.request.method").is_some())
        .collect();
    let kinds: BTreeSet<&str> = azure
        .iter()
        .filter_map(|e| prop(e, "flotilla.azure.resource_type"))
        .collect();
    for kind in [
        "Microsoft.Compute/virtualMachineScaleSets",
        "Microsoft.KeyVault/vaults/secrets",
        "Microsoft.Storage/storageAccounts/blobServices",
    ] {
        assert!(kinds.contains(kind), "no {kind} dependency in {kinds:#?}");
    }
    for e in &azure {
        let code = e["data"]["baseData"]["resultCode"].as_str().unwrap_or("");
        assert!(code.parse::<u16>().is_ok(), "an HTTP result code: {e:#}");
    }

    // Metrics.
    let names = metric_names(&envelopes);
    for name in [
        "flotilla.jobs",
        "flotilla.step.duration",
        "flotilla.queue.lag",
    ] {
        assert!(names.contains(name), "no metric {name} in {names:?}");
    }

    // No secret in any envelope (the tokens included), nor a token in the logs.
    let mut secrets = world.secrets().await;
    secrets.extend(tokens.iter().cloned());
    let text: Vec<String> = envelopes.iter().map(Value::to_string).collect();
    for secret in &secrets {
        for t in &text {
            assert!(!t.contains(secret.as_str()), "a secret in an envelope: {t}");
        }
    }
    for t in &text {
        assert!(!t.contains("sig="), "a SAS signature in an envelope: {t}");
    }
    let logs = format!("{}\n{}", a.log(), b.log());
    for token in &tokens {
        assert!(!logs.contains(token.as_str()), "a token in the logs");
    }

    // The envelope kinds, for the record.
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for e in &envelopes {
        *kinds.entry(e["name"].as_str().unwrap_or("")).or_default() += 1;
    }
    eprintln!("envelopes by kind: {kinds:?}");
}
