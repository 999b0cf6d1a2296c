//! A stand-in for the Azure Functions host, plus the emulators the
//! production adapters run against: cosmosdb-server (Cosmos DB), Azurite
//! (Blob), and the built-in simulator (ARM, Key Vault, tokens, Service Bus).
//!
//! The host part starts `flotilla serve` the way the Functions host does
//! (FUNCTIONS_CUSTOMHANDLER_PORT, a readiness `GET /`), turns HTTP requests into
//! `Data.req` envelopes, and pumps Service Bus: it peek-locks each subscription
//! of the topic, POSTs the message to the function of the same name, completes
//! it on 2xx and abandons it otherwise (so the broker redelivers it with a
//! higher DeliveryCount and dead-letters it after the maximum).

use flotilla_azure::{AzureConfig, CredentialConfig, RetryPolicy};
use flotilla_cloud::servicebus::ServiceBusBus;
use flotilla_core::ports::EventBus;
use flotilla_sim::{Sim, SimConfig, SimServer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The step subscriptions of the topic, one function each.
pub const SUBSCRIPTIONS: [&str; 8] = [
    "stage",
    "prereqs",
    "keys",
    "master",
    "workers",
    "join",
    "poll",
    "compensate",
];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn emulators_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/emulators")
}

/// The `flotilla` binary of this build (scripts/test.sh builds it first).
pub fn flotilla_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("flotilla");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// A child process killed when dropped.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Cosmos {
    _proc: Proc,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

pub fn start_cosmos() -> Cosmos {
    let dir = emulators_dir();
    assert!(
        dir.join("node_modules/@vercel/cosmosdb-server").exists(),
        "run `npm ci --prefix scripts/emulators`"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(ok.success());
    let mut child = Command::new("node")
        .arg(dir.join("cosmos.js"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["--port", "0", "--host", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs cosmos.js");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(e) = line.strip_prefix("COSMOS_READY ") {
                let _ = tx.send(e.trim().to_string());
            }
        }
    });
    let endpoint = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("cosmosdb-server ready");
    Cosmos {
        _proc: Proc(child),
        endpoint,
        _dir: tmp,
    }
}

pub struct Azurite {
    _proc: Proc,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

pub fn start_azurite() -> Azurite {
    let main = emulators_dir().join("node_modules/azurite/dist/src/blob/main.js");
    assert!(main.exists(), "run `npm ci --prefix scripts/emulators`");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("node")
        .arg(&main)
        .args([
            "--silent",
            "--inMemoryPersistence",
            "--extentMemoryLimit",
            "64",
            "--blobHost",
            "127.0.0.1",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ])
        .args(["--blobPort", &port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs Azurite");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "Azurite did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Azurite {
        _proc: Proc(child),
        endpoint: format!("http://127.0.0.1:{port}/devstoreaccount1"),
        _dir: dir,
    }
}

/// Everything a production-adapter run needs, started on loopback.
pub struct World {
    pub sim: Sim,
    pub server: SimServer,
    pub cosmos: Cosmos,
    pub azurite: Azurite,
    pub config: AzureConfig,
    pub topic: String,
    pub dir: tempfile::TempDir,
    pub staging_account_id: String,
}

impl World {
    pub async fn start() -> World {
        let sim = Sim::new(SimConfig {
            data_dir: None,
            lro: Duration::ZERO,
            throttle: None,
            ..SimConfig::default()
        })
        .unwrap();
        sim.set_servicebus_lock_duration(Duration::from_secs(5));
        let server = sim.serve(0).await.unwrap();
        let info = &server.info;
        let config = AzureConfig {
            arm_endpoint: url::Url::parse(&info.arm_endpoint).unwrap(),
            subscription_id: info.subscription_id.clone(),
            keyvault_url: info.keyvault_url.clone(),
            credential: CredentialConfig::ClientSecret {
                tenant_id: info.tenant_id.clone(),
                client_id: info.client_id.clone(),
                secret: info.client_secret.clone(),
                authority_host: Some(info.authority_host.clone()),
            },
            retry: RetryPolicy::default(),
            http: flotilla_azure::transport::https_client(Some(sim.ca_cert_pem().as_bytes()))
                .unwrap(),
        };
        // The environment flotilla expects: the cluster RG, the staging account
        // (named like Azurite's account; `keys` lists its keys in the simulator).
        let setup = flotilla_azure::ArmClient::for_environment_setup(&config).unwrap();
        let sub = info.subscription_id.clone();
        for rg in ["flotilla-demo", "flotilla-staging"] {
            let id = flotilla_azure::ResourceId::resource_group(&sub, rg);
            let s = setup
                .put(&id, "2021-04-01", &json!({"location": "westeurope"}))
                .await
                .unwrap();
            if let Some(p) = s.poll {
                setup.wait(&p, Duration::from_secs(30)).await.unwrap();
            }
        }
        let account = flotilla_azure::ResourceId::new(
            &sub,
            "flotilla-staging",
            "Microsoft.Storage",
            "storageAccounts",
            "devstoreaccount1",
        );
        let s = setup
            .put(&account, "2023-05-01", &json!({"location": "westeurope", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}))
            .await
            .unwrap();
        if let Some(p) = s.poll {
            setup.wait(&p, Duration::from_secs(30)).await.unwrap();
        }
        let cosmos = start_cosmos();
        let azurite = start_azurite();
        // The deployment creates the staging container; here the test does.
        let auth = flotilla_azure::blob::StagingAuth::SharedKey {
            account: flotilla_azure::blob::DEV_STORAGE_ACCOUNT.into(),
            key: flotilla_azure::blob::DEV_STORAGE_KEY.into(),
        };
        flotilla_azure::blob::Staging::new(&config, &azurite.endpoint, "staging", auth)
            .unwrap()
            .ensure_container()
            .await
            .unwrap();
        World {
            sim,
            server,
            cosmos,
            azurite,
            config,
            topic: "flotilla-events".into(),
            dir: tempfile::tempdir().unwrap(),
            staging_account_id: account.to_string(),
        }
    }

    /// The app settings `flotilla serve` gets, as on Azure but pointing at the emulators.
    pub fn app_settings(&self, port: u16) -> Vec<(String, String)> {
        let info = &self.server.info;
        let v: Vec<(&str, String)> = vec![
            ("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string()),
            ("FLOTILLA_STORE", "cosmos".into()),
            ("COSMOS_ENDPOINT", self.cosmos.endpoint.clone()),
            ("COSMOS_DATABASE", "flotilla".into()),
            ("COSMOS_CONTAINER", "sagas".into()),
            ("FLOTILLA_BUS", "servicebus".into()),
            ("SERVICEBUS_ENDPOINT", info.servicebus_endpoint.clone()),
            ("SERVICEBUS_QUEUE", self.topic.clone()),
            ("FLOTILLA_STAGING", "blob".into()),
            ("STAGING_BLOB_ENDPOINT", self.azurite.endpoint.clone()),
            ("STAGING_CONTAINER", "staging".into()),
            ("STAGING_ACCOUNT_ID", self.staging_account_id.clone()),
            ("ARM_ENDPOINT", info.arm_endpoint.clone()),
            ("AZURE_SUBSCRIPTION_ID", info.subscription_id.clone()),
            ("AZURE_TENANT_ID", info.tenant_id.clone()),
            ("KEYVAULT_URL", info.keyvault_url.clone()),
            ("AZURE_CREDENTIAL", "managed-identity".into()),
            ("IDENTITY_ENDPOINT", info.managed_identity_endpoint.clone()),
            ("IDENTITY_HEADER", info.identity_header.clone()),
            ("AZURE_CA_CERT", info.ca_cert.clone()),
            (
                "FLOTILLA_DATA_DIR",
                self.dir.path().join("data").display().to_string(),
            ),
            ("RUST_LOG", "info".into()),
        ];
        v.into_iter().map(|(k, s)| (k.to_string(), s)).collect()
    }

    /// The simulator's secrets and the storage keys: none may leak.
    pub async fn secrets(&self) -> Vec<String> {
        let info = &self.server.info;
        let mut out = vec![info.client_secret.clone(), info.identity_header.clone()];
        let setup = flotilla_azure::ArmClient::for_environment_setup(&self.config).unwrap();
        let id = flotilla_azure::ResourceId::parse(&self.staging_account_id).unwrap();
        let keys = setup
            .post_action(&id, "listKeys", "2023-05-01", None)
            .await
            .unwrap();
        for k in keys["keys"].as_array().unwrap() {
            out.push(k["value"].as_str().unwrap().to_string());
        }
        out
    }

    /// Everything (ARM, secrets, blobs in the simulator) tagged with the job.
    pub fn tagged(&self, job: &str) -> Vec<String> {
        self.sim
            .inventory(Some(("flotilla-job", job)))
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    /// Whether a staged blob exists in Azurite.
    pub async fn staged(&self, job: &str, blob: &str) -> bool {
        let sas = flotilla_azure::blob::account_sas(
            flotilla_azure::blob::DEV_STORAGE_ACCOUNT,
            flotilla_azure::blob::DEV_STORAGE_KEY,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let url = format!("{}/staging/{job}/{blob}?{sas}", self.azurite.endpoint);
        reqwest::get(&url).await.unwrap().status().as_u16() == 200
    }
}

/// `flotilla serve` as the Functions host runs it.
pub struct Handler {
    proc: Option<Proc>,
    pub port: u16,
    settings: Vec<(String, String)>,
    log: PathBuf,
    http: reqwest::Client,
}

impl Handler {
    pub async fn start(world: &World) -> Handler {
        Self::start_with(world, &[]).await
    }

    /// Starts with some app settings replaced.
    pub async fn start_with(world: &World, overrides: &[(&str, &str)]) -> Handler {
        let port = free_port();
        let mut settings = world.app_settings(port);
        for (k, v) in overrides {
            settings.retain(|(name, _)| name != k);
            settings.push((k.to_string(), v.to_string()));
        }
        let log = world.dir.path().join(format!("serve-{port}.log"));
        let mut h = Handler {
            proc: None,
            port,
            settings,
            log,
            http: reqwest::Client::new(),
        };
        h.spawn().await;
        h
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(flotilla_bin())
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        // The host's readiness ping: any answer counts.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .http
                .get(format!("http://127.0.0.1:{}/", self.port))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "flotilla serve never answered; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the handler process (as a host recycle would) and starts it again.
    pub async fn restart(&mut self) {
        self.proc = None;
        self.spawn().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs an envelope; (transport status, reply).
    pub async fn invoke(&self, function: &str, envelope: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}/{function}", self.port))
            .json(envelope)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Invokes an HTTP-triggered function; (res status, res body).
    pub async fn http(
        &self,
        function: &str,
        method: &str,
        params: Value,
        body: &str,
    ) -> (u16, Value) {
        let env = json!({
            "Data": {"req": {
                "Url": format!("https://app.example/api/{function}"),
                "Method": method, "Query": {}, "Headers": {"Content-Type": ["application/json"]},
                "Params": params, "Identities": [], "Body": body,
            }},
            "Metadata": {},
        });
        let (status, reply) = self.invoke(function, &env).await;
        assert_eq!(status, 200, "{reply}");
        let res = &reply["Outputs"]["res"];
        let code = res["StatusCode"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| res["StatusCode"].as_u64().map(|n| n as u16))
            .unwrap_or(0);
        (
            code,
            serde_json::from_str(res["Body"].as_str().unwrap_or("null")).unwrap_or(Value::Null),
        )
    }

    pub async fn status(&self, job: &str) -> Value {
        let (code, body) = self.http("status", "GET", json!({"id": job}), "").await;
        assert_eq!(code, 200, "{body}");
        body
    }
}

/// The Service Bus side of the host: one peek-lock receiver per subscription.
pub struct Pump {
    receivers: Vec<(&'static str, Arc<dyn EventBus>)>,
    /// Deliver every message twice before settling it (duplicate delivery).
    pub twice: bool,
    /// Messages received from the broker, and invocations made with them.
    pub received: u64,
    pub delivered: u64,
    /// Every message body and every reply (`Outputs`/`Logs`), for the secret scan.
    pub seen: Vec<String>,
}

impl Pump {
    pub fn new(world: &World) -> Pump {
        let endpoint = world.server.info.servicebus_endpoint.clone();
        let receivers = SUBSCRIPTIONS
            .iter()
            .map(|s| {
                let entity = format!("{}/subscriptions/{s}", world.topic);
                let bus: Arc<dyn EventBus> = Arc::new(
                    ServiceBusBus::new(&world.config, &endpoint, &world.topic, Some(&entity))
                        .unwrap(),
                );
                (*s, bus)
            })
            .collect();
        Pump {
            receivers,
            twice: false,
            received: 0,
            delivered: 0,
            seen: Vec::new(),
        }
    }

    /// Delivers what is waiting once; returns how many messages were handled.
    pub async fn round(&mut self, handler: &Handler) -> usize {
        let mut n = 0;
        for (name, bus) in &self.receivers {
            while let Ok(Some(d)) = bus.receive(Duration::ZERO).await {
                n += 1;
                self.received += 1;
                let env = json!({
                    "Data": {"message": String::from_utf8_lossy(&d.body)},
                    "Metadata": {"DeliveryCount": d.delivery_count, "MessageId": d.message_id},
                });
                let times = if self.twice { 2 } else { 1 };
                let mut ok = true;
                self.seen
                    .push(String::from_utf8_lossy(&d.body).into_owned());
                for _ in 0..times {
                    let (status, reply) = handler.invoke(name, &env).await;
                    self.seen.push(reply.to_string());
                    self.delivered += 1;
                    ok &= (200..300).contains(&status);
                }
                if ok {
                    let _ = bus.complete(&d).await;
                } else {
                    let _ = bus.abandon(&d).await;
                }
            }
        }
        n
    }

    /// Pumps until `done(status)` holds for the job, or panics after `limit`.
    pub async fn until(
        &mut self,
        handler: &Handler,
        job: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.round(handler).await;
            let status = handler.status(job).await;
            if done(&status) {
                eprintln!(
                    "job {job}: {} after {:?}",
                    status["status"],
                    limit - deadline.saturating_duration_since(Instant::now())
                );
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} did not finish: {status:#}\nhandler log:\n{}",
                handler.log()
            );
            if n == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

pub fn settled(s: &Value) -> bool {
    let st = s["status"].as_str().unwrap_or("");
    matches!(
        st,
        "Succeeded" | "Compensated" | "Deleted" | "Failed" | "Degraded"
    ) && s["pending"].is_null()
}
