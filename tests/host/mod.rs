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

use flotilla::emulators::{
    self, AppSettings, Azurite, Cosmos, FlotillaProcess, SimEnvironment, SimOptions,
};
use flotilla_azure::AzureConfig;
use flotilla_cloud::servicebus::ServiceBusBus;
use flotilla_core::ports::EventBus;
use flotilla_sim::{Sim, SimServer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
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

fn emulators_dir() -> PathBuf {
    emulators::emulators_dir(None).expect("the npm emulators are installed")
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

pub fn start_cosmos() -> Cosmos {
    emulators::start_cosmos(&emulators_dir()).expect("cosmosdb-server starts")
}

pub fn start_azurite() -> Azurite {
    emulators::start_azurite(&emulators_dir()).expect("Azurite starts")
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
        Self::start_with_lro(SimOptions::default().lro).await
    }

    /// The same world with simulated long-running operations that take `lro`.
    pub async fn start_with_lro(lro: std::time::Duration) -> World {
        let env = SimEnvironment::start(SimOptions {
            lro,
            ..SimOptions::default()
        })
        .await
        .unwrap();
        // The environment flotilla expects: the cluster RG, the staging account
        // (named like Azurite's account; `keys` lists its keys in the simulator).
        env.resource_group("flotilla-demo", "westeurope")
            .await
            .unwrap();
        let account = env
            .storage_account(
                "flotilla-staging",
                flotilla_azure::blob::DEV_STORAGE_ACCOUNT,
            )
            .await
            .unwrap();
        let cosmos = start_cosmos();
        let azurite = start_azurite();
        // The deployment creates the staging container; here the test does.
        let auth = flotilla_azure::blob::StagingAuth::SharedKey {
            account: flotilla_azure::blob::DEV_STORAGE_ACCOUNT.into(),
            key: flotilla_azure::blob::DEV_STORAGE_KEY.into(),
        };
        flotilla_azure::blob::Staging::new(&env.config, &azurite.endpoint, "staging", auth)
            .unwrap()
            .ensure_container()
            .await
            .unwrap();
        let SimEnvironment {
            sim,
            server,
            config,
        } = env;
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
    pub fn app_settings(&self) -> AppSettings {
        let mut s = emulators::sim_app_settings(&self.server.info);
        s.set("FLOTILLA_STORE", "cosmos")
            .set("COSMOS_ENDPOINT", &self.cosmos.endpoint)
            .set("COSMOS_DATABASE", "flotilla")
            .set("COSMOS_CONTAINER", "sagas")
            .set("FLOTILLA_BUS", "servicebus")
            .set("SERVICEBUS_QUEUE", &self.topic)
            .set("FLOTILLA_STAGING", "blob")
            .set("STAGING_BLOB_ENDPOINT", &self.azurite.endpoint)
            .set("STAGING_CONTAINER", "staging")
            .set("STAGING_ACCOUNT_ID", &self.staging_account_id)
            .set(
                "FLOTILLA_DATA_DIR",
                self.dir.path().join("data").display().to_string(),
            )
            .set("RUST_LOG", "info");
        s
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
    proc: FlotillaProcess,
    pub port: u16,
    http: reqwest::Client,
}

impl Handler {
    pub async fn start(world: &World) -> Handler {
        Self::start_with(world, &[]).await
    }

    /// Starts with some app settings replaced.
    pub async fn start_with(world: &World, overrides: &[(&str, &str)]) -> Handler {
        let port = emulators::free_port().unwrap();
        let mut settings = world.app_settings();
        for (k, v) in overrides {
            settings.set(k, *v);
        }
        let log = world.dir.path().join(format!("serve-{port}.log"));
        let proc = FlotillaProcess::new(&flotilla_bin(), &["serve"], settings, &log, Some(port));
        let mut h = Handler {
            proc,
            port,
            http: reqwest::Client::new(),
        };
        h.spawn().await;
        h
    }

    async fn spawn(&mut self) {
        self.proc.spawn().unwrap();
        // The host's readiness ping: any answer counts.
        if let Err(e) = self.proc.wait_ready(Duration::from_secs(60)).await {
            panic!("{e}");
        }
    }

    /// Kills the handler process (as a host recycle would) and starts it again.
    pub async fn restart(&mut self) {
        self.proc.kill9();
        self.spawn().await;
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// POSTs an envelope; (transport status, reply).
    pub async fn invoke(&self, function: &str, envelope: &Value) -> (u16, Value) {
        emulators::invoke(&self.http, self.port, function, envelope)
            .await
            .unwrap()
    }

    /// Invokes an HTTP-triggered function; (res status, res body).
    pub async fn http(
        &self,
        function: &str,
        method: &str,
        params: Value,
        body: &str,
    ) -> (u16, Value) {
        let a = emulators::invoke_http(
            &self.http,
            self.port,
            function,
            method,
            params,
            &[("Content-Type", "application/json")],
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        (a.status, a.body)
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
        self.until_across(&[handler], job, limit, done).await
    }

    /// [`Pump::until`], handing each batch of messages to the next of
    /// `handlers` in turn (as the host spreads deliveries over instances);
    /// the first one answers `status`.
    pub async fn until_across(
        &mut self,
        handlers: &[&Handler],
        job: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let handler = handlers[0];
        let deadline = Instant::now() + limit;
        let mut turn = 0usize;
        loop {
            let n = self.round(handlers[turn % handlers.len()]).await;
            if n > 0 {
                turn += 1;
            }
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
